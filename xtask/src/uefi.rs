//! Booting an exported disk (`kiln export --disk`) under QEMU with UEFI
//! firmware: OVMF from the `ovmf-prebuilt` crate, a q35 machine, the disk
//! on its SATA controller, the console on the first serial port and
//! `isa-debug-exit` for the program's exit status. TCG by default; KVM
//! where the host's KVM runs ordinary guests (not on PVM).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Result};

/// `kiln export IMAGE --disk DISK` (raw) with the `kiln` binary at `kiln`;
/// `interactive` adds `-i` (standard input from the serial console).
///
/// # Errors
/// When kiln cannot run or the export fails (its message included).
pub fn export_disk(kiln: &Path, image: &Path, disk: &Path, interactive: bool) -> Result<()> {
    let out = Command::new(kiln)
        .arg("export")
        .arg(image)
        .arg("--disk")
        .arg(disk)
        .args(interactive.then_some("-i"))
        .output()?;
    if !out.status.success() {
        bail!(
            "kiln export --disk {}: {}",
            image.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The OVMF firmware image (code and variables in one file), used
/// read-only so every boot starts from the same state.
pub fn firmware() -> PathBuf {
    ovmf_prebuilt::ovmf_pure_efi()
}

/// How QEMU should read a disk file: by its extension (`.qcow2`, `.vmdk`),
/// else raw.
pub fn format_of(disk: &Path) -> &'static str {
    match disk.extension().and_then(|e| e.to_str()) {
        Some("qcow2") => "qcow2",
        Some("vmdk") => "vmdk",
        _ => "raw",
    }
}

/// The machine a disk boots on.
#[derive(Clone, Copy, Debug)]
pub struct Machine {
    /// RAM in MiB.
    pub memory_mib: u32,
    /// CPUs (`-smp`).
    pub cpus: u8,
    /// KVM instead of TCG.
    pub kvm: bool,
    /// QEMU's `isa-debug-exit` device (without it the kernel prints the
    /// status and powers off through ACPI, as on a real machine).
    pub debug_exit: bool,
}

impl Default for Machine {
    fn default() -> Self {
        Self {
            memory_mib: 256,
            cpus: 1,
            kvm: false,
            debug_exit: true,
        }
    }
}

/// A QEMU command booting `disk` (read as `format`; writes go to a
/// temporary overlay, never into the file) on UEFI firmware. A standard
/// VGA adapter is present but not shown: with a graphics output GRUB says
/// nothing about the missing screen on the serial console.
pub fn command(disk: &Path, format: &str, machine: Machine) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    let accel = if machine.kvm { "kvm" } else { "tcg" };
    cmd.args(["-accel", accel, "-M", "q35", "-cpu", "max"])
        .args(["-m", &machine.memory_mib.to_string()])
        .args(["-smp", &machine.cpus.to_string()])
        .args(["-nodefaults", "-no-user-config", "-no-reboot"])
        .args(["-display", "none", "-vga", "std"])
        .args(["-serial", "stdio", "-monitor", "none"]);
    if machine.debug_exit {
        cmd.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
    }
    cmd.arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,readonly=on,file={}",
            firmware().display()
        ))
        .arg("-drive")
        .arg(format!(
            "format={format},file={},snapshot=on",
            disk.display()
        ));
    cmd
}

/// The serial console split at the boot loader's hand-over line: the
/// firmware's and GRUB's output, then the kernel's and the program's
/// (`None` when GRUB never handed over).
pub fn split_console(console: &[u8]) -> (&[u8], Option<&[u8]>) {
    let line = kiln_boot::UEFI_HANDOVER_LINE.as_bytes();
    let Some(at) = console.windows(line.len()).position(|w| w == line) else {
        return (console, None);
    };
    // GRUB's line ends in "\n"; OVMF's console adds a "\r" (after it).
    let rest = &console[at + line.len()..];
    let rest = match rest.iter().position(|&b| b == b'\n') {
        Some(end) => &rest[end + 1..],
        None => &[],
    };
    let rest = rest.strip_prefix(b"\r").unwrap_or(rest);
    // An interactive disk's kernel says when its input opens; while the
    // start of that line is still arriving, the program has said nothing.
    let ready = kiln_boot::SERIAL_STDIN_READY_LINE.as_bytes();
    let rest = match rest.strip_prefix(ready) {
        Some(after) => after.strip_prefix(b"\n").unwrap_or(after),
        None if ready.starts_with(rest) => &[],
        None => rest,
    };
    (&console[..at], Some(rest))
}

/// Whether the console shows the kernel's
/// [`kiln_boot::SERIAL_STDIN_READY_LINE`]: the program reads what is typed
/// there from now on (a disk exported with `-i`).
pub fn input_opened(console: &[u8]) -> bool {
    let ready = kiln_boot::SERIAL_STDIN_READY_LINE.as_bytes();
    console.windows(ready.len()).any(|w| w == ready)
}

/// Copies `from` to QEMU's serial console, then a Ctrl-D for its end (the
/// kernel's end of standard input).
fn forward(mut from: Box<dyn std::io::Read + Send>, mut to: std::process::ChildStdin) {
    use std::io::Write;
    let mut buf = [0u8; 4096];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).and_then(|()| to.flush()).is_err() {
                    return;
                }
            }
        }
    }
    let _ = to
        .write_all(&[kiln_boot::SERIAL_END_OF_INPUT])
        .and_then(|()| to.flush());
}

