//! `kiln export --disk`: images as UEFI-bootable disks (raw, qcow2, VMDK),
//! booted for real under QEMU with OVMF firmware (TCG: this PVM host's KVM
//! runs only PVM guests). Each disk must print what `kiln run` prints and
//! end with the same status.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{kiln, ok, status, stderr, stdout};
use xtask::uefi::{Input, Machine};

const FORMATS: [(&str, &str); 3] = [("raw", "img"), ("qcow2", "qcow2"), ("vmdk", "vmdk")];
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

fn export(image: &Path, disk: &Path, format: &str, extra: &[&str]) -> Output {
    kiln()
        .arg("export")
        .arg(image)
        .arg("--disk")
        .arg(disk)
        .args(["--format", format])
        .args(extra)
        .output()
        .expect("kiln runs")
}

fn require_disk_tools() {
    common::require_tool("grub-mkimage", "grub-common");
    common::require_tool(xtask::host::GRUB_EFI_MODULE, "grub-efi-amd64-bin");
    common::require_tool("qemu-img", "qemu-utils");
    common::require_tool("qemu-system-x86_64", "qemu-system-x86");
}

/// `qemu-img check` finds nothing wrong, and the disk reads the same as
/// the raw one.
fn assert_valid_container(disk: &Path, format: &str, raw: &Path) {
    let check = Command::new("qemu-img")
        .args(["check", "-f", format])
        .arg(disk)
        .output()
        .unwrap();
    assert_eq!(
        status(&check),
        0,
        "qemu-img check {}: {}{}",
        disk.display(),
        stdout(&check),
        stderr(&check)
    );
    let compare = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", format])
        .arg(raw)
        .arg(disk)
        .output()
        .unwrap();
    assert_eq!(
        status(&compare),
        0,
        "{}: {}",
        disk.display(),
        stdout(&compare)
    );
}

/// Exports `image` in every format and boots each: same stdout and status
/// as `kiln run` of the image, on `cpus` CPUs.
fn assert_disks_boot_like_kiln_run(test: &str, dir: &Path, image: &Path, cpus: u8) {
    let expected = kiln().arg("run").arg(image).output().unwrap();
    let expected_status = status(&expected);
    let mut raw = PathBuf::new();
    for (format, ext) in FORMATS {
        let disk = dir.join(format!("disk.{ext}"));
        ok(export(image, &disk, format, &[]), "kiln export --disk");
        if format == "raw" {
            raw = disk.clone();
        } else {
            assert_valid_container(&disk, format, &raw);
        }
        let machine = Machine {
            cpus,
            ..Machine::default()
        };
        let run = xtask::uefi::run(&disk, format, machine, BOOT_TIMEOUT).expect("QEMU starts");
        let console = String::from_utf8_lossy(&run.console);
        assert!(
            !run.timed_out,
            "{test} {format}: no exit in time: {console}"
        );
        assert_eq!(
            run.status.map(i32::from),
            Some(expected_status),
            "{test} {format}: status differs from kiln run's; console: {console}"
        );
        assert_eq!(
            String::from_utf8_lossy(run.program_output()),
            stdout(&expected),
            "{test} {format}: output differs from kiln run's"
        );
    }
}

/// `manifests/MANIFEST.toml`'s disks boot like `kiln run` of its image.
fn example_disks_boot(test: &str, manifest: &str) {
    if !common::kvm_or_skip(test) {
        return;
    }
    require_disk_tools();
    let (dir, image) = common::built_image(test, manifest);
    assert_disks_boot_like_kiln_run(manifest, &dir, &image, 1);
}

#[test]
fn hello_disks_boot_like_kiln_run() {
    example_disks_boot("hello_disks_boot_like_kiln_run", "hello");
}

#[test]
fn busybox_script_disks_boot_like_kiln_run() {
    example_disks_boot("busybox_script_disks_boot_like_kiln_run", "busybox-sh");
}

