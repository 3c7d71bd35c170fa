//! The virtio-net driver (virtio 1.2 §5.1): Ethernet frames to and from
//! the VMM. Receive buffers are single pages and a frame may span several
//! (VIRTIO_NET_F_MRG_RXBUF), so a 64 KiB MTU needs no large contiguous
//! memory; a frame to send is copied into pages chained in one descriptor
//! chain. The queues are kicked once per batch, not per frame (each kick
//! is an exit to the VMM), and transmit interrupts are only asked for
//! while frames wait for room.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::Transport as _;

use super::console::SetupError;
use super::hal::KernelHal;
use super::{Page, Transport};

/// Entries per queue (kiln-vmm's NIC offers 256).
const QUEUE_SIZE: usize = 256;
const RX_QUEUE: u16 = 0;
const TX_QUEUE: u16 = 1;
/// Receive pages kept posted.
const RX_PAGES: usize = 48;
/// Most pages of output in flight.
const TX_PAGES: usize = 96;
const PAGE: usize = Page::SIZE;
/// `struct virtio_net_hdr_v1`.
const HEADER: usize = 12;

/// Feature bits (§5.1.3).
mod feature {
    pub const MTU: u64 = 1 << 3;
    pub const MAC: u64 = 1 << 5;
    pub const MRG_RXBUF: u64 = 1 << 15;
}

/// A virtio NIC.
pub struct NetDriver {
    transport: Transport,
    rx: VirtQueue<KernelHal, QUEUE_SIZE>,
    tx: VirtQueue<KernelHal, QUEUE_SIZE>,
    mac: [u8; 6],
    mtu: usize,
    rx_posted: Vec<(u16, Page)>,
    rx_idle: Vec<Page>,
    /// A frame being put together from several receive buffers: its bytes
    /// and how many buffers are still to come.
    partial: Option<(Vec<u8>, u16)>,
    tx_free: Vec<Page>,
    tx_pages: usize,
    /// Chains the device has: token and pages.
    tx_busy: Vec<(u16, Vec<Page>)>,
}

impl NetDriver {
    /// Sets the NIC up: features, queues, receive buffers.
    ///
    /// # Errors
    /// [`SetupError`] when the device or memory refuses.
    pub fn new(mut transport: Transport) -> Result<Self, SetupError> {
        let features = super::begin_init(
            &mut transport,
            feature::MAC | feature::MTU | feature::MRG_RXBUF,
        );
        if features & feature::MRG_RXBUF == 0 {
            return Err(SetupError::Unsupported("mergeable receive buffers"));
        }
        let rx = VirtQueue::new(&mut transport, RX_QUEUE, false, false)?;
        let mut tx = VirtQueue::new(&mut transport, TX_QUEUE, false, false)?;
        tx.set_dev_notify(false);
        transport.finish_init();
        let mut mac = [0u8; 6];
        if features & feature::MAC != 0 {
            for (i, b) in mac.iter_mut().enumerate() {
                *b = transport.read_config_space::<u8>(i).unwrap_or(0);
            }
        }
        let mtu = if features & feature::MTU != 0 {
            usize::from(transport.read_config_space::<u16>(10).unwrap_or(1500))
        } else {
            1500
        };
        let mut d = Self {
            transport,
            rx,
            tx,
            mac,
            mtu,
            rx_posted: Vec::new(),
            rx_idle: Vec::new(),
            partial: None,
            tx_free: Vec::new(),
            tx_pages: 0,
            tx_busy: Vec::new(),
        };
        for _ in 0..RX_PAGES {
            d.rx_idle.push(Page::new().ok_or(SetupError::OutOfMemory)?);
        }
        d.post_receive_buffers();
        Ok(d)
    }

