//! VM and vCPU state on top of kvm-ioctls: the process-wide KVM handle,
//! the local APIC, device interrupts and notifications, guest memory, the
//! vCPU run loop, the threads of a VM with several vCPUs, and KVM's
//! statistics.

pub mod crew;
pub mod irq;
pub mod irqchip;
pub mod kvm;
pub mod memory;
pub mod stats;
pub mod teardown;
pub mod vcpu;
pub mod working_set;
