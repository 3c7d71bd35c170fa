//! The guest's end of virtio-vsock stream connections (virtio 1.2
//! §5.10.6): ports, listeners, connections and their credit, driven by
//! the packets the device delivers and producing the packets to send. No
//! device and no kernel here: the kernel's `net/vsock.rs` moves
//! [`Stack::take_outgoing`]'s packets to the driver and the driver's
//! packets to [`Stack::receive`]; `fd/socket/vsock.rs` maps the socket
//! calls onto the rest.
//!
//! Credit: each side tells the other, in every header, how large its
//! receive buffer for the connection is (`buf_alloc`) and how many bytes
//! it has consumed (`fwd_cnt`); a sender never has more than `buf_alloc`
//! bytes unconsumed at the peer. Writes here take only what the peer's
//! credit allows — there is no send buffer, so nothing sent is lost when
//! the program closes the socket right after writing.

use alloc::collections::btree_map::Entry;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use kiln_boot::vsock::{op, shutdown, Header, TYPE_STREAM};

use crate::errno::Errno;

/// VMADDR_CID_ANY / VMADDR_PORT_ANY.
pub const ANY: u32 = u32::MAX;
/// VMADDR_CID_LOCAL: this machine (no loopback transport here).
pub const CID_LOCAL: u32 = 1;
/// Receive buffer of a connection (what `buf_alloc` says).
pub const BUFFER: u32 = 256 * 1024;
/// Most payload bytes in one packet this side sends.
pub const MAX_PAYLOAD: usize = 32 * 1024;
/// First port handed out to sockets bound to "any port" (Linux starts
/// above the privileged range too).
const FIRST_EPHEMERAL: u32 = 1024;

/// A connection: this side's port and the peer's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConnKey {
    /// Local port.
    pub local_port: u32,
    /// The peer's context id.
    pub peer_cid: u64,
    /// The peer's port.
    pub peer_port: u32,
}

/// Where a connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// REQUEST sent, no answer yet.
    Connecting,
    /// Data may flow.
    Connected,
    /// Refused or reset (the error a connect reports; reads see end of
    /// file).
    Closed(Errno),
}

/// One connection.
#[derive(Debug)]
struct Conn {
    state: State,
    /// Bytes received, not read yet.
    rx: VecDeque<u8>,
    /// Bytes the program has read (wrapping).
    fwd_cnt: u32,
    /// `fwd_cnt` as last told to the peer.
    told_fwd_cnt: u32,
    /// Bytes sent (wrapping).
    tx_cnt: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// SHUTDOWN flags the peer sent.
    peer_shut: u32,
    /// SHUTDOWN flags this side sent.
    local_shut: u32,
    /// The connection came through a listener and waits in its queue.
    accepted_from: Option<u32>,
}

impl Conn {
    fn new(state: State) -> Self {
        Self {
            state,
            rx: VecDeque::new(),
            fwd_cnt: 0,
            told_fwd_cnt: 0,
            tx_cnt: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            peer_shut: 0,
            local_shut: 0,
            accepted_from: None,
        }
    }

    /// Bytes the peer has room for.
    fn credit(&self) -> usize {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight) as usize
    }
}

/// A listening port.
#[derive(Debug, Default)]
struct Listener {
    backlog: usize,
    /// Connections not accepted yet, oldest first.
    pending: VecDeque<ConnKey>,
}

/// What poll(2) would say about a connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    /// A read would not wait (data, end of file, or an error).
    pub readable: bool,
    /// A write would not wait.
    pub writable: bool,
    /// Both directions are shut (POLLHUP).
    pub hung_up: bool,
    /// The peer will send no more (POLLRDHUP).
    pub read_hung_up: bool,
    /// The connection failed (POLLERR).
    pub error: bool,
}

/// The vsock connections of the guest, whose context id is `cid`.
#[derive(Debug)]
pub struct Stack {
    cid: u64,
    /// Ports in use and how many sockets hold each.
    ports: BTreeMap<u32, usize>,
    listeners: BTreeMap<u32, Listener>,
    conns: BTreeMap<ConnKey, Conn>,
    outgoing: VecDeque<(Header, Vec<u8>)>,
    next_ephemeral: u32,
}

