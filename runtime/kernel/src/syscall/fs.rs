//! File system calls: descriptors, paths, metadata, directories and the
//! writable layer, over the open-file objects of `fd` and the overlay of
//! `fs`.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use kiln_kernel::errno::Errno;
use kiln_kernel::fs::stat::{mode, Stat};
use kiln_kernel::fs::vfs::NodeKind;

use crate::fd::file::Generated;
use crate::fd::{flags, FileOps};
use crate::fs::{self, proc, Found};
use crate::process::Process;

const AT_FDCWD: u64 = -100i64 as u64;
const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
const AT_REMOVEDIR: u64 = 0x200;
const AT_SYMLINK_FOLLOW: u64 = 0x400;
const AT_EMPTY_PATH: u64 = 0x1000;
const PATH_MAX: usize = 4096;
/// Linux caps one read/write at this many bytes.
const MAX_RW: u64 = 0x7fff_f000;

const O_ACCMODE: u64 = 3;
const O_CREAT: u64 = 0o100;
const O_EXCL: u64 = 0o200;
const O_TRUNC: u64 = 0o1000;
const O_APPEND: u64 = 0o2000;
const O_DIRECTORY: u64 = 0o200000;
const O_NOFOLLOW: u64 = 0o400000;
const O_CLOEXEC: u64 = 0o2000000;
const O_PATH: u64 = 0o10000000;
const O_TMPFILE: u64 = 0o20000000 | O_DIRECTORY;

fn path_arg(p: &mut Process, addr: u64) -> Result<String, Errno> {
    let raw = p.mem.read_cstr(addr, PATH_MAX)?;
    String::from_utf8(raw).map_err(|_| Errno::Noent)
}

/// The directory a `*at` call's relative path starts from.
fn base_dir(p: &Process, dirfd: u64, path: &str) -> Result<String, Errno> {
    if path.starts_with('/') || dirfd as u32 == AT_FDCWD as u32 {
        return Ok(p.cwd.clone());
    }
    let file = p.fds.get(dirfd)?;
    file.dir_path().map(String::from).ok_or(Errno::Notdir)
}

/// The resolved parent directory and last name of a path that is to be
/// created, removed or renamed.
fn parent_and_name(p: &mut Process, dirfd: u64, path: u64) -> Result<(String, String), Errno> {
    let path = path_arg(p, path)?;
    let base = base_dir(p, dirfd, &path)?;
    let abs = fs::absolute(&base, &path);
    if fs::proc::Entry::at(&abs).is_some() || crate::fd::device::Device::at(&abs).is_some() {
        return Err(Errno::Perm);
    }
    match fs::vfs().resolve_parent(&base, &path)? {
        (parent, Some(name)) => Ok((parent, name)),
        (_, None) => Err(Errno::Busy),
    }
}

fn full(parent: &str, name: &str) -> String {
    if parent == "/" {
        alloc::format!("/{name}")
    } else {
        alloc::format!("{parent}/{name}")
    }
}

fn now_secs() -> u64 {
    crate::time::realtime_ns() / 1_000_000_000
}

/// read(2).
pub fn read(p: &mut Process, fd: u64, buf: u64, len: u64) -> Result<u64, Errno> {
    let file = p.fds.get(fd)?;
    let out = p.mem.user_bytes_mut(buf, len.min(MAX_RW))?;
    file.read(out).map(|n| n as u64)
}

/// write(2).
pub fn write(p: &mut Process, fd: u64, buf: u64, len: u64) -> Result<u64, Errno> {
    let file = p.fds.get(fd)?;
    let data = p.mem.user_bytes(buf, len.min(MAX_RW))?;
    file.write(data).map(|n| n as u64)
}

/// pread64(2).
pub fn pread64(p: &mut Process, fd: u64, buf: u64, len: u64, offset: u64) -> Result<u64, Errno> {
    if (offset as i64) < 0 {
        return Err(Errno::Inval);
    }
    let file = p.fds.get(fd)?;
    let out = p.mem.user_bytes_mut(buf, len.min(MAX_RW))?;
    file.pread(out, offset).map(|n| n as u64)
}

