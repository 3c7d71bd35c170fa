//! TCP and UDP sockets (AF_INET, AF_INET6) over the kernel's smoltcp
//! interfaces (`crate::net`). An AF_INET6 socket takes IPv4 too (as
//! IPv4-mapped addresses) unless IPV6_V6ONLY.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use kiln_kernel::errno::Errno;
use kiln_kernel::fd::poll;
use kiln_kernel::net::abi::{family, ipv6, kind, level, msg, proto, shut, so, tcp as tcpopt};
use kiln_kernel::net::addr::{unmapped, SockAddr};
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::IpAddress;
use spin::Mutex;

use super::{changed, Common, Outgoing, Received, Socket};
use crate::fd::FileOps;
use crate::net::{self, Handle, Listener, Net, Proto};

/// Buffer bytes of a TCP connection, each way.
const TCP_BUFFER: usize = 128 * 1024;
/// Payload bytes a UDP socket queues each way.
const UDP_BUFFER: usize = 208 * 1024;
/// The largest UDP payload.
const UDP_MAX: usize = 65507;

/// POLLRDHUP.
const POLLRDHUP: u16 = 0x2000;

/// A new TCP or UDP socket.
///
/// # Errors
/// EPROTONOSUPPORT for a protocol that is not the type's, ESOCKTNOSUPPORT
/// for raw and other types.
pub fn new(
    domain: u16,
    ty: u32,
    protocol: u32,
    nonblocking: bool,
) -> Result<Arc<dyn FileOps>, Errno> {
    let v6 = domain == family::AF_INET6;
    match (ty, protocol) {
        (kind::SOCK_STREAM, proto::IPPROTO_IP | proto::IPPROTO_TCP) => Ok(Arc::new(TcpSocket {
            id: net::new_id(),
            common: Common::new(domain, ty, proto::IPPROTO_TCP, nonblocking),
            v6,
            state: Mutex::new(Tcp::default()),
        })),
        (kind::SOCK_DGRAM, proto::IPPROTO_IP | proto::IPPROTO_UDP) => Ok(Arc::new(UdpSocket {
            id: net::new_id(),
            common: Common::new(domain, ty, proto::IPPROTO_UDP, nonblocking),
            v6,
            state: Mutex::new(Udp::default()),
        })),
        (kind::SOCK_STREAM | kind::SOCK_DGRAM, _) => Err(Errno::Protonosupport),
        _ => Err(Errno::Socktnosupport),
    }
}

/// Runs `f` on the network, then moves packets (and wakes waiters when
/// something changed).
fn net_op<R>(f: impl FnOnce(&mut Net) -> R) -> Result<R, Errno> {
    let (r, changed_any) = net::with(|n| {
        let r = f(n);
        (r, n.poll())
    })
    .ok_or(Errno::Netdown)?;
    if changed_any {
        changed();
    }
    Ok(r)
}

/// Reads the network without moving packets.
fn net_look<R>(f: impl FnOnce(&mut Net) -> R) -> Option<R> {
    net::with(f)
}

/// The address the program sees for `addr`: IPv4 as IPv4-mapped IPv6 on an
/// AF_INET6 socket.
fn shown(v6: bool, addr: SocketAddr) -> SockAddr {
    match (v6, addr) {
        (true, SocketAddr::V4(a)) => SockAddr::Ip(SocketAddr::V6(SocketAddrV6::new(
            a.ip().to_ipv6_mapped(),
            a.port(),
            0,
            0,
        ))),
        (_, a) => SockAddr::Ip(a),
    }
}

fn endpoint_addr(e: smoltcp::wire::IpEndpoint) -> SocketAddr {
    SocketAddr::new(e.addr.into(), e.port)
}

/// The unspecified address of the socket's family.
fn any(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
}

