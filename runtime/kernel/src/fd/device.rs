//! The character devices every program may expect: /dev/null, /dev/zero,
//! /dev/urandom and /dev/random; and /dev/hwrng, the host's entropy through
//! the virtio entropy device, when the VM has one; /dev/tty under `-t`;
//! the disks, /dev/vda on (block devices, see `disk`).

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
    /// Reads the host's entropy (virtio-rng; Linux's hw_random device).
    Hwrng,
    /// The program's terminal (/dev/tty), under `-t`.
    Tty,
    /// A disk (/dev/vda is 0), opened as a [`super::disk::DiskFile`].
    Disk(u8),
}

impl Device {
    /// The device a path names.
    pub fn at(path: &str) -> Option<Device> {
        match path {
            "/dev/null" => Some(Device::Null),
            "/dev/zero" => Some(Device::Zero),
            "/dev/random" => Some(Device::Random),
            "/dev/urandom" => Some(Device::Urandom),
            "/dev/hwrng" if crate::drivers::virtio::has_rng() => Some(Device::Hwrng),
            "/dev/tty" if crate::drivers::virtio::has_terminal() => Some(Device::Tty),
            _ => {
                let letter = *path.strip_prefix("/dev/vd")?.as_bytes().first()?;
                let index = letter.checked_sub(b'a')?;
                (path.len() == "/dev/vda".len()
                    && usize::from(index) < crate::drivers::virtio::blk::count())
                .then_some(Device::Disk(index))
            }
        }
    }

    /// Its (major, minor) numbers, as Linux has them.
    fn number(self) -> (u64, u64) {
        match self {
            Device::Null => (1, 3),
            Device::Zero => (1, 5),
            Device::Random => (1, 8),
            Device::Urandom => (1, 9),
            Device::Hwrng => (10, 183),
            Device::Tty => (5, 0),
            // virtio-blk's major is dynamic on Linux; 254 is what it gets.
            Device::Disk(i) => (254, u64::from(i) * 16),
        }
    }

    /// Its metadata.
    pub fn metadata(self) -> Stat {
        let kind = match self {
            Device::Disk(_) => mode::S_IFBLK,
            _ => mode::S_IFCHR,
        };
        Stat {
            dev: 5,
            ino: 100 + (self.number().0 << 8) + self.number().1,
            mode: kind
                | match self {
                    Device::Hwrng => 0o600,
                    Device::Tty => 0o620,
                    Device::Disk(_) => 0o660,
                    _ => 0o666,
                },
            nlink: 1,
            rdev: makedev(self.number().0, self.number().1),
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
            // Opened as the terminal or the disk itself (`fs::open_device`).
            Device::Null | Device::Tty | Device::Disk(_) => Ok(0),
            Device::Zero => {
                buf.fill(0);
                Ok(buf.len())
            }
            Device::Random | Device::Urandom => {
                crate::random::fill(buf);
                Ok(buf.len())
            }
            Device::Hwrng => {
                if buf.is_empty() {
                    return Ok(0);
                }
                let mut devices = crate::state::KERNEL.devices.lock();
                let got = devices.rng().and_then(|r| r.read(buf));
                devices.update_wake_sources();
                // Nothing fetched yet: the request is out; wait for it.
                got.ok_or(Errno::Restart)
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
