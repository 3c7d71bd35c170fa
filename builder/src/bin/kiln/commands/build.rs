//! `kiln build MANIFEST`.

use std::path::PathBuf;

use anyhow::Result;
use kiln_builder::build::{self, BuildOptions};

/// Build an image from a manifest.
#[derive(clap::Args)]
#[command(
    after_help = "The image is deterministic: the same manifest and inputs give the same bytes \
                        (entry times come from SOURCE_DATE_EPOCH, default 0). It is written to a \
                        temporary file and renamed into place, so a failed build leaves nothing."
)]
pub struct Args {
    /// The manifest (TOML)
    manifest: PathBuf,

    /// Where to write the image [default: images/NAME.kiln]
    #[arg(short, long, value_name = "IMAGE")]
    output: Option<PathBuf>,

    /// Guest kernel to embed [default: $KILN_KERNEL, else kiln-kernel.elf beside kiln or in target/]
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,

    /// No progress lines
    #[arg(short, long)]
    quiet: bool,
}

/// Runs `kiln build`.
pub fn run(args: Args) -> Result<u8> {
    let kernel = match args.kernel {
        Some(k) => k,
        None => kiln_vmm::source::default_kernel()?,
    };
    let built = build::build(&BuildOptions {
        manifest: args.manifest,
        output: args.output,
        kernel,
        mtime: build::source_date_epoch(),
        progress: !args.quiet,
    })?;
    println!("{}", built.path.display());
    Ok(0)
}
