//! Threads, waiting and the scheduler, on every CPU.
//!
//! Each thread has its own kernel stack (its system calls and the events
//! that interrupt it run there) and saved FPU state. A thread leaves its
//! CPU only at defined points: when it blocks in a system call, yields or
//! exits, or when the timer interrupt preempts it *while it runs the
//! program* (never while it runs kernel code, which therefore needs no
//! locking against other threads: kernel code runs under the kernel lock,
//! see [`cpu`]). One run queue serves every CPU; a CPU with nothing to run
//! waits in its idle loop. Time slices are 10 ms; each CPU's timer is armed
//! only for a wake-up someone waits for or when threads wait for a CPU, so
//! a single-threaded program that never sleeps takes no interrupts.
//!
//! Blocking and waking are in [`wait`]; the signals pending for each
//! thread are kept in its record here but handled by `signal::pending`.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use crate::state::KERNEL;
use kiln_kernel::errno::Errno;
use kiln_kernel::signal::SigQueue;

use crate::arch::{self, FpuState, Frame};
use crate::mm::uaccess::UserPtr;
use crate::signal::pending::ThreadSignals;
use crate::time;

mod cpu;
mod wait;

pub(crate) use cpu::kick_where;
pub use cpu::{cpu_main, enter_kernel, holds_kernel_lock, leave_kernel, let_others_in, start_cpus};

pub use wait::{
    block, block_io, drop_stop_signals, futex_waiters, io_generation, notify_io, requeue_futex,
    restart_deadline, resume_stopped, vfork_done, wake_futex, FutexKey, Wait, Woken,
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
    /// The CPUs it may run on (bit n: CPU n; sched_setaffinity).
    pub affinity: u64,
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
            state: State::Runnable,
            wait: None,
            deadline: None,
            woken: None,
            clear_child_tid: UserPtr::new(0),
            restart_deadline: None,
            sig: ThreadSignals::default(),
            comm: default_comm(),
            affinity: u64::MAX,
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
    pub(crate) next_tid: Tid,
    /// What each CPU runs.
    pub(crate) cpus: [cpu::CpuState; arch::MAX_CPUS],
    /// Exited threads whose stacks can be freed once off them. Boxed
    /// like `threads`: a switch saved a pointer into the record.
    #[allow(clippy::vec_box)]
    pub(crate) zombies: Vec<Box<Thread>>,
    /// Signals sent to each process as a whole, by pid (any of its
    /// threads not blocking them takes them).
    pub(crate) shared: BTreeMap<Tid, SigQueue>,
}

impl Scheduler {
    /// No threads yet; thread 1 is the first.
    pub const fn new() -> Self {
        Self {
            threads: BTreeMap::new(),
            run_queue: VecDeque::new(),
            next_tid: 2,
            cpus: [const { cpu::CpuState::new() }; arch::MAX_CPUS],
            zombies: Vec::new(),
            shared: BTreeMap::new(),
        }
    }

    /// The thread the running CPU runs (0: its idle loop).
    pub(crate) fn current(&self) -> Tid {
        self.cpus[arch::cpu_index()].current
    }

    /// The signals pending for process `pid` as a whole.
    pub(crate) fn shared_set(&self, pid: Tid) -> u64 {
        self.shared.get(&pid).map_or(0, SigQueue::set)
    }

    /// The running CPU's state.
    fn this_cpu(&mut self) -> &mut cpu::CpuState {
        &mut self.cpus[arch::cpu_index()]
    }
}

/// A new thread's name: the program file's name, like Linux's comm.
pub(crate) fn default_comm() -> [u8; 16] {
    let exe = crate::process::exe_path();
    let base = exe.rsplit('/').next().unwrap_or(&exe).as_bytes();
    let mut comm = [0u8; 16];
    let n = base.len().min(15);
    comm[..n].copy_from_slice(&base[..n]);
    comm
}

