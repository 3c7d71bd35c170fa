//! The machine the kernel was booted on: kiln-vmm, or a standard PC booted
//! through PVH (QEMU `-kernel`) or multiboot2 (GRUB, an exported UEFI
//! disk). Chosen once at entry; the rest of the kernel calls these
//! functions.

mod acpi;
mod kiln;
mod multiboot2;
mod pc;
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
    /// A multiboot2 loader such as GRUB.
    Multiboot2,
}

impl Platform {
    /// Whether this is a standard PC set up by a boot loader (its own
    /// page tables, low memory for the CPU start-up trampoline, RAM not
    /// known to be zero) rather than kiln-vmm.
    pub fn is_pc(self) -> bool {
        self != Platform::Kiln
    }
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

/// First thing at boot: the boot flags kiln-vmm set, and what they offer
/// before the CPU is set up (its CPUID table, the CPU state it loaded,
/// which milestones it reads).
pub fn adopt_boot_flags(info_phys: u64) {
    if current() == Platform::Kiln {
        kiln::adopt_boot_flags(info_phys);
    }
}

/// Once the boot CPU is set up: kiln-vmm's request to learn the CPUID
/// table, when it made one.
pub fn learn_cpuid_table() {
    if current() == Platform::Kiln {
        kiln::learn_cpuid_table();
    }
}

/// Reads the boot protocol's parameters.
pub fn boot_params(info_phys: u64) -> BootParams {
    match current() {
        Platform::Kiln => kiln::boot_params(info_phys),
        Platform::Pvh => pvh::boot_params(info_phys),
        Platform::Multiboot2 => multiboot2::boot_params(info_phys),
    }
}

/// Writes console output.
pub fn console_write(stream: Stream, bytes: &[u8]) {
    match current() {
        Platform::Kiln => kiln::console_write(stream, bytes),
        Platform::Pvh | Platform::Multiboot2 => pc::console_write(stream, bytes),
    }
}

/// Console input of a standard PC's serial port (see `pc.rs`); `None` on
/// kiln-vmm, whose console input is a virtio console.
pub fn serial() -> Option<Serial> {
    current().is_pc().then_some(Serial)
}

/// The first serial port of a standard PC.
pub struct Serial;

impl Serial {
    /// Its interrupt line.
    pub const IRQ: u32 = pc::SERIAL_IRQ;

    /// Reads what it holds into `buf` (0: nothing waits).
    pub fn read(&self, buf: &mut [u8]) -> usize {
        pc::serial_read(buf)
    }

    /// Whether input waits.
    pub fn has_input(&self) -> bool {
        pc::serial_has_input()
    }

    /// Turns its receive interrupt on or off.
    pub fn rx_interrupt(&self, on: bool) {
        pc::serial_rx_interrupt(on)
    }
}

/// Reports a boot milestone (kiln-vmm only; a no-op elsewhere).
pub fn milestone(m: Milestone) {
    if current() == Platform::Kiln {
        kiln::milestone(m);
    }
}

/// Reports how many of the program's pages a warm VM touched before its
/// claim (kiln-vmm only; a no-op elsewhere).
pub fn prepared(pages: u64) {
    if current() == Platform::Kiln {
        kiln::prepared(u32::try_from(pages).unwrap_or(u32::MAX));
    }
}

/// Ends the VM with `report`.
pub fn exit(report: ExitReport) -> ! {
    match current() {
        Platform::Kiln => kiln::exit(report),
        Platform::Pvh | Platform::Multiboot2 => pc::exit(report),
    }
}
