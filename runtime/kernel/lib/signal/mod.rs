//! Signals, the architecture-free part: the queue of pending signals with
//! their `siginfo`, the default action of each signal, the alternate
//! signal stack, and the byte layout of the Linux x86-64 signal frame
//! (`struct rt_sigframe`) that a handler receives and `rt_sigreturn` reads
//! back.
//!
//! The frame is what glibc, musl and Rust's std expect from Linux:
//!
//! ```text
//! sp + 0    return address (the action's SA_RESTORER trampoline)
//! sp + 8    struct ucontext (304 bytes: flags, link, stack_t,
//!           struct sigcontext, the 8-byte signal mask)
//! sp + 312  struct siginfo (128 bytes)
//! above     the FPU state (XSAVE or FXSAVE image, 64-byte aligned),
//!           pointed to by sigcontext.fpstate
//! ```
//!
//! A handler starts with `sp + 8` 16-byte aligned, as after a CALL.

use alloc::vec::Vec;

/// Number of signals (1..=64).
pub const NSIG: u8 = 64;
/// First real-time signal (those queue every instance).
pub const SIGRTMIN: u8 = 32;

/// `sa_flags` bits.
pub mod sa {
    /// Pass siginfo and ucontext (always done on x86-64).
    pub const SIGINFO: u64 = 4;
    /// Run the handler on the alternate stack.
    pub const ONSTACK: u64 = 0x0800_0000;
    /// Restart interrupted system calls.
    pub const RESTART: u64 = 0x1000_0000;
    /// Do not block the signal while its handler runs.
    pub const NODEFER: u64 = 0x4000_0000;
    /// Reset the action to SIG_DFL on delivery.
    pub const RESETHAND: u64 = 0x8000_0000;
    /// SIGCHLD only: children that stop or continue send no SIGCHLD.
    pub const NOCLDSTOP: u64 = 0x0000_0001;
    /// SIGCHLD only: children that end are not left as zombies.
    pub const NOCLDWAIT: u64 = 0x0000_0002;
    /// `sa_restorer` holds the return trampoline.
    pub const RESTORER: u64 = 0x0400_0000;
}

/// Signal numbers the kernel names (Linux x86-64 values).
#[allow(missing_docs)]
pub mod sig {
    pub const SIGHUP: u8 = 1;
    pub const SIGINT: u8 = 2;
    pub const SIGQUIT: u8 = 3;
    pub const SIGILL: u8 = 4;
    pub const SIGTRAP: u8 = 5;
    pub const SIGABRT: u8 = 6;
    pub const SIGBUS: u8 = 7;
    pub const SIGFPE: u8 = 8;
    pub const SIGKILL: u8 = 9;
    pub const SIGUSR1: u8 = 10;
    pub const SIGSEGV: u8 = 11;
    pub const SIGUSR2: u8 = 12;
    pub const SIGPIPE: u8 = 13;
    pub const SIGALRM: u8 = 14;
    pub const SIGTERM: u8 = 15;
    pub const SIGCHLD: u8 = 17;
    pub const SIGCONT: u8 = 18;
    pub const SIGSTOP: u8 = 19;
    pub const SIGTSTP: u8 = 20;
    pub const SIGTTIN: u8 = 21;
    pub const SIGTTOU: u8 = 22;
    pub const SIGURG: u8 = 23;
    pub const SIGXCPU: u8 = 24;
    pub const SIGXFSZ: u8 = 25;
    pub const SIGVTALRM: u8 = 26;
    pub const SIGPROF: u8 = 27;
    pub const SIGWINCH: u8 = 28;
    pub const SIGIO: u8 = 29;
    pub const SIGPWR: u8 = 30;
    pub const SIGSYS: u8 = 31;
}

