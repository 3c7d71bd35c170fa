//! `kiln export --disk`: an image as a disk that boots on UEFI firmware —
//! a GPT disk whose one partition, the EFI system partition (FAT), holds
//! GRUB as `EFI/BOOT/BOOTX64.EFI`, the kiln kernel, the rootfs and the
//! boot configuration. GRUB starts the kernel through multiboot2 with the
//! image's entrypoint, arguments and environment on its command line.
//!
//! The disk is built as a sparse raw file beside the output and, for
//! qcow2 and VMDK, converted; every byte comes from the image (GUIDs and
//! the FAT volume id from its digest, FAT timestamps fixed), so the same
//! image always gives the same disk. Nothing is left under the output's
//! name unless the whole disk was written.

mod gpt;
mod grub;
mod qcow2;
mod raw;
mod vmdk;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::BootConfig;
use crate::parts::ImageParts;
use raw::RawDisk;

/// The most a disk may carry (boot loader, kernel, rootfs, configuration):
/// the footprint of VMware's ESX Server 3i, kiln's size budget.
pub const MAX_CARRIED: u64 = 32 << 20;
const MIB: u64 = 1 << 20;
/// The largest `--size` accepted.
pub const MAX_DISK_SIZE: u64 = 1 << 40;
/// Where the EFI system partition starts (1 MiB, the usual alignment).
const ESP_START_LBA: u64 = MIB / gpt::SECTOR;
/// The ESP's folder for kiln's files.
const KILN_DIR: &str = "kiln";

/// A disk file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DiskFormat {
    /// The bytes of the disk (sparse where they are zero).
    Raw,
    /// QEMU's copy-on-write format (version 2).
    Qcow2,
    /// VMware's hosted sparse VMDK, with a `.vmx` beside it.
    Vmdk,
}

