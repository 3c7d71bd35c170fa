//! The NIC between the virtio-net driver and the NIC's interface: the
//! driver found at boot is attached here, received frames go to the
//! interface's inbox, and what the interface sends goes to the driver.

use alloc::boxed::Box;
use spin::Mutex;

use super::device::Frames;
use crate::drivers::virtio::net::NetDriver;

/// The driver, once the boot info listed a NIC.
static DRIVER: Mutex<Option<Box<NetDriver>>> = Mutex::new(None);

/// Keeps the driver `drivers::virtio` set up (at boot).
pub fn set_driver(driver: NetDriver) {
    *DRIVER.lock() = Some(Box::new(driver));
}

/// The NIC's MAC address and MTU, when there is one.
pub fn attach() -> Option<([u8; 6], usize)> {
    let guard = DRIVER.lock();
    let d = guard.as_ref()?;
    Some((d.mac(), d.mtu()))
}

/// Hands the interface's output to the driver; returns whether any went.
/// Frames the driver has no room for stay queued.
pub fn transmit(frames: &mut Frames) -> bool {
    let mut guard = DRIVER.lock();
    let Some(d) = guard.as_mut() else {
        frames.outbox.clear();
        return false;
    };
    d.transmit(&mut frames.outbox)
}

/// Takes the frames the driver received into the interface's inbox;
/// returns whether there were any (after the NIC's interrupt).
pub fn receive(frames: &mut Frames) -> bool {
    let mut guard = DRIVER.lock();
    match guard.as_mut() {
        Some(d) => d.receive(&mut frames.inbox),
        None => false,
    }
}
