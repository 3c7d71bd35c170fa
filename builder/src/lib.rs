//! kiln's image builder and the library behind the `kiln` command.
//!
//! A manifest ([`manifest`]) names a program; [`analysis`] checks it and
//! finds its shared libraries; [`rootfs`] lays everything out as a
//! deterministic tar; [`image`] wraps the boot configuration ([`config`]),
//! the guest kernel and the rootfs into one verified `.kiln` file; [`build`]
//! runs those steps and [`run`] boots an image with kiln-vmm in-process.
//!
//! Images travel as OCI artifacts ([`oci`]): [`store`] is the local
//! content-addressed store, [`transfer`] moves images between it, OCI
//! layouts and `.kiln` files, [`registry`] pushes and pulls them, and
//! [`parts`] lets booting and publishing treat a file and a stored image
//! alike.

pub mod analysis;
pub mod build;
pub mod config;
pub mod daemon;
pub mod disk;
pub mod image;
pub mod manifest;
pub mod oci;
pub mod parts;
pub mod progress;
pub mod pyc;
pub mod registry;
pub mod rootfs;
pub mod run;
pub mod snapshots;
pub mod store;
pub mod transfer;
