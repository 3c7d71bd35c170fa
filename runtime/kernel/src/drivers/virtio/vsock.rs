//! The virtio-vsock driver (virtio 1.2 §5.10): packets — a 44-byte
//! header and its payload — to and from the host. Each receive buffer is a
//! single page holding one packet; a packet to send is copied into chained
//! pages (`pages`). The connections themselves are `net/vsock.rs`'s.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use kiln_boot::vsock::{Header, HEADER_SIZE};
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::Transport as _;

use super::console::SetupError;
use super::pages::{RxPages, TxPages};
use super::Transport;

/// Entries per queue (kiln-vmm's device offers 128).
const QUEUE_SIZE: usize = 128;
const RX_QUEUE: u16 = 0;
const TX_QUEUE: u16 = 1;
const EVENT_QUEUE: u16 = 2;
/// Receive pages kept posted.
const RX_PAGES: usize = 64;
/// Most pages of output in flight.
const TX_PAGES: usize = 96;

/// A packet to send: its header's bytes and its payload.
pub type Outgoing = ([u8; HEADER_SIZE], Vec<u8>);

/// A virtio socket device.
pub struct VsockDriver {
    transport: Transport,
    rx: RxPages<QUEUE_SIZE>,
    tx: TxPages<QUEUE_SIZE>,
    /// The event queue (transport resets after migration, which kiln
    /// never sends); set up because the device has it.
    _events: VirtQueue<super::hal::KernelHal, QUEUE_SIZE>,
    cid: u64,
}

impl VsockDriver {
    /// Sets the device up: queues, receive buffers, the guest's context id.
    ///
    /// # Errors
    /// [`SetupError`] when the device or memory refuses.
    pub fn new(mut transport: Transport) -> Result<Self, SetupError> {
        // No feature bits: stream sockets only (§5.10.3).
        super::begin_init(&mut transport, 0);
        let rx = VirtQueue::new(&mut transport, RX_QUEUE, false, false)?;
        let tx = VirtQueue::new(&mut transport, TX_QUEUE, false, false)?;
        let events = VirtQueue::new(&mut transport, EVENT_QUEUE, false, false)?;
        transport.finish_init();
        let cid = transport.read_config_space::<u64>(0).unwrap_or(0);
        let mut d = Self {
            transport,
            rx: RxPages::new(rx, RX_QUEUE, RX_PAGES).ok_or(SetupError::OutOfMemory)?,
            tx: TxPages::new(tx, TX_QUEUE, TX_PAGES),
            _events: events,
            cid,
        };
        d.rx.post(&mut d.transport);
        Ok(d)
    }

    /// The guest's context id, as the device says.
    pub fn cid(&self) -> u64 {
        self.cid
    }

    /// Hands each received packet to `take`; returns whether any came.
    pub fn receive(&mut self, mut take: impl FnMut(&Header, &[u8])) -> bool {
        let mut any = false;
        while self.rx.next(|bytes| {
            if let Some(h) = Header::decode(bytes) {
                let end = (HEADER_SIZE + h.len as usize).min(bytes.len());
                take(&h, &bytes[HEADER_SIZE..end]);
                any = true;
            }
        }) {}
        self.rx.refill(&mut self.transport);
        any
    }

    /// Sends what fits of `outbox`; returns whether any packet went.
    pub fn transmit(&mut self, outbox: &mut VecDeque<Outgoing>) -> bool {
        self.tx
            .transmit(&mut self.transport, outbox, |(h, p)| (&h[..], &p[..]))
    }
}
