//! `kiln pull REF`.

use anyhow::Result;
use kiln_builder::progress::Progress;
use kiln_builder::registry;

/// Pull an image (or a snapshot) from an OCI registry into the local store.
#[derive(clap::Args)]
#[command(
    after_help = "REF is HOST[:PORT]/REPOSITORY[:TAG] or …@sha256:DIGEST. The manifest \
                  must hash to the pinned digest (or to the digest the registry states for the \
                  tag); every blob must have its descriptor's size and sha256, and compressed \
                  layers the uncompressed digest the manifest states, before anything enters the \
                  store. Layers the store already has are not downloaded.\n\n\
                  Examples:\n  \
                  kiln pull localhost:5000/hello:1.0 --plain-http\n  \
                  kiln pull registry.example.com/team/hello@sha256:… --ca-cert ca.pem"
)]
pub struct Args {
    #[arg(
        value_name = "REF",
        help = "HOST[:PORT]/REPOSITORY[:TAG] or …@sha256:DIGEST"
    )]
    reference: String,

    #[command(flatten)]
    registry: super::RegistryArgs,

    /// No progress output
    #[arg(short, long)]
    quiet: bool,
}

/// Runs `kiln pull`.
pub fn run(args: Args) -> Result<u8> {
    let store = super::store();
    let reference = super::remote_reference(&args.reference)?;
    let opts = args
        .registry
        .options(reference.registry.as_deref(), &store)?;
    let progress = Progress::new(args.quiet);
    let pulled = registry::pull(&store, &reference, &opts, &progress)?;
    let kind = match pulled {
        registry::Pulled::Image(_) => "",
        registry::Pulled::Snapshot(_) => "snapshot ",
    };
    progress.line(&format!(
        "kiln: pulled {kind}{reference} ({})",
        pulled.digest()
    ));
    println!("{}", pulled.digest());
    Ok(0)
}
