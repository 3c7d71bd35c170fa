//! The host side of the guest's vsock connections, Firecracker's way: one
//! Unix socket at `PATH` where host programs connect and write
//! `CONNECT <port>\n` to reach the guest's port (answered `OK <n>\n` once
//! the guest accepts), and, for a guest connecting to the host's port `P`,
//! a connection to the Unix socket `PATH_P` some host program listens on.
//!
//! The muxer owns those host sockets and an epoll of its own over them, so
//! the devices thread waits on one descriptor for all of them however many
//! come and go. It turns guest packets into socket I/O
//! ([`Muxer::from_guest`]) and socket events into packets for the guest
//! ([`Muxer::host_events`], [`Muxer::next_for_guest`]), honouring the
//! guest's credit: a connection's socket is read only while the guest has
//! room for more, and only while the guest has receive buffers.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use kiln_boot::vsock::{op, shutdown, Header, HOST_CID, TYPE_STREAM};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

/// Receive buffer of each connection on the host side (`buf_alloc`).
pub const BUFFER: u32 = 256 * 1024;
/// Most payload bytes read from a socket for one packet.
const MAX_READ: usize = 64 * 1024;
/// Longest `CONNECT <port>\n` line taken.
const MAX_LINE: usize = 32;
/// First host-side port of host-initiated connections.
const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// Why the host side could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MuxerError {
    /// The Unix socket could not be made.
    #[error("vsock: cannot listen on {path}: {source}")]
    Listen {
        /// The path asked for.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// Something already lives at the path.
    #[error("vsock: {0} exists and is not a stale socket; remove it or pick another path")]
    Exists(PathBuf),
    /// epoll failed.
    #[error("vsock: {0}")]
    Epoll(#[source] std::io::Error),
}

/// A connection: the host side's port and the guest's.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    host_port: u32,
    guest_port: u32,
}

/// What an epoll token of the muxer's stands for.
#[derive(Clone, Copy, Debug)]
enum Token {
    Listener,
    /// A host connection that has not said `CONNECT <port>` yet.
    Handshake(RawFd),
    Conn(Key),
}

/// A host program's new connection, before its `CONNECT` line.
struct Handshake {
    stream: UnixStream,
    line: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// The host connected: REQUEST sent, the guest has not answered.
    Requested,
    /// Data may flow.
    Established,
}

struct Conn {
    stream: UnixStream,
    phase: Phase,
    /// Bytes for the socket it has not taken yet.
    to_host: VecDeque<u8>,
    /// How many of them, at the front, are kiln's own (the `OK` line), not
    /// the guest's: they do not count as forwarded.
    own_bytes: usize,
    /// Bytes written to the socket (wrapping): the guest's `peer_fwd_cnt`.
    fwd_cnt: u32,
    told_fwd_cnt: u32,
    /// Bytes sent to the guest (wrapping).
    rx_cnt: u32,
    guest_buf_alloc: u32,
    guest_fwd_cnt: u32,
    /// The socket's reading side ended (SHUTDOWN SEND sent to the guest).
    host_eof: bool,
    /// SHUTDOWN flags the guest sent.
    guest_shut: u32,
    /// epoll events registered.
    interest: u32,
}

impl Conn {
    fn new(stream: UnixStream, phase: Phase, h: &Header) -> Self {
        Self {
            stream,
            phase,
            to_host: VecDeque::new(),
            own_bytes: 0,
            fwd_cnt: 0,
            told_fwd_cnt: 0,
            rx_cnt: 0,
            guest_buf_alloc: h.buf_alloc,
            guest_fwd_cnt: h.fwd_cnt,
            host_eof: false,
            guest_shut: 0,
            interest: 0,
        }
    }

    /// Bytes the guest has room for.
    fn credit(&self) -> usize {
        let in_flight = self.rx_cnt.wrapping_sub(self.guest_fwd_cnt);
        self.guest_buf_alloc.saturating_sub(in_flight) as usize
    }

