//! `cargo xtask bench-syscall`: the cost of system-call paths inside kiln
//! against the same static binary run natively, in the same run: a null
//! system call (getppid), a 4 KiB read from the root file system, an
//! anonymous page fault, a futex ping-pong between two threads, a thread
//! create + join, and clock_gettime. kiln runs three ways: as it boots by
//! default (SYSCALL sites rewritten into calls, a vDSO for the time
//! calls), with rewriting but no vDSO (`kiln.vdso=0`), and with neither
//! (`kiln.syscall_rewrite=0 kiln.vdso=0`: every SYSCALL traps to the
//! host). A second table measures SMP: the wall time of 4 CPU-bound
//! threads with `--cpus 1` and `--cpus 2`, next to the same program
//! natively on one CPU (taskset) and on two. Prints the tables and writes
//! `target/bench/syscall.json`. A benchmark, not a test: it never fails on
//! the numbers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use xtask::{build, host, paths};

/// Options of `bench-syscall`.
#[derive(clap::Args, Clone, Debug)]
pub struct SyscallArgs {
    /// Runs of each side (the median is reported)
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Multiplies every benchmark's iteration count
    #[arg(long, default_value_t = 1)]
    pub scale: u32,
}

impl Default for SyscallArgs {
    fn default() -> Self {
        Self { runs: 3, scale: 1 }
    }
}

/// The benchmarks, in sysbench's output order, with a description.
const BENCHES: &[(&str, &str)] = &[
    ("null_syscall", "getppid()"),
    ("read_4k", "pread 4 KiB of a rootfs file"),
    (
        "page_fault",
        "first write to an anonymous page (MADV_NOHUGEPAGE)",
    ),
    (
        "page_fault_huge",
        "first write to an anonymous page (MADV_HUGEPAGE, 2 MiB-aligned)",
    ),
    ("futex_pingpong", "futex round trip between two threads"),
    ("thread_create_join", "pthread_create + pthread_join"),
    ("clock_gettime", "clock_gettime(CLOCK_MONOTONIC)"),
    ("fork_exit_wait", "fork + child _exit + waitpid"),
    (
        "vfork_exec_wait",
        "vfork + exec of a static program + waitpid",
    ),
    (
        "process_pipe_pingpong",
        "pipe round trip between two processes",
    ),
    (
        "process_switch",
        "switch between two processes on one CPU (sched_yield)",
    ),
];

/// Parses sysbench's "name ns" lines.
fn parse(stdout: &[u8]) -> BTreeMap<String, f64> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| {
            let (name, ns) = l.split_once(' ')?;
            Some((name.to_owned(), ns.trim().parse().ok()?))
        })
        .collect()
}

