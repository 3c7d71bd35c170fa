//! Signals: sending, delivery to the program's handlers, rt_sigreturn.
//!
//! Dispositions are the process's ([`Signals`]); masks, pending queues and
//! alternate stacks are each thread's (`crate::signal::pending::ThreadSignals`), with one
//! queue for signals sent to the process as a whole. A signal takes effect
//! on a thread's way back to the program (the end of a system call, an
//! interrupt or an exception): a handler gets a Linux `rt_sigframe` on its
//! stack (see `kiln_kernel::signal`), a default action ends the program
//! with status 128+N. A blocked thread the signal concerns is woken: its
//! system call fails with EINTR, or is re-executed after the handler when
//! the action has SA_RESTART.

pub mod pending;

use core::fmt;

use kiln_kernel::errno::Errno;
use kiln_kernel::signal::{
    bit, code, decode_ucontext, default_action, encode_frame, is_stop, place_frame, sa, ss,
    AltStack, DefaultAction, FrameContents, SigInfo, INFO_OFFSET, MIN_ALT_STACK, NSIG, SIG_DFL,
    SIG_IGN, UCONTEXT_SIZE, UC_FP_XSTATE, UC_OFFSET, UC_SIGCONTEXT_SS, UC_STRICT_RESTORE_SS,
    UNBLOCKABLE,
};
pub use kiln_kernel::signal::{describe, sig, SigAction};

use crate::arch::{sigctx, Frame};
use crate::kill_program;
use crate::mm::uaccess::UserPtr;
use crate::process::Process;
use crate::sched::{self, Tid};
use crate::state::KERNEL;
use crate::time::timer;

/// The program's signal dispositions.
#[derive(Clone)]
pub struct Signals {
    actions: [SigAction; NSIG as usize],
}

impl Default for Signals {
    fn default() -> Self {
        Self::new()
    }
}

impl Signals {
    /// Every signal at SIG_DFL.
    pub fn new() -> Self {
        Self {
            actions: [SigAction::default(); NSIG as usize],
        }
    }

    /// The dispositions after execve: handlers go back to SIG_DFL (the
    /// code they pointed at is gone); ignored signals stay ignored.
    pub fn after_exec(&self) -> Self {
        let mut next = Self::new();
        for (new, old) in next.actions.iter_mut().zip(&self.actions) {
            if old.handler == kiln_kernel::signal::SIG_IGN {
                *new = *old;
                new.flags = 0;
                new.mask = 0;
                new.restorer = 0;
            }
        }
        next
    }

    fn index(signal: u64) -> Result<usize, Errno> {
        if (1..=u64::from(NSIG)).contains(&signal) {
            Ok(signal as usize - 1)
        } else {
            Err(Errno::Inval)
        }
    }

    /// The disposition of `signo` (1..=64).
    pub fn action(&self, signo: u8) -> SigAction {
        self.actions
            .get(usize::from(signo).wrapping_sub(1))
            .copied()
            .unwrap_or_default()
    }

    /// The ignored and the caught (handled) signals, as sets.
    pub fn summary(&self) -> (u64, u64) {
        let mut ignored = 0;
        let mut caught = 0;
        for (i, a) in self.actions.iter().enumerate() {
            match a.handler {
                SIG_DFL => {}
                SIG_IGN => ignored |= 1 << i,
                _ => caught |= 1 << i,
            }
        }
        (ignored, caught)
    }

    /// Replaces a disposition; returns the old one.
    ///
    /// # Errors
    /// EINVAL for a bad number, or for SIGKILL and SIGSTOP.
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
}

