//! Timers that raise signals: the interval timers of setitimer(2) and
//! alarm(2), and POSIX timers (timer_create(2)), each process's own (a
//! forked child starts with none, execve deletes the POSIX ones, and a
//! process's end deletes all). All run on the monotonic clock (a
//! CLOCK_REALTIME timer is converted: kiln's wall clock never jumps).
//! ITIMER_VIRTUAL and ITIMER_PROF count elapsed time like the CPU-time
//! clocks do: the program is the guest's only work.
//!
//! The scheduler arms the LAPIC timer for [`next_deadline`] and calls
//! [`fire_due`] when it fires; signals are posted with no lock held.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::state::KERNEL;
use kiln_kernel::errno::Errno;
use kiln_kernel::signal::{sig, SigInfo};

use crate::sched::Tid;
use crate::time::monotonic_ns;

/// Most POSIX timers a process may hold.
const MAX_TIMERS: usize = 256;

/// Which of the three interval timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// ITIMER_REAL → SIGALRM.
    Real = 0,
    /// ITIMER_VIRTUAL → SIGVTALRM.
    Virtual = 1,
    /// ITIMER_PROF → SIGPROF.
    Prof = 2,
}

/// An armed expiry: when, and every how long after.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Setting {
    /// Monotonic deadline (ns); None: disarmed.
    pub deadline: Option<u64>,
    /// Re-arm interval (ns; 0: one-shot).
    pub interval: u64,
}

impl Setting {
    /// (remaining ns, interval ns) as the get calls report them.
    pub fn remaining(&self, now: u64) -> (u64, u64) {
        let left = self.deadline.map_or(0, |d| d.saturating_sub(now).max(1));
        (left, self.interval)
    }

    /// Advances past `now` if due; returns how many expiries passed.
    fn expire(&mut self, now: u64) -> u64 {
        let Some(d) = self.deadline else { return 0 };
        if d > now {
            return 0;
        }
        if self.interval == 0 {
            self.deadline = None;
            return 1;
        }
        let missed = (now - d) / self.interval;
        self.deadline = Some(d + (missed + 1) * self.interval);
        missed + 1
    }
}

/// How a POSIX timer notifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notify {
    /// SIGEV_NONE: nothing (timer_gettime only).
    None,
    /// SIGEV_SIGNAL / SIGEV_THREAD_ID: this signal with this value, to the
    /// process or one thread.
    Signal {
        /// The signal.
        signo: u8,
        /// `sigev_value`.
        value: u64,
        /// SIGEV_THREAD_ID target.
        thread: Option<Tid>,
    },
}

/// One POSIX timer.
#[derive(Clone, Copy, Debug)]
pub struct PosixTimer {
    /// Its clock (for timer_settime's TIMER_ABSTIME).
    pub clock: u64,
    /// When it fires.
    pub setting: Setting,
    /// What it does then.
    pub notify: Notify,
    /// Its signal is queued and not yet delivered.
    queued: bool,
    /// Expiries while it was queued.
    overrun: u64,
    /// Overruns of the last delivered expiry (timer_getoverrun).
    last_overrun: u64,
}

/// Each process's interval timers (by `Which`) and POSIX timers (by id);
/// the instance is `state::KERNEL.timers`.
pub struct Timers {
    itimers: BTreeMap<Tid, [Setting; 3]>,
    posix: BTreeMap<Tid, Vec<Option<PosixTimer>>>,
}

impl Timers {
    /// No timer armed.
    pub const fn new() -> Self {
        Self {
            itimers: BTreeMap::new(),
            posix: BTreeMap::new(),
        }
    }
}

/// The earliest armed deadline (the network's included).
pub fn next_deadline() -> Option<u64> {
    let t = KERNEL.timers.lock();
    t.itimers
        .values()
        .flatten()
        .filter_map(|s| s.deadline)
        .chain(
            t.posix
                .values()
                .flatten()
                .flatten()
                .filter_map(|p| p.setting.deadline),
        )
        .chain(crate::net::next_deadline())
        .min()
}

/// Sets an interval timer of process `pid`; returns the old setting.
pub fn set_itimer(pid: Tid, which: Which, new: Setting) -> Setting {
    let mut t = KERNEL.timers.lock();
    let timers = t.itimers.entry(pid).or_default();
    core::mem::replace(&mut timers[which as usize], new)
}

/// An interval timer's setting.
pub fn itimer(pid: Tid, which: Which) -> Setting {
    KERNEL
        .timers
        .lock()
        .itimers
        .get(&pid)
        .map_or(Setting::default(), |t| t[which as usize])
}

