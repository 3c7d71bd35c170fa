//! Snapshots in the local store, as OCI artifacts that travel through
//! registries like images (`kiln commit`, `kiln snapshots`, `kiln push`,
//! `kiln pull`, `kiln run --from-snapshot NAME`).
//!
//! A snapshot artifact is an OCI image manifest with `artifactType`
//! [`ARTIFACT_TYPE`]: its config blob is the snapshot's `state.json`
//! ([`STATE_MEDIA_TYPE`]) and its one layer guest memory
//! ([`MEMORY_MEDIA_TYPE`]): the memory file's data extents, each behind its
//! offset and length, gzip-compressed — a sparse file of hundreds of MiB
//! that holds tens travels as tens, compressed.
//!
//! The store keeps both blobs as they travel (`blobs/sha256/`, like an
//! image's) and lists snapshots in `snapshots.json`. A snapshot is resumed
//! from a directory unpacked once under `snapshots/<digest>/` (written
//! under a temporary name and renamed), whose memory file later resumes
//! share through the page cache.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use oci_spec::image::{DescriptorBuilder, ImageManifest, ImageManifestBuilder, MediaType};
use serde::{Deserialize, Serialize};

use crate::oci::reference::Reference;
use crate::oci::{digest_hex, sha256_digest, OciError, MAX_MANIFEST_SIZE};
use crate::store::{Store, StoreError};

/// `artifactType` of a kiln snapshot manifest.
pub const ARTIFACT_TYPE: &str = "application/vnd.kiln.snapshot.v1";
/// Media type of its config blob: the snapshot's `state.json`.
pub const STATE_MEDIA_TYPE: &str = "application/vnd.kiln.snapshot.state.v1+json";
/// Media type of its layer: guest memory, extents behind offsets, gzip.
pub const MEMORY_MEDIA_TYPE: &str = "application/vnd.kiln.snapshot.memory.v1+gzip";
/// Largest state document accepted.
pub const MAX_STATE_SIZE: u64 = 16 << 20;
/// Largest guest memory a snapshot can hold (the largest `--memory`).
pub const MAX_MEMORY_SIZE: u64 = kiln_boot::layout::MAX_MEMORY_MIB << 20;
/// The memory encoding's magic.
const MEMORY_MAGIC: &[u8; 8] = b"KILNMEM1";
/// Ends the extents.
const END: u64 = u64::MAX;