/// Sends `info` to thread `target` (or the process, `None`). Returns the
/// signal when its effect is to end the program now (the caller ends it,
/// having released its locks).
///
/// # Errors
/// ESRCH when the target thread does not exist.
pub fn send(p: &Process, target: Option<Tid>, info: SigInfo) -> Result<Option<u8>, Errno> {
    let signo = info.signo;
    if let Some(tid) = target {
        if !sched::thread_alive(tid) {
            return Err(Errno::Srch);
        }
    }
    if signo == sig::SIGKILL {
        return Ok(Some(signo));
    }
    let action = p.signals.action(signo);
    let blocked = match target {
        Some(tid) => crate::signal::pending::thread_blocks(tid, signo),
        None => crate::signal::pending::blocked_everywhere(p.pid, signo),
    };
    if !blocked {
        if action.ignores(signo) {
            return Ok(None);
        }
        // A stop is the process's own doing, on its way back to the
        // program (`deliver`).
        if action.handler == SIG_DFL && !is_stop(signo) {
            return Ok(Some(signo));
        }
    }
    let to = match target {
        Some(tid) => crate::signal::pending::Target::Thread(tid),
        None => crate::signal::pending::Target::Process(p.pid),
    };
    crate::signal::pending::post(to, info);
    Ok(None)
}

/// Sends a signal raised by the kernel itself (timers); ends the program
/// when that is its effect. Called with no kernel lock held.
pub fn post_from_kernel(target: Option<Tid>, info: SigInfo) {
    let verdict = {
        let guard = KERNEL.process.lock();
        match guard.as_ref() {
            // A process-directed signal is pid 1's: while another process
            // runs, it waits in pid 1's queue, and pid 1's dispositions
            // decide when it takes it.
            Some(p) if target.is_none() && p.pid != 1 => {
                crate::signal::pending::post_signal(None, info);
                return;
            }
            Some(p) => send(p, target, info),
            None => return,
        }
    };
    if let Ok(Some(signo)) = verdict {
        kill_program(signo, None);
    }
}

/// A signal leaves its queue: a timer's expiry count is settled now.
fn dequeued(mut info: SigInfo) -> SigInfo {
    if info.code == code::SI_TIMER {
        let id = info.word0 as u32 as i32;
        let overrun = timer::delivered(sched::current_pid(), id);
        info.word0 = u64::from(id as u32) | (u64::from(overrun as u32) << 32);
    }
    info
}

/// Takes a pending signal of `set` for sigtimedwait (which blocks them).
pub fn take_waited(set: u64) -> Option<SigInfo> {
    crate::signal::pending::take_signal(set).map(dequeued)
}

/// How the system call that ends here went, for a signal delivered on its
/// way out.
#[derive(Clone, Copy, Debug)]
pub struct SyscallEnd {
    /// Its number.
    pub number: u64,
    /// It was interrupted by a signal and may be re-executed
    /// (ERESTARTSYS): after a handler with SA_RESTART, or when no handler
    /// runs at all.
    pub restartable: bool,
}

/// On the way back to the program: delivers the running thread's pending
/// signals that it does not block, each handler's frame on top of the one
/// before (the mask each handler runs with decides which signals follow),
/// as Linux does.
pub fn deliver(frame: &mut Frame, syscall: Option<SyscallEnd>) {
    let mut restart = syscall.filter(|s| s.restartable).map(|s| s.number);
    loop {
        let mut guard = KERNEL.process.lock();
        let Some(p) = guard.as_mut() else { return };
        if p.stopped.is_some() {
            // A stopped process's threads wait here, on their way back to
            // the program, for SIGCONT (or SIGKILL).
            drop(guard);
            if crate::signal::pending::pending_signals() & bit(sig::SIGKILL) != 0 {
                kill_program(sig::SIGKILL, None);
            }
            if sched::block(sched::Wait::Stopped, None).is_err() {
                crate::deadlock();
            }
            continue;
        }
        let Some(info) = crate::signal::pending::take_signal(0) else {
            break;
        };
        let info = dequeued(info);
        let signo = info.signo;
        let action = p.signals.action(signo);
        match action.handler {
            SIG_IGN => continue,
            SIG_DFL => match default_action(signo) {
                DefaultAction::Ignore | DefaultAction::Continue => continue,
                DefaultAction::Stop => {
                    // pid 1 is the appliance's init: stop signals leave it
                    // running, as they leave a container's.
                    if p.pid != 1 {
                        crate::process::stop(p, signo);
                    }
                    continue;
                }
                DefaultAction::Terminate => {
                    drop(guard);
                    kill_program(signo, None);
                }
            },
            _ => {}
        }
        if let Some(number) = restart.take() {
            if action.flags & sa::RESTART != 0 {
                sigctx::rewind_syscall(frame, number);
            } else {
                sigctx::set_return(frame, Errno::Intr.as_return());
            }
        }
        if let Err(e) = setup_frame(p, frame, &action, &info, None) {
            drop(guard);
            let (name, _) = describe(signo);
            kill_program(
                sig::SIGSEGV,
                Some(format_args!(
                    "cannot push the {name} handler's frame onto the stack at {:#x} ({})",
                    frame.rsp,
                    e.name()
                )),
            );
        }
        // Another pending signal the handler's mask lets through gets a
        // frame of its own on top, as on Linux (its handler runs first).
        continue;
    }
    if let Some(number) = restart {
        sigctx::rewind_syscall(frame, number);
    }
    sched::with_current(|t| {
        if let Some(mask) = t.sig.saved_mask.take() {
            t.sig.mask = mask;
        }
    });
}

