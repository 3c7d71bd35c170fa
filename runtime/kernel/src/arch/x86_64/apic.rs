//! The local APIC and its timer (Intel SDM vol. 3A ch. 11): the kernel's
//! only interrupt source, used one-shot for sleeps, timers and time-slice
//! preemption. x2APIC (MSRs) when the CPU has it (KVM with kiln-vmm's
//! in-kernel irqchip), else xAPIC registers mapped at 0xfee00000 (QEMU's
//! TCG). The timer runs in TSC-deadline mode when available, else one-shot
//! counting at a rate calibrated against the TSC. Nothing is armed until
//! the kernel needs a wake-up, so a program that never sleeps takes no
//! interrupts at all.

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use super::cpu::{self, rdtsc};

/// The timer's interrupt vector.
pub const TIMER_VECTOR: u8 = 0x40;
/// Spurious-interrupt vector.
pub const SPURIOUS_VECTOR: u8 = 0xff;

const MSR_APIC_BASE: u32 = 0x1b;
const MSR_TSC_DEADLINE: u32 = 0x6e0;
const XAPIC_PHYS: u64 = 0xfee0_0000;

const REG_EOI: u32 = 0xb0;
const REG_ICR_LOW: u32 = 0x300;
const REG_ICR_HIGH: u32 = 0x310;
const REG_SVR: u32 = 0xf0;
const REG_LVT_TIMER: u32 = 0x320;
const REG_INITIAL_COUNT: u32 = 0x380;
const REG_CURRENT_COUNT: u32 = 0x390;
const REG_DIVIDE: u32 = 0x3e0;

/// The spurious-interrupt vector register: APIC enabled.
pub(super) const X2APIC_SVR: u32 = 0x100 | SPURIOUS_VECTOR as u32;
/// The LVT timer register in TSC-deadline mode.
pub(super) const DEADLINE_LVT_TIMER: u32 = (0b10 << 17) | TIMER_VECTOR as u32;

const MODE_NONE: u8 = 0;
const MODE_X2APIC: u8 = 1;
const MODE_XAPIC: u8 = 2;

/// How the registers are reached (set once by `init`).
static MODE: AtomicU8 = AtomicU8::new(MODE_NONE);
/// Whether the timer has TSC-deadline mode.
static DEADLINE_MODE: AtomicU8 = AtomicU8::new(0);
/// Virtual address of the xAPIC registers.
static XAPIC_BASE: AtomicU64 = AtomicU64::new(0);
/// One-shot mode: timer counts per 1000 TSC ticks.
static COUNTS_PER_KTICK: AtomicU64 = AtomicU64::new(0);

fn read(reg: u32) -> u32 {
    match MODE.load(Ordering::Relaxed) {
        MODE_X2APIC => cpu::rdmsr(0x800 + (reg >> 4)) as u32,
        _ => {
            let base = XAPIC_BASE.load(Ordering::Relaxed);
            // SAFETY: `base` maps the APIC's register page (uncached); the
            // register offsets are the SDM's.
            unsafe { core::ptr::read_volatile((base + u64::from(reg)) as *const u32) }
        }
    }
}

fn write(reg: u32, value: u32) {
    match MODE.load(Ordering::Relaxed) {
        // SAFETY: x2APIC register MSRs exist once x2APIC mode is on.
        MODE_X2APIC => unsafe { cpu::wrmsr(0x800 + (reg >> 4), u64::from(value)) },
        _ => {
            let base = XAPIC_BASE.load(Ordering::Relaxed);
            // SAFETY: as in `read`.
            unsafe { core::ptr::write_volatile((base + u64::from(reg)) as *mut u32, value) }
        }
    }
}

/// Enables the local APIC and sets the timer up (disarmed). `map_xapic`
/// maps the xAPIC page and returns its virtual address when x2APIC is
/// missing. Returns false when there is no APIC at all.
pub fn init(map_xapic: impl FnOnce(u64) -> Option<u64>) -> bool {
    let l1 = cpu::cpuid(1, 0);
    if l1.edx & (1 << 9) == 0 {
        return false;
    }
    if super::preset::apic() {
        // kiln-vmm set x2APIC mode, the spurious vector and the timer's
        // TSC-deadline mode up already.
        MODE.store(MODE_X2APIC, Ordering::Relaxed);
        DEADLINE_MODE.store(1, Ordering::Relaxed);
        return true;
    }
    let base = cpu::rdmsr(MSR_APIC_BASE);
    if l1.ecx & (1 << 21) != 0 {
        // SAFETY: enabling x2APIC mode (bits 10 and 11) on a CPU that has it.
        unsafe { cpu::wrmsr(MSR_APIC_BASE, base | (1 << 11) | (1 << 10)) };
        MODE.store(MODE_X2APIC, Ordering::Relaxed);
    } else {
        let Some(va) = map_xapic(XAPIC_PHYS) else {
            return false;
        };
        XAPIC_BASE.store(va, Ordering::Relaxed);
        // SAFETY: setting the global enable bit of the APIC base MSR.
        unsafe { cpu::wrmsr(MSR_APIC_BASE, base | (1 << 11)) };
        MODE.store(MODE_XAPIC, Ordering::Relaxed);
    }
    write(REG_SVR, X2APIC_SVR);
    let deadline = l1.ecx & (1 << 24) != 0;
    DEADLINE_MODE.store(u8::from(deadline), Ordering::Relaxed);
    if deadline {
        write(REG_LVT_TIMER, DEADLINE_LVT_TIMER);
    } else {
        // Calibrate the one-shot counter against the TSC (masked meanwhile).
        write(REG_LVT_TIMER, (1 << 16) | u32::from(TIMER_VECTOR));
        write(REG_DIVIDE, 0b1011); // divide by 1
        write(REG_INITIAL_COUNT, u32::MAX);
        let start = rdtsc();
        while rdtsc() - start < 2_000_000 {}
        let counted = u64::from(u32::MAX - read(REG_CURRENT_COUNT));
        write(REG_INITIAL_COUNT, 0);
        COUNTS_PER_KTICK.store((counted * 1000 / 2_000_000).max(1), Ordering::Relaxed);
        write(REG_LVT_TIMER, u32::from(TIMER_VECTOR));
    }
    true
}

