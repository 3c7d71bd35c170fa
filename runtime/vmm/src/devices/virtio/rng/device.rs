//! The entropy device: each buffer the guest offers is filled from the
//! host's getrandom(2) (at most a page per buffer: a guest asking for
//! gigabytes gets a page at a time).

use std::sync::Arc;

use crate::GuestMem;
use kiln_boot::virtio_id;
use virtio_queue::Queue;

use super::{QUEUE_SIZE, REQ_QUEUE};
use crate::devices::virtio::device::{Active, Traffic};
use crate::devices::virtio::queue;
use crate::devices::virtio::{Interrupt, QueueError, VirtioDevice};

/// Most bytes given per buffer.
const MAX_PER_BUFFER: usize = 4096;

/// A virtio entropy device.
#[derive(Default)]
pub struct Rng {
    active: Option<Active>,
    traffic: Traffic,
}

impl Rng {
    /// A new device.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Fills `buf` from the host's getrandom.
fn host_random(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n = unsafe { libc::getrandom(buf[done..].as_mut_ptr().cast(), buf.len() - done, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        virtio_id::RNG
    }

    fn name(&self) -> &'static str {
        "rng"
    }

    fn queue_max_sizes(&self) -> &'static [u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        0
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
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
    }

    fn snapshot_queues(&self) -> Option<&[Queue]> {
        self.active.as_ref().map(|a| a.queues.as_slice())
    }

    fn process_queue(&mut self, index: usize) -> Result<(), QueueError> {
        let Some(a) = self.active.as_mut() else {
            return Ok(());
        };
        if index != REQ_QUEUE {
            return Ok(());
        }
        let mut used = false;
        while let Some(chain) = queue::pop(&mut a.queues[REQ_QUEUE], &a.mem, REQ_QUEUE)? {
            let mut bytes = vec![0u8; chain.writable_len().min(MAX_PER_BUFFER)];
            host_random(&mut bytes)?;
            let n = chain.write_all(&a.mem, REQ_QUEUE, &bytes)?;
            self.traffic.to_guest += n as u64;
            queue::complete(
                &mut a.queues[REQ_QUEUE],
                &a.mem,
                REQ_QUEUE,
                chain.head,
                n as u32,
            )?;
            used = true;
        }
        a.signal_used(REQ_QUEUE, used)?;
        Ok(())
    }

    fn traffic(&self) -> Traffic {
        self.traffic
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::test_utils::{self, GuestQueue};
    use crate::devices::virtio::VIRTIO_F_VERSION_1;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn fills_each_buffer_with_host_entropy() {
        let mem = test_utils::memory();
        let (mut t, interrupt) = test_utils::transport(Box::new(Rng::new()), &mem);
        let mut q = GuestQueue::new(0x10000, 16);
        test_utils::kiln_setup(&mut t, &mem, 0x20000, VIRTIO_F_VERSION_1, &[&q]);
        let a = q.add(&mem, &[(0x40000, 64, true)]);
        let b = q.add(&mem, &[(0x41000, 8192, true)]);
        t.kick(REQ_QUEUE).unwrap();
        assert_eq!(
            q.used(&mem),
            [(u32::from(a), 64), (u32::from(b), MAX_PER_BUFFER as u32)]
        );
        let mut first = [0u8; 64];
        mem.read_slice(&mut first, GuestAddress(0x40000)).unwrap();
        assert!(
            first.iter().any(|&x| x != 0),
            "64 random bytes are not all zero"
        );
        assert_eq!(
            interrupt.count.load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert_eq!(t.device().traffic().to_guest, 64 + 4096);
    }

    #[test]
    fn a_read_only_buffer_gets_nothing() {
        let mem = test_utils::memory();
        let (mut t, _) = test_utils::transport(Box::new(Rng::new()), &mem);
        let mut q = GuestQueue::new(0x10000, 16);
        test_utils::kiln_setup(&mut t, &mem, 0x20000, VIRTIO_F_VERSION_1, &[&q]);
        let head = q.add(&mem, &[(0x40000, 64, false)]);
        t.kick(REQ_QUEUE).unwrap();
        assert_eq!(q.used(&mem), [(u32::from(head), 0)]);
    }
}
