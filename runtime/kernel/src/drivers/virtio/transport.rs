//! The virtio-mmio transport for devices the boot info describes, with
//! kiln's one-write setup (`kiln_boot::VIRTIO_MMIO_KILN_SETUP`).
//!
//! Every register access is an exit to the VMM — tens of microseconds on
//! some PVM hosts, so a standard register-by-register setup of one console
//! cost milliseconds of boot. The boot info already says what the device
//! offers (features, queue sizes); this transport keeps the setup state
//! itself and, when the driver sets DRIVER_OK, hands the VMM the whole
//! configuration in one block and one register write. From then on only
//! queue notifications (ioeventfds, which do not return to the VMM), the
//! interrupt status of terminals and configuration reads touch the
//! registers. It implements virtio-drivers' `Transport`, so the crate's
//! queues work over it unchanged.

use kiln_boot::{Setup, SetupQueue, VirtioDevice, VIRTIO_MMIO_KILN_SETUP};
use virtio_drivers::transport::mmio::MmioTransport;
use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{Error, PhysAddr};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::arch::phys_to_virt;
use crate::mm::frame;

/// Register offsets used after setup (virtio 1.2 §4.2.2).
const QUEUE_NOTIFY: usize = 0x050;
const INTERRUPT_STATUS: usize = 0x060;
const INTERRUPT_ACK: usize = 0x064;
const STATUS: usize = 0x070;
const CONFIG_GENERATION: usize = 0x0fc;
const CONFIG: usize = 0x100;
/// Most queues a kiln device has.
const MAX_QUEUES: usize = 4;

/// A device's register window, set up in one write.
pub struct KilnTransport {
    /// Direct-map address of the window.
    window: usize,
    window_size: usize,
    device_type: DeviceType,
    offered: u64,
    queue_max: u32,
    driver_features: u64,
    status: DeviceStatus,
    queues: [Option<SetupQueue>; MAX_QUEUES],
    /// The frame the setup block is written to.
    setup_page: u64,
    /// The device was started (a later reset must reach it).
    started: bool,
}

impl KilnTransport {
    /// The transport for `d` (its window already mapped at its direct-map
    /// address); `None` for a device type virtio-drivers does not know or
    /// when no frame is free for the setup block.
    pub fn new(d: &VirtioDevice) -> Option<Self> {
        Some(Self {
            window: phys_to_virt(d.base) as usize,
            window_size: d.size as usize,
            device_type: match d.device_type {
                // virtio-drivers 0.13 has no file-system type; nothing of
                // it looks at the type of a device kiln drives itself.
                kiln_boot::virtio_id::FS => DeviceType::_9P,
                other => DeviceType::try_from(other).ok()?,
            },
            offered: d.features,
            queue_max: d.queue_max,
            driver_features: 0,
            status: DeviceStatus::empty(),
            queues: [None; MAX_QUEUES],
            setup_page: frame::alloc_zeroed()?,
            started: false,
        })
    }

    fn read32(&self, offset: usize) -> u32 {
        // SAFETY: `offset` is a 4-byte-aligned register inside the window,
        // which is mapped (uncached) for the kernel's lifetime; a register
        // read has no effect on Rust-visible memory.
        unsafe { core::ptr::read_volatile((self.window + offset) as *const u32) }
    }

    fn write32(&mut self, offset: usize, value: u32) {
        // SAFETY: as in `read32`; the VMM owns what a register write does.
        unsafe { core::ptr::write_volatile((self.window + offset) as *mut u32, value) }
    }

    /// Writes the setup block and starts the device.
    fn start(&mut self) {
        let count = self.queues.iter().filter(|q| q.is_some()).count();
        let header = Setup {
            driver_features: self.driver_features,
            queue_count: count as u32,
            reserved: 0,
        };
        let block = phys_to_virt(self.setup_page);
        // SAFETY: `setup_page` is this transport's own frame (direct map),
        // large enough for the header and MAX_QUEUES entries; the device
        // reads it only after the register write below.
        unsafe {
            core::ptr::write_unaligned(block.cast::<Setup>(), header);
            for (i, q) in self.queues.iter().flatten().enumerate() {
                core::ptr::write_unaligned(block.add(16 + 32 * i).cast::<SetupQueue>(), *q);
            }
        }
        self.write32(
            VIRTIO_MMIO_KILN_SETUP as usize,
            (self.setup_page >> 12) as u32,
        );
        self.started = true;
    }
}

impl Transport for KilnTransport {
    fn device_type(&self) -> DeviceType {
        self.device_type
    }

    fn read_device_features(&mut self) -> u64 {
        self.offered
    }

    fn write_driver_features(&mut self, driver_features: u64) {
        self.driver_features = driver_features;
    }

    fn max_queue_size(&mut self, _queue: u16) -> u32 {
        self.queue_max
    }

    fn notify(&mut self, queue: u16) {
        self.write32(QUEUE_NOTIFY, u32::from(queue));
    }

    fn get_status(&self) -> DeviceStatus {
        self.status
    }

    fn set_status(&mut self, status: DeviceStatus) {
        if status.is_empty() && self.started {
            self.write32(STATUS, 0);
            self.started = false;
        }
        let starting = status.contains(DeviceStatus::DRIVER_OK)
            && !self.status.contains(DeviceStatus::DRIVER_OK);
        self.status = status;
        if starting {
            self.start();
        }
    }

    fn set_guest_page_size(&mut self, _guest_page_size: u32) {}

    fn requires_legacy_layout(&self) -> bool {
        false
    }

