//! The Linux system-call layer.
//!
//! `syscall_dispatch` is called by the SYSCALL entry stub with the
//! program's registers (Linux x86-64 ABI: number in RAX, arguments in RDI,
//! RSI, RDX, R10, R8, R9). [`table`] decodes the arguments into the types
//! its line names and runs the handler; this module blocks, restarts and
//! ends calls as the handler's [`Outcome`] asks, and writes the result (or
//! `-errno`) back to RAX. Handlers live in one file per area — `io` (read,
//! write and friends), `fd` (the descriptor table), `path` (names in the
//! file system), `stat` (metadata), `mm`, `poll`, `futex`, `signal`,
//! `thread`, `task` (identity and limits), `time` — and return
//! `Result<u64, Errno>` or an `Outcome`; unknown numbers get `-ENOSYS` and
//! a trace line naming them. `rewrite` turns hot SYSCALL sites into jumps.

mod args;
mod cred;
mod fd;
mod futex;
mod io;
mod mm;
mod path;
mod poll;
pub mod rewrite;
mod signal;
mod socket;
mod stat;
mod table;
mod task;
mod thread;
mod time;
mod trace;

use core::ops::{Deref, DerefMut};

use kiln_kernel::errno::Errno;
use kiln_kernel::signal::SigInfo;

pub use self::cred::Credentials;
pub use self::table::nr;
use crate::arch::Frame;
use crate::process::Process;
use crate::sched::{self, Wait, Woken};
use crate::signal::{self as signals, sig, SyscallEnd};
use crate::state::KERNEL;

/// One system call being handled: the process it runs in (the handler
/// reaches its fields through `Deref`) and the caller's registers.
/// Handlers take it as their first argument.
pub struct Call<'a> {
    process: &'a mut Process,
    frame: &'a Frame,
}

impl Call<'_> {
    /// The registers the program made the call with.
    pub fn frame(&self) -> &Frame {
        self.frame
    }
}

impl Deref for Call<'_> {
    type Target = Process;
    fn deref(&self) -> &Process {
        self.process
    }
}

impl DerefMut for Call<'_> {
    fn deref_mut(&mut self) -> &mut Process {
        self.process
    }
}

/// What a handler asks the dispatcher to do besides returning a value.
pub enum Outcome {
    /// Return this to the program.
    Return(Result<u64, Errno>),
    /// Return this to the program; EPIPE without SIGPIPE (MSG_NOSIGNAL).
    Quiet(Result<u64, Errno>),
    /// Block the thread (the process lock released meanwhile) until `wait`
    /// happens or `deadline` (monotonic ns) passes; then return the
    /// matching result, or re-run the call when it is `None`.
    Block {
        /// What to wait for.
        wait: Wait,
        /// When to give up.
        deadline: Option<u64>,
        /// Result when woken by the event (None: re-run the call).
        on_event: Option<Result<u64, Errno>>,
        /// Result at the deadline (None: re-run the call).
        on_timeout: Option<Result<u64, Errno>>,
        /// What a signal that interrupts the wait makes of the call.
        on_signal: OnSignal,
    },
    /// End the calling thread (exit); the program when it is the last.
    ThreadExit(u8),
    /// End the program with this status (exit_group).
    Exit(u8),
    /// End the program, killed by this signal.
    Kill(u8),
}

/// How a blocked system call ends when a signal interrupts it.
#[derive(Clone, Copy, Debug)]
pub enum OnSignal {
    /// EINTR after a handler without SA_RESTART; otherwise the call is
    /// executed again (Linux's ERESTARTSYS).
    Restart,
    /// EINTR.
    Eintr,
    /// EINTR, and the time left until `deadline` written to the timespec
    /// at `rem` (nanosleep).
    EintrRemaining {
        /// The program's `rem` pointer (null: none).
        rem: crate::mm::uaccess::UserPtr<[u64; 2]>,
        /// The sleep's monotonic deadline.
        deadline: u64,
    },
    /// Run the call again at once (it looks for the signal itself).
    Rerun,
}

impl From<Result<u64, Errno>> for Outcome {
    fn from(r: Result<u64, Errno>) -> Self {
        Outcome::Return(r)
    }
}

/// Whether `number` waits for file descriptors (EINTR on a signal, never
/// restarted).
fn is_poll(number: u64) -> bool {
    matches!(
        number,
        nr::poll
            | nr::ppoll
            | nr::select
            | nr::pselect6
            | nr::epoll_wait
            | nr::epoll_pwait
            | nr::epoll_pwait2
    )
}

