//! The kernel command line.
//!
//! Words are separated by blanks; double quotes group blanks into a word.
//! Words before `--` are kernel options (`kiln.*`) or, when they contain
//! `=`, environment variables for the program (as Linux passes unknown
//! `NAME=value` words to init). Words after `--` are the program's
//! arguments. Under kiln-vmm the argument and environment vectors come
//! exactly from boot-info and the command line carries options only; under
//! QEMU (`-append`) the command line is the only channel.

use alloc::string::String;
use alloc::vec::Vec;

/// What the command line asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelArgs {
    /// `kiln.trace_syscalls`: print every system call.
    pub trace_syscalls: bool,
    /// `kiln.path=/p`: the program's path in the guest.
    pub path: Option<String>,
    /// `kiln.syscall_rewrite=0`: keep every SYSCALL instruction trapping
    /// (the default rewrites them into calls where that is safe).
    pub no_syscall_rewrite: bool,
    /// `kiln.vdso=0`: give the program no vDSO (time calls then are
    /// system calls).
    pub no_vdso: bool,
    /// `kiln.init=1` (`kiln run --init`): the kernel reaps orphaned
    /// processes when they end, as an init process would.
    pub init: bool,
    /// `kiln.serial_stdin=1` (`kiln export --disk -i`): standard input
    /// reads the first serial port (a standard PC without virtio consoles);
    /// otherwise it is at end of file there.
    pub serial_stdin: bool,
    /// `kiln.snapshot_at=program-entry|after-loader|first-output` (`kiln run
    /// --snapshot-at`): when the kernel asks the VMM for a snapshot.
    pub snapshot_at: Option<SnapshotAt>,
    /// `kiln.cpus=N`: how many CPUs to start where the boot protocol does
    /// not say (the PVH boot under QEMU, with `-smp N`).
    pub cpus: Option<usize>,
    /// The network configuration (`kiln.ip=`, `kiln.gw=`, …).
    pub net: crate::net::config::NetConfig,
    /// Network options with bad values (reported, then ignored).
    pub bad: Vec<String>,
    /// `NAME=value` words before `--`.
    pub env: Vec<String>,
    /// Words after `--` (`argv[1..]`).
    pub args: Vec<String>,
    /// `kiln.*` words the kernel does not know (reported, then ignored).
    pub unknown: Vec<String>,
    /// `virtio_mmio.device=` devices (QEMU's microvm appends one per
    /// device, after everything else — so they are taken out wherever they
    /// stand, never passed to the program).
    pub virtio_mmio: Vec<MmioDevice>,
    /// `kiln.volume=TAG:PATH[:ro]`: mount the virtio-fs device tagged TAG
    /// at PATH.
    pub volumes: Vec<Volume>,
}

/// When the kernel itself asks for a snapshot (`kiln.snapshot_at=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotAt {
    /// Just before the program's first instruction.
    ProgramEntry,
    /// Just before the program's own first instruction, once its dynamic
    /// loader has loaded its libraries.
    AfterLoader,
    /// Right after the program's first write to standard output or error.
    FirstOutput,
}

/// A shared directory to mount (`kiln.volume=`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    /// The virtio-fs device's tag.
    pub tag: String,
    /// Where it is mounted (absolute, no trailing slash).
    pub path: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// The volume of a `kiln.volume=` value.
fn parse_volume(value: &str) -> Option<Volume> {
    let (rest, read_only) = match value.strip_suffix(":ro") {
        Some(r) => (r, true),
        None => (value, false),
    };
    let (tag, path) = rest.split_once(':')?;
    let path = path.trim_end_matches('/');
    let ok =
        !tag.is_empty() && path.starts_with('/') && !path.split('/').any(|c| c == "." || c == "..");
    ok.then(|| Volume {
        tag: tag.into(),
        path: path.into(),
        read_only,
    })
}

/// A virtio-mmio device named on the command line, as Linux's
/// `virtio_mmio.device=<size>@<base>:<irq>[:<id>]` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioDevice {
    /// Physical address of its registers.
    pub base: u64,
    /// Size of the register window.
    pub size: u64,
    /// Its interrupt line.
    pub irq: u32,
}

/// A number as Linux's `memparse` reads one: decimal, `0x` hex or `0`
/// octal, with an optional K, M or G suffix.
fn memparse(s: &str) -> Option<u64> {
    let (digits, shift) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 10),
        b'M' | b'm' => (&s[..s.len() - 1], 20),
        b'G' | b'g' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let n = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        u64::from_str_radix(hex, 16).ok()?
    } else if digits.len() > 1 && digits.starts_with('0') {
        u64::from_str_radix(&digits[1..], 8).ok()?
    } else {
        digits.parse().ok()?
    };
    n.checked_mul(1 << shift)
}

/// The device of a `virtio_mmio.device=` value.
pub fn parse_mmio_device(value: &str) -> Option<MmioDevice> {
    let (size, rest) = value.split_once('@')?;
    let (base, rest) = rest.split_once(':')?;
    let irq = rest.split(':').next()?;
    let size = memparse(size)?;
    if size == 0 {
        return None;
    }
    Some(MmioDevice {
        base: memparse(base)?,
        size,
        irq: irq.parse().ok()?,
    })
}

