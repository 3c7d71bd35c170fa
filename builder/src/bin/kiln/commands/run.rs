//! `kiln run IMAGE [-- ARGS]`.

use std::time::Instant;

use anyhow::Result;
use kiln_builder::oci::reference::Reference;
use kiln_builder::progress::Progress;
use kiln_builder::registry;
use kiln_builder::run::{self, RunOptions};
use kiln_vmm::cli::RunFlags;

/// When `kiln run REF` pulls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Pull {
    /// When the image is not in the local store
    Missing,
    /// Every time (the tag may have moved)
    Always,
    /// Never: an image missing from the store is an error
    Never,
}

/// Boot an image and run its program.
#[derive(clap::Args)]
#[command(
    after_help = "IMAGE is a .kiln file (verified completely before it boots) or an image in the \
                  local store, by name (hello:1.0, localhost:5000/app:v2) or digest; a reference \
                  with a registry that is not in the store is pulled first. Arguments \
                  after -- replace the image's default arguments (as with docker run). The \
                  program's stdout and stderr are kiln's, byte for byte."
)]
pub struct Args {
    /// The image: a .kiln file, or a name or digest in the local store
    #[arg(value_name = "IMAGE|REF")]
    image: String,

    /// Arguments for the program (replace the image's defaults)
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,

    /// Environment variable for the program, NAME=VALUE (repeatable; overrides the image's)
    #[arg(short, long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,

    /// Guest memory in MiB, 4 to 16384 [default: the image's]
    #[arg(long, value_name = "MiB", value_parser = clap::value_parser!(u64).range(
        kiln_boot::layout::MIN_MEMORY_MIB..=kiln_boot::layout::MAX_MEMORY_MIB))]
    memory: Option<u64>,

    #[command(flatten)]
    run: RunFlags,

    /// When to pull a REF with a registry: when it is not in the local store,
    /// always (to pick up a moved tag), or never
    #[arg(long, value_enum, default_value_t = Pull::Missing, value_name = "WHEN")]
    pull: Pull,

    #[command(flatten)]
    registry: super::RegistryArgs,
}

/// Runs `kiln run`.
pub fn run(args: Args, start: Instant) -> Result<u8> {
    let timeout = args.run.timeout()?;
    let store = super::store();
    let remote = Reference::parse(&args.image)
        .ok()
        .filter(|r| r.registry.is_some() && !super::is_file_name(&args.image));
    let pull = |reference: &Reference, why: &str| -> Result<_> {
        let opts = args
            .registry
            .options(reference.registry.as_deref(), &store)?;
        let progress = Progress::new(false);
        progress.line(&format!("kiln: {why}; pulling {reference}"));
        let image = registry::pull(&store, reference, &opts, &progress)?;
        Ok(store.parts(&image, &args.image)?)
    };
    let parts = match (&remote, args.pull) {
        (Some(reference), Pull::Always) => pull(reference, "--pull always")?,
        _ => match super::open_image_to_boot(&args.image, &store) {
            Ok((parts, _)) => parts,
            Err(e) if super::not_stored(&e) && args.pull == Pull::Missing => match &remote {
                Some(reference) => pull(reference, "not in the local store")?,
                None => return Err(e),
            },
            Err(e) => return Err(e),
        },
    };
    let console = args.run.console()?;
    let opts = RunOptions {
        args: (!args.args.is_empty()).then_some(args.args),
        env: args.env,
        memory_mib: args.memory,
        timeout,
        trace_syscalls: args.run.trace_syscalls,
        init: args.run.init,
        cpus: args.run.cpus,
        stats: args.run.stats,
        share_image: args.run.share_image,
        user: args.run.user,
        stdin: console.stdin,
        terminal: console.terminal,
        net: args.run.net.clone(),
        vsock: args.run.vsock.clone(),
        disks: args.run.disks.clone(),
        volumes: args.run.volumes.clone(),
    };
    let report = run::run(&parts, &opts, start);
    // The host terminal is itself again before anything is reported.
    drop(console);
    let report = report?;
    args.run.report("kiln", &report)?;
    Ok(report.exit_status())
}
