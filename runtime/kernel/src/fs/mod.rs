//! Files: the program's file system and how paths become open files.
//!
//! The file system is [`kiln_kernel::fs::vfs::Overlay`]: the image's rootfs (a
//! tar archive in guest memory, the boot module, indexed in place) with a
//! writable in-memory layer on top. When the boot module is a bare ELF
//! program (`kiln-vmm --app`) there is no rootfs: the overlay starts empty
//! (`/` and `/tmp`) and the program is the module itself. Beside it live the
//! kernel's devices (/dev/null, …) and the /proc files a program reads
//! about itself.

pub mod proc;
pub mod volume;

use alloc::string::String;
use alloc::sync::Arc;

use kiln_kernel::errno::Errno;
use kiln_kernel::fs::tarfs::{self, TarFs};
use kiln_kernel::fs::vfs::{Node, NodeKind, Overlay};
use spin::{Mutex, MutexGuard};

use crate::arch;
use crate::boot::Region;
use crate::fd::device::{Device, OpenDevice};
use crate::fd::file::{Directory, RootFile, TmpFile};
use crate::fd::FileOps;
use crate::state::{Module, BOOT, KERNEL};

/// The file system (locked for the caller's use).
pub fn vfs() -> MutexGuard<'static, Overlay> {
    let fs = KERNEL.vfs.call_once(|| Mutex::new(Overlay::empty())).lock();
    fs
}

/// What the boot module holds (nothing before `init`).
fn module() -> Module {
    BOOT.module.get().copied().unwrap_or_default()
}

/// Guest-physical range of the rootfs archive (empty without one).
pub fn archive() -> Region {
    module().archive
}

/// Why the module holds no runnable program at the path.
pub enum ProgramError {
    /// Not there (or a dangling link).
    NotFound,
    /// There, but not a regular executable file.
    NotExecutable(&'static str),
    /// A path component is not a directory or links loop.
    Lookup(Errno),
}

/// The bytes of the boot module as a slice.
fn module_bytes(module: Region) -> &'static [u8] {
    // SAFETY: the module lies in guest memory the platform code checked and
    // reserved from the allocator, reached through the direct map; it is
    // read-only and lives as long as the kernel.
    unsafe {
        core::slice::from_raw_parts(
            arch::phys_to_virt(module.start),
            (module.end - module.start) as usize,
        )
    }
}

/// Sets up the file system (over the boot module when it is a tar archive)
/// and returns where the program at `path` lies; a bare ELF module is the
/// program itself.
pub fn init(module: Region, path: &str) -> Result<Region, ProgramError> {
    if module.end <= module.start {
        KERNEL.vfs.call_once(|| Mutex::new(Overlay::empty()));
        return Err(ProgramError::NotFound);
    }
    let bytes = module_bytes(module);
    if !tarfs::is_tar(bytes) {
        KERNEL.vfs.call_once(|| Mutex::new(Overlay::empty()));
        BOOT.module.call_once(|| Module {
            archive: Region::default(),
            bare_program: Some(module),
        });
        return Ok(module);
    }
    let index = match TarFs::parse(bytes) {
        Ok(i) => i,
        Err(e) => panic!("the image's root file system is damaged: {e}"),
    };
    BOOT.module.call_once(|| Module {
        archive: module,
        bare_program: None,
    });
    KERNEL
        .vfs
        .call_once(|| Mutex::new(Overlay::new(index, bytes)));
    let fs = vfs();
    let (_, node) = fs.resolve("/", path, true).map_err(|e| match e {
        Errno::Noent => ProgramError::NotFound,
        other => ProgramError::Lookup(other),
    })?;
    match node {
        Node::Lower(n) if matches!(n.kind, tarfs::Kind::File) && n.mode & 0o111 != 0 => {
            Ok(Region {
                start: module.start + n.data,
                end: module.start + n.data + n.size,
            })
        }
        n if n.kind() == NodeKind::File => Err(ProgramError::NotExecutable(
            "it is not executable (mode has no x bit)",
        )),
        n if n.kind() == NodeKind::Dir => Err(ProgramError::NotExecutable("it is a directory")),
        _ => Err(ProgramError::NotFound),
    }
}

/// The CPUID sites the image builder listed for the rootfs file whose
/// bytes start at guest-physical `phys`.
pub fn cpuid_sites(phys: u64) -> Option<kiln_kernel::fs::tarfs::CpuidSites> {
    let archive = archive();
    if phys < archive.start || phys >= archive.end {
        return None;
    }
    vfs().lower_cpuid_sites(phys - archive.start)
}

/// The file of the image (a rootfs file, or the bare program) holding
/// guest-physical byte `phys`: its bytes and the physical address where
/// they start.
pub fn file_containing(phys: u64) -> Option<(&'static [u8], u64)> {
    if let Some(bare) = module().bare_program {
        return (phys >= bare.start && phys < bare.end).then(|| (module_bytes(bare), bare.start));
    }
    let archive = archive();
    if phys < archive.start || phys >= archive.end {
        return None;
    }
    let (bytes, offset) = vfs().lower_file_containing(phys - archive.start)?;
    Some((bytes, archive.start + offset))
}