/// `si_code` values.
#[allow(missing_docs)]
pub mod code {
    pub const SI_USER: i32 = 0;
    pub const SI_KERNEL: i32 = 0x80;
    pub const SI_QUEUE: i32 = -1;
    pub const SI_TIMER: i32 = -2;
    pub const SI_TKILL: i32 = -6;
    pub const SEGV_MAPERR: i32 = 1;
    pub const SEGV_ACCERR: i32 = 2;
    pub const ILL_ILLOPN: i32 = 2;
    pub const FPE_INTDIV: i32 = 1;
    pub const FPE_FLTINV: i32 = 7;
    pub const BUS_ADRALN: i32 = 1;
    pub const TRAP_BRKPT: i32 = 1;
}

/// The bit of `signal` in a signal set.
pub const fn bit(signal: u8) -> u64 {
    1 << (signal - 1)
}

/// Signals no mask can block.
pub const UNBLOCKABLE: u64 = bit(sig::SIGKILL) | bit(sig::SIGSTOP);

/// What a signal does when its action is SIG_DFL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultAction {
    /// The program ends, killed by the signal.
    Terminate,
    /// Nothing happens.
    Ignore,
    /// The process stops until SIGCONT (job control).
    Stop,
    /// Nothing happens when it is delivered (its sending continued a
    /// stopped process already).
    Continue,
}

/// The default action of `signal`.
pub fn default_action(signal: u8) -> DefaultAction {
    match signal {
        sig::SIGCHLD | sig::SIGURG | sig::SIGWINCH => DefaultAction::Ignore,
        sig::SIGCONT => DefaultAction::Continue,
        sig::SIGSTOP | sig::SIGTSTP | sig::SIGTTIN | sig::SIGTTOU => DefaultAction::Stop,
        _ => DefaultAction::Terminate,
    }
}

/// Whether `signal` stops a process by default.
pub fn is_stop(signal: u8) -> bool {
    default_action(signal) == DefaultAction::Stop
}

/// The name and description of a signal, for reports (as strsignal).
pub fn describe(signal: u8) -> (&'static str, &'static str) {
    match signal {
        1 => ("SIGHUP", "hangup"),
        2 => ("SIGINT", "interrupt"),
        3 => ("SIGQUIT", "quit"),
        4 => ("SIGILL", "illegal instruction"),
        5 => ("SIGTRAP", "trace/breakpoint trap"),
        6 => ("SIGABRT", "aborted"),
        7 => ("SIGBUS", "bus error"),
        8 => ("SIGFPE", "floating point exception"),
        9 => ("SIGKILL", "killed"),
        10 => ("SIGUSR1", "user defined signal 1"),
        11 => ("SIGSEGV", "segmentation fault"),
        12 => ("SIGUSR2", "user defined signal 2"),
        13 => ("SIGPIPE", "broken pipe"),
        14 => ("SIGALRM", "alarm clock"),
        15 => ("SIGTERM", "terminated"),
        24 => ("SIGXCPU", "CPU time limit exceeded"),
        25 => ("SIGXFSZ", "file size limit exceeded"),
        26 => ("SIGVTALRM", "virtual timer expired"),
        27 => ("SIGPROF", "profiling timer expired"),
        29 => ("SIGIO", "I/O possible"),
        30 => ("SIGPWR", "power failure"),
        31 => ("SIGSYS", "bad system call"),
        32..=64 => ("SIGRT", "real-time signal"),
        _ => ("signal", "killed by a signal"),
    }
}

/// A `struct kernel_sigaction` as the program passes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SigAction {
    /// Handler address, SIG_DFL (0) or SIG_IGN (1).
    pub handler: u64,
    /// SA_* flags.
    pub flags: u64,
    /// SA_RESTORER trampoline.
    pub restorer: u64,
    /// Signals blocked while the handler runs.
    pub mask: u64,
}

/// SIG_DFL.
pub const SIG_DFL: u64 = 0;
/// SIG_IGN.
pub const SIG_IGN: u64 = 1;

impl SigAction {
    /// Whether sending `signal` under this action does nothing at all.
    pub fn ignores(&self, signal: u8) -> bool {
        match self.handler {
            SIG_IGN => true,
            SIG_DFL => matches!(
                default_action(signal),
                DefaultAction::Ignore | DefaultAction::Continue
            ),
            _ => false,
        }
    }
}

