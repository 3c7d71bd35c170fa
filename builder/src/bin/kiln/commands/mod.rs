//! The `kiln` subcommands, and what several of them share: naming an image
//! by file path or by store reference, and printing sizes.

pub mod build;
pub mod commit;
pub mod events;
pub mod export;
pub mod images;
pub mod import;
pub mod inspect;
pub mod kill;
pub mod login;
pub mod logs;
pub mod ps;
pub mod pull;
pub mod push;
pub mod rm;
pub mod rmi;
pub mod run;
pub mod snapshot;
pub mod snapshots;
pub mod standby;
pub mod start;
pub mod stats;
pub mod stop;
pub mod warm;

use std::path::Path;

use anyhow::Result;
use kiln_builder::image::Image;
use kiln_builder::oci::reference::Reference;
use kiln_builder::parts::ImageParts;
pub use kiln_builder::progress::human_size;
use kiln_builder::registry::{auth, RegistryOptions};
use kiln_builder::store::{Store, StoreError, StoredImage};

/// kilnd, started if none answers.
pub fn kilnd() -> Result<kiln_builder::daemon::client::Client> {
    Ok(kiln_builder::daemon::client::Client::connect_or_start()?)
}

/// The API path of the appliance `vm` (a name, id or start of an id).
pub fn vm_path(vm: &str) -> String {
    format!("/v1/vms/{}", kiln_builder::daemon::http::percent_encode(vm))
}

/// Runs `action` on each of `vms`, printing each name once done (as
/// docker's stop/kill/rm do) and each failure; status 1 if any failed.
pub fn each(vms: &[String], mut action: impl FnMut(&str) -> Result<()>) -> Result<u8> {
    let mut failed = false;
    for vm in vms {
        match action(vm) {
            Ok(()) => println!("{vm}"),
            Err(e) => {
                eprintln!("kiln: error: {vm}: {e:#}");
                failed = true;
            }
        }
    }
    Ok(u8::from(failed))
}

/// The local store (`$KILN_HOME`).
pub fn store() -> Store {
    Store::open(&Store::default_root())
}

/// Whether `text` names an image file rather than a stored image: it
/// exists as a file, or looks like a path (`./x`, `x.kiln`).
pub fn is_file_name(text: &str) -> bool {
    Path::new(text).is_file()
        || text.ends_with(".kiln")
        || text.starts_with('.')
        || text.starts_with('/')
}

/// The image `text` names: a `.kiln` file (verified completely) or an
/// image in the local store. A stored image that is missing is
/// [`StoreError::NotFound`] (the caller may pull it).
pub fn open_image(text: &str, store: &Store) -> Result<(ImageParts, Option<StoredImage>)> {
    open_image_with(text, store, false)
}

/// [`open_image`] for booting: a `.kiln` file fully verified before (and
/// not changed since) has only its header checked again — see
/// [`Image::open_cached`]; `$KILN_HOME/verified/` remembers them.
pub fn open_image_to_boot(text: &str, store: &Store) -> Result<(ImageParts, Option<StoredImage>)> {
    open_image_with(text, store, true)
}

fn open_image_with(
    text: &str,
    store: &Store,
    cached: bool,
) -> Result<(ImageParts, Option<StoredImage>)> {
    if is_file_name(text) {
        let path = Path::new(text);
        let image = if cached {
            Image::open_cached(path, &store.root().join("verified"))?
        } else {
            Image::open(path)?
        };
        return Ok((ImageParts::from_image(&image), None));
    }
    let stored = store.resolve(text)?;
    let parts = store.parts(&stored, text)?;
    Ok((parts, Some(stored)))
}

/// Whether an error from [`open_image`] means "not in the store".
pub fn not_stored(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<StoreError>(),
        Some(StoreError::NotFound(_))
    )
}

/// How to reach a registry (shared by push, pull, run and login).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct RegistryArgs {
    /// Talk plain HTTP to the registry instead of HTTPS (registries on localhost)
    #[arg(long)]
    pub plain_http: bool,

    /// Trust the CA certificates in this PEM file for the registry's TLS
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<std::path::PathBuf>,
}

impl RegistryArgs {
    /// The options for `registry`, with the credentials `kiln login` or
    /// Docker's config.json hold for it.
    pub fn options(&self, registry: Option<&str>, store: &Store) -> Result<RegistryOptions> {
        let credentials = match registry {
            Some(r) => {
                let mut files = vec![auth::kiln_auth_file(store.root())];
                files.extend(auth::docker_config_file());
                auth::lookup(r, &files)?
            }
            None => None,
        };
        Ok(RegistryOptions {
            plain_http: self.plain_http,
            ca_cert: self.ca_cert.clone(),
            credentials,
            chunk_size: None,
        })
    }
}

/// Parses a reference that must name a registry.
pub fn remote_reference(text: &str) -> Result<Reference> {
    let r = Reference::parse(text)?;
    if r.registry.is_none() {
        return Err(kiln_builder::registry::RegistryError::NoRegistry(text.into()).into());
    }
    Ok(r)
}
