//! The CPUs: what the scheduler keeps for each, the kernel lock, and each
//! CPU's idle loop.
//!
//! Kernel code runs under one lock, the *kernel lock*, taken on every way
//! in from the program (system call, exception, interrupt) and given back
//! on the way out, and given up by a CPU that idles. Programs run on every
//! CPU at once; the kernel on one at a time. That keeps the rest of the
//! kernel as it was written for one CPU — never preempted, its own locks
//! only ordering what one CPU does — while threads and processes spread
//! over the CPUs. A CPU that waits for the lock answers TLB flush requests
//! meanwhile (see `arch::x86_64::tlb`).
//!
//! Each CPU has an idle context: the loop below, on a stack of its own. A
//! thread that blocks saves its context and the CPU switches to another
//! thread or to its idle loop, so a blocked thread's stack is never in use
//! and any CPU may resume it. A thread made runnable while a CPU idles
//! sends that CPU an IPI.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::{
    expire, ns_to_tsc, pop_runnable, rearm, switch_threads, State, Tid, KSTACK_SIZE, SLICE_NS,
};
use crate::arch::{self, MAX_CPUS};
use crate::state::KERNEL;

/// What the scheduler keeps for one CPU.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CpuState {
    /// The thread it runs (0: its idle loop).
    pub(crate) current: Tid,
    /// TSC at which the running thread's slice ends.
    pub(crate) slice_end: u64,
    /// The TSC its timer is armed for (0: disarmed).
    pub(crate) armed: u64,
    /// Its idle loop's saved context while it runs a thread.
    pub(crate) idle_rsp: u64,
    /// It waits in its idle loop (a thread made runnable sends it an IPI).
    pub(crate) idle: bool,
}

impl CpuState {
    pub(crate) const fn new() -> Self {
        Self {
            current: 0,
            slice_end: 0,
            armed: 0,
            idle_rsp: 0,
            idle: false,
        }
    }
}

/// The CPU holding the kernel lock, plus one (0: nobody). CPU 0 holds it
/// from boot until the first program starts.
static HOLDER: AtomicUsize = AtomicUsize::new(1);

/// Takes the kernel lock, answering TLB flush and snapshot requests while
/// it waits.
fn lock_kernel() {
    let me = arch::cpu_index() + 1;
    while HOLDER
        .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        arch::serve_flush_requests();
        arch::serve_snapshot();
        core::hint::spin_loop();
    }
}

/// Gives the kernel lock back.
fn unlock_kernel() {
    let holder = HOLDER.swap(0, Ordering::Release);
    debug_assert_eq!(
        holder,
        arch::cpu_index() + 1,
        "the kernel lock given back by a CPU that did not hold it"
    );
}

/// Entering the kernel from the program on this CPU: takes the kernel
/// lock, then makes the running thread's process the kernel's current
/// one. A thread that was ended meanwhile (its process exited on another
/// CPU) leaves the CPU here and never returns.
pub fn enter_kernel() {
    lock_kernel();
    let (exited, pid) = {
        let s = KERNEL.sched.lock();
        let cur = s.current();
        match s.threads.get(&cur) {
            Some(t) => (t.state == State::Exited, t.pid),
            None => (true, 0),
        }
    };
    if exited {
        super::schedule();
        unreachable!("an ended thread was resumed");
    }
    crate::process::make_running(pid);
}

/// Leaving the kernel for the program: gives the kernel lock back.
pub fn leave_kernel() {
    unlock_kernel();
}

/// Whether the running CPU holds the kernel lock.
pub fn holds_kernel_lock() -> bool {
    HOLDER.load(Ordering::Relaxed) == arch::cpu_index() + 1
}

/// A new thread's first return to the program (from its first switch):
/// the return path writes below the program's stack pointer, so that
/// memory is made present first, while the lock is held.
#[no_mangle]
extern "C" fn new_thread_leaves_kernel(frame: &arch::Frame) {
    if let Some(p) = KERNEL.process.lock().as_mut() {
        let _ = p.mem.prepare(frame.rsp.wrapping_sub(144), 16, true);
    }
    leave_kernel();
}

/// Gives the kernel lock up while waiting for another CPU to do something
/// that needs it, then takes it back (as [`enter_kernel`]).
pub fn let_others_in() {
    unlock_kernel();
    for _ in 0..64 {
        core::hint::spin_loop();
    }
    enter_kernel();
}

/// Per-CPU flag: a timer interrupt came while kernel code ran here.
pub(crate) static TIMER_FIRED: [AtomicBool; MAX_CPUS] =
    [const { AtomicBool::new(false) }; MAX_CPUS];