/// What a path names.
pub enum Found {
    /// A node of the file system, at its resolved path.
    Node {
        /// Resolved path (links followed).
        path: String,
        /// The node.
        node: Node,
    },
    /// One of the kernel's devices.
    Device(Device),
    /// A /proc entry.
    Proc(proc::Entry),
    /// A node of a shared directory (`-v`).
    Volume(volume::VolNode),
}

/// `path` made absolute against `cwd`, without `.` and `..`.
pub fn absolute(cwd: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        String::from(path)
    } else {
        alloc::format!("{cwd}/{path}")
    };
    let mut parts: alloc::vec::Vec<&str> = alloc::vec::Vec::new();
    for c in joined.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    alloc::format!("/{}", parts.join("/"))
}

/// Looks `path` up (relative to `cwd`), following a final symbolic link
/// when `follow` is set.
///
/// # Errors
/// ENOENT, ENOTDIR, ELOOP, ENAMETOOLONG as Linux reports them.
pub fn lookup(cwd: &str, path: &str, follow: bool) -> Result<Found, Errno> {
    if path.is_empty() {
        return Err(Errno::Noent);
    }
    let mut abs = absolute(cwd, path);
    // Paths on a volume, and where their symbolic links lead.
    let mut hops = 0;
    while volume::split(&abs).is_some() {
        match volume::resolve(&abs, follow)? {
            volume::Resolved::Node(n) => return Ok(Found::Volume(n)),
            volume::Resolved::Elsewhere(next) => abs = next,
        }
        hops += 1;
        if hops > 40 {
            return Err(Errno::Loop);
        }
    }
    if hops > 0 {
        return lookup("/", &abs, follow);
    }
    if let Some(d) = Device::at(&abs) {
        return Ok(Found::Device(d));
    }
    if let Some(entry) = proc::Entry::at(&abs) {
        if follow {
            if let Some(target) = entry.link_target(None) {
                // A relative target (/proc/self's) is relative to /proc.
                return lookup("/proc", &target, true);
            }
        }
        return Ok(Found::Proc(entry));
    }
    let (path, node) = vfs().resolve(cwd, path, follow)?;
    Ok(Found::Node { path, node })
}

/// Opens `node` (at resolved `path`) for reading (`write` false) or
/// writing; writing copies a rootfs file up first.
///
/// # Errors
/// EISDIR when writing a directory.
pub fn open_node(
    path: String,
    node: Node,
    write: bool,
    append: bool,
) -> Result<Arc<dyn FileOps>, Errno> {
    match node.kind() {
        NodeKind::Dir if write => Err(Errno::Isdir),
        NodeKind::Dir => Ok(Arc::new(Directory::new(node, path))),
        NodeKind::Symlink => Err(Errno::Loop),
        // A socket's name is for connect, not open (Linux: ENXIO).
        NodeKind::Socket => Err(Errno::Nxio),
        NodeKind::File => match node {
            Node::Lower(n) if !write => Ok(Arc::new(RootFile::new(n, archive()))),
            _ => {
                let file = vfs().writable(&path)?;
                Ok(Arc::new(TmpFile::new(file, write, append)))
            }
        },
    }
}

/// Replaces the contents of the file at absolute `path` (creating it) in
/// the writable layer — for files the kernel writes at boot.
///
/// # Errors
/// The lookup's errors (a missing directory, a directory in the way).
pub fn write_whole_file(path: &str, data: &[u8]) -> Result<(), Errno> {
    if vfs().get(path).is_none() {
        // Missing directories on the way are made (a bare program's root
        // has no /etc).
        if let Some((dir, _)) = path.rsplit_once('/') {
            make_dirs(dir)?;
        }
    }
    let mut fs = vfs();
    let file = if fs.get(path).is_some() {
        fs.writable(path)?
    } else {
        let (parent, name) = fs.resolve_parent("/", path)?;
        fs.create_file(&parent, &name.ok_or(Errno::Isdir)?, 0o644)?
    };
    let mut f = file.lock();
    f.bytes.clear();
    f.bytes.extend_from_slice(data);
    Ok(())
}

/// Makes directory `path` (absolute) and its missing parents in the
/// writable layer, as `mkdir -p`.
///
/// # Errors
/// ENOTDIR when a file is in the way.
pub fn make_dirs(path: &str) -> Result<(), Errno> {
    let mut fs = vfs();
    let mut dir = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        let parent = if dir.is_empty() {
            String::from("/")
        } else {
            dir.clone()
        };
        dir.push('/');
        dir.push_str(part);
        match fs.get(&dir) {
            None => fs.mkdir(&parent, part, 0o755)?,
            Some(n) if n.kind() != NodeKind::Dir => return Err(Errno::Notdir),
            Some(_) => {}
        }
    }
    Ok(())
}

/// Opens a device (for writing when `write`; a disk's writes flushed each
/// time with `sync_writes`, O_SYNC).
///
/// # Errors
/// EROFS when writing a read-only disk.
pub fn open_device(d: Device, write: bool, sync_writes: bool) -> Result<Arc<dyn FileOps>, Errno> {
    Ok(match d {
        Device::Tty => crate::fd::tty::Terminal::new(),
        Device::Disk(i) => Arc::new(crate::fd::disk::DiskFile::open(
            usize::from(i),
            write,
            sync_writes,
        )?),
        d => Arc::new(OpenDevice(d)),
    })
}
