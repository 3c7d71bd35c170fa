//! High availability: `kiln run --standby` streams checkpoints to `kiln
//! standby`, which takes over when the primary dies — two real processes
//! on real KVM, the appliance reached through passt's published ports.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{kiln, kvm_or_skip, status, stderr};

/// An image of tests/programs/counter.c serving on guest port 8080.
fn counter_image(test: &str) -> PathBuf {
    let dir = common::scratch(test);
    let manifest = dir.join("counter.toml");
    std::fs::write(
        &manifest,
        format!(
            "name = \"counter\"\nversion = \"1\"\n[program]\npath = {:?}\nargs = [\"8080\"]\n",
            common::program("counter").display().to_string()
        ),
    )
    .unwrap();
    let image = dir.join("counter.kiln");
    common::build_ok(&manifest, &image);
    image
}

/// A standby listening on a port of its own choosing (`extra`: its other
/// flags): the child (its stdout, the resumed program's, piped), the
/// address it printed, and the file its stderr goes to.
fn standby(test: &str, extra: &[&str]) -> (Child, String, PathBuf) {
    let log = common::scratch(test).join("standby.err");
    let child = common::default_signals(&mut kiln())
        .args(["standby", "--listen", "127.0.0.1:0", "--timeout", "60"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("kiln runs");
    let address = || {
        std::fs::read_to_string(&log).ok().and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("kiln: standby listening on "))
                .map(str::to_owned)
        })
    };
    common::wait_for("the standby's address", || address().is_some());
    let address = address().unwrap();
    (child, address, log)
}

/// What the standby wrote on stderr.
fn rest(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// A connection to the counter on `port`, retried until `deadline`.
fn connect(port: u16, deadline: Instant) -> Option<(TcpStream, BufReader<TcpStream>)> {
    loop {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let reader = BufReader::new(s.try_clone().unwrap());
            return Some((s, reader));
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One request; `None` when the connection failed.
fn next(conn: &mut (TcpStream, BufReader<TcpStream>)) -> Option<u64> {
    conn.0.write_all(b"n\n").ok()?;
    let mut line = String::new();
    match conn.1.read_line(&mut line) {
        Ok(n) if n > 0 => Some(line.trim().parse().expect("a number")),
        other => {
            eprintln!("the counter did not answer: {other:?}");
            None
        }
    }
}

/// A process killed (and reaped) when the test ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A counter primary following the standby at `address`, publishing guest
/// port 8080 on `port` (`extra`: more flags; `args`: the program's, after
/// `--`; `stderr`: where its report goes), returned once the counter
/// listens — connections made earlier would be refused.
fn counter_primary(
    image: &Path,
    address: &str,
    port: u16,
    extra: &[&str],
    args: &[&str],
    stderr: Stdio,
) -> Reaped {
    let mut cmd = kiln();
    common::default_signals(&mut cmd)
        .args(["run", "--timeout", "60", "--standby", address])
        .args(["-p", &format!("{port}:8080")])
        .args(extra)
        .arg(image);
    if !args.is_empty() {
        cmd.arg("--").args(args);
    }
    let mut primary = Reaped(
        cmd.stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("kiln runs"),
    );
    let mut line = String::new();
    BufReader::new(primary.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "counter listening on 8080\n");
    primary
}

fn kill(child: &mut Child, signal: i32) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, signal) };
}

