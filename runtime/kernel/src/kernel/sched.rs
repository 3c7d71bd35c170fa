//! Waiting. The program has one thread for now, so nothing else can run
//! while it waits: an operation that would block either fails with EAGAIN
//! (non-blocking descriptors) or, when only the program itself could ever
//! unblock it, is a certain deadlock, which [`block_until`] reports as
//! EDEADLK and the system-call layer turns into ending the program with a
//! message rather than hanging the VM.

use kiln_kernel::errno::Errno;

/// Retries `attempt` until it returns a result. `None` from it means "would
/// block".
///
/// # Errors
/// EAGAIN when `nonblocking`; EDEADLK when blocking could never end.
pub fn block_until<T>(
    nonblocking: bool,
    mut attempt: impl FnMut() -> Option<Result<T, Errno>>,
) -> Result<T, Errno> {
    if let Some(r) = attempt() {
        return r;
    }
    if nonblocking {
        return Err(Errno::Again);
    }
    Err(Errno::Deadlk)
}
