//! Metadata: the stat family, statx, statfs, access checks and extended
//! attributes (none).

use kiln_kernel::errno::Errno;
use kiln_kernel::fs::stat::{mode, Stat};

use super::args::{DirFd, Flags};
use super::path::{base_dir, path_arg, AT_EMPTY_PATH, AT_SYMLINK_NOFOLLOW};
use super::Call;
use crate::fd::Fd;
use crate::fs::{self, Found};
use crate::mm::uaccess::{UserCStr, UserPtr};
use crate::process::Process;

/// The metadata a path names.
fn stat_path(p: &mut Process, dirfd: DirFd, path: &str, follow: bool) -> Result<Stat, Errno> {
    let base = base_dir(p, dirfd, path)?;
    Ok(match fs::lookup(&base, path, follow)? {
        Found::Node { node, .. } => node.stat(),
        Found::Volume(n) => n.stat,
        Found::Device(d) => d.metadata(),
        Found::Proc(e) => {
            let mut st = e.stat();
            if let Some(target) = e.link_target(Some(p)) {
                st.size = target.len() as u64;
            }
            st
        }
    })
}

/// The metadata of `dirfd` itself (an empty path with AT_EMPTY_PATH), or
/// of `path` relative to it.
fn stat_at(p: &mut Process, dirfd: DirFd, path: UserCStr, at_flags: u64) -> Result<Stat, Errno> {
    let name = path_arg(p, path)?;
    if name.is_empty() {
        if at_flags & AT_EMPTY_PATH == 0 {
            return Err(Errno::Noent);
        }
        return match dirfd {
            DirFd::Cwd => stat_path(p, DirFd::Cwd, ".", true),
            DirFd::Fd(fd) => Ok(p.fds.get(fd)?.stat()),
        };
    }
    stat_path(p, dirfd, &name, at_flags & AT_SYMLINK_NOFOLLOW == 0)
}

/// fstat(2).
pub fn fstat(p: &mut Call, fd: Fd, buf: UserPtr<u8>) -> Result<u64, Errno> {
    let st = p.fds.get(fd)?.stat();
    p.mem.write_bytes(buf, &st.to_stat())?;
    Ok(0)
}

/// stat(2).
pub fn stat(p: &mut Call, path: UserCStr, buf: UserPtr<u8>) -> Result<u64, Errno> {
    newfstatat(p, DirFd::Cwd, path, buf, Flags(0))
}

/// lstat(2).
pub fn lstat(p: &mut Call, path: UserCStr, buf: UserPtr<u8>) -> Result<u64, Errno> {
    newfstatat(p, DirFd::Cwd, path, buf, Flags(AT_SYMLINK_NOFOLLOW))
}

/// newfstatat(2).
pub fn newfstatat(
    p: &mut Call,
    dirfd: DirFd,
    path: UserCStr,
    buf: UserPtr<u8>,
    Flags(at_flags): Flags,
) -> Result<u64, Errno> {
    let st = stat_at(p, dirfd, path, at_flags)?;
    p.mem.write_bytes(buf, &st.to_stat())?;
    Ok(0)
}

/// statx(2).
pub fn statx(
    p: &mut Call,
    dirfd: DirFd,
    path: UserCStr,
    Flags(at_flags): Flags,
    _mask: u32,
    buf: UserPtr<u8>,
) -> Result<u64, Errno> {
    let st = stat_at(p, dirfd, path, at_flags)?;
    p.mem.write_bytes(buf, &st.to_statx())?;
    Ok(0)
}

/// statfs(2): a volume's numbers from its server (`-v`); otherwise the
/// one in-memory file system.
pub fn statfs(p: &mut Call, path: UserCStr, buf: UserPtr<u8>) -> Result<u64, Errno> {
    let name = path_arg(p, path)?;
    let base = base_dir(p, DirFd::Cwd, &name)?;
    let abs = fs::absolute(&base, &name);
    if let Some((mount, _)) = fs::volume::split(&abs) {
        fs::lookup(&base, &name, true)?;
        let [bsize, blocks, bfree, bavail, files, ffree, namelen, frsize] =
            fs::volume::statfs(&abs)?;
        const ST_RDONLY: u64 = 1;
        let flags = if fs::volume::mount_read_only(mount) {
            ST_RDONLY
        } else {
            0
        };
        let words: [u64; 15] = [
            fs::volume::FUSE_MAGIC,
            bsize,
            blocks,
            bfree,
            bavail,
            files,
            ffree,
            0x2a + mount as u64,
            namelen,
            frsize,
            flags,
            0,
            0,
            0,
            0,
        ];
        p.mem.write(buf.cast::<[u64; 15]>(), words)?;
        return Ok(0);
    }
    write_statfs(p, buf)
}

/// fstatfs(2): as statfs.
pub fn fstatfs(p: &mut Call, _fd: Fd, buf: UserPtr<u8>) -> Result<u64, Errno> {
    write_statfs(p, buf)
}

/// Writes the `struct statfs` of kiln's one in-memory file system.
fn write_statfs(p: &mut Process, buf: UserPtr<u8>) -> Result<u64, Errno> {
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
    p.mem.write(buf.cast::<[u64; 15]>(), words)?;
    Ok(0)
}

