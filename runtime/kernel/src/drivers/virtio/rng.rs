//! The virtio-rng driver (virtio 1.2 §5.4): /dev/hwrng reads the host's
//! entropy a page at a time. A read with nothing fetched yet asks the
//! device for a page and waits for its interrupt.

use alloc::collections::VecDeque;

use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::Transport as _;

use super::console::SetupError;
use super::hal::KernelHal;
use super::Transport;
use crate::arch::phys_to_virt;
use crate::mm::frame;

/// Entries in the request queue (kiln-vmm offers 16).
const QUEUE_SIZE: usize = 16;
/// Bytes asked for at a time.
const REQUEST: usize = 4096;

/// A virtio entropy source.
pub struct Rng {
    transport: Transport,
    queue: VirtQueue<KernelHal, QUEUE_SIZE>,
    /// The page the device fills.
    page: u64,
    /// The request's token while the device has the page.
    posted: Option<u16>,
    /// Entropy fetched and not yet read.
    have: VecDeque<u8>,
}

impl Rng {
    /// Sets the device up.
    ///
    /// # Errors
    /// [`SetupError`] when the device or memory refuses.
    pub fn new(mut transport: Transport) -> Result<Self, SetupError> {
        super::begin_init(&mut transport, 0);
        let queue = VirtQueue::new(&mut transport, 0, false, false)?;
        transport.finish_init();
        let page = frame::alloc_zeroed().ok_or(SetupError::OutOfMemory)?;
        Ok(Self {
            transport,
            queue,
            page,
            posted: None,
            have: VecDeque::new(),
        })
    }

    fn buffer<'a>(&self) -> &'a mut [u8] {
        // SAFETY: the driver's own frame, in the direct map; callers touch
        // it only while the device does not own it (or hand it over).
        unsafe { core::slice::from_raw_parts_mut(phys_to_virt(self.page), REQUEST) }
    }

    /// Fills `out` from fetched entropy: `Some(n)`, or `None` after asking
    /// the device for more (wait for the interrupt).
    pub fn read(&mut self, out: &mut [u8]) -> Option<usize> {
        if !self.have.is_empty() {
            let n = out.len().min(self.have.len());
            for (dst, src) in out.iter_mut().zip(self.have.drain(..n)) {
                *dst = src;
            }
            return Some(n);
        }
        if self.posted.is_none() {
            // SAFETY: the page is not the device's until popped.
            if let Ok(t) = unsafe { self.queue.add(&[], &mut [self.buffer()]) } {
                self.posted = Some(t);
                if super::wants_kick(&self.queue) {
                    self.transport.notify(0);
                }
            }
        }
        None
    }

    /// Whether a request is out.
    pub fn waiting(&self) -> bool {
        self.posted.is_some()
    }

    /// Takes a filled page back; returns whether entropy arrived.
    pub fn service(&mut self) -> bool {
        let Some(token) = self.posted else {
            return false;
        };
        if self.queue.peek_used() != Some(token) {
            return false;
        }
        // SAFETY: the buffer added with this token.
        let Ok(len) = (unsafe { self.queue.pop_used(token, &[], &mut [self.buffer()]) }) else {
            return false;
        };
        self.posted = None;
        let len = (len as usize).min(REQUEST);
        self.have.extend(&self.buffer()[..len]);
        true
    }
}
