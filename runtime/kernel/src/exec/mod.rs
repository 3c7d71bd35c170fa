//! Starting the program: its ELF file (and interpreter) mapped into a new
//! address space, the vDSO, and the initial stack. What goes where is
//! computed by the host-tested [`kiln_kernel::exec`]; this module maps it.

use alloc::vec::Vec;

use kiln_kernel::exec::elf::{self, LoadPlan, PAGE_SIZE, PF_W, PF_X};
use kiln_kernel::exec::stack::{self, at};
use kiln_kernel::mm::vma::{prot, Backing, Label, Vma, VmaError};

use crate::arch::{self, PageTables};
use crate::boot::Region;
use crate::fd::FdTable;
use crate::mm::fault::FaultError;
use crate::mm::space::{AddressSpace, MMAP_TOP, STACK_SIZE, STACK_TOP};
use crate::process::Process;
use crate::signal::Signals;

/// Why the program could not be started.
pub enum ExecError {
    /// No program was given.
    NotFound,
    /// The file is not something this kernel can run.
    Elf(elf::ElfError),
    /// Its segments cannot be laid out (overlap).
    Layout,
    /// Guest memory ran out while loading.
    OutOfMemory,
    /// The interpreter (PT_INTERP) is missing or unusable.
    Interpreter(alloc::string::String),
}

impl From<FaultError> for ExecError {
    fn from(_: FaultError) -> Self {
        ExecError::OutOfMemory
    }
}

impl From<VmaError> for ExecError {
    fn from(_: VmaError) -> Self {
        ExecError::Layout
    }
}

/// The program's arguments and environment.
pub struct Args {
    /// argv, `argv[0]` first.
    pub argv: Vec<Vec<u8>>,
    /// envp.
    pub envp: Vec<Vec<u8>>,
}

fn segment_prot(flags: u32) -> u32 {
    let mut p = 0;
    if flags & elf::PF_R != 0 {
        p |= prot::READ;
    }
    if flags & PF_W != 0 {
        p |= prot::WRITE;
    }
    if flags & PF_X != 0 {
        p |= prot::EXEC;
    }
    p
}