/// sendfile(2): copies up to `count` bytes from `in_fd` (at `*offset`
/// when given, which is then advanced, else at its file offset) to
/// `out_fd`.
pub fn sendfile(
    p: &mut Process,
    out_fd: u64,
    in_fd: u64,
    offset: u64,
    count: u64,
) -> Result<u64, Errno> {
    let input = p.fds.get(in_fd)?;
    let output = p.fds.get(out_fd)?;
    let mut at = if offset != 0 {
        let o: i64 = p.mem.read_obj(offset)?;
        Some(u64::try_from(o).map_err(|_| Errno::Inval)?)
    } else {
        None
    };
    let mut buf = alloc::vec![0u8; count.min(256 * 1024) as usize];
    let mut done = 0u64;
    while done < count {
        let want = ((count - done) as usize).min(buf.len());
        let n = match at {
            Some(o) => input.pread(&mut buf[..want], o + done),
            None => input.read(&mut buf[..want]),
        };
        let n = match n {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        };
        match output.write(&buf[..n]) {
            Ok(w) => {
                done += w as u64;
                if w < n {
                    break;
                }
            }
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        }
    }
    if let Some(o) = at.as_mut() {
        *o += done;
        p.mem.write_user(offset, &o.to_le_bytes())?;
    }
    Ok(done)
}

/// pwrite64(2).
pub fn pwrite64(p: &mut Process, fd: u64, buf: u64, len: u64, offset: u64) -> Result<u64, Errno> {
    if (offset as i64) < 0 {
        return Err(Errno::Inval);
    }
    let file = p.fds.get(fd)?;
    let data = p.mem.user_bytes(buf, len.min(MAX_RW))?;
    file.pwrite(data, offset).map(|n| n as u64)
}

fn iovecs(p: &mut Process, iov: u64, count: u64) -> Result<Vec<(u64, u64)>, Errno> {
    if count > 1024 {
        return Err(Errno::Inval);
    }
    let raw = p.mem.user_bytes(iov, count * 16)?;
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
        let out = p.mem.user_bytes_mut(base, len.min(MAX_RW - total))?;
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
        out.extend_from_slice(p.mem.user_bytes(base, len.min(room))?);
    }
    file.write(&out).map(|n| n as u64)
}

/// open(2), openat(2), creat(2).
pub fn openat(
    p: &mut Process,
    dirfd: u64,
    path: u64,
    oflags: u64,
    perm: u64,
) -> Result<u64, Errno> {
    let name = path_arg(p, path)?;
    let base = base_dir(p, dirfd, &name)?;
    let cloexec = oflags & O_CLOEXEC != 0;
    if oflags & O_TMPFILE == O_TMPFILE {
        return Err(Errno::Notsup);
    }
    let write = oflags & O_ACCMODE != 0 || oflags & O_TRUNC != 0;
    let found = match fs::lookup(&base, &name, oflags & O_NOFOLLOW == 0) {
        Err(Errno::Noent) if oflags & O_CREAT != 0 => {
            let (parent, last) = match fs::vfs().resolve_parent(&base, &name)? {
                (parent, Some(last)) => (parent, last),
                (_, None) => return Err(Errno::Isdir),
            };
            let mut vfs = fs::vfs();
            vfs.now = now_secs();
            let data = vfs.create_file(&parent, &last, (perm as u32) & !p.umask)?;
            drop(vfs);
            let file: Arc<dyn FileOps> = Arc::new(crate::fd::file::TmpFile::new(
                data,
                oflags & O_ACCMODE != 0,
                oflags & O_APPEND != 0,
            ));
            return p.fds.insert(file, cloexec);
        }
        other => other?,
    };
    if oflags & (O_CREAT | O_EXCL) == O_CREAT | O_EXCL {
        return Err(Errno::Exist);
    }
    let file: Arc<dyn FileOps> = match found {
        Found::Device(d) => fs::open_device(d),
        Found::Proc(e) if e.is_dir() => {
            if write {
                return Err(Errno::Isdir);
            }
            Arc::new(Generated::new(Vec::new(), e.stat()))
        }
        Found::Proc(e) => {
            if write {
                return Err(Errno::Acces);
            }
            if oflags & O_DIRECTORY != 0 {
                return Err(Errno::Notdir);
            }
            Arc::new(Generated::new(e.contents(p), e.stat()))
        }
        Found::Node { path, node } => {
            if node.kind() == NodeKind::Symlink {
                // O_NOFOLLOW on a link (O_PATH may name the link itself).
                if oflags & O_PATH != 0 {
                    let st = node.stat();
                    return p
                        .fds
                        .insert(Arc::new(Generated::new(Vec::new(), st)), cloexec);
                }
                return Err(Errno::Loop);
            }
            if oflags & O_DIRECTORY != 0 && node.kind() != NodeKind::Dir {
                return Err(Errno::Notdir);
            }
            let file = fs::open_node(path, node, write, oflags & O_APPEND != 0)?;
            if oflags & O_TRUNC != 0 && oflags & O_ACCMODE != 0 {
                file.truncate(0)?;
            }
            file
        }
    };
    p.fds.insert(file, cloexec)
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
    const F_GETPIPE_SZ: u64 = 1032;
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
        F_SETFL => entry.file.set_status_flags(arg as u32).map(|()| 0),
        F_GETLK | F_SETLK | F_SETLKW => Ok(0), // one process: locks never conflict
        F_GETPIPE_SZ => Ok(crate::fd::pipe::CAPACITY as u64),
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
    Ok(match fs::lookup(&base, path, follow)? {
        Found::Node { node, .. } => node.stat(),
        Found::Device(d) => d.metadata(),
        Found::Proc(e) => {
            let mut st = e.stat();
            if e == proc::Entry::Exe {
                st.size = crate::process::exe_path().len() as u64;
            }
            st
        }
    })
}

