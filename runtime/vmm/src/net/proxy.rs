//! Published ports over a tap: a host-side proxy in kiln-vmm (as
//! docker-proxy does) — it listens on the host port and relays each TCP
//! connection, or each UDP client's datagrams, to the guest's address.
//! kiln changes no firewall rule. The proxy's threads end with kiln-vmm.

use std::io::ErrorKind;
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket,
};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{NetError, PortMap, Protocol};

/// The host addresses a mapping listens on: the one given, or every
/// address (IPv6 and IPv4).
fn host_addrs(map: &PortMap) -> Vec<SocketAddr> {
    match map.host_ip {
        Some(ip) => vec![SocketAddr::new(ip, map.host_port)],
        None => vec![SocketAddr::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            map.host_port,
        )],
    }
}

/// Fails when a published host port is taken (passt would only log it).
///
/// # Errors
/// [`NetError::PortTaken`].
pub fn check_free(map: &PortMap) -> Result<(), NetError> {
    for addr in host_addrs(map) {
        let r = match map.protocol {
            Protocol::Tcp => TcpListener::bind(addr).map(drop),
            Protocol::Udp => UdpSocket::bind(addr).map(drop),
        };
        r.map_err(|source| NetError::PortTaken {
            map: map.clone(),
            port: map.host_port,
            source,
        })?;
    }
    Ok(())
}

/// A running proxy for one mapping; stopped when dropped.
pub struct Proxy {
    stop: Arc<AtomicBool>,
    fds: Vec<i32>,
}

impl Proxy {
    /// Listens on the mapping's host port and relays to `guest`.
    ///
    /// # Errors
    /// [`NetError::PortTaken`] when the port is taken.
    pub fn start(map: &PortMap, guest: Ipv4Addr) -> Result<Proxy, NetError> {
        let stop = Arc::new(AtomicBool::new(false));
        let target = SocketAddr::new(IpAddr::V4(guest), map.guest_port);
        let mut fds = Vec::new();
        for addr in host_addrs(map) {
            let taken = |source| NetError::PortTaken {
                map: map.clone(),
                port: map.host_port,
                source,
            };
            let stop = stop.clone();
            let serve: Box<dyn FnOnce() + Send> = match map.protocol {
                Protocol::Tcp => {
                    let l = TcpListener::bind(addr).map_err(taken)?;
                    fds.push(l.as_raw_fd());
                    Box::new(move || serve_tcp(&l, target, &stop))
                }
                Protocol::Udp => {
                    let s = UdpSocket::bind(addr).map_err(taken)?;
                    fds.push(s.as_raw_fd());
                    Box::new(move || serve_udp(&s, target, &stop))
                }
            };
            std::thread::Builder::new()
                .name("kiln-proxy".into())
                .spawn(serve)
                .map_err(|source| NetError::Proxy {
                    map: map.clone(),
                    source,
                })?;
        }
        Ok(Proxy { stop, fds })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for &fd in &self.fds {
            // SAFETY: wakes the thread blocked in accept/recv on a
            // descriptor it owns; the descriptor stays open until it exits.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
    }
}

fn serve_tcp(listener: &TcpListener, target: SocketAddr, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        std::thread::spawn(move || relay_tcp(client, target));
    }
}

/// Relays one connection both ways; each direction's end is passed on as
/// a half-close.
fn relay_tcp(client: TcpStream, target: SocketAddr) {
    let Ok(guest) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = guest.set_nodelay(true);
    let (Ok(c2), Ok(g2)) = (client.try_clone(), guest.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || copy_half(c2, g2));
    copy_half(guest, client);
    let _ = up.join();
}

fn copy_half(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

fn serve_udp(socket: &UdpSocket, target: SocketAddr, stop: &AtomicBool) {
    // One socket towards the guest per client, so replies find their way.
    let mut clients: Vec<(SocketAddr, Arc<UdpSocket>)> = Vec::new();
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::SeqCst) {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let upstream = match clients.iter().find(|(c, _)| *c == from) {
            Some((_, s)) => s.clone(),
            None => {
                let bind = if target.is_ipv4() {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                } else {
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                };
                let Ok(s) = UdpSocket::bind(SocketAddr::new(bind, 0)) else {
                    continue;
                };
                if s.connect(target).is_err() {
                    continue;
                }
                let s = Arc::new(s);
                let (back, reply_to, host) = (s.clone(), from, socket.try_clone());
                if let Ok(host) = host {
                    std::thread::spawn(move || {
                        let mut b = vec![0u8; 65536];
                        while let Ok(n) = back.recv(&mut b) {
                            if host.send_to(&b[..n], reply_to).is_err() {
                                return;
                            }
                        }
                    });
                }
                clients.push((from, s.clone()));
                s
            }
        };
        let _ = upstream.send(&buf[..n]);
    }
}