/// An address the program passed, checked against the socket's family.
fn ip_addr(v6: bool, v6_only: bool, addr: &SockAddr) -> Result<SocketAddr, Errno> {
    match addr {
        SockAddr::Ip(a @ SocketAddr::V4(_)) if !v6 => Ok(*a),
        SockAddr::Ip(SocketAddr::V6(a)) if v6 => {
            let ip = IpAddr::V6(*a.ip());
            let plain = unmapped(ip);
            if plain.is_ipv4() && v6_only {
                return Err(Errno::Netunreach);
            }
            Ok(SocketAddr::new(plain, a.port()))
        }
        SockAddr::Ip(_) => Err(if v6 { Errno::Inval } else { Errno::Afnosupport }),
        _ => Err(Errno::Afnosupport),
    }
}

/// Reserves `addr`'s port (0: an ephemeral one) for socket `id` with its
/// sharing options; returns the port.
///
/// # Errors
/// EADDRNOTAVAIL for an address that is not this machine's, EADDRINUSE.
fn reserve(
    common: &Common,
    id: u64,
    n: &mut Net,
    proto: Proto,
    addr: SocketAddr,
    v6_only: bool,
) -> Result<u16, Errno> {
    let ip = addr.ip();
    if !ip.is_unspecified() && !n.is_local(ip) {
        return Err(Errno::Addrnotavail);
    }
    let (reuse_addr, reuse_port) = {
        let o = common.options.lock();
        (o.reuse_addr, o.reuse_port)
    };
    n.bind(id, proto, ip, addr.port(), reuse_addr, reuse_port, v6_only)
}

/// Linux's reported buffer size for a requested one.
fn buffer_bytes(reported: u32) -> usize {
    ((reported / 2) as usize).clamp(4096, 4 << 20)
}

// ---------------------------------------------------------------- TCP --

#[derive(Default)]
enum TcpState {
    #[default]
    Unbound,
    Bound,
    Listening(u64),
    Connecting(Handle),
    Connected(Handle),
}

#[derive(Default)]
struct Tcp {
    state: TcpState,
    /// The bound address and port.
    local: Option<SocketAddr>,
    /// shutdown(SHUT_RD).
    read_shut: bool,
    /// The peer reset the connection (reported once).
    reset_reported: bool,
    nodelay: bool,
    /// TCP_CORK: output waits in the socket until uncorked (or the buffer
    /// fills), so a header and a body written apart leave as one segment —
    /// one frame and one device kick instead of two.
    cork: bool,
    v6_only: bool,
    keepalive_idle: Option<u32>,
}

/// A TCP socket.
pub struct TcpSocket {
    id: u64,
    common: Common,
    v6: bool,
    state: Mutex<Tcp>,
}

crate::socket_file!(TcpSocket);

impl TcpSocket {
    fn buffers(&self) -> (usize, usize) {
        let o = self.common.options.lock();
        if o.recv_buffer == super::Options::default().recv_buffer
            && o.send_buffer == super::Options::default().send_buffer
        {
            return (TCP_BUFFER, TCP_BUFFER);
        }
        (buffer_bytes(o.recv_buffer), buffer_bytes(o.send_buffer))
    }

    /// Binds `t` to `addr` (port 0: ephemeral).
    fn bind_locked(&self, t: &mut Tcp, n: &mut Net, addr: SocketAddr) -> Result<(), Errno> {
        if t.local.is_some() {
            return Err(Errno::Inval);
        }
        let ip = addr.ip();
        let port = reserve(&self.common, self.id, n, Proto::Tcp, addr, t.v6_only)?;
        t.local = Some(SocketAddr::new(ip, port));
        if matches!(t.state, TcpState::Unbound) {
            t.state = TcpState::Bound;
        }
        Ok(())
    }

    /// A connect that finished in the background makes the socket
    /// connected (for poll, reads and writes).
    fn settle(t: &mut Tcp) {
        if let TcpState::Connecting(h) = t.state {
            let state = net_look(|n| n.tcp(h).state());
            if !matches!(
                state,
                Some(tcp::State::SynSent | tcp::State::SynReceived | tcp::State::Closed) | None
            ) {
                t.state = TcpState::Connected(h);
            }
        }
    }

