//! Booting the kiln kernel under QEMU (TCG, the standard x86-64 path this
//! PVM host cannot run on KVM), through the kernel's PVH note.

use std::path::Path;
use std::process::Command;

/// A QEMU command that boots `kernel` with `program` as its boot module,
/// the kernel command line `append`, the console on stdio and
/// `isa-debug-exit` for the exit status (QEMU exits with `status * 2 + 1`).
/// Without ACPI, microvm names each virtio-mmio device on the kernel
/// command line (`virtio_mmio.device=`), as Linux guests expect and kiln's
/// kernel reads; devices are modern (virtio 1.x). Add devices with
/// `-device virtio-…-device`.
pub fn command(kernel: &Path, program: &Path, append: &str) -> Command {
    command_with_cpus(kernel, program, append, 1)
}

/// [`command`] with `cpus` vCPUs (`-smp`); the kernel learns the count
/// from `kiln.cpus=`, which the caller puts in `append`.
pub fn command_with_cpus(kernel: &Path, program: &Path, append: &str, cpus: u8) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-M", "microvm,acpi=off", "-cpu", "max"])
        .args(["-smp", &cpus.to_string()])
        .args(["-m", "128", "-global", "virtio-mmio.force-legacy=false"])
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
        .args(["-serial", "stdio", "-monitor", "none"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(program)
        .args(["-append", append]);
    cmd
}

/// The program's exit status from QEMU's (`status * 2 + 1`); `None` when
/// QEMU ended some other way.
pub fn program_status(qemu_status: Option<i32>) -> Option<u8> {
    match qemu_status {
        Some(s) if s % 2 == 1 => Some(((s - 1) / 2) as u8),
        _ => None,
    }
}
