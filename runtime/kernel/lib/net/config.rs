//! The network configuration the VMM hands the kernel (`kiln.ip=`,
//! `kiln.gw=`, `kiln.dns=`, `kiln.search=`, `kiln.hostname=`, `kiln.mtu=`
//! on the command line), and the files it becomes at boot: /etc/hosts,
//! /etc/hostname and /etc/resolv.conf, so that the C library's resolver
//! finds names as it would in a container.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use core::net::IpAddr;

/// An address with its prefix length (`10.0.2.15/24`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Parses `ADDR/PREFIX` (the prefix defaults to the whole address).
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|&p| p <= max)?,
            None => max,
        };
        Some(Cidr { addr, prefix })
    }
}

/// The network configuration of the guest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetConfig {
    /// The NIC's addresses (at most one IPv4 and one IPv6 are used).
    pub addresses: Vec<Cidr>,
    /// Default gateways (one per family).
    pub gateways: Vec<IpAddr>,
    /// Name servers.
    pub dns: Vec<IpAddr>,
    /// The DNS search list.
    pub search: Vec<String>,
    /// The host name.
    pub hostname: Option<String>,
    /// The link MTU (the NIC's frame payload), when not the default.
    pub mtu: Option<u16>,
}

/// Why an option was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadOption(pub String);

impl NetConfig {
    /// Takes one `kiln.*` network option; `Ok(false)` when the word is not
    /// one.
    ///
    /// # Errors
    /// [`BadOption`] for a network option with a bad value.
    pub fn take(&mut self, word: &str) -> Result<bool, BadOption> {
        let bad = || BadOption(String::from(word));
        if let Some(v) = word.strip_prefix("kiln.ip=") {
            self.addresses.push(Cidr::parse(v).ok_or_else(bad)?);
        } else if let Some(v) = word.strip_prefix("kiln.gw=") {
            self.gateways.push(v.parse().map_err(|_| bad())?);
        } else if let Some(v) = word.strip_prefix("kiln.dns=") {
            for a in v.split(',').filter(|s| !s.is_empty()) {
                self.dns.push(a.parse().map_err(|_| bad())?);
            }
        } else if let Some(v) = word.strip_prefix("kiln.search=") {
            self.search
                .extend(v.split(',').filter(|s| !s.is_empty()).map(String::from));
        } else if let Some(v) = word.strip_prefix("kiln.hostname=") {
            let ok = !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !ok {
                return Err(bad());
            }
            self.hostname = Some(String::from(v));
        } else if let Some(v) = word.strip_prefix("kiln.mtu=") {
            let mtu: u16 = v.parse().map_err(|_| bad())?;
            if mtu < 1280 {
                return Err(bad());
            }
            self.mtu = Some(mtu);
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// Whether the VMM configured anything (otherwise the image's own
    /// files stay as they are).
    pub fn is_empty(&self) -> bool {
        *self == NetConfig::default()
    }

    /// /etc/hostname.
    pub fn hostname_file(&self) -> Option<String> {
        self.hostname.as_ref().map(|h| alloc::format!("{h}\n"))
    }

    /// /etc/hosts: the loopback names, and the host name on the NIC's
    /// addresses (or on the loopback address without a NIC).
    pub fn hosts_file(&self) -> String {
        let mut out =
            String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        if let Some(h) = &self.hostname {
            let short = h.split('.').next().unwrap_or(h);
            let names = if short == h {
                String::from(h.as_str())
            } else {
                alloc::format!("{h} {short}")
            };
            if self.addresses.is_empty() {
                let _ = writeln!(out, "127.0.1.1\t{names}");
            }
            for a in &self.addresses {
                let _ = writeln!(out, "{}\t{names}", a.addr);
            }
        }
        out
    }

    /// /etc/resolv.conf, when name servers or a search list were given.
    pub fn resolv_conf(&self) -> Option<String> {
        if self.dns.is_empty() && self.search.is_empty() {
            return None;
        }
        let mut out = String::new();
        if !self.search.is_empty() {
            let _ = writeln!(out, "search {}", self.search.join(" "));
        }
        for d in &self.dns {
            let _ = writeln!(out, "nameserver {d}");
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(words: &[&str]) -> NetConfig {
        let mut c = NetConfig::default();
        for w in words {
            assert!(c.take(w).unwrap(), "{w}");
        }
        c
    }

    #[test]
    fn options_become_a_configuration() {
        let c = config(&[
            "kiln.ip=10.0.2.15/24",
            "kiln.ip=fd00::2/64",
            "kiln.gw=10.0.2.2",
            "kiln.dns=10.0.2.3,1.1.1.1",
            "kiln.search=example.com,corp",
            "kiln.hostname=web.example.com",
            "kiln.mtu=65520",
        ]);
        assert_eq!(c.addresses.len(), 2);
        assert_eq!(c.addresses[0].prefix, 24);
        assert_eq!(c.addresses[1].addr, "fd00::2".parse::<IpAddr>().unwrap());
        assert_eq!(c.dns.len(), 2);
        assert_eq!(c.mtu, Some(65520));
        assert_eq!(
            c.resolv_conf().unwrap(),
            "search example.com corp\nnameserver 10.0.2.3\nnameserver 1.1.1.1\n"
        );
        let hosts = c.hosts_file();
        assert!(
            hosts.contains("10.0.2.15\tweb.example.com web\n"),
            "{hosts}"
        );
        assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"));
        assert_eq!(c.hostname_file().unwrap(), "web.example.com\n");
    }

    #[test]
    fn bad_values_are_refused_and_others_ignored() {
        let mut c = NetConfig::default();
        assert!(c.take("kiln.ip=10.0.2.300/24").is_err());
        assert!(c.take("kiln.ip=10.0.2.3/33").is_err());
        assert!(c.take("kiln.hostname=bad name").is_err());
        assert!(c.take("kiln.mtu=100").is_err());
        assert_eq!(c.take("kiln.path=/x"), Ok(false));
        assert!(c.is_empty());
        assert!(c.resolv_conf().is_none());
    }

    #[test]
    fn a_host_name_without_a_nic_maps_to_loopback() {
        let c = config(&["kiln.hostname=box"]);
        assert!(c.hosts_file().ends_with("127.0.1.1\tbox\n"));
    }
}
