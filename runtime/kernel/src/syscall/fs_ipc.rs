//! pipe2(2) and eventfd2(2).

use alloc::sync::Arc;

use kiln_kernel::errno::Errno;

use crate::fd::pipe::{pipe, EventFd};
use crate::process::Process;

const O_NONBLOCK: u64 = 0o4000;
const O_CLOEXEC: u64 = 0o2000000;
const O_DIRECT: u64 = 0o40000;
const EFD_SEMAPHORE: u64 = 1;

/// pipe(2) and pipe2(2).
pub fn pipe2(p: &mut Process, fds: u64, flags: u64) -> Result<u64, Errno> {
    if flags & !(O_NONBLOCK | O_CLOEXEC | O_DIRECT) != 0 {
        return Err(Errno::Inval);
    }
    p.mem.prepare(fds, 8, true)?;
    let (r, w) = pipe(flags & O_NONBLOCK != 0);
    let cloexec = flags & O_CLOEXEC != 0;
    let rfd = p.fds.insert(Arc::new(r), cloexec)?;
    let wfd = match p.fds.insert(Arc::new(w), cloexec) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = p.fds.close(rfd);
            return Err(e);
        }
    };
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&(rfd as u32).to_le_bytes());
    out[4..].copy_from_slice(&(wfd as u32).to_le_bytes());
    p.mem.write_user(fds, &out)?;
    Ok(0)
}

/// eventfd(2) and eventfd2(2).
pub fn eventfd2(p: &mut Process, initial: u64, flags: u64) -> Result<u64, Errno> {
    if flags & !(O_NONBLOCK | O_CLOEXEC | EFD_SEMAPHORE) != 0 {
        return Err(Errno::Inval);
    }
    let e = EventFd::new(
        initial & 0xffff_ffff,
        flags & EFD_SEMAPHORE != 0,
        flags & O_NONBLOCK != 0,
    );
    p.fds.insert(Arc::new(e), flags & O_CLOEXEC != 0)
}
