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

/// Whether every live thread of process `pid` blocks `signal` (then a
/// process-directed one stays pending instead of taking effect).
pub fn blocked_everywhere(pid: Tid, signal: u8) -> bool {
    KERNEL
        .sched
        .lock()
        .threads
        .values()
        .filter(|t| t.pid == pid && t.state != State::Exited)
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

/// Queues a signal for thread `tid` (or pid 1 as a whole, `None`): see
/// [`post`].
pub fn post_signal(tid: Option<Tid>, info: SigInfo) -> bool {
    match tid {
        Some(tid) => post(Target::Thread(tid), info),
        None => post(Target::Process(1), info),
    }
}

/// Whom a signal is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// One thread.
    Thread(Tid),
    /// A process as a whole: any of its threads not blocking it takes it.
    Process(Tid),
}

/// Queues a signal for `target`, wakes a thread whose wait it ends, and
/// sends an IPI to a CPU running a thread it is for. False when it was
/// dropped (already pending).
pub fn post(target: Target, info: SigInfo) -> bool {
    let mut s = KERNEL.sched.lock();
    let queued = match target {
        Target::Thread(tid) => match s.threads.get_mut(&tid) {
            Some(t) => t.sig.pending.push(info),
            None => false,
        },
        Target::Process(pid) => s.shared.entry(pid).or_default().push(info),
    };
    if !queued {
        return false;
    }
    let for_thread = |t: &crate::sched::Thread| match target {
        Target::Thread(tid) => t.tid == tid,
        Target::Process(pid) => t.pid == pid,
    };
    let cur = s.current();
    // A process-directed signal that the running thread, one of that
    // process's, takes needs no wake-up.
    if matches!(target, Target::Process(_))
        && s.threads.get(&cur).is_some_and(|t| {
            for_thread(t) && t.state != State::Blocked && t.sig.mask & bit(info.signo) == 0
        })
    {
        return true;
    }
    let woken = s
        .threads
        .values()
        .filter(|t| t.state == State::Blocked && for_thread(t))
        .find(|t| {
            let shared = s.shared_set(t.pid);
            t.wait.is_some_and(|w| signal_ends_wait(t, w, shared))
        })
        .map(|t| t.tid);
    if let Some(tid) = woken {
        wake(&mut s, tid, Woken::Signal);
        rearm(&mut s);
    }
    // A thread it is for that runs on another CPU acts on it once it
    // enters the kernel: make that soon.
    crate::sched::kick_where(&s, for_thread);
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
    let pid = t.pid;
    s.shared.get_mut(&pid)?.take(allowed)
}

/// Signals pending for the running thread (its own and the process's).
pub fn pending_signals() -> u64 {
    let s = KERNEL.sched.lock();
    let Some(t) = s.threads.get(&s.current()) else {
        return 0;
    };
    t.sig.pending.set() | s.shared_set(t.pid)
}

/// Drops every pending instance of `signal` for the running process (its
/// action became "ignore").
pub fn discard_signal(signal: u8) {
    let mut s = KERNEL.sched.lock();
    let cur = s.current();
    let pid = s.threads.get(&cur).map_or(1, |t| t.pid);
    if let Some(q) = s.shared.get_mut(&pid) {
        q.discard(signal);
    }
    for t in s.threads.values_mut().filter(|t| t.pid == pid) {
        t.sig.pending.discard(signal);
    }
}

/// Forgets what was pending for process `pid` as a whole (it ended).
pub fn forget_process(pid: Tid) {
    KERNEL.sched.lock().shared.remove(&pid);
}

/// Sets the running thread's mask (SIGKILL and SIGSTOP stay unblocked).
pub fn set_mask(mask: u64) {
    with_current(|t| t.sig.mask = mask & !UNBLOCKABLE);
}
