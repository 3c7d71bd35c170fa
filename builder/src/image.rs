//! The `.kiln` image file: a one-page header, then content-addressed
//! sections (boot config JSON, guest kernel ELF, rootfs tar), each starting
//! on a 4096-byte boundary so the runtime can map the kernel and the rootfs
//! straight from the file. docs/image-format.md describes the bytes.
//!
//! Reading an image checks everything before anything is used: magic,
//! version, the header's own digest, that the file has exactly the size the
//! header states, that sections are aligned, inside the file and disjoint,
//! and every section's sha256.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// First bytes of every image.
pub const MAGIC: &[u8; 8] = b"KILNIMG\0";
/// Format version this code reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the header; sections follow.
pub const HEADER_SIZE: u64 = 4096;
/// Alignment of section offsets.
pub const SECTION_ALIGN: u64 = 4096;
const SECTION_ENTRY: usize = 64;
const MAX_SECTIONS: u32 = 16;

/// What a section holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SectionKind {
    /// Boot configuration (JSON).
    Config,
    /// The guest kernel (ELF).
    Kernel,
    /// The root file system (tar).
    Rootfs,
}

impl SectionKind {
    const ALL: [SectionKind; 3] = [
        SectionKind::Config,
        SectionKind::Kernel,
        SectionKind::Rootfs,
    ];

    fn code(self) -> u32 {
        match self {
            SectionKind::Config => 1,
            SectionKind::Kernel => 2,
            SectionKind::Rootfs => 3,
        }
    }

    fn from_code(c: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == c)
    }

    /// The media type the section has as an OCI blob.
    pub fn media_type(self) -> &'static str {
        match self {
            SectionKind::Config => "application/vnd.kiln.config.v1+json",
            SectionKind::Kernel => "application/vnd.kiln.kernel.v1.elf",
            SectionKind::Rootfs => "application/vnd.kiln.rootfs.v1.tar",
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            SectionKind::Config => "config",
            SectionKind::Kernel => "kernel",
            SectionKind::Rootfs => "rootfs",
        }
    }
}

/// One section as the header describes it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Section {
    /// What it holds.
    pub kind: SectionKind,
    /// Offset in the file.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// sha256 of its bytes, lower-case hex.
    pub sha256: String,
}

/// Why an image is refused.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file cannot be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The image.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// Not a kiln image.
    #[error("{0}: not a kiln image (bad magic)")]
    BadMagic(PathBuf),
    /// Larger than any kiln image can be.
    #[error(
        "{path}: {size} bytes is larger than any kiln image ({max} bytes at most)",
        max = crate::manifest::MAX_IMAGE_SIZE
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// A format version this kiln does not read.
    #[error("{path}: image format version {version} is not supported (this kiln reads version {FORMAT_VERSION})")]
    Version {
        /// The image.
        path: PathBuf,
        /// The version found.
        version: u32,
    },
    /// The file is shorter or longer than its header says.
    #[error("{path}: image is {actual} bytes but its header says {expected}: the file is truncated or has trailing data")]
    Size {
        /// The image.
        path: PathBuf,
        /// Size stated by the header.
        expected: u64,
        /// Size of the file.
        actual: u64,
    },
    /// The header does not match its own digest.
    #[error("{0}: the image header is corrupted (its sha256 does not match)")]
    HeaderDigest(PathBuf),
    /// The header is inconsistent.
    #[error("{path}: the image header is invalid: {reason}")]
    Header {
        /// The image.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A section's bytes do not match its digest.
    #[error(
        "{path}: the {kind} section is corrupted: sha256 is {actual}, the header says {expected}"
    )]
    SectionDigest {
        /// The image.
        path: PathBuf,
        /// Which section.
        kind: &'static str,
        /// Digest in the header.
        expected: String,
        /// Digest of the bytes.
        actual: String,
    },
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn round_up(v: u64) -> u64 {
    v.div_ceil(SECTION_ALIGN) * SECTION_ALIGN
}

/// The bytes of an image built from `sections` (in this order).
pub fn encode(sections: &[(SectionKind, &[u8])]) -> Vec<u8> {
    let entries: Vec<(SectionKind, u64, [u8; 32])> = sections
        .iter()
        .map(|(kind, data)| (*kind, data.len() as u64, Sha256::digest(data).into()))
        .collect();
    let mut out = encode_header(&entries);
    for (_, data) in sections {
        out.extend_from_slice(data);
        out.resize(round_up(out.len() as u64) as usize, 0);
    }
    out
}

