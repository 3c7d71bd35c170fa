//! The guest's devices. The kiln platform's port devices (`legacy`): the
//! debug console (the kernel's own messages, and program output when there
//! is no virtio console), the boot timer and the exit port — each guest
//! `OUT` lands in [`PortBus::out`] on the vCPU thread. The virtio devices
//! (`virtio`): their register windows on the [`MmioBus`] (vCPU thread),
//! their queues served by the devices thread (`event_loop`).

pub mod event_loop;
pub mod legacy;
pub mod virtio;

use std::sync::{Arc, Mutex, MutexGuard};

use crate::GuestMem;
use kiln_boot::{port, ExitReport, Milestone};

use self::legacy::console::{Console, Stream};
use self::virtio::mmio::MmioTransport;
use self::virtio::QueueError;
use crate::timings::{Phase, Timings};
/// What a device could not do.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The console buffer in guest memory could not be read.
    #[error("cannot read the guest's console buffer: {0}")]
    ConsoleBuffer(#[source] vm_memory::GuestMemoryError),
    /// Writing program output to the host failed.
    #[error("cannot write the program's output: {0}")]
    Output(#[source] std::io::Error),
    /// The guest wrote an exit value no kernel writes.
    #[error("the guest reported an invalid exit value {0:#x}")]
    BadExitValue(u32),
    /// The devices thread's epoll failed.
    #[error("the devices thread failed: {0}")]
    Loop(#[source] std::io::Error),
    /// A virtio device failed on the host side.
    #[error("virtio {device}: {source}")]
    Virtio {
        /// The device's name.
        device: &'static str,
        /// What failed.
        #[source]
        source: QueueError,
    },
}

/// What the VM loop should do after a port write.
#[derive(Debug, PartialEq, Eq)]
pub enum PortEvent {
    /// Keep running.
    Continue,
    /// The guest reported the program's end.
    Exit(ExitReport),
    /// The boot vCPU asks for vCPU `n` to start ([`port::START_CPU`]).
    StartCpu(u32),
    /// The vCPU parks for a snapshot ([`port::SNAPSHOT`]).
    Snapshot,
    /// The program is about to start: the kernel's boot, every vCPU's
    /// included, is over.
    ProgramEntry,
    /// A restored guest's boot vCPU has set its clock and random seed
    /// (a warm VM holds it there until claimed).
    Resumed,
}

/// Dispatches port writes to the devices.
pub struct PortBus {
    /// The console device.
    pub console: Console,
    /// Writes to ports no device owns (ignored, counted).
    pub unknown_writes: u64,
    /// Where to keep the CPUID table the kernel learnt (boot flag
    /// `CPUID_LEARN`): read when it reports the program's entry, before
    /// any program code runs.
    pub learn_cpuid: Option<crate::arch::learnt_cpuid::LearntCpuid>,
    /// How many of the program's pages a warm VM's guest touched before
    /// its claim ([`port::PREPARED`]), if it said.
    pub prepared_pages: Option<u32>,
}

fn value(data: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    let n = data.len().min(4);
    b[..n].copy_from_slice(&data[..n]);
    u32::from_le_bytes(b)
}

impl PortBus {
    /// A bus with `console`.
    pub fn new(console: Console) -> Self {
        Self {
            console,
            unknown_writes: 0,
            learn_cpuid: None,
            prepared_pages: None,
        }
    }

    /// Handles an `OUT` of `data` to `port`.
    ///
    /// # Errors
    /// When the guest reports an impossible exit value, or host output fails.
    pub fn out(
        &mut self,
        port: u16,
        data: &[u8],
        mem: &GuestMem,
        timings: &mut Timings,
    ) -> Result<PortEvent, DeviceError> {
        match port {
            port::CONSOLE_STDOUT => {
                self.console
                    .write_from_guest(Stream::Stdout, value(data), mem)?;
                if value(data) > 0 {
                    timings.mark(Phase::FirstOutput);
                }
            }
            port::CONSOLE_STDERR => {
                self.console
                    .write_from_guest(Stream::Stderr, value(data), mem)?;
                if value(data) > 0 {
                    timings.mark(Phase::FirstOutput);
                }
            }
            port::BOOT_TIMER => match Milestone::from_u32(value(data)) {
                Some(Milestone::KernelEntry) => timings.mark(Phase::KernelEntry),
                Some(Milestone::ProgramEntry) => {
                    timings.mark(Phase::ProgramEntry);
                    if let Some(cache) = self.learn_cpuid.take() {
                        if let Some(table) = crate::arch::learnt_cpuid::read_learnt(mem) {
                            // A cache that cannot be written only costs the
                            // next VM a relearning.
                            let _ = cache.store(&table);
                        }
                    }
                    return Ok(PortEvent::ProgramEntry);
                }
                Some(Milestone::FirstAccept) => timings.mark(Phase::FirstAccept),
                Some(Milestone::Resumed) => {
                    timings.mark(Phase::Resumed);
                    return Ok(PortEvent::Resumed);
                }
                None => self.unknown_writes += 1,
            },
            port::START_CPU => return Ok(PortEvent::StartCpu(value(data))),
            port::SNAPSHOT => return Ok(PortEvent::Snapshot),
            port::PREPARED => self.prepared_pages = Some(value(data)),
            port::EXIT => {
                timings.mark(Phase::ProgramExit);
                let raw = value(data);
                let report = ExitReport::decode(raw).ok_or(DeviceError::BadExitValue(raw))?;
                return Ok(PortEvent::Exit(report));
            }
            _ => self.unknown_writes += 1,
        }
        Ok(PortEvent::Continue)
    }
}

/// A virtio device's register window on the bus.
pub struct MmioDevice {
    /// Guest-physical base of the window.
    pub base: u64,
    /// The transport, shared with the devices thread.
    pub transport: Arc<Mutex<MmioTransport>>,
    /// Its role in the boot contract (`kiln_boot::role`).
    pub role: u32,
}

/// Locks a transport. A panic while holding it is a bug in kiln, not the
/// guest's doing; the lock is taken over anyway so the VM can end cleanly.
pub fn lock(t: &Mutex<MmioTransport>) -> MutexGuard<'_, MmioTransport> {
    t.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The virtio register windows, by guest-physical address.
#[derive(Default)]
pub struct MmioBus {
    /// The devices, in boot-info table order.
    pub devices: Vec<MmioDevice>,
    /// Accesses that hit no window (answered with all ones, ignored).
    pub unknown: std::sync::atomic::AtomicU64,
}

impl MmioBus {
    fn find(&self, addr: u64) -> Option<(&MmioDevice, u64)> {
        self.devices.iter().find_map(|d| {
            let off = addr.checked_sub(d.base)?;
            (off < kiln_boot::layout::VIRTIO_MMIO_SIZE).then_some((d, off))
        })
    }

    /// A guest read at `addr`.
    pub fn read(&self, addr: u64, data: &mut [u8]) {
        match self.find(addr) {
            Some((d, off)) => lock(&d.transport).read(off, data),
            None => {
                data.fill(0xff);
                self.unknown
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// A guest write at `addr`.
    ///
    /// # Errors
    /// A device's host-side failure.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), DeviceError> {
        match self.find(addr) {
            Some((d, off)) => {
                let mut t = lock(&d.transport);
                let device = t.device().name();
                t.write(off, data)
                    .map_err(|source| DeviceError::Virtio { device, source })
            }
            None => {
                self.unknown
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
        }
    }

    /// Sends what the NICs still hold (the devices thread has stopped): the
    /// frames a standby's gate released at the run's end.
    ///
    /// # Errors
    /// A NIC's host-side failure.
    pub fn flush_network(&self) -> Result<(), DeviceError> {
        self.run_queue(kiln_boot::virtio_id::NET, virtio::net::TX_QUEUE, "net")
    }

    /// Writes the output the guest queued on its virtio consoles to the
    /// host now (before the kernel's own console messages and at the end,
    /// so nothing is lost or reordered).
    ///
    /// # Errors
    /// A console's host-side failure.
    pub fn flush_consoles(&self) -> Result<(), DeviceError> {
        self.run_queue(
            kiln_boot::virtio_id::CONSOLE,
            virtio::console::TX_QUEUE,
            "console",
        )
    }

    /// Processes queue `queue` of every device of type `device_type` once.
    fn run_queue(
        &self,
        device_type: u32,
        queue: usize,
        name: &'static str,
    ) -> Result<(), DeviceError> {
        for d in &self.devices {
            let mut t = lock(&d.transport);
            if t.device().device_type() == device_type {
                t.process(queue).map_err(|source| DeviceError::Virtio {
                    device: name,
                    source,
                })?;
            }
        }
        Ok(())
    }
}
