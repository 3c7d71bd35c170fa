//! A vCPU's whole architectural state, saved from KVM and put back into a
//! fresh vCPU (snapshots).
//!
//! Saved: general and special registers, the FPU/SSE/AVX area (XSAVE) and
//! XCR0, debug registers, the local APIC page, pending events, the
//! run state, and the MSRs the kiln kernel uses (below). Not saved: PVM's
//! registration MSR, which KVM_SET_MSRS refuses — the restored guest kernel
//! registers again itself (`kiln_boot::port::SNAPSHOT`).
//!
//! The TSC is saved and written back first. On standard KVM that sets the
//! TSC offset, so the guest's TSC (and its TSC-deadline timer) goes on from
//! where it stood; on PVM the guest's TSC is the host's whatever is written
//! (measured: a resumed guest's TSC had moved on by the time the snapshot
//! sat on disk), so there the guest's clocks count that time.

use kvm_bindings::{
    kvm_debugregs, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs,
    kvm_vcpu_events, kvm_xcrs, kvm_xsave, Msrs,
};
use kvm_ioctls::VcpuFd;

use crate::vstate::kvm::KvmError;

/// IA32_TSC.
const MSR_TSC: u32 = 0x10;
/// IA32_TSC_DEADLINE: written after the LAPIC (KVM ignores it while the
/// LAPIC timer is not in TSC-deadline mode).
const MSR_TSC_DEADLINE: u32 = 0x6e0;

/// The MSRs a snapshot carries, in the order they are written back.
const SAVED_MSRS: &[u32] = &[
    MSR_TSC,
    0x174,       // SYSENTER_CS
    0x175,       // SYSENTER_ESP
    0x176,       // SYSENTER_EIP
    0x277,       // PAT
    0xc000_0081, // STAR
    0xc000_0082, // LSTAR
    0xc000_0083, // CSTAR
    0xc000_0084, // SFMASK
    0xc000_0102, // KERNEL_GS_BASE
    MSR_TSC_DEADLINE,
];

/// One vCPU's state.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct VcpuState {
    regs: kvm_regs,
    sregs: kvm_sregs,
    xsave: kvm_xsave,
    xcrs: kvm_xcrs,
    debugregs: kvm_debugregs,
    lapic: kvm_lapic_state,
    mp_state: kvm_mp_state,
    events: kvm_vcpu_events,
    /// (index, value) of each of [`SAVED_MSRS`] KVM reported.
    msrs: Vec<(u32, u64)>,
}

impl VcpuState {
    /// Reads `vcpu`'s state. The vCPU must be stopped in an exit whose
    /// instruction KVM has completed (see [`complete_pending_io`]).
    ///
    /// # Errors
    /// When KVM refuses one of the reads.
    pub fn save(vcpu: &VcpuFd) -> Result<Self, KvmError> {
        let mut msrs = Msrs::from_entries(
            &SAVED_MSRS
                .iter()
                .map(|&index| kvm_msr_entry {
                    index,
                    ..Default::default()
                })
                .collect::<Vec<_>>(),
        )
        .map_err(|_| KvmError::MsrList(SAVED_MSRS.len()))?;
        let read = vcpu
            .get_msrs(&mut msrs)
            .map_err(KvmError::ioctl("KVM_GET_MSRS"))?;
        Ok(Self {
            regs: vcpu.get_regs().map_err(KvmError::ioctl("KVM_GET_REGS"))?,
            sregs: vcpu.get_sregs().map_err(KvmError::ioctl("KVM_GET_SREGS"))?,
            xsave: vcpu.get_xsave().map_err(KvmError::ioctl("KVM_GET_XSAVE"))?,
            xcrs: vcpu.get_xcrs().map_err(KvmError::ioctl("KVM_GET_XCRS"))?,
            debugregs: vcpu
                .get_debug_regs()
                .map_err(KvmError::ioctl("KVM_GET_DEBUGREGS"))?,
            lapic: vcpu.get_lapic().map_err(KvmError::ioctl("KVM_GET_LAPIC"))?,
            mp_state: vcpu
                .get_mp_state()
                .map_err(KvmError::ioctl("KVM_GET_MP_STATE"))?,
            events: vcpu
                .get_vcpu_events()
                .map_err(KvmError::ioctl("KVM_GET_VCPU_EVENTS"))?,
            msrs: msrs.as_slice()[..read]
                .iter()
                .map(|e| (e.index, e.data))
                .collect(),
        })
    }

    /// Writes the state into `vcpu` (whose CPUID is already set).
    /// `resume` adjusts the general registers first (the values the
    /// restored kernel is handed).
    ///
    /// # Errors
    /// When KVM refuses one of the writes.
    pub fn restore(
        &self,
        vcpu: &VcpuFd,
        resume: impl FnOnce(&mut kvm_regs),
    ) -> Result<(), KvmError> {
        vcpu.set_sregs(&self.sregs)
            .map_err(KvmError::ioctl("KVM_SET_SREGS"))?;
        let mut regs = self.regs;
        resume(&mut regs);
        vcpu.set_regs(&regs)
            .map_err(KvmError::ioctl("KVM_SET_REGS"))?;
        // SAFETY: the area came from KVM_GET_XSAVE of a vCPU with the same
        // CPUID (checked by the snapshot's reader), in KVM's own layout.
        unsafe { vcpu.set_xsave(&self.xsave) }.map_err(KvmError::ioctl("KVM_SET_XSAVE"))?;
        vcpu.set_xcrs(&self.xcrs)
            .map_err(KvmError::ioctl("KVM_SET_XCRS"))?;
        vcpu.set_debug_regs(&self.debugregs)
            .map_err(KvmError::ioctl("KVM_SET_DEBUGREGS"))?;
        vcpu.set_lapic(&self.lapic)
            .map_err(KvmError::ioctl("KVM_SET_LAPIC"))?;
        let entries: Vec<kvm_msr_entry> = self
            .msrs
            .iter()
            .map(|&(index, data)| kvm_msr_entry {
                index,
                data,
                ..Default::default()
            })
            .collect();
        let msrs = Msrs::from_entries(&entries).map_err(|_| KvmError::MsrList(entries.len()))?;
        let written = vcpu
            .set_msrs(&msrs)
            .map_err(KvmError::ioctl("KVM_SET_MSRS"))?;
        if written != entries.len() {
            return Err(KvmError::Refused {
                what: format!("MSR {:#x}", entries[written].index),
            });
        }
        vcpu.set_mp_state(self.mp_state)
            .map_err(KvmError::ioctl("KVM_SET_MP_STATE"))?;
        vcpu.set_vcpu_events(&self.events)
            .map_err(KvmError::ioctl("KVM_SET_VCPU_EVENTS"))?;
        Ok(())
    }
}

/// Lets KVM finish the instruction `vcpu` exited on (an `OUT` whose exit
/// kiln handled): KVM_RUN with `immediate_exit` set completes it and
/// returns at once, so the saved RIP is past it.
///
/// # Errors
/// When KVM_RUN fails other than by returning at once.
pub fn complete_pending_io(vcpu: &mut VcpuFd) -> Result<(), KvmError> {
    vcpu.set_kvm_immediate_exit(1);
    let result = vcpu.run().map(|_| ());
    vcpu.set_kvm_immediate_exit(0);
    match result {
        Err(e) if e.errno() == libc::EINTR => Ok(()),
        Err(e) => Err(KvmError::Ioctl {
            ioctl: "KVM_RUN",
            source: e,
        }),
        Ok(()) => Ok(()),
    }
}
