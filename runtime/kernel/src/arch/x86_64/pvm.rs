//! The rules of the PVM flavour of KVM (kvm_pvm, this development host;
//! measured in the project's PVM notes), in one place:
//!
//! * Guest CPL0 code is emulated (~1 µs an instruction) until the vCPU
//!   registers a page of its own with one `WRMSR` [`REGISTER_MSR`] from the
//!   guest (the VMM cannot do it). `_start` does that before anything else
//!   (see `entry.rs`, which uses these constants); afterwards the kernel,
//!   the program, exceptions and interrupts all run natively.
//! * With [`FLAG_CR2_CELL`] in the registration value, the host stores each
//!   page fault's address at page + [`CR2_CELL`], which saves the trapping
//!   `mov cr2` on every fault.
//! * Byte 0 of the page is the interrupt flag (STI/CLI do nothing): 1 lets
//!   interrupts in, and delivery clears it like an interrupt gate. No
//!   interrupt source is enabled yet, so the kernel leaves it at 0.
//! * PML4 slot 256 faults on instruction fetch: the kernel's layout avoids
//!   it (`kiln_boot::vm`).

use super::paging::phys_to_virt;

/// The registration MSR.
pub const REGISTER_MSR: u32 = kiln_boot::msr::PVM_REGISTER;
/// Registration flag: report page-fault addresses in the page.
pub const FLAG_CR2_CELL: u64 = 0x10;
/// Offset of the page-fault address cell in the registration page.
pub const CR2_CELL: u64 = 8;

/// The address of the last page fault, from the registration page at `page`.
pub fn fault_address(page: u64) -> u64 {
    // SAFETY: the page lies in RAM reserved by the boot contract and is
    // reached through the direct map; the host writes it only while this
    // vCPU is stopped delivering a fault.
    unsafe { core::ptr::read_volatile(phys_to_virt(page + CR2_CELL) as *const u64) }
}