/// The dynamic sha256sum reads two files of the rootfs.
#[test]
fn dynamic_sha256sum_disks_boot_like_kiln_run() {
    example_disks_boot("dynamic_sha256sum_disks_boot_like_kiln_run", "sha256sum");
}

/// An image built in `dir` from the manifest text `manifest`.
fn custom_image(dir: &Path, manifest: &str) -> PathBuf {
    let path = dir.join("app.toml");
    std::fs::write(&path, manifest).unwrap();
    let image = dir.join("app.kiln");
    common::build_ok(&path, &image);
    image
}

/// Threads on two CPUs: the kernel starts the second CPU of a UEFI
/// machine itself; and a failing program's status comes through.
#[test]
fn threads_and_exit_status_survive_the_disk() {
    if !common::kvm_or_skip("threads_and_exit_status_survive_the_disk") {
        return;
    }
    require_disk_tools();
    let dir = common::scratch("disk-threads");
    let smp = common::program("smp");
    let image = custom_image(
        &dir,
        &format!(
            "name = \"threads\"\nversion = \"1\"\n[program]\npath = \"{}\"\n\
             guest_path = \"/smp\"\nargs = [\"spread\"]\n[vm]\nmemory = 64\nvcpus = 2\n",
            smp.display()
        ),
    );
    let run = kiln().arg("run").arg(&image).output().unwrap();
    assert_eq!(
        stdout(&run),
        "threads ran on 2 of 2 CPUs\n",
        "{}",
        stderr(&run)
    );
    let threads_dir = dir.join("threads");
    std::fs::create_dir_all(&threads_dir).unwrap();
    assert_disks_boot_like_kiln_run("smp", &threads_dir, &image, 2);

    let failing = dir.join("failing");
    std::fs::create_dir_all(&failing).unwrap();
    let image = custom_image(
        &failing,
        "name = \"failing\"\nversion = \"1\"\n[program]\npath = \"/bin/busybox\"\n\
         guest_path = \"/bin/busybox\"\nargs = [\"sh\", \"-c\", \"echo about to fail; exit 3\"]\n",
    );
    assert_disks_boot_like_kiln_run("failing", &failing, &image, 1);
}

/// An image running busybox with `args` (a TOML array) and its raw disk
/// exported with `-i`.
fn interactive_busybox_disk(dir: &Path, args: &str) -> (PathBuf, PathBuf) {
    let image = custom_image(
        dir,
        &format!(
            "name = \"reader\"\nversion = \"1\"\n[program]\npath = \"/bin/busybox\"\n\
             guest_path = \"/bin/busybox\"\nargs = {args}\n"
        ),
    );
    let disk = dir.join("reader.img");
    ok(
        export(&image, &disk, "raw", &["-i"]),
        "kiln export --disk -i",
    );
    (image, disk)
}

/// With `-i`, the program reads what is typed on the serial console;
/// without it, standard input is at end of file (as under `kiln run`).
#[test]
fn interactive_disks_read_standard_input_from_the_serial_console() {
    common::prepare();
    require_disk_tools();
    let dir = common::scratch("disk-stdin");
    let (image, disk) = interactive_busybox_disk(
        &dir,
        r#"["sh", "-c", "echo ready; read a; read b; echo got: $a, $b; exit 4"]"#,
    );
    let run = xtask::uefi::run_with(
        &disk,
        "raw",
        Machine::default(),
        BOOT_TIMEOUT,
        // A terminal's Enter key sends a carriage return.
        Input::Typed(b"first line\nsecond\r".to_vec()),
        false,
    )
    .expect("QEMU starts");
    let output = String::from_utf8_lossy(run.program_output()).into_owned();
    assert_eq!(output, "ready\ngot: first line, second\n");
    assert_eq!(run.status, Some(4), "{output}");

    let plain = dir.join("plain.img");
    ok(export(&image, &plain, "raw", &[]), "kiln export --disk");
    let run = xtask::uefi::run_with(
        &plain,
        "raw",
        Machine::default(),
        BOOT_TIMEOUT,
        Input::Typed(b"ignored\n".to_vec()),
        false,
    )
    .expect("QEMU starts");
    assert_eq!(
        String::from_utf8_lossy(run.program_output()),
        "ready\ngot: ,\n"
    );
    assert_eq!(run.status, Some(4));
}