/// Loads the program from the boot module and builds its stack.
/// Returns the process, its entry point, its initial stack pointer and,
/// for a dynamic program (which starts in its loader), its own entry.
pub fn exec(
    module: Region,
    path: &[u8],
    args: &Args,
    trace: bool,
) -> Result<(Process, u64, u64, Option<u64>), ExecError> {
    if module.end <= module.start {
        return Err(ExecError::NotFound);
    }
    // SAFETY: the module lies in guest RAM (checked by the platform code)
    // reserved from the allocator, reached through the direct map, and is
    // never written.
    let image = unsafe {
        core::slice::from_raw_parts(
            arch::phys_to_virt(module.start),
            (module.end - module.start) as usize,
        )
    };
    let plan = elf::plan(image, elf::PIE_BASE).map_err(ExecError::Elf)?;
    *crate::state::BOOT.exe_path.lock() = alloc::string::String::from_utf8_lossy(path).into_owned();
    // SAFETY: the active PML4 is the kernel's; the process owns its lower half.
    let tables = unsafe { PageTables::from_pml4(arch::active_page_table()) };
    let mut p = Process {
        pid: 1,
        ppid: 0,
        pgid: 1,
        sid: 1,
        pdeathsig: 0,
        orphan: false,
        vfork_parent: None,
        stopped: None,
        unreported: None,
        cred: Default::default(),
        exe: alloc::string::String::from_utf8_lossy(path).into_owned(),
        rewriter: crate::syscall::rewrite::Rewriter::new(),
        mem: AddressSpace::new(tables, plan.brk_start),
        trace,
        signals: Signals::new(),
        fds: FdTable::with_stdio(),
        cwd: "/".into(),
        umask: 0o022,
        argv: args.argv.clone(),
        envp: args.envp.clone(),
        rlimits: [(u64::MAX, u64::MAX); 16],
        start_ns: crate::time::monotonic_ns(),
        shared_maps: Vec::new(),
    };
    load_segments(&mut p, &plan, module.start)?;
    // A static program's CPUID sites, when the image lists them (finding
    // them means reading all its code, which for busybox cost as many
    // shadow faults, ~50, as the CPUIDs it spared).
    if plan.interpreter.is_none() {
        crate::syscall::rewrite::rewrite_cpuid_sites(&mut p, image, module.start, plan.bias, false);
    }
    // A dynamic program starts in its interpreter (ld.so), loaded from the
    // rootfs below the mmap area; the program's own entry goes in AT_ENTRY.
    let (entry, interp_base) = match &plan.interpreter {
        None => (plan.entry, 0),
        Some(interp) => load_interpreter(&mut p, interp)?,
    };

    p.mem.add_area(Vma {
        start: STACK_TOP - STACK_SIZE,
        end: STACK_TOP,
        prot: prot::READ | prot::WRITE,
        backing: Backing::Anonymous,
        label: Label::Stack,
    })?;
    let vdso = map_vdso(&mut p)?;
    let mut random = [0u8; 16];
    crate::random::fill(&mut random);
    let features = arch::features();
    let auxv = [
        (at::HWCAP, features.hwcap),
        (at::PAGESZ, PAGE_SIZE),
        (at::CLKTCK, 100),
        (at::PHDR, plan.phdr),
        (at::PHENT, plan.phent),
        (at::PHNUM, plan.phnum),
        (at::BASE, interp_base),
        (at::FLAGS, 0),
        (at::ENTRY, plan.entry),
        (at::UID, 0),
        (at::EUID, 0),
        (at::GID, 0),
        (at::EGID, 0),
        (at::SECURE, 0),
        (at::HWCAP2, if features.fsgsbase { 2 } else { 0 }),
        (at::SYSINFO_EHDR, vdso),
    ];
    let argv: Vec<&[u8]> = args.argv.iter().map(|a| a.as_slice()).collect();
    let envp: Vec<&[u8]> = args.envp.iter().map(|e| e.as_slice()).collect();
    let stack = stack::build(&stack::StackSpec {
        top: STACK_TOP,
        argv: &argv,
        envp: &envp,
        execfn: path,
        random,
        auxv: &auxv,
    });
    if stack.bytes.len() as u64 > STACK_SIZE / 4 {
        return Err(ExecError::Layout);
    }
    p.mem
        .write_user(stack.sp, &stack.bytes)
        .map_err(|_| ExecError::OutOfMemory)?;
    let own_entry = plan.interpreter.is_some().then_some(plan.entry);
    Ok((p, entry, stack.sp, own_entry))
}

/// Maps the vDSO image below the mmap area; returns its address (0, and
/// no AT_SYSINFO_EHDR use, when it is turned off).
fn map_vdso(p: &mut Process) -> Result<u64, ExecError> {
    if !crate::time::vdso::enabled() {
        return Ok(0);
    }
    let base = p.mem.vmas.find_free_below(PAGE_SIZE, MMAP_TOP)?;
    let image = kiln_kernel::time::vdso::image(base, &crate::time::vdso::symbols());
    p.mem.add_area(Vma {
        start: base,
        end: base + page_round(image.len() as u64),
        prot: prot::READ | prot::EXEC,
        backing: Backing::Anonymous,
        label: Label::Vdso,
    })?;
    p.mem
        .copy_into(base, &image)
        .map_err(|_| ExecError::OutOfMemory)?;
    Ok(base)
}

/// Loads the program interpreter `path` from the rootfs; returns its
/// entry point and load base.
fn load_interpreter(p: &mut Process, path: &str) -> Result<(u64, u64), ExecError> {
    use crate::fs::{self, Found};
    use kiln_kernel::fs::vfs::Node;
    let archive = fs::archive();
    if archive.end <= archive.start {
        return Err(ExecError::Elf(elf::ElfError::Dynamic));
    }
    let node = match fs::lookup("/", path, true) {
        Ok(Found::Node {
            node: Node::Lower(n),
            ..
        }) if n.kind == kiln_kernel::fs::tarfs::Kind::File => n,
        _ => return Err(ExecError::Interpreter(path.into())),
    };
    let start = archive.start + node.data;
    // SAFETY: the file lies inside the rootfs archive, in guest memory the
    // platform code checked and reserved; it is read-only.
    let image =
        unsafe { core::slice::from_raw_parts(arch::phys_to_virt(start), node.size as usize) };
    let first = elf::plan(image, elf::PIE_BASE).map_err(ExecError::Elf)?;
    if first.interpreter.is_some() || !first.position_independent {
        return Err(ExecError::Interpreter(path.into()));
    }
    let base = p
        .mem
        .vmas
        .find_free_below(page_round(first.span()), MMAP_TOP)?;
    let plan = elf::plan(image, base).map_err(ExecError::Elf)?;
    load_segments(p, &plan, start)?;
    // glibc's loader asks CPUID some 27 times as every program starts.
    crate::syscall::rewrite::rewrite_cpuid_sites(p, image, start, plan.bias, true);
    Ok((plan.entry, base))
}

