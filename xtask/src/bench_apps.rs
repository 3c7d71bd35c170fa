//! `cargo xtask bench-apps`: real Debian programs in kiln against the same
//! programs run natively. Each program (an interpreter running a script, a
//! database CLI, a compressor, text tools) is packed into an image with its
//! libraries and data; the image's rootfs is unpacked and the program run
//! natively, chrooted into it and pinned to as many CPUs as the image has
//! vCPUs. The runs alternate (kiln, native, kiln, …) so that both see the
//! same machine; the ratio reported is the median of the per-pair ratios of
//! wall time, kiln's counted from spawning `kiln run` (VM boot included) to
//! its exit. Before timing, one run of each side must print the same
//! output. Prints a table, writes `target/bench/apps.json` and draws
//! `target/bench/apps.svg`. A benchmark, not a test: the goal (every
//! program within 1.5× of native) is reported, never asserted.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use xtask::{appliance, build, host, paths};

use crate::bench::{chrooted, median, run_timed, summary};
use crate::compat::toml_string;
use crate::python::{self, debian_program};

/// Options of `bench-apps`.
#[derive(clap::Args, Clone, Debug)]
pub struct AppsArgs {
    /// Paired runs (one in kiln, one native) per program
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Only the programs whose name contains this text
    #[arg(long, value_name = "TEXT")]
    pub only: Option<String>,
}

/// The goal of issue 13: kiln's wall time at most this many times native.
pub const GOAL_RATIO: f64 = 1.5;

/// One program of the benchmark.
struct App {
    /// Short name (table rows, file names).
    name: &'static str,
    /// What it does, for the table.
    what: &'static str,
    /// The Debian program on the host (also its guest path).
    program: PathBuf,
    /// Its arguments.
    args: Vec<String>,
    /// Extra files: (host path, guest path).
    files: Vec<(PathBuf, String)>,
    /// Shared objects it loads with dlopen (absolute host paths).
    libraries: Vec<String>,
}

fn apps_dir() -> PathBuf {
    paths::bench().join("apps")
}

fn inputs_dir() -> PathBuf {
    paths::root().join("xtask").join("bench-apps")
}

/// A deterministic text of about `bytes` bytes: lines of words drawn from a
/// made-up vocabulary of 4000 words by a fixed linear congruential
/// generator, so that every run and every machine sees the same input.
fn corpus(bytes: usize) -> String {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize
    };
    const LETTERS: &[u8] = b"etaoinshrdlucmfwypvbgkjqxz";
    let vocabulary: Vec<String> = (0..4000)
        .map(|_| {
            let len = 2 + next() % 9;
            // Skewed towards the common letters, as text is.
            (0..len)
                .map(|_| LETTERS[(next() % 26).min(next() % 26)] as char)
                .collect()
        })
        .collect();
    let mut out = String::with_capacity(bytes + 100);
    while out.len() < bytes {
        let words = 6 + next() % 10;
        for w in 0..words {
            if w > 0 {
                out.push(' ');
            }
            // Zipf-like: low indices are much more frequent.
            let i = (next() % 4000).min(next() % 4000).min(next() % 4000);
            out.push_str(&vocabulary[i]);
        }
        out.push('\n');
    }
    out
}

/// Writes the shared inputs (the text corpus and the SQLite database) into
/// `dir`; returns (corpus, database).
fn inputs(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let text = dir.join("corpus.txt");
    build::write_atomically(&text, corpus(4 << 20).as_bytes())?;
    let db = dir.join("bench.db");
    let _ = std::fs::remove_file(&db);
    let sql = "CREATE TABLE orders(id INTEGER PRIMARY KEY, customer INTEGER, amount INTEGER, note TEXT);\n\
               WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 60000)\n\
               INSERT INTO orders SELECT i, i * 7919 % 2000, i * 104729 % 10000, printf('order %d of the day', i) FROM n;\n\
               CREATE INDEX orders_customer ON orders(customer);\n";
    build::run(
        Command::new(debian_program("/usr/bin/sqlite3", "sqlite3")?)
            .arg(&db)
            .arg(sql),
    )
    .context("creating the SQLite database of bench-apps")?;
    Ok((text, db))
}

