//! `cargo xtask bench-snapshot`: what snapshots cost and what they save,
//! measured with the release `kiln`:
//!
//! * **Python start-up**: a program that imports ~90 standard-library
//!   modules, then does a little work (`xtask/bench-snapshot/imports.py`),
//!   cold-started with `kiln run` against resumed with `kiln run
//!   --from-snapshot` from a snapshot taken right after its start-up
//!   (`--snapshot-at first-output`), memory shared and copied; runs
//!   alternate, medians and the ratios.
//! * **Restore to running**: for each resume, the time from the snapshot's
//!   state read and checked to the guest's boot CPU running natively again
//!   (the `resumed` milestone; copying memory counts), and from the
//!   command's start, p50/p99.
//! * **Snapshot size and pause vs memory touched**: busybox fills a tmpfs
//!   file with N MiB of random bytes, then the snapshot is taken; the
//!   memory file's data, the time the vCPUs stood still, and one resume.
//! * **Clones**: K resumes of one snapshot started at once: clones per
//!   second (K over the time until the last one runs), and each clone's
//!   host memory while all run (RSS, and PSS, which shares the pages of the
//!   memory file that clones have in common).
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
}

impl Default for SnapshotArgs {
    fn default() -> Self {
        Self {
            runs: 10,
            touched: vec![0, 16, 64, 128],
            clones: 16,
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
    let (mut to_running, mut from_start, mut copy_to_running) =
        (Vec::new(), Vec::new(), Vec::new());
    let mut flavour = Value::Null;
    for _ in 0..runs {
        let (c, _) = run_timed(
            &mut kiln_cmd(kiln, &[image.to_str().unwrap_or("")]),
            "kiln run (cold)",
        )?;
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
        "resumed_copy_ms": summary(copy),
        "speedup_copy": summary(copy_speedup),
        "restore_to_running_ms": summary(to_running),
        "restore_to_running_copy_ms": summary(copy_to_running),
        "start_to_running_ms": summary(from_start),
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

fn print_tables(doc: &Value) {
    let p = &doc["python"];
    println!(
        "\nPython start-up ({} modules), {} KVM:",
        p["modules"],
        p["kvm_flavour"].as_str().unwrap_or("?")
    );
    println!(
        "  cold start {:.1} ms; resumed, memory shared {:.1} ms ({:.1}x faster), memory copied {:.1} ms ({:.1}x faster); goal {GOAL_SPEEDUP}x",
        median(&p["cold_ms"]),
        median(&p["resumed_ms"]),
        median(&p["speedup"]),
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
    let doc = json!({
        "goal_resume_ms": GOAL_RESUME_MS,
        "goal_speedup": GOAL_SPEEDUP,
        "python": python,
        "sizes": sizes,
        "clones": clones,
    });
    print_tables(&doc);
    crate::bench::write_results(&doc, "snapshot", crate::chart::snapshot)
}
