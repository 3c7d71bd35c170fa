//! The options `kiln-vmm` and `kiln run` share — timeout, timings, syscall
//! trace, KVM counters — and what both print about a finished run, so the
//! two commands behave alike.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::devices::virtio::console::InputSource;
use crate::terminal::{RawTerminal, TerminalError};
use crate::{Ending, RunReport};

/// How to watch and limit one run.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct RunFlags {
    /// Keep standard input open: forward it to the program (which reads end of file when it ends); without -i the program's standard input is empty, as with `docker run`
    #[arg(short = 'i', long)]
    pub interactive: bool,

    /// Give the program a terminal: the host terminal in raw mode, the guest's standard input, output and error one terminal (with -i, for an interactive shell)
    #[arg(short = 't', long)]
    pub tty: bool,

    /// Stop the guest after this many seconds (exit status 124)
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,

    /// Print how long each boot phase took, on stderr
    #[arg(long)]
    pub timings: bool,

    /// Write the boot phase timings as JSON to FILE
    #[arg(long, value_name = "FILE")]
    pub timings_json: Option<PathBuf>,

    /// Number of vCPUs, as `docker run --cpus` (1 to 4): threads and processes of the program run on all of them [default: the image's `vcpus`, else 1]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=kiln_boot::layout::MAX_VCPUS as i64))]
    pub cpus: Option<u8>,

    /// Run an init inside the guest, as `docker run --init`: processes whose parent ended (adopted by pid 1) are reaped by the kernel when they end, so a program that never waits leaves no zombies; the program stays pid 1 and its own children stay its to wait for
    #[arg(long)]
    pub init: bool,

    /// Print every system call the program makes (name, arguments, result), strace-style, on stderr
    #[arg(long)]
    pub trace_syscalls: bool,

    /// Print KVM's exit and instruction-emulation counters for the run, and each virtio device's kicks, interrupts and bytes, on stderr
    #[arg(long)]
    pub stats: bool,

    /// Map the image's pages into the guest straight from the host's page cache, shared with every VM of the same image, instead of copying them into the guest's memory (huge-page backed) at boot: less host memory per VM, but each page the guest touches costs an exit on PVM (see docs/performance.md)
    #[arg(long)]
    pub share_image: bool,

    /// Run the VMM as this user (and group) once the network, volumes and devices are set up and before the guest runs: `UID[:GID]`, numeric (as root, for `--net tap`)
    #[arg(short = 'u', long, value_name = "UID[:GID]", value_parser = parse_user)]
    pub user: Option<(u32, u32)>,

    /// The network.
    #[command(flatten)]
    pub net: NetFlags,

    /// Give the guest a vsock device whose host side is the Unix socket PATH (Firecracker's protocol: host programs connect to PATH and write `CONNECT <port>\n`; the guest's connections to host port P reach the socket PATH_P). `,cid=N` sets the guest's context id (default 3)
    #[arg(long, value_name = "PATH[,cid=N]", value_parser = parse_vsock)]
    pub vsock: Option<VsockSpec>,

    /// Attach a raw disk file as the guest's next virtio block device (/dev/vda, /dev/vdb, … in order; repeatable). `,ro` attaches it read-only. A writable disk is locked against every other VM; read-only ones can be shared. Data the program flushed (fsync, fdatasync, O_SYNC) is on the host's disk when the call returns
    #[arg(long = "disk", value_name = "FILE[,ro]")]
    pub disks: Vec<crate::devices::virtio::block::DiskSpec>,

    /// Share a host directory with the guest at GUESTPATH, as `docker run -v` (repeatable; `:ro` read-only). Served by virtiofsd (one per volume, ended with the VM); what the program fsync()ed is on the host's disk when the call returns
    #[arg(short = 'v', long = "volume", value_name = "HOSTDIR:GUESTPATH[:ro]")]
    pub volumes: Vec<crate::devices::virtio::fs::VolumeSpec>,
}

/// A `--vsock` request: the host side's socket path and the guest's
/// context id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VsockSpec {
    /// The Unix socket host programs connect to.
    pub path: PathBuf,
    /// The guest's context id.
    pub cid: u64,
}

fn parse_vsock(s: &str) -> Result<VsockSpec, String> {
    let (path, options) = match s.rsplit_once(",cid=") {
        Some((p, cid)) => (p, Some(cid)),
        None => (s, None),
    };
    if path.is_empty() {
        return Err("--vsock needs the path of a Unix socket".into());
    }
    let cid = match options {
        Some(c) => c
            .parse::<u64>()
            .map_err(|_| format!("cid `{c}` is not a number"))?,
        None => kiln_boot::vsock::DEFAULT_GUEST_CID,
    };
    // 0-2 are the hypervisor, the local machine and the host; u32::MAX is
    // "any" (Linux's context ids are 32-bit).
    if cid <= 2 || cid >= u64::from(u32::MAX) {
        return Err(format!(
            "cid {cid} is reserved: pick a context id from 3 to 4294967294"
        ));
    }
    Ok(VsockSpec {
        path: PathBuf::from(path),
        cid,
    })
}

