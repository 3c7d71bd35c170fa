//! End-to-end tests of the VM's storage on this host's KVM: raw disk files
//! as virtio block devices (`--disk`) and host directories shared through
//! a real virtiofsd (`-v`), written and read by real programs in the guest
//! (tests/programs/durable.c, busybox) and checked byte for byte on the
//! host — including after `kill -9` of kiln-vmm at random moments.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{kvm_or_skip, status, stderr, stdout};

/// Bytes of one record of `durable append`.
const RECORD: usize = 512;

/// kiln-vmm running `program ARGS` with `disks` and `volumes` (`-v`).
fn vmm(program: &Path, disks: &[&str], volumes: &[&str], args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln-vmm"));
    cmd.arg("--kernel").arg(xtask::paths::kernel());
    for d in disks {
        cmd.arg("--disk").arg(d);
    }
    for v in volumes {
        cmd.arg("-v").arg(v);
    }
    cmd.args(["--memory", "64", "--timeout", "60", "--app"])
        .arg(program)
        .arg("--")
        .args(args);
    common::default_signals(&mut cmd);
    cmd
}

/// `durable ARGS` with `disks` attached.
fn durable(disks: &[&str], args: &[&str]) -> Command {
    vmm(&common::program("durable"), disks, &[], args)
}

/// `durable ARGS` with `volumes`.
fn durable_on(volumes: &[&str], args: &[&str]) -> Command {
    vmm(&common::program("durable"), &[], volumes, args)
}

