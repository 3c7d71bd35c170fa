//! kiln images and containerd: `kiln push --containerd` publishes the
//! container form (an OCI image config with diff_ids and one tar layer
//! holding the .kiln file), which Debian's real containerd, started by the
//! test with a private root, pulls and unpacks with `ctr`; the file in the
//! unpacked snapshot is the image, and it boots. containerd then runs
//! the image as a task through kiln's shim (`ctr run --runtime
//! io.containerd.kiln.v1`): exit status, stdout and stderr, stdin,
//! environment, a log file, kill and delete.

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
    /// Starts one; `name` keeps its directory apart from other tests' in
    /// the same process.
    fn start(name: &str) -> Self {
        require_tool("containerd", "containerd");
        require_tool("ctr", "containerd");
        // Unix socket paths are limited to 108 bytes: keep them short.
        let dir = PathBuf::from(format!("/tmp/kiln-ctrd-{}-{name}", std::process::id()));
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
        // containerd finds `containerd-shim-kiln-v1` on its PATH; the shim
        // finds `kiln` beside itself. Images kiln run keeps go to the
        // test's own KILN_HOME.
        let shim = PathBuf::from(env!("CARGO_BIN_EXE_containerd-shim-kiln-v1"));
        let path = format!(
            "{}:{}",
            shim.parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .env("PATH", path)
            .env("KILN_HOME", dir.join("kiln-home"))
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
        self.ctr_with_input(args, b"")
    }

    /// Runs ctr with `input` as its standard input.
    fn ctr_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let mut child = Command::new("ctr")
            .arg("--address")
            .arg(self.dir.join("c.sock"))
            .args(["--namespace", "kiln-test"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ctr");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input).unwrap();
        drop(stdin);
        child.wait_with_output().expect("wait for ctr")
    }

    /// `ctr image pull` from the test's plain-HTTP registry, unpacked for
    /// the native snapshotter (the scratch directory may itself be on
    /// overlayfs, where an overlay snapshotter cannot mount).
    fn pull(&self, reference: &str) {
        let pull = self.ctr(&[
            "image",
            "pull",
            "--plain-http",
            "--snapshotter",
            "native",
            reference,
        ]);
        assert!(
            pull.status.success(),
            "ctr image pull: {}{}\ncontainerd log:\n{}",
            stdout(&pull),
            stderr(&pull),
            self.log()
        );
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

    let ctrd = Containerd::start("pull");
    ctrd.pull(&reference);
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

#[test]
fn ctr_runs_a_kiln_image_as_a_task_through_the_shim() {
    if !kvm_or_skip("ctr_runs_a_kiln_image_as_a_task_through_the_shim") {
        return;
    }
    prepare();
    let (dir, image) = built_image("containerd-shim", "busybox-sh");
    let reg = Registry::start("containerd-shim", &RegistrySetup::default());
    let reference = format!("{}/apps/busybox-sh:ctr", reg.host());
    ok(
        kiln_at(
            &dir.join("home"),
            &[
                "push",
                image.to_str().unwrap(),
                &reference,
                "--plain-http",
                "--containerd",
            ],
        ),
        "push --containerd",
    );
    let ctrd = Containerd::start("shim");
    ctrd.pull(&reference);
    let run = |extra: &[&str], id: &str, args: &[&str], input: &[u8]| {
        let mut all = vec![
            "run",
            "--runtime",
            "io.containerd.kiln.v1",
            "--snapshotter",
            "native",
        ];
        all.extend_from_slice(extra);
        all.push(&reference);
        all.push(id);
        all.extend_from_slice(args);
        ctrd.ctr_with_input(&all, input)
    };
    let why = |o: &Output| {
        format!(
            "stdout: {}\nstderr: {}\ncontainerd log:\n{}",
            stdout(o),
            stderr(o),
            ctrd.log()
        )
    };

    // The image's own arguments when ctr gives none.
    let o = run(&[], "defaults", &[], b"");
    assert!(o.status.success(), "{}", why(&o));
    assert!(
        stdout(&o).contains("hello from a busybox shell script appliance")
            && stdout(&o).contains("arguments: from the manifest"),
        "{}",
        why(&o)
    );

    // Arguments replace them; the program's exit status is ctr's; stdout
    // and stderr stay apart; --env reaches the program.
    let o = run(
        &["--env", "GREETING=hello from containerd"],
        "status",
        &["sh", "-c", "echo \"$GREETING\"; echo to-stderr >&2; exit 3"],
        b"",
    );
    assert_eq!(o.status.code(), Some(3), "{}", why(&o));
    assert_eq!(stdout(&o), "hello from containerd\n", "{}", why(&o));
    assert!(stderr(&o).contains("to-stderr"), "{}", why(&o));
    assert!(!stdout(&o).contains("to-stderr"), "{}", why(&o));

    // ctr's standard input is the program's, up to its end.
    let o = run(
        &[],
        "stdin",
        &[
            "sh",
            "-c",
            "while read -r line; do echo \"got $line\"; done; echo eof",
        ],
        b"first\nsecond\n",
    );
    assert!(o.status.success(), "{}", why(&o));
    assert_eq!(stdout(&o), "got first\ngot second\neof\n", "{}", why(&o));

    // A terminal: ctr run -t, itself on a terminal `script` gives it.
    let ctr_run_t = format!(
        "ctr --address {} --namespace kiln-test run -t --runtime io.containerd.kiln.v1 \
         --snapshotter native {reference} tty \
         sh -c '[ -t 0 ] && [ -t 1 ] && echo on-a-terminal; exit 4'",
        ctrd.dir.join("c.sock").display()
    );
    let o = Command::new("script")
        .args(["-qec", &ctr_run_t, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("run script");
    assert_eq!(o.status.code(), Some(4), "{}", why(&o));
    assert!(stdout(&o).contains("on-a-terminal"), "{}", why(&o));

    // A detached task writing to a log file; kill ends it, delete cleans up.
    let log = ctrd.dir.join("task.log");
    let log_uri = format!("file://{}", log.display());
    let o = run(
        &["-d", "--log-uri", &log_uri],
        "server",
        &["sh", "-c", "echo serving; sleep 600"],
        b"",
    );
    assert!(o.status.success(), "{}", why(&o));
    common::wait_for("the detached task's log line", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("serving"))
    });
    // Killed with SIGTERM: the status a shell reports for it (ctr warns
    // with it when it deletes the task).
    let kill_and_delete = |id: &str| {
        let tasks = stdout(&ctrd.ctr(&["task", "ls"]));
        assert!(
            tasks
                .lines()
                .any(|l| l.starts_with(id) && l.contains("RUNNING")),
            "{tasks}"
        );
        let kill = ctrd.ctr(&["task", "kill", id]);
        assert!(kill.status.success(), "{}", why(&kill));
        common::wait_for("the killed task to stop", || {
            let tasks = stdout(&ctrd.ctr(&["task", "ls"]));
            tasks
                .lines()
                .any(|l| l.starts_with(id) && l.contains("STOPPED"))
        });
        let delete = ctrd.ctr(&["task", "delete", id]);
        assert!(delete.status.success(), "{}", why(&delete));
        assert!(
            stderr(&delete).contains("non-zero exit code 143"),
            "{}",
            why(&delete)
        );
    };
    kill_and_delete("server");

    // A Kubernetes pod's sandbox (marked by CRI's annotation) runs no
    // image: a placeholder process until it is killed.
    let o = run(
        &[
            "-d",
            "--annotation",
            "io.kubernetes.cri.container-type=sandbox",
        ],
        "pod",
        &[],
        b"",
    );
    assert!(o.status.success(), "{}", why(&o));
    let pids = stdout(&ctrd.ctr(&["task", "ps", "pod"]));
    let pid = pids
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("ctr task ps pod: {pids}"))
        .to_owned();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("--kiln-pod-sandbox"),
        "{cmdline:?}"
    );
    kill_and_delete("pod");

    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains("/server/rootfs") && !mounts.contains("/pod/rootfs"),
        "the task's rootfs is unmounted: {mounts}"
    );
    for id in ["defaults", "status", "stdin", "tty", "server", "pod"] {
        let rm = ctrd.ctr(&["container", "rm", id]);
        assert!(rm.status.success(), "container rm {id}: {}", why(&rm));
    }
    common::wait_for("every kiln shim of the test to exit", || {
        let ps = Command::new("pgrep")
            .args([
                "-f",
                &format!("containerd-shim-kiln-v1.*{}", ctrd.dir.display()),
            ])
            .output()
            .unwrap();
        stdout(&ps).trim().is_empty()
    });
}