/// Why a snapshot cannot be stored, moved or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotStoreError {
    /// The snapshot directory cannot be read or is not a good snapshot.
    #[error(transparent)]
    Snapshot(#[from] kiln_vmm::snapshot::SnapshotError),
    /// A file could not be read or written.
    #[error("{what}: {error}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        error: std::io::Error,
    },
    /// The artifact is not a kiln snapshot, or lies about its content.
    #[error("{what}: {reason}")]
    Artifact {
        /// Which artifact or blob.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A digest or manifest is malformed.
    #[error(transparent)]
    Oci(#[from] OciError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SnapshotStoreError {
    let what = what.into();
    move |error| SnapshotStoreError::Io { what, error }
}

fn bad(what: &str, reason: impl Into<String>) -> SnapshotStoreError {
    SnapshotStoreError::Artifact {
        what: what.into(),
        reason: reason.into(),
    }
}

/// A snapshot made an artifact: its manifest and two blobs.
pub struct SnapshotArtifact {
    /// The manifest's bytes.
    pub manifest: Vec<u8>,
    /// `sha256:<hex>` of the manifest.
    pub digest: String,
    /// `state.json`.
    pub state: Vec<u8>,
    /// The encoded, compressed memory.
    pub memory: Vec<u8>,
}

/// Encodes the memory file at `path` (a snapshot's, sparse): its size,
/// then each data extent behind its offset and length, gzip-compressed.
///
/// # Errors
/// When the file cannot be read.
pub fn encode_memory(path: &Path) -> Result<Vec<u8>, SnapshotStoreError> {
    let what = || format!("reading {}", path.display());
    let file = File::open(path).map_err(io(what()))?;
    let size = file.metadata().map_err(io(what()))?.len();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut head = MEMORY_MAGIC.to_vec();
    head.extend_from_slice(&size.to_le_bytes());
    enc.write_all(&head).map_err(io(what()))?;
    let mut buf = vec![0u8; 1 << 20];
    for (data, len) in kiln_vmm::source::data_extents(&file, size).map_err(io(what()))? {
        let end = data + len;
        enc.write_all(&data.to_le_bytes()).map_err(io(what()))?;
        enc.write_all(&len.to_le_bytes()).map_err(io(what()))?;
        let mut pos = data;
        while pos < end {
            let n = ((end - pos) as usize).min(buf.len());
            file.read_exact_at(&mut buf[..n], pos).map_err(io(what()))?;
            enc.write_all(&buf[..n]).map_err(io(what()))?;
            pos += n as u64;
        }
    }
    enc.write_all(&END.to_le_bytes()).map_err(io(what()))?;
    enc.write_all(&0u64.to_le_bytes()).map_err(io(what()))?;
    enc.finish().map_err(io(what()))
}

/// Decodes `blob` (from [`encode_memory`]) into a new sparse file at
/// `path` that must hold `size` bytes.
///
/// # Errors
/// [`SnapshotStoreError::Artifact`] for data that is not an encoding of
/// `size` bytes (extents out of order or beyond the end, cut short).
pub fn decode_memory(blob: &[u8], size: u64, path: &Path) -> Result<(), SnapshotStoreError> {
    let what = "the snapshot's memory layer";
    let mut r = flate2::read::GzDecoder::new(blob);
    let word = |r: &mut flate2::read::GzDecoder<&[u8]>| -> Result<u64, SnapshotStoreError> {
        let mut b = [0u8; 8];
        r.read_exact(&mut b)
            .map_err(|e| bad(what, format!("cut short or not gzip ({e})")))?;
        Ok(u64::from_le_bytes(b))
    };
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)
        .map_err(|e| bad(what, format!("not gzip data ({e})")))?;
    if &magic != MEMORY_MAGIC {
        return Err(bad(what, "not a kiln memory encoding"));
    }
    let stated = word(&mut r)?;
    if stated != size {
        return Err(bad(
            what,
            format!("holds {stated} bytes of memory, the state says {size}"),
        ));
    }
    let file = File::create(path).map_err(io(format!("creating {}", path.display())))?;
    file.set_len(size)
        .map_err(io(format!("sizing {}", path.display())))?;
    let mut next = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let offset = word(&mut r)?;
        let len = word(&mut r)?;
        if offset == END {
            break;
        }
        if offset < next || offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(bad(
                what,
                format!("an extent of {len} bytes at {offset} is out of order or beyond the end"),
            ));
        }
        let mut pos = offset;
        while pos < offset + len {
            let n = ((offset + len - pos) as usize).min(buf.len());
            r.read_exact(&mut buf[..n])
                .map_err(|e| bad(what, format!("cut short ({e})")))?;
            file.write_all_at(&buf[..n], pos)
                .map_err(io(format!("writing {}", path.display())))?;
            pos += n as u64;
        }
        next = offset + len;
    }
    file.sync_all()
        .map_err(io(format!("flushing {}", path.display())))
}

/// The artifact of the snapshot directory `dir` (checked first, as a
/// resume checks it).
///
/// # Errors
/// When it is not a whole, intact snapshot.
pub fn pack(dir: &Path) -> Result<SnapshotArtifact, SnapshotStoreError> {
    kiln_vmm::snapshot::load(dir)?;
    let state_path = dir.join(kiln_vmm::snapshot::STATE_FILE);
    let state =
        std::fs::read(&state_path).map_err(io(format!("reading {}", state_path.display())))?;
    let memory = encode_memory(&dir.join(kiln_vmm::snapshot::MEMORY_FILE))?;
    let manifest = encode_manifest(&state, &memory)?;
    Ok(SnapshotArtifact {
        digest: sha256_digest(&manifest),
        manifest,
        state,
        memory,
    })
}

