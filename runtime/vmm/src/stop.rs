//! Stopping the vCPU from another thread: the devices thread, when a
//! host-side failure ends it, sets a flag and sends SIGUSR1 to the vCPU
//! thread, whose handler (installed without SA_RESTART) makes KVM_RUN
//! return EINTR; the run loop sees the flag. The signal is repeated until
//! the vCPU thread takes note, because one that lands while the VMM handles
//! an exit (not inside KVM_RUN) does not interrupt anything.
//!
//! Helper threads block SIGUSR1 and SIGALRM (`--timeout`), so both always
//! reach the vCPU thread.
//!
//! SIGINT, SIGTERM and SIGHUP stop the VM the same way, as `docker stop`
//! would end a container, so the run ends in order — devices drained,
//! passt and tap gone, socket files removed, timings and statistics
//! reported — with status 128 + the signal. Their handler may run on any
//! thread; it notes the signal and wakes the devices thread through an
//! eventfd, which then asks the vCPU to stop.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

use std::time::{Duration, Instant};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

static REQUESTED: AtomicBool = AtomicBool::new(false);
static SEEN: AtomicBool = AtomicBool::new(false);
static VCPU_THREAD: AtomicU64 = AtomicU64::new(0);
/// Set when one vCPU ended the VM: the others stop at their next exit
/// (`kick` makes that soon).
static VM_ENDED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_signal: libc::c_int) {}

/// The terminating signal received (0: none).
static TERMINATED_BY: AtomicI32 = AtomicI32::new(0);
/// The eventfd the handler signals (-1: none yet). Made once and never
/// closed, so the handler can never write to a descriptor reused for
/// something else.
static TERMINATION_FD: AtomicI32 = AtomicI32::new(-1);
static TERMINATION_EVENT: std::sync::OnceLock<EventFd> = std::sync::OnceLock::new();

extern "C" fn on_termination(signal: libc::c_int) {
    let _ = TERMINATED_BY.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
    let fd = TERMINATION_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: write(2) is async-signal-safe; `fd` is the eventfd the
        // run keeps open while the handler is installed, and `one` is 8
        // valid bytes.
        unsafe { libc::write(fd, std::ptr::addr_of!(one).cast(), 8) };
    }
}

/// Catches SIGINT, SIGTERM and SIGHUP for the rest of the process: each
/// records the signal and signals an eventfd, a copy of which this returns
/// for the devices thread to watch (it then calls [`request`]). Forgets a
/// signal an earlier run in this process received.
///
/// # Errors
/// When the eventfd or a handler cannot be made.
pub fn catch_termination() -> std::io::Result<EventFd> {
    TERMINATED_BY.store(0, Ordering::SeqCst);
    let event = match TERMINATION_EVENT.get() {
        Some(e) => e,
        None => {
            let e = EventFd::new(EFD_NONBLOCK)?;
            TERMINATION_EVENT.get_or_init(|| e)
        }
    };
    let _ = event.read();
    TERMINATION_FD.store(event.as_raw_fd(), Ordering::SeqCst);
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        notify_on(signal, on_termination)?;
    }
    event.try_clone()
}

/// Installs `handler` for `signal` with SA_RESTART (other threads' system
/// calls go on). The handler must only touch atomics and make
/// async-signal-safe calls (write(2) to an eventfd, say).
///
/// # Errors
/// When sigaction refuses.
pub fn notify_on(signal: libc::c_int, handler: extern "C" fn(libc::c_int)) -> std::io::Result<()> {
    // SAFETY: `sigaction` is plain data, fully initialised here; the
    // caller's handler is async-signal-safe (see above).
    let rc = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as *const () as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(signal, &action, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The terminating signal received, if one was.
pub fn terminated_by() -> Option<i32> {
    match TERMINATED_BY.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Makes the calling thread the one [`request`] interrupts.
///
/// # Errors
/// When the signal handler cannot be installed.
pub fn prepare() -> std::io::Result<()> {
    VM_ENDED.store(false, Ordering::SeqCst);
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

/// Notes that the vCPU thread left its run loop for good (a terminating
/// signal or the timeout ended the run): a [`request`] made around then
/// need not keep interrupting it.
pub fn acknowledge() {
    SEEN.store(true, Ordering::SeqCst);
}

/// Notes that the VM ended (one vCPU saw its end): every other vCPU's run
/// loop stops before its next KVM_RUN.
pub fn end_vm() {
    VM_ENDED.store(true, Ordering::SeqCst);
}

/// Whether a vCPU ended the VM.
pub fn vm_ended() -> bool {
    VM_ENDED.load(Ordering::SeqCst)
}

/// Interrupts vCPU thread `thread` (its KVM_RUN returns EINTR).
pub fn kick(thread: libc::pthread_t) {
    // SAFETY: the caller passes a vCPU thread that has not been joined; the
    // SIGUSR1 handler installed by `prepare` does nothing.
    unsafe { libc::pthread_kill(thread, libc::SIGUSR1) };
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
