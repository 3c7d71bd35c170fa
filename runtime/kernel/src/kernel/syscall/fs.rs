//! File-descriptor system calls. For now the program has exactly the three
//! standard streams: stdin at end-of-file, stdout and stderr to the host's.
//! They look like pipes (S_IFIFO, not a terminal), which is what a program
//! sees when a container runtime or a test harness collects its output.

use alloc::vec::Vec;

use kiln_kernel::errno::Errno;

use crate::kernel::console::{self, Stream};
use crate::kernel::process::Process;

const AT_FDCWD: u64 = -100i64 as u64;
const AT_EMPTY_PATH: u64 = 0x1000;
const PATH_MAX: usize = 4096;
/// Linux caps one read/write at this many bytes.
const MAX_RW: u64 = 0x7fff_f000;

fn stream(p: &Process, fd: u64) -> Result<Stream, Errno> {
    match fd {
        1 if p.stdio_open[1] => Ok(Stream::Stdout),
        2 if p.stdio_open[2] => Ok(Stream::Stderr),
        _ => Err(Errno::Badf),
    }
}

fn check_open(p: &Process, fd: u64) -> Result<(), Errno> {
    if fd < 3 && p.stdio_open[fd as usize] {
        Ok(())
    } else {
        Err(Errno::Badf)
    }
}

/// read(2): stdin is at end-of-file.
pub fn read(p: &mut Process, fd: u64, buf: u64, len: u64) -> Result<u64, Errno> {
    check_open(p, fd)?;
    if fd != 0 {
        return Err(Errno::Badf);
    }
    p.prepare(buf, len.min(MAX_RW), true)?;
    Ok(0)
}

/// readv(2).
pub fn readv(p: &mut Process, fd: u64, iov: u64, count: u64) -> Result<u64, Errno> {
    check_open(p, fd)?;
    if fd != 0 {
        return Err(Errno::Badf);
    }
    iovecs(p, iov, count)?;
    Ok(0)
}

/// write(2) to stdout or stderr.
pub fn write(p: &mut Process, fd: u64, buf: u64, len: u64) -> Result<u64, Errno> {
    let s = stream(p, fd)?;
    let len = len.min(MAX_RW);
    let data = p.user_bytes(buf, len)?;
    console::write(s, data);
    Ok(len)
}

fn iovecs(p: &mut Process, iov: u64, count: u64) -> Result<Vec<(u64, u64)>, Errno> {
    if count > 1024 {
        return Err(Errno::Inval);
    }
    let raw = p.user_bytes(iov, count * 16)?;
    let v: Vec<(u64, u64)> = raw
        .chunks_exact(16)
        .map(|c| {
            let base = u64::from_le_bytes(c[..8].try_into().unwrap_or_default());
            let len = u64::from_le_bytes(c[8..].try_into().unwrap_or_default());
            (base, len)
        })
        .collect();
    if v.iter().any(|&(_, len)| len > isize::MAX as u64) {
        return Err(Errno::Inval);
    }
    Ok(v)
}

/// writev(2): gathered into one console write (one exit to the VMM).
pub fn writev(p: &mut Process, fd: u64, iov: u64, count: u64) -> Result<u64, Errno> {
    let s = stream(p, fd)?;
    let mut out = Vec::new();
    for (base, len) in iovecs(p, iov, count)? {
        let room = MAX_RW - out.len() as u64;
        out.extend_from_slice(p.user_bytes(base, len.min(room))?);
    }
    console::write(s, &out);
    Ok(out.len() as u64)
}

/// open(2)/openat(2): there is no file system yet.
pub fn open(p: &mut Process, path: u64) -> Result<u64, Errno> {
    p.read_cstr(path, PATH_MAX)?;
    Err(Errno::Noent)
}

/// close(2).
pub fn close(p: &mut Process, fd: u64) -> Result<u64, Errno> {
    check_open(p, fd)?;
    p.stdio_open[fd as usize] = false;
    Ok(0)
}

/// lseek(2): the standard streams are pipes.
pub fn lseek(p: &mut Process, fd: u64) -> Result<u64, Errno> {
    check_open(p, fd)?;
    Err(Errno::Spipe)
}

/// ioctl(2): the standard streams are not terminals.
pub fn ioctl(p: &mut Process, fd: u64, _request: u64) -> Result<u64, Errno> {
    check_open(p, fd)?;
    Err(Errno::Notty)
}