/// The network of one run (`kiln-vmm` and `kiln run` alike); values left
/// out come from the image's `[net]`, then from the backend.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct NetFlags {
    /// Network backend: `user` (rootless, through passt), `tap[=NAME]` (root: a tap device per VM, or attach to NAME), or `none`. Default: the image's `[net]` mode; `user` when -p is given; else none
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    pub net: Option<crate::net::Mode>,

    /// Publish a guest port on the host, as `docker run -p`: `[IP:]HOSTPORT:GUESTPORT[/tcp|/udp]` (repeatable)
    #[arg(short = 'p', long = "publish", value_name = "SPEC", value_parser = parse_port)]
    pub publish: Vec<crate::net::PortMap>,

    /// The guest's IPv4 address, ADDR[/PREFIX] (default: 10.0.2.15/24 with --net user, a free /30 with --net tap)
    #[arg(long, value_name = "ADDR/PREFIX", value_parser = parse_cidr)]
    pub ip: Option<crate::net::Cidr>,

    /// The guest's IPv4 gateway (default: the first address of its subnet; with --net tap, the host side's address)
    #[arg(long, value_name = "ADDR")]
    pub gateway: Option<std::net::Ipv4Addr>,

    /// A DNS server for the guest's /etc/resolv.conf (repeatable; default with --net user: passt's forwarder)
    #[arg(long, value_name = "ADDR")]
    pub dns: Vec<std::net::IpAddr>,

    /// A DNS search domain (repeatable)
    #[arg(long = "dns-search", value_name = "DOMAIN")]
    pub dns_search: Vec<String>,

    /// The guest's host name (uname, /etc/hostname, /etc/hosts)
    #[arg(long, value_name = "NAME", value_parser = parse_hostname)]
    pub hostname: Option<String>,
}

fn parse_mode(s: &str) -> Result<crate::net::Mode, String> {
    s.parse()
}

fn parse_port(s: &str) -> Result<crate::net::PortMap, String> {
    s.parse()
}

fn parse_cidr(s: &str) -> Result<crate::net::Cidr, String> {
    s.parse()
}

fn parse_hostname(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "`{s}` is not a host name (letters, digits, `-` and `.`, at most 64)"
        ))
    }
}

impl NetFlags {
    /// The network of the run: these flags over `image` (the image's
    /// `[net]`, or the default of none).
    pub fn spec(&self, image: &crate::net::NetSpec) -> crate::net::NetSpec {
        let mut spec = image.clone();
        if let Some(mode) = &self.net {
            spec.mode = mode.clone();
        } else if !self.publish.is_empty() && spec.mode == crate::net::Mode::None {
            spec.mode = crate::net::Mode::User;
        }
        spec.publish.extend(self.publish.iter().cloned());
        if self.ip.is_some() {
            spec.address = self.ip;
        }
        if self.gateway.is_some() {
            spec.gateway = self.gateway;
        }
        if !self.dns.is_empty() {
            spec.dns = self.dns.clone();
        }
        if !self.dns_search.is_empty() {
            spec.search = self.dns_search.clone();
        }
        if self.hostname.is_some() {
            spec.hostname = self.hostname.clone();
        }
        spec
    }
}

/// `--user UID[:GID]` (the group defaults to the user's number).
fn parse_user(text: &str) -> Result<(u32, u32), String> {
    let number = |s: &str| {
        s.parse::<u32>()
            .ok()
            .filter(|&n| n != u32::MAX)
            .ok_or_else(|| format!("{s:?} is not a numeric user or group id"))
    };
    match text.split_once(':') {
        Some((u, g)) => Ok((number(u)?, number(g)?)),
        None => number(text).map(|u| (u, u)),
    }
}

/// A `--timeout` that is not a usable number of seconds.
#[derive(Debug, thiserror::Error)]
#[error("--timeout {0} must be a positive number of seconds (at most about 10^19)")]
pub struct TimeoutError(pub f64);

/// The standard input and terminal a run gets from [`RunFlags::console`];
/// keep it alive for the run (dropping it restores the host terminal).
pub struct ConsoleSetup {
    /// What the guest's standard input reads.
    pub stdin: InputSource,
    /// The host terminal the guest's follows (size, resizes), with `-t`.
    pub terminal: Option<std::os::fd::RawFd>,
    /// The host terminal in raw mode, with `-t`.
    pub raw: Option<RawTerminal>,
}

