//! futex(2): waiting on and waking words of program memory.

use kiln_kernel::errno::Errno;

use super::args::Flags;
use super::{Call, OnSignal, Outcome};
use crate::mm::uaccess::UserPtr;
use crate::process::Process;
use crate::sched::{self, FutexKey, Wait};
use crate::time;

const FUTEX_WAIT: u64 = 0;
const FUTEX_WAKE: u64 = 1;
const FUTEX_REQUEUE: u64 = 3;
const FUTEX_CMP_REQUEUE: u64 = 4;
const FUTEX_WAKE_OP: u64 = 5;
const FUTEX_LOCK_PI: u64 = 6;
const FUTEX_UNLOCK_PI: u64 = 7;
const FUTEX_TRYLOCK_PI: u64 = 8;
const FUTEX_WAIT_BITSET: u64 = 9;
const FUTEX_WAKE_BITSET: u64 = 10;
const FUTEX_PRIVATE_FLAG: u64 = 128;
const FUTEX_CLOCK_REALTIME: u64 = 256;
const FUTEX_WAITERS: u32 = 0x8000_0000;
const FUTEX_TID_MASK: u32 = 0x3fff_ffff;

/// The key waiters of the word at `at` wait under: this address space and
/// the address, or — for a shared futex in memory shared between
/// processes (`MAP_SHARED`) — the word's physical address.
pub fn key_of(p: &mut Process, at: UserPtr<u32>, shared: bool) -> FutexKey {
    let space = p.mem.pml4();
    if shared {
        if let Some(phys) = p.mem.shared_phys(at.addr()) {
            return (0, phys);
        }
    }
    (space, at.addr())
}

fn word(p: &mut Process, at: UserPtr<u32>) -> Result<u32, Errno> {
    if !at.addr().is_multiple_of(4) {
        return Err(Errno::Inval);
    }
    p.mem.read(at)
}

/// A relative timespec at `ts` as a monotonic deadline.
fn relative_deadline(p: &mut Process, ts: UserPtr<[i64; 2]>) -> Result<Option<u64>, Errno> {
    if ts.is_null() {
        return Ok(None);
    }
    let t = p.mem.read(ts)?;
    if t[0] < 0 || !(0..1_000_000_000).contains(&t[1]) {
        return Err(Errno::Inval);
    }
    Ok(Some(time::monotonic_ns().saturating_add(
        (t[0] as u64).saturating_mul(1_000_000_000) + t[1] as u64,
    )))
}

/// An absolute timespec on `clock` as a monotonic deadline.
fn absolute_deadline(
    p: &mut Process,
    ts: UserPtr<[i64; 2]>,
    realtime: bool,
) -> Result<Option<u64>, Errno> {
    if ts.is_null() {
        return Ok(None);
    }
    let t = p.mem.read(ts)?;
    if t[0] < 0 || !(0..1_000_000_000).contains(&t[1]) {
        return Err(Errno::Inval);
    }
    let at = (t[0] as u64).saturating_mul(1_000_000_000) + t[1] as u64;
    Ok(Some(if realtime {
        time::realtime_to_monotonic(at)
    } else {
        at
    }))
}

fn wait(key: FutexKey, bitset: u32, deadline: Option<u64>) -> Outcome {
    Outcome::Block {
        wait: Wait::Futex { key, bitset },
        deadline,
        on_event: Some(Ok(0)),
        on_timeout: Some(Err(Errno::Timedout)),
        on_signal: interrupted(deadline),
    }
}

/// A futex wait without a timeout is restarted after a handler with
/// SA_RESTART; one with a timeout fails with EINTR.
fn interrupted(deadline: Option<u64>) -> OnSignal {
    if deadline.is_some() {
        OnSignal::Eintr
    } else {
        OnSignal::Restart
    }
}

