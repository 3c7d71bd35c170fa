//! The virtio-mmio transport (virtio 1.2 §4.2, version 2 only): the
//! register window of one device, driven by the guest's MMIO reads and
//! writes on the vCPU thread. Feature negotiation, queue setup and device
//! status live here; the device itself only sees `activate`, `reset` and
//! its queues.

use std::sync::Arc;

use crate::GuestMem;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, ByteValued, Bytes, GuestAddress};

use super::{status, Interrupt, QueueError, VirtioDevice, VIRTIO_F_VERSION_1};

/// [`kiln_boot::Setup`] as vm-memory plain data.
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct SetupBytes(kiln_boot::Setup);
// SAFETY: Setup is repr(C): one u64 and two u32, no padding.
unsafe impl ByteValued for SetupBytes {}

/// [`kiln_boot::SetupQueue`] as vm-memory plain data.
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct SetupQueueBytes(kiln_boot::SetupQueue);
// SAFETY: SetupQueue is repr(C): two u32 and three u64, no padding.
unsafe impl ByteValued for SetupQueueBytes {}

/// "virt" (virtio 1.2 §4.2.2).
const MAGIC: u32 = 0x7472_6976;
/// The modern virtio-mmio version.
const VERSION: u32 = 2;
/// Vendor ID the devices report: "KILN".
const VENDOR: u32 = u32::from_le_bytes(*b"KILN");

/// Register offsets (virtio 1.2 §4.2.2, table 4.1).
#[allow(missing_docs)]
pub mod reg {
    pub const MAGIC_VALUE: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const KILN_SETUP: u64 = kiln_boot::VIRTIO_MMIO_KILN_SETUP;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// A queue's configuration and ring positions, as a snapshot keeps them.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SavedQueue {
    max_size: u16,
    size: u16,
    ready: bool,
    next_avail: u16,
    next_used: u16,
    event_idx: bool,
    desc_table: u64,
    avail_ring: u64,
    used_ring: u64,
}

impl SavedQueue {
    fn of(q: &Queue) -> Self {
        let s = q.state();
        Self {
            max_size: s.max_size,
            size: s.size,
            ready: s.ready,
            next_avail: s.next_avail,
            next_used: s.next_used,
            event_idx: s.event_idx_enabled,
            desc_table: s.desc_table,
            avail_ring: s.avail_ring,
            used_ring: s.used_ring,
        }
    }

    fn queue(&self) -> Result<Queue, QueueError> {
        let bad = |e: virtio_queue::Error| {
            QueueError::Host(std::io::Error::other(format!(
                "the snapshot's queue is unusable: {e}"
            )))
        };
        Queue::try_from(virtio_queue::QueueState {
            max_size: self.max_size,
            next_avail: self.next_avail,
            next_used: self.next_used,
            event_idx_enabled: self.event_idx,
            size: self.size,
            ready: self.ready,
            desc_table: self.desc_table,
            avail_ring: self.avail_ring,
            used_ring: self.used_ring,
        })
        .map_err(bad)
    }
}

/// A transport's registers and its device's queues, as a snapshot keeps
/// them.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SavedTransport {
    /// The device's virtio type (checked on restore).
    pub device_type: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    status: u32,
    config_generation: u32,
    active: bool,
    interrupt_status: u32,
    queues: Vec<SavedQueue>,
}

/// One device's register window.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMem,
    interrupt: Arc<Interrupt>,
    queues: Vec<Queue>,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    status: u32,
    config_generation: u32,
    /// The device is running (DRIVER_OK and activated).
    active: bool,
    /// Guest faults seen (each marks the device DEVICE_NEEDS_RESET).
    pub faults: u64,
    /// Queue notifications (kicks) handled.
    pub kicks: u64,
}

impl MmioTransport {
    /// A transport for `device` over guest memory `mem`, interrupting
    /// through `interrupt`.
    pub fn new(device: Box<dyn VirtioDevice>, mem: GuestMem, interrupt: Arc<Interrupt>) -> Self {
        let queues = fresh_queues(device.as_ref());
        Self {
            device,
            mem,
            interrupt,
            queues,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            status: 0,
            config_generation: 0,
            active: false,
            faults: 0,
            kicks: 0,
        }
    }

