//! Entry into the kernel from the program: exceptions and interrupts (IDT)
//! and the SYSCALL instruction.
//!
//! The program runs at the kernel's privilege level, so no event switches
//! stacks by itself. Every IDT gate therefore names an IST stack (the
//! program's 128-byte red zone below RSP stays untouched, measured in
//! PVM.md), and the SYSCALL entry, which arrives on the program's own stack,
//! moves to the kernel stack before its first push. Both paths save all
//! general registers and XMM0-15 into a [`Frame`] (the kernel's Rust code,
//! and the precompiled `core`, use SSE registers the program may rely on).
//!
//! An event that interrupts the program (rather than the kernel) has its
//! frame moved from the IST stack to the thread's kernel stack, where the
//! handler may block or switch threads; each thread has its own kernel
//! stack (`percpu::set_kernel_stack`), and [`switch`] moves between them.
//!
//! A system call returns without IRETQ (which traps on PVM): the program's
//! RFLAGS and RIP are written just below its red zone, then `popfq; ret 128`
//! restores RFLAGS, RIP and RSP natively. RCX and R11 come back as the
//! return address and RFLAGS, exactly as after Linux's SYSRET. Exceptions
//! and interrupts that interrupted the program return the same way on PVM
//! when that slot is writable, with every register restored
//! ([`program_return_slot`]); rt_sigreturn, a return to kernel code, and
//! the cases that function refuses go through IRETQ.

use core::arch::{asm, global_asm};
use core::mem::size_of;

use super::gdt::{IST_CRITICAL, IST_EXCEPTION, IST_INTERRUPT, KERNEL_CS};
use super::percpu;

/// `Frame::vector` value marking a system call that trapped (SYSCALL).
pub const VECTOR_SYSCALL: u64 = 0x100;
/// `Frame::vector` value marking a system call from a rewritten site
/// (entered by a jump, see `kernel::rewrite`).
pub const VECTOR_SYSCALL_CALL: u64 = 0x101;

