//! x86-64: guest-physical layout, boot page tables, CPUID and registers.

pub mod cpu_preset;
pub mod cpuid;
pub mod layout;
pub mod learnt_cpuid;
pub mod paging;
pub mod regs;
pub mod vcpu_state;