/// What `cargo xtask boot-uefi -i` forwards (its standard input, then a
/// Ctrl-D for its end) reaches a program that reads to the end of its
/// standard input: every byte, and the end, so the program finishes.
#[test]
fn forwarded_input_ends_with_ctrl_d_and_the_program_reads_to_its_end() {
    use sha2::Digest;
    common::prepare();
    require_disk_tools();
    let dir = common::scratch("disk-stdin-end");
    let (_, disk) = interactive_busybox_disk(&dir, r#"["sha256sum"]"#);
    // Longer than the UART's 16-byte FIFO: the rest waits in QEMU.
    let data: Vec<u8> = (0..3000u32)
        .map(|i| b"kiln reads a serial line\n"[(i % 25) as usize])
        .collect();
    let run = xtask::uefi::run_with(
        &disk,
        "raw",
        Machine::default(),
        BOOT_TIMEOUT,
        Input::Forwarded(Box::new(std::io::Cursor::new(data.clone()))),
        false,
    )
    .expect("QEMU starts");
    let want = format!("{:x}  -\n", sha2::Sha256::digest(&data));
    assert_eq!(String::from_utf8_lossy(run.program_output()), want);
    assert_eq!(run.status, Some(0));
}

/// Without QEMU's isa-debug-exit (a real machine, VMware) the kernel
/// prints the program's status on the console and powers the machine off
/// through ACPI: QEMU ends by itself, normally.
#[test]
fn without_isa_debug_exit_the_status_is_printed_and_acpi_powers_off() {
    common::prepare();
    require_disk_tools();
    let (dir, image) = common::built_image("disk-acpi", "hello");
    let disk = dir.join("hello.img");
    ok(export(&image, &disk, "raw", &[]), "kiln export --disk");
    let machine = Machine {
        debug_exit: false,
        ..Machine::default()
    };
    let run = xtask::uefi::run(&disk, "raw", machine, BOOT_TIMEOUT).expect("QEMU starts");
    let output = String::from_utf8_lossy(run.program_output()).into_owned();
    assert!(!run.timed_out, "no power-off: {output}");
    assert!(
        output.starts_with("hello from kiln (hello from the hello image)\n"),
        "{output}"
    );
    assert!(
        output.ends_with("kiln: the program ended with status 0; powering off\n"),
        "{output}"
    );
    assert_eq!(
        run.status, None,
        "QEMU's own status after an ACPI power-off is 0"
    );
}

/// The same image gives byte-identical disks (and .vmx) every time. (A
/// VMDK names its own file, so both copies have the same name.)
#[test]
fn disks_are_reproducible() {
    common::prepare();
    require_disk_tools();
    let (dir, image) = common::built_image("disk-reproducible", "busybox-sh");
    for sub in ["first", "second"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    for (format, ext) in FORMATS {
        let a = dir.join(format!("first/disk.{ext}"));
        let b = dir.join(format!("second/disk.{ext}"));
        ok(export(&image, &a, format, &[]), "first export");
        ok(export(&image, &b, format, &[]), "second export");
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "{format}: two exports of one image differ"
        );
    }
    let vmx = std::fs::read_to_string(dir.join("first/disk.vmx")).unwrap();
    assert_eq!(
        vmx,
        std::fs::read_to_string(dir.join("second/disk.vmx")).unwrap()
    );
    assert!(vmx.contains("firmware = \"efi\"") && vmx.contains("guestOS = \"other-64\""));
    assert!(vmx.contains("sata0:0.fileName = \"disk.vmdk\""), "{vmx}");
}

/// A larger `--size` gives a disk of exactly that size that still checks.
#[test]
fn size_sets_the_disk_size() {
    common::prepare();
    require_disk_tools();
    let (dir, image) = common::built_image("disk-size", "hello");
    let disk = dir.join("big.qcow2");
    ok(
        export(&image, &disk, "qcow2", &["--size", "64MiB"]),
        "export",
    );
    let info = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&disk)
        .output()
        .unwrap();
    assert!(
        stdout(&info).contains("\"virtual-size\": 67108864"),
        "{}",
        stdout(&info)
    );
    let check = Command::new("qemu-img")
        .arg("check")
        .arg(&disk)
        .output()
        .unwrap();
    assert_eq!(status(&check), 0, "{}", stdout(&check));
}

