//! The appliance manifest (TOML): what goes into an image and how it boots.
//!
//! ```toml
//! name = "hello"
//! version = "1.0.0"
//! max_size = "512KiB"            # optional, at most 32 MiB (the default)
//!
//! [program]
//! path = "../target/programs/hello-glibc"   # host ELF, relative to this file
//! guest_path = "/app/hello"                 # optional (default /app/<file name>)
//! args = ["world"]                          # default arguments
//! libraries = ["libnss_dns.so.2"]           # dlopen()ed libraries to add
//!
//! [env]
//! GREETING = "hello"
//!
//! [[files]]
//! src = "hello.conf"
//! dst = "/etc/hello.conf"
//! mode = "0644"
//!
//! [[dirs]]
//! path = "/var/lib/hello"
//! mode = "0755"
//!
//! [vm]
//! memory = 64        # MiB
//! vcpus = 1
//! cmdline = ""       # kernel options
//!
//! [net]                           # the appliance talks to the network
//! mode = "user"                   # default backend: user (passt), tap, none
//! address = "10.0.2.15/24"        # optional: the guest's IPv4 address
//! gateway = "10.0.2.2"            # optional
//! dns = ["10.0.2.3"]              # optional: /etc/resolv.conf
//! search = ["example.com"]        # optional
//! hostname = "web"                # optional: uname, /etc/hostname, /etc/hosts
//! ports = [80]                    # the ports it serves (shown by kiln inspect)
//!
//! [[volumes]]                     # data that outlives the appliance
//! path = "/var/lib/app"           # run without -v for it: a directory of
//!                                 # the kiln home, kept between runs
//!
//! [[disks]]                       # run without --disk: /dev/vda, … are
//! size = "64MiB"                  # raw files of the kiln home, kept
//! ```
//!
//! Unknown keys are errors, and every error names the file, line, column
//! and field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// The largest image kiln builds (the footprint of VMware ESX Server 3i).
pub const MAX_IMAGE_SIZE: u64 = 32 << 20;

/// A manifest problem, located in its file.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file cannot be read.
    #[error("{path}: cannot read the manifest: {error}")]
    Read {
        /// The manifest.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A syntax, type or schema error, or a bad value.
    #[error("{path}:{line}:{column}: {field}{message}")]
    Invalid {
        /// The manifest.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// "field `a.b`: " when known, else empty.
        field: String,
        /// What is wrong and what was expected.
        message: String,
    },
}

/// A file mode written as an octal string (`"0644"`) or an integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode(pub u32);

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u32),
            Text(String),
        }
        let value = match Raw::deserialize(d)? {
            Raw::Int(v) => v,
            Raw::Text(t) => u32::from_str_radix(t.trim_start_matches("0o"), 8).map_err(|_| {
                serde::de::Error::custom(format!(
                    "`{t}` is not an octal file mode such as \"0644\""
                ))
            })?,
        };
        if value > 0o7777 {
            return Err(serde::de::Error::custom(format!(
                "mode {value:o} is out of range (at most 7777 octal)"
            )));
        }
        Ok(Mode(value))
    }
}

/// A size in bytes, written as an integer or with a unit (`"512KiB"`, `"4MiB"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(v) => Ok(Size(v)),
            Raw::Text(t) => parse_size(&t).map(Size).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "`{t}` is not a size such as 4194304, \"512KiB\" or \"4MiB\""
                ))
            }),
        }
    }
}

/// Parses `"512KiB"`, `"4 MiB"`, `"1048576"`.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// `[program]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Program {
    /// The program on the host (relative paths are relative to the manifest).
    pub path: Spanned<PathBuf>,
    /// Its path inside the guest.
    pub guest_path: Option<Spanned<String>>,
    /// Default arguments (argv[1..]); `kiln run IMAGE -- ARGS` replaces them.
    #[serde(default)]
    pub args: Vec<String>,
    /// Shared libraries the program loads with dlopen(): sonames or paths.
    #[serde(default)]
    pub libraries: Vec<Spanned<String>>,
}

/// `[[files]]`: a host file copied into the image.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Host path (relative to the manifest).
    pub src: Spanned<PathBuf>,
    /// Guest path.
    pub dst: Spanned<String>,
    /// Mode (default: the host file's permission bits).
    pub mode: Option<Mode>,
}

/// `[[dirs]]`: an (empty) directory in the image.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirEntry {
    /// Guest path.
    pub path: Spanned<String>,
    /// Mode (default 0755).
    pub mode: Option<Mode>,
}

fn default_memory() -> u64 {
    64
}

fn default_vcpus() -> u32 {
    1
}

/// `[vm]`: how the appliance boots.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSettings {
    /// Guest RAM in MiB.
    #[serde(default = "default_memory")]
    pub memory: u64,
    /// vCPUs.
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    /// Kernel command line options.
    #[serde(default)]
    pub cmdline: String,
}