    /// The device behind the window.
    pub fn device(&self) -> &dyn VirtioDevice {
        self.device.as_ref()
    }

    /// The device behind the window, to change.
    pub fn device_mut(&mut self) -> &mut dyn VirtioDevice {
        self.device.as_mut()
    }

    /// The device's interrupt.
    pub fn interrupt(&self) -> &Arc<Interrupt> {
        &self.interrupt
    }

    /// How many queues it has.
    pub fn queue_count(&self) -> usize {
        self.device.queue_max_sizes().len()
    }

    /// Whether the device is running.
    pub fn is_active(&self) -> bool {
        self.active && self.status & status::DEVICE_NEEDS_RESET == 0
    }

    /// The transport's and its device's state for a snapshot; `None` when
    /// the running device cannot be saved.
    pub fn save(&self) -> Option<SavedTransport> {
        let queues = if self.active {
            self.device.snapshot_queues()?
        } else {
            &self.queues
        };
        Some(SavedTransport {
            device_type: self.device.device_type(),
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            driver_features: self.driver_features,
            queue_sel: self.queue_sel,
            status: self.status,
            config_generation: self.config_generation,
            active: self.active,
            interrupt_status: self.interrupt.status(),
            queues: queues.iter().map(SavedQueue::of).collect(),
        })
    }

