//! End-to-end tests of kiln-vmm's virtio devices on this host's KVM: the
//! console (standard input, output and error) and the entropy source,
//! driven by real programs (the host's static busybox).

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::{kvm_or_skip, status, stderr, stdout};

/// The host's static busybox (Debian package busybox-static).
fn busybox() -> PathBuf {
    xtask::host::which("busybox")
        .expect("busybox is missing (Debian package busybox-static): run `cargo xtask deps`")
}

/// kiln-vmm running busybox `applet` with `args`, after the `flags`.
fn busybox_vm(flags: &[&str], applet: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln-vmm"));
    cmd.arg("--kernel")
        .arg(xtask::paths::kernel())
        .arg("--app")
        .arg(busybox())
        .args(flags)
        .arg("--")
        .arg(applet)
        .args(args);
    cmd
}

/// Runs `cmd` with `input` on its standard input.
fn run_with_input(mut cmd: Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kiln-vmm starts");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // A writer thread: the guest may produce output before it has read all
    // of its input, and a full pipe must not deadlock the test.
    let writer = std::thread::spawn(move || {
        // The guest may exit before reading everything (EPIPE is fine).
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("kiln-vmm ends");
    writer.join().unwrap();
    out
}

/// Deterministic bytes that are not all alike (so a dropped or repeated
/// chunk changes the digest).
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[test]
fn interactive_forwards_stdin_and_closes_it_at_eof() {
    if !kvm_or_skip("interactive_forwards_stdin_and_closes_it_at_eof") {
        return;
    }
    let out = run_with_input(busybox_vm(&["-i"], "cat", &[]), b"hi from the host\n");
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "hi from the host\n");
}

#[test]
fn large_stdin_arrives_whole() {
    if !kvm_or_skip("large_stdin_arrives_whole") {
        return;
    }
    let data = pattern(3 << 20);
    let native = run_with_input(
        {
            let mut c = Command::new(busybox());
            c.arg("sha256sum");
            c
        },
        &data,
    );
    let guest = run_with_input(busybox_vm(&["-i"], "sha256sum", &[]), &data);
    assert_eq!(status(&guest), 0, "{}", stderr(&guest));
    assert_eq!(stdout(&guest), stdout(&native));
}

#[test]
fn large_output_leaves_whole() {
    if !kvm_or_skip("large_output_leaves_whole") {
        return;
    }
    // 4 MiB of the guest's own making, counted on the host.
    let out = busybox_vm(&[], "head", &["-c", "4194304", "/dev/zero"])
        .output()
        .unwrap();
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    assert_eq!(out.stdout.len(), 4 << 20);
    assert!(out.stdout.iter().all(|&b| b == 0));
}

#[test]
fn without_interactive_stdin_is_empty() {
    if !kvm_or_skip("without_interactive_stdin_is_empty") {
        return;
    }
    // Like `docker run` without -i: the program sees end of file at once,
    // even when kiln-vmm's own standard input has data.
    let out = run_with_input(busybox_vm(&[], "wc", &["-c"]), b"not forwarded\n");
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "0");
}

#[test]
fn stdout_and_stderr_keep_their_order_on_one_pipe() {
    if !kvm_or_skip("stdout_and_stderr_keep_their_order_on_one_pipe") {
        return;
    }
    // Both streams on one pipe (2>&1): the lines must come out in the order
    // the program wrote them although they travel on two devices.
    let script = "for i in 1 2 3 4 5 6 7 8; do echo out$i; echo err$i >&2; done";
    let (reader, writer) = std::io::pipe().unwrap();
    let mut child = busybox_vm(&[], "sh", &["-c", script])
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .spawn()
        .unwrap();
    let mut merged = String::new();
    std::io::Read::read_to_string(&mut { reader }, &mut merged).unwrap();
    assert!(child.wait().unwrap().success());
    let expected: String = (1..=8).map(|i| format!("out{i}\nerr{i}\n")).collect();
    assert_eq!(merged, expected);
}

#[test]
fn hwrng_bytes_differ_between_boots() {
    if !kvm_or_skip("hwrng_bytes_differ_between_boots") {
        return;
    }
    let read = || {
        let out = busybox_vm(&[], "od", &["-An", "-tx1", "-N32", "/dev/hwrng"])
            .output()
            .unwrap();
        assert_eq!(status(&out), 0, "{}", stderr(&out));
        let hex: String = stdout(&out).split_whitespace().collect();
        assert_eq!(hex.len(), 64, "32 bytes expected: {}", stdout(&out));
        hex
    };
    let (first, second) = (read(), read());
    assert_ne!(first, second, "two boots read the same entropy");
    assert_ne!(first, "0".repeat(64));
}

#[test]
fn stats_count_virtio_traffic() {
    if !kvm_or_skip("stats_count_virtio_traffic") {
        return;
    }
    let file = std::env::temp_dir().join(format!("kiln-devices-stats-{}.json", std::process::id()));
    let flags = ["-i", "--stats", "--timings-json", file.to_str().unwrap()];
    let out = run_with_input(busybox_vm(&flags, "cat", &[]), b"twelve bytes");
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("virtio console"), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    std::fs::remove_file(&file).unwrap();
    let devices = doc["devices"].as_array().expect("devices in the JSON");
    let console = devices
        .iter()
        .find(|d| d["name"] == "console")
        .unwrap_or_else(|| panic!("no console device: {doc}"));
    assert_eq!(console["bytes_to_guest"], 12, "{doc}");
    assert_eq!(console["bytes_from_guest"], 12, "{doc}");
    assert!(console["kicks"].as_u64().unwrap() >= 1, "{doc}");
    assert!(console["interrupts"].as_u64().unwrap() >= 1, "{doc}");
}

