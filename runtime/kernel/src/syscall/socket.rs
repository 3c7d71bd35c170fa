//! The socket calls: socket, socketpair, bind, listen, accept, connect,
//! the send and receive family (with msghdr, iovecs and SCM_RIGHTS),
//! shutdown, the names and the options. They decode the program's
//! structures and hand the work to the socket (`fd::socket`).

use alloc::sync::Arc;
use alloc::vec::Vec;

use kiln_kernel::errno::Errno;
use kiln_kernel::net::abi::{self, family, kind, level, msg, scm};
use kiln_kernel::net::addr::SockAddr;

use super::args::{Flags, UserData};
use super::io::{IoVec, MAX_RW};
use super::{Call, Outcome};
use crate::fd::socket::{unix::UnixSocket, Direction, Outgoing, Received, Rights, Socket};
use crate::fd::{Fd, FileOps};
use crate::mm::uaccess::UserPtr;
use crate::process::Process;

/// Longest socket address a program may pass.
const MAX_ADDR: u32 = 128;
/// Most control bytes one sendmsg may carry.
const MAX_CONTROL: u64 = 64 * 1024;

/// The socket behind `fd` (ENOTSOCK for other files).
fn socket_of(p: &Process, fd: Fd) -> Result<Arc<dyn FileOps>, Errno> {
    let file = p.fds.get(fd)?;
    if file.socket().is_none() {
        return Err(Errno::Notsock);
    }
    Ok(file)
}

/// Runs `f` on the socket of `file` (known to be one).
fn with_socket<T>(file: &Arc<dyn FileOps>, f: impl FnOnce(&dyn Socket) -> T) -> T {
    match file.socket() {
        Some(s) => f(s),
        None => unreachable!("checked by socket_of"),
    }
}

/// Reads a socket address the program passed.
fn read_addr(p: &mut Process, addr: UserPtr<u8>, len: u32) -> Result<SockAddr, Errno> {
    if len > MAX_ADDR {
        return Err(Errno::Inval);
    }
    let bytes = p.mem.slice(addr, len as usize)?;
    SockAddr::decode(bytes)
}

/// Writes `addr` for the program: at most `*lenp` bytes at `addr`, and
/// its full length to `*lenp` (as Linux, which truncates silently).
fn write_addr(
    p: &mut Process,
    addr: &SockAddr,
    out: UserPtr<u8>,
    lenp: UserPtr<u32>,
) -> Result<(), Errno> {
    if out.is_null() || lenp.is_null() {
        return Ok(());
    }
    let room = p.mem.read(lenp)?;
    if (room as i32) < 0 {
        return Err(Errno::Inval);
    }
    let bytes = addr.encode();
    let n = bytes.len().min(room as usize);
    p.mem.write_bytes(out, &bytes[..n])?;
    p.mem.write(lenp, bytes.len() as u32)
}

/// Installs a new socket file.
fn install(p: &mut Process, file: Arc<dyn FileOps>, flags: u32) -> Result<Fd, Errno> {
    p.fds.insert(file, flags & kind::SOCK_CLOEXEC != 0)
}

/// A new socket of `domain`, `ty` (without the flag bits) and `protocol`.
fn new_socket(
    domain: i32,
    ty: u32,
    protocol: i32,
    nonblocking: bool,
) -> Result<Arc<dyn FileOps>, Errno> {
    let domain = u16::try_from(domain).map_err(|_| Errno::Afnosupport)?;
    match domain {
        family::AF_UNIX => {
            if protocol != 0 {
                return Err(Errno::Protonosupport);
            }
            Ok(UnixSocket::new(ty, nonblocking)?)
        }
        family::AF_INET | family::AF_INET6 => {
            crate::fd::socket::inet::new(domain, ty, protocol as u32, nonblocking)
        }
        family::AF_VSOCK => crate::fd::socket::vsock::new(ty, protocol as u32, nonblocking),
        // No routing sockets: programs that look at interfaces through
        // netlink fall back to ioctls or do without.
        family::AF_NETLINK => Err(Errno::Afnosupport),
        _ => Err(Errno::Afnosupport),
    }
}