    /// Where a connect attempt stands.
    fn connect_progress(&self, t: &mut Tcp, h: Handle) -> Result<(), Errno> {
        let state = net_look(|n| n.tcp(h).state()).ok_or(Errno::Netdown)?;
        match state {
            tcp::State::SynSent | tcp::State::SynReceived => {
                if self.common.nonblocking() {
                    Err(Errno::Already)
                } else {
                    Err(Errno::Again)
                }
            }
            tcp::State::Closed => {
                net_look(|n| n.remove(h));
                t.state = TcpState::Bound;
                Err(Errno::Connrefused)
            }
            _ => {
                t.state = TcpState::Connected(h);
                Ok(())
            }
        }
    }
}

impl Drop for TcpSocket {
    fn drop(&mut self) {
        let t = core::mem::take(&mut *self.state.lock());
        let (linger_zero, reuse_addr) = {
            let o = self.common.options.lock();
            (o.linger.0 != 0 && o.linger.1 == 0, o.reuse_addr)
        };
        let _ = net_op(|n| {
            match t.state {
                TcpState::Listening(id) => n.stop_listening(id),
                TcpState::Connecting(h) | TcpState::Connected(h) => {
                    let s = n.tcp(h);
                    // Unread data or SO_LINGER 0: reset, as Linux does.
                    if s.recv_queue() > 0 || linger_zero {
                        s.abort();
                    } else {
                        s.close();
                    }
                    n.orphan(h, reuse_addr);
                }
                _ => {}
            }
            n.unbind(self.id);
        });
        changed();
    }
}

impl Socket for TcpSocket {
    fn common(&self) -> &Common {
        &self.common
    }

    fn bind(&self, addr: &SockAddr, _cwd: &str) -> Result<(), Errno> {
        let mut t = self.state.lock();
        let addr = ip_addr(self.v6, t.v6_only, addr)?;
        let t = &mut *t;
        net_look(|n| self.bind_locked(t, n, addr)).ok_or(Errno::Netdown)?
    }

    fn listen(&self, backlog: usize) -> Result<(), Errno> {
        let mut t = self.state.lock();
        let t = &mut *t;
        match t.state {
            TcpState::Unbound | TcpState::Bound => {}
            TcpState::Listening(id) => {
                net_look(|n| {
                    if let Some(l) = n.listeners.get_mut(&id) {
                        l.backlog = backlog;
                    }
                });
                return Ok(());
            }
            _ => return Err(Errno::Inval),
        }
        let buffers = self.buffers();
        let any = any(self.v6);
        net_op(|n| {
            if t.local.is_none() {
                self.bind_locked(t, n, SocketAddr::new(any, 0))?;
            }
            let local = t.local.ok_or(Errno::Inval)?;
            n.set_listening(self.id);
            n.listeners.insert(
                self.id,
                Listener {
                    local,
                    v6_only: t.v6_only,
                    backlog,
                    pending: alloc::collections::VecDeque::new(),
                    buffers,
                    nodelay: t.nodelay,
                },
            );
            t.state = TcpState::Listening(self.id);
            Ok(())
        })?
    }

    fn accept(&self) -> Result<(Arc<dyn FileOps>, SockAddr), Errno> {
        let (id, nodelay, v6_only) = {
            let t = self.state.lock();
            match t.state {
                TcpState::Listening(id) => (id, t.nodelay, t.v6_only),
                _ => return Err(Errno::Inval),
            }
        };
        let (h, remote, local) = net_op(|n| {
            let h = n.accept(id)?;
            let s = n.tcp(h);
            Some((h, s.remote_endpoint()?, s.local_endpoint()?))
        })?
        .ok_or(Errno::Again)?;
        let remote = endpoint_addr(remote);
        let conn = TcpSocket {
            id: net::new_id(),
            common: Common::new(
                self.common.domain,
                kind::SOCK_STREAM,
                proto::IPPROTO_TCP,
                false,
            ),
            v6: self.v6,
            state: Mutex::new(Tcp {
                state: TcpState::Connected(h),
                local: Some(endpoint_addr(local)),
                nodelay,
                v6_only,
                ..Tcp::default()
            }),
        };
        *conn.common.options.lock() = *self.common.options.lock();
        Ok((Arc::new(conn), shown(self.v6, remote)))
    }