impl Stack {
    /// No connections, for a guest of context id `cid`.
    pub fn new(cid: u64) -> Self {
        Self {
            cid,
            ports: BTreeMap::new(),
            listeners: BTreeMap::new(),
            conns: BTreeMap::new(),
            outgoing: VecDeque::new(),
            next_ephemeral: FIRST_EPHEMERAL,
        }
    }

    /// The guest's context id.
    pub fn cid(&self) -> u64 {
        self.cid
    }

    /// Reserves `port` (or, for [`ANY`], a free one); returns it.
    ///
    /// # Errors
    /// EADDRINUSE when the port is taken, EADDRNOTAVAIL when none is free.
    pub fn bind(&mut self, port: u32) -> Result<u32, Errno> {
        if port != ANY {
            if self.ports.contains_key(&port) {
                return Err(Errno::Addrinuse);
            }
            self.ports.insert(port, 1);
            return Ok(port);
        }
        for _ in 0..0x10000 {
            let p = self.next_ephemeral;
            self.next_ephemeral = if p >= 0x7fff_ffff {
                FIRST_EPHEMERAL
            } else {
                p + 1
            };
            if let Entry::Vacant(e) = self.ports.entry(p) {
                e.insert(1);
                return Ok(p);
            }
        }
        Err(Errno::Addrnotavail)
    }

    /// Gives back one hold on `port`.
    pub fn release(&mut self, port: u32) {
        if let Some(n) = self.ports.get_mut(&port) {
            *n -= 1;
            if *n == 0 {
                self.ports.remove(&port);
            }
        }
    }

    /// Listens on `port` (bound by the caller) with room for `backlog`
    /// connections not yet accepted; a second call changes the backlog.
    pub fn listen(&mut self, port: u32, backlog: usize) {
        self.listeners.entry(port).or_default().backlog = backlog.max(1);
    }

    /// Stops listening on `port`: connections not accepted are reset.
    pub fn unlisten(&mut self, port: u32) {
        if let Some(l) = self.listeners.remove(&port) {
            for key in l.pending {
                self.reset(key);
            }
        }
    }

    /// The oldest connection waiting on listener `port`.
    pub fn accept(&mut self, port: u32) -> Option<ConnKey> {
        let key = self.listeners.get_mut(&port)?.pending.pop_front()?;
        if let Some(c) = self.conns.get_mut(&key) {
            c.accepted_from = None;
        }
        // The accepted socket holds the port too.
        if let Some(n) = self.ports.get_mut(&port) {
            *n += 1;
        }
        Some(key)
    }

    /// Whether listener `port` has a connection to accept.
    pub fn can_accept(&self, port: u32) -> bool {
        self.listeners
            .get(&port)
            .is_some_and(|l| !l.pending.is_empty())
    }

    /// Starts a connection from `local_port` (bound by the caller) to
    /// `peer_cid:peer_port`.
    ///
    /// # Errors
    /// EADDRINUSE when that connection exists already.
    pub fn connect(
        &mut self,
        local_port: u32,
        peer_cid: u64,
        peer_port: u32,
    ) -> Result<ConnKey, Errno> {
        let key = ConnKey {
            local_port,
            peer_cid,
            peer_port,
        };
        if self.conns.contains_key(&key) {
            return Err(Errno::Addrinuse);
        }
        self.conns.insert(key, Conn::new(State::Connecting));
        self.emit(key, op::REQUEST, 0, Vec::new());
        Ok(key)
    }

    /// The state of connection `key` (`None` once closed).
    pub fn state(&self, key: ConnKey) -> Option<State> {
        self.conns.get(&key).map(|c| c.state)
    }

