//! The CPU side of signal delivery: the program's registers in and out of
//! a `struct sigcontext`, its FPU state in and out of the frame's save
//! image, and the register state a handler starts with.

use kiln_kernel::signal::{reg, SigContext, USER_FLAGS};

use super::fpu::{self, FpuState, XMM_OFFSET};
use super::traps::Frame;

/// Selectors a Linux program sees in its sigcontext (user CS and SS).
const LINUX_USER_SEGMENTS: [u16; 4] = [0x33, 0, 0, 0x2b];
/// RFLAGS bits cleared for a handler: TF, DF, RF and AC.
const HANDLER_CLEARS: u64 = 0x100 | 0x400 | 0x1_0000 | 0x4_0000;
/// Length of the SYSCALL instruction.
const SYSCALL_LEN: u64 = 2;

/// The interrupted registers as a sigcontext (without fault details).
pub fn context_of(frame: &Frame) -> SigContext {
    let mut c = SigContext::default();
    let g = &mut c.gregs;
    g[reg::R8] = frame.r8;
    g[reg::R9] = frame.r9;
    g[reg::R10] = frame.r10;
    g[reg::R11] = frame.r11;
    g[reg::R12] = frame.r12;
    g[reg::R13] = frame.r13;
    g[reg::R14] = frame.r14;
    g[reg::R15] = frame.r15;
    g[reg::RDI] = frame.rdi;
    g[reg::RSI] = frame.rsi;
    g[reg::RBP] = frame.rbp;
    g[reg::RBX] = frame.rbx;
    g[reg::RDX] = frame.rdx;
    g[reg::RAX] = frame.rax;
    g[reg::RCX] = frame.rcx;
    g[reg::RSP] = frame.rsp;
    g[reg::RIP] = frame.rip;
    g[reg::EFLAGS] = frame.rflags;
    c.segments = LINUX_USER_SEGMENTS;
    c
}

/// Resumes the program with the registers of `c` (rt_sigreturn). Only the
/// RFLAGS bits a program may set are taken; interrupts stay enabled.
pub fn resume_with(frame: &mut Frame, c: &SigContext) {
    let g = &c.gregs;
    frame.r8 = g[reg::R8];
    frame.r9 = g[reg::R9];
    frame.r10 = g[reg::R10];
    frame.r11 = g[reg::R11];
    frame.r12 = g[reg::R12];
    frame.r13 = g[reg::R13];
    frame.r14 = g[reg::R14];
    frame.r15 = g[reg::R15];
    frame.rdi = g[reg::RDI];
    frame.rsi = g[reg::RSI];
    frame.rbp = g[reg::RBP];
    frame.rbx = g[reg::RBX];
    frame.rdx = g[reg::RDX];
    frame.rax = g[reg::RAX];
    frame.rcx = g[reg::RCX];
    frame.rsp = g[reg::RSP];
    frame.rip = g[reg::RIP];
    frame.rflags = (frame.rflags & !USER_FLAGS) | (g[reg::EFLAGS] & USER_FLAGS);
}

/// Points the program at a handler: `handler(signo, info, ucontext)` on
/// the stack `sp` (which holds the return address).
pub fn enter_handler(frame: &mut Frame, handler: u64, signo: u8, info: u64, uc: u64, sp: u64) {
    frame.rdi = u64::from(signo);
    frame.rsi = info;
    frame.rdx = uc;
    frame.rax = 0;
    frame.rsp = sp;
    frame.rip = handler;
    frame.rflags &= !HANDLER_CLEARS;
}

/// Makes the program execute its system call again when it resumes: back
/// over the SYSCALL instruction, the number back in RAX.
pub fn rewind_syscall(frame: &mut Frame, number: u64) {
    frame.rip = frame.rip.wrapping_sub(SYSCALL_LEN);
    frame.rax = number;
}

/// Sets the system call's return value.
pub fn set_return(frame: &mut Frame, value: u64) {
    frame.rax = value;
}

/// Whether the save image is an XSAVE one (`UC_FP_XSTATE`).
pub fn xsave_format() -> bool {
    fpu::uses_xsave()
}

/// Bytes of the FPU save image in a frame.
pub fn fpu_image_size() -> u64 {
    fpu::area_size() as u64
}

/// The program's FPU state as a save image: the CPU's state, with
/// XMM0-15 from the frame (the kernel's own code uses those).
pub fn fpu_image(frame: &Frame) -> Option<FpuState> {
    let mut state = FpuState::capture()?;
    let image = state.bytes_mut();
    for (i, x) in frame.xmm.iter().enumerate() {
        let at = XMM_OFFSET + i * 16;
        image[at..at + 16].copy_from_slice(&x.to_le_bytes());
    }
    Some(state)
}

/// Loads a save image from a signal frame: the CPU gets it all, the frame
/// XMM0-15 (restored on the way out). False when the image is not one the
/// CPU would accept.
pub fn load_fpu_image(frame: &mut Frame, image: &[u8]) -> bool {
    if !fpu::valid_image(image) {
        return false;
    }
    let Some(mut state) = FpuState::capture() else {
        return false;
    };
    let size = state.bytes().len();
    state.bytes_mut().copy_from_slice(&image[..size]);
    state.restore();
    for (i, x) in frame.xmm.iter_mut().enumerate() {
        let at = XMM_OFFSET + i * 16;
        *x = u128::from_le_bytes(image[at..at + 16].try_into().unwrap_or_default());
    }
    true
}
