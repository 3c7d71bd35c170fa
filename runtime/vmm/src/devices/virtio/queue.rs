//! Taking descriptor chains from a queue and moving bytes through them,
//! every address and length checked against guest memory.

use crate::GuestMem;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

use super::QueueError;

/// Most bytes one chain may carry (virtio 1.2 §2.7.5.2 allows 4 GiB; kiln's
/// devices never need more than this, and a hostile length costs nothing).
const MAX_CHAIN_BYTES: usize = 16 << 20;

/// A chain popped from a queue: its head (for `add_used`) and descriptors.
pub struct Chain {
    /// Index of the head descriptor.
    pub head: u16,
    /// The descriptors, in order.
    pub descriptors: Vec<Descriptor>,
}

impl Chain {
    /// The bytes of its device-readable descriptors, concatenated.
    ///
    /// # Errors
    /// When a descriptor lies outside guest memory or the chain is too long.
    pub fn read_all(&self, mem: &GuestMem, queue: usize) -> Result<Vec<u8>, QueueError> {
        let mut out = Vec::new();
        for d in self.descriptors.iter().filter(|d| !d.is_write_only()) {
            let len = d.len() as usize;
            if out.len() + len > MAX_CHAIN_BYTES {
                return Err(QueueError::Chain {
                    queue,
                    reason: "a descriptor chain carries more than 16 MiB",
                });
            }
            let at = out.len();
            out.resize(at + len, 0);
            mem.read_slice(&mut out[at..], d.addr())
                .map_err(|source| QueueError::Memory { queue, source })?;
        }
        Ok(out)
    }

    /// Total length of its device-writable descriptors.
    pub fn writable_len(&self) -> usize {
        self.descriptors
            .iter()
            .filter(|d| d.is_write_only())
            .map(|d| d.len() as usize)
            .sum()
    }

    /// Copies as much of `data` as fits into its device-writable
    /// descriptors; returns how many bytes went in.
    ///
    /// # Errors
    /// When a descriptor lies outside guest memory.
    pub fn write_all(
        &self,
        mem: &GuestMem,
        queue: usize,
        data: &[u8],
    ) -> Result<usize, QueueError> {
        let mut done = 0;
        for d in self.descriptors.iter().filter(|d| d.is_write_only()) {
            if done == data.len() {
                break;
            }
            let n = (d.len() as usize).min(data.len() - done);
            mem.write_slice(&data[done..done + n], d.addr())
                .map_err(|source| QueueError::Memory { queue, source })?;
            done += n;
        }
        Ok(done)
    }
}

/// Takes the next available chain of `queue` (number `index`), if any.
///
/// # Errors
/// When the available ring is inconsistent or a chain is empty or loops
/// (virtio-queue stops such a chain early; an empty one is what is left).
pub fn pop(queue: &mut Queue, mem: &GuestMem, index: usize) -> Result<Option<Chain>, QueueError> {
    let mut iter = queue.iter(mem).map_err(|source| QueueError::Queue {
        queue: index,
        source,
    })?;
    let Some(chain): Option<DescriptorChain<&GuestMem>> = iter.next() else {
        return Ok(None);
    };
    let head = chain.head_index();
    let descriptors: Vec<Descriptor> = chain.collect();
    let Some(last) = descriptors.last() else {
        return Err(QueueError::Chain {
            queue: index,
            reason: "a descriptor chain is empty or starts outside the descriptor table",
        });
    };
    // virtio-queue ends a chain after as many descriptors as the queue
    // holds; one that still points further loops (or is longer than the
    // table allows).
    if last.has_next() {
        return Err(QueueError::Chain {
            queue: index,
            reason: "a descriptor chain loops",
        });
    }
    // Every buffer whole inside guest memory, even the parts a device
    // would not touch: a buffer that is not is a broken driver.
    if let Some(d) = descriptors.iter().find(|d| {
        let access = if d.is_write_only() {
            Permissions::Write
        } else {
            Permissions::Read
        };
        !mem.check_range(d.addr(), d.len() as usize, access)
    }) {
        return Err(QueueError::Chain {
            queue: index,
            reason: if d.len() as usize > MAX_CHAIN_BYTES {
                "a descriptor is longer than guest memory allows"
            } else {
                "a descriptor names memory outside the guest"
            },
        });
    }
    Ok(Some(Chain { head, descriptors }))
}

/// Returns `chain` to the guest with `len` bytes written.
///
/// # Errors
/// When the used ring lies outside guest memory.
pub fn complete(
    queue: &mut Queue,
    mem: &GuestMem,
    index: usize,
    head: u16,
    len: u32,
) -> Result<(), QueueError> {
    queue
        .add_used(mem, head, len)
        .map_err(|source| QueueError::Queue {
            queue: index,
            source,
        })
}

/// VIRTQ_AVAIL_F_NO_INTERRUPT (virtio 1.2 §2.7.7): the driver does not
/// want used-buffer interrupts for now.
const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// Whether the guest wants an interrupt for the used buffers added: not
/// when it set VIRTQ_AVAIL_F_NO_INTERRUPT (which virtio-queue does not
/// look at; kiln's kernel sets it on output queues until a writer waits,
/// since each interrupt costs tens of microseconds on PVM).
///
/// # Errors
/// When the rings lie outside guest memory.
pub fn needs_interrupt(
    queue: &mut Queue,
    mem: &GuestMem,
    index: usize,
) -> Result<bool, QueueError> {
    let wanted = queue
        .needs_notification(mem)
        .map_err(|source| QueueError::Queue {
            queue: index,
            source,
        })?;
    if !wanted || queue.event_idx_enabled() {
        return Ok(wanted);
    }
    // needs_notification's fence ordered the used-ring writes before this
    // read of the flags (virtio 1.2 §2.7.10).
    let flags: u16 = mem
        .read_obj(GuestAddress(queue.avail_ring()))
        .map_err(|source| QueueError::Memory {
            queue: index,
            source,
        })?;
    Ok(u16::from_le(flags) & AVAIL_F_NO_INTERRUPT == 0)
}
