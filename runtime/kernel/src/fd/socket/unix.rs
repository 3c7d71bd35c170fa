//! Local sockets (AF_UNIX): stream, seqpacket and datagram, named by a
//! path (a socket node in the file system), in the abstract namespace, or
//! not at all (socketpair), with SCM_RIGHTS file passing.
//!
//! A connection is a [`Channel`]: one queue per direction plus who has
//! shut down or closed what. connect makes the server's end at once and
//! queues it on the listener (the client can write before accept, as on
//! Linux); accept takes it off. A datagram socket receives into its own
//! queue; senders find it by name.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use kiln_kernel::errno::Errno;
use kiln_kernel::fd::poll;
use kiln_kernel::net::abi::{family, kind, msg, shut};
use kiln_kernel::net::addr::{SockAddr, UnixAddr};
use kiln_kernel::net::unix::{ByteQueue, MessageQueue, Taken};
use spin::Mutex;

use super::{changed, Common, Outgoing, Received, Rights, Socket};
use crate::fd::FileOps;
use crate::fs;

/// Where a bound socket is found: its path node's inode, or its abstract
/// name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Inode(u64),
    Abstract(Vec<u8>),
}

/// Every bound local socket, by where it is found.
static NAMES: Mutex<BTreeMap<Key, Weak<UnixSocket>>> = Mutex::new(BTreeMap::new());
/// The next autobind name.
static NEXT_AUTOBIND: AtomicU64 = AtomicU64::new(1);

/// One direction's queue.
enum Queue {
    Bytes(ByteQueue<Rights>),
    Messages(MessageQueue<(), Rights>),
}

impl Queue {
    fn new(kind: u32) -> Self {
        if kind == kind::SOCK_STREAM {
            Queue::Bytes(ByteQueue::default())
        } else {
            Queue::Messages(MessageQueue::default())
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Queue::Bytes(q) => q.is_empty(),
            Queue::Messages(q) => q.count() == 0,
        }
    }

    fn readable(&self) -> usize {
        match self {
            Queue::Bytes(q) => q.len(),
            Queue::Messages(q) => q.next_len().unwrap_or(0),
        }
    }

    fn has_room(&self) -> bool {
        match self {
            Queue::Bytes(q) => q.room() > 0,
            Queue::Messages(q) => q.fits(1),
        }
    }

    fn clear(&mut self) {
        match self {
            Queue::Bytes(q) => drop(q.clear()),
            Queue::Messages(q) => drop(q.clear()),
        }
    }
}

/// A connection between two ends (0: the connecting side, 1: the
/// accepted side). `queues[i]` holds what end `i` reads.
struct Channel {
    queues: [Queue; 2],
    /// End `i` will write no more (shutdown SHUT_WR, or closed).
    write_done: [bool; 2],
    /// End `i` will read no more (shutdown SHUT_RD, or closed).
    read_done: [bool; 2],
    /// End `i` is closed.
    closed: [bool; 2],
}

/// What a socket is doing.
enum State {
    /// Created or bound, not connected.
    Idle,
    /// Listening: connections not yet accepted, and how many may wait.
    Listening {
        pending: VecDeque<Arc<UnixSocket>>,
        backlog: usize,
    },
    /// One end of a connection (stream, seqpacket), or a connected
    /// datagram socket's default peer.
    Connected {
        channel: Arc<Mutex<Channel>>,
        end: usize,
        peer: UnixAddr,
    },
    /// A datagram socket with a default destination.
    Associated {
        peer: Weak<UnixSocket>,
        name: UnixAddr,
    },
}

/// A local socket.
pub struct UnixSocket {
    /// Itself, for the name table (which must not keep it alive).
    me: Weak<UnixSocket>,
    common: Common,
    /// Its own name.
    name: Mutex<UnixAddr>,
    /// The key it is registered under, once bound.
    key: Mutex<Option<Key>>,
    state: Mutex<State>,
    /// Datagram sockets: what they receive.
    inbox: Mutex<MessageQueue<UnixAddr, Rights>>,
}