/// Creates thread 1 (the program's first), running on this CPU, and
/// returns its kernel stack top.
pub fn init_main_thread() -> u64 {
    let t = Thread::new(1, 1);
    let top = t.kstack_top();
    let mut s = KERNEL.sched.lock();
    s.threads.insert(1, t);
    s.this_cpu().current = 1;
    top
}

/// The running thread's id.
pub fn current_tid() -> Tid {
    KERNEL.sched.lock().current()
}

/// The running thread's process id.
pub fn current_pid() -> Tid {
    let s = KERNEL.sched.lock();
    s.threads.get(&s.current()).map_or(1, |t| t.pid)
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
    let cur = s.current();
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
    // A thread's kernel stack and bookkeeping come from the kernel's heap:
    // refused (as Linux refuses past its thread limit) before they would
    // eat into what the kernel keeps for itself.
    if crate::mm::frame::available_to_programs() < (KSTACK_SIZE as u64 / 4096) * 2 {
        return Err(Errno::Again);
    }
    let fpu = FpuState::capture().ok_or(Errno::Nomem)?;
    let mut s = KERNEL.sched.lock();
    let mut t = Thread::new(tid, pid);
    // A new thread inherits the creator's mask, not its alternate stack.
    let cur = s.current();
    t.sig.mask = s.threads.get(&cur).map_or(0, |c| c.sig.mask);
    if let Some(c) = s.threads.get(&cur) {
        t.comm = c.comm;
        t.affinity = c.affinity;
    }
    t.fpu = Some(fpu);
    t.fs_base = fs_base;
    t.clear_child_tid = clear_child_tid;
    // SAFETY: the stack was just allocated, is unused and 16-byte aligned
    // (u128 elements), and holds far more than a frame and a switch record.
    t.saved_rsp = unsafe { arch::prepare_new_thread(t.kstack_top(), frame) };
    s.threads.insert(tid, t);
    s.run_queue.push_back(tid);
    if s.this_cpu().slice_end == 0 {
        s.this_cpu().slice_end = arch::rdtsc() + ns_to_tsc(SLICE_NS);
    }
    rearm(&mut s);
    cpu::wake_idle_cpu(&mut s);
    Ok(tid)
}

/// Arms the running CPU's timer for the next event: the earliest deadline,
/// or the end of the slice when threads wait for a CPU — unless it is
/// armed for an earlier moment already.
pub(crate) fn rearm(s: &mut Scheduler) {
    let mut next = s
        .threads
        .values()
        .filter(|t| t.state == State::Blocked)
        .filter_map(|t| t.deadline)
        .chain(crate::time::timer::next_deadline())
        .min()
        .map(deadline_tsc);
    let me = s.this_cpu();
    if me.current != 0 && !s.run_queue.is_empty() {
        let end = s.this_cpu().slice_end;
        next = Some(next.map_or(end, |n| n.min(end)));
    }
    // Writing the deadline traps to the host (an emulated WRMSR, tens of
    // µs on PVM), and a thread switch would otherwise write it twice
    // (the slice armed when a thread wakes another, disarmed when the
    // run queue empties). So the timer only ever moves earlier: one
    // armed for a later moment, or no longer needed, stays and fires
    // early at most once; `check_timers` then arms the real next event.
    let me = s.this_cpu();
    if let Some(tsc) = next {
        // A deadline that has passed has fired (or is about to): it
        // counts as not armed.
        if me.armed <= arch::rdtsc() || tsc < me.armed {
            arch::timer_arm_at(tsc);
            me.armed = tsc;
        }
    }
}

/// Re-arms the timer after a kernel timer (alarm, POSIX timer) changed.
/// Call without the timer table locked.
pub fn timers_changed() {
    let mut s = KERNEL.sched.lock();
    rearm(&mut s);
}

/// Asks for a yield when the current system call finishes (sched_yield
/// runs with the process lock held; the call's way out yields once it is
/// released).
pub fn yield_now_later() {
    cpu::YIELD_REQUESTED[arch::cpu_index()].store(true, Ordering::Relaxed);
}

/// Yields if a yield was asked for.
pub fn yield_if_requested() {
    if cpu::YIELD_REQUESTED[arch::cpu_index()].swap(false, Ordering::Relaxed) {
        yield_now();
    }
}

