//! End-to-end tests of `kiln push`, `kiln pull`, `kiln run REF` and
//! `kiln login` against Debian's docker-registry on 127.0.0.1: plain HTTP,
//! htpasswd basic auth, TLS with a private CA, bearer tokens (through a
//! test proxy), chunked uploads, cross-repository mounts, skopeo reading
//! and copying what kiln pushed, and lying registries refused.

mod common;
#[path = "common/registry.rs"]
mod registry_harness;

use std::path::Path;
use std::process::Output;

use common::{
    built_image, kiln, kiln_at, kvm_or_skip, ok, prepare, skopeo, status, stderr, stdout,
};
use registry_harness::{Proxy, ProxyMode, Registry, RegistrySetup};

fn failed(o: Output, what: &str, needle: &str) -> String {
    let err = stderr(&o);
    assert_eq!(status(&o), 125, "{what}: {err}");
    assert!(
        err.contains(needle),
        "{what}: expected {needle:?} in: {err}"
    );
    err
}

fn store_is_empty(home: &Path) -> bool {
    let o = ok(kiln_at(home, &["images", "--json"]), "images");
    let images: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let blobs = std::fs::read_dir(home.join("blobs/sha256")).map_or(0, |d| d.count());
    images.is_empty() && blobs == 0
}

