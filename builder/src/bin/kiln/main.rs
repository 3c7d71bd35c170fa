//! `kiln`: build unikernel-style boot images from manifests and boot them.
//! Each subcommand is one file under `commands/`: a clap `Args` struct and
//! a `run` that calls the `kiln_builder` library.

mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status for kiln's own failures (as `docker run` uses 125).
pub const EXIT_FAILURE: u8 = 125;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Build minimal boot images for one Linux program and boot them on KVM in milliseconds",
    long_about = "kiln packs one unmodified Linux x86-64 program (static or dynamic, with its \
                  shared libraries and files) into a deterministic, content-addressed boot image of \
                  at most 32 MiB, and boots it in a micro-VM on KVM.",
    after_help = "Examples:\n  \
                  kiln build manifests/hello.toml            # -> images/hello.kiln\n  \
                  kiln inspect images/hello.kiln             # sections, digests, program analysis\n  \
                  kiln run images/hello.kiln -- --name world # boot it; arguments after --\n  \
                  kiln export images/hello.kiln | tar -tv   # the root file system\n  \
                  kiln push images/hello.kiln localhost:5000/hello:1.0 --plain-http\n  \
                  kiln run localhost:5000/hello:1.0 --plain-http   # pulls it first if missing\n  \
                  kiln run -d --name web -p 8080:80 --restart on-failure images/httpd.kiln\n  \
                  kiln ps; kiln logs -f web; kiln stop web; kiln rm web   # through kilnd\n\n\
                  Exit status of `kiln run`: the program's own (128+N for signal N); 124 after \
                  --timeout; 125 when kiln or the image failed; 126/127 when the program cannot \
                  be executed or is missing."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Each subcommand's arguments are built only when it is the one used:
// building all of them took 0.3–0.4 ms of every `kiln run`.
#[derive(Subcommand)]
#[command(defer = true)]
enum Command {
    /// Build an image from a manifest
    Build(commands::build::Args),
    /// Show what an image holds: sections, digests, configuration, program analysis, files
    Inspect(commands::inspect::Args),
    /// Boot an image in a micro-VM and run its program
    Run(Box<commands::run::Args>),
    /// Save a running VM now (one started with --snapshot-at SIGUSR2)
    Snapshot(commands::snapshot::Args),
    /// Follow a primary VM (`kiln run --standby`) and take over when it dies
    Standby(commands::standby::Args),
    /// Keep VMs of a snapshot resumed and waiting, each for one `kiln run --from-snapshot`
    Warm(commands::warm::Args),
    /// Store a snapshot directory in the local store (push it, resume it by name)
    Commit(commands::commit::Args),
    /// List the snapshots in the local store
    Snapshots(commands::snapshots::Args),
    /// Write an image's root file system as a tar archive, or the image as an OCI layout
    Export(commands::export::Args),
    /// Copy an image from an OCI image layout or a .kiln file into the local store
    Import(commands::import::Args),
    /// List the images in the local store
    Images(commands::images::Args),
    /// Remove images from the local store
    Rmi(commands::rmi::Args),
    /// Push an image to an OCI registry
    Push(commands::push::Args),
    /// Pull an image from an OCI registry into the local store
    Pull(commands::pull::Args),
    /// List the appliances kilnd manages (`kiln run -d`)
    Ps(commands::ps::Args),
    /// Print an appliance's output
    Logs(commands::logs::Args),
    /// Stop appliances (SIGTERM, then SIGKILL after a grace time)
    Stop(commands::stop::Args),
    /// Start stopped appliances again
    Start(commands::start::Args),
    /// Send a signal to appliances
    Kill(commands::kill::Args),
    /// Remove appliances
    Rm(commands::rm::Args),
    /// Show what running appliances use (CPU, memory, uptime)
    Stats(commands::stats::Args),
    /// Print what happens to appliances, as it happens
    Events(commands::events::Args),
    /// Log in to an OCI registry (credentials checked, then kept)
    Login(commands::login::LoginArgs),
    /// Forget the credentials kept for an OCI registry
    Logout(commands::login::LogoutArgs),
}

fn main() -> ExitCode {
    let start = std::time::Instant::now();
    kiln_vmm::timings::note_main_start();
    if let Some(result) = plain_warm_claim(start) {
        return finish(result);
    }
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run(_) | Command::Standby(_)) {
        // `kiln inspect … | head` ends quietly, like other Unix tools; `kiln
        // run` keeps SIGPIPE ignored: its console treats a closed stdout
        // as the guest program would see a closed pipe.
        // SAFETY: setting a signal's disposition has no preconditions.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let result = match cli.command {
        Command::Build(args) => commands::build::run(args),
        Command::Inspect(args) => commands::inspect::run(args),
        Command::Run(args) => commands::run::run(*args, start),
        Command::Snapshot(args) => commands::snapshot::run(args),
        Command::Standby(args) => commands::standby::run(args, start),
        Command::Warm(args) => commands::warm::run(args),
        Command::Commit(args) => commands::commit::run(args),
        Command::Snapshots(args) => commands::snapshots::run(args),
        Command::Export(args) => commands::export::run(args),
        Command::Import(args) => commands::import::run(args),
        Command::Images(args) => commands::images::run(args),
        Command::Rmi(args) => commands::rmi::run(args),
        Command::Push(args) => commands::push::run(args),
        Command::Pull(args) => commands::pull::run(args),
        Command::Ps(args) => commands::ps::run(args),
        Command::Logs(args) => commands::logs::run(args),
        Command::Stop(args) => commands::stop::run(args),
        Command::Start(args) => commands::start::run(args),
        Command::Kill(args) => commands::kill::run(args),
        Command::Rm(args) => commands::rm::run(args),
        Command::Stats(args) => commands::stats::run(args),
        Command::Events(args) => commands::events::run(args),
        Command::Login(args) => commands::login::login(args),
        Command::Logout(args) => commands::login::logout(args),
    };
    finish(result)
}

/// The exit code of a command's result (its error printed).
fn finish(result: anyhow::Result<u8>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("kiln: error: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `kiln run --from-snapshot SNAPSHOT` or `kiln run IMAGE` and nothing
/// more — the commands a warm VM serves (`kiln warm SNAPSHOT`, `kiln warm
/// IMAGE`) — handed to a warm VM before the command line is parsed: clap
/// builds `run`'s ~60 options for a parse, 0.15–0.3 ms on a PVM host, a
/// tenth of a claimed run. With any other argument, or no warm VM
/// answering, the command is parsed and runs as usual.
fn plain_warm_claim(start: std::time::Instant) -> Option<anyhow::Result<u8>> {
    let mut args = std::env::args_os().skip(1);
    let (Some(run), Some(first)) = (args.next(), args.next()) else {
        return None;
    };
    if run != "run" {
        return None;
    }
    match (first.to_str()?, args.next(), args.next()) {
        ("--from-snapshot", Some(snapshot), None)
            if !snapshot.to_string_lossy().starts_with('-') =>
        {
            commands::run::claim_plain(std::path::Path::new(&snapshot), start)
        }
        (image, None, None) if !image.starts_with('-') => {
            commands::run::claim_plain_image(image, start)
        }
        _ => None,
    }
}
