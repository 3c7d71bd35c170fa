//! Threads, waiting and the scheduler (one CPU).
//!
//! Each thread has its own kernel stack (its system calls and the events
//! that interrupt it run there) and saved FPU state. A thread leaves the CPU
//! only at defined points: when it blocks in a system call, yields or exits,
//! or when the timer interrupt preempts it *while it runs the program*
//! (never while it runs kernel code, which therefore needs no locking
//! against other threads). Time slices are 10 ms; the timer is armed only
//! for a wake-up someone waits for or when threads share the CPU, so a
//! single-threaded program that never sleeps takes no interrupts.
//!
//! Blocking and waking are in [`wait`]; the signals pending for each
//! thread are kept in its record here but handled by `signal::pending`.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::state::KERNEL;
use kiln_kernel::errno::Errno;
use kiln_kernel::signal::SigQueue;

use crate::arch::{self, FpuState, Frame};
use crate::mm::uaccess::UserPtr;
use crate::signal::pending::ThreadSignals;
use crate::time;

mod wait;

pub use wait::{
    block, block_io, futex_waiters, io_generation, notify_io, requeue_futex, restart_deadline,
    vfork_done, wake_futex, Wait, Woken,
};
pub(crate) use wait::{expire, signal_ends_wait, wake};

/// A thread id (the program's process is thread 1's group).
pub type Tid = u32;

/// Size of each thread's kernel stack.
const KSTACK_SIZE: usize = 64 * 1024;
/// Length of a time slice when threads share the CPU.
const SLICE_NS: u64 = 10_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Runnable,
    Blocked,
    Exited,
}

/// One thread of the program.
pub struct Thread {
    /// Its id.
    pub tid: Tid,
    /// Its process's id.
    pub pid: Tid,
    pub(crate) kstack: Vec<u128>,
    pub(crate) saved_rsp: u64,
    pub(crate) fpu: Option<FpuState>,
    pub(crate) fs_base: u64,
    pub(crate) gs_base: u64,
    pub(crate) state: State,
    pub(crate) wait: Option<Wait>,
    pub(crate) deadline: Option<u64>,
    pub(crate) woken: Option<Woken>,
    /// Address whose word is cleared and futex-woken when the thread exits.
    pub clear_child_tid: UserPtr<u32>,
    /// The absolute deadline of a system call being restarted after a wake-up.
    pub restart_deadline: Option<u64>,
    /// Its signal state.
    pub sig: ThreadSignals,
    /// Its name (prctl PR_SET_NAME, /proc/self/comm), NUL-padded.
    pub comm: [u8; 16],
}

impl Thread {
    fn new(tid: Tid, pid: Tid) -> Box<Thread> {
        Box::new(Thread {
            tid,
            pid,
            kstack: alloc::vec![0u128; KSTACK_SIZE / 16],
            saved_rsp: 0,
            fpu: None,
            fs_base: 0,
            gs_base: 0,
            state: State::Runnable,
            wait: None,
            deadline: None,
            woken: None,
            clear_child_tid: UserPtr::new(0),
            restart_deadline: None,
            sig: ThreadSignals::default(),
            comm: default_comm(),
        })
    }

    /// Sets its name (at most 15 bytes are kept).
    pub fn set_comm(&mut self, name: &[u8]) {
        self.comm = [0; 16];
        let n = name.len().min(15);
        self.comm[..n].copy_from_slice(&name[..n]);
    }

    fn kstack_top(&self) -> u64 {
        self.kstack.as_ptr() as u64 + (self.kstack.len() * 16) as u64
    }
}

