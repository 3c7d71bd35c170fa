//! Clock system calls, from the TSC-based kernel clock.

use kiln_kernel::errno::Errno;

use super::args::Flags;
use super::{Call, OnSignal, Outcome};
use crate::mm::uaccess::UserPtr;
use crate::process::Process;
use crate::sched::{self, Wait};
use crate::time::timer::{self, Notify, Setting, Which};
use crate::time::{monotonic_ns, realtime_ns, realtime_to_monotonic};
use kiln_kernel::signal::{sig, NSIG};

const CLOCK_REALTIME: u32 = 0;
const CLOCK_MONOTONIC: u32 = 1;
const CLOCK_PROCESS_CPUTIME_ID: u32 = 2;
const CLOCK_THREAD_CPUTIME_ID: u32 = 3;
const CLOCK_MONOTONIC_RAW: u32 = 4;
const CLOCK_REALTIME_COARSE: u32 = 5;
const CLOCK_MONOTONIC_COARSE: u32 = 6;
const CLOCK_BOOTTIME: u32 = 7;
const CLOCK_REALTIME_ALARM: u32 = 8;
const CLOCK_BOOTTIME_ALARM: u32 = 9;
const CLOCK_TAI: u32 = 11;

fn now(p: &Process, clock: u32) -> Result<u64, Errno> {
    match clock {
        CLOCK_REALTIME | CLOCK_REALTIME_COARSE | CLOCK_REALTIME_ALARM | CLOCK_TAI => {
            Ok(realtime_ns())
        }
        CLOCK_MONOTONIC
        | CLOCK_MONOTONIC_RAW
        | CLOCK_MONOTONIC_COARSE
        | CLOCK_BOOTTIME
        | CLOCK_BOOTTIME_ALARM => Ok(monotonic_ns()),
        // One CPU, one thread, no other work: CPU time is time since start.
        CLOCK_PROCESS_CPUTIME_ID | CLOCK_THREAD_CPUTIME_ID => Ok(monotonic_ns() - p.start_ns),
        _ => Err(Errno::Inval),
    }
}

/// `ns` as a `struct timespec { tv_sec, tv_nsec }`.
pub fn timespec(ns: u64) -> [u64; 2] {
    [ns / 1_000_000_000, ns % 1_000_000_000]
}

/// Reads a `struct timespec` as nanoseconds.
fn read_timespec(p: &mut Process, at: UserPtr<[i64; 2]>) -> Result<u64, Errno> {
    let t = p.mem.read(at)?;
    if t[0] < 0 || !(0..1_000_000_000).contains(&t[1]) {
        return Err(Errno::Inval);
    }
    Ok((t[0] as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t[1] as u64))
}

/// Reads a `struct timeval` as nanoseconds.
fn read_timeval(p: &mut Process, at: UserPtr<[i64; 2]>) -> Result<u64, Errno> {
    let t = p.mem.read(at)?;
    if t[0] < 0 || !(0..1_000_000).contains(&t[1]) {
        return Err(Errno::Inval);
    }
    Ok((t[0] as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t[1] as u64 * 1000))
}

/// `ns` as a `struct timeval { tv_sec, tv_usec }`.
fn timeval(ns: u64) -> [u64; 2] {
    [ns / 1_000_000_000, (ns % 1_000_000_000) / 1000]
}

/// clock_gettime(2).
pub fn clock_gettime(p: &mut Call, clock: u32, tp: UserPtr<[u64; 2]>) -> Result<u64, Errno> {
    let ns = now(p, clock)?;
    p.mem.write(tp, timespec(ns))?;
    Ok(0)
}

/// clock_getres(2): nanosecond resolution.
pub fn clock_getres(p: &mut Call, clock: u32, res: UserPtr<[u64; 2]>) -> Result<u64, Errno> {
    now(p, clock)?;
    if !res.is_null() {
        p.mem.write(res, timespec(1))?;
    }
    Ok(0)
}

/// gettimeofday(2).
pub fn gettimeofday(p: &mut Call, tv: UserPtr<[u64; 2]>, _tz: UserPtr<u8>) -> Result<u64, Errno> {
    if !tv.is_null() {
        p.mem.write(tv, timeval(realtime_ns()))?;
    }
    Ok(0)
}

/// time(2).
pub fn time(p: &mut Call, tloc: UserPtr<u64>) -> Result<u64, Errno> {
    let secs = realtime_ns() / 1_000_000_000;
    if !tloc.is_null() {
        p.mem.write(tloc, secs)?;
    }
    Ok(secs)
}