/// What went wrong exporting a disk.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The image could not be read.
    #[error("reading the image's {part}: {source}")]
    Read {
        /// Which section.
        part: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The boot configuration is not valid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A word of the kernel command line cannot pass through GRUB.
    #[error("{what} {word:?} cannot go on a boot loader's command line: {why}")]
    Word {
        /// Whose word (an argument, an environment variable, …).
        what: &'static str,
        /// The word.
        word: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The disk would carry more than [`MAX_CARRIED`].
    #[error("the disk would carry {carried} bytes (boot loader, kernel, rootfs), more than the {max} MiB limit", max = MAX_CARRIED >> 20)]
    TooLarge {
        /// Bytes it would carry.
        carried: u64,
    },
    /// `--size` is smaller than the disk must be.
    #[error("--size {size} is too small: this image needs a disk of at least {needed} bytes ({} MiB)", needed.div_ceil(MIB))]
    SizeTooSmall {
        /// The size asked for.
        size: u64,
        /// The smallest that works.
        needed: u64,
    },
    /// `--size` is larger than kiln writes.
    #[error("--size {0} is larger than the 1 TiB kiln writes")]
    SizeTooLarge(u64),
    /// GRUB's EFI build is missing.
    #[error("GRUB's UEFI boot loader is not installed ({0}): install Debian's grub-efi-amd64-bin and grub-common")]
    NoGrub(String),
    /// grub-mkimage failed.
    #[error("grub-mkimage failed: {0}")]
    GrubFailed(String),
    /// A scratch file for GRUB could not be used.
    #[error("preparing the boot loader: {0}")]
    Scratch(std::io::Error),
    /// Writing the output failed (nothing is left under its name).
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What [`export`] wrote.
#[derive(Debug)]
pub struct DiskReport {
    /// The disk's virtual size in bytes.
    pub size: u64,
    /// Bytes the disk carries (boot loader, kernel, rootfs, configuration).
    pub carried: u64,
    /// The `.vmx` written beside a VMDK.
    pub vmx: Option<PathBuf>,
}

/// A file under a temporary name that is removed unless [`Self::commit`]
/// renames it to its final name.
struct Pending {
    tmp: PathBuf,
    path: PathBuf,
    done: bool,
}

impl Pending {
    fn create(path: &Path, tag: &str) -> Result<(Self, File), DiskError> {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{tag}.tmp.{}", std::process::id()));
        let tmp = PathBuf::from(name);
        let _ = std::fs::remove_file(&tmp);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|source| DiskError::Write {
                path: path.to_path_buf(),
                source,
            })?;
        Ok((
            Self {
                tmp,
                path: path.to_path_buf(),
                done: false,
            },
            file,
        ))
    }

    fn commit(mut self, file: &File) -> Result<(), DiskError> {
        let write_error = |source| DiskError::Write {
            path: self.path.clone(),
            source,
        };
        file.sync_all().map_err(write_error)?;
        std::fs::rename(&self.tmp, &self.path).map_err(write_error)?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The kernel command line that starts the image's program as `kiln run`
/// would with no flags (or `-i` when `interactive`: standard input from the
/// serial console): its environment, the manifest's kernel options, its
/// path and CPU count, then `--` and its arguments.
///
/// # Errors
/// When a word holds a character GRUB or the kernel cannot carry.
pub fn kernel_words(config: &BootConfig, interactive: bool) -> Result<Vec<String>, DiskError> {
    let check = |what: &'static str, word: &str| -> Result<(), DiskError> {
        let why = if word.is_empty() {
            Some("it is empty")
        } else if word.contains(['\'', '"', '\\']) {
            Some("it holds a quote or a backslash")
        } else if word.chars().any(char::is_control) {
            Some("it holds a control character")
        } else {
            None
        };
        match why {
            Some(why) => Err(DiskError::Word {
                what,
                word: word.to_string(),
                why,
            }),
            None => Ok(()),
        }
    };
    let mut words = Vec::new();
    for e in &config.env {
        check("the environment variable", e)?;
        words.push(e.clone());
    }
    for option in config.cmdline.split_whitespace() {
        check("the kernel option", option)?;
        words.push(option.to_string());
    }
    check("the entrypoint", &config.entrypoint)?;
    words.push(format!("kiln.path={}", config.entrypoint));
    if config.vcpus > 1 {
        words.push(format!("kiln.cpus={}", config.vcpus));
    }
    if interactive {
        words.push("kiln.serial_stdin=1".into());
    }
    words.push("--".into());
    for a in &config.args {
        check("the argument", a)?;
        words.push(a.clone());
    }
    Ok(words)
}

/// How to export a disk.
#[derive(Clone, Copy, Debug)]
pub struct DiskOptions {
    /// The file format.
    pub format: DiskFormat,
    /// The disk's size (default: the smallest that holds the image).
    pub size: Option<u64>,
    /// Standard input from the serial console (`-i`); otherwise it is at
    /// end of file, as under `kiln run` without `-i`.
    pub interactive: bool,
}

/// Writes `parts` as a UEFI-bootable disk to `out`.
///
/// # Errors
/// See [`DiskError`]; on any error nothing is left at `out`.
pub fn export(
    parts: &ImageParts,
    out: &Path,
    options: DiskOptions,
) -> Result<DiskReport, DiskError> {
    let DiskOptions {
        format,
        size,
        interactive,
    } = options;
    let read = |part: &'static str, p: &crate::parts::Part| {
        p.read().map_err(|source| DiskError::Read { part, source })
    };
    let config_bytes = read("configuration", &parts.config)?;
    let config = BootConfig::from_bytes(&config_bytes)?;
    let kernel = read("kernel", &parts.kernel)?;
    let rootfs = read("rootfs", &parts.rootfs)?;
    let words = kernel_words(&config, interactive)?;
    let bootloader = grub::bootloader(&grub::script(KILN_DIR, &words))?;
    let files: [(&str, &[u8]); 4] = [
        ("EFI/BOOT/BOOTX64.EFI", &bootloader),
        ("kiln/kernel", &kernel),
        ("kiln/rootfs", &rootfs),
        ("kiln/config.json", &config_bytes),
    ];
    let carried: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
    if carried > MAX_CARRIED {
        return Err(DiskError::TooLarge { carried });
    }
    let needed = minimum_disk_size(&files);
    let size = match size {
        Some(s) if s > MAX_DISK_SIZE => return Err(DiskError::SizeTooLarge(s)),
        Some(s) if s < needed => return Err(DiskError::SizeTooSmall { size: s, needed }),
        Some(s) => s / gpt::SECTOR * gpt::SECTOR,
        None => needed,
    };
    let seed = image_seed(parts);
    let write_error = |source| DiskError::Write {
        path: out.to_path_buf(),
        source,
    };
    let (raw_pending, raw_file) = Pending::create(out, "raw")?;
    let raw = RawDisk::new(raw_file, size).map_err(write_error)?;
    write_raw(&raw, &files, &seed).map_err(write_error)?;
    let mut vmx = None;
    let mut vmx_pending = None;
    match format {
        DiskFormat::Raw => raw_pending.commit(raw.file())?,
        DiskFormat::Qcow2 | DiskFormat::Vmdk => {
            let (pending, file) = Pending::create(out, "conv")?;
            let mut w = BufWriter::new(&file);
            if format == DiskFormat::Qcow2 {
                qcow2::write(&raw, &mut w).map_err(write_error)?;
            } else {
                let name = out.file_name().map_or_else(
                    || "disk.vmdk".to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                let cid = u32::from_le_bytes(seed[16..20].try_into().expect("4 bytes"));
                vmdk::write(&raw, &name, cid, &mut w).map_err(write_error)?;
                // The .vmx is committed after the disk it names.
                let vmx_path = out.with_extension("vmx");
                let (p, mut f) = Pending::create(&vmx_path, "new")?;
                f.write_all(vmx_text(&config, &name).as_bytes())
                    .map_err(|source| DiskError::Write {
                        path: vmx_path.clone(),
                        source,
                    })?;
                vmx_pending = Some((p, f));
                vmx = Some(vmx_path);
            }
            w.flush().map_err(write_error)?;
            drop(w);
            pending.commit(&file)?;
            if let Some((p, f)) = vmx_pending {
                if let Err(e) = p.commit(&f) {
                    let _ = std::fs::remove_file(out);
                    return Err(e);
                }
            }
        }
    }
    Ok(DiskReport { size, carried, vmx })
}

/// The smallest disk that holds `files`: 1 MiB before the partition,
/// the files in 4 KiB clusters plus room for the FAT's own tables, and the
/// backup GPT, rounded up to whole MiB.
fn minimum_disk_size(files: &[(&str, &[u8])]) -> u64 {
    let data: u64 = files
        .iter()
        .map(|(_, b)| (b.len() as u64).next_multiple_of(4096))
        .sum();
    let esp = (data + data / 16 + MIB).next_multiple_of(MIB);
    (ESP_START_LBA * gpt::SECTOR + esp + gpt::BACKUP_BLOCKS * gpt::SECTOR).next_multiple_of(MIB)
}

/// 32 bytes derived from the image's section digests: the source of the
/// disk's GUIDs, FAT volume id and VMDK content id.
fn image_seed(parts: &ImageParts) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"kiln disk\0");
    for p in [&parts.config, &parts.kernel, &parts.rootfs] {
        h.update(p.sha256.as_bytes());
    }
    h.finalize().into()
}

