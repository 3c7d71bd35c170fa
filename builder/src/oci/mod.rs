//! kiln images as OCI artifacts: an image manifest (schema 2, with
//! `artifactType`) whose config blob is the boot configuration and whose
//! two layers are the guest kernel and the rootfs, gzip-compressed for
//! transport. docs/oci.md lists the media types.
//!
//! Building an artifact from the same image always gives the same bytes
//! (gzip without timestamps, JSON with sorted keys), so the manifest digest
//! is a function of the image's content.

pub mod container;
pub mod layout;
pub mod reference;

use std::io::{Read, Write};

use oci_spec::image::{
    Descriptor, DescriptorBuilder, ImageManifest, ImageManifestBuilder, MediaType,
};
use sha2::{Digest as _, Sha256};

use crate::image::{hex, SectionKind};
use crate::manifest::MAX_IMAGE_SIZE;
use crate::parts::{ImageParts, Part};

/// `artifactType` of every kiln image manifest.
pub const ARTIFACT_TYPE: &str = "application/vnd.kiln.image.v1";
/// Media type of an OCI image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Annotation on a compressed layer: the sha256 of its uncompressed bytes
/// (the blob the local store keeps), so a pull skips layers it already has.
pub const UNCOMPRESSED_DIGEST: &str = "vnd.kiln.uncompressed-digest";
/// Largest manifest kiln reads (real ones are under 1 KiB).
pub const MAX_MANIFEST_SIZE: u64 = 64 * 1024;
/// Largest blob kiln reads, compressed or not: an image's budget.
pub const MAX_BLOB_SIZE: u64 = MAX_IMAGE_SIZE;

/// Why an artifact is refused.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The manifest is not a kiln image manifest.
    #[error("manifest {what}: {reason}")]
    Manifest {
        /// Which manifest.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A blob's bytes do not have the digest they should.
    #[error("{what}: content has digest {actual}, expected {expected}")]
    Digest {
        /// Which blob.
        what: String,
        /// The digest it should have.
        expected: String,
        /// The digest it has.
        actual: String,
    },
    /// A blob's length is not what its descriptor says.
    #[error("{what}: {actual} bytes, expected {expected} (short read or wrong content)")]
    Size {
        /// Which blob.
        what: String,
        /// The length it should have.
        expected: u64,
        /// The length it has.
        actual: u64,
    },
    /// A blob is larger than any kiln image can be.
    #[error("{what}: larger than {limit} bytes, more than a kiln image can hold")]
    TooLarge {
        /// Which blob.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// A compressed layer does not decompress.
    #[error("{what}: not valid gzip data: {error}")]
    Gzip {
        /// Which blob.
        what: String,
        /// Why.
        error: std::io::Error,
    },
    /// A digest string is malformed.
    #[error("{0:?} is not a sha256 digest (sha256: and 64 lower-case hex digits)")]
    BadDigest(String),
    /// Reading the image's parts failed.
    #[error("reading {what}: {error}")]
    Io {
        /// What was read.
        what: String,
        /// Why.
        error: std::io::Error,
    },
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

/// The hex part of a `sha256:<hex>` digest, checked.
///
/// # Errors
/// [`OciError::BadDigest`].
pub fn digest_hex(digest: &str) -> Result<&str, OciError> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
            Ok(h)
        }
        _ => Err(OciError::BadDigest(digest.into())),
    }
}

/// Checks that `data` has `size` bytes and the digest `digest`.
///
/// # Errors
/// [`OciError::Size`] or [`OciError::Digest`] naming `what`.
pub fn verify(what: &str, data: &[u8], digest: &str, size: u64) -> Result<(), OciError> {
    if data.len() as u64 != size {
        return Err(OciError::Size {
            what: what.into(),
            expected: size,
            actual: data.len() as u64,
        });
    }
    let actual = sha256_digest(data);
    if actual != digest {
        return Err(OciError::Digest {
            what: what.into(),
            expected: digest.into(),
            actual,
        });
    }
    Ok(())
}

/// gzip of `data`, byte-for-byte reproducible (no name, no timestamp).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

/// Decompresses a gzip layer, refusing more than [`MAX_BLOB_SIZE`] bytes.
///
/// # Errors
/// [`OciError::Gzip`] or [`OciError::TooLarge`].
pub fn gunzip(what: &str, data: &[u8]) -> Result<Vec<u8>, OciError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .take(MAX_BLOB_SIZE + 1)
        .read_to_end(&mut out)
        .map_err(|error| OciError::Gzip {
            what: what.into(),
            error,
        })?;
    if out.len() as u64 > MAX_BLOB_SIZE {
        return Err(OciError::TooLarge {
            what: what.into(),
            limit: MAX_BLOB_SIZE,
        });
    }
    Ok(out)
}