crate::socket_file!(UnixSocket);

impl UnixSocket {
    /// A new socket of `kind` (SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET).
    ///
    /// # Errors
    /// ESOCKTNOSUPPORT for other types.
    pub fn new(kind: u32, nonblocking: bool) -> Result<Arc<Self>, Errno> {
        // Linux takes SOCK_RAW as SOCK_DGRAM here.
        let kind = if kind == kind::SOCK_RAW {
            kind::SOCK_DGRAM
        } else {
            kind
        };
        if !matches!(
            kind,
            kind::SOCK_STREAM | kind::SOCK_DGRAM | kind::SOCK_SEQPACKET
        ) {
            return Err(Errno::Socktnosupport);
        }
        Ok(Arc::new_cyclic(|me| Self {
            me: me.clone(),
            common: Common::new(family::AF_UNIX, kind, 0, nonblocking),
            name: Mutex::new(UnixAddr::Unnamed),
            key: Mutex::new(None),
            state: Mutex::new(State::Idle),
            inbox: Mutex::new(MessageQueue::default()),
        }))
    }

    /// socketpair(2): two connected sockets.
    ///
    /// # Errors
    /// As for [`UnixSocket::new`].
    pub fn pair(kind: u32, nonblocking: bool) -> Result<(Arc<Self>, Arc<Self>), Errno> {
        let a = Self::new(kind, nonblocking)?;
        let b = Self::new(kind, nonblocking)?;
        if kind == kind::SOCK_DGRAM {
            *a.state.lock() = State::Associated {
                peer: Arc::downgrade(&b),
                name: UnixAddr::Unnamed,
            };
            *b.state.lock() = State::Associated {
                peer: Arc::downgrade(&a),
                name: UnixAddr::Unnamed,
            };
        } else {
            let channel = Arc::new(Mutex::new(Channel::new(kind)));
            *a.state.lock() = State::Connected {
                channel: channel.clone(),
                end: 0,
                peer: UnixAddr::Unnamed,
            };
            *b.state.lock() = State::Connected {
                channel,
                end: 1,
                peer: UnixAddr::Unnamed,
            };
        }
        Ok((a, b))
    }

    fn is_dgram(&self) -> bool {
        self.common.kind == kind::SOCK_DGRAM
    }

    /// The channel and end, when connected.
    fn connection(&self) -> Option<(Arc<Mutex<Channel>>, usize)> {
        match &*self.state.lock() {
            State::Connected { channel, end, .. } => Some((channel.clone(), *end)),
            _ => None,
        }
    }

    /// Binds to `addr`.
    fn bind_name(&self, addr: &UnixAddr, cwd: &str) -> Result<(), Errno> {
        if *self.name.lock() != UnixAddr::Unnamed {
            return Err(Errno::Inval);
        }
        let (key, name) = match addr {
            UnixAddr::Unnamed => loop {
                // Autobind: five hex digits in the abstract namespace.
                let n = NEXT_AUTOBIND.fetch_add(1, Ordering::Relaxed) & 0xfffff;
                let name = alloc::format!("{n:05x}").into_bytes();
                let key = Key::Abstract(name.clone());
                if !registered(&key) {
                    break (key, UnixAddr::Abstract(name));
                }
            },
            UnixAddr::Abstract(name) => {
                let key = Key::Abstract(name.clone());
                if registered(&key) {
                    return Err(Errno::Addrinuse);
                }
                (key, addr.clone())
            }
            UnixAddr::Path(path) => {
                let text = core::str::from_utf8(path).map_err(|_| Errno::Inval)?;
                let ino = make_socket_node(cwd, text)?;
                (Key::Inode(ino), addr.clone())
            }
        };
        NAMES.lock().insert(key.clone(), self.me.clone());
        *self.key.lock() = Some(key);
        *self.name.lock() = name;
        Ok(())
    }
}