fn run_many(runs: usize, mut make: impl FnMut() -> Command) -> Result<BTreeMap<String, f64>> {
    let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for _ in 0..runs {
        let mut cmd = make();
        let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
        if !out.status.success() {
            bail!(
                "{cmd:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for (k, v) in parse(&out.stdout) {
            samples.entry(k).or_default().push(v);
        }
    }
    Ok(samples
        .into_iter()
        .map(|(k, mut v)| {
            v.sort_by(f64::total_cmp);
            (k, v[v.len() / 2])
        })
        .collect())
}

/// The kiln configurations measured: (name, kernel options).
const CONFIGS: [(&str, &str); 3] = [
    ("kiln", ""),
    ("no-vdso", "kiln.vdso=0"),
    ("trap", "kiln.syscall_rewrite=0 kiln.vdso=0"),
];

/// Writes a manifest for sysbench with a 64 KiB data file and builds one
/// image per configuration.
fn images(kiln: &Path, program: &Path, blob: &Path) -> Result<Vec<PathBuf>> {
    let dir = paths::bench().join("syscall");
    let mut built = Vec::new();
    for (name, cmdline) in CONFIGS {
        let manifest = dir.join(format!("{name}.toml"));
        std::fs::write(
            &manifest,
            format!(
                "name = \"sysbench-{name}\"\nversion = \"0.0.0\"\n\n[program]\npath = {:?}\n\
                 guest_path = \"/app/sysbench\"\n\n[[files]]\nsrc = {:?}\ndst = \"/data/blob\"\n\n\
                 [vm]\nmemory = 256\ncmdline = {cmdline:?}\n",
                program.display().to_string(),
                blob.display().to_string(),
            ),
        )?;
        let image = dir.join(format!("{name}.kiln"));
        build::kiln_build(kiln, &manifest, &image)?;
        built.push(image);
    }
    Ok(built)
}

/// Threads of the SMP benchmark.
const SPIN_THREADS: &str = "4";

/// The median wall time, in seconds, of `runs` runs of a command printing
/// "N threads: S s".
fn spin_seconds(runs: usize, mut make: impl FnMut() -> Command) -> Result<f64> {
    let mut samples = Vec::new();
    for _ in 0..runs {
        let mut cmd = make();
        let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let seconds = text
            .split(": ")
            .nth(1)
            .and_then(|s| s.trim().trim_end_matches(" s").parse::<f64>().ok());
        match seconds {
            Some(s) if out.status.success() => samples.push(s),
            _ => bail!(
                "{cmd:?} failed ({}): {text}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

/// 4 CPU-bound threads with 1 and 2 vCPUs, and natively on 1 and 2 CPUs;
/// prints the table and returns its JSON.
fn smp_speedup(kiln: &Path, program: &Path, runs: usize) -> Result<Value> {
    let dir = paths::bench().join("syscall");
    let manifest = dir.join("smp.toml");
    std::fs::write(
        &manifest,
        format!(
            "name = \"smp-bench\"\nversion = \"0.0.0\"\n\n[program]\npath = {:?}\n\
             guest_path = \"/app/smp\"\n\n[vm]\nmemory = 128\n",
            program.display().to_string()
        ),
    )?;
    let image = dir.join("smp.kiln");
    build::kiln_build(kiln, &manifest, &image)?;
    let in_kiln = |cpus: &str| {
        spin_seconds(runs, || {
            let mut c = Command::new(kiln);
            c.arg("run")
                .args(["--cpus", cpus, "--timeout", "300"])
                .arg(&image)
                .args(["--", "spin", SPIN_THREADS]);
            c
        })
    };
    let natively = |cpus: &str| {
        spin_seconds(runs, || {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus])
                .arg(program)
                .args(["spin", SPIN_THREADS]);
            c
        })
    };
    let kiln1 = in_kiln("1")?;
    let kiln2 = in_kiln("2")?;
    let native1 = natively("0")?;
    let native2 = natively("0,1")?;
    println!();
    println!(
        "{:<27} {:>9} {:>9} {:>9}",
        "4 CPU-bound threads", "1 CPU", "2 CPUs", "speed-up"
    );
    println!(
        "{:<27} {:>8.3}s {:>8.3}s {:>8.2}x",
        "kiln (--cpus 1, --cpus 2)",
        kiln1,
        kiln2,
        kiln1 / kiln2
    );
    println!(
        "{:<27} {:>8.3}s {:>8.3}s {:>8.2}x",
        "native (taskset)",
        native1,
        native2,
        native1 / native2
    );
    println!("(wall time, median of the runs)");
    Ok(json!({
        "threads": SPIN_THREADS.parse::<u32>().unwrap_or(4),
        "kiln_1cpu_s": kiln1,
        "kiln_2cpu_s": kiln2,
        "kiln_speedup": kiln1 / kiln2,
        "native_1cpu_s": native1,
        "native_2cpu_s": native2,
        "native_speedup": native1 / native2,
    }))
}

/// Runs the benchmark.
pub fn run(args: &SyscallArgs) -> Result<()> {
    if !host::kvm_available() {
        bail!("bench-syscall needs /dev/kvm");
    }
    build::kernel()?;
    let kiln = build::kiln_release()?;
    let programs = build::programs()?;
    let program = programs.join("sysbench");
    let dir = paths::bench().join("syscall");
    std::fs::create_dir_all(&dir)?;
    let blob = dir.join("blob");
    let bytes: Vec<u8> = (0..65536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&blob, bytes)?;
    let images = images(&kiln, &program, &blob)?;
    let scale = args.scale.to_string();
    eprintln!(
        "bench-syscall: {} runs of each side (native; kiln: rewritten sites + vDSO, rewritten \
         sites only, every SYSCALL trapping)",
        args.runs
    );
    let native = run_many(args.runs, || {
        let mut c = Command::new(&program);
        c.arg(&blob).arg(&scale);
        c
    })?;
    let kiln_side = |image: &Path| {
        run_many(args.runs, || {
            let mut c = Command::new(&kiln);
            c.arg("run")
                .arg(image)
                .args(["--timeout", "300", "--"])
                .arg("/data/blob")
                .arg(&scale);
            c
        })
    };
    let measured: Vec<BTreeMap<String, f64>> =
        images.iter().map(|i| kiln_side(i)).collect::<Result<_>>()?;
    println!(
        "{:<19} {:>9} {:>16} {:>16} {:>16}  what",
        "benchmark", "native", "kiln", "kiln no-vdso", "kiln trap"
    );
    let mut rows = Vec::new();
    for (name, what) in BENCHES {
        let n = native.get(*name).copied().unwrap_or(f64::NAN);
        let mut line = format!("{name:<19} {n:>9.1}");
        let mut row = json!({ "benchmark": name, "what": what, "native_ns": n });
        for ((config, _), m) in CONFIGS.iter().zip(&measured) {
            let k = m.get(*name).copied().unwrap_or(f64::NAN);
            line.push_str(&format!(" {k:>9.1} {:>5.2}x", k / n));
            row[format!("{config}_ns")] = json!(k);
            row[format!("{config}_ratio")] = json!(k / n);
        }
        println!("{line}  {what}");
        rows.push(row);
    }
    println!("(ns per operation, median of the runs; ratio = kiln / native)");
    let smp = smp_speedup(&kiln, &programs.join("smp"), args.runs)?;
    let doc: Value = json!({
        "runs": args.runs,
        "scale": args.scale,
        "configs": CONFIGS.iter().map(|(n, c)| json!({ "name": n, "cmdline": c })).collect::<Vec<_>>(),
        "results": rows,
        "smp": smp,
    });
    let out = paths::bench().join("syscall.json");
    build::write_atomically(&out, serde_json::to_string_pretty(&doc)?.as_bytes())?;
    eprintln!("  wrote {}", out.display());
    Ok(())
}