impl Default for VmSettings {
    fn default() -> Self {
        Self {
            memory: default_memory(),
            vcpus: default_vcpus(),
            cmdline: String::new(),
        }
    }
}

/// `[net]`: how the appliance is networked by default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetSettings {
    /// Default backend: user, tap, tap=NAME, none.
    pub mode: Option<Spanned<String>>,
    /// The guest's IPv4 address/prefix.
    pub address: Option<Spanned<String>>,
    /// The guest's IPv4 gateway.
    pub gateway: Option<Spanned<String>>,
    /// Name servers.
    #[serde(default)]
    pub dns: Vec<Spanned<String>>,
    /// DNS search domains.
    #[serde(default)]
    pub search: Vec<String>,
    /// Host name.
    pub hostname: Option<Spanned<String>>,
    /// The ports the appliance serves.
    #[serde(default)]
    pub ports: Vec<u16>,
}

/// A parsed manifest.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Image name (letters, digits, `-`, `_`, `.`).
    pub name: Spanned<String>,
    /// Image version.
    pub version: String,
    /// The program.
    pub program: Program,
    /// Default environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Extra files.
    #[serde(default)]
    pub files: Vec<FileEntry>,
    /// Extra directories.
    #[serde(default)]
    pub dirs: Vec<DirEntry>,
    /// Boot settings.
    #[serde(default)]
    pub vm: VmSettings,
    /// Size budget of the image (at most [`MAX_IMAGE_SIZE`]).
    pub max_size: Option<Spanned<Size>>,
    /// Networking.
    pub net: Option<NetSettings>,
    /// Mistaken for `[net]`.
    pub network: Option<Spanned<toml::Value>>,
    /// Directories whose data outlives the appliance.
    #[serde(default)]
    pub volumes: Vec<VolumeEntry>,
    /// Raw disks the appliance gets by default.
    #[serde(default)]
    pub disks: Vec<DiskEntry>,
}

/// `[[volumes]]`: a guest directory whose data must outlive the appliance.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeEntry {
    /// The guest path (absolute).
    pub path: Spanned<String>,
}

/// `[[disks]]`: a raw disk the appliance gets when run without `--disk`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskEntry {
    /// Its size.
    pub size: Spanned<Size>,
}

/// Largest default disk (1 TiB; the file is sparse).
pub const MAX_DISK_SIZE: u64 = 1 << 40;

/// A manifest with the file it came from, for locating errors.
#[derive(Debug)]
pub struct LoadedManifest {
    /// The manifest.
    pub manifest: Manifest,
    /// Its path.
    pub path: PathBuf,
    /// Its text.
    pub source: String,
}

/// 1-based (line, column) of byte offset `at` in `text`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// The dotted key written on the line holding byte `at`: the `[table]`
/// above it plus the key before `=` (best effort, for messages).
fn field_at(text: &str, at: usize) -> Option<String> {
    let before = &text[..at.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line
        .split('=')
        .next()
        .filter(|_| line.contains('='))
        .map(str::trim)?;
    let table = text[..line_start].lines().rev().find_map(|l| {
        let l = l.trim();
        l.strip_prefix("[[")
            .and_then(|r| r.strip_suffix("]]"))
            .or_else(|| l.strip_prefix('[').and_then(|r| r.strip_suffix(']')))
            .map(str::trim)
    });
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_string(),
    })
}

impl LoadedManifest {
    /// An error at byte span `span` of the manifest.
    pub fn error_at(
        &self,
        span: std::ops::Range<usize>,
        message: impl Into<String>,
    ) -> ManifestError {
        let (line, column) = line_col(&self.source, span.start);
        let field = field_at(&self.source, span.start)
            .map(|f| format!("field `{f}`: "))
            .unwrap_or_default();
        ManifestError::Invalid {
            path: self.path.clone(),
            line,
            column,
            field,
            message: message.into(),
        }
    }

    /// A host path from the manifest, relative to the manifest's folder.
    pub fn host_path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.path.parent().unwrap_or(Path::new(".")).join(p)
        }
    }
}

/// Reads and checks the manifest at `path`.
///
/// # Errors
/// [`ManifestError`] with the file, line, column and field at fault.
pub fn load(path: &Path) -> Result<LoadedManifest, ManifestError> {
    let source = std::fs::read_to_string(path).map_err(|error| ManifestError::Read {
        path: path.into(),
        error,
    })?;
    parse(path, source)
}