/// Nothing but the files a directory held before.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn bad_requests_get_clear_errors_and_leave_nothing() {
    common::prepare();
    require_disk_tools();
    let (dir, image) = common::built_image("disk-bad", "hello");
    let before = listing(&dir);

    let out = export(&image, &dir.join("small.img"), "raw", &["--size", "1MiB"]);
    assert_ne!(status(&out), 0);
    assert!(
        stderr(&out).contains("--size 1048576 is too small"),
        "{}",
        stderr(&out)
    );

    let out = export(&image, &dir.join("x.img"), "iso", &[]);
    assert_ne!(status(&out), 0);
    assert!(
        stderr(&out).contains("invalid value 'iso'"),
        "{}",
        stderr(&out)
    );

    let out = export(&image, &dir.join("x.img"), "raw", &["--size", "lots"]);
    assert_ne!(status(&out), 0);
    assert!(stderr(&out).contains("is not a size"), "{}", stderr(&out));

    let out = export(&image, &dir.join("missing/x.vmdk"), "vmdk", &[]);
    assert_ne!(status(&out), 0);
    assert!(stderr(&out).contains("missing/x.vmdk"), "{}", stderr(&out));

    // A read-only directory (root ignores permissions, so the output's
    // directory is a file instead).
    let blocker = dir.join("blocker");
    std::fs::write(&blocker, b"").unwrap();
    let out = export(&image, &blocker.join("x.qcow2"), "qcow2", &[]);
    assert_ne!(status(&out), 0);
    assert!(stderr(&out).contains("blocker/x.qcow2"), "{}", stderr(&out));
    std::fs::remove_file(&blocker).unwrap();

    let truncated = dir.join("truncated.kiln");
    let bytes = std::fs::read(&image).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let out = export(&truncated, &dir.join("t.img"), "raw", &[]);
    assert_ne!(status(&out), 0);
    std::fs::remove_file(&truncated).unwrap();

    assert_eq!(listing(&dir), before, "a failed export left files behind");
}

/// An image within kiln build's 32 MiB whose disk, with GRUB added, would
/// carry more than 32 MiB is refused, and nothing is written.
#[test]
fn a_disk_carrying_more_than_32_mib_is_refused() {
    common::prepare();
    require_disk_tools();
    let dir = common::scratch("disk-too-large");
    std::fs::write(dir.join("big.bin"), vec![0u8; (31 << 20) + (200 << 10)]).unwrap();
    let image = custom_image(
        &dir,
        &format!(
            "name = \"big\"\nversion = \"1\"\nmax_size = \"32MiB\"\n[program]\npath = \"{}\"\n\
             guest_path = \"/app/hello\"\n[[files]]\nsrc = \"big.bin\"\ndst = \"/data/big.bin\"\n",
            common::program("hello-musl").display()
        ),
    );
    let before = listing(&dir);
    let out = export(&image, &dir.join("big.img"), "raw", &[]);
    assert_ne!(status(&out), 0);
    assert!(
        stderr(&out).contains("more than the 32 MiB limit"),
        "{}",
        stderr(&out)
    );
    assert_eq!(listing(&dir), before, "a refused export left files behind");
}
