//! `kiln export IMAGE`: the image's root file system as a tar archive.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use kiln_builder::image::{Image, SectionKind};

/// Write the image's root file system (a tar archive) to a file or stdout.
#[derive(clap::Args)]
#[command(
    after_help = "The archive is the image's rootfs section exactly, after the whole image was \
                  verified. Unpack it with `tar -xf` to look at, or run natively, what the guest \
                  sees (`kiln export img.kiln | tar -tv` lists it)."
)]
pub struct Args {
    /// The image
    image: PathBuf,

    /// Where to write the archive [default: stdout]
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Runs `kiln export`.
pub fn run(args: Args) -> Result<u8> {
    let image = Image::open(&args.image)?;
    let rootfs = image.read(SectionKind::Rootfs)?;
    match &args.output {
        Some(path) => kiln_vmm::write_atomically(path, &rootfs)
            .with_context(|| format!("writing {}", path.display()))?,
        None => {
            let mut out = std::io::stdout().lock();
            match out.write_all(&rootfs).and_then(|()| out.flush()) {
                // The reader stopped early (`| head`): not kiln's failure.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => other.context("writing the archive to stdout")?,
            }
        }
    }
    Ok(0)
}