/// The thread table and run queue (the instance is `state::KERNEL.sched`).
pub struct Scheduler {
    pub(crate) threads: BTreeMap<Tid, Box<Thread>>,
    pub(crate) run_queue: VecDeque<Tid>,
    pub(crate) current: Tid,
    pub(crate) next_tid: Tid,
    /// TSC at which the running thread's slice ends.
    pub(crate) slice_end: u64,
    /// The TSC the timer is armed for (0: disarmed).
    pub(crate) armed: u64,
    /// Exited threads whose stacks can be freed once off them. Boxed
    /// like `threads`: a switch saved a pointer into the record.
    #[allow(clippy::vec_box)]
    pub(crate) zombies: Vec<Box<Thread>>,
    /// Signals sent to the process as a whole (any thread not blocking
    /// them takes them).
    pub(crate) shared: SigQueue,
}

impl Scheduler {
    /// No threads yet; thread 1 is the first.
    pub const fn new() -> Self {
        Self {
            threads: BTreeMap::new(),
            run_queue: VecDeque::new(),
            current: 1,
            next_tid: 2,
            slice_end: 0,
            armed: 0,
            zombies: Vec::new(),
            shared: SigQueue::new(),
        }
    }
}

/// Set by a timer interrupt that arrived while kernel code ran; the next
/// way back to the program looks at timers and slices.
static TIMER_FIRED: AtomicBool = AtomicBool::new(false);

/// A new thread's name: the program file's name, like Linux's comm.
pub(crate) fn default_comm() -> [u8; 16] {
    let exe = crate::process::exe_path();
    let base = exe.rsplit('/').next().unwrap_or(&exe).as_bytes();
    let mut comm = [0u8; 16];
    let n = base.len().min(15);
    comm[..n].copy_from_slice(&base[..n]);
    comm
}

/// Creates thread 1 (the program's first) and returns its kernel stack top.
pub fn init_main_thread() -> u64 {
    let t = Thread::new(1, 1);
    let top = t.kstack_top();
    KERNEL.sched.lock().threads.insert(1, t);
    top
}

/// The running thread's id.
pub fn current_tid() -> Tid {
    KERNEL.sched.lock().current
}

/// The running thread's process id.
pub fn current_pid() -> Tid {
    let s = KERNEL.sched.lock();
    s.threads.get(&s.current).map_or(1, |t| t.pid)
}

/// A fresh id for a thread or process.
pub fn next_id() -> Tid {
    let mut s = KERNEL.sched.lock();
    let id = s.next_tid;
    s.next_tid += 1;
    id
}

/// Runs `f` on the running thread's record.
pub fn with_current<R>(f: impl FnOnce(&mut Thread) -> R) -> R {
    let mut s = KERNEL.sched.lock();
    let cur = s.current;
    f(s.threads
        .get_mut(&cur)
        .expect("the running thread is registered"))
}

fn ns_to_tsc(ns: u64) -> u64 {
    let khz = time::tsc_khz();
    (u128::from(ns) * u128::from(khz) / 1_000_000) as u64
}

/// The TSC value at monotonic time `ns`.
fn deadline_tsc(ns: u64) -> u64 {
    time::tsc_at(ns)
}

/// Starts a thread that enters the program with `frame` (clone): it gets
/// the creator's FPU state. Returns its id.
///
/// # Errors
/// ENOMEM when its stacks cannot be allocated.
pub fn spawn(frame: &Frame, fs_base: u64, clear_child_tid: UserPtr<u32>) -> Result<Tid, Errno> {
    let tid = next_id();
    spawn_as(tid, current_pid(), frame, fs_base, clear_child_tid)
}