    /// Writes what the socket takes of `to_host`; false when the host end
    /// is gone.
    fn flush(&mut self) -> bool {
        while !self.to_host.is_empty() {
            let (a, _) = self.to_host.as_slices();
            match self.stream.write(a) {
                Ok(0) => return false,
                Ok(n) => {
                    self.to_host.drain(..n);
                    let own = n.min(self.own_bytes);
                    self.own_bytes -= own;
                    self.fwd_cnt = self.fwd_cnt.wrapping_add((n - own) as u32);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        if self.guest_shut & shutdown::SEND != 0 {
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
        }
        true
    }
}

/// The host side of a VM's vsock device.
pub struct Muxer {
    path: PathBuf,
    guest_cid: u64,
    epoll: Epoll,
    listener: UnixListener,
    handshakes: HashMap<RawFd, Handshake>,
    conns: HashMap<Key, Conn>,
    /// Connections whose socket has bytes (or end of file) for the guest.
    readable: BTreeSet<Key>,
    /// Packets without payload for the guest, in order.
    control: VecDeque<Header>,
    /// What each watched descriptor is (its epoll token is the
    /// descriptor: each is watched once, and unwatched before it closes).
    tokens: HashMap<RawFd, Token>,
    next_local_port: u32,
    /// Unlinks `path` if kiln-vmm dies without doing it (see
    /// [`Muxer::new`]).
    _sweeper: Option<std::process::Child>,
}

impl Muxer {
    /// Listens at `path` for the host's connections to a guest of context
    /// id `guest_cid`. A stale socket file left at `path` (nothing
    /// listening) is replaced; anything else there is an error. A small
    /// `sh` waits on a pipe from kiln-vmm and removes the socket file when
    /// kiln-vmm ends however it ends (`kill -9` included).
    ///
    /// # Errors
    /// [`MuxerError`] when the socket cannot be made.
    pub fn new(path: &Path, guest_cid: u64) -> Result<Self, MuxerError> {
        if path.exists() {
            let stale = std::fs::symlink_metadata(path).is_ok_and(|m| {
                std::os::unix::fs::FileTypeExt::is_socket(&m.file_type())
                    && UnixStream::connect(path).is_err()
            });
            if !stale {
                return Err(MuxerError::Exists(path.to_path_buf()));
            }
            let _ = std::fs::remove_file(path);
        }
        let listen = |source| MuxerError::Listen {
            path: path.to_path_buf(),
            source,
        };
        let listener = UnixListener::bind(path).map_err(listen)?;
        listener.set_nonblocking(true).map_err(listen)?;
        // Its own process group and no ear for Ctrl-C: it must outlive
        // whatever ends kiln-vmm.
        let sweeper = std::process::Command::new("/bin/sh")
            .args([
                "-c",
                "trap '' INT TERM HUP; read _; rm -f -- \"$0\"",
                &path.to_string_lossy(),
            ])
            .process_group(0)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok();
        let epoll = Epoll::new().map_err(MuxerError::Epoll)?;
        let mut m = Self {
            path: path.to_path_buf(),
            guest_cid,
            epoll,
            listener,
            handshakes: HashMap::new(),
            conns: HashMap::new(),
            readable: BTreeSet::new(),
            control: VecDeque::new(),
            tokens: HashMap::new(),
            next_local_port: FIRST_LOCAL_PORT,
            _sweeper: sweeper,
        };
        let fd = m.listener.as_raw_fd();
        m.watch(fd, Token::Listener, libc::EPOLLIN as u32)
            .map_err(MuxerError::Epoll)?;
        Ok(m)
    }

    /// The guest's context id.
    pub fn guest_cid(&self) -> u64 {
        self.guest_cid
    }

    /// The descriptor the devices thread waits on: readable when a host
    /// socket has something the muxer asked about.
    pub fn fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    fn watch(&mut self, fd: RawFd, token: Token, events: u32) -> std::io::Result<()> {
        self.epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::from_bits_truncate(events), fd as u64),
        )?;
        self.tokens.insert(fd, token);
        Ok(())
    }

    /// Stops watching `fd` (before it closes) and forgets it.
    fn unwatch(&mut self, fd: RawFd) {
        let _ = self
            .epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default());
        self.tokens.remove(&fd);
    }

