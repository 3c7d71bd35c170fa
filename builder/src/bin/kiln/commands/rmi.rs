//! `kiln rmi REF...`: remove names and images from the local store.

use anyhow::Result;

/// Remove images (and snapshots) from the local store.
#[derive(clap::Args)]
#[command(
    after_help = "A name that is one of several on an image only removes that name; the \
                  image goes with its last name, or when given by digest. Blobs that no other \
                  image uses are deleted with it."
)]
pub struct Args {
    /// Names or digests of images or snapshots
    #[arg(required = true, value_name = "REF")]
    refs: Vec<String>,
}

/// Runs `kiln rmi`.
pub fn run(args: Args) -> Result<u8> {
    let store = super::store();
    let mut failed = false;
    for r in &args.refs {
        match store.remove(r) {
            Ok(removal) => {
                for n in &removal.untagged {
                    println!("untagged: {n}");
                }
                if let Some(d) = &removal.deleted {
                    println!(
                        "deleted: {d} ({} blobs, {} freed)",
                        removal.blobs_freed,
                        super::human_size(removal.bytes_freed)
                    );
                }
            }
            Err(e @ kiln_builder::store::StoreError::NotFound(_)) => match store.remove_snapshot(r)
            {
                Ok(Some(what)) => println!("{what} (snapshot)"),
                Ok(None) => {
                    eprintln!("kiln: error: {e} (nor a snapshot: `kiln snapshots` lists them)");
                    failed = true;
                }
                Err(e) => {
                    eprintln!("kiln: error: {e}");
                    failed = true;
                }
            },
            Err(e) => {
                eprintln!("kiln: error: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { crate::EXIT_FAILURE } else { 0 })
}