/// Starts thread `tid` of process `pid` entering the program with `frame`
/// (a forked child's first thread has the process's id).
///
/// # Errors
/// ENOMEM when its stacks cannot be allocated.
pub fn spawn_as(
    tid: Tid,
    pid: Tid,
    frame: &Frame,
    fs_base: u64,
    clear_child_tid: UserPtr<u32>,
) -> Result<Tid, Errno> {
    let fpu = FpuState::capture().ok_or(Errno::Nomem)?;
    let mut s = KERNEL.sched.lock();
    let mut t = Thread::new(tid, pid);
    // A new thread inherits the creator's mask, not its alternate stack.
    let cur = s.current;
    t.sig.mask = s.threads.get(&cur).map_or(0, |c| c.sig.mask);
    if let Some(c) = s.threads.get(&cur) {
        t.comm = c.comm;
    }
    t.fpu = Some(fpu);
    t.fs_base = fs_base;
    t.clear_child_tid = clear_child_tid;
    // SAFETY: the stack was just allocated, is unused and 16-byte aligned
    // (u128 elements), and holds far more than a frame and a switch record.
    t.saved_rsp = unsafe { arch::prepare_new_thread(t.kstack_top(), frame) };
    s.threads.insert(tid, t);
    s.run_queue.push_back(tid);
    if s.slice_end == 0 {
        s.slice_end = arch::rdtsc() + ns_to_tsc(SLICE_NS);
    }
    rearm(&mut s);
    Ok(tid)
}

/// Arms the timer for the next event: the earliest deadline, or the end of
/// the slice when others wait for the CPU.
pub(crate) fn rearm(s: &mut Scheduler) {
    let mut next = s
        .threads
        .values()
        .filter(|t| t.state == State::Blocked)
        .filter_map(|t| t.deadline)
        .chain(crate::time::timer::next_deadline())
        .min()
        .map(deadline_tsc);
    if !s.run_queue.is_empty() {
        next = Some(next.map_or(s.slice_end, |n| n.min(s.slice_end)));
    }
    match next {
        Some(tsc) if tsc != s.armed => {
            arch::timer_arm_at(tsc);
            s.armed = tsc;
        }
        None if s.armed != 0 => {
            arch::timer_disarm();
            s.armed = 0;
        }
        _ => {}
    }
}

/// Re-arms the timer after a kernel timer (alarm, POSIX timer) changed.
/// Call without the timer table locked.
pub fn timers_changed() {
    let mut s = KERNEL.sched.lock();
    rearm(&mut s);
}

/// Set by sched_yield (which runs with the process lock held); the system
/// call's way out yields once the lock is released.
static YIELD_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Asks for a yield when the current system call finishes.
pub fn yield_now_later() {
    YIELD_REQUESTED.store(true, Ordering::Relaxed);
}

/// Yields if a yield was asked for.
pub fn yield_if_requested() {
    if YIELD_REQUESTED.swap(false, Ordering::Relaxed) {
        yield_now();
    }
}

/// Gives the CPU to another runnable thread, if there is one.
pub fn yield_now() {
    {
        let mut s = KERNEL.sched.lock();
        if s.run_queue.is_empty() {
            return;
        }
        let cur = s.current;
        s.run_queue.push_back(cur);
    }
    schedule();
}

/// Ends the running thread. Returns when it was the last one of its
/// process (the caller then ends the process); otherwise never returns.
pub fn exit_current() {
    {
        let mut s = KERNEL.sched.lock();
        let cur = s.current;
        let pid = s.threads.get(&cur).map_or(1, |t| t.pid);
        let others = s
            .threads
            .values()
            .any(|t| t.tid != cur && t.pid == pid && t.state != State::Exited);
        if !others {
            return;
        }
        if let Some(t) = s.threads.get_mut(&cur) {
            t.state = State::Exited;
        }
    }
    schedule();
    unreachable!("an exited thread was resumed");
}

/// Ends every thread of the running process, the running one last: the
/// CPU goes to another process's thread and this never returns (the
/// process's resources are already gone).
pub fn exit_process_threads() -> ! {
    {
        let mut s = KERNEL.sched.lock();
        let cur = s.current;
        let pid = s.threads.get(&cur).map_or(1, |t| t.pid);
        let others: Vec<Tid> = s
            .threads
            .values()
            .filter(|t| t.pid == pid && t.tid != cur)
            .map(|t| t.tid)
            .collect();
        for tid in others {
            // Off the CPU (one CPU): their stacks go at once.
            s.threads.remove(&tid);
        }
        s.run_queue.retain(|&t| t != cur);
        if let Some(t) = s.threads.get_mut(&cur) {
            t.state = State::Exited;
        }
    }
    schedule();
    unreachable!("an ended process's thread was resumed");
}

