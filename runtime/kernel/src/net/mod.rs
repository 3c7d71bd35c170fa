//! The kernel's TCP/IP: smoltcp interfaces over two devices — the
//! loopback (127.0.0.1/8, ::1, and the NIC's own addresses, so a program
//! reaches itself without the NIC) and, when the VM has one, the virtio
//! NIC. Each has its own socket set, so a connection lives on exactly the
//! interface it uses.
//!
//! The socket files (`fd::socket::inet`) own handles into these sets;
//! this module owns the sets, the port bindings, the listening sockets,
//! the connections a program closed that still finish in the background,
//! and the one timer smoltcp asks for. Everything runs under
//! `KERNEL.net`; every operation ends with [`Net::poll`], which moves
//! packets until nothing changes.
//!
//! A listen(2) costs no buffers: when a connection request (SYN) arrives
//! for a listening port, a smoltcp socket is made for it just before the
//! interface sees the packet; the backlog bounds how many wait for
//! accept(2), and requests beyond it are dropped (the client retries), as
//! on Linux.

pub mod device;
pub mod nic;
pub mod vsock;

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec;
use alloc::vec::Vec;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::sync::atomic::{AtomicU64, Ordering};

use kiln_kernel::errno::Errno;
use kiln_kernel::net::addr::unmapped;
use kiln_kernel::net::config::NetConfig;
use kiln_kernel::net::frames::tcp_syn;
use smoltcp::iface::{Config, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};

use self::device::Frames;
use crate::state::KERNEL;

/// Which interface: the loopback is always 0.
pub type StackId = usize;
/// The loopback interface.
pub const LOOPBACK: StackId = 0;
/// The NIC's interface.
pub const NIC: StackId = 1;

/// A socket in one interface's set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handle {
    /// The interface.
    pub stack: StackId,
    /// The socket in its set.
    pub socket: SocketHandle,
}

/// TCP or UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// One interface.
pub struct Stack {
    /// smoltcp's interface.
    pub iface: Interface,
    /// Its sockets.
    pub sockets: SocketSet<'static>,
    /// Its frames.
    pub device: Frames,
}

/// A port a socket holds.
#[derive(Clone, Copy, Debug)]
struct Binding {
    owner: u64,
    proto: Proto,
    addr: IpAddr,
    port: u16,
    reuse_addr: bool,
    reuse_port: bool,
    listening: bool,
    /// An IPv6 socket that does not take IPv4 (IPV6_V6ONLY).
    v6_only: bool,
}

/// A listening socket.
pub struct Listener {
    /// Address and port (the address may be unspecified).
    pub local: SocketAddr,
    /// An AF_INET6 socket that takes only IPv6.
    pub v6_only: bool,
    /// Connections that may wait for accept (Linux allows backlog + 1).
    pub backlog: usize,
    /// Connections made for requests, oldest first, until accepted.
    pub pending: VecDeque<Handle>,
    /// Buffer sizes for its connections.
    pub buffers: (usize, usize),
    /// TCP_NODELAY for its connections.
    pub nodelay: bool,
}

/// The network state (the instance is `KERNEL.net`).
pub struct Net {
    /// Loopback, then the NIC's, if any.
    pub stacks: Vec<Stack>,
    bindings: Vec<Binding>,
    /// Listening sockets by id.
    pub listeners: BTreeMap<u64, Listener>,
    /// Connections closed by the program that still finish (FIN,
    /// TIME-WAIT), with whether their socket had SO_REUSEADDR.
    orphans: Vec<(Handle, bool)>,
    next_ephemeral: u16,
    /// The NIC's addresses.
    pub nic_addrs: Vec<IpAddr>,
    /// The configuration from the VMM.
    pub config: NetConfig,
}

/// The next time smoltcp wants to be polled (monotonic ns; 0: never).
static DEADLINE: AtomicU64 = AtomicU64::new(0);
/// Socket ids (bindings and listeners name their owner by it).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh owner id for a socket.
pub fn new_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// smoltcp's clock: the kernel's monotonic clock.
fn now() -> Instant {
    Instant::from_micros((crate::time::monotonic_ns() / 1000) as i64)
}

