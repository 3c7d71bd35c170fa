//! The two ways this kernel runs on a CPU: natively (QEMU, KVM on VMX/SVM)
//! or on the PVM flavour of KVM (PVM.md). This is the only place that
//! knows the difference; everything else asks [`Flavour`].
//!
//! On PVM the vCPU registered its PV page in `_start` (before any other
//! instruction, since until then every instruction is emulated). The page's
//! byte 0 is the virtual interrupt flag; with registration flag 0x10 the
//! host writes each page fault's address at offset 8, which saves the
//! trapping `mov cr2` on every fault.

use super::cpu;
use super::paging::phys_to_virt;

/// How the CPU is virtualised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// Ordinary x86-64 semantics.
    Native,
    /// The PVM host: `page` is this vCPU's registration page.
    Pvm {
        /// Guest-physical address of the registration page.
        page: u64,
    },
}

impl Flavour {
    /// The address of the last page fault.
    pub fn fault_address(self) -> u64 {
        match self {
            Flavour::Native => cpu::read_cr2(),
            // SAFETY: the page lies in RAM reserved by the boot contract and
            // is reached through the direct map; the host writes it only
            // while this vCPU is stopped in a fault delivery.
            Flavour::Pvm { page } => unsafe {
                core::ptr::read_volatile(phys_to_virt(page + 8) as *const u64)
            },
        }
    }

    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Flavour::Native => "native",
            Flavour::Pvm { .. } => "pvm",
        }
    }
}