    fn connect(&self, addr: &SockAddr, _cwd: &str) -> Result<(), Errno> {
        let mut t = self.state.lock();
        let t = &mut *t;
        match t.state {
            // A connect in progress: done (0, once), still going, or failed.
            TcpState::Connecting(h) => return self.connect_progress(t, h),
            TcpState::Connected(_) => return Err(Errno::Isconn),
            TcpState::Listening(_) => return Err(Errno::Inval),
            TcpState::Unbound | TcpState::Bound => {}
        }
        if matches!(addr, SockAddr::Unspec) {
            return Ok(());
        }
        let remote = ip_addr(self.v6, t.v6_only, addr)?;
        if remote.ip().is_unspecified() {
            // Linux connects to the loopback address then.
            return Err(Errno::Connrefused);
        }
        let buffers = self.buffers();
        let nodelay = t.nodelay;
        let keepalive = self.common.options.lock().keepalive;
        let h = net_op(|n| -> Result<Handle, Errno> {
            let stack = n.stack_for(remote.ip())?;
            if t.local.is_none() {
                let any = if remote.is_ipv4() {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                } else {
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                };
                self.bind_locked(t, n, SocketAddr::new(any, 0))?;
            }
            let local = t.local.ok_or(Errno::Inval)?;
            let local = SocketAddr::new(unmapped(local.ip()), local.port());
            let h = n.add_tcp(stack, buffers.0, buffers.1);
            n.tcp(h).set_nagle_enabled(!nodelay);
            if keepalive {
                n.tcp(h)
                    .set_keep_alive(Some(smoltcp::time::Duration::from_secs(75)));
            }
            if let Err(e) = n.tcp_connect(h, remote, local) {
                n.remove(h);
                return Err(e);
            }
            Ok(h)
        })??;
        t.state = TcpState::Connecting(h);
        if self.common.nonblocking() {
            return Err(Errno::Inprogress);
        }
        self.connect_progress(t, h)
    }

    fn send(&self, out: Outgoing<'_>, _cwd: &str) -> Result<usize, Errno> {
        let mut t = self.state.lock();
        Self::settle(&mut t);
        let h = match t.state {
            TcpState::Connected(h) => h,
            TcpState::Connecting(_) => return Err(Errno::Again),
            _ => return Err(Errno::Pipe),
        };
        if out.to.is_some() {
            // Linux ignores the address on a connected stream socket.
        }
        if out.data.is_empty() {
            return Ok(0);
        }
        let queue = |n: &mut Net| {
            let s = n.tcp(h);
            if !s.may_send() {
                return Err(Errno::Pipe);
            }
            match s.send_slice(out.data) {
                Ok(0) => Err(Errno::Again),
                Ok(n) => Ok(n),
                Err(_) => Err(Errno::Pipe),
            }
        };
        // Corked (or MSG_MORE): queue without moving packets; a full
        // buffer is sent as it would be uncorked.
        if t.cork || out.flags & msg::MSG_MORE != 0 {
            match net_look(queue).ok_or(Errno::Netdown)? {
                Err(Errno::Again) => {}
                other => return other,
            }
        }
        net_op(queue)?
    }

    fn recv(&self, buf: &mut [u8], flags: u32) -> Result<Received, Errno> {
        let mut t = self.state.lock();
        Self::settle(&mut t);
        let h = match t.state {
            TcpState::Connected(h) => h,
            TcpState::Connecting(_) => return Err(Errno::Again),
            _ => return Err(Errno::Notconn),
        };
        if t.read_shut {
            return Ok(Received::default());
        }
        let peek = flags & msg::MSG_PEEK != 0;
        let waitall = flags & msg::MSG_WAITALL != 0;
        let r = net_op(|n| {
            let s = n.tcp(h);
            if s.can_recv() {
                let ready = s.recv_queue();
                if waitall && ready < buf.len() && s.may_recv() && !peek {
                    return Err(Errno::Again);
                }
                let got = if peek {
                    s.peek_slice(buf)
                } else {
                    s.recv_slice(buf)
                };
                return got.map_err(|_| Errno::Connreset);
            }
            if !s.may_recv() {
                // The peer's FIN, or a reset.
                return if s.state() == tcp::State::Closed {
                    Err(Errno::Connreset)
                } else {
                    Ok(0)
                };
            }
            Err(Errno::Again)
        })?;
        match r {
            Err(Errno::Connreset) if t.reset_reported => Ok(Received::default()),
            Err(Errno::Connreset) => {
                t.reset_reported = true;
                Err(Errno::Connreset)
            }
            Err(e) => Err(e),
            Ok(len) => Ok(Received {
                len,
                full_len: len,
                ..Received::default()
            }),
        }
    }

