//! Sockets: the [`Socket`] operations every family provides, the state
//! they share ([`Common`]: blocking mode, options), and the open-file
//! behaviour that follows from them ([`socket_file!`]). Families: local
//! sockets ([`unix`]), TCP and UDP over the kernel's IP stacks
//! ([`inet`]), and host sockets over virtio-vsock ([`vsock`]).
//!
//! Every operation that would block returns EAGAIN; [`Common::blocking`]
//! turns that into a wait (ERESTARTSYS) unless the socket or the call is
//! non-blocking, honouring SO_RCVTIMEO/SO_SNDTIMEO.

pub mod inet;
pub mod unix;
pub mod vsock;

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kiln_kernel::errno::Errno;
use kiln_kernel::fd::Wakeups;
use kiln_kernel::net::abi::{level, msg, so};
use kiln_kernel::net::addr::SockAddr;
use spin::Mutex;

use super::FileOps;

/// Open files passed with SCM_RIGHTS.
pub type Rights = Vec<Arc<dyn FileOps>>;

/// A message to send.
pub struct Outgoing<'a> {
    /// The bytes.
    pub data: &'a [u8],
    /// The destination (sendto, sendmsg), for unconnected sockets.
    pub to: Option<SockAddr>,
    /// Files to pass (AF_UNIX).
    pub rights: Rights,
    /// MSG_* flags.
    pub flags: u32,
}

/// What a receive took.
#[derive(Default)]
pub struct Received {
    /// Bytes copied.
    pub len: usize,
    /// The message's real length (longer than `len` when truncated).
    pub full_len: usize,
    /// The sender (datagram sockets).
    pub from: Option<SockAddr>,
    /// Files passed with the bytes.
    pub rights: Rights,
}

/// The operations of a socket. "Would block" is always EAGAIN here.
pub trait Socket: Send + Sync {
    /// The state every socket has.
    fn common(&self) -> &Common;

    /// bind(2); `cwd` resolves relative AF_UNIX paths.
    fn bind(&self, addr: &SockAddr, cwd: &str) -> Result<(), Errno>;

    /// listen(2).
    fn listen(&self, backlog: usize) -> Result<(), Errno> {
        let _ = backlog;
        Err(Errno::Notsup)
    }

    /// accept(2): a connection and its peer's address.
    fn accept(&self) -> Result<(Arc<dyn FileOps>, SockAddr), Errno> {
        Err(Errno::Notsup)
    }

    /// connect(2). A connection that goes on in the background returns
    /// EINPROGRESS (first call) or EALREADY (later calls), then 0 or its
    /// error once done.
    fn connect(&self, addr: &SockAddr, cwd: &str) -> Result<(), Errno>;