/// A fault in the program raises `signo`: its handler runs if it has one
/// that is not blocked; otherwise the program ends, reported with `detail`.
pub fn fault(frame: &mut Frame, signo: u8, si_code: i32, addr: u64, detail: fmt::Arguments<'_>) {
    {
        let mut guard = KERNEL.process.lock();
        if let Some(p) = guard.as_mut() {
            let action = p.signals.action(signo);
            let blocked = sched::with_current(|t| t.sig.mask & bit(signo) != 0);
            if action.handler != SIG_DFL && action.handler != SIG_IGN && !blocked {
                let info = SigInfo::fault(signo, si_code, addr);
                let details = (frame.vector, frame.error, addr);
                if setup_frame(p, frame, &action, &info, Some(details)).is_ok() {
                    return;
                }
            }
        }
    }
    kill_program(signo, Some(detail));
}

/// Pushes the signal frame and points the program at the handler.
fn setup_frame(
    p: &mut Process,
    frame: &mut Frame,
    action: &SigAction,
    info: &SigInfo,
    fault: Option<(u64, u64, u64)>,
) -> Result<(), Errno> {
    // x86-64 handlers return through the program's own trampoline.
    if action.flags & sa::RESTORER == 0 {
        return Err(Errno::Fault);
    }
    let (alt, mask, saved) = sched::with_current(|t| (t.sig.alt, t.sig.mask, t.sig.saved_mask));
    let onstack = action.flags & sa::ONSTACK != 0;
    let place =
        place_frame(frame.rsp, sigctx::fpu_image_size(), &alt, onstack).ok_or(Errno::Fault)?;
    let image = sigctx::fpu_image(frame).ok_or(Errno::Nomem)?;
    p.mem.write_user(place.fpstate, image.bytes())?;
    let mut context = sigctx::context_of(frame);
    if let Some((trapno, err, cr2)) = fault {
        context.trapno = trapno;
        context.err = err;
        context.cr2 = cr2;
    }
    let old_mask = saved.unwrap_or(mask);
    context.oldmask = old_mask;
    context.fpstate = place.fpstate;
    let mut uc_flags = UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS;
    if sigctx::xsave_format() {
        uc_flags |= UC_FP_XSTATE;
    }
    let bytes = encode_frame(&FrameContents {
        restorer: action.restorer,
        uc_flags,
        stack: alt.encode(frame.rsp),
        context: &context,
        mask: old_mask,
        info,
    });
    p.mem.write_user(place.frame, &bytes)?;
    sigctx::enter_handler(
        frame,
        action.handler,
        info.signo,
        place.frame + INFO_OFFSET,
        place.frame + UC_OFFSET,
        place.frame,
    );
    sched::with_current(|t| {
        let mut blocked = mask | action.mask;
        if action.flags & sa::NODEFER == 0 {
            blocked |= bit(info.signo);
        }
        t.sig.mask = blocked & !UNBLOCKABLE;
        t.sig.saved_mask = None;
        if place.on_alt_stack && alt.flags & ss::AUTODISARM != 0 {
            t.sig.alt = AltStack::default();
        }
    });
    if action.flags & sa::RESETHAND != 0 {
        let _ = p
            .signals
            .set_action(u64::from(info.signo), Some(SigAction::default()));
    }
    Ok(())
}

