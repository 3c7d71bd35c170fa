//! virtio-fs (virtio 1.2 §5.11): a host directory shared with the guest.
//!
//! The file system itself is served by **virtiofsd**, the virtio-fs
//! project's daemon, one per volume (`daemon`). kiln-vmm is only its
//! vhost-user frontend (`device`): it tells virtiofsd where guest memory is
//! (a memfd both map), where each queue's rings are, which eventfd the
//! guest kicks (KVM's ioeventfd) and which one interrupts the guest (the
//! device's irqfd) — then the FUSE requests go between guest and virtiofsd
//! with no kiln-vmm code on the way.

mod daemon;
mod device;

pub use daemon::{Virtiofsd, VolumeError, VolumeSpec};
pub use device::{Fs, SharedRam};

/// The queues: high priority (FUSE_INTERRUPT, FUSE_FORGET), then one
/// request queue.
pub const QUEUE_COUNT: usize = 2;
/// Their size.
pub const QUEUE_SIZE: u16 = 128;
/// Bytes of the configuration's `tag` field.
pub const TAG_LEN: usize = 36;
