//! `kiln snapshots`: the snapshots in the local store.

use anyhow::Result;

/// List the snapshots in the local store
#[derive(clap::Args)]
pub struct Args {
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

/// Runs `kiln snapshots`.
pub fn run(args: Args) -> Result<u8> {
    let store = super::store();
    let snapshots = store.snapshots()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&snapshots)?);
        return Ok(0);
    }
    println!(
        "{:<44} {:<14} {:<22} {:>10}",
        "NAME", "DIGEST", "IMAGE", "SIZE"
    );
    for s in &snapshots {
        let image = s
            .image
            .as_deref()
            .map_or("?".into(), |i| i.chars().take(19).collect::<String>());
        let names = if s.names.is_empty() {
            vec!["<none>".to_owned()]
        } else {
            s.names.clone()
        };
        for name in names {
            println!(
                "{name:<44} {:<14} {image:<22} {:>10}",
                s.short_digest(),
                super::human_size(s.size)
            );
        }
    }
    println!(
        "{} snapshot(s) ({})",
        snapshots.len(),
        store.root().display()
    );
    Ok(0)
}