fn split_type(ty: u64) -> Result<(u32, u32), Errno> {
    let ty = ty as u32;
    let flags = ty & !kind::SOCK_TYPE_MASK;
    if flags & !(kind::SOCK_NONBLOCK | kind::SOCK_CLOEXEC) != 0 {
        return Err(Errno::Inval);
    }
    Ok((ty & kind::SOCK_TYPE_MASK, flags))
}

/// socket(2).
pub fn socket(p: &mut Call, domain: i32, ty: Flags, protocol: i32) -> Result<u64, Errno> {
    let (ty, flags) = split_type(ty.0)?;
    let file = new_socket(domain, ty, protocol, flags & kind::SOCK_NONBLOCK != 0)?;
    install(p, file, flags).map(Fd::number)
}

/// socketpair(2): AF_UNIX only, as on Linux.
pub fn socketpair(
    p: &mut Call,
    domain: i32,
    ty: Flags,
    protocol: i32,
    sv: UserPtr<[i32; 2]>,
) -> Result<u64, Errno> {
    let (ty, flags) = split_type(ty.0)?;
    if domain != i32::from(family::AF_UNIX) {
        return Err(
            if domain == i32::from(family::AF_INET) || domain == i32::from(family::AF_INET6) {
                Errno::Notsup
            } else {
                Errno::Afnosupport
            },
        );
    }
    if protocol != 0 {
        return Err(Errno::Protonosupport);
    }
    p.mem.check_writable(sv)?;
    let (a, b) = UnixSocket::pair(ty, flags & kind::SOCK_NONBLOCK != 0)?;
    let fa = install(p, a, flags)?;
    let fb = match install(p, b, flags) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = p.fds.close(fa);
            return Err(e);
        }
    };
    p.mem.write(sv, [fa.0, fb.0])?;
    Ok(0)
}

/// bind(2).
pub fn bind(p: &mut Call, fd: Fd, addr: UserPtr<u8>, len: u32) -> Result<u64, Errno> {
    let file = socket_of(p, fd)?;
    let addr = read_addr(p, addr, len)?;
    let cwd = p.cwd.clone();
    with_socket(&file, |s| s.bind(&addr, &cwd)).map(|()| 0)
}

/// listen(2): the backlog is capped like Linux's somaxconn (4096).
pub fn listen(p: &mut Call, fd: Fd, backlog: i32) -> Result<u64, Errno> {
    let file = socket_of(p, fd)?;
    let backlog = backlog.clamp(0, 4096) as usize;
    with_socket(&file, |s| s.listen(backlog)).map(|()| 0)
}

/// accept(2).
pub fn accept(p: &mut Call, fd: Fd, addr: UserPtr<u8>, lenp: UserPtr<u32>) -> Result<u64, Errno> {
    accept4(p, fd, addr, lenp, Flags(0))
}

/// accept4(2).
pub fn accept4(
    p: &mut Call,
    fd: Fd,
    addr: UserPtr<u8>,
    lenp: UserPtr<u32>,
    Flags(flags): Flags,
) -> Result<u64, Errno> {
    let flags = flags as u32;
    if flags & !(kind::SOCK_NONBLOCK | kind::SOCK_CLOEXEC) != 0 {
        return Err(Errno::Inval);
    }
    let file = socket_of(p, fd)?;
    let (conn, peer) = with_socket(&file, |s| {
        s.common().blocking(s.accept(), 0, Direction::Receive)
    })?;
    if let Some(s) = conn.socket() {
        s.common().set_nonblocking(flags & kind::SOCK_NONBLOCK != 0);
        note_first_accept(s.common().domain);
    }
    write_addr(p, &peer, addr, lenp)?;
    install(p, conn, flags).map(Fd::number)
}

