//! End-to-end tests of the image builder and `kiln run`: the example
//! manifests build and boot, builds are byte-for-byte reproducible, and
//! every kind of bad input is refused with a one-line error that names the
//! culprit, leaving nothing behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{
    build, build_ok, built_image, kiln, kvm_or_skip, manifest_path, prepare, scratch, status,
    stderr, stdout,
};

fn run(image: &Path, args: &[&str]) -> Output {
    let mut cmd = kiln();
    cmd.arg("run").arg(image);
    if !args.is_empty() {
        cmd.arg("--").args(args);
    }
    cmd.output().expect("kiln runs")
}

#[test]
fn hello_image_boots_like_the_native_program() {
    if !kvm_or_skip("hello_image_boots_like_the_native_program") {
        return;
    }
    let (_, image) = built_image("hello", "hello");
    let size = std::fs::metadata(&image).unwrap().len();
    assert!(
        size <= 1 << 20,
        "hello image is {size} bytes, over its 1 MiB budget"
    );
    // Default arguments from the manifest, then replaced ones.
    let env = ["GREETING=hello from the hello image"];
    let out = run(&image, &[]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let host = native_as("hello-musl", "/app/hello", &["from", "an", "image"], &env);
    assert_eq!(stdout(&out), stdout(&host));
    let out = run(&image, &["--name", "world"]);
    let host = native_as("hello-musl", "/app/hello", &["--name", "world"], &env);
    assert_eq!(stdout(&out), stdout(&host));
}

/// Runs a built program natively with argv[0] = `argv0`.
fn native_as(name: &str, argv0: &str, args: &[&str], env: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(common::program(name));
    cmd.arg0(argv0).args(args).env_clear();
    for e in std::iter::once(&common::PATH_ENV).chain(env) {
        let (k, v) = e.split_once('=').unwrap();
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn hello_rust_image_boots() {
    if !kvm_or_skip("hello_rust_image_boots") {
        return;
    }
    let (_, image) = built_image("hello-rust", "hello-rust");
    let out = run(&image, &["x"]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let host = native_as(
        "hello-rust",
        "/app/hello-rust",
        &["x"],
        &["GREETING=hello from Rust"],
    );
    assert_eq!(stdout(&out), stdout(&host));
}

#[test]
fn builds_are_reproducible() {
    let dir = scratch("reproducible");
    let (a, b, c) = (dir.join("a.kiln"), dir.join("b.kiln"), dir.join("c.kiln"));
    build_ok(&manifest_path("hello"), &a);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    build_ok(&manifest_path("hello"), &b);
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "two builds differ"
    );
    let o = build(&manifest_path("hello"), &c, Some("1700000000"));
    assert_eq!(status(&o), 0, "{}", stderr(&o));
    assert!(
        std::fs::read(&a).unwrap() != std::fs::read(&c).unwrap(),
        "SOURCE_DATE_EPOCH is ignored"
    );
    // No host path or time leaks into the image.
    let bytes = std::fs::read(&a).unwrap();
    let root = xtask::paths::root().display().to_string();
    assert!(
        !bytes.windows(root.len()).any(|w| w == root.as_bytes()),
        "the image names a host path"
    );
}

#[test]
fn inspect_shows_sections_analysis_and_files() {
    let (_, image) = built_image("inspect", "hello");
    let out = kiln()
        .arg("inspect")
        .arg("--json")
        .arg(&image)
        .output()
        .unwrap();
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&str> = doc["sections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["config", "kernel", "rootfs"]);
    assert!(doc["digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(doc["config"]["entrypoint"], "/app/hello");
    assert_eq!(doc["config"]["program"]["linkage"], "static");
    let files: Vec<&str> = doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(
        files.contains(&"/app/hello") && files.contains(&"/etc/passwd"),
        "{files:?}"
    );
    let text = kiln().arg("inspect").arg(&image).output().unwrap();
    assert!(stdout(&text).contains("sha256:") && stdout(&text).contains("/app/hello"));
}

#[test]
fn export_writes_the_rootfs_section_as_a_tar_archive() {
    let (dir, image) = built_image("export", "hello");
    let tar = dir.join("rootfs.tar");
    let out = kiln()
        .arg("export")
        .arg(&image)
        .arg("-o")
        .arg(&tar)
        .output()
        .unwrap();
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let inspect = kiln()
        .args(["inspect", "--json"])
        .arg(&image)
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let rootfs = doc["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "rootfs")
        .unwrap();
    let bytes = std::fs::read(&tar).unwrap();
    assert_eq!(bytes.len() as u64, rootfs["size"].as_u64().unwrap());
    let listing = Command::new("tar").arg("-tf").arg(&tar).output().unwrap();
    assert!(
        stdout(&listing).lines().any(|l| l == "app/hello"),
        "{}",
        stdout(&listing)
    );
    // To stdout, byte for byte the same.
    let piped = kiln().arg("export").arg(&image).output().unwrap();
    assert_eq!(piped.stdout, bytes);
    // A damaged image is refused and nothing is written.
    let broken = dir.join("broken.kiln");
    let mut damaged = std::fs::read(&image).unwrap();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    std::fs::write(&broken, damaged).unwrap();
    let refused = dir.join("refused.tar");
    let out = kiln()
        .arg("export")
        .arg(&broken)
        .arg("-o")
        .arg(&refused)
        .output()
        .unwrap();
    assert_eq!(status(&out), 125, "{}", stderr(&out));
    assert!(!refused.exists());
}

/// Writes `manifest` (with `PROGRAM` replaced by the hello program) into a
/// scratch directory and builds it; returns (output, scratch dir, image path).
fn build_bad(test: &str, manifest: &str) -> (Output, PathBuf, PathBuf) {
    prepare();
    let dir = scratch(test);
    let text = manifest.replace(
        "PROGRAM",
        &common::program("hello-musl").display().to_string(),
    );
    let m = dir.join("bad.toml");
    std::fs::write(&m, text).unwrap();
    let image = dir.join("out").join("bad.kiln");
    let out = build(&m, &image, None);
    (out, dir, image)
}

/// The build failed with a one-line error containing every `needle`, and
/// wrote nothing (no image, no temporary file).
fn assert_refused(test: &str, manifest: &str, needles: &[&str]) {
    let (out, dir, image) = build_bad(test, manifest);
    let err = stderr(&out);
    assert_ne!(status(&out), 0, "{test}: the build succeeded");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("kiln: error"))
        .collect();
    assert_eq!(lines.len(), 1, "{test}: expected one error line in {err:?}");
    for n in needles {
        assert!(
            lines[0].contains(n),
            "{test}: {n:?} missing from {:?}",
            lines[0]
        );
    }
    assert!(!image.exists(), "{test}: an image was written");
    let leftovers = std::fs::read_dir(image.parent().unwrap())
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(leftovers, 0, "{test}: files left in the output directory");
    std::fs::remove_dir_all(dir).unwrap();
}

const HEAD: &str = "name = \"bad\"\nversion = \"1\"\n";

#[test]
fn refuses_bad_programs() {
    assert_refused(
        "missing-program",
        &format!("{HEAD}[program]\npath = \"/nonexistent/prog\"\n"),
        &[
            "bad.toml:4:8",
            "program.path",
            "/nonexistent/prog",
            "not found",
        ],
    );
    let dir = scratch("programs");
    let script = dir.join("script.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    assert_refused(
        "not-elf",
        &format!("{HEAD}[program]\npath = \"{}\"\n", script.display()),
        &["script.sh", "not an ELF"],
    );
    assert_refused(
        "x32",
        &format!(
            "{HEAD}[program]\npath = \"{}\"\n",
            common::program("x32").display()
        ),
        &["x32", "32-bit"],
    );
    let arm = dir.join("arm");
    let mut header = vec![0u8; 64];
    header[..4].copy_from_slice(b"\x7fELF");
    header[4] = 2;
    header[5] = 1;
    header[18] = 183; // EM_AARCH64
    std::fs::write(&arm, header).unwrap();
    assert_refused(
        "other-arch",
        &format!("{HEAD}[program]\npath = \"{}\"\n", arm.display()),
        &["arm", "aarch64"],
    );
}

#[test]
fn refuses_a_program_whose_library_is_missing() {
    let dir = scratch("missing-lib");
    let lib_src = dir.join("lib.c");
    std::fs::write(&lib_src, "int kiln_missing(void) { return 1; }\n").unwrap();
    let main_src = dir.join("main.c");
    std::fs::write(
        &main_src,
        "int kiln_missing(void);\nint main(void) { return kiln_missing(); }\n",
    )
    .unwrap();
    let lib = dir.join("libkilnmissing.so");
    let ok = Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&lib_src)
        .status()
        .unwrap();
    assert!(ok.success());
    let prog = dir.join("needs-lib");
    let ok = Command::new("gcc")
        .arg("-o")
        .arg(&prog)
        .arg(&main_src)
        .arg("-L")
        .arg(&dir)
        .arg("-lkilnmissing")
        .status()
        .unwrap();
    assert!(ok.success());
    std::fs::remove_file(&lib).unwrap();
    assert_refused(
        "missing-lib-manifest",
        &format!("{HEAD}[program]\npath = \"{}\"\n", prog.display()),
        &["libkilnmissing.so", "not found", "needs-lib"],
    );
}

#[test]
fn refuses_bad_files() {
    let dir = scratch("files");
    let files = |src: &str, dst: &str| {
        format!(
            "{HEAD}[program]\npath = \"PROGRAM\"\n[[files]]\nsrc = \"{src}\"\ndst = \"{dst}\"\n"
        )
    };
    assert_refused(
        "dotdot",
        &files("/etc/hostname", "/etc/../../outside"),
        &["files.dst", "escapes the rootfs"],
    );
    // A copied tree with a symbolic link out of it, and one with a loop.
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", tree.join("out")).unwrap();
    assert_refused(
        "symlink-out",
        &files(&tree.display().to_string(), "/data"),
        &["files.src", "escapes the copied tree"],
    );
    let looped = dir.join("loop");
    std::fs::create_dir_all(&looped).unwrap();
    std::os::unix::fs::symlink("b", looped.join("a")).unwrap();
    std::os::unix::fs::symlink("a", looped.join("b")).unwrap();
    assert_refused(
        "symlink-loop",
        &files(&looped.display().to_string(), "/data"),
        &["symbolic link loop"],
    );
    assert_refused(
        "symlink-loop-file",
        &files(&looped.join("a").display().to_string(), "/data"),
        &["symbolic link loop"],
    );
    // Two claims on one guest path.
    let dup = format!("{HEAD}[program]\npath = \"PROGRAM\"\nguest_path = \"/app/x\"\n[[files]]\nsrc = \"/etc/hostname\"\ndst = \"/app/x\"\n");
    assert_refused("duplicate", &dup, &["/app/x", "given twice"]);
    // A file whose bytes cannot be read.
    assert_refused(
        "unreadable",
        &files("/proc/self/mem", "/mem"),
        &["files.src", "cannot read /proc/self/mem"],
    );
}

#[test]
fn refuses_an_image_over_its_budget_and_names_the_largest_parts() {
    let m =
        "name = \"bad\"\nversion = \"1\"\nmax_size = \"64KiB\"\n[program]\npath = \"PROGRAM\"\n";
    assert_refused(
        "budget",
        m,
        &[
            "over its budget of 65536",
            "(guest kernel)",
            "/app/hello-musl",
        ],
    );
}

#[test]
fn refuses_broken_manifests() {
    assert_refused(
        "unknown-key",
        &format!("{HEAD}colour = \"red\"\n[program]\npath = \"PROGRAM\"\n"),
        &["bad.toml:3:1", "unknown field `colour`"],
    );
    assert_refused(
        "wrong-type",
        &format!("{HEAD}[program]\npath = \"PROGRAM\"\n[vm]\nmemory = \"lots\"\n"),
        &["bad.toml:6:10", "vm.memory", "expected"],
    );
    assert_refused(
        "missing-field",
        "name = \"bad\"\n[program]\npath = \"PROGRAM\"\n",
        &["bad.toml", "missing field `version`"],
    );
    assert_refused(
        "relative-volume",
        &format!("{HEAD}[program]\npath = \"PROGRAM\"\n[[volumes]]\npath = \"data\"\n"),
        &["bad.toml:6:8", "must be absolute"],
    );
    assert_refused(
        "odd-disk",
        &format!("{HEAD}[program]\npath = \"PROGRAM\"\n[[disks]]\nsize = 1000\n"),
        &["bad.toml:6:8", "512-byte sectors"],
    );
}

/// An image's `[[volumes]]` and `[[disks]]`: run without -v or --disk, the
/// appliance gets a directory and a disk file of the kiln home, and finds
/// what it wrote there on its next run.
#[test]
fn an_images_default_volume_and_disk_keep_their_data_between_runs() {
    if !kvm_or_skip("an_images_default_volume_and_disk_keep_their_data_between_runs") {
        return;
    }
    let dir = scratch("default-storage");
    let manifest = dir.join("store.toml");
    std::fs::write(
        &manifest,
        format!(
            "name = \"keeper\"\nversion = \"1\"\n[program]\npath = {:?}\n\
             [[volumes]]\npath = \"/var/lib/keeper\"\n[[disks]]\nsize = \"1MiB\"\n",
            common::program("durable").display().to_string()
        ),
    )
    .unwrap();
    let image = dir.join("keeper.kiln");
    common::build_ok(&manifest, &image);
    let home = dir.join("home");
    let img = image.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["run", img, "--"];
        all.extend(args);
        common::ok(common::kiln_at(&home, &all), "kiln run")
    };
    let out = run(&["pattern", "/var/lib/keeper/f", "0", "5000", "4"]);
    assert_eq!(stdout(&out).trim(), "pattern ok");
    let out = run(&["pattern", "/dev/vda", "512", "5000", "5"]);
    assert_eq!(stdout(&out).trim(), "pattern ok");
    let out = run(&["info", "/dev/vda"]);
    assert!(
        stdout(&out).starts_with("size 1048576 "),
        "{}",
        stdout(&out)
    );
    // On the host, in the kiln home; and there again for the next run.
    let kept = home.join("volumes/keeper/var_lib_keeper/f");
    assert_eq!(std::fs::metadata(&kept).unwrap().len(), 5000);
    let disk = home.join("disks/keeper/vda.img");
    assert_eq!(std::fs::metadata(&disk).unwrap().len(), 1 << 20);
    let out = run(&["verify", "/var/lib/keeper/f", "0"]);
    assert_eq!(stdout(&out).trim(), "ok 0");
    assert_eq!(
        std::fs::read(&disk).unwrap()[512],
        5,
        "the pattern (seed 5) at byte 512"
    );
    // A -v for the same path replaces the default.
    let mine = dir.join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    let v = format!("{}:/var/lib/keeper", mine.display());
    let out = common::ok(
        common::kiln_at(
            &home,
            &[
                "run",
                "-v",
                &v,
                img,
                "--",
                "pattern",
                "/var/lib/keeper/g",
                "0",
                "10",
                "1",
            ],
        ),
        "kiln run -v",
    );
    assert_eq!(stdout(&out).trim(), "pattern ok");
    assert!(mine.join("g").exists() && !home.join("volumes/keeper/var_lib_keeper/g").exists());
    let out = common::kiln_at(&home, &["inspect", img]);
    assert!(
        stdout(&out).contains("volume      /var/lib/keeper"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("disk        /dev/vda"),
        "{}",
        stdout(&out)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn damaged_images_are_never_booted() {
    let dir = scratch("damaged");
    let image = dir.join("good.kiln");
    build_ok(&manifest_path("hello"), &image);
    let good = std::fs::read(&image).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(
        &kiln()
            .arg("inspect")
            .arg("--json")
            .arg(&image)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let mut cases: Vec<(String, Vec<u8>, &str)> = vec![
        (
            "truncated".into(),
            good[..good.len() - 4096].to_vec(),
            "truncated",
        ),
        (
            "header".into(),
            {
                let mut b = good.clone();
                b[40] ^= 1;
                b
            },
            "header is corrupted",
        ),
    ];
    for s in doc["sections"].as_array().unwrap() {
        let (offset, size) = (s["offset"].as_u64().unwrap(), s["size"].as_u64().unwrap());
        let mut b = good.clone();
        b[(offset + size / 2) as usize] ^= 0x10;
        cases.push((format!("flipped {}", s["kind"]), b, "section is corrupted"));
    }
    for (what, bytes, needle) in cases {
        let bad = dir.join("bad.kiln");
        std::fs::write(&bad, &bytes).unwrap();
        for verb in ["inspect", "run"] {
            let out = kiln().arg(verb).arg(&bad).output().unwrap();
            assert_eq!(status(&out), 125, "{what}/{verb}: {}", stderr(&out));
            assert!(
                stderr(&out).contains(needle),
                "{what}/{verb}: {}",
                stderr(&out)
            );
            assert!(stdout(&out).is_empty(), "{what}/{verb}: the program ran");
        }
    }
}

#[test]
fn an_image_changed_after_a_verified_boot_is_verified_again() {
    if !kvm_or_skip("an_image_changed_after_a_verified_boot_is_verified_again") {
        return;
    }
    let dir = scratch("reverify");
    let home = dir.join("home");
    let image = dir.join("hello.kiln");
    build_ok(&manifest_path("hello"), &image);
    let boot = || {
        kiln()
            .env("KILN_HOME", &home)
            .arg("run")
            .arg(&image)
            .output()
            .unwrap()
    };
    // The first boot verifies everything and remembers the file.
    assert_eq!(status(&boot()), 0);
    let remembered = std::fs::read_dir(home.join("verified")).unwrap().count();
    assert_eq!(remembered, 1);
    assert_eq!(status(&boot()), 0);
    // One byte of the rootfs changed in place (same inode, same size).
    let doc: serde_json::Value = serde_json::from_slice(
        &kiln()
            .args(["inspect", "--json"])
            .arg(&image)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let rootfs = &doc["sections"][2];
    assert_eq!(rootfs["kind"], "rootfs");
    let at = rootfs["offset"].as_u64().unwrap() + rootfs["size"].as_u64().unwrap() / 2;
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&image)
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at).unwrap();
        b[0] ^= 0x10;
        f.write_all_at(&b, at).unwrap();
    }
    let out = boot();
    assert_eq!(status(&out), 125, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("section is corrupted"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty(), "the program ran");
}

#[test]
fn busybox_script_appliance_runs_its_script() {
    if !kvm_or_skip("busybox_script_appliance_runs_its_script") {
        return;
    }
    assert!(
        xtask::host::has("busybox"),
        "busybox is missing (Debian package busybox-static): run `cargo xtask deps`"
    );
    let (_, image) = built_image("busybox", "busybox-sh");
    let out = run(&image, &[]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "hello from a busybox shell script appliance\nword: one\nword: two\nword: three\n\
         the answer is 42\nhostname file says: kiln\narguments: from the manifest\n"
    );
    let out = run(&image, &["sh", "-c", "echo replaced arguments; exit 3"]);
    assert_eq!(status(&out), 3, "{}", stderr(&out));
    assert_eq!(stdout(&out), "replaced arguments\n");
    // The shell execs another program (here busybox itself, as a new
    // image), which ends the appliance with its own status.
    let out = run(
        &image,
        &[
            "sh",
            "-c",
            "echo before; exec /bin/busybox sh -c 'echo after exec; exit 5'",
        ],
    );
    assert_eq!(status(&out), 5, "{}", stderr(&out));
    assert_eq!(stdout(&out), "before\nafter exec\n");
    let out = run(&image, &["sh", "-c", "exec /nowhere"]);
    assert_eq!(status(&out), 127, "{}", stderr(&out));
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    // busybox is static: its glibc asks CPUID some 30 times as it starts.
    // The builder listed those sites in the image (user.kiln.cpuid), so
    // the kernel rewrote them at exec into calls of its CPUID routine,
    // mapped below the mmap area (SYSCALL trampolines sit below the code).
    let out = run(&image, &["cat", "/proc/self/maps"]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let routine = stdout(&out).lines().any(|l| {
        l.ends_with("[kiln-syscall]")
            && l.split('-')
                .next()
                .and_then(|a| u64::from_str_radix(a, 16).ok())
                .is_some_and(|a| a > 0x7f00_0000_0000)
    });
    assert!(routine, "no CPUID routine mapped:\n{}", stdout(&out));
}

#[test]
fn dynamic_debian_program_runs_with_its_libraries() {
    if !kvm_or_skip("dynamic_debian_program_runs_with_its_libraries") {
        return;
    }
    let (_, image) = built_image("dynamic", "sha256sum");
    let size = std::fs::metadata(&image).unwrap().len();
    assert!(
        size <= 4 << 20,
        "the dynamic example is {size} bytes, over 4 MiB"
    );
    let doc: serde_json::Value = serde_json::from_slice(
        &kiln()
            .arg("inspect")
            .arg("--json")
            .arg(&image)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(doc["config"]["program"]["linkage"], "dynamic");
    assert_eq!(
        doc["config"]["program"]["interpreter"],
        "/lib64/ld-linux-x86-64.so.2"
    );
    let libs: Vec<&str> = doc["config"]["program"]["libraries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert!(libs.contains(&"libc.so.6"), "{libs:?}");
    let out = run(&image, &[]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    // The same digests the host computes for the same bytes.
    let script = xtask::paths::root().join("manifests/busybox-sh/hello.sh");
    let host = Command::new("sha256sum").arg(&script).output().unwrap();
    let script_sum = stdout(&host).split_whitespace().next().unwrap().to_string();
    let hostname_sum = "ecdcbd502c7c341b7d547760cc09270a43d82db3257b8b0f96e98083e4e5643d"; // sha256("kiln\n")
    assert_eq!(
        stdout(&out),
        format!("{hostname_sum}  /etc/hostname\n{script_sum}  /app/hello.sh\n")
    );
}

/// CPython's byte-code caches taken from the host stay valid in the image,
/// whose entries all carry one fixed time: Python loads them instead of
/// compiling each module again at every start. A cache compiled from a
/// different source stays stale.
#[test]
fn python_byte_code_caches_stay_valid_in_the_image() {
    if !kvm_or_skip("python_byte_code_caches_stay_valid_in_the_image") {
        return;
    }
    // Debian's interpreter (python3.11 on Debian 12) and its library.
    let python = std::fs::canonicalize("/usr/bin/python3")
        .expect("/usr/bin/python3 is missing: install Debian's python3 (cargo xtask deps)");
    let dir = scratch("pyc");
    let app = dir.join("app");
    std::fs::create_dir_all(&app).unwrap();
    for (name, text) in [
        ("fresh", "def answer():\n    return 42\n"),
        ("edited", "X = 1\n"),
    ] {
        std::fs::write(app.join(format!("{name}.py")), text).unwrap();
    }
    let compile = Command::new(&python)
        .args(["-m", "py_compile", "app/fresh.py", "app/edited.py"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(status(&compile), 0, "{}", stderr(&compile));
    // Edited after its cache was written: a different size, so stale.
    std::fs::write(app.join("edited.py"), "X = 2  # edited\n").unwrap();
    let tag = format!("cpython-{}", python_tag(&python));
    let mut manifest = format!(
        "name = \"pyc\"\nversion = \"0.0.0\"\n[program]\npath = \"{}\"\nargs = [\"-I\", \"-S\", \"-v\", \"-c\", \
         \"import sys; sys.path.insert(0, '/app'); import fresh, edited; print(fresh.answer(), edited.X)\"]\n",
        python.display()
    );
    let lib = python
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("lib")
        .join(python.file_name().unwrap());
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    for name in ["fresh", "edited"] {
        files.push((app.join(format!("{name}.py")), format!("/app/{name}.py")));
        let cache = format!("__pycache__/{name}.{tag}.pyc");
        files.push((app.join(&cache), format!("/app/{cache}")));
    }
    // The encodings package is the one part of the standard library Python
    // loads from files as it starts (the rest is frozen in); os.py is the
    // landmark that tells it where the library is.
    files.push((lib.join("os.py"), lib.join("os.py").display().to_string()));
    for name in ["__init__", "aliases", "utf_8"] {
        for rel in [
            format!("encodings/{name}.py"),
            format!("encodings/__pycache__/{name}.{tag}.pyc"),
        ] {
            files.push((lib.join(&rel), lib.join(&rel).display().to_string()));
        }
    }
    for (src, dst) in &files {
        manifest.push_str(&format!(
            "[[files]]\nsrc = \"{}\"\ndst = \"{dst}\"\n",
            src.display()
        ));
    }
    std::fs::write(dir.join("pyc.toml"), manifest).unwrap();
    let image = dir.join("pyc.kiln");
    build_ok(&dir.join("pyc.toml"), &image);
    let out = run(&image, &[]);
    let err = stderr(&out);
    assert_eq!(status(&out), 0, "{err}");
    assert_eq!(stdout(&out), "42 2\n");
    for (cache, source) in [
        (
            format!("/app/__pycache__/fresh.{tag}.pyc"),
            "/app/fresh.py".to_string(),
        ),
        (
            lib.join(format!("encodings/__pycache__/utf_8.{tag}.pyc"))
                .display()
                .to_string(),
            lib.join("encodings/utf_8.py").display().to_string(),
        ),
    ] {
        assert!(
            err.contains(&format!("# {cache} matches {source}")),
            "{cache}: {err}"
        );
    }
    assert!(err.contains("# bytecode is stale for 'edited'"), "{err}");
    assert_eq!(err.matches("bytecode is stale").count(), 1, "{err}");
}

/// The `311` of a python3.11 binary.
fn python_tag(python: &Path) -> String {
    python
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("python")
        .replace('.', "")
}

#[test]
fn run_interactive_feeds_the_image_program_stdin() {
    if !kvm_or_skip("run_interactive_feeds_the_image_program_stdin") {
        return;
    }
    use std::io::Write;
    let (_, image) = built_image("interactive", "sha256sum");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let hash = |mut cmd: Command| {
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = data.clone();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        out
    };
    let mut guest = kiln();
    guest.args(["run", "-i"]).arg(&image).args(["--", "-"]);
    let guest = hash(guest);
    assert_eq!(status(&guest), 0, "{}", stderr(&guest));
    let mut native = Command::new("sha256sum");
    native.arg("-");
    assert_eq!(stdout(&guest), stdout(&hash(native)));
}

/// An image whose boot configuration asks for more than the host allows
/// (a hostile image: the builder would never write it) is refused before
/// a VM is made; so is `--memory` out of range.
#[test]
fn an_image_asking_for_too_much_memory_is_refused() {
    use kiln_builder::image::{encode, Image, SectionKind};
    let dir = scratch("too-much-memory");
    let image = dir.join("good.kiln");
    build_ok(&manifest_path("hello"), &image);
    let opened = Image::open(&image).unwrap();
    let mut sections: Vec<(SectionKind, Vec<u8>)> = opened
        .sections
        .iter()
        .map(|s| (s.kind, opened.read(s.kind).unwrap()))
        .collect();
    for (memory, vcpus, needle) in [
        (32768u64, 1u32, "32768 MiB of guest memory"),
        (17592186044480, 1, "17592186044480 MiB of guest memory"),
        (64, 0, "0 vCPUs"),
        (64, 99, "99 vCPUs"),
    ] {
        for (kind, bytes) in &mut sections {
            if *kind == SectionKind::Config {
                let mut config: serde_json::Value = serde_json::from_slice(bytes).unwrap();
                config["memory_mib"] = memory.into();
                config["vcpus"] = vcpus.into();
                *bytes = serde_json::to_vec(&config).unwrap();
            }
        }
        let refs: Vec<(SectionKind, &[u8])> =
            sections.iter().map(|(k, b)| (*k, b.as_slice())).collect();
        let bad = dir.join("hostile.kiln");
        std::fs::write(&bad, encode(&refs)).unwrap();
        for verb in ["inspect", "run"] {
            let out = kiln().arg(verb).arg(&bad).output().unwrap();
            assert_eq!(status(&out), 125, "{verb}: {}", stderr(&out));
            assert!(stderr(&out).contains(needle), "{verb}: {}", stderr(&out));
            assert!(stdout(&out).is_empty(), "{verb}: the program ran");
        }
    }
    let out = kiln()
        .args(["run", "--memory", "17592186044480"])
        .arg(&image)
        .output()
        .unwrap();
    assert_eq!(status(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not in 4..=16384"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());
}

/// A file larger than any image a build can make is refused before any
/// section is read into memory.
#[test]
fn an_oversized_image_file_is_refused_before_reading_it() {
    let dir = scratch("oversized");
    let image = dir.join("good.kiln");
    build_ok(&manifest_path("hello"), &image);
    let big = dir.join("big.kiln");
    std::fs::copy(&image, &big).unwrap();
    // Sparse: 64 GiB of apparent size, no disk space.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&big)
        .unwrap()
        .set_len(64 << 30)
        .unwrap();
    for verb in ["inspect", "run", "import"] {
        let out = kiln().arg(verb).arg(&big).output().unwrap();
        assert_eq!(status(&out), 125, "{verb}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("larger than any kiln image"),
            "{verb}: {}",
            stderr(&out)
        );
    }
}