    /// The MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The MTU (frame payload bytes).
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    fn post_receive_buffers(&mut self) {
        let mut posted = false;
        while let Some(page) = self.rx_idle.pop() {
            // SAFETY: the page is idle; it stays untouched until its token
            // comes back.
            match unsafe { self.rx.add(&[], &mut [page.bytes()]) } {
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
        if posted && self.rx.should_notify() {
            self.transport.notify(RX_QUEUE);
        }
    }

    /// Moves received frames into `inbox`; returns whether any arrived.
    pub fn receive(&mut self, inbox: &mut VecDeque<Vec<u8>>) -> bool {
        let mut any = false;
        while let Some(token) = self.rx.peek_used() {
            let Some(i) = self.rx_posted.iter().position(|&(t, _)| t == token) else {
                break;
            };
            let (_, page) = self.rx_posted.swap_remove(i);
            // SAFETY: the buffer added with this token.
            let len = match unsafe { self.rx.pop_used(token, &[], &mut [page.bytes()]) } {
                Ok(len) => (len as usize).min(PAGE),
                Err(_) => break,
            };
            // SAFETY: the device is done with the page.
            let bytes = &unsafe { page.bytes() }[..len];
            match self.partial.take() {
                None if len >= HEADER => {
                    let buffers = u16::from_le_bytes([bytes[10], bytes[11]]).max(1);
                    let frame = bytes[HEADER..].to_vec();
                    if buffers == 1 {
                        inbox.push_back(frame);
                        any = true;
                    } else {
                        self.partial = Some((frame, buffers - 1));
                    }
                }
                None => {} // too short to be a frame: dropped
                Some((mut frame, left)) => {
                    frame.extend_from_slice(bytes);
                    if left == 1 {
                        inbox.push_back(frame);
                        any = true;
                    } else {
                        self.partial = Some((frame, left - 1));
                    }
                }
            }
            self.rx_idle.push(page);
        }
        // Repost in batches: each kick is an exit.
        if self.rx_idle.len() >= RX_PAGES / 4 || self.rx_posted.len() < RX_PAGES / 2 {
            self.post_receive_buffers();
        }
        any
    }

    /// Takes back the pages of frames the device has sent.
    fn reclaim(&mut self) {
        while let Some(token) = self.tx.peek_used() {
            let Some(i) = self.tx_busy.iter().position(|(t, _)| *t == token) else {
                break;
            };
            let (_, pages) = self.tx_busy.swap_remove(i);
            // SAFETY: the chain added with this token: its pages, in order.
            let slices: Vec<&[u8]> = pages.iter().map(|p| &unsafe { p.bytes() }[..]).collect();
            // SAFETY: as above.
            if unsafe { self.tx.pop_used(token, &slices, &mut []) }.is_err() {
                break;
            }
            self.tx_free.extend(pages);
        }
    }

    fn page(&mut self) -> Option<Page> {
        if let Some(p) = self.tx_free.pop() {
            return Some(p);
        }
        if self.tx_pages < TX_PAGES {
            let p = Page::new()?;
            self.tx_pages += 1;
            return Some(p);
        }
        None
    }

    /// Sends as many frames of `outbox` as there is room for; returns
    /// whether any went.
    fn send_some(&mut self, outbox: &mut VecDeque<Vec<u8>>) -> bool {
        self.reclaim();
        let mut sent = false;
        while let Some(frame) = outbox.front() {
            let total = HEADER + frame.len();
            let needed = total.div_ceil(PAGE);
            if needed > self.tx_free.len() + (TX_PAGES - self.tx_pages) {
                break;
            }
            let mut pages = Vec::with_capacity(needed);
            for _ in 0..needed {
                match self.page() {
                    Some(p) => pages.push(p),
                    None => break,
                }
            }
            if pages.len() < needed {
                self.tx_free.extend(pages);
                break;
            }
            // Header (all zero: no offloads) then the frame, across pages.
            let mut lens = Vec::with_capacity(needed);
            let mut at = 0usize;
            for (i, p) in pages.iter().enumerate() {
                // SAFETY: the pages are ours until added below.
                let bytes = unsafe { p.bytes() };
                let mut filled = 0;
                if i == 0 {
                    bytes[..HEADER].fill(0);
                    filled = HEADER;
                }
                let n = (PAGE - filled).min(frame.len() - at);
                bytes[filled..filled + n].copy_from_slice(&frame[at..at + n]);
                at += n;
                lens.push(filled + n);
            }
            // SAFETY: as above.
            let slices: Vec<&[u8]> = pages
                .iter()
                .zip(&lens)
                .map(|(p, &l)| &unsafe { p.bytes() }[..l])
                .collect();
            // SAFETY: the pages stay untouched until their token is popped.
            match unsafe { self.tx.add(&slices, &mut []) } {
                Ok(token) => {
                    self.tx_busy.push((token, pages));
                    outbox.pop_front();
                    sent = true;
                }
                Err(_) => {
                    self.tx_free.extend(pages);
                    break;
                }
            }
        }
        if sent && self.tx.should_notify() {
            self.transport.notify(TX_QUEUE);
        }
        sent
    }

    /// Sends what fits of `outbox`; returns whether any frame went. With
    /// frames left over, the device is asked to interrupt when it returns
    /// buffers — and buffers it returned before it was asked are taken at
    /// once, or no interrupt would ever come for them.
    pub fn transmit(&mut self, outbox: &mut VecDeque<Vec<u8>>) -> bool {
        let mut sent = false;
        loop {
            sent |= self.send_some(outbox);
            if outbox.is_empty() {
                self.tx.set_dev_notify(false);
                return sent;
            }
            self.tx.set_dev_notify(true);
            if !self.tx.can_pop() {
                return sent;
            }
        }
    }
}
