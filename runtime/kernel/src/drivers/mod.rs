//! Device drivers: the virtio-mmio devices kiln-vmm gives the guest.

pub mod virtio;
