//! CPU-specific VM setup. kiln runs on x86-64 only; this is the one place
//! that names the architecture.

mod x86_64;

pub use self::x86_64::cpu_preset;
pub use self::x86_64::cpuid::{guest_cpuid, has_fsgsbase};
pub use self::x86_64::layout;
pub use self::x86_64::learnt_cpuid;
pub use self::x86_64::paging::{write_boot_page_tables, BootTables};
pub use self::x86_64::regs::{boot_regs, boot_sregs, detect_flavour, guest_tsc, Flavour};
pub use self::x86_64::vcpu_state::{complete_pending_io, VcpuState};
