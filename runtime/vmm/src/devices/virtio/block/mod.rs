//! virtio-blk (virtio 1.2 §5.2): a raw host file as the guest's disk.
//!
//! `disk` opens and checks the host file (size, access, a lock so two VMs
//! never write one disk); `device` serves the guest's requests on the
//! devices thread, never on the vCPU's.

mod device;
mod disk;

pub use device::Block;
pub use disk::{Disk, DiskError, DiskSpec};

/// The one request queue.
pub const REQ_QUEUE: usize = 0;
/// Its size.
pub const QUEUE_SIZE: u16 = 128;
/// Bytes in a sector, the unit of every request's position.
pub const SECTOR: u64 = 512;

/// Feature bits (virtio 1.2 §5.2.3).
pub mod feature {
    /// The disk is read-only.
    pub const RO: u64 = 1 << 5;
    /// `blk_size` in the configuration is valid.
    pub const BLK_SIZE: u64 = 1 << 6;
    /// The device takes FLUSH requests.
    pub const FLUSH: u64 = 1 << 9;
    /// The device takes DISCARD requests.
    pub const DISCARD: u64 = 1 << 13;
    /// The device takes WRITE_ZEROES requests.
    pub const WRITE_ZEROES: u64 = 1 << 14;
}

/// Request types (virtio 1.2 §5.2.6).
pub mod request {
    /// Read sectors.
    pub const IN: u32 = 0;
    /// Write sectors.
    pub const OUT: u32 = 1;
    /// Make every completed write durable.
    pub const FLUSH: u32 = 4;
    /// The device's serial (20 bytes).
    pub const GET_ID: u32 = 8;
    /// Forget ranges.
    pub const DISCARD: u32 = 11;
    /// Write zeros over ranges.
    pub const WRITE_ZEROES: u32 = 13;
}

/// Request status values.
pub mod status {
    /// Done.
    pub const OK: u8 = 0;
    /// Failed (bad range, host I/O error, a write to a read-only disk).
    pub const IOERR: u8 = 1;
    /// Not a request type the device knows.
    pub const UNSUPP: u8 = 2;
}
