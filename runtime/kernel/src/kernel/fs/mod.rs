//! Files. The root file system is the image's rootfs: a tar archive in
//! guest memory (the boot module), indexed in place by
//! [`kiln_kernel::tarfs`]. When the boot module is a bare ELF program
//! (`kiln-vmm --app`), there is no root file system and the program is
//! the module itself.

use kiln_kernel::errno::Errno;
use kiln_kernel::tarfs::{self, Kind, TarFs};
use spin::Once;

use crate::kernel::arch;
use crate::kernel::boot::Region;

/// The image's root file system.
pub struct Rootfs {
    /// The index.
    pub index: TarFs,
    /// Guest-physical range of the archive.
    pub archive: Region,
}

static ROOTFS: Once<Rootfs> = Once::new();

/// The root file system, if the boot module is one.
pub fn rootfs() -> Option<&'static Rootfs> {
    ROOTFS.get()
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

/// Sets up the root file system when the boot module is a tar archive and
/// returns where the program at `path` lies; a bare ELF module is the
/// program itself.
pub fn init(module: Region, path: &str) -> Result<Region, ProgramError> {
    if module.end <= module.start {
        return Err(ProgramError::NotFound);
    }
    let bytes = module_bytes(module);
    if !tarfs::is_tar(bytes) {
        return Ok(module);
    }
    let index = match TarFs::parse(bytes) {
        Ok(i) => i,
        Err(e) => panic!("the image's root file system is damaged: {e}"),
    };
    let root = ROOTFS.call_once(|| Rootfs {
        index,
        archive: module,
    });
    let (_, node) = root.index.resolve("/", path, true).map_err(|e| match e {
        Errno::Noent => ProgramError::NotFound,
        other => ProgramError::Lookup(other),
    })?;
    match node.kind {
        Kind::File if node.mode & 0o111 != 0 => Ok(Region {
            start: module.start + node.data,
            end: module.start + node.data + node.size,
        }),
        Kind::File => Err(ProgramError::NotExecutable(
            "it is not executable (mode has no x bit)",
        )),
        Kind::Dir => Err(ProgramError::NotExecutable("it is a directory")),
        Kind::Symlink(_) => Err(ProgramError::NotFound),
    }
}

/// What a path names.
pub enum Found {
    /// A node of the rootfs, at its resolved path.
    Node {
        /// Resolved path (links followed).
        path: alloc::string::String,
        /// The node.
        node: kiln_kernel::tarfs::Node,
    },
    /// One of the kernel's devices.
    Device(crate::kernel::fd::device::Device),
    /// /proc/self/exe: a link to the program.
    Exe,
}

/// `path` made absolute against `cwd`, without `.` and `..`.
pub fn absolute(cwd: &str, path: &str) -> alloc::string::String {
    let joined = if path.starts_with('/') {
        alloc::string::String::from(path)
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
    let abs = absolute(cwd, path);
    if let Some(d) = crate::kernel::fd::device::Device::at(&abs) {
        return Ok(Found::Device(d));
    }
    if abs == "/proc/self/exe" {
        return Ok(Found::Exe);
    }
    let root = rootfs().ok_or(Errno::Noent)?;
    let (path, node) = root.index.resolve(cwd, path, follow)?;
    Ok(Found::Node {
        path,
        node: node.clone(),
    })
}
