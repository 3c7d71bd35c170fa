//! The host side of a disk: `--disk FILE[,ro]` parsed, the file opened,
//! checked and locked.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::SECTOR;

/// A `--disk` request: the host file and whether the guest may write it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSpec {
    /// The raw disk file.
    pub path: PathBuf,
    /// The guest may only read.
    pub read_only: bool,
}

impl std::str::FromStr for DiskSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (path, read_only) = match s.rsplit_once(',') {
            Some((p, "ro")) => (p, true),
            Some((p, "rw")) => (p, false),
            Some((_, other)) => {
                return Err(format!(
                    "unknown disk option `{other}` (FILE[,ro] or FILE[,rw])"
                ))
            }
            None => (s, false),
        };
        if path.is_empty() {
            return Err("--disk needs the path of a raw disk file".into());
        }
        Ok(DiskSpec {
            path: PathBuf::from(path),
            read_only,
        })
    }
}

/// Why a disk cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The file cannot be opened.
    #[error("disk {path}: {source}{hint}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What open said.
        #[source]
        source: std::io::Error,
        /// How to fix it.
        hint: &'static str,
    },
    /// The file is not a regular file or block device.
    #[error("disk {0}: not a regular file or block device")]
    NotAFile(PathBuf),
    /// Its size cannot hold a sector, or is not whole sectors.
    #[error("disk {path}: its size ({size} bytes) is not a whole number of 512-byte sectors, at least one (make one with `truncate -s 64M {path}`)")]
    Size {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// Another VM (or program) holds the disk.
    #[error("disk {0} is in use by another VM (only read-only disks can be shared)")]
    InUse(PathBuf),
}

/// An open disk file.
#[derive(Debug)]
pub struct Disk {
    /// The file (locked while open).
    pub file: File,
    /// Its path, for messages.
    pub path: PathBuf,
    /// Size in sectors.
    pub sectors: u64,
    /// The guest may only read.
    pub read_only: bool,
}

impl Disk {
    /// Opens `spec`'s file, checks its size and takes a lock on it: shared
    /// for a read-only disk, exclusive for a writable one, so two VMs never
    /// write the same disk (nor one write what another reads).
    ///
    /// # Errors
    /// [`DiskError`] naming the file.
    pub fn open(spec: &DiskSpec) -> Result<Disk, DiskError> {
        let path = spec.path.clone();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!spec.read_only)
            .open(&path)
            .map_err(|source| DiskError::Open {
                hint: match source.kind() {
                    std::io::ErrorKind::NotFound => {
                        " (create one with `truncate -s 64M FILE`, or give an existing raw image)"
                    }
                    std::io::ErrorKind::PermissionDenied if !spec.read_only => {
                        " (not writable: attach it with `,ro`)"
                    }
                    _ => "",
                },
                path: path.clone(),
                source,
            })?;
        let meta = file.metadata().map_err(|source| DiskError::Open {
            path: path.clone(),
            source,
            hint: "",
        })?;
        let size = if meta.is_file() {
            meta.len()
        } else {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_block_device() {
                return Err(DiskError::NotAFile(path));
            }
            block_device_size(&file).map_err(|source| DiskError::Open {
                path: path.clone(),
                source,
                hint: "",
            })?
        };
        if size < SECTOR || !size.is_multiple_of(SECTOR) {
            return Err(DiskError::Size { path, size });
        }
        lock(&file, spec.read_only).map_err(|_| DiskError::InUse(path.clone()))?;
        Ok(Disk {
            file,
            path,
            sectors: size / SECTOR,
            read_only: spec.read_only,
        })
    }

    /// The disk's name for the guest's GET_ID (its file name, at most 20
    /// bytes, NUL-padded).
    pub fn serial(&self) -> [u8; 20] {
        let mut id = [0u8; 20];
        let name = file_name(&self.path);
        let n = name.len().min(20);
        id[..n].copy_from_slice(&name.as_bytes()[..n]);
        id
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// flock: shared or exclusive, never waiting.
fn lock(file: &File, shared: bool) -> std::io::Result<()> {
    let how = if shared { libc::LOCK_SH } else { libc::LOCK_EX };
    // SAFETY: flock on a descriptor this function borrows; no memory is
    // passed.
    if unsafe { libc::flock(file.as_raw_fd(), how | libc::LOCK_NB) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// BLKGETSIZE64 of a host block device.
fn block_device_size(file: &File) -> std::io::Result<u64> {
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    let mut size = 0u64;
    // SAFETY: BLKGETSIZE64 writes one u64 to the pointer, which points at
    // `size`.
    if unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &mut size) } == 0 {
        Ok(size)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_flag() {
        let d: DiskSpec = "/tmp/d.img".parse().unwrap();
        assert_eq!((d.path.to_str(), d.read_only), (Some("/tmp/d.img"), false));
        let d: DiskSpec = "a,b.img,ro".parse().unwrap();
        assert_eq!((d.path.to_str(), d.read_only), (Some("a,b.img"), true));
        assert!("x.img,rx".parse::<DiskSpec>().is_err());
        assert!(",ro".parse::<DiskSpec>().is_err());
    }

    #[test]
    fn refuses_bad_files_by_name() {
        let dir = std::env::temp_dir().join(format!("kiln-disk-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let spec = |name: &str, read_only| DiskSpec {
            path: dir.join(name),
            read_only,
        };
        let e = Disk::open(&spec("missing.img", false)).unwrap_err();
        assert!(e.to_string().contains("truncate -s"), "{e}");
        std::fs::write(dir.join("odd.img"), [0u8; 700]).unwrap();
        let e = Disk::open(&spec("odd.img", false)).unwrap_err();
        assert!(e.to_string().contains("700 bytes"), "{e}");
        std::fs::write(dir.join("ok.img"), vec![0u8; 4096]).unwrap();
        let first = Disk::open(&spec("ok.img", false)).unwrap();
        assert_eq!(first.sectors, 8);
        let e = Disk::open(&spec("ok.img", true)).unwrap_err();
        assert!(e.to_string().contains("in use"), "{e}");
        drop(first);
        let a = Disk::open(&spec("ok.img", true)).unwrap();
        let _b = Disk::open(&spec("ok.img", true)).expect("read-only disks are shared");
        assert!(Disk::open(&spec("ok.img", false)).is_err());
        assert_eq!(&a.serial()[..6], b"ok.img");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