/// How the entry stub returns to the program.
#[repr(u64)]
enum Return {
    /// The fast path: RCX and R11 are clobbered, as SYSRET does.
    Fast = 0,
    /// Every register from the frame (rt_sigreturn resumes code that was
    /// interrupted anywhere), through IRETQ.
    Full = 1,
    /// Every register from the frame, without IRETQ (see
    /// `process::returns_without_iret`).
    FullWithoutIret = 2,
}

/// Called by the SYSCALL entry stub (see `arch::x86_64::traps`); the
/// result tells the stub which way to return. The call runs under the
/// kernel lock (see `sched`).
#[no_mangle]
extern "C" fn syscall_dispatch(frame: &mut Frame) -> u64 {
    sched::enter_kernel();
    let way = handle(frame);
    sched::leave_kernel();
    way
}

/// Rewrites the SYSCALL at `site` that `frame` trapped through, with the
/// process's other threads stopped (later, if one runs on another CPU),
/// and moves every thread whose saved RIP was among the replaced bytes
/// into the trampoline — this one too, when its SYSCALL moved: it comes
/// back through the trampoline's copy of what followed. The scheduler's
/// lock is never taken under the process's.
fn rewrite_trapping_site(frame: &mut Frame, site: u64, number: u64) {
    use crate::syscall::rewrite;
    let pid = sched::current_pid();
    if !sched::others_stopped(pid) {
        rewrite::retry_later(site);
        return;
    }
    let moved = KERNEL
        .process
        .lock()
        .as_mut()
        .and_then(|p| rewrite::rewrite_site(p, site, number));
    if let Some(moved) = moved {
        sched::relocate_others(pid, |rip| moved.relocate(rip));
        if let Some(to) = moved.relocate(frame.rip) {
            frame.rcx = to;
            frame.rip = to;
        }
    }
}

/// Handles one system call; returns which way to go back.
fn handle(frame: &mut Frame) -> u64 {
    let number = frame.rax;
    let way = if number == nr::rt_sigreturn {
        if KERNEL.process.lock().as_ref().is_some_and(|p| p.trace) {
            crate::kprintln!("rt_sigreturn() = ?");
        }
        signals::sigreturn(frame);
        signals::deliver(frame, None);
        if crate::process::returns_without_iret(frame) {
            Return::FullWithoutIret
        } else {
            Return::Full
        }
    } else {
        if frame.vector == crate::arch::VECTOR_SYSCALL {
            // A trapping SYSCALL: make its next executions cheap if we can.
            let site = frame.rcx.wrapping_sub(2);
            if crate::syscall::rewrite::count_trap(site) {
                rewrite_trapping_site(frame, site, number);
            }
        }
        let regs = [
            frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8, frame.r9,
        ];
        let result = run(frame, number, regs);
        sched::with_current(|t| t.restart_deadline = None);
        if let Some((entry, sp)) = task::take_exec() {
            return start_new_image(frame, entry, sp);
        }
        sched::yield_if_requested();
        frame.rax = match result {
            Ok(v) => v,
            Err(Errno::Restart) => Errno::Intr.as_return(),
            Err(e) => e.as_return(),
        };
        // Look at timers that fired meanwhile (and let others run if the
        // slice is over) before going back to the program.
        if crate::drivers::pending() {
            crate::drivers::service();
        }
        if sched::timer_pending() {
            sched::check_timers();
        }
        let end = SyscallEnd {
            number,
            restartable: result == Err(Errno::Restart),
        };
        signals::deliver(frame, Some(end));
        Return::Fast
    };
    // The fast return path writes RFLAGS and RIP just below the red zone.
    let mut guard = KERNEL.process.lock();
    let Some(p) = guard.as_mut() else {
        return way as u64;
    };
    if p.mem
        .prepare(frame.rsp.wrapping_sub(144), 16, true)
        .is_err()
    {
        drop(guard);
        crate::kill_program(
            sig::SIGSEGV,
            Some(format_args!(
                "system call return with an invalid stack pointer {:#x}",
                frame.rsp
            )),
        );
    }
    way as u64
}

/// Returns from execve into the new program: every register zero but the
/// entry point and stack pointer, interrupts on, FPU control state fresh,
/// no TLS base — as Linux's start_thread leaves them.
fn start_new_image(frame: &mut Frame, entry: u64, sp: u64) -> u64 {
    frame.xmm = [0; 16];
    for r in [
        &mut frame.r15,
        &mut frame.r14,
        &mut frame.r13,
        &mut frame.r12,
        &mut frame.r11,
        &mut frame.r10,
        &mut frame.r9,
        &mut frame.r8,
        &mut frame.rbp,
        &mut frame.rdi,
        &mut frame.rsi,
        &mut frame.rdx,
        &mut frame.rcx,
        &mut frame.rbx,
        &mut frame.rax,
    ] {
        *r = 0;
    }
    frame.rip = entry;
    frame.rsp = sp;
    frame.rflags = 0x202;
    crate::arch::reset_fpu_control();
    crate::arch::set_fs_base(0);
    Return::Full as u64
}

