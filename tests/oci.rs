//! End-to-end tests of kiln images as OCI artifacts: the local store
//! (import, images, run by name, rmi with shared blobs), OCI image layouts
//! read and written by skopeo, and damaged layouts refused without leaving
//! anything behind.

mod common;

use std::path::{Path, PathBuf};

use common::{
    build_ok, built_image, kiln_at, kvm_or_skip, manifest_path, ok, prepare, skopeo, status,
    stderr, stdout,
};

/// Names in `kiln images --json`.
fn stored(home: &Path) -> Vec<serde_json::Value> {
    let o = ok(kiln_at(home, &["images", "--json"]), "kiln images");
    serde_json::from_slice::<Vec<serde_json::Value>>(&o.stdout).expect("JSON")
}

fn blob_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("blobs/sha256"))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn store_round_trip_through_an_oci_layout_and_skopeo() {
    if !kvm_or_skip("store_round_trip_through_an_oci_layout_and_skopeo") {
        return;
    }
    let (dir, image) = built_image("oci-roundtrip", "hello");
    let home = dir.join("home");
    let image_s = image.to_str().unwrap();
    let from_file = ok(kiln_at(&home, &["run", image_s, "--", "x"]), "run file");

    // A .kiln file into the store, named NAME:VERSION from its config.
    ok(kiln_at(&home, &["import", image_s]), "import file");
    let imgs = stored(&home);
    assert_eq!(imgs.len(), 1);
    assert_eq!(imgs[0]["names"][0], "hello:1.0.0");
    let by_name = ok(
        kiln_at(&home, &["run", "hello:1.0.0", "--", "x"]),
        "run by name",
    );
    assert_eq!(stdout(&by_name), stdout(&from_file));
    let digest = imgs[0]["digest"].as_str().unwrap().to_owned();
    // The stored image inspects like the file it came from.
    let inspect = |what: &str| -> serde_json::Value {
        let o = ok(kiln_at(&home, &["inspect", "--json", what]), "inspect");
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let (file_view, store_view) = (inspect(image_s), inspect("hello:1.0.0"));
    for key in ["digest", "size", "sections", "config", "files"] {
        assert_eq!(file_view[key], store_view[key], "{key}");
    }
    assert_eq!(store_view["stored"]["digest"], digest.as_str());
    let by_digest = ok(
        kiln_at(&home, &["run", &digest[7..19], "--", "x"]),
        "run by digest",
    );
    assert_eq!(stdout(&by_digest), stdout(&from_file));

    // Out as an OCI layout that skopeo reads and copies.
    let layout = dir.join("layout");
    let layout_s = layout.to_str().unwrap();
    ok(
        kiln_at(&home, &["export", "hello:1.0.0", "--oci-layout", layout_s]),
        "export --oci-layout",
    );
    let raw = ok(
        skopeo(&["inspect", "--raw", &format!("oci:{layout_s}")]),
        "skopeo inspect",
    );
    let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(manifest["artifactType"], "application/vnd.kiln.image.v1");
    assert_eq!(
        manifest["layers"][1]["mediaType"],
        "application/vnd.kiln.rootfs.v1.tar+gzip"
    );
    let config = ok(
        skopeo(&["inspect", "--config", "--raw", &format!("oci:{layout_s}")]),
        "skopeo inspect --config",
    );
    let config: serde_json::Value = serde_json::from_slice(&config.stdout).unwrap();
    assert_eq!(config["entrypoint"], "/app/hello");
    let copy = dir.join("copy");
    let copy_s = copy.to_str().unwrap();
    ok(
        skopeo(&[
            "copy",
            &format!("oci:{layout_s}"),
            &format!("oci:{copy_s}:v1"),
        ]),
        "skopeo copy",
    );

    // skopeo's copy back in under another name: same image, same digest,
    // nothing fetched twice.
    let o = ok(
        kiln_at(
            &home,
            &["import", &format!("{copy_s}:v1"), "--tag", "copied:v1"],
        ),
        "import skopeo layout",
    );
    assert_eq!(stdout(&o).trim(), digest);
    assert!(stderr(&o).contains("already stored"), "{}", stderr(&o));
    let copied = ok(
        kiln_at(&home, &["run", "copied:v1", "--", "x"]),
        "run copied",
    );
    assert_eq!(stdout(&copied), stdout(&from_file));

    // Removing one name keeps the image; the last name takes it and its
    // blobs.
    let o = ok(kiln_at(&home, &["rmi", "hello:1.0.0"]), "rmi name");
    assert!(
        stdout(&o).contains("untagged: hello:1.0.0"),
        "{}",
        stdout(&o)
    );
    assert_eq!(stored(&home).len(), 1);
    ok(kiln_at(&home, &["rmi", "copied:v1"]), "rmi last name");
    assert!(stored(&home).is_empty());
    assert!(blob_files(&home).is_empty(), "{:?}", blob_files(&home));
    let o = kiln_at(&home, &["run", "copied:v1"]);
    assert_eq!(status(&o), 125);
    assert!(
        stderr(&o).contains("no image \"copied:v1\" in the local store"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn images_with_the_same_kernel_store_it_once() {
    prepare();
    let (dir, hello) = built_image("oci-shared", "hello");
    let sha = dir.join("sha256sum.kiln");
    build_ok(&manifest_path("sha256sum"), &sha);
    let home = dir.join("home");
    ok(
        kiln_at(&home, &["import", hello.to_str().unwrap(), "--tag", "a"]),
        "import a",
    );
    ok(
        kiln_at(&home, &["import", sha.to_str().unwrap(), "--tag", "b"]),
        "import b",
    );
    let imgs = stored(&home);
    assert_eq!(imgs.len(), 2);
    assert_eq!(imgs[0]["kernel"], imgs[1]["kernel"]);
    // Two manifests, two configs, two rootfs archives, one kernel.
    assert_eq!(blob_files(&home).len(), 7, "{:?}", blob_files(&home));
    let o = ok(kiln_at(&home, &["images"]), "images");
    assert!(stdout(&o).contains("2 image(s)"), "{}", stdout(&o));
    // Removing one image keeps the kernel the other uses.
    ok(kiln_at(&home, &["rmi", "a"]), "rmi a");
    let kernel = imgs[1]["kernel"].as_str().unwrap();
    assert!(blob_files(&home).contains(&kernel[7..].to_owned()));
    assert_eq!(blob_files(&home).len(), 4);
}

/// Writes a layout of the hello image into a fresh directory.
fn fresh_layout(dir: &Path, image: &Path, name: &str) -> (PathBuf, serde_json::Value) {
    let layout = dir.join(name);
    let home = dir.join("export-home");
    ok(
        kiln_at(
            &home,
            &[
                "export",
                image.to_str().unwrap(),
                "--oci-layout",
                layout.to_str().unwrap(),
            ],
        ),
        "export",
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mdigest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(layout.join("blobs/sha256").join(&mdigest[7..])).unwrap(),
    )
    .unwrap();
    (layout, manifest)
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn blob(layout: &Path, digest: &serde_json::Value) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(&digest.as_str().unwrap()[7..])
}

#[test]
fn damaged_layouts_are_refused_and_leave_nothing_behind() {
    prepare();
    let (dir, image) = built_image("oci-damaged", "hello");
    type Damage = fn(&Path, &serde_json::Value);
    let cases: [(&str, Damage, &str); 6] = [
        (
            "flipped-rootfs",
            |l, m| {
                let p = blob(l, &m["layers"][1]["digest"]);
                let mut b = std::fs::read(&p).unwrap();
                b[100] ^= 0x20;
                std::fs::write(p, b).unwrap();
            },
            "rootfs layer sha256:",
        ),
        (
            "truncated-kernel",
            |l, m| {
                let p = blob(l, &m["layers"][0]["digest"]);
                let b = std::fs::read(&p).unwrap();
                std::fs::write(p, &b[..b.len() / 2]).unwrap();
            },
            "expected",
        ),
        (
            "missing-config",
            |l, m| std::fs::remove_file(blob(l, &m["config"]["digest"])).unwrap(),
            "No such file",
        ),
        (
            "tampered-manifest",
            |l, _| {
                let index: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(l.join("index.json")).unwrap()).unwrap();
                let p = blob(l, &index["manifests"][0]["digest"]);
                let text = std::fs::read_to_string(&p).unwrap();
                std::fs::write(
                    p,
                    text.replace("\"schemaVersion\":2", "\"schemaVersion\":2 "),
                )
                .unwrap();
            },
            "manifest sha256:",
        ),
        (
            "not-a-layout",
            |l, _| std::fs::remove_file(l.join("oci-layout")).unwrap(),
            "not an OCI image layout",
        ),
        (
            "container-image",
            |l, m| {
                // A well-formed manifest whose config is an ordinary
                // container image's: consistent digests, wrong kind.
                let mut m = m.clone();
                m["config"]["mediaType"] = "application/vnd.oci.image.config.v1+json".into();
                let bytes = serde_json::to_vec(&m).unwrap();
                let digest = format!("sha256:{}", sha256_hex(&bytes));
                std::fs::write(l.join("blobs/sha256").join(&digest[7..]), &bytes).unwrap();
                let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": digest, "size": bytes.len()}]});
                std::fs::write(l.join("index.json"), index.to_string()).unwrap();
            },
            "not a kiln image",
        ),
    ];
    for (name, damage, needle) in cases {
        let (layout, manifest) = fresh_layout(&dir, &image, name);
        damage(&layout, &manifest);
        let home = dir.join(format!("home-{name}"));
        let o = kiln_at(&home, &["import", layout.to_str().unwrap(), "--tag", "x"]);
        assert_eq!(status(&o), 125, "{name}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(needle), "{name}: {err}");
        assert_eq!(
            err.lines().filter(|l| l.contains("error")).count(),
            1,
            "{name}: {err}"
        );
        assert!(stored(&home).is_empty(), "{name}");
        assert!(
            blob_files(&home).is_empty(),
            "{name}: {:?}",
            blob_files(&home)
        );
    }
}