/// Reports the first connection a program accepts from outside the guest
/// to the VMM (a boot-timing milestone: how long a server takes to serve).
fn note_first_accept(domain: u16) {
    use core::sync::atomic::{AtomicBool, Ordering};
    static SEEN: AtomicBool = AtomicBool::new(false);
    if domain != family::AF_UNIX && !SEEN.swap(true, Ordering::Relaxed) {
        crate::arch::platform::milestone(kiln_boot::Milestone::FirstAccept);
    }
}

/// connect(2).
pub fn connect(p: &mut Call, fd: Fd, addr: UserPtr<u8>, len: u32) -> Result<u64, Errno> {
    let file = socket_of(p, fd)?;
    let addr = read_addr(p, addr, len)?;
    let cwd = p.cwd.clone();
    with_socket(&file, |s| {
        s.common()
            .blocking(s.connect(&addr, &cwd), 0, Direction::Send)
    })
    .map(|()| 0)
}

/// shutdown(2).
pub fn shutdown(p: &mut Call, fd: Fd, how: i32) -> Result<u64, Errno> {
    let file = socket_of(p, fd)?;
    let how = u32::try_from(how).map_err(|_| Errno::Inval)?;
    with_socket(&file, |s| s.shutdown(how)).map(|()| 0)
}

/// getsockname(2).
pub fn getsockname(
    p: &mut Call,
    fd: Fd,
    addr: UserPtr<u8>,
    lenp: UserPtr<u32>,
) -> Result<u64, Errno> {
    let file = socket_of(p, fd)?;
    let name = with_socket(&file, |s| s.local_addr());
    write_addr(p, &name, addr, lenp).map(|()| 0)
}

/// getpeername(2).
pub fn getpeername(
    p: &mut Call,
    fd: Fd,
    addr: UserPtr<u8>,
    lenp: UserPtr<u32>,
) -> Result<u64, Errno> {
    let file = socket_of(p, fd)?;
    let name = with_socket(&file, |s| s.peer_addr())?;
    write_addr(p, &name, addr, lenp).map(|()| 0)
}

/// setsockopt(2).
pub fn setsockopt(
    p: &mut Call,
    fd: Fd,
    lvl: i32,
    name: i32,
    value: UserPtr<u8>,
    len: u32,
) -> Result<u64, Errno> {
    let file = socket_of(p, fd)?;
    if len > 4096 {
        return Err(Errno::Inval);
    }
    let value = p.mem.slice(value, len as usize)?.to_vec();
    let (lvl, name) = (lvl as u32, name as u32);
    with_socket(&file, |s| {
        if s.set_option(lvl, name, &value)? {
            return Ok(0);
        }
        s.common().set_option(lvl, name, &value).map(|()| 0)
    })
}

/// getsockopt(2).
pub fn getsockopt(
    p: &mut Call,
    fd: Fd,
    lvl: i32,
    name: i32,
    value: UserPtr<u8>,
    lenp: UserPtr<u32>,
) -> Result<u64, Errno> {
    let file = socket_of(p, fd)?;
    let (lvl, name) = (lvl as u32, name as u32);
    let bytes = with_socket(&file, |s| match s.get_option(lvl, name)? {
        Some(v) => Ok(v),
        None => s.common().get_option(lvl, name),
    })?;
    let room = p.mem.read(lenp)?;
    if (room as i32) < 0 {
        return Err(Errno::Inval);
    }
    let n = bytes.len().min(room as usize);
    p.mem.write_bytes(value, &bytes[..n])?;
    p.mem.write(lenp, n as u32)?;
    Ok(0)
}

/// A send's result, without SIGPIPE when MSG_NOSIGNAL says so.
fn send_outcome(result: Result<u64, Errno>, flags: u32) -> Outcome {
    match result {
        Err(Errno::Pipe) if flags & msg::MSG_NOSIGNAL != 0 => Outcome::Quiet(Err(Errno::Pipe)),
        r => Outcome::Return(r),
    }
}