/// nanosleep(2).
pub fn nanosleep(p: &mut Call, req: UserPtr<[i64; 2]>, rem: UserPtr<[u64; 2]>) -> Outcome {
    clock_nanosleep(p, CLOCK_MONOTONIC, Flags(0), req, rem)
}

/// clock_nanosleep(2) (`flags` bit 0: TIMER_ABSTIME). `rem` receives the
/// time left when a signal interrupts a relative sleep.
pub fn clock_nanosleep(
    p: &mut Call,
    clock: u32,
    Flags(flags): Flags,
    req: UserPtr<[i64; 2]>,
    rem: UserPtr<[u64; 2]>,
) -> Outcome {
    const TIMER_ABSTIME: u64 = 1;
    let r = (|| -> Result<(u64, bool), Errno> {
        now(p, clock)?;
        let ns = read_timespec(p, req)?;
        Ok(if flags & TIMER_ABSTIME == 0 {
            (monotonic_ns().saturating_add(ns), true)
        } else if is_realtime(clock) {
            (realtime_to_monotonic(ns), false)
        } else {
            (ns, false)
        })
    })();
    match r {
        Ok((deadline, relative)) => Outcome::Block {
            wait: Wait::Sleep,
            deadline: Some(deadline),
            on_event: Some(Ok(0)),
            on_timeout: Some(Ok(0)),
            on_signal: OnSignal::EintrRemaining {
                rem: if relative { rem } else { UserPtr::new(0) },
                deadline,
            },
        },
        Err(e) => Outcome::Return(Err(e)),
    }
}

fn is_realtime(clock: u32) -> bool {
    matches!(clock, CLOCK_REALTIME | CLOCK_REALTIME_ALARM | CLOCK_TAI)
}

fn which(n: u32) -> Result<Which, Errno> {
    match n {
        0 => Ok(Which::Real),
        1 => Ok(Which::Virtual),
        2 => Ok(Which::Prof),
        _ => Err(Errno::Inval),
    }
}

fn write_itimerval(p: &mut Process, at: UserPtr<[u64; 4]>, setting: Setting) -> Result<(), Errno> {
    let (left, interval) = setting.remaining(monotonic_ns());
    let ([a, b], [c, d]) = (timeval(interval), timeval(left));
    p.mem.write(at, [a, b, c, d])
}

/// getitimer(2).
pub fn getitimer(p: &mut Call, n: u32, curr: UserPtr<[u64; 4]>) -> Result<u64, Errno> {
    let setting = timer::itimer(p.pid, which(n)?);
    write_itimerval(p, curr, setting)?;
    Ok(0)
}

/// setitimer(2): `struct itimerval { interval, value }`.
pub fn setitimer(
    p: &mut Call,
    n: u32,
    new: UserPtr<[i64; 4]>,
    old: UserPtr<[u64; 4]>,
) -> Result<u64, Errno> {
    let w = which(n)?;
    let setting = if !new.is_null() {
        let interval = read_timeval(p, new.cast())?;
        let value = read_timeval(p, new.byte_add(16))?;
        Setting {
            deadline: (value != 0).then(|| monotonic_ns().saturating_add(value)),
            interval: if value != 0 { interval } else { 0 },
        }
    } else {
        // Linux treats a null new value as "disarm".
        Setting::default()
    };
    let previous = timer::set_itimer(p.pid, w, setting);
    sched::timers_changed();
    if !old.is_null() {
        write_itimerval(p, old, previous)?;
    }
    Ok(0)
}

/// alarm(2): seconds left on the previous alarm (rounded up).
pub fn alarm(p: &mut Call, seconds: u32) -> Result<u64, Errno> {
    let seconds = u64::from(seconds);
    let now = monotonic_ns();
    let setting = Setting {
        deadline: (seconds != 0).then(|| now.saturating_add(seconds.saturating_mul(1_000_000_000))),
        interval: 0,
    };
    let previous = timer::set_itimer(p.pid, Which::Real, setting);
    sched::timers_changed();
    Ok(previous.deadline.map_or(0, |d| {
        let left = d.saturating_sub(now);
        // Linux rounds to the nearest second, and never reports 0 for an
        // armed alarm.
        ((left + 500_000_000) / 1_000_000_000).max(1)
    }))
}