/// Called by the timer interrupt: `from_program` when it interrupted the
/// program (the thread may then be preempted), else only noted.
pub fn timer_interrupt(from_program: bool) {
    if !from_program {
        TIMER_FIRED.store(true, Ordering::Relaxed);
        return;
    }
    check_timers();
}

/// On the way back to the program: handles a timer that fired in kernel
/// code, and preempts when the slice is over and others wait.
pub fn check_timers() {
    TIMER_FIRED.store(false, Ordering::Relaxed);
    crate::time::timer::fire_due();
    let preempt = {
        let mut s = KERNEL.sched.lock();
        s.armed = 0; // one-shot: it fired (or is about to be re-armed)
        expire(&mut s);
        let over = arch::rdtsc() >= s.slice_end;
        let preempt = over && !s.run_queue.is_empty();
        if preempt {
            let cur = s.current;
            s.run_queue.push_back(cur);
        } else {
            rearm(&mut s);
        }
        preempt
    };
    if preempt {
        schedule();
    }
}

/// Whether a timer interrupt is waiting to be looked at.
pub fn timer_pending() -> bool {
    TIMER_FIRED.load(Ordering::Relaxed)
}

/// Switches to the next runnable thread (idling until one is, if none
/// is). The current thread must already be queued, blocked or exited.
fn schedule() {
    loop {
        let mut s = KERNEL.sched.lock();
        s.zombies.clear();
        expire(&mut s);
        let cur = s.current;
        let next = loop {
            match s.run_queue.pop_front() {
                Some(tid)
                    if s.threads
                        .get(&tid)
                        .is_some_and(|t| t.state == State::Runnable) =>
                {
                    break Some(tid)
                }
                Some(_) => continue,
                None => break None,
            }
        };
        let Some(next) = next else {
            if s.threads
                .get(&cur)
                .is_some_and(|t| t.state == State::Runnable)
            {
                rearm(&mut s);
                return; // nothing else to run: keep going
            }
            let pending = crate::time::timer::next_deadline().is_some()
                || crate::drivers::virtio::may_wake()
                || s.threads
                    .values()
                    .any(|t| t.state == State::Blocked && t.deadline.is_some());
            if !pending {
                drop(s);
                crate::deadlock();
            }
            rearm(&mut s);
            drop(s);
            if crate::drivers::virtio::pending() {
                // A device interrupt came before the CPU went idle.
                crate::drivers::virtio::service();
                continue;
            }
            arch::idle();
            crate::drivers::virtio::service();
            TIMER_FIRED.store(false, Ordering::Relaxed);
            // Kernel timers (alarms) post their signals now: they may wake
            // a thread waiting for one.
            crate::time::timer::fire_due();
            continue;
        };
        s.slice_end = arch::rdtsc() + ns_to_tsc(SLICE_NS);
        if next == cur {
            rearm(&mut s);
            return;
        }
        s.current = next;
        rearm(&mut s);
        let prev_exited = s
            .threads
            .get(&cur)
            .is_some_and(|t| t.state == State::Exited);
        // Save what belongs to the CPU for the thread that stops.
        let prev_ptr: *mut Thread = match s.threads.get_mut(&cur) {
            Some(t) => {
                t.fs_base = arch::fs_base();
                t.gs_base = arch::gs_base();
                if t.fpu.is_none() {
                    t.fpu = FpuState::capture();
                } else if let Some(f) = &t.fpu {
                    f.save();
                }
                &mut **t
            }
            None => core::ptr::null_mut(),
        };
        let next_t = s
            .threads
            .get_mut(&next)
            .expect("queued threads are registered");
        if let Some(f) = &next_t.fpu {
            f.restore();
        }
        arch::set_fs_base(next_t.fs_base);
        arch::set_gs_base(next_t.gs_base);
        arch::set_kernel_stack(next_t.kstack_top());
        let next_rsp: *const u64 = &next_t.saved_rsp;
        let next_pid = next_t.pid;
        if prev_exited {
            // Keep the exited thread's stack alive until we are off it.
            if let Some(t) = s.threads.remove(&cur) {
                s.zombies.push(t);
            }
        }
        let prev_rsp: *mut u64 = if prev_ptr.is_null() || prev_exited {
            // Nowhere to come back to: save into a scratch slot.
            static mut DISCARD: u64 = 0;
            &raw mut DISCARD
        } else {
            // SAFETY: `prev_ptr` points into a boxed thread that stays in
            // the table while it is switched out.
            unsafe { &raw mut (*prev_ptr).saved_rsp }
        };
        drop(s);
        // Another process's thread: its process and address space first.
        crate::process::switch_to(next_pid);
        // SAFETY: `next_rsp` was saved by switch_to or prepared by
        // `prepare_new_thread` on a stack owned by a live thread (or a
        // zombie kept until after this switch); `prev_rsp` outlives the
        // switch. No lock is held.
        unsafe { arch::switch(prev_rsp, next_rsp) };
        return;
    }
}