/// Enables the local APIC of a CPU other than the boot CPU, in the mode
/// `init` chose, with its timer disarmed (the boot CPU calibrated the
/// one-shot rate already).
pub fn init_this_cpu() -> bool {
    if super::preset::apic() {
        return MODE.load(Ordering::Relaxed) == MODE_X2APIC;
    }
    let base = cpu::rdmsr(MSR_APIC_BASE);
    match MODE.load(Ordering::Relaxed) {
        // SAFETY: as in `init`: x2APIC mode on a CPU that has it.
        MODE_X2APIC => unsafe { cpu::wrmsr(MSR_APIC_BASE, base | (1 << 11) | (1 << 10)) },
        // SAFETY: the global enable bit of the APIC base MSR.
        MODE_XAPIC => unsafe { cpu::wrmsr(MSR_APIC_BASE, base | (1 << 11)) },
        _ => return false,
    }
    write(REG_SVR, X2APIC_SVR);
    if DEADLINE_MODE.load(Ordering::Relaxed) != 0 {
        write(REG_LVT_TIMER, DEADLINE_LVT_TIMER);
    } else {
        write(REG_DIVIDE, 0b1011);
        write(REG_LVT_TIMER, u32::from(TIMER_VECTOR));
    }
    true
}

/// Sends interrupt `vector` to the CPU whose APIC ID is `apic_id` (fixed
/// delivery, physical destination).
pub fn send_ipi(apic_id: u32, vector: u8) {
    match MODE.load(Ordering::Relaxed) {
        MODE_X2APIC => {
            // SAFETY: the x2APIC ICR (one 64-bit MSR); the destination is
            // in the high half.
            unsafe { cpu::wrmsr(0x830, (u64::from(apic_id) << 32) | u64::from(vector)) }
        }
        MODE_XAPIC => {
            write(REG_ICR_HIGH, apic_id << 24);
            write(REG_ICR_LOW, u32::from(vector));
        }
        _ => {}
    }
}

/// Starts the CPU whose APIC ID is `apic_id` at real-mode address
/// `page << 12` (INIT, then two STARTUPs, with the waits the SDM asks for).
pub fn start_cpu(apic_id: u32, page: u8) {
    let icr = |low: u32| match MODE.load(Ordering::Relaxed) {
        // SAFETY: the x2APIC ICR; destination in the high half.
        MODE_X2APIC => unsafe { cpu::wrmsr(0x830, (u64::from(apic_id) << 32) | u64::from(low)) },
        MODE_XAPIC => {
            write(REG_ICR_HIGH, apic_id << 24);
            write(REG_ICR_LOW, low);
        }
        _ => {}
    };
    let wait_us = |us: u64| {
        let start = rdtsc();
        let ticks = crate::time::tsc_khz().max(1) * us / 1000;
        while rdtsc() - start < ticks {
            core::hint::spin_loop();
        }
    };
    icr(0x4500); // INIT, level assert
    wait_us(10_000);
    for _ in 0..2 {
        icr(0x4600 | u32::from(page)); // STARTUP
        wait_us(200);
    }
}

/// Signals the end of an interrupt.
pub fn eoi() {
    write(REG_EOI, 0);
}

/// Raises the timer interrupt when the TSC reaches `tsc` (or at once, if
/// it has).
pub fn arm_at(tsc: u64) {
    if MODE.load(Ordering::Relaxed) == MODE_NONE {
        return;
    }
    if DEADLINE_MODE.load(Ordering::Relaxed) != 0 {
        // SAFETY: the TSC-deadline MSR exists in TSC-deadline mode.
        unsafe { cpu::wrmsr(MSR_TSC_DEADLINE, tsc.max(1)) };
    } else {
        let ticks = tsc.saturating_sub(rdtsc());
        let counts = (ticks / 1000)
            .saturating_mul(COUNTS_PER_KTICK.load(Ordering::Relaxed))
            .clamp(1, u64::from(u32::MAX));
        write(REG_INITIAL_COUNT, counts as u32);
    }
}