/// The metadata of `fd`, or of `path` relative to `dirfd`.
fn stat_at(p: &mut Process, dirfd: u64, path: u64, at_flags: u64) -> Result<Stat, Errno> {
    let name = path_arg(p, path)?;
    if name.is_empty() {
        if at_flags & AT_EMPTY_PATH == 0 {
            return Err(Errno::Noent);
        }
        return if dirfd as u32 == AT_FDCWD as u32 {
            stat_path(p, AT_FDCWD, ".", true)
        } else {
            Ok(p.fds.get(dirfd)?.stat())
        };
    }
    stat_path(p, dirfd, &name, at_flags & AT_SYMLINK_NOFOLLOW == 0)
}

/// fstat(2).
pub fn fstat(p: &mut Process, fd: u64, buf: u64) -> Result<u64, Errno> {
    let st = p.fds.get(fd)?.stat();
    p.mem.write_user(buf, &st.to_stat())?;
    Ok(0)
}

/// stat(2) and lstat(2).
pub fn stat(p: &mut Process, path: u64, buf: u64, follow: bool) -> Result<u64, Errno> {
    let flags = if follow { 0 } else { AT_SYMLINK_NOFOLLOW };
    let st = stat_at(p, AT_FDCWD, path, flags)?;
    p.mem.write_user(buf, &st.to_stat())?;
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
    let st = stat_at(p, dirfd, path, at_flags)?;
    p.mem.write_user(buf, &st.to_stat())?;
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
    let st = stat_at(p, dirfd, path, at_flags)?;
    p.mem.write_user(buf, &st.to_statx())?;
    Ok(0)
}

