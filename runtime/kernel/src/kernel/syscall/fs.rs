//! File system calls: descriptors, paths, metadata and directories, over
//! the open-file objects of `fd` and the rootfs of `fs`. The rootfs is
//! read-only: anything that would change it fails with EROFS.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use kiln_kernel::errno::Errno;
use kiln_kernel::stat::{mode, Stat};
use kiln_kernel::tarfs::Kind;

use crate::kernel::fd::device::OpenDevice;
use crate::kernel::fd::file::{node_stat, RootDir, RootFile};
use crate::kernel::fd::{flags, poll, FileOps};
use crate::kernel::fs::{self, Found};
use crate::kernel::process::Process;

const AT_FDCWD: u64 = -100i64 as u64;
const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
const AT_EMPTY_PATH: u64 = 0x1000;
const PATH_MAX: usize = 4096;
/// Linux caps one read/write at this many bytes.
const MAX_RW: u64 = 0x7fff_f000;

const O_ACCMODE: u64 = 3;
const O_CREAT: u64 = 0o100;
const O_EXCL: u64 = 0o200;
const O_TRUNC: u64 = 0o1000;
const O_DIRECTORY: u64 = 0o200000;
const O_NOFOLLOW: u64 = 0o400000;
const O_CLOEXEC: u64 = 0o2000000;
const O_PATH: u64 = 0o10000000;

fn path_arg(p: &mut Process, addr: u64) -> Result<String, Errno> {
    let raw = p.read_cstr(addr, PATH_MAX)?;
    String::from_utf8(raw).map_err(|_| Errno::Noent)
}

/// The directory a `*at` call's relative path starts from.
fn base_dir(p: &Process, dirfd: u64, path: &str) -> Result<String, Errno> {
    if path.starts_with('/') || dirfd == AT_FDCWD || dirfd as u32 == AT_FDCWD as u32 {
        return Ok(p.cwd.clone());
    }
    let file = p.fds.get(dirfd)?;
    file.dir_path().map(String::from).ok_or(Errno::Notdir)
}

/// read(2).
pub fn read(p: &mut Process, fd: u64, buf: u64, len: u64) -> Result<u64, Errno> {
    let file = p.fds.get(fd)?;
    let out = p.user_bytes_mut(buf, len.min(MAX_RW))?;
    file.read(out).map(|n| n as u64)
}

/// write(2).
pub fn write(p: &mut Process, fd: u64, buf: u64, len: u64) -> Result<u64, Errno> {
    let file = p.fds.get(fd)?;
    let data = p.user_bytes(buf, len.min(MAX_RW))?;
    file.write(data).map(|n| n as u64)
}

/// pread64(2).
pub fn pread64(p: &mut Process, fd: u64, buf: u64, len: u64, offset: u64) -> Result<u64, Errno> {
    if (offset as i64) < 0 {
        return Err(Errno::Inval);
    }
    let file = p.fds.get(fd)?;
    let out = p.user_bytes_mut(buf, len.min(MAX_RW))?;
    file.pread(out, offset).map(|n| n as u64)
}

