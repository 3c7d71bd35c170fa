//! Device drivers: the virtio-mmio devices kiln-vmm gives the guest, and
//! the serial console input of a standard PC. The scheduler and the system
//! call path see them through the functions here.

pub mod serial;
pub mod virtio;

/// Notes a device interrupt on `vector`; false when no device uses it.
pub fn interrupt(vector: u64) -> bool {
    virtio::interrupt(vector) || serial::interrupt(vector)
}

/// Whether a device interrupt waits to be serviced.
pub fn pending() -> bool {
    virtio::pending() || serial::pending()
}

/// Services noted interrupts, waking the threads they concern. Call with
/// no kernel lock held.
pub fn service() {
    virtio::service();
    serial::service();
}

/// Whether a device may still wake a waiting thread (then every thread
/// waiting is not a deadlock).
pub fn may_wake() -> bool {
    virtio::may_wake() || serial::may_wake()
}
