//! Timers that raise signals: the interval timers of setitimer(2) and
//! alarm(2), and POSIX timers (timer_create(2)). All run on the monotonic
//! clock (a CLOCK_REALTIME timer is converted: kiln's wall clock never
//! jumps). ITIMER_VIRTUAL and ITIMER_PROF count elapsed time like the
//! CPU-time clocks do: the program is the guest's only work.
//!
//! The scheduler arms the LAPIC timer for [`next_deadline`] and calls
//! [`fire_due`] when it fires; signals are posted with no lock held.

use alloc::vec::Vec;

use crate::state::KERNEL;
use kiln_kernel::errno::Errno;
use kiln_kernel::signal::{sig, SigInfo};

use crate::sched::Tid;
use crate::time::monotonic_ns;

/// Most POSIX timers a program may hold.
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

/// The interval timers (by `Which`) and the POSIX timers (by id); the
/// instance is `state::KERNEL.timers`.
pub struct Timers {
    itimers: [Setting; 3],
    posix: Vec<Option<PosixTimer>>,
}

impl Timers {
    /// No timer armed.
    pub const fn new() -> Self {
        Self {
            itimers: [Setting {
                deadline: None,
                interval: 0,
            }; 3],
            posix: Vec::new(),
        }
    }
}

/// The earliest armed deadline (the network's included).
pub fn next_deadline() -> Option<u64> {
    let t = KERNEL.timers.lock();
    t.itimers
        .iter()
        .filter_map(|s| s.deadline)
        .chain(t.posix.iter().flatten().filter_map(|p| p.setting.deadline))
        .chain(crate::net::next_deadline())
        .min()
}

/// Sets an interval timer; returns the old setting.
pub fn set_itimer(which: Which, new: Setting) -> Setting {
    core::mem::replace(&mut KERNEL.timers.lock().itimers[which as usize], new)
}

/// An interval timer's setting.
pub fn itimer(which: Which) -> Setting {
    KERNEL.timers.lock().itimers[which as usize]
}

/// Creates a POSIX timer; returns its id.
///
/// # Errors
/// EAGAIN when the program holds too many.
pub fn create(clock: u64, notify: Notify) -> Result<i32, Errno> {
    let mut t = KERNEL.timers.lock();
    let timer = PosixTimer {
        clock,
        setting: Setting::default(),
        notify,
        queued: false,
        overrun: 0,
        last_overrun: 0,
    };
    let id = match t.posix.iter().position(Option::is_none) {
        Some(free) => free,
        None if t.posix.len() < MAX_TIMERS => {
            t.posix.push(None);
            t.posix.len() - 1
        }
        None => return Err(Errno::Again),
    };
    t.posix[id] = Some(timer);
    Ok(id as i32)
}

fn slot(t: &mut Timers, id: i32) -> Result<&mut PosixTimer, Errno> {
    usize::try_from(id)
        .ok()
        .and_then(|i| t.posix.get_mut(i))
        .and_then(Option::as_mut)
        .ok_or(Errno::Inval)
}

/// Runs `f` on timer `id`.
///
/// # Errors
/// EINVAL for an unknown id.
pub fn with_timer<R>(id: i32, f: impl FnOnce(&mut PosixTimer) -> R) -> Result<R, Errno> {
    let mut t = KERNEL.timers.lock();
    slot(&mut t, id).map(f)
}

/// Deletes timer `id`.
///
/// # Errors
/// EINVAL for an unknown id.
pub fn delete(id: i32) -> Result<(), Errno> {
    let mut t = KERNEL.timers.lock();
    slot(&mut t, id)?;
    t.posix[id as usize] = None;
    Ok(())
}

/// timer_getoverrun(2).
///
/// # Errors
/// EINVAL for an unknown id.
pub fn overrun(id: i32) -> Result<u64, Errno> {
    with_timer(id, |p| p.last_overrun.min(i32::MAX as u64))
}

/// Called when a timer's signal is delivered (or taken by sigtimedwait):
/// the expiries it stands for besides itself.
pub fn delivered(id: i32) -> i32 {
    with_timer(id, |p| {
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
    let mut posts: Vec<(Option<Tid>, SigInfo)> = Vec::new();
    {
        let mut t = KERNEL.timers.lock();
        let signals = [sig::SIGALRM, sig::SIGVTALRM, sig::SIGPROF];
        for (setting, signo) in t.itimers.iter_mut().zip(signals) {
            if setting.expire(now) > 0 {
                posts.push((None, SigInfo::kernel(signo)));
            }
        }
        for (id, slot) in t.posix.iter_mut().enumerate() {
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
                posts.push((thread, SigInfo::timer(signo, id as i32, 0, value)));
            }
        }
    }
    for (thread, info) in posts {
        crate::signal::post_from_kernel(thread, info);
    }
    crate::net::poll_due();
}
