//! The virtio-blk driver (virtio 1.2 §5.2): the VM's disks, /dev/vda on,
//! read and written synchronously through a bounce buffer (no page cache:
//! every read asks the device, every write reaches the host file before it
//! returns, as with O_DIRECT). Offsets and lengths need not be whole
//! sectors: partial sectors are read, patched and written back.

use alloc::boxed::Box;
use alloc::vec::Vec;

use spin::Mutex;
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::Transport as _;

use super::console::SetupError;
use super::hal::KernelHal;
use super::request::{self, Bounce};
use super::Transport;
use kiln_kernel::errno::Errno;

/// Entries in the request queue (kiln-vmm's device offers 128).
const QUEUE_SIZE: usize = 128;
/// Bytes in a sector.
pub const SECTOR: u64 = 512;
/// Pages of bounce buffer: the most one request moves (256 KiB).
const BOUNCE_PAGES: usize = 128;

/// Feature bits (virtio 1.2 §5.2.3).
const F_RO: u64 = 1 << 5;
const F_FLUSH: u64 = 1 << 9;
const F_DISCARD: u64 = 1 << 13;

/// Request types and the OK status.
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_DISCARD: u32 = 11;
const S_OK: u8 = 0;

/// One disk.
pub struct BlkDriver {
    transport: Transport,
    queue: VirtQueue<KernelHal, QUEUE_SIZE>,
    data: Bounce,
    /// The request header (16 bytes) and, after it, the status byte.
    control: Bounce,
    sectors: u64,
    features: u64,
}

/// The disks, in device order (/dev/vda first). Boxed: a driver (its
/// queue's shadow tables) is kilobytes, which must not travel through the
/// boot stack's frames.
#[allow(clippy::vec_box)]
static DISKS: Mutex<Vec<Box<BlkDriver>>> = Mutex::new(Vec::new());

/// Starts the driver of a disk found at boot; false (said) when it fails.
#[inline(never)]
pub(super) fn attach(transport: Transport) -> bool {
    match BlkDriver::new(transport) {
        Ok(driver) => {
            DISKS.lock().push(Box::new(driver));
            true
        }
        Err(e) => {
            crate::kprintln!("kiln: virtio block: setup failed: {e}");
            false
        }
    }
}

/// How many disks there are.
pub fn count() -> usize {
    DISKS.lock().len()
}

/// Runs `f` on disk `index`.
///
/// # Errors
/// ENXIO when there is no such disk; `f`'s errors.
pub fn with<R>(
    index: usize,
    f: impl FnOnce(&mut BlkDriver) -> Result<R, Errno>,
) -> Result<R, Errno> {
    let mut disks = DISKS.lock();
    f(disks.get_mut(index).ok_or(Errno::Nxio)?)
}

impl BlkDriver {
    /// Sets the device up.
    ///
    /// # Errors
    /// [`SetupError`] when the device or memory refuses.
    pub fn new(mut transport: Transport) -> Result<Self, SetupError> {
        let features = super::begin_init(&mut transport, F_RO | F_FLUSH | F_DISCARD);
        let queue = VirtQueue::new(&mut transport, 0, false, false)?;
        transport.finish_init();
        let sectors = transport.read_config_space::<u64>(0).unwrap_or(0);
        Ok(Self {
            transport,
            queue,
            data: Bounce::new(BOUNCE_PAGES).ok_or(SetupError::OutOfMemory)?,
            control: Bounce::new(1).ok_or(SetupError::OutOfMemory)?,
            sectors,
            features,
        })
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.sectors * SECTOR
    }

    /// Whether the disk is read-only.
    pub fn read_only(&self) -> bool {
        self.features & F_RO != 0
    }

    /// One request of type `kind` at `sector`, with `len` bytes of the
    /// data buffer going to the device (`to_device`) or coming from it.
    fn transfer(
        &mut self,
        kind: u32,
        sector: u64,
        len: usize,
        to_device: bool,
    ) -> Result<(), Errno> {
        let control = self.control.bytes();
        control[..4].copy_from_slice(&kind.to_le_bytes());
        control[4..8].fill(0);
        control[8..16].copy_from_slice(&sector.to_le_bytes());
        control[16] = 0xff;
        let (header, rest) = control.split_at_mut(16);
        let status = &mut rest[..1];
        let data = &mut self.data.bytes()[..len];
        if len == 0 {
            request::call(
                &mut self.queue,
                &mut self.transport,
                0,
                &[header],
                &mut [status],
            )?;
        } else if to_device {
            request::call(
                &mut self.queue,
                &mut self.transport,
                0,
                &[header, data],
                &mut [status],
            )?;
        } else {
            request::call(
                &mut self.queue,
                &mut self.transport,
                0,
                &[header],
                &mut [data, status],
            )?;
        }
        if status[0] == S_OK {
            Ok(())
        } else {
            Err(Errno::Io)
        }
    }

