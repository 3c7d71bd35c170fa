//! Names in the file system: opening, the current directory, creating,
//! removing, renaming and linking, symbolic links, permissions and times —
//! over the overlay of `fs` and the open-file objects of `fd`. The helpers
//! here turn a `(DirFd, UserCStr)` pair into a resolved path for the other
//! file-system calls too.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use kiln_kernel::errno::Errno;
use kiln_kernel::fs::vfs::NodeKind;

use super::args::{DirFd, Flags, Mode};
use super::Call;
use crate::fd::file::Generated;
use crate::fd::{Fd, FileOps};
use crate::fs::{self, volume, Found};
use crate::mm::uaccess::{UserCStr, UserPtr};
use crate::process::Process;
use kiln_kernel::fs::fuse::{fattr, SetAttr};

pub(super) const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
const AT_REMOVEDIR: u64 = 0x200;
const AT_SYMLINK_FOLLOW: u64 = 0x400;
pub(super) const AT_EMPTY_PATH: u64 = 0x1000;
const PATH_MAX: usize = 4096;

const O_ACCMODE: u64 = 3;
const O_CREAT: u64 = 0o100;
const O_EXCL: u64 = 0o200;
const O_TRUNC: u64 = 0o1000;
const O_APPEND: u64 = 0o2000;
/// O_DSYNC (and part of O_SYNC): writes are durable when they return.
const O_DSYNC: u64 = 0o10000;
const O_DIRECTORY: u64 = 0o200000;
const O_NOFOLLOW: u64 = 0o400000;
const O_CLOEXEC: u64 = 0o2000000;
const O_PATH: u64 = 0o10000000;
const O_TMPFILE: u64 = 0o20000000 | O_DIRECTORY;

/// A path argument as a string (a name that is not UTF-8 names nothing
/// kiln's file system can hold).
pub(super) fn path_arg(p: &mut Process, path: UserCStr) -> Result<String, Errno> {
    let raw = p.mem.cstr(path, PATH_MAX)?;
    String::from_utf8(raw).map_err(|_| Errno::Noent)
}

/// The directory a `*at` call's relative path starts from.
pub(super) fn base_dir(p: &Process, dirfd: DirFd, path: &str) -> Result<String, Errno> {
    let fd = match dirfd {
        _ if path.starts_with('/') => return Ok(p.cwd.clone()),
        DirFd::Cwd => return Ok(p.cwd.clone()),
        DirFd::Fd(fd) => fd,
    };
    let file = p.fds.get(fd)?;
    file.dir_path().map(String::from).ok_or(Errno::Notdir)
}