    /// The header of a packet of connection `key` to the guest, with the
    /// host side's credit.
    fn header(&mut self, key: Key, operation: u16, flags: u32) -> Header {
        let fwd_cnt = match self.conns.get_mut(&key) {
            Some(c) => {
                c.told_fwd_cnt = c.fwd_cnt;
                c.fwd_cnt
            }
            None => 0,
        };
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: key.host_port,
            dst_port: key.guest_port,
            len: 0,
            kind: TYPE_STREAM,
            op: operation,
            flags,
            buf_alloc: BUFFER,
            fwd_cnt,
        }
    }

    fn send_control(&mut self, key: Key, operation: u16, flags: u32) {
        let h = self.header(key, operation, flags);
        self.control.push_back(h);
    }

    /// Forgets connection `key`, closing its socket.
    fn drop_conn(&mut self, key: Key) {
        if let Some(c) = self.conns.remove(&key) {
            let fd = c.stream.as_raw_fd();
            self.unwatch(fd);
        }
        self.readable.remove(&key);
    }

    /// Ends connection `key` with a reset to the guest.
    fn reset(&mut self, key: Key) {
        self.send_control(key, op::RST, 0);
        self.drop_conn(key);
    }

    /// Brings connection `key`'s epoll registration up to date: reading
    /// while the guest has credit (and the socket is not already known to
    /// be readable), writing while bytes wait.
    fn update_interest(&mut self, key: Key) {
        let known_readable = self.readable.contains(&key);
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        let mut want = 0;
        if c.phase == Phase::Established
            && !c.host_eof
            && c.guest_shut & shutdown::RCV == 0
            && c.credit() > 0
            && !known_readable
        {
            want |= libc::EPOLLIN as u32;
        }
        if !c.to_host.is_empty() {
            want |= libc::EPOLLOUT as u32;
        }
        if want != c.interest {
            let fd = c.stream.as_raw_fd();
            let _ = self.epoll.ctl(
                ControlOperation::Modify,
                fd,
                EpollEvent::new(EventSet::from_bits_truncate(want), fd as u64),
            );
            c.interest = want;
        }
    }

    /// Takes a packet the guest sent.
    pub fn from_guest(&mut self, h: &Header, payload: &[u8]) {
        if h.src_cid != self.guest_cid || h.dst_cid != HOST_CID {
            return;
        }
        let key = Key {
            host_port: h.dst_port,
            guest_port: h.src_port,
        };
        if h.kind != TYPE_STREAM {
            if h.op != op::RST {
                self.send_control(key, op::RST, 0);
            }
            return;
        }
        if !self.conns.contains_key(&key) {
            match h.op {
                op::REQUEST => self.connect_to_host(key, h),
                op::RST => {}
                _ => self.send_control(key, op::RST, 0),
            }
            return;
        }
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        c.guest_buf_alloc = h.buf_alloc;
        c.guest_fwd_cnt = h.fwd_cnt;
        match (h.op, c.phase) {
            (op::RESPONSE, Phase::Requested) => {
                c.phase = Phase::Established;
                let line = format!("OK {}\n", key.host_port);
                c.to_host.extend(line.as_bytes());
                c.own_bytes = line.len();
                if !c.flush() {
                    self.reset(key);
                    return;
                }
            }
            (op::RW, Phase::Established) => {
                if c.to_host.len() - c.own_bytes + payload.len() > BUFFER as usize {
                    // More than the credit it was given.
                    self.reset(key);
                    return;
                }
                c.to_host.extend(payload);
                if !c.flush() {
                    self.reset(key);
                    return;
                }
                let unreported = c.fwd_cnt.wrapping_sub(c.told_fwd_cnt);
                if unreported >= BUFFER / 4 {
                    self.send_control(key, op::CREDIT_UPDATE, 0);
                }
            }
            (op::SHUTDOWN, Phase::Established) => {
                c.guest_shut |= h.flags & shutdown::BOTH;
                let flushed = c.flush();
                if c.guest_shut == shutdown::BOTH && (c.to_host.is_empty() || !flushed) {
                    self.reset(key);
                    return;
                }
            }
            (op::RST, _) => {
                self.drop_conn(key);
                return;
            }
            (op::CREDIT_REQUEST, Phase::Established) => {
                self.send_control(key, op::CREDIT_UPDATE, 0);
            }
            (op::CREDIT_UPDATE, _) => {}
            _ => {
                self.reset(key);
                return;
            }
        }
        self.update_interest(key);
    }

    /// The guest connects to host port `key.host_port`: to the Unix
    /// socket `PATH_<port>`.
    fn connect_to_host(&mut self, key: Key, h: &Header) {
        let mut target = self.path.clone().into_os_string();
        target.push(format!("_{}", key.host_port));
        let Some(stream) = connect_nonblocking(Path::new(&target)) else {
            self.send_control(key, op::RST, 0);
            return;
        };
        let fd = stream.as_raw_fd();
        self.conns
            .insert(key, Conn::new(stream, Phase::Established, h));
        if self.watch(fd, Token::Conn(key), 0).is_err() {
            self.conns.remove(&key);
            self.send_control(key, op::RST, 0);
            return;
        }
        self.send_control(key, op::RESPONSE, 0);
        self.update_interest(key);
    }

    /// Handles what the host sockets reported (the devices thread saw
    /// [`Muxer::fd`] readable).
    pub fn host_events(&mut self) {
        let mut events = vec![EpollEvent::default(); 64];
        let n = match self.epoll.wait(0, &mut events) {
            Ok(n) => n,
            Err(_) => return,
        };
        for ev in &events[..n] {
            let Some(&token) = self.tokens.get(&(ev.data() as RawFd)) else {
                continue;
            };
            let bits = ev.events();
            match token {
                Token::Listener => self.accept_host_connections(),
                Token::Handshake(fd) => self.read_connect_line(fd),
                Token::Conn(key) => {
                    if bits & (libc::EPOLLOUT as u32) != 0 {
                        let ok = self.conns.get_mut(&key).is_none_or(Conn::flush);
                        let done = self.conns.get(&key).is_some_and(|c| {
                            c.guest_shut == shutdown::BOTH && c.to_host.is_empty()
                        });
                        if !ok || done {
                            self.reset(key);
                            continue;
                        }
                        let unreported = self
                            .conns
                            .get(&key)
                            .map_or(0, |c| c.fwd_cnt.wrapping_sub(c.told_fwd_cnt));
                        if unreported > 0 {
                            self.send_control(key, op::CREDIT_UPDATE, 0);
                        }
                    }
                    if bits & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
                        self.readable.insert(key);
                    }
                    self.update_interest(key);
                }
            }
        }
    }

    fn accept_host_connections(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let fd = stream.as_raw_fd();
                    self.handshakes.insert(
                        fd,
                        Handshake {
                            stream,
                            line: Vec::new(),
                        },
                    );
                    if self
                        .watch(fd, Token::Handshake(fd), libc::EPOLLIN as u32)
                        .is_err()
                    {
                        self.handshakes.remove(&fd);
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }

    /// Reads a host connection's `CONNECT <port>\n`; a complete line sends
    /// the guest a request, a bad one closes the connection.
    fn read_connect_line(&mut self, fd: RawFd) {
        let Some(hs) = self.handshakes.get_mut(&fd) else {
            return;
        };
        let mut byte = [0u8; 1];
        // Byte by byte: what follows the line is the connection's data.
        let port = loop {
            match hs.stream.read(&mut byte) {
                Ok(1) if byte[0] == b'\n' => break parse_connect(&hs.line),
                Ok(1) if hs.line.len() < MAX_LINE => hs.line.push(byte[0]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                _ => break None,
            }
        };
        let Some(hs) = self.handshakes.remove(&fd) else {
            return;
        };
        self.unwatch(fd);
        let Some(guest_port) = port else {
            return;
        };
        let host_port = self.local_port(guest_port);
        let key = Key {
            host_port,
            guest_port,
        };
        let conn = Conn::new(hs.stream, Phase::Requested, &Header::default());
        let fd = conn.stream.as_raw_fd();
        self.conns.insert(key, conn);
        if self.watch(fd, Token::Conn(key), 0).is_err() {
            self.conns.remove(&key);
            return;
        }
        self.send_control(key, op::REQUEST, 0);
    }

    /// A host-side port no connection to `guest_port` uses.
    fn local_port(&mut self, guest_port: u32) -> u32 {
        loop {
            let p = self.next_local_port;
            self.next_local_port = p.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            let key = Key {
                host_port: p,
                guest_port,
            };
            if !self.conns.contains_key(&key) {
                return p;
            }
        }
    }

    /// Whether a packet may be waiting for the guest.
    pub fn has_packets(&self) -> bool {
        !self.control.is_empty() || !self.readable.is_empty()
    }

    /// The next packet for the guest, its payload at most `room` bytes;
    /// `None` when nothing waits.
    pub fn next_for_guest(&mut self, room: usize) -> Option<(Header, Vec<u8>)> {
        if let Some(h) = self.control.pop_front() {
            return Some((h, Vec::new()));
        }
        while let Some(&key) = self.readable.iter().next() {
            if let Some(p) = self.read_for_guest(key, room) {
                return Some(p);
            }
        }
        None
    }

    /// Reads connection `key`'s socket for the guest: data, end of file
    /// (SHUTDOWN SEND), or nothing (no longer readable, or no credit).
    fn read_for_guest(&mut self, key: Key, room: usize) -> Option<(Header, Vec<u8>)> {
        let Some(c) = self.conns.get_mut(&key) else {
            self.readable.remove(&key);
            return None;
        };
        let want = room.min(c.credit()).min(MAX_READ);
        if want == 0 || c.host_eof || c.phase != Phase::Established {
            self.readable.remove(&key);
            self.update_interest(key);
            return None;
        }
        let mut buf = vec![0u8; want];
        match c.stream.read(&mut buf) {
            Ok(0) => {
                c.host_eof = true;
                self.readable.remove(&key);
                self.update_interest(key);
                let h = self.header(key, op::SHUTDOWN, shutdown::SEND);
                Some((h, Vec::new()))
            }
            Ok(n) => {
                c.rx_cnt = c.rx_cnt.wrapping_add(n as u32);
                buf.truncate(n);
                let mut h = self.header(key, op::RW, 0);
                h.len = n as u32;
                Some((h, buf))
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                self.readable.remove(&key);
                self.update_interest(key);
                None
            }
            Err(_) => {
                self.reset(key);
                self.control.pop_back().map(|h| (h, Vec::new()))
            }
        }
    }
}

impl Drop for Muxer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The port of a `CONNECT <port>` line.
fn parse_connect(line: &[u8]) -> Option<u32> {
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    line.strip_prefix("CONNECT ")?.trim().parse().ok()
}

/// Connects to the Unix socket at `path` without waiting (a listener whose
/// queue is full refuses rather than stalling the devices thread).
fn connect_nonblocking(path: &Path) -> Option<UnixStream> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data; zeroed is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return None;
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a new descriptor this function owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `addr` is a valid sockaddr_un of the size passed.
    let rc = unsafe {
        libc::connect(
            owned.as_raw_fd(),
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    (rc == 0).then(|| UnixStream::from(owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUEST: u64 = 3;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kiln-muxer-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn from_guest(src_port: u32, dst_port: u32, operation: u16) -> Header {
        Header {
            src_cid: GUEST,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            kind: TYPE_STREAM,
            op: operation,
            buf_alloc: 64 * 1024,
            ..Header::default()
        }
    }

    /// Waits (up to a second) for the muxer's epoll to report something,
    /// then handles it.
    fn settle(m: &mut Muxer) {
        let mut pfd = libc::pollfd {
            fd: m.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 1000) };
        m.host_events();
    }

    #[test]
    fn a_host_connect_line_becomes_a_request_and_the_answer_an_ok() {
        let dir = scratch("connect");
        let path = dir.join("v.sock");
        let mut m = Muxer::new(&path, GUEST).unwrap();
        let mut host = UnixStream::connect(&path).unwrap();
        host.write_all(b"CONNECT 5000\nhello").unwrap();
        settle(&mut m);
        settle(&mut m);
        let (req, _) = m.next_for_guest(4096).unwrap();
        assert_eq!(
            (req.op, req.dst_port, req.dst_cid),
            (op::REQUEST, 5000, GUEST)
        );
        m.from_guest(&from_guest(5000, req.src_port, op::RESPONSE), &[]);
        let mut line = [0u8; 14];
        host.read_exact(&mut line).unwrap();
        assert_eq!(&line[..], format!("OK {}\n", req.src_port).as_bytes());
        settle(&mut m);
        let (rw, data) = m.next_for_guest(4096).unwrap();
        assert_eq!((rw.op, &data[..]), (op::RW, &b"hello"[..]));
        assert_eq!(rw.fwd_cnt, 0, "the OK line is not the guest's data");
        let mut rw = from_guest(5000, req.src_port, op::RW);
        rw.len = 3;
        m.from_guest(&rw, b"hey");
        let mut got = [0u8; 3];
        host.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hey");
        drop(m);
        assert!(!path.exists(), "the socket file goes with the muxer");
    }

    #[test]
    fn a_guest_connection_reaches_the_ports_socket_or_is_refused() {
        let dir = scratch("guest");
        let path = dir.join("v.sock");
        let listener = UnixListener::bind(dir.join("v.sock_6000")).unwrap();
        let mut m = Muxer::new(&path, GUEST).unwrap();
        m.from_guest(&from_guest(1024, 6000, op::REQUEST), &[]);
        let (resp, _) = m.next_for_guest(4096).unwrap();
        assert_eq!((resp.op, resp.dst_port), (op::RESPONSE, 1024));
        let (mut host, _) = listener.accept().unwrap();
        let mut rw = from_guest(1024, 6000, op::RW);
        rw.len = 2;
        m.from_guest(&rw, b"hi");
        let mut got = [0u8; 2];
        host.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");
        // The host closes: the guest hears end of file.
        drop(host);
        settle(&mut m);
        let (shut, _) = m.next_for_guest(4096).unwrap();
        assert_eq!((shut.op, shut.flags), (op::SHUTDOWN, shutdown::SEND));
        // Nobody listens on 6001.
        m.from_guest(&from_guest(1025, 6001, op::REQUEST), &[]);
        let (rst, _) = m.next_for_guest(4096).unwrap();
        assert_eq!((rst.op, rst.dst_port), (op::RST, 1025));
    }

    #[test]
    fn reading_stops_at_the_guests_credit() {
        let dir = scratch("credit");
        let path = dir.join("v.sock");
        let listener = UnixListener::bind(dir.join("v.sock_7000")).unwrap();
        let mut m = Muxer::new(&path, GUEST).unwrap();
        let mut req = from_guest(2000, 7000, op::REQUEST);
        req.buf_alloc = 10;
        m.from_guest(&req, &[]);
        m.next_for_guest(4096).unwrap();
        let (mut host, _) = listener.accept().unwrap();
        host.write_all(&[1u8; 100]).unwrap();
        settle(&mut m);
        let (rw, data) = m.next_for_guest(4096).unwrap();
        assert_eq!((rw.op, data.len()), (op::RW, 10));
        assert!(m.next_for_guest(4096).is_none(), "no credit left");
        let mut update = from_guest(2000, 7000, op::CREDIT_UPDATE);
        update.buf_alloc = 10;
        update.fwd_cnt = 10;
        m.from_guest(&update, &[]);
        settle(&mut m);
        let (_, data) = m.next_for_guest(4096).unwrap();
        assert_eq!(data.len(), 10);
    }

    #[test]
    fn bad_connect_lines_close_the_connection() {
        assert_eq!(parse_connect(b"CONNECT 52"), Some(52));
        assert_eq!(parse_connect(b"CONNECT 52\r"), Some(52));
        assert_eq!(parse_connect(b"CONNECT x"), None);
        assert_eq!(parse_connect(b"connect 52"), None);
        let dir = scratch("bad");
        let path = dir.join("v.sock");
        let mut m = Muxer::new(&path, GUEST).unwrap();
        let mut host = UnixStream::connect(&path).unwrap();
        host.write_all(b"HELLO\n").unwrap();
        settle(&mut m);
        settle(&mut m);
        let mut buf = [0u8; 1];
        assert_eq!(host.read(&mut buf).unwrap(), 0, "closed");
        assert!(!m.has_packets());
    }

    #[test]
    fn a_file_in_the_way_is_not_replaced() {
        let dir = scratch("exists");
        let path = dir.join("v.sock");
        std::fs::write(&path, "data").unwrap();
        assert!(matches!(
            Muxer::new(&path, GUEST),
            Err(MuxerError::Exists(_))
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"data");
    }
}