/// The programs of the benchmark, with their inputs written to `dir`.
fn apps(dir: &Path) -> Result<Vec<App>> {
    let (text, db) = inputs(dir)?;
    let data = |host: &Path, guest: &str| (host.to_path_buf(), guest.to_owned());
    let python = python::interpreter()?;
    let script = inputs_dir().join("bench.py");
    let modules = python::modules(&python, &script, &[])?;
    let mut python_files = vec![data(&script, "/app/bench.py")];
    python_files.extend(
        modules
            .files
            .iter()
            .map(|m| (m.clone(), m.display().to_string())),
    );
    let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    Ok(vec![
        App {
            name: "python",
            what: "Python 3: threads, json, re, hashlib",
            program: python,
            args: strings(&["-I", "/app/bench.py"]),
            files: python_files,
            libraries: modules.extensions,
        },
        App {
            name: "sqlite",
            what: "sqlite3: grouped query over 60000 rows",
            program: debian_program("/usr/bin/sqlite3", "sqlite3")?,
            args: strings(&[
                "-readonly",
                "/data/bench.db",
                "SELECT customer % 10, count(*), sum(amount) FROM orders \
                 WHERE customer BETWEEN 100 AND 900 GROUP BY 1 ORDER BY 3 DESC LIMIT 3; \
                 SELECT count(*) FROM orders WHERE note LIKE '%77 of%';",
            ]),
            files: vec![data(&db, "/data/bench.db")],
            libraries: Vec::new(),
        },
        App {
            name: "zstd",
            what: "zstd -6: compress 4 MiB of text",
            program: debian_program("/usr/bin/zstd", "zstd")?,
            args: strings(&[
                "-q",
                "-f",
                "-6",
                "/data/corpus.txt",
                "-o",
                "/tmp/corpus.zst",
            ]),
            files: vec![data(&text, "/data/corpus.txt")],
            libraries: Vec::new(),
        },
        App {
            name: "sort",
            what: "sort: 4 MiB of text to a file",
            program: debian_program("/usr/bin/sort", "coreutils")?,
            args: strings(&["-o", "/tmp/sorted.txt", "/data/corpus.txt"]),
            files: vec![data(&text, "/data/corpus.txt")],
            libraries: Vec::new(),
        },
        App {
            name: "gawk",
            what: "gawk: word frequencies of 4 MiB",
            program: debian_program("/usr/bin/gawk", "gawk")?,
            args: strings(&["-f", "/app/words.awk", "/data/corpus.txt"]),
            files: vec![
                data(&inputs_dir().join("words.awk"), "/app/words.awk"),
                data(&text, "/data/corpus.txt"),
            ],
            libraries: Vec::new(),
        },
        App {
            name: "grep",
            what: "grep -c: a regular expression over 4 MiB",
            program: debian_program("/usr/bin/grep", "grep")?,
            args: strings(&["-c", "-E", "\\b(th|qu)[a-z]*e\\b", "/data/corpus.txt"]),
            files: vec![data(&text, "/data/corpus.txt")],
            libraries: Vec::new(),
        },
    ])
}

/// Writes `app`'s manifest into `dir` and builds its image.
fn build_image(kiln: &Path, app: &App, dir: &Path) -> Result<PathBuf> {
    let mut m = String::new();
    writeln!(m, "name = {}", toml_string(&format!("bench-{}", app.name)))?;
    writeln!(m, "version = \"0.0.0\"\nmax_size = \"32MiB\"\n\n[program]")?;
    let program = app.program.display().to_string();
    writeln!(m, "path = {}", toml_string(&program))?;
    writeln!(m, "guest_path = {}", toml_string(&program))?;
    let args: Vec<String> = app.args.iter().map(|a| toml_string(a)).collect();
    writeln!(m, "args = [{}]", args.join(", "))?;
    let libs: Vec<String> = app.libraries.iter().map(|a| toml_string(a)).collect();
    writeln!(m, "libraries = [{}]", libs.join(", "))?;
    for (src, dst) in &app.files {
        writeln!(m, "\n[[files]]")?;
        writeln!(m, "src = {}", toml_string(&src.display().to_string()))?;
        writeln!(m, "dst = {}", toml_string(dst))?;
    }
    writeln!(m, "\n[[dirs]]\npath = \"/tmp\"\nmode = \"1777\"")?;
    writeln!(m, "\n[vm]\nmemory = 256")?;
    let manifest = dir.join(format!("{}.toml", app.name));
    std::fs::write(&manifest, m)?;
    let image = dir.join(format!("{}.kiln", app.name));
    build::kiln_build(kiln, &manifest, &image)?;
    Ok(image)
}

/// The native command: chrooted into `root`, pinned to CPU 0 (the image
/// has one vCPU).
fn native_command(root: &Path, config: &appliance::BootConfig) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = chrooted(root, config, &[]);
    // SAFETY: sched_setaffinity is async-signal-safe; the set lives on the
    // closure's stack.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Benchmarks one program: builds, checks the outputs match, then times
