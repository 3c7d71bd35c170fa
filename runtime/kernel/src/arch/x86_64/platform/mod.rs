//! The machine the kernel was booted on: kiln-vmm or a PVH loader (QEMU).
//! Chosen once at entry; the rest of the kernel calls these functions.

mod kiln;
mod pvh;

use kiln_boot::{ExitReport, Milestone};

use crate::boot::BootParams;
use crate::console::Stream;

/// Which boot protocol started the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    /// kiln-vmm.
    Kiln,
    /// A PVH loader such as QEMU's `-kernel`.
    Pvh,
}

/// Records the platform (first thing at boot).
pub fn set(platform: Platform) {
    crate::state::BOOT.platform.call_once(|| platform);
}

/// The platform the kernel booted on.
pub fn current() -> Platform {
    crate::state::BOOT
        .platform
        .get()
        .copied()
        .unwrap_or(Platform::Kiln)
}

/// Reads the boot protocol's parameters.
pub fn boot_params(info_phys: u64) -> BootParams {
    match current() {
        Platform::Kiln => kiln::boot_params(info_phys),
        Platform::Pvh => pvh::boot_params(info_phys),
    }
}

/// Writes console output.
pub fn console_write(stream: Stream, bytes: &[u8]) {
    match current() {
        Platform::Kiln => kiln::console_write(stream, bytes),
        Platform::Pvh => pvh::console_write(stream, bytes),
    }
}

/// Reports a boot milestone (kiln-vmm only; a no-op elsewhere).
pub fn milestone(m: Milestone) {
    if current() == Platform::Kiln {
        kiln::milestone(m);
    }
}

/// Ends the VM with `report`.
pub fn exit(report: ExitReport) -> ! {
    match current() {
        Platform::Kiln => kiln::exit(report),
        Platform::Pvh => pvh::exit(report),
    }
}