/// One boot of a disk under QEMU.
pub struct UefiRun {
    /// Everything QEMU wrote to the serial console.
    pub console: Vec<u8>,
    /// When GRUB printed the hand-over line (from spawning QEMU).
    pub handover: Option<std::time::Duration>,
    /// When the first byte after the hand-over line arrived (the
    /// program's first output).
    pub first_output: Option<std::time::Duration>,
    /// From spawning QEMU to its exit.
    pub total: std::time::Duration,
    /// The program's exit status through `isa-debug-exit` (`None`: QEMU
    /// ended some other way, or was killed at the timeout).
    pub status: Option<u8>,
    /// Whether the timeout ended it.
    pub timed_out: bool,
}

impl UefiRun {
    /// The program's output: the console after the hand-over line.
    pub fn program_output(&self) -> &[u8] {
        split_console(&self.console).1.unwrap_or_default()
    }
}

/// Boots `disk` and collects its console; QEMU is killed after `timeout`.
///
/// # Errors
/// When QEMU cannot be started.
pub fn run(
    disk: &Path,
    format: &str,
    machine: Machine,
    timeout: std::time::Duration,
) -> std::io::Result<UefiRun> {
    run_with(disk, format, machine, timeout, Input::None, false)
}

/// What is typed on the serial console of an interactive disk (`kiln
/// export --disk -i`). Until the kernel runs, the firmware's console driver
/// takes whatever arrives on the serial line, so nothing is sent before the
/// kernel's [`kiln_boot::SERIAL_STDIN_READY_LINE`] (a disk without `-i`
/// gets nothing).
pub enum Input {
    /// Nothing.
    None,
    /// These bytes.
    Typed(Vec<u8>),
    /// What this reader gives (`boot-uefi -i`: this process's standard
    /// input); its end is sent as a Ctrl-D, which ends the program's
    /// standard input.
    Forwarded(Box<dyn std::io::Read + Send>),
}

/// [`run`] with `input` typed on the console; with `live`, the program's
/// output is also copied to this process's standard output as it comes.
///
/// # Errors
/// When QEMU cannot be started.
pub fn run_with(
    disk: &Path,
    format: &str,
    machine: Machine,
    timeout: std::time::Duration,
    mut input: Input,
    live: bool,
) -> std::io::Result<UefiRun> {
    use std::io::Read;
    use std::io::Write;
    use std::process::Stdio;
    use std::time::Instant;
    let start = Instant::now();
    let mut child = command(disk, format, machine)
        .stdin(if matches!(input, Input::None) {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stdin = child.stdin.take();
    let reader = std::thread::spawn(move || {
        let line = kiln_boot::UEFI_HANDOVER_LINE.as_bytes();
        let mut console = Vec::new();
        let (mut handover, mut first_output) = (None, None);
        let mut shown = 0;
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            console.extend_from_slice(&buf[..n]);
            if handover.is_none() && console.windows(line.len()).any(|w| w == line) {
                handover = Some(start.elapsed());
            }
            if !matches!(input, Input::None) && input_opened(&console) {
                match std::mem::replace(&mut input, Input::None) {
                    // QEMU's input stays open until it ends: a serial line
                    // has no end of its own.
                    Input::Typed(bytes) => {
                        if let Some(to) = stdin.as_mut() {
                            let _ = to.write_all(&bytes).and_then(|()| to.flush());
                        }
                    }
                    Input::Forwarded(from) => {
                        if let Some(to) = stdin.take() {
                            std::thread::spawn(move || forward(from, to));
                        }
                    }
                    Input::None => {}
                }
            }
            let program = split_console(&console).1.unwrap_or_default();
            if live && program.len() > shown {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&program[shown..]).and_then(|()| out.flush());
                shown = program.len();
            }
            if first_output.is_none() && !program.is_empty() {
                first_output = Some(start.elapsed());
            }
        }
        (console, handover, first_output)
    });
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > timeout {
            timed_out = true;
            let _ = child.kill();
            break child.wait()?;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let total = start.elapsed();
    let (console, handover, first_output) = reader.join().unwrap_or_default();
    Ok(UefiRun {
        console,
        handover,
        first_output,
        total,
        status: if timed_out {
            None
        } else {
            crate::qemu::program_status(status.code())
        },
        timed_out,
    })
}

#[cfg(test)]
mod tests {
    use super::split_console;
    use kiln_boot::{SERIAL_STDIN_READY_LINE, UEFI_HANDOVER_LINE};

    fn console(parts: &[&str]) -> Vec<u8> {
        parts.concat().into_bytes()
    }

    #[test]
    fn the_program_output_starts_after_the_handover_line() {
        let c = console(&["BdsDxe: boot\n", UEFI_HANDOVER_LINE, "\n\r", "hello\n"]);
        assert_eq!(
            split_console(&c),
            (&b"BdsDxe: boot\n"[..], Some(&b"hello\n"[..]))
        );
        assert_eq!(
            split_console(b"firmware only"),
            (&b"firmware only"[..], None)
        );
    }

    #[test]
    fn an_interactive_disks_ready_line_is_not_program_output() {
        let c = console(&[
            UEFI_HANDOVER_LINE,
            "\n\r",
            SERIAL_STDIN_READY_LINE,
            "\nready\n",
        ]);
        assert_eq!(split_console(&c).1, Some(&b"ready\n"[..]));
        // While the line is still arriving, nothing is program output yet.
        let half = &SERIAL_STDIN_READY_LINE[..10];
        let c = console(&[UEFI_HANDOVER_LINE, "\n\r", half]);
        assert_eq!(split_console(&c).1, Some(&b""[..]));
        let c = console(&[UEFI_HANDOVER_LINE, "\n\r", "kiln: other\n"]);
        assert_eq!(split_console(&c).1, Some(&b"kiln: other\n"[..]));
    }
}
