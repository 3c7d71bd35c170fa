//! The virtio-mmio devices the boot info lists: the consoles (standard
//! input, output and error), the entropy source, the NIC, the socket
//! device, the disks and the shared directories. Transports and queues come from the
//! virtio-drivers crate; the drivers here keep buffers in frames of their
//! own. Stream devices never wait: a read or write that cannot go on
//! blocks the calling thread (ERESTARTSYS, see `sched`) until the device's
//! interrupt changes something. Disk requests are waited for in place
//! (`request`).
//!
//! Interrupts are MSIs, one vector per device (`kiln_boot::layout::
//! VIRTIO_VECTOR_BASE + index`). One that arrives while the program runs is
//! serviced on the spot; one that arrives in kernel code is only noted, and
//! serviced on the way back to the program or when the CPU goes idle — so
//! the device lock is never taken by an interrupt that interrupted its
//! holder.

pub mod blk;
pub mod console;
pub mod fs;
mod hal;
pub mod net;
mod pages;
mod request;
pub mod rng;
mod transport;
pub mod vsock;

use alloc::boxed::Box;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use kiln_boot::layout::VIRTIO_VECTOR_BASE;
use kiln_boot::{role, virtio_id};
use kiln_kernel::boot::cmdline::MmioDevice;
use virtio_drivers::transport::mmio::{MmioTransport, MmioVersion, VirtIOHeader};
use virtio_drivers::transport::{DeviceStatus, Transport as _};

use self::console::Console;
use self::rng::Rng;
use crate::arch::phys_to_virt;
use crate::boot::{BootParams, MAX_DEVICES};
use crate::fd::tty::{Raised, TerminalState};
use crate::state::KERNEL;

/// A page (one frame) a driver hands to its device for reading or
/// writing, reached through the direct map.
#[derive(Clone, Copy)]
pub(crate) struct Page(u64);

impl Page {
    /// Bytes in a page.
    pub(crate) const SIZE: usize = 4096;

    /// A fresh zeroed page, if memory allows.
    pub(crate) fn new() -> Option<Self> {
        crate::mm::frame::alloc_zeroed().map(Page)
    }

    /// The page's bytes.
    ///
    /// # Safety
    /// The device must not own the page (not posted, or already used).
    pub(crate) unsafe fn bytes<'a>(self) -> &'a mut [u8] {
        // SAFETY: a frame owned by the driver, reached through the direct
        // map; the caller guarantees the device does not use it now.
        unsafe { core::slice::from_raw_parts_mut(phys_to_virt(self.0), Self::SIZE) }
    }
}

/// The transport every driver uses.
type Transport = transport::DeviceTransport;

/// VIRTIO_F_VERSION_1 (virtio 1.2 §6).
const VERSION_1: u64 = 1 << 32;

/// A driver, started the first time something uses its device (a program
/// that never writes to standard error or reads /dev/hwrng pays nothing
/// for those devices: no register writes, no pages).
pub enum Driver<T> {
    /// The boot info lists no such device.
    Absent,
    /// Listed, not started yet.
    Waiting(Box<Transport>),
    /// Running.
    Ready(Box<T>),
    /// Starting failed (said once).
    Failed,
}

impl<T> Driver<T> {
    /// The driver, started with `start` if it is not yet.
    fn get(
        &mut self,
        what: &str,
        start: impl FnOnce(Transport) -> Result<T, console::SetupError>,
    ) -> Option<&mut T> {
        if matches!(self, Driver::Waiting(_)) {
            let Driver::Waiting(t) = core::mem::replace(self, Driver::Failed) else {
                return None;
            };
            // Its interrupts need the local APIC.
            crate::arch::enable_interrupt_controller();
            match start(*t) {
                Ok(d) => *self = Driver::Ready(Box::new(d)),
                Err(e) => crate::kprintln!("kiln: virtio {what}: setup failed: {e}"),
            }
        }
        match self {
            Driver::Ready(d) => Some(d),
            _ => None,
        }
    }

