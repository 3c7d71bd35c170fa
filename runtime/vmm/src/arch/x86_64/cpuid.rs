//! The guest's CPUID: what KVM supports (fetched once per process, it
//! costs ~0.4 ms), with the APIC ID of the vCPU filled in.

use kvm_bindings::CpuId;

/// CPUID for vCPU `index`, from the host-supported table.
pub fn guest_cpuid(supported: &CpuId, index: u8) -> CpuId {
    let mut cpuid = supported.clone();
    for e in cpuid.as_mut_slice() {
        match e.function {
            1 => {
                e.ebx = (e.ebx & 0x00ff_ffff) | (u32::from(index) << 24);
                e.ecx |= 1 << 31; // running under a hypervisor
                                  // The in-kernel LAPIC offers x2APIC and the TSC-deadline
                                  // timer whatever the host CPU reports.
                e.ecx |= (1 << 21) | (1 << 24);
            }
            0xb | 0x1f => e.edx = u32::from(index),
            _ => {}
        }
    }
    cpuid
}

/// Whether the CPUID table offers FSGSBASE (leaf 7, EBX bit 0).
pub fn has_fsgsbase(cpuid: &CpuId) -> bool {
    cpuid
        .as_slice()
        .iter()
        .any(|e| e.function == 7 && e.index == 0 && e.ebx & 1 != 0)
}
