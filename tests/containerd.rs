//! kiln images and containerd: `kiln push --containerd` publishes the
//! container form (an OCI image config with diff_ids and one tar layer
//! holding the .kiln file), which Debian's real containerd, started by the
//! test with a private root, pulls and unpacks with `ctr`; the file in the
//! unpacked snapshot is the image, and it boots.

mod common;
#[path = "common/registry.rs"]
#[allow(dead_code)] // the lying proxy is for tests/registry.rs
mod registry_harness;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use common::{built_image, kiln_at, kvm_or_skip, ok, prepare, require_tool, stderr, stdout};
use registry_harness::{Registry, RegistrySetup};

/// A containerd daemon of the test's own (root, state and socket in its
/// scratch directory), killed on drop.
struct Containerd {
    dir: PathBuf,
    child: Child,
}

impl Containerd {
    fn start() -> Self {
        require_tool("containerd", "containerd");
        require_tool("ctr", "containerd");
        // Unix socket paths are limited to 108 bytes: keep them short.
        let dir = PathBuf::from(format!("/tmp/kiln-ctrd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{d}/c.sock\"\n[ttrpc]\n  address = \"{d}/c.sock.ttrpc\"\n",
            d = dir.display()
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let d = Self { dir, child };
        common::wait_for("containerd's socket", || {
            d.ctr(&["version"]).status.success()
        });
        d
    }

    fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(self.dir.join("c.sock"))
            .args(["--namespace", "kiln-test"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("umount")
            .arg("-R")
            .arg(self.dir.join("mnt"))
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn containerd_pulls_and_unpacks_the_container_form_and_it_boots() {
    if !kvm_or_skip("containerd_pulls_and_unpacks_the_container_form_and_it_boots") {
        return;
    }
    prepare();
    let (dir, image) = built_image("containerd-pull", "hello");
    let image_s = image.to_str().unwrap();
    let reg = Registry::start("containerd", &RegistrySetup::default());
    let reference = format!("{}/apps/hello:ctr", reg.host());
    let home = dir.join("home");

    let o = ok(
        kiln_at(
            &home,
            &["push", image_s, &reference, "--plain-http", "--containerd"],
        ),
        "push --containerd",
    );
    let digest = stdout(&o).trim().to_owned();
    assert!(digest.starts_with("sha256:"), "{digest}");
    assert!(
        stderr(&o).contains("2 of 2 blobs uploaded"),
        "{}",
        stderr(&o)
    );
    // Pushing it again sends nothing and gives the same digest.
    let again = ok(
        kiln_at(
            &home,
            &["push", image_s, &reference, "--plain-http", "--containerd"],
        ),
        "push --containerd again",
    );
    assert_eq!(stdout(&again).trim(), digest);
    assert!(stderr(&again).contains("0 of 2 blobs uploaded"));

    let ctrd = Containerd::start();
    // The native snapshotter: the scratch directory may itself be on
    // overlayfs, where an overlay snapshotter cannot mount.
    let pull = ctrd.ctr(&[
        "image",
        "pull",
        "--plain-http",
        "--snapshotter",
        "native",
        &reference,
    ]);
    assert!(
        pull.status.success(),
        "ctr image pull: {}{}\ncontainerd log:\n{}",
        stdout(&pull),
        stderr(&pull),
        ctrd.log()
    );
    let listed = stdout(&ctrd.ctr(&["image", "ls"]));
    assert!(listed.contains(&digest), "{listed}");

    let mnt = ctrd.dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mount = ctrd.ctr(&[
        "image",
        "mount",
        "--snapshotter",
        "native",
        &reference,
        mnt.to_str().unwrap(),
    ]);
    assert!(
        mount.status.success(),
        "ctr image mount: {}{}",
        stdout(&mount),
        stderr(&mount)
    );
    let unpacked = mnt.join("kiln/image.kiln");
    assert_eq!(
        std::fs::read(&unpacked).unwrap(),
        std::fs::read(&image).unwrap(),
        "the unpacked layer holds the image, byte for byte"
    );
    let direct = ok(kiln_at(&home, &["run", image_s]), "run the file");
    let from_containerd = ok(
        kiln_at(&home, &["run", unpacked.to_str().unwrap()]),
        "run the unpacked image",
    );
    assert_eq!(stdout(&from_containerd), stdout(&direct));
    assert!(
        stdout(&direct).contains("hello from the hello image"),
        "{}",
        stdout(&direct)
    );
    let unmount = ctrd.ctr(&["image", "unmount", mnt.to_str().unwrap()]);
    assert!(unmount.status.success(), "{}", stderr(&unmount));

    // kiln's own pull refuses the container form with a clear error.
    let o = kiln_at(&dir.join("other"), &["pull", &reference, "--plain-http"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not a kiln image"),
        "kiln pull of the container form: {}",
        stderr(&o)
    );
}