    /// The driver if it runs.
    fn running(&mut self) -> Option<&mut T> {
        match self {
            Driver::Ready(d) => Some(d),
            _ => None,
        }
    }

    fn running_ref(&self) -> Option<&T> {
        match self {
            Driver::Ready(d) => Some(d),
            _ => None,
        }
    }
}

/// Which driver a device index belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    None,
    Stdio,
    Stderr,
    Rng,
    Net,
    Vsock,
    /// A disk (its requests are waited for, not serviced).
    Block,
    /// A shared directory (as a disk).
    Fs,
}

/// The drivers, found at boot (the instance is `state::KERNEL.devices`).
pub struct Devices {
    stdio: Driver<Console>,
    stderr: Driver<Console>,
    rng: Driver<Rng>,
    /// The first console is a terminal (`kiln run -t`): its line
    /// discipline.
    terminal: Option<Box<TerminalState>>,
    /// Device index (boot table order) to driver.
    slots: [Slot; MAX_DEVICES],
}

impl Devices {
    /// No devices yet.
    pub const fn new() -> Self {
        Self {
            stdio: Driver::Absent,
            stderr: Driver::Absent,
            rng: Driver::Absent,
            terminal: None,
            slots: [Slot::None; MAX_DEVICES],
        }
    }

    /// The console of standard input and output (started on first use).
    pub fn stdio(&mut self) -> Option<&mut Console> {
        self.stdio.get("console", Console::new)
    }

    /// Whether the standard streams are a terminal.
    pub fn is_terminal(&self) -> bool {
        self.terminal.is_some()
    }

    /// The terminal and its console, when the standard streams are one.
    pub fn terminal(&mut self) -> Option<(&mut TerminalState, &mut Console)> {
        let console = self.stdio.get("console", Console::new)?;
        Some((self.terminal.as_deref_mut()?, console))
    }

    /// The console a write to standard error (`to_stderr`) or output goes
    /// to, started on first use, and the other console when it runs (its
    /// output must be out first; one never started has none — starting it
    /// would cost an exit to the VMM for nothing). Standard error shares
    /// standard output's console on a terminal or when it has none of its
    /// own; there is no other console then.
    pub fn consoles(&mut self, to_stderr: bool) -> (Option<&mut Console>, Option<&mut Console>) {
        let terminal = self.terminal.is_some();
        if to_stderr && !terminal && self.stderr.get("console", Console::new).is_some() {
            return (self.stderr.running(), self.stdio.running());
        }
        let other = if terminal || to_stderr {
            None
        } else {
            self.stderr.running()
        };
        (self.stdio.get("console", Console::new), other)
    }

    /// The entropy source (started on first use).
    pub fn rng(&mut self) -> Option<&mut Rng> {
        self.rng.get("rng", Rng::new)
    }

    /// Services the devices whose bits are set in `pending`; returns whether
    /// anything changed, the signals a terminal's keys raised, and which of
    /// the NIC and the socket device interrupted (their own modules take it
    /// from there).
    fn service(&mut self, pending: u32) -> (bool, Raised, bool, bool) {
        let mut changed = false;
        let mut raised = 0;
        let mut net = false;
        let mut vsock = false;
        for (i, slot) in self.slots.iter().enumerate() {
            if pending & (1 << i) == 0 {
                continue;
            }
            changed |= match slot {
                Slot::Stdio => match (self.stdio.running(), self.terminal.as_deref_mut()) {
                    (Some(console), Some(terminal)) => {
                        let changed = console.service();
                        raised |= terminal.receive(console);
                        changed
                    }
                    (Some(console), None) => console.service(),
                    (None, _) => false,
                },
                Slot::Stderr => self.stderr.running().is_some_and(Console::service),
                Slot::Rng => self.rng.running().is_some_and(Rng::service),
                // The network stack takes it from here (`service`).
                Slot::Net => {
                    net = true;
                    false
                }
                Slot::Vsock => {
                    vsock = true;
                    false
                }
                Slot::Block | Slot::Fs | Slot::None => false,
            };
        }
        self.update_wake_sources();
        (changed, raised, net, vsock)
    }

