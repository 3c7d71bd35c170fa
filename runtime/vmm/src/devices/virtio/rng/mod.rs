//! virtio-rng (virtio 1.2 §5.4): entropy from the host's getrandom.

mod device;

pub use device::Rng;

/// The one queue: the guest's buffers to fill.
pub const REQ_QUEUE: usize = 0;
/// Its size.
pub const QUEUE_SIZE: u16 = 16;