/// The header of an image whose sections have these kinds, sizes and
/// sha256 digests (in this order). Its sha256 is the image's digest, so
/// the digest of sections kept elsewhere (in the local store) is known
/// without assembling the file.
pub fn encode_header(entries: &[(SectionKind, u64, [u8; 32])]) -> Vec<u8> {
    let mut header = vec![0u8; HEADER_SIZE as usize];
    let mut offset = HEADER_SIZE;
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&(entries.len() as u32).to_le_bytes());
    for (i, (kind, size, digest)) in entries.iter().enumerate() {
        let e = 32 + i * SECTION_ENTRY;
        header[e..e + 4].copy_from_slice(&kind.code().to_le_bytes());
        header[e + 8..e + 16].copy_from_slice(&offset.to_le_bytes());
        header[e + 16..e + 24].copy_from_slice(&size.to_le_bytes());
        header[e + 32..e + 64].copy_from_slice(digest);
        offset = round_up(offset + size);
    }
    header[16..24].copy_from_slice(&offset.to_le_bytes());
    let table_end = 32 + entries.len() * SECTION_ENTRY;
    let header_digest = Sha256::digest(&header[..table_end]);
    header[table_end..table_end + 32].copy_from_slice(&header_digest);
    header
}

/// Writes image bytes to `path` through a temporary file renamed into
/// place, so a failed or interrupted build never leaves a partial image.
///
/// # Errors
/// [`ImageError::Io`].
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let io = |error| ImageError::Io {
        path: path.into(),
        error,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    kiln_vmm::write_durably(path, bytes, 0o644).map_err(io)
}

/// A verified image.
#[derive(Clone, Debug)]
pub struct Image {
    /// Its path.
    pub path: PathBuf,
    /// The open file.
    pub file: Arc<File>,
    /// Its sections.
    pub sections: Vec<Section>,
    /// sha256 of the header (which commits to every section): the image's id.
    pub digest: String,
    /// Total size.
    pub size: u64,
}

impl Image {
    /// Opens `path` and verifies it completely.
    ///
    /// # Errors
    /// [`ImageError`] saying what is wrong.
    pub fn open(path: &Path) -> Result<Image, ImageError> {
        Self::open_inner(path, None)
    }

    /// Opens `path` like [`Image::open`], but skips hashing the sections
    /// when `cache` records that this very file — same device, inode,
    /// size, modification and change times, and header digest — was fully
    /// verified before. Any write to the file changes its change time
    /// (which no user can set back), so a modified image is verified again.
    /// The header, the bounds and the zero padding are always checked.
    /// After a full verification, the file is recorded in `cache`.
    ///
    /// # Errors
    /// [`ImageError`] saying what is wrong.
    pub fn open_cached(path: &Path, cache: &Path) -> Result<Image, ImageError> {
        Self::open_inner(path, Some(cache))
    }

    fn open_inner(path: &Path, cache: Option<&Path>) -> Result<Image, ImageError> {
        use std::os::unix::fs::MetadataExt;
        let io = |error| ImageError::Io {
            path: path.into(),
            error,
        };
        let file = File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        // Sections are read whole into memory (import, push, export): a
        // file no build could have made is refused before any of that.
        if meta.size() > crate::manifest::MAX_IMAGE_SIZE {
            return Err(ImageError::TooLarge {
                path: path.into(),
                size: meta.size(),
            });
        }
        let stamp = format!(
            "{} {} {} {} {}",
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec()
        );
        let key = cache.map(|c| c.join(format!("{}-{}", meta.dev(), meta.ino())));
        let recorded = key.as_ref().and_then(|k| std::fs::read_to_string(k).ok());
        let known_digest = recorded
            .as_deref()
            .and_then(|r| r.strip_prefix(&stamp))
            .and_then(|r| r.strip_prefix(' '))
            .map(str::trim);
        // SAFETY: a read-only private mapping that kiln only reads; if the
        // file changes while mapped, the digests below catch it or the boot
        // uses the new (verified-at-this-moment) bytes.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        let (sections, digest, size) = parse(path, &map, meta.size(), known_digest.is_none())?;
        if let Some(key) = &key {
            if known_digest.is_some_and(|k| k != digest) {
                // Same stamp, another header: not the file that was verified.
                let _ = std::fs::remove_file(key);
                return Self::open(path);
            }
            if known_digest.is_none()
                && key
                    .parent()
                    .is_some_and(|d| std::fs::create_dir_all(d).is_ok())
            {
                // Best effort: a cache that cannot be written costs speed only.
                let _ = kiln_vmm::write_atomically(key, format!("{stamp} {digest}\n").as_bytes());
            }
        }
        Ok(Image {
            path: path.into(),
            file: Arc::new(file),
            sections,
            digest,
            size,
        })
    }

