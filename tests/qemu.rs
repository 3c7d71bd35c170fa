//! The same kernel ELF booted by QEMU (TCG, `-M microvm`, PVH entry): the
//! standard x86-64 path, which this PVM host cannot run on KVM. Console on
//! the serial port, exit status through `isa-debug-exit` (QEMU reports
//! `status * 2 + 1`, so only statuses below 128 survive the round trip).

mod common;

use std::process::Output;

use common::{native, stdout};

fn qemu(name: &str, append: &str) -> Output {
    common::prepare();
    assert!(
        xtask::host::has("qemu-system-x86_64"),
        "qemu-system-x86_64 is missing (Debian package qemu-system-x86): run `cargo xtask deps`"
    );
    xtask::qemu::command(&xtask::paths::kernel(), &common::program(name), append)
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