/// The media type of a section as a layer (`compressed`) or as stored.
pub fn layer_media_type(kind: SectionKind, compressed: bool) -> String {
    if compressed {
        format!("{}+gzip", kind.media_type())
    } else {
        kind.media_type().to_owned()
    }
}

/// One blob of an artifact, with its bytes as they travel.
#[derive(Clone, Debug)]
pub struct Blob {
    /// What it holds.
    pub kind: SectionKind,
    /// Its media type.
    pub media_type: String,
    /// `sha256:<hex>` of `data`.
    pub digest: String,
    /// The bytes (compressed for layers).
    pub data: Vec<u8>,
    /// `sha256:<hex>` of the uncompressed bytes, for compressed layers.
    pub uncompressed: Option<String>,
}

/// An image in transport form: manifest, config and compressed layers.
#[derive(Clone, Debug)]
pub struct Artifact {
    /// The manifest's bytes.
    pub manifest: Vec<u8>,
    /// `sha256:<hex>` of the manifest.
    pub digest: String,
    /// Config, kernel layer, rootfs layer.
    pub blobs: Vec<Blob>,
}

/// The bytes of an image part.
///
/// # Errors
/// [`OciError::Io`] naming the part.
pub fn read_part(part: &Part) -> Result<Vec<u8>, OciError> {
    part.read().map_err(|error| OciError::Io {
        what: part.slice.name.clone(),
        error,
    })
}

/// An image's config, kernel and rootfs bytes, read once for the work that
/// needs them (building the artifact, copying into the store).
pub type RawParts = [Vec<u8>; 3];

/// Reads the bytes of `parts`, in image order.
///
/// # Errors
/// [`OciError::Io`] naming the part that cannot be read.
pub fn read_parts(parts: &ImageParts) -> Result<RawParts, OciError> {
    let [c, k, r] = parts.all();
    Ok([read_part(c)?, read_part(k)?, read_part(r)?])
}

/// Builds the artifact of an image (compressing its layers) from its parts
/// and their bytes `raw` (see [`read_parts`]).
///
/// # Errors
/// [`OciError`] when the manifest cannot be encoded.
pub fn artifact(parts: &ImageParts, raw: &RawParts) -> Result<Artifact, OciError> {
    let mut blobs = Vec::new();
    for (part, raw) in parts.all().into_iter().zip(raw) {
        let blob = if part.kind == SectionKind::Config {
            Blob {
                kind: part.kind,
                media_type: part.kind.media_type().into(),
                digest: sha256_digest(raw),
                data: raw.clone(),
                uncompressed: None,
            }
        } else {
            let data = gzip(raw);
            Blob {
                kind: part.kind,
                media_type: layer_media_type(part.kind, true),
                digest: sha256_digest(&data),
                data,
                uncompressed: Some(format!("sha256:{}", part.sha256)),
            }
        };
        blobs.push(blob);
    }
    let manifest = encode_manifest(&blobs)?;
    Ok(Artifact {
        digest: sha256_digest(&manifest),
        manifest,
        blobs,
    })
}

fn descriptor(blob: &Blob) -> Result<Descriptor, OciError> {
    let mut d = DescriptorBuilder::default()
        .media_type(MediaType::Other(blob.media_type.clone()))
        .digest(
            blob.digest
                .parse::<oci_spec::image::Digest>()
                .map_err(|_| OciError::BadDigest(blob.digest.clone()))?,
        )
        .size(blob.data.len() as u64);
    if let Some(u) = &blob.uncompressed {
        d = d.annotations(
            [(UNCOMPRESSED_DIGEST.to_owned(), u.clone())]
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        );
    }
    d.build().map_err(|e| manifest_error("(new)", e))
}

fn manifest_error(what: &str, e: impl std::fmt::Display) -> OciError {
    OciError::Manifest {
        what: what.into(),
        reason: e.to_string(),
    }
}

fn encode_manifest(blobs: &[Blob]) -> Result<Vec<u8>, OciError> {
    let layers = blobs[1..]
        .iter()
        .map(descriptor)
        .collect::<Result<Vec<_>, _>>()?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .artifact_type(MediaType::Other(ARTIFACT_TYPE.into()))
        .config(descriptor(&blobs[0])?)
        .layers(layers)
        .build()
        .map_err(|e| manifest_error("(new)", e))?;
    // Through serde_json::Value, whose maps are sorted: the annotation
    // maps are HashMaps, and the digest must not depend on their order.
    let value = serde_json::to_value(&manifest).map_err(|e| manifest_error("(new)", e))?;
    serde_json::to_vec(&value).map_err(|e| manifest_error("(new)", e))
}