    fn shutdown(&self, how: u32) -> Result<(), Errno> {
        if how > shut::SHUT_RDWR {
            return Err(Errno::Inval);
        }
        let mut t = self.state.lock();
        let h = match t.state {
            TcpState::Connected(h) => h,
            TcpState::Listening(id) if how != shut::SHUT_WR => {
                // Wakes a blocked accept (which then fails), as on Linux.
                net_op(|n| n.stop_listening(id))?;
                t.state = TcpState::Bound;
                return Ok(());
            }
            _ => return Err(Errno::Notconn),
        };
        if how != shut::SHUT_WR {
            t.read_shut = true;
        }
        if how != shut::SHUT_RD {
            net_op(|n| n.tcp(h).close())?;
        }
        changed();
        Ok(())
    }

    fn local_addr(&self) -> SockAddr {
        let t = self.state.lock();
        let live = match t.state {
            TcpState::Connected(h) | TcpState::Connecting(h) => {
                net_look(|n| n.tcp(h).local_endpoint())
                    .flatten()
                    .map(endpoint_addr)
            }
            _ => None,
        };
        let addr = live
            .or(t.local)
            .unwrap_or_else(|| SocketAddr::new(any(self.v6), 0));
        shown(self.v6, addr)
    }

    fn peer_addr(&self) -> Result<SockAddr, Errno> {
        let t = self.state.lock();
        match t.state {
            TcpState::Connected(h) => net_look(|n| n.tcp(h).remote_endpoint())
                .flatten()
                .map(|e| shown(self.v6, endpoint_addr(e)))
                .ok_or(Errno::Notconn),
            _ => Err(Errno::Notconn),
        }
    }

    fn poll(&self, events: u16) -> u16 {
        let mut t = self.state.lock();
        Self::settle(&mut t);
        let ready = match t.state {
            TcpState::Unbound | TcpState::Bound => poll::POLLOUT | poll::POLLHUP,
            TcpState::Listening(id) => {
                if net_look(|n| n.acceptable(id)).unwrap_or(false) {
                    poll::POLLIN
                } else {
                    0
                }
            }
            TcpState::Connecting(h) => match net_look(|n| n.tcp(h).state()) {
                Some(tcp::State::SynSent | tcp::State::SynReceived) | None => 0,
                Some(tcp::State::Closed) => poll::POLLOUT | poll::POLLERR | poll::POLLHUP,
                Some(_) => poll::POLLOUT,
            },
            TcpState::Connected(h) => net_look(|n| {
                let s = n.tcp(h);
                let mut r = 0;
                if s.can_recv() || !s.may_recv() || t.read_shut {
                    r |= poll::POLLIN;
                }
                if !s.may_recv() {
                    r |= POLLRDHUP;
                }
                if s.can_send() || !s.may_send() {
                    r |= poll::POLLOUT;
                }
                if s.state() == tcp::State::Closed || (!s.may_send() && !s.may_recv()) {
                    r |= poll::POLLHUP;
                }
                r
            })
            .unwrap_or(poll::POLLHUP),
        };
        ready & (events | poll::POLLERR | poll::POLLHUP)
    }

    fn readable_bytes(&self) -> usize {
        let mut t = self.state.lock();
        Self::settle(&mut t);
        match t.state {
            TcpState::Connected(h) => net_look(|n| n.tcp(h).recv_queue()).unwrap_or(0),
            _ => 0,
        }
    }

