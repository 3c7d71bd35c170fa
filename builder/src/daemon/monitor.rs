//! The monitor: one small process per appliance (`kilnd monitor DIR`),
//! in a session of its own, that runs the appliance's `kiln run`, writes
//! down what happens to it, and applies its restart policy. kilnd only
//! reads what monitors write, so kilnd can be stopped, killed or upgraded
//! while the VMs run on (containerd's shims play this part for
//! containers). A VM whose monitor dies gets SIGTERM and ends in order.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::api::{Event, RestartPolicy, Status};
use super::logfile::{LogLimits, RotatingLog};
use super::record::{self, MonitorState, Root, VmDir};

/// The first wait before a restart; doubled after each quick failure up to
/// [`MAX_BACKOFF`], back to this after a run of [`STEADY`] (docker's rule).
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
const STEADY: Duration = Duration::from_secs(10);
/// How often a waiting monitor looks for a stop request.
const POLL: Duration = Duration::from_millis(50);

/// Monitor failures (before the VM could be run at all).
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The appliance's directory or files.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> MonitorError {
    let what = what.into();
    move |source| MonitorError::Io { what, source }
}

/// The signal a stop or kill through kilnd asked for (the marker's
/// contents), when one did.
pub fn stop_requested(dir: &VmDir) -> Option<i32> {
    let text = std::fs::read_to_string(dir.stop_marker()).ok()?;
    Some(text.trim().parse().unwrap_or(libc::SIGTERM))
}

/// Runs the appliance in `dir` (of kilnd's `root`) until it ends for good.
///
/// The VM's output goes through a pipe to a thread that writes the
/// appliance's log within its limits ([`super::logfile`]); the pipe lives
/// as long as the monitor, so restarts share one writer.
///
/// # Errors
/// When its config cannot be read or its state not written.
pub fn run(root: &Root, dir: &VmDir) -> Result<(), MonitorError> {
    let config = dir.config().map_err(io(format!(
        "reading {}",
        dir.path().join("config.json").display()
    )))?;
    let limits = LogLimits::parse(&config.spec.log_opts).unwrap_or_default();
    let mut log = RotatingLog::open(&dir.log(), limits)
        .map_err(io(format!("opening {}", dir.log().display())))?;
    let (mut reader, writer) = super::pipe().map_err(io("making the log's pipe"))?;
    let (drained, drained_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Err(e) = log.write(&buf[..n]) {
                        eprintln!("kilnd monitor: writing the log: {e}");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = drained.send(());
    });
    let result = supervise(root, dir, &config, writer);
    // Whatever the VM wrote last reaches the log before the monitor ends
    // (not waiting forever on a helper that kept the pipe open).
    let _ = drained_rx.recv_timeout(Duration::from_secs(2));
    result
}

/// The restart loop of [`run`]; `output` is the log pipe's write end,
/// each run's stdout and stderr.
fn supervise(
    root: &Root,
    dir: &VmDir,
    config: &record::VmConfig,
    output: OwnedFd,
) -> Result<(), MonitorError> {
    let policy: RestartPolicy = config
        .spec
        .restart
        .as_deref()
        .unwrap_or("no")
        .parse()
        .unwrap_or(RestartPolicy::No);
    let me = std::process::id();
    let mut state = MonitorState {
        monitor: record::start_time(me).map(|t| (me, t)),
        ..MonitorState::default()
    };
    let event = |action: &str, exit_code: Option<i32>| {
        let _ = root.record_event(&Event {
            time: record::now(),
            id: config.id.clone(),
            name: config.name.clone(),
            action: action.into(),
            exit_code,
        });
    };
    let kiln = super::companion("KILN_BIN", "kiln");
    let mut backoff = FIRST_BACKOFF;
    loop {
        let log = output.try_clone().map_err(io("sharing the log's pipe"))?;
        let err_log = output.try_clone().map_err(io("sharing the log's pipe"))?;
        let mut command = Command::new(&kiln);
        command
            .args(&config.command)
            .env(kiln_vmm::timings::BOOT_REPORT_ENV, dir.boots())
            .env(kiln_vmm::exit_report::EXIT_REPORT_ENV, dir.exits())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log);
        // SAFETY: prctl is async-signal-safe and touches no memory of the
        // parent; the child asks for SIGTERM should this monitor die.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let started = std::time::Instant::now();
        let code = match command.spawn() {
            Ok(mut child) => {
                state.status = Some(Status::Running);
                state.pid = Some(child.id());
                state.started_at = Some(record::now());
                state.exit_code = None;
                dir.write_state(&state)
                    .map_err(io(format!("writing the state in {}", dir.path().display())))?;
                event("start", None);
                // A stop asked for before the pid was written down: kilnd
                // had nothing to signal, so this does it.
                if let Some(signal) = stop_requested(dir) {
                    // SAFETY: kill(2) on our own child, not yet reaped.
                    unsafe { libc::kill(child.id() as i32, signal) };
                }
                let status = child.wait().map_err(io("waiting for kiln run"))?;
                status
                    .code()
                    .or_else(|| status.signal().map(|s| 128 + s))
                    .unwrap_or(125)
            }
            Err(e) => {
                eprintln!("kilnd monitor: starting {}: {e}", kiln.display());
                127
            }
        };
        state.pid = None;
        state.finished_at = Some(record::now());
        state.exit_code = Some(code);
        event("die", Some(code));
        if stop_requested(dir).is_none() && policy.restarts(code, state.restarts) {
            state.status = Some(Status::Restarting);
            dir.write_state(&state)
                .map_err(io(format!("writing the state in {}", dir.path().display())))?;
            if started.elapsed() >= STEADY {
                backoff = FIRST_BACKOFF;
            }
            if !wait_unless_stopped(dir, backoff) {
                state.restarts += 1;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                event("restart", None);
                continue;
            }
        }
        state.status = Some(Status::Exited);
        dir.write_state(&state)
            .map_err(io(format!("writing the state in {}", dir.path().display())))?;
        return Ok(());
    }
}

/// Waits `delay`; true when a stop was asked for meanwhile.
fn wait_unless_stopped(dir: &VmDir, delay: Duration) -> bool {
    let end = std::time::Instant::now() + delay;
    loop {
        if stop_requested(dir).is_some() {
            return true;
        }
        let now = std::time::Instant::now();
        if now >= end {
            return false;
        }
        std::thread::sleep(POLL.min(end - now));
    }
}
