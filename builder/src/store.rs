//! The local image store, `$KILN_HOME` (default `~/.local/share/kiln`):
//!
//! ```text
//! blobs/sha256/<hex>   content: boot configs, kernels and rootfs archives
//!                      (uncompressed, so a boot maps them directly) and
//!                      manifests; read-only, shared by every image
//! images.json          which images exist: manifest digest, names, and the
//!                      digests of their config, kernel and rootfs blobs
//! lock                 flock(2)ed while images.json changes
//! ```
//!
//! A blob's digest is checked before it enters (callers verify what they
//! fetched; [`Store::put_blob`] names the file by the digest of the bytes
//! it is given), and files are written under a temporary name, flushed to
//! disk and renamed (the directory flushed too), so the store never holds
//! a partial or mislabelled blob, even after a power cut. A blob already
//! present is checked again before it is reused (a file some other tool
//! damaged is replaced). Every change to images.json, and every deletion
//! of blobs, happens under the lock, so an image is never recorded whose
//! blob another kiln is deleting. Temporary files of processes that died
//! (`kill -9`) are removed by the next writer. Two images with the same
//! kernel keep one copy of it.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_vmm::source::FileSlice;
use serde::{Deserialize, Serialize};

use crate::image::SectionKind;
use crate::oci::reference::Reference;
use crate::oci::{digest_hex, sha256_digest};
use crate::parts::{ImageParts, Part};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file of the store cannot be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// images.json is not what kiln writes.
    #[error("{path}: damaged image list: {reason}")]
    Index {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No stored image matches.
    #[error("no image {0:?} in the local store (`kiln images` lists it)")]
    NotFound(String),
    /// A digest prefix matches several images.
    #[error("{0:?} matches several images; give more of the digest")]
    Ambiguous(String),
    /// A blob the image needs is not in the store.
    #[error("blob {digest} of image {image} is missing from the store ({path})")]
    MissingBlob {
        /// The image.
        image: String,
        /// The blob.
        digest: String,
        /// Where it should be.
        path: PathBuf,
    },
    /// A stored blob changed after it was stored.
    #[error("image {image} is damaged in the store: {reason}; remove it with `kiln rmi` and pull or import it again")]
    Damaged {
        /// The image.
        image: String,
        /// What does not match.
        reason: String,
    },
    /// A malformed name or digest.
    #[error(transparent)]
    Reference(#[from] crate::oci::reference::ReferenceError),
    /// A malformed digest.
    #[error(transparent)]
    Digest(#[from] crate::oci::OciError),
}

/// One stored image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredImage {
    /// `sha256:<hex>` of its manifest: its identity, as a registry knows it.
    pub digest: String,
    /// Its names (`localhost:5000/hello:1.0`, `hello:latest`), sorted.
    pub names: Vec<String>,
    /// `sha256:<hex>` of the boot configuration blob.
    pub config: String,
    /// `sha256:<hex>` of the kernel blob (uncompressed).
    pub kernel: String,
    /// `sha256:<hex>` of the rootfs blob (uncompressed).
    pub rootfs: String,
    /// Bytes of the three blobs.
    pub size: u64,
}

impl StoredImage {
    /// The first 12 hex digits of its digest, as `kiln images` shows it.
    pub fn short_digest(&self) -> &str {
        self.digest.get(7..19).unwrap_or(&self.digest)
    }

    /// Its three blobs, in image order.
    pub fn blobs(&self) -> [(SectionKind, &str); 3] {
        [
            (SectionKind::Config, &self.config),
            (SectionKind::Kernel, &self.kernel),
            (SectionKind::Rootfs, &self.rootfs),
        ]
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Index {
    version: u32,
    images: Vec<StoredImage>,
}

const INDEX_VERSION: u32 = 1;

/// What `kiln rmi` did.
#[derive(Debug, Default)]
pub struct Removal {
    /// Names taken off an image that stays (it has other names).
    pub untagged: Vec<String>,
    /// The image deleted, if one was.
    pub deleted: Option<String>,
    /// Blobs deleted (not used by any other image).
    pub blobs_freed: usize,
    /// Their bytes.
    pub bytes_freed: u64,
}

/// The local store at one directory.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

/// Holds the store's lock until dropped.
pub(crate) struct Lock(std::fs::File);

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: the descriptor is open for the lifetime of self.0.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

impl Store {
    /// `$KILN_HOME`, else `$XDG_DATA_HOME/kiln`, else `~/.local/share/kiln`.
    pub fn default_root() -> PathBuf {
        let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(home) = env("KILN_HOME") {
            return home.into();
        }
        if let Some(data) = env("XDG_DATA_HOME") {
            return PathBuf::from(data).join("kiln");
        }
        PathBuf::from(env("HOME").unwrap_or_else(|| "/".into())).join(".local/share/kiln")
    }

    /// The store at `root`. Nothing is created until something is stored,
    /// so reading (or booting a `.kiln` file) works where `root` cannot be
    /// written.
    pub fn open(root: &Path) -> Self {
        Self { root: root.into() }
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob `digest` (`sha256:<hex>`) lives.
    ///
    /// # Errors
    /// [`StoreError::Digest`] for a malformed digest.
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        Ok(self.root.join("blobs/sha256").join(digest_hex(digest)?))
    }

    /// Whether the blob is present and intact: its bytes hash to its name
    /// (an empty or damaged file left by a crash or another tool is not
    /// reused; [`Store::put_blob`] replaces it).
    pub fn has_blob(&self, digest: &str) -> bool {
        let Ok(path) = self.blob_path(digest) else {
            return false;
        };
        std::fs::read(path).is_ok_and(|bytes| sha256_digest(&bytes) == digest)
    }

    /// Stores `data` as a read-only blob named by its digest; returns the
    /// digest. A present blob with the same bytes is left alone; one with
    /// other bytes is replaced.
    ///
    /// # Errors
    /// [`StoreError::Io`]; no partial file is left.
    pub fn put_blob(&self, data: &[u8]) -> Result<String, StoreError> {
        self.store_blob(data).map(|(digest, _)| digest)
    }

    /// [`Store::put_blob`], also saying whether the file was written (not
    /// already present with these bytes).
    ///
    /// # Errors
    /// As [`Store::put_blob`].
    pub fn store_blob(&self, data: &[u8]) -> Result<(String, bool), StoreError> {
        let digest = sha256_digest(data);
        let path = self.blob_path(&digest)?;
        if std::fs::read(&path).is_ok_and(|present| present == data) {
            return Ok((digest, false));
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        kiln_vmm::write_durably(&path, data, 0o444).map_err(io(&path))?;
        Ok((digest, true))
    }

    /// Deletes the blobs among `digests` that no recorded image uses (the
    /// blobs a failed pull or import wrote), under the lock.
    ///
    /// # Errors
    /// [`StoreError`] when the lock or images.json cannot be had.
    pub fn discard_unused(&self, digests: &[String]) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        let index = self.read_index()?;
        for digest in digests {
            let used = index
                .images
                .iter()
                .any(|i| i.digest == *digest || i.blobs().iter().any(|(_, b)| b == digest));
            if !used {
                let path = self.blob_path(digest)?;
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(())
    }

    /// Removes the temporary files (`*.tmp.<pid>`) of writers that are no
    /// longer running: what a `kill -9` left. Called under the lock.
    fn remove_stale_temporaries(&self) {
        for dir in [self.root.clone(), self.root.join("blobs/sha256")] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(pid) = name
                    .to_str()
                    .and_then(|n| n.rsplit_once(".tmp."))
                    .and_then(|(_, pid)| pid.parse::<libc::pid_t>().ok())
                else {
                    continue;
                };
                // SAFETY: signal 0 only checks whether the process exists.
                let gone = pid > 0
                    && unsafe { libc::kill(pid, 0) } != 0
                    && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
                if gone {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }

    pub(crate) fn lock(&self) -> Result<Lock, StoreError> {
        std::fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        let path = self.root.join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        // SAFETY: flock on a descriptor we own; blocks until the lock is ours.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io(&path)(std::io::Error::last_os_error()));
        }
        Ok(Lock(file))
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("images.json")
    }

    fn read_index(&self) -> Result<Index, StoreError> {
        let path = self.index_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Index {
                    version: INDEX_VERSION,
                    images: Vec::new(),
                })
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let index: Index = serde_json::from_slice(&bytes).map_err(|e| StoreError::Index {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if index.version != INDEX_VERSION {
            return Err(StoreError::Index {
                path,
                reason: format!(
                    "version {} (this kiln reads {INDEX_VERSION})",
                    index.version
                ),
            });
        }
        // Every digest is used to name files: a damaged entry is refused
        // here rather than trusted anywhere.
        for (n, image) in index.images.iter().enumerate() {
            let digests = [&image.digest, &image.config, &image.kernel, &image.rootfs];
            if let Some(bad) = digests.into_iter().find(|d| digest_hex(d).is_err()) {
                return Err(StoreError::Index {
                    path,
                    reason: format!("image entry {} has a bad digest `{bad}`", n + 1),
                });
            }
        }
        Ok(index)
    }

    fn write_index(&self, index: &Index) -> Result<(), StoreError> {
        let path = self.index_path();
        let bytes = serde_json::to_vec_pretty(index).unwrap_or_default();
        kiln_vmm::write_atomically(&path, &bytes).map_err(io(&path))
    }

    /// Records an image whose manifest is `manifest` and whose config,
    /// kernel and rootfs blobs (already stored) have these digests, under
    /// `names` (which move here from any other image that had them).
    ///
    /// # Errors
    /// [`StoreError::MissingBlob`] when a blob is not in the store.
    pub fn add_image(
        &self,
        manifest: &[u8],
        blobs: [&str; 3],
        names: &[Reference],
    ) -> Result<StoredImage, StoreError> {
        let _lock = self.lock()?;
        self.remove_stale_temporaries();
        let digest = self.put_blob(manifest)?;
        let mut size = 0;
        for b in blobs {
            let path = self.blob_path(b)?;
            let meta = std::fs::metadata(&path).map_err(|_| StoreError::MissingBlob {
                image: digest.clone(),
                digest: b.into(),
                path: path.clone(),
            })?;
            size += meta.len();
        }
        let names: Vec<String> = names
            .iter()
            .map(|n| n.with_tag(n.tag.as_deref().unwrap_or("latest")).to_string())
            .collect();
        let mut index = self.read_index()?;
        for img in &mut index.images {
            img.names.retain(|n| !names.contains(n));
        }
        let pos = match index.images.iter().position(|i| i.digest == digest) {
            Some(p) => p,
            None => {
                index.images.push(StoredImage {
                    digest: digest.clone(),
                    names: Vec::new(),
                    config: blobs[0].into(),
                    kernel: blobs[1].into(),
                    rootfs: blobs[2].into(),
                    size,
                });
                index.images.len() - 1
            }
        };
        let img = &mut index.images[pos];
        img.names.extend(names);
        img.names.sort();
        img.names.dedup();
        let stored = img.clone();
        self.write_index(&index)?;
        Ok(stored)
    }

    /// Every stored image, in the order they were added.
    ///
    /// # Errors
    /// [`StoreError`] when images.json cannot be read.
    pub fn images(&self) -> Result<Vec<StoredImage>, StoreError> {
        Ok(self.read_index()?.images)
    }

    /// The image `text` names: a name (`hello`, `hello:1.0`,
    /// `localhost:5000/app:v2`), `name@sha256:…`, a manifest digest
    /// (`sha256:…`) or at least 6 leading hex digits of one.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] or [`StoreError::Ambiguous`].
    pub fn resolve(&self, text: &str) -> Result<StoredImage, StoreError> {
        let images = self.images()?;
        find(&images, text).cloned()
    }

    /// The manifest the image was stored with.
    ///
    /// # Errors
    /// [`StoreError`] when its blob is missing.
    pub fn manifest(&self, image: &StoredImage) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(&image.digest)?;
        std::fs::read(&path).map_err(io(&path))
    }

    /// The image's parts, for booting, exporting or pushing. Blobs were
    /// verified when they entered the store; here only their presence and
    /// total size are checked.
    ///
    /// # Errors
    /// [`StoreError::MissingBlob`] or [`StoreError::Damaged`].
    pub fn parts(&self, image: &StoredImage, label: &str) -> Result<ImageParts, StoreError> {
        let part = |(kind, digest): (SectionKind, &str)| -> Result<Part, StoreError> {
            let path = self.blob_path(digest)?;
            let missing = || StoreError::MissingBlob {
                image: label.into(),
                digest: digest.into(),
                path: path.clone(),
            };
            let file = std::fs::File::open(&path).map_err(|_| missing())?;
            let len = file.metadata().map_err(io(&path))?.len();
            Ok(Part {
                kind,
                sha256: digest_hex(digest)?.to_owned(),
                slice: FileSlice {
                    file: Arc::new(file),
                    offset: 0,
                    len,
                    name: format!("{label}:{}", kind.name()),
                },
            })
        };
        let [c, k, r] = image.blobs();
        let parts = ImageParts {
            label: label.into(),
            config: part(c)?,
            kernel: part(k)?,
            rootfs: part(r)?,
        };
        if parts.size() != image.size {
            return Err(StoreError::Damaged {
                image: label.into(),
                reason: format!(
                    "its blobs hold {} bytes, {} when they were stored",
                    parts.size(),
                    image.size
                ),
            });
        }
        Ok(parts)
    }

    /// Removes a name, or a whole image (given by digest, or by its last
    /// name), deleting blobs no other image uses.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] and the like; nothing changes then.
    pub fn remove(&self, text: &str) -> Result<Removal, StoreError> {
        let _lock = self.lock()?;
        self.remove_stale_temporaries();
        let mut index = self.read_index()?;
        let target = find(&index.images, text)?.digest.clone();
        let by_name = name_of(text).filter(|n| {
            index
                .images
                .iter()
                .any(|i| i.digest == target && i.names.contains(n))
        });
        let mut removal = Removal::default();
        let pos = index
            .images
            .iter()
            .position(|i| i.digest == target)
            .ok_or_else(|| StoreError::NotFound(text.into()))?;
        if let Some(name) = by_name {
            let img = &mut index.images[pos];
            img.names.retain(|n| *n != name);
            removal.untagged.push(name);
            if !img.names.is_empty() {
                self.write_index(&index)?;
                return Ok(removal);
            }
        }
        let gone = index.images.remove(pos);
        self.write_index(&index)?;
        removal.deleted = Some(gone.digest.clone());
        let in_use = |d: &str| {
            index
                .images
                .iter()
                .any(|i| i.digest == d || i.blobs().iter().any(|(_, b)| *b == d))
        };
        let blobs = gone.blobs().map(|(_, b)| b.to_owned());
        for digest in std::iter::once(gone.digest.clone()).chain(blobs) {
            if in_use(&digest) {
                continue;
            }
            let path = self.blob_path(&digest)?;
            if let Ok(meta) = std::fs::metadata(&path) {
                std::fs::remove_file(&path).map_err(io(&path))?;
                removal.blobs_freed += 1;
                removal.bytes_freed += meta.len();
            }
        }
        Ok(removal)
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |error| StoreError::Io {
        path: path.into(),
        error,
    }
}

/// The canonical name `text` gives, if it is a name (not a bare digest).
fn name_of(text: &str) -> Option<String> {
    let r = Reference::parse(text).ok()?;
    r.tag.as_ref()?;
    Some(r.with_tag(r.tag.as_deref().unwrap_or("latest")).to_string())
}

fn find<'a>(images: &'a [StoredImage], text: &str) -> Result<&'a StoredImage, StoreError> {
    if text.starts_with("sha256:") {
        return images
            .iter()
            .find(|i| i.digest == text)
            .ok_or_else(|| StoreError::NotFound(text.into()));
    }
    if let Ok(r) = Reference::parse(text) {
        let by_digest = r
            .digest
            .as_ref()
            .and_then(|d| images.iter().find(|i| i.digest == *d));
        let by_name = name_of(text).and_then(|n| images.iter().find(|i| i.names.contains(&n)));
        if let Some(img) = by_digest.or(by_name) {
            return Ok(img);
        }
    }
    let is_hex = text.len() >= 6 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if is_hex {
        let mut hits = images
            .iter()
            .filter(|i| i.digest.get(7..).is_some_and(|h| h.starts_with(text)));
        if let Some(first) = hits.next() {
            if hits.next().is_some() {
                return Err(StoreError::Ambiguous(text.into()));
            }
            return Ok(first);
        }
    }
    Err(StoreError::NotFound(text.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(test: &str) -> Store {
        let dir = std::env::temp_dir().join(format!("kiln-store-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Store::open(&dir)
    }

    fn image(store: &Store, seed: &str, names: &[&str]) -> StoredImage {
        let blobs: Vec<String> = ["config", "kernel", "rootfs"]
            .iter()
            .map(|k| store.put_blob(format!("{k} {seed}").as_bytes()).unwrap())
            .collect();
        let names: Vec<Reference> = names.iter().map(|n| Reference::parse(n).unwrap()).collect();
        store
            .add_image(
                format!("manifest {seed}").as_bytes(),
                [&blobs[0], &blobs[1], &blobs[2]],
                &names,
            )
            .unwrap()
    }

    #[test]
    fn damaged_blobs_are_not_reused_and_dead_writers_leave_nothing() {
        let s = store("damaged");
        let digest = sha256_digest(b"rootfs bytes");
        let path = s.blob_path(&digest).unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // What a power cut before the data reached the disk leaves.
        std::fs::write(&path, b"").unwrap();
        assert!(!s.has_blob(&digest), "an empty file is not the blob");
        assert_eq!(s.put_blob(b"rootfs bytes").unwrap(), digest);
        assert!(s.has_blob(&digest));
        assert_eq!(std::fs::read(&path).unwrap(), b"rootfs bytes");
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert!(mode.readonly());
        // Temporary files of a process that is gone go at the next write;
        // a live writer's stay.
        let dead =
            path.with_file_name(format!("{}.tmp.{}", digest_hex(&digest).unwrap(), i32::MAX));
        let live = s.root().join(format!(
            "images.json.tmp.{}",
            std::os::unix::process::parent_id()
        ));
        std::fs::write(&dead, b"half").unwrap();
        std::fs::write(&live, b"mine").unwrap();
        image(&s, "t", &["t"]);
        assert!(!dead.exists());
        assert!(live.exists());
        // A failed pull's blobs go, unless an image uses them.
        let used = image(&s, "u", &["u"]);
        let orphan = s.put_blob(b"orphan").unwrap();
        s.discard_unused(&[orphan.clone(), used.rootfs.clone()])
            .unwrap();
        assert!(!s.blob_path(&orphan).unwrap().exists());
        assert!(s.has_blob(&used.rootfs));
    }

    #[test]
    fn names_resolve_move_and_go_with_their_images() {
        let s = store("names");
        let a = image(&s, "a", &["hello", "localhost:5000/team/hello:1.0"]);
        assert_eq!(a.names, ["hello:latest", "localhost:5000/team/hello:1.0"]);
        assert_eq!(s.resolve("hello").unwrap(), a);
        assert_eq!(s.resolve(&a.digest).unwrap(), a);
        assert_eq!(s.resolve(&a.digest[7..15]).unwrap(), a);
        let pinned = format!("localhost:5000/team/hello@{}", a.digest);
        assert_eq!(s.resolve(&pinned).unwrap(), a);
        assert!(matches!(s.resolve("nothing"), Err(StoreError::NotFound(_))));
        // A name given to another image moves there.
        let b = image(&s, "b", &["hello"]);
        assert_eq!(s.resolve("hello").unwrap().digest, b.digest);
        assert_eq!(
            s.resolve(&a.digest).unwrap().names,
            ["localhost:5000/team/hello:1.0"]
        );
        // The last name takes the image and its blobs with it.
        let r = s.remove("localhost:5000/team/hello:1.0").unwrap();
        assert_eq!(r.deleted.as_deref(), Some(a.digest.as_str()));
        assert_eq!(r.blobs_freed, 4);
        assert!(!s.has_blob(&a.kernel) && s.has_blob(&b.kernel));
        assert_eq!(s.images().unwrap(), [b]);
    }

    #[test]
    fn shared_blobs_stay_while_an_image_uses_them() {
        let s = store("shared");
        let a = image(&s, "a", &["a"]);
        // Same kernel as `a`, other config and rootfs.
        let config = s.put_blob(b"config b").unwrap();
        let rootfs = s.put_blob(b"rootfs b").unwrap();
        let b = s
            .add_image(
                b"manifest b",
                [&config, &a.kernel, &rootfs],
                &[Reference::parse("b").unwrap()],
            )
            .unwrap();
        let r = s.remove(&a.digest).unwrap();
        assert_eq!(r.blobs_freed, 3, "the shared kernel stays");
        assert!(s.has_blob(&b.kernel));
        assert!(s.parts(&b, "b").is_ok());
        // A blob that changed size is damage, not an image.
        let rootfs_path = s.blob_path(&b.rootfs).unwrap();
        let mut perms = std::fs::metadata(&rootfs_path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
        std::fs::set_permissions(&rootfs_path, perms).unwrap();
        std::fs::write(&rootfs_path, b"rootfs b, longer").unwrap();
        assert!(matches!(s.parts(&b, "b"), Err(StoreError::Damaged { .. })));
        // A missing blob is named, not booted.
        std::fs::remove_file(s.blob_path(&b.rootfs).unwrap()).unwrap();
        assert!(matches!(
            s.parts(&b, "b"),
            Err(StoreError::MissingBlob { .. })
        ));
    }

    #[test]
    fn prefixes_must_be_unique_and_the_index_must_be_kiln_s() {
        let s = store("index");
        let images = [image(&s, "0", &[]), image(&s, "1", &[])];
        let d = &images[0].digest[7..13];
        assert_eq!(s.resolve(d).unwrap(), images[0]);
        assert!(
            matches!(s.resolve(&d[..5]), Err(StoreError::NotFound(_))),
            "too short"
        );
        // Two images whose digests share the prefix: refused, not guessed.
        let mut raw: serde_json::Value =
            serde_json::from_slice(&std::fs::read(s.root().join("images.json")).unwrap()).unwrap();
        raw["images"][1]["digest"] = images[0].digest.clone().into();
        std::fs::write(s.root().join("images.json"), raw.to_string()).unwrap();
        assert!(matches!(s.resolve(d), Err(StoreError::Ambiguous(_))));
        std::fs::write(
            s.root().join("images.json"),
            "{\"version\": 7, \"images\": []}",
        )
        .unwrap();
        let e = s.images().unwrap_err().to_string();
        assert!(e.contains("version 7"), "{e}");
        std::fs::write(s.root().join("images.json"), "[]").unwrap();
        assert!(matches!(s.images(), Err(StoreError::Index { .. })));
        // A damaged digest (it used to panic `kiln run`): refused by name.
        raw["images"][1]["digest"] = "x".into();
        std::fs::write(s.root().join("images.json"), raw.to_string()).unwrap();
        let e = s.resolve("hello").unwrap_err().to_string();
        assert!(e.contains("image entry 2 has a bad digest `x`"), "{e}");
        raw["images"][1]["digest"] = images[1].digest.clone().into();
        raw["images"][0]["rootfs"] = "sha256:../../etc".into();
        std::fs::write(s.root().join("images.json"), raw.to_string()).unwrap();
        let e = s.images().unwrap_err().to_string();
        assert!(e.contains("bad digest `sha256:../../etc`"), "{e}");
    }
}