/// rt_sigreturn(2): resumes what the handler interrupted, from the frame
/// at the program's stack pointer (the handler's `ret` popped the return
/// address, so the stack pointer is the ucontext's address).
pub fn sigreturn(frame: &mut Frame) {
    let uc_addr = frame.rsp;
    let ok = {
        let mut guard = KERNEL.process.lock();
        match guard.as_mut() {
            Some(p) => restore(p, frame, uc_addr).is_ok(),
            None => false,
        }
    };
    if !ok {
        kill_program(
            sig::SIGSEGV,
            Some(format_args!(
                "rt_sigreturn found no valid signal frame at {uc_addr:#x}"
            )),
        );
    }
}

fn restore(p: &mut Process, frame: &mut Frame, uc_addr: u64) -> Result<(), Errno> {
    let uc: [u8; UCONTEXT_SIZE] = p.mem.read_obj(uc_addr)?;
    let restored = decode_ucontext(&uc);
    let fpstate = restored.context.fpstate;
    if fpstate != 0 {
        let image = p
            .mem
            .user_bytes(fpstate, sigctx::fpu_image_size())?
            .to_vec();
        if !sigctx::load_fpu_image(frame, &image) {
            return Err(Errno::Fault);
        }
    }
    sigctx::resume_with(frame, &restored.context);
    // Saved among bytes a SYSCALL rewrite replaced since: continue where
    // those instructions run now.
    if let Some(to) = crate::syscall::rewrite::relocate(frame.rip) {
        frame.rip = to;
    }
    let (sp, flags, size) = restored.stack;
    sched::with_current(|t| {
        t.sig.mask = restored.mask & !UNBLOCKABLE;
        // The alternate stack comes back as it was when the signal came
        // (undoing SS_AUTODISARM), unless the program resumes on it.
        if !t.sig.alt.contains(frame.rsp) {
            if flags & ss::DISABLE != 0 {
                t.sig.alt = AltStack::default();
            } else if size >= MIN_ALT_STACK {
                t.sig.alt = AltStack {
                    sp,
                    size,
                    flags: flags & ss::AUTODISARM,
                };
            }
        }
    });
    Ok(())
}

/// sigaltstack(2) for the running thread at stack pointer `sp`.
///
/// # Errors
/// EPERM when changing it while running on it, EINVAL for bad flags,
/// ENOMEM for a stack below MINSIGSTKSZ, EFAULT for bad pointers.
pub fn sigaltstack(
    p: &mut Process,
    new: UserPtr<[u8; 24]>,
    old: UserPtr<u8>,
    sp: u64,
) -> Result<u64, Errno> {
    let current = sched::with_current(|t| t.sig.alt);
    let replacement = if !new.is_null() {
        let raw = p.mem.read(new)?;
        let (ss_sp, flags, size) = AltStack::decode(&raw);
        if current.contains(sp) {
            return Err(Errno::Perm);
        }
        let mode = flags & !ss::AUTODISARM;
        if mode != 0 && mode != ss::DISABLE && mode != ss::ONSTACK {
            return Err(Errno::Inval);
        }
        Some(if mode == ss::DISABLE {
            AltStack::default()
        } else {
            if size < MIN_ALT_STACK {
                return Err(Errno::Nomem);
            }
            AltStack {
                sp: ss_sp,
                size,
                flags: flags & ss::AUTODISARM,
            }
        })
    } else {
        None
    };
    if !old.is_null() {
        p.mem.write_bytes(old, &current.encode(sp))?;
    }
    if let Some(alt) = replacement {
        sched::with_current(|t| t.sig.alt = alt);
    }
    Ok(0)
}