/// pwrite64(2): nothing in the rootfs is writable.
pub fn pwrite64(p: &mut Process, fd: u64) -> Result<u64, Errno> {
    let file = p.fds.get(fd)?;
    if file.status_flags() & O_ACCMODE as u32 == flags::O_RDONLY {
        Err(Errno::Badf)
    } else {
        Err(Errno::Spipe)
    }
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

/// readv(2).
pub fn readv(p: &mut Process, fd: u64, iov: u64, count: u64) -> Result<u64, Errno> {
    let file = p.fds.get(fd)?;
    let mut total = 0u64;
    for (base, len) in iovecs(p, iov, count)? {
        let out = p.user_bytes_mut(base, len.min(MAX_RW - total))?;
        let n = file.read(out)? as u64;
        total += n;
        if n < len {
            break;
        }
    }
    Ok(total)
}

/// writev(2): gathered into one write (for the console, one exit).
pub fn writev(p: &mut Process, fd: u64, iov: u64, count: u64) -> Result<u64, Errno> {
    let file = p.fds.get(fd)?;
    let mut out = Vec::new();
    for (base, len) in iovecs(p, iov, count)? {
        let room = MAX_RW - out.len() as u64;
        out.extend_from_slice(p.user_bytes(base, len.min(room))?);
    }
    file.write(&out).map(|n| n as u64)
}

/// open(2) and openat(2).
pub fn openat(p: &mut Process, dirfd: u64, path: u64, oflags: u64) -> Result<u64, Errno> {
    let path = path_arg(p, path)?;
    let base = base_dir(p, dirfd, &path)?;
    let follow = oflags & O_NOFOLLOW == 0;
    let writing = oflags & O_ACCMODE != 0 || oflags & O_TRUNC != 0;
    let found = match fs::lookup(&base, &path, follow) {
        Err(Errno::Noent) if oflags & O_CREAT != 0 => return Err(Errno::Rofs),
        other => other?,
    };
    if oflags & (O_CREAT | O_EXCL) == O_CREAT | O_EXCL {
        return Err(Errno::Exist);
    }
    let file: Arc<dyn FileOps> = match found {
        Found::Device(d) => Arc::new(OpenDevice(d)),
        Found::Exe => {
            // The program itself: open the node the link points to.
            let exe = String::from_utf8(p.exe.clone()).map_err(|_| Errno::Noent)?;
            return openat_resolved(p, &exe, oflags, writing);
        }
        Found::Node { path, node } => return open_node(p, path, node, oflags, writing),
    };
    if oflags & O_DIRECTORY != 0 {
        return Err(Errno::Notdir);
    }
    p.fds.insert(file, oflags & O_CLOEXEC != 0)
}

fn openat_resolved(p: &mut Process, path: &str, oflags: u64, writing: bool) -> Result<u64, Errno> {
    match fs::lookup("/", path, true)? {
        Found::Node { path, node } => open_node(p, path, node, oflags, writing),
        _ => Err(Errno::Noent),
    }
}

fn open_node(
    p: &mut Process,
    path: String,
    node: kiln_kernel::tarfs::Node,
    oflags: u64,
    writing: bool,
) -> Result<u64, Errno> {
    let cloexec = oflags & O_CLOEXEC != 0;
    match node.kind {
        Kind::Symlink(_) if oflags & O_PATH == 0 => Err(Errno::Loop),
        Kind::Dir => {
            if writing {
                return Err(Errno::Isdir);
            }
            p.fds.insert(Arc::new(RootDir::new(node, path)), cloexec)
        }
        _ if oflags & O_DIRECTORY != 0 => Err(Errno::Notdir),
        _ if writing => Err(Errno::Rofs),
        _ => p.fds.insert(Arc::new(RootFile::new(node)), cloexec),
    }
}

/// close(2).
pub fn close(p: &mut Process, fd: u64) -> Result<u64, Errno> {
    p.fds.close(fd).map(|()| 0)
}

/// lseek(2).
pub fn lseek(p: &mut Process, fd: u64, offset: u64, whence: u64) -> Result<u64, Errno> {
    p.fds.get(fd)?.seek(offset as i64, whence as u32)
}

/// ioctl(2).
pub fn ioctl(p: &mut Process, fd: u64, request: u64) -> Result<u64, Errno> {
    p.fds.get(fd)?.ioctl(request)
}

/// fcntl(2).
pub fn fcntl(p: &mut Process, fd: u64, cmd: u64, arg: u64) -> Result<u64, Errno> {
    const F_DUPFD: u64 = 0;
    const F_GETFD: u64 = 1;
    const F_SETFD: u64 = 2;
    const F_GETFL: u64 = 3;
    const F_SETFL: u64 = 4;
    const F_GETLK: u64 = 5;
    const F_SETLK: u64 = 6;
    const F_SETLKW: u64 = 7;
    const F_DUPFD_CLOEXEC: u64 = 1030;
    const FD_CLOEXEC: u64 = 1;
    let entry = p.fds.entry(fd)?.clone();
    match cmd {
        F_DUPFD | F_DUPFD_CLOEXEC => {
            p.fds
                .insert_from(arg as usize, entry.file, cmd == F_DUPFD_CLOEXEC)
        }
        F_GETFD => Ok(if entry.cloexec { FD_CLOEXEC } else { 0 }),
        F_SETFD => p.fds.set_cloexec(fd, arg & FD_CLOEXEC != 0).map(|()| 0),
        F_GETFL => Ok(u64::from(entry.file.status_flags() | flags::O_LARGEFILE)),
        F_SETFL => Ok(0),
        F_GETLK | F_SETLK | F_SETLKW => Ok(0), // one process: locks never conflict
        _ => Err(Errno::Inval),
    }
}

/// dup(2).
pub fn dup(p: &mut Process, fd: u64) -> Result<u64, Errno> {
    let file = p.fds.get(fd)?;
    p.fds.insert(file, false)
}

/// dup2(2).
pub fn dup2(p: &mut Process, old: u64, new: u64) -> Result<u64, Errno> {
    p.fds.get(old)?;
    if old == new {
        return Ok(new);
    }
    p.fds.dup_to(old, new, false)
}

/// dup3(2).
pub fn dup3(p: &mut Process, old: u64, new: u64, oflags: u64) -> Result<u64, Errno> {
    if old == new || oflags & !O_CLOEXEC != 0 {
        return Err(Errno::Inval);
    }
    p.fds.dup_to(old, new, oflags & O_CLOEXEC != 0)
}

/// The metadata a path names.
fn stat_path(p: &mut Process, dirfd: u64, path: &str, follow: bool) -> Result<Stat, Errno> {
    let base = base_dir(p, dirfd, path)?;
    match fs::lookup(&base, path, follow)? {
        Found::Node { node, .. } => Ok(node_stat(&node)),
        Found::Device(d) => Ok(d.metadata()),
        Found::Exe if follow => {
            let exe = String::from_utf8(p.exe.clone()).map_err(|_| Errno::Noent)?;
            match fs::lookup("/", &exe, true)? {
                Found::Node { node, .. } => Ok(node_stat(&node)),
                _ => Err(Errno::Noent),
            }
        }
        Found::Exe => Ok(Stat {
            ino: 1,
            mode: mode::S_IFLNK | 0o777,
            nlink: 1,
            size: p.exe.len() as u64,
            ..Stat::default()
        }),
    }
}

/// fstat(2).
pub fn fstat(p: &mut Process, fd: u64, buf: u64) -> Result<u64, Errno> {
    let st = p.fds.get(fd)?.stat();
    p.write_user(buf, &st.to_stat())?;
    Ok(0)
}

/// stat(2) and lstat(2).
pub fn stat(p: &mut Process, path: u64, buf: u64, follow: bool) -> Result<u64, Errno> {
    let path = path_arg(p, path)?;
    let st = stat_path(p, AT_FDCWD, &path, follow)?;
    p.write_user(buf, &st.to_stat())?;
    Ok(0)
}

/// newfstatat(2).
pub fn newfstatat(
    p: &mut Process,
    dirfd: u64,
    path: u64,
    buf: u64,
    at_flags: u64,
) -> Result<u64, Errno> {
    let name = path_arg(p, path)?;
    let st = if name.is_empty() && at_flags & AT_EMPTY_PATH != 0 {
        if dirfd == AT_FDCWD {
            stat_path(p, AT_FDCWD, ".", true)?
        } else {
            p.fds.get(dirfd)?.stat()
        }
    } else {
        stat_path(p, dirfd, &name, at_flags & AT_SYMLINK_NOFOLLOW == 0)?
    };
    p.write_user(buf, &st.to_stat())?;
    Ok(0)
}

/// statx(2).
pub fn statx(
    p: &mut Process,
    dirfd: u64,
    path: u64,
    at_flags: u64,
    buf: u64,
) -> Result<u64, Errno> {
    let name = path_arg(p, path)?;
    let st = if name.is_empty() && at_flags & AT_EMPTY_PATH != 0 {
        p.fds.get(dirfd)?.stat()
    } else {
        stat_path(p, dirfd, &name, at_flags & AT_SYMLINK_NOFOLLOW == 0)?
    };
    p.write_user(buf, &st.to_statx())?;
    Ok(0)
}

/// access(2), faccessat(2), faccessat2(2): the program runs as root, so
/// only existence, the rootfs being read-only and execute bits matter.
pub fn faccessat(p: &mut Process, dirfd: u64, path: u64, amode: u64) -> Result<u64, Errno> {
    const W_OK: u64 = 2;
    const X_OK: u64 = 1;
    let name = path_arg(p, path)?;
    let st = stat_path(p, dirfd, &name, true)?;
    let device = st.mode & 0o170000 == mode::S_IFCHR;
    if amode & W_OK != 0 && !device {
        return Err(Errno::Rofs);
    }
    if amode & X_OK != 0 && st.mode & 0o111 == 0 && st.mode & 0o170000 != mode::S_IFDIR {
        return Err(Errno::Acces);
    }
    Ok(0)
}

/// getdents64(2).
pub fn getdents64(p: &mut Process, fd: u64, buf: u64, len: u64) -> Result<u64, Errno> {
    let file = p.fds.get(fd)?;
    let out = p.user_bytes_mut(buf, len.min(MAX_RW))?;
    file.getdents(out).map(|n| n as u64)
}

/// readlink(2) and readlinkat(2).
pub fn readlinkat(
    p: &mut Process,
    dirfd: u64,
    path: u64,
    buf: u64,
    size: u64,
) -> Result<u64, Errno> {
    if size == 0 || size > i32::MAX as u64 {
        return Err(Errno::Inval);
    }
    let name = path_arg(p, path)?;
    let base = base_dir(p, dirfd, &name)?;
    let target: Vec<u8> = match fs::lookup(&base, &name, false)? {
        Found::Exe => p.exe.clone(),
        Found::Node {
            node:
                kiln_kernel::tarfs::Node {
                    kind: Kind::Symlink(t),
                    ..
                },
            ..
        } => t.into_bytes(),
        _ => return Err(Errno::Inval),
    };
    let n = (target.len() as u64).min(size);
    p.write_user(buf, &target[..n as usize])?;
    Ok(n)
}

/// getcwd(2).
pub fn getcwd(p: &mut Process, buf: u64, size: u64) -> Result<u64, Errno> {
    let mut cwd = p.cwd.clone().into_bytes();
    cwd.push(0);
    if (size as usize) < cwd.len() {
        return Err(Errno::Range);
    }
    p.write_user(buf, &cwd)?;
    Ok(cwd.len() as u64)
}

/// chdir(2).
pub fn chdir(p: &mut Process, path: u64) -> Result<u64, Errno> {
    let name = path_arg(p, path)?;
    let cwd = p.cwd.clone();
    match fs::lookup(&cwd, &name, true)? {
        Found::Node { path, node } if node.kind == Kind::Dir => {
            p.cwd = path;
            Ok(0)
        }
        _ => Err(Errno::Notdir),
    }
}

/// fchdir(2).
pub fn fchdir(p: &mut Process, fd: u64) -> Result<u64, Errno> {
    let dir = p
        .fds
        .get(fd)?
        .dir_path()
        .map(String::from)
        .ok_or(Errno::Notdir)?;
    p.cwd = dir;
    Ok(0)
}

/// poll(2): every file kiln has is ready, one way or the other.
pub fn poll(p: &mut Process, fds: u64, count: u64) -> Result<u64, Errno> {
    if count > 1024 {
        return Err(Errno::Inval);
    }
    let mut pollfds: Vec<u8> = p.user_bytes(fds, count * 8)?.to_vec();
    let mut ready = 0;
    for e in pollfds.chunks_exact_mut(8) {
        let fd = i32::from_le_bytes([e[0], e[1], e[2], e[3]]);
        let events = u16::from_le_bytes([e[4], e[5]]);
        let revents = if fd < 0 {
            0
        } else {
            match p.fds.get(fd as u64) {
                Ok(file) => file.poll(events),
                Err(_) => poll::POLLNVAL,
            }
        };
        e[6..8].copy_from_slice(&revents.to_le_bytes());
        if revents != 0 {
            ready += 1;
        }
    }
    p.write_user(fds, &pollfds)?;
    Ok(ready)
}
