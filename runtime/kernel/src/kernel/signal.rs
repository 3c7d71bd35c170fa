//! Signal dispositions and the blocked mask (recorded; delivery to program
//! handlers comes with the Linux-ABI work), and what a fatal signal does.

use kiln_kernel::errno::Errno;

/// Number of signals (1..=64).
pub const NSIG: usize = 64;

/// Signal numbers used by the kernel (Linux x86-64 values).
#[allow(missing_docs)]
pub mod sig {
    pub const SIGILL: u8 = 4;
    pub const SIGTRAP: u8 = 5;
    pub const SIGBUS: u8 = 7;
    pub const SIGFPE: u8 = 8;
    pub const SIGKILL: u8 = 9;
    pub const SIGSEGV: u8 = 11;
    pub const SIGPIPE: u8 = 13;
    pub const SIGCHLD: u8 = 17;
    pub const SIGCONT: u8 = 18;
    pub const SIGSTOP: u8 = 19;
    pub const SIGTSTP: u8 = 20;
    pub const SIGTTIN: u8 = 21;
    pub const SIGTTOU: u8 = 22;
    pub const SIGURG: u8 = 23;
    pub const SIGWINCH: u8 = 28;
}

/// The name and description of a signal, for reports.
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
        _ => ("signal", "killed by a signal"),
    }
}

/// A `struct kernel_sigaction` as the program passes it.
#[derive(Clone, Copy, Debug, Default)]
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

/// Dispositions and mask of the program.
pub struct Signals {
    actions: [SigAction; NSIG],
    /// Blocked signals (bit n-1 for signal n).
    pub mask: u64,
    /// Signals sent while blocked, waiting for the mask to open.
    pub pending: u64,
}

/// What sending a signal to the program does now.
pub enum Effect {
    /// Nothing (ignored, or a default action of "ignore"/"stop"/"continue").
    Nothing,
    /// The program ends, killed by the signal.
    Terminate,
    /// A handler is installed but delivery is not implemented yet.
    HandlerNotDelivered,
}

impl Signals {
    /// Default dispositions, nothing blocked.
    pub fn new() -> Self {
        Self {
            actions: [SigAction::default(); NSIG],
            mask: 0,
            pending: 0,
        }
    }

    fn index(signal: u64) -> Result<usize, Errno> {
        if (1..=NSIG as u64).contains(&signal) {
            Ok(signal as usize - 1)
        } else {
            Err(Errno::Inval)
        }
    }

    /// Replaces a disposition; returns the old one.
    pub fn set_action(&mut self, signal: u64, new: Option<SigAction>) -> Result<SigAction, Errno> {
        let i = Self::index(signal)?;
        let old = self.actions[i];
        if let Some(new) = new {
            if signal == u64::from(sig::SIGKILL) || signal == u64::from(sig::SIGSTOP) {
                return Err(Errno::Inval);
            }
            self.actions[i] = new;
        }
        Ok(old)
    }

    /// Sends `signal`: a blocked one is left pending; otherwise the effect.
    pub fn send(&mut self, signal: u8) -> Effect {
        let bit = 1u64 << (signal - 1);
        if self.mask & bit != 0 {
            self.pending |= bit;
            return Effect::Nothing;
        }
        self.effect(signal)
    }

    /// The first pending signal the mask no longer blocks, taken off the
    /// pending set.
    pub fn take_unblocked(&mut self) -> Option<u8> {
        let ready = self.pending & !self.mask;
        if ready == 0 {
            return None;
        }
        let signal = ready.trailing_zeros() as u8 + 1;
        self.pending &= !(1 << (signal - 1));
        Some(signal)
    }

    /// What sending `signal` to the program does.
    pub fn effect(&self, signal: u8) -> Effect {
        let Ok(i) = Self::index(u64::from(signal)) else {
            return Effect::Nothing;
        };
        match self.actions[i].handler {
            0 => match signal {
                sig::SIGCHLD | sig::SIGCONT | sig::SIGURG | sig::SIGWINCH => Effect::Nothing,
                sig::SIGSTOP | sig::SIGTSTP | sig::SIGTTIN | sig::SIGTTOU => Effect::Nothing,
                _ => Effect::Terminate,
            },
            1 if signal != sig::SIGKILL => Effect::Nothing,
            1 => Effect::Terminate,
            _ => Effect::HandlerNotDelivered,
        }
    }
}
