//! `kiln run IMAGE [-- ARGS]`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use kiln_builder::oci::reference::Reference;
use kiln_builder::progress::Progress;
use kiln_builder::run::{self, RunOptions};
use kiln_vmm::cli::RunFlags;

/// When `kiln run REF` pulls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Pull {
    /// When the image is not in the local store
    Missing,
    /// Every time (the tag may have moved)
    Always,
    /// Never: an image missing from the store is an error
    Never,
}

/// `--snapshot-memory`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SnapshotMemoryArg {
    /// Map the memory file, shared by every resumed VM
    Shared,
    /// Copy its data into the VM's own memory
    Copy,
}

impl SnapshotMemoryArg {
    /// The VMM's name for it.
    pub fn mode(self) -> kiln_vmm::vstate::memory::SnapshotMemory {
        match self {
            SnapshotMemoryArg::Shared => kiln_vmm::vstate::memory::SnapshotMemory::Shared,
            SnapshotMemoryArg::Copy => kiln_vmm::vstate::memory::SnapshotMemory::Copy,
        }
    }
}

/// Boot an image and run its program.
#[derive(clap::Args)]
#[command(
    after_help = "IMAGE is a .kiln file (verified completely before it boots) or an image in the \
                  local store, by name (hello:1.0, localhost:5000/app:v2) or digest; a reference \
                  with a registry that is not in the store is pulled first. Arguments \
                  after -- replace the image's default arguments (as with docker run). The \
                  program's stdout and stderr are kiln's, byte for byte."
)]
pub struct Args {
    /// The image: a .kiln file, or a name or digest in the local store (with --from-snapshot: optional, and then the snapshot must come from it)
    #[arg(value_name = "IMAGE|REF", required_unless_present = "from_snapshot")]
    image: Option<String>,

    /// Arguments for the program (replace the image's defaults)
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,

    /// Environment variable for the program, NAME=VALUE (repeatable; overrides the image's)
    #[arg(short, long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,

