//! Signal system calls: dispositions, masks, sending, waiting for signals
//! and the alternate stack. Delivery itself is `crate::signal`'s.

use kiln_kernel::errno::Errno;
use kiln_kernel::signal::{code, sig, SigInfo, NSIG, UNBLOCKABLE};

use super::{Call, OnSignal, Outcome};
use crate::mm::uaccess::UserPtr;
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
    p: &mut Call,
    signal: u64,
    act: UserPtr<SigAction>,
    oldact: UserPtr<[u64; 4]>,
    size: u64,
) -> Result<u64, Errno> {
    if size != SIGSET_SIZE {
        return Err(Errno::Inval);
    }
    let new = match act.non_null() {
        Some(act) => Some(p.mem.read(act)?),
        None => None,
    };
    let old = p.signals.set_action(signal, new)?;
    if let Some(new) = new {
        // Setting "ignore" discards what is pending (POSIX).
        if new.ignores(signal as u8) {
            crate::signal::pending::discard_signal(signal as u8);
        }
    }
    if let Some(oldact) = oldact.non_null() {
        p.mem
            .write(oldact, [old.handler, old.flags, old.restorer, old.mask])?;
    }
    Ok(0)
}

/// rt_sigprocmask(2): the calling thread's mask. A pending signal it
/// unblocks is delivered on the way out.
pub fn rt_sigprocmask(
    p: &mut Call,
    how: u32,
    set: UserPtr<u64>,
    oldset: UserPtr<u64>,
    size: u64,
) -> Result<u64, Errno> {
    const SIG_BLOCK: u32 = 0;
    const SIG_UNBLOCK: u32 = 1;
    const SIG_SETMASK: u32 = 2;
    if size != SIGSET_SIZE {
        return Err(Errno::Inval);
    }
    let old = sched::with_current(|t| t.sig.mask);
    if let Some(set) = set.non_null() {
        let s = p.mem.read(set)?;
        let new = match how {
            SIG_BLOCK => old | s,
            SIG_UNBLOCK => old & !s,
            SIG_SETMASK => s,
            _ => return Err(Errno::Inval),
        };
        crate::signal::pending::set_mask(new);
    }
    if let Some(oldset) = oldset.non_null() {
        p.mem.write(oldset, old)?;
    }
    Ok(0)
}

/// rt_sigpending(2): signals pending for the thread or the process.
pub fn rt_sigpending(p: &mut Call, set: UserPtr<u8>, size: u64) -> Result<u64, Errno> {
    if size > SIGSET_SIZE {
        return Err(Errno::Inval);
    }
    let pending = crate::signal::pending::pending_signals() & sched::with_current(|t| t.sig.mask);
    p.mem
        .write_bytes(set, &pending.to_le_bytes()[..size as usize])?;
    Ok(0)
}

