//! End-to-end tests of the vsock device on this host's KVM: host programs
//! reach a guest's port through the Unix socket of `--vsock PATH`
//! (`CONNECT <port>`), and the guest reaches host ports through `PATH_<port>`
//! sockets — Firecracker's protocol — with data checked byte for byte, and
//! nothing left behind however kiln-vmm ends.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{kvm_or_skip, status, stderr, stdout};

/// Bytes each way in the bulk tests.
const BULK: u64 = 32 << 20;

fn vmm(socket: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln-vmm"));
    cmd.arg("--kernel")
        .arg(xtask::paths::kernel())
        .arg("--vsock")
        .arg(socket)
        .args(["--memory", "128", "--timeout", "120", "--app"])
        .arg(common::program("vsock"))
        .arg("--")
        .args(args);
    common::default_signals(&mut cmd);
    cmd
}

/// A scratch directory with a short path (Unix socket paths are limited
/// to 107 bytes).
fn socket_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kv-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The appliance serving `count` connections on guest port `port`;
/// returns once it listens.
fn serving(socket: &Path, port: u32, count: u32) -> Child {
    let mut child = vmm(socket, &["serve", &port.to_string(), &count.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kiln-vmm starts");
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("listening on vsock port"),
        "the appliance did not start: {line}"
    );
    // Keep reading its output so it never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    child
}

/// Connects to guest port `port` through `socket`; returns the stream
/// after the `OK` line.
fn connect_to_guest(socket: &Path, port: u32) -> UnixStream {
    let mut s = UnixStream::connect(socket).expect("the vsock socket accepts");
    writeln!(s, "CONNECT {port}").unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while byte[0] != b'\n' {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed before OK: {line:?}");
        line.push(byte[0]);
    }
    let line = String::from_utf8(line).unwrap();
    assert!(line.starts_with("OK "), "{line}");
    line.trim_end()[3..]
        .parse::<u32>()
        .expect("OK names the host port");
    s
}

#[test]
fn host_to_guest_carries_32_mib_whole() {
    if !kvm_or_skip("host_to_guest_carries_32_mib_whole") {
        return;
    }
    let dir = socket_dir("h2g");
    let socket = dir.join("v.sock");
    let child = serving(&socket, 5000, 2);
    let mut s = connect_to_guest(&socket, 5000);
    let hash = common::send_pattern(&mut s, BULK);
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = [0u8; 16];
    s.read_exact(&mut answer).unwrap();
    assert_eq!(u64::from_le_bytes(answer[..8].try_into().unwrap()), BULK);
    assert_eq!(
        u64::from_le_bytes(answer[8..].try_into().unwrap()),
        hash,
        "the guest read other bytes than were sent"
    );
    // The guest closed: the host reads end of file.
    assert_eq!(s.read(&mut [0u8; 1]).unwrap(), 0);
    // A second, empty connection: half-close at once.
    let mut s = connect_to_guest(&socket, 5000);
    s.shutdown(std::net::Shutdown::Write).unwrap();
    s.read_exact(&mut answer).unwrap();
    assert_eq!(&answer[..8], &0u64.to_le_bytes());
    let out = child.wait_with_output().unwrap();
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    assert!(!socket.exists(), "the socket file is removed at exit");
}

#[test]
fn guest_to_host_carries_32_mib_whole() {
    if !kvm_or_skip("guest_to_host_carries_32_mib_whole") {
        return;
    }
    let dir = socket_dir("g2h");
    let socket = dir.join("v.sock");
    let listener = UnixListener::bind(dir.join("v.sock_6000")).unwrap();
    let child = vmm(&socket, &["send", "6000", &BULK.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    let (total, hash) = common::read_hashed(&mut conn);
    assert_eq!(total, BULK);
    assert_eq!(
        hash,
        common::pattern_hash(BULK),
        "the host read other bytes than were sent"
    );
    let mut answer = total.to_le_bytes().to_vec();
    answer.extend_from_slice(&hash.to_le_bytes());
    conn.write_all(&answer).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(status(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("hash matches"), "{}", stdout(&out));
}

#[test]
fn nobody_listening_refuses_either_way() {
    if !kvm_or_skip("nobody_listening_refuses_either_way") {
        return;
    }
    let dir = socket_dir("refused");
    let socket = dir.join("v.sock");
    // The guest connects to a host port nobody serves.
    let out = vmm(&socket, &["send", "6001", "10"]).output().unwrap();
    assert_eq!(status(&out), 1);
    assert!(
        stderr(&out).contains("connect: Connection reset by peer"),
        "{}",
        stderr(&out)
    );
    // The host connects to a guest port nobody serves: closed, no OK.
    let child = serving(&socket, 5000, 1);
    let mut s = UnixStream::connect(&socket).unwrap();
    writeln!(s, "CONNECT 5001").unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert!(got.is_empty(), "{got:?}");
    // A line that is not a CONNECT is closed too.
    let mut s = UnixStream::connect(&socket).unwrap();
    writeln!(s, "HELLO").unwrap();
    s.read_to_end(&mut got).unwrap();
    assert!(got.is_empty(), "{got:?}");
    // The server still serves.
    let mut s = connect_to_guest(&socket, 5000);
    s.write_all(b"after").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = [0u8; 16];
    s.read_exact(&mut answer).unwrap();
    assert_eq!(&answer[..8], &5u64.to_le_bytes());
    let out = child.wait_with_output().unwrap();
    assert_eq!(status(&out), 0, "{}", stderr(&out));
}

#[test]
fn the_socket_file_goes_however_kiln_ends() {
    if !kvm_or_skip("the_socket_file_goes_however_kiln_ends") {
        return;
    }
    let dir = socket_dir("ends");
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGKILL] {
        let socket = dir.join(format!("v{signal}.sock"));
        let mut child = serving(&socket, 5000, 1);
        assert!(socket.exists());
        // SAFETY: signals the child this test started.
        unsafe { libc::kill(child.id() as i32, signal) };
        let _ = child.wait();
        common::wait_for(
            &format!("{} still exists after signal {signal}", socket.display()),
            || !socket.exists(),
        );
    }
}

#[test]
fn a_path_in_use_is_refused_and_kept() {
    if !kvm_or_skip("a_path_in_use_is_refused_and_kept") {
        return;
    }
    let dir = socket_dir("inuse");
    let file = dir.join("data");
    std::fs::write(&file, "keep me").unwrap();
    let out = vmm(&file, &["serve", "5000", "1"]).output().unwrap();
    assert_ne!(status(&out), 0);
    assert!(
        stderr(&out).contains("is not a stale socket"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    // A live socket (another VM's) is in use too.
    let live = dir.join("live.sock");
    let _other = UnixListener::bind(&live).unwrap();
    let out = vmm(&live, &["serve", "5000", "1"]).output().unwrap();
    assert_ne!(status(&out), 0);
    assert!(live.exists());
    // Context ids 0-2 belong to the hypervisor, the machine and the host.
    let out = Command::new(env!("CARGO_BIN_EXE_kiln-vmm"))
        .args(["--vsock", "/tmp/x.sock,cid=2", "--app", "/bin/true"])
        .output()
        .unwrap();
    assert_eq!(status(&out), 2, "a usage error");
    assert!(
        stderr(&out).contains("cid 2 is reserved"),
        "{}",
        stderr(&out)
    );
}
