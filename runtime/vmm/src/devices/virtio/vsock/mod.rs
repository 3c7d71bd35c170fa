//! virtio-vsock (virtio 1.2 §5.10): stream sockets between the guest and
//! host programs, with Firecracker's host side — a Unix socket where host
//! programs say `CONNECT <port>` to reach a guest port, and `PATH_<port>`
//! sockets the guest's connections to host ports reach ([`muxer`]). The
//! device ([`Vsock`]) moves packets between the guest's queues and the
//! muxer.

mod device;
pub mod muxer;

pub use device::Vsock;
pub use muxer::{Muxer, MuxerError};

/// Queue 0: packets to the guest.
pub const RX_QUEUE: usize = 0;
/// Queue 1: packets from the guest.
pub const TX_QUEUE: usize = 1;
/// Queue 2: events (transport resets), never used by kiln.
pub const EVENT_QUEUE: usize = 2;
/// Size of each queue.
pub const QUEUE_SIZE: u16 = 128;
