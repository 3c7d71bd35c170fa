//! The GDT and the TSS (Intel SDM vol. 3A §3.4, §8.7).
//!
//! Selectors are Linux's (kernel code 0x10, data 0x18, user 0x23/0x2b/0x33,
//! TSS 0x40), which is also what kiln-vmm loads into the hidden segment
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
/// TSS selector.
const TSS_SELECTOR: u16 = 0x40;

/// IST index for ordinary exceptions and interrupts.
pub const IST_EXCEPTION: u8 = 1;
/// IST index for double faults, NMIs and machine checks, which can arrive
/// while the ordinary IST stack is in use.
pub const IST_CRITICAL: u8 = 2;
/// IST index for interrupts (vectors 32 and up), which can arrive while an
/// exception handler runs on the exception stack.
pub const IST_INTERRUPT: u8 = 3;

const IST_EXCEPTION_SIZE: usize = 32 * 1024;
const IST_CRITICAL_SIZE: usize = 16 * 1024;
const IST_INTERRUPT_SIZE: usize = 16 * 1024;

static mut IST_EXCEPTION_STACK: Stack<IST_EXCEPTION_SIZE> = Stack([0; IST_EXCEPTION_SIZE]);
static mut IST_CRITICAL_STACK: Stack<IST_CRITICAL_SIZE> = Stack([0; IST_CRITICAL_SIZE]);
static mut IST_INTERRUPT_STACK: Stack<IST_INTERRUPT_SIZE> = Stack([0; IST_INTERRUPT_SIZE]);

/// The 64-bit task-state segment.
#[repr(C, packed(4))]
struct Tss {
    reserved0: u32,
    rsp: [u64; 3],
    reserved1: u64,
    ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    iomap_base: u16,
}

static mut TSS: Tss = Tss {
    reserved0: 0,
    rsp: [0; 3],
    reserved1: 0,
    ist: [0; 7],
    reserved2: 0,
    reserved3: 0,
    iomap_base: size_of::<Tss>() as u16,
};

static mut GDT: [u64; 10] = [
    0,
    0,
    0x00af_9b00_0000_ffff, // 0x10 kernel code, 64-bit
    0x00cf_9300_0000_ffff, // 0x18 kernel data
    0x00cf_fb00_0000_ffff, // 0x23 user code, 32-bit
    0x00cf_f300_0000_ffff, // 0x2b user data
    0x00af_fb00_0000_ffff, // 0x33 user code, 64-bit
    0,
    0, // 0x40 TSS, filled in by `init`
    0,
];

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

fn stack_top<const N: usize>(stack: *const Stack<N>) -> u64 {
    stack as u64 + N as u64
}

/// Loads the GDT and the TSS. Called once on the boot CPU.
pub fn init() {
    // SAFETY: runs once at boot on the only CPU, before anything else reads
    // the GDT or TSS, so these writes race with nothing.
    unsafe {
        let tss = &raw mut TSS;
        (*tss).ist[usize::from(IST_EXCEPTION) - 1] = stack_top(addr_of!(IST_EXCEPTION_STACK));
        (*tss).ist[usize::from(IST_CRITICAL) - 1] = stack_top(addr_of!(IST_CRITICAL_STACK));
        (*tss).ist[usize::from(IST_INTERRUPT) - 1] = stack_top(addr_of!(IST_INTERRUPT_STACK));
        let base = tss as u64;
        let limit = size_of::<Tss>() as u64 - 1;
        let gdt = &raw mut GDT;
        (*gdt)[8] = limit
            | (base & 0xff_ffff) << 16
            | 0x89 << 40 // present, 64-bit available TSS
            | ((base >> 24) & 0xff) << 56;
        (*gdt)[9] = base >> 32;
        let ptr = DescriptorPointer {
            limit: (size_of::<[u64; 10]>() - 1) as u16,
            base: gdt as u64,
        };
        asm!("lgdt [{}]", in(reg) &ptr, options(readonly, nostack, preserves_flags));
        asm!("ltr {0:x}", in(reg) TSS_SELECTOR, options(nostack, preserves_flags));
    }
}
