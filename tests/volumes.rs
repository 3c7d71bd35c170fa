//! End-to-end tests of the VM's storage on this host's KVM: raw disk files
//! as virtio block devices (`--disk`), written and read by a real program
//! in the guest (tests/programs/durable.c) and checked byte for byte in the
//! host file — including after `kill -9` of kiln-vmm at random moments.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{kvm_or_skip, status, stderr, stdout};

/// Bytes of one record of `durable append`.
const RECORD: usize = 512;

/// kiln-vmm running `durable ARGS` with `disks` attached.
fn durable(disks: &[&str], args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln-vmm"));
    cmd.arg("--kernel").arg(xtask::paths::kernel());
    for d in disks {
        cmd.arg("--disk").arg(d);
    }
    cmd.args(["--memory", "64", "--timeout", "60", "--app"])
        .arg(common::program("durable"))
        .arg("--")
        .args(args);
    common::default_signals(&mut cmd);
    cmd
}

/// A scratch directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-volumes-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A zero-filled raw disk file of `bytes`.
fn disk_file(dir: &Path, name: &str, bytes: u64) -> String {
    let path = dir.join(name);
    std::fs::File::create(&path)
        .unwrap()
        .set_len(bytes)
        .unwrap();
    path.to_string_lossy().into_owned()
}

/// durable.c's `pattern(i, seed)`.
fn pattern(i: u64, seed: u64) -> u8 {
    (i.wrapping_mul(7).wrapping_add(seed).wrapping_add(i >> 9) & 0xff) as u8
}

/// durable.c's record `n`.
fn record(n: u64) -> Vec<u8> {
    let mut r = vec![0u8; RECORD];
    r[..8].copy_from_slice(&0x6b69_6c6e_7265_636f_u64.to_le_bytes());
    r[8..16].copy_from_slice(&n.to_le_bytes());
    for (i, b) in r.iter_mut().enumerate().take(RECORD - 8).skip(16) {
        *b = (n.wrapping_mul(131).wrapping_add(i as u64) & 0xff) as u8;
    }
    let sum = common::fnv1a(common::FNV_START, &r[..RECORD - 8]);
    r[RECORD - 8..].copy_from_slice(&sum.to_le_bytes());
    r
}

fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().expect("kiln-vmm starts");
    assert_eq!(status(&out), 0, "{what}: {}{}", stdout(&out), stderr(&out));
    stdout(&out)
}

