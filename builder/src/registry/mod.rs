//! Pushing images to and pulling them from OCI registries (the OCI
//! distribution spec). [`client`] speaks HTTP to one repository; [`push`]
//! and [`pull`] move an image between it and the local store, verifying
//! every byte on the way in.

pub mod auth;
pub mod client;

use std::path::PathBuf;

use crate::image::SectionKind;
use crate::oci::reference::Reference;
use crate::oci::{self, parse_manifest, sha256_digest, BlobRef, OciError};
use crate::parts::ImageParts;
use crate::progress::{human_size, Progress};
use crate::snapshots;
use crate::store::{Store, StoreError, StoredImage};
use crate::transfer::{self, BlobOutcome, BlobSource, TransferError};

pub use auth::Credentials;
pub use client::Client;

/// How to reach a registry.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// Plain HTTP instead of HTTPS (for registries on localhost).
    pub plain_http: bool,
    /// A PEM file of CA certificates to trust instead of the public roots.
    pub ca_cert: Option<PathBuf>,
    /// Credentials, if any are known for the registry.
    pub credentials: Option<Credentials>,
    /// Upload blobs larger than this in chunks of this size.
    pub chunk_size: Option<u64>,
}

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A reference without a registry host.
    #[error("{0}: no registry in the reference; write it as HOST[:PORT]/REPOSITORY[:TAG] (for example localhost:5000/hello:1.0)")]
    NoRegistry(String),
    /// The request did not get an HTTP answer.
    #[error("{method} {url}: {error}")]
    Http {
        /// The method.
        method: String,
        /// The URL.
        url: String,
        /// Why.
        error: ureq::Error,
    },
    /// The registry answered with an unexpected status.
    #[error("{what}: {url} answered {status}{}", if message.is_empty() { String::new() } else { format!(" ({message})") })]
    Status {
        /// What kiln was doing.
        what: String,
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The registry's error message.
        message: String,
    },
    /// Authentication failed or is missing.
    #[error("{registry}: {reason}")]
    Unauthorized {
        /// The registry.
        registry: String,
        /// What happened.
        reason: String,
    },
    /// The --ca-cert file is unusable.
    #[error("--ca-cert {path}: {reason}")]
    CaCert {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The registry contradicted itself or sent the wrong bytes.
    #[error("{what}: {reason}")]
    Lies {
        /// Which object.
        what: String,
        /// What does not match.
        reason: String,
    },
    /// A transfer broke off (`what` is in the message of the caller).
    #[error("{reason}")]
    Transfer {
        /// Which blob.
        what: String,
        /// What happened.
        reason: String,
    },
    /// The manifest or a blob is wrong.
    #[error(transparent)]
    Content(#[from] OciError),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Moving blobs into the store failed.
    #[error(transparent)]
    Receive(#[from] TransferError),
}

/// What a push did with each blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// The repository had it.
    Exists,
    /// Linked from another repository of the registry.
    Mounted(String),
    /// Uploaded.
    Uploaded,
}

/// The result of a push.
#[derive(Clone, Debug)]
pub struct PushReport {
    /// The manifest digest.
    pub digest: String,
    /// Each blob's outcome, config first.
    pub blobs: Vec<(String, Pushed)>,
}

/// Another repository of the same registry that (as far as the local store
/// knows) has the blob `digest`: a source for a cross-repository mount.
fn mount_source(store: &Store, target: &Reference, digest: &str) -> Option<String> {
    let images = store.images().ok()?;
    images.iter().find_map(|img| {
        let has = store
            .manifest(img)
            .ok()
            .and_then(|m| parse_manifest("stored", &m).ok())
            .is_some_and(|m| m.blobs().iter().any(|b| b.digest == digest));
        if !has {
            return None;
        }
        img.names.iter().find_map(|n| {
            let r = Reference::parse(n).ok()?;
            (r.registry == target.registry && r.repository != target.repository)
                .then_some(r.repository)
        })
    })
}

/// Pushes `parts` to `reference` (skipping blobs the repository has,
/// mounting those another repository of the registry has, uploading the
/// rest), then records the image in the local store under `reference`.
///
/// # Errors
/// [`RegistryError`].
pub fn push(
    store: &Store,
    parts: &ImageParts,
    reference: &Reference,
    opts: &RegistryOptions,
    progress: &Progress,
) -> Result<PushReport, RegistryError> {
    let raw = oci::read_parts(parts)?;
    let artifact = oci::artifact(parts, &raw)?;
    let client = client_to_push(reference, &artifact.digest, "image", opts)?;
    let mut outcomes = Vec::new();
    for blob in &artifact.blobs {
        let label = format!(
            "{} {}",
            blob.kind.name(),
            blob.digest.get(7..19).unwrap_or(&blob.digest)
        );
        let size = blob.data.len() as u64;
        if client.has_blob(&blob.digest)? {
            progress
                .task(&label, size)
                .finish("already in the repository");
            outcomes.push((blob.digest.clone(), Pushed::Exists));
            continue;
        }
        let location = match mount_source(store, reference, &blob.digest) {
            Some(from) => match client.mount(&blob.digest, &from)? {
                client::Mount::Mounted => {
                    progress
                        .task(&label, size)
                        .finish(&format!("mounted from {from}"));
                    outcomes.push((blob.digest.clone(), Pushed::Mounted(from)));
                    continue;
                }
                client::Mount::Upload(location) => location,
            },
            None => client.open_upload()?,
        };
        upload(
            &client,
            location,
            &label,
            &blob.data,
            &blob.digest,
            opts,
            progress,
        )?;
        outcomes.push((blob.digest.clone(), Pushed::Uploaded));
    }
    put_manifest(&client, reference, &artifact.manifest, &artifact.digest)?;
    let names = reference.store_names();
    transfer::store_parts(store, &raw, &artifact.manifest, &names)?;
    Ok(PushReport {
        digest: artifact.digest,
        blobs: outcomes,
    })
}

/// A client for pushing `what` (whose manifest digest is `digest`) to
/// `reference`: a reference pinned to another digest is refused before
/// anything is sent, and `GET /v2/` runs first so authentication happens
/// before any upload.
fn client_to_push(
    reference: &Reference,
    digest: &str,
    what: &str,
    opts: &RegistryOptions,
) -> Result<Client, RegistryError> {
    if let Some(pinned) = reference.digest.as_ref().filter(|d| *d != digest) {
        return Err(RegistryError::Lies {
            what: reference.to_string(),
            reason: format!("the {what}'s manifest digest is {digest}, not {pinned}"),
        });
    }
    let client = Client::new(reference, opts, true)?;
    client.ping()?;
    Ok(client)
}

/// Uploads `data` (whose digest is `digest`) to `location`, with a
/// progress bar called `label`.
fn upload(
    client: &Client,
    location: String,
    label: &str,
    data: &[u8],
    digest: &str,
    opts: &RegistryOptions,
    progress: &Progress,
) -> Result<(), RegistryError> {
    let size = data.len() as u64;
    let task = progress.task(label, size);
    match client.upload(location, data, digest, opts.chunk_size, &|n| {
        task.advance(n)
    }) {
        Ok(()) => {
            task.finish(&format!("pushed {}", human_size(size)));
            Ok(())
        }
        Err(e) => {
            task.abandon();
            Err(e)
        }
    }
}

/// Sends one blob unless the repository has it; `what` names it in the
/// progress output.
fn send_blob(
    client: &Client,
    what: &str,
    data: &[u8],
    opts: &RegistryOptions,
    progress: &Progress,
) -> Result<(String, Pushed), RegistryError> {
    let digest = sha256_digest(data);
    let label = format!("{what} {}", digest.get(7..19).unwrap_or(&digest));
    if client.has_blob(&digest)? {
        progress
            .task(&label, data.len() as u64)
            .finish("already in the repository");
        return Ok((digest, Pushed::Exists));
    }
    let location = client.open_upload()?;
    upload(client, location, &label, data, &digest, opts, progress)?;
    Ok((digest, Pushed::Uploaded))
}

/// Stores `manifest` under `reference`, refusing a registry that says it
/// stored something else.
fn put_manifest(
    client: &Client,
    reference: &Reference,
    manifest: &[u8],
    digest: &str,
) -> Result<(), RegistryError> {
    let reported = client.put_manifest(reference.manifest_key(), manifest)?;
    match reported.filter(|d| d != digest) {
        Some(d) => Err(RegistryError::Lies {
            what: format!("manifest {digest}"),
            reason: format!("the registry stored it as {d}"),
        }),
        None => Ok(()),
    }
}

/// Pushes `parts` as an OCI container image (see [`oci::container`]) that
/// containerd can pull, unpack and run with `containerd-shim-kiln-v1`.
/// kiln itself keeps using the kiln form; the local store is not changed.
///
/// # Errors
/// [`RegistryError`].
pub fn push_container(
    parts: &ImageParts,
    reference: &Reference,
    opts: &RegistryOptions,
    progress: &Progress,
) -> Result<PushReport, RegistryError> {
    let [config, kernel, rootfs] = oci::read_parts(parts)?;
    let file = crate::image::encode(&[
        (SectionKind::Config, &config),
        (SectionKind::Kernel, &kernel),
        (SectionKind::Rootfs, &rootfs),
    ]);
    let artifact = oci::container::container_artifact(&file, &parts.image_digest())?;
    let client = client_to_push(reference, &artifact.digest, "container image", opts)?;
    let blobs = vec![
        send_blob(
            &client,
            "container config",
            &artifact.config,
            opts,
            progress,
        )?,
        send_blob(&client, "container layer", &artifact.layer, opts, progress)?,
    ];
    put_manifest(&client, reference, &artifact.manifest, &artifact.digest)?;
    Ok(PushReport {
        digest: artifact.digest,
        blobs,
    })
}

/// Blobs from a registry, with a progress bar each.
struct RegistrySource<'a> {
    client: &'a Client,
    progress: &'a Progress,
}

