//! Clock system calls, from the TSC-based kernel clock.

use kiln_kernel::errno::Errno;

use super::Outcome;
use crate::kernel::process::Process;
use crate::kernel::sched::Wait;
use crate::kernel::time::{monotonic_ns, realtime_ns, realtime_to_monotonic};

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

/// clock_gettime(2).
pub fn clock_gettime(p: &mut Process, clock: u64, tp: u64) -> Result<u64, Errno> {
    let ns = now(p, clock)?;
    p.write_user(tp, &timespec(ns))?;
    Ok(0)
}

/// clock_getres(2): nanosecond resolution.
pub fn clock_getres(p: &mut Process, clock: u64, res: u64) -> Result<u64, Errno> {
    now(p, clock)?;
    if res != 0 {
        p.write_user(res, &timespec(1))?;
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
        p.write_user(tv, &out)?;
    }
    Ok(0)
}

/// time(2).
pub fn time(p: &mut Process, tloc: u64) -> Result<u64, Errno> {
    let secs = realtime_ns() / 1_000_000_000;
    if tloc != 0 {
        p.write_user(tloc, &secs.to_le_bytes())?;
    }
    Ok(secs)
}

/// nanosleep(2) and clock_nanosleep(2) (`flags` bit 0: TIMER_ABSTIME).
pub fn nanosleep(p: &mut Process, clock: u64, flags: u64, req: u64) -> Outcome {
    const TIMER_ABSTIME: u64 = 1;
    let r = (|| -> Result<Option<u64>, Errno> {
        now(p, clock)?;
        let t: [i64; 2] = p.read_obj(req)?;
        if t[0] < 0 || !(0..1_000_000_000).contains(&t[1]) {
            return Err(Errno::Inval);
        }
        let ns = (t[0] as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(t[1] as u64);
        let deadline = if flags & TIMER_ABSTIME == 0 {
            monotonic_ns().saturating_add(ns)
        } else if matches!(clock, CLOCK_REALTIME | CLOCK_REALTIME_ALARM | CLOCK_TAI) {
            realtime_to_monotonic(ns)
        } else {
            ns
        };
        Ok(Some(deadline))
    })();
    match r {
        Ok(deadline) => Outcome::Block {
            wait: Wait::Sleep,
            deadline,
            on_event: Some(Ok(0)),
            on_timeout: Some(Ok(0)),
        },
        Err(e) => Outcome::Return(Err(e)),
    }
}
