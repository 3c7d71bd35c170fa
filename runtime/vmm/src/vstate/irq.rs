//! Device interrupts and notifications wired into KVM: each virtio device
//! gets a GSI routed as an MSI (fixed delivery, edge) with its vector to
//! the local APIC of vCPU 0, and an irqfd on that GSI; each queue gets an
//! ioeventfd on its device's QueueNotify register, matching the queue
//! index. Neither a kick nor an interrupt then goes through the VMM's vCPU
//! thread.

use kvm_bindings::{kvm_irq_routing_entry, KvmIrqRouting, KVM_IRQ_ROUTING_MSI};
use kvm_ioctls::{IoEventAddress, VmFd};
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

use super::kvm::KvmError;

/// First GSI kiln uses for MSIs (past the 24 IOAPIC pins a full irqchip
/// would own).
pub const FIRST_GSI: u32 = 24;
/// The MSI address of local APIC 0 (Intel SDM vol. 3, 11.11.1).
const MSI_ADDRESS_APIC0: u32 = 0xfee0_0000;

/// One device's interrupt: its GSI, vector and irqfd.
pub struct MsiRoute<'a> {
    /// The GSI.
    pub gsi: u32,
    /// The vector the guest receives.
    pub vector: u32,
    /// Signalling this raises the interrupt.
    pub irqfd: &'a EventFd,
}

/// Routes every GSI of `routes` as an MSI and binds its irqfd.
///
/// # Errors
/// When KVM refuses the routing table or an irqfd.
pub fn route_msis(vm: &VmFd, routes: &[MsiRoute<'_>]) -> Result<(), KvmError> {
    if routes.is_empty() {
        return Ok(());
    }
    let mut table =
        KvmIrqRouting::new(routes.len()).map_err(|_| KvmError::Routing(routes.len()))?;
    for (entry, route) in table.as_mut_slice().iter_mut().zip(routes) {
        let mut e = kvm_irq_routing_entry {
            gsi: route.gsi,
            type_: KVM_IRQ_ROUTING_MSI,
            ..Default::default()
        };
        e.u.msi.address_lo = MSI_ADDRESS_APIC0;
        e.u.msi.address_hi = 0;
        e.u.msi.data = route.vector;
        *entry = e;
    }
    vm.set_gsi_routing(&table)
        .map_err(KvmError::ioctl("KVM_SET_GSI_ROUTING"))?;
    for route in routes {
        vm.register_irqfd(route.irqfd, route.gsi)
            .map_err(KvmError::ioctl("KVM_IRQFD"))?;
    }
    Ok(())
}

/// Signals `event` when the guest writes the 32-bit value `queue` to
/// `notify` (a device's QueueNotify register).
///
/// # Errors
/// When KVM refuses the ioeventfd.
pub fn notify_event(
    vm: &VmFd,
    event: &EventFd,
    notify: GuestAddress,
    queue: u32,
) -> Result<(), KvmError> {
    vm.register_ioevent(event, &IoEventAddress::Mmio(notify.0), queue)
        .map_err(KvmError::ioctl("KVM_IOEVENTFD"))
}
