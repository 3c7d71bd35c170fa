//! Open files of the file system: rootfs files (read straight from the
//! archive in guest memory), in-memory files (created, or rootfs files
//! copied up on their first write) and directories of either layer.

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use kiln_kernel::errno::Errno;
use kiln_kernel::fs::stat::{dirent64, dtype, Stat};
use kiln_kernel::fs::tarfs;
use kiln_kernel::fs::vfs::{Node, NodeKind, SharedFile};

use super::{flags, FileOps};
use crate::arch;
use crate::boot::Region;
use crate::fs;

/// lseek(2) arithmetic on an offset cell.
pub(crate) fn seek(cell: &AtomicU64, size: u64, offset: i64, whence: u32) -> Result<u64, Errno> {
    const SEEK_SET: u32 = 0;
    const SEEK_CUR: u32 = 1;
    const SEEK_END: u32 = 2;
    const SEEK_DATA: u32 = 3;
    const SEEK_HOLE: u32 = 4;
    let base = match whence {
        SEEK_SET => 0,
        SEEK_CUR => cell.load(Ordering::Relaxed) as i64,
        SEEK_END => size as i64,
        SEEK_DATA | SEEK_HOLE => {
            // No holes: data everywhere up to the end, a hole at the end.
            if offset < 0 || offset as u64 >= size {
                return Err(Errno::Nxio);
            }
            let at = if whence == SEEK_DATA {
                offset as u64
            } else {
                size
            };
            cell.store(at, Ordering::Relaxed);
            return Ok(at);
        }
        _ => return Err(Errno::Inval),
    };
    let new = base
        .checked_add(offset)
        .filter(|&n| n >= 0)
        .ok_or(Errno::Inval)?;
    cell.store(new as u64, Ordering::Relaxed);
    Ok(new as u64)
}

fn copy_at(bytes: &[u8], buf: &mut [u8], offset: u64) -> usize {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let n = buf.len().min(bytes.len() - start);
    buf[..n].copy_from_slice(&bytes[start..start + n]);
    n
}

/// A rootfs file opened for reading.
pub struct RootFile {
    node: tarfs::Node,
    /// The file's bytes in guest-physical memory.
    data: Region,
    offset: AtomicU64,
}

