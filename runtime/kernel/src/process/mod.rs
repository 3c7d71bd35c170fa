//! The one program this kernel runs: its address space, its loading
//! (`exec`), demand paging, and checked access to its memory.
//!
//! The program shares the kernel's page tables (the lower half is its own)
//! and runs at the kernel's privilege level, so the kernel reads and writes
//! program memory through the program's own addresses — but only after
//! [`Process::prepare`] has checked the range against the program's areas
//! and made every page present. The kernel therefore never takes a page
//! fault on program memory.

use alloc::vec::Vec;

use kiln_kernel::errno::Errno;
use kiln_kernel::exec::elf::{self, LoadPlan, PAGE_SIZE, PF_W, PF_X, USER_END};
use kiln_kernel::exec::stack::{self, at};
use kiln_kernel::mm::vma::{prot, Backing, Label, Vma, VmaError, VmaSet};
use spin::Mutex;

use crate::arch::{self, pte, PageTables};
use crate::boot::Region;
use crate::fd::FdTable;
use crate::mm::frame;
use crate::signal::Signals;

/// Top of the main thread's stack (Linux's, without randomisation).
pub const STACK_TOP: u64 = USER_END;
/// Size of the main thread's stack area (Linux's default RLIMIT_STACK).
pub const STACK_SIZE: u64 = 8 << 20;
/// Where anonymous mappings start, growing down (Linux's `mmap_base`
/// without randomisation: 128 MiB below the stack top).
pub const MMAP_TOP: u64 = STACK_TOP - (128 << 20);

/// The program's state.
pub struct Process {
    /// The program's areas.
    pub vmas: VmaSet,
    tables: PageTables,
    /// Start of the brk heap.
    pub brk_start: u64,
    /// Current program break.
    pub brk: u64,
    /// Print every system call.
    pub trace: bool,
    /// Signal dispositions and mask.
    pub signals: Signals,
    /// Open files.
    pub fds: FdTable,
    /// Current directory (a resolved path).
    pub cwd: alloc::string::String,
    /// File-mode creation mask.
    pub umask: u32,
    /// The arguments it was started with (/proc/self/cmdline).
    pub argv: Vec<Vec<u8>>,
    /// Its initial environment (/proc/self/environ).
    pub envp: Vec<Vec<u8>>,
    /// Resource limits set by the program (`prlimit64`), by resource.
    pub rlimits: [(u64, u64); 16],
    /// Monotonic time at program start (for the CPU-time clocks).
    pub start_ns: u64,
}

/// The running program. One CPU, no nesting: syscalls and faults take the
/// lock for their whole duration and the kernel never faults while holding it.
pub static PROCESS: Mutex<Option<Process>> = Mutex::new(None);

/// The program's path in the guest, set once at exec.
static EXE_PATH: spin::Once<alloc::string::String> = spin::Once::new();

/// The program's path (/proc/self/exe, AT_EXECFN).
pub fn exe_path() -> &'static str {
    EXE_PATH.get().map_or("/", |s| s.as_str())
}

/// Why a page could not be made present.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultError {
    /// No area holds the address.
    Unmapped,
    /// The area does not allow this access.
    Protection,
    /// No free frame.
    OutOfMemory,
}

impl From<FaultError> for Errno {
    fn from(e: FaultError) -> Errno {
        match e {
            FaultError::Unmapped | FaultError::Protection => Errno::Fault,
            FaultError::OutOfMemory => Errno::Nomem,
        }
    }
}

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

/// Page-table flags for an area's protection.
fn pte_flags(p: u32) -> u64 {
    let mut f = 0;
    if p & prot::WRITE != 0 {
        f |= pte::WRITABLE;
    }
    if p & prot::EXEC == 0 {
        f |= pte::NO_EXECUTE;
    }
    f
}

fn page_down(v: u64) -> u64 {
    v & !(PAGE_SIZE - 1)
}