/// access(2).
pub fn access(p: &mut Call, path: UserCStr, amode: u32) -> Result<u64, Errno> {
    faccessat(p, DirFd::Cwd, path, amode)
}

/// faccessat2(2): the flags change nothing for root.
pub fn faccessat2(
    p: &mut Call,
    dirfd: DirFd,
    path: UserCStr,
    amode: u32,
    _flags: Flags,
) -> Result<u64, Errno> {
    faccessat(p, dirfd, path, amode)
}

/// faccessat(2): the program runs as root, so only existence and execute
/// bits matter.
pub fn faccessat(p: &mut Call, dirfd: DirFd, path: UserCStr, amode: u32) -> Result<u64, Errno> {
    const X_OK: u32 = 1;
    const W_OK: u32 = 2;
    let name = path_arg(p, path)?;
    let st = stat_path(p, dirfd, &name, true)?;
    let abs = fs::absolute(&base_dir(p, dirfd, &name)?, &name);
    if amode & W_OK != 0
        && fs::volume::split(&abs).is_some_and(|(m, _)| fs::volume::mount_read_only(m))
    {
        return Err(Errno::Rofs);
    }
    if amode & X_OK != 0 && st.mode & 0o111 == 0 && st.mode & 0o170000 != mode::S_IFDIR {
        return Err(Errno::Acces);
    }
    Ok(0)
}

// The *xattr calls. kiln's files carry no extended attributes: reads find
// none (ENODATA), lists are empty, writes are not supported — after the
// file itself is checked, as Linux does.

/// Checks the file a path names (following a final link or not).
fn xattr_path(p: &mut Process, path: UserCStr, follow: bool) -> Result<(), Errno> {
    let name = path_arg(p, path)?;
    stat_path(p, DirFd::Cwd, &name, follow).map(|_| ())
}

/// setxattr(2).
pub fn setxattr(
    p: &mut Call,
    path: UserCStr,
    _name: UserCStr,
    _value: UserPtr<u8>,
    _size: u64,
    _flags: Flags,
) -> Result<u64, Errno> {
    xattr_path(p, path, true)?;
    Err(Errno::Notsup)
}

/// lsetxattr(2).
pub fn lsetxattr(
    p: &mut Call,
    path: UserCStr,
    _name: UserCStr,
    _value: UserPtr<u8>,
    _size: u64,
    _flags: Flags,
) -> Result<u64, Errno> {
    xattr_path(p, path, false)?;
    Err(Errno::Notsup)
}

/// fsetxattr(2).
pub fn fsetxattr(
    p: &mut Call,
    fd: Fd,
    _name: UserCStr,
    _value: UserPtr<u8>,
    _size: u64,
    _flags: Flags,
) -> Result<u64, Errno> {
    p.fds.get(fd)?;
    Err(Errno::Notsup)
}

/// getxattr(2).
pub fn getxattr(
    p: &mut Call,
    path: UserCStr,
    _name: UserCStr,
    _value: UserPtr<u8>,
    _size: u64,
) -> Result<u64, Errno> {
    xattr_path(p, path, true)?;
    Err(Errno::Nodata)
}

/// lgetxattr(2).
pub fn lgetxattr(
    p: &mut Call,
    path: UserCStr,
    _name: UserCStr,
    _value: UserPtr<u8>,
    _size: u64,
) -> Result<u64, Errno> {
    xattr_path(p, path, false)?;
    Err(Errno::Nodata)
}

/// fgetxattr(2).
pub fn fgetxattr(
    p: &mut Call,
    fd: Fd,
    _name: UserCStr,
    _value: UserPtr<u8>,
    _size: u64,
) -> Result<u64, Errno> {
    p.fds.get(fd)?;
    Err(Errno::Nodata)
}

/// listxattr(2): an empty list.
pub fn listxattr(
    p: &mut Call,
    path: UserCStr,
    _list: UserPtr<u8>,
    _size: u64,
) -> Result<u64, Errno> {
    xattr_path(p, path, true)?;
    Ok(0)
}

/// llistxattr(2).
pub fn llistxattr(
    p: &mut Call,
    path: UserCStr,
    _list: UserPtr<u8>,
    _size: u64,
) -> Result<u64, Errno> {
    xattr_path(p, path, false)?;
    Ok(0)
}

/// flistxattr(2).
pub fn flistxattr(p: &mut Call, fd: Fd, _list: UserPtr<u8>, _size: u64) -> Result<u64, Errno> {
    p.fds.get(fd)?;
    Ok(0)
}

/// removexattr(2).
pub fn removexattr(p: &mut Call, path: UserCStr, _name: UserCStr) -> Result<u64, Errno> {
    xattr_path(p, path, true)?;
    Err(Errno::Nodata)
}

/// lremovexattr(2).
pub fn lremovexattr(p: &mut Call, path: UserCStr, _name: UserCStr) -> Result<u64, Errno> {
    xattr_path(p, path, false)?;
    Err(Errno::Nodata)
}

/// fremovexattr(2).
pub fn fremovexattr(p: &mut Call, fd: Fd, _name: UserCStr) -> Result<u64, Errno> {
    p.fds.get(fd)?;
    Err(Errno::Nodata)
}
