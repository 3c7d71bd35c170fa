//! `cargo xtask bench-snapshot`: what snapshots cost and what they save,
//! measured with the release `kiln`:
//!
//! * **Python start-up**: a program that imports ~90 standard-library
//!   modules, then does a little work (`xtask/bench-snapshot/imports.py`),
//!   cold-started with `kiln run` against resumed with `kiln run
//!   --from-snapshot` from a snapshot taken right after its start-up
//!   (`--snapshot-at first-output`), memory shared (with the write set
//!   the first resume learnt, and learning it again: the resume without
//!   one) and copied; runs alternate, medians and the ratios.
//! * **Restore to running**: for each resume, the time from the snapshot's
//!   state read and checked to the guest's boot CPU running natively again
//!   (the `resumed` milestone; copying memory counts), and from the
//!   command's start, p50/p99. Then from a warm VM (`kiln warm`, started
//!   before each such run): the claim reaching it to the program running
//!   again, and the whole run.
//! * **Snapshot size and pause vs memory touched**: busybox fills a tmpfs
//!   file with N MiB of random bytes, then the snapshot is taken; the
//!   memory file's data, the time the vCPUs stood still, and one resume.
//! * **Clones**: K resumes of one snapshot started at once: clones per
//!   second (K over the time until the last one runs), and each clone's
//!   host memory while all run (RSS, and PSS, which shares the pages of the
//!   memory file that clones have in common).
//! * **HA**: the HTTP benchmark (`bench-net`'s nginx appliance under wrk)
//!   without a standby and with one (`kiln run --standby`, `kiln standby`)
//!   at several checkpoint intervals: requests/s, latency, checkpoints and
//!   the vCPUs' pause per checkpoint. Then **failover**: a counter
//!   appliance (tests/programs/counter.c) answering a client in a loop,
//!   the primary killed with SIGKILL, the time until the client has its
//!   next answer from the standby's port (the client retries every 10 ms).
//!
//! Prints tables, writes `target/bench/snapshot.json` and draws
//! `target/bench/snapshot.svg`. A benchmark, not a test: the goals (resume
//! to running within 1 ms, Python resumed ≥ 5× faster than cold) are
//! reported, never asserted.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use xtask::{build, host, paths};

use crate::bench::{median, run_timed, summary};
use crate::bench_net::{free_port, Guard};
use crate::compat::toml_string;
use crate::python;

/// Options of `bench-snapshot`.
#[derive(clap::Args, Clone, Debug)]
pub struct SnapshotArgs {
    /// Runs of each side (cold start and resume) for the Python program
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// MiB of touched memory to snapshot (comma-separated sizes)
    #[arg(long, value_delimiter = ',', default_values_t = [0u32, 16, 64, 128])]
    pub touched: Vec<u32>,
    /// Clones resumed at once
    #[arg(long, default_value_t = 16)]
    pub clones: usize,
    /// Checkpoint intervals (ms) to measure HA's overhead at (comma-separated)
    #[arg(long, value_delimiter = ',', default_values_t = [10u64, 50, 100])]
    pub intervals: Vec<u64>,
    /// Seconds of each wrk run of the HA measurement
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// Failovers measured
    #[arg(long, default_value_t = 5)]
    pub failovers: usize,
}

impl Default for SnapshotArgs {
    fn default() -> Self {
        Self {
            runs: 10,
            touched: vec![0, 16, 64, 128],
            clones: 16,
            intervals: vec![10, 50, 100],
            seconds: 5,
            failovers: 5,
        }
    }
}

/// The goals of issue 16.
const GOAL_RESUME_MS: f64 = 1.0;
const GOAL_SPEEDUP: f64 = 5.0;

fn dir() -> PathBuf {
    paths::bench().join("snapshot")
}

/// `kiln run ARGS` with the benchmark's own store, stdout captured.
fn kiln_cmd(kiln: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(kiln);
    cmd.arg("run")
        .args(args)
        .env("KILN_HOME", dir().join("kiln-home"))
        .stderr(Stdio::piped());
    cmd
}