impl Process {
    /// Makes the page holding `addr` present for an access of kind
    /// `write`/`exec`, allocating, copying or un-sharing a frame as the
    /// area's backing says.
    pub fn populate(&mut self, addr: u64, write: bool, exec: bool) -> Result<(), FaultError> {
        let page = page_down(addr);
        let vma = *self.vmas.find(page).ok_or(FaultError::Unmapped)?;
        let mut need = prot::READ;
        if write {
            need |= prot::WRITE;
        }
        if exec {
            need = prot::EXEC;
        }
        if vma.prot & need != need {
            return Err(FaultError::Protection);
        }
        let entry = self.tables.lookup(page);
        let flags = pte_flags(vma.prot);
        if entry & pte::PRESENT != 0 {
            if !write || entry & pte::WRITABLE != 0 {
                return Ok(()); // already fine (a stale TLB entry, or a race we cannot have)
            }
            // A write to a shared image page of a writable area: copy it.
            let copy = frame::alloc().ok_or(FaultError::OutOfMemory)?;
            copy_frame(entry & pte::ADDR, copy);
            self.tables.unmap(page);
            return self.map(page, copy, flags);
        }
        if entry & pte::KEPT != 0 {
            // A PROT_NONE page made accessible again keeps its contents.
            self.tables.protect(page, flags, true);
            return Ok(());
        }
        match vma.backing {
            Backing::Anonymous => {
                let pa = frame::alloc_zeroed().ok_or(FaultError::OutOfMemory)?;
                self.map(page, pa, flags)
            }
            Backing::Image { phys, offset } => {
                let source = phys + offset + (page - vma.start);
                if write {
                    let copy = frame::alloc().ok_or(FaultError::OutOfMemory)?;
                    copy_frame(source, copy);
                    self.map(page, copy, flags)
                } else {
                    self.map(page, source, flags & !pte::WRITABLE)
                }
            }
        }
    }

    /// Handles the program's page fault at `addr`: makes that page present,
    /// then maps the not-yet-present neighbours in an aligned 64 KiB window,
    /// because each fault costs several exits to the hypervisor (~10 µs on
    /// PVM, against ~4.5 µs for the first touch of a page already mapped:
    /// `cargo xtask bench-syscall` measured 15.2 µs per page without
    /// neighbours, 7.8 with 4, 4.7 with 16) and programs touch memory in
    /// runs. Neighbours that cannot be mapped are left alone.
    pub fn handle_fault(&mut self, addr: u64, write: bool, exec: bool) -> Result<(), FaultError> {
        self.populate(addr, write, exec)?;
        let Some(vma) = self.vmas.find(addr).copied() else {
            return Ok(());
        };
        let window = 16 * PAGE_SIZE;
        let start = (addr & !(window - 1)).max(vma.start);
        let end = ((addr & !(window - 1)) + window).min(vma.end);
        let fault_page = page_down(addr);
        let mut page = start;
        while page < end {
            if page != fault_page && self.tables.lookup(page) & (pte::PRESENT | pte::KEPT) == 0 {
                let _ = self.populate(page, false, false);
            }
            page += PAGE_SIZE;
        }
        Ok(())
    }

    fn map(&mut self, page: u64, pa: u64, flags: u64) -> Result<(), FaultError> {
        self.tables
            .map(page, pa, flags, &mut frame::alloc_zeroed)
            .map_err(|_| FaultError::OutOfMemory)
    }

    /// Checks that `[addr, addr+len)` is program memory allowing the access
    /// and makes all its pages present.
    pub fn prepare(&mut self, addr: u64, len: u64, write: bool) -> Result<(), Errno> {
        if len == 0 {
            return Ok(());
        }
        let end = addr
            .checked_add(len)
            .filter(|&e| e <= USER_END)
            .ok_or(Errno::Fault)?;
        let mut page = page_down(addr);
        while page < end {
            let e = self.tables.lookup(page);
            let fine = e & pte::PRESENT != 0 && (!write || e & pte::WRITABLE != 0);
            if !fine {
                self.populate(page, write, false)?;
            }
            page += PAGE_SIZE;
        }
        Ok(())
    }

