//! Shared helpers of the end-to-end tests: building what they boot,
//! running kiln-vmm, QEMU and the same programs natively.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The environment both the guest and the native run get.
pub const PATH_ENV: &str = kiln_boot::DEFAULT_PATH_ENV;

/// Builds the guest kernel and the test programs once per test binary.
pub fn prepare() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        xtask::build::kernel().map_err(|e| format!("building the guest kernel: {e:#}"))?;
        for tool in &xtask::host::TOOLS[..3] {
            if !xtask::host::has(tool.command) {
                return Err(format!(
                    "{} is missing (Debian package {}); run `cargo xtask deps` or `cargo xtask ci`",
                    tool.command, tool.package
                ));
            }
        }
        xtask::build::programs().map_err(|e| format!("building the test programs: {e:#}"))?;
        Ok(())
    });
    if let Err(e) = ready {
        panic!("{e}");
    }
}

/// Whether KVM tests can run here. Without /dev/kvm they say so loudly,
/// and under CI (`CI=true`) they fail instead of passing silently.
pub fn kvm_or_skip(test: &str) -> bool {
    if xtask::host::kvm_available() {
        prepare();
        return true;
    }
    let msg =
        format!("KVM TEST NOT RUN: {test}: /dev/kvm is missing or not accessible on this host");
    if xtask::host::in_ci() {
        panic!("{msg} (CI=true: failing instead of skipping)");
    }
    eprintln!("\n!!!!!!!! {msg} !!!!!!!!\n");
    false
}

/// A built program.
pub fn program(name: &str) -> PathBuf {
    xtask::paths::program(name)
}

/// Runs `name` natively with argv[0] = `/name`, the same arguments and
/// exactly the guest's environment.
pub fn native(name: &str, args: &[&str], env: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(program(name));
    cmd.arg0(format!("/{name}")).args(args).env_clear();
    for e in std::iter::once(&PATH_ENV).chain(env) {
        let (k, v) = e.split_once('=').expect("NAME=VALUE");
        cmd.env(k, v);
    }
    cmd.output().expect("the program runs natively")
}

/// The exit status as a number (signals as 128+N, like a shell).
pub fn status(out: &Output) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    out.status
        .code()
        .unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0))
}

/// Lossy stderr, for messages.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Lossy stdout.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `kiln` command built for these tests.
pub fn kiln() -> Command {
    // Only the builder's test binaries have it (common is shared with the
    // VMM's tests).
    let mut cmd = match option_env!("CARGO_BIN_EXE_kiln") {
        Some(path) => Command::new(path),
        None => panic!("kiln() is for the tests of the kiln-builder package"),
    };
    // A store of the test binary's own, not the user's (tests that need
    // their own set KILN_HOME again).
    let home = std::env::temp_dir().join(format!("kiln-test-home-{}", std::process::id()));
    cmd.env("KILN_HOME", home);
    cmd
}

/// A fresh scratch directory for one test.
pub fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-test-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `manifests/NAME.toml`.
pub fn manifest_path(name: &str) -> PathBuf {
    xtask::paths::root()
        .join("manifests")
        .join(format!("{name}.toml"))
}

/// `kiln build MANIFEST -o OUT` with the freshly built kernel.
pub fn build(manifest: &Path, out: &Path, epoch: Option<&str>) -> Output {
    prepare();
    let mut cmd = kiln();
    cmd.arg("build")
        .arg(manifest)
        .arg("-o")
        .arg(out)
        .arg("--kernel")
        .arg(xtask::paths::kernel());
    match epoch {
        Some(e) => cmd.env("SOURCE_DATE_EPOCH", e),
        None => cmd.env_remove("SOURCE_DATE_EPOCH"),
    };
    cmd.output().expect("kiln runs")
}

/// [`build`], asserting success.
pub fn build_ok(manifest: &Path, out: &Path) {
    let o = build(manifest, out, None);
    assert_eq!(
        status(&o),
        0,
        "building {}: {}",
        manifest.display(),
        stderr(&o)
    );
}