    /// The aligned span `[start, end)` covering `[offset, offset + len)`,
    /// cut to what the bounce buffer holds.
    fn span(&self, offset: u64, len: usize) -> (u64, u64) {
        let start = offset & !(SECTOR - 1);
        let end = (offset + len as u64).div_ceil(SECTOR) * SECTOR;
        (
            start,
            end.min(start + self.data.len() as u64).min(self.size()),
        )
    }

    /// pread: fills `buf` from `offset`; short at the end of the disk.
    ///
    /// # Errors
    /// EIO when the device fails.
    pub fn read(&mut self, mut offset: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        let mut done = 0;
        while done < buf.len() && offset < self.size() {
            let (start, end) = self.span(offset, buf.len() - done);
            self.transfer(T_IN, start / SECTOR, (end - start) as usize, false)?;
            let skip = (offset - start) as usize;
            let n = ((end - start) as usize - skip).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&self.data.bytes()[skip..skip + n]);
            done += n;
            offset += n as u64;
        }
        Ok(done)
    }

    /// pwrite: writes `buf` at `offset` (partial sectors read first).
    ///
    /// # Errors
    /// EROFS on a read-only disk; ENOSPC at its end; EIO when the device
    /// fails.
    pub fn write(&mut self, mut offset: u64, buf: &[u8]) -> Result<usize, Errno> {
        if self.read_only() {
            return Err(Errno::Rofs);
        }
        if offset >= self.size() && !buf.is_empty() {
            return Err(Errno::Nospc);
        }
        let mut done = 0;
        while done < buf.len() && offset < self.size() {
            let (start, end) = self.span(offset, buf.len() - done);
            let skip = (offset - start) as usize;
            let n = ((end - start) as usize - skip).min(buf.len() - done);
            let partial = skip != 0 || (skip + n) as u64 != end - start;
            if partial {
                self.transfer(T_IN, start / SECTOR, (end - start) as usize, false)?;
            }
            self.data.bytes()[skip..skip + n].copy_from_slice(&buf[done..done + n]);
            self.transfer(T_OUT, start / SECTOR, (end - start) as usize, true)?;
            done += n;
            offset += n as u64;
        }
        Ok(done)
    }

    /// Makes every completed write durable on the host (fsync).
    ///
    /// # Errors
    /// EIO when the device fails.
    pub fn flush(&mut self) -> Result<(), Errno> {
        if self.features & F_FLUSH == 0 {
            return Ok(());
        }
        self.transfer(T_FLUSH, 0, 0, false)
    }

    /// Discards whole sectors in `[offset, offset + len)` (BLKDISCARD).
    ///
    /// # Errors
    /// EINVAL when not sector-aligned or past the end; EOPNOTSUPP when the
    /// device cannot; EIO when it fails.
    pub fn discard(&mut self, offset: u64, len: u64) -> Result<(), Errno> {
        if self.read_only() {
            return Err(Errno::Rofs);
        }
        if self.features & F_DISCARD == 0 {
            return Err(Errno::Notsup);
        }
        let end = offset.checked_add(len).ok_or(Errno::Inval)?;
        if !offset.is_multiple_of(SECTOR) || !len.is_multiple_of(SECTOR) || end > self.size() {
            return Err(Errno::Inval);
        }
        // At most 1 GiB per range, one range per request.
        let mut at = offset;
        while at < end {
            let n = (end - at).min(1 << 30);
            let range = &mut self.data.bytes()[..16];
            range[..8].copy_from_slice(&(at / SECTOR).to_le_bytes());
            range[8..12].copy_from_slice(&((n / SECTOR) as u32).to_le_bytes());
            range[12..16].fill(0);
            self.transfer(T_DISCARD, 0, 16, true)?;
            at += n;
        }
        Ok(())
    }
}
