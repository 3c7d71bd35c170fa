//! `kiln export IMAGE`: the image's root file system as a tar archive, the
//! whole image as an OCI image layout, or a UEFI-bootable disk.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::ValueEnum;
use kiln_builder::disk::{self, DiskFormat};
use kiln_builder::oci::layout::Layout;
use kiln_builder::oci::{self, reference::Reference};

/// Write an image's root file system (a tar archive), the whole image as an
/// OCI image layout, or a disk that boots on UEFI firmware.
#[derive(clap::Args)]
#[command(
    after_help = "Without --oci-layout the output is the image's rootfs section exactly, \
                  after the image was verified: unpack it with `tar -xf` to look at, or run \
                  natively, what the guest sees (`kiln export img.kiln | tar -tv` lists it).\n\n\
                  With --oci-layout DIR the image is written as an OCI artifact (manifest, boot \
                  config, gzip-compressed kernel and rootfs layers) into the OCI image layout \
                  DIR, created if missing or added to if it already is one; skopeo, crane, oras \
                  and `kiln import` read it.\n\n\
                  With --disk FILE the image becomes a GPT disk that boots on any UEFI machine or \
                  hypervisor: an EFI system partition holding GRUB (from Debian's \
                  grub-efi-amd64-bin), the kiln kernel, the rootfs and the configuration. The \
                  program runs with the image's arguments and environment, its output on the \
                  first serial port; its exit status ends QEMU through isa-debug-exit, elsewhere \
                  it is printed before an ACPI power-off. --format vmdk also writes FILE.vmx (UEFI \
                  firmware, SATA disk, serial console to a file) for VMware. With -i the program \
                  reads standard input from the serial console. The same image always gives the \
                  same disk.\n\n\
                  Examples:\n  \
                  kiln export images/hello.kiln -o rootfs.tar\n  \
                  kiln export images/hello.kiln --oci-layout out/ --name hello:1.0\n  \
                  kiln export localhost:5000/hello:1.0 --oci-layout out/\n  \
                  kiln export images/hello.kiln --disk hello.img\n  \
                  kiln export images/hello.kiln --disk hello.vmdk --format vmdk --size 64MiB\n  \
                  cargo xtask boot-uefi hello.img"
)]
pub struct Args {
    /// The image: a .kiln file, or a name or digest in the local store
    #[arg(value_name = "IMAGE|REF")]
    image: String,

    /// Where to write the archive [default: stdout]
    #[arg(short, long, value_name = "FILE", conflicts_with_all = ["oci_layout", "disk"])]
    output: Option<PathBuf>,

    /// Write a UEFI-bootable disk to FILE instead
    #[arg(long, value_name = "FILE", conflicts_with = "oci_layout")]
    disk: Option<PathBuf>,

    /// The disk's file format
    #[arg(long, value_enum, default_value = "raw", requires = "disk")]
    format: DiskFormat,

    /// The disk's size (bytes, or with KiB/MiB/GiB) [default: the smallest that holds the image]
    #[arg(long, value_name = "SIZE", requires = "disk", value_parser = parse_disk_size)]
    size: Option<u64>,

    /// The disk's program reads standard input from the serial console
    /// (without it, standard input is at end of file, as under `kiln run`)
    #[arg(short, long, requires = "disk")]
    interactive: bool,

    /// Write the image as an OCI image layout into DIR instead
    #[arg(long, value_name = "DIR")]
    oci_layout: Option<PathBuf>,

    /// Name of the image in the layout's index (org.opencontainers.image.ref.name)
    /// [default: the stored image's name, or NAME:VERSION from its config]
    #[arg(long, value_name = "NAME", requires = "oci_layout")]
    name: Option<String>,
}

fn parse_disk_size(text: &str) -> Result<u64, String> {
    kiln_builder::manifest::parse_size(text)
        .ok_or_else(|| format!("{text:?} is not a size (try 64MiB or 1GiB)"))
}

/// Runs `kiln export`.
pub fn run(args: Args) -> Result<u8> {
    let store = super::store();
    let (parts, stored) = super::open_image(&args.image, &store)?;
    if let Some(path) = &args.disk {
        let format = args.format.to_possible_value().expect("no skipped formats");
        eprintln!(
            "kiln: writing {} as a {} disk…",
            parts.label,
            format.get_name()
        );
        let options = disk::DiskOptions {
            format: args.format,
            size: args.size,
            interactive: args.interactive,
        };
        let report = disk::export(&parts, path, options)
            .with_context(|| format!("exporting {} as a disk", parts.label))?;
        eprintln!(
            "kiln: wrote {} ({} MiB disk carrying {:.1} MiB: GRUB, kernel, rootfs)",
            path.display(),
            report.size.div_ceil(1 << 20),
            report.carried as f64 / (1 << 20) as f64
        );
        if let Some(vmx) = &report.vmx {
            eprintln!(
                "kiln: wrote {} (VMware machine, UEFI firmware)",
                vmx.display()
            );
        }
        return Ok(0);
    }
    if let Some(dir) = &args.oci_layout {
        let name = match &args.name {
            Some(n) => n.clone(),
            None => match stored.as_ref().and_then(|s| s.names.first()) {
                Some(n) => n.clone(),
                None => {
                    let config =
                        kiln_builder::config::BootConfig::from_bytes(&parts.config.read()?)?;
                    format!("{}:{}", config.name, config.version)
                }
            },
        };
        if let Err(e) = Reference::parse(&name) {
            anyhow::bail!("--name: {e}");
        }
        let artifact = oci::artifact(&parts, &oci::read_parts(&parts)?)?;
        let layout = Layout::create(dir)?;
        layout.write(&artifact, Some(&name))?;
        eprintln!(
            "kiln: wrote {} as {name} ({}) to the OCI layout {}",
            parts.label,
            artifact.digest,
            dir.display()
        );
        return Ok(0);
    }
    let rootfs = parts.rootfs.read().context("reading the rootfs")?;
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
