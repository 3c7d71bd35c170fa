//! kiln's image builder and the library behind the `kiln` command.
//!
//! A manifest ([`manifest`]) names a program; [`analysis`] checks it and
//! finds its shared libraries; [`rootfs`] lays everything out as a
//! deterministic tar; [`image`] wraps the boot configuration ([`config`]),
//! the guest kernel and the rootfs into one verified `.kiln` file; [`build`]
//! runs those steps and [`run`] boots an image with kiln-vmm in-process.

pub mod analysis;
pub mod build;
pub mod config;
pub mod image;
pub mod manifest;
pub mod rootfs;
pub mod run;
