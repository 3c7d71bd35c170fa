//! Requests the calling thread waits for (block and file-system devices):
//! the driver posts one request, notifies the device and halts the CPU
//! until the device has used it — no other thread runs meanwhile, so a
//! driver keeps one request in flight and one bounce buffer for its data.
//! (Overlapping other threads with device I/O is left for later: kiln's
//! appliances are mostly one busy thread at a time.)

use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::Transport as _;

use super::hal::KernelHal;
use super::Transport;
use crate::arch::phys_to_virt;
use crate::mm::frame;
use kiln_kernel::errno::Errno;

/// How long a request's answer is watched for before the CPU halts.
const SPIN_NS: u64 = 500_000;

/// Physically contiguous frames a driver copies request data through.
pub(crate) struct Bounce {
    phys: u64,
    len: usize,
}

impl Bounce {
    /// `pages` contiguous zeroed frames, if memory allows.
    pub(crate) fn new(pages: usize) -> Option<Self> {
        let phys = frame::alloc_contiguous_zeroed(pages as u64)?;
        Some(Self {
            phys,
            len: pages * super::Page::SIZE,
        })
    }

    /// Its size in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Its bytes (the device never owns them between requests: each is
    /// taken back before [`call`] returns).
    pub(crate) fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: frames the driver owns, in the direct map; the borrow of
        // `self` keeps two users apart, and no request is in flight.
        unsafe { core::slice::from_raw_parts_mut(phys_to_virt(self.phys), self.len) }
    }
}

/// Posts `inputs` (device-readable) and `outputs` (device-writable) on
/// queue `index`, waits until the device used them and returns how many
/// bytes it wrote. Every buffer must lie in direct-map frames.
///
/// # Errors
/// EIO when the queue refuses the request (too many buffers).
pub(crate) fn call<'a, const N: usize>(
    queue: &mut VirtQueue<KernelHal, N>,
    transport: &mut Transport,
    index: u16,
    inputs: &'a [&'a [u8]],
    outputs: &'a mut [&'a mut [u8]],
) -> Result<u32, Errno> {
    // SAFETY: the buffers stay borrowed (and so alive and untouched) until
    // pop_used below hands them back.
    let token = unsafe { queue.add(inputs, outputs) }.map_err(|_| Errno::Io)?;
    if super::wants_kick(queue) {
        transport.notify(index);
    }
    // One request in flight: the next used entry is this one. Most are
    // answered within a few hundred microseconds: watch the used ring that
    // long with the device's interrupt off (on PVM, and more so nested,
    // the device's irqfd write and the interrupt that kicks the vCPU cost
    // more than the request), then turn it on and halt until it comes (it
    // is only noted; the devices' service routine has nothing to do).
    let spin_until = crate::time::monotonic_ns() + SPIN_NS;
    queue.set_dev_notify(false);
    while queue.peek_used() != Some(token) && crate::time::monotonic_ns() < spin_until {
        core::hint::spin_loop();
    }
    queue.set_dev_notify(true);
    // The devices' interrupts reach CPU 0 only: another CPU that halted
    // here would sleep until its own next timer tick (4 ms and more per
    // request; a shell writing a disk on 2 vCPUs crawled). It watches the
    // ring instead, answering TLB flushes and snapshot rounds meanwhile
    // (it holds the kernel lock the others may be waiting for).
    let halt = crate::arch::cpu_index() == 0;
    while queue.peek_used() != Some(token) {
        if halt {
            crate::arch::idle();
        } else {
            crate::arch::serve_flush_requests();
            crate::arch::serve_snapshot();
            core::hint::spin_loop();
        }
    }
    // SAFETY: the same buffers `add` was given with this token.
    unsafe { queue.pop_used(token, inputs, outputs) }.map_err(|_| Errno::Io)
}