impl BlobSource for RegistrySource<'_> {
    fn fetch(&self, blob: &BlobRef) -> Result<Vec<u8>, transfer::FetchError> {
        let task = self.progress.task(
            &format!(
                "{} {}",
                blob.kind.name(),
                blob.digest.get(7..19).unwrap_or(&blob.digest)
            ),
            blob.size,
        );
        match self.client.get_blob(blob, &|n| task.advance(n)) {
            Ok(data) => {
                task.finish(&format!("pulled {}", human_size(data.len() as u64)));
                Ok(data)
            }
            Err(e) => {
                task.abandon();
                Err(Box::new(e).into())
            }
        }
    }
}

/// Pulls `reference` into the local store: the manifest (checked against
/// the pinned digest, or the digest the registry claims for the tag), then
/// every blob the store lacks, each verified before it is stored.
///
/// # Errors
/// [`RegistryError`]; nothing is left in the store on failure.
pub fn pull(
    store: &Store,
    reference: &Reference,
    opts: &RegistryOptions,
    progress: &Progress,
) -> Result<Pulled, RegistryError> {
    let client = Client::new(reference, opts, false)?;
    let (manifest, claimed) = client.get_manifest(reference.manifest_key())?;
    let digest = sha256_digest(&manifest);
    let what = format!("manifest of {reference}");
    if manifest.len() as u64 > oci::MAX_MANIFEST_SIZE {
        return Err(OciError::TooLarge {
            what,
            limit: oci::MAX_MANIFEST_SIZE,
        }
        .into());
    }
    if let Some(pinned) = reference.digest.as_ref().filter(|p| **p != digest) {
        return Err(RegistryError::Lies {
            what,
            reason: format!("asked for {pinned}, received content with digest {digest}"),
        });
    }
    if let Some(c) = claimed.filter(|c| *c != digest) {
        return Err(RegistryError::Lies {
            what,
            reason: format!("the registry says its digest is {c}, its content hashes to {digest}"),
        });
    }
    let names = reference.store_names();
    if snapshots::is_snapshot_manifest(&manifest) {
        return pull_snapshot(store, &client, manifest, &names, progress).map(Pulled::Snapshot);
    }
    let source = RegistrySource {
        client: &client,
        progress,
    };
    let mut report = |blob: &BlobRef, outcome: BlobOutcome| {
        if outcome == BlobOutcome::Present {
            progress.line(&format!("kiln: {}: already stored", blob.describe()));
        }
    };
    Ok(Pulled::Image(transfer::receive(
        store,
        &digest,
        &manifest,
        &source,
        &names,
        &mut report,
    )?))
}

