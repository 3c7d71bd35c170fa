//! OCI image layouts (a directory with `oci-layout`, `index.json` and
//! `blobs/sha256/`), the on-disk form skopeo, crane and oras also read and
//! write. kiln writes every file through a temporary name and writes
//! `index.json` last, so an interrupted export leaves the layout as it was.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::image::{DescriptorBuilder, ImageIndex, ImageIndexBuilder, MediaType};

use super::{
    digest_hex, sha256_digest, Artifact, BlobRef, OciError, ARTIFACT_TYPE, MAX_MANIFEST_SIZE,
};

/// The annotation naming an image in a layout's index.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Why a layout cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// A file cannot be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The directory is not an OCI image layout.
    #[error("{path}: not an OCI image layout: {reason}")]
    NotLayout {
        /// The directory.
        path: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },
    /// No image (or several) matches what was asked for.
    #[error("{path}: {reason}")]
    Select {
        /// The directory.
        path: PathBuf,
        /// What was found.
        reason: String,
    },
    /// A manifest or blob is wrong.
    #[error(transparent)]
    Content(#[from] OciError),
}

/// An OCI image layout directory.
#[derive(Clone, Debug)]
pub struct Layout {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LayoutError + '_ {
    move |error| LayoutError::Io {
        path: path.into(),
        error,
    }
}

/// Writes `data` to `path` through a temporary file in the same directory.
fn write_new(path: &Path, data: &[u8]) -> Result<(), LayoutError> {
    kiln_vmm::write_atomically(path, data).map_err(io(path))
}