    /// Puts a snapshot's state back (the device is fresh, of the same
    /// type): a device that ran starts again on the saved queues.
    ///
    /// # Errors
    /// When the saved state does not fit the device, or it cannot start.
    pub fn restore(&mut self, saved: &SavedTransport) -> Result<(), QueueError> {
        let unfit = |why: &str| {
            QueueError::Host(std::io::Error::other(format!(
                "virtio {}: the snapshot's state does not fit: {why}",
                self.device.name()
            )))
        };
        if saved.device_type != self.device.device_type() {
            return Err(unfit("another device type"));
        }
        if saved.queues.len() != self.queue_count() {
            return Err(unfit("another number of queues"));
        }
        let queues = saved
            .queues
            .iter()
            .map(SavedQueue::queue)
            .collect::<Result<Vec<_>, _>>()?;
        self.device_features_sel = saved.device_features_sel;
        self.driver_features_sel = saved.driver_features_sel;
        self.driver_features = saved.driver_features;
        self.queue_sel = saved.queue_sel;
        self.status = saved.status;
        self.config_generation = saved.config_generation;
        self.interrupt.set_status(saved.interrupt_status);
        self.queues = queues;
        if saved.active {
            let queues = std::mem::take(&mut self.queues);
            self.device.activate(
                self.mem.clone(),
                queues,
                self.interrupt.clone(),
                self.driver_features,
            )?;
            self.active = true;
        }
        Ok(())
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// A guest read of `data.len()` bytes at `offset` in the window.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            self.device.read_config(offset - reg::CONFIG, data);
            return;
        }
        let value = match offset {
            reg::MAGIC_VALUE => MAGIC,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => self.device.device_type(),
            reg::VENDOR_ID => VENDOR,
            reg::DEVICE_FEATURES => {
                let features = self.device.features() | VIRTIO_F_VERSION_1;
                match self.device_features_sel {
                    0 => features as u32,
                    1 => (features >> 32) as u32,
                    _ => 0,
                }
            }
            reg::QUEUE_NUM_MAX => self
                .queues
                .get(self.queue_sel as usize)
                .map_or(0, |q| u32::from(q.max_size())),
            reg::QUEUE_READY => self
                .queues
                .get(self.queue_sel as usize)
                .map_or(0, |q| u32::from(q.ready())),
            reg::INTERRUPT_STATUS => self.interrupt.status(),
            reg::STATUS => self.status,
            reg::CONFIG_GENERATION => self.config_generation,
            _ => 0,
        };
        write_le(data, value);
    }

    /// A guest write of `data` at `offset` in the window.
    ///
    /// # Errors
    /// A host failure while signalling the guest.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), QueueError> {
        if offset >= reg::CONFIG {
            self.device.write_config(offset - reg::CONFIG, data);
            self.config_generation = self.config_generation.wrapping_add(1);
            return Ok(());
        }
        let value = read_le(data);
        // Queue layout may change only while the queue is off and the
        // driver has not finished (virtio 1.2 §4.2.2.2).
        let setup = self.status & status::DRIVER_OK == 0;
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::DRIVER_FEATURES if self.status & status::FEATURES_OK == 0 => {
                match self.driver_features_sel {
                    0 => {
                        self.driver_features =
                            (self.driver_features & !0xffff_ffff) | u64::from(value)
                    }
                    1 => {
                        self.driver_features =
                            (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
                    }
                    _ => {}
                }
            }
            reg::QUEUE_SEL => self.queue_sel = value,
            reg::QUEUE_NUM if setup => {
                if let Some(q) = self.selected_queue() {
                    q.set_size(value as u16);
                }
            }
            reg::QUEUE_READY if setup => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(value == 1);
                }
            }
            reg::QUEUE_DESC_LOW | reg::QUEUE_DESC_HIGH if setup => {
                let high = offset == reg::QUEUE_DESC_HIGH;
                if let Some(q) = self.selected_queue() {
                    q.set_desc_table_address((!high).then_some(value), high.then_some(value));
                }
            }
            reg::QUEUE_DRIVER_LOW | reg::QUEUE_DRIVER_HIGH if setup => {
                let high = offset == reg::QUEUE_DRIVER_HIGH;
                if let Some(q) = self.selected_queue() {
                    q.set_avail_ring_address((!high).then_some(value), high.then_some(value));
                }
            }
            reg::QUEUE_DEVICE_LOW | reg::QUEUE_DEVICE_HIGH if setup => {
                let high = offset == reg::QUEUE_DEVICE_HIGH;
                if let Some(q) = self.selected_queue() {
                    q.set_used_ring_address((!high).then_some(value), high.then_some(value));
                }
            }
            reg::QUEUE_NOTIFY => {
                // Normally an ioeventfd catches these before they exit; a
                // notify that reaches here (no eventfd matched) is handled
                // on the spot.
                self.kick(value as usize)?;
            }
            reg::INTERRUPT_ACK => self.interrupt.ack(value),
            reg::STATUS => self.write_status(value)?,
            reg::KILN_SETUP if self.status == 0 => self.setup_from_block(value)?,
            _ => {}
        }
        Ok(())
    }

    fn write_status(&mut self, value: u32) -> Result<(), QueueError> {
        if value == 0 {
            self.reset();
            return Ok(());
        }
        let mut new = value;
        if new & status::FEATURES_OK != 0 && self.status & status::FEATURES_OK == 0 {
            let offered = self.device.features() | VIRTIO_F_VERSION_1;
            let acceptable = self.driver_features & !offered == 0
                && self.driver_features & VIRTIO_F_VERSION_1 != 0;
            if !acceptable {
                // The driver reads FEATURES_OK back as clear (§3.1.1).
                new &= !status::FEATURES_OK;
            }
        }
        // DEVICE_NEEDS_RESET is the device's to set, not the driver's.
        self.status =
            (new & !status::DEVICE_NEEDS_RESET) | (self.status & status::DEVICE_NEEDS_RESET);
        if self.status & status::DRIVER_OK != 0 && !self.active {
            self.activate()?;
        }
        Ok(())
    }

    /// kiln's one-write setup (`kiln_boot::VIRTIO_MMIO_KILN_SETUP`): the
    /// features and queues come from the block at guest page `page`, then
    /// the device starts as after DRIVER_OK.
    fn setup_from_block(&mut self, page: u32) -> Result<(), QueueError> {
        let at = GuestAddress(u64::from(page) << 12);
        let header: SetupBytes = match self.mem.read_obj(at) {
            Ok(h) => h,
            Err(_) => return self.broken("the setup block lies outside guest memory"),
        };
        let header = header.0;
        let offered = self.device.features() | VIRTIO_F_VERSION_1;
        if header.driver_features & !offered != 0
            || header.driver_features & VIRTIO_F_VERSION_1 == 0
        {
            return self.broken("the setup block asks for features the device does not offer");
        }
        if header.queue_count as usize != self.queues.len() {
            return self.broken("the setup block describes the wrong number of queues");
        }
        for i in 0..self.queues.len() {
            let entry = at.checked_add(16 + 32 * i as u64);
            let q = match entry.map(|e| self.mem.read_obj::<SetupQueueBytes>(e)) {
                Some(Ok(q)) => q.0,
                _ => return self.broken("the setup block lies outside guest memory"),
            };
            let queue = &mut self.queues[i];
            if q.size == 0 || q.size > u32::from(queue.max_size()) || !q.size.is_power_of_two() {
                return self.broken("the setup block gives a queue an invalid size");
            }
            queue.set_size(q.size as u16);
            let halves = |v: u64| (Some(v as u32), Some((v >> 32) as u32));
            let (lo, hi) = halves(q.desc);
            queue.set_desc_table_address(lo, hi);
            let (lo, hi) = halves(q.driver);
            queue.set_avail_ring_address(lo, hi);
            let (lo, hi) = halves(q.device);
            queue.set_used_ring_address(lo, hi);
            queue.set_ready(true);
        }
        self.driver_features = header.driver_features;
        self.status =
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;
        self.activate()
    }

    fn activate(&mut self) -> Result<(), QueueError> {
        let valid = self.status & status::FEATURES_OK != 0
            && self
                .queues
                .iter()
                .all(|q| q.ready() && q.is_valid(&self.mem));
        if !valid {
            return self.broken("activated with a queue that is not ready or not valid");
        }
        // The device takes the queues over; the transport gets fresh ones
        // at the next reset.
        let queues = std::mem::take(&mut self.queues);
        match self.device.activate(
            self.mem.clone(),
            queues,
            self.interrupt.clone(),
            self.driver_features,
        ) {
            Ok(()) => {
                self.active = true;
                Ok(())
            }
            Err(e) if e.is_guest_fault() => self.broken(&e.to_string()),
            Err(e) => Err(e),
        }
    }

    fn reset(&mut self) {
        self.device.reset();
        self.queues = fresh_queues(self.device.as_ref());
        self.status = 0;
        self.driver_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        self.active = false;
        self.interrupt.ack(u32::MAX);
    }

    /// Marks the device DEVICE_NEEDS_RESET and tells the guest (once).
    fn broken(&mut self, why: &str) -> Result<(), QueueError> {
        self.faults += 1;
        if self.status & status::DEVICE_NEEDS_RESET == 0 {
            eprintln!(
                "kiln-vmm: virtio {}: {why}; the device needs a reset",
                self.device.name()
            );
            self.status |= status::DEVICE_NEEDS_RESET;
            self.interrupt.config_change()?;
        }
        self.active = false;
        Ok(())
    }

    /// The guest kicked queue `index` (through its ioeventfd or a plain
    /// write).
    ///
    /// # Errors
    /// A host failure (the VM then stops); guest faults break the device.
    pub fn kick(&mut self, index: usize) -> Result<(), QueueError> {
        self.kicks += 1;
        self.process(index)
    }

    /// Runs queue `index`'s processing without counting a kick (draining
    /// output at the end of the VM).
    ///
    /// # Errors
    /// As for [`MmioTransport::kick`].
    pub fn process(&mut self, index: usize) -> Result<(), QueueError> {
        if !self.is_active() || index >= self.queue_count() {
            return Ok(());
        }
        match self.device.process_queue(index) {
            Err(e) if e.is_guest_fault() => self.broken(&e.to_string()),
            other => other,
        }
    }

    /// Whether the device looks at a queue on the poll timer rather than
    /// on kicks ([`VirtioDevice::polling`]).
    pub fn polling(&self) -> bool {
        self.is_active() && self.device.polling()
    }

    /// The devices thread's poll timer fired ([`VirtioDevice::poll`]).
    ///
    /// # Errors
    /// As for [`MmioTransport::kick`].
    pub fn poll(&mut self) -> Result<(), QueueError> {
        if !self.is_active() {
            return Ok(());
        }
        match self.device.poll() {
            Err(e) if e.is_guest_fault() => self.broken(&e.to_string()),
            other => other,
        }
    }

    /// A backend descriptor of the device is ready.
    ///
    /// # Errors
    /// As for [`MmioTransport::kick`].
    pub fn backend_ready(&mut self, fd: std::os::fd::RawFd, events: u32) -> Result<(), QueueError> {
        if !self.is_active() {
            return Ok(());
        }
        match self.device.process_backend(fd, events) {
            Err(e) if e.is_guest_fault() => self.broken(&e.to_string()),
            other => other,
        }
    }

    /// Guest-physical address of the QueueNotify register of the window at
    /// `base` (what the ioeventfds watch).
    pub fn notify_address(base: u64) -> GuestAddress {
        GuestAddress(base + reg::QUEUE_NOTIFY)
    }
}

