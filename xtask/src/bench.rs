//! `cargo xtask bench-boot`: boots a program N times with kiln-vmm and
//! runs the same binary natively N times in the same run; prints a table
//! and writes `target/bench/boot.json`. A benchmark, not a test: it reports
//! numbers and never fails on them.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use xtask::{build, host, paths};

/// Options of `bench-boot`.
#[derive(clap::Args, Clone, Debug)]
pub struct BootArgs {
    /// Number of boots (and native runs)
    #[arg(long, default_value_t = 50)]
    pub runs: usize,
    /// Program from target/programs/ to boot
    #[arg(long, default_value = "hello-glibc")]
    pub program: String,
    /// Guest memory in MiB
    #[arg(long, default_value_t = 64)]
    pub memory: u64,
    /// A stored boot.json to compare with: fail when a median of kiln's
    /// phases is worse than the stored one by more than --max-ratio
    #[arg(long, value_name = "FILE")]
    pub compare: Option<PathBuf>,
    /// How much slower than the baseline a median may be (1.25: 25%)
    #[arg(long, default_value_t = 1.25, value_name = "RATIO")]
    pub max_ratio: f64,
}

impl Default for BootArgs {
    fn default() -> Self {
        Self {
            runs: 50,
            program: "hello-glibc".into(),
            memory: 64,
            compare: None,
            max_ratio: 1.25,
        }
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Summary statistics of a sample, in ms.
fn summary(mut v: Vec<f64>) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
    v.sort_by(f64::total_cmp);
    let pick = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    json!({ "median": pick(0.5), "p90": pick(0.9), "min": v[0], "max": v[v.len() - 1], "n": v.len() })
}

fn median(v: &Value) -> f64 {
    v["median"].as_f64().unwrap_or(f64::NAN)
}

/// Spawns `cmd` and waits for it, returning the wall time in ms.
fn timed(cmd: &mut Command) -> Result<(f64, std::process::ExitStatus)> {
    let t = Instant::now();
    let status = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status()?;
    Ok((t.elapsed().as_secs_f64() * 1e3, status))
}

/// Runs the benchmark.
pub fn boot(args: &BootArgs) -> Result<()> {
    if !host::kvm_available() {
        bail!("bench-boot needs /dev/kvm");
    }
    // The baseline is read first: it may be the file this run rewrites.
    let baseline: Option<Value> = match &args.compare {
        Some(file) => Some(
            serde_json::from_slice(
                &std::fs::read(file).with_context(|| format!("reading {}", file.display()))?,
            )
            .with_context(|| format!("{} is not a bench-boot JSON file", file.display()))?,
        ),
        None => None,
    };
    let kernel = build::kernel()?;
    let vmm = build::vmm_release()?;
    host::ensure_tools(&host::TOOLS[..2])?;
    build::programs()?;
    let program = paths::program(&args.program);
    let json_path = paths::bench().join("boot-run.json");
    std::fs::create_dir_all(paths::bench())?;

    let mut entry = Vec::new();
    let mut exit = Vec::new();
    let mut wall = Vec::new();
    let mut spawn = Vec::new();
    let mut rss = Vec::new();
    let mut guest = Vec::new();
    let mut flavour = String::new();
    for i in 0..args.runs {
        let mut cmd = Command::new(&vmm);
        cmd.arg("--kernel")
            .arg(&kernel)
            .arg("--app")
            .arg(&program)
            .arg("--memory")
            .arg(args.memory.to_string())
            .arg("--timings-json")
            .arg(&json_path)
            .env("KILN_SPAWN_MONO_NS", monotonic_ns().to_string());
        let (ms, status) = timed(&mut cmd)?;
        if !status.success() {
            bail!("boot {i} of {} failed ({status})", program.display());
        }
        let doc: Value = serde_json::from_slice(&std::fs::read(&json_path)?)
            .context("reading the timings JSON")?;
        let to_main = doc["spawn_to_main_ms"].as_f64().unwrap_or(0.0);
        let phase = |p: &str| doc["phases_ms"][p].as_f64().map(|v| v + to_main);
        entry.extend(phase("program_entry"));
        exit.extend(phase("program_exit"));
        spawn.push(to_main);
        wall.push(ms);
        rss.push(doc["vmm_peak_rss_kib"].as_f64().unwrap_or(0.0));
        guest.push(doc["guest_resident_kib"].as_f64().unwrap_or(0.0));
        flavour = doc["kvm_flavour"].as_str().unwrap_or("").to_string();
    }
    let mut native = Vec::new();
    for _ in 0..args.runs {
        native.push(timed(&mut Command::new(&program))?.0);
    }
    // The container-runtime baseline: the same static program started in
    // fresh pid/mount/uts/ipc/net namespaces, chrooted into a directory
    // holding only it (what a runtime does before any cgroup work).
    let root = paths::bench().join("container-root");
    std::fs::create_dir_all(&root)?;
    std::fs::copy(&program, root.join("prog"))?;
    let mut container = Vec::new();
    for _ in 0..args.runs {
        let mut cmd = Command::new("unshare");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            // Unprivileged: a user namespace makes the chroot allowed.
            cmd.args(["--user", "--map-root-user"]);
        }
        cmd.args([
            "--fork", "--pid", "--mount", "--uts", "--ipc", "--net", "chroot",
        ])
        .arg(&root)
        .arg("/prog");
        let (ms, status) = timed(&mut cmd)?;
        if !status.success() {
            bail!("the container baseline (unshare + chroot) failed ({status})");
        }
        container.push(ms);
    }
    let _ = std::fs::remove_file(&json_path);

