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
