//! Moving images into and out of the local store: from an OCI layout or a
//! registry (anything that hands out blobs by descriptor), from a `.kiln`
//! file, and out again as an [`Artifact`](crate::oci::Artifact).

use crate::image::Image;
use crate::oci::reference::Reference;
use crate::oci::{self, parse_manifest, BlobRef, OciError};
use crate::parts::ImageParts;
use crate::store::{Store, StoreError, StoredImage};

/// Where blobs come from during an import or a pull.
pub trait BlobSource {
    /// The bytes of `blob` as they travel (compressed layers compressed).
    /// May return fewer or more bytes than the descriptor says: the caller
    /// verifies.
    ///
    /// # Errors
    /// [`FetchError`]: whatever keeps the source from delivering it.
    fn fetch(&self, blob: &BlobRef) -> Result<Vec<u8>, FetchError>;
}

/// Why a source could not deliver a blob.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// An OCI layout on disk failed.
    #[error(transparent)]
    Layout(#[from] crate::oci::layout::LayoutError),
    /// A registry failed (boxed: a registry error can itself carry a
    /// transfer error).
    #[error(transparent)]
    Registry(#[from] Box<crate::registry::RegistryError>),
}

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The manifest or a blob is wrong.
    #[error(transparent)]
    Content(#[from] OciError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The source failed.
    #[error("fetching {what}: {source}")]
    Source {
        /// Which blob.
        what: String,
        /// Why.
        #[source]
        source: FetchError,
    },
    /// An image file is unusable.
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
}

/// What happened to each blob of an import.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobOutcome {
    /// Already in the store (the manifest's uncompressed digest matched).
    Present,
    /// Fetched, verified and stored; the number of bytes fetched.
    Fetched(u64),
}

/// Verifies the manifest (`manifest_digest` is what it must hash to), then
/// fetches each blob the store lacks from `source`, verifies and stores it,
/// and records the image under `names`. `report` hears about each blob.
/// Nothing is recorded unless every blob arrived intact.
///
/// # Errors
/// [`TransferError`] naming the blob at fault.
pub fn receive(
    store: &Store,
    manifest_digest: &str,
    manifest: &[u8],
    source: &dyn BlobSource,
    names: &[Reference],
    report: &mut dyn FnMut(&BlobRef, BlobOutcome),
) -> Result<StoredImage, TransferError> {
    let mut written = Vec::new();
    let mut attempt = || {
        receive_blobs(
            store,
            manifest_digest,
            manifest,
            source,
            report,
            &mut written,
        )
        .and_then(|blobs| {
            Ok(store.add_image(manifest, [&blobs[0], &blobs[1], &blobs[2]], names)?)
        })
    };
    let mut result = attempt();
    if matches!(
        result,
        Err(TransferError::Store(
            crate::store::StoreError::MissingBlob { .. }
        ))
    ) {
        // A blob found present was deleted before the image was recorded
        // (another kiln's failed pull cleaning up): fetch it again, once.
        result = attempt();
    }
    if result.is_err() {
        // Leave nothing behind: blobs this import wrote go again unless an
        // image (recorded meanwhile by another kiln) uses them — decided
        // under the store's lock, as add_image records images.
        let _ = store.discard_unused(&written);
    }
    result
}

fn receive_blobs(
    store: &Store,
    manifest_digest: &str,
    manifest: &[u8],
    source: &dyn BlobSource,
    report: &mut dyn FnMut(&BlobRef, BlobOutcome),
    written: &mut Vec<String>,
) -> Result<Vec<String>, TransferError> {
    let what = format!("manifest {manifest_digest}");
    oci::verify(&what, manifest, manifest_digest, manifest.len() as u64)?;
    let parsed = parse_manifest(&what, manifest)?;
    let mut stored = Vec::new();
    for blob in parsed.blobs() {
        let known = if blob.compressed {
            blob.uncompressed.as_deref()
        } else {
            Some(blob.digest.as_str())
        };
        if let Some(d) = known.filter(|d| store.has_blob(d)) {
            report(blob, BlobOutcome::Present);
            stored.push(d.to_owned());
            continue;
        }
        let data = source.fetch(blob).map_err(|source| TransferError::Source {
            what: blob.describe(),
            source,
        })?;
        let fetched = data.len() as u64;
        let (raw, digest) = oci::unpack_blob(blob, &data)?;
        drop(data);
        if blob.kind == crate::image::SectionKind::Config {
            crate::config::BootConfig::from_bytes(&raw).map_err(|reason| OciError::Manifest {
                what: what.clone(),
                reason: format!("its config is not a kiln boot configuration: {reason}"),
            })?;
        }
        // One read of a present file (compared, not hashed again).
        if store.store_blob(&raw)?.1 {
            written.push(digest.clone());
        }
        report(blob, BlobOutcome::Fetched(fetched));
        stored.push(digest);
    }
    Ok(stored)
}

/// Copies a verified `.kiln` file into the store under `names`.
///
/// # Errors
/// [`TransferError`].
pub fn import_file(
    store: &Store,
    image: &Image,
    names: &[Reference],
) -> Result<StoredImage, TransferError> {
    let parts = ImageParts::from_image(image);
    let raw = oci::read_parts(&parts)?;
    let artifact = oci::artifact(&parts, &raw)?;
    store_parts(store, &raw, &artifact.manifest, names)
}

/// Copies an image's part bytes `raw` into the store as the image whose
/// manifest is `manifest` (built from them), under `names`.
///
/// # Errors
/// [`TransferError`].
pub fn store_parts(
    store: &Store,
    raw: &oci::RawParts,
    manifest: &[u8],
    names: &[Reference],
) -> Result<StoredImage, TransferError> {
    let [c, k, r] = raw;
    let digests = [store.put_blob(c)?, store.put_blob(k)?, store.put_blob(r)?];
    Ok(store.add_image(manifest, [&digests[0], &digests[1], &digests[2]], names)?)
}
