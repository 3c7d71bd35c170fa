//! `kiln standby --listen [HOST:]PORT`: the other half of `kiln run
//! --standby`.

use std::time::{Duration, Instant};

use anyhow::Result;
use kiln_builder::run::{self, RunOptions};
use kiln_vmm::cli::RunFlags;
use kiln_vmm::ha::StandbyOutcome;

use super::run::SnapshotMemoryArg;

/// Follow a primary VM and take over when it dies.
#[derive(clap::Args)]
#[command(
    after_help = "The standby accepts one primary (`kiln run --standby HOST:PORT IMAGE`), keeps \
                  its last whole checkpoint in memory and acknowledges each one. When the \
                  primary's VM ends by itself the standby exits with its status; when the \
                  primary dies (its connection breaks, or it stays silent for --silence) the \
                  standby resumes the VM from the last checkpoint, with its own -p ports and \
                  its --disk copies of the primary's disks, and runs it to its end."
)]
pub struct Args {
    /// Where to wait for the primary: `PORT` (every address) or `HOST:PORT`; port 0 picks a free one (printed on stderr)
    #[arg(long, value_name = "[HOST:]PORT")]
    listen: String,

    /// Publish a guest port on the host when the VM resumes here, as `docker run -p` (default: the primary's)
    #[arg(short = 'p', long = "publish", value_name = "SPEC", value_parser = parse_port)]
    publish: Vec<kiln_vmm::net::PortMap>,

    /// The standby's copy of the primary's next disk (repeatable, in the primary's --disk order): made an exact replica from the first checkpoint on (its old contents are replaced), then kept in step; the VM resumes on it
    #[arg(long = "disk", value_name = "FILE")]
    disks: Vec<std::path::PathBuf>,

    /// Seconds the primary may stay silent (no checkpoint, no heartbeat: it sends one every idle second) before the standby takes over
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    silence: f64,

    /// How the resumed VM gets guest memory from the standby's copy: `copy` (its own huge-page memory, full speed at once) or `shared` (mapped, each page the guest first touches costs an exit)
    #[arg(long, value_enum, default_value_t = SnapshotMemoryArg::Copy, value_name = "HOW")]
    snapshot_memory: SnapshotMemoryArg,

    /// Keep standard input open for the resumed VM's program
    #[arg(short = 'i', long)]
    interactive: bool,

    /// Stop the resumed guest after this many seconds (exit status 124)
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,

    /// Print KVM's counters for the resumed VM on stderr
    #[arg(long)]
    stats: bool,
}

fn parse_port(s: &str) -> Result<kiln_vmm::net::PortMap, String> {
    s.parse()
}

/// Runs `kiln standby`.
pub fn run(args: Args, start: Instant) -> Result<u8> {
    if !(args.silence.is_finite() && args.silence > 0.0) {
        anyhow::bail!("--silence must be a positive number of seconds");
    }
    let flags = RunFlags {
        interactive: args.interactive,
        timeout: args.timeout,
        stats: args.stats,
        ..RunFlags::default()
    };
    let console = flags.console()?;
    let mut opts = RunOptions {
        timeout: flags.timeout()?,
        stats: args.stats,
        stdin: console.stdin,
        terminal: console.terminal,
        snapshot_memory: args.snapshot_memory.mode(),
        ..RunOptions::default()
    };
    opts.net.publish = args.publish;
    opts.disks = args
        .disks
        .into_iter()
        .map(|path| kiln_vmm::devices::virtio::block::DiskSpec {
            path,
            read_only: false,
        })
        .collect();
    let outcome = run::standby(
        &args.listen,
        Duration::from_secs_f64(args.silence),
        &opts,
        start,
    );
    drop(console);
    match outcome? {
        StandbyOutcome::PrimaryEnded(status) => {
            eprintln!("kiln: the primary's VM ended (status {status}); the standby stands down");
            Ok(u8::try_from(status).unwrap_or(1))
        }
        StandbyOutcome::TookOver(report) => {
            flags.report("kiln", &report)?;
            Ok(report.exit_status())
        }
    }
}
