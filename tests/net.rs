//! End-to-end tests of kiln's networking on this host's KVM: the static
//! Rust echo appliance (tests/programs/echo.rs) behind `--net user`
//! (passt) and `--net tap` (in a network namespace, as root), driven from
//! here with real sockets; and that nothing is left behind however the VM
//! ends.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{kvm_or_skip, pattern, stderr};

fn vmm() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln-vmm"));
    cmd.arg("--kernel").arg(xtask::paths::kernel());
    common::default_signals(&mut cmd);
    cmd
}

fn require_passt() {
    common::require_tool("passt", "passt");
}

/// kiln-vmm running the echo appliance in `mode` (tcp or udp) on guest
/// port 7, with `flags`; returns once it says it listens.
struct Appliance {
    child: Child,
}

impl Appliance {
    fn start(flags: &[&str], mode: &str) -> Appliance {
        let mut child = vmm()
            .args(["--memory", "128", "--timeout", "120"])
            .args(flags)
            .arg("--app")
            .arg(common::program("echo"))
            .args(["--", mode, "7"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kiln-vmm starts");
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
        if !line.starts_with("listening") {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("the appliance did not start: {line}{}", stderr(&out));
        }
        Appliance { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deterministic bytes of block `i`.
fn block(i: usize) -> Vec<u8> {
    (0..1 << 20)
        .map(|j: usize| (j.wrapping_mul(131) ^ i.wrapping_mul(7)) as u8)
        .collect()
}

/// Sends `mib` MiB through an echo connection and checks every byte comes
/// back in order.
fn echo_through(mut conn: TcpStream, mib: usize) {
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut writer = conn.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        for i in 0..mib {
            writer.write_all(&block(i)).unwrap();
        }
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut got = vec![0u8; 1 << 20];
    for i in 0..mib {
        conn.read_exact(&mut got)
            .unwrap_or_else(|e| panic!("echo stopped in MiB {i}: {e}"));
        assert!(got == block(i), "MiB {i} came back different");
    }
    assert_eq!(conn.read(&mut got).unwrap(), 0, "more bytes than were sent");
    sender.join().unwrap();
}

/// A connection to `port` on this host (retried while passt or the proxy
/// comes up).
fn connect(port: u16) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("cannot connect to port {port}: {e}"),
        }
    }
}

/// Whether a process whose command line contains `text` runs.
fn process_running(text: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // A zombie is gone in all but name.
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'));
        !zombie
            && String::from_utf8_lossy(&cmdline)
                .replace('\0', " ")
                .contains(text)
    })
}

/// Waits (up to 10 s) for no process with `text` in its command line.
fn assert_gone(text: &str, after: &str) {
    common::wait_for(&format!("`{text}` still runs {after}"), || {
        !process_running(text)
    });
}

#[test]
fn tcp_moves_64_mib_each_way_through_user_networking_checksummed() {
    if !kvm_or_skip("tcp_moves_64_mib_each_way_through_user_networking_checksummed") {
        return;
    }
    require_passt();
    const TOTAL: u64 = 64 << 20;
    // Host to guest: the sink answers with the count and the checksum.
    let port = common::free_port();
    let sink = Appliance::start(&["--net", "user", "-p", &format!("{port}:7")], "sink");
    let mut conn = connect(port);
    conn.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let hash = common::send_pattern(&mut conn, TOTAL);
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = [0u8; 16];
    conn.read_exact(&mut answer).unwrap();
    assert_eq!(u64::from_le_bytes(answer[..8].try_into().unwrap()), TOTAL);
    assert_eq!(
        u64::from_le_bytes(answer[8..].try_into().unwrap()),
        hash,
        "the guest received other bytes than were sent"
    );
    drop(sink);
    // Guest to host: the source sends the pattern.
    let port = common::free_port();
    let _source = Appliance::start(&["--net", "user", "-p", &format!("{port}:7")], "source");
    let mut conn = connect(port);
    conn.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    conn.write_all(&TOTAL.to_le_bytes()).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < TOTAL {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "the source stopped after {at} bytes");
        for (i, &b) in buf[..n].iter().enumerate() {
            assert_eq!(b, pattern(at + i as u64), "byte {} differs", at + i as u64);
        }
        at += n as u64;
    }
}

#[test]
fn tcp_echo_answers_both_ways_at_once_through_user_networking() {
    if !kvm_or_skip("tcp_echo_answers_both_ways_at_once_through_user_networking") {
        return;
    }
    require_passt();
    let port = common::free_port();
    let p = format!("{port}:7");
    let app = Appliance::start(&["--net", "user", "-p", &p], "tcp");
    echo_through(connect(port), 1);
    // A second connection while the first is gone: the listener lives on.
    echo_through(connect(port), 1);
    drop(app);
    assert_gone(&format!("-t {port}:7"), "after kiln-vmm ended");
}

