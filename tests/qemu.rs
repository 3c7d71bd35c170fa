//! The same kernel ELF booted by QEMU (TCG, `-M microvm`, PVH entry): the
//! standard x86-64 path, which this PVM host cannot run on KVM. Console on
//! the serial port, exit status through `isa-debug-exit` (QEMU reports
//! `status * 2 + 1`, so only statuses below 128 survive the round trip).

mod common;

use std::process::Output;

use common::{native, stdout};

fn qemu(name: &str, append: &str) -> Output {
    qemu_with_cpus(name, append, 1)
}

fn qemu_with_cpus(name: &str, append: &str, cpus: u8) -> Output {
    common::prepare();
    assert!(
        xtask::host::has("qemu-system-x86_64"),
        "qemu-system-x86_64 is missing (Debian package qemu-system-x86): run `cargo xtask deps`"
    );
    xtask::qemu::command_with_cpus(
        &xtask::paths::kernel(),
        &common::program(name),
        append,
        cpus,
    )
    .output()
    .expect("QEMU runs")
}

fn qemu_status(out: &Output) -> Option<u8> {
    xtask::qemu::program_status(out.status.code())
}

/// The serial console carries stdout and stderr; QEMU adds nothing to it.
fn assert_same_as_native_under_qemu(name: &str) {
    let append = format!("GREETING=\"hello from qemu\" kiln.path=/{name} -- one \"two words\"");
    let out = qemu(name, &append);
    let host = native(name, &["one", "two words"], &["GREETING=hello from qemu"]);
    assert_eq!(
        qemu_status(&out),
        Some(0),
        "{name}: QEMU status {:?}, output {}",
        out.status,
        stdout(&out)
    );
    assert_eq!(
        stdout(&out),
        stdout(&host),
        "{name}: output differs from the native run"
    );
}

/// SMP on the standard x86-64 path: with `-smp 2` and `kiln.cpus=2` the
/// kernel starts the second CPU itself (INIT/STARTUP IPIs and a real-mode
/// trampoline), and threads run on both.
#[test]
fn two_cpus_under_qemu() {
    for (mode, expected) in [
        (
            "count",
            "sched_getaffinity: 2\nsysconf: 2\n/proc/cpuinfo: 2\n",
        ),
        ("spread", "threads ran on 2 of 2 CPUs\n"),
    ] {
        let append = format!("kiln.cpus=2 kiln.path=/smp -- {mode}");
        let out = qemu_with_cpus("smp", &append, 2);
        assert_eq!(qemu_status(&out), Some(0), "{mode}: {}", stdout(&out));
        assert_eq!(stdout(&out), expected, "{mode}");
    }
}

#[test]
fn glibc_hello_under_qemu_matches_native() {
    assert_same_as_native_under_qemu("hello-glibc");
}

#[test]
fn musl_hello_under_qemu_matches_native() {
    assert_same_as_native_under_qemu("hello-musl");
}

#[test]
fn rust_hello_under_qemu_matches_native() {
    assert_same_as_native_under_qemu("hello-rust");
}

#[test]
fn exit_status_and_faults_under_qemu() {
    let out = qemu("probe", "kiln.path=/probe -- exit 42");
    assert_eq!(qemu_status(&out), Some(42), "{}", stdout(&out));
    let out = qemu("probe", "kiln.path=/probe -- segv");
    assert!(
        stdout(&out).contains("SIGSEGV") && stdout(&out).contains("address 0x0"),
        "{}",
        stdout(&out)
    );
}

/// Threads, futexes and timed sleeps on the standard path: the xAPIC's
/// one-shot timer (TCG has no TSC-deadline mode) and a PIT-calibrated TSC.
#[test]
fn threads_under_qemu_match_native() {
    let out = qemu("threads", "kiln.path=/threads");
    let host = native("threads", &[], &[]);
    assert_eq!(qemu_status(&out), Some(0), "{}", stdout(&out));
    assert_eq!(stdout(&out), stdout(&host));
}

/// Signal delivery, sigreturn and timers on the standard path (the exit
/// status, 143, does not survive QEMU's debug-exit device).
#[test]
fn signals_under_qemu_match_native() {
    let out = qemu("signals", "kiln.path=/signals");
    let host = native("signals", &[], &[]);
    let guest = stdout(&out);
    let expected = format!(
        "{}kiln: program killed by SIGTERM (terminated)\n",
        stdout(&host)
    );
    assert_eq!(guest, expected);
}

/// Linux-style device discovery: QEMU's microvm names its virtio-mmio
/// devices on the command line (`virtio_mmio.device=`); the kernel drives
/// them through the standard register interface with their interrupt
/// lines routed through the I/O APIC. The echo appliance answers the host
/// through a virtio NIC on QEMU's user network.
#[test]
fn echo_over_a_virtio_nic_under_qemu() {
    use std::io::{BufRead, BufReader, Read, Write};
    common::prepare();
    let port = common::free_port();
    let mut child = xtask::qemu::command(
        &xtask::paths::kernel(),
        &common::program("echo"),
        "kiln.path=/echo kiln.ip=10.0.2.15/24 kiln.gw=10.0.2.2 -- tcp 7",
    )
    .args([
        "-netdev",
        &format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:7"),
    ])
    .args(["-device", "virtio-net-device,netdev=n0"])
    .stdout(std::process::Stdio::piped())
    .spawn()
    .expect("QEMU runs");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let result = std::panic::catch_unwind(|| {
        assert!(line.starts_with("listening"), "{line}");
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        let data: Vec<u8> = (0..256 * 1024u32)
            .map(|i| (i * 7 + i / 251) as u8)
            .collect();
        let mut reader = s.try_clone().unwrap();
        let writer = {
            let data = data.clone();
            std::thread::spawn(move || s.write_all(&data).unwrap())
        };
        let mut back = vec![0u8; data.len()];
        reader.read_exact(&mut back).unwrap();
        writer.join().unwrap();
        assert!(back == data, "the echo differs from what was sent");
    });
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// /dev/hwrng reads a virtio entropy device QEMU names on the command
/// line: different bytes on each boot.
#[test]
fn hwrng_from_a_qemu_entropy_device() {
    common::prepare();
    let busybox = xtask::host::which("busybox")
        .expect("busybox is missing (Debian package busybox-static): run `cargo xtask deps`");
    let read = || {
        let out = xtask::qemu::command(
            &xtask::paths::kernel(),
            &busybox,
            "kiln.path=/busybox -- od -An -tx1 -N16 /dev/hwrng",
        )
        .args(["-device", "virtio-rng-device"])
        .output()
        .expect("QEMU runs");
        assert_eq!(qemu_status(&out), Some(0), "{}", stdout(&out));
        let hex: String = stdout(&out).split_whitespace().collect();
        assert_eq!(hex.len(), 32, "{}", stdout(&out));
        hex
    };
    assert_ne!(read(), read());
}