/// A blob a manifest refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobRef {
    /// What it holds.
    pub kind: SectionKind,
    /// Its media type.
    pub media_type: String,
    /// `sha256:<hex>` of its bytes as they travel.
    pub digest: String,
    /// Its size as it travels.
    pub size: u64,
    /// gzip-compressed.
    pub compressed: bool,
    /// `sha256:<hex>` of the uncompressed bytes, when the manifest says.
    pub uncompressed: Option<String>,
}

impl BlobRef {
    /// A name for messages: `rootfs layer sha256:1234abcd…`.
    pub fn describe(&self) -> String {
        let short = self.digest.get(..19).unwrap_or(&self.digest);
        match self.kind {
            SectionKind::Config => format!("config blob {short}"),
            k => format!("{} layer {short}", k.name()),
        }
    }
}

/// A kiln image manifest, checked.
#[derive(Clone, Debug)]
pub struct KilnManifest {
    /// The boot configuration.
    pub config: BlobRef,
    /// The kernel layer.
    pub kernel: BlobRef,
    /// The rootfs layer.
    pub rootfs: BlobRef,
}

impl KilnManifest {
    /// Config, kernel, rootfs.
    pub fn blobs(&self) -> [&BlobRef; 3] {
        [&self.config, &self.kernel, &self.rootfs]
    }
}

/// Parses and checks a manifest (`what` names it in errors).
///
/// # Errors
/// [`OciError::Manifest`] saying what is not as a kiln image has it.
pub fn parse_manifest(what: &str, bytes: &[u8]) -> Result<KilnManifest, OciError> {
    let err = |reason: String| OciError::Manifest {
        what: what.into(),
        reason,
    };
    if bytes.len() as u64 > MAX_MANIFEST_SIZE {
        return Err(err(format!("larger than {MAX_MANIFEST_SIZE} bytes")));
    }
    let m = ImageManifest::from_reader(bytes)
        .map_err(|e| err(format!("not an OCI image manifest: {e}")))?;
    if m.schema_version() != 2 {
        return Err(err(format!(
            "schemaVersion {} (expected 2)",
            m.schema_version()
        )));
    }
    if let Some(t) = m
        .media_type()
        .as_ref()
        .filter(|t| **t != MediaType::ImageManifest)
    {
        return Err(err(format!(
            "mediaType {t} (expected {MANIFEST_MEDIA_TYPE})"
        )));
    }
    let config_type = SectionKind::Config.media_type();
    if m.config().media_type().to_string() != config_type {
        return Err(err(format!(
            "config media type {} (expected {config_type}): not a kiln image",
            m.config().media_type()
        )));
    }
    if let Some(t) = m
        .artifact_type()
        .as_ref()
        .filter(|t| t.to_string() != ARTIFACT_TYPE)
    {
        return Err(err(format!("artifactType {t} (expected {ARTIFACT_TYPE})")));
    }
    let blob = |kind: SectionKind, d: &Descriptor| -> Result<BlobRef, OciError> {
        let media_type = d.media_type().to_string();
        let compressed = if media_type == layer_media_type(kind, true) {
            true
        } else if media_type == layer_media_type(kind, false) {
            false
        } else {
            return Err(err(format!(
                "{} has media type {media_type} (expected {} or {})",
                kind.name(),
                layer_media_type(kind, true),
                layer_media_type(kind, false)
            )));
        };
        let digest = d.digest().to_string();
        digest_hex(&digest)?;
        let uncompressed = d
            .annotations()
            .as_ref()
            .and_then(|a| a.get(UNCOMPRESSED_DIGEST))
            .cloned();
        if let Some(u) = &uncompressed {
            digest_hex(u)?;
        }
        if d.size() > MAX_BLOB_SIZE {
            return Err(err(format!(
                "the {} blob is {} bytes, over the {MAX_BLOB_SIZE}-byte image budget",
                kind.name(),
                d.size()
            )));
        }
        Ok(BlobRef {
            kind,
            media_type,
            digest,
            size: d.size(),
            compressed,
            uncompressed,
        })
    };
    let [kernel, rootfs] = m.layers().as_slice() else {
        return Err(err(format!(
            "{} layers (a kiln image has two: kernel, rootfs)",
            m.layers().len()
        )));
    };
    Ok(KilnManifest {
        config: blob(SectionKind::Config, m.config())?,
        kernel: blob(SectionKind::Kernel, kernel)?,
        rootfs: blob(SectionKind::Rootfs, rootfs)?,
    })
}

