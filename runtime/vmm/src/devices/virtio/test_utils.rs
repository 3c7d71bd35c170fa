//! The driver's side of a virtio device, for unit tests: guest memory, a
//! split queue laid out in it, and a transport set up the way kiln's
//! kernel does it — so device logic is tested with no KVM.

use std::sync::Arc;

use crate::GuestMem;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::mmio::{reg, MmioTransport};
use super::{Interrupt, VirtioDevice};

/// A host-side output sink the test reads back (clones share the bytes).
#[derive(Clone, Default)]
pub struct Sink(pub Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// VIRTQ_DESC_F_NEXT and VIRTQ_DESC_F_WRITE (virtio 1.2 §2.7.5).
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

/// 1 MiB of guest memory at guest-physical 0.
pub fn memory() -> GuestMem {
    GuestMem::from_ranges(&[(GuestAddress(0), 1 << 20)]).expect("test memory")
}

/// A split queue in guest memory, driven as a driver would.
pub struct GuestQueue {
    /// Descriptor table address.
    pub desc: u64,
    /// Available ring address.
    pub avail: u64,
    /// Used ring address.
    pub used: u64,
    /// Entries.
    pub size: u16,
    next_desc: u16,
    avail_idx: u16,
}

impl GuestQueue {
    /// A queue of `size` entries with its rings from `base` on.
    pub fn new(base: u64, size: u16) -> Self {
        Self {
            desc: base,
            avail: base + 16 * u64::from(size),
            used: base + 0x1000,
            size,
            next_desc: 0,
            avail_idx: 0,
        }
    }

    /// Offers a chain of `(address, length, device-writable)` buffers;
    /// returns its head index.
    pub fn add(&mut self, mem: &GuestMem, bufs: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, writable)) in bufs.iter().enumerate() {
            let index = self.next_desc;
            self.next_desc = (self.next_desc + 1) % self.size;
            let last = i + 1 == bufs.len();
            let flags = if last { 0 } else { F_NEXT } | if writable { F_WRITE } else { 0 };
            let at = GuestAddress(self.desc + 16 * u64::from(index));
            mem.write_obj(addr, at).unwrap();
            mem.write_obj(len, GuestAddress(at.0 + 8)).unwrap();
            mem.write_obj(flags, GuestAddress(at.0 + 12)).unwrap();
            mem.write_obj(self.next_desc, GuestAddress(at.0 + 14))
                .unwrap();
        }
        self.publish(mem, head);
        head
    }

    /// Puts `head` in the available ring (any value: tests use it to offer
    /// bad heads).
    pub fn publish(&mut self, mem: &GuestMem, head: u16) {
        let slot = u64::from(self.avail_idx % self.size);
        mem.write_obj(head, GuestAddress(self.avail + 4 + 2 * slot))
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx, GuestAddress(self.avail + 2))
            .unwrap();
    }

    /// Sets the available ring's index to `idx` (to break it).
    pub fn set_avail_idx(&mut self, mem: &GuestMem, idx: u16) {
        self.avail_idx = idx;
        mem.write_obj(idx, GuestAddress(self.avail + 2)).unwrap();
    }

    /// Sets the available ring's flags (VIRTQ_AVAIL_F_NO_INTERRUPT is 1).
    pub fn set_avail_flags(&self, mem: &GuestMem, flags: u16) {
        mem.write_obj(flags, GuestAddress(self.avail)).unwrap();
    }

    /// Whether the device asks not to be kicked (the used ring's
    /// VIRTQ_USED_F_NO_NOTIFY).
    pub fn kicks_unwanted(&self, mem: &GuestMem) -> bool {
        let flags: u16 = mem.read_obj(GuestAddress(self.used)).unwrap();
        flags & 1 != 0
    }

    /// The used ring's entries so far: `(head, length)`.
    pub fn used(&self, mem: &GuestMem) -> Vec<(u32, u32)> {
        let idx: u16 = mem.read_obj(GuestAddress(self.used + 2)).unwrap();
        (0..idx)
            .map(|i| {
                let at = self.used + 4 + 8 * u64::from(i % self.size);
                (
                    mem.read_obj(GuestAddress(at)).unwrap(),
                    mem.read_obj(GuestAddress(at + 4)).unwrap(),
                )
            })
            .collect()
    }
}

/// A transport for `device` over `mem`, and its interrupt.
pub fn transport(device: Box<dyn VirtioDevice>, mem: &GuestMem) -> (MmioTransport, Arc<Interrupt>) {
    let interrupt = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    (
        MmioTransport::new(device, mem.clone(), interrupt.clone()),
        interrupt,
    )
}

/// Starts the device with kiln's one-write setup: the block at
/// `block` describes `queues`; `features` are the driver's.
pub fn kiln_setup(
    t: &mut MmioTransport,
    mem: &GuestMem,
    block: u64,
    features: u64,
    queues: &[&GuestQueue],
) {
    mem.write_obj(features, GuestAddress(block)).unwrap();
    mem.write_obj(queues.len() as u32, GuestAddress(block + 8))
        .unwrap();
    for (i, q) in queues.iter().enumerate() {
        let at = block + 16 + 32 * i as u64;
        mem.write_obj(u32::from(q.size), GuestAddress(at)).unwrap();
        mem.write_obj(q.desc, GuestAddress(at + 8)).unwrap();
        mem.write_obj(q.avail, GuestAddress(at + 16)).unwrap();
        mem.write_obj(q.used, GuestAddress(at + 24)).unwrap();
    }
    t.write(reg::KILN_SETUP, &((block >> 12) as u32).to_le_bytes())
        .unwrap();
}

/// The transport's Status register.
pub fn status(t: &MmioTransport) -> u32 {
    let mut b = [0u8; 4];
    t.read(reg::STATUS, &mut b);
    u32::from_le_bytes(b)
}