    /// The section of `kind`.
    pub fn section(&self, kind: SectionKind) -> &Section {
        self.sections
            .iter()
            .find(|s| s.kind == kind)
            .expect("verified images have every section")
    }

    /// Reads a section's bytes.
    ///
    /// # Errors
    /// [`ImageError::Io`].
    pub fn read(&self, kind: SectionKind) -> Result<Vec<u8>, ImageError> {
        use std::os::unix::fs::FileExt;
        let s = self.section(kind);
        let mut buf = vec![0u8; s.size as usize];
        self.file
            .read_exact_at(&mut buf, s.offset)
            .map_err(|error| ImageError::Io {
                path: self.path.clone(),
                error,
            })?;
        Ok(buf)
    }
}

/// Checks image bytes held in memory as [`Image::open`] checks a file
/// (header, bounds, padding and every section's digest); returns the
/// sections. For tools and fuzzing: no file is involved.
///
/// # Errors
/// [`ImageError`] saying what is wrong.
pub fn verify_bytes(data: &[u8]) -> Result<Vec<Section>, ImageError> {
    if data.len() as u64 > crate::manifest::MAX_IMAGE_SIZE {
        return Err(ImageError::TooLarge {
            path: "(bytes)".into(),
            size: data.len() as u64,
        });
    }
    parse(Path::new("(bytes)"), data, data.len() as u64, true).map(|(sections, _, _)| sections)
}

