//! Socket addresses as the program passes them (`struct sockaddr_*`),
//! decoded into [`SockAddr`] and encoded back.

use alloc::vec::Vec;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use super::abi::family::*;
use crate::errno::Errno;

/// Bytes of `sun_path`.
pub const UNIX_PATH_MAX: usize = 108;
/// `sizeof(struct sockaddr_un)`.
pub const SOCKADDR_UN_SIZE: usize = 2 + UNIX_PATH_MAX;

/// A local (AF_UNIX) socket's name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnixAddr {
    /// No name (socketpair, an unbound socket).
    Unnamed,
    /// A path in the file system, as the program gave it.
    Path(Vec<u8>),
    /// A name in the abstract namespace (without the leading NUL).
    Abstract(Vec<u8>),
}

/// A socket address of any family kiln supports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SockAddr {
    /// AF_UNSPEC (connect's "dissolve the association").
    Unspec,
    /// AF_UNIX.
    Unix(UnixAddr),
    /// AF_INET or AF_INET6.
    Ip(SocketAddr),
    /// AF_VSOCK.
    Vsock {
        /// Context id (2: the host, 1: local, 0xffffffff: any).
        cid: u32,
        /// Port.
        port: u32,
    },
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl SockAddr {
    /// Decodes the `len` bytes a program passed.
    ///
    /// # Errors
    /// EINVAL when too short for its family, EAFNOSUPPORT for a family kiln
    /// does not have.
    pub fn decode(b: &[u8]) -> Result<SockAddr, Errno> {
        if b.len() < 2 {
            return Err(Errno::Inval);
        }
        match u16_at(b, 0) {
            AF_UNSPEC => Ok(SockAddr::Unspec),
            AF_UNIX => {
                let path = &b[2..b.len().min(SOCKADDR_UN_SIZE)];
                Ok(SockAddr::Unix(match path.first() {
                    None => UnixAddr::Unnamed,
                    Some(0) => UnixAddr::Abstract(path[1..].to_vec()),
                    Some(_) => {
                        let end = path.iter().position(|&c| c == 0).unwrap_or(path.len());
                        UnixAddr::Path(path[..end].to_vec())
                    }
                }))
            }
            AF_INET => {
                if b.len() < 16 {
                    return Err(Errno::Inval);
                }
                let port = u16::from_be_bytes([b[2], b[3]]);
                let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
                Ok(SockAddr::Ip(SocketAddr::V4(SocketAddrV4::new(ip, port))))
            }
            AF_INET6 => {
                if b.len() < 24 {
                    return Err(Errno::Inval);
                }
                let port = u16::from_be_bytes([b[2], b[3]]);
                let flow = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&b[8..24]);
                let scope = if b.len() >= 28 { u32_at(b, 24) } else { 0 };
                Ok(SockAddr::Ip(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(octets),
                    port,
                    flow,
                    scope,
                ))))
            }
            AF_VSOCK => {
                if b.len() < 16 {
                    return Err(Errno::Inval);
                }
                Ok(SockAddr::Vsock {
                    port: u32_at(b, 4),
                    cid: u32_at(b, 8),
                })
            }
            _ => Err(Errno::Afnosupport),
        }
    }

    /// The bytes a program reads (getsockname, accept, recvfrom).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            SockAddr::Unspec => out.extend_from_slice(&AF_UNSPEC.to_le_bytes()),
            SockAddr::Unix(u) => {
                out.extend_from_slice(&AF_UNIX.to_le_bytes());
                match u {
                    UnixAddr::Unnamed => {}
                    UnixAddr::Path(p) => {
                        out.extend_from_slice(p);
                        out.push(0);
                    }
                    UnixAddr::Abstract(name) => {
                        out.push(0);
                        out.extend_from_slice(name);
                    }
                }
            }
            SockAddr::Ip(SocketAddr::V4(a)) => {
                out.extend_from_slice(&AF_INET.to_le_bytes());
                out.extend_from_slice(&a.port().to_be_bytes());
                out.extend_from_slice(&a.ip().octets());
                out.extend_from_slice(&[0; 8]);
            }
            SockAddr::Ip(SocketAddr::V6(a)) => {
                out.extend_from_slice(&AF_INET6.to_le_bytes());
                out.extend_from_slice(&a.port().to_be_bytes());
                out.extend_from_slice(&a.flowinfo().to_be_bytes());
                out.extend_from_slice(&a.ip().octets());
                out.extend_from_slice(&a.scope_id().to_le_bytes());
            }
            SockAddr::Vsock { cid, port } => {
                out.extend_from_slice(&AF_VSOCK.to_le_bytes());
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&port.to_le_bytes());
                out.extend_from_slice(&cid.to_le_bytes());
                out.extend_from_slice(&[0; 4]);
            }
        }
        out
    }

    /// The address family number.
    pub fn family(&self) -> u16 {
        match self {
            SockAddr::Unspec => AF_UNSPEC,
            SockAddr::Unix(_) => AF_UNIX,
            SockAddr::Ip(SocketAddr::V4(_)) => AF_INET,
            SockAddr::Ip(SocketAddr::V6(_)) => AF_INET6,
            SockAddr::Vsock { .. } => AF_VSOCK,
        }
    }
}

