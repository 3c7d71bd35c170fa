//! The host sockets (AF_VSOCK): the connection state
//! (`kiln_kernel::net::vsock::Stack`) joined to the virtio-vsock driver.
//! Every operation on the stack ends by handing the packets it produced
//! to the driver; the device's interrupt hands received packets to the
//! stack and wakes the threads waiting on sockets when something changed.

use alloc::collections::VecDeque;

use kiln_kernel::net::vsock::Stack;
use spin::Mutex;

use crate::drivers::virtio::vsock::{Outgoing, VsockDriver};

/// The driver, the connections, and packets waiting for room in the
/// transmit queue.
struct Vsock {
    driver: VsockDriver,
    stack: Stack,
    outbox: VecDeque<Outgoing>,
}

impl Vsock {
    /// Moves the stack's packets to the driver (as many as fit; the rest
    /// wait in order for the device's interrupt).
    fn flush(&mut self) {
        while let Some((h, payload)) = self.stack.take_outgoing() {
            self.outbox.push_back((h.encode(), payload));
        }
        if !self.outbox.is_empty() {
            self.driver.transmit(&mut self.outbox);
        }
    }
}

/// Set up at boot when the VM has a socket device.
static VSOCK: Mutex<Option<Vsock>> = Mutex::new(None);

/// Attaches the driver `drivers::virtio` set up (at boot).
pub fn set_driver(driver: VsockDriver) {
    let stack = Stack::new(driver.cid());
    *VSOCK.lock() = Some(Vsock {
        driver,
        stack,
        outbox: VecDeque::new(),
    });
}

/// Whether the VM has a socket device.
pub fn present() -> bool {
    VSOCK.lock().is_some()
}

/// Runs `f` on the connections, then sends what it produced; `None`
/// without a device.
pub fn with<R>(f: impl FnOnce(&mut Stack) -> R) -> Option<R> {
    let mut guard = VSOCK.lock();
    let v = guard.as_mut()?;
    let r = f(&mut v.stack);
    v.flush();
    Some(r)
}

/// After the device's interrupt: takes the packets received and sends
/// what waits; wakes waiting threads when a connection changed. No kernel
/// lock may be held.
pub fn service() {
    let changed = {
        let mut guard = VSOCK.lock();
        let Some(v) = guard.as_mut() else {
            return;
        };
        let mut changed = false;
        let Vsock { driver, stack, .. } = v;
        driver.receive(|h, payload| changed |= stack.receive(h, payload));
        v.flush();
        changed
    };
    if changed {
        crate::fd::socket::changed();
    }
}