/// The uncompressed bytes of a blob that arrived as `data`: verifies its
/// digest and size, decompresses a compressed layer and checks the
/// uncompressed digest the manifest states, if any. Returns the bytes and
/// their `sha256:<hex>`.
///
/// # Errors
/// [`OciError`] naming the blob.
pub fn unpack_blob(blob: &BlobRef, data: &[u8]) -> Result<(Vec<u8>, String), OciError> {
    let what = blob.describe();
    verify(&what, data, &blob.digest, blob.size)?;
    if !blob.compressed {
        return Ok((data.to_vec(), blob.digest.clone()));
    }
    let raw = gunzip(&what, data)?;
    let digest = sha256_digest(&raw);
    if let Some(expected) = blob.uncompressed.as_ref().filter(|u| **u != digest) {
        return Err(OciError::Digest {
            what: format!("{what} (uncompressed)"),
            expected: expected.clone(),
            actual: digest,
        });
    }
    Ok((raw, digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_reproducible_and_round_trips() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let a = gzip(&data);
        assert_eq!(a, gzip(&data));
        assert!(a.len() < data.len());
        assert_eq!(gunzip("t", &a).unwrap(), data);
        assert!(matches!(gunzip("t", &data), Err(OciError::Gzip { .. })));
    }

    #[test]
    fn digests_are_checked_strictly() {
        let d = sha256_digest(b"kiln");
        assert!(digest_hex(&d).is_ok());
        for bad in ["sha256:abc", "sha512:00", &d.to_uppercase(), &d[7..]] {
            assert!(digest_hex(bad).is_err(), "{bad}");
        }
        verify("x", b"kiln", &d, 4).unwrap();
        assert!(matches!(
            verify("x", b"kilo", &d, 4),
            Err(OciError::Digest { .. })
        ));
        assert!(matches!(
            verify("x", b"kil", &d, 4),
            Err(OciError::Size { .. })
        ));
    }

    fn manifest_json(config_type: &str, layers: &[(&str, &str)]) -> Vec<u8> {
        let layer =
            |(t, d): &(&str, &str)| serde_json::json!({"mediaType": t, "digest": d, "size": 3});
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "artifactType": ARTIFACT_TYPE,
            "config": {"mediaType": config_type, "digest": sha256_digest(b"cfg"), "size": 3},
            "layers": layers.iter().map(layer).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    #[test]
    fn manifests_must_look_like_kiln_images() {
        let d = sha256_digest(b"abc");
        let k = layer_media_type(SectionKind::Kernel, true);
        let r = layer_media_type(SectionKind::Rootfs, false);
        let c = SectionKind::Config.media_type();
        let m = parse_manifest("t", &manifest_json(c, &[(&k, &d), (&r, &d)])).unwrap();
        assert!(m.kernel.compressed && !m.rootfs.compressed);
        let bad = [
            manifest_json(
                "application/vnd.oci.image.config.v1+json",
                &[(&k, &d), (&r, &d)],
            ),
            manifest_json(c, &[(&k, &d)]),
            manifest_json(c, &[(&r, &d), (&k, &d)]),
            manifest_json(c, &[(&k, "sha256:1234"), (&r, &d)]),
            b"{\"schemaVersion\": 1}".to_vec(),
            b"not json".to_vec(),
        ];
        for b in bad {
            let e = parse_manifest("t", &b).unwrap_err();
            assert!(
                matches!(e, OciError::Manifest { .. } | OciError::BadDigest(_)),
                "{e}"
            );
        }
    }

    #[test]
    fn unpacking_checks_both_digests() {
        let raw = b"kernel bytes".repeat(100);
        let gz = gzip(&raw);
        let mut blob = BlobRef {
            kind: SectionKind::Kernel,
            media_type: layer_media_type(SectionKind::Kernel, true),
            digest: sha256_digest(&gz),
            size: gz.len() as u64,
            compressed: true,
            uncompressed: Some(sha256_digest(&raw)),
        };
        assert_eq!(
            unpack_blob(&blob, &gz).unwrap(),
            (raw.clone(), sha256_digest(&raw))
        );
        let mut flipped = gz.clone();
        flipped[20] ^= 1;
        assert!(matches!(
            unpack_blob(&blob, &flipped),
            Err(OciError::Digest { .. })
        ));
        assert!(matches!(
            unpack_blob(&blob, &gz[..gz.len() - 1]),
            Err(OciError::Size { .. })
        ));
        blob.uncompressed = Some(sha256_digest(b"other"));
        assert!(matches!(
            unpack_blob(&blob, &gz),
            Err(OciError::Digest { .. })
        ));
    }
}