/// Runs one system call to completion: blocking (with the process lock
/// released) and re-running it as its handler asks.
fn run(frame: &Frame, number: u64, regs: [u64; 6]) -> Result<u64, Errno> {
    loop {
        let mut guard = KERNEL.process.lock();
        let Some(p) = guard.as_mut() else {
            panic!("system call {number} with no program running");
        };
        let call_text = if p.trace {
            Some(trace::format_call(p, number, &regs))
        } else {
            None
        };
        let mut call = Call { process: p, frame };
        // What a wait for I/O must not have missed.
        let io_seen = sched::io_generation();
        let outcome = table::dispatch(&mut call, number, regs);
        let outcome = match outcome {
            // Writing to a pipe nobody reads raises SIGPIPE, as on Linux.
            Outcome::Return(Err(Errno::Pipe)) => {
                let info = SigInfo::kernel(sig::SIGPIPE);
                match signals::send(p, Some(sched::current_tid()), info) {
                    Ok(Some(signo)) => Outcome::Kill(signo),
                    _ => Outcome::Return(Err(Errno::Pipe)),
                }
            }
            // Would block: wait for any I/O object to change, then re-run.
            Outcome::Return(Err(Errno::Restart)) => {
                let deadline = sched::with_current(|t| t.restart_deadline);
                // poll and friends, and waits with a timeout, fail with
                // EINTR; plain reads and writes may be restarted.
                let on_signal = if deadline.is_some() || is_poll(number) {
                    OnSignal::Eintr
                } else {
                    OnSignal::Restart
                };
                Outcome::Block {
                    wait: Wait::Io,
                    deadline,
                    on_event: None,
                    on_timeout: None,
                    on_signal,
                }
            }
            other => other,
        };
        match outcome {
            Outcome::Return(result) | Outcome::Quiet(result) => {
                if let Some(text) = call_text {
                    trace::print_result(&text, number, result);
                }
                return result;
            }
            Outcome::Block {
                wait,
                deadline,
                on_event,
                on_timeout,
                on_signal,
            } => {
                drop(guard);
                let blocked = match wait {
                    Wait::Io => sched::block_io(io_seen, deadline),
                    other => sched::block(other, deadline),
                };
                let woken = match blocked {
                    Ok(w) => w,
                    Err(_) => {
                        if let Some(text) = call_text {
                            trace::print_unfinished(&text);
                        }
                        crate::deadlock();
                    }
                };
                let done = match (woken, on_signal) {
                    (Woken::Event, _) => on_event,
                    (Woken::Timeout, _) => on_timeout,
                    (Woken::Signal, OnSignal::Rerun) => None,
                    (Woken::Signal, OnSignal::Restart) => Some(Err(Errno::Restart)),
                    (Woken::Signal, OnSignal::Eintr) => Some(Err(Errno::Intr)),
                    (Woken::Signal, OnSignal::EintrRemaining { rem, deadline }) => {
                        if !rem.is_null() {
                            let left = deadline.saturating_sub(crate::time::monotonic_ns());
                            let mut guard = KERNEL.process.lock();
                            if let Some(p) = guard.as_mut() {
                                let _ = p.mem.write(rem, time::timespec(left));
                            }
                        }
                        Some(Err(Errno::Intr))
                    }
                };
                match done {
                    Some(result) => {
                        if let Some(text) = call_text {
                            trace::print_result(&text, number, result);
                        }
                        return result;
                    }
                    None => continue, // re-run the call
                }
            }
            Outcome::ThreadExit(status) => {
                if let Some(text) = call_text {
                    trace::print_unfinished(&text);
                }
                drop(guard);
                thread::exit_thread();
                crate::exit_program(status);
            }
            Outcome::Exit(status) => {
                if let Some(text) = call_text {
                    trace::print_unfinished(&text);
                }
                drop(guard);
                crate::exit_program(status);
            }
            Outcome::Kill(signal) => {
                if let Some(text) = call_text {
                    trace::print_unfinished(&text);
                }
                drop(guard);
                crate::kill_program(signal, None);
            }
        }
    }
}