/// A random seed for smoltcp (initial sequence numbers, ports).
fn seed() -> u64 {
    let mut b = [0u8; 8];
    crate::random::fill(&mut b);
    u64::from_le_bytes(b)
}

fn cidr(addr: IpAddr, prefix: u8) -> IpCidr {
    IpCidr::new(IpAddress::from(addr), prefix)
}

impl Net {
    /// The loopback interface, with the NIC's addresses on it too.
    fn new(config: NetConfig) -> Self {
        let mut device = Frames::loopback();
        let mut c = Config::new(HardwareAddress::Ip);
        c.random_seed = seed();
        let mut iface = Interface::new(c, &mut device, now());
        let nic_addrs: Vec<IpAddr> = config.addresses.iter().map(|c| c.addr).collect();
        iface.update_ip_addrs(|a| {
            let _ = a.push(cidr(IpAddr::V4(Ipv4Addr::LOCALHOST), 8));
            let _ = a.push(cidr(IpAddr::V6(Ipv6Addr::LOCALHOST), 128));
            for &ip in &nic_addrs {
                let prefix = if ip.is_ipv4() { 32 } else { 128 };
                let _ = a.push(cidr(ip, prefix));
            }
        });
        Self {
            stacks: vec![Stack {
                iface,
                sockets: SocketSet::new(Vec::new()),
                device,
            }],
            bindings: Vec::new(),
            listeners: BTreeMap::new(),
            orphans: Vec::new(),
            next_ephemeral: 32768 + (seed() % 28000) as u16,
            nic_addrs,
            config,
        }
    }

    /// Adds the NIC's interface (MAC address `mac`, frames of `mtu`).
    fn add_nic(&mut self, mac: [u8; 6], mtu: usize) {
        let mut device = Frames::ethernet(mtu);
        let mut c = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        c.random_seed = seed();
        let mut iface = Interface::new(c, &mut device, now());
        let config = &self.config;
        iface.update_ip_addrs(|a| {
            for c in &config.addresses {
                let _ = a.push(cidr(c.addr, c.prefix));
            }
        });
        for gw in &config.gateways {
            let _ = match gw {
                IpAddr::V4(v4) => iface.routes_mut().add_default_ipv4_route(*v4).map(|_| ()),
                IpAddr::V6(v6) => iface.routes_mut().add_default_ipv6_route(*v6).map(|_| ()),
            };
        }
        // Announce ourselves (a gratuitous ARP, as Linux does when a link
        // comes up): the host side learns the guest's MAC before it has to
        // deliver anything — passt waits for a first frame to know it.
        for c in &config.addresses {
            if let IpAddr::V4(ip) = c.addr {
                device.outbox.push_back(gratuitous_arp(mac, ip));
            }
        }
        self.stacks.push(Stack {
            iface,
            sockets: SocketSet::new(Vec::new()),
            device,
        });
    }

    /// Whether the VM has a NIC.
    pub fn has_nic(&self) -> bool {
        self.stacks.len() > NIC
    }

    /// Whether `ip` is one of this machine's addresses.
    pub fn is_local(&self, ip: IpAddr) -> bool {
        let ip = unmapped(ip);
        ip.is_loopback() || self.nic_addrs.contains(&ip)
    }

    /// The interface that reaches `ip`.
    ///
    /// # Errors
    /// ENETUNREACH when only a NIC would, and there is none.
    pub fn stack_for(&self, ip: IpAddr) -> Result<StackId, Errno> {
        if self.is_local(ip) {
            Ok(LOOPBACK)
        } else if self.has_nic() {
            Ok(NIC)
        } else {
            Err(Errno::Netunreach)
        }
    }

    /// The interfaces a socket bound to `ip` listens on.
    pub fn stacks_for_bind(&self, ip: IpAddr) -> Vec<StackId> {
        let ip = unmapped(ip);
        if ip.is_unspecified() || self.nic_addrs.contains(&ip) {
            (0..self.stacks.len()).collect()
        } else {
            vec![LOOPBACK]
        }
    }