fn encode_manifest(state: &[u8], memory: &[u8]) -> Result<Vec<u8>, SnapshotStoreError> {
    let descriptor = |media: &str, data: &[u8]| {
        let digest = sha256_digest(data);
        DescriptorBuilder::default()
            .media_type(MediaType::Other(media.into()))
            .digest(
                digest
                    .parse::<oci_spec::image::Digest>()
                    .map_err(|_| OciError::BadDigest(digest.clone()))?,
            )
            .size(data.len() as u64)
            .build()
            .map_err(|e| bad("the snapshot's manifest", e.to_string()))
    };
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .artifact_type(MediaType::Other(ARTIFACT_TYPE.into()))
        .config(descriptor(STATE_MEDIA_TYPE, state)?)
        .layers(vec![descriptor(MEMORY_MEDIA_TYPE, memory)?])
        .build()
        .map_err(|e| bad("the snapshot's manifest", e.to_string()))?;
    let value = serde_json::to_value(&manifest)
        .map_err(|e| bad("the snapshot's manifest", e.to_string()))?;
    serde_json::to_vec(&value).map_err(|e| bad("the snapshot's manifest", e.to_string()))
}

/// A blob a snapshot manifest names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotBlob {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Bytes.
    pub size: u64,
}

/// A snapshot manifest, checked: its state and memory blobs.
#[derive(Clone, Debug)]
pub struct SnapshotManifest {
    /// `state.json`.
    pub state: SnapshotBlob,
    /// The memory layer.
    pub memory: SnapshotBlob,
}

/// Whether `bytes` is a manifest of a kiln snapshot (not an image).
pub fn is_snapshot_manifest(bytes: &[u8]) -> bool {
    ImageManifest::from_reader(bytes).is_ok_and(|m| {
        m.artifact_type()
            .as_ref()
            .is_some_and(|t| t.to_string() == ARTIFACT_TYPE)
    })
}

/// Parses and checks a snapshot manifest (`what` names it).
///
/// # Errors
/// [`SnapshotStoreError::Artifact`] saying what is not as kiln writes it.
pub fn parse_manifest(what: &str, bytes: &[u8]) -> Result<SnapshotManifest, SnapshotStoreError> {
    if bytes.len() as u64 > MAX_MANIFEST_SIZE {
        return Err(bad(what, format!("larger than {MAX_MANIFEST_SIZE} bytes")));
    }
    let m = ImageManifest::from_reader(bytes)
        .map_err(|e| bad(what, format!("not an OCI image manifest: {e}")))?;
    if m.artifact_type()
        .as_ref()
        .map(ToString::to_string)
        .as_deref()
        != Some(ARTIFACT_TYPE)
    {
        return Err(bad(
            what,
            format!("not a kiln snapshot (artifactType {ARTIFACT_TYPE})"),
        ));
    }
    let blob = |d: &oci_spec::image::Descriptor, media: &str, max: u64| {
        if d.media_type().to_string() != media {
            return Err(bad(
                what,
                format!("a blob of media type {} (expected {media})", d.media_type()),
            ));
        }
        let digest = d.digest().to_string();
        digest_hex(&digest)?;
        if d.size() > max {
            return Err(bad(what, format!("a {media} blob of {} bytes", d.size())));
        }
        Ok(SnapshotBlob {
            digest,
            size: d.size(),
        })
    };
    let [memory] = m.layers().as_slice() else {
        return Err(bad(
            what,
            format!(
                "{} layers (a kiln snapshot has one: memory)",
                m.layers().len()
            ),
        ));
    };
    Ok(SnapshotManifest {
        state: blob(m.config(), STATE_MEDIA_TYPE, MAX_STATE_SIZE)?,
        // Compressed memory is smaller than memory, but allow gzip's
        // worst case (a little larger than its input).
        memory: blob(
            memory,
            MEMORY_MEDIA_TYPE,
            MAX_MEMORY_SIZE + (MAX_MEMORY_SIZE >> 6),
        )?,
    })
}