    /// Sends what the peer's credit allows of `data`; returns the bytes
    /// taken.
    ///
    /// # Errors
    /// EAGAIN when there is no credit, EPIPE after shutdown(SHUT_WR) or
    /// when the peer stopped receiving, ECONNRESET after a reset, ENOTCONN
    /// while connecting.
    pub fn send(&mut self, key: ConnKey, data: &[u8]) -> Result<usize, Errno> {
        let c = self.conns.get(&key).ok_or(Errno::Notconn)?;
        match c.state {
            State::Connecting => return Err(Errno::Notconn),
            State::Closed(_) => return Err(Errno::Pipe),
            State::Connected => {}
        }
        if c.local_shut & shutdown::SEND != 0 || c.peer_shut & shutdown::RCV != 0 {
            return Err(Errno::Pipe);
        }
        if data.is_empty() {
            return Ok(0);
        }
        let n = c.credit().min(data.len());
        if n == 0 {
            return Err(Errno::Again);
        }
        for chunk in data[..n].chunks(MAX_PAYLOAD) {
            if let Some(c) = self.conns.get_mut(&key) {
                c.tx_cnt = c.tx_cnt.wrapping_add(chunk.len() as u32);
            }
            self.emit(key, op::RW, 0, chunk.to_vec());
        }
        Ok(n)
    }

    /// Reads into `buf` (`peek`: leaves the bytes); 0 at end of file.
    ///
    /// # Errors
    /// EAGAIN when nothing waits yet, ENOTCONN while connecting.
    pub fn recv(&mut self, key: ConnKey, buf: &mut [u8], peek: bool) -> Result<usize, Errno> {
        let c = self.conns.get_mut(&key).ok_or(Errno::Notconn)?;
        if c.state == State::Connecting {
            return Err(Errno::Notconn);
        }
        if c.rx.is_empty() {
            let eof = matches!(c.state, State::Closed(_))
                || c.peer_shut & shutdown::SEND != 0
                || c.local_shut & shutdown::RCV != 0;
            return if eof || buf.is_empty() {
                Ok(0)
            } else {
                Err(Errno::Again)
            };
        }
        let n = buf.len().min(c.rx.len());
        for (i, b) in c.rx.iter().take(n).enumerate() {
            buf[i] = *b;
        }
        if peek {
            return Ok(n);
        }
        c.rx.drain(..n);
        c.fwd_cnt = c.fwd_cnt.wrapping_add(n as u32);
        // Tell the peer about the room once a quarter of the buffer is
        // free again (each packet is a notification and, on the host, a
        // wake-up), or at once when it may be waiting for room.
        let unreported = c.fwd_cnt.wrapping_sub(c.told_fwd_cnt);
        let peer_may_wait = c.rx.is_empty();
        if c.state == State::Connected
            && c.peer_shut & shutdown::SEND == 0
            && (unreported >= BUFFER / 4 || (peer_may_wait && unreported > 0))
        {
            self.emit(key, op::CREDIT_UPDATE, 0, Vec::new());
        }
        Ok(n)
    }

    /// Bytes a read would take now.
    pub fn readable_bytes(&self, key: ConnKey) -> usize {
        self.conns.get(&key).map_or(0, |c| c.rx.len())
    }

    /// shutdown(2): `flags` of [`shutdown`] (RCV for SHUT_RD, SEND for
    /// SHUT_WR).
    ///
    /// # Errors
    /// ENOTCONN unless connected.
    pub fn shutdown(&mut self, key: ConnKey, flags: u32) -> Result<(), Errno> {
        let c = self.conns.get_mut(&key).ok_or(Errno::Notconn)?;
        if c.state != State::Connected {
            return Err(Errno::Notconn);
        }
        let new = flags & !c.local_shut & shutdown::BOTH;
        if new != 0 {
            c.local_shut |= new;
            let all = c.local_shut;
            self.emit(key, op::SHUTDOWN, all, Vec::new());
        }
        Ok(())
    }

    /// The program closed its socket on `key`: the peer is told (unless
    /// the connection is gone already) and the connection forgotten.
    pub fn close(&mut self, key: ConnKey) {
        let Some(c) = self.conns.remove(&key) else {
            return;
        };
        match c.state {
            State::Connected if c.local_shut != shutdown::BOTH || c.peer_shut != shutdown::BOTH => {
                self.emit(key, op::SHUTDOWN, shutdown::BOTH, Vec::new());
            }
            State::Connecting => self.emit(key, op::RST, 0, Vec::new()),
            _ => {}
        }
        self.release(key.local_port);
    }

