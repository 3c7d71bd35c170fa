//! CPU state kiln-vmm loads into each vCPU before the kernel runs.
//!
//! On PVM every instruction that loads a descriptor table, a task
//! register, a model-specific register or a control register is emulated
//! by the host (~20 µs each). The kernel therefore publishes the values it
//! would load — an ELF note, [`kiln_boot::CpuStateNote`] — and kiln-vmm,
//! which sets each vCPU's registers anyway, loads them with its own; boot
//! flag `CPU_PRESET` says it did, and the preset page tells CR3, CR4,
//! XCR0 and whether the local APIC is set up. Booted any other way (PVH, multiboot2, an older kiln-vmm) the
//! kernel loads everything itself, as before.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kiln_boot::{CpuPreset, CpuStateNote};

use super::apic;
use super::gdt;
use super::percpu;
use super::traps;

// The note: name "kiln", type 1, then the fields of `CpuStateNote` in
// order (the linker fills in the addresses).
core::arch::global_asm!(
    r#"
    .section .note.kiln.cpu, "a"
    .balign 4
    .long 5
    .long {size}
    .long {note_type}
    .asciz "kiln"
    .balign 4
    .quad {version}
    .quad {max_cpus}
    .quad {gdt}
    .quad {gdt_limit}
    .quad {idt}
    .quad {idt_limit}
    .quad {tss}
    .quad {tss_stride}
    .quad {tss_limit}
    .quad {tss_selector}
    .quad 16
    .quad {star}
    .quad syscall_entry
    .quad {sfmask}
    .quad {areas}
    .quad {area_stride}
    .quad {apic_svr}
    .quad {apic_lvt_timer}
    .balign 4
    .text
    "#,
    size = const CpuStateNote::SIZE,
    note_type = const CpuStateNote::TYPE,
    version = const CpuStateNote::VERSION,
    max_cpus = const percpu::MAX_CPUS,
    gdt = sym gdt::GDT,
    gdt_limit = const gdt::GDT_LIMIT,
    idt = sym traps::IDT,
    idt_limit = const traps::IDT_LIMIT,
    tss = sym gdt::TSS,
    tss_stride = const gdt::TSS_SIZE,
    tss_limit = const gdt::TSS_SIZE - 1,
    tss_selector = const gdt::TSS_SELECTOR,
    star = const traps::STAR,
    sfmask = const traps::SFMASK,
    areas = sym percpu::AREAS,
    area_stride = const percpu::AREA_SIZE,
    apic_svr = const apic::X2APIC_SVR,
    apic_lvt_timer = const apic::DEADLINE_LVT_TIMER,
);

// The note above has one `.quad` per field.
const _: () = assert!(CpuStateNote::SIZE == 18 * 8);

/// Whether kiln-vmm loaded the note's state (set once, by the boot CPU,
/// before any other CPU starts).
static PRESET: AtomicBool = AtomicBool::new(false);
static CR3: AtomicU64 = AtomicU64::new(0);
static CR4: AtomicU64 = AtomicU64::new(0);
static XCR0: AtomicU64 = AtomicU64::new(0);
static APIC: AtomicBool = AtomicBool::new(false);

/// Takes kiln-vmm's word that every vCPU starts with the note's state and
/// `preset`'s registers.
pub fn adopt(preset: &CpuPreset) {
    CR3.store(preset.cr3, Ordering::Relaxed);
    CR4.store(preset.cr4, Ordering::Relaxed);
    XCR0.store(preset.xcr0, Ordering::Relaxed);
    APIC.store(preset.apic == 1, Ordering::Relaxed);
    PRESET.store(true, Ordering::Release);
}

/// Whether the descriptor tables, the task register, the SYSCALL MSRs and
/// the GS base are loaded already.
pub fn loaded() -> bool {
    PRESET.load(Ordering::Acquire)
}

/// CR3 as this CPU started, when known without reading it.
pub fn cr3() -> Option<u64> {
    loaded().then(|| CR3.load(Ordering::Relaxed))
}

/// CR4 as this CPU started, when known without reading it.
pub fn cr4() -> Option<u64> {
    loaded().then(|| CR4.load(Ordering::Relaxed))
}

/// Whether this CPU's local APIC started in x2APIC mode with the note's
/// spurious vector and TSC-deadline timer.
pub fn apic() -> bool {
    loaded() && APIC.load(Ordering::Relaxed)
}

/// XCR0 as this CPU started (0: not set), when known.
pub fn xcr0() -> Option<u64> {
    loaded().then(|| XCR0.load(Ordering::Relaxed))
}
