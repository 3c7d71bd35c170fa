//! The `kiln` subcommands, and what several of them share: naming an image
//! by file path or by store reference, and printing sizes.

pub mod build;
pub mod export;
pub mod images;
pub mod import;
pub mod inspect;
pub mod rmi;
pub mod run;

use std::path::Path;

use anyhow::{Context, Result};
use kiln_builder::image::Image;
use kiln_builder::parts::ImageParts;
use kiln_builder::store::{Store, StoredImage};

/// The local store (`$KILN_HOME`).
pub fn store() -> Result<Store> {
    let root = Store::default_root();
    Store::open(&root).with_context(|| format!("opening the image store {}", root.display()))
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
    if is_file_name(text) {
        let image = Image::open(Path::new(text))?;
        return Ok((ImageParts::from_image(&image), None));
    }
    let stored = store.resolve(text)?;
    let parts = store.parts(&stored, text)?;
    Ok((parts, Some(stored)))
}

/// `n` bytes for people: `204.0 KiB`, `2.6 MiB`.
pub fn human_size(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20))
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}
