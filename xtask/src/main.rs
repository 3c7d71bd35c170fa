//! `cargo xtask`: kiln's developer and CI entry points. Each verb is one
//! function calling the crates or cargo; see `cargo xtask --help`.

mod bench;
mod bench_apps;
mod bench_io;
mod bench_net;
mod bench_snapshot;
mod bench_syscall;
mod chart;
mod ci;
mod compat;
mod density;
mod density_kilnd;
mod fuzz;
mod hostile;
mod python;

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
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
    /// Build the kernel and kiln, then boot an image or a bare program and
    /// show its boot timings: `cargo xtask boot IMAGE.kiln [kiln run options]
    /// [-- ARGS]` or `cargo xtask boot --app PROGRAM [kiln-vmm options] [-- ARGS]`
    #[command(disable_help_flag = true)]
    Boot {
        /// `kiln run`'s arguments, or kiln-vmm's (see their --help)
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<OsString>,
    },
    /// Boot a UEFI disk from `kiln export --disk` (or a .kiln image, exported
    /// first) under QEMU with OVMF firmware: the program's output on stdout,
    /// its exit status as xtask's; `cargo xtask boot-uefi hello.img`
    BootUefi(BootUefiArgs),
    /// Build an image from a manifest (a thin wrapper over `kiln build`):
    /// `cargo xtask build-image manifests/hello.toml` writes images/hello.kiln
    BuildImage {
        /// The manifest
        manifest: PathBuf,
        /// `kiln build` options (for example -o OUT)
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "OPTIONS"
        )]
        rest: Vec<OsString>,
    },
    /// Build an image from a manifest and push it to an OCI registry:
    /// `cargo xtask publish manifests/hello.toml localhost:5000/hello:1.0 --plain-http`
    Publish {
        /// The manifest
        manifest: PathBuf,
        /// Where to push: HOST[:PORT]/REPOSITORY[:TAG]
        reference: String,
        /// `kiln push` options (--plain-http, --ca-cert FILE, --chunk-size N)
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "OPTIONS"
        )]
        rest: Vec<OsString>,
    },
    /// Build the example image and boot it (the README's main job)
    Demo,
    /// Run every check and test: fmt, clippy, unit and end-to-end tests, workflow schema
    Ci,
    /// Boot every example image N times beside native and container starts of the
    /// same program (tables, target/bench/boot.json, target/bench/boot.svg)
    BenchBoot(bench::BootArgs),
    /// Start K idle appliances at once: launches per second, launch latency,
    /// host memory and CPU per VM (table + target/bench/density.json)
    BenchDensity(density::DensityArgs),
    /// Run real Debian programs (Python, sqlite3, zstd, sort, gawk, grep) in
    /// kiln and natively, paired runs (table, target/bench/apps.json,
    /// target/bench/apps.svg)
    BenchApps(bench_apps::AppsArgs),
    /// Fuzz every parser of untrusted input (fuzz/, cargo-fuzz on the
    /// nightly toolchain) for --seconds each, from the committed corpora;
    /// fails on a crash, naming the input
    Fuzz(fuzz::FuzzArgs),
    /// The hostile-guest suite: guests that attack ports, MMIO, devices,
    /// the IDT, page tables, memory and interrupts must each end cleanly,
    /// in bounded time and memory, leaving nothing behind
    Hostile(hostile::HostileArgs),
    /// Measure system-call paths in kiln against native (table + target/bench/syscall.json)
    BenchSyscall(bench_syscall::SyscallArgs),
    /// Measure the network: nginx under wrk natively, through --net user and
    /// --net tap; TCP throughput; time to the first connection (table +
    /// target/bench/net.json)
    BenchNet(bench_net::NetArgs),
    /// Measure storage: sequential and random I/O and fsync latency on a
    /// volume (-v) and a disk (--disk) against the same operations natively
    /// (table + target/bench/io.json)
    BenchIo(bench_io::IoArgs),
    /// Measure snapshots: a Python start-up cold against resumed, restore-to-running
    /// latency, snapshot size and pause vs memory touched, clones per second and
    /// host memory per clone (table + target/bench/snapshot.json + .svg)
    BenchSnapshot(bench_snapshot::SnapshotArgs),
    /// Run the differential compatibility suite (native vs kiln) and write docs/compat.md
    Compat(compat::CompatArgs),
    /// Install the Debian packages the tests need (gcc, musl-tools, qemu-system-x86, …)
    Deps,
}