/// A tmux server of its own (a real terminal for `-t`), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `command` (a shell command line) in a detached 100x30 window.
    fn start(test: &str, command: &str) -> Self {
        let tmux = Tmux {
            socket: format!("kiln-{test}-{}", std::process::id()),
        };
        let out = tmux.run(&["new-session", "-d", "-x", "100", "-y", "30", command]);
        assert!(out.status.success(), "tmux: {}", stderr(&out));
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux runs (Debian package tmux: run `cargo xtask deps`)")
    }

    /// Types `keys` (tmux key names: "Enter", "C-c", "BSpace", or text).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "0"];
        args.extend_from_slice(keys);
        assert!(self.run(&args).status.success());
    }

    /// What the window shows.
    fn screen(&self) -> String {
        stdout(&self.run(&["capture-pane", "-p", "-t", "0"]))
    }

    /// Waits until the window shows `text` (an event, not a timing: the
    /// deadline only keeps a broken run from hanging).
    fn wait_for(&self, text: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the terminal never showed {text:?}; it shows:\n{screen}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

#[test]
fn tty_gives_an_interactive_program_a_terminal() {
    if !kvm_or_skip("tty_gives_an_interactive_program_a_terminal") {
        return;
    }
    let dir = common::scratch("tty_gives_an_interactive_program_a_terminal");
    let before = dir.join("before");
    let after = dir.join("after");
    let command = format!(
        "stty -g > {before}; {vmm} --kernel {kernel} -i -t --app {app}; \
         echo EXIT=$?; stty -g > {after}; sleep 60",
        before = before.display(),
        after = after.display(),
        vmm = env!("CARGO_BIN_EXE_kiln-vmm"),
        kernel = xtask::paths::kernel().display(),
        app = common::program("tty").display(),
    );
    let tmux = Tmux::start("tty", &command);
    let screen = tmux.wait_for("ready");
    assert!(screen.contains("isatty 1 1 1"), "{screen}");
    assert!(screen.contains("size 100x30"), "{screen}");

    // A resize reaches the program as SIGWINCH and a new TIOCGWINSZ.
    tmux.keys(&["winch", "Enter"]);
    tmux.wait_for("waiting for a resize");
    assert!(tmux
        .run(&["resize-window", "-t", "0", "-x", "120", "-y", "40"])
        .status
        .success());
    tmux.wait_for("resized 120x40");

    // Ctrl-C is SIGINT (echoed as ^C), not a byte of input.
    tmux.keys(&["C-c"]);
    tmux.wait_for("^Csigint");

    // Raw mode: keys arrive one by one, unprocessed.
    tmux.keys(&["raw", "Enter"]);
    tmux.wait_for("raw mode");
    tmux.keys(&["a", "C-c", "z"]);
    tmux.wait_for("keys 61 03 7a");

    // Line editing: the erased character never reaches the program.
    tmux.keys(&["abc", "BSpace", "d", "Enter"]);
    tmux.wait_for("unknown: abd");

    // Ctrl-D on an empty line is end of file; the host terminal's
    // settings are back when kiln-vmm ends.
    tmux.keys(&["C-d"]);
    let screen = tmux.wait_for("EXIT=");
    assert!(screen.contains("eof\nEXIT=0"), "{screen}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // The shell creates the file before stty writes it: wait for a line.
    let written = |p: &std::path::Path| std::fs::read_to_string(p).is_ok_and(|t| t.ends_with('\n'));
    while !written(&after) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let settings = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
    assert_eq!(settings(&before), settings(&after), "terminal not restored");
}

#[test]
fn tty_needs_a_terminal() {
    if !kvm_or_skip("tty_needs_a_terminal") {
        return;
    }
    // Standard input is a pipe here: -t says why it cannot work.
    let out = run_with_input(busybox_vm(&["-t"], "true", &[]), b"");
    assert_eq!(status(&out), 125, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("-t needs a terminal"),
        "{}",
        stderr(&out)
    );
}

/// A program that drives the entropy device's registers itself, with
/// queues a broken or malicious driver would hand over: each breaks the
/// device (DEVICE_NEEDS_RESET, said on stderr and counted by --stats),
/// and kiln-vmm goes on to the program's normal end.
#[test]
fn a_guest_that_corrupts_its_queues_breaks_the_device_not_the_vmm() {
    if !kvm_or_skip("a_guest_that_corrupts_its_queues_breaks_the_device_not_the_vmm") {
        return;
    }
    for (mode, why) in [
        ("outside", "a descriptor names memory outside the guest"),
        ("index", "starts outside the descriptor table"),
        ("loop", "a descriptor chain loops"),
        ("length", "a descriptor is longer than guest memory allows"),
        (
            "rings",
            "activated with a queue that is not ready or not valid",
        ),
        ("setup", "the setup block lies outside guest memory"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_kiln-vmm"))
            .arg("--kernel")
            .arg(xtask::paths::kernel())
            .args(["--stats", "--timeout", "30", "--app"])
            .arg(common::program("hostile"))
            .args(["--", mode])
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(status(&out), 0, "{mode}: {err}");
        assert!(
            stdout(&out).contains(&format!("{mode}: device status"))
                && stdout(&out).contains("needs reset"),
            "{mode}: {}",
            stdout(&out)
        );
        assert!(
            err.contains("virtio rng: ") && err.contains(why),
            "{mode}: {err}"
        );
        assert!(err.contains("broken by the guest 1 times"), "{mode}: {err}");
    }
}
