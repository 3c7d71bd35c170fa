//! The boot configuration carried in an image's config section: what to
//! run and how. JSON with a fixed field order, so the same manifest always
//! gives the same bytes.

use serde::{Deserialize, Serialize};

/// Version of this JSON layout.
pub const CONFIG_VERSION: u32 = 1;

/// A library listed in the configuration (for `kiln inspect`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigLibrary {
    /// Name asked for (soname or path).
    pub name: String,
    /// Where it is in the rootfs.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

/// What the builder found out about the program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramInfo {
    /// "static", "static-pie" or "dynamic".
    pub linkage: String,
    /// PT_INTERP, for dynamic programs.
    pub interpreter: Option<String>,
    /// DT_NEEDED of the program itself.
    pub needed: Vec<String>,
    /// Every shared library in the image.
    pub libraries: Vec<ConfigLibrary>,
}

/// The boot configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootConfig {
    /// [`CONFIG_VERSION`].
    pub config_version: u32,
    /// Image name.
    pub name: String,
    /// Image version.
    pub version: String,
    /// The program's path in the rootfs.
    pub entrypoint: String,
    /// Default arguments (argv[1..]).
    pub args: Vec<String>,
    /// Default environment, `NAME=value`, sorted by name.
    pub env: Vec<String>,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// Kernel command-line options.
    pub cmdline: String,
    /// The analysis of the program.
    pub program: ProgramInfo,
    /// The manifest's `[net]` (absent when it has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<ImageNet>,
    /// The manifest's `[[volumes]]`: guest paths whose data outlives the
    /// appliance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// The manifest's `[[disks]]`: sizes in bytes of the default disks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<u64>,
}

/// An image's network settings (the manifest's `[net]`), as text the
/// runtime parses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageNet {
    /// The default backend (`user`, `tap`, `none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The guest's IPv4 address/prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The guest's IPv4 gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// DNS search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The ports the appliance serves (documentation for `kiln inspect`;
    /// publishing them is `-p`'s job).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
}

impl BootConfig {
    /// The JSON bytes (pretty, with a trailing newline).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a BootConfig always serialises");
        v.push(b'\n');
        v
    }

    /// Parses the JSON bytes.
    ///
    /// # Errors
    /// [`ConfigError`] when the bytes are not a configuration of this
    /// version.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ConfigError> {
        let c: BootConfig = serde_json::from_slice(bytes).map_err(ConfigError::Invalid)?;
        if c.config_version != CONFIG_VERSION {
            return Err(ConfigError::Version(c.config_version));
        }
        // An image is untrusted input: what it asks of the host is checked
        // as the builder checks a manifest.
        use kiln_boot::layout::{MAX_MEMORY_MIB, MAX_VCPUS, MIN_MEMORY_MIB};
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&c.memory_mib) {
            return Err(ConfigError::Memory(c.memory_mib));
        }
        if !(1..=MAX_VCPUS).contains(&u64::from(c.vcpus)) {
            return Err(ConfigError::Vcpus(c.vcpus));
        }
        Ok(c)
    }
}

/// Why bytes are not a boot configuration this kiln can use.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not the JSON of a boot configuration.
    #[error("invalid boot configuration: {0}")]
    Invalid(#[source] serde_json::Error),
    /// A version this kiln does not read.
    #[error("boot configuration version {0} is not supported (this kiln reads {CONFIG_VERSION})")]
    Version(u32),
    /// A `[net]` value the runtime cannot use.
    #[error("{0}")]
    Net(String),
    /// Guest memory out of range.
    #[error(
        "boot configuration asks for {0} MiB of guest memory (allowed: {min} to {max})",
        min = kiln_boot::layout::MIN_MEMORY_MIB,
        max = kiln_boot::layout::MAX_MEMORY_MIB
    )]
    Memory(u64),
    /// vCPU count out of range.
    #[error(
        "boot configuration asks for {0} vCPUs (allowed: 1 to {max})",
        max = kiln_boot::layout::MAX_VCPUS
    )]
    Vcpus(u32),
}
