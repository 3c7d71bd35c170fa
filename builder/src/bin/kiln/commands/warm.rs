//! `kiln warm SNAPSHOT`: resume a snapshot ahead of need, so that the next
//! `kiln run --from-snapshot` of it runs at once.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kiln_builder::run;
use kiln_vmm::snapshot::warm;

use super::run::SnapshotMemoryArg;

/// How long `kiln warm` waits for its VMs to be held ready.
const READY_WAIT: Duration = Duration::from_secs(60);

/// Keep VMs of a snapshot resumed and waiting, each for one `kiln run --from-snapshot`
#[derive(clap::Args)]
#[command(
    after_help = "Each warm VM is a background kiln process that has restored the snapshot — VM, \
                  memory, devices — and let its guest resume (its clock set, its random \
                  generator reseeded with its own fresh bytes), then holds it there. The next \
                  `kiln run --from-snapshot SNAPSHOT` of the same user finds one, hands it its \
                  standard input, output and error, and the program runs on at once; the \
                  warm VM's exit status is the run's. A warm VM serves one run; start more \
                  with -n. Runs with -i, -t, --stats, --user, -p, --disk, --snapshot-at, \
                  --snapshot-memory copy, an IMAGE or --no-warm restore in their own process \
                  as before. Only snapshots whose guest runs on one vCPU can be kept warm."
)]
pub struct Args {
    /// The snapshot: a directory, or a snapshot of the local store by name or digest
    #[arg(value_name = "DIR|NAME")]
    snapshot: PathBuf,

    /// How many warm VMs to add
    #[arg(short = 'n', long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    count: u32,

    /// How long each warm VM waits for a run before it ends (seconds; 0: until `--stop`)
    #[arg(long, value_name = "SECONDS", default_value_t = 600.0)]
    idle_timeout: f64,

    /// How the warm VMs get guest memory (see `kiln run --snapshot-memory`)
    #[arg(long, value_enum, default_value_t = SnapshotMemoryArg::Shared, value_name = "HOW")]
    snapshot_memory: SnapshotMemoryArg,

    /// Stop the snapshot's waiting warm VMs instead
    #[arg(long, conflicts_with_all = ["count", "idle_timeout", "snapshot_memory"])]
    stop: bool,
}

/// Runs `kiln warm`.
pub fn run(args: Args) -> Result<u8> {
    if !args.idle_timeout.is_finite() || args.idle_timeout < 0.0 {
        bail!("--idle-timeout must be 0 or a positive number of seconds");
    }
    let store = super::store();
    let snapshot = super::run::snapshot_dir(&args.snapshot, &store)?;
    let dir = run::warm_dir(store.root(), &snapshot)
        .with_context(|| format!("{}: not a readable snapshot", snapshot.display()))?;
    if args.stop {
        let stopped = warm::stop_all(&dir);
        eprintln!(
            "kiln: {stopped} warm VM{} of {} stopped",
            if stopped == 1 { "" } else { "s" },
            args.snapshot.display()
        );
        return Ok(0);
    }
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let kiln = std::env::current_exe().context("finding kiln's own program")?;
    let before = warm::ready_sockets(&dir).len();
    let mut children = Vec::new();
    for i in 0..args.count {
        let log_path = dir.join(format!("{}-{i}.log", std::process::id()));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut cmd = Command::new(&kiln);
        cmd.arg("run")
            .arg("--from-snapshot")
            .arg(&snapshot)
            .arg("--serve-warm")
            .arg(&dir)
            .arg("--warm-idle-timeout")
            .arg(args.idle_timeout.to_string());
        if args.snapshot_memory == SnapshotMemoryArg::Copy {
            cmd.args(["--snapshot-memory", "copy"]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .env_remove("KILN_SPAWN_MONO_NS");
        // Its own session: the warm VM outlives this command and its
        // terminal (Ctrl-C here does not reach it).
        // SAFETY: setsid is async-signal-safe and touches no memory.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().context("starting a warm VM")?;
        children.push((child, log_path));
    }
    let deadline = Instant::now() + READY_WAIT;
    loop {
        let ready = warm::ready_sockets(&dir).len().saturating_sub(before);
        if ready >= args.count as usize {
            break;
        }
        for (child, log) in &mut children {
            if let Some(status) = child.try_wait()? {
                let text = std::fs::read_to_string(&*log).unwrap_or_default();
                let last = text.lines().last().unwrap_or("no message");
                bail!("a warm VM ended before it was ready ({status}): {last}");
            }
        }
        if Instant::now() > deadline {
            bail!(
                "only {ready} of {} warm VMs were ready after {}s (logs in {})",
                args.count,
                READY_WAIT.as_secs(),
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // A held VM logs nothing more until it is claimed (and then to its
    // client): the empty logs go.
    for (_, log) in &children {
        if std::fs::metadata(log).is_ok_and(|m| m.len() == 0) {
            let _ = std::fs::remove_file(log);
        }
    }
    eprintln!(
        "kiln: {} warm VM{} of {} ready; each serves one `kiln run --from-snapshot`",
        args.count,
        if args.count == 1 { "" } else { "s" },
        args.snapshot.display()
    );
    Ok(0)
}