    /// Guest memory in MiB, 4 to 16384 [default: the image's]
    #[arg(long, value_name = "MiB", value_parser = clap::value_parser!(u64).range(
        kiln_boot::layout::MIN_MEMORY_MIB..=kiln_boot::layout::MAX_MEMORY_MIB))]
    memory: Option<u64>,

    #[command(flatten)]
    run: RunFlags,

    /// Save a snapshot of the VM (vCPUs, devices, touched memory): just before the program's first instruction (program-entry), just before its own first instruction once its dynamic loader has loaded its libraries (after-loader; for a static program the same), right after its first write to standard output or error (first-output), or when kiln receives SIGUSR2 (`kiln snapshot PID`, `kill -USR2 PID`). The run ends there (status 0) unless --leave-running; resume it with --from-snapshot
    #[arg(long, value_name = "POINT", requires = "snapshot_to")]
    snapshot_at: Option<kiln_vmm::snapshot::SnapshotPoint>,

    /// The directory --snapshot-at creates (it must not exist)
    #[arg(long, value_name = "DIR", requires = "snapshot_at")]
    snapshot_to: Option<std::path::PathBuf>,

    /// Keep running after --snapshot-at saved the snapshot
    #[arg(long, requires = "snapshot_at")]
    leave_running: bool,

    /// Stream checkpoints of the VM to a standby (`kiln standby --listen PORT` at HOST:PORT) every --checkpoint-interval: its network and console output are held until the standby has the checkpoint that produced them, and if this process dies the standby resumes the VM from the last one (its disks replicated to the standby's --disk copies; see docs/snapshots.md)
    #[arg(long, value_name = "HOST:PORT", conflicts_with_all = ["snapshot_at", "from_snapshot"])]
    standby: Option<String>,

    /// Milliseconds between checkpoints with --standby (the longest an answer is held back, plus the time to send a checkpoint)
    #[arg(long, value_name = "MS", default_value_t = 50, requires = "standby", value_parser = clap::value_parser!(u64).range(1..=60_000))]
    checkpoint_interval: u64,

    /// Resume a snapshot saved by --snapshot-at (a directory, or a snapshot of the local store by name: `kiln commit`, `kiln pull`) instead of booting: memory is mapped from the snapshot's file (shared by every VM resumed from it until written), each resumed VM gets the host's time and its own fresh randomness. -i, -t, --timeout, --stats, --user, -p (instead of the snapshot's published ports) and --disk (a copy of each of the snapshot's disks, in order) apply; the rest is the snapshot's
    #[arg(long, value_name = "DIR|NAME", conflicts_with_all = [
        "args", "env", "memory", "cpus", "init", "trace_syscalls", "share_image",
        "volumes", "vsock", "net", "ip", "gateway", "dns", "dns_search", "hostname", "pull",
    ])]
    from_snapshot: Option<std::path::PathBuf>,

    /// How --from-snapshot gets guest memory: `shared` maps the snapshot's memory file (nothing read up front, pages shared by every VM resumed from it, but each page the guest first touches costs an exit; the pages the first resume wrote are noted in the snapshot's memory.writes and copied early by the next ones), `copy` reads its data into the VM's own huge-page memory (the guest runs at full speed at once, no sharing)
    #[arg(long, value_enum, default_value_t = SnapshotMemoryArg::Shared, value_name = "HOW", requires = "from_snapshot")]
    snapshot_memory: SnapshotMemoryArg,

    /// Boot (with --from-snapshot: restore) in this process even when `kiln warm` holds a VM ready: by default a warm VM of `kiln warm IMAGE` serves a `kiln run IMAGE` with nothing more, and one of `kiln warm SNAP` serves `kiln run --from-snapshot SNAP` unless -i, -t, --user, -p, --disk, --snapshot-at, --snapshot-memory copy or an IMAGE is given (a served run's --stats count from the claim)
    #[arg(long)]
    no_warm: bool,

    /// Be a warm VM waiting in DIR (what `kiln warm` starts)
    #[arg(long, hide = true, value_name = "DIR", requires_all = ["from_snapshot", "warm_idle_timeout"])]
    serve_warm: Option<std::path::PathBuf>,

    /// How long a warm VM waits for a claim (seconds; 0: no limit)
    #[arg(long, hide = true, value_name = "SECONDS", requires = "serve_warm")]
    warm_idle_timeout: Option<f64>,

    /// Run in the background under kilnd, which starts it now and keeps it (prints its id); `kiln ps`, `kiln logs`, `kiln stop`, `kiln rm` manage it. kilnd is started when none answers
    #[arg(short = 'd', long, conflicts_with_all = ["snapshot_at", "from_snapshot", "standby", "interactive", "tty"])]
    detach: bool,

    /// The appliance's name under kilnd (-d) [default: vm- and the first 12 digits of its id]
    #[arg(long, value_name = "NAME", requires = "detach")]
    name: Option<String>,

    /// When kilnd starts the appliance again after it ended (-d): no, on-failure (after a non-zero status; on-failure:MAX at most MAX times), always; never after `kiln stop` or `kiln kill`
    #[arg(long, value_name = "POLICY", requires = "detach")]
    restart: Option<String>,

    /// Log limit (-d), as docker's: max-size=SIZE (b, k, m, g; default 20m) or max-file=N (files kept, the current one included; default 5); repeatable
    #[arg(long, value_name = "KEY=VALUE", requires = "detach")]
    log_opt: Vec<String>,

    /// When to pull a REF with a registry: when it is not in the local store,
    /// always (to pick up a moved tag), or never
    #[arg(long, value_enum, default_value_t = Pull::Missing, value_name = "WHEN")]
    pull: Pull,

    #[command(flatten)]
    registry: super::RegistryArgs,
}