/// Parses manifest text `source` (from `path`, for messages).
///
/// # Errors
/// As [`load`].
pub fn parse(path: &Path, source: String) -> Result<LoadedManifest, ManifestError> {
    let manifest: Manifest = match toml::from_str(&source) {
        Ok(m) => m,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let (line, column) = line_col(&source, span.start);
            let field = field_at(&source, span.start)
                .map(|f| format!("field `{f}`: "))
                .unwrap_or_default();
            return Err(ManifestError::Invalid {
                path: path.into(),
                line,
                column,
                field,
                message: e.message().trim().to_string(),
            });
        }
    };
    let loaded = LoadedManifest {
        manifest,
        path: path.into(),
        source,
    };
    validate(&loaded)?;
    Ok(loaded)
}

fn validate(l: &LoadedManifest) -> Result<(), ManifestError> {
    let m = &l.manifest;
    let name = m.name.get_ref();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        || name.starts_with('.')
    {
        return Err(l.error_at(
            m.name.span(),
            format!("`{name}` is not an image name (letters, digits, -, _ and .)"),
        ));
    }
    if let Some(gp) = &m.program.guest_path {
        check_guest_path(l, gp)?;
    }
    for f in &m.files {
        check_guest_path(l, &f.dst)?;
    }
    for d in &m.dirs {
        check_guest_path(l, &d.path)?;
    }
    for key in m.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(l.error_at(
                0..0,
                format!("environment variable name `{key}` is invalid"),
            ));
        }
    }
    use kiln_boot::layout::{MAX_MEMORY_MIB, MIN_MEMORY_MIB};
    if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&m.vm.memory) {
        return Err(l.error_at(
            span_of_key(&l.source, "memory"),
            format!(
                "memory = {} MiB is out of range ({MIN_MEMORY_MIB} to {MAX_MEMORY_MIB})",
                m.vm.memory
            ),
        ));
    }
    if !(1..=kiln_boot::layout::MAX_VCPUS).contains(&u64::from(m.vm.vcpus)) {
        return Err(l.error_at(
            span_of_key(&l.source, "vcpus"),
            format!(
                "vcpus = {} is out of range (1 to {})",
                m.vm.vcpus,
                kiln_boot::layout::MAX_VCPUS
            ),
        ));
    }
    if let Some(size) = &m.max_size {
        if size.get_ref().0 > MAX_IMAGE_SIZE {
            return Err(l.error_at(
                size.span(),
                format!(
                    "max_size {} is above the 32 MiB limit of kiln images",
                    size.get_ref().0
                ),
            ));
        }
    }
    if let Some(v) = &m.network {
        return Err(l.error_at(
            v.span(),
            "there is no `[network]` table: network settings go in `[net]`".to_string(),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for v in &m.volumes {
        let spec = format!("volume:{}", v.path.get_ref());
        if let Err(e) = spec.parse::<kiln_vmm::devices::virtio::fs::VolumeSpec>() {
            return Err(l.error_at(v.path.span(), e.replace("volume:", "")));
        }
        if !seen.insert(v.path.get_ref().trim_end_matches('/').to_string()) {
            return Err(l.error_at(
                v.path.span(),
                format!("volume {} is listed twice", v.path.get_ref()),
            ));
        }
    }
    for d in &m.disks {
        let size = d.size.get_ref().0;
        if size < 4096 || size % 512 != 0 || size > MAX_DISK_SIZE {
            return Err(l.error_at(
                d.size.span(),
                format!(
                    "disk size {size} must be a whole number of 512-byte sectors from 4 KiB to 1 TiB"
                ),
            ));
        }
    }
    if m.disks.len() + m.volumes.len() > 8 {
        return Err(l.error_at(
            m.name.span(),
            "at most 8 volumes and disks together".to_string(),
        ));
    }
    if let Some(n) = &m.net {
        validate_net(l, n)?;
    }
    Ok(())
}

/// Checks `[net]`'s values the way the runtime will read them.
fn validate_net(l: &LoadedManifest, n: &NetSettings) -> Result<(), ManifestError> {
    let check = |v: &Spanned<String>, ok: Result<(), String>| match ok {
        Ok(()) => Ok(()),
        Err(e) => Err(l.error_at(v.span(), e)),
    };
    if let Some(v) = &n.mode {
        check(v, v.get_ref().parse::<kiln_vmm::net::Mode>().map(drop))?;
    }
    if let Some(v) = &n.address {
        check(v, v.get_ref().parse::<kiln_vmm::net::Cidr>().map(drop))?;
    }
    if let Some(v) = &n.gateway {
        check(
            v,
            v.get_ref()
                .parse::<std::net::Ipv4Addr>()
                .map(drop)
                .map_err(|_| format!("`{}` is not an IPv4 address", v.get_ref())),
        )?;
    }
    for v in &n.dns {
        check(
            v,
            v.get_ref()
                .parse::<std::net::IpAddr>()
                .map(drop)
                .map_err(|_| format!("`{}` is not an IP address", v.get_ref())),
        )?;
    }
    if let Some(v) = &n.hostname {
        let h = v.get_ref();
        let ok = !h.is_empty()
            && h.len() <= 64
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        check(
            v,
            if ok {
                Ok(())
            } else {
                Err(format!("`{h}` is not a host name"))
            },
        )?;
    }
    Ok(())
}

/// Span of the first `key =` in the text (for values without a Spanned).
fn span_of_key(text: &str, key: &str) -> std::ops::Range<usize> {
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_start().starts_with(key) && line.contains('=') {
            let start = at + line.find(key).unwrap_or(0);
            return start..start + key.len();
        }
        at += line.len();
    }
    0..0
}

/// A guest path must be absolute, normalised and stay inside the rootfs.
fn check_guest_path(l: &LoadedManifest, p: &Spanned<String>) -> Result<(), ManifestError> {
    let path = p.get_ref();
    let bad = if !path.starts_with('/') {
        Some("is not absolute")
    } else if path.split('/').any(|c| c == "..") {
        Some("escapes the rootfs with `..`")
    } else if path.split('/').any(|c| c == ".")
        || path.contains("//")
        || (path.len() > 1 && path.ends_with('/'))
    {
        Some("is not normalised (no `.`, `//` or trailing `/`)")
    } else if path == "/" {
        Some("is the root directory itself")
    } else if path.contains('\0') {
        Some("contains a NUL byte")
    } else {
        None
    };
    match bad {
        Some(why) => Err(l.error_at(p.span(), format!("guest path `{path}` {why}"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(Path::new("m.toml"), text.into())
            .unwrap_err()
            .to_string()
    }

    const GOOD: &str = "name = \"hello\"\nversion = \"1.0\"\n[program]\npath = \"hello\"\n";

    #[test]
    fn parses_a_minimal_manifest_with_defaults() {
        let m = parse(Path::new("dir/m.toml"), GOOD.into()).unwrap();
        assert_eq!(m.manifest.vm.memory, 64);
        assert_eq!(
            m.host_path(m.manifest.program.path.get_ref()),
            Path::new("dir/hello")
        );
    }

    #[test]
    fn unknown_keys_wrong_types_and_missing_fields_are_located() {
        let e = err(&format!("{GOOD}colour = \"red\"\n"));
        assert!(e.starts_with("m.toml:5:1: "), "{e}");
        assert!(e.contains("unknown field `colour`"), "{e}");
        let e = err("name = \"h\"\nversion = \"1\"\n[program]\npath = 3\n");
        assert!(e.starts_with("m.toml:4:8: field `program.path`: "), "{e}");
        assert!(e.contains("expected"), "{e}");
        let e = err("version = \"1\"\n[program]\npath = \"p\"\n");
        assert!(e.contains("missing field `name`"), "{e}");
    }

    #[test]
    fn values_are_checked() {
        let e = err(&format!(
            "{GOOD}[[files]]\nsrc = \"a\"\ndst = \"/etc/../../x\"\n"
        ));
        assert!(
            e.contains("m.toml:7:7") && e.contains("escapes the rootfs"),
            "{e}"
        );
        let e = err(&format!("{GOOD}[[dirs]]\npath = \"/d\"\nmode = \"0999\"\n"));
        assert!(e.contains("not an octal file mode"), "{e}");
        let e = err(&format!("max_size = \"64MiB\"\n{GOOD}"));
        assert!(e.contains("above the 32 MiB limit"), "{e}");
        let e = err(&format!("{GOOD}[network]\ntap = \"tap0\"\n"));
        assert!(e.contains("go in `[net]`"), "{e}");
        let e = err(&format!("{GOOD}[net]\naddress = \"10.0.2.300/24\"\n"));
        assert!(
            e.contains("m.toml:") && e.contains("not an IP address"),
            "{e}"
        );
        let e = err(&format!("{GOOD}[net]\nmode = \"bridge\"\n"));
        assert!(e.contains("unknown network"), "{e}");
        let e = err(&format!("{GOOD}[net]\nhostname = \"no spaces\"\n"));
        assert!(e.contains("not a host name"), "{e}");
        let e = err(&format!("{GOOD}[net]\nport = 80\n"));
        assert!(e.contains("unknown field"), "{e}");
        for bad in [0, 5] {
            let e = err(&format!("{GOOD}[vm]\nvcpus = {bad}\n"));
            assert!(
                e.contains(&format!("vcpus = {bad} is out of range (1 to 4)")),
                "{e}"
            );
        }
        let m = parse(Path::new("m.toml"), format!("{GOOD}[vm]\nvcpus = 2\n")).unwrap();
        assert_eq!(m.manifest.vm.vcpus, 2);
        assert_eq!(parse_size("512KiB"), Some(512 << 10));
        assert_eq!(parse_size("4 MiB"), Some(4 << 20));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("lots"), None);
    }
}