/// New, unconfigured queues for `device`. A size of 0 or above 32768 is
/// refused by virtio-queue; kiln's devices use powers of two up to 256.
fn fresh_queues(device: &dyn VirtioDevice) -> Vec<Queue> {
    device
        .queue_max_sizes()
        .iter()
        .filter_map(|&max| Queue::new(max).ok())
        .collect()
}

/// Writes `value` little-endian into `data` (1, 2, 4 or 8 bytes wide; a
/// wider read gets zeros above).
fn write_le(data: &mut [u8], value: u32) {
    let bytes = u64::from(value).to_le_bytes();
    let n = data.len().min(8);
    data[..n].copy_from_slice(&bytes[..n]);
}

/// The little-endian value of a 1- to 4-byte write.
fn read_le(data: &[u8]) -> u32 {
    let mut bytes = [0u8; 4];
    let n = data.len().min(4);
    bytes[..n].copy_from_slice(&data[..n]);
    u32::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::rng::Rng;
    use crate::devices::virtio::test_utils::{self, GuestQueue};

    fn write32(t: &mut MmioTransport, offset: u64, value: u32) {
        t.write(offset, &value.to_le_bytes()).unwrap();
    }

    fn read32(t: &MmioTransport, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn identifies_itself_as_a_modern_device() {
        let mem = test_utils::memory();
        let (t, _) = test_utils::transport(Box::new(Rng::new()), &mem);
        assert_eq!(read32(&t, reg::MAGIC_VALUE), MAGIC);
        assert_eq!(read32(&t, reg::VERSION), 2);
        assert_eq!(read32(&t, reg::DEVICE_ID), kiln_boot::virtio_id::RNG);
    }

    #[test]
    fn register_by_register_setup_starts_the_device() {
        let mem = test_utils::memory();
        let (mut t, _) = test_utils::transport(Box::new(Rng::new()), &mem);
        let q = GuestQueue::new(0x10000, 16);
        write32(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        write32(&mut t, reg::DEVICE_FEATURES_SEL, 1);
        assert_eq!(read32(&t, reg::DEVICE_FEATURES), 1, "VERSION_1 is offered");
        write32(&mut t, reg::DRIVER_FEATURES_SEL, 1);
        write32(&mut t, reg::DRIVER_FEATURES, 1);
        write32(
            &mut t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        assert_ne!(test_utils::status(&t) & status::FEATURES_OK, 0);
        write32(&mut t, reg::QUEUE_SEL, 0);
        assert_eq!(read32(&t, reg::QUEUE_NUM_MAX), 16);
        write32(&mut t, reg::QUEUE_NUM, 16);
        write32(&mut t, reg::QUEUE_DESC_LOW, q.desc as u32);
        write32(&mut t, reg::QUEUE_DRIVER_LOW, q.avail as u32);
        write32(&mut t, reg::QUEUE_DEVICE_LOW, q.used as u32);
        write32(&mut t, reg::QUEUE_READY, 1);
        write32(
            &mut t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        );
        assert!(t.is_active());
    }

    #[test]
    fn refuses_features_it_does_not_offer() {
        let mem = test_utils::memory();
        let (mut t, _) = test_utils::transport(Box::new(Rng::new()), &mem);
        write32(&mut t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        write32(&mut t, reg::DRIVER_FEATURES_SEL, 0);
        write32(&mut t, reg::DRIVER_FEATURES, 1 << 5);
        write32(
            &mut t,
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        assert_eq!(test_utils::status(&t) & status::FEATURES_OK, 0);
    }

    #[test]
    fn one_write_setup_starts_the_device() {
        let mem = test_utils::memory();
        let (mut t, _) = test_utils::transport(Box::new(Rng::new()), &mem);
        let q = GuestQueue::new(0x10000, 16);
        test_utils::kiln_setup(&mut t, &mem, 0x20000, VIRTIO_F_VERSION_1, &[&q]);
        assert!(t.is_active());
        assert_eq!(
            test_utils::status(&t),
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK
        );
    }

    #[test]
    fn a_bad_setup_block_needs_a_reset() {
        let mem = test_utils::memory();
        let q = GuestQueue::new(0x10000, 16);
        // A queue larger than the device allows.
        let (mut t, interrupt) = test_utils::transport(Box::new(Rng::new()), &mem);
        let mut big = GuestQueue::new(0x10000, 16);
        big.size = 1024;
        test_utils::kiln_setup(&mut t, &mem, 0x20000, VIRTIO_F_VERSION_1, &[&big]);
        assert!(!t.is_active());
        assert_ne!(test_utils::status(&t) & status::DEVICE_NEEDS_RESET, 0);
        assert_ne!(
            interrupt.status() & crate::devices::virtio::interrupt::CONFIG_CHANGE,
            0
        );
        // A block outside guest memory.
        let (mut t, _) = test_utils::transport(Box::new(Rng::new()), &mem);
        write32(&mut t, reg::KILN_SETUP, 0xffff_ffff);
        assert_ne!(test_utils::status(&t) & status::DEVICE_NEEDS_RESET, 0);
        // A reset (status 0) brings it back.
        write32(&mut t, reg::STATUS, 0);
        test_utils::kiln_setup(&mut t, &mem, 0x20000, VIRTIO_F_VERSION_1, &[&q]);
        assert!(t.is_active());
    }

    #[test]
    fn a_corrupt_available_ring_breaks_the_device_not_the_vmm() {
        let mem = test_utils::memory();
        let (mut t, _) = test_utils::transport(Box::new(Rng::new()), &mem);
        let mut q = GuestQueue::new(0x10000, 16);
        test_utils::kiln_setup(&mut t, &mem, 0x20000, VIRTIO_F_VERSION_1, &[&q]);
        // More chains announced than the queue holds.
        q.set_avail_idx(&mem, 1000);
        t.kick(0).unwrap();
        assert_ne!(test_utils::status(&t) & status::DEVICE_NEEDS_RESET, 0);
        assert_eq!(t.faults, 1);
        // Further kicks are ignored, not re-reported.
        t.kick(0).unwrap();
        assert_eq!(t.faults, 1);
    }

    #[test]
    fn bad_descriptors_break_the_device_not_the_vmm() {
        for (addr, len) in [(1u64 << 40, 16u32), (0xffff0, 0x100), (u64::MAX - 8, 64)] {
            let mem = test_utils::memory();
            let (mut t, _) = test_utils::transport(Box::new(Rng::new()), &mem);
            let mut q = GuestQueue::new(0x10000, 16);
            test_utils::kiln_setup(&mut t, &mem, 0x20000, VIRTIO_F_VERSION_1, &[&q]);
            q.add(&mem, &[(addr, len, true)]);
            t.kick(0).unwrap();
            assert_ne!(
                test_utils::status(&t) & status::DEVICE_NEEDS_RESET,
                0,
                "a buffer at {addr:#x}+{len:#x}"
            );
        }
        // A head index outside the descriptor table.
        let mem = test_utils::memory();
        let (mut t, _) = test_utils::transport(Box::new(Rng::new()), &mem);
        let mut q = GuestQueue::new(0x10000, 16);
        test_utils::kiln_setup(&mut t, &mem, 0x20000, VIRTIO_F_VERSION_1, &[&q]);
        q.publish(&mem, 999);
        t.kick(0).unwrap();
        assert_ne!(test_utils::status(&t) & status::DEVICE_NEEDS_RESET, 0);
    }
}