    /// A TCP socket of interface `stack`.
    pub fn tcp(&mut self, h: Handle) -> &mut tcp::Socket<'static> {
        self.stacks[h.stack]
            .sockets
            .get_mut::<tcp::Socket>(h.socket)
    }

    /// A UDP socket of interface `stack`.
    pub fn udp(&mut self, h: Handle) -> &mut udp::Socket<'static> {
        self.stacks[h.stack]
            .sockets
            .get_mut::<udp::Socket>(h.socket)
    }

    /// Adds a new TCP socket with buffers of `rx` and `tx` bytes.
    pub fn add_tcp(&mut self, stack: StackId, rx: usize, tx: usize) -> Handle {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; rx]),
            tcp::SocketBuffer::new(vec![0u8; tx]),
        );
        if stack == LOOPBACK {
            // Both ends are here: an ACK costs nothing, waiting for one
            // only delays the other side (and its closing).
            s.set_ack_delay(None);
        }
        Handle {
            stack,
            socket: self.stacks[stack].sockets.add(s),
        }
    }

    /// Adds a new UDP socket.
    pub fn add_udp(&mut self, stack: StackId, bytes: usize) -> Handle {
        let meta = || vec![udp::PacketMetadata::EMPTY; 64];
        let s = udp::Socket::new(
            udp::PacketBuffer::new(meta(), vec![0u8; bytes]),
            udp::PacketBuffer::new(meta(), vec![0u8; bytes]),
        );
        Handle {
            stack,
            socket: self.stacks[stack].sockets.add(s),
        }
    }

    /// Removes a socket from its set.
    pub fn remove(&mut self, h: Handle) {
        self.stacks[h.stack].sockets.remove(h.socket);
    }

    /// Connects TCP socket `h` from `local` to `remote`.
    ///
    /// # Errors
    /// EADDRNOTAVAIL/ENETUNREACH when smoltcp cannot address it.
    pub fn tcp_connect(
        &mut self,
        h: Handle,
        remote: SocketAddr,
        local: SocketAddr,
    ) -> Result<(), Errno> {
        let stack = &mut self.stacks[h.stack];
        let cx = stack.iface.context();
        let local_addr = (!local.ip().is_unspecified()).then(|| IpAddress::from(local.ip()));
        let s = stack.sockets.get_mut::<tcp::Socket>(h.socket);
        s.connect(
            cx,
            (IpAddress::from(remote.ip()), remote.port()),
            smoltcp::wire::IpListenEndpoint {
                addr: local_addr,
                port: local.port(),
            },
        )
        .map_err(|_| Errno::Netunreach)
    }

    /// Hands a closed connection to the background to finish; `reuse_addr`
    /// is its socket's SO_REUSEADDR (a TIME-WAIT connection lets a new
    /// socket bind its port only when both have it, as on Linux).
    pub fn orphan(&mut self, h: Handle, reuse_addr: bool) {
        self.orphans.push((h, reuse_addr));
    }

    /// Reserves `port` (0: an ephemeral one) on `addr` for `owner`.
    ///
    /// # Errors
    /// EADDRINUSE when another socket holds it (and they do not both ask
    /// to share), EACCES never (the program is root).
    #[allow(clippy::too_many_arguments)]
    pub fn bind(
        &mut self,
        owner: u64,
        proto: Proto,
        addr: IpAddr,
        port: u16,
        reuse_addr: bool,
        reuse_port: bool,
        v6_only: bool,
    ) -> Result<u16, Errno> {
        let addr = unmapped(addr);
        let port = if port == 0 {
            self.ephemeral(proto, addr)?
        } else {
            port
        };
        let overlaps = |b: &Binding| {
            let family_meets = |a: IpAddr, only6: bool, other: IpAddr| {
                a.is_ipv4() == other.is_ipv4() || (a.is_ipv6() && a.is_unspecified() && !only6)
            };
            b.proto == proto
                && b.port == port
                && (b.addr == addr
                    || (b.addr.is_unspecified() && family_meets(b.addr, b.v6_only, addr))
                    || (addr.is_unspecified() && family_meets(addr, v6_only, b.addr)))
        };
        for b in self.bindings.iter().filter(|b| overlaps(b)) {
            let shared =
                (b.reuse_port && reuse_port) || (b.reuse_addr && reuse_addr && !b.listening);
            if !shared {
                return Err(Errno::Addrinuse);
            }
        }
        // A connection of this port still in TIME-WAIT keeps it, unless it
        // and the new socket both have SO_REUSEADDR.
        if proto == Proto::Tcp && self.lingering(port, reuse_addr) {
            return Err(Errno::Addrinuse);
        }
        self.bindings.push(Binding {
            owner,
            proto,
            addr,
            port,
            reuse_addr,
            reuse_port,
            listening: false,
            v6_only,
        });
        Ok(port)
    }

    /// Whether a closed connection of local `port` in TIME-WAIT keeps a
    /// socket with (or without) SO_REUSEADDR from binding it.
    fn lingering(&mut self, port: u16, reuse_addr: bool) -> bool {
        let orphans = self.orphans.clone();
        orphans.into_iter().any(|(h, shared)| {
            let s = self.tcp(h);
            s.state() == tcp::State::TimeWait
                && s.local_endpoint().is_some_and(|e| e.port == port)
                && !(shared && reuse_addr)
        })
    }

    /// Marks `owner`'s binding as listening (no SO_REUSEADDR sharing then).
    pub fn set_listening(&mut self, owner: u64) {
        for b in self.bindings.iter_mut().filter(|b| b.owner == owner) {
            b.listening = true;
        }
    }

    /// Gives up `owner`'s ports.
    pub fn unbind(&mut self, owner: u64) {
        self.bindings.retain(|b| b.owner != owner);
    }

    /// A free ephemeral port (32768–60999, as Linux's default range).
    fn ephemeral(&mut self, proto: Proto, addr: IpAddr) -> Result<u16, Errno> {
        for _ in 0..28232 {
            let p = self.next_ephemeral;
            self.next_ephemeral = if p >= 60999 { 32768 } else { p + 1 };
            let taken = self.bindings.iter().any(|b| {
                b.proto == proto
                    && b.port == p
                    && (b.addr == addr || b.addr.is_unspecified() || addr.is_unspecified())
            });
            if !taken {
                return Ok(p);
            }
        }
        Err(Errno::Addrnotavail)
    }

    /// Makes a listening socket for each waiting connection request of a
    /// listened-to port, before the interface sees the request.
    fn prepare_listeners(&mut self, stack: StackId) {
        if self.listeners.is_empty() {
            return;
        }
        let framing = self.stacks[stack].device.framing;
        let mut drop_frames = Vec::new();
        let mut wanted: Vec<(u64, SocketAddr, SocketAddr)> = Vec::new();
        for (i, frame) in self.stacks[stack].device.inbox.iter().enumerate() {
            let Some(syn) = tcp_syn(frame, framing) else {
                continue;
            };
            let found = self.listeners.iter().find(|(_, l)| {
                l.local.port() == syn.to.port()
                    && (l.local.ip().is_unspecified() || unmapped(l.local.ip()) == syn.to.ip())
                    && match l.local.ip() {
                        IpAddr::V4(_) => syn.to.is_ipv4(),
                        IpAddr::V6(_) => syn.to.is_ipv6() || !l.v6_only,
                    }
            });
            let Some((&id, l)) = found else {
                continue;
            };
            // A repeated request goes to the connection already made for it.
            let sockets = &self.stacks[stack].sockets;
            let known = l.pending.iter().any(|h| {
                h.stack == stack
                    && sockets
                        .get::<tcp::Socket>(h.socket)
                        .remote_endpoint()
                        .is_some_and(|e| SocketAddr::new(e.addr.into(), e.port) == syn.from)
            }) || wanted.iter().any(|w| w.0 == id && w.2 == syn.from);
            if known {
                continue;
            }
            let queued = l.pending.len() + wanted.iter().filter(|w| w.0 == id).count();
            if queued > l.backlog {
                drop_frames.push(i);
                continue;
            }
            wanted.push((id, syn.to, syn.from));
        }
        for i in drop_frames.into_iter().rev() {
            self.stacks[stack].device.inbox.remove(i);
        }
        for (id, to, _) in wanted {
            let Some(l) = self.listeners.get(&id) else {
                continue;
            };
            let (rx, tx, nodelay) = (l.buffers.0, l.buffers.1, l.nodelay);
            let h = self.add_tcp(stack, rx, tx);
            let s = self.tcp(h);
            s.set_nagle_enabled(!nodelay);
            let endpoint = smoltcp::wire::IpListenEndpoint {
                addr: Some(IpAddress::from(to.ip())),
                port: to.port(),
            };
            if s.listen(endpoint).is_err() {
                self.remove(h);
                continue;
            }
            if let Some(l) = self.listeners.get_mut(&id) {
                l.pending.push_back(h);
            }
        }
    }

    /// Takes the oldest established connection of listener `id`; drops
    /// requests that failed meanwhile.
    pub fn accept(&mut self, id: u64) -> Option<Handle> {
        let pending = core::mem::take(&mut self.listeners.get_mut(&id)?.pending);
        let mut keep = VecDeque::new();
        let mut taken = None;
        for h in pending {
            let state = self.tcp(h).state();
            match state {
                tcp::State::Listen | tcp::State::Closed => self.remove(h),
                tcp::State::SynReceived => keep.push_back(h),
                _ if taken.is_none() => taken = Some(h),
                _ => keep.push_back(h),
            }
        }
        if let Some(l) = self.listeners.get_mut(&id) {
            l.pending = keep;
        }
        taken
    }

    /// Whether listener `id` has a connection to accept.
    pub fn acceptable(&mut self, id: u64) -> bool {
        let Some(l) = self.listeners.get(&id) else {
            return false;
        };
        let pending: Vec<Handle> = l.pending.iter().copied().collect();
        pending.into_iter().any(|h| {
            !matches!(
                self.tcp(h).state(),
                tcp::State::Listen | tcp::State::Closed | tcp::State::SynReceived
            )
        })
    }

    /// Stops listener `id`: its waiting connections are reset.
    pub fn stop_listening(&mut self, id: u64) {
        if let Some(l) = self.listeners.remove(&id) {
            for h in l.pending {
                self.tcp(h).abort();
                self.orphans.push((h, false));
            }
        }
    }

    /// Moves packets until nothing changes: each interface takes what it
    /// received and sends what its sockets have; the loopback's output is
    /// its input; the NIC's goes to the driver. Returns whether any socket
    /// changed.
    pub fn poll(&mut self) -> bool {
        let mut changed = false;
        for _ in 0..64 {
            let t = now();
            let mut any = false;
            self.reset_orphans_receiving();
            if self.has_nic() && nic::receive(&mut self.stacks[NIC].device) {
                any = true;
            }
            for id in 0..self.stacks.len() {
                self.prepare_listeners(id);
                let s = &mut self.stacks[id];
                if s.iface.poll(t, &mut s.device, &mut s.sockets) == PollResult::SocketStateChanged
                {
                    any = true;
                }
            }
            changed |= any;
            let looped = self.stacks[LOOPBACK].device.loop_back();
            let sent = self.has_nic() && nic::transmit(&mut self.stacks[NIC].device);
            if !looped && !any && !sent {
                break;
            }
        }
        self.reap_orphans();
        self.arm_timer();
        changed
    }

    /// A connection the program closed that still receives data is reset,
    /// as Linux does (nobody will ever read it; the sender learns so).
    fn reset_orphans_receiving(&mut self) {
        let orphans = self.orphans.clone();
        for (h, _) in orphans {
            let s = self.tcp(h);
            if s.recv_queue() > 0 && s.state() != tcp::State::Closed {
                s.abort();
            }
        }
    }

    /// Drops finished background connections.
    fn reap_orphans(&mut self) {
        let orphans = core::mem::take(&mut self.orphans);
        for (h, shared) in orphans {
            if self.tcp(h).state() == tcp::State::Closed {
                self.remove(h);
            } else {
                self.orphans.push((h, shared));
            }
        }
    }

    /// Sets the deadline smoltcp wants (retransmissions, delayed ACKs,
    /// TIME-WAIT) and re-arms the kernel's timer when it moved earlier.
    fn arm_timer(&mut self) {
        let t = now();
        let next = self
            .stacks
            .iter_mut()
            .filter_map(|s| s.iface.poll_at(t, &s.sockets))
            .min();
        let ns = next.map_or(0, |at| {
            (at.total_micros().max(0) as u64)
                .saturating_mul(1000)
                .max(1)
        });
        let old = DEADLINE.swap(ns, Ordering::Relaxed);
        if ns != 0 && (old == 0 || ns < old) {
            crate::sched::timers_changed();
        }
    }
}

