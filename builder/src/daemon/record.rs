//! kilnd's state on disk, the only state it has: under
//! `$KILN_HOME/kilnd/`, one directory per appliance (`vms/<id>/`) holding
//! `config.json` (written once, by kilnd), `state.json` (written by the
//! appliance's monitor only), `log` (the VM's output) and, while a stop or
//! kill asked through kilnd is under way, `stop-requested`; and
//! `events.jsonl`, appended to by both. Every file is replaced whole
//! (written beside, then renamed), so a crash at any moment leaves the old
//! or the new version; a kilnd that was killed and started again reads
//! everything back.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::api::{CreateVm, Event, Status};

/// kilnd's directory and the paths in it.
#[derive(Clone, Debug)]
pub struct Root {
    dir: PathBuf,
}

impl Root {
    /// `$KILN_HOME/kilnd` (see [`crate::store::Store::default_root`]).
    pub fn default_root() -> Self {
        Self::at(crate::store::Store::default_root().join("kilnd"))
    }

    /// kilnd's state in `dir`.
    pub fn at(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The API's socket in this directory, unless `--socket` or
    /// `KILN_HOST` name another.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("kilnd.sock")
    }

    /// The API's socket: `$KILN_HOST` (a path, or `unix://PATH`), else
    /// [`Self::socket`].
    pub fn api_socket(&self) -> PathBuf {
        match std::env::var("KILN_HOST") {
            Ok(host) if !host.is_empty() => {
                PathBuf::from(host.strip_prefix("unix://").unwrap_or(&host))
            }
            _ => self.socket(),
        }
    }

    /// The lock a running kilnd holds (one per directory).
    pub fn lock_file(&self) -> PathBuf {
        self.dir.join("kilnd.lock")
    }

    /// kilnd's own log when `kiln` started it.
    pub fn daemon_log(&self) -> PathBuf {
        self.dir.join("kilnd.log")
    }

    /// Where the appliances' directories are.
    pub fn vms(&self) -> PathBuf {
        self.dir.join("vms")
    }

    /// The appliance `id`'s directory.
    pub fn vm(&self, id: &str) -> VmDir {
        VmDir {
            path: self.vms().join(id),
        }
    }

    /// Every appliance's directory with a readable config, oldest first.
    pub fn all(&self) -> Vec<(VmDir, VmConfig)> {
        let mut found: Vec<(VmDir, VmConfig)> = std::fs::read_dir(self.vms())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().contains('.'))
            .filter_map(|e| {
                let dir = VmDir { path: e.path() };
                dir.config().ok().map(|c| (dir, c))
            })
            .collect();
        found.sort_by(|a, b| a.1.created.total_cmp(&b.1.created));
        found
    }

    /// The event log.
    pub fn events(&self) -> PathBuf {
        self.dir.join("events.jsonl")
    }

    /// The previous event log, once the current one passed
    /// [`EVENTS_MAX_SIZE`].
    pub fn old_events(&self) -> PathBuf {
        self.dir.join("events.jsonl.1")
    }

    /// Appends `event` to the event log (one `write`, on a file opened to
    /// append: lines from kilnd and the monitors never mix). When the log
    /// has passed [`EVENTS_MAX_SIZE`] it first becomes
    /// [`Self::old_events`] (replacing the one before), under a lock every
    /// writer takes, so two writers never rotate twice.
    ///
    /// # Errors
    /// When the log cannot be written.
    pub fn record_event(&self, event: &Event) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("events.lock"))?;
        // SAFETY: flock on a descriptor this function owns; the lock goes
        // with the descriptor when `lock` is dropped.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let path = self.events();
        if std::fs::metadata(&path).is_ok_and(|m| m.len() >= EVENTS_MAX_SIZE) {
            std::fs::rename(&path, self.old_events())?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?
            .write_all(&line)
    }
}

/// The size at which the event log is rotated (one older file is kept).
pub const EVENTS_MAX_SIZE: u64 = 8 << 20;

/// What kilnd decided about an appliance at its creation.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct VmConfig {
    /// The id (64 hex digits).
    pub id: String,
    /// The name.
    pub name: String,
    /// Creation time (seconds since the epoch).
    pub created: f64,
    /// The request it came from.
    pub spec: CreateVm,
    /// The arguments of `kiln` the monitor runs (`run … IMAGE -- ARGS`).
    pub command: Vec<String>,
}

/// What the monitor last wrote about the VM it keeps.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct MonitorState {
    /// Where the appliance is (as the monitor last knew).
    pub status: Option<Status>,
    /// The monitor's pid and start time (`/proc/PID/stat`'s 22nd field):
    /// together they tell whether it still runs.
    pub monitor: Option<(u32, u64)>,
    /// The VM process's pid while it runs.
    pub pid: Option<u32>,
    /// When the VM last started.
    pub started_at: Option<f64>,
    /// When it last ended.
    pub finished_at: Option<f64>,
    /// Its last exit status.
    pub exit_code: Option<i32>,
    /// Restarts by the policy so far.
    pub restarts: u32,
}

/// One appliance's directory.
#[derive(Clone, Debug)]
pub struct VmDir {
    path: PathBuf,
}

