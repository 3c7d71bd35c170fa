//! The vDSO: clock_gettime, gettimeofday, time, clock_getres and getcpu
//! answered by plain calls into the kernel, without entering it through a
//! system call. `kiln_kernel::time::vdso` builds the ELF image that points glibc,
//! musl and Go at these functions; exec maps it (`[vdso]`) and passes its
//! address in AT_SYSINFO_EHDR.
//!
//! The functions run on the program's stack at the kernel's privilege
//! level, like any function the program calls: they only read the clock
//! (fixed at boot) and the TSC, and take no lock. A page fault on the
//! program's buffer is handled as if the program had touched it. Clocks
//! they do not know fall back to the system call.

use core::arch::asm;

use crate::syscall::nr;

use crate::time::{monotonic_ns, realtime_ns};

/// Whether programs get a vDSO (`kiln.vdso=0` leaves it out).
pub fn enabled() -> bool {
    crate::state::options().vdso
}

/// The symbols the image exports, at their kernel addresses.
pub fn symbols() -> [(&'static str, u64); 5] {
    [
        (
            "__vdso_clock_gettime",
            vdso_clock_gettime as *const () as u64,
        ),
        ("__vdso_gettimeofday", vdso_gettimeofday as *const () as u64),
        ("__vdso_time", vdso_time as *const () as u64),
        ("__vdso_clock_getres", vdso_clock_getres as *const () as u64),
        ("__vdso_getcpu", vdso_getcpu as *const () as u64),
    ]
}

/// A system call made from vDSO code (it traps; only for what the vDSO
/// cannot answer itself).
fn syscall2(number: u64, a0: u64, a1: u64) -> i64 {
    let ret: i64;
    // SAFETY: a Linux system call with two arguments; the kernel preserves
    // every register but RAX, RCX and R11 (declared clobbered).
    unsafe {
        asm!("syscall", inlateout("rax") number as i64 => ret, in("rdi") a0, in("rsi") a1,
             lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

/// The clock's time in ns, for the clocks that need no process state.
fn clock_ns(clock: i32) -> Option<u64> {
    match clock {
        0 | 5 | 8 | 11 => Some(realtime_ns()), // REALTIME, _COARSE, _ALARM, TAI
        1 | 4 | 6 | 7 | 9 => Some(monotonic_ns()), // MONOTONIC, _RAW, _COARSE, BOOTTIME, _ALARM
        _ => None,
    }
}

/// Stores `value` at the program's address `at`.
///
/// # Safety
/// `at` is a pointer the program passed; a fault on it is the program's
/// (demand paging, or SIGSEGV), exactly as if it had stored there itself.
unsafe fn store<T>(at: *mut T, value: T) {
    // SAFETY: see above.
    unsafe { core::ptr::write_volatile(at, value) }
}

extern "C" fn vdso_clock_gettime(clock: i32, ts: *mut [i64; 2]) -> i64 {
    let Some(ns) = clock_ns(clock) else {
        return syscall2(nr::clock_gettime, clock as u64, ts as u64);
    };
    let value = [(ns / 1_000_000_000) as i64, (ns % 1_000_000_000) as i64];
    // SAFETY: the program's own timespec pointer (see `store`).
    unsafe { store(ts, value) };
    0
}

extern "C" fn vdso_clock_getres(clock: i32, res: *mut [i64; 2]) -> i64 {
    if clock_ns(clock).is_none() {
        return syscall2(nr::clock_getres, clock as u64, res as u64);
    }
    if !res.is_null() {
        // SAFETY: as in `vdso_clock_gettime`.
        unsafe { store(res, [0, 1]) };
    }
    0
}

extern "C" fn vdso_gettimeofday(tv: *mut [i64; 2], tz: *mut [i32; 2]) -> i64 {
    if !tv.is_null() {
        let ns = realtime_ns();
        // SAFETY: as in `vdso_clock_gettime`.
        unsafe {
            store(
                tv,
                [
                    (ns / 1_000_000_000) as i64,
                    ((ns % 1_000_000_000) / 1000) as i64,
                ],
            )
        };
    }
    if !tz.is_null() {
        // SAFETY: as above; UTC, no daylight saving.
        unsafe { store(tz, [0, 0]) };
    }
    0
}

extern "C" fn vdso_time(t: *mut i64) -> i64 {
    let secs = (realtime_ns() / 1_000_000_000) as i64;
    if !t.is_null() {
        // SAFETY: as in `vdso_clock_gettime`.
        unsafe { store(t, secs) };
    }
    secs
}

extern "C" fn vdso_getcpu(cpu: *mut u32, node: *mut u32) -> i64 {
    for p in [cpu, node] {
        if !p.is_null() {
            // SAFETY: as in `vdso_clock_gettime`; one CPU, one node.
            unsafe { store(p, 0) };
        }
    }
    0
}
