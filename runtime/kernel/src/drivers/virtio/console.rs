//! The virtio-console driver (virtio 1.2 §5.3): receive buffers the host
//! fills with standard input (a buffer returned empty is the end of input,
//! kiln-vmm's convention), transmit buffers for output. Neither side ever
//! waits here: a read with nothing received and a write with no free
//! buffer say so, and the caller blocks the thread until the device's
//! interrupt changes that (see `drivers::virtio::service`).

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::Transport as _;

use super::hal::KernelHal;
use super::{Page, Transport};

/// Entries per queue (kiln-vmm's consoles offer 64).
const QUEUE_SIZE: usize = 64;
/// Receive buffers kept posted.
const RX_BUFFERS: usize = 4;
/// Transmit buffers (at most this many pages of output in flight).
const TX_BUFFERS: usize = 16;
/// Bytes per buffer: one frame.
const BUFFER: usize = Page::SIZE;
/// Queue indices (§5.3.2).
const RX_QUEUE: u16 = 0;
const TX_QUEUE: u16 = 1;
/// Most received bytes kept unread before receive buffers stop being
/// reposted (the host then holds the rest back).
const INPUT_LIMIT: usize = 64 * 1024;

/// A virtio console.
pub struct Console {
    transport: Transport,
    rx: VirtQueue<KernelHal, QUEUE_SIZE>,
    tx: VirtQueue<KernelHal, QUEUE_SIZE>,
    /// Receive buffers posted to the device, by token.
    rx_posted: Vec<(u16, Page)>,
    /// Receive buffers waiting to be posted again.
    rx_idle: Vec<Page>,
    /// Receive buffers are posted (from the first read or poll of input:
    /// a program that never reads its input costs no pages for it).
    receiving: bool,
    /// Transmit buffers free for output.
    tx_free: Vec<Page>,
    /// Transmit buffers made so far (made as output needs them).
    tx_pages: usize,
    /// A writer waits for transmit buffers (their return interrupts).
    waiting_output: bool,
    /// Transmit buffers the device has, by token, with their lengths.
    tx_busy: Vec<(u16, Page, usize)>,
    /// Input received and not yet read.
    input: VecDeque<u8>,
    /// The host said standard input ended.
    input_ended: bool,
    /// The terminal size from the configuration (columns, rows).
    size: (u16, u16),
}

/// Why a device could not be set up.
#[derive(Debug)]
pub enum SetupError {
    /// virtio-drivers refused the device or a queue.
    Virtio(virtio_drivers::Error),
    /// No memory for the buffers.
    OutOfMemory,
    /// The device lacks a feature the driver needs.
    Unsupported(&'static str),
}

impl core::fmt::Display for SetupError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SetupError::Virtio(e) => write!(f, "{e}"),
            SetupError::OutOfMemory => f.write_str("out of guest memory"),
            SetupError::Unsupported(what) => write!(f, "the device does not offer {what}"),
        }
    }
}

impl From<virtio_drivers::Error> for SetupError {
    fn from(e: virtio_drivers::Error) -> Self {
        SetupError::Virtio(e)
    }
}

impl Console {
    /// Sets the device up: features, both queues, and the receive buffers
    /// posted.
    ///
    /// # Errors
    /// [`SetupError`] when the device or memory refuses.
    pub fn new(mut transport: Transport) -> Result<Self, SetupError> {
        const F_SIZE: u64 = 1;
        let features = super::begin_init(&mut transport, F_SIZE);
        let rx = VirtQueue::new(&mut transport, RX_QUEUE, false, false)?;
        let mut tx = VirtQueue::new(&mut transport, TX_QUEUE, false, false)?;
        // No interrupt for output handed to the host, unless a writer
        // waits for a buffer (see `wait_for_output`): each one costs tens
        // of microseconds on PVM.
        tx.set_dev_notify(false);
        transport.finish_init();
        let mut console = Self {
            transport,
            rx,
            tx,
            rx_posted: Vec::new(),
            rx_idle: Vec::new(),
            receiving: false,
            tx_free: Vec::new(),
            tx_pages: 0,
            waiting_output: false,
            tx_busy: Vec::new(),
            input: VecDeque::new(),
            input_ended: false,
            size: (0, 0),
        };
        if features & F_SIZE != 0 {
            console.read_size();
        }
        Ok(console)
    }

