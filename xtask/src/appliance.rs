//! What xtask needs to know of a built image to run its program outside
//! kiln (the compat suite's native side, bench-boot's baselines): its boot
//! configuration and its root file system unpacked into a directory.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::build;

/// An image's boot configuration, from `kiln inspect --json`.
#[derive(Clone, Debug, Default)]
pub struct BootConfig {
    /// The program's path in the guest.
    pub entrypoint: String,
    /// Its default arguments.
    pub args: Vec<String>,
    /// Its environment (`NAME=value`).
    pub env: Vec<String>,
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Reads `image`'s boot configuration with `kiln`.
///
/// # Errors
/// When kiln fails or prints something else than its JSON.
pub fn config(kiln: &Path, image: &Path) -> Result<BootConfig> {
    let out = Command::new(kiln)
        .args(["inspect", "--json"])
        .arg(image)
        .output()
        .context("running kiln inspect")?;
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing kiln inspect --json")?;
    let c = &doc["config"];
    Ok(BootConfig {
        entrypoint: c["entrypoint"].as_str().unwrap_or_default().to_owned(),
        args: strings(&c["args"]),
        env: strings(&c["env"]),
    })
}

/// Unpacks `image`'s rootfs into `root` (emptied first) with `kiln export`
/// and tar.
///
/// # Errors
/// When a step fails.
pub fn unpack(kiln: &Path, image: &Path, root: &Path) -> Result<()> {
    if root.exists() {
        std::fs::remove_dir_all(root).with_context(|| format!("removing {}", root.display()))?;
    }
    std::fs::create_dir_all(root)?;
    let tar = root.with_extension("tar");
    build::run(
        Command::new(kiln)
            .arg("export")
            .arg(image)
            .arg("-o")
            .arg(&tar),
    )?;
    let result = build::run(
        Command::new("tar")
            .args(["--no-same-owner", "-xf"])
            .arg(&tar)
            .arg("-C")
            .arg(root),
    );
    std::fs::remove_file(&tar)?;
    result
}