/// One stored snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSnapshot {
    /// `sha256:<hex>` of its manifest.
    pub digest: String,
    /// Its names, sorted.
    pub names: Vec<String>,
    /// `sha256:<hex>` of `state.json`.
    pub state: String,
    /// `sha256:<hex>` of the memory layer.
    pub memory: String,
    /// Bytes of both blobs.
    pub size: u64,
    /// The image it was taken from, as the state records it.
    pub image: Option<String>,
}

impl StoredSnapshot {
    /// The first 12 hex digits of its digest.
    pub fn short_digest(&self) -> &str {
        self.digest.get(7..19).unwrap_or(&self.digest)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotIndex {
    version: u32,
    snapshots: Vec<StoredSnapshot>,
}

const INDEX_VERSION: u32 = 1;

impl Store {
    fn snapshot_index_path(&self) -> PathBuf {
        self.root().join("snapshots.json")
    }

    fn read_snapshot_index(&self) -> Result<SnapshotIndex, SnapshotStoreError> {
        let path = self.snapshot_index_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(SnapshotIndex {
                    version: INDEX_VERSION,
                    snapshots: Vec::new(),
                })
            }
            Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
        };
        let damaged = |reason: String| StoreError::Index {
            path: path.clone(),
            reason,
        };
        let index: SnapshotIndex =
            serde_json::from_slice(&bytes).map_err(|e| damaged(e.to_string()))?;
        if index.version != INDEX_VERSION {
            return Err(damaged(format!(
                "version {} (this kiln reads {INDEX_VERSION})",
                index.version
            ))
            .into());
        }
        for s in &index.snapshots {
            for d in [&s.digest, &s.state, &s.memory] {
                digest_hex(d).map_err(|_| damaged(format!("a bad digest `{d}`")))?;
            }
        }
        Ok(index)
    }

    fn write_snapshot_index(&self, index: &SnapshotIndex) -> Result<(), SnapshotStoreError> {
        let path = self.snapshot_index_path();
        let bytes = serde_json::to_vec_pretty(index).unwrap_or_default();
        kiln_vmm::write_atomically(&path, &bytes).map_err(io(format!("writing {}", path.display())))
    }

    /// Stores `artifact` (its blobs checked against its manifest) under
    /// `names` (which move here from any other snapshot that had them).
    ///
    /// # Errors
    /// When a blob does not match the manifest or the store fails.
    pub fn add_snapshot(
        &self,
        artifact: &SnapshotArtifact,
        names: &[Reference],
    ) -> Result<StoredSnapshot, SnapshotStoreError> {
        let what = format!("snapshot {}", artifact.digest);
        let m = parse_manifest(&what, &artifact.manifest)?;
        for (blob, data) in [(&m.state, &artifact.state), (&m.memory, &artifact.memory)] {
            crate::oci::verify(&what, data, &blob.digest, blob.size)?;
        }
        let state = kiln_vmm::snapshot::parse_state(&artifact.state, Path::new(&what))?;
        let _lock = self.lock()?;
        self.put_blob(&artifact.state)?;
        self.put_blob(&artifact.memory)?;
        let digest = self.put_blob(&artifact.manifest)?;
        let names: Vec<String> = names
            .iter()
            .map(|n| n.with_tag(n.tag.as_deref().unwrap_or("latest")).to_string())
            .collect();
        let mut index = self.read_snapshot_index()?;
        for s in &mut index.snapshots {
            s.names.retain(|n| !names.contains(n));
        }
        let pos = match index.snapshots.iter().position(|s| s.digest == digest) {
            Some(p) => p,
            None => {
                index.snapshots.push(StoredSnapshot {
                    digest: digest.clone(),
                    names: Vec::new(),
                    state: m.state.digest.clone(),
                    memory: m.memory.digest.clone(),
                    size: m.state.size + m.memory.size,
                    image: state.image.clone(),
                });
                index.snapshots.len() - 1
            }
        };
        let s = &mut index.snapshots[pos];
        s.names.extend(names);
        s.names.sort();
        s.names.dedup();
        let stored = s.clone();
        self.write_snapshot_index(&index)?;
        Ok(stored)
    }

