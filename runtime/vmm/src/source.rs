//! Byte ranges of files that kiln-vmm maps into the guest or reads from:
//! the kernel ELF and the boot module, either whole files (`kiln-vmm
//! --app`) or sections of a `.kiln` image; and the data extents of sparse
//! files (snapshot memory, disks).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `len` bytes of `file` from `offset`.
#[derive(Clone, Debug)]
pub struct FileSlice {
    /// The file (shared: several slices of one image file).
    pub file: Arc<File>,
    /// Offset of the first byte.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// What to call it in messages (a path, or `image.kiln:rootfs`).
    pub name: String,
}

impl FileSlice {
    /// The SHA-256 of the slice's bytes, in hex.
    ///
    /// # Errors
    /// When the file cannot be read.
    pub fn sha256_hex(&self) -> std::io::Result<String> {
        use sha2::Digest;
        use std::os::unix::fs::FileExt;
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut at = 0;
        while at < self.len {
            let n = (self.len - at).min(buf.len() as u64) as usize;
            self.file.read_exact_at(&mut buf[..n], self.offset + at)?;
            hasher.update(&buf[..n]);
            at += n as u64;
        }
        Ok(hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect())
    }

    /// The whole file at `path`.
    ///
    /// # Errors
    /// When the file cannot be opened or examined.
    pub fn whole(path: &Path) -> std::io::Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(Self {
            file: Arc::new(file),
            offset: 0,
            len,
            name: path.display().to_string(),
        })
    }
}

/// Where kiln-vmm looks for the guest kernel when none is named:
/// `$KILN_KERNEL`, else `kiln-kernel.elf` next to the running executable or
/// up to two directories above it (a build tree's `target/kiln-kernel.elf`
/// seen from `target/{debug,release}/` or `target/<triple>/release/`).
///
/// # Errors
/// [`KernelNotFound`] listing where it looked.
pub fn default_kernel() -> Result<PathBuf, KernelNotFound> {
    if let Some(k) = std::env::var_os("KILN_KERNEL") {
        return Ok(PathBuf::from(k));
    }
    let exe = std::env::current_exe().map_err(KernelNotFound::NoExecutable)?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let candidates: Vec<PathBuf> = dir
        .ancestors()
        .take(3)
        .map(|d| d.join("kiln-kernel.elf"))
        .collect();
    candidates
        .iter()
        .find(|c| c.is_file())
        .cloned()
        .ok_or(KernelNotFound::NotThere(candidates))
}

/// Why no guest kernel was found.
#[derive(Debug, thiserror::Error)]
pub enum KernelNotFound {
    /// The running executable's path is unknown.
    #[error("cannot locate the running executable to find the guest kernel beside it: {0}")]
    NoExecutable(#[source] std::io::Error),
    /// None of the places looked at holds one.
    #[error("no guest kernel found (looked for {}); build it with `cargo xtask kernel`, set KILN_KERNEL or pass --kernel", .0.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NotThere(Vec<PathBuf>),
}

/// The data extents `(offset, length)` of the first `size` bytes of
/// `file`, in order: what a sparse file holds (its holes read as zeros and
/// are left out). A file system without SEEK_DATA reports one extent.
///
/// # Errors
/// When the file cannot be examined.
pub fn data_extents(file: &File, size: u64) -> std::io::Result<Vec<(u64, u64)>> {
    use std::os::fd::AsRawFd;
    let seek = |from: u64, whence| {
        // SAFETY: lseek on a descriptor `file` owns; no memory involved.
        let at = unsafe { libc::lseek(file.as_raw_fd(), from as libc::off_t, whence) };
        if at >= 0 {
            Ok(Some(at as u64))
        } else {
            let e = std::io::Error::last_os_error();
            // ENXIO: no data at or after `from`.
            if e.raw_os_error() == Some(libc::ENXIO) {
                Ok(None)
            } else {
                Err(e)
            }
        }
    };
    let mut extents = Vec::new();
    let mut at = 0;
    while at < size {
        let Some(data) = seek(at, libc::SEEK_DATA)? else {
            break;
        };
        let end = seek(data, libc::SEEK_HOLE)?.unwrap_or(size).min(size);
        if data >= end {
            break;
        }
        extents.push((data, end - data));
        at = end;
    }
    Ok(extents)
}
