//! `kiln images`: what the local store holds.

use anyhow::Result;
use kiln_builder::config::BootConfig;

/// List the images in the local store.
#[derive(clap::Args)]
#[command(
    after_help = "The store is $KILN_HOME (default ~/.local/share/kiln). Images that share \
                  a kernel or rootfs share its blob: the total at the end counts each blob once."
)]
pub struct Args {
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

/// Runs `kiln images`.
pub fn run(args: Args) -> Result<u8> {
    let store = super::store();
    let images = store.images()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&images)?);
        return Ok(0);
    }
    println!(
        "{:<44} {:<14} {:<24} {:>10}",
        "NAME", "DIGEST", "APP", "SIZE"
    );
    let mut blobs = std::collections::BTreeMap::new();
    for img in &images {
        let app = store
            .blob_path(&img.config)
            .ok()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| BootConfig::from_bytes(&b).ok())
            .map(|c| format!("{} {}", c.name, c.version))
            .unwrap_or_else(|| "?".into());
        let names = if img.names.is_empty() {
            vec!["<none>".to_owned()]
        } else {
            img.names.clone()
        };
        for name in names {
            println!(
                "{name:<44} {:<14} {app:<24} {:>10}",
                img.short_digest(),
                super::human_size(img.size)
            );
        }
        for (_, b) in img.blobs() {
            let len = store
                .blob_path(b)
                .ok()
                .and_then(|p| std::fs::metadata(p).ok())
                .map_or(0, |m| m.len());
            blobs.insert(b.to_owned(), len);
        }
    }
    println!(
        "{} image(s), {} on disk in {} blobs ({})",
        images.len(),
        super::human_size(blobs.values().sum()),
        blobs.len(),
        store.root().display()
    );
    Ok(0)
}