/// Per-CPU flag: sched_yield asked for a yield at the end of the call.
pub(crate) static YIELD_REQUESTED: [AtomicBool; MAX_CPUS] =
    [const { AtomicBool::new(false) }; MAX_CPUS];

/// Sends an IPI to one idle CPU, if there is one, after threads were
/// queued.
pub(crate) fn wake_idle_cpu(s: &mut super::Scheduler) {
    let me = arch::cpu_index();
    // One idle CPU that may run a queued thread.
    let mut wanted = 0u64;
    for tid in &s.run_queue {
        if let Some(t) = s.threads.get(tid) {
            wanted |= t.affinity;
        }
    }
    let idle =
        (0..arch::cpus_online()).find(|&c| c != me && s.cpus[c].idle && wanted & (1 << c) != 0);
    if let Some(c) = idle {
        s.cpus[c].idle = false;
        arch::send_reschedule(c);
    }
}

/// Makes the CPU running thread `tid` (other than this one) enter the
/// kernel soon: it has a signal to act on, or must end.
pub(crate) fn kick_thread(s: &super::Scheduler, tid: Tid) {
    kick_where(s, |t| t.tid == tid);
}

/// Sends an IPI to every other CPU running a thread that `wanted`
/// accepts (it has a signal to act on, or must stop or end).
pub(crate) fn kick_where(s: &super::Scheduler, wanted: impl Fn(&super::Thread) -> bool) {
    let me = arch::cpu_index();
    for c in 0..arch::cpus_online() {
        let tid = s.cpus[c].current;
        if c != me && tid != 0 && s.threads.get(&tid).is_some_and(|t| wanted(t)) {
            arch::send_reschedule(c);
        }
    }
}

/// The CPU running thread `tid`, if one does (this one included).
pub(crate) fn cpu_running(s: &super::Scheduler, tid: Tid) -> Option<usize> {
    (0..arch::cpus_online()).find(|&c| s.cpus[c].current == tid)
}

/// Starts the other CPUs (`count` in all) and prepares this one's idle
/// context. Called once on the boot CPU, holding the kernel lock.
pub fn start_cpus(count: usize) -> usize {
    let stack = alloc::vec![0u128; KSTACK_SIZE / 16].leak();
    let top = stack.as_ptr() as u64 + KSTACK_SIZE as u64;
    // SAFETY: the stack was just allocated and is never freed; the idle
    // loop never returns.
    let rsp = unsafe { arch::prepare_kernel_context(top, idle_entry) };
    KERNEL.sched.lock().cpus[0].idle_rsp = rsp;
    arch::start_cpus(count)
}

/// A started CPU joins the scheduler: its boot stack becomes its idle
/// context.
pub fn cpu_main() -> ! {
    lock_kernel();
    idle_loop()
}

extern "C" fn idle_entry() -> ! {
    idle_loop()
}

/// The idle loop of the running CPU, entered holding the kernel lock: runs
/// queued threads, and otherwise halts until an interrupt.
fn idle_loop() -> ! {
    let me = arch::cpu_index();
    loop {
        if crate::drivers::pending() {
            crate::drivers::service();
        }
        TIMER_FIRED[me].store(false, Ordering::Relaxed);
        // Kernel timers (alarms) post their signals now: they may wake a
        // thread waiting for one.
        crate::time::timer::fire_due();
        let mut s = KERNEL.sched.lock();
        s.zombies.clear();
        expire(&mut s);
        if let Some(next) = pop_runnable(&mut s) {
            s.cpus[me].idle = false;
            s.cpus[me].slice_end = arch::rdtsc() + ns_to_tsc(SLICE_NS);
            // Comes back when this CPU has nothing to run again.
            switch_threads(s, 0, next);
            continue;
        }
        let someone_runs = s.threads.values().any(|t| t.state == State::Runnable);
        let pending = crate::time::timer::next_deadline().is_some()
            || crate::drivers::may_wake()
            || s.threads
                .values()
                .any(|t| t.state == State::Blocked && t.deadline.is_some());
        if !someone_runs && !pending && !s.threads.is_empty() {
            drop(s);
            crate::deadlock();
        }
        s.cpus[me].idle = true;
        rearm(&mut s);
        drop(s);
        if crate::drivers::pending() {
            continue;
        }
        unlock_kernel();
        arch::idle();
        lock_kernel();
        KERNEL.sched.lock().cpus[me].idle = false;
    }
}