    /// Records (lock-free, for the scheduler's deadlock check) whether a
    /// device may still wake a waiting thread.
    pub fn update_wake_sources(&self) {
        let console =
            |c: Option<&Console>| c.is_some_and(|c| c.input_open() || c.wakes_on_output());
        let may = console(self.stdio.running_ref())
            || console(self.stderr.running_ref())
            || self.rng.running_ref().is_some_and(Rng::waiting);
        WAKE_SOURCES.store(may, Ordering::Relaxed);
    }
}

/// Devices with an interrupt not yet serviced (bit per device index).
static PENDING: AtomicU32 = AtomicU32::new(0);
/// Whether a device may still wake a waiting thread.
static WAKE_SOURCES: AtomicBool = AtomicBool::new(false);
/// How many devices there are (their vectors follow
/// `VIRTIO_VECTOR_BASE`).
static DEVICE_COUNT: AtomicU32 = AtomicU32::new(0);
/// Whether there is an entropy device (for /dev/hwrng lookups, which must
/// not take the devices lock).
static HAS_RNG: AtomicBool = AtomicBool::new(false);

/// Whether the VM has a NIC or a socket device (either may deliver a
/// connection at any time).
static HAS_NIC: AtomicBool = AtomicBool::new(false);

/// Whether the standard streams are a terminal (for /dev/tty lookups).
static HAS_TERMINAL: AtomicBool = AtomicBool::new(false);

/// Whether the standard streams are a terminal.
pub fn has_terminal() -> bool {
    HAS_TERMINAL.load(Ordering::Relaxed)
}

/// Whether the VM has an entropy device.
pub fn has_rng() -> bool {
    HAS_RNG.load(Ordering::Relaxed)
}

/// Whether the device wants a kick for the buffers just added to `queue`.
/// A full fence comes first: the ring's new index must be visible to the
/// device before its "no kicks" flag is read, or a device that asks for
/// kicks again and then looks at the ring a last time (kiln-vmm's consoles
/// while output comes in a burst, its network receive queues) and this
/// driver could both miss the buffer — x86 lets a load pass an earlier
/// store, and virtio-drivers' `add` fences only before its index store.
fn wants_kick<const N: usize>(queue: &virtio_drivers::queue::VirtQueue<hal::KernelHal, N>) -> bool {
    core::sync::atomic::fence(Ordering::SeqCst);
    queue.should_notify()
}

/// Starts the device: reset, features (`wanted` and VERSION_1, as far as
/// offered), FEATURES_OK. Returns the features agreed.
fn begin_init(t: &mut Transport, wanted: u64) -> u64 {
    t.set_status(DeviceStatus::empty());
    t.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
    let features = t.read_device_features() & (wanted | VERSION_1);
    t.write_driver_features(features);
    t.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK);
    features
}

/// Maps a device's register window at its direct-map address.
fn map_window(base: u64, size: u64) -> Option<()> {
    let mut page = base & !0xfff;
    while page < base + size {
        crate::arch::map_uncached(page)?;
        page += 4096;
    }
    Some(())
}

/// Devices found so far, while `init` runs.
struct Found {
    devices: Devices,
    has_nic: bool,
    has_vsock: bool,
}

