//! Host sockets (AF_VSOCK, SOCK_STREAM) over the virtio socket device
//! (`crate::net::vsock`): a program connects to the host (context id 2) or
//! listens for the host's connections, as under Firecracker.

use alloc::sync::Arc;
use alloc::vec::Vec;

use kiln_kernel::errno::Errno;
use kiln_kernel::fd::poll;
use kiln_kernel::net::abi::{kind, level, msg, shut, so};
use kiln_kernel::net::addr::SockAddr;
use kiln_kernel::net::vsock::{ConnKey, Stack, State, ANY, CID_LOCAL};
use spin::Mutex;

use super::{changed, Common, Outgoing, Received, Socket};
use crate::fd::FileOps;
use crate::net::vsock::with;

/// AF_VSOCK.
const AF_VSOCK: u16 = kiln_kernel::net::abi::family::AF_VSOCK;
/// POLLRDHUP.
const POLLRDHUP: u16 = 0x2000;

/// A new vsock socket.
///
/// # Errors
/// ESOCKTNOSUPPORT for anything but a stream, EPROTONOSUPPORT for a
/// protocol, ENODEV when the VM has no socket device.
pub fn new(ty: u32, protocol: u32, nonblocking: bool) -> Result<Arc<dyn FileOps>, Errno> {
    if ty != kind::SOCK_STREAM {
        return Err(Errno::Socktnosupport);
    }
    if protocol != 0 {
        return Err(Errno::Protonosupport);
    }
    if !crate::net::vsock::present() {
        return Err(Errno::Nodev);
    }
    Ok(Arc::new(VsockSocket {
        common: Common::new(AF_VSOCK, ty, 0, nonblocking),
        state: Mutex::new(Vstate::Unbound),
    }))
}

#[derive(Clone, Copy, Debug)]
enum Vstate {
    Unbound,
    Bound(u32),
    Listening(u32),
    Connecting(ConnKey),
    Connected(ConnKey),
    /// A connect failed with this error (reported once by connect or
    /// SO_ERROR), the port given back.
    Failed(Option<Errno>),
}

/// An AF_VSOCK stream socket.
pub struct VsockSocket {
    common: Common,
    state: Mutex<Vstate>,
}

crate::socket_file!(VsockSocket);

/// Runs `f` on the connections, waking waiters when it changed something
/// others may wait for.
fn op<R>(f: impl FnOnce(&mut Stack) -> R) -> Result<R, Errno> {
    with(f).ok_or(Errno::Nodev)
}

impl VsockSocket {
    /// Where a connect in progress stands: done (0, once), still going
    /// (EALREADY, or EAGAIN to wait when blocking), or failed — with
    /// ECONNRESET, as Linux reports a vsock connection the host refused.
    fn connect_progress(&self, s: &mut Vstate) -> Result<(), Errno> {
        Self::settle(s);
        match *s {
            Vstate::Connected(_) => Ok(()),
            Vstate::Failed(ref mut e) => Err(e.take().unwrap_or(Errno::Connreset)),
            _ if self.common.nonblocking() => Err(Errno::Already),
            _ => Err(Errno::Again),
        }
    }

    /// The connection, once connected (ENOTCONN before).
    fn connection(&self) -> Result<ConnKey, Errno> {
        let mut s = self.state.lock();
        Self::settle(&mut s);
        match *s {
            Vstate::Connected(k) => Ok(k),
            _ => Err(Errno::Notconn),
        }
    }

    /// Settles a connection in progress: Connected, or Failed once the host
    /// refused it.
    fn settle(s: &mut Vstate) {
        if let Vstate::Connecting(key) = *s {
            match with(|st| st.state(key)).flatten() {
                Some(State::Connected) => *s = Vstate::Connected(key),
                Some(State::Closed(e)) => {
                    let _ = with(|st| st.close(key));
                    *s = Vstate::Failed(Some(e));
                }
                Some(State::Connecting) => {}
                None => *s = Vstate::Failed(Some(Errno::Connreset)),
            }
        }
    }
}

