//! Reading and writing open files: read, write, their positioned and
//! vectored forms, sendfile, seeking, directory listings, truncation and
//! the sync family.

use alloc::vec::Vec;

use kiln_kernel::errno::Errno;

use super::args::UserData;
use super::Call;
use crate::fd::Fd;
use crate::mm::uaccess::UserPtr;
use crate::process::Process;

/// Linux caps one read/write at this many bytes.
pub(super) const MAX_RW: u64 = 0x7fff_f000;

/// `struct iovec { void *base; size_t len; }`.
pub type IoVec = [u64; 2];

/// Most iovecs one call takes (UIO_MAXIOV).
const IOV_MAX: u64 = 1024;

/// read(2).
pub fn read(p: &mut Call, fd: Fd, buf: UserPtr<u8>, count: u64) -> Result<u64, Errno> {
    let file = p.fds.get(fd)?;
    let out = p.mem.slice_mut(buf, count.min(MAX_RW) as usize)?;
    file.read(out).map(|n| n as u64)
}

/// write(2).
pub fn write(p: &mut Call, fd: Fd, buf: UserData, count: u64) -> Result<u64, Errno> {
    let file = p.fds.get(fd)?;
    let data = p.mem.slice(buf.0, count.min(MAX_RW) as usize)?;
    file.write(data).map(|n| n as u64)
}

/// pread64(2).
pub fn pread64(
    p: &mut Call,
    fd: Fd,
    buf: UserPtr<u8>,
    count: u64,
    offset: i64,
) -> Result<u64, Errno> {
    let offset = u64::try_from(offset).map_err(|_| Errno::Inval)?;
    let file = p.fds.get(fd)?;
    let out = p.mem.slice_mut(buf, count.min(MAX_RW) as usize)?;
    file.pread(out, offset).map(|n| n as u64)
}

/// pwrite64(2).
pub fn pwrite64(
    p: &mut Call,
    fd: Fd,
    buf: UserData,
    count: u64,
    offset: i64,
) -> Result<u64, Errno> {
    let offset = u64::try_from(offset).map_err(|_| Errno::Inval)?;
    let file = p.fds.get(fd)?;
    let data = p.mem.slice(buf.0, count.min(MAX_RW) as usize)?;
    file.pwrite(data, offset).map(|n| n as u64)
}

/// sendfile(2): copies up to `count` bytes from `input` (at `*offset`
/// when given, which is then advanced, else at its file offset) to `out`.
pub fn sendfile(
    p: &mut Call,
    out: Fd,
    input: Fd,
    offset: UserPtr<i64>,
    count: u64,
) -> Result<u64, Errno> {
    let input = p.fds.get(input)?;
    let output = p.fds.get(out)?;
    let mut at = match offset.non_null() {
        Some(ptr) => Some(u64::try_from(p.mem.read(ptr)?).map_err(|_| Errno::Inval)?),
        None => None,
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
        p.mem.write(offset, *o as i64)?;
    }
    Ok(done)
}

/// The program's iovec array, as (base, length) pairs.
pub(super) fn iovecs(
    p: &mut Process,
    iov: UserPtr<IoVec>,
    count: u64,
) -> Result<Vec<(UserPtr<u8>, u64)>, Errno> {
    if count > IOV_MAX {
        return Err(Errno::Inval);
    }
    let mut v = Vec::with_capacity(count as usize);
    for i in 0..count as usize {
        let [base, len] = p.mem.read(iov.add(i))?;
        if len > isize::MAX as u64 {
            return Err(Errno::Inval);
        }
        v.push((UserPtr::new(base), len));
    }
    Ok(v)
}