/// Runs `kiln run`.
pub fn run(args: Args, start: Instant) -> Result<u8> {
    let timeout = args.run.timeout()?;
    let store = super::store();
    if let Some(snapshot) = &args.from_snapshot {
        return resume(&args, snapshot, &store, start);
    }
    let Some(image) = args.image.clone() else {
        bail!("kiln run needs an image (or --from-snapshot DIR)");
    };
    if args.detach {
        return detach(args, &image, &store);
    }
    let remote = Reference::parse(&image)
        .ok()
        .filter(|r| r.registry.is_some() && !super::is_file_name(&image));
    let pull = |reference: &Reference, why: &str| -> Result<_> {
        Progress::new(false).line(&format!("kiln: {why}; pulling {reference}"));
        let digest = pull_in_child(reference, &args.registry)?;
        let stored = store.resolve(&digest)?;
        Ok(store.parts(&stored, &image)?)
    };
    let parts = match (&remote, args.pull) {
        (Some(reference), Pull::Always) => pull(reference, "--pull always")?,
        _ => match super::open_image_to_boot(&image, &store) {
            Ok((parts, _)) => parts,
            Err(e) if super::not_stored(&e) && args.pull == Pull::Missing => match &remote {
                Some(reference) => pull(reference, "not in the local store")?,
                None => return Err(e),
            },
            Err(e) => return Err(e),
        },
    };
    let console = args.run.console()?;
    let snapshot = snapshot_request(&args);
    let opts = RunOptions {
        args: (!args.args.is_empty()).then_some(args.args),
        env: args.env,
        memory_mib: args.memory,
        timeout,
        trace_syscalls: args.run.trace_syscalls,
        init: args.run.init,
        cpus: args.run.cpus,
        stats: args.run.stats,
        phases: args.run.timings || args.run.timings_json.is_some(),
        share_image: args.run.share_image,
        user: args.run.user,
        stdin: console.stdin,
        terminal: console.terminal,
        net: args.run.net.clone(),
        vsock: args.run.vsock.clone(),
        disks: args.run.disks.clone(),
        volumes: args.run.volumes.clone(),
        snapshot_memory: Default::default(),
        snapshot,
        standby: args
            .standby
            .clone()
            .map(|address| kiln_vmm::ha::StandbyTarget {
                address,
                interval: std::time::Duration::from_millis(args.checkpoint_interval),
            }),
        warm: None,
    };
    let report = run::run(&parts, &opts, start);
    // The host terminal is itself again before anything is reported.
    drop(console);
    let report = report?;
    args.run.report("kiln", &report)?;
    Ok(report.exit_status())
}

/// `kiln run -d`: asks kilnd to create and start the appliance; prints
/// its id.
fn detach(args: Args, image: &str, store: &kiln_builder::store::Store) -> Result<u8> {
    use kiln_builder::daemon::api::{CreateVm, Created};
    let flags = &args.run;
    let unsupported = [
        ("--timeout", flags.timeout.is_some()),
        ("--timings", flags.timings || flags.timings_json.is_some()),
        ("--trace-syscalls", flags.trace_syscalls),
        ("--stats", flags.stats),
        ("--share-image", flags.share_image),
        ("--user", flags.user.is_some()),
        ("--vsock", flags.vsock.is_some()),
        ("--ip", flags.net.ip.is_some()),
        ("--gateway", flags.net.gateway.is_some()),
        ("--dns", !flags.net.dns.is_empty()),
        ("--dns-search", !flags.net.dns_search.is_empty()),
        ("--hostname", flags.net.hostname.is_some()),
    ];
    if let Some((flag, _)) = unsupported.iter().find(|(_, set)| *set) {
        bail!("{flag} does not go with -d yet (kilnd starts the VM with the image, -e, -p, -v, --disk, --net, --memory, --cpus and --init)");
    }
    let absolute = |path: &std::path::Path| -> Result<String> {
        Ok(std::path::absolute(path)
            .with_context(|| format!("{}: making the path absolute", path.display()))?
            .display()
            .to_string())
    };
    let image = if super::is_file_name(image) {
        absolute(std::path::Path::new(image))?
    } else {
        // A reference with a registry that is not stored is pulled here,
        // with this user's credentials, as `kiln run` would.
        let remote = Reference::parse(image)
            .ok()
            .filter(|r| r.registry.is_some());
        if let Some(reference) = remote {
            let missing = store.resolve(image).is_err();
            if args.pull == Pull::Always || (missing && args.pull == Pull::Missing) {
                Progress::new(false).line(&format!("kiln: pulling {reference}"));
                pull_in_child(&reference, &args.registry)?;
            }
        }
        image.to_string()
    };
    let request = CreateVm {
        log_opts: args.log_opt.clone(),
        name: args.name.clone(),
        image,
        args: (!args.args.is_empty()).then(|| args.args.clone()),
        env: args.env.clone(),
        memory_mib: args.memory,
        cpus: flags.cpus,
        init: flags.init,
        publish: flags.net.publish.iter().map(ToString::to_string).collect(),
        volumes: flags
            .volumes
            .iter()
            .map(|v| {
                Ok(format!(
                    "{}:{}{}",
                    absolute(&v.host)?,
                    v.guest,
                    if v.read_only { ":ro" } else { "" }
                ))
            })
            .collect::<Result<_>>()?,
        disks: flags
            .disks
            .iter()
            .map(|d| {
                Ok(format!(
                    "{}{}",
                    absolute(&d.path)?,
                    if d.read_only { ",ro" } else { "" }
                ))
            })
            .collect::<Result<_>>()?,
        net: flags.net.net.as_ref().map(ToString::to_string),
        restart: args.restart.clone(),
    };
    let client = super::kilnd()?;
    let body = serde_json::to_vec(&request)?;
    let created: Created = client.json("POST", "/v1/vms", Some(&body))?;
    println!("{}", created.id);
    Ok(0)
}

