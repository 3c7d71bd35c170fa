//! What every virtio device implements, and what it is handed.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::GuestMem;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::interrupt;

/// A device's interrupt: the InterruptStatus bits the transport reports,
/// and the irqfd KVM turns into an MSI for the guest.
#[derive(Debug)]
pub struct Interrupt {
    irqfd: EventFd,
    status: AtomicU32,
    /// Interrupts signalled so far (`--stats`).
    pub count: AtomicU64,
}

impl Interrupt {
    /// An interrupt signalled through `irqfd`.
    pub fn new(irqfd: EventFd) -> Self {
        Self {
            irqfd,
            status: AtomicU32::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// The irqfd (for registering with KVM).
    pub fn irqfd(&self) -> &EventFd {
        &self.irqfd
    }

    /// Tells the guest that a queue has new used buffers.
    ///
    /// # Errors
    /// When the irqfd cannot be written (a host failure).
    pub fn used_buffer(&self) -> std::io::Result<()> {
        self.raise(interrupt::USED_BUFFER)
    }

    /// Tells the guest that the configuration (or status) changed.
    ///
    /// # Errors
    /// When the irqfd cannot be written.
    pub fn config_change(&self) -> std::io::Result<()> {
        self.raise(interrupt::CONFIG_CHANGE)
    }

    fn raise(&self, bit: u32) -> std::io::Result<()> {
        self.status.fetch_or(bit, Ordering::SeqCst);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.irqfd.write(1)
    }

    /// The InterruptStatus register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// Sets the InterruptStatus register (a restored snapshot's).
    pub fn set_status(&self, bits: u32) {
        self.status.store(bits, Ordering::SeqCst);
    }

    /// InterruptACK: clears the acknowledged bits.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }
}

/// What a device works with once the driver set DRIVER_OK: guest memory,
/// its queues and its interrupt.
pub struct Active {
    /// Guest memory, for every descriptor access.
    pub mem: GuestMem,
    /// The queues, in the device's order.
    pub queues: Vec<Queue>,
    /// The device's interrupt.
    pub interrupt: Arc<Interrupt>,
}

impl Active {
    /// Interrupts the guest for queue `index`'s new used buffers, when
    /// `used` and the guest wants to hear of them.
    ///
    /// # Errors
    /// When the rings lie outside guest memory, or the irqfd fails.
    pub fn signal_used(&mut self, index: usize, used: bool) -> Result<(), QueueError> {
        if used && super::queue::needs_interrupt(&mut self.queues[index], &self.mem, index)? {
            self.interrupt.used_buffer()?;
        }
        Ok(())
    }

    /// Asks (`on`) or stops asking the guest to kick queue `index` when it
    /// adds buffers. Returns whether buffers the device has not taken yet
    /// wait in the queue (checked only when `on`: offered before the guest
    /// saw the request, they come with no kick).
    ///
    /// # Errors
    /// When the rings lie outside guest memory.
    pub fn ask_for_kicks(&mut self, index: usize, on: bool) -> Result<bool, QueueError> {
        let q = &mut self.queues[index];
        if on {
            q.enable_notification(&self.mem)
        } else {
            q.disable_notification(&self.mem).map(|()| false)
        }
        .map_err(queue_error(index))
    }
}

/// The [`QueueError`] for virtio-queue's complaint about queue `queue`.
fn queue_error(queue: usize) -> impl Fn(virtio_queue::Error) -> QueueError {
    move |source| QueueError::Queue { queue, source }
}

/// Why a device stopped processing a queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue's rings are inconsistent (virtio-queue refused them).
    #[error("queue {queue}: {source}")]
    Queue {
        /// The queue index.
        queue: usize,
        /// What virtio-queue found.
        #[source]
        source: virtio_queue::Error,
    },
    /// A descriptor names memory the guest does not have.
    #[error("queue {queue}: a descriptor names memory outside the guest: {source}")]
    Memory {
        /// The queue index.
        queue: usize,
        /// What vm-memory said.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// A descriptor chain does not have the shape the device needs.
    #[error("queue {queue}: {reason}")]
    Chain {
        /// The queue index.
        queue: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The host side failed (output, input, interrupt): the VM stops.
    #[error("{0}")]
    Host(#[source] std::io::Error),
}

impl QueueError {
    /// Whether the guest caused it (the device is then marked
    /// DEVICE_NEEDS_RESET and the VM goes on) rather than the host.
    pub fn is_guest_fault(&self) -> bool {
        !matches!(self, QueueError::Host(_))
    }
}

impl From<std::io::Error> for QueueError {
    fn from(e: std::io::Error) -> Self {
        QueueError::Host(e)
    }
}

/// Bytes a device moved, for `--stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes from the guest to the host.
    pub from_guest: u64,
    /// Bytes from the host to the guest.
    pub to_guest: u64,
}

/// Copies the bytes of a configuration space `config` at `offset` into
/// `data`; bytes past its end read as zero (virtio 1.2 §4.2.2: a driver may
/// read any width at any offset of the window).
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| config.get(o.checked_add(i)?))
            .copied()
            .unwrap_or(0);
    }
}

