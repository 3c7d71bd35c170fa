//! The NIC: frames from the guest's transmit queue go to the backend;
//! frames from the backend fill the guest's receive buffers, several
//! buffers per frame when one is too small (the first buffer's header says
//! how many). With no receive buffer left, the frame is held and the
//! backend is not read until the guest adds buffers; with a backend that
//! cannot take more, transmit chains stay in the queue until it can.

use std::os::fd::RawFd;
use std::sync::Arc;

use crate::GuestMem;
use kiln_boot::virtio_id;
use virtio_queue::{Queue, QueueOwnedT};

use super::backend::Backend;
use super::{feature, HEADER, QUEUE_SIZE, RX_QUEUE, TX_QUEUE};
use crate::devices::virtio::device::{Active, Traffic};
use crate::devices::virtio::queue::{self, Chain};
use crate::devices::virtio::{Interrupt, QueueError, VirtioDevice};

/// A virtio NIC.
pub struct Net {
    active: Option<Active>,
    backend: Box<dyn Backend>,
    mac: [u8; 6],
    mtu: u16,
    /// A frame from the backend waiting for guest buffers.
    held: Option<Vec<u8>>,
    /// No guest buffers: the backend is not read until the guest adds some.
    starved: bool,
    /// The backend took no more: transmit waits for it to drain.
    tx_blocked: bool,
    traffic: Traffic,
}

impl Net {
    /// A NIC with address `mac` and `mtu` bytes of frame payload, on
    /// `backend`.
    pub fn new(backend: Box<dyn Backend>, mac: [u8; 6], mtu: u16) -> Self {
        Self {
            active: None,
            backend,
            mac,
            mtu,
            held: None,
            starved: false,
            tx_blocked: false,
            traffic: Traffic::default(),
        }
    }

    /// Puts one frame into the guest's receive buffers; false when there
    /// are not enough (nothing is used then).
    fn deliver(a: &mut Active, frame: &[u8]) -> Result<bool, QueueError> {
        let total = HEADER + frame.len();
        let mut chains: Vec<Chain> = Vec::new();
        let mut room = 0;
        while room < total {
            match queue::pop(&mut a.queues[RX_QUEUE], &a.mem, RX_QUEUE)? {
                Some(c) => {
                    let len = c.writable_len();
                    if len == 0 {
                        return Err(QueueError::Chain {
                            queue: RX_QUEUE,
                            reason: "a receive buffer has no writable descriptor",
                        });
                    }
                    room += len;
                    chains.push(c);
                }
                None => {
                    // Not enough: give them back for the next try.
                    for _ in &chains {
                        a.queues[RX_QUEUE].go_to_previous_position();
                    }
                    return Ok(false);
                }
            }
        }
        let mut data = Vec::with_capacity(total);
        data.extend_from_slice(&[0u8; 10]);
        data.extend_from_slice(&(chains.len() as u16).to_le_bytes());
        data.extend_from_slice(frame);
        let mut at = 0;
        for c in chains {
            let n = c.write_all(&a.mem, RX_QUEUE, &data[at..])?;
            at += n;
            queue::complete(&mut a.queues[RX_QUEUE], &a.mem, RX_QUEUE, c.head, n as u32)?;
        }
        Ok(true)
    }

    /// Moves frames from the backend into the guest while it has buffers.
    fn receive(&mut self) -> Result<(), QueueError> {
        let Some(a) = self.active.as_mut() else {
            return Ok(());
        };
        let mut used = false;
        loop {
            let frame = match self.held.take() {
                Some(f) => f,
                None => match self.backend.recv().map_err(QueueError::Host)? {
                    Some(f) => f,
                    None => break,
                },
            };
            if Self::deliver(a, &frame)? {
                self.traffic.to_guest += frame.len() as u64;
                used = true;
                continue;
            }
            // Ask the guest to kick when it adds buffers, then try once more
            // with what it may have added meanwhile: buffers added after the
            // request come with a kick.
            a.ask_for_kicks(RX_QUEUE, true)?;
            if Self::deliver(a, &frame)? {
                a.ask_for_kicks(RX_QUEUE, false)?;
                self.traffic.to_guest += frame.len() as u64;
                used = true;
                continue;
            }
            self.held = Some(frame);
            self.starved = true;
            break;
        }
        a.signal_used(RX_QUEUE, used)
    }