    /// What poll(2) says about `key`.
    pub fn readiness(&self, key: ConnKey) -> Readiness {
        let Some(c) = self.conns.get(&key) else {
            return Readiness {
                readable: true,
                hung_up: true,
                ..Readiness::default()
            };
        };
        match c.state {
            State::Connecting => Readiness::default(),
            State::Closed(_) => Readiness {
                readable: true,
                writable: true,
                hung_up: true,
                read_hung_up: true,
                error: false,
            },
            State::Connected => {
                let read_shut = c.peer_shut & shutdown::SEND != 0;
                let write_shut =
                    c.local_shut & shutdown::SEND != 0 || c.peer_shut & shutdown::RCV != 0;
                Readiness {
                    readable: !c.rx.is_empty() || read_shut || c.local_shut & shutdown::RCV != 0,
                    writable: write_shut || c.credit() > 0,
                    hung_up: read_shut && write_shut,
                    read_hung_up: read_shut,
                    error: false,
                }
            }
        }
    }

    /// The next packet to hand to the device.
    pub fn take_outgoing(&mut self) -> Option<(Header, Vec<u8>)> {
        self.outgoing.pop_front()
    }

    /// Whether packets wait for the device.
    pub fn has_outgoing(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Takes a packet from the device; returns whether any connection or
    /// listener changed (readers or writers may go on).
    pub fn receive(&mut self, h: &Header, payload: &[u8]) -> bool {
        if h.dst_cid != self.cid || h.kind != TYPE_STREAM {
            if h.op != op::RST {
                self.answer_reset(h);
            }
            return false;
        }
        let key = ConnKey {
            local_port: h.dst_port,
            peer_cid: h.src_cid,
            peer_port: h.src_port,
        };
        let Some(c) = self.conns.get_mut(&key) else {
            return self.receive_unconnected(key, h);
        };
        let credit_before = c.credit();
        c.peer_buf_alloc = h.buf_alloc;
        c.peer_fwd_cnt = h.fwd_cnt;
        let mut changed = credit_before == 0 && c.credit() > 0;
        let mut broken = false;
        match (h.op, c.state) {
            (op::RESPONSE, State::Connecting) => {
                c.state = State::Connected;
                changed = true;
            }
            (op::RW, State::Connected) => {
                if c.local_shut & shutdown::RCV == 0 {
                    if c.rx.len() + payload.len() > 2 * BUFFER as usize {
                        // Far past the credit it was given: a broken peer.
                        broken = true;
                    } else {
                        c.rx.extend(payload);
                    }
                    changed = true;
                }
            }
            (op::SHUTDOWN, State::Connected) => {
                c.peer_shut |= h.flags & shutdown::BOTH;
                changed = true;
            }
            (op::RST, State::Connecting) => {
                c.state = State::Closed(Errno::Connreset);
                changed = true;
            }
            (op::RST, State::Connected) => {
                c.state = State::Closed(Errno::Connreset);
                c.peer_shut = shutdown::BOTH;
                changed = true;
            }
            (op::CREDIT_REQUEST, State::Connected) => {
                self.emit(key, op::CREDIT_UPDATE, 0, Vec::new());
                return changed;
            }
            (op::CREDIT_UPDATE, _) | (op::RST, State::Closed(_)) => {}
            _ => {
                // A request for a live connection, data before the answer:
                // the peer is confused; end the connection.
                broken = true;
            }
        }
        if broken {
            self.reset(key);
            changed = true;
        }
        changed
    }

    /// A packet for no connection: a request to a listener, or a reset.
    fn receive_unconnected(&mut self, key: ConnKey, h: &Header) -> bool {
        if h.op == op::RST {
            return false;
        }
        if h.op != op::REQUEST {
            self.answer_reset(h);
            return false;
        }
        let Some(l) = self.listeners.get_mut(&key.local_port) else {
            self.answer_reset(h);
            return false;
        };
        if l.pending.len() >= l.backlog {
            self.answer_reset(h);
            return false;
        }
        l.pending.push_back(key);
        let mut c = Conn::new(State::Connected);
        c.peer_buf_alloc = h.buf_alloc;
        c.peer_fwd_cnt = h.fwd_cnt;
        c.accepted_from = Some(key.local_port);
        self.conns.insert(key, c);
        self.emit(key, op::RESPONSE, 0, Vec::new());
        true
    }

    /// Resets connection `key`: the peer gets RST, the socket sees the
    /// connection reset.
    fn reset(&mut self, key: ConnKey) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        let queued = c.accepted_from.is_some();
        c.state = State::Closed(Errno::Connreset);
        c.peer_shut = shutdown::BOTH;
        self.emit(key, op::RST, 0, Vec::new());
        if queued {
            // Never accepted: nobody holds it.
            self.conns.remove(&key);
        }
    }