#[test]
fn a_counter_keeps_counting_when_the_primary_is_killed_mid_load() {
    if !kvm_or_skip("a_counter_keeps_counting_when_the_primary_is_killed") {
        return;
    }
    common::require_tool("passt", "passt");
    let image = counter_image("standby-failover");
    let (primary_port, standby_port) = (common::free_port(), common::free_port());
    let (mut standby, address, standby_log) = standby(
        "standby-failover-standby",
        &["-p", &format!("{standby_port}:8080")],
    );
    let mut primary = counter_primary(&image, &address, primary_port, &[], &[], Stdio::null());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = connect(primary_port, deadline).expect("the primary answers");
    // The standby's port, or the standby's log when it never answers.
    let to_standby = |standby: &mut Child| match connect(standby_port, deadline) {
        Some(conn) => conn,
        None => {
            let state = standby.try_wait();
            kill(standby, libc::SIGKILL);
            panic!(
                "the standby never answered ({state:?}): {}",
                rest(&standby_log)
            );
        }
    };
    let mut seen = Vec::new();
    let mut failed_over = None;
    while seen.len() < 60 {
        assert!(Instant::now() < deadline, "stuck after {seen:?}");
        if seen.len() == 25 && failed_over.is_none() {
            // Mid-load: the next request is on its way as the primary dies.
            conn.0.write_all(b"n\n").unwrap();
            kill(&mut primary.0, libc::SIGKILL);
            primary.0.wait().unwrap();
            failed_over = Some(Instant::now());
            let _ = next(&mut conn);
            conn = to_standby(&mut standby);
            continue;
        }
        match next(&mut conn) {
            Some(n) => seen.push(n),
            None => {
                eprintln!(
                    "connection lost after {seen:?} (killed: {})",
                    failed_over.is_some()
                );
                conn = to_standby(&mut standby);
            }
        }
    }
    // The client never saw a number the standby had not got: after the
    // failover the count goes on from at least the last one seen, never
    // repeating one (an answer the dead primary had not released yet may
    // be lost, never given twice).
    assert!(
        seen.windows(2).all(|w| w[1] > w[0]),
        "the answers went back: {seen:?}"
    );
    assert_eq!(seen[..25], (1..=25).collect::<Vec<u64>>()[..]);
    kill(&mut standby, libc::SIGTERM);
    standby.wait().unwrap();
    let log = rest(&standby_log);
    assert!(
        log.contains("the primary is gone") && log.contains("resuming from checkpoint"),
        "{log}"
    );
}

#[test]
fn the_standby_stands_down_when_the_primarys_program_ends() {
    if !kvm_or_skip("the_standby_stands_down_when_the_primarys_program_ends") {
        return;
    }
    let (_, image) = common::built_image("standby-done", "busybox-sh");
    let (mut standby, address, standby_log) = standby("standby-done-standby", &[]);
    let primary = kiln()
        .args(["run", "--timeout", "60", "--standby", &address])
        .args(["--checkpoint-interval", "10"])
        .arg(&image)
        .args(["--", "sh", "-c", "echo working; sleep 0.5; exit 3"])
        .output()
        .unwrap();
    assert_eq!(status(&primary), 3, "{}", stderr(&primary));
    assert_eq!(String::from_utf8_lossy(&primary.stdout), "working\n");
    let report = stderr(&primary);
    assert!(report.contains("kiln: standby: "), "{report}");
    assert!(!report.contains("lost"), "{report}");
    let code = standby.wait().unwrap().code();
    let log = rest(&standby_log);
    assert_eq!(code, Some(3), "{log}");
    assert!(log.contains("stands down"), "{log}");
}

#[test]
fn what_cannot_be_replicated_is_refused_before_anything_runs() {
    if !kvm_or_skip("what_cannot_be_replicated_is_refused") {
        return;
    }
    let (dir, image) = common::built_image("standby-refusals", "busybox-sh");
    let refused = |args: &[&str], why: &str| {
        let out = kiln()
            .arg("run")
            .args(args)
            .arg(&image)
            .args(["--", "true"])
            .output()
            .unwrap();
        assert_ne!(status(&out), 0, "{args:?} ran");
        assert!(stderr(&out).contains(why), "{args:?}: {}", stderr(&out));
    };
    // Nobody listens on a port just freed.
    let port = common::free_port();
    refused(
        &["--standby", &format!("127.0.0.1:{port}")],
        "connecting to the standby",
    );
    // A volume's host side (virtiofsd) is not replicated (yet).
    let volume = dir.join("volume");
    std::fs::create_dir_all(&volume).unwrap();
    refused(
        &[
            "--standby",
            "127.0.0.1:1",
            "-v",
            &format!("{}:/data", volume.display()),
        ],
        "a volume",
    );
    // A standby that is not a standby.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let fake = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let _ = s.write_all(b"\x01\x05\0\0\0nope!");
    });
    refused(&["--standby", &address], "the standby refused: nope!");
    fake.join().unwrap();
}

