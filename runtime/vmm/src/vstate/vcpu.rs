//! The vCPU run loop: KVM_RUN until the guest reports the program's end,
//! crashes, or runs out of time. Every exit the guest can cause is
//! handled without trusting it: port data is decoded defensively, unknown
//! ports are ignored, and anything else ends the VM with a message.

use std::time::Duration;

use kvm_ioctls::{VcpuExit, VcpuFd};
use vm_memory::GuestMemoryMmap;

use crate::devices::{PortBus, PortEvent};
use crate::timings::Timings;
use crate::{timeout, Ending, VmmError};

/// Describes where the vCPU stopped, for crash messages.
fn where_stopped(vcpu: &VcpuFd) -> String {
    match (vcpu.get_regs(), vcpu.get_sregs()) {
        (Ok(r), Ok(s)) => format!(
            "rip {:#x}, rsp {:#x}, rflags {:#x}, cr2 {:#x}, cr3 {:#x}",
            r.rip, r.rsp, r.rflags, s.cr2, s.cr3
        ),
        _ => "registers unavailable".into(),
    }
}

/// Runs the vCPU until the VM ends.
///
/// # Errors
/// [`VmmError::GuestCrash`] when the guest stops without an exit report,
/// and errors from KVM or the devices.
pub fn run(
    vcpu: &mut VcpuFd,
    mem: &GuestMemoryMmap,
    bus: &mut PortBus,
    timings: &mut Timings,
    limit: Option<Duration>,
) -> Result<Ending, VmmError> {
    let mut mmio_exits = 0u64;
    loop {
        if limit.is_some() && timeout::expired() {
            return Ok(Ending::TimedOut);
        }
        match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => {
                if let PortEvent::Exit(report) = bus.out(port, data, mem, timings)? {
                    return Ok(Ending::Program(report));
                }
            }
            Ok(VcpuExit::IoIn(_, data)) => data.fill(0xff),
            Ok(VcpuExit::MmioRead(_, data)) => {
                data.fill(0xff);
                mmio_exits += 1;
            }
            Ok(VcpuExit::MmioWrite(..)) => mmio_exits += 1,
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
                return Err(VmmError::GuestCrash(format!(
                    "the guest kernel halted without reporting an exit ({})",
                    where_stopped(vcpu)
                )));
            }
            Ok(VcpuExit::Shutdown) => {
                return Err(VmmError::GuestCrash(format!(
                    "the guest kernel triple-faulted ({})",
                    where_stopped(vcpu)
                )))
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                return Err(VmmError::GuestCrash(format!(
                    "KVM could not enter the guest (hardware reason {reason:#x}, cpu {cpu})"
                )))
            }
            Ok(VcpuExit::InternalError) => {
                return Err(VmmError::GuestCrash(format!(
                    "KVM internal error while running the guest ({})",
                    where_stopped(vcpu)
                )))
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => {
                return Err(VmmError::GuestCrash(format!(
                    "the guest requested system event {kind}"
                )))
            }
            Ok(other) => {
                let what = format!("{other:?}");
                return Err(VmmError::GuestCrash(format!(
                    "unexpected exit {what} ({})",
                    where_stopped(vcpu)
                )));
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            Err(e) => return Err(VmmError::Kvm("KVM_RUN", e)),
        }
        if mmio_exits > 10_000 {
            return Err(VmmError::GuestCrash(format!(
                "the guest keeps accessing unmapped guest-physical memory ({})",
                where_stopped(vcpu)
            )));
        }
    }
}