/// What a signal carries (the parts of `siginfo_t` kiln fills in).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SigInfo {
    /// The signal.
    pub signo: u8,
    /// `si_code`.
    pub code: i32,
    /// `si_errno`.
    pub errno: i32,
    /// The first union word: `si_addr` for faults; `si_pid` (low half) and
    /// `si_uid` (high half) for kill; `si_tid` and `si_overrun` for timers.
    pub word0: u64,
    /// The second union word: `si_value` for timers and sigqueue.
    pub word1: u64,
}

impl SigInfo {
    /// A signal sent by kill(2)/tgkill(2) from the program itself (pid 1,
    /// uid 0).
    pub fn user(signo: u8, code: i32) -> Self {
        Self {
            signo,
            code,
            errno: 0,
            word0: 1,
            word1: 0,
        }
    }

    /// A signal raised by the kernel (SIGPIPE, alarms).
    pub fn kernel(signo: u8) -> Self {
        Self {
            signo,
            code: code::SI_KERNEL,
            ..Self::default()
        }
    }

    /// A fault at `addr`.
    pub fn fault(signo: u8, code: i32, addr: u64) -> Self {
        Self {
            signo,
            code,
            errno: 0,
            word0: addr,
            word1: 0,
        }
    }

    /// A POSIX timer's expiry.
    pub fn timer(signo: u8, timer_id: i32, overrun: i32, value: u64) -> Self {
        Self {
            signo,
            code: code::SI_TIMER,
            errno: 0,
            word0: u64::from(timer_id as u32) | (u64::from(overrun as u32) << 32),
            word1: value,
        }
    }

    /// The 128-byte `siginfo_t`.
    pub fn encode(&self) -> [u8; SIGINFO_SIZE] {
        let mut b = [0u8; SIGINFO_SIZE];
        b[0..4].copy_from_slice(&i32::from(self.signo).to_le_bytes());
        b[4..8].copy_from_slice(&self.errno.to_le_bytes());
        b[8..12].copy_from_slice(&self.code.to_le_bytes());
        b[16..24].copy_from_slice(&self.word0.to_le_bytes());
        b[24..32].copy_from_slice(&self.word1.to_le_bytes());
        b
    }
}

/// Pending signals with their information: one instance of each standard
/// signal, every instance of a real-time one (up to a limit, like
/// RLIMIT_SIGPENDING).
#[derive(Clone, Debug, Default)]
pub struct SigQueue {
    entries: Vec<SigInfo>,
}

/// How many signals one queue holds at most.
pub const QUEUE_LIMIT: usize = 1024;

impl SigQueue {
    /// An empty queue.
    pub const fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// The set of pending signals.
    pub fn set(&self) -> u64 {
        self.entries.iter().fold(0, |s, i| s | bit(i.signo))
    }

    /// Queues `info`; false when it was dropped (a standard signal already
    /// pending, or the queue is full).
    pub fn push(&mut self, info: SigInfo) -> bool {
        if info.signo < SIGRTMIN && self.set() & bit(info.signo) != 0 {
            return false;
        }
        if self.entries.len() >= QUEUE_LIMIT {
            return false;
        }
        self.entries.push(info);
        true
    }

    /// Takes the lowest-numbered pending signal in `allowed` (the oldest
    /// instance of it).
    pub fn take(&mut self, allowed: u64) -> Option<SigInfo> {
        let ready = self.set() & allowed;
        if ready == 0 {
            return None;
        }
        let signo = ready.trailing_zeros() as u8 + 1;
        let at = self.entries.iter().position(|i| i.signo == signo)?;
        Some(self.entries.remove(at))
    }

    /// Drops every pending instance of `signo`.
    pub fn discard(&mut self, signo: u8) {
        self.entries.retain(|i| i.signo != signo);
    }
}

/// `ss_flags` bits.
pub mod ss {
    /// The thread is running on the alternate stack.
    pub const ONSTACK: u32 = 1;
    /// The alternate stack is off.
    pub const DISABLE: u32 = 2;
    /// Disable the stack while a handler runs on it.
    pub const AUTODISARM: u32 = 1 << 31;
}