    /// Sends the guest's frames while the backend takes them.
    fn transmit(&mut self) -> Result<(), QueueError> {
        let Some(a) = self.active.as_mut() else {
            return Ok(());
        };
        if self.backend.blocked() && !self.backend.flush().map_err(QueueError::Host)? {
            self.tx_blocked = true;
            return Ok(());
        }
        self.tx_blocked = false;
        let mut used = false;
        while let Some(chain) = queue::pop(&mut a.queues[TX_QUEUE], &a.mem, TX_QUEUE)? {
            let data = chain.read_all(&a.mem, TX_QUEUE)?;
            if data.len() < HEADER {
                return Err(QueueError::Chain {
                    queue: TX_QUEUE,
                    reason: "a transmit chain is shorter than the virtio-net header",
                });
            }
            let frame = &data[HEADER..];
            if !self.backend.send(frame).map_err(QueueError::Host)? {
                a.queues[TX_QUEUE].go_to_previous_position();
                self.tx_blocked = true;
                break;
            }
            self.traffic.from_guest += frame.len() as u64;
            queue::complete(&mut a.queues[TX_QUEUE], &a.mem, TX_QUEUE, chain.head, 0)?;
            used = true;
        }
        if self.backend.blocked() {
            self.tx_blocked = true;
        }
        a.signal_used(TX_QUEUE, used)?;
        Ok(())
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        virtio_id::NET
    }

