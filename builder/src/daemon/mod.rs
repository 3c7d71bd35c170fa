//! kilnd, the manager of a host's appliances, and the client `kiln` uses
//! to reach it.
//!
//! * [`server`]: the REST API over a Unix socket
//!   (docs/api/kilnd.openapi.json);
//! * [`monitor`]: one process per appliance that runs its `kiln run` and
//!   applies its restart policy — VMs stay one process each and outlive
//!   kilnd;
//! * [`record`]: the state on disk, kilnd's only state;
//! * [`metrics`]: Prometheus's text format, from the records;
//! * [`client`]: what `kiln run -d`, `kiln ps`, `kiln logs` … call,
//!   starting kilnd when none answers;
//! * [`http`]: the little HTTP/1.1 both sides speak;
//! * [`api`]: the JSON types.

pub mod api;
pub mod client;
pub mod http;
pub mod logfile;
pub mod metrics;
pub mod monitor;
pub mod record;
pub mod server;

/// A close-on-exec pipe: (read end, write end). The write end becomes a
/// child's output (an appliance's log, a containerd task's stdin).
///
/// # Errors
/// When the kernel has no descriptors to give.
pub fn pipe() -> std::io::Result<(std::fs::File, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by no one
    // else.
    Ok(unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    })
}

/// The program `name` installed beside this one (kiln and kilnd come
/// together), unless the environment variable `env` names another.
pub fn companion(env: &str, name: &str) -> std::path::PathBuf {
    if let Some(path) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        return path.into();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| name.into())
}
