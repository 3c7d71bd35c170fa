//! The file system's logic: the image's tar root file system read in place
//! ([`tarfs`]), the writable layer over it ([`vfs`]) and the `stat` records
//! the kernel returns ([`stat`]). The kernel's `fs` owns the mounted
//! instance and the generated files (/proc, /dev).

pub mod fuse;
pub mod stat;
pub mod tarfs;
pub mod vfs;
