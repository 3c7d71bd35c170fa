//! The OCI bundle containerd prepares for a task: `config.json` (the
//! runtime spec: the process's arguments and environment, resource
//! limits) and `rootfs/`, where the image's layers are mounted. What of it
//! becomes `kiln run`'s command line is decided here.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use containerd_shim::protos::types::mount::Mount;
use serde::Deserialize;

/// Where `kiln push --containerd` puts the image inside the container
/// form's root filesystem (`kiln_builder::oci::container::IMAGE_PATH`).
const IMAGE_IN_ROOTFS: &str = kiln_builder::oci::container::IMAGE_PATH;

/// The `PATH` containerd (and ctr) put in every spec that does not set
/// one. A kiln image has its own default PATH, which this would override
/// for no reason, so it is not passed on.
const CONTAINERD_DEFAULT_PATH: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Errors reading or preparing a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// config.json could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// config.json is not a runtime spec.
    #[error("{path} is not an OCI runtime spec: {source}")]
    Spec {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// A root filesystem mount failed.
    #[error("mounting {kind} {source_path} on {target}: {message}")]
    Mount {
        /// The mount's type (bind, overlay, …).
        kind: String,
        /// Its source.
        source_path: String,
        /// Where it was to go.
        target: PathBuf,
        /// What the mount helper said.
        message: String,
    },
    /// The root filesystem was not unmounted.
    #[error("unmounting {target}: {message}")]
    Unmount {
        /// The mount point.
        target: PathBuf,
        /// What the unmount helper said.
        message: String,
    },
    /// The image's root filesystem has no kiln image in it.
    #[error(
        "{0} is missing: this image is not the container form of a kiln image \
         (publish one with `kiln push --containerd IMAGE REF`)"
    )]
    NotKiln(PathBuf),
}

/// One task's bundle directory.
pub struct Bundle {
    dir: PathBuf,
}

/// The parts of the runtime spec kiln honours.
#[derive(Debug, Default, Deserialize)]
pub struct Spec {
    /// The program to run.
    #[serde(default)]
    pub process: Process,
    /// Linux-specific settings (resource limits).
    #[serde(default)]
    pub linux: Linux,
    /// Annotations (Kubernetes' CRI marks a pod's sandbox here).
    #[serde(default)]
    pub annotations: std::collections::HashMap<String, String>,
}

/// `process` of the runtime spec.
#[derive(Debug, Default, Deserialize)]
pub struct Process {
    /// The program's arguments (empty: the image's defaults).
    #[serde(default)]
    pub args: Vec<String>,
    /// NAME=VALUE pairs.
    #[serde(default)]
    pub env: Vec<String>,
}

/// `linux` of the runtime spec.
#[derive(Debug, Default, Deserialize)]
pub struct Linux {
    /// cgroup limits (Kubernetes' requests and limits land here).
    #[serde(default)]
    pub resources: Resources,
}

/// `linux.resources`.
#[derive(Debug, Default, Deserialize)]
pub struct Resources {
    /// Memory limits.
    #[serde(default)]
    pub memory: Option<MemoryLimits>,
    /// CPU limits.
    #[serde(default)]
    pub cpu: Option<CpuLimits>,
}

/// `linux.resources.memory`.
#[derive(Debug, Default, Deserialize)]
pub struct MemoryLimits {
    /// Bytes; absent, zero or negative: none.
    pub limit: Option<i64>,
}

/// `linux.resources.cpu`.
#[derive(Debug, Default, Deserialize)]
pub struct CpuLimits {
    /// Microseconds of CPU time per period (`--cpus` × period).
    pub quota: Option<i64>,
    /// The period, microseconds.
    pub period: Option<u64>,
}

