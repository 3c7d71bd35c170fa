//! The socket device: packets the guest sends (header, then payload) go
//! to the muxer; packets for the guest fill its receive buffers, one
//! packet per buffer, its payload cut to the buffer. With no receive
//! buffer left, the device asks the guest to kick when it adds some and
//! leaves the host sockets unread meanwhile.

use std::os::fd::RawFd;
use std::sync::Arc;

use crate::GuestMem;
use kiln_boot::virtio_id;
use kiln_boot::vsock::{Header, HEADER_SIZE};
use virtio_queue::{Queue, QueueOwnedT};

use super::muxer::Muxer;
use super::{QUEUE_SIZE, RX_QUEUE, TX_QUEUE};
use crate::devices::virtio::device::{Active, Traffic};
use crate::devices::virtio::queue::{self, Chain};
use crate::devices::virtio::{Interrupt, QueueError, VirtioDevice};

/// A virtio socket device.
pub struct Vsock {
    active: Option<Active>,
    muxer: Muxer,
    /// No receive buffers: the guest was asked to kick when it adds some.
    starved: bool,
    traffic: Traffic,
}

impl Vsock {
    /// A device whose host side is `muxer` (which knows the guest's
    /// context id).
    pub fn new(muxer: Muxer) -> Self {
        Self {
            active: None,
            muxer,
            starved: false,
            traffic: Traffic::default(),
        }
    }

    /// Fills the guest's receive buffers with what the muxer has for it.
    fn deliver(&mut self) -> Result<(), QueueError> {
        let Some(a) = self.active.as_mut() else {
            return Ok(());
        };
        let mut used = false;
        while self.muxer.has_packets() {
            let chain = match queue::pop(&mut a.queues[RX_QUEUE], &a.mem, RX_QUEUE)? {
                Some(c) => c,
                None => {
                    // Out of buffers: ask for a kick, and look once more for
                    // buffers added before the request was seen.
                    a.ask_for_kicks(RX_QUEUE, true)?;
                    match queue::pop(&mut a.queues[RX_QUEUE], &a.mem, RX_QUEUE)? {
                        Some(c) => {
                            a.ask_for_kicks(RX_QUEUE, false)?;
                            c
                        }
                        None => {
                            self.starved = true;
                            break;
                        }
                    }
                }
            };
            let room = chain.writable_len();
            if room < HEADER_SIZE {
                return Err(QueueError::Chain {
                    queue: RX_QUEUE,
                    reason: "a receive buffer is shorter than the vsock header",
                });
            }
            let Some((h, payload)) = self.muxer.next_for_guest(room - HEADER_SIZE) else {
                a.queues[RX_QUEUE].go_to_previous_position();
                break;
            };
            let mut bytes = Vec::with_capacity(HEADER_SIZE + payload.len());
            bytes.extend_from_slice(&h.encode());
            bytes.extend_from_slice(&payload);
            let n = Chain::write_all(&chain, &a.mem, RX_QUEUE, &bytes)?;
            queue::complete(
                &mut a.queues[RX_QUEUE],
                &a.mem,
                RX_QUEUE,
                chain.head,
                n as u32,
            )?;
            self.traffic.to_guest += payload.len() as u64;
            used = true;
        }
        a.signal_used(RX_QUEUE, used)?;
        Ok(())
    }

    /// Hands the guest's packets to the muxer.
    fn transmit(&mut self) -> Result<(), QueueError> {
        let Some(a) = self.active.as_mut() else {
            return Ok(());
        };
        let mut used = false;
        while let Some(chain) = queue::pop(&mut a.queues[TX_QUEUE], &a.mem, TX_QUEUE)? {
            let data = chain.read_all(&a.mem, TX_QUEUE)?;
            let Some(h) = Header::decode(&data) else {
                return Err(QueueError::Chain {
                    queue: TX_QUEUE,
                    reason: "a transmit chain is shorter than the vsock header",
                });
            };
            let payload = &data[HEADER_SIZE..];
            if h.len as usize != payload.len() {
                return Err(QueueError::Chain {
                    queue: TX_QUEUE,
                    reason: "a vsock packet's length is not its payload's",
                });
            }
            self.muxer.from_guest(&h, payload);
            self.traffic.from_guest += payload.len() as u64;
            queue::complete(&mut a.queues[TX_QUEUE], &a.mem, TX_QUEUE, chain.head, 0)?;
            used = true;
        }
        a.signal_used(TX_QUEUE, used)?;
        Ok(())
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        virtio_id::VSOCK
    }

    fn name(&self) -> &'static str {
        "vsock"
    }

    fn queue_max_sizes(&self) -> &'static [u16] {
        &[QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        // Stream sockets only: no feature bit says so (§5.10.3).
        0
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        crate::devices::virtio::device::read_config_bytes(
            &self.muxer.guest_cid().to_le_bytes(),
            offset,
            data,
        );
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
        self.starved = false;
    }

    fn process_queue(&mut self, index: usize) -> Result<(), QueueError> {
        match index {
            RX_QUEUE => {
                self.starved = false;
                if let Some(a) = self.active.as_mut() {
                    a.ask_for_kicks(RX_QUEUE, false)?;
                }
                self.deliver()
            }
            TX_QUEUE => {
                self.transmit()?;
                // Answers (RESPONSE, RST, credit) and data the guest's
                // credit let through go back at once.
                self.deliver()
            }
            _ => Ok(()),
        }
    }

    fn backend_fds(&self) -> Vec<RawFd> {
        vec![self.muxer.fd()]
    }

    fn backend_interest(&self, _fd: RawFd) -> u32 {
        if self.active.is_none() {
            0
        } else {
            libc::EPOLLIN as u32
        }
    }

    fn process_backend(&mut self, _fd: RawFd, _events: u32) -> Result<(), QueueError> {
        self.muxer.host_events();
        if !self.starved {
            self.deliver()?;
        }
        Ok(())
    }

    fn traffic(&self) -> Traffic {
        self.traffic
    }
}
