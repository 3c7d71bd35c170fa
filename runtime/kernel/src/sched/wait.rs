//! Waiting: a blocked thread waits for a futex word, for any I/O object to
//! change (it then re-runs its system call), for a signal, or just for
//! time, each with an optional deadline. When every thread waits and no
//! deadline is pending, nothing can ever wake them: that deadlock ends the
//! program with a message instead of hanging the VM.

use alloc::vec::Vec;

use kiln_kernel::errno::Errno;

use super::{rearm, schedule, with_current, Scheduler, State, Thread, Tid};
use crate::state::KERNEL;
use crate::time;

/// What a blocked thread waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// A change of any I/O object (pipe, eventfd, …).
    Io,
    /// A wake-up of the futex word `key`, matching this bitset.
    Futex {
        /// The word (see [`FutexKey`]).
        key: FutexKey,
        /// FUTEX_BITSET mask (all ones for plain waits).
        bitset: u32,
    },
    /// Only its deadline.
    Sleep,
    /// A signal: one the thread does not block, or one of `set` (which
    /// it may block: sigtimedwait).
    Signal {
        /// Blocked signals that also end the wait.
        set: u64,
    },
    /// The vfork child that borrowed its process's memory giving it back
    /// (at execve or its end). No signal ends this wait: the thread has
    /// no memory to run a handler in until then.
    Vfork {
        /// The child.
        child: Tid,
    },
    /// Its process is stopped (job control): SIGCONT wakes it, SIGKILL
    /// ends the wait; no other signal does.
    Stopped,
}

/// Which futex word a waiter waits on: the address space (its top-level
/// table) and the word's address — or 0 and the word's physical address
/// for a shared futex in memory shared between processes. Processes forked
/// from each other have the same addresses, and their waiters must not
/// take each other's wake-ups.
pub type FutexKey = (u64, u64);

/// Why a blocked thread runs again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Woken {
    /// What it waited for happened.
    Event,
    /// Its deadline passed.
    Timeout,
    /// A signal arrived for it.
    Signal,
}

/// The deadline of a system call that may be re-run after waiting: set
/// from `timeout_ns` on its first run, kept across re-runs.
pub fn restart_deadline(timeout_ns: Option<u64>) -> Option<u64> {
    let timeout_ns = timeout_ns?;
    with_current(|t| {
        *t.restart_deadline
            .get_or_insert_with(|| time::monotonic_ns().saturating_add(timeout_ns))
    })
    .into()
}

/// Wakes blocked threads whose deadline has passed.
pub(crate) fn expire(s: &mut Scheduler) {
    let now = time::monotonic_ns();
    let mut woke = Vec::new();
    for t in s.threads.values_mut() {
        if t.state == State::Blocked && t.deadline.is_some_and(|d| d <= now) {
            t.state = State::Runnable;
            t.woken = Some(Woken::Timeout);
            t.wait = None;
            t.deadline = None;
            woke.push(t.tid);
        }
    }
    s.run_queue.extend(woke);
    super::cpu::wake_idle_cpu(s);
}

fn make_runnable(s: &mut Scheduler, tid: Tid) {
    wake(s, tid, Woken::Event);
}

pub(crate) fn wake(s: &mut Scheduler, tid: Tid, why: Woken) {
    if let Some(t) = s.threads.get_mut(&tid) {
        t.state = State::Runnable;
        t.woken = Some(why);
        t.wait = None;
        t.deadline = None;
        s.run_queue.push_back(tid);
        super::cpu::wake_idle_cpu(s);
    }
}

/// Wakes up to `max` threads waiting on the futex word at `addr` whose
/// bitset intersects `bitset`; returns how many.
pub fn wake_futex(key: FutexKey, bitset: u32, max: u32) -> u32 {
    let mut s = KERNEL.sched.lock();
    let waiting: Vec<Tid> = s
        .threads
        .values()
        .filter(|t| t.state == State::Blocked)
        .filter(|t| matches!(t.wait, Some(Wait::Futex { key: k, bitset: b }) if k == key && b & bitset != 0))
        .map(|t| t.tid)
        .take(max as usize)
        .collect();
    for tid in &waiting {
        make_runnable(&mut s, *tid);
    }
    rearm(&mut s);
    waiting.len() as u32
}

/// Wakes every blocked thread that `waits` accepts (given its record).
fn wake_blocked(s: &mut Scheduler, waits: impl Fn(&Thread) -> bool) {
    let waiting: Vec<Tid> = s
        .threads
        .values()
        .filter(|t| t.state == State::Blocked && waits(t))
        .map(|t| t.tid)
        .collect();
    for tid in waiting {
        make_runnable(s, tid);
    }
}

/// Wakes the thread waiting for vfork child `child` to give its memory
/// back.
pub fn vfork_done(child: Tid) {
    let mut s = KERNEL.sched.lock();
    wake_blocked(&mut s, |t| t.wait == Some(Wait::Vfork { child }));
    rearm(&mut s);
}

/// Wakes the threads of process `pid` that wait while it is stopped.
pub fn resume_stopped(pid: Tid) {
    let mut s = KERNEL.sched.lock();
    wake_blocked(&mut s, |t| t.pid == pid && t.wait == Some(Wait::Stopped));
    rearm(&mut s);
}