impl RootFile {
    /// Opens rootfs file `node` of the archive at `archive`.
    pub fn new(node: tarfs::Node, archive: Region) -> Self {
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
        let n = copy_at(self.bytes(), buf, at);
        self.offset.store(at + n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
        Ok(copy_at(self.bytes(), buf, offset))
    }

    fn pwrite(&self, _buf: &[u8], _offset: u64) -> Result<usize, Errno> {
        Err(Errno::Badf)
    }

    fn seek(&self, offset: i64, whence: u32) -> Result<u64, Errno> {
        seek(&self.offset, self.node.size, offset, whence)
    }

    fn stat(&self) -> Stat {
        Node::Lower(self.node.clone()).stat()
    }

    fn mapping(&self) -> Option<Region> {
        Some(self.data)
    }
}

/// An in-memory file (created, or copied up from the rootfs).
pub struct TmpFile {
    data: SharedFile,
    writable: bool,
    append: bool,
    offset: AtomicU64,
}

impl TmpFile {
    /// Opens `data`; `writable`/`append` as the open flags say.
    pub fn new(data: SharedFile, writable: bool, append: bool) -> Self {
        Self {
            data,
            writable,
            append,
            offset: AtomicU64::new(0),
        }
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<usize, Errno> {
        if !self.writable {
            return Err(Errno::Badf);
        }
        let mut f = self.data.lock();
        let start = usize::try_from(offset).map_err(|_| Errno::Fbig)?;
        let end = start.checked_add(buf.len()).ok_or(Errno::Fbig)?;
        let have = f.bytes.len();
        if end > have {
            f.bytes.try_reserve(end - have).map_err(|_| Errno::Nospc)?;
            f.bytes.resize(end, 0);
        }
        f.bytes[start..end].copy_from_slice(buf);
        f.mtime = crate::time::realtime_ns() / 1_000_000_000;
        Ok(buf.len())
    }
}

impl FileOps for TmpFile {
    fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        let at = self.offset.load(Ordering::Relaxed);
        let n = copy_at(&self.data.lock().bytes, buf, at);
        self.offset.store(at + n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn write(&self, buf: &[u8]) -> Result<usize, Errno> {
        let at = if self.append {
            self.data.lock().bytes.len() as u64
        } else {
            self.offset.load(Ordering::Relaxed)
        };
        let n = self.write_at(buf, at)?;
        self.offset.store(at + n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
        Ok(copy_at(&self.data.lock().bytes, buf, offset))
    }

    fn pwrite(&self, buf: &[u8], offset: u64) -> Result<usize, Errno> {
        self.write_at(buf, offset)
    }

    fn seek(&self, offset: i64, whence: u32) -> Result<u64, Errno> {
        let size = self.data.lock().bytes.len() as u64;
        seek(&self.offset, size, offset, whence)
    }

    fn truncate(&self, len: u64) -> Result<(), Errno> {
        if !self.writable {
            return Err(Errno::Inval);
        }
        let len = usize::try_from(len).map_err(|_| Errno::Fbig)?;
        let mut f = self.data.lock();
        let have = f.bytes.len();
        if len > have {
            f.bytes.try_reserve(len - have).map_err(|_| Errno::Nospc)?;
        }
        f.bytes.resize(len, 0);
        Ok(())
    }

    fn contents(&self) -> Option<Vec<u8>> {
        Some(self.data.lock().bytes.clone())
    }

    fn stat(&self) -> Stat {
        Node::Upper(kiln_kernel::fs::vfs::Upper::File(self.data.clone())).stat()
    }

    fn status_flags(&self) -> u32 {
        let mut f = if self.writable {
            flags::O_RDWR
        } else {
            flags::O_RDONLY
        };
        if self.append {
            f |= flags::O_APPEND;
        }
        f
    }
}

/// A directory of the file system.
pub struct Directory {
    node: Node,
    path: String,
    /// Index of the next entry getdents returns (0 and 1 are `.` and `..`).
    position: AtomicU64,
}

impl Directory {
    /// Opens directory `node` at resolved `path`.
    pub fn new(node: Node, path: String) -> Self {
        Self {
            node,
            path,
            position: AtomicU64::new(0),
        }
    }
}

impl FileOps for Directory {
    fn read(&self, _buf: &mut [u8]) -> Result<usize, Errno> {
        Err(Errno::Isdir)
    }

    fn seek(&self, offset: i64, whence: u32) -> Result<u64, Errno> {
        // Directory offsets are entry indices (what getdents64 reports in d_off).
        seek(&self.position, u64::MAX >> 1, offset, whence)
    }

    fn stat(&self) -> Stat {
        self.node.stat()
    }

    fn getdents(&self, out: &mut [u8]) -> Result<usize, Errno> {
        let (children, parent_ino) = {
            let fs = fs::vfs();
            let up = match self.path.rsplit_once('/') {
                Some(("", _)) | None => "/",
                Some((parent, _)) => parent,
            };
            let parent_ino = fs.get(up).map_or(self.node.stat().ino, |n| n.stat().ino);
            (fs.children(&self.path), parent_ino)
        };
        let self_ino = self.node.stat().ino;
        fill_dirents(out, &self.position, |n| match n {
            0 => Some(dirent64(self_ino, 1, dtype::DT_DIR, b".")),
            1 => Some(dirent64(parent_ino, 2, dtype::DT_DIR, b"..")),
            n => children.get(n - 2).map(|(name, node)| {
                let t = match node.kind() {
                    NodeKind::File => dtype::DT_REG,
                    NodeKind::Dir => dtype::DT_DIR,
                    NodeKind::Symlink => dtype::DT_LNK,
                    NodeKind::Socket => dtype::DT_SOCK,
                };
                dirent64(node.stat().ino, n as u64 + 1, t, name.as_bytes())
            }),
        })
    }

    fn status_flags(&self) -> u32 {
        flags::O_RDONLY | flags::O_DIRECTORY
    }

    fn dir_path(&self) -> Option<&str> {
        Some(&self.path)
    }
}

/// Writes the getdents64 records `record(i)` gives from index `position`
/// on into `out`, as many as fit, and moves `position` past them.
///
/// # Errors
/// EINVAL when not even the first record fits.
fn fill_dirents(
    out: &mut [u8],
    position: &AtomicU64,
    record: impl Fn(usize) -> Option<Vec<u8>>,
) -> Result<usize, Errno> {
    let mut written = 0;
    let mut i = position.load(Ordering::Relaxed) as usize;
    while let Some(r) = record(i) {
        if written + r.len() > out.len() {
            if written == 0 {
                return Err(Errno::Inval); // buffer too small for one entry
            }
            break;
        }
        out[written..written + r.len()].copy_from_slice(&r);
        written += r.len();
        i += 1;
    }
    position.store(i as u64, Ordering::Relaxed);
    Ok(written)
}

/// A generated directory (/proc and its process directories): the
/// entries it had when it was opened.
pub struct Listing {
    /// (inode, d_type, name) of each entry after `.` and `..`.
    entries: Vec<(u64, u8, String)>,
    stat: Stat,
    position: AtomicU64,
}

impl Listing {
    /// A directory with metadata `stat` listing `entries`.
    pub fn new(entries: Vec<(u64, u8, String)>, stat: Stat) -> Self {
        Self {
            entries,
            stat,
            position: AtomicU64::new(0),
        }
    }
}

impl FileOps for Listing {
    fn read(&self, _buf: &mut [u8]) -> Result<usize, Errno> {
        Err(Errno::Isdir)
    }

    fn seek(&self, offset: i64, whence: u32) -> Result<u64, Errno> {
        seek(&self.position, u64::MAX >> 1, offset, whence)
    }

    fn stat(&self) -> Stat {
        self.stat
    }

    fn getdents(&self, out: &mut [u8]) -> Result<usize, Errno> {
        let ino = self.stat.ino;
        fill_dirents(out, &self.position, |n| match n {
            0 => Some(dirent64(ino, 1, dtype::DT_DIR, b".")),
            1 => Some(dirent64(ino, 2, dtype::DT_DIR, b"..")),
            n => self
                .entries
                .get(n - 2)
                .map(|(ino, t, name)| dirent64(*ino, n as u64 + 1, *t, name.as_bytes())),
        })
    }

    fn status_flags(&self) -> u32 {
        flags::O_RDONLY | flags::O_DIRECTORY
    }
}

/// A file whose contents were generated when it was opened (/proc).
pub struct Generated {
    bytes: Vec<u8>,
    stat: Stat,
    offset: AtomicU64,
}

impl Generated {
    /// A read-only file holding `bytes`.
    pub fn new(bytes: Vec<u8>, stat: Stat) -> Self {
        Self {
            bytes,
            stat,
            offset: AtomicU64::new(0),
        }
    }
}

impl FileOps for Generated {
    fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        let at = self.offset.load(Ordering::Relaxed);
        let n = copy_at(&self.bytes, buf, at);
        self.offset.store(at + n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
        Ok(copy_at(&self.bytes, buf, offset))
    }

    fn seek(&self, offset: i64, whence: u32) -> Result<u64, Errno> {
        seek(&self.offset, self.bytes.len() as u64, offset, whence)
    }

    fn stat(&self) -> Stat {
        self.stat
    }

    fn contents(&self) -> Option<Vec<u8>> {
        Some(self.bytes.clone())
    }
}
