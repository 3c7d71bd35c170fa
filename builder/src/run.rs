//! Booting an image: read its boot configuration and hand its kernel and
//! rootfs (mapped straight from the image file or the store's blobs) to
//! kiln-vmm in this process.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kiln_vmm::devices::legacy::console::Console;
use kiln_vmm::devices::virtio::block::DiskSpec;
use kiln_vmm::devices::virtio::console::InputSource;
use kiln_vmm::devices::virtio::fs::VolumeSpec;
use kiln_vmm::timings::{Phase, Timings};
use kiln_vmm::vstate::kvm::Hypervisor;
use kiln_vmm::{RunReport, VmConfig, VmmError};

use crate::config::BootConfig;
use crate::image::ImageError;
use crate::parts::ImageParts;

/// How to boot.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Arguments replacing the image's defaults (None: keep them).
    pub args: Option<Vec<String>>,
    /// `NAME=value` settings added to (or replacing) the image's environment.
    pub env: Vec<String>,
    /// Guest RAM in MiB instead of the image's.
    pub memory_mib: Option<u64>,
    /// Stop the guest after this long.
    pub timeout: Option<Duration>,
    /// Trace the program's system calls.
    pub trace_syscalls: bool,
    /// Reap orphaned processes in the guest (`--init`).
    pub init: bool,
    /// vCPUs instead of the image's.
    pub cpus: Option<u8>,
    /// Collect KVM counters.
    pub stats: bool,
    /// The run's phases are read (`--timings`, `--timings-json`).
    pub phases: bool,
    /// Map the image's pages from the host's page cache (`--share-image`).
    pub share_image: bool,
    /// `--user UID[:GID]`.
    pub user: Option<(u32, u32)>,
    /// What the program's standard input reads.
    pub stdin: InputSource,
    /// The host terminal the guest's follows (size, resizes), with `-t`.
    pub terminal: Option<std::os::fd::RawFd>,
    /// The network flags (over the image's `[net]`).
    pub net: kiln_vmm::cli::NetFlags,
    /// A vsock device (`--vsock`).
    pub vsock: Option<kiln_vmm::cli::VsockSpec>,
    /// Raw disk files (`--disk`).
    pub disks: Vec<DiskSpec>,
    /// Shared directories (`-v`).
    pub volumes: Vec<VolumeSpec>,
    /// A snapshot to take (`--snapshot-at`); its `image` is filled in here.
    pub snapshot: Option<kiln_vmm::snapshot::SnapshotRequest>,
    /// How a resumed snapshot's memory comes from its file.
    pub snapshot_memory: kiln_vmm::vstate::memory::SnapshotMemory,
    /// A standby to stream checkpoints to (`--standby`).
    pub standby: Option<kiln_vmm::ha::StandbyTarget>,
    /// Resume as a warm VM that waits for a claim (`kiln warm`).
    pub warm: Option<std::sync::Arc<kiln_vmm::snapshot::warm::WarmHold>>,
}

