//! Each CPU's own area, reached through the GS base.
//!
//! The program runs at the kernel's privilege level and the SYSCALL entry
//! arrives on the program's stack, so the entry code needs a per-CPU place
//! it can reach with no free register: `gs:[offset]`. On PVM neither
//! RDPID nor the TSC_AUX MSR is offered to the guest, and SWAPGS traps, so
//! the GS base belongs to the kernel for good: a program cannot set its own
//! (arch_prctl(ARCH_SET_GS) fails with EINVAL, and Linux programs on x86-64
//! use FS for their thread pointer).

use core::arch::asm;

use super::cpu;

/// Most CPUs the kernel runs on (the boot contract's PVM page area).
pub const MAX_CPUS: usize = kiln_boot::layout::MAX_VCPUS as usize;

/// One CPU's area. The entry assembly uses the `OFFSET_*` constants, so
/// the layout is fixed.
#[repr(C, align(64))]
pub struct CpuArea {
    /// The area's own address (`gs:[0]`), for Rust code to find it.
    self_ptr: u64,
    /// The program's stack pointer at its last system call.
    user_rsp: u64,
    /// Top of the running thread's kernel stack.
    kstack_top: u64,
    /// On PVM, the address of this vCPU's interrupt-flag byte (0 elsewhere).
    pv_irq_flag: u64,
    /// This CPU's index (0 is the boot CPU; also its APIC ID).
    index: u64,
    /// On PVM, this vCPU's registration page (guest-physical; 0 elsewhere).
    pv_page: u64,
}

/// `CpuArea::user_rsp`.
pub const OFFSET_USER_RSP: usize = core::mem::offset_of!(CpuArea, user_rsp);
/// `CpuArea::kstack_top`.
pub const OFFSET_KSTACK_TOP: usize = core::mem::offset_of!(CpuArea, kstack_top);
/// `CpuArea::pv_irq_flag`.
pub const OFFSET_PV_IRQ_FLAG: usize = core::mem::offset_of!(CpuArea, pv_irq_flag);
const OFFSET_INDEX: usize = core::mem::offset_of!(CpuArea, index);
const OFFSET_PV_PAGE: usize = core::mem::offset_of!(CpuArea, pv_page);

const EMPTY: CpuArea = CpuArea {
    self_ptr: 0,
    user_rsp: 0,
    kstack_top: 0,
    pv_irq_flag: 0,
    index: 0,
    pv_page: 0,
};

pub(super) static mut AREAS: [CpuArea; MAX_CPUS] = [EMPTY; MAX_CPUS];

/// Bytes from one CPU's area to the next.
pub(super) const AREA_SIZE: usize = core::mem::size_of::<CpuArea>();

const MSR_GS_BASE: u32 = 0xc000_0101;

/// Sets CPU `index`'s area up and points this CPU's GS base at it (unless
/// kiln-vmm did, [`super::preset`]). Each CPU calls it once, first thing;
/// `pv_page` is its PVM registration page (0 when not on PVM).
pub fn init(index: usize, pv_page: u64) {
    assert!(index < MAX_CPUS, "CPU index {index} beyond {MAX_CPUS}");
    // SAFETY: each CPU writes only its own area, once, before anything
    // reads it through GS; GS_BASE exists on every x86-64 CPU and the
    // kernel alone uses it (see the module comment).
    unsafe {
        let area = &raw mut AREAS[index];
        (*area).self_ptr = area as u64;
        (*area).index = index as u64;
        (*area).pv_page = pv_page;
        (*area).pv_irq_flag = if pv_page != 0 {
            super::paging::phys_to_virt(pv_page) as u64
        } else {
            0
        };
        if !super::preset::loaded() {
            cpu::wrmsr(MSR_GS_BASE, area as u64);
        }
    }
}

/// Reads one word of the running CPU's area.
fn read(offset: usize) -> u64 {
    let v: u64;
    // SAFETY: `init` pointed GS at this CPU's area, which is larger than
    // every offset used; reading it has no side effects.
    unsafe {
        asm!("mov {}, gs:[{}]", out(reg) v, in(reg) offset, options(nostack, preserves_flags, readonly))
    }
    v
}

/// The running CPU's index.
pub fn index() -> usize {
    read(OFFSET_INDEX) as usize
}

/// The running vCPU's PVM interrupt-flag byte's address (0 off PVM).
pub fn pv_irq_flag() -> u64 {
    read(OFFSET_PV_IRQ_FLAG)
}

/// The running vCPU's PVM registration page (0 off PVM).
pub fn pv_page() -> u64 {
    read(OFFSET_PV_PAGE)
}

/// Sets the kernel stack the next system call or program event on this
/// CPU uses.
pub fn set_kernel_stack(top: u64) {
    // SAFETY: as in `read`; the entry code reads this word only on this
    // CPU, never while this store runs.
    unsafe {
        asm!("mov gs:[{}], {}", in(reg) OFFSET_KSTACK_TOP, in(reg) top, options(nostack, preserves_flags))
    }
}
