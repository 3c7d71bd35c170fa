//! `--trace-syscalls`: one strace-style line per system call on stderr,
//! `name(arguments) = result`.

use alloc::string::String;
use core::fmt::Write;

use kiln_kernel::errno::Errno;
use kiln_kernel::syscall::names::{self, nr};

use super::Args;
use crate::process::Process;

/// How an argument is shown.
#[derive(Clone, Copy)]
enum Arg {
    /// Signed decimal.
    Int,
    /// Hexadecimal (addresses, flags).
    Hex,
    /// A file descriptor (`AT_FDCWD` by name).
    Fd,
    /// A NUL-terminated string in program memory.
    Str,
    /// A buffer whose length is argument `n`, shown as a quoted string.
    Buf(usize),
}

use Arg::{Buf, Fd, Hex, Int, Str};

fn signature(number: u64) -> &'static [Arg] {
    match number {
        nr::READ => &[Fd, Hex, Int],
        nr::WRITE => &[Fd, Buf(2), Int],
        nr::READV | nr::WRITEV => &[Fd, Hex, Int],
        nr::OPEN => &[Str, Hex, Hex],
        nr::OPENAT => &[Fd, Str, Hex, Hex],
        nr::CLOSE => &[Fd],
        nr::LSEEK => &[Fd, Int, Int],
        nr::IOCTL => &[Fd, Hex, Hex],
        nr::FSTAT => &[Fd, Hex],
        nr::STAT | nr::LSTAT => &[Str, Hex],
        nr::STATX => &[Fd, Str, Hex, Hex, Hex],
        nr::ACCESS => &[Str, Hex],
        nr::FACCESSAT | nr::FACCESSAT2 => &[Fd, Str, Hex, Hex],
        nr::PREAD64 => &[Fd, Hex, Int, Int],
        nr::PWRITE64 => &[Fd, Hex, Int, Int],
        nr::GETDENTS64 => &[Fd, Hex, Int],
        nr::DUP => &[Fd],
        nr::DUP2 => &[Fd, Fd],
        nr::DUP3 => &[Fd, Fd, Hex],
        nr::GETCWD => &[Hex, Int],
        nr::CHDIR => &[Str],
        nr::FCHDIR => &[Fd],
        nr::NEWFSTATAT => &[Fd, Str, Hex, Hex],
        nr::POLL => &[Hex, Int, Int],
        nr::READLINK => &[Str, Hex, Int],
        nr::READLINKAT => &[Fd, Str, Hex, Int],
        nr::FCNTL => &[Fd, Int, Hex],
        nr::BRK => &[Hex],
        nr::MMAP => &[Hex, Int, Hex, Hex, Fd, Hex],
        nr::MUNMAP => &[Hex, Int],
        nr::MPROTECT | nr::MADVISE => &[Hex, Int, Hex],
        nr::EXIT | nr::EXIT_GROUP => &[Int],
        nr::ARCH_PRCTL => &[Hex, Hex],
        nr::SET_TID_ADDRESS => &[Hex],
        nr::SET_ROBUST_LIST => &[Hex, Int],
        nr::GETPID
        | nr::GETTID
        | nr::GETPPID
        | nr::GETUID
        | nr::GETEUID
        | nr::GETGID
        | nr::GETEGID => &[],
        nr::SCHED_YIELD => &[],
        nr::PRLIMIT64 => &[Int, Int, Hex, Hex],
        nr::GETRLIMIT => &[Int, Hex],
        nr::UNAME => &[Hex],
        nr::GETRANDOM => &[Hex, Int, Hex],
        nr::SCHED_GETAFFINITY => &[Int, Int, Hex],
        nr::RT_SIGACTION => &[Int, Hex, Hex, Int],
        nr::RT_SIGPROCMASK => &[Int, Hex, Hex, Int],
        nr::SIGALTSTACK => &[Hex, Hex],
        nr::KILL | nr::TKILL => &[Int, Int],
        nr::TGKILL => &[Int, Int, Int],
        nr::CLOCK_GETTIME | nr::CLOCK_GETRES => &[Int, Hex],
        nr::GETTIMEOFDAY => &[Hex, Hex],
        nr::TIME => &[Hex],
        _ => &[Hex, Hex, Hex, Hex, Hex, Hex],
    }
}

fn quote(out: &mut String, bytes: &[u8], more: bool) {
    out.push('"');
    for &b in bytes {
        match b {
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            b'\r' => out.push_str("\\r"),
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push('"');
    if more {
        out.push_str("...");
    }
}

const SHOWN_BYTES: u64 = 32;

/// `name(args)` for a call about to run.
pub fn format_call(p: &mut Process, number: u64, args: &Args) -> String {
    let mut out = String::new();
    match names::name(number) {
        Some(name) => out.push_str(name),
        None => {
            let _ = write!(out, "syscall_{number}");
        }
    }
    out.push('(');
    for (i, kind) in signature(number).iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let v = args.0[i];
        match *kind {
            Int => {
                let _ = write!(out, "{}", v as i64);
            }
            Hex => {
                let _ = write!(out, "{v:#x}");
            }
            Fd if v as i32 == -100 => out.push_str("AT_FDCWD"),
            Fd => {
                let _ = write!(out, "{}", v as i32);
            }
            Str => match p.mem.read_cstr(v, 4096) {
                Ok(s) => quote(&mut out, &s, false),
                Err(_) => {
                    let _ = write!(out, "{v:#x}");
                }
            },
            Buf(len_arg) => {
                let len = args.0[len_arg];
                match p.mem.user_bytes(v, len.min(SHOWN_BYTES)) {
                    Ok(s) => quote(&mut out, s, len > SHOWN_BYTES),
                    Err(_) => {
                        let _ = write!(out, "{v:#x}");
                    }
                }
            }
        }
    }
    out.push(')');
    out
}

/// Prints the finished line.
pub fn print_result(call: &str, number: u64, result: Result<u64, Errno>) {
    match result {
        Ok(v) if matches!(number, nr::MMAP | nr::BRK) => crate::kprintln!("{call} = {v:#x}"),
        Ok(v) => crate::kprintln!("{call} = {}", v as i64),
        Err(Errno::Nosys) => {
            let why = match number {
                nr::FORK | nr::VFORK | nr::EXECVE | nr::EXECVEAT => {
                    "kiln runs one program: new processes and exec are not supported yet"
                }
                nr::CLONE | nr::CLONE3 => {
                    "kiln runs one program: clone works for threads (CLONE_VM|CLONE_THREAD) only"
                }
                _ if names::name(number).is_some() => "not supported by kiln yet",
                _ => "no such system call",
            };
            crate::kprintln!("{call} = -1 ENOSYS (Function not implemented: {why})")
        }
        Err(e) => crate::kprintln!("{call} = -1 {} ({})", e.name(), e.description()),
    }
}

/// Prints a call that does not return (exit, a fatal signal).
pub fn print_unfinished(call: &str) {
    crate::kprintln!("{call} = ?");
}