/// Deletes process `pid`'s POSIX timers (execve), and with `all` its
/// interval timers too (its end).
pub fn drop_process(pid: Tid, all: bool) {
    let mut t = KERNEL.timers.lock();
    t.posix.remove(&pid);
    if all {
        t.itimers.remove(&pid);
    }
}

/// Creates a POSIX timer of process `pid`; returns its id.
///
/// # Errors
/// EAGAIN when the process holds too many.
pub fn create(pid: Tid, clock: u64, notify: Notify) -> Result<i32, Errno> {
    let mut all = KERNEL.timers.lock();
    let t = all.posix.entry(pid).or_default();
    let timer = PosixTimer {
        clock,
        setting: Setting::default(),
        notify,
        queued: false,
        overrun: 0,
        last_overrun: 0,
    };
    let id = match t.iter().position(Option::is_none) {
        Some(free) => free,
        None if t.len() < MAX_TIMERS => {
            t.push(None);
            t.len() - 1
        }
        None => return Err(Errno::Again),
    };
    t[id] = Some(timer);
    Ok(id as i32)
}

fn slot(t: &mut Timers, pid: Tid, id: i32) -> Result<&mut PosixTimer, Errno> {
    let timers = t.posix.get_mut(&pid).ok_or(Errno::Inval)?;
    usize::try_from(id)
        .ok()
        .and_then(|i| timers.get_mut(i))
        .and_then(Option::as_mut)
        .ok_or(Errno::Inval)
}

/// Runs `f` on timer `id` of process `pid`.
///
/// # Errors
/// EINVAL for an unknown id.
pub fn with_timer<R>(pid: Tid, id: i32, f: impl FnOnce(&mut PosixTimer) -> R) -> Result<R, Errno> {
    let mut t = KERNEL.timers.lock();
    slot(&mut t, pid, id).map(f)
}

/// Deletes timer `id` of process `pid`.
///
/// # Errors
/// EINVAL for an unknown id.
pub fn delete(pid: Tid, id: i32) -> Result<(), Errno> {
    let mut t = KERNEL.timers.lock();
    slot(&mut t, pid, id)?;
    if let Some(timers) = t.posix.get_mut(&pid) {
        timers[id as usize] = None;
    }
    Ok(())
}

/// timer_getoverrun(2).
///
/// # Errors
/// EINVAL for an unknown id.
pub fn overrun(pid: Tid, id: i32) -> Result<u64, Errno> {
    with_timer(pid, id, |p| p.last_overrun.min(i32::MAX as u64))
}

/// Called when a timer's signal is delivered to process `pid` (or taken by
/// sigtimedwait): the expiries it stands for besides itself.
pub fn delivered(pid: Tid, id: i32) -> i32 {
    with_timer(pid, id, |p| {
        p.queued = false;
        p.last_overrun = p.overrun;
        p.overrun = 0;
        p.last_overrun.min(i32::MAX as u64) as i32
    })
    .unwrap_or(0)
}

/// Fires every due timer: posts its signal (or counts an overrun while
/// the last one is still queued) and re-arms periodic ones. Must be
/// called with no kernel lock held.
pub fn fire_due() {
    let now = monotonic_ns();
    let mut posts: Vec<(Tid, Option<Tid>, SigInfo)> = Vec::new();
    {
        let mut t = KERNEL.timers.lock();
        let signals = [sig::SIGALRM, sig::SIGVTALRM, sig::SIGPROF];
        for (&pid, timers) in t.itimers.iter_mut() {
            for (setting, signo) in timers.iter_mut().zip(signals) {
                if setting.expire(now) > 0 {
                    posts.push((pid, None, SigInfo::kernel(signo)));
                }
            }
        }
        let all = t.posix.iter_mut().flat_map(|(&pid, timers)| {
            timers
                .iter_mut()
                .enumerate()
                .map(move |(id, slot)| (pid, id, slot))
        });
        for (pid, id, slot) in all {
            let Some(timer) = slot else { continue };
            let n = timer.setting.expire(now);
            if n == 0 {
                continue;
            }
            let Notify::Signal {
                signo,
                value,
                thread,
            } = timer.notify
            else {
                continue;
            };
            if timer.queued {
                timer.overrun += n;
            } else {
                timer.queued = true;
                timer.overrun = n - 1;
                posts.push((pid, thread, SigInfo::timer(signo, id as i32, 0, value)));
            }
        }
    }
    for (pid, thread, info) in posts {
        if pid == 1 {
            crate::signal::post_from_kernel(thread, info);
        } else {
            // Another process acts on it itself when it runs.
            let _ = crate::process::signal_process(pid, thread, info);
        }
    }
    crate::net::poll_due();
}