#[test]
fn push_delete_pull_run_gives_the_same_output() {
    if !kvm_or_skip("push_delete_pull_run_gives_the_same_output") {
        return;
    }
    let (dir, image) = built_image("reg-roundtrip", "hello");
    let image_s = image.to_str().unwrap();
    let reg = Registry::start("roundtrip", &RegistrySetup::default());
    let host = reg.host();
    let reference = format!("{host}/apps/hello:1.0");
    let pusher = dir.join("pusher");
    let expected = ok(kiln_at(&pusher, &["run", image_s, "--", "x"]), "run file");

    let o = ok(
        kiln_at(&pusher, &["push", image_s, &reference, "--plain-http"]),
        "push",
    );
    let digest = stdout(&o).trim().to_owned();
    assert!(digest.starts_with("sha256:"), "{digest}");
    assert!(
        stderr(&o).contains("3 of 3 blobs uploaded"),
        "{}",
        stderr(&o)
    );
    // Again: every blob is already there (HEAD), nothing uploaded.
    let o = ok(
        kiln_at(&pusher, &["push", image_s, &reference, "--plain-http"]),
        "push again",
    );
    assert!(
        stderr(&o).contains("already in the repository"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("0 of 3 blobs uploaded"),
        "{}",
        stderr(&o)
    );
    // To another repository: the blobs are mounted from the first.
    let other = format!("{host}/mirror/hello:1.0");
    // (The first push recorded the image in the store under its reference.)
    let o = ok(
        kiln_at(&pusher, &["push", &reference, &other, "--plain-http"]),
        "push to another repository",
    );
    assert!(
        stderr(&o).contains("mounted from apps/hello"),
        "{}",
        stderr(&o)
    );
    // By digest: must be the image's own.
    let pinned = format!("{host}/apps/hello@{digest}");
    ok(
        kiln_at(&pusher, &["push", image_s, &pinned, "--plain-http"]),
        "push by digest",
    );
    let wrong = format!("{host}/apps/hello@sha256:{}", "0".repeat(64));
    failed(
        kiln_at(&pusher, &["push", image_s, &wrong, "--plain-http"]),
        "push by a wrong digest",
        "the image's manifest digest is",
    );

    // skopeo reads what kiln pushed, and copies it into an OCI layout that
    // kiln imports and boots.
    let docker_ref = format!("docker://{reference}");
    let raw = ok(
        skopeo(&["inspect", "--raw", "--tls-verify=false", &docker_ref]),
        "skopeo inspect",
    );
    let m: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(m["artifactType"], "application/vnd.kiln.image.v1");
    let layout = dir.join("skopeo-layout");
    ok(
        skopeo(&[
            "copy",
            "--src-tls-verify=false",
            &docker_ref,
            &format!("oci:{}:v1", layout.display()),
        ]),
        "skopeo copy",
    );
    let importer = dir.join("importer");
    let o = ok(
        kiln_at(
            &importer,
            &[
                "import",
                &format!("{}:v1", layout.display()),
                "--tag",
                "copied:v1",
            ],
        ),
        "import skopeo's layout",
    );
    assert_eq!(stdout(&o).trim(), digest);
    let copied = ok(
        kiln_at(&importer, &["run", "copied:v1", "--", "x"]),
        "run copied",
    );
    assert_eq!(stdout(&copied), stdout(&expected));

    // A fresh store: run pulls by tag, then boots.
    let puller = dir.join("puller");
    let o = ok(
        kiln_at(&puller, &["run", "--plain-http", &reference, "--", "x"]),
        "run REF (pulls)",
    );
    assert_eq!(stdout(&o), stdout(&expected));
    assert!(
        stderr(&o).contains("not in the local store; pulling"),
        "{}",
        stderr(&o)
    );
    // Now it is local: no second pull.
    let o = ok(
        kiln_at(&puller, &["run", &reference, "--", "x"]),
        "run REF (local)",
    );
    assert!(!stderr(&o).contains("pulling"), "{}", stderr(&o));
    // --pull always asks the registry again (nothing new to fetch);
    // --pull never refuses an image the store does not have.
    let o = ok(
        kiln_at(
            &puller,
            &[
                "run",
                "--pull",
                "always",
                "--plain-http",
                &reference,
                "--",
                "x",
            ],
        ),
        "run --pull always",
    );
    assert!(stderr(&o).contains("already stored"), "{}", stderr(&o));
    assert_eq!(stdout(&o), stdout(&expected));
    failed(
        kiln_at(&dir.join("never"), &["run", "--pull", "never", &reference]),
        "run --pull never",
        "in the local store",
    );
    // By digest, into another fresh store.
    let by_digest = dir.join("by-digest");
    let o = ok(
        kiln_at(&by_digest, &["pull", "--plain-http", &pinned]),
        "pull by digest",
    );
    assert_eq!(stdout(&o).trim(), digest);
    let o = ok(
        kiln_at(&by_digest, &["run", &pinned, "--", "x"]),
        "run by digest",
    );
    assert_eq!(stdout(&o), stdout(&expected));
    // A tag that does not exist.
    failed(
        kiln_at(
            &dir.join("none"),
            &["pull", "--plain-http", &format!("{host}/apps/hello:nope")],
        ),
        "pull a missing tag",
        "404",
    );
    assert!(store_is_empty(&dir.join("none")));
}

#[test]
fn chunked_uploads_and_pulls_through_a_proxy() {
    prepare();
    let (dir, image) = built_image("reg-chunked", "sha256sum");
    let reg = Registry::start("chunked", &RegistrySetup::default());
    let proxy = Proxy::start(reg.port, ProxyMode::Pass);
    let reference = format!("{}/chunked:1", proxy.host());
    let home = dir.join("home");
    ok(
        kiln_at(
            &home,
            &[
                "push",
                image.to_str().unwrap(),
                &reference,
                "--plain-http",
                "--chunk-size",
                "65536",
            ],
        ),
        "chunked push",
    );
    // The rootfs layer (~1 MiB compressed) went up in many PATCHes.
    assert!(
        proxy.count("PATCH") >= 10,
        "{:?}",
        proxy.requests.lock().unwrap()
    );
    let fresh = dir.join("fresh");
    let o = ok(
        kiln_at(&fresh, &["pull", "--plain-http", &reference]),
        "pull",
    );
    let digest = stdout(&o).trim().to_owned();
    let o = ok(kiln_at(&fresh, &["images", "--json"]), "images");
    let images: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(images[0]["digest"], digest.as_str());
    assert_eq!(images[0]["names"][0], reference.as_str());
}

/// `kiln login HOST -u USER --password-stdin --plain-http` with `home` as
/// KILN_HOME.
fn login(home: &Path, host: &str, user: &str, password: &str) -> Output {
    kiln()
        .env("KILN_HOME", home)
        .args([
            "login",
            host,
            "-u",
            user,
            "--password-stdin",
            "--plain-http",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(format!("{password}\n").as_bytes())?;
            c.wait_with_output()
        })
        .unwrap()
}

/// Whether `needle` appears anywhere in the readable memory of process
/// `pid` (its heap, stacks, mappings), read through /proc/PID/mem.
fn in_process_memory(pid: u32, needle: &[u8]) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        let mut bytes = vec![0u8; (end - start) as usize];
        // A mapping that cannot be read (device memory) holds no copy.
        if mem.seek(SeekFrom::Start(start)).is_err() || mem.read_exact(&mut bytes).is_err() {
            continue;
        }
        if bytes.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
    }
    false
}