impl Bundle {
    /// The bundle at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Bundle { dir: dir.into() }
    }

    /// The bundle directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `rootfs/`, where the image's layers are mounted.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// Reads `config.json`.
    ///
    /// # Errors
    /// [`BundleError::Read`] or [`BundleError::Spec`].
    pub fn spec(&self) -> Result<Spec, BundleError> {
        let path = self.dir.join("config.json");
        let text = std::fs::read(&path).map_err(|source| BundleError::Read {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|source| BundleError::Spec { path, source })
    }

    /// Mounts the task's root filesystem mounts (as containerd's
    /// snapshotter describes them) on `rootfs/`, in order.
    ///
    /// # Errors
    /// [`BundleError::Mount`] naming the mount that failed; the ones
    /// before it are unmounted again.
    pub fn mount_rootfs(&self, mounts: &[Mount]) -> Result<(), BundleError> {
        let target = self.rootfs();
        for mount in mounts {
            let result = containerd_shim::mount::mount_rootfs(
                Some(mount.type_.as_str()).filter(|t| !t.is_empty()),
                Some(mount.source.as_str()).filter(|s| !s.is_empty()),
                &mount.options,
                &target,
            );
            if let Err(e) = result {
                let _ = self.unmount_rootfs();
                return Err(BundleError::Mount {
                    kind: mount.type_.clone(),
                    source_path: mount.source.clone(),
                    target,
                    message: e.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Unmounts everything under `rootfs/` (nothing mounted: nothing
    /// to do).
    ///
    /// # Errors
    /// [`BundleError::Unmount`].
    pub fn unmount_rootfs(&self) -> Result<(), BundleError> {
        let target = self.rootfs();
        let Some(text) = target.to_str() else {
            return Ok(());
        };
        containerd_shim::mount::umount_recursive(Some(text), 0).map_err(|e| BundleError::Unmount {
            target: target.clone(),
            message: e.to_string(),
        })
    }

    /// The kiln image in the mounted root filesystem.
    ///
    /// # Errors
    /// [`BundleError::NotKiln`] when the image is not the container form.
    pub fn image(&self) -> Result<PathBuf, BundleError> {
        let image = self.rootfs().join(IMAGE_IN_ROOTFS);
        if image.is_file() {
            Ok(image)
        } else {
            Err(BundleError::NotKiln(image))
        }
    }
}

impl Spec {
    /// Whether this is a Kubernetes pod's sandbox (containerd's CRI or
    /// CRI-O marks it; kubelet runs it with the pod's RuntimeClass before
    /// the pod's containers) rather than an application container.
    pub fn is_pod_sandbox(&self) -> bool {
        [
            "io.kubernetes.cri.container-type",
            "io.kubernetes.cri-o.ContainerType",
        ]
        .iter()
        .any(|key| self.annotations.get(*key).is_some_and(|v| v == "sandbox"))
    }

    /// `kiln run`'s arguments for this spec: the image, `-i` when the
    /// task has a standard input, `-t` when it has a terminal, the
    /// environment, memory and vCPUs from the resource limits, and the
    /// program's arguments after `--`.
    pub fn run_args(&self, image: &Path, interactive: bool, terminal: bool) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["run".into(), image.into()];
        if interactive {
            args.push("-i".into());
        }
        if terminal {
            args.push("-t".into());
        }
        for pair in &self.process.env {
            if pair != CONTAINERD_DEFAULT_PATH {
                args.push("-e".into());
                args.push(pair.into());
            }
        }
        if let Some(mib) = self.memory_mib() {
            args.push(format!("--memory={mib}").into());
        }
        if let Some(cpus) = self.cpus() {
            args.push(format!("--cpus={cpus}").into());
        }
        if !self.process.args.is_empty() {
            args.push("--".into());
            args.extend(self.process.args.iter().map(OsString::from));
        }
        args
    }

    /// Guest memory from the memory limit: the limit in MiB, within
    /// kiln's range (the VMM's own few MiB come on top, as a container's
    /// runtime overhead does).
    fn memory_mib(&self) -> Option<u64> {
        let limit = self.linux.resources.memory.as_ref()?.limit?;
        let mib = u64::try_from(limit).ok().filter(|&b| b > 0)? >> 20;
        Some(mib.clamp(
            kiln_boot::layout::MIN_MEMORY_MIB,
            kiln_boot::layout::MAX_MEMORY_MIB,
        ))
    }

    /// vCPUs from the CPU quota: quota / period rounded up, within kiln's
    /// range (docker's `--cpus 1.5` becomes 2 vCPUs).
    fn cpus(&self) -> Option<u64> {
        let cpu = self.linux.resources.cpu.as_ref()?;
        let quota = u64::try_from(cpu.quota?).ok().filter(|&q| q > 0)?;
        let period = cpu.period.filter(|&p| p > 0).unwrap_or(100_000);
        Some(
            quota
                .div_ceil(period)
                .clamp(1, kiln_boot::layout::MAX_VCPUS),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn a_spec_without_arguments_keeps_the_images_defaults() {
        let spec = spec(
            r#"{"ociVersion":"1.0.2","process":{"args":[],"env":[
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"cwd":"/"}}"#,
        );
        assert_eq!(
            strings(spec.run_args(Path::new("/b/rootfs/kiln/image.kiln"), false, false)),
            ["run", "/b/rootfs/kiln/image.kiln"]
        );
    }

    #[test]
    fn arguments_environment_and_limits_become_run_flags() {
        let spec = spec(
            r#"{"process":{"terminal":false,"args":["/bin/sh","-c","echo hi"],
                "env":["GREETING=hello world","PATH=/opt/bin"]},
                "linux":{"resources":{"memory":{"limit":268435456},
                "cpu":{"quota":150000,"period":100000}}}}"#,
        );
        assert_eq!(
            strings(spec.run_args(Path::new("/i.kiln"), true, true)),
            [
                "run",
                "/i.kiln",
                "-i",
                "-t",
                "-e",
                "GREETING=hello world",
                "-e",
                "PATH=/opt/bin",
                "--memory=256",
                "--cpus=2",
                "--",
                "/bin/sh",
                "-c",
                "echo hi"
            ]
        );
    }

    #[test]
    fn limits_outside_kilns_range_are_clamped_and_absent_ones_ignored() {
        let tiny =
            spec(r#"{"linux":{"resources":{"memory":{"limit":1048576},"cpu":{"quota":-1}}}}"#);
        assert_eq!(tiny.memory_mib(), Some(kiln_boot::layout::MIN_MEMORY_MIB));
        assert_eq!(tiny.cpus(), None);
        let huge = spec(r#"{"linux":{"resources":{"cpu":{"quota":6400000,"period":100000}}}}"#);
        assert_eq!(huge.cpus(), Some(kiln_boot::layout::MAX_VCPUS));
        assert_eq!(huge.memory_mib(), None);
        assert_eq!(spec("{}").cpus(), None);
    }

    #[test]
    fn a_pod_sandbox_is_recognised_by_its_cri_annotation() {
        let sandbox = spec(r#"{"annotations":{"io.kubernetes.cri.container-type":"sandbox"}}"#);
        assert!(sandbox.is_pod_sandbox());
        let app = spec(r#"{"annotations":{"io.kubernetes.cri.container-type":"container"}}"#);
        assert!(!app.is_pod_sandbox());
        assert!(!spec("{}").is_pod_sandbox());
    }

    #[test]
    fn a_root_filesystem_without_the_image_names_kiln_push_containerd() {
        let dir = std::env::temp_dir().join(format!("kiln-bundle-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("rootfs/bin")).unwrap();
        let err = Bundle::new(&dir).image().unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("kiln/image.kiln is missing"), "{err}");
        assert!(err.contains("kiln push --containerd"), "{err}");
    }

    #[test]
    fn a_broken_config_is_named() {
        let dir = std::env::temp_dir().join(format!("kiln-bundle-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), "{\"process\": [").unwrap();
        let err = Bundle::new(&dir).spec().unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            err.contains("config.json is not an OCI runtime spec"),
            "{err}"
        );
    }
}