#[test]
fn udp_echo_answers_through_user_networking() {
    if !kvm_or_skip("udp_echo_answers_through_user_networking") {
        return;
    }
    require_passt();
    let port = common::free_port();
    let p = format!("127.0.0.1:{port}:7/udp");
    let _app = Appliance::start(&["-p", &p], "udp");
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 2048];
    for i in 0..20u32 {
        let msg = format!("datagram {i}: {}", "x".repeat(i as usize * 50));
        // UDP may lose the first datagrams while the path comes up: retry.
        let mut answered = false;
        for _ in 0..50 {
            socket.send_to(msg.as_bytes(), ("127.0.0.1", port)).unwrap();
            if let Ok(n) = socket.recv(&mut buf) {
                assert_eq!(&buf[..n], msg.as_bytes());
                answered = true;
                break;
            }
        }
        assert!(answered, "no answer to datagram {i}");
    }
}

/// The program's first accepted connection is a boot-timing phase
/// (`first_accept`), after program entry; SIGTERM then ends the run with
/// the timings written.
#[test]
fn the_first_accepted_connection_is_timed() {
    if !kvm_or_skip("the_first_accepted_connection_is_timed") {
        return;
    }
    require_passt();
    let json = common::scratch("first_accept").join("timings.json");
    let port = common::free_port();
    let app = Appliance::start(
        &[
            "-p",
            &format!("{port}:7"),
            "--timings-json",
            json.to_str().unwrap(),
        ],
        "tcp",
    );
    echo_through(connect(port), 1);
    // SAFETY: signals the child this test started.
    unsafe { libc::kill(app.pid() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !json.exists() {
        assert!(Instant::now() < deadline, "no timings after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(app);
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let phases = &doc["phases_ms"];
    let entry = phases["program_entry"].as_f64().expect("program entry");
    let accept = phases["first_accept"].as_f64().expect("first accept");
    assert!(accept > entry, "{phases}");
}

#[test]
fn a_taken_host_port_is_a_clear_error() {
    if !kvm_or_skip("a_taken_host_port_is_a_clear_error") {
        return;
    }
    require_passt();
    let holder = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let out = vmm()
        .args(["-p", &format!("{port}:80"), "--app"])
        .arg(common::program("hello-musl"))
        .output()
        .unwrap();
    assert_eq!(common::status(&out), 125, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("host port {port} is already in use")),
        "{}",
        stderr(&out)
    );
    assert!(common::stdout(&out).is_empty(), "the program ran");
    assert_gone(&format!("-t {port}:80"), "after the error");
}

#[test]
fn a_missing_passt_is_a_clear_error() {
    if !kvm_or_skip("a_missing_passt_is_a_clear_error") {
        return;
    }
    let out = vmm()
        .env("PATH", "/nonexistent")
        .args(["--net", "user", "--app"])
        .arg(common::program("hello-musl"))
        .output()
        .unwrap();
    assert_eq!(common::status(&out), 125, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--net user needs passt"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn publishing_without_a_network_is_refused() {
    if !kvm_or_skip("publishing_without_a_network_is_refused") {
        return;
    }
    let out = vmm()
        .args(["--net", "none", "-p", "8080:80", "--app"])
        .arg(common::program("hello-musl"))
        .output()
        .unwrap();
    assert_eq!(common::status(&out), 125, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("-p needs a network"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn passt_ends_with_kiln_however_it_ends() {
    if !kvm_or_skip("passt_ends_with_kiln_however_it_ends") {
        return;
    }
    require_passt();
    // A normal end.
    let port = common::free_port();
    let out = vmm()
        .args(["-p", &format!("{port}:7"), "--app"])
        .arg(common::program("hello-musl"))
        .output()
        .unwrap();
    assert_eq!(common::status(&out), 0, "{}", stderr(&out));
    assert_gone(&format!("-t {port}:7"), "after a normal exit");
    // A guest crash (SIGSEGV in the program).
    let port = common::free_port();
    let out = vmm()
        .args(["-p", &format!("{port}:7"), "--app"])
        .arg(common::program("probe"))
        .args(["--", "segv"])
        .output()
        .unwrap();
    assert_eq!(common::status(&out), 139, "{}", stderr(&out));
    assert_gone(&format!("-t {port}:7"), "after a guest crash");
    // Ctrl-C and kill -9 of kiln-vmm.
    for signal in [libc::SIGINT, libc::SIGKILL] {
        let port = common::free_port();
        let app = Appliance::start(&["-p", &format!("{port}:7")], "tcp");
        assert!(process_running(&format!("-t {port}:7")));
        // SAFETY: signals the child this test started.
        unsafe { libc::kill(app.pid() as i32, signal) };
        assert_gone(&format!("-t {port}:7"), &format!("after signal {signal}"));
        drop(app);
    }
}

/// A network namespace for the tap tests (root only), removed on drop.
struct Netns(String);

impl Netns {
    fn new(test: &str) -> Option<Netns> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                !xtask::host::in_ci(),
                "{test}: the tap tests need root (CI runs as root)"
            );
            eprintln!("\n!!!!!!!! TAP TEST NOT RUN: {test}: not root !!!!!!!!\n");
            return None;
        }
        let name = format!("kiln-{}-{}", &test[..test.len().min(8)], std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip runs (Debian package iproute2)")
            .success();
        assert!(ok, "cannot create network namespace {name}");
        let ns = Netns(name);
        assert!(ns.exec(&["ip", "link", "set", "lo", "up"]).status.success());
        Some(ns)
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, program]);
        c
    }

    fn exec(&self, argv: &[&str]) -> std::process::Output {
        self.command(argv[0]).args(&argv[1..]).output().unwrap()
    }

    /// The tap devices in the namespace.
    fn taps(&self) -> String {
        let out = self.exec(&["ip", "-o", "link", "show"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("kiln"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// kiln-vmm with the echo appliance inside `ns`.
fn appliance_in(ns: &Netns, flags: &[&str]) -> Child {
    let mut child = ns
        .command(env!("CARGO_BIN_EXE_kiln-vmm"))
        .arg("--kernel")
        .arg(xtask::paths::kernel())
        .args(["--memory", "128", "--timeout", "120"])
        .args(flags)
        .arg("--app")
        .arg(common::program("echo"))
        .args(["--", "tcp", "7"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening"), "did not start: {line}");
    child
}

/// An echo exchange run inside `ns` (python3's sockets there).
fn echo_in(ns: &Netns, host: &str, port: u16, text: &str) -> String {
    let script = format!(
        "import socket,time\n\
         for i in range(100):\n\
         \x20   try:\n\
         \x20       s=socket.create_connection(('{host}',{port}),timeout=10); break\n\
         \x20   except OSError: time.sleep(0.05)\n\
         s.sendall(b'{text}'); s.shutdown(socket.SHUT_WR)\n\
         d=b''\n\
         while True:\n\
         \x20   b=s.recv(65536)\n\
         \x20   if not b: break\n\
         \x20   d+=b\n\
         print(d.decode())\n"
    );
    let out = ns.exec(&["python3", "-c", &script]);
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn tap_networking_reaches_the_guest_and_publishes_ports() {
    if !kvm_or_skip("tap_networking_reaches_the_guest_and_publishes_ports") {
        return;
    }
    let Some(ns) = Netns::new("tap_networking") else {
        return;
    };
    let mut child = appliance_in(
        &ns,
        &["--net", "tap", "--ip", "10.77.0.2/24", "-p", "8080:7"],
    );
    // The guest's own address, over the tap, and the published port,
    // through kiln's proxy.
    assert_eq!(echo_in(&ns, "10.77.0.2", 7, "direct"), "direct");
    assert_eq!(echo_in(&ns, "127.0.0.1", 8080, "proxied"), "proxied");
    assert!(ns.taps().contains("kiln"), "no tap while running");
    // kill -9: the tap goes with kiln-vmm's descriptor.
    // SAFETY: signals the child this test started (`ip netns exec` execs
    // kiln-vmm in place).
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ns.taps().is_empty() {
        assert!(Instant::now() < deadline, "left behind: {}", ns.taps());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn tap_is_gone_after_a_normal_exit_and_errors_are_clear() {
    if !kvm_or_skip("tap_is_gone_after_a_normal_exit_and_errors_are_clear") {
        return;
    }
    let Some(ns) = Netns::new("tap_exit") else {
        return;
    };
    let out = ns
        .command(env!("CARGO_BIN_EXE_kiln-vmm"))
        .arg("--kernel")
        .arg(xtask::paths::kernel())
        .args(["--net", "tap", "--app"])
        .arg(common::program("hello-musl"))
        .output()
        .unwrap();
    assert_eq!(common::status(&out), 0, "{}", stderr(&out));
    assert!(ns.taps().is_empty(), "left behind: {}", ns.taps());
    // A name that cannot be a tap: the loopback device.
    let out = ns
        .command(env!("CARGO_BIN_EXE_kiln-vmm"))
        .arg("--kernel")
        .arg(xtask::paths::kernel())
        .args(["--net", "tap=lo", "--app"])
        .arg(common::program("hello-musl"))
        .output()
        .unwrap();
    assert_eq!(common::status(&out), 125, "{}", stderr(&out));
    assert!(stderr(&out).contains("tap device lo"), "{}", stderr(&out));
}