    /// Starts receiving input now rather than at the first read (a
    /// terminal, whose keys matter even to a program that never reads).
    pub fn listen(&mut self) {
        self.start_receiving();
    }

    /// Hands every received byte to `take` (a terminal's line discipline,
    /// which keeps them) and makes room for more.
    pub fn drain_input(&mut self, mut take: impl FnMut(u8)) {
        if self.input.is_empty() {
            return;
        }
        for b in self.input.drain(..) {
            take(b);
        }
        self.post_receive_buffers();
    }

    /// Whether input is being received (a read or poll for input asked
    /// for it, or a terminal listens).
    pub fn receiving(&self) -> bool {
        self.receiving
    }

    /// Whether the host said its input ended.
    pub fn input_ended(&self) -> bool {
        self.input_ended
    }

    /// The terminal size the host reports (columns, rows).
    pub fn size(&self) -> (u16, u16) {
        self.size
    }

    /// Starts receiving input (posts the receive buffers), once.
    fn start_receiving(&mut self) {
        if self.receiving {
            return;
        }
        self.receiving = true;
        for _ in 0..RX_BUFFERS {
            match Page::new() {
                Some(p) => self.rx_idle.push(p),
                None => break,
            }
        }
        self.post_receive_buffers();
    }

    /// Asks for an interrupt when output buffers come back, because a
    /// writer is about to wait for one. Returns false when buffers came back
    /// meanwhile (the writer should try again at once instead).
    pub fn wait_for_output(&mut self) -> bool {
        self.waiting_output = true;
        self.tx.set_dev_notify(true);
        // A kick even when the device asked for none: it may be looking at
        // the queue on a timer while output keeps coming (kiln-vmm does),
        // and a writer about to wait for buffers wants them now.
        self.transport.notify(TX_QUEUE);
        // Buffers may have come back before the request: take them now.
        !self.reclaim_output()
    }

    /// Whether the host will interrupt when output buffers come back.
    pub fn wakes_on_output(&self) -> bool {
        self.waiting_output && !self.tx_busy.is_empty()
    }

    /// A free transmit buffer: a returned one, or a new one while fewer
    /// than TX_BUFFERS exist.
    fn free_tx_page(&mut self) -> Option<Page> {
        if let Some(p) = self.tx_free.pop() {
            return Some(p);
        }
        self.reclaim_output();
        if let Some(p) = self.tx_free.pop() {
            return Some(p);
        }
        if self.tx_pages < TX_BUFFERS {
            let p = Page::new()?;
            self.tx_pages += 1;
            return Some(p);
        }
        None
    }

    /// Takes back the transmit buffers the host is done with; returns
    /// whether any came back.
    fn reclaim_output(&mut self) -> bool {
        let mut changed = false;
        while let Some(token) = self.tx.peek_used() {
            let Some(i) = self.tx_busy.iter().position(|&(t, _, _)| t == token) else {
                break;
            };
            let (_, page, n) = self.tx_busy.swap_remove(i);
            // SAFETY: these are the buffers added with this token.
            let popped = unsafe { self.tx.pop_used(token, &[&page.bytes()[..n]], &mut []) };
            if popped.is_err() {
                break;
            }
            self.tx_free.push(page);
            changed = true;
        }
        if self.tx_busy.is_empty() && self.waiting_output {
            self.waiting_output = false;
            self.tx.set_dev_notify(false);
        }
        changed
    }

    fn read_size(&mut self) {
        // cols and rows: one word, one exit.
        let word = self.transport.read_config_space::<u32>(0).unwrap_or(0);
        self.size = (word as u16, (word >> 16) as u16);
    }

