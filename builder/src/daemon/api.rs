//! The JSON kilnd's API speaks (docs/api/kilnd.openapi.json describes
//! it; tests/kilnd.rs checks every answer against that document).

use serde::{Deserialize, Serialize};

/// The API's version, in the paths (`/v1/…`).
pub const VERSION: &str = "v1";

/// `POST /v1/vms`: an appliance to create and start, as `kiln run -d`
/// would boot it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreateVm {
    /// Its name (unique on the host); one is made up when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The image: a `.kiln` file (absolute path) or a reference in the
    /// local store.
    pub image: String,
    /// Arguments replacing the image's (`kiln run IMAGE -- ARGS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// `NAME=VALUE` environment variables (`-e`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Guest memory in MiB (`--memory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// vCPUs (`--cpus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u8>,
    /// Run the program under the kernel's init (`--init`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
    /// Published ports (`-p`, e.g. `8080:80`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
    /// Volumes (`-v HOSTDIR:GUESTPATH[:ro]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// Disk files (`--disk FILE[,ro]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<String>,
    /// Network mode (`--net`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<String>,
    /// Restart policy: `no` (default), `on-failure[:MAX]`, `always`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<String>,
    /// Log limits as docker's `--log-opt`: `max-size=SIZE` (default
    /// 20m), `max-file=N` (default 5).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_opts: Vec<String>,
}

/// `201` to a create.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Created {
    /// The appliance's id (64 hex digits).
    pub id: String,
    /// Its name.
    pub name: String,
}

/// Where an appliance is in its life.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, its monitor not started yet.
    Created,
    /// Its VM runs.
    Running,
    /// Waiting to be started again by its restart policy.
    Restarting,
    /// Its VM ended and will not be restarted.
    Exited,
    /// Its monitor disappeared (killed, or the host rebooted) while the
    /// VM was meant to run.
    Dead,
}

/// One appliance, as `GET /v1/vms` lists it.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct VmSummary {
    /// The id.
    pub id: String,
    /// The name.
    pub name: String,
    /// The image as given.
    pub image: String,
    /// Where it is in its life.
    pub status: Status,
    /// The VM process's pid while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Its last exit status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Creation time (seconds since the epoch).
    pub created: f64,
    /// Times the restart policy started it again.
    pub restarts: u32,
}

/// `GET /v1/vms/{ref}`: everything about one appliance.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct VmDetails {
    /// The summary.
    #[serde(flatten)]
    pub summary: VmSummary,
    /// How it was asked for.
    pub config: CreateVm,
    /// When its VM last started (seconds since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<f64>,
    /// When its VM last ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<f64>,
    /// The `kiln run` command line its monitor runs.
    pub command: Vec<String>,
    /// Its log file (the VM's standard output and error; older output in
    /// `LOG.1`, `LOG.2`, … as `log_opts` allows).
    pub log_path: String,
}

/// `GET /v1/vms/{ref}/stats`.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct VmStats {
    /// The id.
    pub id: String,
    /// The name.
    pub name: String,
    /// The VM process's pid.
    pub pid: u32,
    /// CPU time of the VM process (all its threads: vCPUs, devices), s.
    pub cpu_seconds: f64,
    /// Its resident memory (guest memory touched, the VMM's own), bytes.
    pub rss_bytes: u64,
    /// Seconds since its VM started.
    pub uptime_seconds: f64,
    /// Restarts so far.
    pub restarts: u32,
}

/// One line of `GET /v1/events`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct Event {
    /// When (seconds since the epoch).
    pub time: f64,
    /// The appliance's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `create`, `start`, `die`, `restart`, `revive` (started again by a
    /// new kilnd after its monitor vanished), `stop`, `kill`, `destroy`.
    pub action: String,
    /// The exit status, for `die`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// The body of every error answer.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ErrorBody {
    /// What went wrong, naming the offending thing.
    pub message: String,
}

/// `GET /v1/version`.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Version {
    /// kiln's version.
    pub version: String,
    /// The API version (`v1`).
    pub api: String,
    /// kilnd's pid.
    pub pid: u32,
}

/// A restart policy, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Never restart.
    No,
    /// Restart after a non-zero exit, at most `max` times (`None`: no limit).
    OnFailure {
        /// The most restarts.
        max: Option<u32>,
    },
    /// Restart whenever it ends, unless stopped or killed through kilnd.
    Always,
}

impl std::str::FromStr for RestartPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "no" => Ok(Self::No),
            "always" => Ok(Self::Always),
            "on-failure" => Ok(Self::OnFailure { max: None }),
            _ => match text.strip_prefix("on-failure:") {
                Some(n) => n
                    .parse()
                    .map(|max| Self::OnFailure { max: Some(max) })
                    .map_err(|_| format!("restart policy {text:?}: the count must be a number")),
                None => Err(format!(
                    "restart policy {text:?}: use no, on-failure[:MAX] or always"
                )),
            },
        }
    }
}

impl RestartPolicy {
    /// Whether a VM that ended with `code` after `restarts` restarts is
    /// started again.
    pub fn restarts(self, code: i32, restarts: u32) -> bool {
        match self {
            Self::No => false,
            Self::Always => true,
            Self::OnFailure { max } => code != 0 && max.is_none_or(|m| restarts < m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_parse_and_decide_as_dockers() {
        let p = |t: &str| t.parse::<RestartPolicy>();
        assert_eq!(p("no"), Ok(RestartPolicy::No));
        assert_eq!(
            p("on-failure:3"),
            Ok(RestartPolicy::OnFailure { max: Some(3) })
        );
        assert!(p("sometimes").is_err() && p("on-failure:x").is_err());
        assert!(!RestartPolicy::No.restarts(1, 0));
        assert!(RestartPolicy::Always.restarts(0, 100));
        let limited = RestartPolicy::OnFailure { max: Some(2) };
        assert!(limited.restarts(1, 1) && !limited.restarts(1, 2) && !limited.restarts(0, 0));
        assert!(RestartPolicy::OnFailure { max: None }.restarts(3, 1000));
    }
}
