//! The VM's network on the host side: which backend carries the NIC's
//! frames (`--net user` through passt, `--net tap` through a tap device,
//! or none), the guest's addresses, and the ports published to the host
//! (`-p`, as `docker run -p`). [`Network::start`] brings it up and the
//! value it returns takes it down again when dropped: the passt process
//! ends, the tap device disappears with its descriptor (also when kiln-vmm
//! is killed), and the port proxies stop.

mod passt;
mod proxy;
mod tap;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

pub use passt::PasstError;
pub use tap::TapError;

use crate::devices::virtio::net::Backend;

/// Which backend carries the NIC's frames.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// No NIC (the guest still has its loopback).
    #[default]
    None,
    /// User-mode networking through passt: no privileges, the guest's
    /// connections leave as the host's own, published ports are passt's.
    User,
    /// A tap device (root): the host reaches the guest's address directly;
    /// published ports are proxied by kiln-vmm.
    Tap {
        /// An existing tap to attach to; kiln makes (and removes) its own
        /// when `None`.
        name: Option<String>,
    },
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Mode::None),
            "user" => Ok(Mode::User),
            "tap" => Ok(Mode::Tap { name: None }),
            _ => match s.strip_prefix("tap=") {
                Some(name) if valid_ifname(name) => Ok(Mode::Tap {
                    name: Some(name.to_owned()),
                }),
                Some(name) => Err(format!(
                    "`{name}` is not a valid interface name (1-15 characters, no `/`, blanks or `:`)"
                )),
                None => Err(format!(
                    "unknown network `{s}`: use none, user or tap[=NAME]"
                )),
            },
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::None => f.write_str("none"),
            Mode::User => f.write_str("user"),
            Mode::Tap { name: None } => f.write_str("tap"),
            Mode::Tap { name: Some(n) } => write!(f, "tap={n}"),
        }
    }
}

/// Whether `name` can name a network interface.
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

/// TCP or UDP, for a published port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// A published port: `-p [IP:]HOSTPORT:GUESTPORT[/tcp|/udp]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortMap {
    /// The host address to listen on (all when `None`).
    pub host_ip: Option<IpAddr>,
    /// The host port.
    pub host_port: u16,
    /// The guest port.
    pub guest_port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
}

impl FromStr for PortMap {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("bad port mapping `{s}`: {why} (use [IP:]HOSTPORT:GUESTPORT[/tcp|/udp])")
        };
        let (spec, protocol) = match s.rsplit_once('/') {
            Some((spec, "tcp")) => (spec, Protocol::Tcp),
            Some((spec, "udp")) => (spec, Protocol::Udp),
            Some(_) => return Err(bad("the protocol must be tcp or udp")),
            None => (s, Protocol::Tcp),
        };
        let port = |p: &str| -> Result<u16, String> {
            match p.parse::<u16>() {
                Ok(0) | Err(_) => Err(bad(&format!("`{p}` is not a port (1-65535)"))),
                Ok(n) => Ok(n),
            }
        };
        // The guest port is after the last colon; the host port before it;
        // an address (IPv6 in brackets) may come first.
        let (rest, guest) = spec
            .rsplit_once(':')
            .ok_or_else(|| bad("a host port and a guest port are needed"))?;
        let (host_ip, host) = match rest.rsplit_once(':') {
            Some((ip, host)) => {
                let ip = ip.trim_start_matches('[').trim_end_matches(']');
                let ip: IpAddr = ip
                    .parse()
                    .map_err(|_| bad(&format!("`{ip}` is not an IP address")))?;
                (Some(ip), host)
            }
            None => (None, rest),
        };
        Ok(PortMap {
            host_ip,
            host_port: port(host)?,
            guest_port: port(guest)?,
            protocol,
        })
    }
}

impl fmt::Display for PortMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:")?,
            Some(ip) => write!(f, "{ip}:")?,
            None => {}
        }
        let proto = match self.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        write!(f, "{}:{}/{proto}", self.host_port, self.guest_port)
    }
}

/// An address with its prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("`{a}` is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() {
            if addr.is_ipv4() {
                24
            } else {
                64
            }
        } else {
            p.parse::<u8>()
                .ok()
                .filter(|&n| (1..max).contains(&n))
                .ok_or_else(|| format!("`{p}` is not a prefix length for {a}"))?
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// What the user asked of the network (flags and manifest).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetSpec {
    /// The backend.
    pub mode: Mode,
    /// The guest's IPv4 address (default: the backend's).
    pub address: Option<Cidr>,
    /// The guest's IPv4 gateway (default: the backend's).
    pub gateway: Option<Ipv4Addr>,
    /// Name servers (default: the backend's resolver, if any).
    pub dns: Vec<IpAddr>,
    /// DNS search domains.
    pub search: Vec<String>,
    /// The guest's host name.
    pub hostname: Option<String>,
    /// Published ports.
    pub publish: Vec<PortMap>,
}