/// timer_create(2).
pub fn timer_create(
    p: &mut Call,
    clock: u32,
    sevp: UserPtr<[u8; 20]>,
    id_out: UserPtr<i32>,
) -> Result<u64, Errno> {
    const SIGEV_SIGNAL: i32 = 0;
    const SIGEV_NONE: i32 = 1;
    const SIGEV_THREAD_ID: i32 = 4;
    now(p, clock)?;
    let notify = if sevp.is_null() {
        None
    } else {
        let raw = p.mem.read(sevp)?;
        let value = u64::from_le_bytes(raw[0..8].try_into().unwrap_or_default());
        let signo = i32::from_le_bytes(raw[8..12].try_into().unwrap_or_default());
        let kind = i32::from_le_bytes(raw[12..16].try_into().unwrap_or_default());
        let tid = i32::from_le_bytes(raw[16..20].try_into().unwrap_or_default());
        let valid_signal = (1..=i32::from(NSIG)).contains(&signo);
        Some(match kind {
            SIGEV_NONE => Notify::None,
            SIGEV_SIGNAL if valid_signal => Notify::Signal {
                signo: signo as u8,
                value,
                thread: None,
            },
            SIGEV_THREAD_ID if valid_signal => {
                let tid = u32::try_from(tid).map_err(|_| Errno::Inval)?;
                if !sched::thread_alive(tid) {
                    return Err(Errno::Inval);
                }
                Notify::Signal {
                    signo: signo as u8,
                    value,
                    thread: Some(tid),
                }
            }
            _ => return Err(Errno::Inval),
        })
    };
    // No sigevent: SIGALRM carrying the timer's id, like Linux.
    let id = timer::create(
        p.pid,
        u64::from(clock),
        notify.unwrap_or(Notify::Signal {
            signo: sig::SIGALRM,
            value: 0,
            thread: None,
        }),
    )?;
    if notify.is_none() {
        timer::with_timer(p.pid, id, |t| {
            t.notify = Notify::Signal {
                signo: sig::SIGALRM,
                value: id as u64,
                thread: None,
            }
        })?;
    }
    if let Err(e) = p.mem.write(id_out, id) {
        let _ = timer::delete(p.pid, id);
        return Err(e);
    }
    Ok(0)
}

fn write_itimerspec(p: &mut Process, at: UserPtr<[u64; 4]>, setting: Setting) -> Result<(), Errno> {
    let (left, interval) = setting.remaining(monotonic_ns());
    let ([a, b], [c, d]) = (timespec(interval), timespec(left));
    p.mem.write(at, [a, b, c, d])
}

/// timer_settime(2): `struct itimerspec { interval, value }`.
pub fn timer_settime(
    p: &mut Call,
    id: i32,
    Flags(flags): Flags,
    new: UserPtr<[i64; 4]>,
    old: UserPtr<[u64; 4]>,
) -> Result<u64, Errno> {
    const TIMER_ABSTIME: u64 = 1;
    let clock = timer::with_timer(p.pid, id, |t| t.clock)?;
    let interval = read_timespec(p, new.cast())?;
    let value = read_timespec(p, new.byte_add(16))?;
    let deadline = if value == 0 {
        None
    } else if flags & TIMER_ABSTIME == 0 {
        Some(monotonic_ns().saturating_add(value))
    } else if is_realtime(clock as u32) {
        Some(realtime_to_monotonic(value))
    } else {
        Some(value)
    };
    let setting = Setting {
        deadline,
        interval: if deadline.is_some() { interval } else { 0 },
    };
    let previous = timer::with_timer(p.pid, id, |t| core::mem::replace(&mut t.setting, setting))?;
    sched::timers_changed();
    if !old.is_null() {
        write_itimerspec(p, old, previous)?;
    }
    Ok(0)
}

/// timer_gettime(2).
pub fn timer_gettime(p: &mut Call, id: i32, curr: UserPtr<[u64; 4]>) -> Result<u64, Errno> {
    let setting = timer::with_timer(p.pid, id, |t| t.setting)?;
    write_itimerspec(p, curr, setting)?;
    Ok(0)
}

/// timer_getoverrun(2).
pub fn timer_getoverrun(p: &mut Call, id: i32) -> Result<u64, Errno> {
    timer::overrun(p.pid, id)
}

/// timer_delete(2).
pub fn timer_delete(p: &mut Call, id: i32) -> Result<u64, Errno> {
    timer::delete(p.pid, id)?;
    sched::timers_changed();
    Ok(0)
}
