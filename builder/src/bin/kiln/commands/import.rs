//! `kiln import SOURCE`: an OCI image layout or a `.kiln` file into the
//! local store.

use std::path::Path;

use anyhow::{bail, Result};
use kiln_builder::config::BootConfig;
use kiln_builder::image::Image;
use kiln_builder::oci::layout::Layout;
use kiln_builder::oci::reference::Reference;
use kiln_builder::transfer::{self, BlobOutcome};

/// Copy an image from an OCI image layout or a .kiln file into the local store.
#[derive(clap::Args)]
#[command(
    after_help = "SOURCE is an OCI image layout directory — DIR, or DIR:NAME to pick the \
                  image whose org.opencontainers.image.ref.name is NAME — or a .kiln file. Every \
                  blob's digest and size is checked before it enters the store; compressed \
                  layers are stored decompressed, once, so boots map them directly.\n\n\
                  Examples:\n  \
                  kiln import out/ --tag hello:1.0\n  \
                  skopeo copy docker://localhost:5000/hello:1.0 oci:copy:v1 && kiln import copy:v1\n  \
                  kiln import images/hello.kiln           # named NAME:VERSION from its config"
)]
pub struct Args {
    /// The OCI layout (DIR or DIR:NAME) or .kiln file
    #[arg(value_name = "SOURCE")]
    source: String,

    /// Name for the image in the store (repeatable)
    #[arg(short, long = "tag", value_name = "NAME")]
    tags: Vec<String>,
}

/// Runs `kiln import`.
pub fn run(args: Args) -> Result<u8> {
    let store = super::store();
    let mut names = args
        .tags
        .iter()
        .map(|t| Reference::parse(t))
        .collect::<Result<Vec<_>, _>>()?;
    let path = Path::new(&args.source);
    let stored = if path.is_file() {
        let image = Image::open(path)?;
        if names.is_empty() {
            let config =
                BootConfig::from_bytes(&image.read(kiln_builder::image::SectionKind::Config)?)?;
            names.extend(Reference::parse(&format!("{}:{}", config.name, config.version)).ok());
        }
        transfer::import_file(&store, &image, &names)?
    } else {
        let (dir, name) = match args.source.rsplit_once(':') {
            Some((d, n)) if !path.is_dir() => (Path::new(d), Some(n)),
            _ => (path, None),
        };
        if !dir.is_dir() {
            bail!(
                "{}: no such OCI layout directory or .kiln file",
                args.source
            );
        }
        let layout = Layout::open(dir)?;
        let (digest, manifest) = layout.manifest(name)?;
        if names.is_empty() {
            // A full reference as the layout's name names the stored
            // image too; a bare tag (skopeo's oci:DIR:TAG) does not.
            let ref_name = layout
                .entries()?
                .into_iter()
                .find(|(_, d)| *d == digest)
                .and_then(|(n, _)| n);
            names.extend(
                ref_name
                    .filter(|n| n.contains(':') || n.contains('/'))
                    .and_then(|n| Reference::parse(&n).ok()),
            );
        }
        let mut report = |blob: &kiln_builder::oci::BlobRef, outcome: BlobOutcome| match outcome {
            BlobOutcome::Present => eprintln!("kiln: {}: already stored", blob.describe()),
            BlobOutcome::Fetched(n) => {
                eprintln!(
                    "kiln: {}: {} verified",
                    blob.describe(),
                    super::human_size(n)
                );
            }
        };
        transfer::receive(&store, &digest, &manifest, &layout, &names, &mut report)?
    };
    let named = if stored.names.is_empty() {
        "untagged; name it with --tag".to_owned()
    } else {
        stored.names.join(", ")
    };
    eprintln!("kiln: imported {} ({named})", stored.digest);
    println!("{}", stored.digest);
    Ok(0)
}