/// Smallest alternate stack sigaltstack(2) accepts (MINSIGSTKSZ).
pub const MIN_ALT_STACK: u64 = 2048;

/// A thread's alternate signal stack (`stack_t`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AltStack {
    /// Lowest address.
    pub sp: u64,
    /// Size in bytes (0: none).
    pub size: u64,
    /// SS_AUTODISARM if asked for.
    pub flags: u32,
}

impl AltStack {
    /// Whether `sp` is on this stack.
    pub fn contains(&self, sp: u64) -> bool {
        self.size != 0 && sp > self.sp && sp - self.sp <= self.size
    }

    /// `ss_flags` as sigaltstack(2) reports them for a thread at `sp`.
    pub fn flags_at(&self, sp: u64) -> u32 {
        if self.contains(sp) {
            ss::ONSTACK
        } else if self.size == 0 {
            ss::DISABLE
        } else {
            self.flags & ss::AUTODISARM
        }
    }

    /// The 24-byte `stack_t` for a thread at `sp`.
    pub fn encode(&self, sp: u64) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[0..8].copy_from_slice(&self.sp.to_le_bytes());
        b[8..12].copy_from_slice(&self.flags_at(sp).to_le_bytes());
        b[16..24].copy_from_slice(&self.size.to_le_bytes());
        b
    }

    /// Reads a `stack_t`: (sp, flags, size).
    pub fn decode(b: &[u8; 24]) -> (u64, u32, u64) {
        (
            u64::from_le_bytes(b[0..8].try_into().unwrap_or_default()),
            u32::from_le_bytes(b[8..12].try_into().unwrap_or_default()),
            u64::from_le_bytes(b[16..24].try_into().unwrap_or_default()),
        )
    }
}

/// Bytes of `siginfo_t`.
pub const SIGINFO_SIZE: usize = 128;
/// Bytes of the kernel's `struct ucontext` on x86-64.
pub const UCONTEXT_SIZE: usize = 304;
/// Bytes of `struct rt_sigframe` (return address, ucontext, siginfo).
pub const FRAME_SIZE: usize = 8 + UCONTEXT_SIZE + SIGINFO_SIZE;
/// Offset of the ucontext in the frame.
pub const UC_OFFSET: u64 = 8;
/// Offset of the siginfo in the frame.
pub const INFO_OFFSET: u64 = 8 + UCONTEXT_SIZE as u64;
/// Offset of `uc_mcontext` in the ucontext.
const MCONTEXT_OFFSET: usize = 40;
/// Offset of `uc_sigmask` in the ucontext.
const SIGMASK_OFFSET: usize = 296;

/// `uc_flags`: the FPU state is an XSAVE image.
pub const UC_FP_XSTATE: u64 = 1;
/// `uc_flags`: sigcontext.ss is meaningful.
pub const UC_SIGCONTEXT_SS: u64 = 2;
/// `uc_flags`: restore ss strictly.
pub const UC_STRICT_RESTORE_SS: u64 = 4;

/// The program's registers as `struct sigcontext` holds them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SigContext {
    /// r8..r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip, eflags (the
    /// order of the structure and of glibc's `gregs`).
    pub gregs: [u64; 18],
    /// cs, gs, fs, ss selectors as seen by a Linux program.
    pub segments: [u16; 4],
    /// Error code of the exception.
    pub err: u64,
    /// Exception vector.
    pub trapno: u64,
    /// The old signal mask (legacy copy).
    pub oldmask: u64,
    /// Faulting address.
    pub cr2: u64,
    /// Address of the FPU state image (0: none).
    pub fpstate: u64,
}

/// Indexes into [`SigContext::gregs`].
#[allow(missing_docs)]
pub mod reg {
    pub const R8: usize = 0;
    pub const R9: usize = 1;
    pub const R10: usize = 2;
    pub const R11: usize = 3;
    pub const R12: usize = 4;
    pub const R13: usize = 5;
    pub const R14: usize = 6;
    pub const R15: usize = 7;
    pub const RDI: usize = 8;
    pub const RSI: usize = 9;
    pub const RBP: usize = 10;
    pub const RBX: usize = 11;
    pub const RDX: usize = 12;
    pub const RAX: usize = 13;
    pub const RCX: usize = 14;
    pub const RSP: usize = 15;
    pub const RIP: usize = 16;
    pub const EFLAGS: usize = 17;
}