/// `kiln run REF` that has to pull with credentials pulls in a child
/// process: the thread that runs the guest (vCPU 0 is the main thread of
/// the process that runs it) never opens the credentials file — traced
/// with strace — and the password (nor its base64 form from auth.json) is
/// nowhere in that process's memory while the guest runs.
#[test]
fn registry_credentials_never_enter_the_process_that_runs_the_guest() {
    prepare();
    if !kvm_or_skip("registry_credentials_never_enter_the_process_that_runs_the_guest") {
        return;
    }
    common::require_tool("strace", "strace");
    let (dir, image) = built_image("reg-creds", "busybox-sh");
    let password = "Kiln-Pa55word-Only-Here";
    let reg = Registry::start(
        "creds",
        &RegistrySetup {
            htpasswd: Some(("kiln".into(), password.into())),
            tls: false,
        },
    );
    let host = reg.host();
    let reference = format!("{host}/private/sleeper:1");
    let home = dir.join("home");
    ok(login(&home, &host, "kiln", password), "login");
    ok(
        kiln_at(
            &home,
            &["push", image.to_str().unwrap(), &reference, "--plain-http"],
        ),
        "push",
    );
    ok(kiln_at(&home, &["rmi", &reference]), "rmi");
    let trace = dir.join("strace.log");
    let kiln_program = kiln().get_program().to_owned();
    let run = std::process::Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=openat,ioctl", "-o"])
        .arg(&trace)
        .arg(kiln_program)
        .env("KILN_HOME", &home)
        .env("DOCKER_CONFIG", home.join("no-docker"))
        .args([
            "run",
            "--plain-http",
            "--timeout",
            "60",
            &reference,
            "--",
            "sleep",
            "30",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The guest runs once a kiln process has a devices thread.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    let runner = loop {
        let found = std::fs::read_dir("/proc").unwrap().flatten().find_map(|p| {
            let pid: u32 = p.file_name().to_str()?.parse().ok()?;
            let tasks = std::fs::read_dir(p.path().join("task")).ok()?;
            let devices = tasks.flatten().any(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|c| c.trim() == "kiln-devices")
            });
            let ours = std::fs::read_to_string(p.path().join("cmdline"))
                .is_ok_and(|c| c.contains(&reference));
            (devices && ours).then_some(pid)
        });
        if let Some(pid) = found {
            break pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pulled image never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("kiln:{password}"));
    // The scan finds what is there: the reference is in its arguments.
    let reference_seen = in_process_memory(runner, reference.as_bytes());
    let password_seen = in_process_memory(runner, password.as_bytes());
    let encoded_seen = in_process_memory(runner, encoded.as_bytes());
    // SAFETY: SIGTERM to the process found above: kiln stops the VM in
    // order.
    unsafe { libc::kill(runner as i32, libc::SIGTERM) };
    let out = run.wait_with_output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pulling"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(reference_seen, "the memory scan does not work");
    assert!(
        !password_seen,
        "the password is in the memory of the process running the guest"
    );
    assert!(
        !encoded_seen,
        "auth.json's credentials are in the memory of the process running the guest"
    );
    // Which threads opened auth.json, which ran the guest (strace prints
    // thread ids; vCPU 0 runs on the main thread of the process that runs
    // the guest).
    let log = std::fs::read_to_string(&trace).unwrap();
    let tids = |needle: &str| -> std::collections::BTreeSet<u32> {
        log.lines()
            .filter(|l| l.contains(needle))
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
    };
    let opened_credentials = tids("auth.json");
    let ran_the_guest = tids("KVM_RUN");
    assert!(
        !opened_credentials.is_empty(),
        "nobody read the credentials: {log}"
    );
    assert!(
        ran_the_guest.contains(&runner),
        "the guest ran elsewhere: {log}"
    );
    assert!(
        opened_credentials.is_disjoint(&ran_the_guest),
        "the process that runs the guest opened the credentials"
    );
}

#[test]
fn basic_auth_login_and_docker_config() {
    prepare();
    let (dir, image) = built_image("reg-basic", "hello");
    let image_s = image.to_str().unwrap();
    let reg = Registry::start(
        "basic",
        &RegistrySetup {
            htpasswd: Some(("kiln".into(), "s3cret".into())),
            tls: false,
        },
    );
    let host = reg.host();
    let reference = format!("{host}/private/hello:1");
    let home = dir.join("home");
    failed(
        kiln_at(&home, &["push", image_s, &reference, "--plain-http"]),
        "push without credentials",
        "kiln login",
    );
    let login = |password: &str| login(&home, &host, "kiln", password);
    failed(
        login("wrong"),
        "login with a wrong password",
        "refused the credentials",
    );
    assert!(
        !home.join("auth.json").exists(),
        "a failed login saved credentials"
    );
    ok(login("s3cret"), "login");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(home.join("auth.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    ok(
        kiln_at(&home, &["push", image_s, &reference, "--plain-http"]),
        "push after login",
    );
    ok(kiln_at(&home, &["rmi", &reference]), "rmi");
    ok(
        kiln_at(&home, &["pull", "--plain-http", &reference]),
        "pull after login",
    );
    ok(kiln_at(&home, &["logout", &host]), "logout");
    ok(kiln_at(&home, &["rmi", &reference]), "rmi");
    failed(
        kiln_at(&home, &["pull", "--plain-http", &reference]),
        "pull after logout",
        "kiln login",
    );

    // Docker's config.json works too.
    let docker = dir.join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::write(
        docker.join("config.json"),
        format!("{{\"auths\":{{\"{host}\":{{\"auth\":\"a2lsbjpzM2NyZXQ=\"}}}}}}"),
    )
    .unwrap();
    let o = kiln()
        .env("KILN_HOME", dir.join("docker-home"))
        .env("DOCKER_CONFIG", &docker)
        .args(["pull", "--plain-http", &reference])
        .output()
        .unwrap();
    ok(o, "pull with Docker's config.json");
}

#[test]
fn tls_with_a_private_ca() {
    prepare();
    let (dir, image) = built_image("reg-tls", "hello");
    let image_s = image.to_str().unwrap();
    let reg = Registry::start(
        "tls",
        &RegistrySetup {
            htpasswd: None,
            tls: true,
        },
    );
    let ca = reg.ca.clone().unwrap();
    let reference = format!("{}/secure/hello:1", reg.host());
    let home = dir.join("home");
    failed(
        kiln_at(&home, &["push", image_s, &reference]),
        "push without the CA",
        "invalid peer certificate",
    );
    ok(
        kiln_at(
            &home,
            &[
                "push",
                image_s,
                &reference,
                "--ca-cert",
                ca.to_str().unwrap(),
            ],
        ),
        "push with --ca-cert",
    );
    let fresh = dir.join("fresh");
    ok(
        kiln_at(
            &fresh,
            &["pull", &reference, "--ca-cert", ca.to_str().unwrap()],
        ),
        "pull with --ca-cert",
    );
    failed(
        kiln_at(&home, &["push", image_s, &reference, "--ca-cert", image_s]),
        "a CA file that is not PEM",
        "no PEM certificate",
    );
}

#[test]
fn bearer_tokens_from_the_registry_token_service() {
    prepare();
    let (dir, image) = built_image("reg-bearer", "hello");
    let image_s = image.to_str().unwrap();
    let reg = Registry::start("bearer", &RegistrySetup::default());
    let proxy = Proxy::start(reg.port, ProxyMode::Bearer("robot".into(), "t0ken".into()));
    let host = proxy.host();
    let reference = format!("{host}/team/hello:1");
    let home = dir.join("home");
    failed(
        kiln_at(&home, &["push", image_s, &reference, "--plain-http"]),
        "push without credentials",
        "token service",
    );
    ok(
        kiln_at(
            &home,
            &["login", &host, "-u", "robot", "-p", "t0ken", "--plain-http"],
        ),
        "login",
    );
    ok(
        kiln_at(&home, &["push", image_s, &reference, "--plain-http"]),
        "push with a token",
    );
    let fresh = dir.join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    std::fs::copy(home.join("auth.json"), fresh.join("auth.json")).unwrap();
    ok(
        kiln_at(&fresh, &["pull", "--plain-http", &reference]),
        "pull with a token",
    );
    assert!(
        proxy.count("GET /token") >= 2,
        "{:?}",
        proxy.requests.lock().unwrap()
    );
}

/// A registry reached over plain HTTP that names a token service on
/// another host: the password is not sent there, and the error says why.
#[test]
fn the_password_never_goes_to_a_plain_http_token_service_elsewhere() {
    prepare();
    let (dir, image) = built_image("reg-bearer-elsewhere", "hello");
    let reg = Registry::start("bearer-elsewhere", &RegistrySetup::default());
    let proxy = Proxy::start(
        reg.port,
        ProxyMode::BearerOnOtherHost("robot".into(), "t0ken".into()),
    );
    let host = proxy.host();
    let home = dir.join("home");
    let refusal =
        "refusing to send the password of user \"robot\" to the token service http://localhost:";
    // `kiln login` checks the password through the token service: refused.
    failed(
        kiln_at(
            &home,
            &["login", &host, "-u", "robot", "-p", "t0ken", "--plain-http"],
        ),
        "login",
        refusal,
    );
    // Credentials stored anyway (as another tool may have): push refuses too.
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(
        home.join("auth.json"),
        format!(
            "{{\"auths\":{{\"{host}\":{{\"auth\":\"{}\"}}}}}}",
            "cm9ib3Q6dDBrZW4=" // robot:t0ken
        ),
    )
    .unwrap();
    failed(
        kiln_at(
            &home,
            &[
                "push",
                image.to_str().unwrap(),
                &format!("{host}/team/hello:1"),
                "--plain-http",
            ],
        ),
        "push",
        refusal,
    );
    assert_eq!(
        proxy.count("authorized GET /token"),
        0,
        "{:?}",
        proxy.requests.lock().unwrap()
    );
}

#[test]
fn lying_registries_are_refused_and_leave_nothing_behind() {
    prepare();
    let (dir, image) = built_image("reg-lying", "hello");
    let reg = Registry::start("lying", &RegistrySetup::default());
    let honest = format!("{}/hello:1", reg.host());
    ok(
        kiln_at(
            &dir.join("pusher"),
            &["push", image.to_str().unwrap(), &honest, "--plain-http"],
        ),
        "push",
    );
    let cases = [
        (ProxyMode::CorruptBlobs, "content has digest"),
        (ProxyMode::TruncateBlobs, "the connection failed after"),
        (ProxyMode::AlterManifests, "the registry says its digest is"),
    ];
    for (mode, needle) in cases {
        let proxy = Proxy::start(reg.port, mode.clone());
        let home = dir.join(format!("home-{mode:?}"));
        let reference = format!("{}/hello:1", proxy.host());
        let err = failed(
            kiln_at(&home, &["pull", "--plain-http", &reference]),
            &format!("{mode:?}"),
            needle,
        );
        assert_eq!(
            err.lines().filter(|l| l.contains("error")).count(),
            1,
            "{err}"
        );
        assert!(
            store_is_empty(&home),
            "{mode:?} left something in the store"
        );
    }
    // Nobody listening at all.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let home = dir.join("home-refused");
    failed(
        kiln_at(
            &home,
            &["pull", "--plain-http", &format!("127.0.0.1:{port}/hello:1")],
        ),
        "nothing listening",
        "Connection refused",
    );
    assert!(store_is_empty(&home));
    // A pinned digest the registry does not honour.
    let proxy = Proxy::start(reg.port, ProxyMode::AlterManifests);
    let o = ok(
        kiln_at(&dir.join("digest"), &["pull", "--plain-http", &honest]),
        "honest pull",
    );
    let digest = stdout(&o).trim().to_owned();
    let pinned = format!("{}/hello@{digest}", proxy.host());
    failed(
        kiln_at(&dir.join("pinned"), &["pull", "--plain-http", &pinned]),
        "altered manifest by digest",
        "received content with digest",
    );
}

/// Whether every image `home`'s store records has all its blobs, each
/// hashing to its name, and no blob or index file is visibly half-written
/// (temporary files may remain: the next writer removes them).
fn store_is_consistent(home: &Path) -> Result<usize, String> {
    use kiln_builder::store::Store;
    let store = Store::open(home);
    let images = store.images().map_err(|e| format!("images.json: {e}"))?;
    for image in &images {
        let mut digests = vec![image.digest.clone()];
        digests.extend(image.blobs().iter().map(|(_, d)| (*d).to_owned()));
        for d in digests {
            if !store.has_blob(&d) {
                return Err(format!(
                    "image {} has a missing or damaged blob {d}",
                    image.digest
                ));
            }
        }
    }
    Ok(images.len())
}

/// `kill -9` of pulls, imports, rmi and builds at many moments: the store
/// is consistent after every one, a build's output is whole or absent,
/// and the next command cleans what the killed one left.
#[test]
fn killed_store_writers_never_leave_a_broken_store() {
    use std::time::Duration;
    prepare();
    let (dir, image) = built_image("reg-kill", "busybox-sh");
    let image_s = image.to_str().unwrap();
    let reg = Registry::start("kill", &RegistrySetup::default());
    let reference = format!("127.0.0.1:{}/team/kill:1", reg.port);
    let pusher = dir.join("pusher");
    ok(
        kiln_at(&pusher, &["push", image_s, &reference, "--plain-http"]),
        "push",
    );
    let home = dir.join("home");
    let output = dir.join("built.kiln");
    let manifest = common::manifest_path("hello");
    // A fixed sequence of delays (no clock, no randomness between runs).
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut completed = 0;
    for round in 0..60 {
        let r = next();
        let delay = Duration::from_micros(r % 120_000);
        let mut cmd = kiln();
        cmd.env("KILN_HOME", &home)
            .env("DOCKER_CONFIG", home.join("no-docker"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let what = match round % 4 {
            0 => {
                cmd.args(["pull", "--plain-http", &reference]);
                "pull"
            }
            1 => {
                cmd.args(["import", image_s, &format!("imported:{round}")]);
                "import"
            }
            2 => {
                cmd.args(["rmi", &reference]);
                "rmi"
            }
            _ => {
                cmd.arg("build")
                    .arg(&manifest)
                    .arg("-o")
                    .arg(&output)
                    .arg("--kernel")
                    .arg(xtask::paths::kernel());
                "build"
            }
        };
        let mut child = cmd.spawn().expect("kiln starts");
        std::thread::sleep(delay);
        let _ = child.kill();
        if child.wait().unwrap().success() {
            completed += 1;
        }
        if let Err(e) = store_is_consistent(&home) {
            panic!("round {round}: {what} killed after {delay:?}: {e}");
        }
        if output.exists() {
            let out = kiln().arg("inspect").arg(&output).output().unwrap();
            assert_eq!(
                status(&out),
                0,
                "round {round}: a killed build left a broken image: {}",
                stderr(&out)
            );
        }
    }
    // Some ran to the end, some were cut short: both were exercised.
    assert!((1..60).contains(&completed), "{completed} of 60 completed");
    // The next writer removes what the killed ones left half-written.
    ok(
        kiln_at(&home, &["pull", "--plain-http", &reference]),
        "pull after the kills",
    );
    let leftovers: Vec<_> = std::fs::read_dir(home.join("blobs/sha256"))
        .unwrap()
        .chain(std::fs::read_dir(&home).unwrap())
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
        .map(|e| e.path())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(store_is_consistent(&home).unwrap() >= 1);
}

/// A snapshot committed to the store travels like an image: pushed (an OCI
/// artifact skopeo reads), pulled into another store, resumed by name with
/// the same output as its directory; a corrupted blob on the way in is
/// refused and stores nothing.
#[test]
fn a_snapshot_is_pushed_pulled_and_resumed_by_name() {
    if !kvm_or_skip("a_snapshot_is_pushed_pulled_and_resumed_by_name") {
        return;
    }
    let (dir, image) = built_image("reg-snapshot", "busybox-sh");
    let snap = dir.join("snap");
    let pusher = dir.join("pusher");
    let script = "echo ready; echo $((6 * 7)); ls /bin | wc -l";
    ok(
        kiln_at(
            &pusher,
            &[
                "run",
                "--snapshot-at",
                "first-output",
                "--snapshot-to",
                snap.to_str().unwrap(),
                image.to_str().unwrap(),
                "--",
                "sh",
                "-c",
                script,
            ],
        ),
        "snapshot",
    );
    let from_dir = ok(
        kiln_at(&pusher, &["run", "--from-snapshot", snap.to_str().unwrap()]),
        "resume the directory",
    );
    assert!(
        stdout(&from_dir).starts_with("42\n"),
        "{}",
        stdout(&from_dir)
    );
    let o = ok(
        kiln_at(&pusher, &["commit", snap.to_str().unwrap(), "warm:1"]),
        "commit",
    );
    let digest = stdout(&o).trim().to_owned();
    let by_name = ok(
        kiln_at(&pusher, &["run", "--from-snapshot", "warm:1"]),
        "resume by name",
    );
    assert_eq!(stdout(&by_name), stdout(&from_dir));

    let reg = Registry::start("snapshot", &RegistrySetup::default());
    let reference = format!("{}/snaps/warm:1", reg.host());
    let o = ok(
        kiln_at(&pusher, &["push", "warm:1", &reference, "--plain-http"]),
        "push",
    );
    assert_eq!(stdout(&o).trim(), digest);
    let raw = ok(
        skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ]),
        "skopeo inspect",
    );
    let m: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(m["artifactType"], "application/vnd.kiln.snapshot.v1");
    assert_eq!(m["layers"].as_array().map(Vec::len), Some(1));

    // Through a proxy that corrupts blobs: refused, nothing stored.
    let liar = Proxy::start(reg.port, ProxyMode::CorruptBlobs);
    let victim = dir.join("victim");
    let via_liar = format!("{}/snaps/warm:1", liar.host());
    failed(
        kiln_at(&victim, &["pull", &via_liar, "--plain-http"]),
        "pull through a corrupting proxy",
        "digest",
    );
    assert!(store_is_empty(&victim));
    assert!(!victim.join("snapshots.json").exists());

    let puller = dir.join("puller");
    let o = ok(
        kiln_at(&puller, &["pull", &reference, "--plain-http"]),
        "pull",
    );
    assert_eq!(stdout(&o).trim(), digest);
    assert!(stderr(&o).contains("pulled snapshot"), "{}", stderr(&o));
    let listed = ok(kiln_at(&puller, &["snapshots", "--json"]), "snapshots");
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["digest"], digest.as_str());
    let pulled = ok(
        kiln_at(&puller, &["run", "--from-snapshot", &reference]),
        "resume the pulled snapshot",
    );
    assert_eq!(stdout(&pulled), stdout(&from_dir));
    ok(kiln_at(&puller, &["rmi", &reference]), "rmi");
    let listed = ok(kiln_at(&puller, &["snapshots", "--json"]), "snapshots");
    assert_eq!(stdout(&listed).trim(), "[]");
    let missing = kiln_at(&puller, &["run", "--from-snapshot", &reference]);
    assert_ne!(status(&missing), 0);
    assert!(
        stderr(&missing).contains("nor a snapshot in the local store"),
        "{}",
        stderr(&missing)
    );
}