impl RunFlags {
    /// Standard input and terminal as `-i` and `-t` ask: with `-t` (which
    /// needs a terminal on standard input) the host terminal goes raw until
    /// the returned setup is dropped.
    ///
    /// # Errors
    /// [`TerminalError`] when `-t` cannot be honoured.
    pub fn console(&self) -> Result<ConsoleSetup, TerminalError> {
        const STDIN: i32 = 0;
        let stdin = if self.interactive {
            InputSource::Host(STDIN)
        } else {
            InputSource::Closed
        };
        if !self.tty {
            return Ok(ConsoleSetup {
                stdin,
                terminal: None,
                raw: None,
            });
        }
        let raw = RawTerminal::enter(STDIN)?;
        crate::terminal::hold_resize_signals();
        // A terminal without -i still shows output; it just reads nothing
        // (docker run -t without -i does the same).
        Ok(ConsoleSetup {
            stdin,
            terminal: Some(STDIN),
            raw: Some(raw),
        })
    }

    /// `--timeout` as a duration.
    ///
    /// # Errors
    /// [`TimeoutError`] when it is not a positive number of seconds a
    /// duration can hold.
    pub fn timeout(&self) -> Result<Option<Duration>, TimeoutError> {
        match self.timeout {
            Some(t) if t > 0.0 => Duration::try_from_secs_f64(t)
                .map(Some)
                .map_err(|_| TimeoutError(t)),
            Some(t) => Err(TimeoutError(t)),
            None => Ok(None),
        }
    }

    /// Prints what was asked for about `run` on stderr (lines start with
    /// `tool`) and writes the `--timings-json` file (with the spawn-to-main
    /// time when the launcher gave `KILN_SPAWN_MONO_NS`).
    ///
    /// # Errors
    /// When the JSON file cannot be written.
    pub fn report(&self, tool: &str, run: &RunReport) -> std::io::Result<()> {
        Report {
            timings: self.timings,
            timings_json: self.timings_json.as_deref(),
            timeout: self.timeout,
            spawn_to_main_ms: crate::timings::spawn_to_main_ms(),
        }
        .print(tool, run)
    }
}

/// What to say about a finished run: the `--timings`, `--timings-json` and
/// `--timeout` a run was given (a warm VM gets them from its client).
#[derive(Clone, Copy, Debug, Default)]
pub struct Report<'a> {
    /// Print the phase table.
    pub timings: bool,
    /// Write the phases as JSON there.
    pub timings_json: Option<&'a std::path::Path>,
    /// The `--timeout` in seconds, for the message when it ran out.
    pub timeout: Option<f64>,
    /// Milliseconds from the spawn of `kiln` to its `main`, when known.
    pub spawn_to_main_ms: Option<f64>,
}

impl Report<'_> {
    /// Prints what was asked for about `run` on stderr (lines start with
    /// `tool`) and writes the JSON file.
    ///
    /// # Errors
    /// When the JSON file cannot be written.
    pub fn print(&self, tool: &str, run: &RunReport) -> std::io::Result<()> {
        let mut err = std::io::stderr().lock();
        if self.timings {
            let _ = write!(err, "{}", run.timings.table());
        }
        if let Some(line) = run.stats_line() {
            let _ = writeln!(err, "{tool} {line}");
        }
        if let Some(path) = self.timings_json {
            let mut doc = run.json();
            if let Some(ms) = self.spawn_to_main_ms {
                doc["spawn_to_main_ms"] = serde_json::json!(ms);
            }
            let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
            crate::write_replacing(path, text.as_bytes()).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
            })?;
        }
        match run.ending {
            Ending::TimedOut => {
                let _ = writeln!(
                    err,
                    "{tool}: the guest ran longer than --timeout {}s and was stopped",
                    self.timeout.unwrap_or_default()
                );
            }
            Ending::Terminated(signal) => {
                let name = match signal {
                    libc::SIGINT => "SIGINT",
                    libc::SIGTERM => "SIGTERM",
                    libc::SIGHUP => "SIGHUP",
                    _ => "a signal",
                };
                let _ = writeln!(err, "{tool}: {name} received; the guest was stopped");
            }
            Ending::Program(_) | Ending::Snapshotted => {}
        }
        if let Some(replication) = &run.replication {
            let _ = writeln!(err, "{tool}: {}", replication.line());
        }
        if let Some(saved) = &run.snapshot {
            let _ = writeln!(
                err,
                "{tool}: snapshot saved to {} ({} MiB of guest memory, {:.1} MiB of it written; the vCPUs stood still {:.1} ms){}",
                saved.path.display(),
                saved.memory_size >> 20,
                saved.data_bytes as f64 / (1 << 20) as f64,
                saved.pause.as_secs_f64() * 1000.0,
                if run.ending == Ending::Snapshotted {
                    "; the run ends here"
                } else {
                    ""
                }
            );
        }
        Ok(())
    }
}
