//! The virtio-net driver (virtio 1.2 §5.1): Ethernet frames to and from
//! the VMM. Receive buffers are single pages and a frame may span several
//! (VIRTIO_NET_F_MRG_RXBUF), so a 64 KiB MTU needs no large contiguous
//! memory; a frame to send is copied into pages chained in one descriptor
//! chain (`pages`).

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::Transport as _;

use super::console::SetupError;
use super::pages::{RxPages, TxPages};
use super::Transport;

/// Entries per queue (kiln-vmm's NIC offers 256).
const QUEUE_SIZE: usize = 256;
const RX_QUEUE: u16 = 0;
const TX_QUEUE: u16 = 1;
/// Receive pages kept posted.
const RX_PAGES: usize = 48;
/// Most pages of output in flight.
const TX_PAGES: usize = 96;
/// `struct virtio_net_hdr_v1` (all zero on output: no offloads).
const HEADER: usize = 12;
const NO_OFFLOADS: [u8; HEADER] = [0; HEADER];

/// Feature bits (§5.1.3).
mod feature {
    pub const MTU: u64 = 1 << 3;
    pub const MAC: u64 = 1 << 5;
    pub const MRG_RXBUF: u64 = 1 << 15;
}

/// A virtio NIC.
pub struct NetDriver {
    transport: Transport,
    rx: RxPages<QUEUE_SIZE>,
    tx: TxPages<QUEUE_SIZE>,
    mac: [u8; 6],
    mtu: usize,
    /// A frame being put together from several receive buffers: its bytes
    /// and how many buffers are still to come.
    partial: Option<(Vec<u8>, u16)>,
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
        let tx = VirtQueue::new(&mut transport, TX_QUEUE, false, false)?;
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
            rx: RxPages::new(rx, RX_QUEUE, RX_PAGES).ok_or(SetupError::OutOfMemory)?,
            tx: TxPages::new(tx, TX_QUEUE, TX_PAGES),
            mac,
            mtu,
            partial: None,
        };
        d.rx.post(&mut d.transport);
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

    /// Moves received frames into `inbox`; returns whether any arrived.
    pub fn receive(&mut self, inbox: &mut VecDeque<Vec<u8>>) -> bool {
        let mut any = false;
        let partial = &mut self.partial;
        while self.rx.next(|bytes| match partial.take() {
            None if bytes.len() >= HEADER => {
                let buffers = u16::from_le_bytes([bytes[10], bytes[11]]).max(1);
                let frame = bytes[HEADER..].to_vec();
                if buffers == 1 {
                    inbox.push_back(frame);
                    any = true;
                } else {
                    *partial = Some((frame, buffers - 1));
                }
            }
            None => {} // too short to be a frame: dropped
            Some((mut frame, left)) => {
                frame.extend_from_slice(bytes);
                if left == 1 {
                    inbox.push_back(frame);
                    any = true;
                } else {
                    *partial = Some((frame, left - 1));
                }
            }
        }) {}
        self.rx.refill(&mut self.transport);
        any
    }

    /// Sends what fits of `outbox`; returns whether any frame went.
    pub fn transmit(&mut self, outbox: &mut VecDeque<Vec<u8>>) -> bool {
        self.tx
            .transmit(&mut self.transport, outbox, |f| (&NO_OFFLOADS[..], &f[..]))
    }
}