/// The addresses the guest gets, as the kernel options say them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestAddresses {
    /// IPv4 address.
    pub v4: Cidr,
    /// IPv4 gateway (the host side).
    pub gw4: Ipv4Addr,
    /// IPv6 address, when the backend carries IPv6.
    pub v6: Option<(Cidr, Ipv6Addr)>,
    /// Name servers.
    pub dns: Vec<IpAddr>,
}

/// Why the network could not come up.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// passt failed.
    #[error(transparent)]
    Passt(#[from] PasstError),
    /// The tap device failed.
    #[error(transparent)]
    Tap(#[from] TapError),
    /// A published host port is taken.
    #[error("cannot publish {map}: host port {port} is already in use ({source})")]
    PortTaken {
        /// The mapping.
        map: PortMap,
        /// The port.
        port: u16,
        /// What bind said.
        #[source]
        source: std::io::Error,
    },
    /// A published port on the proxy could not be served.
    #[error("cannot publish {map}: {source}")]
    Proxy {
        /// The mapping.
        map: PortMap,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// `-p` without a NIC.
    #[error("-p needs a network: use --net user or --net tap (the image or the command says --net none)")]
    PublishWithoutNetwork,
    /// An address that does not fit the backend.
    #[error("{0}")]
    Address(String),
}

/// passt's default guest network (as QEMU's user networking has it).
const USER_V4: Cidr = Cidr {
    addr: IpAddr::V4(Ipv4Addr::new(10, 0, 2, 15)),
    prefix: 24,
};
const USER_GW4: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// The address passt answers DNS queries on (forwarded to the host's
/// resolver).
const USER_DNS4: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
/// kiln's IPv6 ULA for user networking.
const USER_V6: Ipv6Addr = Ipv6Addr::new(0xfd6b, 0x696c, 0x6e00, 0, 0, 0, 0, 2);
const USER_GW6: Ipv6Addr = Ipv6Addr::new(0xfd6b, 0x696c, 0x6e00, 0, 0, 0, 0, 1);

/// The network of a running VM; dropping it takes it down.
pub struct Network {
    /// The NIC's frames, for the virtio-net device (taken once).
    pub backend: Option<Box<dyn Backend>>,
    /// What the guest is told.
    pub guest: GuestAddresses,
    /// The MTU of the link.
    pub mtu: u16,
    /// What keeps it up: the passt process, the tap device, the proxies.
    _keep: Vec<Box<dyn Send>>,
    /// A one-line description for `--timings`/messages.
    pub description: String,
}

impl Network {
    /// Brings the network of `spec` up; `None` for `--net none`.
    ///
    /// # Errors
    /// [`NetError`] naming what failed; nothing is left behind.
    pub fn start(spec: &NetSpec) -> Result<Option<Network>, NetError> {
        match &spec.mode {
            Mode::None => {
                if spec.publish.is_empty() {
                    Ok(None)
                } else {
                    Err(NetError::PublishWithoutNetwork)
                }
            }
            Mode::User => {
                let v4 = spec.address.unwrap_or(USER_V4);
                let IpAddr::V4(v4addr) = v4.addr else {
                    return Err(NetError::Address(format!(
                        "--ip {v4}: the guest's address must be IPv4"
                    )));
                };
                let gw4 = spec.gateway.unwrap_or(if spec.address.is_some() {
                    gateway_of(v4addr, v4.prefix)
                } else {
                    USER_GW4
                });
                let dns = if spec.dns.is_empty() {
                    vec![IpAddr::V4(USER_DNS4)]
                } else {
                    spec.dns.clone()
                };
                for map in &spec.publish {
                    proxy::check_free(map)?;
                }
                let guest = GuestAddresses {
                    v4,
                    gw4,
                    v6: Some((
                        Cidr {
                            addr: IpAddr::V6(USER_V6),
                            prefix: 64,
                        },
                        USER_GW6,
                    )),
                    dns,
                };
                let (passt, backend) = passt::Passt::start(&guest, USER_DNS4, &spec.publish)?;
                Ok(Some(Network {
                    backend: Some(Box::new(backend)),
                    description: format!("user (passt), guest {}", guest.v4),
                    guest,
                    mtu: passt::MTU,
                    _keep: vec![Box::new(passt)],
                }))
            }
            Mode::Tap { name } => {
                let tap = tap::Tap::open(name.as_deref(), spec.address, spec.gateway)?;
                let guest = GuestAddresses {
                    v4: tap.guest,
                    gw4: tap.host,
                    v6: None,
                    dns: spec.dns.clone(),
                };
                let mut keep: Vec<Box<dyn Send>> = Vec::new();
                let IpAddr::V4(guest_ip) = tap.guest.addr else {
                    return Err(NetError::Address(
                        "the tap guest address must be IPv4".into(),
                    ));
                };
                for map in &spec.publish {
                    keep.push(Box::new(proxy::Proxy::start(map, guest_ip)?));
                }
                let description = format!("tap {}, guest {}", tap.name, tap.guest);
                let backend = tap.backend()?;
                let mtu = tap.mtu;
                keep.push(Box::new(tap));
                Ok(Some(Network {
                    backend: Some(Box::new(backend)),
                    guest,
                    mtu,
                    _keep: keep,
                    description,
                }))
            }
        }
    }

    /// The kernel options that give the guest its configuration.
    pub fn kernel_options(&self) -> Vec<String> {
        let mut out = vec![
            format!("kiln.ip={}", self.guest.v4),
            format!("kiln.gw={}", self.guest.gw4),
        ];
        if let Some((v6, gw6)) = self.guest.v6 {
            out.push(format!("kiln.ip={v6}"));
            out.push(format!("kiln.gw={gw6}"));
        }
        if !self.guest.dns.is_empty() {
            let list: Vec<String> = self.guest.dns.iter().map(ToString::to_string).collect();
            out.push(format!("kiln.dns={}", list.join(",")));
        }
        out
    }
}

/// The first address of `addr`'s subnet (the usual gateway).
fn gateway_of(addr: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    Ipv4Addr::from((u32::from(addr) & mask) + 1)
}

/// The options every run passes, network or not: host name, search list.
pub fn common_kernel_options(spec: &NetSpec, network: Option<&Network>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(h) = &spec.hostname {
        out.push(format!("kiln.hostname={h}"));
    }
    if !spec.search.is_empty() {
        out.push(format!("kiln.search={}", spec.search.join(",")));
    }
    if network.is_none() && !spec.dns.is_empty() {
        let list: Vec<String> = spec.dns.iter().map(ToString::to_string).collect();
        out.push(format!("kiln.dns={}", list.join(",")));
    }
    if let Some(n) = network {
        out.extend(n.kernel_options());
        out.push(format!("kiln.mtu={}", n.mtu));
    }
    out
}

/// A random locally administered MAC address.
pub fn random_mac() -> [u8; 6] {
    let mut b = [0u8; 6];
    // SAFETY: getrandom fills `b`, at most its length.
    let _ = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    b[0] = (b[0] & 0xfe) | 0x02;
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_maps_parse_as_docker_writes_them() {
        let p: PortMap = "8080:80".parse().unwrap();
        assert_eq!(
            p,
            PortMap {
                host_ip: None,
                host_port: 8080,
                guest_port: 80,
                protocol: Protocol::Tcp
            }
        );
        let p: PortMap = "127.0.0.1:5353:53/udp".parse().unwrap();
        assert_eq!(p.host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(p.protocol, Protocol::Udp);
        let p: PortMap = "[::1]:8443:443".parse().unwrap();
        assert_eq!(p.host_ip, Some("::1".parse().unwrap()));
        assert_eq!(p.to_string(), "[::1]:8443:443/tcp");
        for bad in ["80", "0:80", "8080:80/sctp", "x:1:2", "1:70000"] {
            assert!(bad.parse::<PortMap>().is_err(), "{bad}");
        }
    }

    #[test]
    fn modes_parse() {
        assert_eq!("user".parse::<Mode>().unwrap(), Mode::User);
        assert_eq!(
            "tap=kiln0".parse::<Mode>().unwrap(),
            Mode::Tap {
                name: Some("kiln0".into())
            }
        );
        assert!("tap=a/b".parse::<Mode>().is_err());
        assert!("bridge".parse::<Mode>().is_err());
    }

    #[test]
    fn addresses_take_a_default_prefix_and_a_gateway() {
        let c: Cidr = "192.168.7.20".parse().unwrap();
        assert_eq!(c.prefix, 24);
        assert_eq!(
            gateway_of("192.168.7.20".parse().unwrap(), 24),
            Ipv4Addr::new(192, 168, 7, 1)
        );
        assert!("10.0.0.1/40".parse::<Cidr>().is_err());
    }

    #[test]
    fn publishing_needs_a_network() {
        let spec = NetSpec {
            publish: vec!["8080:80".parse().unwrap()],
            ..NetSpec::default()
        };
        assert!(matches!(
            Network::start(&spec),
            Err(NetError::PublishWithoutNetwork)
        ));
    }
}