/// Sends `out` on the socket of `file`, waiting as the socket says.
fn send_on(file: &Arc<dyn FileOps>, out: Outgoing<'_>, cwd: &str) -> Result<u64, Errno> {
    let flags = out.flags;
    with_socket(file, |s| {
        s.common()
            .blocking(s.send(out, cwd), flags, Direction::Send)
    })
    .map(|n| n as u64)
}

/// Receives on the socket of `file`, waiting as the socket says.
fn recv_on(file: &Arc<dyn FileOps>, buf: &mut [u8], flags: u32) -> Result<Received, Errno> {
    with_socket(file, |s| {
        s.common()
            .blocking(s.recv(buf, flags), flags, Direction::Receive)
    })
}

/// sendto(2).
pub fn sendto(
    p: &mut Call,
    fd: Fd,
    buf: UserData,
    len: u64,
    Flags(flags): Flags,
    addr: UserPtr<u8>,
    addr_len: u32,
) -> Outcome {
    let flags = flags as u32;
    let result = (|| {
        let file = socket_of(p, fd)?;
        let to = if addr.is_null() {
            None
        } else {
            Some(read_addr(p, addr, addr_len)?)
        };
        let cwd = p.cwd.clone();
        let data = p.mem.slice(buf.0, len.min(MAX_RW) as usize)?.to_vec();
        send_on(
            &file,
            Outgoing {
                data: &data,
                to,
                rights: Vec::new(),
                flags,
            },
            &cwd,
        )
    })();
    send_outcome(result, flags)
}

/// recvfrom(2).
pub fn recvfrom(
    p: &mut Call,
    fd: Fd,
    buf: UserPtr<u8>,
    len: u64,
    Flags(flags): Flags,
    addr: UserPtr<u8>,
    lenp: UserPtr<u32>,
) -> Result<u64, Errno> {
    let flags = flags as u32;
    let file = socket_of(p, fd)?;
    let mut data = alloc::vec![0u8; len.min(MAX_RW) as usize];
    let got = recv_on(&file, &mut data, flags)?;
    p.mem.write_bytes(buf, &data[..got.len])?;
    if let Some(from) = &got.from {
        write_addr(p, from, addr, lenp)?;
    } else if !lenp.is_null() && !addr.is_null() {
        // A connected stream socket reports no address.
        p.mem.write(lenp, 0)?;
    }
    Ok(reported_len(&got, flags))
}

/// The length a receive returns: the full message length with MSG_TRUNC.
fn reported_len(got: &Received, flags: u32) -> u64 {
    if flags & msg::MSG_TRUNC != 0 {
        got.full_len as u64
    } else {
        got.len as u64
    }
}

/// `struct msghdr`, as the program lays it out.
#[derive(Clone, Copy, Default)]
struct MsgHdr {
    name: u64,
    name_len: u32,
    iov: u64,
    iov_len: u64,
    control: u64,
    control_len: u64,
    flags: u32,
}

const MSGHDR_SIZE: usize = 56;

fn read_msghdr(p: &mut Process, at: UserPtr<u8>) -> Result<MsgHdr, Errno> {
    let b: [u8; MSGHDR_SIZE] = p.mem.read(at.cast())?;
    let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
    Ok(MsgHdr {
        name: word(0),
        name_len: word(8) as u32,
        iov: word(16),
        iov_len: word(24),
        control: word(32),
        control_len: word(40),
        flags: word(48) as u32,
    })
}

/// Gathers the program's iovecs into one buffer.
fn gather(p: &mut Process, iov: u64, count: u64) -> Result<Vec<u8>, Errno> {
    let mut out = Vec::new();
    for (base, len) in super::io::iovecs(p, UserPtr::<IoVec>::new(iov), count)? {
        let room = MAX_RW - out.len() as u64;
        out.extend_from_slice(p.mem.slice(base, len.min(room) as usize)?);
    }
    Ok(out)
}

/// Scatters `data` into the program's iovecs.
fn scatter(p: &mut Process, iov: u64, count: u64, data: &[u8]) -> Result<(), Errno> {
    let mut at = 0;
    for (base, len) in super::io::iovecs(p, UserPtr::<IoVec>::new(iov), count)? {
        if at >= data.len() {
            break;
        }
        let n = (len as usize).min(data.len() - at);
        p.mem.write_bytes(base, &data[at..at + n])?;
        at += n;
    }
    Ok(())
}

