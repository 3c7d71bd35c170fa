//! `kiln snapshot PID`: asks a running `kiln run --snapshot-at SIGUSR2
//! --snapshot-to DIR` to save its VM now, and waits until the snapshot is
//! there.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Save a running VM (started with --snapshot-at SIGUSR2 --snapshot-to DIR) now
#[derive(clap::Args)]
#[command(
    after_help = "The VM's kernel parks every vCPU, kiln writes the snapshot to the DIR its \
                  `kiln run` was given, and that run ends (status 0) unless it was started with \
                  --leave-running. `kill -USR2 PID` does the same without waiting. Resume with \
                  `kiln run --from-snapshot DIR`."
)]
pub struct Args {
    /// The process id of the `kiln run`
    pid: u32,

    /// Give up waiting after this many seconds
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    timeout: f64,
}

/// The `--snapshot-at` and `--snapshot-to` values of `kiln run`'s command
/// line `args` (either `--flag value` or `--flag=value`).
fn snapshot_flags(args: &[String]) -> (Option<String>, Option<PathBuf>) {
    let mut at = None;
    let mut to = None;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            break;
        }
        let mut take = |name: &str| -> Option<String> {
            if a == name {
                i += 1;
                args.get(i).cloned()
            } else {
                a.strip_prefix(&format!("{name}=")).map(str::to_owned)
            }
        };
        if let Some(v) = take("--snapshot-at") {
            at = Some(v);
        } else if let Some(v) = take("--snapshot-to") {
            to = Some(PathBuf::from(v));
        }
        i += 1;
    }
    (at, to)
}

/// Runs `kiln snapshot`.
pub fn run(args: Args) -> Result<u8> {
    let proc_dir = PathBuf::from(format!("/proc/{}", args.pid));
    let cmdline = std::fs::read(proc_dir.join("cmdline"))
        .with_context(|| format!("no process {}", args.pid))?;
    let words: Vec<String> = cmdline
        .split(|&b| b == 0)
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    if words.get(1).map(String::as_str) != Some("run") {
        bail!("process {} is not a `kiln run`", args.pid);
    }
    let (at, to) = snapshot_flags(&words[2..]);
    let signal: Option<kiln_vmm::snapshot::SnapshotPoint> =
        at.as_deref().and_then(|a| a.parse().ok());
    if !matches!(
        signal,
        Some(kiln_vmm::snapshot::SnapshotPoint::Signal(libc::SIGUSR2))
    ) {
        bail!(
            "process {} was not started with --snapshot-at SIGUSR2 (it was given {})",
            args.pid,
            at.map_or("no --snapshot-at".into(), |a| format!("--snapshot-at {a}"))
        );
    }
    let Some(to) = to else {
        bail!("process {} has no --snapshot-to", args.pid);
    };
    // A relative DIR is relative to that process's working directory.
    let to = if to.is_relative() {
        std::fs::read_link(proc_dir.join("cwd"))
            .with_context(|| format!("finding process {}'s working directory", args.pid))?
            .join(to)
    } else {
        to
    };
    if to.exists() {
        bail!(
            "{} exists already: that run has taken its snapshot",
            to.display()
        );
    }
    // SAFETY: kill(2) with a pid and a signal number; no memory involved.
    if unsafe { libc::kill(args.pid as libc::pid_t, libc::SIGUSR2) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("signalling process {}", args.pid));
    }
    let limit = Duration::try_from_secs_f64(args.timeout).unwrap_or(Duration::from_secs(60));
    let start = Instant::now();
    // The directory appears whole (it is renamed into place).
    while !to.join(kiln_vmm::snapshot::STATE_FILE).exists() {
        if !proc_dir.exists() {
            bail!(
                "process {} ended without writing {}",
                args.pid,
                to.display()
            );
        }
        if start.elapsed() > limit {
            bail!(
                "no snapshot at {} after {:.0} s",
                to.display(),
                args.timeout
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("{}", to.display());
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_snapshot_flags_before_the_programs_arguments() {
        let words: Vec<String> = [
            "--snapshot-at",
            "SIGUSR2",
            "--snapshot-to=/s",
            "img.kiln",
            "--",
            "--snapshot-to",
            "/other",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            snapshot_flags(&words),
            (Some("SIGUSR2".into()), Some(PathBuf::from("/s")))
        );
    }
}