impl Found {
    /// Gives device `index` (of virtio type `device_type`, for `role`) its
    /// driver slot; the NIC and the socket device start at once
    /// (connections may arrive before the program asks for anything).
    fn attach(&mut self, index: usize, device_type: u32, role: u32, transport: Transport) {
        let devices = &mut self.devices;
        let absent = |d: &Driver<_>| matches!(d, Driver::Absent);
        devices.slots[index] = match (device_type, role) {
            (virtio_id::CONSOLE, role::CONSOLE_STDERR) if absent(&devices.stderr) => {
                devices.stderr = Driver::Waiting(Box::new(transport));
                Slot::Stderr
            }
            (virtio_id::CONSOLE, _) if absent(&devices.stdio) => {
                devices.stdio = Driver::Waiting(Box::new(transport));
                Slot::Stdio
            }
            (virtio_id::RNG, _) if matches!(devices.rng, Driver::Absent) => {
                devices.rng = Driver::Waiting(Box::new(transport));
                Slot::Rng
            }
            (virtio_id::NET, _) if !self.has_nic => {
                crate::arch::enable_interrupt_controller();
                match net::NetDriver::new(transport) {
                    Ok(driver) => {
                        crate::net::nic::set_driver(driver);
                        self.has_nic = true;
                        Slot::Net
                    }
                    Err(e) => {
                        crate::kprintln!("kiln: virtio net: setup failed: {e}");
                        Slot::None
                    }
                }
            }
            (virtio_id::VSOCK, _) if !self.has_vsock => {
                crate::arch::enable_interrupt_controller();
                match vsock::VsockDriver::new(transport) {
                    Ok(driver) => {
                        crate::net::vsock::set_driver(driver);
                        self.has_vsock = true;
                        Slot::Vsock
                    }
                    Err(e) => {
                        crate::kprintln!("kiln: virtio vsock: setup failed: {e}");
                        Slot::None
                    }
                }
            }
            (virtio_id::BLOCK, _) => {
                crate::arch::enable_interrupt_controller();
                if blk::attach(transport) {
                    Slot::Block
                } else {
                    Slot::None
                }
            }
            (virtio_id::FS, _) => {
                crate::arch::enable_interrupt_controller();
                if fs::attach(transport) {
                    Slot::Fs
                } else {
                    Slot::None
                }
            }
            _ => Slot::None,
        };
    }
}

/// Sets up a standard virtio-mmio device (`virtio_mmio.device=`) as
/// device `index`: its registers mapped, its interrupt line routed to the
/// index's vector. `None` (said) when it cannot be used.
fn standard_device(index: usize, d: &MmioDevice) -> Option<(u32, Transport)> {
    let say = |why: &dyn core::fmt::Display| {
        crate::kprintln!("kiln: virtio-mmio device at {:#x}: {why}; left out", d.base);
    };
    if map_window(d.base, d.size).is_none() {
        say(&"cannot map its registers");
        return None;
    }
    let header = core::ptr::NonNull::new(phys_to_virt(d.base).cast::<VirtIOHeader>())?;
    // SAFETY: `header` is the device's register window, mapped uncached just
    // above for the kernel's lifetime, and used by this transport alone.
    let t = match unsafe { MmioTransport::new(header, d.size as usize) } {
        Ok(t) => t,
        Err(e) => {
            say(&e);
            return None;
        }
    };
    if t.version() != MmioVersion::Modern {
        say(&"a legacy (virtio 0.9) device; kiln drives virtio 1.x only (QEMU: -global virtio-mmio.force-legacy=false)");
        return None;
    }
    let device_type = t.device_type() as u32;
    crate::arch::enable_interrupt_controller();
    let vector = VIRTIO_VECTOR_BASE + index as u32;
    if let Err(e) = crate::arch::route_interrupt_line(d.irq, vector as u8) {
        say(&e);
        return None;
    }
    ACK_WINDOWS[index].store(phys_to_virt(d.base) as usize, Ordering::SeqCst);
    Some((device_type, transport::DeviceTransport::Standard(t)))
}