/// Runs `cmd` (adding `--timings-json FILE`); (wall ms, stdout, timings).
fn timed_with_json(cmd: &mut Command, what: &str) -> Result<(f64, Vec<u8>, Value)> {
    let json_path = dir().join(format!("timings-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&json_path);
    cmd.arg("--timings-json").arg(&json_path);
    let (ms, out) = run_timed(cmd, what)?;
    let doc = serde_json::from_slice(&std::fs::read(&json_path)?)
        .with_context(|| format!("reading the timings JSON of {what}"))?;
    Ok((ms, out, doc))
}

fn phase(doc: &Value, name: &str) -> Option<f64> {
    doc["phases_ms"][name].as_f64()
}

/// Restore-to-running of one resume: from its state checked to its boot
/// CPU running natively; and from the command's start.
fn resume_latency(doc: &Value) -> Option<(f64, f64)> {
    let resumed = phase(doc, "resumed")?;
    Some((resumed - phase(doc, "snapshot_verified")?, resumed))
}

/// For a run a warm VM served: (claim → running, the command's start →
/// running), ms.
pub(crate) fn warm_latency(doc: &Value) -> Option<(f64, f64)> {
    let resumed = phase(doc, "resumed")?;
    Some((resumed - phase(doc, "claimed")?, resumed))
}

/// How many warm VMs wait to be claimed in the store `home` (their
/// published sockets, `$KILN_HOME/warm/<key>/*.sock`).
pub(crate) fn warm_vms_waiting(home: &Path) -> usize {
    let Ok(keys) = std::fs::read_dir(home.join("warm")) else {
        return 0;
    };
    keys.flatten()
        .filter_map(|key| std::fs::read_dir(key.path()).ok())
        .flat_map(|sockets| sockets.flatten())
        .filter(|s| s.path().extension().is_some_and(|e| e == "sock"))
        .count()
}

/// `kiln warm SNAPSHOT` (or IMAGE; one VM) with the store `home`, waited
/// for; ms.
pub(crate) fn warm_up(kiln: &Path, target: &Path, home: &Path) -> Result<f64> {
    let t = Instant::now();
    let out = Command::new(kiln)
        .arg("warm")
        .arg(target)
        .env("KILN_HOME", home)
        .stdin(Stdio::null())
        .output()
        .context("starting kiln warm")?;
    if !out.status.success() {
        bail!(
            "kiln warm failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

/// Writes a manifest into the benchmark's folder and builds it.
fn image(kiln: &Path, name: &str, manifest: &str) -> Result<PathBuf> {
    let path = dir().join(format!("{name}.toml"));
    std::fs::write(&path, manifest)?;
    let image = dir().join(format!("{name}.kiln"));
    build::kiln_build(kiln, &path, &image)?;
    Ok(image)
}

/// Takes a snapshot of `image` at `point` into `to` (replacing an old
/// one); the run's timings JSON.
fn take(kiln: &Path, image: &Path, point: &str, to: &Path, extra: &[&str]) -> Result<Value> {
    let _ = std::fs::remove_dir_all(to);
    let mut cmd = kiln_cmd(
        kiln,
        &[
            "--snapshot-at",
            point,
            "--snapshot-to",
            to.to_str().context("a UTF-8 path")?,
        ],
    );
    cmd.args(extra).arg(image);
    let (_, _, doc) = timed_with_json(&mut cmd, "kiln run --snapshot-at")?;
    if doc["snapshot"].is_null() {
        bail!("kiln run --snapshot-at reported no snapshot");
    }
    Ok(doc)
}

fn resume_cmd(kiln: &Path, snapshot: &Path) -> Command {
    let mut cmd = kiln_cmd(kiln, &["--from-snapshot"]);
    cmd.arg(snapshot);
    cmd
}

/// A resume with `--snapshot-memory HOW`.
fn resume_with(kiln: &Path, snapshot: &Path, how: &str) -> Command {
    let mut cmd = resume_cmd(kiln, snapshot);
    cmd.args(["--snapshot-memory", how]);
    cmd
}

/// The Python program: cold starts against resumes.
fn python_startup(kiln: &Path, runs: usize) -> Result<Value> {
    let interpreter = python::interpreter()?;
    let script = paths::root()
        .join("xtask")
        .join("bench-snapshot")
        .join("imports.py");
    let modules = python::modules(&interpreter, &script, &[])?;
    let mut m = String::new();
    let program = interpreter.display().to_string();
    writeln!(
        m,
        "name = \"bench-snapshot-python\"\nversion = \"0.0.0\"\nmax_size = \"32MiB\"\n\n[program]"
    )?;
    writeln!(m, "path = {}", toml_string(&program))?;
    writeln!(m, "guest_path = {}", toml_string(&program))?;
    writeln!(m, "args = [\"-I\", \"/app/imports.py\"]")?;
    let libs: Vec<String> = modules.extensions.iter().map(|l| toml_string(l)).collect();
    writeln!(m, "libraries = [{}]", libs.join(", "))?;
    let mut files = vec![(script.clone(), "/app/imports.py".to_string())];
    files.extend(
        modules
            .files
            .iter()
            .map(|f| (f.clone(), f.display().to_string())),
    );
    for (src, dst) in &files {
        writeln!(
            m,
            "\n[[files]]\nsrc = {}\ndst = {}",
            toml_string(&src.display().to_string()),
            toml_string(dst)
        )?;
    }
    writeln!(
        m,
        "\n[[dirs]]\npath = \"/tmp\"\nmode = \"1777\"\n\n[vm]\nmemory = 256"
    )?;
    let image = image(kiln, "python", &m)?;
    let snapshot = dir().join("python.snap");
    let taken = take(kiln, &image, "first-output", &snapshot, &[])?;
    let (_, cold_out) = run_timed(&mut kiln_cmd(kiln, &[image.to_str().unwrap_or("")]), "cold")?;
    let (_, resumed_out) = run_timed(&mut resume_cmd(kiln, &snapshot), "resume")?;
    // The resumed program prints what the cold one prints after "ready".
    let cold_text = String::from_utf8_lossy(&cold_out).into_owned();
    let after_ready = cold_text.strip_prefix("ready\n").unwrap_or(&cold_text);
    if after_ready != String::from_utf8_lossy(&resumed_out) {
        bail!(
            "the resumed program printed {:?}, the cold one {cold_text:?}",
            String::from_utf8_lossy(&resumed_out)
        );
    }
    let mut cold = Vec::new();
    let (mut shared, mut shared_speedup, mut copy, mut copy_speedup) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut learning, mut learning_speedup) = (Vec::new(), Vec::new());
    let write_set = snapshot.join("memory.writes");
    let (mut to_running, mut from_start, mut copy_to_running) =
        (Vec::new(), Vec::new(), Vec::new());
    let (mut warm, mut warm_speedup, mut warm_to_running, mut warm_from_start, mut warm_ready) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut flavour = Value::Null;
    for _ in 0..runs {
        let (c, _) = run_timed(
            &mut kiln_cmd(kiln, &[image.to_str().unwrap_or("")]),
            "kiln run (cold)",
        )?;
        // Without a write set (this resume learns it again for the next).
        std::fs::remove_file(&write_set)
            .with_context(|| format!("{}: the first resume learnt none", write_set.display()))?;
        let (l, _) = run_timed(
            &mut resume_with(kiln, &snapshot, "shared"),
            "kiln run --from-snapshot (learning)",
        )?;
        learning.push(l);
        learning_speedup.push(c / l);
        let (r, _, doc) = timed_with_json(
            &mut resume_with(kiln, &snapshot, "shared"),
            "kiln run --from-snapshot",
        )?;
        if let Some((running, start)) = resume_latency(&doc) {
            to_running.push(running);
            from_start.push(start);
        }
        let (k, _, copied) = timed_with_json(
            &mut resume_with(kiln, &snapshot, "copy"),
            "kiln run --from-snapshot --snapshot-memory copy",
        )?;
        copy_to_running.extend(resume_latency(&copied).map(|l| l.0));
        // A warm VM (`kiln warm`) resumed ahead and held; the run claims it.
        warm_ready.push(warm_up(kiln, &snapshot, &dir().join("kiln-home"))?);
        let (w, warm_out, warmed) = timed_with_json(
            &mut resume_cmd(kiln, &snapshot),
            "kiln run --from-snapshot (warm)",
        )?;
        let Some((running, start)) = warm_latency(&warmed) else {
            bail!("the run after kiln warm was not served by the warm VM");
        };
        if warm_out != resumed_out {
            bail!(
                "the warm VM's program printed {:?}",
                String::from_utf8_lossy(&warm_out)
            );
        }
        warm_to_running.push(running);
        warm_from_start.push(start);
        warm.push(w);
        warm_speedup.push(c / w);
        flavour = doc["kvm_flavour"].clone();
        cold.push(c);
        shared.push(r);
        shared_speedup.push(c / r);
        copy.push(k);
        copy_speedup.push(c / k);
    }
    Ok(json!({
        "image_bytes": std::fs::metadata(&image)?.len(),
        "modules": modules.files.len(),
        "kvm_flavour": flavour,
        "snapshot": taken["snapshot"],
        "cold_ms": summary(cold),
        "resumed_ms": summary(shared),
        "speedup": summary(shared_speedup),
        "resumed_learning_ms": summary(learning),
        "speedup_learning": summary(learning_speedup),
        "resumed_copy_ms": summary(copy),
        "speedup_copy": summary(copy_speedup),
        "restore_to_running_ms": summary(to_running),
        "restore_to_running_copy_ms": summary(copy_to_running),
        "start_to_running_ms": summary(from_start),
        "resumed_warm_ms": summary(warm),
        "speedup_warm": summary(warm_speedup),
        "warm_ready_ms": summary(warm_ready),
        "claim_to_running_warm_ms": summary(warm_to_running),
        "start_to_running_warm_ms": summary(warm_from_start),
    }))
}

/// Snapshot size, pause and one resume for each amount of touched memory.
fn sizes(kiln: &Path, touched: &[u32]) -> Result<Vec<Value>> {
    let busybox = python::debian_program("/bin/busybox", "busybox-static")?;
    let max = touched.iter().copied().max().unwrap_or(0);
    let memory = (4 * u64::from(max) + 64).next_power_of_two();
    let mut rows = Vec::new();
    for &mib in touched {
        let manifest = format!(
            "name = \"bench-snapshot-fill\"\nversion = \"0.0.0\"\nmax_size = \"4MiB\"\n\n[program]\n\
             path = {b}\nguest_path = \"/bin/busybox\"\n\
             args = [\"sh\", \"-c\", \"[ {mib} -gt 0 ] && dd if=/dev/urandom of=/tmp/fill bs=1M count={mib} 2>/dev/null; echo ready; echo done\"]\n\n\
             [[dirs]]\npath = \"/tmp\"\nmode = \"1777\"\n\n[vm]\nmemory = {memory}\n",
            b = toml_string(&busybox.display().to_string()),
        );
        let image = image(kiln, &format!("fill-{mib}"), &manifest)?;
        let snapshot = dir().join(format!("fill-{mib}.snap"));
        let t = Instant::now();
        let doc = take(kiln, &image, "first-output", &snapshot, &[])?;
        let take_ms = t.elapsed().as_secs_f64() * 1e3;
        // The first resume checks the memory file's digest; the second
        // finds it checked.
        let (first_ms, out, first) =
            timed_with_json(&mut resume_cmd(kiln, &snapshot), "first resume")?;
        if out != b"done\n" {
            bail!(
                "the resumed fill program printed {:?}",
                String::from_utf8_lossy(&out)
            );
        }
        let (again_ms, _, again) = timed_with_json(&mut resume_cmd(kiln, &snapshot), "resume")?;
        rows.push(json!({
            "touched_mib": mib,
            "memory_mib": memory,
            "data_bytes": doc["snapshot"]["data_bytes"],
            "file_blocks_bytes": disk_usage(&snapshot.join("memory")),
            "pause_ms": doc["snapshot"]["pause_ms"],
            "take_command_ms": take_ms,
            "first_resume_ms": first_ms,
            "first_restore_to_running_ms": resume_latency(&first).map(|l| l.0),
            "resume_ms": again_ms,
            "restore_to_running_ms": resume_latency(&again).map(|l| l.0),
        }));
        let _ = std::fs::remove_dir_all(&snapshot);
    }
    Ok(rows)
}

/// Bytes the file's blocks take on disk.
fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

/// RSS and PSS (KiB) of process `pid`.
fn rss_pss(pid: u32) -> Option<(f64, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
    };
    Some((field("Rss:")?, field("Pss:")?))
}

/// K clones of one snapshot at once.
fn clones(kiln: &Path, count: usize) -> Result<Value> {
    let busybox = python::debian_program("/bin/busybox", "busybox-static")?;
    let manifest = format!(
        "name = \"bench-snapshot-idle\"\nversion = \"0.0.0\"\nmax_size = \"4MiB\"\n\n[program]\n\
         path = {b}\nguest_path = \"/bin/busybox\"\n\
         args = [\"sh\", \"-c\", \"echo ready; sleep 3; echo done\"]\n\n[vm]\nmemory = 64\n",
        b = toml_string(&busybox.display().to_string()),
    );
    let image = image(kiln, "idle", &manifest)?;
    let snapshot = dir().join("idle.snap");
    take(kiln, &image, "first-output", &snapshot, &[])?;
    // One resume first, so that every clone finds the memory file checked.
    run_timed(&mut resume_cmd(kiln, &snapshot), "resume")?;
    let start = Instant::now();
    let mut children = Vec::new();
    for i in 0..count {
        let json_path = dir().join(format!("clone-{i}.json"));
        let _ = std::fs::remove_file(&json_path);
        let mut cmd = resume_cmd(kiln, &snapshot);
        cmd.arg("--timings-json")
            .arg(&json_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let spawned_at = start.elapsed().as_secs_f64() * 1e3;
        children.push((
            cmd.spawn().context("starting a clone")?,
            json_path,
            spawned_at,
        ));
    }
    // All clones sleep in their guests by now: sample their memory.
    std::thread::sleep(Duration::from_millis(1500));
    let memory: Vec<(f64, f64)> = children
        .iter()
        .filter_map(|(c, _, _)| rss_pss(c.id()))
        .collect();
    let mut running_at = Vec::new();
    for (mut child, json_path, spawned_at) in children {
        let status = child.wait()?;
        if !status.success() {
            bail!("a clone failed ({status})");
        }
        let doc: Value = serde_json::from_slice(&std::fs::read(&json_path)?)?;
        if let Some(resumed) = phase(&doc, "resumed") {
            running_at.push(spawned_at + resumed);
        }
        let _ = std::fs::remove_file(&json_path);
    }
    let last = running_at.iter().copied().fold(0.0, f64::max);
    Ok(json!({
        "clones": count,
        "all_running_ms": last,
        "clones_per_second": if last > 0.0 { count as f64 / (last / 1e3) } else { 0.0 },
        "rss_kib": summary(memory.iter().map(|m| m.0).collect()),
        "pss_kib": summary(memory.iter().map(|m| m.1).collect()),
        "sampled": memory.len(),
    }))
}

/// A `kiln standby --listen 127.0.0.1:0` with `extra` flags; the child and
/// the address it listens on.
fn start_standby(kiln: &Path, name: &str, extra: &[&str]) -> Result<(Guard, String)> {
    let log = dir().join(format!("{name}.err"));
    let child = Command::new(kiln)
        .args(["standby", "--listen", "127.0.0.1:0"])
        .args(extra)
        .env("KILN_HOME", dir().join("kiln-home"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting kiln standby")?;
    let child = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(address) = text
            .lines()
            .find_map(|l| l.strip_prefix("kiln: standby listening on "))
        {
            return Ok((child, address.to_owned()));
        }
        if Instant::now() > deadline {
            bail!("kiln standby printed no address: {text}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// nginx under wrk without a standby and with one at each interval.
fn ha_overhead(kiln: &Path, intervals: &[u64], seconds: u32) -> Result<Value> {
    let image = crate::bench_net::httpd_image(kiln, &dir())?;
    let args = crate::bench_net::NetArgs {
        seconds,
        connections: 32,
        mib: 0,
        starts: 0,
    };
    let mut rows = Vec::new();
    for interval in std::iter::once(None).chain(intervals.iter().copied().map(Some)) {
        let port = free_port()?;
        let json_path = dir().join("ha-primary.json");
        let _ = std::fs::remove_file(&json_path);
        let mut cmd = Command::new(kiln);
        cmd.arg("run")
            .args(["-p", &format!("{port}:80"), "--timings-json"])
            .arg(&json_path)
            .env("KILN_HOME", dir().join("kiln-home"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let standby = match interval {
            Some(ms) => {
                let (standby, address) = start_standby(kiln, "ha-standby", &[])?;
                cmd.args([
                    "--standby",
                    &address,
                    "--checkpoint-interval",
                    &ms.to_string(),
                ]);
                Some(standby)
            }
            None => None,
        };
        let mut primary = Guard(cmd.arg(&image).spawn().context("starting the primary")?);
        let url = format!("http://127.0.0.1:{port}/");
        crate::bench_net::wait_http(None, &url)?;
        let measured = crate::bench_net::wrk(None, &url, &args)?;
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(primary.0.id() as i32, libc::SIGTERM) };
        primary.0.wait()?;
        drop(standby);
        let report: Value = std::fs::read(&json_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        rows.push(json!({
            "interval_ms": interval,
            "wrk": measured,
            "replication": report["replication"],
        }));
    }
    let base = rows
        .first()
        .and_then(|r| r["wrk"]["requests_per_s"].as_f64())
        .unwrap_or(f64::NAN);
    for row in &mut rows {
        let rps = row["wrk"]["requests_per_s"].as_f64().unwrap_or(f64::NAN);
        row["relative_throughput"] = json!(rps / base);
    }
    Ok(json!({ "connections": args.connections, "seconds": seconds, "runs": rows }))
}

/// Kill -9 of a primary serving a counter; time to the next answer from
/// the standby.
fn failover(kiln: &Path, count: usize) -> Result<Value> {
    use std::io::{BufRead, BufReader, Write};
    let counter = xtask::paths::program("counter");
    let manifest = format!(
        "name = \"bench-snapshot-counter\"\nversion = \"0.0.0\"\n\n[program]\npath = {}\nargs = [\"8080\"]\n",
        toml_string(&counter.display().to_string())
    );
    let image = image(kiln, "counter", &manifest)?;
    let mut times = Vec::new();
    for _ in 0..count {
        let (primary_port, standby_port) = (free_port()?, free_port()?);
        let (_standby, address) = start_standby(
            kiln,
            "failover-standby",
            &["-p", &format!("{standby_port}:8080")],
        )?;
        let mut primary = Guard(
            Command::new(kiln)
                .args([
                    "run",
                    "--standby",
                    &address,
                    "-p",
                    &format!("{primary_port}:8080"),
                ])
                .arg(&image)
                .env("KILN_HOME", dir().join("kiln-home"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("starting the primary")?,
        );
        let mut line = String::new();
        BufReader::new(primary.0.stdout.take().context("the primary's stdout")?)
            .read_line(&mut line)?;
        let ask = |port: u16| -> Option<u64> {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            s.write_all(b"n\n").ok()?;
            let mut answer = String::new();
            BufReader::new(s).read_line(&mut answer).ok()?;
            answer.trim().parse().ok()
        };
        let mut last = 0;
        for _ in 0..10 {
            last = ask(primary_port).context("the primary's counter did not answer")?;
        }
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(primary.0.id() as i32, libc::SIGKILL) };
        let killed = Instant::now();
        primary.0.wait()?;
        let next = loop {
            if let Some(n) = ask(standby_port) {
                break n;
            }
            if killed.elapsed() > Duration::from_secs(30) {
                bail!("the standby never answered after the primary died");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if next <= last {
            bail!("the standby answered {next} after the primary's {last}");
        }
        times.push(killed.elapsed().as_secs_f64() * 1e3);
    }
    Ok(json!({ "failover_ms": summary(times) }))
}

fn print_tables(doc: &Value) {
    let p = &doc["python"];
    println!(
        "\nPython start-up ({} modules), {} KVM:",
        p["modules"],
        p["kvm_flavour"].as_str().unwrap_or("?")
    );
    println!(
        "  cold start {:.1} ms; resumed, memory shared {:.1} ms ({:.1}x faster; {:.1} ms, {:.1}x, without the write set), memory copied {:.1} ms ({:.1}x faster); goal {GOAL_SPEEDUP}x",
        median(&p["cold_ms"]),
        median(&p["resumed_ms"]),
        median(&p["speedup"]),
        median(&p["resumed_learning_ms"]),
        median(&p["speedup_learning"]),
        median(&p["resumed_copy_ms"]),
        median(&p["speedup_copy"])
    );
    println!(
        "  restore to running (memory shared): p50 {:.2} ms, p99 {:.2} ms (goal {GOAL_RESUME_MS} ms); from the command's start p50 {:.2} ms; memory copied: p50 {:.2} ms",
        median(&p["restore_to_running_ms"]),
        p["restore_to_running_ms"]["p99"].as_f64().unwrap_or(f64::NAN),
        median(&p["start_to_running_ms"]),
        median(&p["restore_to_running_copy_ms"])
    );
    println!(
        "  from a warm VM (`kiln warm`, ready {:.1} ms after the command): claim to running p50 {:.3} ms, p99 {:.3} ms; from the command's start p50 {:.2} ms; whole run {:.1} ms ({:.1}x faster than cold)",
        median(&p["warm_ready_ms"]),
        median(&p["claim_to_running_warm_ms"]),
        p["claim_to_running_warm_ms"]["p99"].as_f64().unwrap_or(f64::NAN),
        median(&p["start_to_running_warm_ms"]),
        median(&p["resumed_warm_ms"]),
        median(&p["speedup_warm"])
    );
    println!("\nSnapshot size and pause vs memory touched:");
    println!(
        "  {:>8} {:>10} {:>10} {:>9} {:>12} {:>12}",
        "touched", "saved", "on disk", "pause", "1st resume", "resume"
    );
    for r in doc["sizes"].as_array().into_iter().flatten() {
        let mib = |v: &Value| v.as_f64().unwrap_or(f64::NAN) / (1 << 20) as f64;
        println!(
            "  {:>5} MiB {:>6.1} MiB {:>6.1} MiB {:>6.1} ms {:>9.1} ms {:>9.1} ms",
            r["touched_mib"],
            mib(&r["data_bytes"]),
            mib(&r["file_blocks_bytes"]),
            r["pause_ms"].as_f64().unwrap_or(f64::NAN),
            r["first_resume_ms"].as_f64().unwrap_or(f64::NAN),
            r["resume_ms"].as_f64().unwrap_or(f64::NAN),
        );
    }
    let c = &doc["clones"];
    println!(
        "\nClones: {} resumed at once, all running after {:.1} ms ({:.0} clones/s); per clone RSS {:.0} KiB, PSS {:.0} KiB",
        c["clones"],
        c["all_running_ms"].as_f64().unwrap_or(f64::NAN),
        c["clones_per_second"].as_f64().unwrap_or(f64::NAN),
        median(&c["rss_kib"]),
        median(&c["pss_kib"]),
    );
    let h = &doc["ha"];
    println!(
        "\nHA: nginx under wrk ({} connections, {} s), without and with a standby:",
        h["connections"], h["seconds"]
    );
    println!(
        "  {:>10} {:>10} {:>9} {:>9} {:>9} {:>12} {:>11}",
        "interval", "req/s", "relative", "p50", "p99", "checkpoints", "pause mean"
    );
    for r in h["runs"].as_array().into_iter().flatten() {
        let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
        println!(
            "  {:>10} {:>10.0} {:>8.2}x {:>6.1} ms {:>6.1} ms {:>12} {:>8.2} ms",
            r["interval_ms"]
                .as_u64()
                .map_or("none".to_string(), |ms| format!("{ms} ms")),
            f(&r["wrk"]["requests_per_s"]),
            f(&r["relative_throughput"]),
            f(&r["wrk"]["latency_p50_ms"]),
            f(&r["wrk"]["latency_p99_ms"]),
            r["replication"]["checkpoints"],
            f(&r["replication"]["pause_mean_ms"]),
        );
    }
    println!(
        "  failover (kill -9 of the primary to the client's next answer from the standby): p50 {:.1} ms, max {:.1} ms",
        median(&doc["failover"]["failover_ms"]),
        doc["failover"]["failover_ms"]["max"].as_f64().unwrap_or(f64::NAN)
    );
}

/// Runs the benchmark.
pub fn run(args: &SnapshotArgs) -> Result<()> {
    if !host::kvm_available() {
        bail!("bench-snapshot needs /dev/kvm");
    }
    if args.runs == 0 || args.clones == 0 {
        bail!("--runs and --clones must be at least 1");
    }
    host::ensure_named(&["python3", "busybox"])?;
    build::kernel()?;
    let kiln = build::kiln_release()?;
    std::fs::create_dir_all(dir())?;
    let python = python_startup(&kiln, args.runs)?;
    let sizes = sizes(&kiln, &args.touched)?;
    let clones = clones(&kiln, args.clones)?;
    build::programs()?;
    let ha = ha_overhead(&kiln, &args.intervals, args.seconds)?;
    let failover = failover(&kiln, args.failovers)?;
    let doc = json!({
        "goal_resume_ms": GOAL_RESUME_MS,
        "goal_speedup": GOAL_SPEEDUP,
        "python": python,
        "sizes": sizes,
        "clones": clones,
        "ha": ha,
        "failover": failover,
    });
    print_tables(&doc);
    crate::bench::write_results(&doc, "snapshot", crate::chart::snapshot)
}