/// Whether a live socket holds `key`.
fn registered(key: &Key) -> bool {
    NAMES.lock().get(key).is_some_and(|w| w.strong_count() > 0)
}

/// Creates the socket node a path bind makes; returns its inode.
fn make_socket_node(cwd: &str, path: &str) -> Result<u64, Errno> {
    let mut vfs = fs::vfs();
    let (parent, name) = vfs.resolve_parent(cwd, path)?;
    let name = name.ok_or(Errno::Addrinuse)?;
    vfs.make_socket(&parent, &name, 0o777).map_err(|e| match e {
        Errno::Exist => Errno::Addrinuse,
        e => e,
    })
}

/// The live socket `addr` names.
fn find(addr: &UnixAddr, cwd: &str) -> Result<Arc<UnixSocket>, Errno> {
    let key = match addr {
        UnixAddr::Unnamed => return Err(Errno::Inval),
        UnixAddr::Abstract(name) => Key::Abstract(name.clone()),
        UnixAddr::Path(path) => {
            let text = core::str::from_utf8(path).map_err(|_| Errno::Noent)?;
            let (_, node) = fs::vfs().resolve(cwd, text, true)?;
            match node.socket_ino() {
                Some(ino) => Key::Inode(ino),
                None => return Err(Errno::Connrefused),
            }
        }
    };
    NAMES
        .lock()
        .get(&key)
        .and_then(Weak::upgrade)
        .ok_or(Errno::Connrefused)
}

fn unix_addr(addr: &SockAddr) -> Result<&UnixAddr, Errno> {
    match addr {
        SockAddr::Unix(u) => Ok(u),
        _ => Err(Errno::Inval),
    }
}

impl Channel {
    fn new(kind: u32) -> Self {
        Self {
            queues: [Queue::new(kind), Queue::new(kind)],
            write_done: [false; 2],
            read_done: [false; 2],
            closed: [false; 2],
        }
    }

    /// Writes from end `end` to the other.
    fn write(&mut self, end: usize, data: &[u8], rights: Rights) -> Result<usize, Errno> {
        let other = 1 - end;
        if self.write_done[end] || self.read_done[other] || self.closed[other] {
            return Err(Errno::Pipe);
        }
        let rights = (!rights.is_empty()).then_some(rights);
        match &mut self.queues[other] {
            Queue::Bytes(q) => {
                if data.is_empty() {
                    return Ok(0);
                }
                q.push(data, rights).map_err(|_| Errno::Again)
            }
            Queue::Messages(q) => q
                .push((), data, rights)
                .map(|()| data.len())
                .map_err(|_| Errno::Again),
        }
    }

    /// Reads at end `end`.
    fn read(&mut self, end: usize, buf: &mut [u8], peek: bool) -> Result<Taken<Rights>, Errno> {
        let other = 1 - end;
        let eof = self.write_done[other] || self.closed[other] || self.read_done[end];
        let taken = match &mut self.queues[end] {
            Queue::Bytes(q) if !q.is_empty() => Some(q.read(buf, peek)),
            Queue::Messages(q) => q.read(buf, peek).map(|(_, t)| t),
            Queue::Bytes(_) => None,
        };
        match taken {
            Some(t) => Ok(t),
            None if eof => Ok(Taken {
                len: 0,
                attached: None,
                full_len: 0,
            }),
            None => Err(Errno::Again),
        }
    }
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        if let Some(key) = self.key.lock().take() {
            let mut names = NAMES.lock();
            if names.get(&key).is_some_and(|w| w.strong_count() == 0) {
                names.remove(&key);
            }
        }
        if let State::Connected { channel, end, .. } = &*self.state.lock() {
            let mut c = channel.lock();
            c.closed[*end] = true;
            c.write_done[*end] = true;
            c.read_done[*end] = true;
            // What nobody will read goes now (files passed in it too).
            c.queues[*end].clear();
        }
        changed();
    }
}