/// Gives the CPU to another runnable thread, if there is one.
pub fn yield_now() {
    {
        let mut s = KERNEL.sched.lock();
        let cur = s.current();
        let banished = s
            .threads
            .get(&cur)
            .is_some_and(|t| t.affinity & (1 << arch::cpu_index()) == 0);
        if s.run_queue.is_empty() && !banished {
            return;
        }
        s.run_queue.push_back(cur);
        if banished {
            cpu::wake_idle_cpu(&mut s);
        }
    }
    schedule();
}

/// Ends the running thread. Returns when it was the last one of its
/// process (the caller then ends the process); otherwise never returns.
pub fn exit_current() {
    {
        let mut s = KERNEL.sched.lock();
        let cur = s.current();
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
/// process's resources are already gone). [`stop_other_threads`] ran
/// first, so none of them is on a CPU.
pub fn exit_process_threads() -> ! {
    {
        let mut s = KERNEL.sched.lock();
        let cur = s.current();
        s.run_queue.retain(|&t| t != cur);
        if let Some(t) = s.threads.get_mut(&cur) {
            t.state = State::Exited;
        }
    }
    schedule();
    unreachable!("an ended process's thread was resumed");
}

/// Ends every thread of the running process but the running one (a
/// process's end, a threaded execve as on Linux), and waits until none of
/// them is on a CPU any more (those running elsewhere are sent an IPI; they
/// leave when they enter the kernel). Their records go.
pub fn stop_other_threads() {
    loop {
        let mut s = KERNEL.sched.lock();
        let cur = s.current();
        let pid = s.threads.get(&cur).map_or(1, |t| t.pid);
        let others: Vec<Tid> = s
            .threads
            .values()
            .filter(|t| t.pid == pid && t.tid != cur)
            .map(|t| t.tid)
            .collect();
        let mut elsewhere = false;
        for tid in others {
            if cpu::cpu_running(&s, tid).is_some() {
                if let Some(t) = s.threads.get_mut(&tid) {
                    t.state = State::Exited;
                }
                cpu::kick_thread(&s, tid);
                elsewhere = true;
            } else {
                s.threads.remove(&tid);
            }
        }
        let threads = &s.threads;
        let keep: VecDeque<Tid> = s
            .run_queue
            .iter()
            .copied()
            .filter(|t| threads.get(t).is_some_and(|t| t.state != State::Exited))
            .collect();
        s.run_queue = keep;
        if !elsewhere {
            return;
        }
        drop(s);
        let_others_in();
    }
}

/// Called by the timer interrupt: `from_program` when it interrupted the
/// program (the thread may then be preempted), else only noted.
pub fn timer_interrupt(from_program: bool) {
    if !from_program {
        cpu::TIMER_FIRED[arch::cpu_index()].store(true, Ordering::Relaxed);
        return;
    }
    check_timers();
}

/// On the way back to the program: handles a timer that fired in kernel
/// code, and preempts when the slice is over and others wait.
pub fn check_timers() {
    cpu::TIMER_FIRED[arch::cpu_index()].store(false, Ordering::Relaxed);
    crate::time::timer::fire_due();
    let preempt = {
        let mut s = KERNEL.sched.lock();
        s.this_cpu().armed = 0; // one-shot: it fired (or is about to be re-armed)
        expire(&mut s);
        let over = arch::rdtsc() >= s.this_cpu().slice_end;
        let preempt = over && !s.run_queue.is_empty();
        if preempt {
            let cur = s.current();
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
    cpu::TIMER_FIRED[arch::cpu_index()].load(Ordering::Relaxed)
}

/// Takes the first runnable thread that may run on this CPU off the run
/// queue (entries for threads that are not runnable, or run on another
/// CPU, are dropped on the way).
pub(crate) fn pop_runnable(s: &mut Scheduler) -> Option<Tid> {
    let here = arch::cpu_index();
    let me = 1u64 << here;
    let mut i = 0;
    while i < s.run_queue.len() {
        let tid = s.run_queue[i];
        let eligible = s
            .threads
            .get(&tid)
            .filter(|t| t.state == State::Runnable)
            .map(|t| t.affinity);
        // The running thread queues itself when it yields or is preempted;
        // one running on another CPU is a stale entry.
        let elsewhere = cpu::cpu_running(s, tid).is_some_and(|c| c != here);
        match eligible {
            Some(mask) if !elsewhere => {
                if mask & me != 0 {
                    s.run_queue.remove(i);
                    return Some(tid);
                }
                i += 1;
            }
            _ => {
                s.run_queue.remove(i);
            }
        }
    }
    None
}

/// Makes the CPUs running threads of process `pid` (other than this one)
/// enter the kernel soon (it stopped, or must act on a signal).
pub fn kick_process(pid: Tid) {
    cpu::kick_where(&KERNEL.sched.lock(), |t| t.pid == pid);
}

/// The CPUs there are, as an affinity mask.
pub fn online_mask() -> u64 {
    (1u64 << arch::cpus_online()) - 1
}

/// The affinity of thread `tid` (0: the running one), limited to the CPUs
/// there are; None when no such thread lives.
pub fn affinity(tid: Tid) -> Option<u64> {
    let s = KERNEL.sched.lock();
    let tid = if tid == 0 { s.current() } else { tid };
    s.threads
        .get(&tid)
        .filter(|t| t.state != State::Exited)
        .map(|t| t.affinity & online_mask())
}

/// Sets the affinity of thread `tid` (0: the running one) to `mask` (at
/// least one existing CPU). The running thread leaves a CPU it may no
/// longer use at the end of the call. False when no such thread lives.
pub fn set_affinity(tid: Tid, mask: u64) -> bool {
    let mut s = KERNEL.sched.lock();
    let cur = s.current();
    let tid = if tid == 0 { cur } else { tid };
    let Some(t) = s.threads.get_mut(&tid).filter(|t| t.state != State::Exited) else {
        return false;
    };
    t.affinity = mask;
    let here = 1u64 << arch::cpu_index();
    if tid == cur && mask & here == 0 {
        drop(s);
        yield_now_later();
    } else if let Some(c) = cpu::cpu_running(&s, tid) {
        if mask & (1 << c) == 0 {
            cpu::kick_thread(&s, tid);
        }
    }
    true
}

/// Switches this CPU to the next runnable thread, or to its idle loop if
/// none is. The current thread must already be queued, blocked or exited.
pub(crate) fn schedule() {
    let mut s = KERNEL.sched.lock();
    s.zombies.clear();
    expire(&mut s);
    let cur = s.current();
    let here = 1u64 << arch::cpu_index();
    let next = match pop_runnable(&mut s) {
        Some(next) => next,
        None if s
            .threads
            .get(&cur)
            .is_some_and(|t| t.state == State::Runnable && t.affinity & here != 0) =>
        {
            // Nothing else to run: keep going.
            rearm(&mut s);
            return;
        }
        None => 0,
    };
    s.this_cpu().slice_end = arch::rdtsc() + ns_to_tsc(SLICE_NS);
    if next == cur {
        rearm(&mut s);
        return;
    }
    switch_threads(s, cur, next);
}

/// Per-CPU slot where an exited thread's context is "saved" (never read).
static mut DISCARD: [u64; arch::MAX_CPUS] = [0; arch::MAX_CPUS];

/// Switches this CPU from `cur` to `next` (0 on either side: its idle
/// loop), with the scheduler locked by `s`; returns when `cur` runs again.
pub(crate) fn switch_threads(mut s: spin::MutexGuard<'_, Scheduler>, cur: Tid, next: Tid) {
    let me = arch::cpu_index();
    debug_assert!(
        cpu::holds_kernel_lock(),
        "a thread switch outside the kernel lock"
    );
    s.cpus[me].current = next;
    rearm(&mut s);
    let prev_exited = s
        .threads
        .get(&cur)
        .is_some_and(|t| t.state == State::Exited);
    // Save what belongs to the CPU for the thread that stops.
    let prev_ptr: *mut Thread = match s.threads.get_mut(&cur) {
        Some(t) => {
            t.fs_base = arch::fs_base();
            if t.fpu.is_none() {
                t.fpu = FpuState::capture();
            } else if let Some(f) = &t.fpu {
                f.save();
            }
            &mut **t
        }
        None => core::ptr::null_mut(),
    };
    let (next_rsp, next_pid): (*const u64, Option<Tid>) = if next == 0 {
        (&raw const s.cpus[me].idle_rsp, None)
    } else {
        let next_t = s
            .threads
            .get_mut(&next)
            .expect("queued threads are registered");
        if let Some(f) = &next_t.fpu {
            f.restore();
        }
        arch::set_fs_base(next_t.fs_base);
        arch::set_kernel_stack(next_t.kstack_top());
        (&raw const next_t.saved_rsp, Some(next_t.pid))
    };
    if prev_exited {
        // Keep the exited thread's stack alive until we are off it.
        if let Some(t) = s.threads.remove(&cur) {
            s.zombies.push(t);
        }
    }
    let prev_rsp: *mut u64 = if cur == 0 {
        &raw mut s.cpus[me].idle_rsp
    } else if prev_ptr.is_null() || prev_exited {
        // Nowhere to come back to: save into a scratch slot.
        // SAFETY: only this CPU uses its slot, and nothing reads it.
        unsafe { &raw mut DISCARD[me] }
    } else {
        // SAFETY: `prev_ptr` points into a boxed thread that stays in
        // the table while it is switched out.
        unsafe { &raw mut (*prev_ptr).saved_rsp }
    };
    drop(s);
    // Another process's thread: its process and address space first.
    if let Some(pid) = next_pid {
        crate::process::switch_to(pid);
    }
    // SAFETY: `next_rsp` was saved by a switch or prepared by
    // `prepare_new_thread`/`prepare_kernel_context` on a stack that is
    // alive (a thread's, a zombie's kept until after this switch, or this
    // CPU's idle stack); `prev_rsp` outlives the switch. The kernel lock is
    // held, the scheduler's released; no other CPU resumes `cur` before
    // this one has saved it, as that needs the kernel lock.
    unsafe { arch::switch(prev_rsp, next_rsp) };
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

/// Whether no other thread of process `pid` runs on another CPU, so that
/// each one's program registers sit in the frame at the top of its
/// kernel stack and stay there while this CPU holds the kernel lock.
pub fn others_stopped(pid: Tid) -> bool {
    let s = KERNEL.sched.lock();
    let me = arch::cpu_index();
    (0..arch::cpus_online()).filter(|&c| c != me).all(|c| {
        let tid = s.cpus[c].current;
        tid == 0 || s.threads.get(&tid).is_none_or(|t| t.pid != pid)
    })
}

/// Moves the saved program RIP (and RCX, when a SYSCALL left it equal)
/// of every other live thread of process `pid` to where `relocate` says.
/// Only while [`others_stopped`] holds, the kernel lock held since.
pub fn relocate_others(pid: Tid, relocate: impl Fn(u64) -> Option<u64>) {
    let mut s = KERNEL.sched.lock();
    let cur = s.current();
    for t in s.threads.values_mut() {
        if t.tid == cur || t.pid != pid || t.state == State::Exited {
            continue;
        }
        let top = t.kstack.as_mut_ptr_range().end;
        // SAFETY: a thread that is not running has its program frame at
        // the top of its kernel stack (put there by the entry, by the
        // interrupt path, or by `prepare_new_thread`), and no CPU touches
        // it: none runs the thread, and resuming it needs the kernel lock
        // this CPU holds. The stack is 16-byte aligned and larger than a
        // frame.
        let frame = unsafe { &mut *top.cast::<u8>().sub(size_of::<Frame>()).cast::<Frame>() };
        if let Some(to) = relocate(frame.rip) {
            if frame.rcx == frame.rip {
                frame.rcx = to;
            }
            frame.rip = to;
        }
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
