//! `--net tap`: a tap device per VM (root). kiln-vmm makes the device
//! (`kiln%d`), gives the host side the first address of a free /30 in
//! 10.200.0.0/16 (or what `--gateway`/`--ip` say), and brings it up; the
//! guest gets the second address. The device is not persistent, so it
//! disappears with its descriptor — when kiln-vmm exits, crashes or is
//! killed. `--net tap=NAME` attaches to an existing tap instead, and
//! leaves its addresses alone. kiln changes no route and no firewall rule.

use std::ffi::CStr;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::Cidr;
use crate::devices::virtio::net::TapBackend;

/// Why the tap could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// /dev/net/tun cannot be opened.
    #[error("--net tap: cannot open /dev/net/tun: {0}")]
    Open(#[source] std::io::Error),
    /// No privileges.
    #[error("--net tap needs root (CAP_NET_ADMIN) to {what}; use --net user without privileges")]
    Permission {
        /// What was refused.
        what: String,
    },
    /// The device cannot be made or attached.
    #[error("--net tap: cannot {what} tap device {name}: {source}")]
    Device {
        /// What was attempted.
        what: &'static str,
        /// The interface name.
        name: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// No free subnet for an automatic address.
    #[error(
        "--net tap: no free /30 left in 10.200.0.0/16 for the tap's addresses; give one with --ip"
    )]
    NoSubnet,
    /// An address given that does not work.
    #[error("--net tap: {0}")]
    Address(String),
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct ifreq` with the union as raw bytes.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: [u8; 24],
}

impl IfReq {
    fn new(name: &str) -> Self {
        let mut r = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: [0; 24],
        };
        let n = name.len().min(libc::IFNAMSIZ - 1);
        r.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        r
    }

    fn name(&self) -> String {
        CStr::from_bytes_until_nul(&self.name)
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn set_ipv4(&mut self, ip: Ipv4Addr) {
        // struct sockaddr_in: family, port, address.
        self.data = [0; 24];
        self.data[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        self.data[4..8].copy_from_slice(&ip.octets());
    }

    fn ipv4(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.data[4], self.data[5], self.data[6], self.data[7])
    }

    fn set_int(&mut self, v: i32) {
        self.data = [0; 24];
        self.data[..4].copy_from_slice(&v.to_ne_bytes());
    }

    fn int(&self) -> i32 {
        i32::from_ne_bytes([self.data[0], self.data[1], self.data[2], self.data[3]])
    }
}

/// An ioctl on `fd` with an ifreq.
fn ifreq_ioctl(fd: RawFd, request: libc::c_ulong, req: &mut IfReq) -> std::io::Result<()> {
    // SAFETY: `req` is a valid ifreq-sized buffer for these requests.
    let rc = unsafe { libc::ioctl(fd, request as _, req as *mut IfReq) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A datagram socket for interface ioctls.
fn control_socket() -> std::io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor only this value owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A tap device for one VM.
pub struct Tap {
    fd: OwnedFd,
    /// Its name.
    pub name: String,
    /// The guest's address.
    pub guest: Cidr,
    /// The host side's address (the guest's gateway).
    pub host: Ipv4Addr,
    /// Its MTU.
    pub mtu: u16,
}

fn errno_is_permission(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES))
}

impl Tap {
    /// Makes (or, with `name`, attaches to) a tap device and addresses it.
    ///
    /// # Errors
    /// [`TapError`], naming what failed; a device made here is gone again.
    pub fn open(
        name: Option<&str>,
        address: Option<Cidr>,
        gateway: Option<Ipv4Addr>,
    ) -> Result<Tap, TapError> {
        let existing = name.filter(|n| std::path::Path::new("/sys/class/net").join(n).exists());
        let path = c"/dev/net/tun";
        // SAFETY: open(2) of a constant path; the result is checked.
        let raw = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            let e = std::io::Error::last_os_error();
            return Err(if errno_is_permission(&e) {
                TapError::Permission {
                    what: "open /dev/net/tun".into(),
                }
            } else {
                TapError::Open(e)
            });
        }
        // SAFETY: a new descriptor only this value owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut req = IfReq::new(name.unwrap_or("kiln%d"));
        req.data[..2].copy_from_slice(&(IFF_TAP | IFF_NO_PI).to_ne_bytes());
        let wanted = name.unwrap_or("kiln%d").to_owned();
        ifreq_ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req).map_err(|source| {
            if errno_is_permission(&source) {
                TapError::Permission {
                    what: format!("create tap device {wanted}"),
                }
            } else {
                TapError::Device {
                    what: if existing.is_some() {
                        "attach to"
                    } else {
                        "create"
                    },
                    name: wanted.clone(),
                    source,
                }
            }
        })?;
        let name = req.name();
        let ctl = control_socket().map_err(TapError::Open)?;
        if existing.is_some() {
            // Someone else's tap: read its address, touch nothing.
            let mut r = IfReq::new(&name);
            let host = match ifreq_ioctl(ctl.as_raw_fd(), libc::SIOCGIFADDR, &mut r) {
                Ok(()) => Some(r.ipv4()),
                Err(_) => None,
            };
            let guest = match (address, host) {
                (Some(a), _) => a,
                (None, Some(h)) => Cidr {
                    addr: IpAddr::V4(Ipv4Addr::from(u32::from(h) + 1)),
                    prefix: 24,
                },
                (None, None) => {
                    return Err(TapError::Address(format!(
                        "{name} has no IPv4 address to derive the guest's from; give one with --ip"
                    )))
                }
            };
            let host = gateway.or(host).ok_or_else(|| {
                TapError::Address(format!("give the guest's gateway on {name} with --gateway"))
            })?;
            let mut m = IfReq::new(&name);
            let mtu = match ifreq_ioctl(ctl.as_raw_fd(), libc::SIOCGIFMTU, &mut m) {
                Ok(()) => u16::try_from(m.int()).unwrap_or(1500),
                Err(_) => 1500,
            };
            return Ok(Tap {
                fd,
                name,
                guest,
                host,
                mtu,
            });
        }
        let lock = subnet_lock();
        let (host, guest) = match (address, gateway) {
            (Some(a), g) => {
                let IpAddr::V4(ip) = a.addr else {
                    return Err(TapError::Address(format!(
                        "{a}: the guest's address must be IPv4"
                    )));
                };
                let host = g.unwrap_or_else(|| first_in_subnet(ip, a.prefix));
                if host == ip {
                    return Err(TapError::Address(format!(
                        "the guest's address {ip} is the host side's; give another with --ip or --gateway"
                    )));
                }
                (
                    Cidr {
                        addr: IpAddr::V4(host),
                        prefix: a.prefix,
                    },
                    a,
                )
            }
            (None, _) => {
                let base = free_subnet()?;
                (
                    Cidr {
                        addr: IpAddr::V4(Ipv4Addr::from(base + 1)),
                        prefix: 30,
                    },
                    Cidr {
                        addr: IpAddr::V4(Ipv4Addr::from(base + 2)),
                        prefix: 30,
                    },
                )
            }
        };
        let IpAddr::V4(host_ip) = host.addr else {
            return Err(TapError::Address(
                "the host side's address must be IPv4".into(),
            ));
        };
        let configure = |what: &'static str, request: libc::c_ulong, r: &mut IfReq| {
            ifreq_ioctl(ctl.as_raw_fd(), request, r).map_err(|source| TapError::Device {
                what,
                name: name.clone(),
                source,
            })
        };
        let mut r = IfReq::new(&name);
        r.set_ipv4(host_ip);
        configure("address", libc::SIOCSIFADDR, &mut r)?;
        let mask = u32::MAX
            .checked_shl(32 - u32::from(host.prefix))
            .unwrap_or(0);
        r.set_ipv4(Ipv4Addr::from(mask));
        configure("set the netmask of", libc::SIOCSIFNETMASK, &mut r)?;
        // As large an MTU as the tap takes: fewer, larger frames.
        let mut mtu = super::passt::MTU;
        r.set_int(i32::from(mtu));
        if ifreq_ioctl(ctl.as_raw_fd(), libc::SIOCSIFMTU, &mut r).is_err() {
            mtu = 1500;
        }
        let mut f = IfReq::new(&name);
        configure("read the flags of", libc::SIOCGIFFLAGS, &mut f)?;
        let flags = f.int() | libc::IFF_UP | libc::IFF_RUNNING;
        f.set_int(flags);
        configure("bring up", libc::SIOCSIFFLAGS, &mut f)?;
        // The address is visible to the next kiln-vmm's choice now.
        drop(lock);
        Ok(Tap {
            fd,
            name,
            guest,
            host: host_ip,
            mtu,
        })
    }

    /// The NIC's side: the tap's frames.
    ///
    /// # Errors
    /// When the descriptor cannot be duplicated.
    pub fn backend(&self) -> Result<TapBackend, TapError> {
        let fd = self.fd.try_clone().map_err(TapError::Open)?;
        Ok(TapBackend::new(fd))
    }
}

/// The first host address of `ip`'s subnet.
fn first_in_subnet(ip: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    Ipv4Addr::from((u32::from(ip) & mask) + 1)
}

/// Serialises subnet choice between concurrent kiln-vmms (the lock is
/// released when the tap has its address).
fn subnet_lock() -> Option<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/run/lock/kiln-tap.lock")
        .or_else(|_| {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(std::env::temp_dir().join("kiln-tap.lock"))
        })
        .ok()?;
    // SAFETY: flock on a descriptor the File owns.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    Some(f)
}

/// The IPv4 networks of the host's interfaces.
fn host_networks() -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list`, freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return out;
    }
    let mut at = list;
    while !at.is_null() {
        // SAFETY: a node of the list getifaddrs returned.
        let ifa = unsafe { &*at };
        if !ifa.ifa_addr.is_null() && !ifa.ifa_netmask.is_null() {
            // SAFETY: a non-null sockaddr pointer of the node.
            let addr = unsafe { &*ifa.ifa_addr };
            if i32::from(addr.sa_family) == libc::AF_INET {
                // SAFETY: AF_INET addresses are sockaddr_in.
                let (a, m) = unsafe {
                    (
                        &*(ifa.ifa_addr as *const libc::sockaddr_in),
                        &*(ifa.ifa_netmask as *const libc::sockaddr_in),
                    )
                };
                out.push((
                    u32::from_be(a.sin_addr.s_addr),
                    u32::from_be(m.sin_addr.s_addr),
                ));
            }
        }
        at = ifa.ifa_next;
    }
    // SAFETY: the list getifaddrs returned.
    unsafe { libc::freeifaddrs(list) };
    out
}

/// A /30 in 10.200.0.0/16 that no host interface's network overlaps.
fn free_subnet() -> Result<u32, TapError> {
    let taken: Vec<(u32, u32)> = host_networks()
        .into_iter()
        .map(|(a, m)| (a & m, (a & m) | !m))
        .collect();
    let base = u32::from(Ipv4Addr::new(10, 200, 0, 0));
    (0..(1u32 << 14))
        .map(|i| base + i * 4)
        .find(|&net| taken.iter().all(|&(lo, hi)| net + 3 < lo || net > hi))
        .ok_or(TapError::NoSubnet)
}
