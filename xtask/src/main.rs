//! `cargo xtask`: kiln's developer and CI entry points. Each verb is one
//! function calling the crates or cargo; see `cargo xtask --help`.

mod bench;
mod ci;

use std::ffi::OsString;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use xtask::{build, host, paths};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "kiln developer and CI tasks", version)]
struct Cli {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Build the guest kernel into target/kiln-kernel.elf
    Kernel,
    /// Build the test and example programs into target/programs/
    Programs,
    /// Build the kernel and kiln-vmm, then boot a program and show its boot
    /// timings: `cargo xtask boot --app PROGRAM [kiln-vmm options] [-- ARGS]`
    #[command(disable_help_flag = true)]
    Boot {
        /// kiln-vmm's arguments (see `kiln-vmm --help`)
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "KILN_VMM_ARGS"
        )]
        args: Vec<OsString>,
    },
    /// Build everything and boot the example hello program (the README's main job)
    Demo,
    /// Run every check and test: fmt, clippy, unit and end-to-end tests, workflow schema
    Ci,
    /// Boot hello N times and print boot-time statistics (table + target/bench/boot.json)
    BenchBoot(bench::BootArgs),
    /// Install the Debian packages the tests need (gcc, musl-tools, qemu-system-x86)
    Deps,
}

fn boot(args: &[OsString]) -> Result<u8> {
    build::kernel()?;
    let vmm = build::vmm_release()?;
    // Boot timings are the point of booting through xtask; kiln-vmm's own
    // options come first so that `--` still starts the program's arguments.
    let wants_timings = args.iter().any(|a| a == "--timings");
    let status = Command::new(&vmm)
        .arg("--kernel")
        .arg(paths::kernel())
        .args((!wants_timings).then_some("--timings"))
        .args(args)
        .status()
        .with_context(|| format!("cannot run {}", vmm.display()))?;
    Ok(status.code().map_or(125, |c| c as u8))
}

fn demo() -> Result<u8> {
    host::ensure_tools(&host::TOOLS[..2])?;
    eprintln!("xtask: building the guest kernel, kiln-vmm and the example programs");
    build::kernel()?;
    let vmm = build::vmm_release()?;
    build::programs()?;
    let hello = paths::program("hello-glibc");
    eprintln!("xtask: booting {} in a fresh micro-VM", hello.display());
    let status = Command::new(&vmm)
        .arg("--kernel")
        .arg(paths::kernel())
        .arg("--app")
        .arg(&hello)
        .args([
            "--path",
            "/hello",
            "--env",
            "GREETING=hello from the README",
            "--timings",
            "--",
            "world",
        ])
        .status()
        .with_context(|| format!("cannot run {}", vmm.display()))?;
    Ok(status.code().map_or(125, |c| c as u8))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.verb {
        Verb::Kernel => build::kernel().map(|p| {
            let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            eprintln!("xtask: built {} ({} KiB)", p.display(), size / 1024);
            0
        }),
        Verb::Programs => host::ensure_tools(&host::TOOLS[..3])
            .and_then(|()| build::programs())
            .map(|p| {
                eprintln!("xtask: built the programs in {}", p.display());
                0
            }),
        Verb::Boot { args } => boot(&args),
        Verb::Demo => demo(),
        Verb::Ci => ci::run_all().map(|()| 0),
        Verb::BenchBoot(args) => bench::boot(&args).map(|()| 0),
        Verb::Deps => host::ensure_tools(host::TOOLS).map(|()| 0),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
