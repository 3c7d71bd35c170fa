//! VM and vCPU state on top of kvm-ioctls: the process-wide KVM handle,
//! the local APIC, guest memory, the vCPU run loop and KVM's statistics.

pub mod irqchip;
pub mod kvm;
pub mod memory;
pub mod stats;
pub mod vcpu;
