//! The GDT and the TSS (Intel SDM vol. 3A §3.4, §8.7).
//!
//! Selectors are Linux's (kernel code 0x10, data 0x18, user 0x23/0x2b/0x33,
//! TSS 0x40, then one more per CPU every 16 bytes), which is also what kiln-vmm loads into the hidden segment
//! state at boot, so loading this GDT needs no segment reload. The TSS is
//! used only for its interrupt stack table: every IDT gate switches to an
//! IST stack so that no event ever writes into the program's red zone.

use core::arch::asm;
use core::mem::size_of;
use core::ptr::addr_of;

use super::entry::Stack;

/// Kernel code selector (SYSCALL's target CS, STAR[47:32]).
pub const KERNEL_CS: u16 = 0x10;
/// Kernel data selector.
pub const KERNEL_DS: u16 = 0x18;
/// TSS selector of CPU 0 (CPU `n`'s is 16 bytes further per `n`).
pub(super) const TSS_SELECTOR: u16 = 0x40;

use super::percpu::MAX_CPUS;

/// IST index for ordinary exceptions and interrupts.
pub const IST_EXCEPTION: u8 = 1;
/// IST index for double faults, NMIs and machine checks, which can arrive
/// while the ordinary IST stack is in use.
pub const IST_CRITICAL: u8 = 2;
/// IST index for interrupts (vectors 32 and up), which can arrive while an
/// exception handler runs on the exception stack.
pub const IST_INTERRUPT: u8 = 3;

/// Size of the exception IST stack.
pub const IST_EXCEPTION_SIZE: usize = 32 * 1024;
/// Size of the critical IST stack.
pub const IST_CRITICAL_SIZE: usize = 16 * 1024;
/// Size of the interrupt IST stack.
pub const IST_INTERRUPT_SIZE: usize = 16 * 1024;

static mut IST_EXCEPTION_STACK: Stack<IST_EXCEPTION_SIZE> = Stack([0; IST_EXCEPTION_SIZE]);
static mut IST_CRITICAL_STACK: Stack<IST_CRITICAL_SIZE> = Stack([0; IST_CRITICAL_SIZE]);
static mut IST_INTERRUPT_STACK: Stack<IST_INTERRUPT_SIZE> = Stack([0; IST_INTERRUPT_SIZE]);

/// The 64-bit task-state segment.
#[repr(C, packed(4))]
pub(super) struct Tss {
    reserved0: u32,
    rsp: [u64; 3],
    reserved1: u64,
    ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    iomap_base: u16,
}

const EMPTY_TSS: Tss = Tss {
    reserved0: 0,
    rsp: [0; 3],
    reserved1: 0,
    ist: [0; 7],
    reserved2: 0,
    reserved3: 0,
    iomap_base: size_of::<Tss>() as u16,
};

/// One TSS per CPU.
pub(super) static mut TSS: [Tss; MAX_CPUS] = [EMPTY_TSS; MAX_CPUS];

/// Bytes of one TSS (and from one CPU's to the next).
pub(super) const TSS_SIZE: usize = size_of::<Tss>();

/// Entries of the GDT: the segments, then a 16-byte TSS descriptor per CPU.
const GDT_ENTRIES: usize = 8 + 2 * MAX_CPUS;

pub(super) static mut GDT: [u64; GDT_ENTRIES] = [
    0,
    0,
    0x00af_9b00_0000_ffff, // 0x10 kernel code, 64-bit
    0x00cf_9300_0000_ffff, // 0x18 kernel data
    0x00cf_fb00_0000_ffff, // 0x23 user code, 32-bit
    0x00cf_f300_0000_ffff, // 0x2b user data
    0x00af_fb00_0000_ffff, // 0x33 user code, 64-bit
    0,
    // 0x40: the TSS descriptors, filled in by `init_cpu`
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
];

const _: () = assert!(MAX_CPUS == 4, "the GDT initialiser above has 4 TSS slots");

/// The GDTR limit.
pub(super) const GDT_LIMIT: usize = size_of::<[u64; GDT_ENTRIES]>() - 1;

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

fn stack_top<const N: usize>(stack: *const Stack<N>) -> u64 {
    stack as u64 + N as u64
}

/// Loads the GDT and the boot CPU's TSS (with the static IST stacks).
pub fn init() {
    init_cpu(
        0,
        [
            stack_top(addr_of!(IST_EXCEPTION_STACK)),
            stack_top(addr_of!(IST_CRITICAL_STACK)),
            stack_top(addr_of!(IST_INTERRUPT_STACK)),
        ],
    );
}

/// Loads the GDT and CPU `cpu`'s TSS, whose IST stacks (exception,
/// critical, interrupt) end at `ist_tops`. Each CPU calls it once. When
/// kiln-vmm loaded GDTR and TR already ([`super::preset`]), only the TSS
/// is filled in.
pub fn init_cpu(cpu: usize, ist_tops: [u64; 3]) {
    assert!(cpu < MAX_CPUS);
    // SAFETY: each CPU writes only its own TSS and its own descriptor slot,
    // once, before it loads them; the other entries are not changed.
    unsafe {
        let tss = &raw mut TSS[cpu];
        (*tss).ist[usize::from(IST_EXCEPTION) - 1] = ist_tops[0];
        (*tss).ist[usize::from(IST_CRITICAL) - 1] = ist_tops[1];
        (*tss).ist[usize::from(IST_INTERRUPT) - 1] = ist_tops[2];
        let base = tss as u64;
        let limit = TSS_SIZE as u64 - 1;
        let gdt = &raw mut GDT;
        (*gdt)[8 + 2 * cpu] = limit
            | (base & 0xff_ffff) << 16
            | 0x89 << 40 // present, 64-bit available TSS
            | ((base >> 24) & 0xff) << 56;
        (*gdt)[9 + 2 * cpu] = base >> 32;
        if super::preset::loaded() {
            return;
        }
        let ptr = DescriptorPointer {
            limit: GDT_LIMIT as u16,
            base: gdt as u64,
        };
        asm!("lgdt [{}]", in(reg) &ptr, options(readonly, nostack, preserves_flags));
        let selector = TSS_SELECTOR + 16 * cpu as u16;
        asm!("ltr {0:x}", in(reg) selector, options(nostack, preserves_flags));
    }
}