/// Where a signal frame goes on the program's stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Address of the frame (the handler's stack pointer).
    pub frame: u64,
    /// Address of the FPU state image.
    pub fpstate: u64,
    /// Whether the frame is on the alternate stack.
    pub on_alt_stack: bool,
}

/// Places a frame with `fp_size` bytes of FPU state below `sp` (Linux's
/// get_sigframe): past the red zone, or at the top of the alternate stack
/// when the action asks for it and the thread is not already on it.
/// `None` when the frame would not fit on the alternate stack or the
/// address arithmetic wraps.
pub fn place_frame(
    sp: u64,
    fp_size: u64,
    alt: &AltStack,
    on_stack_flag: bool,
) -> Option<Placement> {
    let already_on = alt.contains(sp);
    let switch = on_stack_flag && alt.size != 0 && !already_on;
    let top = if switch {
        alt.sp.checked_add(alt.size)?
    } else {
        sp.checked_sub(128)?
    };
    let fpstate = top.checked_sub(fp_size)? & !63;
    let frame = (fpstate.checked_sub(FRAME_SIZE as u64)? & !15).checked_sub(8)?;
    let on_alt_stack = switch || already_on;
    if on_alt_stack && !(frame > alt.sp && frame - alt.sp <= alt.size) {
        return None;
    }
    Some(Placement {
        frame,
        fpstate,
        on_alt_stack,
    })
}

/// Everything the frame records.
pub struct FrameContents<'a> {
    /// Return address for the handler (SA_RESTORER trampoline).
    pub restorer: u64,
    /// `uc_flags`.
    pub uc_flags: u64,
    /// The alternate stack at delivery, already encoded.
    pub stack: [u8; 24],
    /// The interrupted registers.
    pub context: &'a SigContext,
    /// The mask `rt_sigreturn` restores.
    pub mask: u64,
    /// The signal's information.
    pub info: &'a SigInfo,
}

/// The bytes of `struct rt_sigframe`.
pub fn encode_frame(c: &FrameContents<'_>) -> [u8; FRAME_SIZE] {
    let mut b = [0u8; FRAME_SIZE];
    b[0..8].copy_from_slice(&c.restorer.to_le_bytes());
    let uc = &mut b[UC_OFFSET as usize..UC_OFFSET as usize + UCONTEXT_SIZE];
    uc[0..8].copy_from_slice(&c.uc_flags.to_le_bytes());
    uc[16..40].copy_from_slice(&c.stack);
    uc[MCONTEXT_OFFSET..MCONTEXT_OFFSET + 256].copy_from_slice(&encode_context(c.context));
    uc[SIGMASK_OFFSET..SIGMASK_OFFSET + 8].copy_from_slice(&c.mask.to_le_bytes());
    b[INFO_OFFSET as usize..].copy_from_slice(&c.info.encode());
    b
}

fn encode_context(c: &SigContext) -> [u8; 256] {
    let mut b = [0u8; 256];
    for (i, r) in c.gregs.iter().enumerate() {
        b[i * 8..i * 8 + 8].copy_from_slice(&r.to_le_bytes());
    }
    for (i, s) in c.segments.iter().enumerate() {
        b[144 + i * 2..146 + i * 2].copy_from_slice(&s.to_le_bytes());
    }
    let tail = [c.err, c.trapno, c.oldmask, c.cr2, c.fpstate];
    for (i, v) in tail.iter().enumerate() {
        b[152 + i * 8..160 + i * 8].copy_from_slice(&v.to_le_bytes());
    }
    b
}

fn word(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

/// What `rt_sigreturn` reads back from a ucontext.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restored {
    /// The registers to resume with.
    pub context: SigContext,
    /// The signal mask to restore.
    pub mask: u64,
    /// The alternate stack to restore: (sp, flags, size).
    pub stack: (u64, u32, u64),
}