/// Drops the stop signals pending for process `pid`'s threads (SIGCONT
/// was sent).
pub fn drop_stop_signals(pid: Tid) {
    use kiln_kernel::signal::sig;
    let mut s = KERNEL.sched.lock();
    let stops = [sig::SIGSTOP, sig::SIGTSTP, sig::SIGTTIN, sig::SIGTTOU];
    for t in s.threads.values_mut().filter(|t| t.pid == pid) {
        for signo in stops {
            t.sig.pending.discard(signo);
        }
    }
    if let Some(q) = s.shared.get_mut(&pid) {
        for signo in stops {
            q.discard(signo);
        }
    }
}

/// How many threads wait on the futex word at `addr`.
pub fn futex_waiters(key: FutexKey) -> usize {
    KERNEL
        .sched
        .lock()
        .threads
        .values()
        .filter(|t| {
            t.state == State::Blocked
                && matches!(t.wait, Some(Wait::Futex { key: k, .. }) if k == key)
        })
        .count()
}

/// FUTEX_REQUEUE: wakes up to `wake` waiters of `from`, moves up to
/// `requeue` more to `to`; returns the number woken plus moved.
pub fn requeue_futex(from: FutexKey, to: FutexKey, wake: u32, requeue: u32) -> u32 {
    let woken = wake_futex(from, u32::MAX, wake);
    let mut s = KERNEL.sched.lock();
    let mut moved = 0;
    for t in s.threads.values_mut() {
        if moved == requeue {
            break;
        }
        if t.state == State::Blocked
            && matches!(t.wait, Some(Wait::Futex { key, .. }) if key == from)
        {
            t.wait = Some(Wait::Futex {
                key: to,
                bitset: u32::MAX,
            });
            moved += 1;
        }
    }
    woken + moved
}

/// Counts [`notify_io`] calls: a call that found nothing to do notes it
/// before trying, and does not block when it moved meanwhile (an interrupt
/// serviced between its try and its block changed something, and the wake
/// meant for it came before it waited).
static IO_GENERATION: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The current I/O generation (see [`block_io`]).
pub fn io_generation() -> u64 {
    IO_GENERATION.load(core::sync::atomic::Ordering::SeqCst)
}

/// Blocks for I/O like [`block`], unless something changed since the
/// generation `since` was read: then it returns at once, for the caller
/// to try again.
///
/// # Errors
/// As for [`block`].
pub fn block_io(since: u64, deadline: Option<u64>) -> Result<Woken, Errno> {
    if io_generation() != since {
        return Ok(Woken::Event);
    }
    block(Wait::Io, deadline)
}

/// Tells threads waiting for I/O that something changed (they re-run their
/// system calls and block again if it was not for them).
pub fn notify_io() {
    IO_GENERATION.fetch_add(1, core::sync::atomic::Ordering::SeqCst);
    let mut s = KERNEL.sched.lock();
    wake_blocked(&mut s, |t| t.wait == Some(Wait::Io));
}

/// Blocks the running thread until `wait` happens or `deadline`
/// (monotonic ns) passes. Must be called without any kernel lock held.
///
/// # Errors
/// EDEADLK when nothing could ever wake it.
pub fn block(wait: Wait, deadline: Option<u64>) -> Result<Woken, Errno> {
    {
        let mut s = KERNEL.sched.lock();
        let cur = s.current();
        if deadline.is_some_and(|d| d <= time::monotonic_ns()) {
            return Ok(Woken::Timeout);
        }
        let pid = s.threads.get(&cur).map_or(1, |t| t.pid);
        let shared = s.shared_set(pid);
        let me = s
            .threads
            .get(&cur)
            .expect("the running thread is registered");
        if signal_ends_wait(me, wait, shared) {
            return Ok(Woken::Signal);
        }
        // Threads queued or running on other CPUs may wake it.
        let others_can_run = s
            .threads
            .values()
            .any(|t| t.tid != cur && t.state == State::Runnable)
            || crate::time::timer::next_deadline().is_some()
            || crate::drivers::may_wake()
            || s.threads
                .values()
                .any(|t| t.tid != cur && t.state == State::Blocked && t.deadline.is_some());
        if deadline.is_none() && !others_can_run {
            return Err(Errno::Deadlk);
        }
        let t = s
            .threads
            .get_mut(&cur)
            .expect("the running thread is registered");
        t.state = State::Blocked;
        t.wait = Some(wait);
        t.deadline = deadline;
        t.woken = None;
        rearm(&mut s);
    }
    schedule();
    let woken = with_current(|t| t.woken.take());
    Ok(woken.unwrap_or(Woken::Event))
}

/// Whether a pending signal ends `t`'s `wait` (or keeps it from starting);
/// `shared` is what is pending for its process as a whole.
pub(crate) fn signal_ends_wait(t: &Thread, wait: Wait, shared: u64) -> bool {
    if matches!(wait, Wait::Vfork { .. }) {
        return false;
    }
    if wait == Wait::Stopped {
        let kill = kiln_kernel::signal::bit(kiln_kernel::signal::sig::SIGKILL);
        return (t.sig.pending.set() | shared) & kill != 0;
    }
    let pending = t.sig.pending.set() | shared;
    let set = match wait {
        Wait::Signal { set } => set,
        _ => 0,
    };
    pending & (!t.sig.mask | set) != 0
}