/// Checks the image bytes `data` (of a file of `actual` bytes).
fn parse(
    path: &Path,
    data: &[u8],
    actual: u64,
    hash_sections: bool,
) -> Result<(Vec<Section>, String, u64), ImageError> {
    let header_err = |reason: String| ImageError::Header {
        path: path.into(),
        reason,
    };
    if data.len() < 32 || &data[..8] != MAGIC {
        return Err(ImageError::BadMagic(path.into()));
    }
    let word = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().unwrap_or_default());
    let quad = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().unwrap_or_default());
    let version = word(8);
    if version != FORMAT_VERSION {
        return Err(ImageError::Version {
            path: path.into(),
            version,
        });
    }
    if (data.len() as u64) < HEADER_SIZE {
        return Err(ImageError::Size {
            path: path.into(),
            expected: HEADER_SIZE,
            actual,
        });
    }
    let count = word(12);
    if count == 0 || count > MAX_SECTIONS {
        return Err(header_err(format!(
            "{count} sections (expected 1 to {MAX_SECTIONS})"
        )));
    }
    let table_end = 32 + count as usize * SECTION_ENTRY;
    if Sha256::digest(&data[..table_end]).as_slice() != &data[table_end..table_end + 32] {
        return Err(ImageError::HeaderDigest(path.into()));
    }
    let expected = quad(16);
    if expected != actual {
        return Err(ImageError::Size {
            path: path.into(),
            expected,
            actual,
        });
    }
    let mut sections: Vec<Section> = Vec::new();
    for i in 0..count as usize {
        let e = 32 + i * SECTION_ENTRY;
        let code = word(e);
        let kind = SectionKind::from_code(code)
            .ok_or_else(|| header_err(format!("unknown section kind {code}")))?;
        let (offset, size) = (quad(e + 8), quad(e + 16));
        let end = offset
            .checked_add(size)
            .ok_or_else(|| header_err(format!("{} section size overflows", kind.name())))?;
        if offset < HEADER_SIZE || !offset.is_multiple_of(SECTION_ALIGN) || end > actual {
            return Err(header_err(format!(
                "the {} section at {offset}+{size} lies outside the {actual}-byte file or is misaligned",
                kind.name()
            )));
        }
        if let Some(other) = sections
            .iter()
            .find(|s| s.kind == kind || (offset < s.offset + s.size && s.offset < end))
        {
            return Err(header_err(format!(
                "the {} section overlaps the {} section",
                kind.name(),
                other.kind.name()
            )));
        }
        let stated = hex(&data[e + 32..e + 64]);
        let computed = if hash_sections {
            hex(&Sha256::digest(&data[offset as usize..end as usize]))
        } else {
            stated.clone()
        };
        if stated != computed {
            return Err(ImageError::SectionDigest {
                path: path.into(),
                kind: kind.name(),
                expected: stated,
                actual: computed,
            });
        }
        sections.push(Section {
            kind,
            offset,
            size,
            sha256: computed,
        });
    }
    for kind in SectionKind::ALL {
        if !sections.iter().any(|s| s.kind == kind) {
            return Err(header_err(format!("no {} section", kind.name())));
        }
    }
    // Nothing the digests do not cover may carry data: the rest of the
    // header and the padding between and after sections are zeros.
    let mut covered: Vec<(u64, u64)> = sections
        .iter()
        .map(|s| (s.offset, s.offset + s.size))
        .collect();
    covered.push((0, table_end as u64 + 32));
    covered.sort_unstable();
    let mut at = 0u64;
    for (start, end) in covered.iter().copied().chain([(actual, actual)]) {
        if data[at as usize..start.max(at) as usize]
            .iter()
            .any(|&b| b != 0)
        {
            return Err(header_err(format!(
                "bytes {at}..{start} (padding outside every section) are not zero"
            )));
        }
        at = at.max(end);
    }
    let digest = hex(&Sha256::digest(&data[..HEADER_SIZE as usize]));
    Ok((sections, digest, actual))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        encode(&[
            (SectionKind::Config, b"{\"a\":1}"),
            (SectionKind::Kernel, &[0x7f; 5000]),
            (SectionKind::Rootfs, &[1; 9000]),
        ])
    }

    fn check(bytes: &[u8]) -> Result<(Vec<Section>, String, u64), ImageError> {
        parse(Path::new("t.kiln"), bytes, bytes.len() as u64, true)
    }

    #[test]
    fn round_trips_with_aligned_sections() {
        let img = sample();
        let (sections, digest, size) = check(&img).unwrap();
        assert_eq!(size as usize, img.len());
        assert_eq!(digest.len(), 64);
        for s in &sections {
            assert_eq!(s.offset % SECTION_ALIGN, 0);
        }
        assert_eq!(sections[1].size, 5000);
        assert_eq!(sample(), img, "encoding is deterministic");
    }

    #[test]
    fn refuses_data_in_padding() {
        let mut img = sample();
        let last = img.len() - 1;
        img[last] = 1;
        let e = check(&img).unwrap_err().to_string();
        assert!(e.contains("not zero"), "{e}");
        let mut img = sample();
        img[2000] = 1; // inside the header, past its digest
        let e = check(&img).unwrap_err().to_string();
        assert!(e.contains("not zero"), "{e}");
    }

    #[test]
    fn refuses_truncation_and_trailing_data() {
        let img = sample();
        let e = check(&img[..img.len() - 100]).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        let mut longer = img.clone();
        longer.push(0);
        assert!(check(&longer).unwrap_err().to_string().contains("trailing"));
        assert!(check(&img[..20]).is_err());
    }

    #[test]
    fn refuses_a_flipped_byte_in_every_section_and_the_header() {
        let img = sample();
        let (sections, _, _) = check(&img).unwrap();
        for s in &sections {
            let mut bad = img.clone();
            bad[(s.offset + s.size / 2) as usize] ^= 0x40;
            let e = check(&bad).unwrap_err().to_string();
            assert!(
                e.contains(&format!("{} section is corrupted", s.kind.name())),
                "{e}"
            );
        }
        let mut bad = img.clone();
        bad[40] ^= 1; // inside the section table
        assert!(check(&bad)
            .unwrap_err()
            .to_string()
            .contains("header is corrupted"));
        let mut bad = img.clone();
        bad[0] = b'X';
        assert!(check(&bad).unwrap_err().to_string().contains("bad magic"));
    }

    #[test]
    fn refuses_a_header_that_lies_about_sizes() {
        let mut img = sample();
        // Claim a larger kernel section, then re-seal the header digest so
        // only the bounds check can catch it.
        let e = 32 + SECTION_ENTRY;
        img[e + 16..e + 24].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let table_end = 32 + 3 * SECTION_ENTRY;
        let d = Sha256::digest(&img[..table_end]);
        img[table_end..table_end + 32].copy_from_slice(&d);
        let e = check(&img).unwrap_err().to_string();
        assert!(e.contains("kernel section") && e.contains("outside"), "{e}");
    }
}
