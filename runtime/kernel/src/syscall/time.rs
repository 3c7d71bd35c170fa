//! Clock system calls, from the TSC-based kernel clock.

use kiln_kernel::errno::Errno;

use super::{OnSignal, Outcome};
use crate::process::Process;
use crate::sched::{self, Wait};
use crate::time::timer::{self, Notify, Setting, Which};
use crate::time::{monotonic_ns, realtime_ns, realtime_to_monotonic};
use kiln_kernel::signal::{sig, NSIG};

const CLOCK_REALTIME: u64 = 0;
const CLOCK_MONOTONIC: u64 = 1;
const CLOCK_PROCESS_CPUTIME_ID: u64 = 2;
const CLOCK_THREAD_CPUTIME_ID: u64 = 3;
const CLOCK_MONOTONIC_RAW: u64 = 4;
const CLOCK_REALTIME_COARSE: u64 = 5;
const CLOCK_MONOTONIC_COARSE: u64 = 6;
const CLOCK_BOOTTIME: u64 = 7;
const CLOCK_REALTIME_ALARM: u64 = 8;
const CLOCK_BOOTTIME_ALARM: u64 = 9;
const CLOCK_TAI: u64 = 11;

fn now(p: &Process, clock: u64) -> Result<u64, Errno> {
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

fn timespec(ns: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&(ns / 1_000_000_000).to_le_bytes());
    out[8..].copy_from_slice(&(ns % 1_000_000_000).to_le_bytes());
    out
}

/// Writes `ns` as a `struct timespec` at `addr`.
///
/// # Errors
/// EFAULT for a bad address.
pub fn write_timespec(p: &mut Process, addr: u64, ns: u64) -> Result<(), Errno> {
    p.mem.write_user(addr, &timespec(ns))
}

/// Reads a `struct timespec` as nanoseconds.
fn read_timespec(p: &mut Process, addr: u64) -> Result<u64, Errno> {
    let t: [i64; 2] = p.mem.read_obj(addr)?;
    if t[0] < 0 || !(0..1_000_000_000).contains(&t[1]) {
        return Err(Errno::Inval);
    }
    Ok((t[0] as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t[1] as u64))
}

/// Reads a `struct timeval` as nanoseconds.
fn read_timeval(p: &mut Process, addr: u64) -> Result<u64, Errno> {
    let t: [i64; 2] = p.mem.read_obj(addr)?;
    if t[0] < 0 || !(0..1_000_000).contains(&t[1]) {
        return Err(Errno::Inval);
    }
    Ok((t[0] as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t[1] as u64 * 1000))
}

fn timeval(ns: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&(ns / 1_000_000_000).to_le_bytes());
    out[8..].copy_from_slice(&((ns % 1_000_000_000) / 1000).to_le_bytes());
    out
}

/// clock_gettime(2).
pub fn clock_gettime(p: &mut Process, clock: u64, tp: u64) -> Result<u64, Errno> {
    let ns = now(p, clock)?;
    p.mem.write_user(tp, &timespec(ns))?;
    Ok(0)
}

/// clock_getres(2): nanosecond resolution.
pub fn clock_getres(p: &mut Process, clock: u64, res: u64) -> Result<u64, Errno> {
    now(p, clock)?;
    if res != 0 {
        p.mem.write_user(res, &timespec(1))?;
    }
    Ok(0)
}

/// gettimeofday(2).
pub fn gettimeofday(p: &mut Process, tv: u64) -> Result<u64, Errno> {
    if tv != 0 {
        let ns = realtime_ns();
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&(ns / 1_000_000_000).to_le_bytes());
        out[8..].copy_from_slice(&((ns % 1_000_000_000) / 1000).to_le_bytes());
        p.mem.write_user(tv, &out)?;
    }
    Ok(0)
}

/// time(2).
pub fn time(p: &mut Process, tloc: u64) -> Result<u64, Errno> {
    let secs = realtime_ns() / 1_000_000_000;
    if tloc != 0 {
        p.mem.write_user(tloc, &secs.to_le_bytes())?;
    }
    Ok(secs)
}

/// nanosleep(2) and clock_nanosleep(2) (`flags` bit 0: TIMER_ABSTIME).
/// `rem` receives the time left when a signal interrupts a relative sleep.
pub fn nanosleep(p: &mut Process, clock: u64, flags: u64, req: u64, rem: u64) -> Outcome {
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
                rem: if relative { rem } else { 0 },
                deadline,
            },
        },
        Err(e) => Outcome::Return(Err(e)),
    }
}

fn is_realtime(clock: u64) -> bool {
    matches!(clock, CLOCK_REALTIME | CLOCK_REALTIME_ALARM | CLOCK_TAI)
}

fn which(n: u64) -> Result<Which, Errno> {
    match n {
        0 => Ok(Which::Real),
        1 => Ok(Which::Virtual),
        2 => Ok(Which::Prof),
        _ => Err(Errno::Inval),
    }
}

