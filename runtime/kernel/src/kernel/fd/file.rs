//! Files and directories of the image's rootfs (read-only), read straight
//! from the archive in guest memory.

use alloc::string::String;
use core::sync::atomic::{AtomicU64, Ordering};

use kiln_kernel::errno::Errno;
use kiln_kernel::stat::{dirent64, dtype, mode, Stat};
use kiln_kernel::tarfs::{Kind, Node};

use super::{flags, FileOps};
use crate::kernel::arch;
use crate::kernel::boot::Region;
use crate::kernel::fs;

/// Device number reported for rootfs files.
const ROOTFS_DEV: u64 = 0x801;

/// Metadata of a rootfs node.
pub fn node_stat(node: &Node) -> Stat {
    let (kind, nlink) = match node.kind {
        Kind::File => (mode::S_IFREG, 1),
        Kind::Dir => (mode::S_IFDIR, 2),
        Kind::Symlink(_) => (mode::S_IFLNK, 1),
    };
    let size = match &node.kind {
        Kind::Symlink(t) => t.len() as u64,
        _ => node.size,
    };
    Stat {
        dev: ROOTFS_DEV,
        ino: node.ino,
        mode: kind | node.mode,
        nlink,
        uid: node.uid,
        gid: node.gid,
        size,
        blksize: 4096,
        mtime: node.mtime,
        ..Stat::default()
    }
}

/// An open regular file of the rootfs.
pub struct RootFile {
    node: Node,
    /// The file's bytes in guest-physical memory.
    data: Region,
    offset: AtomicU64,
}

impl RootFile {
    /// Opens `node` (a regular file of the mounted rootfs).
    pub fn new(node: Node) -> Self {
        let archive = fs::rootfs().map_or(Region::default(), |r| r.archive);
        let start = archive.start + node.data;
        Self {
            data: Region {
                start,
                end: start + node.size,
            },
            node,
            offset: AtomicU64::new(0),
        }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the range is a file inside the rootfs archive, which the
        // platform code checked lies in guest memory reserved for it; it is
        // read-only and lives as long as the kernel.
        unsafe {
            core::slice::from_raw_parts(
                arch::phys_to_virt(self.data.start),
                self.node.size as usize,
            )
        }
    }
}

impl FileOps for RootFile {
    fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        let at = self.offset.load(Ordering::Relaxed);
        let n = self.pread(buf, at)?;
        self.offset.store(at + n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
        let bytes = self.bytes();
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let n = buf.len().min(bytes.len() - start);
        buf[..n].copy_from_slice(&bytes[start..start + n]);
        Ok(n)
    }

    fn seek(&self, offset: i64, whence: u32) -> Result<u64, Errno> {
        seek(&self.offset, self.node.size, offset, whence)
    }

    fn stat(&self) -> Stat {
        node_stat(&self.node)
    }

    fn mapping(&self) -> Option<Region> {
        Some(self.data)
    }
}

/// lseek(2) arithmetic on an offset cell.
fn seek(cell: &AtomicU64, size: u64, offset: i64, whence: u32) -> Result<u64, Errno> {
    const SEEK_SET: u32 = 0;
    const SEEK_CUR: u32 = 1;
    const SEEK_END: u32 = 2;
    let base = match whence {
        SEEK_SET => 0,
        SEEK_CUR => cell.load(Ordering::Relaxed) as i64,
        SEEK_END => size as i64,
        _ => return Err(Errno::Inval),
    };
    let new = base
        .checked_add(offset)
        .filter(|&n| n >= 0)
        .ok_or(Errno::Inval)?;
    cell.store(new as u64, Ordering::Relaxed);
    Ok(new as u64)
}

/// An open directory of the rootfs.
pub struct RootDir {
    node: Node,
    path: String,
    /// Index of the next entry getdents returns (0 and 1 are `.` and `..`).
    position: AtomicU64,
}

impl RootDir {
    /// Opens directory `node` at resolved `path`.
    pub fn new(node: Node, path: String) -> Self {
        Self {
            node,
            path,
            position: AtomicU64::new(0),
        }
    }
}

impl FileOps for RootDir {
    fn read(&self, _buf: &mut [u8]) -> Result<usize, Errno> {
        Err(Errno::Isdir)
    }

    fn seek(&self, offset: i64, whence: u32) -> Result<u64, Errno> {
        // Directory offsets are entry indices (what getdents64 reports in d_off).
        seek(&self.position, u64::MAX >> 1, offset, whence)
    }

    fn stat(&self) -> Stat {
        node_stat(&self.node)
    }

    fn getdents(&self, out: &mut [u8]) -> Result<usize, Errno> {
        let Some(root) = fs::rootfs() else {
            return Ok(0);
        };
        let children = root.index.children(&self.path);
        let mut written = 0;
        let mut i = self.position.load(Ordering::Relaxed) as usize;
        loop {
            let record = match i {
                0 => dirent64(self.node.ino, 1, dtype::DT_DIR, b"."),
                1 => {
                    let up = match self.path.rsplit_once('/') {
                        Some(("", _)) | None => "/",
                        Some((parent, _)) => parent,
                    };
                    let parent = root.index.get(up).map_or(self.node.ino, |n| n.ino);
                    dirent64(parent, 2, dtype::DT_DIR, b"..")
                }
                n => match children.get(n - 2) {
                    Some((name, node)) => {
                        let t = match node.kind {
                            Kind::File => dtype::DT_REG,
                            Kind::Dir => dtype::DT_DIR,
                            Kind::Symlink(_) => dtype::DT_LNK,
                        };
                        dirent64(node.ino, n as u64 + 1, t, name.as_bytes())
                    }
                    None => break,
                },
            };
            if written + record.len() > out.len() {
                if written == 0 {
                    return Err(Errno::Inval); // buffer too small for one entry
                }
                break;
            }
            out[written..written + record.len()].copy_from_slice(&record);
            written += record.len();
            i += 1;
        }
        self.position.store(i as u64, Ordering::Relaxed);
        Ok(written)
    }

    fn status_flags(&self) -> u32 {
        flags::O_RDONLY | flags::O_DIRECTORY
    }

    fn dir_path(&self) -> Option<&str> {
        Some(&self.path)
    }
}