/// Disk bytes for a standby: (offset, bytes) pieces.
pub type WrittenPieces = Vec<(u64, Vec<u8>)>;

/// A virtio device: its identity and configuration space, and the queue
/// processing the devices thread runs when the guest kicks a queue or a
/// backend descriptor becomes ready.
pub trait VirtioDevice: Send {
    /// Its virtio device type (`kiln_boot::virtio_id`).
    fn device_type(&self) -> u32;

    /// A short name for messages and `--stats`.
    fn name(&self) -> &'static str;

    /// The largest size of each of its queues.
    fn queue_max_sizes(&self) -> &'static [u16];

    /// The feature bits it offers (VIRTIO_F_VERSION_1 included).
    fn features(&self) -> u64;

    /// Reads its configuration space at `offset` (bytes past the end read
    /// as zero).
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let _ = offset;
        data.fill(0);
    }

    /// Writes its configuration space (ignored unless the device has
    /// writable fields).
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let _ = (offset, data);
    }

    /// Offered the ioeventfds KVM signals for each queue's kicks: a device
    /// served outside kiln-vmm (vhost-user) keeps copies for its backend
    /// and returns true, so the devices thread leaves them alone.
    ///
    /// # Errors
    /// When the eventfds cannot be copied.
    fn use_queue_events(&mut self, events: &[EventFd]) -> std::io::Result<bool> {
        let _ = events;
        Ok(false)
    }

    /// The driver set DRIVER_OK: the device starts using `queues`.
    ///
    /// # Errors
    /// When the queues are unusable.
    fn activate(
        &mut self,
        mem: GuestMem,
        queues: Vec<Queue>,
        interrupt: Arc<Interrupt>,
        features: u64,
    ) -> Result<(), QueueError>;

    /// The driver reset the device: it drops its queues.
    fn reset(&mut self);

    /// The VM was resumed from a snapshot with `ipv4` as the guest's
    /// address: a NIC tells its new backend the guest's MAC (a gratuitous
    /// ARP, as a migrated VM announces itself), since the guest sends
    /// nothing by itself until it has something to say.
    ///
    /// # Errors
    /// When the backend refuses the frame.
    fn announce(&mut self, ipv4: std::net::Ipv4Addr) -> std::io::Result<()> {
        let _ = ipv4;
        Ok(())
    }

    /// For a standby's checkpoint (`crate::ha`): a disk's bytes written
    /// since the previous call, as (offset, bytes) — with `everything`, all
    /// of its data (and from then on it notes what is written). `None`:
    /// not a disk.
    ///
    /// # Errors
    /// When the disk file cannot be read.
    fn replicate_writes(&mut self, everything: bool) -> Option<std::io::Result<WrittenPieces>> {
        let _ = everything;
        None
    }

    /// Its queues, while it runs, for a snapshot: `None` when the device
    /// keeps state a snapshot cannot carry yet (it then refuses to be
    /// saved). Devices that keep nothing but their queues return
    /// [`Active::queues`].
    fn snapshot_queues(&self) -> Option<&[Queue]> {
        None
    }

    /// The guest kicked queue `index`.
    ///
    /// # Errors
    /// [`QueueError`]: a guest fault marks the device broken, a host one
    /// stops the VM.
    fn process_queue(&mut self, index: usize) -> Result<(), QueueError>;

    /// Whether the device asked the guest not to kick one of its queues
    /// and looks at it on the devices thread's poll timer instead
    /// ([`VirtioDevice::poll`]): a console does while output keeps coming,
    /// since each kick is an emulated write the guest waits for.
    fn polling(&self) -> bool {
        false
    }

    /// The poll timer fired while [`VirtioDevice::polling`]: look at the
    /// polled queues (and ask for kicks again once they stay quiet).
    ///
    /// # Errors
    /// As for [`VirtioDevice::process_queue`].
    fn poll(&mut self) -> Result<(), QueueError> {
        Ok(())
    }

    /// Host descriptors whose readiness the devices thread reports to
    /// [`VirtioDevice::process_backend`] (standard input, a tap, …).
    fn backend_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }

    /// The epoll events the devices thread should wait for on backend `fd`
    /// now (level-triggered: a device that cannot take input — no guest
    /// buffers — leaves EPOLLIN out until the guest adds some; one with
    /// output held back adds EPOLLOUT). Asked again after every event the
    /// device handles.
    fn backend_interest(&self, fd: RawFd) -> u32 {
        let _ = fd;
        libc::EPOLLIN as u32
    }

    /// `fd` (one of [`VirtioDevice::backend_fds`]) is ready (`events` as
    /// epoll reports them).
    ///
    /// # Errors
    /// As for [`VirtioDevice::process_queue`].
    fn process_backend(&mut self, fd: RawFd, events: u32) -> Result<(), QueueError> {
        let _ = (fd, events);
        Ok(())
    }

    /// Bytes moved so far.
    fn traffic(&self) -> Traffic {
        Traffic::default()
    }

    /// When the guest's first output reached the host (consoles).
    fn first_output(&self) -> Option<std::time::Instant> {
        None
    }
}
