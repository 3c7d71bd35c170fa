//! virtio-net (virtio 1.2 §5.1): the guest's NIC. Frames go between the
//! guest's queues and a [`Backend`] — passt's stream socket (`--net user`)
//! or a tap device (`--net tap`). Receive buffers are merged
//! (VIRTIO_NET_F_MRG_RXBUF), so the guest posts single pages and a 64 KiB
//! frame fills several; no checksum or segmentation offloads are offered,
//! every frame is complete as it stands.

mod backend;
mod device;

pub use backend::{Backend, StreamBackend, TapBackend};
pub use device::Net;

/// Queue 0: frames to the guest.
pub const RX_QUEUE: usize = 0;
/// Queue 1: frames from the guest.
pub const TX_QUEUE: usize = 1;
/// Size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// `struct virtio_net_hdr_v1`: 12 bytes before every frame.
pub const HEADER: usize = 12;

/// Feature bits (§5.1.3).
pub mod feature {
    /// The configuration has an MTU.
    pub const MTU: u64 = 1 << 3;
    /// The configuration has a MAC address.
    pub const MAC: u64 = 1 << 5;
    /// Receive buffers may be merged.
    pub const MRG_RXBUF: u64 = 1 << 15;
}
