//! The web server appliance (manifests/httpd.toml: Debian's nginx serving
//! a static site) booted with `kiln run -p` and fetched with curl from the
//! host: once, then 1000 requests — with `--net user` as an unprivileged
//! user, and with `--net tap` as root inside a network namespace.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{built_image, kvm_or_skip, status, stderr, stdout};

const PAGE_MARK: &str = "Served by nginx in a kiln appliance";

/// Waits until nginx says it is up (its notice on stderr), or fails with
/// what it printed.
fn wait_started(child: &mut Child) {
    let err = child.stderr.take().unwrap();
    let mut lines = BufReader::new(err).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap_or_default();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("start worker processes") || line.contains("getrlimit") {
            // Keep draining in the background so nginx never blocks.
            std::thread::spawn(move || for _ in lines {});
            return;
        }
    }
    panic!("nginx did not start:\n{seen}");
}

/// `curl` with `args` (run by `wrap` first, e.g. inside a namespace).
fn curl(wrap: &[&str], args: &[&str]) -> Output {
    let (program, rest) = match wrap.split_first() {
        Some((p, rest)) => (*p, rest.to_vec()),
        None => ("curl", Vec::new()),
    };
    let mut cmd = Command::new(program);
    cmd.args(rest);
    if !wrap.is_empty() {
        cmd.arg("curl");
    }
    cmd.args(["--silent", "--show-error", "--max-time", "30"])
        .args(args)
        .output()
        .expect("curl runs (Debian package curl)")
}

/// Fetches the page once (retrying while the port comes up), then 1000
/// requests over keep-alive connections; every one must be a 200.
fn fetch_and_hammer(wrap: &[&str], url: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = curl(wrap, &[url]);
        if status(&out) == 0 && stdout(&out).contains(PAGE_MARK) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page never came: {}{}",
            stdout(&out),
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut args = vec!["--output", "/dev/null", "--write-out", "%{http_code}\n"];
    let urls: Vec<String> = (0..1000).map(|i| format!("{url}?n={i}")).collect();
    for u in &urls {
        args.push(u);
    }
    let out = curl(wrap, &args);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let codes = stdout(&out);
    let ok = codes.lines().filter(|c| *c == "200").count();
    assert_eq!(ok, 1000, "not every request got a 200: {codes}");
}

#[test]
fn httpd_serves_its_site_over_user_networking_without_privileges() {
    if !kvm_or_skip("httpd_serves_its_site_over_user_networking_without_privileges") {
        return;
    }
    common::require_tool("nginx", "nginx-light");
    common::require_tool("curl", "curl");
    common::require_tool("passt", "passt");
    common::require_tool("setpriv", "util-linux");
    let (dir, image) = built_image("httpd-user", "httpd");
    // kiln runs as nobody: its own KVM device node (the host's /dev/kvm is
    // root's here), the image readable, a store of its own.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut wrap: Vec<String> = Vec::new();
    if root {
        let kvm = dir.join("kvm");
        let rdev = std::fs::metadata("/dev/kvm").unwrap().rdev();
        let path = std::ffi::CString::new(kvm.to_str().unwrap()).unwrap();
        // SAFETY: mknod of a character node at a path this test owns.
        let rc = unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o600, rdev as libc::dev_t) };
        assert_eq!(rc, 0, "mknod {}", std::io::Error::last_os_error());
        // SAFETY: chown of the node just made.
        assert_eq!(unsafe { libc::chown(path.as_ptr(), 65534, 65534) }, 0);
        for p in [&dir, &image] {
            let mode = if p.is_dir() { 0o755 } else { 0o644 };
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        allow_traversal(&dir);
        wrap = [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "env",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        wrap.push(format!("KILN_KVM_DEVICE={}", kvm.display()));
        wrap.push(format!("KILN_HOME={}", dir.join("home").display()));
    }
    let port = common::free_port();
    let kiln = env!("CARGO_BIN_EXE_kiln");
    let mut cmd = match wrap.split_first() {
        Some((p, rest)) => {
            let mut c = Command::new(p);
            c.args(rest).arg(kiln);
            c
        }
        None => Command::new(kiln),
    };
    let mut child = cmd
        .args([
            "run",
            "--timeout",
            "120",
            "-p",
            &format!("127.0.0.1:{port}:80"),
        ])
        .arg(&image)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_started(&mut child);
    fetch_and_hammer(&[], &format!("http://127.0.0.1:{port}/"));
    let _ = child.kill();
    let _ = child.wait();
}

/// Makes the directories above `dir` passable for other users (the test's
/// temporary directory is world-traversable already on Debian).
fn allow_traversal(dir: &Path) {
    let mut at = dir.parent();
    while let Some(d) = at {
        if let Ok(m) = std::fs::metadata(d) {
            assert!(
                m.mode() & 0o001 != 0,
                "{} is not traversable by other users",
                d.display()
            );
        }
        at = d.parent();
    }
}

#[test]
fn httpd_serves_its_site_over_a_tap_in_a_network_namespace() {
    if !kvm_or_skip("httpd_serves_its_site_over_a_tap_in_a_network_namespace") {
        return;
    }
    common::require_tool("nginx", "nginx-light");
    common::require_tool("curl", "curl");
    common::require_tool("ip", "iproute2");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            !xtask::host::in_ci(),
            "the tap test needs root (CI runs as root)"
        );
        eprintln!("\n!!!!!!!! TAP TEST NOT RUN: not root !!!!!!!!\n");
        return;
    }
    let (_dir, image) = built_image("httpd-tap", "httpd");
    let ns = format!("kiln-httpd-{}", std::process::id());
    assert!(Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .unwrap()
        .success());
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let _cleanup = Cleanup(ns.clone());
    let exec = ["ip", "netns", "exec", ns.as_str()];
    assert!(Command::new("ip")
        .args(["netns", "exec", &ns, "ip", "link", "set", "lo", "up"])
        .status()
        .unwrap()
        .success());
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns, env!("CARGO_BIN_EXE_kiln")])
        .args([
            "run",
            "--timeout",
            "120",
            "--net",
            "tap",
            "--ip",
            "10.78.0.2/24",
            "-p",
            "8080:80",
        ])
        .arg(&image)
        .env(
            "KILN_HOME",
            std::env::temp_dir().join(format!("kiln-httpd-home-{}", std::process::id())),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_started(&mut child);
    // The guest's address over the tap, and the published port.
    fetch_and_hammer(&exec, "http://10.78.0.2/");
    fetch_and_hammer(&exec, "http://127.0.0.1:8080/");
    let _ = child.kill();
    let _ = child.wait();
}
