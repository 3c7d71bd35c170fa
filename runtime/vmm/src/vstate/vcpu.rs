//! The vCPU run loop: KVM_RUN until the guest reports the program's end,
//! crashes, or runs out of time. Every exit the guest can cause is
//! handled without trusting it: port data is decoded defensively, unknown
//! ports are ignored, and anything else ends the VM with a message.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::GuestMem;
use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::devices::{DeviceError, MmioBus, PortBus, PortEvent};
use crate::timings::Timings;
use crate::{timeout, Ending};

/// Where the vCPU stopped, for crash messages (`None`: KVM would not say).
#[derive(Clone, Copy, Debug)]
pub struct Stopped(Option<[u64; 5]>);

impl Stopped {
    /// Reads the registers of the stopped `vcpu`.
    fn at(vcpu: &VcpuFd) -> Self {
        Stopped(match (vcpu.get_regs(), vcpu.get_sregs()) {
            (Ok(r), Ok(s)) => Some([r.rip, r.rsp, r.rflags, s.cr2, s.cr3]),
            _ => None,
        })
    }
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some([rip, rsp, rflags, cr2, cr3]) => write!(
                f,
                "rip {rip:#x}, rsp {rsp:#x}, rflags {rflags:#x}, cr2 {cr2:#x}, cr3 {cr3:#x}"
            ),
            None => f.write_str("registers unavailable"),
        }
    }
}

/// How a guest stopped without reporting its program's end, or why it
/// could not go on.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// The kernel executed HLT with nothing to wake it.
    #[error("the guest kernel halted without reporting an exit ({0})")]
    Halted(Stopped),
    /// An exception with no usable handler.
    #[error("the guest kernel triple-faulted ({0})")]
    TripleFault(Stopped),
    /// KVM could not enter the guest.
    #[error("KVM could not enter the guest (hardware reason {reason:#x}, cpu {cpu})")]
    EntryFailed {
        /// The hardware's reason code.
        reason: u64,
        /// The host CPU.
        cpu: u32,
    },
    /// KVM failed internally (usually an instruction it cannot emulate).
    #[error("KVM internal error while running the guest ({0})")]
    Internal(Stopped),
    /// The guest asked for a reset or power-off.
    #[error("the guest requested system event {0}")]
    SystemEvent(u32),
    /// An exit kiln does not expect.
    #[error("unexpected exit {exit} ({at})")]
    Unexpected {
        /// The exit, as kvm-ioctls names it.
        exit: String,
        /// Where.
        at: Stopped,
    },
    /// The guest keeps touching memory that does not exist.
    #[error("the guest keeps accessing unmapped guest-physical memory ({0})")]
    UnmappedAccesses(Stopped),
    /// KVM_RUN failed.
    #[error("KVM_RUN failed: {0}")]
    Run(#[source] kvm_ioctls::Error),
    /// A device failed while handling the guest's request.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// A vCPU thread could not be started.
    #[error("cannot start a vCPU thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The vCPU thread's seccomp filter could not be put in place.
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    /// A snapshot could not be taken.
    #[error("snapshot failed: {0}")]
    Snapshot(String),
    /// Another thread (the devices thread, after a host failure) stopped
    /// the vCPU.
    #[error("the vCPU was stopped")]
    Stopped,
}

/// What every vCPU thread of a VM shares: guest memory, the port and
/// MMIO buses, the boot timings, and how to start another vCPU.
pub struct Shared<'a> {
    /// The VM (its dirty log, for a standby's checkpoints).
    pub vm: &'a kvm_ioctls::VmFd,
    /// Guest memory.
    pub mem: &'a GuestMem,
    /// The kiln ports (console, milestones, exit).
    pub bus: &'a Mutex<PortBus>,
    /// The virtio register windows.
    pub mmio: &'a MmioBus,
    /// Boot phase timings.
    pub timings: &'a Mutex<Timings>,
    /// Starts vCPU `n` when the guest asks ([`PortEvent::StartCpu`]);
    /// false when there is no such vCPU.
    pub start_cpu: &'a (dyn Fn(u32) -> bool + Sync),
    /// The run's `--timeout`.
    pub limit: Option<Duration>,
    /// Count exits at each boot milestone (`--stats`).
    pub count_exits: bool,
    /// Where vCPUs park for a snapshot, when one is asked for.
    pub snapshot: Option<&'a crate::snapshot::Coordinator>,
    /// Which vCPUs run (the guest started them).
    pub started: &'a (dyn Fn() -> Vec<bool> + Sync),
    /// A warm VM's hold: vCPU 0 waits there for a claim when the guest
    /// reports itself resumed.
    pub hold: Option<&'a crate::snapshot::warm::WarmHold>,
}