impl Socket for UnixSocket {
    fn common(&self) -> &Common {
        &self.common
    }

    fn bind(&self, addr: &SockAddr, cwd: &str) -> Result<(), Errno> {
        self.bind_name(unix_addr(addr)?, cwd)
    }

    fn listen(&self, backlog: usize) -> Result<(), Errno> {
        if self.is_dgram() {
            return Err(Errno::Notsup);
        }
        if *self.name.lock() == UnixAddr::Unnamed {
            return Err(Errno::Inval);
        }
        let mut state = self.state.lock();
        match &mut *state {
            State::Idle => {
                *state = State::Listening {
                    pending: VecDeque::new(),
                    backlog,
                }
            }
            State::Listening { backlog: b, .. } => *b = backlog,
            _ => return Err(Errno::Inval),
        }
        Ok(())
    }

    fn accept(&self) -> Result<(Arc<dyn FileOps>, SockAddr), Errno> {
        let server = match &mut *self.state.lock() {
            State::Listening { pending, .. } => pending.pop_front().ok_or(Errno::Again)?,
            _ => return Err(Errno::Inval),
        };
        changed();
        let peer = match &*server.state.lock() {
            State::Connected { peer, .. } => peer.clone(),
            _ => UnixAddr::Unnamed,
        };
        Ok((server, SockAddr::Unix(peer)))
    }

    fn connect(&self, addr: &SockAddr, cwd: &str) -> Result<(), Errno> {
        let target_addr = unix_addr(addr)?;
        let target = find(target_addr, cwd)?;
        if target.common.kind != self.common.kind {
            return Err(Errno::Prototype);
        }
        if self.is_dgram() {
            *self.state.lock() = State::Associated {
                peer: Arc::downgrade(&target),
                name: target.name.lock().clone(),
            };
            return Ok(());
        }
        match &*self.state.lock() {
            State::Idle => {}
            State::Connected { .. } => return Err(Errno::Isconn),
            _ => return Err(Errno::Inval),
        }
        let mut target_state = target.state.lock();
        let State::Listening { pending, backlog } = &mut *target_state else {
            return Err(Errno::Connrefused);
        };
        // Linux lets backlog + 1 connections wait.
        if pending.len() > *backlog {
            return Err(Errno::Again);
        }
        let channel = Arc::new(Mutex::new(Channel::new(self.common.kind)));
        let server = Self::new(self.common.kind, false)?;
        *server.name.lock() = target.name.lock().clone();
        *server.state.lock() = State::Connected {
            channel: channel.clone(),
            end: 1,
            peer: self.name.lock().clone(),
        };
        pending.push_back(server);
        drop(target_state);
        *self.state.lock() = State::Connected {
            channel,
            end: 0,
            peer: target_addr.clone(),
        };
        changed();
        Ok(())
    }

    fn send(&self, out: Outgoing<'_>, cwd: &str) -> Result<usize, Errno> {
        if self.is_dgram() {
            let target = match (&out.to, &*self.state.lock()) {
                (Some(to), _) => find(unix_addr(to)?, cwd)?,
                (None, State::Associated { peer, .. }) => {
                    peer.upgrade().ok_or(Errno::Connrefused)?
                }
                (None, _) => return Err(Errno::Notconn),
            };
            if target.common.kind != kind::SOCK_DGRAM {
                return Err(Errno::Prototype);
            }
            if out.data.len() > MAX_DATAGRAM {
                return Err(Errno::Msgsize);
            }
            let from = self.name.lock().clone();
            let rights = (!out.rights.is_empty()).then_some(out.rights);
            target
                .inbox
                .lock()
                .push(from, out.data, rights)
                .map_err(|_| Errno::Again)?;
            changed();
            return Ok(out.data.len());
        }
        if out.to.is_some() {
            return Err(Errno::Isconn);
        }
        let (channel, end) = self.connection().ok_or(Errno::Notconn)?;
        let n = channel.lock().write(end, out.data, out.rights)?;
        changed();
        Ok(n)
    }