/// The snapshot `--snapshot-at` and `--snapshot-to` ask for.
fn snapshot_request(args: &Args) -> Option<kiln_vmm::snapshot::SnapshotRequest> {
    let (at, path) = args.snapshot_at.zip(args.snapshot_to.clone())?;
    Some(kiln_vmm::snapshot::SnapshotRequest {
        path,
        at,
        leave_running: args.leave_running,
        image: None,
    })
}

/// `kiln run --from-snapshot DIR [IMAGE]`.
fn resume(
    args: &Args,
    snapshot: &std::path::Path,
    store: &kiln_builder::store::Store,
    start: Instant,
) -> Result<u8> {
    let parts = match &args.image {
        Some(image) => Some(super::open_image_to_boot(image, store)?.0),
        None => None,
    };
    let snapshot = &snapshot_dir(snapshot, store)?;
    if let Some(dir) = &args.serve_warm {
        return serve_warm(args, snapshot, dir, start);
    }
    if warm_can_serve(args) {
        let dir = run::warm_dir(store.root(), snapshot);
        if let Some(status) = dir
            .ok()
            .and_then(|d| claim_warm(args, &d, start).transpose())
        {
            return status;
        }
    }
    let console = args.run.console()?;
    let opts = RunOptions {
        timeout: args.run.timeout()?,
        stats: args.run.stats,
        user: args.run.user,
        stdin: console.stdin,
        terminal: console.terminal,
        net: args.run.net.clone(),
        disks: args.run.disks.clone(),
        snapshot: snapshot_request(args),
        snapshot_memory: args.snapshot_memory.mode(),
        ..RunOptions::default()
    };
    let report = run::restore(snapshot, parts.as_ref(), &opts, start);
    drop(console);
    let report = report?;
    args.run.report("kiln", &report)?;
    Ok(report.exit_status())
}

/// The directory of the snapshot `snapshot` names: a directory, else a
/// snapshot of the local store by name or digest (unpacked once).
pub fn snapshot_dir(
    snapshot: &std::path::Path,
    store: &kiln_builder::store::Store,
) -> Result<std::path::PathBuf> {
    if snapshot.exists() {
        return Ok(snapshot.to_path_buf());
    }
    let text = snapshot.to_string_lossy();
    let Some(stored) = store.resolve_snapshot(&text)? else {
        bail!(
            "{text}: no such snapshot directory, nor a snapshot in the local store (`kiln snapshots` lists them)"
        );
    };
    Ok(store.unpacked_snapshot(&stored)?)
}

/// Whether a warm VM (started without any of these options) can serve
/// this `--from-snapshot` run.
fn warm_can_serve(args: &Args) -> bool {
    let flags = &args.run;
    !args.no_warm
        && args.image.is_none()
        && !flags.interactive
        && !flags.tty
        && flags.user.is_none()
        && flags.net.publish.is_empty()
        && flags.disks.is_empty()
        && args.snapshot_at.is_none()
        && args.snapshot_memory == SnapshotMemoryArg::Shared
}