/// readv(2). A socket reads once into all the buffers (a datagram must
/// not be cut at the first one); other files are read buffer by buffer
/// until one comes back short.
pub fn readv(p: &mut Call, fd: Fd, iov: UserPtr<IoVec>, count: u64) -> Result<u64, Errno> {
    let file = p.fds.get(fd)?;
    let iovs = iovecs(p, iov, count)?;
    if file.socket().is_some() {
        let want: u64 = iovs.iter().map(|&(_, l)| l).fold(0, u64::saturating_add);
        let mut buf = alloc::vec![0u8; want.min(MAX_RW) as usize];
        let n = file.read(&mut buf)?;
        let mut at = 0;
        for (base, len) in iovs {
            let take = (len as usize).min(n - at);
            p.mem.write_bytes(base, &buf[at..at + take])?;
            at += take;
            if at == n {
                break;
            }
        }
        return Ok(n as u64);
    }
    let mut total = 0u64;
    for (base, len) in iovs {
        let out = p.mem.slice_mut(base, len.min(MAX_RW - total) as usize)?;
        let n = match file.read(out) {
            Ok(n) => n as u64,
            // What was read stays read: report it, not the later error.
            Err(_) if total > 0 => break,
            Err(e) => return Err(e),
        };
        total += n;
        if n < len {
            break;
        }
    }
    Ok(total)
}

/// writev(2): gathered into one write (for the console, one exit).
pub fn writev(p: &mut Call, fd: Fd, iov: UserPtr<IoVec>, count: u64) -> Result<u64, Errno> {
    let file = p.fds.get(fd)?;
    let mut out = Vec::new();
    for (base, len) in iovecs(p, iov, count)? {
        let room = MAX_RW - out.len() as u64;
        out.extend_from_slice(p.mem.slice(base, len.min(room) as usize)?);
    }
    file.write(&out).map(|n| n as u64)
}

/// lseek(2).
pub fn lseek(p: &mut Call, fd: Fd, offset: i64, whence: u32) -> Result<u64, Errno> {
    p.fds.get(fd)?.seek(offset, whence)
}

/// getdents64(2).
pub fn getdents64(p: &mut Call, fd: Fd, buf: UserPtr<u8>, count: u64) -> Result<u64, Errno> {
    let file = p.fds.get(fd)?;
    let out = p.mem.slice_mut(buf, count.min(MAX_RW) as usize)?;
    file.getdents(out).map(|n| n as u64)
}

/// ftruncate(2).
pub fn ftruncate(p: &mut Call, fd: Fd, len: i64) -> Result<u64, Errno> {
    let len = u64::try_from(len).map_err(|_| Errno::Inval)?;
    p.fds.get(fd)?.truncate(len).map(|()| 0)
}

/// fsync(2), fdatasync(2), syncfs(2): what the file wrote is made durable
/// (a disk's or a volume's host file flushed; in-memory files have
/// nothing to write back).
pub fn fsync(p: &mut Call, fd: Fd) -> Result<u64, Errno> {
    p.fds.get(fd)?.sync().map(|()| 0)
}

/// sync_file_range(2): the range is flushed with the rest of the file
/// (more than Linux promises, never less).
pub fn sync_file_range(
    p: &mut Call,
    fd: Fd,
    offset: i64,
    len: i64,
    _flags: super::args::Flags,
) -> Result<u64, Errno> {
    if offset < 0 || len < 0 {
        return Err(Errno::Inval);
    }
    p.fds.get(fd)?.sync().map(|()| 0)
}

/// sync(2): every disk flushed.
pub fn sync(_p: &mut Call) -> Result<u64, Errno> {
    for i in 0..crate::drivers::virtio::blk::count() {
        // sync(2) cannot fail; a disk that does is reported by fsync.
        let _ = crate::drivers::virtio::blk::with(i, crate::drivers::virtio::blk::BlkDriver::flush);
    }
    Ok(0)
}

/// fadvise64(2): advice is accepted for any open file.
pub fn fadvise64(
    p: &mut Call,
    fd: Fd,
    _offset: i64,
    _len: i64,
    _advice: u32,
) -> Result<u64, Errno> {
    p.fds.get(fd).map(|_| 0)
}

/// fallocate(2): files on a volume pass it to the host; the in-memory
/// files do not support it.
pub fn fallocate(
    p: &mut Call,
    fd: Fd,
    super::args::Flags(mode): super::args::Flags,
    offset: i64,
    len: i64,
) -> Result<u64, Errno> {
    let offset = u64::try_from(offset).map_err(|_| Errno::Inval)?;
    let len = u64::try_from(len)
        .ok()
        .filter(|&l| l > 0)
        .ok_or(Errno::Inval)?;
    p.fds
        .get(fd)?
        .allocate(mode as u32, offset, len)
        .map(|()| 0)
}
