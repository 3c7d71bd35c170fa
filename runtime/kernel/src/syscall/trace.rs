//! `--trace-syscalls`: one strace-style line per system call on stderr,
//! `name(arguments) = result`.

use alloc::string::String;
use core::fmt::Write;

use kiln_kernel::errno::Errno;

use super::args::Show;
use super::table::{self, nr};
use crate::process::Process;

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

/// `name(args)` for a call about to run, each argument shown as its type
/// in the table says (all six registers in hex for a call kiln does not
/// provide).
pub fn format_call(p: &mut Process, number: u64, regs: &[u64; 6]) -> String {
    const UNKNOWN: &[Show] = &[Show::Hex; 6];
    let mut out = String::new();
    match table::name(number) {
        Some(name) => out.push_str(name),
        None => {
            let _ = write!(out, "syscall_{number}");
        }
    }
    out.push('(');
    for (i, show) in table::shows(number).unwrap_or(UNKNOWN).iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let v = regs[i];
        match *show {
            Show::Int => {
                let _ = write!(out, "{}", v as i64);
            }
            Show::Hex => {
                let _ = write!(out, "{v:#x}");
            }
            Show::Octal => {
                let _ = write!(out, "{v:#o}");
            }
            Show::Fd if v as i32 == -100 => out.push_str("AT_FDCWD"),
            Show::Fd => {
                let _ = write!(out, "{}", v as i32);
            }
            Show::Str => match p.mem.read_cstr(v, 4096) {
                Ok(s) => quote(&mut out, &s, false),
                Err(_) => {
                    let _ = write!(out, "{v:#x}");
                }
            },
            Show::Bytes => {
                let len = regs.get(i + 1).copied().unwrap_or(0);
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
        Ok(v) if matches!(number, nr::mmap | nr::brk) => crate::kprintln!("{call} = {v:#x}"),
        Ok(v) => crate::kprintln!("{call} = {}", v as i64),
        Err(Errno::Nosys) => {
            let why = match number {
                _ if table::name(number).is_some() => "not supported by kiln yet",
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