    let kernel_size = std::fs::metadata(&kernel)?.len();
    let rss_beyond: Vec<f64> = rss.iter().zip(&guest).map(|(r, g)| r - g).collect();
    let mut doc = json!({
        "program": args.program,
        "runs": args.runs,
        "memory_mib": args.memory,
        "kvm_flavour": flavour,
        "ms": {
            "exec_to_vmm_main": summary(spawn),
            "exec_to_program_entry": summary(entry),
            "exec_to_program_exit": summary(exit),
            "kiln_wall": summary(wall),
            "native_wall": summary(native),
            "container_wall": summary(container),
        },
        "kernel_elf_bytes": kernel_size,
        "kib": {
            "vmm_peak_rss": summary(rss),
            "guest_resident": summary(guest),
            "vmm_rss_beyond_guest": summary(rss_beyond),
        },
    });
    let ratio = median(&doc["ms"]["kiln_wall"]) / median(&doc["ms"]["native_wall"]);
    doc["ratio_kiln_wall_to_native"] = json!(ratio);
    let container_ratio = median(&doc["ms"]["kiln_wall"]) / median(&doc["ms"]["container_wall"]);
    doc["ratio_kiln_wall_to_container"] = json!(container_ratio);
    let ms = &doc["ms"];

    println!(
        "bench-boot: {} x {} ({} KVM, {} MiB guest)",
        args.runs, args.program, flavour, args.memory
    );
    println!(
        "  {:<34} {:>9} {:>9}",
        "phase (ms from exec)", "median", "p90"
    );
    for (label, key) in [
        ("kiln-vmm main", "exec_to_vmm_main"),
        ("program entry", "exec_to_program_entry"),
        ("program exit", "exec_to_program_exit"),
        ("kiln wall (spawn to reaped)", "kiln_wall"),
        ("native wall (same binary)", "native_wall"),
        ("container start (unshare + chroot)", "container_wall"),
    ] {
        println!(
            "  {:<34} {:>9.3} {:>9.3}",
            label,
            median(&ms[key]),
            ms[key]["p90"].as_f64().unwrap_or(f64::NAN)
        );
    }
    println!("  {:<34} {:>9.2}x", "kiln / native (median wall)", ratio);
    println!(
        "  {:<34} {:>9.2}x",
        "kiln / container (median wall)", container_ratio
    );
    println!("  {:<34} {:>9} KiB", "kernel ELF", kernel_size / 1024);
    for (label, key) in [
        ("kiln-vmm peak RSS", "vmm_peak_rss"),
        ("  of which guest memory touched", "guest_resident"),
        ("  kiln-vmm beyond guest RAM", "vmm_rss_beyond_guest"),
    ] {
        println!("  {:<34} {:>9.0} KiB", label, median(&doc["kib"][key]));
    }
    let out = paths::bench().join("boot.json");
    build::write_atomically(&out, serde_json::to_string_pretty(&doc)?.as_bytes())?;
    println!("  wrote {}", out.display());
    if let (Some(file), Some(baseline)) = (&args.compare, &baseline) {
        let worse = regressions(baseline, &doc, args.max_ratio);
        println!(
            "  compared with {} (allowed: {:.2}x the stored medians)",
            file.display(),
            args.max_ratio
        );
        if !worse.is_empty() {
            bail!("boot time regressed:\n  {}", worse.join("\n  "));
        }
        println!("  no regression");
    }
    Ok(())
}

/// kiln's own phases, compared by `--compare`.
const COMPARED: [&str; 4] = [
    "exec_to_vmm_main",
    "exec_to_program_entry",
    "exec_to_program_exit",
    "kiln_wall",
];

/// The phases whose median in `current` exceeds `max_ratio` times the one
/// in `baseline`, described.
fn regressions(baseline: &Value, current: &Value, max_ratio: f64) -> Vec<String> {
    COMPARED
        .iter()
        .filter_map(|key| {
            let old = baseline["ms"][key]["median"].as_f64()?;
            let new = current["ms"][key]["median"].as_f64()?;
            (new > old * max_ratio).then(|| {
                format!(
                    "{key}: median {new:.3} ms, stored {old:.3} ms ({:.2}x)",
                    new / old
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(entry: f64, wall: f64) -> Value {
        json!({ "ms": {
            "exec_to_program_entry": { "median": entry },
            "kiln_wall": { "median": wall },
        }})
    }

    #[test]
    fn only_medians_beyond_the_ratio_are_regressions() {
        let base = doc(2.0, 5.0);
        assert!(regressions(&base, &doc(2.4, 6.0), 1.25).is_empty());
        let worse = regressions(&base, &doc(2.6, 5.0), 1.25);
        assert_eq!(worse.len(), 1);
        assert!(worse[0].starts_with("exec_to_program_entry"), "{worse:?}");
        // Phases missing from either file are not compared.
        assert!(regressions(&json!({}), &doc(9.0, 9.0), 1.25).is_empty());
    }
}
