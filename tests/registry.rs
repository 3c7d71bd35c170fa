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
    let login = |password: &str| {
        kiln()
            .env("KILN_HOME", &home)
            .args([
                "login",
                &host,
                "-u",
                "kiln",
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
    };
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