/// `cargo xtask boot-uefi`.
#[derive(clap::Args)]
struct BootUefiArgs {
    /// A disk (.img raw, .qcow2, .vmdk) or a .kiln image
    disk: PathBuf,
    /// Read the disk as this format [default: from its extension]
    #[arg(long, value_parser = ["raw", "qcow2", "vmdk"])]
    format: Option<String>,
    /// Use KVM instead of TCG (needs a KVM that runs ordinary guests; not PVM)
    #[arg(long)]
    kvm: bool,
    /// Guest RAM in MiB
    #[arg(long, default_value_t = 256)]
    memory: u32,
    /// CPUs (an image with `vcpus = N` starts N)
    #[arg(long, default_value_t = 1)]
    cpus: u8,
    /// Kill QEMU after this many seconds [default: 300; none with -i]
    #[arg(long)]
    timeout: Option<u64>,
    /// Also show the firmware's and GRUB's console output (on stderr)
    #[arg(short, long)]
    verbose: bool,
    /// Type standard input on the serial console once GRUB hands over (its
    /// end becomes a Ctrl-D) and show the program's output as it comes; a
    /// .kiln image is exported with `kiln export --disk -i`
    #[arg(short, long)]
    interactive: bool,
}

fn boot_uefi(args: &BootUefiArgs) -> Result<u8> {
    host::ensure_named(&["qemu-system-x86_64"])?;
    let mut scratch = None;
    let (disk, format) = if args.disk.extension().is_some_and(|e| e == "kiln") {
        host::ensure_named(&["grub-mkimage", host::GRUB_EFI_MODULE])?;
        let out = std::env::temp_dir().join(format!("kiln-boot-uefi-{}.img", std::process::id()));
        xtask::uefi::export_disk(&build::kiln_release()?, &args.disk, &out, args.interactive)?;
        scratch = Some(out.clone());
        (out, "raw".to_string())
    } else {
        let format = args
            .format
            .clone()
            .unwrap_or_else(|| xtask::uefi::format_of(&args.disk).to_string());
        (args.disk.clone(), format)
    };
    // Someone typing may take their time.
    let timeout = match (args.timeout, args.interactive) {
        (Some(s), _) => s,
        (None, false) => 300,
        (None, true) => u64::MAX,
    };
    let input = if args.interactive {
        xtask::uefi::Input::Forwarded(Box::new(std::io::stdin()))
    } else {
        xtask::uefi::Input::None
    };
    let run = xtask::uefi::run_with(
        &disk,
        &format,
        xtask::uefi::Machine {
            memory_mib: args.memory,
            cpus: args.cpus,
            kvm: args.kvm,
            debug_exit: true,
        },
        std::time::Duration::from_secs(timeout),
        input,
        args.interactive,
    );
    if let Some(s) = scratch {
        let _ = std::fs::remove_file(s);
    }
    let run = run.context("cannot start qemu-system-x86_64")?;
    let (firmware, program) = xtask::uefi::split_console(&run.console);
    if args.verbose || program.is_none() {
        std::io::stderr().write_all(firmware)?;
    }
    if !args.interactive {
        std::io::stdout().write_all(program.unwrap_or_default())?;
    }
    std::io::stdout().flush()?;
    if args.interactive && program.is_some() && !xtask::uefi::input_opened(&run.console) {
        eprintln!(
            "xtask: warning: this disk's program does not read the serial console \
             (export it with `kiln export --disk -i`); nothing was typed"
        );
    }
    let accel = if args.kvm { "KVM" } else { "TCG" };
    match (run.handover, run.status) {
        (Some(h), Some(status)) => {
            eprintln!(
                "xtask: boot-uefi ({accel}): firmware and GRUB {:.0} ms, kernel and program {:.0} ms, status {status}",
                h.as_secs_f64() * 1e3,
                (run.total - h).as_secs_f64() * 1e3
            );
            Ok(status)
        }
        _ if run.timed_out => bail!("the disk did not finish within {timeout} s"),
        (None, _) => bail!("GRUB never started the kernel (run with -v to see the console)"),
        (Some(_), None) => bail!("QEMU ended without an exit status from the kernel"),
    }
}

