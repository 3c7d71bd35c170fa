//! The devices smoltcp's interfaces send through: frame queues. Received
//! frames wait in an inbox until the interface is polled (so the kernel
//! can look at connection requests first, see `net::listen`); sent frames
//! go to an outbox — the loopback device moves them to its own inbox, the
//! NIC's are handed to the virtio-net driver after each poll.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use kiln_kernel::net::frames::Framing;
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// Most frames waiting to be handed to the NIC before the stack is told
/// to hold back.
const OUTBOX_LIMIT: usize = 64;

/// A device of frame queues.
pub struct Frames {
    /// Received, not yet processed.
    pub inbox: VecDeque<Vec<u8>>,
    /// Sent by the stack, not yet delivered.
    pub outbox: VecDeque<Vec<u8>>,
    /// How frames are framed.
    pub framing: Framing,
    /// Largest frame payload (the IP MTU).
    pub mtu: usize,
}

impl Frames {
    /// The loopback device: IP packets, no checksums (nothing can corrupt
    /// them), a 64 KiB MTU.
    pub fn loopback() -> Self {
        Self {
            inbox: VecDeque::new(),
            outbox: VecDeque::new(),
            framing: Framing::Ip,
            mtu: 65535,
        }
    }

    /// A NIC's device: Ethernet frames of `mtu` bytes of payload.
    pub fn ethernet(mtu: usize) -> Self {
        Self {
            inbox: VecDeque::new(),
            outbox: VecDeque::new(),
            framing: Framing::Ethernet,
            mtu,
        }
    }

    /// Loopback: what was sent comes back in.
    pub fn loop_back(&mut self) -> bool {
        if self.outbox.is_empty() {
            return false;
        }
        self.inbox.append(&mut self.outbox);
        true
    }
}

/// Receives one frame.
pub struct RxToken(Vec<u8>);

/// Sends one frame.
pub struct TxToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = alloc::vec![0u8; len];
        let r = f(&mut frame);
        self.0.push_back(frame);
        r
    }
}

impl phy::Device for Frames {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let frame = self.inbox.pop_front()?;
        Some((RxToken(frame), TxToken(&mut self.outbox)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        if self.framing == Framing::Ethernet && self.outbox.len() >= OUTBOX_LIMIT {
            return None;
        }
        Some(TxToken(&mut self.outbox))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        match self.framing {
            Framing::Ip => {
                caps.medium = Medium::Ip;
                caps.checksum = ChecksumCapabilities::ignored();
                caps.max_transmission_unit = self.mtu;
            }
            Framing::Ethernet => {
                caps.medium = Medium::Ethernet;
                caps.max_transmission_unit = self.mtu + 14;
                // Frames come from the VMM, which checked or made them:
                // compute checksums for what leaves, trust what arrives.
                let mut c = ChecksumCapabilities::default();
                c.ipv4 = Checksum::Tx;
                c.tcp = Checksum::Tx;
                c.udp = Checksum::Tx;
                c.icmpv4 = Checksum::Tx;
                c.icmpv6 = Checksum::Tx;
                caps.checksum = c;
            }
        }
        caps
    }
}
