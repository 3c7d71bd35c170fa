//! The descriptor table: close, dup, fcntl, ioctl, flock, and the calls
//! that make new descriptors from nothing (pipes, eventfds).

use alloc::sync::Arc;

use kiln_kernel::errno::Errno;

use super::args::{Flags, Word};
use super::Call;
use crate::fd::pipe::{pipe as new_pipe, EventFd};
use crate::fd::{flags, lock, Fd};
use crate::mm::uaccess::UserPtr;
use crate::process::Process;

const O_NONBLOCK: u64 = 0o4000;
const O_CLOEXEC: u64 = 0o2000000;
const O_DIRECT: u64 = 0o40000;
const EFD_SEMAPHORE: u64 = 1;

/// close(2). The caller's record locks on the file go (as POSIX says, with
/// any of its descriptors of it); a flock lock goes with the open file's
/// last descriptor, so its waiters look again.
pub fn close(p: &mut Call, fd: Fd) -> Result<u64, Errno> {
    let file = p.fds.get(fd)?;
    p.fds.close(fd)?;
    lock::release_records(p.pid, Some(lock::file_id(&file)));
    drop(file);
    if lock::any_flocks() {
        crate::sched::notify_io();
    }
    Ok(0)
}

/// dup(2).
pub fn dup(p: &mut Call, fd: Fd) -> Result<u64, Errno> {
    let file = p.fds.get(fd)?;
    p.fds.insert(file, false).map(Fd::number)
}

/// dup2(2).
pub fn dup2(p: &mut Call, old: Fd, new: Fd) -> Result<u64, Errno> {
    p.fds.get(old)?;
    if old == new {
        return Ok(new.number());
    }
    p.fds.dup_to(old, new, false).map(Fd::number)
}

/// dup3(2).
pub fn dup3(p: &mut Call, old: Fd, new: Fd, Flags(oflags): Flags) -> Result<u64, Errno> {
    if old == new || oflags & !O_CLOEXEC != 0 {
        return Err(Errno::Inval);
    }
    p.fds
        .dup_to(old, new, oflags & O_CLOEXEC != 0)
        .map(Fd::number)
}

/// fcntl(2).
pub fn fcntl(p: &mut Call, fd: Fd, cmd: u32, arg: Word) -> Result<u64, Errno> {
    const F_DUPFD: u32 = 0;
    const F_GETFD: u32 = 1;
    const F_SETFD: u32 = 2;
    const F_GETFL: u32 = 3;
    const F_SETFL: u32 = 4;
    const F_GETLK: u32 = 5;
    const F_SETLK: u32 = 6;
    const F_SETLKW: u32 = 7;
    const F_DUPFD_CLOEXEC: u32 = 1030;
    const F_GETPIPE_SZ: u32 = 1032;
    const FD_CLOEXEC: u64 = 1;
    let entry = p.fds.entry(fd)?.clone();
    match cmd {
        F_DUPFD | F_DUPFD_CLOEXEC => p
            .fds
            .insert_from(arg.value() as usize, entry.file, cmd == F_DUPFD_CLOEXEC)
            .map(Fd::number),
        F_GETFD => Ok(if entry.cloexec { FD_CLOEXEC } else { 0 }),
        F_SETFD => p
            .fds
            .set_cloexec(fd, arg.value() & FD_CLOEXEC != 0)
            .map(|()| 0),
        F_GETFL => Ok(u64::from(entry.file.status_flags() | flags::O_LARGEFILE)),
        F_SETFL => entry.file.set_status_flags(arg.value() as u32).map(|()| 0),
        F_GETLK | F_SETLK | F_SETLKW => record_lock(p, &entry.file, cmd, arg.value()),
        F_GETPIPE_SZ => Ok(crate::fd::pipe::CAPACITY as u64),
        _ => Err(Errno::Inval),
    }
}

/// ioctl(2): the requests every descriptor answers (asm-generic/ioctls.h),
/// then each kind of file the requests it knows.
pub fn ioctl(p: &mut Call, fd: Fd, Flags(request): Flags, arg: Word) -> Result<u64, Errno> {
    const FIONREAD: u64 = 0x541b;
    const FIONBIO: u64 = 0x5421;
    const FIONCLEX: u64 = 0x5450;
    const FIOCLEX: u64 = 0x5451;
    let file = p.fds.get(fd)?;
    let int_arg = UserPtr::<i32>::new(arg.value());
    // The request is a 32-bit number (an unsigned int in the kernel).
    match request as u32 as u64 {
        FIONBIO => {
            let on = p.mem.read(int_arg)? != 0;
            let current = file.status_flags();
            let new = if on {
                current | flags::O_NONBLOCK
            } else {
                current & !flags::O_NONBLOCK
            };
            file.set_status_flags(new).map(|()| 0)
        }
        FIOCLEX | FIONCLEX => p.fds.set_cloexec(fd, request == FIOCLEX).map(|()| 0),
        FIONREAD if file.readable_bytes().is_some() => {
            let n = file.readable_bytes().unwrap_or(0);
            p.mem.write(int_arg, i32::try_from(n).unwrap_or(i32::MAX))?;
            Ok(0)
        }
        request => file.ioctl(request, arg.value(), &mut p.mem),
    }
}

