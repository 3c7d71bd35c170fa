//! The CPU and machine layer. The rest of the kernel uses only what this
//! module re-exports, never `arch::x86_64::…` directly.

mod x86_64;

pub use self::x86_64::apic::TIMER_VECTOR;
pub use self::x86_64::cpu::{program_cpuid_table, rdrand, rdtsc, set_cpu_count};
pub use self::x86_64::fpu::{reset_control as reset_fpu_control, FpuState};
pub use self::x86_64::paging::{
    phys_to_virt, pte, set_split_frames, virt_to_phys, PageTables, LARGE_PAGE,
};
pub use self::x86_64::percpu::{index as cpu_index, set_kernel_stack, MAX_CPUS};
pub use self::x86_64::platform;
pub use self::x86_64::signal as sigctx;
pub use self::x86_64::smp::RESCHEDULE_VECTOR;
pub use self::x86_64::smp::{online as cpus_online, start_cpus};
pub use self::x86_64::snapshot::{
    on_resume as on_snapshot_resume, serve as serve_snapshot, take as take_snapshot, Resumed,
    JOIN_VECTOR as SNAPSHOT_JOIN_VECTOR,
};
pub use self::x86_64::tlb::serve as serve_flush_requests;
pub use self::x86_64::tlb::FLUSH_VECTOR;
pub use self::x86_64::traps::{
    idle_fixup, prepare_kernel_context, prepare_new_thread, program_return_slot, switch, Frame,
    VECTOR_SYSCALL,
};

/// Sends CPU `index` the reschedule IPI.
pub fn send_reschedule(index: usize) {
    self::x86_64::smp::send(index, RESCHEDULE_VECTOR);
}

/// The kernel entry rewritten system-call sites jump to.
pub fn syscall_call_entry() -> u64 {
    self::x86_64::traps::syscall_call_entry_address()
}
pub use self::x86_64::ioapic::route as route_interrupt_line;
pub use self::x86_64::{
    cpuinfo, drop_identity_map, enable_interrupt_controller, enter_program, features, flavour,
    fs_base, idle, init, interrupt_done, map_uncached, set_fs_base, timer_arm_at, Features,
    Flavour, PLATFORM_MULTIBOOT2, PLATFORM_PVH,
};

/// The physical address of the running CPU's top-level page table.
pub fn active_page_table() -> u64 {
    self::x86_64::tlb::active()
}

/// Makes `pml4` the running CPU's address space (a process switch).
pub fn load_page_table(pml4: u64) {
    if active_page_table() != pml4 {
        // SAFETY: every process's top-level table shares the kernel's upper
        // half (`new_page_table_root`), so the kernel stays mapped.
        unsafe { self::x86_64::cpu::write_cr3(pml4) }
        self::x86_64::tlb::loaded(pml4);
    }
}

/// Whether some CPU has `pml4` loaded (its tables cannot be freed yet).
pub fn page_table_in_use(pml4: u64) -> bool {
    self::x86_64::tlb::in_use(pml4)
}

/// Flushes the TLB's entries for the program's half (a CR3 reload), after
/// page-table changes too many to flush one by one — here and on every
/// other CPU that uses the same tables.
pub fn flush_tlb() {
    // SAFETY: reloading the active table changes no mapping.
    unsafe { self::x86_64::cpu::write_cr3(active_page_table()) }
    self::x86_64::tlb::shootdown(active_page_table());
}

/// Runs `f`, which changes many entries of the running CPU's page tables,
/// with one flush of the other CPUs at its end.
pub fn tlb_batch<R>(f: impl FnOnce() -> R) -> R {
    self::x86_64::tlb::batch(f)
}

/// A new top-level page table for a process: empty lower half, the
/// running one's upper (kernel) half. `None` without a free frame.
pub fn new_page_table_root() -> Option<u64> {
    let pml4 = crate::mm::frame::alloc_table()?;
    let active = active_page_table();
    // SAFETY: both are page-table frames in the direct map; the new one is
    // ours alone, the active one is only read.
    unsafe {
        let from = &*(phys_to_virt(active) as *const [u64; 512]);
        let to = &mut *(phys_to_virt(pml4) as *mut [u64; 512]);
        to[256..].copy_from_slice(&from[256..]);
    }
    Some(pml4)
}
