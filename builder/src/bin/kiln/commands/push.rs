//! `kiln push IMAGE REF`.

use anyhow::Result;
use kiln_builder::progress::Progress;
use kiln_builder::registry::{self, Pushed};

/// Push an image (or a stored snapshot) to an OCI registry.
#[derive(clap::Args)]
#[command(
    after_help = "IMAGE is a .kiln file or an image in the local store; REF is \
                  HOST[:PORT]/REPOSITORY[:TAG] (tag latest by default) or …@sha256:DIGEST to \
                  push by digest (it must be the image's). Blobs the repository has are skipped \
                  (HEAD), blobs another repository of the registry has are mounted, the rest \
                  uploaded (in chunks with --chunk-size), then the manifest is stored. The image \
                  is recorded in the local store under REF.\n\n\
                  With --containerd the image goes as an OCI container image instead, for \
                  `ctr image pull` and the containerd-shim-kiln-v1 runtime; the local store is not \
                  changed.\n\n\
                  Credentials come from `kiln login` or Docker's config.json.\n\n\
                  Examples:\n  \
                  kiln push images/hello.kiln localhost:5000/hello:1.0 --plain-http\n  \
                  kiln push hello:1.0.0 registry.example.com/team/hello:1.0 --ca-cert ca.pem\n  \
                  kiln push images/hello.kiln localhost:5000/hello:ctr --plain-http --containerd"
)]
pub struct Args {
    /// The image: a .kiln file, or a name or digest in the local store (images first, then snapshots)
    #[arg(value_name = "IMAGE")]
    image: String,

    #[arg(
        value_name = "REF",
        help = "Where to push it: HOST[:PORT]/REPOSITORY[:TAG] or …@sha256:DIGEST"
    )]
    reference: String,

    #[command(flatten)]
    registry: super::RegistryArgs,

    /// Upload blobs in chunks of this many bytes (PATCH requests) instead of one PUT
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    chunk_size: Option<u64>,

    /// Push as an OCI container image (one tar layer holding the .kiln file at /kiln/image.kiln)
    /// that containerd can pull and unpack; containerd-shim-kiln-v1 boots it (docs/kubernetes.md)
    #[arg(long)]
    containerd: bool,

    /// No progress output
    #[arg(short, long)]
    quiet: bool,
}

/// Runs `kiln push`.
pub fn run(args: Args) -> Result<u8> {
    let store = super::store();
    let reference = super::remote_reference(&args.reference)?;
    // A name the store has as a snapshot (and not as an image) pushes
    // the snapshot.
    let snapshot = if super::is_file_name(&args.image) || store.resolve(&args.image).is_ok() {
        None
    } else {
        store.resolve_snapshot(&args.image)?
    };
    let mut opts = args
        .registry
        .options(reference.registry.as_deref(), &store)?;
    opts.chunk_size = args.chunk_size;
    let progress = Progress::new(args.quiet);
    let report = match &snapshot {
        Some(_) if args.containerd => {
            anyhow::bail!(
                "--containerd pushes images, and {} is a snapshot",
                args.image
            )
        }
        Some(s) => registry::push_snapshot(&store, s, &reference, &opts, &progress)?,
        None if args.containerd => {
            let (parts, _) = super::open_image(&args.image, &store)?;
            registry::push_container(&parts, &reference, &opts, &progress)?
        }
        None => {
            let (parts, _) = super::open_image(&args.image, &store)?;
            registry::push(&store, &parts, &reference, &opts, &progress)?
        }
    };
    let uploaded = report
        .blobs
        .iter()
        .filter(|(_, p)| *p == Pushed::Uploaded)
        .count();
    progress.line(&format!(
        "kiln: pushed {reference} ({}; {uploaded} of {} blobs uploaded)",
        report.digest,
        report.blobs.len()
    ));
    println!("{}", report.digest);
    Ok(0)
}