    fn queue_set(
        &mut self,
        queue: u16,
        size: u32,
        descriptors: PhysAddr,
        driver_area: PhysAddr,
        device_area: PhysAddr,
    ) {
        if let Some(slot) = self.queues.get_mut(usize::from(queue)) {
            *slot = Some(SetupQueue {
                size,
                reserved: 0,
                desc: descriptors,
                driver: driver_area,
                device: device_area,
            });
        }
    }

    fn queue_unset(&mut self, queue: u16) {
        if let Some(slot) = self.queues.get_mut(usize::from(queue)) {
            *slot = None;
        }
    }

    fn queue_used(&mut self, queue: u16) -> bool {
        self.queues
            .get(usize::from(queue))
            .is_some_and(Option::is_some)
    }

    fn ack_interrupt(&mut self) -> InterruptStatus {
        let status = self.read32(INTERRUPT_STATUS);
        if status != 0 {
            self.write32(INTERRUPT_ACK, status);
        }
        InterruptStatus::from_bits_retain(status)
    }

    fn read_config_generation(&self) -> u32 {
        self.read32(CONFIG_GENERATION)
    }

    fn read_config_space<T: FromBytes + IntoBytes>(&self, offset: usize) -> Result<T, Error> {
        let size = core::mem::size_of::<T>();
        if CONFIG + offset + size > self.window_size || !offset.is_multiple_of(size.clamp(1, 4)) {
            return Err(Error::ConfigSpaceTooSmall);
        }
        let mut bytes = [0u8; 16];
        let bytes = bytes.get_mut(..size).ok_or(Error::ConfigSpaceTooSmall)?;
        if size == 4 && offset.is_multiple_of(4) {
            // One access (one exit) for a whole word.
            bytes.copy_from_slice(&self.read32(CONFIG + offset).to_le_bytes());
        } else {
            for (i, b) in bytes.iter_mut().enumerate() {
                // SAFETY: the byte lies inside the window's configuration
                // space (checked above); reading it has no Rust-visible
                // effect.
                *b = unsafe {
                    core::ptr::read_volatile((self.window + CONFIG + offset + i) as *const u8)
                };
            }
        }
        T::read_from_bytes(bytes).map_err(|_| Error::ConfigSpaceTooSmall)
    }

    fn write_config_space<T: IntoBytes + Immutable>(
        &mut self,
        offset: usize,
        value: T,
    ) -> Result<(), Error> {
        let bytes = value.as_bytes();
        if CONFIG + offset + bytes.len() > self.window_size {
            return Err(Error::ConfigSpaceTooSmall);
        }
        for (i, b) in bytes.iter().enumerate() {
            // SAFETY: as in `read_config_space`, for a write the VMM handles.
            unsafe {
                core::ptr::write_volatile((self.window + CONFIG + offset + i) as *mut u8, *b)
            };
        }
        Ok(())
    }
}

/// A device's transport: kiln's (devices kiln-vmm lists in the boot info,
/// started with one write) or the standard virtio-mmio one
/// (`virtio_mmio.device=` devices, e.g. under QEMU), register by register.
pub enum DeviceTransport {
    /// A kiln-vmm device.
    Kiln(KilnTransport),
    /// A standard virtio-mmio device.
    Standard(MmioTransport<'static>),
}

/// Calls `$method` on whichever transport `$t` is.
macro_rules! either {
    ($t:expr, $method:ident($($arg:expr),*)) => {
        match $t {
            DeviceTransport::Kiln(t) => t.$method($($arg),*),
            DeviceTransport::Standard(t) => t.$method($($arg),*),
        }
    };
}

impl Transport for DeviceTransport {
    fn device_type(&self) -> DeviceType {
        either!(self, device_type())
    }

    fn read_device_features(&mut self) -> u64 {
        either!(self, read_device_features())
    }

    fn write_driver_features(&mut self, driver_features: u64) {
        either!(self, write_driver_features(driver_features))
    }

    fn max_queue_size(&mut self, queue: u16) -> u32 {
        either!(self, max_queue_size(queue))
    }

    fn notify(&mut self, queue: u16) {
        either!(self, notify(queue))
    }

    fn get_status(&self) -> DeviceStatus {
        either!(self, get_status())
    }

    fn set_status(&mut self, status: DeviceStatus) {
        either!(self, set_status(status))
    }

    fn set_guest_page_size(&mut self, guest_page_size: u32) {
        either!(self, set_guest_page_size(guest_page_size))
    }

    fn requires_legacy_layout(&self) -> bool {
        either!(self, requires_legacy_layout())
    }

    fn queue_set(
        &mut self,
        queue: u16,
        size: u32,
        descriptors: PhysAddr,
        driver_area: PhysAddr,
        device_area: PhysAddr,
    ) {
        either!(
            self,
            queue_set(queue, size, descriptors, driver_area, device_area)
        )
    }

    fn queue_unset(&mut self, queue: u16) {
        either!(self, queue_unset(queue))
    }

    fn queue_used(&mut self, queue: u16) -> bool {
        either!(self, queue_used(queue))
    }

    fn ack_interrupt(&mut self) -> InterruptStatus {
        either!(self, ack_interrupt())
    }

    fn read_config_generation(&self) -> u32 {
        either!(self, read_config_generation())
    }

    fn read_config_space<T: FromBytes + IntoBytes>(&self, offset: usize) -> Result<T, Error> {
        either!(self, read_config_space(offset))
    }

    fn write_config_space<T: IntoBytes + Immutable>(
        &mut self,
        offset: usize,
        value: T,
    ) -> Result<(), Error> {
        either!(self, write_config_space(offset, value))
    }
}