/// An ARP announcement of `ip` at `mac`, broadcast.
fn gratuitous_arp(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    use smoltcp::wire::{
        ArpOperation, ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol, EthernetRepr,
    };
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(mac),
        source_protocol_addr: ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: ip,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(mac),
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    };
    let mut frame = vec![0u8; eth.buffer_len() + arp.buffer_len()];
    let mut f = EthernetFrame::new_unchecked(&mut frame[..]);
    eth.emit(&mut f);
    arp.emit(&mut ArpPacket::new_unchecked(f.payload_mut()));
    frame
}

/// Runs `f` on the network state (set up at boot).
pub fn with<R>(f: impl FnOnce(&mut Net) -> R) -> Option<R> {
    let mut guard = KERNEL.net.lock();
    guard.as_mut().map(f)
}

/// The next deadline the network wants the timer for.
pub fn next_deadline() -> Option<u64> {
    match DEADLINE.load(Ordering::Relaxed) {
        0 => None,
        ns => Some(ns),
    }
}

/// Polls the network if its deadline passed (from the timer; no kernel
/// lock held).
pub fn poll_due() {
    let due = next_deadline().is_some_and(|d| d <= crate::time::monotonic_ns());
    if due {
        poll();
    }
}

/// Polls the network (a frame arrived, the timer fired); wakes waiting
/// threads when a socket changed. No kernel lock may be held.
pub fn poll() {
    if with(Net::poll) == Some(true) {
        crate::fd::socket::changed();
    }
}