/// futex(2). The fourth argument is a timeout for the waits and a count
/// (`val2`) for the requeue and wake-op commands, as in Linux.
pub fn futex(
    p: &mut Call,
    addr: UserPtr<u32>,
    Flags(op): Flags,
    val: u32,
    timeout: UserPtr<[i64; 2]>,
    addr2: UserPtr<u32>,
    val3: u32,
) -> Outcome {
    let val2 = timeout.addr() as u32;
    let shared = op & FUTEX_PRIVATE_FLAG == 0;
    let (key, key2) = (key_of(p, addr, shared), key_of(p, addr2, shared));
    let realtime = op & FUTEX_CLOCK_REALTIME != 0;
    let cmd = op & !(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);
    let r = (|| -> Result<Outcome, Errno> {
        match cmd {
            FUTEX_WAIT | FUTEX_WAIT_BITSET => {
                let bitset = if cmd == FUTEX_WAIT { u32::MAX } else { val3 };
                if bitset == 0 {
                    return Err(Errno::Inval);
                }
                let deadline = if cmd == FUTEX_WAIT {
                    relative_deadline(p, timeout)?
                } else {
                    absolute_deadline(p, timeout, realtime)?
                };
                if word(p, addr)? != val {
                    return Err(Errno::Again);
                }
                Ok(wait(key, bitset, deadline))
            }
            FUTEX_WAKE | FUTEX_WAKE_BITSET => {
                let bitset = if cmd == FUTEX_WAKE { u32::MAX } else { val3 };
                if bitset == 0 {
                    return Err(Errno::Inval);
                }
                Ok(Outcome::Return(Ok(u64::from(sched::wake_futex(
                    key, bitset, val,
                )))))
            }
            FUTEX_REQUEUE | FUTEX_CMP_REQUEUE => {
                if cmd == FUTEX_CMP_REQUEUE && word(p, addr)? != val3 {
                    return Err(Errno::Again);
                }
                let moved = sched::requeue_futex(key, key2, val, val2);
                Ok(Outcome::Return(Ok(u64::from(moved))))
            }
            FUTEX_WAKE_OP => {
                // *addr2 = op(*addr2, oparg); wake addr; if cmp(old, cmparg) wake addr2.
                let old = word(p, addr2)?;
                let (encoded_op, cmp) = ((val3 >> 28) & 0xf, (val3 >> 24) & 0xf);
                let mut oparg = (val3 >> 12) & 0xfff;
                let cmparg = val3 & 0xfff;
                if encoded_op & 8 != 0 {
                    oparg = 1u32.checked_shl(oparg).unwrap_or(0);
                }
                let new = match encoded_op & 7 {
                    0 => oparg,
                    1 => old.wrapping_add(oparg),
                    2 => old | oparg,
                    3 => old & !oparg,
                    4 => old ^ oparg,
                    _ => return Err(Errno::Nosys),
                };
                p.mem.write(addr2, new)?;
                let mut woken = sched::wake_futex(key, u32::MAX, val);
                let hit = match cmp {
                    0 => old == cmparg,
                    1 => old != cmparg,
                    2 => (old as i32) < cmparg as i32,
                    3 => (old as i32) <= cmparg as i32,
                    4 => (old as i32) > cmparg as i32,
                    5 => (old as i32) >= cmparg as i32,
                    _ => return Err(Errno::Nosys),
                };
                if hit {
                    woken += sched::wake_futex(key2, u32::MAX, val2);
                }
                Ok(Outcome::Return(Ok(u64::from(woken))))
            }
            FUTEX_LOCK_PI | FUTEX_TRYLOCK_PI => {
                // One CPU, no priorities: priority inheritance reduces to a
                // lock word holding the owner's tid.
                let me = sched::current_tid();
                let current = word(p, addr)?;
                if current & FUTEX_TID_MASK == 0 {
                    // Keep FUTEX_WAITERS while others wait, so that the
                    // owner's unlock comes to the kernel to wake them.
                    let waiters = if sched::futex_waiters(key) > 0 {
                        FUTEX_WAITERS
                    } else {
                        0
                    };
                    p.mem.write(addr, me | waiters)?;
                    return Ok(Outcome::Return(Ok(0)));
                }
                if current & FUTEX_TID_MASK == me {
                    return Err(Errno::Deadlk);
                }
                if cmd == FUTEX_TRYLOCK_PI {
                    return Err(Errno::Again);
                }
                p.mem.write(addr, current | FUTEX_WAITERS)?;
                let deadline = absolute_deadline(p, timeout, true)?;
                Ok(Outcome::Block {
                    wait: Wait::Futex {
                        key,
                        bitset: u32::MAX,
                    },
                    deadline,
                    on_event: None,
                    on_timeout: Some(Err(Errno::Timedout)),
                    on_signal: interrupted(deadline),
                })
            }
            FUTEX_UNLOCK_PI => {
                let me = sched::current_tid();
                let current = word(p, addr)?;
                if current & FUTEX_TID_MASK != me {
                    return Err(Errno::Perm);
                }
                // Release, then let one waiter retry the lock.
                p.mem.write(addr, 0u32)?;
                sched::wake_futex(key, u32::MAX, 1);
                Ok(Outcome::Return(Ok(0)))
            }
            _ => Err(Errno::Nosys),
        }
    })();
    match r {
        Ok(o) => o,
        Err(e) => Outcome::Return(Err(e)),
    }
}
