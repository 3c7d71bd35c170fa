//! `--timeout`: a SIGALRM timer interrupts KVM_RUN (it returns EINTR) and
//! the run loop sees the flag and stops the guest. The timer re-fires every
//! 50 ms after the deadline, so a signal that lands while the VMM handles
//! an exit (instead of inside KVM_RUN) is followed by another.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static EXPIRED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_alarm(_signal: libc::c_int) {
    EXPIRED.store(true, Ordering::SeqCst);
}

/// Whether the deadline has passed.
pub fn expired() -> bool {
    EXPIRED.load(Ordering::SeqCst)
}

/// Arms the timer.
///
/// # Errors
/// When the signal handler or the timer cannot be installed.
pub fn arm(after: Duration) -> std::io::Result<()> {
    EXPIRED.store(false, Ordering::SeqCst);
    // SAFETY: `sigaction` is plain data; zeroed is a valid empty value. The
    // handler only stores to an atomic, which is async-signal-safe. No
    // SA_RESTART, so KVM_RUN returns EINTR.
    let rc = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_alarm as *const () as usize;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGALRM, &action, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let tv = |d: Duration| libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    };
    let timer = libc::itimerval {
        it_value: tv(after.max(Duration::from_micros(1))),
        it_interval: tv(Duration::from_millis(50)),
    };
    // SAFETY: `timer` is a valid itimerval; the old value is not wanted.
    if unsafe { libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Stops the timer.
pub fn disarm() {
    let zero = libc::itimerval {
        it_value: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
    };
    // SAFETY: a zero itimerval disarms the timer.
    unsafe { libc::setitimer(libc::ITIMER_REAL, &zero, std::ptr::null_mut()) };
}
