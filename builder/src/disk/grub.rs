//! The UEFI boot loader: GRUB's EFI build (Debian's `grub-efi-amd64-bin`)
//! made into one `BOOTX64.EFI` by `grub-mkimage`, with a built-in script
//! that loads the kiln kernel through multiboot2 and the rootfs as its
//! module. Only the modules that script needs are included (~400 KiB).

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_boot::UEFI_HANDOVER_LINE;

use super::DiskError;

/// Where Debian installs GRUB's x86-64 EFI modules.
const MODULES: &str = "/usr/lib/grub/x86_64-efi";
/// GRUB modules the image needs: partition table and file system, the
/// multiboot2 loader and `boot`, `echo` for the hand-over line, and the
/// UEFI graphics driver (without one, GRUB warns on the console that the
/// kernel gets no screen).
const GRUB_MODULES: &[&str] = &["part_gpt", "fat", "multiboot2", "boot", "echo", "efi_gop"];

/// The built-in GRUB script: start the kernel in `dir` with `cmdline`
/// (kernel words, each already valid on the kernel's command line).
pub fn script(dir: &str, cmdline: &[String]) -> String {
    let words: Vec<String> = cmdline.iter().map(|w| format!("'{w}'")).collect();
    format!(
        "echo '{UEFI_HANDOVER_LINE}'\nmultiboot2 /{dir}/kernel {}\nmodule2 /{dir}/rootfs rootfs\nboot\n",
        words.join(" ")
    )
}

/// `BOOTX64.EFI` running `script`.
///
/// # Errors
/// When GRUB's EFI build is not installed or `grub-mkimage` fails.
pub fn bootloader(script: &str) -> Result<Vec<u8>, DiskError> {
    if !Path::new(MODULES).join("multiboot2.mod").is_file() {
        return Err(DiskError::NoGrub(format!(
            "{MODULES}/multiboot2.mod is missing"
        )));
    }
    let dir = scratch_dir()?;
    let result = (|| {
        let config = dir.join("early.cfg");
        let output = dir.join("BOOTX64.EFI");
        std::fs::write(&config, script).map_err(DiskError::Scratch)?;
        let run = Command::new("grub-mkimage")
            .args(["-O", "x86_64-efi", "-d", MODULES, "-p", "/EFI/BOOT", "-c"])
            .arg(&config)
            .arg("-o")
            .arg(&output)
            .args(GRUB_MODULES)
            .output()
            .map_err(|e| DiskError::NoGrub(format!("grub-mkimage: {e}")))?;
        if !run.status.success() {
            return Err(DiskError::GrubFailed(
                String::from_utf8_lossy(&run.stderr).trim().to_string(),
            ));
        }
        std::fs::read(&output).map_err(DiskError::Scratch)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// A fresh private directory for grub-mkimage's input and output.
fn scratch_dir() -> Result<PathBuf, DiskError> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "kiln-grub-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).map_err(DiskError::Scratch)?;
    Ok(dir)
}