impl Drop for VsockSocket {
    fn drop(&mut self) {
        let state = *self.state.lock();
        let _ = with(|st| match state {
            Vstate::Bound(p) => st.release(p),
            Vstate::Listening(p) => {
                st.unlisten(p);
                st.release(p);
            }
            Vstate::Connecting(k) | Vstate::Connected(k) => st.close(k),
            Vstate::Unbound | Vstate::Failed(_) => {}
        });
    }
}

impl Socket for VsockSocket {
    fn common(&self) -> &Common {
        &self.common
    }

    fn bind(&self, addr: &SockAddr, _cwd: &str) -> Result<(), Errno> {
        let SockAddr::Vsock { cid, port } = *addr else {
            return Err(Errno::Afnosupport);
        };
        let mut s = self.state.lock();
        if !matches!(*s, Vstate::Unbound) {
            return Err(Errno::Inval);
        }
        op(|st| {
            if cid != ANY && u64::from(cid) != st.cid() && cid != CID_LOCAL {
                return Err(Errno::Addrnotavail);
            }
            st.bind(port)
        })?
        .map(|p| *s = Vstate::Bound(p))
    }

    fn listen(&self, backlog: usize) -> Result<(), Errno> {
        let mut s = self.state.lock();
        match *s {
            Vstate::Bound(p) | Vstate::Listening(p) => {
                op(|st| st.listen(p, backlog))?;
                *s = Vstate::Listening(p);
                Ok(())
            }
            _ => Err(Errno::Inval),
        }
    }

    fn accept(&self) -> Result<(Arc<dyn FileOps>, SockAddr), Errno> {
        let Vstate::Listening(p) = *self.state.lock() else {
            return Err(Errno::Inval);
        };
        let key = op(|st| st.accept(p))?.ok_or(Errno::Again)?;
        let peer = SockAddr::Vsock {
            cid: key.peer_cid as u32,
            port: key.peer_port,
        };
        let conn = VsockSocket {
            common: Common::new(AF_VSOCK, kind::SOCK_STREAM, 0, false),
            state: Mutex::new(Vstate::Connected(key)),
        };
        Ok((Arc::new(conn), peer))
    }

    fn connect(&self, addr: &SockAddr, _cwd: &str) -> Result<(), Errno> {
        let SockAddr::Vsock { cid, port } = *addr else {
            return Err(Errno::Afnosupport);
        };
        let mut s = self.state.lock();
        let local = match *s {
            Vstate::Connecting(_) => return self.connect_progress(&mut s),
            Vstate::Connected(_) => return Err(Errno::Isconn),
            Vstate::Listening(_) => return Err(Errno::Inval),
            Vstate::Failed(ref mut e) => {
                if let Some(e) = e.take() {
                    return Err(e);
                }
                // A new attempt after a failed one binds afresh.
                None
            }
            Vstate::Bound(p) => Some(p),
            Vstate::Unbound => None,
        };
        let key = op(|st| {
            if u64::from(cid) == st.cid() || cid == CID_LOCAL {
                // No loopback transport: only the host answers.
                return Err(Errno::Netunreach);
            }
            let local = match local {
                Some(p) => p,
                None => st.bind(ANY)?,
            };
            st.connect(local, u64::from(cid), port).inspect_err(|_| {
                st.release(local);
            })
        })??;
        *s = Vstate::Connecting(key);
        if self.common.nonblocking() {
            return Err(Errno::Inprogress);
        }
        // The host answers at once (kiln-vmm connects to its Unix socket
        // while it handles the request); a blocking connect waits for it.
        self.connect_progress(&mut s)
    }

    fn send(&self, out: Outgoing<'_>, _cwd: &str) -> Result<usize, Errno> {
        let key = self.connection()?;
        op(|st| st.send(key, out.data))?
    }

