//! Stopping the vCPU from another thread: the devices thread, when a
//! host-side failure ends it, sets a flag and sends SIGUSR1 to the vCPU
//! thread, whose handler (installed without SA_RESTART) makes KVM_RUN
//! return EINTR; the run loop sees the flag. The signal is repeated until
//! the vCPU thread takes note, because one that lands while the VMM handles
//! an exit (not inside KVM_RUN) does not interrupt anything.
//!
//! Helper threads block SIGUSR1 and SIGALRM (`--timeout`), so both always
//! reach the vCPU thread.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

static REQUESTED: AtomicBool = AtomicBool::new(false);
static SEEN: AtomicBool = AtomicBool::new(false);
static VCPU_THREAD: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_stop(_signal: libc::c_int) {}

/// Makes the calling thread the one [`request`] interrupts.
///
/// # Errors
/// When the signal handler cannot be installed.
pub fn prepare() -> std::io::Result<()> {
    REQUESTED.store(false, Ordering::SeqCst);
    SEEN.store(false, Ordering::SeqCst);
    // SAFETY: pthread_self has no preconditions.
    VCPU_THREAD.store(unsafe { libc::pthread_self() } as u64, Ordering::SeqCst);
    // SAFETY: `sigaction` is plain data (zeroed is a valid empty value); the
    // handler does nothing, which is async-signal-safe. No SA_RESTART.
    let rc = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_stop as *const () as usize;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether a stop was requested; the vCPU thread calls it before each
/// KVM_RUN (and so takes note of the request).
pub fn requested() -> bool {
    let r = REQUESTED.load(Ordering::SeqCst);
    if r {
        SEEN.store(true, Ordering::SeqCst);
    }
    r
}

/// Asks the vCPU thread to stop, and interrupts it until it has noticed
/// (for at most a second).
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
    let thread = VCPU_THREAD.load(Ordering::SeqCst) as libc::pthread_t;
    let start = Instant::now();
    while !SEEN.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(1) {
        // SAFETY: `thread` is the vCPU thread recorded by `prepare`, alive
        // until the VM ends (which is what this waits for).
        unsafe { libc::pthread_kill(thread, libc::SIGUSR1) };
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Blocks the vCPU's interrupting signals in the calling (helper) thread.
pub fn block_vcpu_signals() {
    // SAFETY: `set` is initialised by sigemptyset before use; changing the
    // calling thread's mask has no other preconditions.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::sigaddset(&mut set, libc::SIGALRM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}
