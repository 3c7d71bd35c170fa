//! `cargo xtask fuzz`: runs every cargo-fuzz target of `fuzz/` for a
//! while, from its committed corpus (`fuzz/corpus/TARGET`, read only; the
//! inputs libFuzzer finds go to `target/fuzz/corpus/TARGET`). Prints the
//! executions per target, writes `target/fuzz.json`, and fails on the
//! first crash, naming the input libFuzzer saved. Needs the nightly
//! toolchain; installs cargo-fuzz when it is missing, saying so.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::json;
use xtask::{build, paths};

/// The fuzz targets, with what each one feeds.
pub const TARGETS: &[(&str, &str)] = &[
    ("manifest", "image manifest (TOML)"),
    ("kiln_image", ".kiln header and sections"),
    ("tarfs", "rootfs tar index and lookups"),
    ("elf", "ELF analysis of a program"),
    ("oci", "OCI image manifest and references"),
    ("www_authenticate", "registry WWW-Authenticate challenge"),
    ("boot_config", "boot configuration (JSON)"),
    ("virtqueue", "virtqueue descriptor chains in guest memory"),
    ("syscall_site", "x86 instruction lengths and SYSCALL sites"),
];

/// Options of `fuzz`.
#[derive(clap::Args, Clone, Debug)]
pub struct FuzzArgs {
    /// Seconds to fuzz each target
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Only the targets whose name contains this text
    #[arg(long, value_name = "TEXT")]
    pub only: Option<String>,
}

/// Makes sure `cargo +nightly fuzz` works: installs cargo-fuzz if needed.
fn ensure_cargo_fuzz() -> Result<()> {
    let nightly = Command::new("cargo")
        .args(["+nightly", "--version"])
        .output()
        .context("running cargo +nightly")?;
    if !nightly.status.success() {
        bail!("cargo fuzz needs the nightly toolchain: `rustup toolchain install nightly`");
    }
    let present = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        eprintln!("xtask: installing cargo-fuzz (cargo install cargo-fuzz)");
        build::run(Command::new("cargo").args(["install", "cargo-fuzz", "--quiet"]))?;
    }
    Ok(())
}

/// The number after `key` (libFuzzer's "stat::number_of_executed_units: N").
fn stat(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(key))
        .and_then(|rest| rest.trim_start_matches(':').trim().parse().ok())
}

/// Runs the targets.
///
/// # Errors
/// When a target crashes (its input is named) or cannot be built.
pub fn run(args: &FuzzArgs) -> Result<()> {
    ensure_cargo_fuzz()?;
    let root = paths::root();
    let fuzz_dir = root.join("fuzz");
    let cargo_fuzz = |verb: &str| {
        let mut cmd = Command::new("cargo");
        cmd.current_dir(&root)
            .args(["+nightly", "fuzz", verb, "-O"])
            // The main workspace's RUSTFLAGS (static linking) would break
            // the sanitizer runtime.
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS");
        cmd
    };
    eprintln!("xtask: building the fuzz targets (nightly, AddressSanitizer)");
    build::run(&mut cargo_fuzz("build"))?;
    let chosen: Vec<_> = TARGETS
        .iter()
        .filter(|(t, _)| args.only.as_deref().is_none_or(|o| t.contains(o)))
        .collect();
    if chosen.is_empty() {
        bail!("no fuzz target matches {:?}", args.only);
    }
    let mut rows = Vec::new();
    for (target, what) in chosen {
        let found = paths::target().join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&found)?;
        let seeds = fuzz_dir.join("corpus").join(target);
        eprintln!("xtask: fuzzing {target} ({what}) for {} s", args.seconds);
        let out = cargo_fuzz("run")
            .arg(target)
            .arg(&found)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={}", args.seconds))
            .arg("-print_final_stats=1")
            .output()
            .with_context(|| format!("running fuzz target {target}"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let artifact = log
                .lines()
                .find_map(|l| l.split_once("Test unit written to ").map(|(_, p)| p.trim()))
                .unwrap_or("(see the output above)");
            eprintln!("{log}");
            bail!(
                "fuzz target {target} crashed; the input is {artifact} \
                 (reproduce: cargo +nightly fuzz run -O {target} {artifact})"
            );
        }
        let runs = stat(&log, "stat::number_of_executed_units").unwrap_or(0);
        let corpus = count_files(&seeds) + count_files(&found);
        rows.push((target.to_string(), what.to_string(), runs, corpus));
    }
    println!(
        "\nfuzz: {} s per target, no crash\n  {:<18} {:>12} {:>8}  what",
        args.seconds, "target", "executions", "corpus"
    );
    for (t, what, runs, corpus) in &rows {
        println!("  {t:<18} {runs:>12} {corpus:>8}  {what}");
    }
    let doc = json!({
        "seconds_per_target": args.seconds,
        "targets": rows.iter().map(|(t, what, runs, corpus)| json!({
            "target": t, "what": what, "executions": runs, "corpus_files": corpus,
        })).collect::<Vec<_>>(),
    });
    let path = paths::target().join("fuzz.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&doc)?)?;
    println!("  wrote {}", path.display());
    Ok(())
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_has_a_source_and_a_corpus() {
        let fuzz = paths::root().join("fuzz");
        let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).unwrap();
        for (t, _) in TARGETS {
            assert!(
                fuzz.join(format!("fuzz_targets/{t}.rs")).is_file(),
                "fuzz_targets/{t}.rs"
            );
            assert!(
                manifest.contains(&format!("name = \"{t}\"")),
                "{t} in Cargo.toml"
            );
            assert!(
                count_files(&fuzz.join("corpus").join(t)) > 0,
                "corpus of {t}"
            );
        }
    }

    #[test]
    fn reads_libfuzzer_final_stats() {
        let log = "stat::number_of_executed_units: 1234567\nstat::peak_rss_mb: 70\n";
        assert_eq!(stat(log, "stat::number_of_executed_units"), Some(1234567));
        assert_eq!(stat(log, "stat::missing"), None);
    }
}