    /// Sends one message (or as much of a stream as fits).
    fn send(&self, out: Outgoing<'_>, cwd: &str) -> Result<usize, Errno>;

    /// Receives into `buf` (MSG_PEEK and MSG_TRUNC honoured).
    fn recv(&self, buf: &mut [u8], flags: u32) -> Result<Received, Errno>;

    /// shutdown(2).
    fn shutdown(&self, how: u32) -> Result<(), Errno>;

    /// getsockname(2).
    fn local_addr(&self) -> SockAddr;

    /// getpeername(2).
    fn peer_addr(&self) -> Result<SockAddr, Errno>;

    /// Which of the poll(2) `events` are ready.
    fn poll(&self, events: u16) -> u16;

    /// Bytes a read would take now (FIONREAD).
    fn readable_bytes(&self) -> usize;

    /// A family-specific option's value, or `None` for the common ones.
    fn get_option(&self, lvl: u32, name: u32) -> Result<Option<Vec<u8>>, Errno> {
        let _ = (lvl, name);
        Ok(None)
    }

    /// Applies a family-specific option; false leaves it to [`Common`].
    fn set_option(&self, lvl: u32, name: u32, value: &[u8]) -> Result<bool, Errno> {
        let _ = (lvl, name, value);
        Ok(false)
    }

    /// How often readers and writers were woken (epoll's edge triggering).
    fn wakeups(&self) -> Wakeups {
        let n = WAKE_GENERATION.load(Ordering::Relaxed);
        Wakeups {
            readable: n,
            writable: n,
        }
    }
}

/// Counts socket state changes (see [`Socket::wakeups`]): a socket that
/// cannot tell its own wake-ups apart reports every change anywhere, which
/// can only make an edge-triggered epoll report a ready socket once more,
/// never miss one.
static WAKE_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Notes that socket state changed and wakes threads waiting for I/O.
pub fn changed() {
    WAKE_GENERATION.fetch_add(1, Ordering::Relaxed);
    crate::sched::notify_io();
}

/// Options every socket keeps (the ones whose effect is not the family's).
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// SO_REUSEADDR.
    pub reuse_addr: bool,
    /// SO_REUSEPORT.
    pub reuse_port: bool,
    /// SO_KEEPALIVE.
    pub keepalive: bool,
    /// SO_BROADCAST.
    pub broadcast: bool,
    /// SO_PASSCRED.
    pub pass_cred: bool,
    /// SO_OOBINLINE.
    pub oob_inline: bool,
    /// SO_SNDBUF / SO_RCVBUF as reported (Linux doubles what is set).
    pub send_buffer: u32,
    /// See `send_buffer`.
    pub recv_buffer: u32,
    /// SO_LINGER: (on, seconds).
    pub linger: (i32, i32),
    /// SO_RCVTIMEO (ns; 0: none).
    pub recv_timeout: u64,
    /// SO_SNDTIMEO (ns; 0: none).
    pub send_timeout: u64,
    /// SO_RCVLOWAT.
    pub recv_lowat: i32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            reuse_addr: false,
            reuse_port: false,
            keepalive: false,
            broadcast: false,
            pass_cred: false,
            oob_inline: false,
            send_buffer: 212_992,
            recv_buffer: 212_992,
            linger: (0, 0),
            recv_timeout: 0,
            send_timeout: 0,
            recv_lowat: 1,
        }
    }
}

/// The state every socket has.
pub struct Common {
    /// The family (AF_*).
    pub domain: u16,
    /// The type (SOCK_*).
    pub kind: u32,
    /// The protocol.
    pub protocol: u32,
    nonblocking: AtomicBool,
    /// Options.
    pub options: Mutex<Options>,
}

/// Which direction a blocking operation waits for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Receiving (SO_RCVTIMEO).
    Receive,
    /// Sending or connecting (SO_SNDTIMEO).
    Send,
}

impl Common {
    /// A socket's common state.
    pub fn new(domain: u16, kind: u32, protocol: u32, nonblocking: bool) -> Self {
        Self {
            domain,
            kind,
            protocol,
            nonblocking: AtomicBool::new(nonblocking),
            options: Mutex::new(Options::default()),
        }
    }

    /// Whether the socket is non-blocking (O_NONBLOCK).
    pub fn nonblocking(&self) -> bool {
        self.nonblocking.load(Ordering::Relaxed)
    }

    /// Sets O_NONBLOCK.
    pub fn set_nonblocking(&self, on: bool) {
        self.nonblocking.store(on, Ordering::Relaxed);
    }

    /// `result` of an operation that may block: EAGAIN becomes a wait
    /// (re-run when something changes) unless the socket or `flags`
    /// (MSG_DONTWAIT) say not to wait, or the direction's timeout passed.
    pub fn blocking<T>(
        &self,
        result: Result<T, Errno>,
        flags: u32,
        dir: Direction,
    ) -> Result<T, Errno> {
        match result {
            Err(Errno::Again) if !self.nonblocking() && flags & msg::MSG_DONTWAIT == 0 => {
                let timeout = {
                    let o = self.options.lock();
                    match dir {
                        Direction::Receive => o.recv_timeout,
                        Direction::Send => o.send_timeout,
                    }
                };
                if timeout == 0 {
                    return Err(Errno::Restart);
                }
                match crate::sched::restart_deadline(Some(timeout)) {
                    Some(d) if d <= crate::time::monotonic_ns() => Err(Errno::Again),
                    _ => Err(Errno::Restart),
                }
            }
            other => other,
        }
    }