#[test]
fn a_standby_refuses_a_peer_that_is_not_a_primary_and_resumes_nothing() {
    let (mut standby, address, standby_log) = standby("standby-peer", &[]);
    let mut s = TcpStream::connect(&address).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut answer);
    assert_eq!(answer.first(), Some(&1), "no refusal: {answer:?}");
    let code = standby.wait().unwrap().code();
    let log = rest(&standby_log);
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains("not a kiln primary"), "{log}");
    assert!(!log.contains("resuming"), "{log}");
    let _ = Path::new(&address);
}

#[test]
fn the_primary_runs_on_when_its_standby_dies() {
    if !kvm_or_skip("the_primary_runs_on_when_its_standby_dies") {
        return;
    }
    common::require_tool("passt", "passt");
    let image = counter_image("standby-lost");
    let port = common::free_port();
    let (mut standby, address, _) = standby("standby-lost-standby", &[]);
    let log = common::scratch("standby-lost-primary").join("primary.err");
    let mut primary = counter_primary(
        &image,
        &address,
        port,
        &["--checkpoint-interval", "10"],
        &[],
        std::fs::File::create(&log).unwrap().into(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = connect(port, deadline).expect("the primary answers");
    let before: Vec<u64> = (0..5)
        .map(|_| next(&mut conn).expect("an answer"))
        .collect();
    kill(&mut standby, libc::SIGKILL);
    standby.wait().unwrap();
    // The held answers go out once the primary notices, and the next ones
    // at once.
    let after: Vec<u64> = (0..5)
        .map(|_| next(&mut conn).expect("an answer"))
        .collect();
    assert_eq!([before, after].concat(), (1..=10).collect::<Vec<u64>>());
    kill(&mut primary.0, libc::SIGTERM);
    primary.0.wait().unwrap();
    let report = std::fs::read_to_string(&log).unwrap();
    assert!(report.contains("the standby is gone"), "{report}");
    assert!(report.contains("the VM ran on unprotected"), "{report}");
}

/// Runs busybox `sh -c script` as a primary (`primary_flags` besides
/// `--standby`) following a fresh standby (`standby_flags`), kills the
/// primary with SIGKILL as soon as it printed its first line, and returns
/// once the standby ran the program to its end: what the primary's console
/// showed, what the standby's did.
fn kill_after_first_line(
    test: &str,
    image: &Path,
    primary_flags: &[&str],
    standby_flags: &[&str],
    script: &str,
) -> (String, String) {
    let (mut standby, address, standby_log) = standby(&format!("{test}-standby"), standby_flags);
    let mut standby_out = BufReader::new(standby.stdout.take().unwrap());
    let mut primary = Reaped(
        kiln()
            .args(["run", "--timeout", "60", "--standby", &address])
            .args(["--checkpoint-interval", "10"])
            .args(primary_flags)
            .arg(image)
            .args(["--", "sh", "-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kiln runs"),
    );
    let mut primary_out = BufReader::new(primary.0.stdout.take().unwrap());
    let mut shown = String::new();
    primary_out.read_line(&mut shown).unwrap();
    kill(&mut primary.0, libc::SIGKILL);
    primary.0.wait().unwrap();
    // What the primary had released before it died.
    std::io::Read::read_to_string(&mut primary_out, &mut shown).unwrap();
    let status = standby.wait().unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut standby_out, &mut out).unwrap();
    let log = rest(&standby_log);
    assert!(status.success(), "{log}");
    assert!(log.contains("resuming from checkpoint"), "{log}");
    (shown, out)
}

#[test]
fn a_busy_two_cpu_guest_killed_mid_computation_finishes_it_on_the_standby() {
    if !kvm_or_skip("a_busy_two_cpu_guest_killed_mid_computation") {
        return;
    }
    // Processes started and ended, files rewritten in the guest's tmpfs:
    // memory the guest and kiln's devices write all over. The sum comes
    // out right only if every page written before the last checkpoint
    // reached the standby.
    let (_, image) = common::built_image("standby-busy", "busybox-sh");
    let script = "i=0; s=0; while [ $i -lt 600 ]; do i=$((i+1)); \
                  echo $i > /tmp/f$((i%7)); s=$((s+$(cat /tmp/f$((i%7))))); \
                  [ $((i%100)) = 0 ] && echo at $i; done; echo sum $s; cat /tmp/f* | wc -l";
    let (shown, out) = kill_after_first_line("standby-busy", &image, &["--cpus", "2"], &[], script);
    // Console output is held like network output: the standby goes on
    // from the last line the primary showed, repeating none.
    assert_eq!(
        format!("{shown}{out}"),
        "at 100\nat 200\nat 300\nat 400\nat 500\nat 600\nsum 180300\n7\n",
        "primary: {shown:?}, standby: {out:?}"
    );
}

#[test]
fn a_disk_written_across_the_failover_holds_every_block_on_the_standbys_copy() {
    if !kvm_or_skip("a_disk_written_across_the_failover") {
        return;
    }
    let (dir, image) = common::built_image("standby-disk", "busybox-sh");
    let (primary_disk, copy) = (dir.join("primary.img"), dir.join("copy.img"));
    std::fs::write(&primary_disk, vec![0u8; 4 << 20]).unwrap();
    // An old copy with other bytes: the standby makes it a replica.
    std::fs::write(&copy, vec![0xeeu8; 1 << 20]).unwrap();
    // Block i of the disk holds the number i.
    let script = "i=0; while [ $i -lt 600 ]; do i=$((i+1)); \
                  echo $i | dd of=/dev/vda bs=512 seek=$i conv=sync 2>/dev/null; \
                  [ $((i%100)) = 0 ] && echo at $i; done; sync; echo done";
    let (shown, out) = kill_after_first_line(
        "standby-disk",
        &image,
        &["--disk", primary_disk.to_str().unwrap()],
        &["--disk", copy.to_str().unwrap()],
        script,
    );
    assert_eq!(
        format!("{shown}{out}"),
        "at 100\nat 200\nat 300\nat 400\nat 500\nat 600\ndone\n"
    );
    // Blocks the primary wrote before the kill came with the checkpoints;
    // the standby wrote the rest on its copy.
    let disk = std::fs::read(&copy).unwrap();
    assert_eq!(disk.len(), 4 << 20);
    for i in 1..=600usize {
        let block = &disk[i * 512..(i + 1) * 512];
        let text = format!("{i}\n");
        assert_eq!(&block[..text.len()], text.as_bytes(), "block {i}");
        assert!(block[text.len()..].iter().all(|&b| b == 0), "block {i}");
    }
    assert!(disk[601 * 512..].iter().all(|&b| b == 0));
}

#[test]
fn the_answer_held_when_the_program_ends_still_goes_out() {
    if !kvm_or_skip("the_answer_held_when_the_program_ends_still_goes_out") {
        return;
    }
    common::require_tool("passt", "passt");
    let image = counter_image("standby-last-answer");
    let port = common::free_port();
    let (mut standby, address, standby_log) = standby("standby-last-answer-standby", &[]);
    // The program ends right after its third answer.
    let mut primary = counter_primary(
        &image,
        &address,
        port,
        &["--checkpoint-interval", "100"],
        &["8080", "3"],
        Stdio::null(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = connect(port, deadline).expect("the primary answers");
    // The third answer waits for a checkpoint the program's end overtakes:
    // it goes out when the run ends, not never.
    let answers: Vec<Option<u64>> = (0..3).map(|_| next(&mut conn)).collect();
    assert_eq!(answers, [Some(1), Some(2), Some(3)]);
    assert!(primary.0.wait().unwrap().success());
    assert_eq!(
        standby.wait().unwrap().code(),
        Some(0),
        "{}",
        rest(&standby_log)
    );
}