    fn name(&self) -> &'static str {
        "net"
    }

    fn queue_max_sizes(&self) -> &'static [u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        feature::MAC | feature::MTU | feature::MRG_RXBUF
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // mac[6], status u16, max_virtqueue_pairs u16, mtu u16.
        let mut config = [0u8; 12];
        config[..6].copy_from_slice(&self.mac);
        config[6..8].copy_from_slice(&1u16.to_le_bytes()); // link up
        config[8..10].copy_from_slice(&1u16.to_le_bytes());
        config[10..12].copy_from_slice(&self.mtu.to_le_bytes());
        crate::devices::virtio::device::read_config_bytes(&config, offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMem,
        queues: Vec<Queue>,
        interrupt: Arc<Interrupt>,
        _features: u64,
    ) -> Result<(), QueueError> {
        self.active = Some(Active {
            mem,
            queues,
            interrupt,
        });
        self.starved = false;
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
        self.held = None;
        self.starved = false;
        self.tx_blocked = false;
    }

    fn announce(&mut self, ipv4: std::net::Ipv4Addr) -> std::io::Result<()> {
        let mut frame = Vec::with_capacity(42);
        frame.extend_from_slice(&[0xff; 6]); // broadcast
        frame.extend_from_slice(&self.mac);
        frame.extend_from_slice(&0x0806u16.to_be_bytes()); // ARP
        frame.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]); // Ethernet, IPv4, request
        frame.extend_from_slice(&self.mac);
        frame.extend_from_slice(&ipv4.octets());
        frame.extend_from_slice(&[0; 6]);
        frame.extend_from_slice(&ipv4.octets());
        self.backend.send(&frame).map(|_| ())
    }

    /// A frame held for the guest is not saved: like a frame lost on the
    /// wire, the guest's TCP sends it again.
    fn snapshot_queues(&self) -> Option<&[Queue]> {
        self.active.as_ref().map(|a| a.queues.as_slice())
    }

    fn process_queue(&mut self, index: usize) -> Result<(), QueueError> {
        match index {
            RX_QUEUE => {
                // Buffers came: no more kicks needed until they run out.
                self.starved = false;
                if let Some(a) = self.active.as_mut() {
                    a.ask_for_kicks(RX_QUEUE, false)?;
                }
                self.receive()
            }
            TX_QUEUE => self.transmit(),
            _ => Ok(()),
        }
    }

    fn backend_fds(&self) -> Vec<RawFd> {
        std::iter::once(self.backend.fd())
            .chain(self.backend.wake_fd())
            .collect()
    }

    fn backend_interest(&self, fd: RawFd) -> u32 {
        if self.active.is_none() {
            return 0;
        }
        if Some(fd) == self.backend.wake_fd() {
            return libc::EPOLLIN as u32;
        }
        let mut events = 0;
        if !self.starved {
            events |= libc::EPOLLIN as u32;
        }
        if self.tx_blocked {
            events |= libc::EPOLLOUT as u32;
        }
        events
    }

    fn process_backend(&mut self, fd: RawFd, events: u32) -> Result<(), QueueError> {
        if Some(fd) == self.backend.wake_fd() {
            self.backend.woken();
            return self.transmit();
        }
        if events & (libc::EPOLLOUT as u32) != 0 {
            self.transmit()?;
        }
        if events & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
            self.receive()?;
        }
        Ok(())
    }

    fn traffic(&self) -> Traffic {
        self.traffic
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::net::StreamBackend;
    use crate::devices::virtio::test_utils::{self, GuestQueue};
    use crate::devices::virtio::VIRTIO_F_VERSION_1;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use vm_memory::{Bytes, GuestAddress};

    fn started() -> (
        crate::devices::virtio::mmio::MmioTransport,
        GuestMem,
        GuestQueue,
        GuestQueue,
        UnixStream,
    ) {
        let mem = test_utils::memory();
        let (ours, peer) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let net = Net::new(Box::new(StreamBackend::new(ours)), [2, 0, 0, 0, 0, 1], 1500);
        let (mut t, _) = test_utils::transport(Box::new(net), &mem);
        let rx = GuestQueue::new(0x10000, QUEUE_SIZE);
        let tx = GuestQueue::new(0x20000, QUEUE_SIZE);
        let features = VIRTIO_F_VERSION_1 | feature::MRG_RXBUF | feature::MAC;
        test_utils::kiln_setup(&mut t, &mem, 0x30000, features, &[&rx, &tx]);
        assert!(t.is_active());
        (t, mem, rx, tx, peer)
    }

    fn send_frame(peer: &mut UnixStream, frame: &[u8]) {
        peer.write_all(&(frame.len() as u32).to_be_bytes()).unwrap();
        peer.write_all(frame).unwrap();
    }

    #[test]
    fn guest_frames_reach_the_backend_without_the_header() {
        let (mut t, mem, _, mut tx, mut peer) = started();
        let mut chain = vec![0u8; HEADER];
        chain.extend_from_slice(b"an ethernet frame");
        mem.write_slice(&chain, GuestAddress(0x40000)).unwrap();
        tx.add(&mem, &[(0x40000, chain.len() as u32, false)]);
        t.kick(TX_QUEUE).unwrap();
        let mut got = [0u8; 4 + 17];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got[..4], &17u32.to_be_bytes());
        assert_eq!(&got[4..], b"an ethernet frame");
        assert_eq!(tx.used(&mem).len(), 1);
    }

    #[test]
    fn a_big_frame_spans_merged_buffers() {
        let (mut t, mem, mut rx, _, mut peer) = started();
        let heads: Vec<u16> = (0..4)
            .map(|i| rx.add(&mem, &[(0x40000 + i * 0x1000, 0x1000, true)]))
            .collect();
        t.kick(RX_QUEUE).unwrap();
        let frame: Vec<u8> = (0..9000u32).map(|i| i as u8).collect();
        send_frame(&mut peer, &frame);
        let fd = t.device().backend_fds()[0];
        t.backend_ready(fd, libc::EPOLLIN as u32).unwrap();
        let used = rx.used(&mem);
        assert_eq!(used.len(), 3, "12 + 9000 bytes need three 4 KiB buffers");
        assert_eq!(used[0], (u32::from(heads[0]), 0x1000));
        let mut header = [0u8; HEADER];
        mem.read_slice(&mut header, GuestAddress(0x40000)).unwrap();
        assert_eq!(u16::from_le_bytes([header[10], header[11]]), 3);
        let mut back = vec![0u8; 3 * 0x1000];
        mem.read_slice(&mut back, GuestAddress(0x40000)).unwrap();
        assert_eq!(&back[HEADER..HEADER + 9000], &frame[..]);
    }

    #[test]
    fn without_buffers_the_frame_waits_and_reading_stops() {
        let (mut t, mem, mut rx, _, mut peer) = started();
        send_frame(&mut peer, b"early");
        let fd = t.device().backend_fds()[0];
        t.backend_ready(fd, libc::EPOLLIN as u32).unwrap();
        assert_eq!(
            t.device().backend_interest(fd),
            0,
            "no buffers: stop reading"
        );
        rx.add(&mem, &[(0x40000, 0x1000, true)]);
        t.kick(RX_QUEUE).unwrap();
        assert_eq!(rx.used(&mem).len(), 1);
        assert_eq!(t.device().backend_interest(fd), libc::EPOLLIN as u32);
        let mut got = [0u8; 5];
        mem.read_slice(&mut got, GuestAddress(0x40000 + HEADER as u64))
            .unwrap();
        assert_eq!(&got, b"early");
    }

    #[test]
    fn a_short_transmit_chain_breaks_the_nic_not_the_vmm() {
        let (mut t, mem, _, mut tx, _) = started();
        tx.add(&mem, &[(0x40000, 4, false)]);
        t.kick(TX_QUEUE).unwrap();
        assert_ne!(
            test_utils::status(&t) & crate::devices::virtio::status::DEVICE_NEEDS_RESET,
            0
        );
    }

    #[test]
    fn a_gone_backend_is_a_host_failure() {
        let (mut t, mem, mut rx, _, peer) = started();
        rx.add(&mem, &[(0x40000, 0x1000, true)]);
        t.kick(RX_QUEUE).unwrap();
        drop(peer);
        let fd = t.device().backend_fds()[0];
        let e = t.backend_ready(fd, libc::EPOLLIN as u32).unwrap_err();
        assert!(!e.is_guest_fault(), "{e}");
    }
}