    /// A SOL_SOCKET option every socket answers the same way.
    pub fn get_option(&self, lvl: u32, name: u32) -> Result<Vec<u8>, Errno> {
        if lvl != level::SOL_SOCKET {
            return Err(Errno::Noprotoopt);
        }
        let o = *self.options.lock();
        let int = |v: i64| (v as i32).to_le_bytes().to_vec();
        let time = |ns: u64| {
            let mut v = (ns / 1_000_000_000).to_le_bytes().to_vec();
            v.extend_from_slice(&((ns % 1_000_000_000) / 1000).to_le_bytes());
            v
        };
        Ok(match name {
            so::SO_TYPE => int(i64::from(self.kind)),
            so::SO_DOMAIN => int(i64::from(self.domain)),
            so::SO_PROTOCOL => int(i64::from(self.protocol)),
            so::SO_ERROR => int(0),
            so::SO_REUSEADDR => int(i64::from(o.reuse_addr)),
            so::SO_REUSEPORT => int(i64::from(o.reuse_port)),
            so::SO_KEEPALIVE => int(i64::from(o.keepalive)),
            so::SO_BROADCAST => int(i64::from(o.broadcast)),
            so::SO_PASSCRED => int(i64::from(o.pass_cred)),
            so::SO_OOBINLINE => int(i64::from(o.oob_inline)),
            so::SO_SNDBUF => int(i64::from(o.send_buffer)),
            so::SO_RCVBUF => int(i64::from(o.recv_buffer)),
            so::SO_RCVLOWAT => int(i64::from(o.recv_lowat)),
            so::SO_SNDLOWAT => int(1),
            so::SO_ACCEPTCONN => int(0),
            so::SO_DEBUG | so::SO_DONTROUTE => int(0),
            so::SO_LINGER => {
                let mut v = o.linger.0.to_le_bytes().to_vec();
                v.extend_from_slice(&o.linger.1.to_le_bytes());
                v
            }
            so::SO_RCVTIMEO => time(o.recv_timeout),
            so::SO_SNDTIMEO => time(o.send_timeout),
            so::SO_PEERCRED => {
                // The one process, as root.
                let mut v = 1i32.to_le_bytes().to_vec();
                v.extend_from_slice(&[0; 8]);
                v
            }
            _ => return Err(Errno::Noprotoopt),
        })
    }

    /// Sets a SOL_SOCKET option every socket treats the same way.
    pub fn set_option(&self, lvl: u32, name: u32, value: &[u8]) -> Result<(), Errno> {
        if lvl != level::SOL_SOCKET {
            return Err(Errno::Noprotoopt);
        }
        let int = || -> Result<i32, Errno> {
            let b: [u8; 4] = value
                .get(..4)
                .ok_or(Errno::Inval)?
                .try_into()
                .map_err(|_| Errno::Inval)?;
            Ok(i32::from_le_bytes(b))
        };
        let time = || -> Result<u64, Errno> {
            if value.len() < 16 {
                return Err(Errno::Inval);
            }
            let secs = i64::from_le_bytes(value[..8].try_into().map_err(|_| Errno::Inval)?);
            let usecs = i64::from_le_bytes(value[8..16].try_into().map_err(|_| Errno::Inval)?);
            if secs < 0 || !(0..1_000_000).contains(&usecs) {
                return Err(Errno::Inval);
            }
            Ok((secs as u64).saturating_mul(1_000_000_000) + usecs as u64 * 1000)
        };
        let mut o = self.options.lock();
        match name {
            so::SO_REUSEADDR => o.reuse_addr = int()? != 0,
            so::SO_REUSEPORT => o.reuse_port = int()? != 0,
            so::SO_KEEPALIVE => o.keepalive = int()? != 0,
            so::SO_BROADCAST => o.broadcast = int()? != 0,
            so::SO_PASSCRED => o.pass_cred = int()? != 0,
            so::SO_OOBINLINE => o.oob_inline = int()? != 0,
            // Linux doubles the value for bookkeeping overhead, with a floor.
            so::SO_SNDBUF | so::SO_SNDBUFFORCE => {
                o.send_buffer = (int()?.max(0) as u32).saturating_mul(2).max(4608)
            }
            so::SO_RCVBUF | so::SO_RCVBUFFORCE => {
                o.recv_buffer = (int()?.max(0) as u32).saturating_mul(2).max(2304)
            }
            so::SO_RCVLOWAT => o.recv_lowat = int()?.max(1),
            so::SO_LINGER => {
                if value.len() < 8 {
                    return Err(Errno::Inval);
                }
                let on = i32::from_le_bytes(value[..4].try_into().map_err(|_| Errno::Inval)?);
                let secs = i32::from_le_bytes(value[4..8].try_into().map_err(|_| Errno::Inval)?);
                o.linger = (i32::from(on != 0), secs);
            }
            so::SO_RCVTIMEO => o.recv_timeout = time()?,
            so::SO_SNDTIMEO => o.send_timeout = time()?,
            so::SO_DEBUG | so::SO_DONTROUTE | so::SO_SNDLOWAT => {}
            _ => return Err(Errno::Noprotoopt),
        }
        Ok(())
    }
}