/// What [`pull`] brought into the store.
#[derive(Clone, Debug)]
pub enum Pulled {
    /// An image.
    Image(StoredImage),
    /// A snapshot (`kiln run --from-snapshot NAME` resumes it).
    Snapshot(snapshots::StoredSnapshot),
}

impl Pulled {
    /// Its manifest digest.
    pub fn digest(&self) -> &str {
        match self {
            Pulled::Image(i) => &i.digest,
            Pulled::Snapshot(s) => &s.digest,
        }
    }
}

/// The blobs of the snapshot manifest `manifest` (already checked against
/// its digest), each verified, then the snapshot stored under `names`.
fn pull_snapshot(
    store: &Store,
    client: &Client,
    manifest: Vec<u8>,
    names: &[Reference],
    progress: &Progress,
) -> Result<snapshots::StoredSnapshot, RegistryError> {
    let digest = sha256_digest(&manifest);
    let m = snapshots::parse_manifest(&format!("snapshot {digest}"), &manifest)
        .map_err(|e| snapshot_error(&digest, e))?;
    let fetch = |label: &str, blob: &snapshots::SnapshotBlob| -> Result<Vec<u8>, RegistryError> {
        let what = format!(
            "snapshot {label} {}",
            blob.digest.get(7..19).unwrap_or(&blob.digest)
        );
        let task = progress.task(&what, blob.size);
        match client.get_blob_named(&blob.digest, blob.size, &what, &|n| task.advance(n)) {
            Ok(data) => {
                task.finish(&format!("pulled {}", human_size(data.len() as u64)));
                oci::verify(&what, &data, &blob.digest, blob.size)?;
                Ok(data)
            }
            Err(e) => {
                task.abandon();
                Err(e)
            }
        }
    };
    let artifact = snapshots::SnapshotArtifact {
        state: fetch("state", &m.state)?,
        memory: fetch("memory", &m.memory)?,
        digest: digest.clone(),
        manifest,
    };
    store
        .add_snapshot(&artifact, names)
        .map_err(|e| snapshot_error(&digest, e))
}

