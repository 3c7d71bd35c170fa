//! `kiln commit DIR NAME`: a snapshot directory into the local store.

use anyhow::{Context, Result};
use kiln_builder::oci::reference::Reference;

/// Store a snapshot directory in the local store, as an OCI artifact
#[derive(clap::Args)]
#[command(
    after_help = "DIR is a snapshot `kiln run --snapshot-to` or `kiln snapshot` saved; it is \
                  checked (state and memory digests) before it is stored. The store keeps it as \
                  an OCI artifact (config: the state, one layer: the memory's data extents, \
                  gzip) that `kiln push` sends to a registry and `kiln pull` brings back; \
                  `kiln run --from-snapshot NAME` resumes it; `kiln snapshots` lists them and \
                  `kiln rmi NAME` removes one.\n\n\
                  Example:\n  \
                  kiln run --snapshot-at first-output --snapshot-to app.snap app.kiln\n  \
                  kiln commit app.snap app-warm:1\n  \
                  kiln push app-warm:1 localhost:5000/app-warm:1 --plain-http"
)]
pub struct Args {
    /// The snapshot directory
    #[arg(value_name = "DIR")]
    dir: std::path::PathBuf,

    /// Its name in the store: `[HOST[:PORT]/]REPOSITORY[:TAG]`
    #[arg(value_name = "NAME")]
    name: String,
}

/// Runs `kiln commit`.
pub fn run(args: Args) -> Result<u8> {
    let name =
        Reference::parse(&args.name).with_context(|| format!("{:?} is not a name", args.name))?;
    let store = super::store();
    let artifact = kiln_builder::snapshots::pack(&args.dir)?;
    let stored = store.add_snapshot(&artifact, &[name])?;
    eprintln!(
        "kiln: stored snapshot {} as {} ({} of state and compressed memory)",
        args.dir.display(),
        stored.names.join(", "),
        super::human_size(stored.size)
    );
    println!("{}", stored.digest);
    Ok(0)
}
