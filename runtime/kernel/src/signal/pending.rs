//! Pending signals: the queue of each thread and the process-wide one
//! (kept in the scheduler's thread table, whose lock they share), which
//! thread a signal goes to, and which waits it ends.

use kiln_kernel::signal::{bit, AltStack, SigInfo, SigQueue, UNBLOCKABLE};

use crate::sched::{rearm, signal_ends_wait, wake, with_current, State, Tid, Woken};

use crate::state::KERNEL;

/// A thread's signal state.
#[derive(Default)]
pub struct ThreadSignals {
    /// Blocked signals.
    pub mask: u64,
    /// Signals sent to this thread, not yet delivered.
    pub pending: SigQueue,
    /// Its alternate signal stack.
    pub alt: AltStack,
    /// The mask to restore after rt_sigsuspend (and to record in the
    /// signal frame of the signal that ended it).
    pub saved_mask: Option<u64>,
}

/// Whether every live thread of pid 1 blocks `signal` (then a
/// process-directed one stays pending instead of taking effect).
pub fn blocked_everywhere(signal: u8) -> bool {
    KERNEL
        .sched
        .lock()
        .threads
        .values()
        .filter(|t| t.pid == 1 && t.state != State::Exited)
        .all(|t| t.sig.mask & bit(signal) != 0)
}

/// Whether thread `tid` blocks `signal`.
pub fn thread_blocks(tid: Tid, signal: u8) -> bool {
    KERNEL
        .sched
        .lock()
        .threads
        .get(&tid)
        .is_none_or(|t| t.sig.mask & bit(signal) != 0)
}

/// Queues a signal for thread `tid` (or the process, `None`) and wakes a
/// thread it interrupts. False when it was dropped (already pending).
pub fn post_signal(tid: Option<Tid>, info: SigInfo) -> bool {
    let mut s = KERNEL.sched.lock();
    let queued = match tid {
        Some(tid) => match s.threads.get_mut(&tid) {
            Some(t) => t.sig.pending.push(info),
            None => false,
        },
        None => s.shared.push(info),
    };
    if !queued {
        return false;
    }
    let shared = s.shared.set();
    let cur = s.current();
    // A process-directed signal (pid 1's queue) that the running thread,
    // one of pid 1's, takes needs no wake-up.
    if tid.is_none()
        && s.threads.get(&cur).is_some_and(|t| {
            t.pid == 1 && t.state != State::Blocked && t.sig.mask & bit(info.signo) == 0
        })
    {
        return true;
    }
    let target = s
        .threads
        .values()
        .filter(|t| t.state == State::Blocked && tid.is_none_or(|id| id == t.tid))
        .find(|t| t.wait.is_some_and(|w| signal_ends_wait(t, w, shared)))
        .map(|t| t.tid);
    if let Some(target) = target {
        wake(&mut s, target, Woken::Signal);
        rearm(&mut s);
    }
    // A thread it is for that runs on another CPU acts on it once it
    // enters the kernel: make that soon.
    let running: alloc::vec::Vec<Tid> = s
        .threads
        .values()
        .filter(|t| t.state == State::Runnable)
        .filter(|t| match tid {
            Some(id) => t.tid == id,
            None => t.pid == 1,
        })
        .map(|t| t.tid)
        .collect();
    for t in running {
        crate::sched::kick_thread(&s, t);
    }
    true
}

/// Takes the running thread's next deliverable signal (its own first,
/// then the process's), or one of `set` for sigtimedwait.
pub fn take_signal(set: u64) -> Option<SigInfo> {
    let mut s = KERNEL.sched.lock();
    let cur = s.current();
    let t = s.threads.get_mut(&cur)?;
    let allowed = if set != 0 { set } else { !t.sig.mask };
    if let Some(info) = t.sig.pending.take(allowed) {
        return Some(info);
    }
    // The process-directed queue is pid 1's (another process's own signals
    // go to its first thread).
    if t.pid != 1 {
        return None;
    }
    s.shared.take(allowed)
}

/// Signals pending for the running thread (its own and the process's).
pub fn pending_signals() -> u64 {
    let s = KERNEL.sched.lock();
    let Some(t) = s.threads.get(&s.current()) else {
        return 0;
    };
    let shared = if t.pid == 1 { s.shared.set() } else { 0 };
    t.sig.pending.set() | shared
}

/// Drops every pending instance of `signal` (its action became "ignore").
pub fn discard_signal(signal: u8) {
    let mut s = KERNEL.sched.lock();
    s.shared.discard(signal);
    for t in s.threads.values_mut() {
        t.sig.pending.discard(signal);
    }
}

/// Sets the running thread's mask (SIGKILL and SIGSTOP stay unblocked).
pub fn set_mask(mask: u64) {
    with_current(|t| t.sig.mask = mask & !UNBLOCKABLE);
}