fn snapshot_error(what: &str, e: snapshots::SnapshotStoreError) -> RegistryError {
    match e {
        snapshots::SnapshotStoreError::Store(e) => RegistryError::Store(e),
        snapshots::SnapshotStoreError::Oci(e) => RegistryError::Content(e),
        other => RegistryError::Lies {
            what: format!("snapshot {what}"),
            reason: other.to_string(),
        },
    }
}

/// Pushes the stored snapshot `snapshot` to `reference`: blobs the
/// repository lacks, then the manifest; records the name locally.
///
/// # Errors
/// [`RegistryError`].
pub fn push_snapshot(
    store: &Store,
    snapshot: &snapshots::StoredSnapshot,
    reference: &Reference,
    opts: &RegistryOptions,
    progress: &Progress,
) -> Result<PushReport, RegistryError> {
    let artifact = store
        .snapshot_artifact(snapshot)
        .map_err(|e| snapshot_error(&snapshot.digest, e))?;
    let client = client_to_push(reference, &artifact.digest, "snapshot", opts)?;
    let mut outcomes = Vec::new();
    for (label, data) in [("state", &artifact.state), ("memory", &artifact.memory)] {
        outcomes.push(send_blob(
            &client,
            &format!("snapshot {label}"),
            data,
            opts,
            progress,
        )?);
    }
    put_manifest(&client, reference, &artifact.manifest, &artifact.digest)?;
    store
        .add_snapshot(&artifact, &reference.store_names())
        .map_err(|e| snapshot_error(&artifact.digest, e))?;
    Ok(PushReport {
        digest: artifact.digest,
        blobs: outcomes,
    })
}