fn derived(seed: &[u8; 32], what: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(seed);
    h.update(what.as_bytes());
    h.finalize().into()
}

/// Fills `raw` with the GPT and a FAT ESP holding `files`.
fn write_raw(raw: &RawDisk, files: &[(&str, &[u8])], seed: &[u8; 32]) -> std::io::Result<()> {
    let blocks = raw.size() / gpt::SECTOR;
    let esp = gpt::Partition {
        type_guid: gpt::EFI_SYSTEM_PARTITION,
        guid: gpt::guid_from(&derived(seed, "esp")),
        first_lba: ESP_START_LBA,
        last_lba: blocks - gpt::BACKUP_BLOCKS - 1,
        name: "EFI system partition",
    };
    gpt::write(
        raw.file(),
        blocks,
        gpt::guid_from(&derived(seed, "disk")),
        &esp,
    )?;
    let start = esp.first_lba * gpt::SECTOR;
    let len = (esp.last_lba + 1 - esp.first_lba) * gpt::SECTOR;
    let volume_id = u32::from_le_bytes(derived(seed, "fat")[..4].try_into().expect("4 bytes"));
    fatfs::format_volume(
        raw.window(start, len),
        fatfs::FormatVolumeOptions::new()
            .volume_id(volume_id)
            .volume_label(*b"KILN       "),
    )?;
    // Without the `chrono` feature, fatfs stamps every entry with its
    // fixed default date (1980-01-01), which keeps the bytes reproducible.
    let fs = fatfs::FileSystem::new(raw.window(start, len), fatfs::FsOptions::new())?;
    for (path, bytes) in files {
        let root = fs.root_dir();
        let mut dir = root;
        let mut parts: Vec<&str> = path.split('/').collect();
        let name = parts.pop().unwrap_or_default();
        for p in parts {
            dir = match dir.open_dir(p) {
                Ok(d) => d,
                Err(_) => dir.create_dir(p)?,
            };
        }
        let mut f = dir.create_file(name)?;
        f.truncate()?;
        f.write_all(bytes)?;
        f.flush()?;
    }
    fs.unmount()?;
    Ok(())
}

