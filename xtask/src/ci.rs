//! `cargo xtask ci`: everything CI checks, in order, stopping at the first
//! failure. `.ci/run` calls this and nothing else.

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use xtask::{build, host, paths};

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(paths::root());
    cmd
}

fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    eprintln!("\n==> {name}");
    let t = Instant::now();
    f().with_context(|| format!("ci step `{name}`"))?;
    eprintln!("==> {name}: ok ({:.1} s)", t.elapsed().as_secs_f64());
    Ok(())
}

/// Validates the GitHub workflow against GitHub's published schema with
/// check-jsonschema (PyPI; installed with pip when missing).
fn check_workflow() -> Result<()> {
    if !host::has("check-jsonschema") {
        eprintln!("xtask: installing check-jsonschema from PyPI (validates .github/workflows against GitHub's schema)");
        build::run(Command::new("python3").args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "check-jsonschema",
        ]))?;
    }
    let workflows = paths::root().join(".github").join("workflows");
    let mut files: Vec<_> = std::fs::read_dir(&workflows)
        .with_context(|| format!("reading {}", workflows.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no workflow in {}", workflows.display());
    }
    build::run(
        Command::new("check-jsonschema")
            .args(["--builtin-schema", "vendor.github-workflows"])
            .args(&files),
    )
}

/// Runs every check.
pub fn run_all() -> Result<()> {
    let start = Instant::now();
    if !host::kvm_available() {
        eprintln!(
            "xtask: WARNING: /dev/kvm is not usable here: the KVM boot tests will {}",
            if host::in_ci() {
                "FAIL (CI=true)"
            } else {
                "report themselves as not run"
            }
        );
    }
    step("install missing host tools", || {
        host::ensure_tools(host::TOOLS)?;
        host::ensure_virtiofsd()
    })?;
    step("cargo fmt --check", || {
        build::run(cargo().args(["fmt", "--all", "--check"]))
    })?;
    step("cargo clippy (workspace)", || {
        build::run(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    step("cargo clippy (guest kernel)", || {
        build::run(build::kernel_cargo("clippy").args(["--", "-D", "warnings"]))
    })?;
    step("build the guest kernel", || build::kernel().map(|_| ()))?;
    step("build the test programs", || build::programs().map(|_| ()))?;
    step("cargo test", || {
        // The network tests run one at a time: each boots a VM and moves
        // tens of MiB through passt, and several at once on a two-core
        // machine only measure the scheduler.
        build::run(cargo().args(["test", "--workspace", "--exclude", "kiln-vmm"]))?;
        build::run(cargo().args([
            "test", "-p", "kiln-vmm", "--lib", "--test", "boot", "--test", "devices", "--test",
            "vsock", "--test", "volumes",
        ]))?;
        build::run(cargo().args(["test", "-p", "kiln-vmm", "--doc"]))?;
        build::run(cargo().args([
            "test",
            "-p",
            "kiln-vmm",
            "--test",
            "net",
            "--",
            "--test-threads=1",
        ]))
    })?;
    step("cargo doc", || {
        build::run(
            cargo()
                .args(["doc", "--workspace", "--no-deps", "--quiet"])
                .env("RUSTDOCFLAGS", "-D warnings"),
        )
    })?;
    step("GitHub workflow schema", check_workflow)?;
    step("compatibility suite (cargo xtask compat)", || {
        crate::compat::run(&crate::compat::CompatArgs::default())
    })?;
    step("bench-boot smoke run", || {
        crate::bench::boot(&crate::bench::BootArgs {
            runs: 5,
            ..Default::default()
        })
    })?;
    step("bench-density smoke run", || {
        crate::density::run(&crate::density::DensityArgs {
            count: 20,
            idle_seconds: 0.5,
            via: crate::density::Via::Kilnd,
            ..Default::default()
        })
    })?;
    step("bench-io smoke run", || {
        crate::bench_io::run(&crate::bench_io::IoArgs { runs: 1, mib: 8 })
    })?;
    step("bench-snapshot smoke run", || {
        crate::bench_snapshot::run(&crate::bench_snapshot::SnapshotArgs {
            runs: 1,
            touched: vec![0, 8],
            clones: 4,
            intervals: vec![50],
            seconds: 1,
            failovers: 1,
        })
    })?;
    step("hostile-guest suite (cargo xtask hostile)", || {
        crate::hostile::run(&crate::hostile::HostileArgs::default())
    })?;
    step("fuzz smoke run (cargo xtask fuzz --seconds 5)", || {
        crate::fuzz::run(&crate::fuzz::FuzzArgs {
            seconds: 5,
            only: None,
        })
    })?;
    step("bench-syscall smoke run", || {
        crate::bench_syscall::run(&crate::bench_syscall::SyscallArgs { runs: 1, scale: 1 })
    })?;
    eprintln!(
        "\nxtask: ci passed in {:.0} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
