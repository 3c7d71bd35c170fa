//! Thin wrappers around single x86-64 instructions (Intel SDM vol. 2).
//!
//! On the PVM host every privileged one here (port I/O, MSR and control
//! register access) traps to the hypervisor; callers keep them off hot paths.

use core::arch::asm;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

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

/// The VMM's CPUID table (kiln_boot::CpuidTable), when it gave one: the
/// direct-map address of its first entry and how many there are.
static CPUID_TABLE: AtomicU64 = AtomicU64::new(0);
static CPUID_COUNT: AtomicU64 = AtomicU64::new(0);

/// Answers [`cpuid`] from the `count` entries at `entries` from now on.
///
/// # Safety
/// `entries` must point at `count` readable [`kiln_boot::CpuidEntry`]
/// values that stay unchanged for as long as the kernel runs.
pub unsafe fn use_cpuid_table(entries: *const kiln_boot::CpuidEntry, count: usize) {
    CPUID_COUNT.store(count as u64, Ordering::Relaxed);
    CPUID_TABLE.store(entries as u64, Ordering::Release);
}

/// How many CPUs the VM has (set once at boot, before the first program).
static CPU_COUNT_AT_BOOT: AtomicU32 = AtomicU32::new(0);

/// Records how many CPUs the VM has, for [`program_cpuid_table`].
pub fn set_cpu_count(cpus: usize) {
    CPU_COUNT_AT_BOOT.store(cpus as u32, Ordering::Relaxed);
}

/// The CPUID table as the CPUID routine of rewritten program sites answers
/// it (`syscall::rewrite`): without leaf 1 when the VM has several CPUs,
/// since leaf 1 holds the APIC ID of the CPU that asks (the table has
/// vCPU 0's, the only one of a one-CPU VM); leaves the table lacks run the
/// instruction. (XSAVE sizes, leaf 0xD, follow XCR0, which the kernel sets
/// alike on every CPU before the table is learnt.) Empty without a table.
pub fn program_cpuid_table() -> &'static [kiln_boot::CpuidEntry] {
    static TABLE: spin::Once<alloc::vec::Vec<kiln_boot::CpuidEntry>> = spin::Once::new();
    TABLE.call_once(|| {
        let one_cpu = CPU_COUNT_AT_BOOT.load(Ordering::Relaxed) == 1;
        table()
            .iter()
            .filter(|e| e.function != 1 || one_cpu)
            .copied()
            .collect()
    })
}

/// The table [`use_cpuid_table`] installed (empty: none).
fn table() -> &'static [kiln_boot::CpuidEntry] {
    let table = CPUID_TABLE.load(Ordering::Acquire);
    if table == 0 {
        return &[];
    }
    // SAFETY: `use_cpuid_table`'s caller vouched for the entries.
    unsafe {
        core::slice::from_raw_parts(
            table as *const kiln_boot::CpuidEntry,
            CPUID_COUNT.load(Ordering::Relaxed) as usize,
        )
    }
}

/// Leaves whose subleaf (ECX) selects the answer; the ones not enumerated
/// by [`learn_cpuid_table`] are left out of the table.
const INDEXED: &[u32] = &[
    4,
    7,
    0xb,
    0xd,
    0xf,
    0x10,
    0x12,
    0x14,
    0x17,
    0x18,
    0x1d,
    0x1e,
    0x1f,
    0x20,
    0x23,
    0x24,
    0x8000_001d,
    0x8000_0020,
    0x8000_0026,
];

/// What [`learn_cpuid_table`] has written so far.
struct Learner<'a> {
    out: &'a mut [kiln_boot::CpuidEntry],
    n: usize,
}