fn write_itimerval(p: &mut Process, addr: u64, setting: Setting) -> Result<(), Errno> {
    let (left, interval) = setting.remaining(monotonic_ns());
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(&timeval(interval));
    out[16..].copy_from_slice(&timeval(left));
    p.mem.write_user(addr, &out)
}

/// getitimer(2).
pub fn getitimer(p: &mut Process, n: u64, curr: u64) -> Result<u64, Errno> {
    let setting = timer::itimer(which(n)?);
    write_itimerval(p, curr, setting)?;
    Ok(0)
}

/// setitimer(2): `struct itimerval { interval, value }`.
pub fn setitimer(p: &mut Process, n: u64, new: u64, old: u64) -> Result<u64, Errno> {
    let w = which(n)?;
    let setting = if new != 0 {
        let interval = read_timeval(p, new)?;
        let value = read_timeval(p, new + 16)?;
        Setting {
            deadline: (value != 0).then(|| monotonic_ns().saturating_add(value)),
            interval: if value != 0 { interval } else { 0 },
        }
    } else {
        // Linux treats a null new value as "disarm".
        Setting::default()
    };
    let previous = timer::set_itimer(w, setting);
    sched::timers_changed();
    if old != 0 {
        write_itimerval(p, old, previous)?;
    }
    Ok(0)
}

/// alarm(2): seconds left on the previous alarm (rounded up).
pub fn alarm(seconds: u64) -> Result<u64, Errno> {
    let now = monotonic_ns();
    let setting = Setting {
        deadline: (seconds != 0).then(|| now.saturating_add(seconds.saturating_mul(1_000_000_000))),
        interval: 0,
    };
    let previous = timer::set_itimer(Which::Real, setting);
    sched::timers_changed();
    Ok(previous.deadline.map_or(0, |d| {
        let left = d.saturating_sub(now);
        // Linux rounds to the nearest second, and never reports 0 for an
        // armed alarm.
        ((left + 500_000_000) / 1_000_000_000).max(1)
    }))
}

/// timer_create(2).
pub fn timer_create(p: &mut Process, clock: u64, sevp: u64, id_out: u64) -> Result<u64, Errno> {
    const SIGEV_SIGNAL: i32 = 0;
    const SIGEV_NONE: i32 = 1;
    const SIGEV_THREAD_ID: i32 = 4;
    now(p, clock)?;
    let notify = if sevp == 0 {
        None
    } else {
        let raw: [u8; 20] = p.mem.read_obj(sevp)?;
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
        clock,
        notify.unwrap_or(Notify::Signal {
            signo: sig::SIGALRM,
            value: 0,
            thread: None,
        }),
    )?;
    if notify.is_none() {
        timer::with_timer(id, |t| {
            t.notify = Notify::Signal {
                signo: sig::SIGALRM,
                value: id as u64,
                thread: None,
            }
        })?;
    }
    if let Err(e) = p.mem.write_user(id_out, &id.to_le_bytes()) {
        let _ = timer::delete(id);
        return Err(e);
    }
    Ok(0)
}

fn write_itimerspec(p: &mut Process, addr: u64, setting: Setting) -> Result<(), Errno> {
    let (left, interval) = setting.remaining(monotonic_ns());
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(&timespec(interval));
    out[16..].copy_from_slice(&timespec(left));
    p.mem.write_user(addr, &out)
}

/// timer_settime(2): `struct itimerspec { interval, value }`.
pub fn timer_settime(
    p: &mut Process,
    id: u64,
    flags: u64,
    new: u64,
    old: u64,
) -> Result<u64, Errno> {
    const TIMER_ABSTIME: u64 = 1;
    let id = id as i32;
    let clock = timer::with_timer(id, |t| t.clock)?;
    let interval = read_timespec(p, new)?;
    let value = read_timespec(p, new + 16)?;
    let deadline = if value == 0 {
        None
    } else if flags & TIMER_ABSTIME == 0 {
        Some(monotonic_ns().saturating_add(value))
    } else if is_realtime(clock) {
        Some(realtime_to_monotonic(value))
    } else {
        Some(value)
    };
    let setting = Setting {
        deadline,
        interval: if deadline.is_some() { interval } else { 0 },
    };
    let previous = timer::with_timer(id, |t| core::mem::replace(&mut t.setting, setting))?;
    sched::timers_changed();
    if old != 0 {
        write_itimerspec(p, old, previous)?;
    }
    Ok(0)
}

/// timer_gettime(2).
pub fn timer_gettime(p: &mut Process, id: u64, curr: u64) -> Result<u64, Errno> {
    let setting = timer::with_timer(id as i32, |t| t.setting)?;
    write_itimerspec(p, curr, setting)?;
    Ok(0)
}

/// timer_getoverrun(2).
pub fn timer_getoverrun(id: u64) -> Result<u64, Errno> {
    timer::overrun(id as i32)
}

/// timer_delete(2).
pub fn timer_delete(id: u64) -> Result<u64, Errno> {
    timer::delete(id as i32)?;
    sched::timers_changed();
    Ok(0)
}