/// The total length of the program's iovecs.
fn iov_total(p: &mut Process, iov: u64, count: u64) -> Result<u64, Errno> {
    let mut total = 0u64;
    for (_, len) in super::io::iovecs(p, UserPtr::<IoVec>::new(iov), count)? {
        total = total.saturating_add(len);
    }
    Ok(total.min(MAX_RW))
}

/// The files of the SCM_RIGHTS messages in a control buffer.
fn rights_from_control(p: &mut Process, hdr: &MsgHdr) -> Result<Rights, Errno> {
    let mut rights = Vec::new();
    if hdr.control == 0 || hdr.control_len == 0 {
        return Ok(rights);
    }
    if hdr.control_len > MAX_CONTROL {
        return Err(Errno::Nobufs);
    }
    let control = p
        .mem
        .slice(UserPtr::new(hdr.control), hdr.control_len as usize)?
        .to_vec();
    for (lvl, ty, data) in abi::parse_cmsgs(&control)? {
        match (lvl, ty) {
            (level::SOL_SOCKET, scm::SCM_RIGHTS) => {
                for chunk in data.chunks_exact(4) {
                    let fd = i32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                    rights.push(p.fds.get(Fd(fd))?);
                }
                if rights.len() > abi::SCM_MAX_FD {
                    return Err(Errno::Inval);
                }
            }
            // Credentials are the process's own anyway.
            (level::SOL_SOCKET, scm::SCM_CREDENTIALS) => {}
            _ => return Err(Errno::Inval),
        }
    }
    Ok(rights)
}

/// One sendmsg.
fn send_one(p: &mut Process, fd: Fd, hdr: &MsgHdr, flags: u32) -> Result<u64, Errno> {
    let file = socket_of(p, fd)?;
    let to = if hdr.name == 0 {
        None
    } else {
        Some(read_addr(p, UserPtr::new(hdr.name), hdr.name_len)?)
    };
    let rights = rights_from_control(p, hdr)?;
    if !rights.is_empty() && with_socket(&file, |s| s.common().domain) != family::AF_UNIX {
        return Err(Errno::Inval);
    }
    let data = gather(p, hdr.iov, hdr.iov_len)?;
    let cwd = p.cwd.clone();
    send_on(
        &file,
        Outgoing {
            data: &data,
            to,
            rights,
            flags,
        },
        &cwd,
    )
}

/// sendmsg(2).
pub fn sendmsg(p: &mut Call, fd: Fd, msghdr: UserPtr<u8>, Flags(flags): Flags) -> Outcome {
    let flags = flags as u32;
    let result = read_msghdr(p, msghdr).and_then(|hdr| send_one(p, fd, &hdr, flags));
    send_outcome(result, flags)
}