/// The resolved parent directory and last name of a path that is to be
/// created, removed or renamed.
fn parent_and_name(
    p: &mut Process,
    dirfd: DirFd,
    path: UserCStr,
) -> Result<(String, String), Errno> {
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

/// The absolute path `path` names when it lies on a volume (`-v`).
fn volume_abs(p: &mut Process, dirfd: DirFd, path: UserCStr) -> Result<Option<String>, Errno> {
    let path = path_arg(p, path)?;
    if path.is_empty() {
        return Err(Errno::Noent);
    }
    let base = base_dir(p, dirfd, &path)?;
    let abs = fs::absolute(&base, &path);
    Ok(volume::split(&abs).is_some().then_some(abs))
}

/// What a path whose metadata is to change names.
enum Target {
    /// A node of the overlay, at this path.
    Overlay(String),
    /// A node of a volume.
    Volume(volume::VolNode),
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

/// The node a path names (EPERM for /proc and devices, which cannot be
/// changed).
fn node_target(
    p: &mut Process,
    dirfd: DirFd,
    path: UserCStr,
    follow: bool,
) -> Result<Target, Errno> {
    let name = path_arg(p, path)?;
    let base = base_dir(p, dirfd, &name)?;
    match fs::lookup(&base, &name, follow)? {
        Found::Node { path, .. } => Ok(Target::Overlay(path)),
        Found::Volume(n) => Ok(Target::Volume(n)),
        _ => Err(Errno::Perm),
    }
}

/// open(2).
pub fn open(p: &mut Call, path: UserCStr, flags: Flags, mode: Mode) -> Result<u64, Errno> {
    openat(p, DirFd::Cwd, path, flags, mode)
}

/// creat(2): open with O_CREAT | O_WRONLY | O_TRUNC.
pub fn creat(p: &mut Call, path: UserCStr, mode: Mode) -> Result<u64, Errno> {
    openat(p, DirFd::Cwd, path, Flags(O_CREAT | 1 | O_TRUNC), mode)
}

/// openat(2).
pub fn openat(
    p: &mut Call,
    dirfd: DirFd,
    path: UserCStr,
    Flags(oflags): Flags,
    Mode(perm): Mode,
) -> Result<u64, Errno> {
    let name = path_arg(p, path)?;
    let base = base_dir(p, dirfd, &name)?;
    let cloexec = oflags & O_CLOEXEC != 0;
    if oflags & O_TMPFILE == O_TMPFILE {
        return Err(Errno::Notsup);
    }
    let write = oflags & O_ACCMODE != 0 || oflags & O_TRUNC != 0;
    let found = match fs::lookup(&base, &name, oflags & O_NOFOLLOW == 0) {
        Err(Errno::Noent)
            if oflags & O_CREAT != 0 && volume::split(&fs::absolute(&base, &name)).is_some() =>
        {
            let abs = fs::absolute(&base, &name);
            let file = volume::create(&abs, oflags as u32, perm & !p.umask)?;
            return p.fds.insert(file, cloexec).map(Fd::number);
        }
        Err(Errno::Noent) if oflags & O_CREAT != 0 => {
            let (parent, last) = match fs::vfs().resolve_parent(&base, &name)? {
                (parent, Some(last)) => (parent, last),
                (_, None) => return Err(Errno::Isdir),
            };
            let mut vfs = fs::vfs();
            vfs.now = now_secs();
            let data = vfs.create_file(&parent, &last, perm & !p.umask)?;
            drop(vfs);
            let file: Arc<dyn FileOps> = Arc::new(crate::fd::file::TmpFile::new(
                data,
                oflags & O_ACCMODE != 0,
                oflags & O_APPEND != 0,
            ));
            return p.fds.insert(file, cloexec).map(Fd::number);
        }
        other => other?,
    };
    if oflags & (O_CREAT | O_EXCL) == O_CREAT | O_EXCL {
        return Err(Errno::Exist);
    }
    let file: Arc<dyn FileOps> = match found {
        Found::Volume(n) => {
            if oflags & O_DIRECTORY != 0 && n.stat.mode & 0o170000 != 0o040000 {
                return Err(Errno::Notdir);
            }
            if n.stat.mode & 0o170000 == 0o120000 {
                return Err(Errno::Loop); // O_NOFOLLOW on a link
            }
            volume::open(n, oflags as u32)?
        }
        Found::Device(d) => fs::open_device(d, write, oflags & O_DSYNC != 0)?,
        Found::Proc(e) if e.is_dir() => {
            if write {
                return Err(Errno::Isdir);
            }
            Arc::new(crate::fd::file::Listing::new(e.listing(), e.stat()))
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
                        .insert(Arc::new(Generated::new(Vec::new(), st)), cloexec)
                        .map(Fd::number);
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
    p.fds.insert(file, cloexec).map(Fd::number)
}

/// readlink(2).
pub fn readlink(p: &mut Call, path: UserCStr, buf: UserPtr<u8>, size: u64) -> Result<u64, Errno> {
    readlinkat(p, DirFd::Cwd, path, buf, size)
}

/// readlinkat(2).
pub fn readlinkat(
    p: &mut Call,
    dirfd: DirFd,
    path: UserCStr,
    buf: UserPtr<u8>,
    size: u64,
) -> Result<u64, Errno> {
    if size == 0 || size > i32::MAX as u64 {
        return Err(Errno::Inval);
    }
    let name = path_arg(p, path)?;
    let base = base_dir(p, dirfd, &name)?;
    let target: Vec<u8> = match fs::lookup(&base, &name, false)? {
        Found::Proc(e) => e.link_target(Some(p)).ok_or(Errno::Inval)?.into_bytes(),
        Found::Node { node, .. } => node.link_target().ok_or(Errno::Inval)?.as_bytes().to_vec(),
        Found::Volume(n) => volume::readlink(&n)?.into_bytes(),
        Found::Device(_) => return Err(Errno::Inval),
    };
    let n = (target.len() as u64).min(size);
    p.mem.write_bytes(buf, &target[..n as usize])?;
    Ok(n)
}

/// getcwd(2).
pub fn getcwd(p: &mut Call, buf: UserPtr<u8>, size: u64) -> Result<u64, Errno> {
    let mut cwd = p.cwd.clone().into_bytes();
    cwd.push(0);
    if (size as usize) < cwd.len() {
        return Err(Errno::Range);
    }
    p.mem.write_bytes(buf, &cwd)?;
    Ok(cwd.len() as u64)
}

/// chdir(2).
pub fn chdir(p: &mut Call, path: UserCStr) -> Result<u64, Errno> {
    let name = path_arg(p, path)?;
    let cwd = p.cwd.clone();
    match fs::lookup(&cwd, &name, true)? {
        Found::Node { path, node } if node.kind() == NodeKind::Dir => {
            p.cwd = path;
            Ok(0)
        }
        Found::Volume(n) if n.stat.mode & 0o170000 == 0o040000 => {
            p.cwd = n.path;
            Ok(0)
        }
        _ => Err(Errno::Notdir),
    }
}

/// fchdir(2).
pub fn fchdir(p: &mut Call, fd: Fd) -> Result<u64, Errno> {
    let dir = p
        .fds
        .get(fd)?
        .dir_path()
        .map(String::from)
        .ok_or(Errno::Notdir)?;
    p.cwd = dir;
    Ok(0)
}

/// mkdir(2).
pub fn mkdir(p: &mut Call, path: UserCStr, mode: Mode) -> Result<u64, Errno> {
    mkdirat(p, DirFd::Cwd, path, mode)
}

/// mkdirat(2).
pub fn mkdirat(p: &mut Call, dirfd: DirFd, path: UserCStr, Mode(perm): Mode) -> Result<u64, Errno> {
    if let Some(abs) = volume_abs(p, dirfd, path)? {
        return volume::mkdir(&abs, perm & !p.umask).map(|()| 0);
    }
    let (parent, name) = parent_and_name(p, dirfd, path)?;
    let mut vfs = fs::vfs();
    vfs.now = now_secs();
    vfs.mkdir(&parent, &name, perm & !p.umask).map(|()| 0)
}

/// unlink(2).
pub fn unlink(p: &mut Call, path: UserCStr) -> Result<u64, Errno> {
    unlinkat(p, DirFd::Cwd, path, Flags(0))
}

/// rmdir(2).
pub fn rmdir(p: &mut Call, path: UserCStr) -> Result<u64, Errno> {
    unlinkat(p, DirFd::Cwd, path, Flags(AT_REMOVEDIR))
}

/// unlinkat(2).
pub fn unlinkat(
    p: &mut Call,
    dirfd: DirFd,
    path: UserCStr,
    Flags(at_flags): Flags,
) -> Result<u64, Errno> {
    if let Some(abs) = volume_abs(p, dirfd, path)? {
        return volume::remove(&abs, at_flags & AT_REMOVEDIR != 0).map(|()| 0);
    }
    let (parent, name) = parent_and_name(p, dirfd, path)?;
    let target = full(&parent, &name);
    let mut vfs = fs::vfs();
    if at_flags & AT_REMOVEDIR != 0 {
        vfs.rmdir(&target).map(|()| 0)
    } else {
        vfs.unlink(&target).map(|()| 0)
    }
}

/// rename(2).
pub fn rename(p: &mut Call, old: UserCStr, new: UserCStr) -> Result<u64, Errno> {
    renameat2(p, DirFd::Cwd, old, DirFd::Cwd, new, Flags(0))
}

/// renameat(2).
pub fn renameat(
    p: &mut Call,
    olddirfd: DirFd,
    old: UserCStr,
    newdirfd: DirFd,
    new: UserCStr,
) -> Result<u64, Errno> {
    renameat2(p, olddirfd, old, newdirfd, new, Flags(0))
}

/// renameat2(2).
pub fn renameat2(
    p: &mut Call,
    olddirfd: DirFd,
    old: UserCStr,
    newdirfd: DirFd,
    new: UserCStr,
    Flags(rflags): Flags,
) -> Result<u64, Errno> {
    const RENAME_NOREPLACE: u64 = 1;
    if rflags & !RENAME_NOREPLACE != 0 {
        return Err(Errno::Inval);
    }
    match (volume_abs(p, olddirfd, old)?, volume_abs(p, newdirfd, new)?) {
        (Some(from), Some(to)) => {
            return volume::rename(&from, &to, rflags & RENAME_NOREPLACE != 0).map(|()| 0)
        }
        (None, None) => {}
        _ => return Err(Errno::Xdev),
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

/// symlink(2).
pub fn symlink(p: &mut Call, target: UserCStr, path: UserCStr) -> Result<u64, Errno> {
    symlinkat(p, target, DirFd::Cwd, path)
}

/// symlinkat(2).
pub fn symlinkat(
    p: &mut Call,
    target: UserCStr,
    dirfd: DirFd,
    path: UserCStr,
) -> Result<u64, Errno> {
    let target = path_arg(p, target)?;
    if target.is_empty() {
        return Err(Errno::Noent);
    }
    if let Some(abs) = volume_abs(p, dirfd, path)? {
        return volume::symlink(&target, &abs).map(|()| 0);
    }
    let (parent, name) = parent_and_name(p, dirfd, path)?;
    fs::vfs().symlink(&parent, &name, &target).map(|()| 0)
}

/// link(2).
pub fn link(p: &mut Call, old: UserCStr, new: UserCStr) -> Result<u64, Errno> {
    linkat(p, DirFd::Cwd, old, DirFd::Cwd, new, Flags(0))
}

/// linkat(2).
pub fn linkat(
    p: &mut Call,
    olddirfd: DirFd,
    old: UserCStr,
    newdirfd: DirFd,
    new: UserCStr,
    Flags(at_flags): Flags,
) -> Result<u64, Errno> {
    let old_name = path_arg(p, old)?;
    let base = base_dir(p, olddirfd, &old_name)?;
    let from = match fs::lookup(&base, &old_name, at_flags & AT_SYMLINK_FOLLOW != 0)? {
        Found::Node { path, .. } => path,
        Found::Volume(n) => {
            let to = volume_abs(p, newdirfd, new)?.ok_or(Errno::Xdev)?;
            return volume::link(&n, &to).map(|()| 0);
        }
        _ => return Err(Errno::Xdev),
    };
    if volume_abs(p, newdirfd, new)?.is_some() {
        return Err(Errno::Xdev);
    }
    let (np, nn) = parent_and_name(p, newdirfd, new)?;
    fs::vfs().link(&from, &full(&np, &nn)).map(|()| 0)
}

/// chmod(2).
pub fn chmod(p: &mut Call, path: UserCStr, mode: Mode) -> Result<u64, Errno> {
    fchmodat(p, DirFd::Cwd, path, mode)
}

/// fchmodat(2).
pub fn fchmodat(
    p: &mut Call,
    dirfd: DirFd,
    path: UserCStr,
    Mode(perm): Mode,
) -> Result<u64, Errno> {
    match node_target(p, dirfd, path, true)? {
        Target::Overlay(target) => fs::vfs().chmod(&target, perm).map(|()| 0),
        Target::Volume(n) => {
            let s = SetAttr {
                valid: fattr::MODE,
                mode: perm & 0o7777,
                ..SetAttr::default()
            };
            volume::setattr(&n, s, None).map(|()| 0)
        }
    }
}

/// fchmod(2): accepted and ignored for an open file.
pub fn fchmod(p: &mut Call, fd: Fd, _mode: Mode) -> Result<u64, Errno> {
    p.fds.get(fd)?;
    Ok(0)
}

/// chown(2) and lchown(2): the program is root and owns everything.
pub fn chown(p: &mut Call, path: UserCStr, _uid: u32, _gid: u32) -> Result<u64, Errno> {
    node_target(p, DirFd::Cwd, path, true)?;
    Ok(0)
}

/// fchown(2).
pub fn fchown(p: &mut Call, fd: Fd, _uid: u32, _gid: u32) -> Result<u64, Errno> {
    p.fds.get(fd)?;
    Ok(0)
}

/// fchownat(2).
pub fn fchownat(
    p: &mut Call,
    dirfd: DirFd,
    path: UserCStr,
    _uid: u32,
    _gid: u32,
    _flags: Flags,
) -> Result<u64, Errno> {
    node_target(p, dirfd, path, true)?;
    Ok(0)
}

/// utimensat(2) (and utimes/futimesat through it): sets the modification
/// time (UTIME_NOW or a timespec; UTIME_OMIT leaves it).
pub fn utimensat(
    p: &mut Call,
    dirfd: DirFd,
    path: UserCStr,
    times: UserPtr<[i64; 4]>,
    Flags(at_flags): Flags,
) -> Result<u64, Errno> {
    const UTIME_NOW: i64 = (1 << 30) - 1;
    const UTIME_OMIT: i64 = (1 << 30) - 2;
    let mtime = if times.is_null() {
        Some(now_secs())
    } else {
        let t = p.mem.read(times)?;
        match t[3] {
            UTIME_OMIT => None,
            UTIME_NOW => Some(now_secs()),
            _ => Some(t[2].max(0) as u64),
        }
    };
    let target = if path.is_null() {
        let DirFd::Fd(fd) = dirfd else {
            return Err(Errno::Badf);
        };
        p.fds
            .get(fd)?
            .dir_path()
            .map(String::from)
            .ok_or(Errno::Badf)?
    } else {
        match node_target(p, dirfd, path, at_flags & AT_SYMLINK_NOFOLLOW == 0)? {
            Target::Overlay(target) => target,
            Target::Volume(n) => {
                let s = SetAttr {
                    valid: if mtime.is_some() { fattr::MTIME } else { 0 },
                    mtime: (mtime.unwrap_or(0), 0),
                    ..SetAttr::default()
                };
                return volume::setattr(&n, s, None).map(|()| 0);
            }
        }
    };
    if let Some(m) = mtime {
        fs::vfs().set_mtime(&target, m)?;
    }
    Ok(0)
}

/// truncate(2).
pub fn truncate(p: &mut Call, path: UserCStr, len: i64) -> Result<u64, Errno> {
    let len = u64::try_from(len).map_err(|_| Errno::Inval)?;
    let target = match node_target(p, DirFd::Cwd, path, true)? {
        Target::Overlay(target) => target,
        Target::Volume(n) => {
            let s = SetAttr {
                valid: fattr::SIZE,
                size: len,
                ..SetAttr::default()
            };
            return volume::setattr(&n, s, None).map(|()| 0);
        }
    };
    let file = fs::vfs().writable(&target)?;
    let mut f = file.lock();
    f.bytes.resize(len as usize, 0);
    Ok(0)
}

/// umask(2).
pub fn umask(p: &mut Call, Mode(mask): Mode) -> Result<u64, Errno> {
    let old = p.umask;
    p.umask = mask & 0o777;
    Ok(u64::from(old))
}