fn page_round(v: u64) -> u64 {
    elf::page_up(v)
}

/// Maps the program's PT_LOAD segments: read-only ones straight from the
/// boot module's frames, writable ones as copies (their untouched tail is
/// demand-zero).
fn load_segments(p: &mut Process, plan: &LoadPlan, module_phys: u64) -> Result<(), ExecError> {
    for seg in &plan.segments {
        let start = seg.page_start();
        let end = seg.page_end();
        let seg_prot = segment_prot(seg.flags);
        let in_page = seg.vaddr - start;
        let shareable = seg.flags & PF_W == 0
            && seg.memsz == seg.filesz
            && seg.offset % PAGE_SIZE == in_page
            && module_phys.is_multiple_of(PAGE_SIZE);
        if shareable {
            p.mem.add_area(Vma {
                start,
                end,
                prot: seg_prot,
                backing: Backing::Image {
                    phys: module_phys,
                    offset: seg.offset - in_page,
                },
                label: Label::Program,
            })?;
            // The tables are new: mapping the code and read-only data now
            // costs no host trap, and spares the program's first faults.
            p.mem.map_image_now(start, end);
            continue;
        }
        p.mem.add_area(Vma {
            start,
            end,
            prot: seg_prot,
            backing: Backing::Anonymous,
            label: Label::Program,
        })?;
        // Copy the file bytes, including those that share the segment's
        // first page before `vaddr` (as a file mapping shows them).
        let from = start.max(seg.vaddr.saturating_sub(seg.offset));
        let file_offset = seg.offset + from - seg.vaddr; // from >= vaddr - offset
        let len = (seg.vaddr + seg.filesz - from) as usize;
        // SAFETY: the bytes lie in the program's (or interpreter's) file in
        // guest memory, which `elf::plan` checked covers `offset + filesz`.
        let bytes = unsafe {
            core::slice::from_raw_parts(arch::phys_to_virt(module_phys + file_offset), len)
        };
        p.mem.copy_into(from, bytes)?;
    }
    Ok(())
}

/// Most `#!` interpreter lines one execve follows (Linux allows 4).
const MAX_INTERPRETERS: usize = 4;
/// Longest `#!` line read.
const MAX_SHEBANG: usize = 256;

/// What an execve runs: an ELF file of the image (its bytes in guest
/// memory), its path and the argument vector, changed by `#!` lines.
pub struct Program {
    /// The ELF file's bytes.
    pub region: Region,
    /// Its resolved path.
    pub path: alloc::string::String,
    /// argv for it.
    pub argv: Vec<Vec<u8>>,
}

/// The executable file of the image at `path` (relative to `cwd`).
///
/// # Errors
/// ENOENT; EACCES for a directory, a device or a file without an x bit;
/// ENOEXEC for a file outside the image (the writable layer, a volume):
/// programs run from the image's root file system, mapped in place.
fn image_file(
    cwd: &str,
    path: &str,
) -> Result<(alloc::string::String, Region), kiln_kernel::errno::Errno> {
    use crate::fs::{self, Found};
    use kiln_kernel::errno::Errno;
    use kiln_kernel::fs::vfs::Node;
    match fs::lookup(cwd, path, true)? {
        Found::Node {
            path,
            node: Node::Lower(n),
        } if n.kind == kiln_kernel::fs::tarfs::Kind::File => {
            if n.mode & 0o111 == 0 {
                return Err(Errno::Acces);
            }
            let archive = fs::archive();
            Ok((
                path,
                Region {
                    start: archive.start + n.data,
                    end: archive.start + n.data + n.size,
                },
            ))
        }
        Found::Node { node, .. } if node.kind() == kiln_kernel::fs::vfs::NodeKind::File => {
            Err(Errno::Noexec)
        }
        Found::Volume(n) if n.stat.mode & 0o170000 == 0o100000 => Err(Errno::Noexec),
        _ => Err(Errno::Acces),
    }
}