impl Layout {
    /// Opens an existing layout.
    ///
    /// # Errors
    /// [`LayoutError::NotLayout`] when `dir` has no valid `oci-layout` file.
    pub fn open(dir: &Path) -> Result<Self, LayoutError> {
        let marker = dir.join("oci-layout");
        let not = |reason: String| LayoutError::NotLayout {
            path: dir.into(),
            reason,
        };
        let text = std::fs::read(&marker).map_err(|e| not(format!("oci-layout: {e}")))?;
        let v: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| not(format!("oci-layout: {e}")))?;
        match v["imageLayoutVersion"].as_str() {
            Some("1.0.0") => Ok(Self { dir: dir.into() }),
            other => Err(not(format!(
                "oci-layout has imageLayoutVersion {other:?} (expected \"1.0.0\")"
            ))),
        }
    }

    /// Opens the layout at `dir`, creating it when `dir` is missing or
    /// empty.
    ///
    /// # Errors
    /// [`LayoutError`] when `dir` holds something else.
    pub fn create(dir: &Path) -> Result<Self, LayoutError> {
        let empty = match std::fs::read_dir(dir) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(io(dir)(e)),
        };
        if !empty {
            return Self::open(dir);
        }
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).map_err(io(&blobs))?;
        write_new(&dir.join("index.json"), &index_bytes(&empty_index()?)?)?;
        write_new(
            &dir.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        Ok(Self { dir: dir.into() })
    }

    /// The layout's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf, LayoutError> {
        Ok(self.dir.join("blobs/sha256").join(digest_hex(digest)?))
    }

    fn index(&self) -> Result<ImageIndex, LayoutError> {
        let path = self.dir.join("index.json");
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        ImageIndex::from_reader(bytes.as_slice()).map_err(|e| LayoutError::NotLayout {
            path: self.dir.clone(),
            reason: format!("index.json: {e}"),
        })
    }

    /// Adds `artifact` to the layout under `name` (the index's
    /// `org.opencontainers.image.ref.name`), replacing what had that name.
    ///
    /// # Errors
    /// [`LayoutError`]; the layout's index is unchanged on failure.
    pub fn write(&self, artifact: &Artifact, name: Option<&str>) -> Result<(), LayoutError> {
        let blobs = self.dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).map_err(io(&blobs))?;
        let contents = artifact
            .blobs
            .iter()
            .map(|b| (b.digest.as_str(), b.data.as_slice()))
            .chain([(artifact.digest.as_str(), artifact.manifest.as_slice())]);
        for (digest, data) in contents {
            let path = self.blob_path(digest)?;
            let present = std::fs::read(&path).is_ok_and(|have| sha256_digest(&have) == digest);
            if !present {
                write_new(&path, data)?;
            }
        }
        let mut index = self.index()?;
        let mut manifests = index.manifests().clone();
        if let Some(n) = name {
            manifests.retain(|d| ref_name(d.annotations()) != Some(n));
        }
        let mut desc = DescriptorBuilder::default()
            .media_type(MediaType::ImageManifest)
            .digest(
                artifact
                    .digest
                    .parse::<oci_spec::image::Digest>()
                    .map_err(|_| OciError::BadDigest(artifact.digest.clone()))?,
            )
            .size(artifact.manifest.len() as u64)
            .artifact_type(MediaType::Other(ARTIFACT_TYPE.into()));
        if let Some(n) = name {
            desc = desc.annotations(HashMap::from([(REF_NAME.to_owned(), n.to_owned())]));
        }
        manifests.push(desc.build().map_err(|e| OciError::Manifest {
            what: "(index entry)".into(),
            reason: e.to_string(),
        })?);
        index.set_manifests(manifests);
        write_new(&self.dir.join("index.json"), &index_bytes(&index)?)
    }

    /// The names (ref.name annotations) of the layout's manifests, with
    /// their digests; unnamed ones have `None`.
    ///
    /// # Errors
    /// [`LayoutError`] when the index cannot be read.
    pub fn entries(&self) -> Result<Vec<(Option<String>, String)>, LayoutError> {
        Ok(self
            .index()?
            .manifests()
            .iter()
            .map(|d| {
                (
                    ref_name(d.annotations()).map(str::to_owned),
                    d.digest().to_string(),
                )
            })
            .collect())
    }

    /// The manifest named `name` — or the only one when `name` is None —
    /// read and checked against its digest. Returns its digest and bytes.
    ///
    /// # Errors
    /// [`LayoutError::Select`] when no manifest (or more than one) fits.
    pub fn manifest(&self, name: Option<&str>) -> Result<(String, Vec<u8>), LayoutError> {
        let index = self.index()?;
        let select = |reason: String| LayoutError::Select {
            path: self.dir.clone(),
            reason,
        };
        let candidates: Vec<_> = index
            .manifests()
            .iter()
            .filter(|d| name.is_none_or(|n| ref_name(d.annotations()) == Some(n)))
            .collect();
        let names = || {
            let all: Vec<String> = index
                .manifests()
                .iter()
                .map(|d| ref_name(d.annotations()).unwrap_or("(unnamed)").to_owned())
                .collect();
            all.join(", ")
        };
        let desc = match (candidates.as_slice(), name) {
            ([one], _) => *one,
            ([], Some(n)) => {
                return Err(select(format!(
                    "no image named {n:?} in the layout (it has: {})",
                    names()
                )))
            }
            ([], None) => return Err(select("the layout holds no images".into())),
            (_, _) => {
                return Err(select(format!(
                    "the layout holds several images ({}); name one as DIR:NAME",
                    names()
                )))
            }
        };
        if *desc.media_type() != MediaType::ImageManifest {
            return Err(select(format!(
                "{} is a {}, not an image manifest",
                desc.digest(),
                desc.media_type()
            )));
        }
        let digest = desc.digest().to_string();
        if desc.size() > MAX_MANIFEST_SIZE {
            return Err(OciError::TooLarge {
                what: format!("manifest {digest}"),
                limit: MAX_MANIFEST_SIZE,
            }
            .into());
        }
        let bytes = self.read(&digest, desc.size())?;
        super::verify(&format!("manifest {digest}"), &bytes, &digest, desc.size())?;
        Ok((digest, bytes))
    }

    /// A blob's bytes as they are in the layout (at most `size` + 1 are
    /// read, so a blob longer than its descriptor is caught, not loaded).
    ///
    /// # Errors
    /// [`LayoutError::Io`] when it is missing or unreadable.
    pub fn blob(&self, blob: &BlobRef) -> Result<Vec<u8>, LayoutError> {
        self.read(&blob.digest, blob.size)
    }

    fn read(&self, digest: &str, size: u64) -> Result<Vec<u8>, LayoutError> {
        let path = self.blob_path(digest)?;
        let file = std::fs::File::open(&path).map_err(io(&path))?;
        let mut data = Vec::new();
        file.take(size + 1)
            .read_to_end(&mut data)
            .map_err(io(&path))?;
        Ok(data)
    }
}

fn ref_name(annotations: &Option<HashMap<String, String>>) -> Option<&str> {
    annotations
        .as_ref()
        .and_then(|a| a.get(REF_NAME))
        .map(String::as_str)
}

fn empty_index() -> Result<ImageIndex, LayoutError> {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::new())
        .build()
        .map_err(|e| {
            OciError::Manifest {
                what: "index.json".into(),
                reason: e.to_string(),
            }
            .into()
        })
}

fn index_bytes(index: &ImageIndex) -> Result<Vec<u8>, LayoutError> {
    let value = serde_json::to_value(index).map_err(|e| OciError::Manifest {
        what: "index.json".into(),
        reason: e.to_string(),
    })?;
    Ok(serde_json::to_vec_pretty(&value).unwrap_or_default())
}

impl crate::transfer::BlobSource for Layout {
    fn fetch(&self, blob: &BlobRef) -> Result<Vec<u8>, crate::transfer::FetchError> {
        Ok(self.blob(blob)?)
    }
}