/// Why an image did not boot.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The image is unusable.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// Its configuration cannot be read.
    #[error("{label}: reading the boot configuration: {source}")]
    ReadConfig {
        /// The image.
        label: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Its configuration is unusable.
    #[error("{label}: {source}")]
    Config {
        /// The image.
        label: String,
        /// What is wrong.
        #[source]
        source: crate::config::ConfigError,
    },
    /// An `--env` value is not NAME=VALUE.
    #[error("--env {0:?} is not NAME=VALUE")]
    Env(String),
    /// A default volume or disk of the image could not be made.
    #[error("{path}: cannot make the image's default {what}: {source}")]
    Storage {
        /// Volume directory or disk file.
        what: &'static str,
        /// Its path.
        path: std::path::PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The VM failed.
    #[error(transparent)]
    Vmm(#[from] VmmError),
}

/// Where the image `name`'s default storage lives: `$KILN_HOME/<kind>/<name>`.
fn default_storage(kind: &str, name: &str) -> std::path::PathBuf {
    crate::store::Store::default_root().join(kind).join(name)
}

/// The volumes of a run: the `-v` flags, then each `[[volumes]]` path of
/// the image no flag covers, on a directory of the kiln home kept between
/// runs (`$KILN_HOME/volumes/<image>/<path with / as _>`).
///
/// # Errors
/// When a directory cannot be made.
pub fn volumes(config: &BootConfig, flags: &[VolumeSpec]) -> Result<Vec<VolumeSpec>, RunError> {
    let mut all = flags.to_vec();
    for path in &config.volumes {
        if flags.iter().any(|f| f.guest == *path) {
            continue;
        }
        let host = default_storage("volumes", &config.name)
            .join(path.trim_start_matches('/').replace('/', "_"));
        std::fs::create_dir_all(&host).map_err(|source| RunError::Storage {
            what: "volume",
            path: host.clone(),
            source,
        })?;
        all.push(VolumeSpec {
            host,
            guest: path.clone(),
            read_only: false,
        });
    }
    Ok(all)
}

/// The disks of a run: the `--disk` flags when there are any, else the
/// image's `[[disks]]`, as sparse files of the kiln home kept between runs
/// (`$KILN_HOME/disks/<image>/vda.img`, …), made at their size when
/// missing.
///
/// # Errors
/// When a file cannot be made.
pub fn disks(config: &BootConfig, flags: &[DiskSpec]) -> Result<Vec<DiskSpec>, RunError> {
    if !flags.is_empty() {
        return Ok(flags.to_vec());
    }
    let dir = default_storage("disks", &config.name);
    let mut all = Vec::new();
    for (i, &size) in config.disks.iter().enumerate() {
        let path = dir.join(format!("vd{}.img", (b'a' + i as u8) as char));
        let fail = |source| RunError::Storage {
            what: "disk",
            path: path.clone(),
            source,
        };
        if !path.exists() {
            std::fs::create_dir_all(&dir).map_err(fail)?;
            // Made beside and renamed: a half-made disk is never used.
            let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
            std::fs::File::create(&tmp)
                .and_then(|f| f.set_len(size))
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|e| {
                    let _ = std::fs::remove_file(&tmp);
                    fail(e)
                })?;
        }
        all.push(DiskSpec {
            path,
            read_only: false,
        });
    }
    Ok(all)
}

impl From<kiln_vmm::vstate::kvm::KvmError> for RunError {
    fn from(e: kiln_vmm::vstate::kvm::KvmError) -> Self {
        RunError::Vmm(e.into())
    }
}

/// The environment: the image's, with `overrides` replacing same-named
/// variables and adding new ones.
pub fn merge_env(base: &[String], overrides: &[String]) -> Result<Vec<String>, RunError> {
    let mut env: Vec<String> = base.to_vec();
    for o in overrides {
        let Some((name, _)) = o.split_once('=').filter(|(n, _)| !n.is_empty()) else {
            return Err(RunError::Env(o.clone()));
        };
        let prefix = format!("{name}=");
        env.retain(|e| !e.starts_with(&prefix));
        env.push(o.clone());
    }
    Ok(env)
}

/// The network an image asks for (`[net]` in its manifest): user-mode by
/// default when it has one, none otherwise.
///
/// # Errors
/// A configuration value that does not parse (a damaged image).
pub fn image_net(
    config: &BootConfig,
) -> Result<kiln_vmm::net::NetSpec, crate::config::ConfigError> {
    use kiln_vmm::net::{Mode, NetSpec};
    let Some(n) = &config.net else {
        return Ok(NetSpec::default());
    };
    let bad = |what: &str, v: &str, e: String| {
        crate::config::ConfigError::Net(format!("net.{what} = {v:?}: {e}"))
    };
    Ok(NetSpec {
        mode: match &n.mode {
            Some(m) => m.parse().map_err(|e| bad("mode", m, e))?,
            None => Mode::User,
        },
        address: n
            .address
            .as_deref()
            .map(|a| a.parse().map_err(|e| bad("address", a, e)))
            .transpose()?,
        gateway: n
            .gateway
            .as_deref()
            .map(|g| {
                g.parse()
                    .map_err(|e: std::net::AddrParseError| bad("gateway", g, e.to_string()))
            })
            .transpose()?,
        dns: n
            .dns
            .iter()
            .map(|d| {
                d.parse()
                    .map_err(|e: std::net::AddrParseError| bad("dns", d, e.to_string()))
            })
            .collect::<Result<_, _>>()?,
        search: n.search.clone(),
        hostname: n.hostname.clone(),
        publish: Vec::new(),
    })
}

/// Boots the image `parts` (verified by whoever produced them); `start`
/// is when the command started.
///
/// # Errors
/// [`RunError`]; a program that fails is a normal [`RunReport`].
pub fn run(parts: &ImageParts, opts: &RunOptions, start: Instant) -> Result<RunReport, RunError> {
    let config_bytes = parts.config.read().map_err(|source| RunError::ReadConfig {
        label: parts.label.clone(),
        source,
    })?;
    let config = BootConfig::from_bytes(&config_bytes).map_err(|source| RunError::Config {
        label: parts.label.clone(),
        source,
    })?;
    let mut argv = vec![config.entrypoint.clone().into_bytes()];
    argv.extend(
        opts.args
            .as_ref()
            .unwrap_or(&config.args)
            .iter()
            .map(|a| a.clone().into_bytes()),
    );
    let envp = merge_env(&config.env, &opts.env)?
        .into_iter()
        .map(String::into_bytes)
        .collect();
    let vm = VmConfig {
        kernel: parts.kernel.slice.clone(),
        kernel_digest: Some(parts.kernel.sha256.clone()),
        module: parts.rootfs.slice.clone(),
        guest_path: config.entrypoint.clone(),
        argv,
        envp,
        memory_mib: opts.memory_mib.unwrap_or(config.memory_mib),
        timeout: opts.timeout,
        trace_syscalls: opts.trace_syscalls,
        init: opts.init,
        cpus: opts
            .cpus
            .unwrap_or_else(|| u8::try_from(config.vcpus).unwrap_or(u8::MAX))
            .clamp(1, kiln_boot::layout::MAX_VCPUS as u8),
        stats: opts.stats,
        phases: opts.phases,
        share_image: opts.share_image,
        // `kiln run` exits right after the run.
        background_teardown: true,
        seccomp: true,
        user: opts.user,
        boot_info_version: kiln_vmm::bootinfo::VERSION,
        cmdline: config.cmdline.clone(),
        stdin: opts.stdin,
        terminal: opts.terminal,
        net: opts
            .net
            .spec(&image_net(&config).map_err(|source| RunError::Config {
                label: parts.label.clone(),
                source,
            })?),
        vsock: opts.vsock.clone(),
        disks: disks(&config, &opts.disks)?,
        volumes: volumes(&config, &opts.volumes)?,
        snapshot: opts.snapshot.clone().map(|mut s| {
            s.image = Some(image_identity(parts));
            s
        }),
        standby: opts.standby.clone(),
    };
    let mut timings = Timings::new(start);
    timings.mark(Phase::ImageVerified);
    let hv = Hypervisor::open()?;
    Ok(kiln_vmm::run(&hv, &vm, Console::stdio(), timings)?)
}

/// How a snapshot names the image it was taken from.
fn image_identity(parts: &ImageParts) -> String {
    format!("sha256:{}", parts.image_digest())
}

/// Resumes the snapshot at `path` (`kiln run --from-snapshot`); with
/// `parts`, the snapshot must come from that image. Of `opts`, standard
/// input, the terminal, the timeout, `--stats`, `--user`, `-p` and
/// `--disk` (copies of the snapshot's disks) apply (the rest was fixed
/// when the snapshot was taken).
///
/// # Errors
/// [`RunError`]; a snapshot that is corrupt or comes from another image or
/// kiln is refused before anything runs.
pub fn restore(
    path: &std::path::Path,
    parts: Option<&ImageParts>,
    opts: &RunOptions,
    start: Instant,
) -> Result<RunReport, RunError> {
    let config = restore_config(path, parts, opts);
    let timings = Timings::new(start);
    let hv = Hypervisor::open()?;
    Ok(kiln_vmm::snapshot::restore(
        &hv,
        &config,
        Console::stdio(),
        timings,
    )?)
}

/// How `opts` resume a snapshot (or a standby's checkpoint) named `path`.
fn restore_config(
    path: &std::path::Path,
    parts: Option<&ImageParts>,
    opts: &RunOptions,
) -> kiln_vmm::snapshot::RestoreConfig {
    kiln_vmm::snapshot::RestoreConfig {
        path: path.to_path_buf(),
        image: parts.map(image_identity),
        timeout: opts.timeout,
        stats: opts.stats,
        seccomp: true,
        user: opts.user,
        background_teardown: true,
        stdin: opts.stdin,
        terminal: opts.terminal,
        memory: opts.snapshot_memory,
        publish: (!opts.net.publish.is_empty()).then(|| opts.net.publish.clone()),
        disks: opts.disks.clone(),
        snapshot: opts.snapshot.clone().map(|mut s| {
            s.image = parts.map(image_identity);
            s
        }),
        warm: opts.warm.clone(),
    }
}

/// Where the warm VMs of the snapshot directory `snapshot` wait for a
/// claim (`kiln warm`): a directory of the store named after the
/// snapshot's canonical path and its state digest, so that a snapshot
/// replaced at the same path is not served by VMs warmed from the old one.
///
/// # Errors
/// When the snapshot directory or its state digest cannot be read.
pub fn warm_dir(root: &std::path::Path, snapshot: &std::path::Path) -> std::io::Result<PathBuf> {
    let canonical = std::fs::canonicalize(snapshot)?;
    let state_digest =
        std::fs::read_to_string(canonical.join(kiln_vmm::snapshot::STATE_DIGEST_FILE))?;
    let mut key = canonical.as_os_str().as_encoded_bytes().to_vec();
    key.push(b'\n');
    key.extend_from_slice(state_digest.trim().as_bytes());
    let digest = crate::oci::sha256_digest(&key);
    let hex = digest.trim_start_matches("sha256:");
    Ok(root.join("warm").join(&hex[..16]))
}

/// Follows a primary as its standby (`kiln standby --listen`), and resumes
/// its VM from the last checkpoint when the primary dies. Of `opts`,
/// standard input, the terminal, the timeout, `--stats`, `--user`, `-p`
/// and the snapshot memory mode apply to the resumed VM.
///
/// # Errors
/// [`RunError`]: the address cannot be listened on, the primary died
/// before its first checkpoint, or the resumed VM failed to run.
pub fn standby(
    listen: &str,
    silence: Duration,
    opts: &RunOptions,
    start: Instant,
) -> Result<kiln_vmm::ha::StandbyOutcome, RunError> {
    let config = kiln_vmm::ha::StandbyConfig {
        listen: listen.to_owned(),
        silence,
        resume: restore_config(
            std::path::Path::new("the standby's last checkpoint"),
            None,
            opts,
        ),
    };
    let hv = Hypervisor::open()?;
    Ok(kiln_vmm::ha::serve(
        &hv,
        &config,
        Console::stdio(),
        Timings::new(start),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_replace_and_add() {
        let base = vec!["PATH=/bin".to_string(), "A=1".to_string()];
        let env = merge_env(&base, &["A=2".into(), "B=3".into()]).unwrap();
        assert_eq!(env, ["PATH=/bin", "A=2", "B=3"]);
        assert!(merge_env(&base, &["=x".into()]).is_err());
        assert!(merge_env(&base, &["novalue".into()]).is_err());
    }
}