impl VmDir {
    /// A directory at `path` (the monitor's argument).
    pub fn at(path: PathBuf) -> Self {
        Self { path }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The VM's log.
    pub fn log(&self) -> PathBuf {
        self.path.join("log")
    }

    /// One JSON line per boot of its VM (`kiln_vmm::timings::BOOT_REPORT_ENV`).
    pub fn boots(&self) -> PathBuf {
        self.path.join("boots.jsonl")
    }

    /// The KVM exits of its current (or last) run, rewritten every second
    /// (`kiln_vmm::exit_report::EXIT_REPORT_ENV`).
    pub fn exits(&self) -> PathBuf {
        self.path.join("exits.json")
    }

    /// The exit count [`Self::exits`] holds, if it holds one.
    pub fn exit_count(&self) -> Option<u64> {
        let text = std::fs::read_to_string(self.exits()).ok()?;
        serde_json::from_str::<serde_json::Value>(&text).ok()?["exits"].as_u64()
    }

    /// The marker of a stop or kill asked through kilnd (the restart
    /// policy then does not apply, as with docker).
    pub fn stop_marker(&self) -> PathBuf {
        self.path.join("stop-requested")
    }

    /// Its config.
    ///
    /// # Errors
    /// When it cannot be read or parsed.
    pub fn config(&self) -> std::io::Result<VmConfig> {
        let bytes = std::fs::read(self.path.join("config.json"))?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }

    /// Writes its config.
    ///
    /// # Errors
    /// When it cannot be written.
    pub fn write_config(&self, config: &VmConfig) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(config).map_err(std::io::Error::other)?;
        write_atomic(&self.path.join("config.json"), &bytes)
    }

    /// The monitor's state (default before the monitor wrote one).
    pub fn state(&self) -> MonitorState {
        std::fs::read(self.path.join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Writes the monitor's state.
    ///
    /// # Errors
    /// When it cannot be written.
    pub fn write_state(&self, state: &MonitorState) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
        write_atomic(&self.path.join("state.json"), &bytes)
    }

    /// The status as it is now: the monitor's, unless the monitor is gone
    /// while it said the VM runs or restarts (then [`Status::Dead`]).
    pub fn status(&self, state: &MonitorState) -> Status {
        match state.status {
            None => Status::Created,
            Some(s @ (Status::Running | Status::Restarting)) => {
                let alive = state
                    .monitor
                    .is_some_and(|(pid, start)| start_time(pid) == Some(start));
                if alive {
                    s
                } else {
                    Status::Dead
                }
            }
            Some(s) => s,
        }
    }
}

/// `bytes` written to `path` whole: to a file beside it, synced, renamed
/// over it.
///
/// # Errors
/// When the file cannot be written or renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Process `pid`'s start time in clock ticks since boot (`None`: no such
/// process). With the pid it names one process for good: a pid reused
/// later has another start time.
pub fn start_time(pid: u32) -> Option<u64> {
    // Field 22 is the 20th after the command name.
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// The fields of `/proc/PID/stat` after the command name (field 2, which
/// may hold spaces and parentheses: everything up to the last ')').
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// CPU seconds and resident bytes of process `pid`.
pub fn process_usage(pid: u32) -> Option<(f64, u64)> {
    let fields = stat_fields(pid)?;
    // utime and stime are fields 14 and 15 (the 12th and 13th after ')').
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Some((ticks as f64 / hz, rss_kib * 1024))
}

/// Seconds since the epoch, now.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_log_rotates_past_its_size_keeping_one_older_file() {
        let dir = std::env::temp_dir().join(format!("kilnd-events-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let root = Root::at(dir.clone());
        // 100 KiB names: about 82 events fill the log.
        let event = |n: usize| Event {
            time: n as f64,
            id: format!("{n}"),
            name: "x".repeat(100 << 10),
            action: "start".into(),
            exit_code: None,
        };
        for n in 0..200 {
            root.record_event(&event(n)).unwrap();
        }
        let ids = |path: &Path| -> Vec<usize> {
            std::fs::read_to_string(path)
                .unwrap()
                .lines()
                .map(|l| {
                    serde_json::from_str::<Event>(l)
                        .unwrap()
                        .id
                        .parse()
                        .unwrap()
                })
                .collect()
        };
        let (old, new) = (ids(&root.old_events()), ids(&root.events()));
        // Two rotations: the oldest file's events are gone, the rest run on
        // without a gap to the last.
        assert!(std::fs::metadata(root.events()).unwrap().len() <= EVENTS_MAX_SIZE + (101 << 10));
        let all: Vec<usize> = old.iter().chain(&new).copied().collect();
        assert_eq!(*all.last().unwrap(), 199);
        assert!(all.windows(2).all(|w| w[1] == w[0] + 1), "{all:?}");
        assert!(all[0] > 0 && old.len() > 40, "{} {}", all[0], old.len());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn this_process_has_a_start_time_and_a_missing_one_none() {
        assert!(start_time(std::process::id()).is_some());
        assert_eq!(start_time(u32::MAX), None);
    }

    #[test]
    fn a_monitor_that_is_gone_makes_a_running_vm_dead() {
        let dir = std::env::temp_dir().join(format!("kilnd-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let vm = VmDir::at(dir.clone());
        assert_eq!(vm.status(&vm.state()), Status::Created);
        let me = std::process::id();
        let mut state = MonitorState {
            status: Some(Status::Running),
            monitor: Some((me, start_time(me).unwrap())),
            ..MonitorState::default()
        };
        vm.write_state(&state).unwrap();
        assert_eq!(vm.status(&vm.state()), Status::Running);
        // Same pid, another start time: a reused pid, not our monitor.
        state.monitor = Some((me, start_time(me).unwrap() + 1));
        vm.write_state(&state).unwrap();
        assert_eq!(vm.status(&vm.state()), Status::Dead);
        state.status = Some(Status::Exited);
        vm.write_state(&state).unwrap();
        assert_eq!(vm.status(&vm.state()), Status::Exited);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
