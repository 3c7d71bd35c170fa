//! One virtiofsd per volume: `-v HOSTDIR:GUESTPATH[:ro]` parsed, the host
//! directory checked, the daemon started on a listening socket kiln-vmm
//! made (so there is no wait for a socket file to appear, and the file is
//! gone as soon as kiln-vmm is connected) and ended with the VM.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A `-v` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeSpec {
    /// The host directory.
    pub host: PathBuf,
    /// Where the guest sees it (absolute).
    pub guest: String,
    /// The guest may only read.
    pub read_only: bool,
}

impl std::str::FromStr for VolumeSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (rest, read_only) = match s.rsplit_once(':') {
            Some((r, "ro")) => (r, true),
            Some((r, "rw")) => (r, false),
            _ => (s, false),
        };
        let Some((host, guest)) = rest.rsplit_once(':') else {
            return Err(format!(
                "volume `{s}`: expected HOSTDIR:GUESTPATH[:ro] (e.g. -v ./data:/data)"
            ));
        };
        if host.is_empty() {
            return Err(format!("volume `{s}`: the host directory is empty"));
        }
        if !guest.starts_with('/') || guest == "/" {
            return Err(format!(
                "volume `{s}`: the guest path must be absolute and not / (e.g. /data)"
            ));
        }
        if guest.split('/').any(|c| c == "." || c == "..") {
            return Err(format!("volume `{s}`: the guest path may not hold . or .."));
        }
        Ok(VolumeSpec {
            host: PathBuf::from(host),
            guest: guest.trim_end_matches('/').to_string(),
            read_only,
        })
    }
}

/// Why a volume cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The host directory is missing or not a directory.
    #[error("volume {path}: {why}")]
    HostDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// virtiofsd is not installed.
    #[error("volumes need virtiofsd, which is not installed: install it with `apt-get install libseccomp-dev libcap-ng-dev && cargo install virtiofsd` (or set KILN_VIRTIOFSD to its path)")]
    NoDaemon,
    /// virtiofsd could not be started or reached.
    #[error("volume {path}: virtiofsd: {source}")]
    Daemon {
        /// The directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// Where virtiofsd is: `$KILN_VIRTIOFSD`, PATH, cargo's bin directory or
/// where distributions put it.
fn find_virtiofsd() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KILN_VIRTIOFSD") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(cargo) = std::env::var_os("CARGO_HOME") {
        dirs.push(Path::new(&cargo).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs.push(PathBuf::from("/usr/libexec"));
    dirs.push(PathBuf::from("/usr/lib/qemu"));
    dirs.into_iter()
        .map(|d| d.join("virtiofsd"))
        .find(|p| p.is_file())
}

/// A running virtiofsd and kiln-vmm's connection to it.
pub struct Virtiofsd {
    child: Child,
    /// The vhost-user connection.
    pub stream: Option<UnixStream>,
    /// The volume.
    pub spec: VolumeSpec,
}

impl Virtiofsd {
    /// Starts virtiofsd for `spec` and connects to it.
    ///
    /// # Errors
    /// [`VolumeError`] naming the directory.
    pub fn start(spec: &VolumeSpec) -> Result<Self, VolumeError> {
        let host_err = |why: String| VolumeError::HostDir {
            path: spec.host.clone(),
            why,
        };
        match std::fs::metadata(&spec.host) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(host_err("not a directory".into())),
            Err(e) => return Err(host_err(format!("{e} (create it first: mkdir -p)"))),
        }
        let binary = find_virtiofsd().ok_or(VolumeError::NoDaemon)?;
        let daemon_err = |source| VolumeError::Daemon {
            path: spec.host.clone(),
            source,
        };
        // A private directory for the socket, gone once connected.
        let dir = private_dir().map_err(daemon_err)?;
        let socket = dir.join("fs.sock");
        let listener = UnixListener::bind(&socket).map_err(daemon_err);
        let connected = listener.and_then(|listener| {
            let stream = UnixStream::connect(&socket).map_err(daemon_err)?;
            Ok((listener, stream))
        });
        let _ = std::fs::remove_file(&socket);
        let _ = std::fs::remove_dir(&dir);
        let (listener, stream) = connected?;
        // SAFETY: dup of a descriptor `listener` owns; the copy is owned
        // by `inherited` and closed when it drops.
        let raw = unsafe { libc::dup(listener.as_raw_fd()) };
        if raw < 0 {
            return Err(daemon_err(std::io::Error::last_os_error()));
        }
        // SAFETY: `raw` was just returned by dup and nothing else owns it.
        let inherited = unsafe { OwnedFd::from_raw_fd(raw) };
        let fd = inherited.as_raw_fd();
        let root = unsafe_is_root();
        let mut cmd = Command::new(&binary);
        cmd.arg("--shared-dir")
            .arg(&spec.host)
            .arg(format!("--fd={fd}"))
            .args([
                "--cache=never",
                "--log-level=error",
                "--no-announce-submounts",
            ])
            .arg(if root {
                "--sandbox=namespace"
            } else {
                "--sandbox=none"
            })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if spec.read_only {
            cmd.arg("--readonly");
        }
        // SAFETY: between fork and exec only async-signal-safe calls:
        // prctl, fcntl and setsid.
        unsafe {
            cmd.pre_exec(move || {
                // virtiofsd ends with kiln-vmm however kiln-vmm ends.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The listening socket stays open across exec.
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Out of kiln-vmm's process group: a Ctrl-C stops the VM
                // in order, and the VM ends virtiofsd.
                libc::setsid();
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(daemon_err)?;
        drop(inherited);
        drop(listener);
        Ok(Self {
            child,
            stream: Some(stream),
            spec: spec.clone(),
        })
    }

    /// Whether virtiofsd has ended (with its status).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Virtiofsd {
    fn drop(&mut self) {
        // Closing the connection ends virtiofsd; SIGTERM makes sure.
        self.stream = None;
        // SAFETY: kill(2) of our own child, which has not been reaped
        // (wait below reaps it), so the pid is still ours.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn unsafe_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A fresh directory only this user can enter, under $XDG_RUNTIME_DIR or
/// the temporary directory.
fn private_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    for attempt in 0..100u32 {
        let dir = base.join(format!("kiln-fs-{}-{attempt}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(
        "no free name for the socket directory",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_volume_syntax() {
        let v: VolumeSpec = "/srv/data:/data".parse().unwrap();
        assert_eq!(
            (v.host.to_str(), v.guest.as_str(), v.read_only),
            (Some("/srv/data"), "/data", false)
        );
        let v: VolumeSpec = "./d:/var/lib/db/:ro".parse().unwrap();
        assert_eq!(
            (v.host.to_str(), v.guest.as_str(), v.read_only),
            (Some("./d"), "/var/lib/db", true)
        );
        for bad in ["/data", "/srv:data", "/srv:/", ":/data", "/srv:/a/../b"] {
            assert!(bad.parse::<VolumeSpec>().is_err(), "{bad}");
        }
    }
}