/// Implements [`FileOps`] for a socket type through its [`Socket`]
/// operations: read and write are receive and send, the file is S_IFSOCK.
#[macro_export]
macro_rules! socket_file {
    ($ty:ty) => {
        impl $crate::fd::FileOps for $ty {
            fn read(&self, buf: &mut [u8]) -> Result<usize, kiln_kernel::errno::Errno> {
                use $crate::fd::socket::{Direction, Socket};
                let r = Socket::recv(self, buf, 0).map(|r| r.len);
                self.common().blocking(r, 0, Direction::Receive)
            }

            fn write(&self, buf: &[u8]) -> Result<usize, kiln_kernel::errno::Errno> {
                use $crate::fd::socket::{Direction, Outgoing, Socket};
                let out = Outgoing {
                    data: buf,
                    to: None,
                    rights: alloc::vec::Vec::new(),
                    flags: 0,
                };
                let r = Socket::send(self, out, "/");
                self.common().blocking(r, 0, Direction::Send)
            }

            fn stat(&self) -> kiln_kernel::fs::stat::Stat {
                $crate::fd::socket::socket_stat(self as *const Self as usize as u64)
            }

            fn poll(&self, events: u16) -> u16 {
                $crate::fd::socket::Socket::poll(self, events)
            }

            fn pollable(&self) -> bool {
                true
            }

            fn wakeups(&self) -> kiln_kernel::fd::Wakeups {
                $crate::fd::socket::Socket::wakeups(self)
            }

            fn readable_bytes(&self) -> Option<usize> {
                Some($crate::fd::socket::Socket::readable_bytes(self))
            }

            fn status_flags(&self) -> u32 {
                use $crate::fd::socket::Socket;
                if self.common().nonblocking() {
                    $crate::fd::flags::O_RDWR | $crate::fd::flags::O_NONBLOCK
                } else {
                    $crate::fd::flags::O_RDWR
                }
            }

            fn set_status_flags(&self, f: u32) -> Result<(), kiln_kernel::errno::Errno> {
                use $crate::fd::socket::Socket;
                self.common()
                    .set_nonblocking(f & $crate::fd::flags::O_NONBLOCK != 0);
                Ok(())
            }

            fn socket(&self) -> Option<&dyn $crate::fd::socket::Socket> {
                Some(self)
            }
        }
    };
}

/// fstat of a socket: S_IFSOCK on the sockfs device, the inode from the
/// object's identity.
pub fn socket_stat(id: u64) -> kiln_kernel::fs::stat::Stat {
    use kiln_kernel::fs::stat::{mode, Stat};
    Stat {
        dev: 0x08,
        ino: (id >> 4) & 0xff_ffff,
        mode: mode::S_IFSOCK | 0o777,
        nlink: 1,
        blksize: 4096,
        ..Stat::default()
    }
}

/// An int option's value from what the program passed.
///
/// # Errors
/// EINVAL when shorter than an int.
pub fn int_value(value: &[u8]) -> Result<i32, Errno> {
    let b: [u8; 4] = value
        .get(..4)
        .ok_or(Errno::Inval)?
        .try_into()
        .map_err(|_| Errno::Inval)?;
    Ok(i32::from_le_bytes(b))
}