    fn recv(&self, buf: &mut [u8], flags: u32) -> Result<Received, Errno> {
        let peek = flags & msg::MSG_PEEK != 0;
        if self.is_dgram() {
            let (from, t) = self.inbox.lock().read(buf, peek).ok_or(Errno::Again)?;
            changed();
            return Ok(Received {
                len: t.len,
                full_len: t.full_len,
                from: Some(SockAddr::Unix(from)),
                rights: t.attached.unwrap_or_default(),
            });
        }
        let (channel, end) = self.connection().ok_or(Errno::Notconn)?;
        let t = channel.lock().read(end, buf, peek)?;
        changed();
        Ok(Received {
            len: t.len,
            full_len: t.full_len,
            from: None,
            rights: t.attached.unwrap_or_default(),
        })
    }

    fn shutdown(&self, how: u32) -> Result<(), Errno> {
        if how > shut::SHUT_RDWR {
            return Err(Errno::Inval);
        }
        let Some((channel, end)) = self.connection() else {
            return Err(Errno::Notconn);
        };
        let mut c = channel.lock();
        if how != shut::SHUT_WR {
            c.read_done[end] = true;
        }
        if how != shut::SHUT_RD {
            c.write_done[end] = true;
        }
        drop(c);
        changed();
        Ok(())
    }

    fn local_addr(&self) -> SockAddr {
        SockAddr::Unix(self.name.lock().clone())
    }

    fn peer_addr(&self) -> Result<SockAddr, Errno> {
        match &*self.state.lock() {
            State::Connected { peer, .. } => Ok(SockAddr::Unix(peer.clone())),
            State::Associated { name, .. } => Ok(SockAddr::Unix(name.clone())),
            _ => Err(Errno::Notconn),
        }
    }

    fn poll(&self, events: u16) -> u16 {
        let mut ready = 0;
        if self.is_dgram() {
            if self.inbox.lock().count() > 0 {
                ready |= poll::POLLIN;
            }
            let writable = match &*self.state.lock() {
                State::Associated { peer, .. } => {
                    peer.upgrade().is_none_or(|p| p.inbox.lock().fits(1))
                }
                _ => true,
            };
            if writable {
                ready |= poll::POLLOUT;
            }
            return ready & (events | poll::POLLERR | poll::POLLHUP);
        }
        match &*self.state.lock() {
            State::Listening { pending, .. } => {
                if !pending.is_empty() {
                    ready |= poll::POLLIN;
                }
            }
            State::Connected { channel, end, .. } => {
                let c = channel.lock();
                let other = 1 - end;
                let peer_gone = c.closed[other] || c.write_done[other];
                if !c.queues[*end].is_empty() || peer_gone || c.read_done[*end] {
                    ready |= poll::POLLIN;
                }
                if peer_gone && c.write_done[*end] || c.closed[other] {
                    ready |= poll::POLLHUP;
                }
                if peer_gone {
                    ready |= POLLRDHUP;
                }
                if c.queues[other].has_room() || c.closed[other] {
                    ready |= poll::POLLOUT;
                }
            }
            // Not connected: writable (a write fails at once), and hung up.
            State::Idle => ready |= poll::POLLOUT | poll::POLLHUP,
            State::Associated { .. } => {}
        }
        ready & (events | poll::POLLERR | poll::POLLHUP)
    }

    fn readable_bytes(&self) -> usize {
        if self.is_dgram() {
            return self.inbox.lock().next_len().unwrap_or(0);
        }
        self.connection()
            .map_or(0, |(c, end)| c.lock().queues[end].readable())
    }
}

/// POLLRDHUP (the peer shut down its writing side).
const POLLRDHUP: u16 = 0x2000;

/// The largest datagram a local socket takes.
pub const MAX_DATAGRAM: usize = 212_992;
