//! Snapshots: `kiln run --snapshot-at` saves a running VM, `kiln run
//! --from-snapshot` resumes it — in other processes, on real KVM, as many
//! times as asked — and what a snapshot cannot be (corrupt, from another
//! kiln or image, of a VM with devices it cannot hold) is refused before
//! anything runs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{SystemTime, UNIX_EPOCH};

use common::{kiln, kvm_or_skip, ok, status, stderr, stdout};

/// `kiln run` of `image` with `flags`, then `-- busybox ARGS`.
fn run(image: &Path, flags: &[&str], args: &[&str]) -> Output {
    kiln()
        .arg("run")
        .args(flags)
        .arg(image)
        .arg("--")
        .args(args)
        .output()
        .expect("kiln runs")
}

/// `kiln run --from-snapshot DIR EXTRA`.
fn resume(snapshot: &Path, extra: &[&str]) -> Output {
    kiln()
        .arg("run")
        .arg("--from-snapshot")
        .arg(snapshot)
        .args(["--timeout", "60"])
        .args(extra)
        .output()
        .expect("kiln runs")
}

/// Takes a snapshot of busybox running `script` at `point`; returns its
/// directory and the snapshot run's output.
fn take(test: &str, point: &str, cpus: &str, script: &str) -> (PathBuf, PathBuf, Output) {
    let (dir, image) = common::built_image(test, "busybox-sh");
    let snapshot = dir.join("snap");
    let out = run(
        &image,
        &[
            "--cpus",
            cpus,
            "--snapshot-at",
            point,
            "--snapshot-to",
            snapshot.to_str().unwrap(),
        ],
        &["sh", "-c", script],
    );
    let out = ok(out, "kiln run --snapshot-at");
    assert!(
        stderr(&out).contains("snapshot saved to"),
        "no snapshot report: {}",
        stderr(&out)
    );
    assert!(snapshot.join("state.json").is_file() && snapshot.join("memory").is_file());
    (image, snapshot, out)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Checks the output of the script `echo started; date +%s; head -c 16
/// /dev/urandom | od -An -tx1` resumed between the host times `before`
/// and `after` (seconds): the guest's clock is the host's; returns the
/// random bytes' line.
fn clock_and_randomness(out: &Output, before: u64, after: u64) -> String {
    let text = stdout(out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "unexpected output: {text:?}");
    assert_eq!(lines[0], "started");
    let guest_time: u64 = lines[1].trim().parse().expect("date +%s prints a number");
    assert!(
        guest_time >= before && guest_time <= after,
        "guest time {guest_time} outside [{before}, {after}]"
    );
    lines[2].to_string()
}

#[test]
fn program_entry_snapshot_resumes_twice_with_the_hosts_time_and_fresh_randomness() {
    if !kvm_or_skip("program_entry_snapshot_resumes_twice") {
        return;
    }
    let script = "echo started; date +%s; head -c 16 /dev/urandom | od -An -tx1";
    let (_, snapshot, taken) = take("snapshot-entry", "program-entry", "1", script);
    // The snapshot was taken before the program's first instruction.
    assert_eq!(stdout(&taken), "");
    let taken_at = unix_now();
    // Time passes between the snapshot and the resume: the guest's wall
    // clock must show the host's, not the snapshot's.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let mut randomness = Vec::new();
    for _ in 0..2 {
        let before = unix_now().max(taken_at + 2);
        let out = ok(resume(&snapshot, &[]), "kiln run --from-snapshot");
        randomness.push(clock_and_randomness(&out, before, unix_now()));
    }
    assert_ne!(
        randomness[0], randomness[1],
        "two VMs resumed from one snapshot read the same random bytes"
    );
}

#[test]
fn first_output_snapshot_on_two_vcpus_resumes_after_the_first_line() {
    if !kvm_or_skip("first_output_snapshot_on_two_vcpus") {
        return;
    }
    // The second half runs commands (a pipe: two processes, on either
    // vCPU) after the snapshot.
    let script = "echo first; echo second | tr a-z A-Z; exit 7";
    let (_, snapshot, taken) = take("snapshot-first-output", "first-output", "2", script);
    assert_eq!(stdout(&taken), "first\n");
    // Memory mapped from the snapshot's file (twice: the second finds it
    // checked), then copied into the VM's own memory.
    for memory in ["shared", "shared", "copy"] {
        let out = resume(&snapshot, &["--snapshot-memory", memory]);
        assert_eq!(status(&out), 7, "{memory}: {}", stderr(&out));
        assert_eq!(stdout(&out), "SECOND\n", "{memory}");
    }
    // Kept warm: vCPU 0 is held at the resume report and vCPU 1 waits
    // until the run claims the VM.
    let _cleanup = StopWarm(snapshot.clone());
    ok(warm(&[snapshot.to_str().unwrap()]), "kiln warm");
    let json = snapshot.with_extension("timings.json");
    let out = resume(&snapshot, &["--timings-json", json.to_str().unwrap()]);
    assert_eq!(status(&out), 7, "warm: {}", stderr(&out));
    assert_eq!(stdout(&out), "SECOND\n", "warm");
    assert!(phases(&json).contains_key("claimed"), "not served warm");
}

/// Pages a write set (`memory.writes`) lists.
fn write_set_pages(snapshot: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(snapshot.join("memory.writes")).ok()?;
    let mut lines = text.lines();
    assert!(lines.next()?.starts_with("kiln-write-set 1 "), "{text}");
    Some(
        lines
            .map(|l| l.split_once(' ').unwrap().1.parse::<u64>().unwrap())
            .sum(),
    )
}

#[test]
fn shared_memory_learns_the_pages_a_resumed_vm_writes_and_copies_them_early_next_time() {
    if !kvm_or_skip("shared_memory_learns_the_write_set") {
        return;
    }
    // After the snapshot the program writes 8 MB of tmpfs pages.
    let script = "echo ready; head -c 8000000 /dev/zero | tr '\\0' x > /tmp/f; wc -c < /tmp/f; \
                  head -c 100 /tmp/f | tail -c 3";
    let (_, snapshot, taken) = take("snapshot-write-set", "first-output", "1", script);
    assert_eq!(stdout(&taken), "ready\n");
    assert_eq!(
        write_set_pages(&snapshot),
        None,
        "a fresh snapshot knows no write set"
    );
    let expected = "8000000\nxxx";
    // Copied memory learns nothing; the first shared resume learns the
    // pages written (at least the file's 1954), the next ones copy them
    // ahead of the guest and run the same.
    let out = ok(resume(&snapshot, &["--snapshot-memory", "copy"]), "copy");
    assert_eq!(stdout(&out), expected);
    assert_eq!(write_set_pages(&snapshot), None);
    let out = ok(resume(&snapshot, &[]), "learning resume");
    assert_eq!(stdout(&out), expected);
    let learnt = write_set_pages(&snapshot).expect("the first shared resume saves memory.writes");
    assert!(learnt >= 1954, "only {learnt} pages learnt");
    for _ in 0..2 {
        let out = ok(resume(&snapshot, &[]), "prefetching resume");
        assert_eq!(stdout(&out), expected);
    }
    // A write set that is not one (or lists pages past the memory's end)
    // is ignored, never trusted: the resume runs as the first did, and
    // learns it again.
    for garbage in ["not a write set\n".to_string(), {
        let size: u64 = std::fs::metadata(snapshot.join("memory")).unwrap().len();
        format!("kiln-write-set 1 {size}\n{} 5\n", size / 4096)
    }] {
        std::fs::write(snapshot.join("memory.writes"), garbage).unwrap();
        let out = ok(resume(&snapshot, &[]), "resume with a broken write set");
        assert_eq!(stdout(&out), expected);
        assert!(write_set_pages(&snapshot).is_some_and(|p| p >= 1954));
    }
}

#[test]
fn leave_running_keeps_the_vm_going_after_the_snapshot() {
    if !kvm_or_skip("leave_running_keeps_the_vm_going") {
        return;
    }
    let (dir, image) = common::built_image("snapshot-leave-running", "busybox-sh");
    let snapshot = dir.join("snap");
    let out = run(
        &image,
        &[
            "--snapshot-at",
            "first-output",
            "--snapshot-to",
            snapshot.to_str().unwrap(),
            "--leave-running",
        ],
        &["sh", "-c", "echo one; echo two"],
    );
    let out = ok(out, "kiln run --leave-running");
    assert_eq!(stdout(&out), "one\ntwo\n");
    assert_eq!(stdout(&ok(resume(&snapshot, &[]), "resume")), "two\n");
}

/// Writes `text` as the snapshot's state file, with its digest.
fn write_state(snapshot: &Path, text: &str) {
    use sha2::Digest;
    let digest: String = sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(snapshot.join("state.json"), text).unwrap();
    std::fs::write(snapshot.join("state.sha256"), digest).unwrap();
}

/// The first non-zero byte of `file` (a data page of the memory file).
fn first_data_byte(file: &Path) -> u64 {
    let bytes = std::fs::read(file).unwrap();
    bytes.iter().position(|&b| b != 0).expect("memory has data") as u64
}

#[test]
fn corrupt_foreign_and_mismatched_snapshots_are_refused() {
    if !kvm_or_skip("corrupt_foreign_and_mismatched_snapshots_are_refused") {
        return;
    }
    use std::os::unix::fs::FileExt;
    let (image, snapshot, _) = take("snapshot-refused", "program-entry", "1", "echo hi");
    // Resumes as it is, with its own image named.
    let out = resume(&snapshot, &[image.to_str().unwrap()]);
    assert_eq!(stdout(&ok(out, "resume with its image")), "hi\n");

    // Another image.
    let (_, other) = common::built_image("snapshot-refused-other", "sha256sum");
    let out = resume(&snapshot, &[other.to_str().unwrap()]);
    assert_ne!(status(&out), 0);
    assert!(
        stderr(&out).contains("taken from image"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "");

    // One byte of memory changed (after a successful resume noted the
    // file as checked: the change must void that).
    let memory = snapshot.join("memory");
    let at = first_data_byte(&memory);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&memory)
        .unwrap();
    let mut byte = [0u8; 1];
    std::fs::File::open(&memory)
        .unwrap()
        .read_exact_at(&mut byte, at)
        .unwrap();
    file.write_all_at(&[byte[0] ^ 0x40], at).unwrap();
    let out = resume(&snapshot, &[]);
    assert_ne!(status(&out), 0);
    assert!(stderr(&out).contains("corrupt"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    file.write_all_at(&byte, at).unwrap();
    assert_eq!(stdout(&ok(resume(&snapshot, &[]), "repaired")), "hi\n");

    // A state file from another kiln.
    let state_path = snapshot.join("state.json");
    let state = std::fs::read_to_string(&state_path).unwrap();
    let foreign = state.replacen(
        &format!("\"kiln_version\":\"{}\"", env!("CARGO_PKG_VERSION")),
        "\"kiln_version\":\"0.0.0-elsewhere\"",
        1,
    );
    assert_ne!(foreign, state);
    // Changed without its digest: damaged.
    std::fs::write(&state_path, &foreign).unwrap();
    let out = resume(&snapshot, &[]);
    assert_ne!(status(&out), 0);
    assert!(stderr(&out).contains("corrupt"), "{}", stderr(&out));
    // With its digest, as another kiln would write it: foreign.
    write_state(&snapshot, &foreign);
    let out = resume(&snapshot, &[]);
    assert_ne!(status(&out), 0);
    assert!(stderr(&out).contains("0.0.0-elsewhere"), "{}", stderr(&out));

    // Not a snapshot at all.
    write_state(&snapshot, "{");
    let out = resume(&snapshot, &[]);
    assert_ne!(status(&out), 0);
    assert!(
        stderr(&out).contains("not a kiln snapshot"),
        "{}",
        stderr(&out)
    );
    // Neither a directory nor a snapshot of the store.
    let out = resume(&snapshot.join("missing"), &[]);
    assert_ne!(status(&out), 0);
    assert!(
        stderr(&out).contains("no such snapshot directory, nor a snapshot in the local store"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn snapshots_kiln_cannot_take_are_refused_before_the_vm_starts() {
    if !kvm_or_skip("snapshots_kiln_cannot_take_are_refused") {
        return;
    }
    let (dir, image) = common::built_image("snapshot-unsupported", "busybox-sh");
    let snapshot = dir.join("snap");
    let flags = |extra: &[&str]| {
        let mut f = vec![
            "--snapshot-at".to_string(),
            "program-entry".into(),
            "--snapshot-to".into(),
            snapshot.to_str().unwrap().into(),
        ];
        f.extend(extra.iter().map(|s| s.to_string()));
        f
    };
    let args = ["sh", "-c", "echo ran"];
    // A tap network (or a volume, vsock) is not saved yet.
    let f = flags(&["--net", "tap"]);
    let out = run(
        &image,
        &f.iter().map(String::as_str).collect::<Vec<_>>(),
        &args,
    );
    assert_ne!(status(&out), 0);
    assert!(
        stderr(&out).contains("cannot snapshot this VM"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "");
    // An existing directory is never overwritten.
    std::fs::create_dir_all(&snapshot).unwrap();
    let f = flags(&[]);
    let out = run(
        &image,
        &f.iter().map(String::as_str).collect::<Vec<_>>(),
        &args,
    );
    assert_ne!(status(&out), 0);
    assert!(stderr(&out).contains("exists"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    // Nothing half-written is left behind.
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Starts `kiln run ARGS` with `--snapshot-at SIGUSR2 --snapshot-to
/// snapshot`, reads its output lines until one is `until`, saves it with
/// `kiln snapshot PID`, and returns every line it printed (it ends there).
fn save_when(args: &[&str], snapshot: &Path, until: &str) -> Vec<String> {
    use std::io::BufRead;
    let mut child = kiln()
        .arg("run")
        .args(["--snapshot-at", "SIGUSR2", "--snapshot-to"])
        .arg(snapshot)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kiln runs");
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line == until;
        printed.push(line);
        if done {
            break;
        }
    }
    let asked = kiln()
        .arg("snapshot")
        .arg(child.id().to_string())
        .output()
        .unwrap();
    let asked = ok(asked, "kiln snapshot");
    assert_eq!(stdout(&asked).trim(), snapshot.to_str().unwrap());
    printed.extend(lines.map(Result::unwrap));
    let taken = child.wait_with_output().unwrap();
    assert!(taken.status.success(), "{}", stderr(&taken));
    printed
}

#[test]
fn kiln_snapshot_saves_a_running_loop_that_resumes_where_it_stopped() {
    if !kvm_or_skip("kiln_snapshot_saves_a_running_loop") {
        return;
    }
    let (dir, image) = common::built_image("snapshot-signal", "busybox-sh");
    let (first, second) = (dir.join("first"), dir.join("second"));
    let script = "i=0; while [ $i -lt 40 ]; do echo $i; i=$((i+1)); sleep 0.05; done";
    let image = image.to_str().unwrap();
    let mut all = save_when(&[image, "--", "sh", "-c", script], &first, "3");
    // The resumed VM is saved again, a few numbers later.
    all.extend(save_when(
        &["--from-snapshot", first.to_str().unwrap()],
        &second,
        &(all.len() + 3).to_string(),
    ));
    let out = ok(resume(&second, &[]), "resume the second snapshot");
    all.extend(stdout(&out).lines().map(str::to_owned));
    // Every number once, in order, across the three VMs.
    let expected: Vec<String> = (0..40).map(|i| i.to_string()).collect();
    assert_eq!(all, expected);
    // A run without --snapshot-at SIGUSR2 is not signalled.
    let refused = kiln()
        .arg("snapshot")
        .arg(std::process::id().to_string())
        .output()
        .unwrap();
    assert_ne!(status(&refused), 0);
    assert!(
        stderr(&refused).contains("not a `kiln run`"),
        "{}",
        stderr(&refused)
    );
    // A resumed VM has passed the kernel's own snapshot points.
    let out = resume(
        &first,
        &[
            "--snapshot-at",
            "first-output",
            "--snapshot-to",
            dir.join("third").to_str().unwrap(),
        ],
    );
    assert_ne!(status(&out), 0);
    assert!(
        stderr(&out).contains("on a signal only"),
        "{}",
        stderr(&out)
    );
}

/// GETs `/` from `127.0.0.1:port` with curl, retrying for up to 20 s;
/// the body.
fn fetch(port: u16) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let out = std::process::Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "5"])
            .arg(format!("http://127.0.0.1:{port}/"))
            .output()
            .expect("curl runs (Debian package curl)");
        if status(&out) == 0 && !out.stdout.is_empty() {
            return stdout(&out);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "port {port} never answered: {}",
            stderr(&out)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Ends a `kiln run` as a user would (SIGTERM) and waits for it.
fn stop(child: std::process::Child) -> Output {
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    child.wait_with_output().unwrap()
}

#[test]
fn a_server_resumed_twice_from_one_snapshot_answers_on_each_published_port() {
    if !kvm_or_skip("a_server_resumed_twice_from_one_snapshot") {
        return;
    }
    common::require_tool("nginx", "nginx-light");
    common::require_tool("curl", "curl");
    common::require_tool("passt", "passt");
    let (dir, image) = common::built_image("snapshot-server", "httpd");
    let snapshot = dir.join("snap");
    let port = common::free_port();
    let quiet = || std::process::Stdio::null();
    let server = kiln()
        .arg("run")
        .args(["--net", "user", "-p", &format!("{port}:80")])
        .args(["--snapshot-at", "SIGUSR2", "--snapshot-to"])
        .arg(&snapshot)
        .arg(&image)
        .stdout(quiet())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kiln runs");
    let page = fetch(port);
    assert!(page.contains("kiln"), "{page}");
    ok(
        kiln()
            .arg("snapshot")
            .arg(server.id().to_string())
            .output()
            .unwrap(),
        "kiln snapshot",
    );
    let taken = server.wait_with_output().unwrap();
    assert!(taken.status.success(), "{}", stderr(&taken));
    // Two clones at once, each on a port of its own; the nginx in each
    // answers as the saved one did (its TCP state, workers and page cache
    // came with the snapshot; passt is new and learns the NIC's address
    // from the gratuitous ARP kiln sends for the guest).
    let ports = [common::free_port(), common::free_port()];
    let clones: Vec<_> = ports
        .iter()
        .map(|p| {
            kiln()
                .arg("run")
                .arg("--from-snapshot")
                .arg(&snapshot)
                .args(["-p", &format!("{p}:80"), "--timeout", "60"])
                .stdout(quiet())
                .stderr(quiet())
                .spawn()
                .expect("kiln runs")
        })
        .collect();
    for p in ports {
        assert_eq!(fetch(p), page);
    }
    for clone in clones {
        let out = stop(clone);
        // SIGTERM ends the guest: 128 + 15, as docker run reports it.
        assert_eq!(status(&out), 143);
    }
}

#[test]
fn disks_come_back_unchanged_or_as_copies_made_with_the_snapshot() {
    if !kvm_or_skip("disks_come_back_unchanged_or_as_copies") {
        return;
    }
    let (dir, image) = common::built_image("snapshot-disk", "busybox-sh");
    let disk = dir.join("disk.img");
    std::fs::write(&disk, vec![b'.'; 1 << 20]).unwrap();
    let snapshot = dir.join("snap");
    // After the snapshot the program writes to its disk and reads it back.
    let script = "echo ready; echo written > /dev/vda; head -c 7 /dev/vda; echo";
    let out = run(
        &image,
        &[
            "--disk",
            disk.to_str().unwrap(),
            "--snapshot-at",
            "first-output",
            "--snapshot-to",
            snapshot.to_str().unwrap(),
        ],
        &["sh", "-c", script],
    );
    assert_eq!(stdout(&ok(out, "snapshot with a disk")), "ready\n");
    // A copy of the disk as it was at the snapshot, for a second resume.
    let copy = dir.join("copy.img");
    std::fs::copy(&disk, &copy).unwrap();
    let out = ok(resume(&snapshot, &[]), "resume with the snapshot's disk");
    assert_eq!(stdout(&out), "written\n");
    assert!(std::fs::read(&disk).unwrap().starts_with(b"written\n"));
    // The disk changed since: refused, unless a copy is given.
    let out = resume(&snapshot, &[]);
    assert_ne!(status(&out), 0);
    assert!(
        stderr(&out).contains("changed since the snapshot"),
        "{}",
        stderr(&out)
    );
    let out = resume(&snapshot, &["--disk", copy.to_str().unwrap()]);
    assert_eq!(stdout(&ok(out, "resume with a copy")), "written\n");
    // A disk of another size is refused.
    let small = dir.join("small.img");
    std::fs::write(&small, b"tiny").unwrap();
    let out = resume(&snapshot, &["--disk", small.to_str().unwrap()]);
    assert_ne!(status(&out), 0);
    assert!(stderr(&out).contains("holds 4 bytes"), "{}", stderr(&out));
}

/// `kiln warm ARGS` with the test binary's store.
fn warm(args: &[&str]) -> Output {
    kiln()
        .arg("warm")
        .args(args)
        .output()
        .expect("kiln warm runs")
}

/// The warm VMs waiting for `snapshot`: (their processes, their sockets).
fn waiting(snapshot: &Path) -> Vec<(u32, PathBuf)> {
    use kiln_vmm::snapshot::warm;
    let dir = kiln_builder::run::warm_dir(&kiln_home(), snapshot).expect("a snapshot");
    warm::ready_sockets(&dir)
        .into_iter()
        .filter_map(|path| Some((warm::socket_pid(&path)?, path)))
        .collect()
}

/// The store `kiln()` gives its commands.
fn kiln_home() -> PathBuf {
    let cmd = kiln();
    let home = cmd
        .get_envs()
        .find(|(k, _)| *k == "KILN_HOME")
        .and_then(|(_, v)| v)
        .expect("kiln() sets KILN_HOME");
    PathBuf::from(home)
}

/// Whether process `pid` has ended (gone, or a zombie nobody reaped yet).
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// Waits up to 10 s for process `pid` to end.
fn ends_soon(pid: u32) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if ended(pid) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

/// Stops the warm VMs of a snapshot when the test ends, passed or not
/// (they would otherwise wait out their idle timeout).
struct StopWarm(PathBuf);

impl Drop for StopWarm {
    fn drop(&mut self) {
        let _ = warm(&[self.0.to_str().unwrap_or_default(), "--stop"]);
    }
}

/// A child killed and reaped when the test ends, passed or not.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `found` for up to 20 s.
fn wait_for<T>(found: impl Fn() -> Option<T>, what: &str) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(t) = found() {
            return t;
        }
        assert!(std::time::Instant::now() < deadline, "no {what} after 20 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A `--timings-json` file.
fn report(json: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(json).expect("timings written")).unwrap()
}

/// The phases of a `--timings-json` file.
fn phases(json: &Path) -> serde_json::Map<String, serde_json::Value> {
    report(json)["phases_ms"]
        .as_object()
        .expect("phases")
        .clone()
}

#[test]
fn warm_vms_each_serve_one_run_with_its_own_time_randomness_and_status() {
    if !kvm_or_skip("warm_vms_each_serve_one_run") {
        return;
    }
    let script = "echo started; date +%s; head -c 16 /dev/urandom | od -An -tx1; exit 3";
    let (_, snapshot, _) = take("snapshot-warm", "program-entry", "1", script);
    let _cleanup = StopWarm(snapshot.clone());
    let snap = snapshot.to_str().unwrap();
    let out = ok(warm(&[snap, "-n", "2"]), "kiln warm");
    assert!(stderr(&out).contains("2 warm VMs"), "{}", stderr(&out));
    let held = waiting(&snapshot);
    assert_eq!(held.len(), 2, "two warm VMs should wait: {held:?}");
    // Time passes while they wait: the program must see the host's time
    // when it runs, not when the VM was warmed.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let json = snapshot.with_extension("timings.json");
    // A connection that is not a claim (no descriptors, not JSON) is
    // dropped; the warm VM keeps waiting.
    for (_, socket) in &held {
        let mut junk = std::os::unix::net::UnixStream::connect(socket).unwrap();
        junk.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        std::io::Write::write_all(&mut junk, b"not a claim\n").unwrap();
        let mut answer = String::new();
        let _ = std::io::Read::read_to_string(&mut junk, &mut answer);
        assert_eq!(answer, "", "a warm VM answered junk");
    }
    // A run a warm VM cannot serve (memory copied at the restore) restores
    // in its own process and leaves the warm VMs waiting.
    let cold = resume(&snapshot, &["--snapshot-memory", "copy"]);
    assert_eq!(status(&cold), 3, "{}", stderr(&cold));
    assert_eq!(waiting(&snapshot).len(), 2);
    let mut randomness = Vec::new();
    let mut warm_exits = 0;
    for served in 0..2 {
        let before = unix_now();
        // The first run is the plain command (`kiln run --from-snapshot
        // SNAP`, handed to a warm VM before the command line is parsed)
        // and asks for no report: its warm VM answers as soon as the
        // program's output is out, before the VM is taken down — all of it
        // must have arrived all the same.
        let out = if served == 0 {
            kiln()
                .args(["run", "--from-snapshot"])
                .arg(&snapshot)
                .output()
                .expect("kiln runs")
        } else {
            resume(
                &snapshot,
                &["--timings-json", json.to_str().unwrap(), "--stats"],
            )
        };
        assert_eq!(status(&out), 3, "the program's status: {}", stderr(&out));
        randomness.push(clock_and_randomness(&out, before, unix_now()));
        assert_eq!(waiting(&snapshot).len(), 1 - served);
        if served == 1 {
            let doc = report(&json);
            let phases = doc["phases_ms"].as_object().expect("phases");
            assert!(
                phases.contains_key("claimed") && !phases.contains_key("snapshot_verified"),
                "run {served} was not served by a warm VM: {phases:?}"
            );
            // The guest touched the program's pages while it waited (the
            // program, busybox, has hundreds mapped at its entry).
            let touched = doc["warm_pages_touched"].as_u64().unwrap_or(0);
            assert!(touched > 100, "a warm VM touched {touched} pages: {doc}");
            // --stats of a served run count from the claim.
            warm_exits = doc["kvm_stats"]["exits"].as_u64().unwrap_or(0);
            assert!(warm_exits > 0, "no exits counted: {doc}");
        }
    }
    assert_ne!(
        randomness[0], randomness[1],
        "two warm VMs had the same seed"
    );
    for (pid, _) in held {
        assert!(ends_soon(pid), "warm VM {pid} still runs after its run");
    }
    // None left: the next run restores by itself.
    let out = resume(
        &snapshot,
        &["--timings-json", json.to_str().unwrap(), "--stats"],
    );
    assert_eq!(status(&out), 3, "{}", stderr(&out));
    assert!(phases(&json).contains_key("snapshot_verified"));
    // Nobody waited for it: it touched nothing ahead.
    let doc = report(&json);
    assert!(doc.get("warm_pages_touched").is_none(), "{doc}");
    // It counts its restore and every first touch of the program's pages,
    // which a warm VM had done before its claim (~75 exits against ~390
    // for busybox here).
    let restored_exits = doc["kvm_stats"]["exits"].as_u64().unwrap_or(0);
    assert!(
        warm_exits < restored_exits,
        "a served run counted {warm_exits} exits, a restore {restored_exits}"
    );
}

#[test]
fn warm_vms_are_kept_and_end_when_stopped_when_idle_and_when_their_client_dies() {
    if !kvm_or_skip("warm_vms_end_when_stopped") {
        return;
    }
    let (_, snapshot, _) = take(
        "snapshot-warm-end",
        "program-entry",
        "1",
        "echo started; sleep 60",
    );
    let _cleanup = StopWarm(snapshot.clone());
    let snap = snapshot.to_str().unwrap();
    // --stop ends every waiting one.
    ok(warm(&[snap, "-n", "2"]), "kiln warm");
    let held = waiting(&snapshot);
    assert_eq!(held.len(), 2);
    let out = ok(warm(&[snap, "--stop"]), "kiln warm --stop");
    assert!(stderr(&out).contains("2 warm VMs"), "{}", stderr(&out));
    for (pid, socket) in held {
        assert!(ends_soon(pid), "warm VM {pid} ignored --stop");
        assert!(!socket.exists(), "{} stays", socket.display());
    }
    // --idle-timeout ends one nobody claims (3 s: long enough to find it
    // waiting first on a loaded machine, short enough for `ends_soon`).
    ok(warm(&[snap, "--idle-timeout", "3"]), "kiln warm");
    let held = waiting(&snapshot);
    assert_eq!(held.len(), 1);
    assert!(ends_soon(held[0].0), "an idle warm VM outlived its timeout");
    assert!(waiting(&snapshot).is_empty());
    // --keep starts a new warm VM for each one a run takes, and stops the
    // waiting ones when it is told to end.
    let mut keeper = Reaped(
        kiln()
            .args(["warm", snap, "--keep"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let first = wait_for(|| waiting(&snapshot).first().cloned(), "a kept warm VM");
    let out = kiln()
        .args(["run", "--from-snapshot", snap, "--timeout", "0.5"])
        .output()
        .unwrap();
    assert_eq!(status(&out), 124, "{}", stderr(&out));
    assert!(ends_soon(first.0), "the claimed warm VM still runs");
    let second = wait_for(
        || waiting(&snapshot).into_iter().find(|w| w.0 != first.0),
        "a replacement warm VM",
    );
    // SAFETY: kill(2) of the keeper this test started.
    unsafe { libc::kill(keeper.0.id() as i32, libc::SIGTERM) };
    assert!(keeper.0.wait().unwrap().success());
    assert!(ends_soon(second.0), "--keep left its warm VM running");
    assert!(waiting(&snapshot).is_empty());
    // A client killed while its program runs takes the warm VM with it.
    ok(warm(&[snap]), "kiln warm");
    let held = waiting(&snapshot);
    let mut client = kiln()
        .args(["run", "--from-snapshot", snap])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(client.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert_eq!(first, "started\n");
    assert!(!ended(held[0].0), "the warm VM should run the program");
    client.kill().unwrap();
    client.wait().unwrap();
    assert!(ends_soon(held[0].0), "the warm VM outlived its client");
}

/// A dynamic program's `after-loader` snapshot is taken at its own entry,
/// once its loader has mapped and relocated its libraries: it resumes to
/// the same output as a booted run, and a warm VM of it leaves the
/// loader's work out of the claimed run (which a `program-entry` one
/// does after its claim: ~130 exits against ~40 for sha256sum here).
#[test]
fn after_loader_snapshots_start_dynamic_programs_past_their_loader() {
    if !kvm_or_skip("after_loader_snapshots") {
        return;
    }
    let (dir, image) = common::built_image("snapshot-after-loader", "sha256sum");
    let booted = ok(
        kiln().arg("run").arg(&image).output().expect("kiln runs"),
        "kiln run",
    );
    let mut exits = Vec::new();
    for point in ["program-entry", "after-loader"] {
        let snapshot = dir.join(point);
        let out = kiln()
            .arg("run")
            .args(["--snapshot-at", point, "--snapshot-to"])
            .arg(&snapshot)
            .arg(&image)
            .output()
            .expect("kiln runs");
        let out = ok(out, "kiln run --snapshot-at");
        assert!(
            stderr(&out).contains("snapshot saved to"),
            "{}",
            stderr(&out)
        );
        let _cleanup = StopWarm(snapshot.clone());
        for extra in [&["--no-warm"][..], &[]] {
            if extra.is_empty() {
                ok(warm(&[snapshot.to_str().unwrap()]), "kiln warm");
            }
            let json = dir.join(format!("{point}.timings.json"));
            let mut args = vec!["--stats", "--timings-json", json.to_str().unwrap()];
            args.extend_from_slice(extra);
            let out = ok(resume(&snapshot, &args), "kiln run --from-snapshot");
            assert_eq!(stdout(&out), stdout(&booted), "{point} {extra:?}");
            if extra.is_empty() {
                let doc = report(&json);
                assert!(phases(&json).contains_key("claimed"), "not served warm");
                exits.push(doc["kvm_stats"]["exits"].as_u64().unwrap_or(0));
                // The warm VM touched the program's pages (and at
                // after-loader its libraries') before the claim.
                let touched = doc["warm_pages_touched"].as_u64().unwrap_or(0);
                assert!(touched > 50, "{point}: {touched} pages touched");
            }
        }
    }
    assert!(
        exits[1] < exits[0],
        "a claimed run counted {} exits from after-loader, {} from program-entry",
        exits[1],
        exits[0]
    );
    // A static program has no loader: its after-loader snapshot is its
    // program-entry one, taken once the program is in place (the warm VM
    // finds its pages to touch).
    let (_, snapshot, _) = take(
        "snapshot-after-loader-static",
        "after-loader",
        "1",
        "echo static",
    );
    let _cleanup = StopWarm(snapshot.clone());
    ok(warm(&[snapshot.to_str().unwrap()]), "kiln warm");
    let json = dir.join("static.timings.json");
    let out = ok(
        resume(&snapshot, &["--timings-json", json.to_str().unwrap()]),
        "kiln run --from-snapshot",
    );
    assert_eq!(stdout(&out), "static\n");
    let touched = report(&json)["warm_pages_touched"].as_u64().unwrap_or(0);
    assert!(touched > 100, "busybox: {touched} pages touched");
}

/// The image snapshots `kiln warm IMAGE` has taken in the test store.
fn image_snapshots() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(kiln_home().join("image-snapshots"))
        .map(|entries| entries.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    found.sort();
    found
}

#[test]
fn warm_vms_of_an_image_serve_its_plain_runs_and_nothing_else() {
    if !kvm_or_skip("warm_vms_of_an_image_serve_its_plain_runs") {
        return;
    }
    let (dir, image) = common::built_image("warm-image", "busybox-sh");
    let plain = || kiln().arg("run").arg(&image).output().expect("kiln runs");
    // Not warmed yet: the image boots.
    let booted = ok(plain(), "kiln run IMAGE");
    assert!(stdout(&booted).contains("arguments: from the manifest"));

    // A file that is no image: a clear error, and no snapshot left behind.
    let bad = dir.join("broken.kiln");
    std::fs::write(&bad, b"not an image").unwrap();
    let before = image_snapshots();
    let out = warm(&[bad.to_str().unwrap()]);
    assert_ne!(status(&out), 0);
    assert!(
        stderr(&out).contains("its snapshot could not be taken"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        image_snapshots(),
        before,
        "a failed snapshot left something"
    );
    // Stopping the warm VMs of an image never warmed takes nothing.
    let out = ok(
        warm(&[image.to_str().unwrap(), "--stop"]),
        "kiln warm --stop",
    );
    assert!(stderr(&out).contains("0 warm VMs"), "{}", stderr(&out));
    assert_eq!(image_snapshots(), before, "--stop took a snapshot");

    let out = ok(
        warm(&[image.to_str().unwrap(), "-n", "2"]),
        "kiln warm IMAGE",
    );
    assert!(
        stderr(&out).contains("taking a snapshot") && stderr(&out).contains("2 warm VMs"),
        "{}",
        stderr(&out)
    );
    let added: Vec<PathBuf> = image_snapshots()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(added.len(), 1, "one image snapshot taken: {added:?}");
    let snapshot = added[0].clone();
    let _cleanup = StopWarm(snapshot.clone());
    assert_eq!(waiting(&snapshot).len(), 2);

    // The plain command is served by a warm VM, with the same output and
    // status as a boot.
    let served = plain();
    assert_eq!(status(&served), 0, "{}", stderr(&served));
    assert_eq!(stdout(&served), stdout(&booted));
    assert_eq!(waiting(&snapshot).len(), 1, "the plain run was not served");

    // --no-warm, or arguments of its own: the image boots, the warm VM
    // keeps waiting.
    let out = kiln()
        .args(["run", "--no-warm"])
        .arg(&image)
        .output()
        .expect("kiln runs");
    assert_eq!(
        stdout(&ok(out, "kiln run --no-warm IMAGE")),
        stdout(&booted)
    );
    assert_eq!(waiting(&snapshot).len(), 1, "--no-warm was served");
    let out = run(&image, &[], &["sh", "-c", "echo own arguments"]);
    assert_eq!(
        stdout(&ok(out, "kiln run IMAGE -- ARGS")),
        "own arguments\n"
    );
    assert_eq!(waiting(&snapshot).len(), 1);

    // Warming again reuses the snapshot.
    let out = ok(warm(&[image.to_str().unwrap()]), "kiln warm IMAGE again");
    assert!(
        !stderr(&out).contains("taking a snapshot"),
        "{}",
        stderr(&out)
    );
    assert_eq!(waiting(&snapshot).len(), 2);

    // A rebuilt image file is another image: its plain run boots.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&image)
        .unwrap()
        .set_modified(SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    let out = ok(plain(), "kiln run IMAGE after a rebuild");
    assert_eq!(stdout(&out), stdout(&booted));
    assert_eq!(
        waiting(&snapshot).len(),
        2,
        "a stale warm VM served a rebuilt image"
    );
}
