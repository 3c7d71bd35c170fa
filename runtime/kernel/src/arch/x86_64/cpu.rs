//! Thin wrappers around single x86-64 instructions (Intel SDM vol. 2).
//!
//! On the PVM host every privileged one here (port I/O, MSR and control
//! register access) traps to the hypervisor; callers keep them off hot paths.

use core::arch::asm;

/// Writes a byte to an I/O port.
pub fn outb(port: u16, value: u8) {
    // SAFETY: port I/O has no memory effects visible to Rust; the ports used
    // are the platform's (serial, debug exit, kiln ports).
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    }
}

/// Writes a 16-bit value to an I/O port.
pub fn outw(port: u16, value: u16) {
    // SAFETY: as for `outb`.
    unsafe {
        asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack, preserves_flags))
    }
}

/// Writes a 32-bit value to an I/O port.
pub fn outl(port: u16, value: u32) {
    // SAFETY: as for `outb`.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    }
}

/// Reads a byte from an I/O port.
pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as for `outb`; reading a port has no memory effects.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags))
    }
    value
}

/// Reads a model-specific register.
pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: callers only read MSRs that exist on every x86-64 CPU kiln
    // supports, or whose presence they checked with CPUID.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes a model-specific register.
///
/// # Safety
/// The MSR must exist and the value must not break the kernel's own
/// invariants (for example the syscall entry MSRs must point at kernel code).
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller upholds the contract above.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack, preserves_flags))
    }
}

/// The result of one CPUID leaf.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuidResult {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

/// Executes CPUID for `leaf`/`subleaf` (an exit to the hypervisor on VMX).
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    CpuidResult {
        eax: r.eax,
        ebx: r.ebx,
        ecx: r.ecx,
        edx: r.edx,
    }
}

/// Reads the time-stamp counter.
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Reads CR3 (the physical address of the active PML4).
pub fn read_cr3() -> u64 {
    let v: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) }
    v
}

/// Loads CR3, flushing all non-global TLB entries.
///
/// # Safety
/// `pml4` must be a valid top-level table that maps the running kernel.
pub unsafe fn write_cr3(pml4: u64) {
    // SAFETY: the caller guarantees the new tables map the kernel.
    unsafe { asm!("mov cr3, {}", in(reg) pml4, options(nostack, preserves_flags)) }
}

/// Reads CR2 (the faulting address of the last page fault).
pub fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) }
    v
}

/// Reads CR4.
pub fn read_cr4() -> u64 {
    let v: u64;
    // SAFETY: reading CR4 has no side effects.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)) }
    v
}

/// Writes CR4.
///
/// # Safety
/// Only feature-enable bits the CPU reports may be set; paging bits must
/// stay as they are.
pub unsafe fn write_cr4(v: u64) {
    // SAFETY: the caller upholds the contract above.
    unsafe { asm!("mov cr4, {}", in(reg) v, options(nostack, preserves_flags)) }
}

/// Sets XCR0 (which register state XSAVE-enabled code may use).
///
/// # Safety
/// CR4.OSXSAVE must be set and `mask` must be a subset CPUID leaf 0xD allows.
pub unsafe fn xsetbv0(mask: u64) {
    // SAFETY: the caller upholds the contract above.
    unsafe {
        asm!("xsetbv", in("ecx") 0u32, in("eax") mask as u32, in("edx") (mask >> 32) as u32,
             options(nomem, nostack, preserves_flags))
    }
}

/// Invalidates the TLB entry of one page.
pub fn invlpg(addr: u64) {
    // SAFETY: INVLPG only drops a cached translation.
    unsafe { asm!("invlpg [{}]", in(reg) addr, options(nostack, preserves_flags)) }
}

/// Sets the FS base with WRFSBASE (needs CR4.FSGSBASE).
///
/// # Safety
/// CR4.FSGSBASE must be set.
pub unsafe fn wrfsbase(v: u64) {
    // SAFETY: the caller checked CR4.FSGSBASE; the kernel itself never uses FS.
    unsafe { asm!("wrfsbase {}", in(reg) v, options(nostack, preserves_flags)) }
}

/// Reads the FS base with RDFSBASE (needs CR4.FSGSBASE).
///
/// # Safety
/// CR4.FSGSBASE must be set.
pub unsafe fn rdfsbase() -> u64 {
    let v: u64;
    // SAFETY: the caller checked CR4.FSGSBASE.
    unsafe { asm!("rdfsbase {}", out(reg) v, options(nomem, nostack, preserves_flags)) }
    v
}

/// A hardware random number (RDRAND), retried a few times; `None` if the
/// CPU keeps failing.
pub fn rdrand() -> Option<u64> {
    for _ in 0..10 {
        let v: u64;
        let ok: u8;
        // SAFETY: RDRAND writes only its output register and CF.
        unsafe {
            asm!("rdrand {}", "setc {}", out(reg) v, out(reg_byte) ok, options(nomem, nostack))
        }
        if ok != 0 {
            return Some(v);
        }
    }
    None
}

/// Stops this CPU for good (interrupts off, HLT forever).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: CLI/HLT stop the CPU; nothing runs after this.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) }
    }
}
