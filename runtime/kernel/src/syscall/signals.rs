//! Signal system calls: dispositions, masks, sending, waiting for signals
//! and the alternate stack. Delivery itself is `kernel::signal`'s.

use kiln_kernel::errno::Errno;
use kiln_kernel::signal::{code, SigInfo, NSIG, UNBLOCKABLE};

use super::{OnSignal, Outcome};
use crate::process::Process;
use crate::sched::{self, Wait};
use crate::signal::{self, SigAction};

/// The size of a signal set the kernel accepts.
const SIGSET_SIZE: u64 = 8;

fn signal_number(n: u64) -> Result<u8, Errno> {
    if (1..=u64::from(NSIG)).contains(&n) {
        Ok(n as u8)
    } else {
        Err(Errno::Inval)
    }
}

/// rt_sigaction(2).
pub fn rt_sigaction(
    p: &mut Process,
    signal: u64,
    act: u64,
    oldact: u64,
    size: u64,
) -> Result<u64, Errno> {
    if size != SIGSET_SIZE {
        return Err(Errno::Inval);
    }
    let new = if act != 0 {
        Some(p.mem.read_obj::<SigAction>(act)?)
    } else {
        None
    };
    let old = p.signals.set_action(signal, new)?;
    if let Some(new) = new {
        // Setting "ignore" discards what is pending (POSIX).
        if new.ignores(signal as u8) {
            crate::signal::pending::discard_signal(signal as u8);
        }
    }
    if oldact != 0 {
        let words: [u64; 4] = [old.handler, old.flags, old.restorer, old.mask];
        let mut raw = [0u8; 32];
        for (i, w) in words.iter().enumerate() {
            raw[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        p.mem.write_user(oldact, &raw)?;
    }
    Ok(0)
}

/// rt_sigprocmask(2): the calling thread's mask. A pending signal it
/// unblocks is delivered on the way out.
pub fn rt_sigprocmask(
    p: &mut Process,
    how: u64,
    set: u64,
    oldset: u64,
    size: u64,
) -> Result<u64, Errno> {
    const SIG_BLOCK: u64 = 0;
    const SIG_UNBLOCK: u64 = 1;
    const SIG_SETMASK: u64 = 2;
    if size != SIGSET_SIZE {
        return Err(Errno::Inval);
    }
    let old = sched::with_current(|t| t.sig.mask);
    if set != 0 {
        let s: u64 = p.mem.read_obj(set)?;
        let new = match how {
            SIG_BLOCK => old | s,
            SIG_UNBLOCK => old & !s,
            SIG_SETMASK => s,
            _ => return Err(Errno::Inval),
        };
        crate::signal::pending::set_mask(new);
    }
    if oldset != 0 {
        p.mem.write_user(oldset, &old.to_le_bytes())?;
    }
    Ok(0)
}

/// rt_sigpending(2): signals pending for the thread or the process.
pub fn rt_sigpending(p: &mut Process, set: u64, size: u64) -> Result<u64, Errno> {
    if size > SIGSET_SIZE {
        return Err(Errno::Inval);
    }
    let pending = crate::signal::pending::pending_signals() & sched::with_current(|t| t.sig.mask);
    p.mem
        .write_user(set, &pending.to_le_bytes()[..size as usize])?;
    Ok(0)
}

/// rt_sigsuspend(2): waits for a signal with a temporary mask; the old
/// one returns when the handler does.
pub fn rt_sigsuspend(p: &mut Process, set: u64, size: u64) -> Outcome {
    if size != SIGSET_SIZE {
        return Err(Errno::Inval).into();
    }
    let mask: u64 = match p.mem.read_obj(set) {
        Ok(m) => m,
        Err(e) => return Err(e).into(),
    };
    sched::with_current(|t| {
        t.sig.saved_mask.get_or_insert(t.sig.mask);
        t.sig.mask = mask & !UNBLOCKABLE;
    });
    wait_for_signal()
}

/// pause(2).
pub fn pause() -> Outcome {
    wait_for_signal()
}

fn wait_for_signal() -> Outcome {
    Outcome::Block {
        wait: Wait::Signal { set: 0 },
        deadline: None,
        on_event: Some(Err(Errno::Intr)),
        on_timeout: Some(Err(Errno::Intr)),
        on_signal: OnSignal::Eintr,
    }
}

/// rt_sigtimedwait(2): takes a pending signal of `set` (normally blocked)
/// or waits for one; EAGAIN at the timeout, EINTR for another signal.
pub fn rt_sigtimedwait(p: &mut Process, set: u64, info: u64, timeout: u64, size: u64) -> Outcome {
    let r = (|| -> Result<Outcome, Errno> {
        if size != SIGSET_SIZE {
            return Err(Errno::Inval);
        }
        let wanted = p.mem.read_obj::<u64>(set)? & !UNBLOCKABLE;
        if let Some(got) = signal::take_waited(wanted) {
            if info != 0 {
                p.mem.write_user(info, &got.encode())?;
            }
            return Ok(Outcome::Return(Ok(u64::from(got.signo))));
        }
        // Another signal the thread does not block interrupts the wait.
        let mask = sched::with_current(|t| t.sig.mask);
        if crate::signal::pending::pending_signals() & !mask != 0 {
            return Err(Errno::Intr);
        }
        let timeout_ns = if timeout != 0 {
            let t: [i64; 2] = p.mem.read_obj(timeout)?;
            if t[0] < 0 || !(0..1_000_000_000).contains(&t[1]) {
                return Err(Errno::Inval);
            }
            Some((t[0] as u64).saturating_mul(1_000_000_000) + t[1] as u64)
        } else {
            None
        };
        if timeout_ns == Some(0) {
            return Err(Errno::Again);
        }
        Ok(Outcome::Block {
            wait: Wait::Signal { set: wanted },
            deadline: sched::restart_deadline(timeout_ns),
            on_event: None,
            on_timeout: Some(Err(Errno::Again)),
            on_signal: OnSignal::Rerun,
        })
    })();
    r.unwrap_or_else(|e| Outcome::Return(Err(e)))
}

/// kill(2), tgkill(2), tkill(2): `pid` 1 (or 0) is the program; a thread
/// target goes to that thread.
pub fn kill(p: &mut Process, pid: u64, tid: Option<u64>, signal: u64) -> Outcome {
    let r = (|| -> Result<Option<u8>, Errno> {
        // The program is process 1 and alone: kill(0) (its group) reaches
        // it, kill(-1) (everyone but the caller) reaches nobody.
        let pid = pid as i64;
        if tid.is_some() && pid <= 0 {
            return Err(Errno::Inval);
        }
        if !(0..=1).contains(&pid) {
            return Err(Errno::Srch);
        }
        if signal > u64::from(NSIG) {
            return Err(Errno::Inval);
        }
        let target = match tid {
            Some(t) => Some(u32::try_from(t as i64).map_err(|_| Errno::Inval)?),
            None => None,
        };
        if signal == 0 {
            return match target {
                Some(t) if !sched::thread_alive(t) => Err(Errno::Srch),
                _ => Ok(None),
            };
        }
        let kind = if target.is_some() {
            code::SI_TKILL
        } else {
            code::SI_USER
        };
        signal::send(p, target, SigInfo::user(signal as u8, kind))
    })();
    match r {
        Ok(Some(signo)) => Outcome::Kill(signo),
        Ok(None) => Outcome::Return(Ok(0)),
        Err(e) => Outcome::Return(Err(e)),
    }
}

/// rt_sigqueueinfo(2) / rt_tgsigqueueinfo(2): a signal with the
/// program's own siginfo (its code must be negative, as Linux requires of
/// senders that are not the kernel).
pub fn sigqueueinfo(
    p: &mut Process,
    pid: u64,
    tid: Option<u64>,
    signal: u64,
    uinfo: u64,
) -> Outcome {
    let r = (|| -> Result<Option<u8>, Errno> {
        if !matches!(pid as i64, 1 | 0) {
            return Err(Errno::Srch);
        }
        let signo = signal_number(signal)?;
        let raw: [u8; 32] = p.mem.read_obj(uinfo)?;
        let si_code = i32::from_le_bytes(raw[8..12].try_into().unwrap_or_default());
        if si_code >= 0 || si_code == code::SI_TKILL {
            return Err(Errno::Perm);
        }
        let info = SigInfo {
            signo,
            code: si_code,
            errno: i32::from_le_bytes(raw[4..8].try_into().unwrap_or_default()),
            word0: u64::from_le_bytes(raw[16..24].try_into().unwrap_or_default()),
            word1: u64::from_le_bytes(raw[24..32].try_into().unwrap_or_default()),
        };
        let target = match tid {
            Some(t) => Some(u32::try_from(t as i64).map_err(|_| Errno::Inval)?),
            None => None,
        };
        signal::send(p, target, info)
    })();
    match r {
        Ok(Some(signo)) => Outcome::Kill(signo),
        Ok(None) => Outcome::Return(Ok(0)),
        Err(e) => Outcome::Return(Err(e)),
    }
}