/// flock(2): a lock of the open file, shared (LOCK_SH) or exclusive
/// (LOCK_EX), waited for unless LOCK_NB.
pub fn flock(p: &mut Call, fd: Fd, Flags(operation): Flags) -> Result<u64, Errno> {
    let file = p.fds.get(fd)?;
    lock::flock(&file, operation as u32).map(|()| 0)
}

/// fcntl F_GETLK (5), F_SETLK (6) and F_SETLKW (7) with the `struct flock`
/// at `at`: the caller's record locks on `file`.
fn record_lock(
    p: &mut Process,
    file: &alloc::sync::Arc<dyn crate::fd::FileOps>,
    cmd: u32,
    at: u64,
) -> Result<u64, Errno> {
    const F_RDLCK: i16 = 0;
    const F_WRLCK: i16 = 1;
    const F_UNLCK: i16 = 2;
    const F_GETLK: u32 = 5;
    const F_SETLKW: u32 = 7;
    let raw: [u8; 32] = p.mem.read(UserPtr::new(at))?;
    let kind = i16::from_le_bytes([raw[0], raw[1]]);
    let whence = i16::from_le_bytes([raw[2], raw[3]]);
    let mut start = i64::from_le_bytes(raw[8..16].try_into().unwrap_or_default());
    let len = i64::from_le_bytes(raw[16..24].try_into().unwrap_or_default());
    let write = match kind {
        F_RDLCK => Some(false),
        F_WRLCK => Some(true),
        F_UNLCK => None,
        _ => return Err(Errno::Inval),
    };
    let base = match whence {
        0 => 0,
        1 => file.seek(0, 1)? as i64,
        2 => file.stat().size as i64,
        _ => return Err(Errno::Inval),
    };
    start = start.checked_add(base).ok_or(Errno::Overflow)?;
    // A negative length covers the bytes before `start`; 0: to the end.
    let (first, end) = match len {
        0 => (start, u64::MAX as i128),
        l if l > 0 => (start, i128::from(start) + i128::from(l)),
        l => (start + l, i128::from(start)),
    };
    if first < 0 {
        return Err(Errno::Inval);
    }
    let (first, end) = (first as u64, end.min(i128::from(u64::MAX)) as u64);
    let id = lock::file_id(file);
    if cmd == F_GETLK {
        let mut out = raw;
        match write.and_then(|w| lock::conflicting(p.pid, id, first, end, w)) {
            Some(c) => {
                out[0..2].copy_from_slice(&(if c.write { F_WRLCK } else { F_RDLCK }).to_le_bytes());
                out[2..4].copy_from_slice(&0i16.to_le_bytes());
                out[8..16].copy_from_slice(&(c.start as i64).to_le_bytes());
                let clen = if c.end == u64::MAX {
                    0
                } else {
                    (c.end - c.start) as i64
                };
                out[16..24].copy_from_slice(&clen.to_le_bytes());
                out[24..28].copy_from_slice(&c.pid.to_le_bytes());
            }
            None => out[0..2].copy_from_slice(&F_UNLCK.to_le_bytes()),
        }
        p.mem.write(UserPtr::<[u8; 32]>::new(at), out)?;
        return Ok(0);
    }
    match lock::set_record(p.pid, id, first, end, write) {
        Ok(()) => Ok(0),
        // F_SETLKW waits (and runs again when a lock goes); F_SETLK fails.
        Err(_) if cmd == F_SETLKW => Err(Errno::Restart),
        Err(_) => Err(Errno::Again),
    }
}

/// pipe(2).
pub fn pipe(p: &mut Call, fds: UserPtr<[i32; 2]>) -> Result<u64, Errno> {
    pipe2(p, fds, Flags(0))
}

/// pipe2(2).
pub fn pipe2(p: &mut Call, fds: UserPtr<[i32; 2]>, Flags(flags): Flags) -> Result<u64, Errno> {
    if flags & !(O_NONBLOCK | O_CLOEXEC | O_DIRECT) != 0 {
        return Err(Errno::Inval);
    }
    // Fail before anything is created when the result cannot be written.
    p.mem.check_writable(fds)?;
    let (r, w) = new_pipe(flags & O_NONBLOCK != 0);
    let cloexec = flags & O_CLOEXEC != 0;
    let rfd = p.fds.insert(Arc::new(r), cloexec)?;
    let wfd = match p.fds.insert(Arc::new(w), cloexec) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = p.fds.close(rfd);
            return Err(e);
        }
    };
    p.mem.write(fds, [rfd.0, wfd.0])?;
    Ok(0)
}

/// eventfd(2).
pub fn eventfd(p: &mut Call, initial: u32) -> Result<u64, Errno> {
    eventfd2(p, initial, Flags(0))
}

/// eventfd2(2).
pub fn eventfd2(p: &mut Call, initial: u32, Flags(flags): Flags) -> Result<u64, Errno> {
    if flags & !(O_NONBLOCK | O_CLOEXEC | EFD_SEMAPHORE) != 0 {
        return Err(Errno::Inval);
    }
    let e = EventFd::new(
        u64::from(initial),
        flags & EFD_SEMAPHORE != 0,
        flags & O_NONBLOCK != 0,
    );
    p.fds
        .insert(Arc::new(e), flags & O_CLOEXEC != 0)
        .map(Fd::number)
}