/// Finds what execve of `path` with `argv` runs, following `#!` lines:
/// `#!INTERP [ARG]` runs INTERP with argv `[INTERP, ARG, path, argv[1..]]`.
///
/// # Errors
/// ENOENT, EACCES, ENOEXEC (not an ELF file kiln runs, or a bad `#!`
/// line), ELOOP (too many interpreters).
pub fn find_program(
    cwd: &str,
    path: &str,
    mut argv: Vec<Vec<u8>>,
) -> Result<Program, kiln_kernel::errno::Errno> {
    use kiln_kernel::errno::Errno;
    let mut path = alloc::string::String::from(path);
    for _ in 0..=MAX_INTERPRETERS {
        let (resolved, region) = image_file(cwd, &path)?;
        // SAFETY: the file lies inside the rootfs archive, in guest memory
        // the platform code checked and reserved; it is read-only.
        let bytes = unsafe {
            core::slice::from_raw_parts(
                arch::phys_to_virt(region.start),
                (region.end - region.start) as usize,
            )
        };
        if let Some(rest) = bytes.strip_prefix(b"#!") {
            let line = &rest[..rest.len().min(MAX_SHEBANG)];
            let line = line.split(|&b| b == b'\n').next().unwrap_or(&[]);
            let line = core::str::from_utf8(line)
                .map_err(|_| Errno::Noexec)?
                .trim();
            let (interp, arg) = match line.split_once([' ', '\t']) {
                Some((i, a)) => (i, Some(a.trim())),
                None => (line, None),
            };
            if interp.is_empty() {
                return Err(Errno::Noexec);
            }
            let mut next: Vec<Vec<u8>> = alloc::vec![interp.as_bytes().to_vec()];
            if let Some(a) = arg.filter(|a| !a.is_empty()) {
                next.push(a.as_bytes().to_vec());
            }
            next.push(path.as_bytes().to_vec());
            next.extend(argv.into_iter().skip(1));
            argv = next;
            path = interp.into();
            continue;
        }
        elf::plan(bytes, elf::PIE_BASE).map_err(|_| Errno::Noexec)?;
        return Ok(Program {
            region,
            path: resolved,
            argv,
        });
    }
    Err(Errno::Loop)
}

/// execve's point of no return: `p`'s address space is emptied and
/// `program` loaded in its place with `envp`; descriptors (less the
/// close-on-exec ones), the current directory, umask, limits and ignored
/// signals carry over. Returns the entry point and stack pointer.
///
/// # Errors
/// [`ExecError`] when loading fails after the old image is gone (the
/// caller then kills the process, as Linux does).
pub fn replace(
    p: &mut Process,
    program: &Program,
    envp: Vec<Vec<u8>>,
) -> Result<(u64, u64), ExecError> {
    let _ = p.write_back(0, u64::MAX, true);
    if p.vfork_parent.is_some() {
        // A vfork child: the memory goes back to the parent, and the new
        // image is built in the parent's empty stand-in tables.
        crate::process::give_back_memory(p);
        arch::load_page_table(p.mem.pml4());
    }
    p.mem.remove_range(
        kiln_kernel::exec::elf::USER_MIN,
        kiln_kernel::exec::elf::USER_END,
    )?;
    let args = Args {
        argv: program.argv.clone(),
        envp,
    };
    let (mut next, entry, sp, _) = exec(program.region, program.path.as_bytes(), &args, p.trace)?;
    next.pid = p.pid;
    next.ppid = p.ppid;
    next.pgid = p.pgid;
    next.sid = p.sid;
    next.pdeathsig = p.pdeathsig;
    next.orphan = p.orphan;
    next.fds = core::mem::take(&mut p.fds);
    next.fds.close_on_exec();
    next.cwd = core::mem::take(&mut p.cwd);
    next.umask = p.umask;
    next.rlimits = p.rlimits;
    next.start_ns = p.start_ns;
    next.signals = p.signals.after_exec();
    next.cred = core::mem::take(&mut p.cred);
    // POSIX timers end with the old image; interval timers carry over.
    crate::time::timer::drop_process(p.pid, false);
    *p = next;
    Ok((entry, sp))
}