/// The program's registers at the moment it entered the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)]
pub struct Frame {
    pub xmm: [u128; 16],
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// Exception/interrupt vector, or [`VECTOR_SYSCALL`].
    pub vector: u64,
    /// The exception's error code (0 when it has none).
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const _: () = assert!(size_of::<Frame>() == 256 + 22 * 8);

/// Offset of `Frame::rip` (the trap stubs read it to tell program from kernel).
const FRAME_RIP: usize = core::mem::offset_of!(Frame, rip);

/// How far below the program's RSP the returns without IRETQ (system
/// calls', and exceptions' on PVM) put RFLAGS and RIP (16 bytes): just
/// past the 128-byte red zone.
const RETURN_SLOT_BELOW_RSP: u64 = 144;

/// RFLAGS.TF: single-stepping, which a `popfq` would arm one instruction
/// early (on the kernel's `ret`).
const RFLAGS_TF: u64 = 1 << 8;

/// Where a return from an exception or interrupt to the program would put
/// RFLAGS and RIP to avoid IRETQ, which traps to the host on PVM (one exit
/// per guest page fault and per interrupt): the 16 bytes just below the
/// red zone under `frame`'s RSP. `None` when the way back must be IRETQ:
/// not on PVM, not back to the program (or to another code segment),
/// single-stepping, or a slot below address 0. The caller checks that the
/// slot lies in the program's memory and is writable now; if it stops
/// being so (another thread unmaps the stack), the store faults in the
/// kernel and is handled as the system-call return's is.
pub fn program_return_slot(frame: &Frame) -> Option<u64> {
    if percpu::pv_irq_flag() == 0
        || frame.rip >= kiln_boot::vm::PHYS_MAP
        || frame.cs != u64::from(KERNEL_CS)
        || frame.rflags & RFLAGS_TF != 0
    {
        return None;
    }
    frame.rsp.checked_sub(RETURN_SLOT_BELOW_RSP)
}

macro_rules! save_regs {
    () => {
        concat!(
            "push rax\n push rbx\n push rcx\n push rdx\n push rsi\n push rdi\n push rbp\n",
            "push r8\n push r9\n push r10\n push r11\n push r12\n push r13\n push r14\n push r15\n",
            "sub rsp, 256\n",
            "movups [rsp + 0x00], xmm0\n movups [rsp + 0x10], xmm1\n",
            "movups [rsp + 0x20], xmm2\n movups [rsp + 0x30], xmm3\n",
            "movups [rsp + 0x40], xmm4\n movups [rsp + 0x50], xmm5\n",
            "movups [rsp + 0x60], xmm6\n movups [rsp + 0x70], xmm7\n",
            "movups [rsp + 0x80], xmm8\n movups [rsp + 0x90], xmm9\n",
            "movups [rsp + 0xa0], xmm10\n movups [rsp + 0xb0], xmm11\n",
            "movups [rsp + 0xc0], xmm12\n movups [rsp + 0xd0], xmm13\n",
            "movups [rsp + 0xe0], xmm14\n movups [rsp + 0xf0], xmm15\n",
            "cld\n",
        )
    };
}

macro_rules! restore_regs {
    () => {
        concat!(
            "movups xmm0, [rsp + 0x00]\n movups xmm1, [rsp + 0x10]\n",
            "movups xmm2, [rsp + 0x20]\n movups xmm3, [rsp + 0x30]\n",
            "movups xmm4, [rsp + 0x40]\n movups xmm5, [rsp + 0x50]\n",
            "movups xmm6, [rsp + 0x60]\n movups xmm7, [rsp + 0x70]\n",
            "movups xmm8, [rsp + 0x80]\n movups xmm9, [rsp + 0x90]\n",
            "movups xmm10, [rsp + 0xa0]\n movups xmm11, [rsp + 0xb0]\n",
            "movups xmm12, [rsp + 0xc0]\n movups xmm13, [rsp + 0xd0]\n",
            "movups xmm14, [rsp + 0xe0]\n movups xmm15, [rsp + 0xf0]\n",
            "add rsp, 256\n",
            "pop r15\n pop r14\n pop r13\n pop r12\n pop r11\n pop r10\n pop r9\n pop r8\n",
            "pop rbp\n pop rdi\n pop rsi\n pop rdx\n pop rcx\n pop rbx\n",
        )
    };
}

/// Moves from the program's stack to the kernel stack and pushes the top
/// of a [`Frame`] as SYSCALL left the registers (RCX = return address,
/// R11 = RFLAGS), with `$vector` naming the entry.
macro_rules! syscall_frame {
    ($vector:literal) => {
        concat!(
            "mov gs:[{user_rsp}], rsp\n",
            "mov rsp, gs:[{kstack_top}]\n",
            "push {ds}\n",
            "push qword ptr gs:[{user_rsp}]\n",
            "push r11\n",
            "push {cs}\n",
            "push rcx\n",
            "push 0\n",
            "push ",
            $vector,
            "\n",
        )
    };
}

global_asm!(
    ".section .text.traps, \"ax\"",
    ".globl trap_stubs",
    ".balign 16",
    "trap_stubs:",
    ".set vec, 0",
    ".rept 256",
    ".balign 16",
    ".if (vec == 8) || (vec >= 10 && vec <= 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)",
    "nop",
    ".else",
    "push 0",
    ".endif",
    "push vec",
    "jmp trap_common",
    ".set vec, vec + 1",
    ".endr",
    "trap_common:",
    save_regs!(),
    // An event that interrupted the program moves its frame from the IST
    // stack to the thread's kernel stack, so that the handler may switch
    // threads and the IST stack is free for the next event.
    "mov rax, [rsp + {frame_rip}]",
    "bt rax, 63",
    "jc 2f",
    "mov rsi, rsp",
    "mov rdi, gs:[{kstack_top}]",
    "sub rdi, {frame_size}",
    "mov rsp, rdi",
    "mov ecx, {frame_words}",
    "rep movsq",
    "2:",
    "mov rdi, rsp",
    "call trap_dispatch",
    "test rax, rax",
    "jnz .Lreturn_without_iret",
    ".Lreturn_iret:",
    restore_regs!(),
    "pop rax",
    "add rsp, 16",
    "iretq",
    // Back to the program without IRETQ (trap_dispatch found the 16 bytes
    // below its red zone writable, on PVM): as at syscall_exit, RFLAGS
    // and RIP go below the red zone and `popfq; ret 128` restores them
    // and RSP, but every register comes back from the frame. An
    // interrupt held back while the flag byte was clear (its pending
    // byte set) takes the IRETQ, which the host delivers it at.
    ".Lreturn_without_iret:",
    "mov rax, gs:[{pv_irq_flag}]",
    "mov byte ptr [rax], 1",
    "cmp byte ptr [rax + 1], 0",
    "jne .Lreturn_iret",
    "mov rax, [rsp + {frame_rsp}]",
    "sub rax, {return_slot}",
    "mov rcx, [rsp + {frame_rflags}]",
    "mov [rax], rcx",
    "mov rcx, [rsp + {frame_rip}]",
    "mov [rax + 8], rcx",
    "mov [rsp + {frame_rsp}], rax",
    restore_regs!(),
    "pop rax",
    // [rsp]: vector, +8 error, +16 rip, +24 cs, +32 rflags, +40 rsp
    "mov rsp, [rsp + 40]",
    "popfq",
    "ret 128",
    "",
    // A rewritten site's trampoline jumps here with RSP 128 bytes below
    // the program's and RCX/R11 set as SYSCALL sets them.
    ".globl syscall_call_entry",
    ".balign 16",
    "syscall_call_entry:",
    "lea rsp, [rsp + 128]",
    syscall_frame!("{syscall_call}"),
    "jmp 6f",
    ".globl syscall_entry",
    ".balign 16",
    "syscall_entry:",
    syscall_frame!("{syscall}"),
    "6:",
    save_regs!(),
    // Interrupts off while the kernel runs: PVM through the page's byte;
    // natively SYSCALL's mask cleared IF, but a rewritten site jumps here
    // with it set, and an interrupt taken in the kernel is only noted
    // (an idle CPU that checked for it already would sleep through it).
    "mov rcx, gs:[{pv_irq_flag}]",
    "test rcx, rcx",
    "jnz 7f",
    "cli",
    "jmp 3f",
    "7:",
    "mov byte ptr [rcx], 0",
    "3:",
    "mov rdi, rsp",
    "call syscall_dispatch",
    "test rax, rax",
    "jnz syscall_full_exit",
    ".globl syscall_exit",
    "syscall_exit:",
    restore_regs!(),
    // [rsp]: rax, +8 vector, +16 error, +24 rip, +32 cs, +40 rflags, +48 rsp
    "mov rcx, gs:[{pv_irq_flag}]",
    "test rcx, rcx",
    "jz 4f",
    "mov byte ptr [rcx], 1",
    "4:",
    "mov rcx, [rsp + 48]",
    "lea r11, [rcx - {return_slot}]",
    "mov rcx, [rsp + 40]",
    "mov [r11], rcx",
    "mov rcx, [rsp + 24]",
    "mov [r11 + 8], rcx",
    "pop rax",
    "mov rsp, r11",
    "mov r11, [rsp]",
    "popfq",
    "ret 128",
    "",
    // rt_sigreturn resumes code interrupted anywhere: every register
    // comes from the frame, through IRETQ unless the dispatcher found the
    // way without it open (2).
    "syscall_full_exit:",
    "cmp rax, 2",
    "je .Lreturn_without_iret",
    restore_regs!(),
    "mov rax, gs:[{pv_irq_flag}]",
    "test rax, rax",
    "jz 5f",
    "mov byte ptr [rax], 1",
    "5:",
    "pop rax",
    "add rsp, 16",
    "iretq",
    "",
    // A new thread starts here, on a frame made by clone, holding the
    // kernel lock it gives back first.
    ".globl thread_start",
    "thread_start:",
    "mov rdi, rsp",
    "call new_thread_leaves_kernel",
    "jmp syscall_exit",
    "",
    // switch_to(prev: *mut u64, next: *const u64): saves the callee-saved
    // registers and the stack pointer of the running kernel context and
    // resumes another one where it called switch_to (or, for a new thread,
    // at the address left on its stack).
    ".globl switch_to",
    ".balign 16",
    "switch_to:",
    "push rbp\n push rbx\n push r12\n push r13\n push r14\n push r15",
    "mov [rdi], rsp",
    "mov rsp, [rsi]",
    "pop r15\n pop r14\n pop r13\n pop r12\n pop rbx\n pop rbp",
    "ret",
    "",
    // Idle until an interrupt: PVM enables interrupts through the page's
    // byte, so the interrupt handler moves a wake-up that lands between
    // that store and the HLT past the HLT (see `idle_fixup`).
    ".globl idle_halt_pvm",
    "idle_halt_pvm:",
    "mov byte ptr [rdi], 1",
    ".globl idle_hlt_insn",
    "idle_hlt_insn:",
    "hlt",
    "mov byte ptr [rdi], 0",
    "ret",
    ".globl idle_halt_native",
    "idle_halt_native:",
    "sti",
    "hlt",
    "cli",
    "ret",
    ".text",
    frame_rip = const FRAME_RIP,
    frame_rflags = const core::mem::offset_of!(Frame, rflags),
    frame_rsp = const core::mem::offset_of!(Frame, rsp),
    return_slot = const RETURN_SLOT_BELOW_RSP,
    frame_size = const size_of::<Frame>(),
    frame_words = const size_of::<Frame>() / 8,
    ds = const super::gdt::KERNEL_DS,
    cs = const KERNEL_CS,
    syscall = const VECTOR_SYSCALL,
    syscall_call = const VECTOR_SYSCALL_CALL,
    user_rsp = const percpu::OFFSET_USER_RSP,
    kstack_top = const percpu::OFFSET_KSTACK_TOP,
    pv_irq_flag = const percpu::OFFSET_PV_IRQ_FLAG,
);

extern "C" {
    static trap_stubs: u8;
    fn syscall_entry();
    fn syscall_call_entry();
    fn thread_start();
    fn switch_to(prev: *mut u64, next: *const u64);
    fn idle_halt_pvm(flag: u64);
    static idle_hlt_insn: u8;
    fn idle_halt_native();
}

/// The kernel entry rewritten system-call sites jump to.
pub fn syscall_call_entry_address() -> u64 {
    syscall_call_entry as *const () as u64
}

/// The address new threads start at (their first return to the program).
pub fn thread_entry() -> u64 {
    thread_start as *const () as u64
}

/// Saves the running kernel context in `prev` and resumes `next`.
///
/// # Safety
/// `next` must hold a stack pointer saved by `switch_to` (or prepared by
/// `prepare_new_thread`) whose stack is still alive, and `prev` must stay
/// valid until the context is resumed.
pub unsafe fn switch(prev: *mut u64, next: *const u64) {
    // SAFETY: the caller upholds the contract above.
    unsafe { switch_to(prev, next) }
}

/// Lays out a new thread's kernel stack so that switching to it enters the
/// program with `frame`. Returns the stack pointer to resume.
///
/// # Safety
/// `top` must be the 16-byte-aligned top of an unused kernel stack with
/// room for a [`Frame`] and the switch record.
pub unsafe fn prepare_new_thread(top: u64, frame: &Frame) -> u64 {
    let frame_at = top - size_of::<Frame>() as u64;
    // SAFETY: the caller guarantees the stack is unused and large enough.
    unsafe {
        core::ptr::write(frame_at as *mut Frame, *frame);
        // switch_to pops six callee-saved registers, then returns.
        let record = frame_at - 7 * 8;
        core::ptr::write_bytes(record as *mut u8, 0, 6 * 8);
        core::ptr::write((record + 6 * 8) as *mut u64, thread_entry());
        record
    }
}

/// Lays out a kernel context on the unused stack ending at `top` so that
/// switching to it calls `entry` (which never returns). Returns the stack
/// pointer to resume.
///
/// # Safety
/// `top` must be the 16-byte-aligned top of an unused stack that stays
/// alive while the context may run.
pub unsafe fn prepare_kernel_context(top: u64, entry: extern "C" fn() -> !) -> u64 {
    // switch_to pops six callee-saved registers, then returns into
    // `entry` with the stack as a call would leave it (16-byte aligned
    // plus the return address slot).
    let record = top - 8 * 8;
    // SAFETY: the caller guarantees the stack is unused and large enough.
    unsafe {
        core::ptr::write_bytes(record as *mut u8, 0, 6 * 8);
        core::ptr::write((record + 6 * 8) as *mut u64, entry as usize as u64);
    }
    record
}

/// Waits for an interrupt with interrupts enabled, then disables them again.
pub fn idle(pv_flag: u64) {
    if pv_flag != 0 {
        // SAFETY: `pv_flag` is this vCPU's interrupt-flag byte; HLT stays in
        // KVM until an interrupt (in-kernel irqchip).
        unsafe { idle_halt_pvm(pv_flag) }
    } else {
        // SAFETY: STI; HLT; CLI: the STI shadow covers the HLT.
        unsafe { idle_halt_native() }
    }
}

/// If an interrupt arrived between the PVM idle loop's enabling store and
/// its HLT, resume after the HLT instead (otherwise the wake-up is lost).
pub fn idle_fixup(frame: &mut Frame) {
    let hlt = (&raw const idle_hlt_insn) as u64;
    if frame.rip == hlt {
        frame.rip = hlt + 1;
    }
}

/// One 16-byte IDT gate.
#[derive(Clone, Copy)]
#[repr(C)]
pub(super) struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

pub(super) static mut IDT: [Gate; 256] = [Gate {
    offset_low: 0,
    selector: 0,
    ist: 0,
    type_attr: 0,
    offset_mid: 0,
    offset_high: 0,
    reserved: 0,
}; 256];

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

/// Each vector's IST stack: NMI, double fault and machine check get the
/// critical one, interrupts their own (they can arrive while an exception
/// handler runs on the exception stack), exceptions theirs.
fn ist_for(vector: usize) -> u8 {
    match vector {
        2 | 8 | 18 => IST_CRITICAL,
        32.. => IST_INTERRUPT,
        _ => IST_EXCEPTION,
    }
}

/// Fills and loads the IDT. Called once on the boot CPU; the others only
/// load it ([`load_idt`]).
pub fn init_idt() {
    let stubs = (&raw const trap_stubs) as u64;
    // SAFETY: runs once at boot on the only CPU before any interrupt can be
    // taken; nothing else accesses the IDT meanwhile.
    unsafe {
        let idt = &raw mut IDT;
        for (vector, gate) in (*idt).iter_mut().enumerate() {
            let handler = stubs + 16 * vector as u64;
            *gate = Gate {
                offset_low: handler as u16,
                selector: KERNEL_CS,
                ist: ist_for(vector),
                type_attr: 0x8e, // present, DPL 0, 64-bit interrupt gate
                offset_mid: (handler >> 16) as u16,
                offset_high: (handler >> 32) as u32,
                reserved: 0,
            };
        }
    }
    load_idt();
}

/// The IDTR limit.
pub(super) const IDT_LIMIT: usize = size_of::<[Gate; 256]>() - 1;

/// Loads the IDT (filled by [`init_idt`]) on the running CPU, unless
/// kiln-vmm loaded IDTR already ([`super::preset`]).
pub fn load_idt() {
    if super::preset::loaded() {
        return;
    }
    // SAFETY: the IDT is static and no longer written after `init_idt`.
    unsafe {
        let ptr = DescriptorPointer {
            limit: IDT_LIMIT as u16,
            base: (&raw const IDT) as u64,
        };
        asm!("lidt [{}]", in(reg) &ptr, options(readonly, nostack, preserves_flags));
    }
}

const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_SFMASK: u32 = 0xc000_0084;

/// STAR: SYSCALL enters at this GDT's kernel selectors, SYSRET returns to
/// its user selectors (0x23 + 16 for 64-bit code).
pub(super) const STAR: u64 = (KERNEL_CS as u64) << 32 | 0x23 << 48;
/// SFMASK: SYSCALL clears TF, DF, IF, AC and NT.
pub(super) const SFMASK: u64 = 0x4_7700;

/// Points the SYSCALL instruction at [`syscall_entry`] (unless kiln-vmm
/// did, [`super::preset`]).
pub fn init_syscall() {
    if super::preset::loaded() {
        return;
    }
    // SAFETY: STAR/LSTAR/SFMASK exist on every x86-64 CPU; LSTAR points at
    // the entry stub above, STAR's CS/SS are this GDT's kernel selectors.
    unsafe {
        super::cpu::wrmsr(MSR_STAR, STAR);
        super::cpu::wrmsr(MSR_LSTAR, syscall_entry as *const () as u64);
        super::cpu::wrmsr(MSR_SFMASK, SFMASK);
    }
}