/// `kiln ARGS` with the store at `home` and no Docker credentials.
pub fn kiln_at(home: &Path, args: &[&str]) -> Output {
    kiln()
        .env("KILN_HOME", home)
        .env("DOCKER_CONFIG", home.join("no-docker"))
        .args(args)
        .output()
        .expect("kiln runs")
}

/// `o`, asserting it succeeded (`what` names the step).
pub fn ok(o: Output, what: &str) -> Output {
    assert_eq!(status(&o), 0, "{what}: {}", stderr(&o));
    o
}

/// `skopeo ARGS` (Debian's skopeo must be installed).
pub fn skopeo(args: &[&str]) -> Output {
    assert!(
        xtask::host::has("skopeo"),
        "skopeo is missing (Debian package skopeo); run `cargo xtask deps`"
    );
    Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo runs")
}

/// A fresh scratch directory for `test` holding `manifests/MANIFEST.toml`
/// built into `MANIFEST.kiln`: (directory, image).
pub fn built_image(test: &str, manifest: &str) -> (PathBuf, PathBuf) {
    let dir = scratch(test);
    let image = dir.join(format!("{manifest}.kiln"));
    build_ok(&manifest_path(manifest), &image);
    (dir, image)
}

/// Gives `cmd`'s process the default actions for SIGINT, SIGQUIT and
/// SIGTERM whatever this process inherited (a shell's background job
/// starts with SIGINT ignored, which would make a Ctrl-C test pass or fail
/// by how the tests were started).
pub fn default_signals(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec only signal(2), which is
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            for signal in [libc::SIGINT, libc::SIGQUIT, libc::SIGTERM] {
                libc::signal(signal, libc::SIG_DFL);
            }
            Ok(())
        })
    }
}

/// Waits (up to 10 s) for `cond`; fails with `what` when it never holds.
pub fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Byte `i` of what the test appliances send and check (the echo
/// appliance's and the vsock appliance's `pattern`).
pub fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(131) ^ (i >> 20).wrapping_mul(7)) as u8
}

/// FNV-1a over `data`, continuing from `hash` (the appliances' checksum).
pub fn fnv1a(mut hash: u64, data: &[u8]) -> u64 {
    for &b in data {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    hash
}

/// FNV-1a's starting value.
pub const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// Writes the first `total` bytes of [`pattern`] to `w`, a MiB at a time;
/// returns their FNV-1a hash.
pub fn send_pattern(w: &mut impl std::io::Write, total: u64) -> u64 {
    let mut hash = FNV_START;
    let mut chunk = Vec::with_capacity(1 << 20);
    let mut at = 0u64;
    while at < total {
        chunk.clear();
        chunk.extend((at..(at + (1 << 20)).min(total)).map(pattern));
        hash = fnv1a(hash, &chunk);
        w.write_all(&chunk).expect("sending the pattern");
        at += chunk.len() as u64;
    }
    hash
}

/// The FNV-1a hash of the first `total` bytes of [`pattern`].
pub fn pattern_hash(total: u64) -> u64 {
    send_pattern(&mut std::io::sink(), total)
}

/// Reads `r` to its end: (bytes, their FNV-1a hash).
pub fn read_hashed(r: &mut impl std::io::Read) -> (u64, u64) {
    let (mut total, mut hash) = (0u64, FNV_START);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).expect("reading");
        if n == 0 {
            return (total, hash);
        }
        hash = fnv1a(hash, &buf[..n]);
        total += n as u64;
    }
}

/// A TCP port nothing listens on right now (for published ports).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Fails with how to install `tool` (Debian package `package`) when it is
/// missing.
pub fn require_tool(tool: &str, package: &str) {
    assert!(
        xtask::host::has(tool),
        "{tool} is missing (Debian package {package}): run `cargo xtask deps`"
    );
}
