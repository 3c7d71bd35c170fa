//! User-mode networking through passt (Debian package `passt`): kiln-vmm
//! starts it with one end of a socket pair (`--fd`), no socket file, and
//! `--one-off`, so passt ends as soon as its end closes — when kiln-vmm
//! exits, crashes or is killed. Published ports are passt's own (`-t`,
//! `-u`); its DNS forwarder answers the guest at 10.0.2.3.

use std::net::{IpAddr, Ipv4Addr, Shutdown};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{GuestAddresses, PortMap, Protocol};
use crate::devices::virtio::net::StreamBackend;

/// The MTU passt supports (its default: the largest 802.3 payload).
pub const MTU: u16 = 65520;

/// The descriptor number passt gets its end of the pair on.
const PASST_FD: RawFd = 3;

/// Why passt could not start.
#[derive(Debug, thiserror::Error)]
pub enum PasstError {
    /// No passt on PATH.
    #[error("--net user needs passt, which is not installed (Debian package `passt`; or use --net tap as root, or --net none)")]
    Missing,
    /// The socket pair or the process could not be made.
    #[error("cannot start passt: {0}")]
    Spawn(#[source] std::io::Error),
    /// passt ended at once.
    #[error("passt exited at start ({status}): {message}")]
    Exited {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it said on stderr.
        message: String,
    },
}

/// A running passt, ended (and waited for) when dropped.
pub struct Passt {
    child: Child,
    /// A second descriptor of the NIC's end of the link: to see whether
    /// passt has read everything sent to it, and to close the link for
    /// both ends' holders at once.
    link: UnixStream,
}

/// How long the end of a run waits for passt to take the last frames and
/// exit by itself before it is killed.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// Bytes written on `link` that its peer has not read yet.
fn unread_by_peer(link: &UnixStream) -> std::io::Result<usize> {
    let mut bytes: libc::c_int = 0;
    // SAFETY: SIOCOUTQ on a socket we own writes one int to the pointer,
    // which points at a live local.
    if unsafe { libc::ioctl(link.as_raw_fd(), libc::TIOCOUTQ, &mut bytes) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(usize::try_from(bytes).unwrap_or(0))
}

/// Where passt is.
fn find() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("passt"))
        .find(|p| p.is_file())
}

impl Passt {
    /// Starts passt for `guest`, forwarding DNS queries sent to `dns` and
    /// publishing `ports`; returns it and the NIC's side of the link.
    ///
    /// # Errors
    /// [`PasstError`] when passt is missing or does not start.
    pub fn start(
        guest: &GuestAddresses,
        dns: Ipv4Addr,
        ports: &[PortMap],
    ) -> Result<(Passt, StreamBackend<UnixStream>), PasstError> {
        let program = find().ok_or(PasstError::Missing)?;
        let (ours, theirs) = UnixStream::pair().map_err(PasstError::Spawn)?;
        ours.set_nonblocking(true).map_err(PasstError::Spawn)?;
        let mut cmd = Command::new(program);
        cmd.args(["--foreground", "--quiet", "--one-off"])
            .args(["--fd", &PASST_FD.to_string()])
            .args(["--address", &guest.v4.addr.to_string()])
            .args(["--netmask", &guest.v4.prefix.to_string()])
            .args(["--gateway", &guest.gw4.to_string()])
            .args(["--dns-forward", &dns.to_string()])
            .args(["--mtu", &MTU.to_string()]);
        if let Some((v6, gw6)) = guest.v6 {
            cmd.args(["--address", &v6.addr.to_string()])
                .args(["--gateway", &gw6.to_string()]);
        }
        for p in ports {
            let flag = match p.protocol {
                Protocol::Tcp => "-t",
                Protocol::Udp => "-u",
            };
            let spec = match p.host_ip {
                Some(IpAddr::V4(ip)) => format!("{ip}/{}:{}", p.host_port, p.guest_port),
                Some(IpAddr::V6(ip)) => format!("{ip}/{}:{}", p.host_port, p.guest_port),
                None => format!("{}:{}", p.host_port, p.guest_port),
            };
            cmd.args([flag, &spec]);
        }
        // Debugging aid: extra passt options (e.g. `--pcap FILE`).
        if let Some(extra) = std::env::var_os("KILN_PASST_ARGS") {
            cmd.args(extra.to_string_lossy().split_whitespace());
        }
        let their_fd = theirs.as_raw_fd();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: between fork and exec only async-signal-safe calls: dup2
        // onto the agreed number (which clears close-on-exec) and prctl.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(their_fd, PASST_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Ends with kiln-vmm even before passt drops privileges.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let link = ours.try_clone().map_err(PasstError::Spawn)?;
        let mut child = cmd.spawn().map_err(PasstError::Spawn)?;
        drop(theirs);
        // A passt that cannot start ends at once; one that fails later
        // closes the link, which stops the VM with that message.
        if let Ok(Some(status)) = child.try_wait() {
            let mut message = String::new();
            if let Some(mut err) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut err, &mut message);
            }
            return Err(PasstError::Exited {
                status,
                message: message
                    .lines()
                    .filter(|l| !l.contains("syslog"))
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        }
        Ok((Passt { child, link }, StreamBackend::new(ours)))
    }

    /// Lets passt forward what the guest sent last, then has it exit: the
    /// answer a program sends just before it ends (or output held for a
    /// standby and released at the end) must reach its client. passt drops
    /// unread frames when its end of the link hangs up, and a kill can come
    /// between its read of a frame and the write to the client's socket —
    /// so first wait until it has read everything, then hang up and let it
    /// exit by itself, all within [`DRAIN_TIMEOUT`].
    fn drain_and_end(&mut self) {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let alive = |child: &mut Child| matches!(child.try_wait(), Ok(None));
        while Instant::now() < deadline
            && unread_by_peer(&self.link).is_ok_and(|n| n > 0)
            && alive(&mut self.child)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = self.link.shutdown(Shutdown::Both);
        while Instant::now() < deadline && alive(&mut self.child) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Passt {
    fn drop(&mut self) {
        self.drain_and_end();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
