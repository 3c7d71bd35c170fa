//! virtio-console (virtio 1.2 §5.3): the program's standard streams. One
//! device carries standard input and output (and everything, on a
//! terminal), a second one standard error, so the host sees them apart as
//! `docker run` keeps them.

mod device;
mod input;

pub use device::{Console, Output};
pub use input::{Input, InputSource};

/// Queue 0: host to guest (standard input).
pub const RX_QUEUE: usize = 0;
/// Queue 1: guest to host (output).
pub const TX_QUEUE: usize = 1;
/// Size of each queue.
pub const QUEUE_SIZE: u16 = 64;
/// VIRTIO_CONSOLE_F_SIZE: the configuration holds the terminal size.
pub const F_SIZE: u64 = 1 << 0;