/// The host name (uname's nodename).
static HOSTNAME: spin::Once<alloc::string::String> = spin::Once::new();

/// The machine's host name: the VMM's `kiln.hostname=`, else "kiln".
pub fn hostname() -> &'static str {
    HOSTNAME.get().map_or("kiln", |h| h.as_str())
}

/// Sets the network up at boot: the loopback always, the NIC when the VM
/// has one; then the configuration files the C library reads.
pub fn init(config: NetConfig) {
    if let Some(h) = &config.hostname {
        HOSTNAME.call_once(|| h.clone());
    }
    let mut net = Net::new(config);
    if let Some((mac, mtu)) = nic::attach() {
        net.add_nic(mac, mtu);
    }
    write_etc_files(&net.config);
    *KERNEL.net.lock() = Some(net);
    // Send the announcement, and take what arrived while the stack was not
    // there yet (its interrupt found nothing to hand it to).
    poll();
}

/// /etc/hosts, /etc/hostname and /etc/resolv.conf from the VMM's
/// configuration (the image's own stay when it gave none).
fn write_etc_files(config: &NetConfig) {
    if config.is_empty() {
        return;
    }
    let mut files = vec![("/etc/hosts", config.hosts_file())];
    if let Some(h) = config.hostname_file() {
        files.push(("/etc/hostname", h));
    }
    if let Some(r) = config.resolv_conf() {
        files.push(("/etc/resolv.conf", r));
    }
    for (path, text) in files {
        if let Err(e) = crate::fs::write_whole_file(path, text.as_bytes()) {
            crate::kprintln!("kiln: cannot write {path}: {}", e.name());
        }
    }
}