    /// The program's bytes at `[addr, addr+len)`.
    pub fn user_bytes(&mut self, addr: u64, len: u64) -> Result<&[u8], Errno> {
        self.prepare(addr, len, false)?;
        if len == 0 {
            return Ok(&[]);
        }
        // SAFETY: `prepare` checked the range is mapped, readable program
        // memory; the program is stopped while the kernel runs, and `&mut
        // self` keeps the areas from changing while the slice lives.
        Ok(unsafe { core::slice::from_raw_parts(addr as *const u8, len as usize) })
    }

    /// The program's bytes at `[addr, addr+len)`, for writing.
    pub fn user_bytes_mut(&mut self, addr: u64, len: u64) -> Result<&mut [u8], Errno> {
        self.prepare(addr, len, true)?;
        if len == 0 {
            return Ok(&mut []);
        }
        // SAFETY: as in `user_bytes`, and the pages were made writable.
        Ok(unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, len as usize) })
    }

    /// Copies `data` to the program's memory at `addr`.
    pub fn write_user(&mut self, addr: u64, data: &[u8]) -> Result<(), Errno> {
        self.user_bytes_mut(addr, data.len() as u64)?
            .copy_from_slice(data);
        Ok(())
    }

    /// Reads a plain value from the program's memory.
    pub fn read_obj<T: Copy>(&mut self, addr: u64) -> Result<T, Errno> {
        let bytes = self.user_bytes(addr, core::mem::size_of::<T>() as u64)?;
        // SAFETY: `bytes` holds size_of::<T>() readable bytes; T is a plain
        // `Copy` type for which any bit pattern read is acceptable to callers
        // (integers and arrays of them).
        Ok(unsafe { core::ptr::read_unaligned(bytes.as_ptr() as *const T) })
    }

    /// Up to `max` bytes of a NUL-terminated string (a longer one is cut,
    /// as strncpy_from_user does).
    pub fn read_cstr_lossy(&mut self, addr: u64, max: usize) -> Result<Vec<u8>, Errno> {
        let mut out = Vec::new();
        for i in 0..max as u64 {
            let b = self.user_bytes(addr + i, 1)?[0];
            if b == 0 {
                break;
            }
            out.push(b);
        }
        Ok(out)
    }

    /// A NUL-terminated string from the program's memory (at most `max`
    /// bytes before the NUL).
    pub fn read_cstr(&mut self, addr: u64, max: usize) -> Result<Vec<u8>, Errno> {
        let mut out = Vec::new();
        let mut at = addr;
        loop {
            let chunk_len = PAGE_SIZE - (at % PAGE_SIZE);
            let chunk = self.user_bytes(at, chunk_len)?;
            if let Some(nul) = chunk.iter().position(|&b| b == 0) {
                out.extend_from_slice(&chunk[..nul]);
                return Ok(out);
            }
            out.extend_from_slice(chunk);
            if out.len() > max {
                return Err(Errno::Nametoolong);
            }
            at += chunk_len;
        }
    }

    /// Copies `data` to the program's area at `addr` (which must exist),
    /// whatever the area's protection.
    pub fn copy_into(&mut self, addr: u64, data: &[u8]) -> Result<(), FaultError> {
        let end = addr + data.len() as u64;
        let mut at = addr;
        while at < end {
            let page = page_down(at);
            self.populate(page, false, false)?;
            let chunk = (page + PAGE_SIZE).min(end) - at;
            let frame = self.tables.lookup(page) & pte::ADDR;
            let src = &data[(at - addr) as usize..][..chunk as usize];
            // SAFETY: `frame` backs a page of a program area that was just
            // made present (anonymous, so the program's own); `[at, at+chunk)`
            // lies inside that page.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    src.as_ptr(),
                    arch::phys_to_virt(frame + (at - page)),
                    src.len(),
                )
            };
            at += chunk;
        }
        Ok(())
    }

    /// Adds an area (no pages are mapped until touched).
    pub fn add_area(&mut self, vma: Vma) -> Result<(), VmaError> {
        self.vmas.insert(vma)
    }

    /// Removes `[start, end)` from the address space, freeing its frames.
    pub fn remove_range(&mut self, start: u64, end: u64) -> Result<(), VmaError> {
        for piece in self.vmas.remove(start, end)? {
            let mut page = piece.start;
            while page < piece.end {
                if let Some(pa) = self.tables.unmap(page) {
                    if !self.is_image_frame(&piece, page, pa) {
                        frame::free(pa);
                    }
                }
                page += PAGE_SIZE;
            }
        }
        Ok(())
    }

    /// Writes `bytes` into the program's code at `addr` (system-call
    /// rewriting): pages shared with the image get a private copy first,
    /// and keep their protection.
    pub fn poke_code(&mut self, addr: u64, bytes: &[u8]) -> Result<(), FaultError> {
        for (i, &b) in bytes.iter().enumerate() {
            let at = addr + i as u64;
            let page = page_down(at);
            let vma = self.vmas.find(at).copied().ok_or(FaultError::Unmapped)?;
            if self.tables.lookup(page) & pte::PRESENT == 0 {
                self.populate(page, false, true)?;
            }
            let entry = self.tables.lookup(page);
            let mut pa = entry & pte::ADDR;
            if self.is_image_frame(&vma, page, pa) {
                let copy = frame::alloc().ok_or(FaultError::OutOfMemory)?;
                copy_frame(pa, copy);
                let flags = entry & !(pte::ADDR | pte::PRESENT);
                self.tables.unmap(page);
                if self.map(page, copy, flags).is_err() {
                    frame::free(copy);
                    return Err(FaultError::OutOfMemory);
                }
                pa = copy;
            }
            // SAFETY: `pa` is the program's private frame backing `page`
            // (just made private if it was shared), reached through the
            // direct map; the byte lies inside it.
            unsafe { *arch::phys_to_virt(pa + (at - page)) = b };
        }
        Ok(())
    }

    /// Moves the area piece `[start, end)` (inside one area) to `to`, pages
    /// and all: their frames change address, not content (mremap).
    pub fn move_range(&mut self, start: u64, end: u64, to: u64) -> Result<(), VmaError> {
        let vma = self
            .vmas
            .find(start)
            .copied()
            .filter(|v| v.end >= end)
            .ok_or(VmaError::Invalid)?;
        let backing = match vma.backing {
            Backing::Image { phys, offset } => Backing::Image {
                phys,
                offset: offset + (start - vma.start),
            },
            Backing::Anonymous => Backing::Anonymous,
        };
        self.vmas.insert(Vma {
            start: to,
            end: to + (end - start),
            backing,
            ..vma
        })?;
        let mut page = start;
        while page < end {
            let entry = self.tables.lookup(page);
            if entry & (pte::PRESENT | pte::KEPT) != 0 {
                let pa = self.tables.unmap(page).unwrap_or(entry & pte::ADDR);
                let flags = entry & !(pte::ADDR | pte::PRESENT | pte::KEPT);
                let target = to + (page - start);
                if self.map(target, pa, flags).is_err() {
                    // Out of page-table memory: the page is lost, not leaked.
                    if !self.is_image_frame(&vma, page, pa) {
                        frame::free(pa);
                    }
                } else if entry & pte::KEPT != 0 {
                    self.tables.protect(target, flags, false);
                }
            }
            page += PAGE_SIZE;
        }
        self.vmas.remove(start, end)?;
        Ok(())
    }

    /// Drops the contents of `[start, end)` (MADV_DONTNEED): anonymous
    /// pages read as zero again, image pages as the image.
    pub fn discard_range(&mut self, start: u64, end: u64) {
        let mut page = start;
        while page < end {
            if let Some(vma) = self.vmas.find(page).copied() {
                if let Some(pa) = self.tables.unmap(page) {
                    if !self.is_image_frame(&vma, page, pa) {
                        frame::free(pa);
                    }
                }
            }
            page += PAGE_SIZE;
        }
    }

    fn is_image_frame(&self, vma: &Vma, page: u64, pa: u64) -> bool {
        match vma.backing {
            Backing::Image { phys, offset } => pa == phys + offset + (page - vma.start),
            Backing::Anonymous => false,
        }
    }

    /// Changes the protection of `[start, end)`.
    pub fn protect_range(&mut self, start: u64, end: u64, new: u32) -> Result<(), VmaError> {
        self.vmas.protect(start, end, new)?;
        let mut page = start;
        while page < end {
            let e = self.tables.lookup(page);
            if e & (pte::PRESENT | pte::KEPT) != 0 {
                let vma = self.vmas.find(page).copied();
                let mut flags = pte_flags(new);
                // Shared image frames stay read-only: the first write copies.
                if let Some(v) = vma {
                    if self.is_image_frame(&v, page, e & pte::ADDR) {
                        flags &= !pte::WRITABLE;
                    }
                }
                self.tables.protect(page, flags, new != 0);
            }
            page += PAGE_SIZE;
        }
        Ok(())
    }
}