    fn get_option(&self, lvl: u32, name: u32) -> Result<Option<Vec<u8>>, Errno> {
        let int = |v: i32| Ok(Some(v.to_le_bytes().to_vec()));
        let mut t = self.state.lock();
        match (lvl, name) {
            (level::SOL_SOCKET, so::SO_ERROR) => {
                let e = match t.state {
                    TcpState::Connecting(h) => match net_look(|n| n.tcp(h).state()) {
                        Some(tcp::State::Closed) => {
                            net_look(|n| n.remove(h));
                            t.state = TcpState::Bound;
                            Errno::Connrefused as i32
                        }
                        _ => 0,
                    },
                    _ => 0,
                };
                int(e)
            }
            (level::SOL_SOCKET, so::SO_ACCEPTCONN) => {
                int(i32::from(matches!(t.state, TcpState::Listening(_))))
            }
            (level::SOL_TCP, tcpopt::TCP_NODELAY) => int(i32::from(t.nodelay)),
            (level::SOL_TCP, tcpopt::TCP_CORK) => int(i32::from(t.cork)),
            (level::SOL_TCP, tcpopt::TCP_MAXSEG) => int(1448),
            (level::SOL_TCP, tcpopt::TCP_KEEPIDLE) => int(t.keepalive_idle.unwrap_or(7200) as i32),
            (level::SOL_TCP, tcpopt::TCP_KEEPINTVL) => int(75),
            (level::SOL_TCP, tcpopt::TCP_KEEPCNT) => int(9),
            (level::SOL_TCP, tcpopt::TCP_QUICKACK | tcpopt::TCP_DEFER_ACCEPT) => int(0),
            (level::SOL_TCP, _) => Err(Errno::Noprotoopt),
            (level::SOL_IPV6, ipv6::IPV6_V6ONLY) if self.v6 => int(i32::from(t.v6_only)),
            _ => Ok(None),
        }
    }

