//! virtio devices over the virtio-mmio transport (virtio 1.2, modern only).
//!
//! Each device sits behind an [`mmio::MmioTransport`] that the vCPU thread
//! drives (register reads and writes are MMIO exits, rare: setup only).
//! Queue notifications never reach the vCPU thread: KVM signals one
//! ioeventfd per queue, which the devices thread (`event_loop`) waits on;
//! interrupts go back as MSIs through one irqfd per device. Every
//! descriptor is read through rust-vmm's virtio-queue and vm-memory's
//! checked accessors: a guest that hands over a bad chain gets its device
//! marked DEVICE_NEEDS_RESET, never a VMM panic.

pub mod block;
pub mod console;
pub mod device;
pub mod fs;
pub mod mmio;
pub mod net;
pub mod queue;
pub mod rng;
#[cfg(test)]
pub mod test_utils;
pub mod vsock;

pub use device::{Interrupt, QueueError, VirtioDevice};

/// Device status bits (virtio 1.2 §2.1).
pub mod status {
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest knows how to drive it.
    pub const DRIVER: u32 = 2;
    /// The driver is set up and ready.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    /// The guest gave up on the device.
    pub const FAILED: u32 = 0x80;
}

/// VIRTIO_F_VERSION_1 (virtio 1.2 §6): a modern (1.x) device.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// InterruptStatus bits (virtio 1.2 §4.2.2).
pub mod interrupt {
    /// A queue has new used buffers.
    pub const USED_BUFFER: u32 = 1;
    /// The configuration (or the status) changed.
    pub const CONFIG_CHANGE: u32 = 2;
}