    fn recv(&self, buf: &mut [u8], flags: u32) -> Result<Received, Errno> {
        let key = self.connection()?;
        let n = op(|st| st.recv(key, buf, flags & msg::MSG_PEEK != 0))??;
        Ok(Received {
            len: n,
            full_len: n,
            ..Received::default()
        })
    }

    fn shutdown(&self, how: u32) -> Result<(), Errno> {
        use kiln_boot::vsock::shutdown as flag;
        let flags = match how {
            shut::SHUT_RD => flag::RCV,
            shut::SHUT_WR => flag::SEND,
            shut::SHUT_RDWR => flag::BOTH,
            _ => return Err(Errno::Inval),
        };
        let mut s = self.state.lock();
        Self::settle(&mut s);
        match *s {
            Vstate::Connected(k) => {
                op(|st| st.shutdown(k, flags))??;
                changed();
                Ok(())
            }
            _ => Err(Errno::Notconn),
        }
    }

    fn local_addr(&self) -> SockAddr {
        let s = *self.state.lock();
        let cid = with(|st| st.cid() as u32).unwrap_or(ANY);
        let port = match s {
            Vstate::Bound(p) | Vstate::Listening(p) => p,
            Vstate::Connecting(k) | Vstate::Connected(k) => k.local_port,
            Vstate::Unbound | Vstate::Failed(_) => {
                return SockAddr::Vsock {
                    cid: ANY,
                    port: ANY,
                }
            }
        };
        SockAddr::Vsock { cid, port }
    }

    fn peer_addr(&self) -> Result<SockAddr, Errno> {
        let mut s = self.state.lock();
        Self::settle(&mut s);
        match *s {
            Vstate::Connected(k) => Ok(SockAddr::Vsock {
                cid: k.peer_cid as u32,
                port: k.peer_port,
            }),
            _ => Err(Errno::Notconn),
        }
    }

    fn poll(&self, events: u16) -> u16 {
        let mut s = self.state.lock();
        Self::settle(&mut s);
        let ready = match *s {
            Vstate::Unbound | Vstate::Bound(_) => poll::POLLOUT | poll::POLLHUP,
            Vstate::Listening(p) => {
                if with(|st| st.can_accept(p)).unwrap_or(false) {
                    poll::POLLIN
                } else {
                    0
                }
            }
            Vstate::Connecting(_) => 0,
            Vstate::Failed(_) => poll::POLLOUT | poll::POLLERR | poll::POLLHUP,
            Vstate::Connected(k) => {
                let r = with(|st| st.readiness(k)).unwrap_or_default();
                let mut bits = 0;
                if r.readable {
                    bits |= poll::POLLIN;
                }
                if r.writable {
                    bits |= poll::POLLOUT;
                }
                if r.read_hung_up {
                    bits |= POLLRDHUP;
                }
                if r.hung_up {
                    bits |= poll::POLLHUP;
                }
                if r.error {
                    bits |= poll::POLLERR;
                }
                bits
            }
        };
        ready & (events | poll::POLLERR | poll::POLLHUP)
    }

    fn readable_bytes(&self) -> usize {
        match *self.state.lock() {
            Vstate::Connected(k) => with(|st| st.readable_bytes(k)).unwrap_or(0),
            _ => 0,
        }
    }

    fn get_option(&self, lvl: u32, name: u32) -> Result<Option<Vec<u8>>, Errno> {
        let int = |v: i32| Ok(Some(v.to_le_bytes().to_vec()));
        match (lvl, name) {
            (level::SOL_SOCKET, so::SO_ERROR) => {
                let mut s = self.state.lock();
                Self::settle(&mut s);
                let e = match *s {
                    Vstate::Failed(ref mut e) => e.take().map_or(0, |e| e as i32),
                    _ => 0,
                };
                int(e)
            }
            (level::SOL_SOCKET, so::SO_ACCEPTCONN) => int(i32::from(matches!(
                *self.state.lock(),
                Vstate::Listening(_)
            ))),
            _ => Ok(None),
        }
    }
}
