//! Where things are in the repository and under `target/`.

use std::path::{Path, PathBuf};

/// The repository root (the workspace directory).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The workspace's `target/` directory.
pub fn target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// The built guest kernel, `target/kiln-kernel.elf`.
pub fn kernel() -> PathBuf {
    target().join("kiln-kernel.elf")
}

/// Where test and example programs are built.
pub fn programs() -> PathBuf {
    target().join("programs")
}

/// A built program by name (see [`crate::build::PROGRAMS`]).
pub fn program(name: &str) -> PathBuf {
    programs().join(name)
}

/// Benchmark output directory.
pub fn bench() -> PathBuf {
    target().join("bench")
}

/// The release (static) kiln-vmm binary.
pub fn vmm_release() -> PathBuf {
    target()
        .join(crate::build::HOST_TARGET)
        .join("release")
        .join("kiln-vmm")
}

/// The release (static) `kiln` command.
pub fn kiln_release() -> PathBuf {
    target()
        .join(crate::build::HOST_TARGET)
        .join("release")
        .join("kiln")
}

/// Where built images go.
pub fn images() -> PathBuf {
    root().join("images")
}