/// Busybox applet `args` with `volumes`.
fn busybox(volumes: &[&str], args: &[&str]) -> Command {
    common::require_tool("busybox", "busybox-static");
    let busybox = xtask::host::which("busybox").expect("busybox");
    vmm(&busybox, &[], volumes, args)
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

/// The standard crash-consistency check, 50 rounds: `prepare` resets the
/// storage; `writer(mode)` starts an appliance appending numbered,
/// checksummed records with fsync, fdatasync or O_SYNC (by round) after
/// each and printing each one it synced; it is killed with SIGKILL at a
/// random moment (a fixed-seed generator: the same moments every run);
/// then every record it reported as synced must be intact in what
/// `stored()` reads on the host. Returns how many records were checked.
fn crash_rounds(
    mut seed: u64,
    prepare: impl Fn(),
    writer: impl Fn(&str) -> Command,
    stored: impl Fn() -> Vec<u8>,
) -> u64 {
    let modes = ["fsync", "data", "osync"];
    let mut checked = 0;
    for round in 0..50 {
        prepare();
        let mode = modes[round % modes.len()];
        let mut child = writer(mode)
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
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(std::time::Duration::from_millis(20 + seed % 400));
        child.kill().unwrap();
        child.wait().unwrap();
        let Some(last) = reader.join().unwrap() else {
            continue;
        };
        let bytes = stored();
        assert!(
            bytes.len() >= (last as usize + 1) * RECORD,
            "round {round} ({mode}): {last} records synced, {} bytes stored",
            bytes.len()
        );
        for n in 0..=last {
            let at = n as usize * RECORD;
            assert!(
                bytes[at..at + RECORD] == record(n)[..],
                "round {round} ({mode}): record {n} of {last} synced is damaged"
            );
        }
        checked += last + 1;
    }
    assert!(
        checked > 50,
        "the writer synced only {checked} records in 50 rounds"
    );
    checked
}

/// The crash-consistency check on a disk.
#[test]
fn flushed_records_survive_kill_9_at_random_moments() {
    if !kvm_or_skip("flushed_records_survive_kill_9_at_random_moments") {
        return;
    }
    let dir = scratch("kill9");
    let disk = disk_file(&dir, "log.img", 4 << 20);
    crash_rounds(
        0x9e37_79b9_7f4a_7c15,
        // Each round starts on a fresh disk so it proves its own records.
        || {
            std::fs::File::create(&disk)
                .unwrap()
                .set_len(4 << 20)
                .unwrap()
        },
        |mode| durable(&[disk.as_str()], &["append", "/dev/vda", mode]),
        || std::fs::read(&disk).unwrap(),
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A volume whose directory the host fills: the guest lists it, reads its
/// files and links; what the guest makes, moves and removes is there on
/// the host at once.
#[test]
fn a_volume_shares_a_host_directory_both_ways() {
    if !kvm_or_skip("a_volume_shares_a_host_directory_both_ways") {
        return;
    }
    let dir = scratch("share");
    let host = dir.join("shared");
    std::fs::create_dir_all(host.join("sub")).unwrap();
    std::fs::write(host.join("hello.txt"), "hello from the host\n").unwrap();
    std::os::unix::fs::symlink("hello.txt", host.join("link")).unwrap();
    let v = format!("{}:/data", host.display());
    let vols = [v.as_str()];
    let out = run_ok(&mut busybox(&vols, &["ls", "-1", "/data"]), "ls");
    assert_eq!(out, "hello.txt\nlink\nsub\n");
    let out = run_ok(
        &mut busybox(&vols, &["cat", "/data/hello.txt", "/data/link"]),
        "cat",
    );
    assert_eq!(out, "hello from the host\nhello from the host\n");
    // The guest makes, copies, moves, links and removes.
    run_ok(&mut busybox(&vols, &["mkdir", "/data/made"]), "mkdir");
    run_ok(
        &mut busybox(&vols, &["cp", "/data/hello.txt", "/data/made/copy"]),
        "cp",
    );
    run_ok(
        &mut busybox(&vols, &["mv", "/data/made/copy", "/data/sub/moved"]),
        "mv",
    );
    run_ok(
        &mut busybox(&vols, &["ln", "-s", "/data/sub/moved", "/data/abs-link"]),
        "ln -s",
    );
    run_ok(&mut busybox(&vols, &["rm", "/data/link"]), "rm");
    assert!(host.join("made").is_dir());
    assert_eq!(
        std::fs::read_to_string(host.join("sub/moved")).unwrap(),
        "hello from the host\n"
    );
    assert_eq!(
        std::fs::read_link(host.join("abs-link")).unwrap(),
        Path::new("/data/sub/moved")
    );
    assert!(!host.join("link").exists());
    // A link the guest made resolves in the guest, through the volume.
    let out = run_ok(&mut busybox(&vols, &["cat", "/data/abs-link"]), "cat link");
    assert_eq!(out, "hello from the host\n");
    // Unaligned writes and reads of a volume file, checked on the host.
    let (off, len, seed) = (1000u64, 300_000u64, 9u64);
    let out = run_ok(
        &mut durable_on(
            &vols,
            &[
                "pattern",
                "/data/p.bin",
                &off.to_string(),
                &len.to_string(),
                "9",
            ],
        ),
        "pattern",
    );
    assert_eq!(out.trim(), "pattern ok");
    let bytes = std::fs::read(host.join("p.bin")).unwrap();
    assert_eq!(bytes.len() as u64, off + len);
    assert!(bytes[..off as usize].iter().all(|&b| b == 0));
    for i in 0..len {
        assert_eq!(bytes[(off + i) as usize], pattern(i, seed), "byte {i}");
    }
    // MAP_SHARED writes reach the host: at msync + munmap, and at exit.
    for how in ["msync", "exit"] {
        let name = format!("mapped-{how}.bin");
        let out = run_ok(
            &mut durable_on(
                &vols,
                &["mmap", &format!("/data/{name}"), "10000", "3", how],
            ),
            "mmap",
        );
        assert_eq!(out.trim(), "mapped");
        let bytes = std::fs::read(host.join(&name)).unwrap();
        assert_eq!(bytes.len(), 10000);
        assert!(
            bytes
                .iter()
                .enumerate()
                .all(|(i, &b)| b == pattern(i as u64, 3)),
            "{how}: the mapping's writes are not in the host file"
        );
    }
    // fallocate reserves the space on the host.
    run_ok(
        &mut busybox(&vols, &["fallocate", "-l", "1000000", "/data/reserved"]),
        "fallocate",
    );
    assert_eq!(
        std::fs::metadata(host.join("reserved")).unwrap().len(),
        1_000_000
    );
    // statfs names the file system: FUSE's magic number.
    let out = run_ok(
        &mut busybox(&vols, &["stat", "-f", "-c", "%t", "/data"]),
        "stat -f",
    );
    assert_eq!(out.trim(), "65735546");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `:ro` refuses every change with EROFS, and two appliances sharing a
/// read-only volume read the same bytes.
#[test]
fn a_read_only_volume_refuses_writes_and_is_shared() {
    if !kvm_or_skip("a_read_only_volume_refuses_writes_and_is_shared") {
        return;
    }
    let dir = scratch("ro-volume");
    let host = dir.join("shared");
    std::fs::create_dir_all(&host).unwrap();
    let data: Vec<u8> = (0..200_000u64).map(|i| pattern(i, 3)).collect();
    std::fs::write(host.join("data.bin"), &data).unwrap();
    let v = format!("{}:/data:ro", host.display());
    let vols = [v.as_str()];
    let out = durable_on(&vols, &["open-rw", "/data/data.bin"])
        .output()
        .unwrap();
    assert_eq!(stdout(&out).trim(), "open: EROFS", "{}", stderr(&out));
    let out = busybox(&vols, &["mkdir", "/data/x"]).output().unwrap();
    assert_ne!(status(&out), 0);
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );
    let out = busybox(&vols, &["rm", "/data/data.bin"]).output().unwrap();
    assert_ne!(status(&out), 0);
    assert!(host.join("data.bin").exists());
    let readers: Vec<_> = (0..2)
        .map(|_| {
            busybox(&vols, &["sha256sum", "/data/data.bin"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let sums: Vec<String> = readers
        .into_iter()
        .map(|r| {
            let out = r.wait_with_output().unwrap();
            assert_eq!(status(&out), 0, "{}", stderr(&out));
            stdout(&out)
        })
        .collect();
    let native = Command::new("sha256sum")
        .arg(host.join("data.bin"))
        .output()
        .unwrap();
    let native = stdout(&native);
    let hash = |s: &str| s.split_whitespace().next().unwrap_or("").to_string();
    assert_eq!(hash(&sums[0]), hash(&native));
    assert_eq!(hash(&sums[1]), hash(&native));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The crash-consistency check on a volume; and every virtiofsd ends with
/// its VM.
#[test]
fn synced_records_on_a_volume_survive_kill_9() {
    if !kvm_or_skip("synced_records_on_a_volume_survive_kill_9") {
        return;
    }
    let dir = scratch("volume-kill9");
    let host = dir.join("shared");
    std::fs::create_dir_all(&host).unwrap();
    let v = format!("{}:/data", host.display());
    crash_rounds(
        0x2545_f491_4f6c_dd1d,
        || {
            let _ = std::fs::remove_file(host.join("log"));
        },
        |mode| durable_on(&[v.as_str()], &["append", "/data/log", mode]),
        || std::fs::read(host.join("log")).unwrap_or_default(),
    );
    common::wait_for("every virtiofsd of the test ends", || {
        virtiofsd_of(&host).is_none()
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The pid of the virtiofsd serving `host`, if one runs.
fn virtiofsd_of(host: &Path) -> Option<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .find(|e| {
            std::fs::read_to_string(e.path().join("cmdline"))
                .is_ok_and(|c| c.contains("virtiofsd") && c.contains(&*host.to_string_lossy()))
        })
        .and_then(|e| e.file_name().to_str()?.parse().ok())
}

#[test]
fn bad_volumes_are_refused_with_a_clear_error() {
    if !kvm_or_skip("bad_volumes_are_refused_with_a_clear_error") {
        return;
    }
    let dir = scratch("bad-volume");
    let missing = format!("{}:/data", dir.join("missing").display());
    let out = busybox(&[missing.as_str()], &["ls", "/data"])
        .output()
        .unwrap();
    assert_eq!(status(&out), 125);
    assert!(
        stderr(&out).contains("missing") && stderr(&out).contains("mkdir -p"),
        "{}",
        stderr(&out)
    );
    let out = busybox(&["relative-no-colon"], &["ls"]).output().unwrap();
    assert_eq!(status(&out), 2, "a usage error");
    assert!(
        stderr(&out).contains("HOSTDIR:GUESTPATH"),
        "{}",
        stderr(&out)
    );
    let here = format!("{}:/data", dir.display());
    let out = busybox(&[here.as_str()], &["ls", "/data"])
        .env("KILN_VIRTIOFSD", dir.join("no-such-virtiofsd"))
        .output()
        .unwrap();
    assert_eq!(status(&out), 125);
    assert!(
        stderr(&out).contains("cargo install virtiofsd"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// virtiofsd dying under a running appliance stops the VM with a message
/// naming the volume (a guest waiting for its reply would otherwise wait
/// forever).
#[test]
fn the_vm_stops_when_virtiofsd_dies() {
    if !kvm_or_skip("the_vm_stops_when_virtiofsd_dies") {
        return;
    }
    let dir = scratch("daemon-dies");
    let host = dir.join("shared");
    std::fs::create_dir_all(&host).unwrap();
    let v = format!("{}:/data", host.display());
    let mut child = durable_on(&[v.as_str()], &["append", "/data/log"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().starts_with("synced"));
    let daemon = virtiofsd_of(&host).expect("virtiofsd runs");
    // SAFETY: kill(2) of the virtiofsd this test's VM started.
    unsafe { libc::kill(daemon, libc::SIGKILL) };
    std::thread::spawn(move || for _ in lines {});
    let out = child.wait_with_output().unwrap();
    assert_eq!(status(&out), 125);
    assert!(
        stderr(&out).contains("virtiofsd serving") && stderr(&out).contains("ended"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
