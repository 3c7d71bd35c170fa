//! Everything specific to x86-64: descriptor tables, trap and syscall
//! entry, paging, the CPU flavour (native or PVM) and the boot platforms.

pub mod apic;
pub mod cpu;
mod cpuinfo;
mod entry;
pub mod flavour;
pub mod fpu;
mod gdt;
pub mod ioapic;
pub mod paging;
pub mod percpu;
pub mod platform;
mod preset;
mod pvm;
pub mod signal;
pub mod smp;
pub mod snapshot;
mod string;
pub mod tlb;
pub mod traps;

use core::arch::asm;

pub use entry::{PLATFORM_MULTIBOOT2, PLATFORM_PVH};
pub use flavour::Flavour;

/// CPU features the rest of the kernel asks about, read once at boot.
#[derive(Clone, Copy, Debug, Default)]
pub struct Features {
    /// RDRAND is available.
    pub rdrand: bool,
    /// WRFSBASE and friends are usable (CR4.FSGSBASE).
    pub fsgsbase: bool,
    /// CPUID.1:EDX, reported to the program as AT_HWCAP.
    pub hwcap: u64,
}

/// The CPU features read at boot.
pub fn features() -> Features {
    crate::state::BOOT
        .cpu
        .get()
        .map(|&(_, f)| f)
        .unwrap_or_default()
}

/// The CPU flavour chosen at boot.
pub fn flavour() -> Flavour {
    crate::state::BOOT
        .cpu
        .get()
        .map_or(Flavour::Native, |&(f, _)| f)
}

const CR4_FSGSBASE: u64 = 1 << 16;
const CR4_OSXSAVE: u64 = 1 << 18;

/// Sets up the boot CPU: its per-CPU area, descriptor tables, syscall
/// entry, FPU state.
pub fn init(flavour: Flavour) {
    let pv_page = match flavour {
        Flavour::Pvm { page } => page,
        Flavour::Native => 0,
    };
    percpu::init(0, pv_page);
    tlb::loaded(boot_cr3());
    gdt::init();
    traps::init_idt();
    traps::init_syscall();

    let (cr4, components) = init_cpu_registers();
    let leaf1 = cpu::cpuid(1, 0);
    fpu::init(components);
    let features = Features {
        rdrand: leaf1.ecx & (1 << 30) != 0,
        fsgsbase: cr4 & CR4_FSGSBASE != 0,
        hwcap: u64::from(leaf1.edx),
    };
    crate::state::BOOT.cpu.call_once(|| (flavour, features));
}

/// Turns on, on the running CPU, the CR4 features the kernel uses
/// (FSGSBASE, XSAVE) and the XSAVE components; returns the new CR4 and the
/// components (None without XSAVE). Every CPU calls it once.
pub fn init_cpu_registers() -> (u64, Option<u64>) {
    let leaf1 = cpu::cpuid(1, 0);
    let leaf7 = cpu::cpuid(7, 0);
    let mut cr4 = preset::cr4().unwrap_or_else(cpu::read_cr4);
    let mut new_cr4 = cr4;
    if leaf7.ebx & 1 != 0 {
        new_cr4 |= CR4_FSGSBASE;
    }
    let xsave = leaf1.ecx & (1 << 26) != 0;
    if xsave {
        new_cr4 |= CR4_OSXSAVE;
    }
    if new_cr4 != cr4 {
        // SAFETY: only bits whose CPUID feature flag is set are added.
        unsafe { cpu::write_cr4(new_cr4) };
        cr4 = new_cr4;
    }
    let components = xsave.then(|| {
        // x87, SSE, AVX and the AVX-512 state, as far as the CPU has them.
        let components = u64::from(cpu::cpuid(0xd, 0).eax) & 0xe7;
        if preset::xcr0() != Some(components) {
            // SAFETY: CR4.OSXSAVE is set above; the mask is within CPUID 0xD.
            unsafe { cpu::xsetbv0(components) };
        }
        components
    });
    (cr4, components)
}

/// The page table the running CPU started with (physical).
pub fn boot_cr3() -> u64 {
    preset::cr3().unwrap_or_else(cpu::read_cr3) & paging::pte::ADDR
}

/// Takes kiln-vmm's word for the CPU state it loaded into every vCPU
/// (boot flag `CPU_PRESET`): the boot CPU calls it before [`init`].
pub fn adopt_cpu_preset(preset: &kiln_boot::CpuPreset) {
    preset::adopt(preset);
}

/// The text of /proc/cpuinfo.
pub fn cpuinfo() -> alloc::string::String {
    cpuinfo::cpuinfo(crate::time::tsc_khz())
}

/// Sets the program's FS base (its thread pointer).
pub fn set_fs_base(v: u64) {
    if features().fsgsbase {
        // SAFETY: CR4.FSGSBASE is on; the kernel does not use FS.
        unsafe { cpu::wrfsbase(v) }
    } else {
        // SAFETY: IA32_FS_BASE exists on every x86-64 CPU.
        unsafe { cpu::wrmsr(0xc000_0100, v) }
    }
}

/// The program's FS base.
pub fn fs_base() -> u64 {
    if features().fsgsbase {
        // SAFETY: CR4.FSGSBASE is on.
        unsafe { cpu::rdfsbase() }
    } else {
        cpu::rdmsr(0xc000_0100)
    }
}