    /// Every stored snapshot, oldest first.
    ///
    /// # Errors
    /// When snapshots.json cannot be read.
    pub fn snapshots(&self) -> Result<Vec<StoredSnapshot>, SnapshotStoreError> {
        Ok(self.read_snapshot_index()?.snapshots)
    }

    /// The snapshot `text` names (a name, `sha256:…`, or 6+ leading hex
    /// digits of its digest); `Ok(None)` when none does.
    ///
    /// # Errors
    /// When snapshots.json cannot be read, or a prefix is ambiguous.
    pub fn resolve_snapshot(
        &self,
        text: &str,
    ) -> Result<Option<StoredSnapshot>, SnapshotStoreError> {
        let snapshots = self.snapshots()?;
        let name = Reference::parse(text)
            .ok()
            .map(|r| r.with_tag(r.tag.as_deref().unwrap_or("latest")).to_string());
        if let Some(s) = snapshots
            .iter()
            .find(|s| s.digest == text || name.as_ref().is_some_and(|n| s.names.contains(n)))
        {
            return Ok(Some(s.clone()));
        }
        let is_hex =
            text.len() >= 6 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !is_hex {
            return Ok(None);
        }
        let hits: Vec<_> = snapshots
            .iter()
            .filter(|s| digest_hex(&s.digest).is_ok_and(|h| h.starts_with(text)))
            .collect();
        match hits.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some((*one).clone())),
            _ => Err(StoreError::Ambiguous(text.into()).into()),
        }
    }

    /// The manifest and blobs of a stored snapshot.
    ///
    /// # Errors
    /// When a blob is missing or damaged.
    pub fn snapshot_artifact(
        &self,
        s: &StoredSnapshot,
    ) -> Result<SnapshotArtifact, SnapshotStoreError> {
        let read = |digest: &str| -> Result<Vec<u8>, SnapshotStoreError> {
            let path = self.blob_path(digest)?;
            let data = std::fs::read(&path).map_err(io(format!("reading {}", path.display())))?;
            if sha256_digest(&data) != digest {
                return Err(StoreError::Damaged {
                    image: s.names.first().cloned().unwrap_or_else(|| s.digest.clone()),
                    reason: format!("blob {digest} changed"),
                }
                .into());
            }
            Ok(data)
        };
        Ok(SnapshotArtifact {
            manifest: read(&s.digest)?,
            digest: s.digest.clone(),
            state: read(&s.state)?,
            memory: read(&s.memory)?,
        })
    }

    /// A directory `kiln run --from-snapshot` resumes `s` from: unpacked
    /// once under `snapshots/<hex>/`, then reused.
    ///
    /// # Errors
    /// When the blobs are missing or damaged, or it cannot be written.
    pub fn unpacked_snapshot(&self, s: &StoredSnapshot) -> Result<PathBuf, SnapshotStoreError> {
        let dir = self.root().join("snapshots").join(digest_hex(&s.digest)?);
        if dir.join(kiln_vmm::snapshot::STATE_FILE).is_file() {
            return Ok(dir);
        }
        let artifact = self.snapshot_artifact(s)?;
        let state = kiln_vmm::snapshot::parse_state(&artifact.state, &dir)?;
        let mut tmp = dir.as_os_str().to_owned();
        tmp.push(format!(".tmp.{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
        let result = (|| {
            decode_memory(
                &artifact.memory,
                state.memory.size,
                &tmp.join(kiln_vmm::snapshot::MEMORY_FILE),
            )?;
            let digest = tmp.join(kiln_vmm::snapshot::STATE_DIGEST_FILE);
            kiln_vmm::write_atomically(
                &digest,
                kiln_vmm::snapshot::memory::sha256_hex(&artifact.state).as_bytes(),
            )
            .map_err(io(format!("writing {}", digest.display())))?;
            let state_path = tmp.join(kiln_vmm::snapshot::STATE_FILE);
            kiln_vmm::write_atomically(&state_path, &artifact.state)
                .map_err(io(format!("writing {}", state_path.display())))?;
            match std::fs::rename(&tmp, &dir) {
                Ok(()) => Ok(()),
                // Another kiln unpacked it meanwhile.
                Err(_) if dir.join(kiln_vmm::snapshot::STATE_FILE).is_file() => Ok(()),
                Err(e) => Err(io(format!("moving the snapshot to {}", dir.display()))(e)),
            }
        })();
        let _ = std::fs::remove_dir_all(&tmp);
        result.map(|()| dir)
    }

    /// Removes a name, or a whole snapshot (by digest, or its last name),
    /// with its blobs and unpacked directory. `Ok(None)`: no such snapshot.
    ///
    /// # Errors
    /// When the store fails.
    pub fn remove_snapshot(&self, text: &str) -> Result<Option<String>, SnapshotStoreError> {
        let Some(target) = self.resolve_snapshot(text)? else {
            return Ok(None);
        };
        let _lock = self.lock()?;
        let mut index = self.read_snapshot_index()?;
        let Some(pos) = index
            .snapshots
            .iter()
            .position(|s| s.digest == target.digest)
        else {
            return Ok(None);
        };
        let name = Reference::parse(text)
            .ok()
            .filter(|r| r.tag.is_some())
            .map(|r| r.to_string());
        if let Some(name) = name.filter(|n| index.snapshots[pos].names.contains(n)) {
            let s = &mut index.snapshots[pos];
            s.names.retain(|n| *n != name);
            if !s.names.is_empty() {
                self.write_snapshot_index(&index)?;
                return Ok(Some(format!("untagged {name}")));
            }
        }
        let gone = index.snapshots.remove(pos);
        self.write_snapshot_index(&index)?;
        for digest in [&gone.digest, &gone.state, &gone.memory] {
            let path = self.blob_path(digest)?;
            let _ = std::fs::remove_file(path);
        }
        let _ = std::fs::remove_dir_all(
            self.root()
                .join("snapshots")
                .join(digest_hex(&gone.digest)?),
        );
        Ok(Some(format!("deleted {}", gone.digest)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_travels_as_its_extents_and_comes_back_sparse() {
        let dir = std::env::temp_dir().join(format!("kiln-snapmem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let original = dir.join("memory");
        let size = 64u64 << 20;
        let f = File::create(&original).unwrap();
        f.set_len(size).unwrap();
        f.write_all_at(&[7u8; 4096], 1 << 20).unwrap();
        f.write_all_at(&[9u8; 8192], 40 << 20).unwrap();
        drop(f);
        let blob = encode_memory(&original).unwrap();
        assert!(blob.len() < 64 * 1024, "{} bytes", blob.len());
        let copy = dir.join("copy");
        decode_memory(&blob, size, &copy).unwrap();
        assert_eq!(
            std::fs::read(&copy).unwrap(),
            std::fs::read(&original).unwrap()
        );
        // A different size, a cut blob, garbage: refused.
        assert!(decode_memory(&blob, size - 4096, &copy).is_err());
        assert!(decode_memory(&blob[..blob.len() / 2], size, &copy).is_err());
        assert!(decode_memory(b"not gzip at all", size, &copy).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_extent_beyond_the_end_is_refused() {
        let mut raw = MEMORY_MAGIC.to_vec();
        raw.extend_from_slice(&8192u64.to_le_bytes());
        raw.extend_from_slice(&4096u64.to_le_bytes());
        raw.extend_from_slice(&8192u64.to_le_bytes());
        raw.extend_from_slice(&[1u8; 8192]);
        let blob = crate::oci::gzip(&raw);
        let path = std::env::temp_dir().join(format!("kiln-snapmem-bad-{}", std::process::id()));
        let e = decode_memory(&blob, 8192, &path).unwrap_err();
        assert!(e.to_string().contains("beyond the end"), "{e}");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn only_snapshot_manifests_parse_as_snapshots() {
        let m = encode_manifest(b"{}", b"memory").unwrap();
        assert!(is_snapshot_manifest(&m));
        let parsed = parse_manifest("test", &m).unwrap();
        assert_eq!(parsed.state.size, 2);
        assert!(!is_snapshot_manifest(b"{\"schemaVersion\":2}"));
    }
}
