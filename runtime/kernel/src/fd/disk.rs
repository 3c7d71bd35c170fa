//! An open disk (/dev/vda, …): reads and writes at the file offset or at a
//! position, straight to the virtio-blk driver; fsync flushes the host
//! file; the block-device ioctls programs ask (size, sector size,
//! read-only, discard).

use core::sync::atomic::{AtomicU64, Ordering};

use kiln_kernel::errno::Errno;
use kiln_kernel::fs::stat::Stat;

use super::device::Device;
use super::{flags, FileOps};
use crate::drivers::virtio::blk;
use crate::mm::space::AddressSpace;
use crate::mm::uaccess::UserPtr;

/// Block-device ioctls (linux/fs.h).
mod request {
    pub const BLKROGET: u64 = 0x125e;
    pub const BLKGETSIZE: u64 = 0x1260;
    pub const BLKFLSBUF: u64 = 0x1261;
    pub const BLKSSZGET: u64 = 0x1268;
    pub const BLKBSZGET: u64 = 0x8008_1270;
    pub const BLKGETSIZE64: u64 = 0x8008_1272;
    pub const BLKDISCARD: u64 = 0x1277;
    pub const BLKPBSZGET: u64 = 0x127b;
}

/// An open disk.
pub struct DiskFile {
    index: usize,
    offset: AtomicU64,
    write: bool,
    /// O_SYNC / O_DSYNC: each write is flushed before it returns.
    sync_writes: bool,
}

impl DiskFile {
    /// Opens disk `index` (for writing when `write`; with each write
    /// flushed when `sync_writes`).
    ///
    /// # Errors
    /// ENXIO when there is no such disk; EROFS when writing a read-only one.
    pub fn open(index: usize, write: bool, sync_writes: bool) -> Result<Self, Errno> {
        let read_only = blk::with(index, |d| Ok(d.read_only()))?;
        if write && read_only {
            return Err(Errno::Rofs);
        }
        Ok(Self {
            index,
            offset: AtomicU64::new(0),
            write,
            sync_writes,
        })
    }

    fn size(&self) -> u64 {
        blk::with(self.index, |d| Ok(d.size())).unwrap_or(0)
    }
}

impl FileOps for DiskFile {
    fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        let at = self.offset.load(Ordering::Relaxed);
        let n = self.pread(buf, at)?;
        self.offset.store(at + n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn write(&self, buf: &[u8]) -> Result<usize, Errno> {
        let at = self.offset.load(Ordering::Relaxed);
        let n = self.pwrite(buf, at)?;
        self.offset.store(at + n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
        blk::with(self.index, |d| d.read(offset, buf))
    }

    fn pwrite(&self, buf: &[u8], offset: u64) -> Result<usize, Errno> {
        if !self.write {
            return Err(Errno::Badf);
        }
        blk::with(self.index, |d| {
            let n = d.write(offset, buf)?;
            if self.sync_writes {
                d.flush()?;
            }
            Ok(n)
        })
    }

    fn seek(&self, offset: i64, whence: u32) -> Result<u64, Errno> {
        super::file::seek(&self.offset, self.size(), offset, whence)
    }

    fn stat(&self) -> Stat {
        Device::Disk(self.index as u8).metadata()
    }

    fn sync(&self) -> Result<(), Errno> {
        blk::with(self.index, blk::BlkDriver::flush)
    }

    fn ioctl(&self, req: u64, arg: u64, mem: &mut AddressSpace) -> Result<u64, Errno> {
        let (size, read_only) = blk::with(self.index, |d| Ok((d.size(), d.read_only())))?;
        match req {
            request::BLKGETSIZE64 => mem.write(UserPtr::<u64>::new(arg), size)?,
            request::BLKGETSIZE => mem.write(UserPtr::<u64>::new(arg), size / blk::SECTOR)?,
            request::BLKSSZGET => mem.write(UserPtr::<i32>::new(arg), blk::SECTOR as i32)?,
            request::BLKPBSZGET | request::BLKBSZGET => {
                mem.write(UserPtr::<i32>::new(arg), 4096)?;
            }
            request::BLKROGET => mem.write(UserPtr::<i32>::new(arg), i32::from(read_only))?,
            request::BLKFLSBUF => {}
            request::BLKDISCARD => {
                if !self.write {
                    return Err(Errno::Badf);
                }
                let [start, len] = mem.read(UserPtr::<[u64; 2]>::new(arg))?;
                blk::with(self.index, |d| d.discard(start, len))?;
            }
            _ => return Err(Errno::Notty),
        }
        Ok(0)
    }

    fn status_flags(&self) -> u32 {
        if self.write {
            flags::O_RDWR
        } else {
            flags::O_RDONLY
        }
    }
}