/// Sets up the drivers for the devices the boot info lists, then for those
/// the command line names (`virtio_mmio.device=`, under QEMU). A device
/// that fails is left out with a message (its streams fall back to the port
/// console).
pub fn init(params: &BootParams, named: &[MmioDevice]) {
    if params.device_count == 0 && named.is_empty() {
        return;
    }
    let mut found = Found {
        devices: Devices::new(),
        has_nic: false,
        has_vsock: false,
    };
    if params.has(kiln_boot::flags::TERMINAL) {
        found.devices.terminal = Some(Box::default());
    }
    for (i, d) in params.devices().iter().enumerate() {
        if d.vector != VIRTIO_VECTOR_BASE + i as u32 {
            crate::kprintln!(
                "kiln: virtio device {i}: vector {:#x} is not the contract's",
                d.vector
            );
            continue;
        }
        if map_window(d.base, d.size).is_none() {
            crate::kprintln!("kiln: virtio device {i}: cannot map its registers");
            continue;
        }
        let Some(t) = transport::KilnTransport::new(d) else {
            crate::kprintln!(
                "kiln: virtio device {i}: unknown type {} or no memory",
                d.device_type
            );
            continue;
        };
        found.attach(
            i,
            d.device_type,
            d.role,
            transport::DeviceTransport::Kiln(t),
        );
    }
    let mut count = params.device_count;
    for d in named {
        if count == MAX_DEVICES {
            crate::kprintln!("kiln: more than {MAX_DEVICES} virtio devices; the rest left out");
            break;
        }
        if let Some((device_type, t)) = standard_device(count, d) {
            found.attach(count, device_type, role::DEFAULT, t);
        }
        count += 1;
    }
    let Found {
        mut devices,
        has_nic,
        has_vsock,
    } = found;
    // A terminal listens from the start: Ctrl-C must reach a program that
    // never reads.
    if let Some((terminal, console)) = devices.terminal() {
        console.listen();
        terminal.receive(console);
    }
    devices.update_wake_sources();
    HAS_RNG.store(!matches!(devices.rng, Driver::Absent), Ordering::Relaxed);
    HAS_TERMINAL.store(devices.terminal.is_some(), Ordering::Relaxed);
    HAS_NIC.store(has_nic || has_vsock, Ordering::Relaxed);
    *KERNEL.devices.lock() = devices;
    DEVICE_COUNT.store(count as u32, Ordering::SeqCst);
}

/// The register windows of devices whose interrupt is a line, not an MSI:
/// the interrupt is acknowledged at the device while it is taken, so the
/// line falls before the end of interrupt (0: an MSI device).
static ACK_WINDOWS: [AtomicUsize; MAX_DEVICES] = [const { AtomicUsize::new(0) }; MAX_DEVICES];

/// virtio-mmio InterruptStatus and InterruptACK.
const INTERRUPT_STATUS: usize = 0x060;
const INTERRUPT_ACK: usize = 0x064;

/// Notes an interrupt on `vector`; false when no device uses it.
pub fn interrupt(vector: u64) -> bool {
    let index = vector.wrapping_sub(u64::from(VIRTIO_VECTOR_BASE));
    if index >= u64::from(DEVICE_COUNT.load(Ordering::Relaxed)) {
        return false;
    }
    let window = ACK_WINDOWS[index as usize].load(Ordering::Relaxed);
    if window != 0 {
        // SAFETY: the window of a standard device, mapped uncached for the
        // kernel's lifetime; reading the status and acknowledging it is
        // what the interrupt asks for.
        unsafe {
            let status = core::ptr::read_volatile((window + INTERRUPT_STATUS) as *const u32);
            core::ptr::write_volatile((window + INTERRUPT_ACK) as *mut u32, status);
        }
    }
    PENDING.fetch_or(1 << index, Ordering::SeqCst);
    true
}

/// Whether an interrupt waits to be serviced.
pub fn pending() -> bool {
    PENDING.load(Ordering::Relaxed) != 0
}

/// Services noted interrupts and wakes threads waiting for I/O if anything
/// changed. Call with no kernel lock held.
pub fn service() {
    let pending = PENDING.swap(0, Ordering::SeqCst);
    if pending == 0 {
        return;
    }
    let (changed, raised, net, vsock) = KERNEL.devices.lock().service(pending);
    if net {
        crate::net::poll();
    }
    if vsock {
        crate::net::vsock::service();
    }
    if changed {
        crate::sched::notify_io();
    }
    if raised != 0 {
        crate::fd::tty::deliver(raised);
    }
}

/// Whether a device may still wake a waiting thread (input may arrive,
/// output or a request is in flight, a NIC may deliver a connection): then
/// every thread waiting is not a deadlock.
pub fn may_wake() -> bool {
    WAKE_SOURCES.load(Ordering::Relaxed) || HAS_NIC.load(Ordering::Relaxed) || pending()
}
