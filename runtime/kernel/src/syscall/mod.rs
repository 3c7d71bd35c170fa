//! The Linux system-call layer.
//!
//! `syscall_dispatch` is called by the SYSCALL entry stub with the
//! program's registers. It decodes the number and arguments (Linux x86-64
//! ABI: number in RAX, arguments in RDI, RSI, RDX, R10, R8, R9), runs the
//! handler, and writes the result (or `-errno`) back to RAX. Handlers live
//! in one file per area and return `Result<u64, Errno>`; unknown numbers
//! get `-ENOSYS` and a trace line naming them.

mod fs;
mod fs_ipc;
mod futex;
mod mm;
mod poll;
pub mod rewrite;
mod signals;
mod task;
mod time;
mod trace;

use kiln_kernel::errno::Errno;
use kiln_kernel::syscall::names::nr;

use crate::arch::Frame;
use crate::process::{Process, PROCESS};
use crate::sched::{self, Wait, Woken};
use crate::signal::{self, sig, SyscallEnd};
use kiln_kernel::signal::SigInfo;

/// `AT_FDCWD` as a register value.
const AT_FDCWD: u64 = -100i64 as u64;

/// The six argument registers, in ABI order.
#[derive(Clone, Copy, Debug)]
pub struct Args(pub [u64; 6]);

