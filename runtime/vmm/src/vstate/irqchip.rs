//! The guest's interrupt controller: only a local APIC, emulated in KVM.
//!
//! The guest needs its LAPIC timer (preemption, sleeps) and an idle HLT
//! that stays inside KVM until an interrupt wakes it. It needs no PIC and
//! no IOAPIC, so kiln asks for KVM's *split* irqchip (KVM_CAP_SPLIT_IRQCHIP)
//! with no IOAPIC routes: the full KVM_CREATE_IRQCHIP also registers the
//! PIC and IOAPIC on KVM's I/O buses, and unregistering them when the VM is
//! closed costs ~10 ms of SRCU grace periods (measured on PVM), which
//! dominated the VM's teardown.

use kvm_bindings::{kvm_enable_cap, KVM_CAP_SPLIT_IRQCHIP};
use kvm_ioctls::VmFd;

use super::kvm::KvmError;

/// Gives `vm` an in-kernel local APIC per vCPU. Must run before the first
/// vCPU is created.
///
/// # Errors
/// When KVM refuses both the split and the full irqchip.
pub fn create_local_apic(vm: &VmFd) -> Result<(), KvmError> {
    let cap = kvm_enable_cap {
        cap: KVM_CAP_SPLIT_IRQCHIP,
        // args[0]: number of IOAPIC routes reserved for userspace (none).
        args: [0, 0, 0, 0],
        ..Default::default()
    };
    if vm.enable_cap(&cap).is_ok() {
        return Ok(());
    }
    vm.create_irq_chip()
        .map_err(KvmError::ioctl("KVM_CREATE_IRQCHIP"))
}