/// Decodes the ucontext of a frame (`uc` is its 304 bytes).
pub fn decode_ucontext(uc: &[u8; UCONTEXT_SIZE]) -> Restored {
    let m = &uc[MCONTEXT_OFFSET..MCONTEXT_OFFSET + 256];
    let mut context = SigContext::default();
    for (i, r) in context.gregs.iter_mut().enumerate() {
        *r = word(m, i * 8);
    }
    for (i, s) in context.segments.iter_mut().enumerate() {
        *s = u16::from_le_bytes([m[144 + i * 2], m[145 + i * 2]]);
    }
    context.err = word(m, 152);
    context.trapno = word(m, 160);
    context.oldmask = word(m, 168);
    context.cr2 = word(m, 176);
    context.fpstate = word(m, 184);
    let stack: [u8; 24] = uc[16..40].try_into().unwrap_or([0; 24]);
    Restored {
        context,
        mask: word(uc, SIGMASK_OFFSET),
        stack: AltStack::decode(&stack),
    }
}

/// RFLAGS bits a handler may change through the ucontext (Linux's
/// FIX_EFLAGS: the arithmetic flags, TF, DF, OF, RF and AC).
pub const USER_FLAGS: u64 =
    0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x100 | 0x400 | 0x800 | 0x1_0000 | 0x4_0000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_signals_coalesce_realtime_ones_queue() {
        let mut q = SigQueue::new();
        assert!(q.push(SigInfo::user(sig::SIGUSR1, code::SI_USER)));
        assert!(!q.push(SigInfo::user(sig::SIGUSR1, code::SI_USER)));
        assert!(q.push(SigInfo::user(40, code::SI_QUEUE)));
        assert!(q.push(SigInfo::user(40, code::SI_QUEUE)));
        assert_eq!(q.set(), bit(sig::SIGUSR1) | bit(40));
        assert_eq!(q.take(bit(40)).map(|i| i.signo), Some(40));
        assert_eq!(q.take(u64::MAX).map(|i| i.signo), Some(sig::SIGUSR1));
        assert_eq!(q.take(u64::MAX).map(|i| i.signo), Some(40));
        assert_eq!(q.take(u64::MAX), None);
    }

    #[test]
    fn lowest_signal_first_and_blocked_ones_stay() {
        let mut q = SigQueue::new();
        q.push(SigInfo::kernel(sig::SIGTERM));
        q.push(SigInfo::kernel(sig::SIGALRM));
        q.push(SigInfo::kernel(sig::SIGHUP));
        let allowed = !bit(sig::SIGHUP);
        assert_eq!(q.take(allowed).map(|i| i.signo), Some(sig::SIGALRM));
        assert_eq!(q.take(allowed).map(|i| i.signo), Some(sig::SIGTERM));
        assert_eq!(q.take(allowed), None);
        assert_eq!(q.set(), bit(sig::SIGHUP));
        q.discard(sig::SIGHUP);
        assert_eq!(q.set(), 0);
    }

    #[test]
    fn frame_is_below_the_red_zone_and_aligned_like_a_call() {
        let alt = AltStack::default();
        let p = place_frame(0x7fff_0000, 1000, &alt, true).unwrap();
        assert!(!p.on_alt_stack);
        assert_eq!(p.fpstate % 64, 0);
        assert!(p.fpstate + 1000 <= 0x7fff_0000 - 128);
        assert_eq!((p.frame + 8) % 16, 0);
        assert!(p.frame + FRAME_SIZE as u64 <= p.fpstate);
    }

    #[test]
    fn frame_goes_to_the_alternate_stack_once() {
        let alt = AltStack {
            sp: 0x1000_0000,
            size: 0x4000,
            flags: 0,
        };
        let p = place_frame(0x7fff_0000, 512, &alt, true).unwrap();
        assert!(p.on_alt_stack);
        assert!(p.frame > alt.sp && p.fpstate + 512 <= alt.sp + alt.size);
        // A nested signal while on it stays on it, below the current sp.
        let q = place_frame(p.frame, 512, &alt, true).unwrap();
        assert!(q.on_alt_stack && q.frame < p.frame);
        // Without SA_ONSTACK the normal stack is used.
        assert!(
            !place_frame(0x7fff_0000, 512, &alt, false)
                .unwrap()
                .on_alt_stack
        );
        // A stack too small for the frame is refused.
        let tiny = AltStack {
            sp: 0x1000_0000,
            size: 256,
            flags: 0,
        };
        assert_eq!(place_frame(0x7fff_0000, 512, &tiny, true), None);
        assert_eq!(place_frame(100, 512, &AltStack::default(), false), None);
    }

    #[test]
    fn frame_round_trips_registers_mask_and_stack() {
        let mut context = SigContext::default();
        for (i, r) in context.gregs.iter_mut().enumerate() {
            *r = 0x1111 * (i as u64 + 1);
        }
        context.segments = [0x33, 0, 0, 0x2b];
        context.trapno = 14;
        context.err = 6;
        context.cr2 = 0xdead_0000;
        context.fpstate = 0x7000_0040;
        context.oldmask = 0x5;
        let alt = AltStack {
            sp: 0x9000,
            size: 0x2000,
            flags: ss::AUTODISARM,
        };
        let info = SigInfo::fault(sig::SIGSEGV, code::SEGV_MAPERR, 0xdead_0000);
        let bytes = encode_frame(&FrameContents {
            restorer: 0x40_1000,
            uc_flags: UC_FP_XSTATE,
            stack: alt.encode(0x7000_0000),
            context: &context,
            mask: 0x5,
            info: &info,
        });
        assert_eq!(word(&bytes, 0), 0x40_1000);
        // glibc's view: gregs[REG_RIP] at uc + 40 + 16*8, fpregs at uc + 224.
        assert_eq!(word(&bytes, 8 + 40 + 16 * 8), context.gregs[reg::RIP]);
        assert_eq!(word(&bytes, 8 + 224), 0x7000_0040);
        // siginfo: signo, code, si_addr.
        let info_at = INFO_OFFSET as usize;
        assert_eq!(bytes[info_at], sig::SIGSEGV);
        assert_eq!(bytes[info_at + 8], 1);
        assert_eq!(word(&bytes, info_at + 16), 0xdead_0000);
        let uc: [u8; UCONTEXT_SIZE] = bytes[8..8 + UCONTEXT_SIZE].try_into().unwrap();
        let back = decode_ucontext(&uc);
        assert_eq!(back.context, context);
        assert_eq!(back.mask, 0x5);
        assert_eq!(back.stack, (0x9000, ss::AUTODISARM, 0x2000));
    }

    #[test]
    fn alt_stack_flags_follow_the_stack_pointer() {
        let alt = AltStack {
            sp: 0x1000,
            size: 0x1000,
            flags: 0,
        };
        assert_eq!(alt.flags_at(0x1800), ss::ONSTACK);
        assert_eq!(alt.flags_at(0x1000), 0); // the lowest byte is not "on" it
        assert_eq!(alt.flags_at(0x2000), ss::ONSTACK);
        assert_eq!(alt.flags_at(0x3000), 0);
        assert_eq!(AltStack::default().flags_at(0x1800), ss::DISABLE);
    }

    #[test]
    fn default_actions() {
        assert_eq!(default_action(sig::SIGCHLD), DefaultAction::Ignore);
        assert_eq!(default_action(sig::SIGTSTP), DefaultAction::Stop);
        assert_eq!(default_action(sig::SIGCONT), DefaultAction::Continue);
        assert!(SigAction::default().ignores(sig::SIGCONT));
        assert!(!SigAction::default().ignores(sig::SIGSTOP));
        assert_eq!(default_action(sig::SIGALRM), DefaultAction::Terminate);
        assert_eq!(default_action(40), DefaultAction::Terminate);
        let ign = SigAction {
            handler: SIG_IGN,
            ..SigAction::default()
        };
        assert!(ign.ignores(sig::SIGTERM));
        assert!(SigAction::default().ignores(sig::SIGWINCH));
        assert!(!SigAction::default().ignores(sig::SIGTERM));
    }
}