/// One recvmsg: fills the iovecs, the name, the control buffer (SCM_RIGHTS
/// installs the passed files) and msg_flags.
fn recv_one(p: &mut Process, fd: Fd, at: UserPtr<u8>, flags: u32) -> Result<u64, Errno> {
    let mut hdr = read_msghdr(p, at)?;
    let file = socket_of(p, fd)?;
    let want = iov_total(p, hdr.iov, hdr.iov_len)?;
    let mut data = alloc::vec![0u8; want as usize];
    let got = recv_on(&file, &mut data, flags)?;
    scatter(p, hdr.iov, hdr.iov_len, &data[..got.len])?;
    let mut out_flags = 0;
    if got.full_len > got.len {
        out_flags |= msg::MSG_TRUNC;
    }
    // The sender's name.
    if hdr.name != 0 {
        let bytes = got.from.as_ref().map(SockAddr::encode).unwrap_or_default();
        let n = bytes.len().min(hdr.name_len as usize);
        p.mem
            .write_bytes(UserPtr::<u8>::new(hdr.name), &bytes[..n])?;
        hdr.name_len = bytes.len() as u32;
    }
    // Passed files become descriptors of this process.
    let mut control = Vec::new();
    let reported = reported_len(&got, flags);
    if !got.rights.is_empty() {
        let room = hdr.control_len as usize;
        let fits = room.saturating_sub(abi::CMSG_HEADER) / 4;
        let cloexec = flags & msg::MSG_CMSG_CLOEXEC != 0;
        let mut fds = Vec::new();
        for (i, f) in got.rights.into_iter().enumerate() {
            if i >= fits {
                out_flags |= msg::MSG_CTRUNC;
                break;
            }
            fds.extend_from_slice(&p.fds.insert(f, cloexec)?.0.to_le_bytes());
        }
        if !fds.is_empty() {
            control = abi::encode_cmsg(level::SOL_SOCKET, scm::SCM_RIGHTS, &fds);
            // The last message's padding may not fit; its length does.
            control.truncate(room);
        }
    }
    if !control.is_empty() {
        p.mem
            .write_bytes(UserPtr::<u8>::new(hdr.control), &control)?;
    }
    hdr.control_len = control.len() as u64;
    hdr.flags = out_flags;
    // Write back msg_namelen, msg_controllen and msg_flags.
    p.mem.write(at.byte_add::<u32>(8), hdr.name_len)?;
    p.mem.write(at.byte_add::<u64>(40), hdr.control_len)?;
    p.mem.write(at.byte_add::<u32>(48), hdr.flags)?;
    Ok(reported)
}

/// recvmsg(2).
pub fn recvmsg(
    p: &mut Call,
    fd: Fd,
    msghdr: UserPtr<u8>,
    Flags(flags): Flags,
) -> Result<u64, Errno> {
    recv_one(p, fd, msghdr, flags as u32)
}

/// `struct mmsghdr`: a msghdr and the length sent or received.
const MMSGHDR_SIZE: u64 = 64;

/// sendmmsg(2): up to `count` messages; the number sent.
pub fn sendmmsg(
    p: &mut Call,
    fd: Fd,
    vec: UserPtr<u8>,
    count: u32,
    Flags(flags): Flags,
) -> Outcome {
    let flags = flags as u32;
    let mut sent = 0u64;
    for i in 0..u64::from(count.min(1024)) {
        let at = vec.byte_add::<u8>(i * MMSGHDR_SIZE);
        let result = read_msghdr(p, at).and_then(|hdr| {
            // Later messages never wait: the call returns what went.
            send_one(
                p,
                fd,
                &hdr,
                if sent > 0 {
                    flags | msg::MSG_DONTWAIT
                } else {
                    flags
                },
            )
        });
        match result {
            Ok(n) => {
                if let Err(e) = p.mem.write(at.byte_add::<u32>(56), n as u32) {
                    return Outcome::Return(if sent > 0 { Ok(sent) } else { Err(e) });
                }
                sent += 1;
            }
            Err(_) if sent > 0 => break,
            Err(e) => return send_outcome(Err(e), flags),
        }
    }
    Outcome::Return(Ok(sent))
}

/// recvmmsg(2): waits for the first message only (the timeout is not
/// applied to the batch).
pub fn recvmmsg(
    p: &mut Call,
    fd: Fd,
    vec: UserPtr<u8>,
    count: u32,
    Flags(flags): Flags,
    _timeout: UserPtr<u8>,
) -> Result<u64, Errno> {
    let flags = flags as u32;
    let mut got = 0u64;
    for i in 0..u64::from(count.min(1024)) {
        let at = vec.byte_add::<u8>(i * MMSGHDR_SIZE);
        let f = if got > 0 {
            flags | msg::MSG_DONTWAIT
        } else {
            flags
        };
        match recv_one(p, fd, at, f) {
            Ok(n) => {
                p.mem.write(at.byte_add::<u32>(56), n as u32)?;
                got += 1;
            }
            Err(_) if got > 0 => break,
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