fn status_of(cmd: &mut Command) -> Result<u8> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    Ok(status.code().map_or(125, |c| c as u8))
}

fn boot(args: &[OsString]) -> Result<u8> {
    build::kernel()?;
    // Boot timings are the point of booting through xtask; the tool's own
    // options come first so that `--` still starts the program's arguments.
    let timings = (!args.iter().any(|a| a == "--timings")).then_some("--timings");
    match args.first() {
        Some(image) if !image.to_string_lossy().starts_with('-') => {
            let kiln = build::kiln_release()?;
            status_of(
                Command::new(kiln)
                    .arg("run")
                    .arg(image)
                    .args(timings)
                    .args(&args[1..]),
            )
        }
        _ => {
            let vmm = build::vmm_release()?;
            status_of(
                Command::new(vmm)
                    .arg("--kernel")
                    .arg(paths::kernel())
                    .args(timings)
                    .args(args),
            )
        }
    }
}

fn build_image(manifest: &Path, rest: &[OsString]) -> Result<u8> {
    host::ensure_tools(&host::TOOLS[..3])?;
    build::kernel()?;
    build::programs()?;
    let kiln = build::kiln_release()?;
    status_of(
        Command::new(kiln)
            .arg("build")
            .arg(manifest)
            .arg("--kernel")
            .arg(paths::kernel())
            .args(rest),
    )
}

fn publish(manifest: &Path, reference: &str, rest: &[OsString]) -> Result<u8> {
    let stem = manifest
        .file_stem()
        .context("the manifest path has no file name")?;
    let image = paths::images().join(stem).with_extension("kiln");
    let code = build_image(manifest, &["-o".into(), image.clone().into()])?;
    if code != 0 {
        return Ok(code);
    }
    eprintln!("xtask: pushing {} to {reference}", image.display());
    status_of(
        Command::new(paths::kiln_release())
            .arg("push")
            .arg(&image)
            .arg(reference)
            .args(rest),
    )
}

fn demo() -> Result<u8> {
    eprintln!("xtask: building the guest kernel, kiln and the example image manifests/hello.toml");
    let manifest = paths::root().join("manifests").join("hello.toml");
    let image = paths::images().join("hello.kiln");
    let code = build_image(&manifest, &["-o".into(), image.clone().into()])?;
    if code != 0 {
        return Ok(code);
    }
    eprintln!("xtask: booting {} in a fresh micro-VM", image.display());
    status_of(
        Command::new(paths::kiln_release())
            .arg("run")
            .arg(&image)
            .args(["--timings", "--", "world"]),
    )
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
        Verb::BootUefi(args) => boot_uefi(&args),
        Verb::BuildImage { manifest, rest } => build_image(&manifest, &rest),
        Verb::Publish {
            manifest,
            reference,
            rest,
        } => publish(&manifest, &reference, &rest),
        Verb::Demo => demo(),
        Verb::Ci => ci::run_all().map(|()| 0),
        Verb::BenchBoot(args) => bench::boot(&args).map(|()| 0),
        Verb::BenchDensity(args) => density::run(&args).map(|()| 0),
        Verb::Compat(args) => compat::run(&args).map(|()| 0),
        Verb::BenchApps(args) => bench_apps::run(&args).map(|()| 0),
        Verb::Fuzz(args) => fuzz::run(&args).map(|()| 0),
        Verb::Hostile(args) => hostile::run(&args).map(|()| 0),
        Verb::BenchSyscall(args) => bench_syscall::run(&args).map(|()| 0),
        Verb::BenchNet(args) => bench_net::run(&args).map(|()| 0),
        Verb::BenchIo(args) => bench_io::run(&args).map(|()| 0),
        Verb::BenchSnapshot(args) => bench_snapshot::run(&args).map(|()| 0),
        Verb::Deps => host::ensure_tools(host::TOOLS)
            .and_then(|()| host::ensure_virtiofsd())
            .map(|()| 0),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