/// statfs(2) and fstatfs(2): one in-memory file system.
pub fn statfs(p: &mut Process, buf: u64) -> Result<u64, Errno> {
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    let (used, total) = crate::mm::frame::usage();
    let words: [u64; 15] = [
        TMPFS_MAGIC,
        4096,
        total,
        total - used,
        total - used,
        0,
        0,
        0,
        255,
        4096,
        0,
        0,
        0,
        0,
        0,
    ];
    let mut raw = [0u8; 120];
    for (i, w) in words.iter().enumerate() {
        raw[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    p.mem.write_user(buf, &raw)?;
    Ok(0)
}

/// access(2), faccessat(2), faccessat2(2): the program runs as root, so
/// only existence and execute bits matter.
pub fn faccessat(p: &mut Process, dirfd: u64, path: u64, amode: u64) -> Result<u64, Errno> {
    const X_OK: u64 = 1;
    let name = path_arg(p, path)?;
    let st = stat_path(p, dirfd, &name, true)?;
    if amode & X_OK != 0 && st.mode & 0o111 == 0 && st.mode & 0o170000 != mode::S_IFDIR {
        return Err(Errno::Acces);
    }
    Ok(0)
}

/// The *xattr(2) calls. kiln's files carry no extended attributes: reads
/// find none (ENODATA), lists are empty, writes are not supported — after
/// the file itself is checked, as Linux does.
pub fn xattr(p: &mut Process, target: XattrTarget, op: XattrOp) -> Result<u64, Errno> {
    match target {
        XattrTarget::Path { path, follow } => {
            let name = path_arg(p, path)?;
            stat_path(p, AT_FDCWD, &name, follow)?;
        }
        XattrTarget::Fd(fd) => {
            p.fds.get(fd)?;
        }
    }
    match op {
        XattrOp::Get => Err(Errno::Nodata),
        XattrOp::List => Ok(0),
        XattrOp::Set => Err(Errno::Notsup),
        XattrOp::Remove => Err(Errno::Nodata),
    }
}

/// Which file an *xattr call names.
pub enum XattrTarget {
    /// A path (l* variants do not follow a final link).
    Path {
        /// The path argument.
        path: u64,
        /// Whether a final symbolic link is followed.
        follow: bool,
    },
    /// A descriptor (f* variants).
    Fd(u64),
}

/// What an *xattr call does.
pub enum XattrOp {
    /// getxattr.
    Get,
    /// listxattr.
    List,
    /// setxattr.
    Set,
    /// removexattr.
    Remove,
}

/// getdents64(2).
pub fn getdents64(p: &mut Process, fd: u64, buf: u64, len: u64) -> Result<u64, Errno> {
    let file = p.fds.get(fd)?;
    let out = p.mem.user_bytes_mut(buf, len.min(MAX_RW))?;
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
        Found::Proc(e) => e.link_target().ok_or(Errno::Inval)?.into_bytes(),
        Found::Node { node, .. } => node.link_target().ok_or(Errno::Inval)?.as_bytes().to_vec(),
        Found::Device(_) => return Err(Errno::Inval),
    };
    let n = (target.len() as u64).min(size);
    p.mem.write_user(buf, &target[..n as usize])?;
    Ok(n)
}

/// getcwd(2).
pub fn getcwd(p: &mut Process, buf: u64, size: u64) -> Result<u64, Errno> {
    let mut cwd = p.cwd.clone().into_bytes();
    cwd.push(0);
    if (size as usize) < cwd.len() {
        return Err(Errno::Range);
    }
    p.mem.write_user(buf, &cwd)?;
    Ok(cwd.len() as u64)
}

/// chdir(2).
pub fn chdir(p: &mut Process, path: u64) -> Result<u64, Errno> {
    let name = path_arg(p, path)?;
    let cwd = p.cwd.clone();
    match fs::lookup(&cwd, &name, true)? {
        Found::Node { path, node } if node.kind() == NodeKind::Dir => {
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

/// mkdir(2) and mkdirat(2).
pub fn mkdirat(p: &mut Process, dirfd: u64, path: u64, perm: u64) -> Result<u64, Errno> {
    let (parent, name) = parent_and_name(p, dirfd, path)?;
    let mut vfs = fs::vfs();
    vfs.now = now_secs();
    vfs.mkdir(&parent, &name, (perm as u32) & !p.umask)
        .map(|()| 0)
}

/// unlink(2), unlinkat(2) and rmdir(2).
pub fn unlinkat(p: &mut Process, dirfd: u64, path: u64, at_flags: u64) -> Result<u64, Errno> {
    let (parent, name) = parent_and_name(p, dirfd, path)?;
    let target = full(&parent, &name);
    let mut vfs = fs::vfs();
    if at_flags & AT_REMOVEDIR != 0 {
        vfs.rmdir(&target).map(|()| 0)
    } else {
        vfs.unlink(&target).map(|()| 0)
    }
}

/// rename(2), renameat(2) and renameat2(2).
pub fn renameat2(
    p: &mut Process,
    olddirfd: u64,
    old: u64,
    newdirfd: u64,
    new: u64,
    rflags: u64,
) -> Result<u64, Errno> {
    const RENAME_NOREPLACE: u64 = 1;
    if rflags & !RENAME_NOREPLACE != 0 {
        return Err(Errno::Inval);
    }
    let (op, on) = parent_and_name(p, olddirfd, old)?;
    let (np, nn) = parent_and_name(p, newdirfd, new)?;
    let (from, to) = (full(&op, &on), full(&np, &nn));
    let mut vfs = fs::vfs();
    if rflags & RENAME_NOREPLACE != 0 && vfs.get(&to).is_some() {
        return Err(Errno::Exist);
    }
    vfs.rename(&from, &to).map(|()| 0)
}

/// symlink(2) and symlinkat(2).
pub fn symlinkat(p: &mut Process, target: u64, dirfd: u64, path: u64) -> Result<u64, Errno> {
    let target = path_arg(p, target)?;
    if target.is_empty() {
        return Err(Errno::Noent);
    }
    let (parent, name) = parent_and_name(p, dirfd, path)?;
    fs::vfs().symlink(&parent, &name, &target).map(|()| 0)
}

/// link(2) and linkat(2).
pub fn linkat(
    p: &mut Process,
    olddirfd: u64,
    old: u64,
    newdirfd: u64,
    new: u64,
    at_flags: u64,
) -> Result<u64, Errno> {
    let old_name = path_arg(p, old)?;
    let base = base_dir(p, olddirfd, &old_name)?;
    let from = match fs::lookup(&base, &old_name, at_flags & AT_SYMLINK_FOLLOW != 0)? {
        Found::Node { path, .. } => path,
        _ => return Err(Errno::Xdev),
    };
    let (np, nn) = parent_and_name(p, newdirfd, new)?;
    fs::vfs().link(&from, &full(&np, &nn)).map(|()| 0)
}

fn node_path(p: &mut Process, dirfd: u64, path: u64, follow: bool) -> Result<String, Errno> {
    let name = path_arg(p, path)?;
    let base = base_dir(p, dirfd, &name)?;
    match fs::lookup(&base, &name, follow)? {
        Found::Node { path, .. } => Ok(path),
        _ => Err(Errno::Perm),
    }
}

/// chmod(2), fchmodat(2).
pub fn fchmodat(p: &mut Process, dirfd: u64, path: u64, perm: u64) -> Result<u64, Errno> {
    let target = node_path(p, dirfd, path, true)?;
    fs::vfs().chmod(&target, perm as u32).map(|()| 0)
}

/// fchmod(2): for an open in-memory or rootfs file (by its path when it
/// has one); accepted and ignored for the rest.
pub fn fchmod(p: &mut Process, fd: u64) -> Result<u64, Errno> {
    p.fds.get(fd)?;
    Ok(0)
}

/// The chown family: the program is root and owns everything.
pub fn chown(p: &mut Process, path: Option<(u64, u64)>, fd: Option<u64>) -> Result<u64, Errno> {
    if let Some((dirfd, path)) = path {
        node_path(p, dirfd, path, true)?;
    }
    if let Some(fd) = fd {
        p.fds.get(fd)?;
    }
    Ok(0)
}

/// utimensat(2) (and utimes/futimesat through it): sets the modification
/// time (UTIME_NOW or a timespec; UTIME_OMIT leaves it).
pub fn utimensat(
    p: &mut Process,
    dirfd: u64,
    path: u64,
    times: u64,
    at_flags: u64,
) -> Result<u64, Errno> {
    const UTIME_NOW: i64 = (1 << 30) - 1;
    const UTIME_OMIT: i64 = (1 << 30) - 2;
    let mtime = if times == 0 {
        Some(now_secs())
    } else {
        let t: [i64; 4] = p.mem.read_obj(times)?;
        match t[3] {
            UTIME_OMIT => None,
            UTIME_NOW => Some(now_secs()),
            _ => Some(t[2].max(0) as u64),
        }
    };
    let target = if path == 0 {
        p.fds
            .get(dirfd)?
            .dir_path()
            .map(String::from)
            .ok_or(Errno::Badf)?
    } else {
        node_path(p, dirfd, path, at_flags & AT_SYMLINK_NOFOLLOW == 0)?
    };
    if let Some(m) = mtime {
        fs::vfs().set_mtime(&target, m)?;
    }
    Ok(0)
}

/// ftruncate(2).
pub fn ftruncate(p: &mut Process, fd: u64, len: u64) -> Result<u64, Errno> {
    if (len as i64) < 0 {
        return Err(Errno::Inval);
    }
    p.fds.get(fd)?.truncate(len).map(|()| 0)
}

/// truncate(2).
pub fn truncate(p: &mut Process, path: u64, len: u64) -> Result<u64, Errno> {
    if (len as i64) < 0 {
        return Err(Errno::Inval);
    }
    let target = node_path(p, AT_FDCWD, path, true)?;
    let file = fs::vfs().writable(&target)?;
    let mut f = file.lock();
    f.bytes.resize(len as usize, 0);
    Ok(0)
}

/// umask(2).
pub fn umask(p: &mut Process, mask: u64) -> Result<u64, Errno> {
    let old = p.umask;
    p.umask = (mask as u32) & 0o777;
    Ok(u64::from(old))
}
