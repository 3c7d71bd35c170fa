//! `kiln warm SNAPSHOT`: resume a snapshot ahead of need, so that the next
//! `kiln run --from-snapshot` of it runs at once.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
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
                  as before."
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

    /// How the warm VMs get guest memory (see `kiln run --snapshot-memory`): a copy by default, made before any run needs it, which the host backs with huge pages (a claimed hello takes ~5x fewer exits than on the shared memory file); `shared` saves host memory
    #[arg(long, value_enum, default_value_t = SnapshotMemoryArg::Copy, value_name = "HOW")]
    snapshot_memory: SnapshotMemoryArg,

    /// Stay in the foreground and start a new warm VM whenever a run takes one, keeping --count waiting until interrupted (then stop them)
    #[arg(long)]
    keep: bool,

    /// Stop the snapshot's waiting warm VMs instead
    #[arg(long, conflicts_with_all = ["count", "idle_timeout", "snapshot_memory", "keep"])]
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
    warm::make_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let pool = Pool {
        kiln: std::env::current_exe().context("finding kiln's own program")?,
        snapshot,
        dir,
        idle_timeout: args.idle_timeout,
        copy: args.snapshot_memory == SnapshotMemoryArg::Copy,
    };
    let before = warm::ready_sockets(&pool.dir).len();
    let mut children = Vec::new();
    for i in 0..args.count {
        children.push(pool.start(i)?);
    }
    pool.wait_ready(&mut children, before + args.count as usize)?;
    let plural = if args.count == 1 { "" } else { "s" };
    if !args.keep {
        eprintln!(
            "kiln: {} warm VM{plural} of {} ready; each serves one `kiln run --from-snapshot`",
            args.count,
            args.snapshot.display()
        );
        return Ok(0);
    }
    eprintln!(
        "kiln: keeping {} warm VM{plural} of {} ready (Ctrl-C stops them)",
        args.count,
        args.snapshot.display()
    );
    pool.keep(children, args.count as usize)
}

/// A snapshot's warm VMs being started.
struct Pool {
    kiln: PathBuf,
    snapshot: PathBuf,
    dir: PathBuf,
    idle_timeout: f64,
    copy: bool,
}

/// A warm VM this command started, and its log.
type Started = (std::process::Child, PathBuf);

/// Set by SIGINT, SIGTERM or SIGHUP while `--keep` waits.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_signal: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

impl Pool {
    /// Starts warm VM number `i` in the background (its own session, so
    /// it outlives this command and ignores its terminal's Ctrl-C).
    fn start(&self, i: u32) -> Result<Started> {
        let log_path = self.dir.join(format!("{}-{i}.log", std::process::id()));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut cmd = Command::new(&self.kiln);
        cmd.arg("run")
            .arg("--from-snapshot")
            .arg(&self.snapshot)
            .arg("--serve-warm")
            .arg(&self.dir)
            .arg("--warm-idle-timeout")
            .arg(self.idle_timeout.to_string());
        if self.copy {
            cmd.args(["--snapshot-memory", "copy"]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .env_remove("KILN_SPAWN_MONO_NS");
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
        Ok((child, log_path))
    }

    /// Waits until `want` warm VMs are offered; fails when one of
    /// `children` ends first (with its last message) or time runs out.
    fn wait_ready(&self, children: &mut [Started], want: usize) -> Result<()> {
        let deadline = Instant::now() + READY_WAIT;
        loop {
            let ready = warm::ready_sockets(&self.dir).len();
            if ready >= want {
                break;
            }
            for (child, log) in children.iter_mut() {
                if let Some(status) = child.try_wait()? {
                    let text = std::fs::read_to_string(&*log).unwrap_or_default();
                    let last = text.lines().last().unwrap_or("no message");
                    bail!("a warm VM ended before it was ready ({status}): {last}");
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "only {ready} of {want} warm VMs were ready after {}s (logs in {})",
                    READY_WAIT.as_secs(),
                    self.dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // A held VM logs nothing more until it is claimed (and then to its
        // client): the empty logs go.
        for (_, log) in children.iter() {
            if std::fs::metadata(log).is_ok_and(|m| m.len() == 0) {
                let _ = std::fs::remove_file(log);
            }
        }
        Ok(())
    }

    /// `--keep`: starts a new warm VM for each one a run took, until a
    /// signal; then stops the waiting ones.
    fn keep(&self, mut children: Vec<Started>, count: usize) -> Result<u8> {
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            kiln_vmm::stop::notify_on(signal, on_stop).context("catching signals")?;
        }
        let mut started = children.len() as u32;
        // Warm VMs seen offering (or binding) their socket: one that stops
        // offering it was claimed, and no longer counts as waiting.
        let mut seen = std::collections::HashSet::new();
        while !STOP.load(Ordering::SeqCst) {
            children.retain_mut(|(child, _)| !matches!(child.try_wait(), Ok(Some(_))));
            let offered: Vec<u32> = warm::ready_sockets(&self.dir)
                .iter()
                .chain(warm::pending_sockets(&self.dir).iter())
                .filter_map(|p| warm::socket_pid(p))
                .collect();
            seen.extend(offered.iter().copied());
            for (child, log) in &children {
                if seen.contains(&child.id()) && std::fs::metadata(log).is_ok_and(|m| m.len() == 0)
                {
                    let _ = std::fs::remove_file(log);
                }
            }
            let starting = children
                .iter()
                .filter(|(child, _)| !seen.contains(&child.id()))
                .count();
            for _ in offered.len() + starting..count {
                children.push(self.start(started)?);
                started += 1;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let stopped = warm::stop_all(&self.dir);
        eprintln!("kiln: {stopped} waiting warm VMs stopped");
        Ok(0)
    }
}
