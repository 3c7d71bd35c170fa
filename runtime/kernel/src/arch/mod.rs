//! The CPU and machine layer. The rest of the kernel uses only what this
//! module re-exports, never `arch::x86_64::…` directly.

mod x86_64;

pub use self::x86_64::apic::TIMER_VECTOR;
pub use self::x86_64::cpu::{rdrand, rdtsc};
pub use self::x86_64::fpu::{reset_control as reset_fpu_control, FpuState};
pub use self::x86_64::paging::{phys_to_virt, pte, virt_to_phys, PageTables};
pub use self::x86_64::platform;
pub use self::x86_64::signal as sigctx;
pub use self::x86_64::traps::{
    idle_fixup, prepare_new_thread, set_kernel_stack, switch, Frame, VECTOR_SYSCALL,
};

/// The kernel entry rewritten system-call sites jump to.
pub fn syscall_call_entry() -> u64 {
    self::x86_64::traps::syscall_call_entry_address()
}
pub use self::x86_64::ioapic::route as route_interrupt_line;
pub use self::x86_64::{
    cpuinfo, drop_identity_map, enable_interrupt_controller, enter_program, features, flavour,
    fs_base, gs_base, idle, init, interrupt_done, map_uncached, set_fs_base, set_gs_base,
    timer_arm_at, timer_disarm, Features, Flavour, PLATFORM_PVH,
};

/// The physical address of the active top-level page table.
pub fn active_page_table() -> u64 {
    self::x86_64::cpu::read_cr3() & pte::ADDR
}