/// The address of an IPv4-mapped IPv6 address's IPv4 part, if it is one
/// (`::ffff:a.b.c.d`): a dual-stack socket talks IPv4 to those.
pub fn unmapped(ip: core::net::IpAddr) -> core::net::IpAddr {
    match ip {
        core::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => core::net::IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inet_round_trips_in_network_order() {
        let a = SockAddr::Ip("127.0.0.1:8080".parse().unwrap());
        let b = a.encode();
        assert_eq!(b.len(), 16);
        assert_eq!(&b[..4], &[2, 0, 0x1f, 0x90]);
        assert_eq!(SockAddr::decode(&b).unwrap(), a);
    }

    #[test]
    fn inet6_round_trips() {
        let a = SockAddr::Ip("[::1]:443".parse().unwrap());
        let b = a.encode();
        assert_eq!(b.len(), 28);
        assert_eq!(SockAddr::decode(&b).unwrap(), a);
        assert!(SockAddr::decode(&b[..20]).is_err());
    }

    #[test]
    fn unix_names_follow_the_length_rules() {
        let mut b = alloc::vec![1, 0];
        assert_eq!(
            SockAddr::decode(&b).unwrap(),
            SockAddr::Unix(UnixAddr::Unnamed)
        );
        b.extend_from_slice(b"/tmp/s\0garbage");
        assert_eq!(
            SockAddr::decode(&b).unwrap(),
            SockAddr::Unix(UnixAddr::Path(b"/tmp/s".to_vec()))
        );
        let abs = [1, 0, 0, b'x', 0, b'y'];
        let a = SockAddr::decode(&abs).unwrap();
        assert_eq!(a, SockAddr::Unix(UnixAddr::Abstract(b"x\0y".to_vec())));
        assert_eq!(a.encode(), abs);
    }

    #[test]
    fn unknown_families_are_not_supported() {
        assert_eq!(SockAddr::decode(&[17, 0, 0, 0]), Err(Errno::Afnosupport));
        assert_eq!(SockAddr::decode(&[2]), Err(Errno::Inval));
    }

    #[test]
    fn vsock_round_trips() {
        let a = SockAddr::Vsock { cid: 2, port: 1234 };
        let b = a.encode();
        assert_eq!(b.len(), 16);
        assert_eq!(SockAddr::decode(&b).unwrap(), a);
    }

    #[test]
    fn mapped_addresses_unmap() {
        let ip: core::net::IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(
            unmapped(ip),
            "10.0.0.1".parse::<core::net::IpAddr>().unwrap()
        );
    }
}
