//! A kiln image as an OCI *container* image, the form containerd (and so
//! Kubernetes) can pull and unpack: an image config with `rootfs.diff_ids`
//! and one gzip tar layer holding the whole `.kiln` file at
//! [`IMAGE_PATH`]. The runtime (`containerd-shim-kiln-v1`) finds the file
//! in the unpacked rootfs and boots it; nothing in the layer is executed
//! by the host.
//!
//! Like the kiln artifact, the bytes are a function of the image alone
//! (tar entries without timestamps or owners, gzip without a name), so
//! pushing the same image twice gives the same manifest digest.

use sha2::{Digest as _, Sha256};

use super::{gzip, sha256_digest, OciError, MANIFEST_MEDIA_TYPE};
use crate::image::hex;
use crate::rootfs::{Entry, Rootfs};

/// Where the `.kiln` file sits in the container image's file system.
pub const IMAGE_PATH: &str = "kiln/image.kiln";
/// Media type of the container image config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of the one layer.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Label (and manifest annotation) naming the kiln image digest inside.
pub const IMAGE_DIGEST_LABEL: &str = "vnd.kiln.image.digest";

/// A container image ready to push: manifest, config and layer.
#[derive(Clone, Debug)]
pub struct ContainerArtifact {
    /// The manifest's bytes.
    pub manifest: Vec<u8>,
    /// `sha256:<hex>` of the manifest.
    pub digest: String,
    /// The config blob.
    pub config: Vec<u8>,
    /// The gzip tar layer.
    pub layer: Vec<u8>,
}

/// An uncompressed tar holding `kiln/` and `kiln/image.kiln` = `image`,
/// written by the rootfs archiver (deterministic, no owners, mtime 0).
fn layer_tar(image: &[u8]) -> Result<Vec<u8>, OciError> {
    let io = |e: crate::rootfs::RootfsError| OciError::Io {
        what: "the container layer".into(),
        error: std::io::Error::other(e.to_string()),
    };
    let mut fs = Rootfs::new();
    fs.add(
        &format!("/{IMAGE_PATH}"),
        Entry::bytes(image, 0o644, "the kiln image"),
    )
    .map_err(io)?;
    let mut out = Vec::new();
    fs.write(&mut out, 0).map_err(io)?;
    Ok(out)
}

/// Builds the container form of the `.kiln` file `image`, whose image
/// digest (as `kiln inspect` shows it) is `image_digest`.
///
/// # Errors
/// [`OciError`] when the layer cannot be written.
pub fn container_artifact(image: &[u8], image_digest: &str) -> Result<ContainerArtifact, OciError> {
    let tar = layer_tar(image)?;
    let diff_id = format!("sha256:{}", hex(&Sha256::digest(&tar)));
    let layer = gzip(&tar);
    let label = format!("sha256:{image_digest}");
    // serde_json's maps are sorted: the bytes depend on the values only.
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Labels": { IMAGE_DIGEST_LABEL: label },
        },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
    });
    let config = serde_json::to_vec(&config).map_err(|e| super::manifest_error("(new)", e))?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {
            "mediaType": CONFIG_MEDIA_TYPE,
            "digest": sha256_digest(&config),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": LAYER_MEDIA_TYPE,
            "digest": sha256_digest(&layer),
            "size": layer.len(),
        }],
        "annotations": { IMAGE_DIGEST_LABEL: label },
    });
    let manifest = serde_json::to_vec(&manifest).map_err(|e| super::manifest_error("(new)", e))?;
    Ok(ContainerArtifact {
        digest: sha256_digest(&manifest),
        manifest,
        config,
        layer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layer_holds_the_image_and_matches_its_diff_id() {
        let image = b"not really a kiln image".repeat(1000);
        let a = container_artifact(&image, &"ab".repeat(32)).unwrap();
        let again = container_artifact(&image, &"ab".repeat(32)).unwrap();
        assert_eq!(a.digest, again.digest, "same image, same bytes");
        let tar = super::super::gunzip("layer", &a.layer).unwrap();
        let config: serde_json::Value = serde_json::from_slice(&a.config).unwrap();
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            sha256_digest(&tar),
            "containerd checks the uncompressed layer against diff_ids"
        );
        let mut archive = tar::Archive::new(&tar[..]);
        let mut found = None;
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.path().unwrap().to_str() == Some(IMAGE_PATH) {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
                found = Some(bytes);
            }
        }
        assert_eq!(found.as_deref(), Some(&image[..]));
        let manifest: serde_json::Value = serde_json::from_slice(&a.manifest).unwrap();
        assert_eq!(manifest["config"]["digest"], sha256_digest(&a.config));
        assert_eq!(manifest["layers"][0]["digest"], sha256_digest(&a.layer));
    }
}
