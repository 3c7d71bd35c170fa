//! `cargo xtask bench-io`: storage speed in kiln against the same
//! operations natively, in one run: sequential 1 MiB writes (then fsync)
//! and reads, random 4 KiB writes and reads, and the latency of a 4 KiB
//! write + fsync — on a volume (`-v`, virtio-fs through virtiofsd) against
//! a file in the same host directory, and on a disk (`--disk`,
//! virtio-blk) against the same disk file. Native and kiln runs alternate
//! and the median of the runs is reported, because the host's own fsync
//! latency wanders by several times from one run to the next. Prints a
//! table and writes `target/bench/io.json`. A benchmark, not a test: it
//! never fails on the numbers.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use xtask::{build, host, paths};

/// Options of `bench-io`.
#[derive(clap::Args, Clone, Debug)]
pub struct IoArgs {
    /// Runs of each side (the median is reported)
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// MiB of the sequential phase (and the size of the file or disk)
    #[arg(long, default_value_t = 64)]
    pub mib: u32,
}

impl Default for IoArgs {
    fn default() -> Self {
        Self { runs: 3, mib: 64 }
    }
}

/// The measurements, as iobench prints them: (name, unit, what, higher is
/// better).
const MEASURES: &[(&str, &str, &str, bool)] = &[
    ("seq_write", "MiB/s", "1 MiB writes, then fsync", true),
    ("seq_read", "MiB/s", "1 MiB reads", true),
    ("rand_write", "IOPS", "4 KiB pwrite at random offsets", true),
    ("rand_read", "IOPS", "4 KiB pread at random offsets", true),
    ("fsync_p50", "us", "4 KiB write + fsync, median", false),
    (
        "fsync_p99",
        "us",
        "4 KiB write + fsync, 99th percentile",
        false,
    ),
];

/// Parses iobench's "name value unit" lines.
fn parse(stdout: &[u8]) -> BTreeMap<String, f64> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_owned(), w.next()?.parse().ok()?))
        })
        .collect()
}

fn run_once(cmd: &mut Command, samples: &mut BTreeMap<String, Vec<f64>>) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (k, v) in parse(&out.stdout) {
        samples.entry(k).or_default().push(v);
    }
    Ok(())
}

fn medians(samples: BTreeMap<String, Vec<f64>>) -> BTreeMap<String, f64> {
    samples
        .into_iter()
        .map(|(k, mut v)| {
            v.sort_by(f64::total_cmp);
            (k, v[v.len() / 2])
        })
        .collect()
}

/// A fresh, empty directory.
fn fresh_dir(dir: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// A zero-filled disk file of `mib` MiB.
fn fresh_disk(path: &Path, mib: u32) -> Result<()> {
    let f = std::fs::File::create(path)?;
    f.set_len(u64::from(mib) << 20)?;
    Ok(())
}

/// Runs the benchmark.
pub fn run(args: &IoArgs) -> Result<()> {
    if !host::kvm_available() {
        bail!("bench-io needs /dev/kvm");
    }
    if args.runs == 0 || args.mib == 0 {
        bail!("--runs and --mib must be at least 1");
    }
    host::ensure_virtiofsd()?;
    build::kernel()?;
    let kiln = build::kiln_release()?;
    let program = build::programs()?.join("iobench");
    // On the disk the target directory is on (the volume's and the disk's
    // host side, and the native runs alike).
    let dir = paths::bench().join("io");
    std::fs::create_dir_all(&dir)?;
    let manifest = dir.join("iobench.toml");
    std::fs::write(
        &manifest,
        format!(
            "name = \"iobench\"\nversion = \"0.0.0\"\n\n[program]\npath = {:?}\n\
             guest_path = \"/app/iobench\"\n\n[vm]\nmemory = 128\n",
            program.display().to_string()
        ),
    )?;
    let image = dir.join("iobench.kiln");
    build::kiln_build(&kiln, &manifest, &image)?;
    let mib = args.mib.to_string();
    let (shared, disk) = (dir.join("shared"), dir.join("disk.img"));
    eprintln!(
        "bench-io: {} runs of each side, {} MiB, in {} (native and kiln alternate)",
        args.runs,
        args.mib,
        dir.display()
    );
    let kiln_run = |extra: &[String], path: &str| {
        let mut c = Command::new(&kiln);
        c.arg("run")
            .args(["--timeout", "600"])
            .args(extra)
            .arg(&image)
            .args(["--", path, &mib]);
        c
    };
    let volume_flag = vec!["-v".to_string(), format!("{}:/data", shared.display())];
    let disk_flag = vec!["--disk".to_string(), disk.display().to_string()];
    let mut samples: [BTreeMap<String, Vec<f64>>; 4] = Default::default();
    for _ in 0..args.runs {
        fresh_dir(&shared)?;
        run_once(
            Command::new(&program).arg(shared.join("file")).arg(&mib),
            &mut samples[0],
        )?;
        fresh_dir(&shared)?;
        run_once(&mut kiln_run(&volume_flag, "/data/file"), &mut samples[1])?;
        fresh_disk(&disk, args.mib)?;
        run_once(Command::new(&program).arg(&disk).arg(&mib), &mut samples[2])?;
        fresh_disk(&disk, args.mib)?;
        run_once(&mut kiln_run(&disk_flag, "/dev/vda"), &mut samples[3])?;
    }
    let _ = std::fs::remove_dir_all(&shared);
    let _ = std::fs::remove_file(&disk);
    let [native_dir, volume, native_file, block] = samples.map(medians);
    println!(
        "{:<11} {:>6} {:>10} {:>10} {:>6} {:>10} {:>10} {:>6}  what",
        "measure", "unit", "native dir", "volume", "ratio", "native img", "disk", "ratio"
    );
    let mut rows = Vec::new();
    for (name, unit, what, higher_better) in MEASURES {
        let get = |m: &BTreeMap<String, f64>| m.get(*name).copied().unwrap_or(f64::NAN);
        let (nd, v, nf, b) = (
            get(&native_dir),
            get(&volume),
            get(&native_file),
            get(&block),
        );
        // Ratio: how kiln compares, >1 better than native (throughput:
        // kiln/native; latency: native/kiln).
        let ratio = |native: f64, kiln: f64| {
            if *higher_better {
                kiln / native
            } else {
                native / kiln
            }
        };
        println!(
            "{name:<11} {unit:>6} {nd:>10.1} {v:>10.1} {:>5.2}x {nf:>10.1} {b:>10.1} {:>5.2}x  {what}",
            ratio(nd, v),
            ratio(nf, b)
        );
        rows.push(json!({
            "measure": name, "unit": unit, "what": what,
            "native_dir": nd, "volume": v, "volume_ratio": ratio(nd, v),
            "native_file": nf, "disk": b, "disk_ratio": ratio(nf, b),
        }));
    }
    println!(
        "(median of {} runs; ratio = kiln as a fraction of native: throughput kiln/native, latency native/kiln)",
        args.runs
    );
    let doc: Value = json!({ "runs": args.runs, "mib": args.mib, "results": rows });
    let out = paths::bench().join("io.json");
    build::write_atomically(&out, serde_json::to_string_pretty(&doc)?.as_bytes())?;
    eprintln!("  wrote {}", out.display());
    Ok(())
}
