//! The two ways this kernel runs on a CPU: natively (QEMU, KVM on VMX/SVM)
//! or on the PVM flavour of KVM. The enum is chosen once at boot; the PVM
//! rules themselves live in `pvm.rs`. Nothing outside `arch/` asks which
//! flavour it is.

use super::{cpu, pvm};

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
            Flavour::Pvm { .. } => pvm::fault_address(super::percpu::pv_page()),
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
