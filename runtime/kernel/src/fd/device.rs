//! The character devices every program may expect: /dev/null, /dev/zero,
//! /dev/urandom and /dev/random.

use kiln_kernel::errno::Errno;
use kiln_kernel::fs::stat::{makedev, mode, Stat};

use super::{flags, FileOps};

/// A character device (Linux's major 1 "mem" devices).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// Reads nothing, swallows writes.
    Null,
    /// Reads zeros.
    Zero,
    /// Reads random bytes.
    Random,
    /// Reads random bytes (/dev/urandom).
    Urandom,
}

impl Device {
    /// The device a path names.
    pub fn at(path: &str) -> Option<Device> {
        match path {
            "/dev/null" => Some(Device::Null),
            "/dev/zero" => Some(Device::Zero),
            "/dev/random" => Some(Device::Random),
            "/dev/urandom" => Some(Device::Urandom),
            _ => None,
        }
    }

    fn minor(self) -> u64 {
        match self {
            Device::Null => 3,
            Device::Zero => 5,
            Device::Random => 8,
            Device::Urandom => 9,
        }
    }

    /// Its metadata.
    pub fn metadata(self) -> Stat {
        Stat {
            dev: 5,
            ino: 100 + self.minor(),
            mode: mode::S_IFCHR | 0o666,
            nlink: 1,
            rdev: makedev(1, self.minor()),
            blksize: 4096,
            ..Stat::default()
        }
    }
}

/// An open device.
pub struct OpenDevice(pub Device);

impl FileOps for OpenDevice {
    fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        match self.0 {
            Device::Null => Ok(0),
            Device::Zero => {
                buf.fill(0);
                Ok(buf.len())
            }
            Device::Random | Device::Urandom => {
                crate::random::fill(buf);
                Ok(buf.len())
            }
        }
    }

    fn write(&self, buf: &[u8]) -> Result<usize, Errno> {
        Ok(buf.len())
    }

    fn pread(&self, buf: &mut [u8], _offset: u64) -> Result<usize, Errno> {
        self.read(buf)
    }

    fn seek(&self, _offset: i64, _whence: u32) -> Result<u64, Errno> {
        Ok(0)
    }

    fn stat(&self) -> Stat {
        self.0.metadata()
    }

    fn status_flags(&self) -> u32 {
        flags::O_RDWR
    }
}