/// What a handler asks the dispatcher to do besides returning a value.
pub enum Outcome {
    /// Return this to the program.
    Return(Result<u64, Errno>),
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
        /// The program's `rem` pointer (0: none).
        rem: u64,
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

fn call(p: &mut Process, number: u64, a: Args, user_sp: u64) -> Outcome {
    let [a0, a1, a2, a3, a4, a5] = a.0;
    match number {
        nr::READ => fs::read(p, a0, a1, a2).into(),
        nr::WRITE => fs::write(p, a0, a1, a2).into(),
        nr::PREAD64 => fs::pread64(p, a0, a1, a2, a3).into(),
        nr::PWRITE64 => fs::pwrite64(p, a0, a1, a2, a3).into(),
        nr::WRITEV => fs::writev(p, a0, a1, a2).into(),
        nr::READV => fs::readv(p, a0, a1, a2).into(),
        nr::OPEN => fs::openat(p, AT_FDCWD, a0, a1, a2).into(),
        nr::CREAT => fs::openat(p, AT_FDCWD, a0, 0o1101, a1).into(), // O_CREAT|O_WRONLY|O_TRUNC
        nr::OPENAT => fs::openat(p, a0, a1, a2, a3).into(),
        nr::CLOSE => fs::close(p, a0).into(),
        nr::LSEEK => fs::lseek(p, a0, a1, a2).into(),
        nr::IOCTL => fs::ioctl(p, a0, a1).into(),
        nr::FSTAT => fs::fstat(p, a0, a1).into(),
        nr::STAT => fs::stat(p, a0, a1, true).into(),
        nr::LSTAT => fs::stat(p, a0, a1, false).into(),
        nr::NEWFSTATAT => fs::newfstatat(p, a0, a1, a2, a3).into(),
        nr::STATX => fs::statx(p, a0, a1, a2, a4).into(),
        nr::STATFS => fs::statfs(p, a1).into(),
        nr::FSTATFS => fs::statfs(p, a1).into(),
        nr::ACCESS => fs::faccessat(p, AT_FDCWD, a0, a1).into(),
        nr::FACCESSAT | nr::FACCESSAT2 => fs::faccessat(p, a0, a1, a2).into(),
        nr::GETDENTS64 => fs::getdents64(p, a0, a1, a2).into(),
        // setxattr, lsetxattr, fsetxattr, getxattr, …: four ops × three targets.
        nr::SETXATTR..=nr::FREMOVEXATTR => {
            use fs::{XattrOp as Op, XattrTarget as T};
            let target = match (number - nr::SETXATTR) % 3 {
                0 => T::Path {
                    path: a0,
                    follow: true,
                },
                1 => T::Path {
                    path: a0,
                    follow: false,
                },
                _ => T::Fd(a0),
            };
            let op = match (number - nr::SETXATTR) / 3 {
                0 => Op::Set,
                1 => Op::Get,
                2 => Op::List,
                _ => Op::Remove,
            };
            fs::xattr(p, target, op).into()
        }
        nr::POLL => poll::poll(p, a0, a1, a2 as i32 as i64).into(),
        nr::PPOLL => poll::ppoll(p, a0, a1, a2, a3, a4).into(),
        nr::SELECT => poll::select(p, a0, a1, a2, a3, a4).into(),
        nr::PSELECT6 => poll::pselect6(p, a0, a1, a2, a3, a4, a5).into(),
        nr::EPOLL_CREATE if (a0 as i32) <= 0 => Err(Errno::Inval).into(),
        nr::EPOLL_CREATE => poll::epoll_create1(p, 0).into(),
        nr::EPOLL_CREATE1 => poll::epoll_create1(p, a0).into(),
        nr::EPOLL_CTL => poll::epoll_ctl(p, a0, a1, a2, a3).into(),
        nr::EPOLL_WAIT => poll::epoll_wait(p, a0, a1, a2, poll::ms_timeout(a3), (0, 0)).into(),
        nr::EPOLL_PWAIT => poll::epoll_wait(p, a0, a1, a2, poll::ms_timeout(a3), (a4, a5)).into(),
        nr::EPOLL_PWAIT2 => match poll::timespec_timeout(p, a3) {
            Ok(t) => poll::epoll_wait(p, a0, a1, a2, t, (a4, a5)).into(),
            Err(e) => Err(e).into(),
        },
        nr::READLINK => fs::readlinkat(p, AT_FDCWD, a0, a1, a2).into(),
        nr::READLINKAT => fs::readlinkat(p, a0, a1, a2, a3).into(),
        nr::FCNTL => fs::fcntl(p, a0, a1, a2).into(),
        nr::DUP => fs::dup(p, a0).into(),
        nr::DUP2 => fs::dup2(p, a0, a1).into(),
        nr::DUP3 => fs::dup3(p, a0, a1, a2).into(),
        nr::GETCWD => fs::getcwd(p, a0, a1).into(),
        nr::CHDIR => fs::chdir(p, a0).into(),
        nr::FCHDIR => fs::fchdir(p, a0).into(),
        nr::MKDIR => fs::mkdirat(p, AT_FDCWD, a0, a1).into(),
        nr::MKDIRAT => fs::mkdirat(p, a0, a1, a2).into(),
        nr::UNLINK => fs::unlinkat(p, AT_FDCWD, a0, 0).into(),
        nr::RMDIR => fs::unlinkat(p, AT_FDCWD, a0, 0x200).into(),
        nr::UNLINKAT => fs::unlinkat(p, a0, a1, a2).into(),
        nr::RENAME => fs::renameat2(p, AT_FDCWD, a0, AT_FDCWD, a1, 0).into(),
        nr::RENAMEAT => fs::renameat2(p, a0, a1, a2, a3, 0).into(),
        nr::RENAMEAT2 => fs::renameat2(p, a0, a1, a2, a3, a4).into(),
        nr::SYMLINK => fs::symlinkat(p, a0, AT_FDCWD, a1).into(),
        nr::SYMLINKAT => fs::symlinkat(p, a0, a1, a2).into(),
        nr::LINK => fs::linkat(p, AT_FDCWD, a0, AT_FDCWD, a1, 0).into(),
        nr::LINKAT => fs::linkat(p, a0, a1, a2, a3, a4).into(),
        nr::CHMOD => fs::fchmodat(p, AT_FDCWD, a0, a1).into(),
        nr::FCHMODAT => fs::fchmodat(p, a0, a1, a2).into(),
        nr::FCHMOD => fs::fchmod(p, a0).into(),
        nr::CHOWN | nr::LCHOWN => fs::chown(p, Some((AT_FDCWD, a0)), None).into(),
        nr::FCHOWNAT => fs::chown(p, Some((a0, a1)), None).into(),
        nr::FCHOWN => fs::chown(p, None, Some(a0)).into(),
        nr::UTIMENSAT => fs::utimensat(p, a0, a1, a2, a3).into(),
        nr::FTRUNCATE => fs::ftruncate(p, a0, a1).into(),
        nr::TRUNCATE => fs::truncate(p, a0, a1).into(),
        nr::UMASK => fs::umask(p, a0).into(),
        nr::FSYNC | nr::FDATASYNC | nr::SYNCFS => p.fds.get(a0).map(|_| 0).into(),
        nr::SYNC => Ok(0).into(),
        nr::FADVISE64 => p.fds.get(a0).map(|_| 0).into(),
        nr::FLOCK => p.fds.get(a0).map(|_| 0).into(),
        nr::FALLOCATE => Err(Errno::Notsup).into(),
        nr::PIPE => fs_ipc::pipe2(p, a0, 0).into(),
        nr::PIPE2 => fs_ipc::pipe2(p, a0, a1).into(),
        nr::EVENTFD => fs_ipc::eventfd2(p, a0, 0).into(),
        nr::EVENTFD2 => fs_ipc::eventfd2(p, a0, a1).into(),
        nr::BRK => mm::brk(p, a0).into(),
        nr::MMAP => mm::mmap(p, a0, a1, a2, a3, a4, a5).into(),
        nr::MUNMAP => mm::munmap(p, a0, a1).into(),
        nr::MREMAP => mm::mremap(p, a0, a1, a2, a3, a4).into(),
        nr::MPROTECT => mm::mprotect(p, a0, a1, a2).into(),
        nr::MADVISE => mm::madvise(p, a0, a1, a2).into(),
        nr::EXIT => Outcome::ThreadExit(a0 as u8),
        nr::EXIT_GROUP => Outcome::Exit(a0 as u8),
        nr::FUTEX => futex::futex(p, a0, a1, a2, a3, a4, a5),
        nr::FORK | nr::VFORK | nr::EXECVE | nr::EXECVEAT => Err(Errno::Nosys).into(),
        nr::NANOSLEEP => time::nanosleep(p, 1, 0, a0, a1),
        nr::CLOCK_NANOSLEEP => time::nanosleep(p, a0, a1, a2, a3),
        nr::ARCH_PRCTL => task::arch_prctl(p, a0, a1).into(),
        nr::SET_TID_ADDRESS => task::set_tid_address(p, a0).into(),
        nr::SET_ROBUST_LIST => task::set_robust_list(a1).into(),
        nr::GET_ROBUST_LIST => Err(Errno::Nosys).into(),
        nr::GETPID => Ok(1).into(),
        nr::GETTID => Ok(u64::from(sched::current_tid())).into(),
        nr::GETPPID => Ok(0).into(),
        // Process 1 leads its own process group and session.
        nr::GETPGRP | nr::GETSID => Ok(1).into(),
        nr::GETPGID => match a0 {
            0 | 1 => Ok(1),
            _ => Err(Errno::Srch),
        }
        .into(),
        nr::SETSID => Err(Errno::Perm).into(),
        nr::SETPGID => match (a0, a1) {
            (0 | 1, 0 | 1) => Ok(0),
            _ => Err(Errno::Srch),
        }
        .into(),
        nr::GETUID | nr::GETEUID | nr::GETGID | nr::GETEGID => Ok(0).into(),
        // The program runs as root with no supplementary groups.
        nr::GETGROUPS => Ok(0).into(),
        nr::GETRESUID | nr::GETRESGID => task::getres_ids(p, [a0, a1, a2]).into(),
        nr::PRLIMIT64 => task::prlimit64(p, a0, a1, a2, a3).into(),
        nr::GETRLIMIT => task::prlimit64(p, 0, a0, 0, a1).into(),
        nr::SETRLIMIT => task::prlimit64(p, 0, a0, a1, 0).into(),
        nr::SYSINFO => task::sysinfo(p, a0).into(),
        nr::PRCTL => task::prctl(p, a0, a1).into(),
        // kiln runs one program: there are never children to wait for.
        nr::WAIT4 | nr::WAITID => Err(Errno::Child).into(),
        nr::SENDFILE => fs::sendfile(p, a0, a1, a2, a3).into(),
        nr::UNAME => task::uname(p, a0).into(),
        nr::GETRANDOM => task::getrandom(p, a0, a1, a2).into(),
        nr::SCHED_GETAFFINITY => task::sched_getaffinity(p, a1, a2).into(),
        nr::SCHED_YIELD => {
            sched::yield_now_later();
            Ok(0).into()
        }
        nr::RT_SIGACTION => signals::rt_sigaction(p, a0, a1, a2, a3).into(),
        nr::RT_SIGPROCMASK => signals::rt_sigprocmask(p, a0, a1, a2, a3).into(),
        nr::RT_SIGPENDING => signals::rt_sigpending(p, a0, a1).into(),
        nr::RT_SIGSUSPEND => signals::rt_sigsuspend(p, a0, a1),
        nr::PAUSE => signals::pause(),
        nr::RT_SIGTIMEDWAIT => signals::rt_sigtimedwait(p, a0, a1, a2, a3),
        nr::SIGALTSTACK => signal::sigaltstack(p, a0, a1, user_sp).into(),
        nr::KILL => signals::kill(p, a0, None, a1),
        nr::TGKILL => signals::kill(p, a0, Some(a1), a2),
        nr::TKILL => signals::kill(p, 1, Some(a0), a1),
        nr::RT_SIGQUEUEINFO => signals::sigqueueinfo(p, a0, None, a1, a2),
        nr::RT_TGSIGQUEUEINFO => signals::sigqueueinfo(p, a0, Some(a1), a2, a3),
        nr::RESTART_SYSCALL => Err(Errno::Intr).into(),
        nr::ALARM => time::alarm(a0).into(),
        nr::SETITIMER => time::setitimer(p, a0, a1, a2).into(),
        nr::GETITIMER => time::getitimer(p, a0, a1).into(),
        nr::TIMER_CREATE => time::timer_create(p, a0, a1, a2).into(),
        nr::TIMER_SETTIME => time::timer_settime(p, a0, a1, a2, a3).into(),
        nr::TIMER_GETTIME => time::timer_gettime(p, a0, a1).into(),
        nr::TIMER_GETOVERRUN => time::timer_getoverrun(a0).into(),
        nr::TIMER_DELETE => time::timer_delete(a0).into(),
        nr::CLOCK_GETTIME => time::clock_gettime(p, a0, a1).into(),
        nr::CLOCK_GETRES => time::clock_getres(p, a0, a1).into(),
        nr::GETTIMEOFDAY => time::gettimeofday(p, a0).into(),
        nr::TIME => time::time(p, a0).into(),
        _ => Outcome::Return(Err(Errno::Nosys)),
    }
}

/// Whether `number` waits for file descriptors (EINTR on a signal, never
/// restarted).
fn is_poll(number: u64) -> bool {
    matches!(
        number,
        nr::POLL
            | nr::PPOLL
            | nr::SELECT
            | nr::PSELECT6
            | nr::EPOLL_WAIT
            | nr::EPOLL_PWAIT
            | nr::EPOLL_PWAIT2
    )
}

/// How the entry stub returns to the program.
#[repr(u64)]
enum Return {
    /// The fast path: RCX and R11 are clobbered, as SYSRET does.
    Fast = 0,
    /// Every register from the frame (rt_sigreturn resumes code that was
    /// interrupted anywhere).
    Full = 1,
}

/// Called by the SYSCALL entry stub (see `arch::x86_64::traps`); the
/// result tells the stub which way to return.
#[no_mangle]
extern "C" fn syscall_dispatch(frame: &mut Frame) -> u64 {
    let number = frame.rax;
    let way = if number == nr::RT_SIGRETURN {
        if PROCESS.lock().as_ref().is_some_and(|p| p.trace) {
            crate::kprintln!("rt_sigreturn() = ?");
        }
        signal::sigreturn(frame);
        signal::deliver(frame, None);
        Return::Full
    } else {
        if frame.vector == crate::arch::VECTOR_SYSCALL {
            // A trapping SYSCALL: make its next executions cheap if we can.
            if let Some(p) = PROCESS.lock().as_mut() {
                crate::syscall::rewrite::consider(p, frame.rcx.wrapping_sub(2), number);
            }
        }
        let args = Args([
            frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8, frame.r9,
        ]);
        let result = run(frame, number, args);
        sched::with_current(|t| t.restart_deadline = None);
        sched::yield_if_requested();
        frame.rax = match result {
            Ok(v) => v,
            Err(Errno::Restart) => Errno::Intr.as_return(),
            Err(e) => e.as_return(),
        };
        // Look at timers that fired meanwhile (and let others run if the
        // slice is over) before going back to the program.
        if sched::timer_pending() {
            sched::check_timers();
        }
        let end = SyscallEnd {
            number,
            restartable: result == Err(Errno::Restart),
        };
        signal::deliver(frame, Some(end));
        Return::Fast
    };
    // The fast return path writes RFLAGS and RIP just below the red zone.
    let mut guard = PROCESS.lock();
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

/// Runs one system call to completion: blocking (with the process lock
/// released) and re-running it as its handler asks.
fn run(frame: &Frame, number: u64, args: Args) -> Result<u64, Errno> {
    loop {
        let mut guard = PROCESS.lock();
        let Some(p) = guard.as_mut() else {
            panic!("system call {number} with no program running");
        };
        let call_text = if p.trace {
            Some(trace::format_call(p, number, &args))
        } else {
            None
        };
        let outcome = match number {
            nr::CLONE | nr::CLONE3 => task::clone(p, frame, number, args),
            _ => call(p, number, args, frame.rsp),
        };
        let outcome = match outcome {
            // Writing to a pipe nobody reads raises SIGPIPE, as on Linux.
            Outcome::Return(Err(Errno::Pipe)) => {
                let info = SigInfo::kernel(sig::SIGPIPE);
                match signal::send(p, Some(sched::current_tid()), info) {
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
            Outcome::Return(result) => {
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
                let woken = match sched::block(wait, deadline) {
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
                        if rem != 0 {
                            let left = deadline.saturating_sub(crate::time::monotonic_ns());
                            let mut guard = PROCESS.lock();
                            if let Some(p) = guard.as_mut() {
                                let _ = time::write_timespec(p, rem, left);
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
                task::exit_thread();
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