    fn set_option(&self, lvl: u32, name: u32, value: &[u8]) -> Result<bool, Errno> {
        let v = super::int_value(value);
        let mut t = self.state.lock();
        match (lvl, name) {
            (level::SOL_TCP, tcpopt::TCP_NODELAY) => {
                t.nodelay = v? != 0;
                if let TcpState::Connected(h) = t.state {
                    let nodelay = t.nodelay;
                    net_look(|n| n.tcp(h).set_nagle_enabled(!nodelay));
                }
                Ok(true)
            }
            (level::SOL_TCP, tcpopt::TCP_KEEPIDLE) => {
                t.keepalive_idle = Some(v?.max(1) as u32);
                Ok(true)
            }
            (level::SOL_TCP, tcpopt::TCP_CORK) => {
                let was = t.cork;
                t.cork = v? != 0;
                if was && !t.cork {
                    // Uncorked: what waited leaves now.
                    drop(t);
                    net_op(|_| ())?;
                }
                Ok(true)
            }
            (
                level::SOL_TCP,
                tcpopt::TCP_KEEPINTVL
                | tcpopt::TCP_KEEPCNT
                | tcpopt::TCP_QUICKACK
                | tcpopt::TCP_DEFER_ACCEPT
                | tcpopt::TCP_MAXSEG
                | tcpopt::TCP_FASTOPEN,
            ) => {
                v?;
                Ok(true)
            }
            (level::SOL_TCP, _) => Err(Errno::Noprotoopt),
            (level::SOL_IPV6, ipv6::IPV6_V6ONLY) if self.v6 => {
                if t.local.is_some() {
                    return Err(Errno::Inval);
                }
                t.v6_only = v? != 0;
                Ok(true)
            }
            (level::SOL_SOCKET, so::SO_KEEPALIVE) => {
                let on = v? != 0;
                if let TcpState::Connected(h) = t.state {
                    let interval = on.then(|| smoltcp::time::Duration::from_secs(75));
                    net_look(|n| n.tcp(h).set_keep_alive(interval));
                }
                Ok(false)
            }
            (level::SOL_IP | level::SOL_IPV6, _) => {
                // TOS, TTL, multicast and friends: accepted, not modelled.
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

// ---------------------------------------------------------------- UDP --

#[derive(Default)]
struct Udp {
    /// The bound address and port.
    local: Option<SocketAddr>,
    /// One smoltcp socket per interface it listens on.
    handles: Vec<Handle>,
    /// connect(2)'s default destination.
    peer: Option<SocketAddr>,
    v6_only: bool,
}

/// A UDP socket.
pub struct UdpSocket {
    id: u64,
    common: Common,
    v6: bool,
    state: Mutex<Udp>,
}

crate::socket_file!(UdpSocket);

impl UdpSocket {
    fn bind_locked(&self, u: &mut Udp, n: &mut Net, addr: SocketAddr) -> Result<(), Errno> {
        if u.local.is_some() {
            return Err(Errno::Inval);
        }
        let ip = addr.ip();
        let port = reserve(&self.common, self.id, n, Proto::Udp, addr, u.v6_only)?;
        let endpoint = smoltcp::wire::IpListenEndpoint {
            addr: (!ip.is_unspecified()).then(|| IpAddress::from(unmapped(ip))),
            port,
        };
        for stack in n.stacks_for_bind(ip) {
            let h = n.add_udp(stack, UDP_BUFFER);
            if n.udp(h).bind(endpoint).is_err() {
                n.remove(h);
                continue;
            }
            u.handles.push(h);
        }
        u.local = Some(SocketAddr::new(ip, port));
        Ok(())
    }

    /// Whether a datagram from `from` is one this socket takes.
    fn wanted(&self, u: &Udp, from: SocketAddr) -> bool {
        if !self.v6 && from.is_ipv6() {
            return false;
        }
        if self.v6 && u.v6_only && from.is_ipv4() {
            return false;
        }
        match u.peer {
            Some(p) => unmapped(p.ip()) == unmapped(from.ip()) && p.port() == from.port(),
            None => true,
        }
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        let handles = core::mem::take(&mut self.state.lock().handles);
        let _ = net_op(|n| {
            for h in handles {
                n.remove(h);
            }
            n.unbind(self.id);
        });
    }
}

impl Socket for UdpSocket {
    fn common(&self) -> &Common {
        &self.common
    }

    fn bind(&self, addr: &SockAddr, _cwd: &str) -> Result<(), Errno> {
        let mut u = self.state.lock();
        let addr = ip_addr(self.v6, u.v6_only, addr)?;
        let u = &mut *u;
        net_look(|n| self.bind_locked(u, n, addr)).ok_or(Errno::Netdown)?
    }

    fn connect(&self, addr: &SockAddr, _cwd: &str) -> Result<(), Errno> {
        let mut u = self.state.lock();
        if matches!(addr, SockAddr::Unspec) {
            u.peer = None;
            return Ok(());
        }
        let remote = ip_addr(self.v6, u.v6_only, addr)?;
        let u = &mut *u;
        net_look(|n| -> Result<(), Errno> {
            n.stack_for(remote.ip())?;
            if u.local.is_none() {
                self.bind_locked(u, n, SocketAddr::new(any(self.v6), 0))?;
            }
            Ok(())
        })
        .ok_or(Errno::Netdown)??;
        u.peer = Some(remote);
        Ok(())
    }

    fn send(&self, out: Outgoing<'_>, _cwd: &str) -> Result<usize, Errno> {
        let mut u = self.state.lock();
        let to = match &out.to {
            Some(a) => ip_addr(self.v6, u.v6_only, a)?,
            None => u.peer.ok_or(Errno::Destaddrreq)?,
        };
        if out.data.len() > UDP_MAX {
            return Err(Errno::Msgsize);
        }
        if to.port() == 0 {
            return Err(Errno::Inval);
        }
        let u = &mut *u;
        net_op(|n| -> Result<usize, Errno> {
            let stack = n.stack_for(to.ip())?;
            if u.local.is_none() {
                self.bind_locked(u, n, SocketAddr::new(any(self.v6), 0))?;
            }
            let h = *u
                .handles
                .iter()
                .find(|h| h.stack == stack)
                .ok_or(Errno::Netunreach)?;
            let dest = (IpAddress::from(unmapped(to.ip())), to.port());
            match n.udp(h).send_slice(out.data, dest) {
                Ok(()) => Ok(out.data.len()),
                Err(udp::SendError::BufferFull) => Err(Errno::Again),
                Err(udp::SendError::Unaddressable) => Err(Errno::Netunreach),
            }
        })?
    }

    fn recv(&self, buf: &mut [u8], flags: u32) -> Result<Received, Errno> {
        let u = self.state.lock();
        if u.handles.is_empty() {
            return Err(Errno::Again);
        }
        let peek = flags & msg::MSG_PEEK != 0;
        let handles = u.handles.clone();
        let got = net_op(|n| {
            for h in handles {
                loop {
                    let s = n.udp(h);
                    let (from, len) = match s.peek() {
                        Ok((data, meta)) => (endpoint_addr(meta.endpoint), data.len()),
                        Err(_) => break,
                    };
                    if !self.wanted(&u, from) {
                        let _ = s.recv();
                        continue;
                    }
                    let r = if peek {
                        s.peek().map(|(d, _)| d)
                    } else {
                        s.recv().map(|(d, _)| d)
                    };
                    let data = r.unwrap_or(&[]);
                    let n = data.len().min(buf.len());
                    buf[..n].copy_from_slice(&data[..n]);
                    return Some((from, n, len));
                }
            }
            None
        })?;
        let (from, len, full_len) = got.ok_or(Errno::Again)?;
        Ok(Received {
            len,
            full_len,
            from: Some(shown(self.v6, from)),
            rights: Vec::new(),
        })
    }

    fn shutdown(&self, how: u32) -> Result<(), Errno> {
        if how > shut::SHUT_RDWR {
            return Err(Errno::Inval);
        }
        if self.state.lock().peer.is_none() {
            return Err(Errno::Notconn);
        }
        Ok(())
    }

    fn local_addr(&self) -> SockAddr {
        let u = self.state.lock();
        shown(
            self.v6,
            u.local.unwrap_or_else(|| SocketAddr::new(any(self.v6), 0)),
        )
    }

    fn peer_addr(&self) -> Result<SockAddr, Errno> {
        self.state
            .lock()
            .peer
            .map(|p| shown(self.v6, p))
            .ok_or(Errno::Notconn)
    }

    fn poll(&self, events: u16) -> u16 {
        let u = self.state.lock();
        let readable =
            net_look(|n| u.handles.iter().any(|&h| n.udp(h).can_recv())).unwrap_or(false);
        let mut r = poll::POLLOUT;
        if readable {
            r |= poll::POLLIN;
        }
        r & (events | poll::POLLERR | poll::POLLHUP)
    }

    fn readable_bytes(&self) -> usize {
        let u = self.state.lock();
        net_look(|n| {
            u.handles
                .iter()
                .find_map(|&h| n.udp(h).peek().ok().map(|(d, _)| d.len()))
                .unwrap_or(0)
        })
        .unwrap_or(0)
    }

    fn get_option(&self, lvl: u32, name: u32) -> Result<Option<Vec<u8>>, Errno> {
        let int = |v: i32| Ok(Some(v.to_le_bytes().to_vec()));
        match (lvl, name) {
            (level::SOL_IPV6, ipv6::IPV6_V6ONLY) if self.v6 => {
                int(i32::from(self.state.lock().v6_only))
            }
            (level::SOL_UDP, _) => int(0),
            _ => Ok(None),
        }
    }

    fn set_option(&self, lvl: u32, name: u32, value: &[u8]) -> Result<bool, Errno> {
        match (lvl, name) {
            (level::SOL_IPV6, ipv6::IPV6_V6ONLY) if self.v6 => {
                let mut u = self.state.lock();
                if u.local.is_some() {
                    return Err(Errno::Inval);
                }
                u.v6_only = super::int_value(value)? != 0;
                Ok(true)
            }
            (level::SOL_IP | level::SOL_IPV6 | level::SOL_UDP, _) => Ok(true),
            _ => Ok(false),
        }
    }
}