/// Splits a command line into words (double quotes group, no escapes).
pub fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_ascii_whitespace() && !quoted => {
                if in_word {
                    out.push(core::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(word);
    }
    out
}

/// Parses a command line.
pub fn parse(line: &str) -> KernelArgs {
    let mut args = KernelArgs::default();
    let mut rest = false;
    for w in words(line) {
        if let Some(v) = w.strip_prefix("virtio_mmio.device=") {
            match parse_mmio_device(v) {
                Some(d) => args.virtio_mmio.push(d),
                None => args.bad.push(w),
            }
        } else if rest {
            args.args.push(w);
        } else if w == "--" {
            rest = true;
        } else if w == "kiln.trace_syscalls" || w == "kiln.trace_syscalls=1" {
            args.trace_syscalls = true;
        } else if w == "kiln.syscall_rewrite=0" {
            args.no_syscall_rewrite = true;
        } else if w == "kiln.syscall_rewrite=1" {
            args.no_syscall_rewrite = false;
        } else if w == "kiln.vdso=0" {
            args.no_vdso = true;
        } else if w == "kiln.vdso=1" {
            args.no_vdso = false;
        } else if w == "kiln.init=1" {
            args.init = true;
        } else if w == "kiln.init=0" {
            args.init = false;
        } else if w == "kiln.serial_stdin=1" {
            args.serial_stdin = true;
        } else if w == "kiln.serial_stdin=0" {
            args.serial_stdin = false;
        } else if let Some(at) = w.strip_prefix("kiln.snapshot_at=") {
            use kiln_boot::snapshot::at;
            match at {
                at::PROGRAM_ENTRY => args.snapshot_at = Some(SnapshotAt::ProgramEntry),
                at::AFTER_LOADER => args.snapshot_at = Some(SnapshotAt::AfterLoader),
                at::FIRST_OUTPUT => args.snapshot_at = Some(SnapshotAt::FirstOutput),
                _ => args.bad.push(w),
            }
        } else if let Some(n) = w.strip_prefix("kiln.cpus=") {
            match n.parse::<usize>() {
                Ok(n) if n >= 1 => args.cpus = Some(n),
                _ => args.bad.push(w),
            }
        } else if let Some(p) = w.strip_prefix("kiln.path=") {
            args.path = Some(p.into());
        } else if let Some(v) = w.strip_prefix("kiln.volume=") {
            match parse_volume(v) {
                Some(v) => args.volumes.push(v),
                None => args.bad.push(w),
            }
        } else if w.starts_with("kiln.") {
            match args.net.take(&w) {
                Ok(true) => {}
                Ok(false) => args.unknown.push(w),
                Err(bad) => args.bad.push(bad.0),
            }
        } else if w.contains('=') {
            args.env.push(w);
        } else {
            args.unknown.push(w);
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_options_env_and_args() {
        let a = parse(r#"kiln.trace_syscalls GREETING="hi there" kiln.path=/hello -- a "b c""#);
        assert!(a.trace_syscalls);
        assert_eq!(a.path.as_deref(), Some("/hello"));
        assert_eq!(a.env, ["GREETING=hi there"]);
        assert_eq!(a.args, ["a", "b c"]);
        assert!(a.unknown.is_empty());
    }

    #[test]
    fn snapshot_points() {
        assert_eq!(
            parse("kiln.snapshot_at=program-entry").snapshot_at,
            Some(SnapshotAt::ProgramEntry)
        );
        assert_eq!(
            parse("kiln.snapshot_at=after-loader").snapshot_at,
            Some(SnapshotAt::AfterLoader)
        );
        assert_eq!(
            parse("kiln.snapshot_at=first-output").snapshot_at,
            Some(SnapshotAt::FirstOutput)
        );
        let bad = parse("kiln.snapshot_at=later");
        assert_eq!((bad.snapshot_at, bad.bad.len()), (None, 1));
    }

    #[test]
    fn keeps_empty_quoted_words_and_unknown_options() {
        let a = parse(r#"kiln.bogus console=ttyS0 -- "" x"#);
        assert_eq!(a.unknown, ["kiln.bogus"]);
        assert_eq!(a.env, ["console=ttyS0"]);
        assert_eq!(a.args, ["", "x"]);
    }

    #[test]
    fn volumes_name_a_tag_and_a_mount_point() {
        let a = parse("kiln.volume=v0:/data kiln.volume=v1:/var/lib/db/:ro kiln.volume=v2:rel");
        assert_eq!(
            a.volumes,
            [
                Volume {
                    tag: "v0".into(),
                    path: "/data".into(),
                    read_only: false
                },
                Volume {
                    tag: "v1".into(),
                    path: "/var/lib/db".into(),
                    read_only: true
                }
            ]
        );
        assert_eq!(a.bad, ["kiln.volume=v2:rel"]);
    }

    #[test]
    fn virtio_mmio_devices_are_taken_out_wherever_they_stand() {
        let a = parse(
            "virtio_mmio.device=4K@0xd0000000:5 kiln.path=/x -- a \
             virtio_mmio.device=512@0xfeb00e00:12:3 virtio_mmio.device=nonsense",
        );
        assert_eq!(
            a.virtio_mmio,
            [
                MmioDevice {
                    base: 0xd000_0000,
                    size: 4096,
                    irq: 5
                },
                MmioDevice {
                    base: 0xfeb0_0e00,
                    size: 512,
                    irq: 12
                }
            ]
        );
        assert_eq!(a.args, ["a"]);
        assert!(a.env.is_empty());
        assert_eq!(a.bad, ["virtio_mmio.device=nonsense"]);
        assert_eq!(
            parse_mmio_device("1M@010:1").map(|d| (d.base, d.size)),
            Some((8, 1 << 20))
        );
        assert_eq!(parse_mmio_device("0@0x1000:1"), None);
    }

    #[test]
    fn network_options_are_taken_apart() {
        let a = parse("kiln.ip=10.0.2.15/24 kiln.gw=10.0.2.2 kiln.ip=nonsense");
        assert_eq!(a.net.addresses.len(), 1);
        assert_eq!(a.net.gateways.len(), 1);
        assert_eq!(a.bad, ["kiln.ip=nonsense"]);
        assert!(a.unknown.is_empty());
    }
}