/// A minimal VMware machine for the VMDK: UEFI firmware, a 64-bit "other"
/// guest, the disk on SATA and the serial console into a file beside it.
fn vmx_text(config: &BootConfig, vmdk_name: &str) -> String {
    // UEFI firmware and GRUB need more than a kiln-vmm guest does.
    let memory = config.memory_mib.max(256).next_multiple_of(4);
    let stem = vmdk_name.strip_suffix(".vmdk").unwrap_or(vmdk_name);
    format!(
        ".encoding = \"UTF-8\"\n\
         config.version = \"8\"\n\
         virtualHW.version = \"14\"\n\
         displayName = \"{name}\"\n\
         guestOS = \"other-64\"\n\
         firmware = \"efi\"\n\
         memSize = \"{memory}\"\n\
         numvcpus = \"{cpus}\"\n\
         sata0.present = \"TRUE\"\n\
         sata0:0.present = \"TRUE\"\n\
         sata0:0.fileName = \"{vmdk_name}\"\n\
         serial0.present = \"TRUE\"\n\
         serial0.fileType = \"file\"\n\
         serial0.fileName = \"{stem}-console.log\"\n",
        name = config.name,
        cpus = config.vcpus.max(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ProgramInfo, CONFIG_VERSION};

    fn config(env: &[&str], args: &[&str], vcpus: u32) -> BootConfig {
        BootConfig {
            config_version: CONFIG_VERSION,
            name: "t".into(),
            version: "1".into(),
            entrypoint: "/bin/app".into(),
            args: args.iter().map(|a| (*a).to_string()).collect(),
            env: env.iter().map(|e| (*e).to_string()).collect(),
            memory_mib: 16,
            vcpus,
            cmdline: "kiln.vdso=0".into(),
            program: ProgramInfo {
                linkage: "static".into(),
                interpreter: None,
                needed: Vec::new(),
                libraries: Vec::new(),
            },
            net: None,
            volumes: Vec::new(),
            disks: Vec::new(),
        }
    }

    #[test]
    fn the_command_line_carries_env_options_path_cpus_and_args() {
        let words = kernel_words(&config(&["A=b c"], &["x", "y z"], 2), true).unwrap();
        assert_eq!(
            words,
            [
                "A=b c",
                "kiln.vdso=0",
                "kiln.path=/bin/app",
                "kiln.cpus=2",
                "kiln.serial_stdin=1",
                "--",
                "x",
                "y z"
            ]
        );
        let script = grub::script("kiln", &words);
        assert!(
            script.contains("multiboot2 /kiln/kernel 'A=b c' 'kiln.vdso=0'"),
            "{script}"
        );
    }

    #[test]
    fn words_grub_cannot_carry_are_refused_by_name() {
        for (env, args) in [
            (&["A=it's"][..], &[][..]),
            (&[], &["say \"hi\""]),
            (&[], &["back\\slash"]),
            (&[], &[""]),
            (&["A=line\nbreak"], &[]),
        ] {
            let err = kernel_words(&config(env, args, 1), false)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("cannot go on a boot loader's command line"),
                "{err}"
            );
        }
    }

    #[test]
    fn the_smallest_disk_holds_the_files_with_room_for_the_fat() {
        let big = vec![1u8; 3 << 20];
        let size = minimum_disk_size(&[("a", &big), ("b", b"x")]);
        assert_eq!(size % MIB, 0);
        assert!(size >= (3 << 20) + 2 * MIB, "{size}");
        assert!(size <= 8 * MIB, "{size}");
    }

    #[test]
    fn guids_have_the_version_and_variant_bits() {
        let g = gpt::guid_from(&[0xff; 32]);
        assert_eq!(g[7] >> 4, 4);
        assert_eq!(g[8] >> 6, 0b10);
    }
}