/// `kiln run --from-snapshot SNAPSHOT` with no other argument, served by
/// a warm VM of the snapshot when one answers (main's fast path: it skips
/// parsing the command line); `None` when none does or the snapshot is
/// not found — the command then runs as usual.
pub fn claim_plain(snapshot: &std::path::Path, start: Instant) -> Option<Result<u8>> {
    let store = super::store();
    let snapshot = snapshot_dir(snapshot, &store).ok()?;
    let dir = run::warm_dir(store.root(), &snapshot).ok()?;
    claim_with(&dir, &plain_request(start)).transpose()
}

/// `kiln run IMAGE` with no other argument, served by a warm VM that
/// `kiln warm IMAGE` started from the image's own snapshot
/// ([`image_snapshot_dir`]) when one answers (main's fast path); `None`
/// when none does — the image then boots as usual.
pub fn claim_plain_image(image: &str, start: Instant) -> Option<Result<u8>> {
    let store = super::store();
    let snapshot = image_snapshot_dir(image, &store)?;
    // No snapshot taken yet: no warm VM either (warm_dir reads its digest).
    let dir = run::warm_dir(store.root(), &snapshot).ok()?;
    claim_with(&dir, &plain_request(start)).transpose()
}

/// Where the snapshot of the image `image` names lies that `kiln warm
/// IMAGE` takes and warms (whether taken yet or not): under the store's
/// `image-snapshots/`, named after the image's identity — for a file its
/// path, device, inode, size and change times (a rebuilt or replaced file
/// is another image, whose plain runs a stale warm VM does not serve),
/// for a stored image its manifest digest. `None` when `image` is neither
/// a file nor in the store.
pub fn image_snapshot_dir(image: &str, store: &kiln_builder::store::Store) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let path = std::path::Path::new(image);
    let identity = if path.is_file() {
        let canonical = std::fs::canonicalize(path).ok()?;
        let m = std::fs::metadata(&canonical).ok()?;
        let mut id = canonical.into_os_string().into_encoded_bytes();
        for n in [m.dev(), m.ino(), m.size()] {
            id.extend_from_slice(&n.to_le_bytes());
        }
        for n in [m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()] {
            id.extend_from_slice(&n.to_le_bytes());
        }
        id
    } else if super::is_file_name(image) {
        return None;
    } else {
        store.resolve(image).ok()?.digest.into_bytes()
    };
    let digest = kiln_builder::oci::sha256_digest(&identity);
    let hex = digest.trim_start_matches("sha256:");
    Some(store.root().join("image-snapshots").join(&hex[..16]))
}

/// A claim asking nothing beyond the run: when this command started.
fn plain_request(start: Instant) -> kiln_vmm::snapshot::warm::WarmRequest {
    kiln_vmm::snapshot::warm::WarmRequest {
        start_mono_ns: kiln_vmm::timings::monotonic_ns()
            .saturating_sub(start.elapsed().as_nanos() as u64),
        spawn_to_main_ms: kiln_vmm::timings::spawn_to_main_ms(),
        ..Default::default()
    }
}

/// The warm VM that serves this run, if one of `dir` answers: it gets
/// this process's standard streams, signals are passed on to it, and its
/// run's exit status becomes this process's.
fn claim_warm(args: &Args, dir: &std::path::Path, start: Instant) -> Result<Option<u8>> {
    let timings_json = match &args.run.timings_json {
        Some(path) => Some(
            std::path::absolute(path)
                .with_context(|| format!("{}: making the path absolute", path.display()))?,
        ),
        None => None,
    };
    let request = kiln_vmm::snapshot::warm::WarmRequest {
        timeout_s: args.run.timeout,
        timings: args.run.timings,
        timings_json,
        stats: args.run.stats,
        ..plain_request(start)
    };
    claim_with(dir, &request)
}