impl Learner<'_> {
    /// Asks the instruction and records the answer; `None` when the table
    /// is full.
    fn put(&mut self, leaf: u32, subleaf: u32, indexed: bool) -> Option<CpuidResult> {
        let slot = self.out.get_mut(self.n)?;
        let r = instruction(leaf, subleaf);
        *slot = kiln_boot::CpuidEntry {
            function: leaf,
            index: if indexed { subleaf } else { 0 },
            flags: if indexed {
                kiln_boot::CpuidEntry::SIGNIFICANT_INDEX
            } else {
                0
            },
            eax: r.eax,
            ebx: r.ebx,
            ecx: r.ecx,
            edx: r.edx,
            reserved: 0,
        };
        self.n += 1;
        Some(r)
    }

    /// Records `leaf`; `None` when the table is full.
    fn leaf(&mut self, leaf: u32) -> Option<()> {
        match leaf {
            // Caches: each subleaf up to the one of type 0.
            4 | 0x8000_001d => {
                for i in 0..32 {
                    if self.put(leaf, i, true)?.eax & 0x1f == 0 {
                        break;
                    }
                }
            }
            // Subleaves 0..=EAX of subleaf 0, and 1 even when EAX is 0:
            // glibc asks for leaf 7's subleaf 1 whatever EAX says.
            7 | 0x14 => {
                let last = self.put(leaf, 0, true)?.eax.clamp(1, 4);
                for i in 1..=last {
                    self.put(leaf, i, true)?;
                }
            }
            // XSAVE: the main subleaves, then each component's — every
            // one defined so far (glibc asks for some the CPU lacks, such
            // as MPX's 3 and 4) and any further one the CPU has.
            0xd => {
                let main = self.put(leaf, 0, true)?;
                let system = self.put(leaf, 1, true)?;
                let components = u64::from(main.eax)
                    | u64::from(main.edx) << 32
                    | u64::from(system.ecx)
                    | u64::from(system.edx) << 32;
                for i in (2..63).filter(|&i| i <= 19 || components & (1 << i) != 0) {
                    self.put(leaf, i, true)?;
                }
            }
            // Only the APIC ID of the CPU asking: not for a table.
            0xb | 0x1f | 0x8000_001e => {}
            _ if INDEXED.contains(&leaf) => {}
            _ => {
                self.put(leaf, 0, false)?;
            }
        }
        Some(())
    }
}

/// Fills `out` with what the CPUID instruction answers on this CPU (its
/// CR4 and XCR0 set up), leaving out the leaves that are only the asking
/// CPU's APIC ID and indexed leaves it does not enumerate (leaf 1 holds
/// vCPU 0's APIC ID: [`program_cpuid_table`] leaves it out in a VM of
/// several CPUs); returns how many entries it wrote (at most `out.len()`).
/// About 80 CPUIDs: done once per host boot,
/// as kiln-vmm keeps the table (boot flag `CPUID_LEARN`).
pub fn learn_cpuid_table(out: &mut [kiln_boot::CpuidEntry]) -> usize {
    let mut learner = Learner { out, n: 0 };
    'ranges: for base in [0u32, 0x4000_0000, 0x8000_0000] {
        let max = instruction(base, 0).eax;
        let last = match base {
            0 => max.min(0x24),
            0x4000_0000 => max.clamp(base, base + 0x10),
            _ => max.clamp(base, base + 0x28),
        };
        for leaf in base..=last {
            if learner.leaf(leaf).is_none() {
                break 'ranges;
            }
        }
    }
    learner.n
}

/// The CPUID answer for `leaf`/`subleaf`: from the table learnt on this
/// host when it has the leaf (each CPUID instruction is emulated by the
/// host on PVM, ~20 µs), else from the instruction (an exit to the
/// hypervisor on VMX too). The kernel asks only for feature bits and
/// XSAVE layouts, which do not change with the CPU that asks.
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    let found = table().iter().find(|e| {
        e.function == leaf
            && (e.flags & kiln_boot::CpuidEntry::SIGNIFICANT_INDEX == 0 || e.index == subleaf)
    });
    match found {
        Some(e) => CpuidResult {
            eax: e.eax,
            ebx: e.ebx,
            ecx: e.ecx,
            edx: e.edx,
        },
        None => instruction(leaf, subleaf),
    }
}

/// Executes CPUID.
fn instruction(leaf: u32, subleaf: u32) -> CpuidResult {
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
