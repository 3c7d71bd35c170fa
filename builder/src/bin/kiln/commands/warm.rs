//! `kiln warm SNAPSHOT|IMAGE`: resume a snapshot ahead of need, so that
//! the next `kiln run --from-snapshot` of it runs at once — or an image's
//! own snapshot, taken at its program's entry, so that the next plain
//! `kiln run IMAGE` does.

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

/// Keep VMs of a snapshot (or an image) resumed and waiting, each for one `kiln run`
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
                  as before.\n\nGiven an IMAGE (a .kiln file or a stored image) instead, kiln warm \
                  first takes the image's own snapshot at its program's entry, after its \
                  dynamic loader (once per image: it is kept under the store's \
                  image-snapshots/), and its warm VMs serve `kiln run IMAGE` with no other \
                  argument — the image's own arguments, environment and resources. A run \
                  with any option or argument, or of a rebuilt image file, boots as usual."
)]
pub struct Args {
    /// The snapshot (a directory, or a snapshot of the local store by name or digest), or an image (a .kiln file or a stored image) whose own snapshot is taken first
    #[arg(value_name = "SNAPSHOT|IMAGE")]
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
    let (snapshot, serves) = warm_target(&args.snapshot, &store, args.stop)?;
    if args.stop && !snapshot.exists() {
        // An image never warmed: its snapshot was never taken.
        eprintln!("kiln: 0 warm VMs of {} stopped", args.snapshot.display());
        return Ok(0);
    }
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
            "kiln: {} warm VM{plural} of {} ready; each serves one `{serves}`",
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

/// The snapshot `kiln warm TARGET` warms, and the command its warm VMs
/// serve: a snapshot directory or a stored snapshot as named, else an
/// image — its own snapshot, taken at its program's entry after the
/// loader the first time (not for `--stop`), whose warm VMs serve a plain
/// `kiln run IMAGE`.
fn warm_target(
    target: &std::path::Path,
    store: &kiln_builder::store::Store,
    stop: bool,
) -> Result<(PathBuf, String)> {
    let text = target.to_string_lossy();
    // A file is an image; anything else is looked up as a snapshot first.
    let as_snapshot = (!target.is_file()).then(|| super::run::snapshot_dir(target, store));
    let not_found = match as_snapshot {
        Some(Ok(snapshot)) => {
            return Ok((snapshot, format!("kiln run --from-snapshot {text}")));
        }
        Some(Err(e)) => e,
        None => anyhow::anyhow!("{text}: not an image"),
    };
    let Some(snapshot) = super::run::image_snapshot_dir(&text, store) else {
        return Err(not_found.context(format!(
            "{text}: no such snapshot or image (`kiln images` lists the stored images)"
        )));
    };
    if !stop {
        take_image_snapshot(&text, &snapshot)?;
    }
    Ok((snapshot, format!("kiln run {text}")))
}

/// Takes the snapshot of `image` that `kiln warm IMAGE` warms into
/// `snapshot`, unless it is there already: a run of the image that stops
/// at its program's entry, after the loader (`--snapshot-at
/// after-loader`), written under a temporary name and renamed (a failed
/// or interrupted one leaves nothing behind that a later run would use).
fn take_image_snapshot(image: &str, snapshot: &std::path::Path) -> Result<()> {
    if snapshot
        .join(kiln_vmm::snapshot::STATE_DIGEST_FILE)
        .is_file()
    {
        return Ok(());
    }
    let parent = snapshot.parent().context("an image snapshot's directory")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = snapshot.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    eprintln!("kiln: taking a snapshot of {image} at its program's entry, for its warm VMs");
    let output = Command::new(std::env::current_exe().context("finding kiln's own program")?)
        .args(["run", "--snapshot-at", "after-loader", "--snapshot-to"])
        .arg(&tmp)
        .arg(image)
        .stdin(Stdio::null())
        .output()
        .context("running the image to take its snapshot")?;
    if !output.status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        bail!(
            "{image}: its snapshot could not be taken ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    if let Err(e) = std::fs::rename(&tmp, snapshot) {
        let _ = std::fs::remove_dir_all(&tmp);
        // Another `kiln warm` of the image took it meanwhile.
        if !snapshot.is_dir() {
            return Err(e)
                .with_context(|| format!("renaming {} to {}", tmp.display(), snapshot.display()));
        }
    }
    Ok(())
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