#[test]
fn a_disk_is_a_block_device_the_program_reads_and_writes() {
    if !kvm_or_skip("a_disk_is_a_block_device_the_program_reads_and_writes") {
        return;
    }
    let dir = scratch("rw");
    let disk = disk_file(&dir, "data.img", 8 << 20);
    let info = run_ok(
        &mut durable(&[disk.as_str()], &["info", "/dev/vda"]),
        "info",
    );
    assert_eq!(
        info.trim(),
        "size 8388608 sector 512 ro 0 block 1 end 8388608"
    );
    // Unaligned offset and length: partial sectors are read, patched and
    // written back; the bytes around stay as they were.
    let (off, len, seed) = (1000u64, 300_000u64, 7u64);
    std::fs::write(&disk, vec![0xa5u8; 8 << 20]).unwrap();
    let out = run_ok(
        &mut durable(
            &[disk.as_str()],
            &[
                "pattern",
                "/dev/vda",
                &off.to_string(),
                &len.to_string(),
                "7",
            ],
        ),
        "pattern",
    );
    assert_eq!(out.trim(), "pattern ok");
    let bytes = std::fs::read(&disk).unwrap();
    assert_eq!(bytes.len(), 8 << 20, "the disk file keeps its size");
    for i in 0..len {
        assert_eq!(bytes[(off + i) as usize], pattern(i, seed), "byte {i}");
    }
    assert!(bytes[..off as usize].iter().all(|&b| b == 0xa5));
    assert!(bytes[(off + len) as usize..].iter().all(|&b| b == 0xa5));
    // Discard: the range reads back as zeros, in the guest and the host.
    let out = run_ok(
        &mut durable(&[disk.as_str()], &["discard", "/dev/vda", "4096", "8192"]),
        "discard",
    );
    assert_eq!(out.trim(), "zeros");
    let bytes = std::fs::read(&disk).unwrap();
    assert!(bytes[4096..12288].iter().all(|&b| b == 0));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_second_disk_is_vdb_and_a_read_only_disk_refuses_writes() {
    if !kvm_or_skip("a_second_disk_is_vdb_and_a_read_only_disk_refuses_writes") {
        return;
    }
    let dir = scratch("ro");
    let a = disk_file(&dir, "a.img", 1 << 20);
    let b = disk_file(&dir, "b.img", 2 << 20);
    std::fs::write(&b, vec![0x5au8; 2 << 20]).unwrap();
    let ro = format!("{b},ro");
    let info = run_ok(
        &mut durable(&[a.as_str(), ro.as_str()], &["info", "/dev/vdb"]),
        "info",
    );
    assert!(
        info.starts_with("size 2097152 sector 512 ro 1 block 1"),
        "{info}"
    );
    let out = durable(&[a.as_str(), ro.as_str()], &["open-rw", "/dev/vdb"])
        .output()
        .unwrap();
    assert_eq!(stdout(&out).trim(), "open: EROFS", "{}", stderr(&out));
    // Two VMs share a read-only disk and read the same bytes.
    let readers: Vec<_> = (0..2)
        .map(|_| {
            durable(&[ro.as_str()], &["verify", "/dev/vda", "0"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for r in readers {
        let out = r.wait_with_output().unwrap();
        assert_eq!(stdout(&out).trim(), "ok 0", "{}", stderr(&out));
    }
    assert!(std::fs::read(&b).unwrap().iter().all(|&x| x == 0x5a));
    // No such device beyond the disks given.
    let out = durable(&[a.as_str()], &["info", "/dev/vdb"])
        .output()
        .unwrap();
    assert_eq!(stdout(&out).trim(), "open: ENOENT");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_disks_are_refused_with_a_clear_error() {
    if !kvm_or_skip("bad_disks_are_refused_with_a_clear_error") {
        return;
    }
    let dir = scratch("bad");
    let missing = dir.join("missing.img").to_string_lossy().into_owned();
    let out = durable(&[missing.as_str()], &["info", "/dev/vda"])
        .output()
        .unwrap();
    assert_ne!(status(&out), 0);
    assert!(
        stderr(&out).contains("missing.img") && stderr(&out).contains("truncate -s"),
        "{}",
        stderr(&out)
    );
    let odd = dir.join("odd.img");
    std::fs::write(&odd, [1u8; 1000]).unwrap();
    let out = durable(&[&odd.to_string_lossy()], &["info", "/dev/vda"])
        .output()
        .unwrap();
    assert_ne!(status(&out), 0);
    assert!(stderr(&out).contains("1000 bytes"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(&odd).unwrap(),
        [1u8; 1000],
        "a refused disk is untouched"
    );
    // A writable disk in use by a running VM is refused to a second one.
    let disk = disk_file(&dir, "busy.img", 1 << 20);
    let mut first = durable(&[disk.as_str()], &["append", "/dev/vda"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(first.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().starts_with("synced"));
    let out = durable(&[disk.as_str()], &["info", "/dev/vda"])
        .output()
        .unwrap();
    assert_ne!(status(&out), 0);
    assert!(
        stderr(&out).contains("in use by another VM"),
        "{}",
        stderr(&out)
    );
    first.kill().unwrap();
    first.wait().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The standard crash-consistency check: a writer appends numbered,
/// checksummed records with a flush after each and says which it flushed;
/// kiln-vmm is killed with SIGKILL at a random moment, 50 times; after each
/// kill every record reported as flushed is intact in the host file.
#[test]
fn flushed_records_survive_kill_9_at_random_moments() {
    if !kvm_or_skip("flushed_records_survive_kill_9_at_random_moments") {
        return;
    }
    let dir = scratch("kill9");
    let disk = disk_file(&dir, "log.img", 4 << 20);
    // A fixed-seed generator: random moments, the same ones every run.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let modes = ["fsync", "data", "osync"];
    let mut checked = 0;
    for round in 0..50 {
        // Each round starts on a fresh disk so it proves its own records.
        std::fs::File::create(&disk)
            .unwrap()
            .set_len(4 << 20)
            .unwrap();
        let mode = modes[round % modes.len()];
        let mut child = durable(&[disk.as_str()], &["append", "/dev/vda", mode])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut last = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("synced ") {
                    last = Some(n.parse::<u64>().unwrap());
                }
            }
            last
        });
        std::thread::sleep(std::time::Duration::from_millis(20 + next() % 400));
        child.kill().unwrap();
        child.wait().unwrap();
        let last = reader.join().unwrap();
        let bytes = std::fs::read(&disk).unwrap();
        if let Some(last) = last {
            for n in 0..=last {
                let at = n as usize * RECORD;
                assert!(
                    bytes[at..at + RECORD] == record(n)[..],
                    "round {round} ({mode}): record {n} of {last} flushed is damaged"
                );
            }
            checked += last + 1;
        }
    }
    assert!(
        checked > 50,
        "the writer flushed only {checked} records in 50 rounds"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