fn copy_frame(from: u64, to: u64) {
    // SAFETY: both are RAM frames reached through the direct map; `to` was
    // just allocated, so nothing else refers to it.
    unsafe {
        core::ptr::copy_nonoverlapping(
            arch::phys_to_virt(from),
            arch::phys_to_virt(to),
            PAGE_SIZE as usize,
        )
    };
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
/// Returns the process, its entry point and its initial stack pointer.
pub fn exec(
    module: Region,
    path: &[u8],
    args: &Args,
    trace: bool,
) -> Result<(Process, u64, u64), ExecError> {
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
    EXE_PATH.call_once(|| alloc::string::String::from_utf8_lossy(path).into_owned());
    // SAFETY: the active PML4 is the kernel's; the process owns its lower half.
    let tables = unsafe { PageTables::from_pml4(arch::active_page_table()) };
    let mut p = Process {
        vmas: VmaSet::new(),
        tables,
        brk_start: plan.brk_start,
        brk: plan.brk_start,
        trace,
        signals: Signals::new(),
        fds: FdTable::with_stdio(),
        cwd: "/".into(),
        umask: 0o022,
        argv: args.argv.clone(),
        envp: args.envp.clone(),
        rlimits: [(u64::MAX, u64::MAX); 16],
        start_ns: crate::time::monotonic_ns(),
    };
    load_segments(&mut p, &plan, module.start)?;
    // A dynamic program starts in its interpreter (ld.so), loaded from the
    // rootfs below the mmap area; the program's own entry goes in AT_ENTRY.
    let (entry, interp_base) = match &plan.interpreter {
        None => (plan.entry, 0),
        Some(interp) => load_interpreter(&mut p, interp)?,
    };

    p.add_area(Vma {
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
    p.write_user(stack.sp, &stack.bytes)
        .map_err(|_| ExecError::OutOfMemory)?;
    Ok((p, entry, stack.sp))
}

/// Maps the vDSO image below the mmap area; returns its address (0, and
/// no AT_SYSINFO_EHDR use, when it is turned off).
fn map_vdso(p: &mut Process) -> Result<u64, ExecError> {
    if !crate::time::vdso::enabled() {
        return Ok(0);
    }
    let base = p.vmas.find_free_below(PAGE_SIZE, MMAP_TOP)?;
    let image = kiln_kernel::time::vdso::image(base, &crate::time::vdso::symbols());
    p.add_area(Vma {
        start: base,
        end: base + page_round(image.len() as u64),
        prot: prot::READ | prot::EXEC,
        backing: Backing::Anonymous,
        label: Label::Vdso,
    })?;
    p.copy_into(base, &image)
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
    let base = p.vmas.find_free_below(page_round(first.span()), MMAP_TOP)?;
    let plan = elf::plan(image, base).map_err(ExecError::Elf)?;
    load_segments(p, &plan, start)?;
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
            p.add_area(Vma {
                start,
                end,
                prot: seg_prot,
                backing: Backing::Image {
                    phys: module_phys,
                    offset: seg.offset - in_page,
                },
                label: Label::Program,
            })?;
            continue;
        }
        p.add_area(Vma {
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
        p.copy_into(from, bytes)?;
    }
    Ok(())
}