/// vCPU 0 of a warm VM at the guest's resume report: waits for a claim;
/// the run then counts from the client's start (its counters too, when
/// it asked for them), gets its timeout, and the other vCPUs that ran when
/// the snapshot was taken start.
fn hold_for_claim(vcpu: &VcpuFd, hold: &crate::snapshot::warm::WarmHold, shared: &Shared<'_>) {
    let Some(claim) = hold.wait_for_claim() else {
        // Stopped first: the loop sees why.
        return;
    };
    if claim.request.stats {
        // The other vCPUs have not run in this process yet: they count
        // from their start, which is now.
        let bus = lock(shared.bus);
        hold.set_stats_baseline(crate::VmStats::read(
            std::iter::once(vcpu),
            shared.vm,
            shared.mmio,
            &bus,
            true,
        ));
    }
    {
        let mut timings = lock(shared.timings);
        timings.rebase(claim.client_start());
        timings.mark_at(crate::timings::Phase::Claimed, claim.at);
        timings.mark(crate::timings::Phase::Resumed);
    }
    for index in hold.vcpus_to_start() {
        (shared.start_cpu)(index);
    }
    let limit = claim
        .request
        .timeout_s
        .and_then(|s| Duration::try_from_secs_f64(s).ok());
    if let Some(limit) = limit {
        if timeout::arm(limit).is_err() {
            eprintln!("kiln: cannot arm the --timeout timer");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// vCPU `index` parks for a snapshot: KVM finishes the `OUT`, the state
/// is read, and the coordinator says whether the run goes on.
fn park(vcpu: &mut VcpuFd, index: usize, shared: &Shared<'_>) -> Result<Option<Ending>, VcpuError> {
    let Some(coordinator) = shared.snapshot else {
        // No snapshot asked for: the kernel's request is ignored.
        lock(shared.bus).unknown_writes += 1;
        return Ok(None);
    };
    let failed = |e: crate::vstate::kvm::KvmError| VcpuError::Snapshot(e.to_string());
    crate::arch::complete_pending_io(vcpu).map_err(failed)?;
    let state = crate::arch::VcpuState::save(vcpu).map_err(failed)?;
    let cancelled = || {
        crate::stop::vm_ended()
            || crate::stop::requested()
            || crate::stop::terminated_by().is_some()
            || (shared.limit.is_some() && timeout::expired())
    };
    match coordinator.park(
        index,
        state,
        shared.started,
        shared.vm,
        shared.mem,
        shared.mmio,
        &cancelled,
    ) {
        Ok(crate::snapshot::Parked::Continue) => Ok(None),
        Ok(crate::snapshot::Parked::Stop(_)) => Ok(Some(Ending::Snapshotted)),
        Err(e) => Err(VcpuError::Snapshot(e)),
    }
}

/// Runs vCPU `index` until the VM ends.
///
/// # Errors
/// [`VcpuError`] when the guest stops without an exit report, and errors
/// from KVM or the devices; [`VcpuError::Stopped`] when another thread
/// stopped it (a device failure, or another vCPU that saw the VM end).
pub fn run(vcpu: &mut VcpuFd, index: usize, shared: &Shared<'_>) -> Result<Ending, VcpuError> {
    let mmio = shared.mmio;
    loop {
        if (shared.limit.is_some() || shared.hold.is_some()) && timeout::expired() {
            if index == 0 {
                crate::stop::acknowledge();
            }
            return Ok(Ending::TimedOut);
        }
        if let Some(signal) = crate::stop::terminated_by() {
            // The devices thread's stop request (made for the signal)
            // need not kick vCPU 0's thread on: it is out (it waited a
            // whole second for a note this path never took).
            if index == 0 {
                crate::stop::acknowledge();
            }
            return Ok(Ending::Terminated(signal));
        }
        if crate::stop::requested() || crate::stop::vm_ended() {
            return Err(VcpuError::Stopped);
        }
        match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => {
                // Program output the virtio consoles still hold goes out
                // before the kernel's message or the end of the VM.
                mmio.flush_consoles()?;
                let event = {
                    let mut timings = lock(shared.timings);
                    let before = timings.count();
                    let event = lock(shared.bus).out(port, data, shared.mem, &mut timings)?;
                    if shared.count_exits && timings.count() > before {
                        // A milestone: how many exits it took to get here.
                        let exits = super::stats::read(vcpu)
                            .ok()
                            .and_then(|c| c.get("exits").copied());
                        if let Some(n) = exits {
                            timings.record_exits(before, n);
                        }
                    }
                    event
                };
                match event {
                    PortEvent::Exit(report) => return Ok(Ending::Program(report)),
                    PortEvent::StartCpu(n) => {
                        if !(shared.start_cpu)(n) {
                            lock(shared.bus).unknown_writes += 1;
                        }
                    }
                    PortEvent::Snapshot => {
                        if let Some(ending) = park(vcpu, index, shared)? {
                            return Ok(ending);
                        }
                    }
                    PortEvent::ProgramEntry => {
                        if let Some(coordinator) = shared.snapshot {
                            coordinator.program_entered();
                        }
                    }
                    PortEvent::Resumed => {
                        if let (0, Some(hold)) = (index, shared.hold) {
                            hold_for_claim(vcpu, hold, shared);
                        }
                    }
                    PortEvent::Continue => {}
                }
            }
            Ok(VcpuExit::IoIn(_, data)) => data.fill(0xff),
            Ok(VcpuExit::MmioRead(addr, data)) => mmio.read(addr, data),
            Ok(VcpuExit::MmioWrite(addr, data)) => mmio.write(addr, data)?,
            Ok(VcpuExit::Hlt) => {
                // The program runs at the kernel's privilege level, so a HLT
                // in it (musl's a_crash, for one) halts the vCPU instead of
                // faulting. Linux would deliver SIGSEGV: end it that way.
                if let Ok(regs) = vcpu.get_regs() {
                    if regs.rip < kiln_boot::vm::PHYS_MAP {
                        eprintln!(
                            "kiln: program killed by SIGSEGV (segmentation fault): privileged instruction HLT at ip {:#x}",
                            regs.rip.wrapping_sub(1)
                        );
                        return Ok(Ending::Program(kiln_boot::ExitReport::Signaled(11)));
                    }
                }
                return Err(VcpuError::Halted(Stopped::at(vcpu)));
            }
            Ok(VcpuExit::Shutdown) => return Err(VcpuError::TripleFault(Stopped::at(vcpu))),
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                return Err(VcpuError::EntryFailed { reason, cpu })
            }
            Ok(VcpuExit::InternalError) => return Err(VcpuError::Internal(Stopped::at(vcpu))),
            Ok(VcpuExit::SystemEvent(kind, _)) => return Err(VcpuError::SystemEvent(kind)),
            Ok(other) => {
                let exit = format!("{other:?}");
                return Err(VcpuError::Unexpected {
                    exit,
                    at: Stopped::at(vcpu),
                });
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            Err(e) => return Err(VcpuError::Run(e)),
        }
        if mmio.unknown.load(std::sync::atomic::Ordering::Relaxed) > 10_000 {
            return Err(VcpuError::UnmappedAccesses(Stopped::at(vcpu)));
        }
    }
}