/// fcntl(2): F_GETFD/F_GETFL/F_SETFD on the standard streams.
pub fn fcntl(p: &mut Process, fd: u64, cmd: u64) -> Result<u64, Errno> {
    const F_GETFD: u64 = 1;
    const F_SETFD: u64 = 2;
    const F_GETFL: u64 = 3;
    check_open(p, fd)?;
    match cmd {
        F_GETFD | F_SETFD => Ok(0),
        F_GETFL => Ok(if fd == 0 { 0 } else { 1 }), // O_RDONLY / O_WRONLY
        _ => Err(Errno::Inval),
    }
}

/// `struct stat` for a pipe (x86-64 layout, 144 bytes).
fn pipe_stat() -> [u8; 144] {
    let mut st = [0u8; 144];
    let put = |st: &mut [u8; 144], off: usize, v: &[u8]| st[off..off + v.len()].copy_from_slice(v);
    put(&mut st, 0, &0x0cu64.to_le_bytes()); // st_dev
    put(&mut st, 8, &1u64.to_le_bytes()); // st_ino
    put(&mut st, 16, &1u64.to_le_bytes()); // st_nlink
    put(&mut st, 24, &0o010_600u32.to_le_bytes()); // st_mode: S_IFIFO | 0600
    put(&mut st, 56, &4096u64.to_le_bytes()); // st_blksize
    st
}

/// fstat(2).
pub fn fstat(p: &mut Process, fd: u64, statbuf: u64) -> Result<u64, Errno> {
    check_open(p, fd)?;
    p.write_user(statbuf, &pipe_stat())?;
    Ok(0)
}

/// newfstatat(2): only `AT_EMPTY_PATH` on an open descriptor has an answer.
pub fn newfstatat(
    p: &mut Process,
    dirfd: u64,
    path: u64,
    statbuf: u64,
    flags: u64,
) -> Result<u64, Errno> {
    let name = p.read_cstr(path, PATH_MAX)?;
    if name.is_empty() && flags & AT_EMPTY_PATH != 0 {
        return fstat(p, dirfd, statbuf);
    }
    if name.is_empty() {
        return Err(Errno::Noent);
    }
    if dirfd != AT_FDCWD && name[0] != b'/' {
        check_open(p, dirfd)?;
        return Err(Errno::Notdir);
    }
    Err(Errno::Noent)
}

/// poll(2): the standard streams are always ready (stdin at end-of-file).
pub fn poll(p: &mut Process, fds: u64, count: u64) -> Result<u64, Errno> {
    const POLLIN: u16 = 0x1;
    const POLLOUT: u16 = 0x4;
    const POLLHUP: u16 = 0x10;
    const POLLNVAL: u16 = 0x20;
    if count > 1024 {
        return Err(Errno::Inval);
    }
    let open = p.stdio_open;
    let entries = p.user_bytes_mut(fds, count * 8)?;
    let mut ready = 0;
    for e in entries.chunks_exact_mut(8) {
        let fd = i32::from_le_bytes([e[0], e[1], e[2], e[3]]);
        let events = u16::from_le_bytes([e[4], e[5]]);
        let revents = match fd {
            f if f < 0 => 0,
            0 if open[0] => (events & POLLIN) | POLLHUP,
            1 | 2 if open[fd as usize] => events & POLLOUT,
            _ => POLLNVAL,
        };
        e[6..8].copy_from_slice(&revents.to_le_bytes());
        if revents != 0 {
            ready += 1;
        }
    }
    Ok(ready)
}

fn readlink_common(p: &mut Process, path: &[u8], buf: u64, size: u64) -> Result<u64, Errno> {
    if size == 0 || size > i32::MAX as u64 {
        return Err(Errno::Inval);
    }
    if path != b"/proc/self/exe" {
        return Err(Errno::Noent);
    }
    let exe = p.exe.clone();
    let n = (exe.len() as u64).min(size);
    p.write_user(buf, &exe[..n as usize])?;
    Ok(n)
}

/// readlink(2): only /proc/self/exe exists.
pub fn readlink(p: &mut Process, path: u64, buf: u64, size: u64) -> Result<u64, Errno> {
    let name = p.read_cstr(path, PATH_MAX)?;
    readlink_common(p, &name, buf, size)
}

/// readlinkat(2).
pub fn readlinkat(
    p: &mut Process,
    _dirfd: u64,
    path: u64,
    buf: u64,
    size: u64,
) -> Result<u64, Errno> {
    let name = p.read_cstr(path, PATH_MAX)?;
    readlink_common(p, &name, buf, size)
}