    fn post_receive_buffers(&mut self) {
        if self.input_ended || self.input.len() >= INPUT_LIMIT {
            return;
        }
        let mut posted = false;
        while let Some(page) = self.rx_idle.pop() {
            // SAFETY: the page is idle (the device does not own it); it stays
            // valid and untouched until popped from the used ring.
            let token = unsafe { self.rx.add(&[], &mut [page.bytes()]) };
            match token {
                Ok(t) => {
                    self.rx_posted.push((t, page));
                    posted = true;
                }
                Err(_) => {
                    self.rx_idle.push(page);
                    break;
                }
            }
        }
        if posted && super::wants_kick(&self.rx) {
            self.transport.notify(RX_QUEUE);
        }
    }

    /// Queues as much of `data` as free transmit buffers hold; returns how
    /// many bytes went (0: none free — wait for the interrupt).
    pub fn write(&mut self, data: &[u8]) -> usize {
        let mut done = 0;
        let mut queued = false;
        while done < data.len() {
            let Some(page) = self.free_tx_page() else {
                break;
            };
            let n = (data.len() - done).min(BUFFER);
            // SAFETY: the page is free (not the device's).
            let bytes = unsafe { page.bytes() };
            bytes[..n].copy_from_slice(&data[done..done + n]);
            // SAFETY: the page stays valid and untouched until its token is
            // popped from the used ring.
            match unsafe { self.tx.add(&[&bytes[..n]], &mut []) } {
                Ok(t) => {
                    self.tx_busy.push((t, page, n));
                    done += n;
                    queued = true;
                }
                Err(_) => {
                    self.tx_free.push(page);
                    break;
                }
            }
        }
        if queued && super::wants_kick(&self.tx) {
            self.transport.notify(TX_QUEUE);
        }
        done
    }

    /// Whether output is still on its way to the host (buffers it has not
    /// returned yet).
    pub fn output_in_flight(&mut self) -> bool {
        if !self.tx_busy.is_empty() {
            self.reclaim_output();
        }
        !self.tx_busy.is_empty()
    }

    /// Takes received input into `out`: `Some(n)` (0 at the end of input),
    /// or `None` when nothing has arrived yet.
    pub fn read(&mut self, out: &mut [u8]) -> Option<usize> {
        self.start_receiving();
        if self.input.is_empty() {
            return self.input_ended.then_some(0);
        }
        let n = out.len().min(self.input.len());
        for (dst, src) in out.iter_mut().zip(self.input.drain(..n)) {
            *dst = src;
        }
        self.post_receive_buffers();
        Some(n)
    }

    /// Received bytes not yet read (starting to receive, for poll).
    pub fn pending_input(&mut self) -> usize {
        self.start_receiving();
        self.input.len()
    }

    /// Whether input may still arrive (only once someone reads: before,
    /// nothing waits for it).
    pub fn input_open(&self) -> bool {
        self.receiving && !self.input_ended
    }

    /// Takes used buffers back after an interrupt; returns whether anything
    /// changed (input arrived or ended, output buffers freed, the size
    /// changed). The interrupt status is read (two more exits) only for a
    /// terminal, whose size can change; otherwise the vector alone says
    /// which device it was, and an unacknowledged status costs nothing with
    /// message-signalled interrupts.
    pub fn service(&mut self) -> bool {
        let mut changed = false;
        if self.size != (0, 0) {
            let status = self.transport.ack_interrupt();
            if status.contains(
                virtio_drivers::transport::InterruptStatus::DEVICE_CONFIGURATION_INTERRUPT,
            ) {
                let before = self.size;
                self.read_size();
                changed |= before != self.size;
            }
        }
        changed |= self.reclaim_output();
        while let Some(token) = self.rx.peek_used() {
            let Some(i) = self.rx_posted.iter().position(|&(t, _)| t == token) else {
                break;
            };
            let (_, page) = self.rx_posted.swap_remove(i);
            // SAFETY: these are the buffers added with this token.
            let len = match unsafe { self.rx.pop_used(token, &[], &mut [page.bytes()]) } {
                Ok(len) => (len as usize).min(BUFFER),
                Err(_) => break,
            };
            if len == 0 {
                self.input_ended = true;
            } else {
                // SAFETY: the device is done with the page.
                self.input.extend(&unsafe { page.bytes() }[..len]);
            }
            self.rx_idle.push(page);
            changed = true;
        }
        self.post_receive_buffers();
        changed
    }
}