/// Sets the local APIC up (once): the timer and device interrupts need it.
/// Programs that never wait and have no devices pay nothing for it.
/// Returns whether it is usable.
pub fn enable_interrupt_controller() -> bool {
    static READY: spin::Once<bool> = spin::Once::new();
    *READY.call_once(|| {
        // xAPIC registers (QEMU without x2APIC).
        apic::init(map_uncached)
    })
}

/// Maps the device-register page at `phys` uncached at its direct-map
/// address (beyond RAM, or inside a large page of a 32-bit boot path's
/// 4 GiB map, which is split for it); returns that address.
pub fn map_uncached(phys: u64) -> Option<u64> {
    let va = kiln_boot::vm::PHYS_MAP + phys;
    // SAFETY: the kernel half of the active PML4; the page is beyond RAM so
    // nothing else maps it (mapping it again changes nothing).
    // (The table recorded as loaded: reading CR3 is an emulated
    // instruction on PVM.)
    let mut tables = unsafe { paging::PageTables::from_pml4(tlb::active()) };
    let flags = paging::pte::WRITABLE | paging::pte::NO_EXECUTE | paging::pte::NO_CACHE;
    let was_mapped = tables.lookup(va & !0xfff) & paging::pte::PRESENT != 0;
    tables
        .map_splitting(
            va & !0xfff,
            phys & !0xfff,
            flags,
            &mut crate::mm::frame::alloc_table,
        )
        .ok()?;
    // The page may have been reachable (cached) through the large page; a
    // page never mapped (kiln's devices, beyond RAM) cannot be cached, and
    // INVLPG is an emulated instruction on PVM.
    if was_mapped {
        cpu::invlpg(va & !0xfff);
    }
    Some(va)
}

/// Arms the timer interrupt for TSC value `tsc`.
pub fn timer_arm_at(tsc: u64) {
    if enable_interrupt_controller() {
        apic::arm_at(tsc);
    }
}

/// Acknowledges an interrupt.
pub fn interrupt_done() {
    apic::eoi();
}

/// Halts until an interrupt arrives (interrupts enabled meanwhile).
pub fn idle() {
    traps::idle(percpu::pv_irq_flag());
}

/// Jumps to the program's entry point with the stack at `sp`, all general
/// registers zero, a fresh FPU/SSE state and interrupts enabled, as Linux's
/// `start_thread` leaves them; `kstack` is the thread's kernel stack.
pub fn enter_program(entry: u64, sp: u64, kstack: u64) -> ! {
    percpu::set_kernel_stack(kstack);
    let pv = percpu::pv_irq_flag();
    let mxcsr: u32 = 0x1f80;
    // SAFETY: `sp` points at the initial stack the loader built in mapped
    // program memory (8 bytes below it are free), and `entry` is the
    // program's entry point inside an executable mapping. Nothing of the
    // kernel's stack is needed afterwards.
    unsafe {
        asm!(
            "fninit",
            "ldmxcsr [{mxcsr}]",
            "mov rsp, {sp}",
            "push {entry}",
            "test {pv}, {pv}",
            "jz 2f",
            "mov byte ptr [{pv}], 1",
            "2:",
            "xorps xmm0, xmm0", "xorps xmm1, xmm1", "xorps xmm2, xmm2", "xorps xmm3, xmm3",
            "xorps xmm4, xmm4", "xorps xmm5, xmm5", "xorps xmm6, xmm6", "xorps xmm7, xmm7",
            "xorps xmm8, xmm8", "xorps xmm9, xmm9", "xorps xmm10, xmm10", "xorps xmm11, xmm11",
            "xorps xmm12, xmm12", "xorps xmm13, xmm13", "xorps xmm14, xmm14", "xorps xmm15, xmm15",
            "xor eax, eax", "xor ebx, ebx", "xor ecx, ecx", "xor edx, edx",
            "xor esi, esi", "xor edi, edi", "xor ebp, ebp",
            "xor r8d, r8d", "xor r9d, r9d", "xor r10d, r10d", "xor r11d, r11d",
            "xor r12d, r12d", "xor r13d, r13d", "xor r14d, r14d", "xor r15d, r15d",
            "cld",
            // Interrupts on: STI (whose shadow covers the RET); on PVM, where
            // STI does nothing but trap (the host emulates it and the RET
            // after it), the flag byte was set above instead.
            "cmp qword ptr gs:[{pv_flag}], 0",
            "jne 3f",
            "sti",
            "3:",
            "ret",
            mxcsr = in(reg) &mxcsr,
            sp = in(reg) sp,
            entry = in(reg) entry,
            pv = in(reg) pv,
            pv_flag = const percpu::OFFSET_PV_IRQ_FLAG,
            options(noreturn)
        )
    }
}

/// Drops the 32-bit boot paths' identity mapping of low memory (the
/// program's half of the address space must start empty).
pub fn drop_identity_map(tables: &mut paging::PageTables) {
    if platform::current().is_pc() {
        tables.clear_slot(0);
        // SAFETY: reloading the same PML4 only flushes the TLB.
        unsafe { cpu::write_cr3(tables.pml4()) };
    }
}