/// What /proc shows of a process's threads.
pub struct ThreadsOf {
    /// How many have not exited.
    pub count: usize,
    /// The first thread's name.
    pub comm: [u8; 16],
    /// The first thread's signal mask.
    pub mask: u64,
    /// Signals pending for the first thread.
    pub pending: u64,
}

/// The threads of process `pid`.
pub fn threads_of(pid: Tid) -> ThreadsOf {
    let s = KERNEL.sched.lock();
    let count = s
        .threads
        .values()
        .filter(|t| t.pid == pid && t.state != State::Exited)
        .count();
    match s.threads.get(&pid) {
        Some(t) => ThreadsOf {
            count,
            comm: t.comm,
            mask: t.sig.mask,
            pending: t.sig.pending.set(),
        },
        None => ThreadsOf {
            count,
            comm: default_comm(),
            mask: 0,
            pending: 0,
        },
    }
}

/// Number of threads that have not exited.
pub fn thread_count() -> usize {
    KERNEL
        .sched
        .lock()
        .threads
        .values()
        .filter(|t| t.state != State::Exited)
        .count()
}

/// Whether thread `tid` exists and has not exited.
pub fn thread_alive(tid: Tid) -> bool {
    KERNEL
        .sched
        .lock()
        .threads
        .get(&tid)
        .is_some_and(|t| t.state != State::Exited)
}

/// Ends every thread of the running process but the running one (execve
/// in a threaded program, as Linux does): they never run again and their
/// records go.
pub fn end_other_threads() {
    let mut s = KERNEL.sched.lock();
    let cur = s.current;
    let pid = s.threads.get(&cur).map_or(1, |t| t.pid);
    let others: Vec<Tid> = s
        .threads
        .values()
        .filter(|t| t.tid != cur && t.pid == pid)
        .map(|t| t.tid)
        .collect();
    for tid in others {
        // Not running (one CPU: only the current thread is), so their
        // stacks can go at once.
        s.threads.remove(&tid);
    }
    let threads = &s.threads;
    let keep: VecDeque<Tid> = s
        .run_queue
        .iter()
        .copied()
        .filter(|t| threads.contains_key(t))
        .collect();
    s.run_queue = keep;
}

/// The running thread as a new program finds it after execve: no
/// clear-child-tid word, no alternate signal stack, named after the
/// program.
pub fn reset_current_for_exec() {
    with_current(|t| {
        t.clear_child_tid = UserPtr::new(0);
        t.sig.alt = Default::default();
        t.comm = default_comm();
        t.fs_base = 0;
    });
}