    /// Answers `h` (for no connection of ours) with a reset.
    fn answer_reset(&mut self, h: &Header) {
        self.outgoing.push_back((
            Header {
                src_cid: self.cid,
                dst_cid: h.src_cid,
                src_port: h.dst_port,
                dst_port: h.src_port,
                kind: TYPE_STREAM,
                op: op::RST,
                ..Header::default()
            },
            Vec::new(),
        ));
    }

    /// Queues a packet of connection `key`, with this side's credit.
    fn emit(&mut self, key: ConnKey, operation: u16, flags: u32, payload: Vec<u8>) {
        let fwd_cnt = match self.conns.get_mut(&key) {
            Some(c) => {
                c.told_fwd_cnt = c.fwd_cnt;
                c.fwd_cnt
            }
            None => 0,
        };
        let h = Header {
            src_cid: self.cid,
            dst_cid: key.peer_cid,
            src_port: key.local_port,
            dst_port: key.peer_port,
            len: payload.len() as u32,
            kind: TYPE_STREAM,
            op: operation,
            flags,
            buf_alloc: BUFFER,
            fwd_cnt,
        };
        self.outgoing.push_back((h, payload));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use kiln_boot::vsock::HOST_CID;

    const GUEST: u64 = 3;

    fn from_host(port: u32, to: u32, operation: u16) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: GUEST,
            src_port: port,
            dst_port: to,
            kind: TYPE_STREAM,
            op: operation,
            buf_alloc: 64 * 1024,
            ..Header::default()
        }
    }

    fn ops(s: &mut Stack) -> Vec<u16> {
        let mut v = Vec::new();
        while let Some((h, _)) = s.take_outgoing() {
            v.push(h.op);
        }
        v
    }

    /// A guest-initiated connection to the host, answered.
    fn connected(s: &mut Stack) -> ConnKey {
        let port = s.bind(ANY).unwrap();
        let key = s.connect(port, HOST_CID, 5000).unwrap();
        let (req, _) = s.take_outgoing().unwrap();
        assert_eq!(
            (req.op, req.dst_port, req.src_cid),
            (op::REQUEST, 5000, GUEST)
        );
        assert!(s.receive(&from_host(5000, port, op::RESPONSE), &[]));
        key
    }

    #[test]
    fn a_connection_is_answered_then_carries_data_both_ways() {
        let mut s = Stack::new(GUEST);
        let key = connected(&mut s);
        assert_eq!(s.state(key), Some(State::Connected));
        assert_eq!(s.send(key, b"hello"), Ok(5));
        let (h, data) = s.take_outgoing().unwrap();
        assert_eq!((h.op, h.len, &data[..]), (op::RW, 5, &b"hello"[..]));
        let mut rw = from_host(5000, key.local_port, op::RW);
        rw.len = 3;
        assert!(s.receive(&rw, b"abc"));
        let mut buf = [0u8; 8];
        assert_eq!(s.recv(key, &mut buf, true), Ok(3));
        assert_eq!(s.recv(key, &mut buf, false), Ok(3));
        assert_eq!(&buf[..3], b"abc");
        assert_eq!(s.recv(key, &mut buf, false), Err(Errno::Again));
        // The buffer emptied: the host hears about the room at once.
        let (h, _) = s.take_outgoing().unwrap();
        assert_eq!((h.op, h.fwd_cnt), (op::CREDIT_UPDATE, 3));
    }

    #[test]
    fn writes_stop_at_the_peers_credit_and_resume_on_an_update() {
        let mut s = Stack::new(GUEST);
        let key = connected(&mut s);
        let data = vec![7u8; 100 * 1024];
        assert_eq!(s.send(key, &data), Ok(64 * 1024));
        assert_eq!(ops(&mut s), [op::RW, op::RW]);
        assert_eq!(s.send(key, &data), Err(Errno::Again));
        assert!(!s.readiness(key).writable);
        let mut update = from_host(5000, key.local_port, op::CREDIT_UPDATE);
        update.fwd_cnt = 10_000;
        assert!(s.receive(&update, &[]), "room again is a change");
        assert!(s.readiness(key).writable);
        assert_eq!(s.send(key, &data), Ok(10_000));
    }

    #[test]
    fn a_refused_connection_reports_a_reset() {
        let mut s = Stack::new(GUEST);
        let port = s.bind(ANY).unwrap();
        let key = s.connect(port, HOST_CID, 9).unwrap();
        s.take_outgoing();
        assert!(s.receive(&from_host(9, port, op::RST), &[]));
        assert_eq!(s.state(key), Some(State::Closed(Errno::Connreset)));
        assert_eq!(s.send(key, b"x"), Err(Errno::Pipe));
    }

    #[test]
    fn a_listener_answers_requests_up_to_its_backlog() {
        let mut s = Stack::new(GUEST);
        s.bind(80).unwrap();
        s.listen(80, 1);
        assert!(s.receive(&from_host(7000, 80, op::REQUEST), &[]));
        assert!(!s.receive(&from_host(7001, 80, op::REQUEST), &[]));
        assert_eq!(ops(&mut s), [op::RESPONSE, op::RST]);
        assert!(s.can_accept(80));
        let key = s.accept(80).unwrap();
        assert_eq!(key.peer_port, 7000);
        assert_eq!(s.state(key), Some(State::Connected));
        // A request to a port nobody listens on is refused.
        assert!(!s.receive(&from_host(7002, 81, op::REQUEST), &[]));
        assert_eq!(ops(&mut s), [op::RST]);
        // The listener and the accepted socket both hold port 80.
        s.close(key);
        assert_eq!(s.bind(80), Err(Errno::Addrinuse));
        s.unlisten(80);
        s.release(80);
        assert_eq!(s.bind(80), Ok(80));
    }

    #[test]
    fn end_of_file_follows_the_peers_shutdown_and_close_tells_the_peer() {
        let mut s = Stack::new(GUEST);
        let key = connected(&mut s);
        let mut rw = from_host(5000, key.local_port, op::RW);
        rw.len = 2;
        s.receive(&rw, b"ok");
        let mut shut = from_host(5000, key.local_port, op::SHUTDOWN);
        shut.flags = shutdown::SEND;
        s.receive(&shut, &[]);
        let r = s.readiness(key);
        assert!(r.readable && r.read_hung_up && !r.hung_up);
        let mut buf = [0u8; 4];
        assert_eq!(s.recv(key, &mut buf, false), Ok(2));
        assert_eq!(s.recv(key, &mut buf, false), Ok(0));
        // Writing still works after the peer's half-close.
        assert_eq!(s.send(key, b"more"), Ok(4));
        s.shutdown(key, shutdown::SEND).unwrap();
        assert_eq!(s.send(key, b"x"), Err(Errno::Pipe));
        ops(&mut s);
        s.close(key);
        let (h, _) = s.take_outgoing().unwrap();
        assert_eq!((h.op, h.flags), (op::SHUTDOWN, shutdown::BOTH));
        assert_eq!(s.state(key), None);
    }

    #[test]
    fn packets_for_nothing_are_answered_with_a_reset_but_resets_are_not() {
        let mut s = Stack::new(GUEST);
        assert!(!s.receive(&from_host(1, 2, op::RW), b"x"));
        assert_eq!(ops(&mut s), [op::RST]);
        assert!(!s.receive(&from_host(1, 2, op::RST), &[]));
        assert!(ops(&mut s).is_empty());
        let mut wrong = from_host(1, 2, op::REQUEST);
        wrong.dst_cid = 99;
        assert!(!s.receive(&wrong, &[]));
        assert_eq!(ops(&mut s), [op::RST]);
    }

    #[test]
    fn ephemeral_ports_skip_taken_ones() {
        let mut s = Stack::new(GUEST);
        s.bind(FIRST_EPHEMERAL).unwrap();
        assert_eq!(s.bind(ANY), Ok(FIRST_EPHEMERAL + 1));
    }
}