/// `runs` pairs.
fn bench_app(kiln: &Path, app: &App, runs: usize) -> Result<Value> {
    let dir = apps_dir();
    let image = build_image(kiln, app, &dir)?;
    let config = appliance::config(kiln, &image)?;
    let root = dir.join(format!("{}.root", app.name));
    appliance::unpack(kiln, &image, &root)?;
    std::fs::create_dir_all(root.join("tmp"))?;
    let json_path = dir.join(format!("{}.timings.json", app.name));
    let kiln_cmd = || {
        let mut cmd = Command::new(kiln);
        cmd.arg("run")
            .arg("--stats")
            .arg("--timings-json")
            .arg(&json_path)
            .arg(&image)
            .env("KILN_HOME", dir.join("kiln-home"))
            .stderr(Stdio::piped());
        cmd
    };
    let (_, kiln_out) = run_timed(&mut kiln_cmd(), &format!("kiln run {}", image.display()))?;
    let (_, native_out) = run_timed(&mut native_command(&root, &config), "the native run")?;
    if kiln_out != native_out {
        bail!(
            "{}: kiln printed {:?}, the native run {:?}",
            app.name,
            String::from_utf8_lossy(&kiln_out),
            String::from_utf8_lossy(&native_out)
        );
    }
    let (mut kiln_ms, mut native_ms, mut ratios, mut exits, mut entry_ms) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut flavour = Value::Null;
    for _ in 0..runs {
        let (k, _) = run_timed(&mut kiln_cmd(), "kiln run")?;
        let (n, _) = run_timed(&mut native_command(&root, &config), "the native run")?;
        let doc: Value = serde_json::from_slice(&std::fs::read(&json_path)?)
            .context("reading kiln's timings JSON")?;
        exits.extend(doc["kvm_stats"]["exits"].as_f64());
        entry_ms.extend(doc["phases_ms"]["program_entry"].as_f64());
        flavour = doc["kvm_flavour"].clone();
        kiln_ms.push(k);
        native_ms.push(n);
        ratios.push(k / n);
    }
    let _ = std::fs::remove_file(&json_path);
    let _ = std::fs::remove_dir_all(&root);
    Ok(json!({
        "name": app.name,
        "what": app.what,
        "program": app.program,
        "image_bytes": std::fs::metadata(&image)?.len(),
        "kvm_flavour": flavour,
        "output": String::from_utf8_lossy(&kiln_out).trim_end(),
        "kiln_ms": summary(kiln_ms),
        "native_ms": summary(native_ms),
        "ratio": summary(ratios),
        "exits": summary(exits),
        "kiln_program_entry_ms": summary(entry_ms),
    }))
}

fn print_table(doc: &Value) {
    println!(
        "\nbench-apps: {} paired runs per program, {} KVM; wall ms (kiln includes the VM's boot), \
         native chrooted into the image's rootfs on 1 CPU",
        doc["runs"],
        doc["kvm_flavour"].as_str().unwrap_or("?")
    );
    println!(
        "  {:<8} {:>9} {:>9} {:>7} {:>9} {:>8}  what",
        "program", "kiln", "native", "ratio", "exits", "image"
    );
    for a in doc["apps"].as_array().into_iter().flatten() {
        let ratio = median(&a["ratio"]);
        println!(
            "  {:<8} {:>9.1} {:>9.1} {:>6.2}x {:>9.0} {:>6.1}Mi  {}{}",
            a["name"].as_str().unwrap_or("?"),
            median(&a["kiln_ms"]),
            median(&a["native_ms"]),
            ratio,
            median(&a["exits"]),
            a["image_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
            a["what"].as_str().unwrap_or(""),
            if ratio > GOAL_RATIO {
                format!("  (goal {GOAL_RATIO}x)")
            } else {
                String::new()
            }
        );
    }
}

/// `cargo xtask bench-apps`.
pub fn run(args: &AppsArgs) -> Result<()> {
    if !host::kvm_available() {
        bail!("bench-apps needs /dev/kvm");
    }
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    host::ensure_named(&["python3", "sqlite3", "zstd", "gawk"])?;
    build::kernel()?;
    let kiln = build::kiln_release()?;
    let dir = apps_dir();
    std::fs::create_dir_all(&dir)?;
    let mut results = Vec::new();
    for app in apps(&dir.join("inputs"))? {
        if args.only.as_deref().is_some_and(|t| !app.name.contains(t)) {
            continue;
        }
        eprintln!(
            "bench-apps: {} ({} paired runs: kiln, native)",
            app.name, args.runs
        );
        results.push(bench_app(&kiln, &app, args.runs)?);
    }
    if results.is_empty() {
        bail!("no program's name contains {:?}", args.only);
    }
    let flavour = results[0]["kvm_flavour"].clone();
    let doc = json!({
        "runs": args.runs,
        "kvm_flavour": flavour,
        "goal_ratio": GOAL_RATIO,
        "apps": results,
    });
    print_table(&doc);
    crate::bench::write_results(&doc, "apps", crate::chart::ratios)
}