/// rt_sigsuspend(2): waits for a signal with a temporary mask; the old
/// one returns when the handler does.
pub fn rt_sigsuspend(p: &mut Call, set: UserPtr<u64>, size: u64) -> Outcome {
    if size != SIGSET_SIZE {
        return Err(Errno::Inval).into();
    }
    let mask = match p.mem.read(set) {
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
pub fn pause(_p: &mut Call) -> Outcome {
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
pub fn rt_sigtimedwait(
    p: &mut Call,
    set: UserPtr<u64>,
    info: UserPtr<u8>,
    timeout: UserPtr<[i64; 2]>,
    size: u64,
) -> Outcome {
    let r = (|| -> Result<Outcome, Errno> {
        if size != SIGSET_SIZE {
            return Err(Errno::Inval);
        }
        let wanted = p.mem.read(set)? & !UNBLOCKABLE;
        if let Some(got) = signal::take_waited(wanted) {
            if !info.is_null() {
                p.mem.write_bytes(info, &got.encode())?;
            }
            return Ok(Outcome::Return(Ok(u64::from(got.signo))));
        }
        // Another signal the thread does not block interrupts the wait.
        let mask = sched::with_current(|t| t.sig.mask);
        if crate::signal::pending::pending_signals() & !mask != 0 {
            return Err(Errno::Intr);
        }
        let timeout_ns = if !timeout.is_null() {
            let t = p.mem.read(timeout)?;
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

/// kill(2): `pid` 1 (or 0) is the program.
pub fn kill(p: &mut Call, pid: i32, signal: u64) -> Outcome {
    send_user(p, pid, None, signal)
}

/// tgkill(2): a signal for thread `tid` of process `tgid`.
pub fn tgkill(p: &mut Call, tgid: i32, tid: i32, signal: u64) -> Outcome {
    send_user(p, tgid, Some(tid), signal)
}

/// tkill(2): a signal for thread `tid` of the caller's process.
pub fn tkill(p: &mut Call, tid: i32, signal: u64) -> Outcome {
    let pid = p.pid as i32;
    send_user(p, pid, Some(tid), signal)
}

/// kill, tgkill and tkill: `pid` 0 or the caller's own is the caller's
/// process (its first thread when it is not pid 1, whose process-wide
/// queue is the kernel's); another live process gets the signal as its
/// dispositions say — a terminating default ends it at once; a thread
/// target goes to that thread. `pid` 0 is the caller's process group,
/// `-pgid` another group, -1 every process but pid 1 and the caller.
fn send_user(p: &mut Process, pid: i32, tid: Option<i32>, signal: u64) -> Outcome {
    let r = (|| -> Result<Option<u8>, Errno> {
        if tid.is_some() && pid <= 0 {
            return Err(Errno::Inval);
        }
        if signal > u64::from(NSIG) {
            return Err(Errno::Inval);
        }
        let kind = if tid.is_some() {
            code::SI_TKILL
        } else {
            code::SI_USER
        };
        let info = SigInfo {
            word0: u64::from(p.pid),
            ..SigInfo::user(signal as u8, kind)
        };
        if tid.is_none() && pid <= 0 {
            return send_to_many(p, pid, info);
        }
        if pid != p.pid as i32 {
            if tid.is_some_and(|t| t != pid) {
                // Another process's other threads: not reachable yet.
                return Err(Errno::Srch);
            }
            if info.signo == sig::SIGCONT {
                crate::process::continue_process(p, pid as u32);
            }
            crate::process::signal_other(pid as u32, info)?;
            return Ok(None);
        }
        // None: the process as a whole.
        let target = match tid {
            Some(t) => Some(u32::try_from(t).map_err(|_| Errno::Inval)?),
            None => None,
        };
        if signal == 0 {
            return match target {
                Some(t) if !sched::thread_alive(t) => Err(Errno::Srch),
                _ => Ok(None),
            };
        }
        if info.signo == sig::SIGCONT {
            let me = p.pid;
            crate::process::continue_process(p, me);
        }
        signal::send(p, target, info)
    })();
    match r {
        Ok(Some(signo)) => Outcome::Kill(signo),
        Ok(None) => Outcome::Return(Ok(0)),
        Err(e) => Outcome::Return(Err(e)),
    }
}

/// kill(0 | -pgid | -1, signal): every process of the group (or every
/// one but pid 1 and the caller); the caller's own share last, as its
/// verdict (ending it) is the call's. ESRCH when none is there.
fn send_to_many(p: &mut Process, pid: i32, info: SigInfo) -> Result<Option<u8>, Errno> {
    let me = p.pid;
    let selected: alloc::vec::Vec<u32> = crate::process::all_ids(p)
        .into_iter()
        .filter(|i| match pid {
            -1 => i.pid != 1 && i.pid != me,
            0 => i.pgid == p.pgid,
            g => i.pgid == g.unsigned_abs(),
        })
        .map(|i| i.pid)
        .collect();
    if selected.is_empty() {
        return Err(Errno::Srch);
    }
    for &other in selected.iter().filter(|&&o| o != me) {
        if info.signo == sig::SIGCONT {
            crate::process::continue_process(p, other);
        }
        let _ = crate::process::signal_other(other, info);
    }
    if !selected.contains(&me) || info.signo == 0 {
        return Ok(None);
    }
    signal::send(p, None, info)
}

/// rt_sigqueueinfo(2).
pub fn rt_sigqueueinfo(p: &mut Call, pid: i32, signal: u64, info: UserPtr<[u8; 32]>) -> Outcome {
    queue_info(p, pid, None, signal, info)
}

/// rt_tgsigqueueinfo(2).
pub fn rt_tgsigqueueinfo(
    p: &mut Call,
    tgid: i32,
    tid: i32,
    signal: u64,
    info: UserPtr<[u8; 32]>,
) -> Outcome {
    queue_info(p, tgid, Some(tid), signal, info)
}

/// A signal with the program's own siginfo (its code must be negative, as
/// Linux requires of senders that are not the kernel).
fn queue_info(
    p: &mut Process,
    pid: i32,
    tid: Option<i32>,
    signal: u64,
    uinfo: UserPtr<[u8; 32]>,
) -> Outcome {
    let r = (|| -> Result<Option<u8>, Errno> {
        if !matches!(pid, 1 | 0) {
            return Err(Errno::Srch);
        }
        let signo = signal_number(signal)?;
        let raw = p.mem.read(uinfo)?;
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
            Some(t) => Some(u32::try_from(t).map_err(|_| Errno::Inval)?),
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

/// sigaltstack(2).
pub fn sigaltstack(p: &mut Call, new: UserPtr<[u8; 24]>, old: UserPtr<u8>) -> Result<u64, Errno> {
    let sp = p.frame().rsp;
    signal::sigaltstack(p, new, old, sp)
}

/// restart_syscall(2): nothing to restart (kiln restarts calls in place).
pub fn restart_syscall(_p: &mut Call) -> Result<u64, Errno> {
    Err(Errno::Intr)
}