/// Claims a warm VM of `dir` for `request` and waits for its run's end.
fn claim_with(
    dir: &std::path::Path,
    request: &kiln_vmm::snapshot::warm::WarmRequest,
) -> Result<Option<u8>> {
    use kiln_vmm::snapshot::warm;
    let Some(client) = warm::claim(dir, request) else {
        return Ok(None);
    };
    forward_signals_to(client.pid)?;
    match client.wait()? {
        warm::WarmOutcome::Exited(status) => Ok(Some(status)),
        warm::WarmOutcome::Failed(message) => bail!("{message}"),
    }
}

/// The warm VM signals go to (0: none).
static WARM_PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn pass_signal_on(signal: libc::c_int) {
    let pid = WARM_PID.load(std::sync::atomic::Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe { libc::kill(pid, signal) };
    }
}

/// Passes SIGINT, SIGTERM and SIGHUP on to process `pid` (a claimed warm
/// VM), which stops its guest the way `kiln run` does.
fn forward_signals_to(pid: u32) -> Result<()> {
    WARM_PID.store(pid as i32, std::sync::atomic::Ordering::SeqCst);
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        kiln_vmm::stop::notify_on(signal, pass_signal_on).context("passing signals on")?;
    }
    Ok(())
}

/// `kiln run --from-snapshot S --serve-warm DIR` (started by `kiln warm`):
/// restores the snapshot, holds its guest where it reports itself resumed
/// until a client claims it through a socket in DIR, then runs for that
/// client and tells it the exit status.
fn serve_warm(
    args: &Args,
    snapshot: &std::path::Path,
    dir: &std::path::Path,
    start: Instant,
) -> Result<u8> {
    use kiln_vmm::snapshot::warm::WarmHold;
    // `kiln warm` always gives it (clap requires it with --serve-warm).
    let idle = match args.warm_idle_timeout.unwrap_or_default() {
        0.0 => None,
        s => Some(
            std::time::Duration::try_from_secs_f64(s)
                .context("--warm-idle-timeout out of range")?,
        ),
    };
    let hold = WarmHold::bind(dir, idle)?;
    let opts = RunOptions {
        snapshot_memory: args.snapshot_memory.mode(),
        warm: Some(hold.clone()),
        ..RunOptions::default()
    };
    let report = run::restore(snapshot, None, &opts, start);
    // Whatever happened, no client may find this VM any more.
    hold.withdraw();
    let Some(claim) = hold.claim() else {
        // Never claimed: stopped, timed out idle, or the restore failed.
        return match report {
            Ok(_) => Ok(0),
            Err(e) => Err(e.into()),
        };
    };
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            hold.fail(&format!("{e:#}"));
            return Err(e.into());
        }
    };
    let request = &claim.request;
    let printed = kiln_vmm::cli::Report {
        timings: request.timings,
        timings_json: request.timings_json.as_deref(),
        timeout: request.timeout_s,
        spawn_to_main_ms: request.spawn_to_main_ms,
    }
    .print("kiln", &report);
    if let Err(e) = printed {
        hold.fail(&e.to_string());
        return Err(e.into());
    }
    hold.finish(report.exit_status());
    Ok(report.exit_status())
}

/// Pulls `reference` with `kiln pull` in a child process and returns the
/// digest it stored. The registry credentials (`kiln login`'s auth.json,
/// Docker's config.json) are read there and never enter this process,
/// which goes on to run the guest: a guest that broke into the VMM finds
/// no password in its memory.
fn pull_in_child(reference: &Reference, registry: &super::RegistryArgs) -> Result<String> {
    let kiln = std::env::current_exe().context("finding kiln's own program to pull with")?;
    let mut pull = std::process::Command::new(kiln);
    pull.arg("pull").arg(reference.to_string());
    if registry.plain_http {
        pull.arg("--plain-http");
    }
    if let Some(ca) = &registry.ca_cert {
        pull.arg("--ca-cert").arg(ca);
    }
    // Its progress and errors go to our stderr; its stdout (the digest)
    // is ours to read, not the program's output.
    let out = pull
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("starting kiln pull")?;
    if !out.status.success() {
        bail!("pulling {reference} failed (kiln pull: {})", out.status);
    }
    let digest = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !digest.starts_with("sha256:") {
        bail!("kiln pull of {reference} printed no digest");
    }
    Ok(digest)
}
