//! `cargo xtask bench-boot`: the project's boot-time record. Every example
//! manifest is built into an image and booted N times with `kiln run`;
//! in the same run, on the same machine, its program is started N times
//! natively (chrooted into the image's unpacked rootfs) and N times the
//! way a container runtime starts it (fresh pid/mount/uts/ipc/net
//! namespaces and a chroot). Prints tables, writes `target/bench/boot.json`
//! and draws `target/bench/boot.svg`. A benchmark, not a test: it reports
//! numbers and fails only with `--compare` on a regression.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use xtask::{appliance, build, host, paths};

/// Options of `bench-boot`.
#[derive(clap::Args, Clone, Debug)]
pub struct BootArgs {
    /// Boots (and native and container runs) per image
    #[arg(long, default_value_t = 30)]
    pub runs: usize,
    /// Manifests to benchmark [default: every manifests/*.toml]
    #[arg(long = "manifest", value_name = "FILE")]
    pub manifests: Vec<PathBuf>,
    /// A stored boot.json to compare with: fail when a median of kiln's
    /// phases is worse than the stored one by more than --max-ratio
    #[arg(long, value_name = "FILE")]
    pub compare: Option<PathBuf>,
    /// How much slower than the baseline a median may be (1.25: 25%)
    #[arg(long, default_value_t = 1.25, value_name = "RATIO")]
    pub max_ratio: f64,
    /// Boots per image of its exported UEFI disk under QEMU + OVMF (TCG;
    /// seconds each); 0 leaves the uefi column out
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub uefi_runs: usize,
}

impl Default for BootArgs {
    fn default() -> Self {
        Self {
            runs: 30,
            manifests: Vec::new(),
            compare: None,
            max_ratio: 1.25,
            uefi_runs: 1,
        }
    }
}

/// kiln's phases, in order: (JSON key, label, key in kiln's timings JSON).
pub const PHASES: [(&str, &str, &str); 7] = [
    ("exec_to_kiln_main", "kiln main", ""),
    ("exec_to_image_verified", "image verified", "image_verified"),
    ("exec_to_vm_created", "VM created", "vm_created"),
    ("exec_to_kernel_entry", "kernel entry", "kernel_entry"),
    ("exec_to_program_entry", "program entry", "program_entry"),
    ("exec_to_first_output", "first output", "first_output"),
    ("exec_to_program_exit", "program exit", "program_exit"),
];

/// Summary statistics of a sample (ms, KiB, pages).
pub fn summary(mut v: Vec<f64>) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
    v.sort_by(f64::total_cmp);
    let pick = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    json!({
        "median": pick(0.5), "p90": pick(0.9), "p99": pick(0.99),
        "min": v[0], "max": v[v.len() - 1], "n": v.len(),
    })
}

/// Writes a benchmark's `doc` to `target/bench/NAME.json` and its chart,
/// drawn by `draw`, to `target/bench/NAME.svg`, saying so.
pub fn write_results(doc: &Value, name: &str, draw: fn(&Value, &Path) -> Result<()>) -> Result<()> {
    let out = paths::bench().join(format!("{name}.json"));
    build::write_atomically(&out, serde_json::to_string_pretty(doc)?.as_bytes())?;
    println!("  wrote {}", out.display());
    let chart = paths::bench().join(format!("{name}.svg"));
    draw(doc, &chart)?;
    println!("  wrote {}", chart.display());
    Ok(())
}

/// The median of a summary.
pub fn median(v: &Value) -> f64 {
    v["median"].as_f64().unwrap_or(f64::NAN)
}

/// Spawns `cmd` (output discarded) and waits; wall time in ms.
fn timed(cmd: &mut Command, what: &str) -> Result<f64> {
    run_timed(cmd.stdout(Stdio::null()), what).map(|(ms, _)| ms)
}

/// Runs `cmd` to its end with an empty stdin: (wall ms, stdout); an error
/// with its stderr when it fails.
pub fn run_timed(cmd: &mut Command, what: &str) -> Result<(f64, Vec<u8>)> {
    let t = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {what}"))?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((ms, out.stdout))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The image's program with its arguments and environment, chrooted into
/// `root`. Without `namespaces` and as root, kiln's process chroots itself
/// before the exec: the program runs as natively as it can with the
/// image's files. Otherwise `unshare NAMESPACES chroot ROOT PROGRAM`
/// (unprivileged, in a user namespace that makes the chroot allowed).
pub fn chrooted(root: &Path, config: &appliance::BootConfig, namespaces: &[&str]) -> Command {
    let mut cmd;
    if namespaces.is_empty() && is_root() {
        use std::os::unix::process::CommandExt;
        cmd = Command::new(&config.entrypoint);
        let dir = std::ffi::CString::new(root.as_os_str().as_encoded_bytes()).unwrap_or_default();
        // SAFETY: chroot and chdir are async-signal-safe and the closure
        // allocates nothing (the path was converted before the fork).
        unsafe {
            cmd.pre_exec(move || {
                if libc::chroot(dir.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    } else {
        cmd = Command::new("unshare");
        if !is_root() {
            cmd.args(["--user", "--map-root-user"]);
        }
        cmd.args(namespaces)
            .arg("chroot")
            .arg(root)
            .arg(&config.entrypoint);
    }
    cmd.args(&config.args).env_clear();
    for e in &config.env {
        if let Some((k, v)) = e.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd
}

/// The image exported as a raw UEFI disk and booted `runs` times under
/// QEMU (TCG) with OVMF: ms from QEMU's start to GRUB's hand-over, to the
/// program's first output and to QEMU's exit.
fn bench_uefi(kiln: &Path, image: &Path, runs: usize) -> Result<Value> {
    let disk = image.with_extension("img");
    xtask::uefi::export_disk(kiln, image, &disk, false)?;
    let (mut handover, mut first, mut exit) = (Vec::new(), Vec::new(), Vec::new());
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    for _ in 0..runs {
        let run = xtask::uefi::run(
            &disk,
            "raw",
            xtask::uefi::Machine::default(),
            std::time::Duration::from_secs(300),
        )?;
        let (Some(h), Some(_)) = (run.handover, run.status) else {
            bail!(
                "the UEFI disk of {} did not run to its end: {}",
                image.display(),
                String::from_utf8_lossy(&run.console)
            );
        };
        handover.push(ms(h));
        first.extend(run.first_output.map(ms));
        exit.push(ms(run.total));
    }
    let disk_bytes = std::fs::metadata(&disk)?.len();
    let _ = std::fs::remove_file(&disk);
    Ok(json!({
        "accel": "tcg",
        "runs": runs,
        "disk_bytes": disk_bytes,
        "ms": {
            "start_to_handover": summary(handover),
            "start_to_first_output": summary(first),
            "start_to_exit": summary(exit),
        },
    }))
}

/// Where kiln writes a run's `--timings-json`: in memory when the host
/// has /dev/shm, so that writing the report (a file replaced on disk costs
/// ext4 ~0.5 ms) is not counted as the run's.
fn timings_file(dir: &Path, name: &str) -> std::path::PathBuf {
    let file = format!("kiln-bench-{name}-{}.timings.json", std::process::id());
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.join(file)
    } else {
        dir.join(file)
    }
}

/// The image's program started from a snapshot of its VM taken at its
/// own entry, after its dynamic loader (`--snapshot-at after-loader`: the
/// kernel's boot, the program's loading and its libraries' saved), the two ways
/// kiln can skip the boot: wall times (ms) of `runs` restores in the run's
/// own process (`kiln run --from-snapshot --no-warm`) and of `runs` plain
/// `kiln run IMAGE`s each served by a warm VM (`kiln warm IMAGE`, which
/// takes the image's own snapshot at the same point; made ready untimed
/// before the run), and the KVM exits of one more served run, untimed,
/// with `--stats` (counted from the claim). Every run must print what a
/// booted run prints.
fn bench_resumed(
    kiln: &Path,
    image: &Path,
    dir: &Path,
    name: &str,
    runs: usize,
) -> Result<(Vec<f64>, Vec<f64>, Value)> {
    let home = dir.join("kiln-home");
    let snapshot = dir.join(format!("{name}.snap"));
    let _ = std::fs::remove_dir_all(&snapshot);
    // Image snapshots of earlier runs' builds (each build is another image).
    let _ = std::fs::remove_dir_all(home.join("image-snapshots"));
    let kiln_run = |args: &[&std::ffi::OsStr]| {
        let mut cmd = Command::new(kiln);
        cmd.arg("run").args(args).env("KILN_HOME", &home);
        cmd
    };
    let snap = snapshot.as_os_str();
    run_timed(
        &mut kiln_run(&[
            "--snapshot-at".as_ref(),
            "after-loader".as_ref(),
            "--snapshot-to".as_ref(),
            snap,
            image.as_os_str(),
        ]),
        "kiln run --snapshot-at after-loader",
    )?;
    let (_, booted) = run_timed(&mut kiln_run(&[image.as_os_str()]), "kiln run")?;
    let same = |out: &[u8], what: &str| {
        if out == booted.as_slice() {
            Ok(())
        } else {
            Err(anyhow::anyhow!(
                "{what} of {} printed {:?}, a booted run {:?}",
                image.display(),
                String::from_utf8_lossy(out),
                String::from_utf8_lossy(&booted)
            ))
        }
    };
    let (mut restored, mut warm) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let what = "kiln run --from-snapshot --no-warm";
        let (ms, out) = run_timed(
            &mut kiln_run(&["--from-snapshot".as_ref(), snap, "--no-warm".as_ref()]),
            what,
        )?;
        same(&out, what)?;
        restored.push(ms);
        crate::bench_snapshot::warm_up(kiln, image, &home)?;
        // The plain command a user types: no timings asked for (a warm VM
        // answers those only once its report is written). The warm VM's
        // socket going away shows it served the run.
        let what = "kiln run IMAGE (a warm VM of `kiln warm IMAGE`)";
        let (ms, out) = run_timed(&mut kiln_run(&[image.as_os_str()]), what)?;
        if crate::bench_snapshot::warm_vms_waiting(&home) != 0 {
            bail!("the run after kiln warm was not served by the warm VM");
        }
        same(&out, what)?;
        warm.push(ms);
    }
    crate::bench_snapshot::warm_up(kiln, &snapshot, &home)?;
    let json_path = timings_file(dir, name);
    let what = "kiln run --from-snapshot --stats (a warm VM)";
    run_timed(
        &mut kiln_run(&[
            "--from-snapshot".as_ref(),
            snap,
            "--stats".as_ref(),
            "--timings-json".as_ref(),
            json_path.as_os_str(),
        ]),
        what,
    )?;
    if crate::bench_snapshot::warm_vms_waiting(&home) != 0 {
        bail!("the --stats run after kiln warm was not served by the warm VM");
    }
    let counted: Value = serde_json::from_slice(&std::fs::read(&json_path)?)
        .context("reading kiln's timings JSON")?;
    let _ = std::fs::remove_file(&json_path);
    let _ = std::fs::remove_dir_all(&snapshot);
    Ok((restored, warm, counted["kvm_stats"]["exits"].clone()))
}

/// Benchmarks one image.
fn bench_image(kiln: &Path, manifest: &Path, runs: usize, uefi_runs: usize) -> Result<Value> {
    let name = manifest
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = paths::bench().join("images");
    std::fs::create_dir_all(&dir)?;
    let image = dir.join(format!("{name}.kiln"));
    build::kiln_build(kiln, manifest, &image)?;
    let config = appliance::config(kiln, &image)?;
    let root = dir.join(format!("{name}.root"));
    appliance::unpack(kiln, &image, &root)?;
    let json_path = timings_file(&dir, &name);

    let mut phases: Vec<Vec<f64>> = vec![Vec::new(); PHASES.len()];
    let (mut wall, mut rss, mut guest) = (Vec::new(), Vec::new(), Vec::new());
    let mut flavour = String::new();
    for _ in 0..runs {
        let mut cmd = Command::new(kiln);
        cmd.arg("run")
            .arg(&image)
            .arg("--timings-json")
            .arg(&json_path)
            .env("KILN_HOME", dir.join("kiln-home"))
            .env("KILN_SPAWN_MONO_NS", monotonic_ns().to_string());
        wall.push(timed(&mut cmd, &format!("kiln run {}", image.display()))?);
        let doc: Value = serde_json::from_slice(&std::fs::read(&json_path)?)
            .context("reading kiln's timings JSON")?;
        let to_main = doc["spawn_to_main_ms"].as_f64().unwrap_or(0.0);
        phases[0].push(to_main);
        for (i, (_, _, key)) in PHASES.iter().enumerate().skip(1) {
            phases[i].extend(doc["phases_ms"][key].as_f64().map(|v| v + to_main));
        }
        rss.push(doc["vmm_peak_rss_kib"].as_f64().unwrap_or(0.0));
        guest.push(doc["guest_resident_kib"].as_f64().unwrap_or(0.0));
        flavour = doc["kvm_flavour"].as_str().unwrap_or("").to_owned();
    }
    // One more run, untimed, with --stats: KVM exits at each milestone
    // (reading the counters there costs time, so not in the timed runs).
    let mut cmd = Command::new(kiln);
    cmd.arg("run")
        .arg(&image)
        .arg("--stats")
        .arg("--timings-json")
        .arg(&json_path)
        .env("KILN_HOME", dir.join("kiln-home"));
    timed(&mut cmd, "kiln run --stats")?;
    let counted: Value = serde_json::from_slice(&std::fs::read(&json_path)?)
        .context("reading kiln's timings JSON")?;
    let _ = std::fs::remove_file(&json_path);
    let (resumed, warm, warm_exits) = bench_resumed(kiln, &image, &dir, &name, runs)?;
    let mut native = Vec::new();
    let mut container = Vec::new();
    for _ in 0..runs {
        native.push(timed(
            &mut chrooted(&root, &config, &[]),
            "the native run (chroot)",
        )?);
        container.push(timed(
            &mut chrooted(
                &root,
                &config,
                &["--fork", "--pid", "--mount", "--uts", "--ipc", "--net"],
            ),
            "the container start (unshare + chroot)",
        )?);
    }
    let mut ms = serde_json::Map::new();
    for ((key, _, _), v) in PHASES.iter().zip(phases) {
        ms.insert((*key).into(), summary(v));
    }
    ms.insert("kiln_wall".into(), summary(wall));
    ms.insert("native_wall".into(), summary(native));
    ms.insert("container_wall".into(), summary(container));
    ms.insert("resumed_wall".into(), summary(resumed));
    ms.insert("warm_wall".into(), summary(warm));
    let pages: Vec<f64> = guest.iter().map(|k| k / 4.0).collect();
    let mut doc = json!({
        "name": name,
        "manifest": manifest.strip_prefix(paths::root()).unwrap_or(manifest),
        "entrypoint": config.entrypoint,
        "image_bytes": std::fs::metadata(&image)?.len(),
        "kvm_flavour": flavour,
        "ms": ms,
        "kib": { "vmm_peak_rss": summary(rss), "guest_resident": summary(guest) },
        "guest_pages_touched": summary(pages),
        "exits_at": counted["exits_at"],
        "exits": counted["kvm_stats"]["exits"],
        "warm_exits": warm_exits,
    });
    if uefi_runs > 0 {
        doc["uefi"] = bench_uefi(kiln, &image, uefi_runs)?;
    }
    let wall = median(&doc["ms"]["kiln_wall"]);
    doc["ratio_kiln_wall_to_native"] = json!(wall / median(&doc["ms"]["native_wall"]));
    let container = median(&doc["ms"]["container_wall"]);
    doc["ratio_kiln_wall_to_container"] = json!(wall / container);
    doc["ratio_resumed_wall_to_container"] = json!(median(&doc["ms"]["resumed_wall"]) / container);
    doc["ratio_warm_wall_to_container"] = json!(median(&doc["ms"]["warm_wall"]) / container);
    let _ = std::fs::remove_dir_all(&root);
    Ok(doc)
}

/// Whether the manifest at `p` is a server (it has a `[net]` table).
fn is_server(p: &Path) -> bool {
    std::fs::read_to_string(p).is_ok_and(|t| t.lines().any(|l| l.trim() == "[net]"))
}

/// Every manifests/*.toml, sorted: programs that run to an end, then
/// servers (manifests with a `[net]` table).
fn example_manifests() -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(paths::root().join("manifests"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    v.sort();
    Ok(v.into_iter().partition(|p| !is_server(p)))
}

/// The first port a server manifest says it serves (`[net] ports`).
fn served_port(manifest: &Path) -> Result<u16> {
    let doc: toml::Value = toml::from_str(&std::fs::read_to_string(manifest)?)
        .with_context(|| format!("reading {}", manifest.display()))?;
    doc.get("net")
        .and_then(|n| n.get("ports"))
        .and_then(|p| p.as_array())
        .and_then(|p| p.first())
        .and_then(toml::Value::as_integer)
        .and_then(|p| u16::try_from(p).ok())
        .with_context(|| format!("{}: [net] names no port", manifest.display()))
}

/// Whether something on 127.0.0.1:`port` answers a request: an HTTP GET,
/// the server's first bytes back.
fn answers(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_millis(200)));
    let mut b = [0u8; 1];
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok() && s.read_exact(&mut b).is_ok()
}

/// Benchmarks a server image: `runs` times `kiln run -p` it, asks it every
/// 5 ms until it answers (each refused attempt costs the booting guest
/// work too, so asking much more often slows what it measures), then stops it with SIGTERM (kiln then
/// writes its timings). Reports, from exec: program entry, the program's
/// first accepted connection (the kernel's milestone) and the first answer
/// the client got.
fn bench_server(kiln: &Path, manifest: &Path, runs: usize) -> Result<Value> {
    let name = manifest
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let guest_port = served_port(manifest)?;
    let dir = paths::bench().join("images");
    std::fs::create_dir_all(&dir)?;
    let image = dir.join(format!("{name}.kiln"));
    build::kiln_build(kiln, manifest, &image)?;
    let json_path = timings_file(&dir, &name);
    let (mut entry, mut accept, mut answer) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let start = Instant::now();
        let mut child = Command::new(kiln)
            .arg("run")
            .args(["-p", &format!("127.0.0.1:{port}:{guest_port}")])
            .arg("--timings-json")
            .arg(&json_path)
            .arg(&image)
            .env("KILN_HOME", dir.join("kiln-home"))
            .env("KILN_SPAWN_MONO_NS", monotonic_ns().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting kiln run")?;
        let answered = loop {
            if answers(port) {
                break Some(start.elapsed().as_secs_f64() * 1e3);
            }
            if start.elapsed().as_secs() > 30 || matches!(child.try_wait(), Ok(Some(_))) {
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        // SAFETY: signals the child this function started.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait()?;
        let Some(answered) = answered else {
            bail!("{name}: the server never answered on port {guest_port} ({status})");
        };
        let doc: Value = serde_json::from_slice(&std::fs::read(&json_path)?)
            .context("reading kiln's timings JSON")?;
        let to_main = doc["spawn_to_main_ms"].as_f64().unwrap_or(0.0);
        entry.extend(
            doc["phases_ms"]["program_entry"]
                .as_f64()
                .map(|v| v + to_main),
        );
        accept.extend(
            doc["phases_ms"]["first_accept"]
                .as_f64()
                .map(|v| v + to_main),
        );
        answer.push(answered);
    }
    let _ = std::fs::remove_file(&json_path);
    Ok(json!({
        "name": name,
        "port": guest_port,
        "ms": {
            "exec_to_program_entry": summary(entry),
            "exec_to_first_accept": summary(accept),
            "exec_to_first_answer": summary(answer),
        },
    }))
}

/// Runs the benchmark.
pub fn boot(args: &BootArgs) -> Result<()> {
    if !host::kvm_available() {
        bail!("bench-boot needs /dev/kvm");
    }
    // The baseline is read first: it may be the file this run rewrites.
    let baseline: Option<Value> = match &args.compare {
        Some(file) => Some(
            serde_json::from_slice(
                &std::fs::read(file).with_context(|| format!("reading {}", file.display()))?,
            )
            .with_context(|| format!("{} is not a bench-boot JSON file", file.display()))?,
        ),
        None => None,
    };
    host::ensure_tools(&host::TOOLS[..5])?;
    if args.uefi_runs > 0 {
        host::ensure_named(&["grub-mkimage", host::GRUB_EFI_MODULE])?;
    }
    let kernel = build::kernel()?;
    build::programs()?;
    let kiln = build::kiln_release()?;
    let (manifests, servers) = if args.manifests.is_empty() {
        example_manifests()?
    } else {
        args.manifests.iter().cloned().partition(|p| !is_server(p))
    };
    let mut images = Vec::new();
    for m in &manifests {
        eprintln!(
            "bench-boot: {} ({} runs each: kiln, native, container)",
            m.display(),
            args.runs
        );
        images.push(bench_image(&kiln, m, args.runs, args.uefi_runs)?);
    }
    let mut server_docs = Vec::new();
    for m in &servers {
        eprintln!(
            "bench-boot: {} (a server: {} runs to its first answer)",
            m.display(),
            args.runs
        );
        server_docs.push(bench_server(&kiln, m, args.runs)?);
    }
    let flavour = images
        .first()
        .and_then(|i| i["kvm_flavour"].as_str())
        .unwrap_or("")
        .to_owned();
    let doc = json!({
        "runs": args.runs,
        "kvm_flavour": flavour,
        "kernel_elf_bytes": std::fs::metadata(&kernel)?.len(),
        "native_as_root": is_root(),
        "images": images,
        "servers": server_docs,
    });
    print_tables(&doc);
    write_results(&doc, "boot", crate::chart::timeline)?;
    if let (Some(file), Some(baseline)) = (&args.compare, &baseline) {
        let worse = regressions(baseline, &doc, args.max_ratio)?;
        println!(
            "  compared with {} (allowed: {:.2}x the stored medians)",
            file.display(),
            args.max_ratio
        );
        if !worse.is_empty() {
            bail!("boot time regressed:\n  {}", worse.join("\n  "));
        }
        println!("  no regression");
    }
    Ok(())
}

fn print_tables(doc: &Value) {
    let images = doc["images"].as_array().cloned().unwrap_or_default();
    println!(
        "\nbench-boot: {} runs per image, {} KVM, kernel ELF {} KiB; medians in ms from exec",
        doc["runs"],
        doc["kvm_flavour"].as_str().unwrap_or("?"),
        doc["kernel_elf_bytes"].as_u64().unwrap_or(0) / 1024
    );
    print!("  {:<12}", "image");
    for (_, label, _) in PHASES {
        print!(" {label:>9.9}");
    }
    println!();
    for img in &images {
        print!("  {:<12}", img["name"].as_str().unwrap_or("?"));
        for (key, _, _) in PHASES {
            print!(" {:>9.3}", median(&img["ms"][key]));
        }
        println!();
    }
    println!(
        "\n  {:<12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>7} {:>9}",
        "image",
        "size KiB",
        "kiln",
        "p90",
        "p99",
        "native",
        "÷native",
        "contain.",
        "÷contain",
        "pages",
        "RSS KiB"
    );
    for img in &images {
        let ms = &img["ms"];
        println!(
            "  {:<12} {:>9} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>7.2}x {:>8.3} {:>7.2}x {:>7.0} {:>9.0}",
            img["name"].as_str().unwrap_or("?"),
            img["image_bytes"].as_u64().unwrap_or(0) / 1024,
            median(&ms["kiln_wall"]),
            ms["kiln_wall"]["p90"].as_f64().unwrap_or(f64::NAN),
            ms["kiln_wall"]["p99"].as_f64().unwrap_or(f64::NAN),
            median(&ms["native_wall"]),
            img["ratio_kiln_wall_to_native"].as_f64().unwrap_or(f64::NAN),
            median(&ms["container_wall"]),
            img["ratio_kiln_wall_to_container"].as_f64().unwrap_or(f64::NAN),
            median(&img["guest_pages_touched"]),
            median(&img["kib"]["vmm_peak_rss"]),
        );
    }
    println!(
        "  (kiln = `kiln run IMAGE` spawned and reaped; native = the program exec'd chrooted into \
         the unpacked rootfs; contain. = unshare --fork --pid --mount --uts --ipc --net chroot)"
    );
    println!(
        "\n  {:<12} {:>9} {:>8} {:>9} {:>8}   (started from a snapshot taken at the program's own entry, after its loader)",
        "image", "resumed", "÷contain", "warm", "÷contain"
    );
    for img in &images {
        let ms = &img["ms"];
        println!(
            "  {:<12} {:>9.3} {:>7.2}x {:>9.3} {:>7.2}x",
            img["name"].as_str().unwrap_or("?"),
            median(&ms["resumed_wall"]),
            img["ratio_resumed_wall_to_container"]
                .as_f64()
                .unwrap_or(f64::NAN),
            median(&ms["warm_wall"]),
            img["ratio_warm_wall_to_container"]
                .as_f64()
                .unwrap_or(f64::NAN),
        );
    }
    println!(
        "  (resumed = `kiln run --from-snapshot SNAP --no-warm`, restored in its own process; warm = \
         a plain `kiln run IMAGE` served by a VM `kiln warm IMAGE` resumed ahead from the image's \
         snapshot at the same point and held, made ready before each run, untimed)"
    );
    println!(
        "\n  {:<12} {:>13} {:>14} {:>13} {:>9} {:>11}   (KVM exits so far, one run with --stats)",
        "image", "kernel entry", "program entry", "program exit", "all", "warm claim"
    );
    for img in &images {
        let at = &img["exits_at"];
        let n = |v: &Value| v.as_u64().map_or("-".to_owned(), |n| n.to_string());
        println!(
            "  {:<12} {:>13} {:>14} {:>13} {:>9} {:>11}",
            img["name"].as_str().unwrap_or("?"),
            n(&at["kernel_entry"]),
            n(&at["program_entry"]),
            n(&at["program_exit"]),
            n(&img["exits"]),
            n(&img["warm_exits"]),
        );
    }
    println!("  (warm claim = a run served by a warm VM, counted from its claim to its end)");
    if images.iter().any(|i| i.get("uefi").is_some()) {
        println!(
            "\n  {:<12} {:>9} {:>12} {:>12} {:>12} {:>10}   (ms from start, medians)",
            "image", "uefi disk", "GRUB hands", "first out", "uefi exit", "kiln exit"
        );
        for img in &images {
            let u = &img["uefi"];
            if u.is_null() {
                continue;
            }
            println!(
                "  {:<12} {:>8}K {:>12.0} {:>12.0} {:>12.0} {:>10.3}",
                img["name"].as_str().unwrap_or("?"),
                u["disk_bytes"].as_u64().unwrap_or(0) / 1024,
                median(&u["ms"]["start_to_handover"]),
                median(&u["ms"]["start_to_first_output"]),
                median(&u["ms"]["start_to_exit"]),
                median(&img["ms"]["kiln_wall"]),
            );
        }
        println!(
            "  (uefi: the image's `kiln export --disk` booted by QEMU (TCG, q35) with OVMF firmware; \
             GRUB hands = its hand-over line; kiln exit = the whole `kiln run`)"
        );
    }
    let servers = doc["servers"].as_array().cloned().unwrap_or_default();
    if !servers.is_empty() {
        println!(
            "\n  {:<12} {:>14} {:>14} {:>14} {:>9}",
            "server", "program entry", "first accept", "first answer", "p90"
        );
        for s in &servers {
            let ms = &s["ms"];
            println!(
                "  {:<12} {:>14.3} {:>14.3} {:>14.3} {:>9.3}",
                s["name"].as_str().unwrap_or("?"),
                median(&ms["exec_to_program_entry"]),
                median(&ms["exec_to_first_accept"]),
                median(&ms["exec_to_first_answer"]),
                ms["exec_to_first_answer"]["p90"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
            );
        }
        println!(
            "  (servers: `kiln run -p` (user networking), a client asking every 5 ms; \
             first accept = the program's first accept(2) of an outside connection)"
        );
    }
}

/// kiln's own phases, compared by `--compare`.
const COMPARED: [&str; 4] = [
    "exec_to_kernel_entry",
    "exec_to_program_entry",
    "exec_to_program_exit",
    "kiln_wall",
];

/// The phases whose median in `current` exceeds `max_ratio` times the one
/// in `baseline`, per image, described.
///
/// # Errors
/// When the baseline has none of the current images (wrong file).
fn regressions(baseline: &Value, current: &Value, max_ratio: f64) -> Result<Vec<String>> {
    let find = |doc: &Value, name: &str| {
        doc["images"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["name"] == name).cloned())
    };
    let mut worse = Vec::new();
    let mut compared = 0;
    for img in current["images"].as_array().into_iter().flatten() {
        let name = img["name"].as_str().unwrap_or_default();
        let Some(old_img) = find(baseline, name) else {
            continue;
        };
        compared += 1;
        for key in COMPARED {
            let (Some(old), Some(new)) = (
                old_img["ms"][key]["median"].as_f64(),
                img["ms"][key]["median"].as_f64(),
            ) else {
                continue;
            };
            if new > old * max_ratio {
                worse.push(format!(
                    "{name} {key}: median {new:.3} ms, stored {old:.3} ms ({:.2}x)",
                    new / old
                ));
            }
        }
    }
    if compared == 0 {
        bail!("the baseline has results for none of these images (is it a bench-boot boot.json?)");
    }
    Ok(worse)
}

/// CLOCK_MONOTONIC now in ns, as kiln's `KILN_SPAWN_MONO_NS` hook reads it.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(name: &str, entry: f64, wall: f64) -> Value {
        json!({ "images": [{ "name": name, "ms": {
            "exec_to_program_entry": { "median": entry },
            "kiln_wall": { "median": wall },
        }}]})
    }

    #[test]
    fn only_medians_beyond_the_ratio_are_regressions() {
        let base = doc("hello", 2.0, 5.0);
        assert!(regressions(&base, &doc("hello", 2.4, 6.0), 1.25)
            .unwrap()
            .is_empty());
        let worse = regressions(&base, &doc("hello", 2.6, 5.0), 1.25).unwrap();
        assert_eq!(worse.len(), 1);
        assert!(
            worse[0].starts_with("hello exec_to_program_entry"),
            "{worse:?}"
        );
        // A baseline without any of the images is refused, not passed.
        assert!(regressions(&doc("other", 1.0, 1.0), &doc("hello", 9.0, 9.0), 1.25).is_err());
        assert!(regressions(&json!({}), &doc("hello", 9.0, 9.0), 1.25).is_err());
    }

    #[test]
    fn summaries_pick_percentiles() {
        let s = summary((1..=100).map(f64::from).collect());
        assert_eq!(median(&s), 51.0);
        assert_eq!(s["p90"], 90.0);
        assert_eq!(s["p99"], 99.0);
        assert_eq!(summary(Vec::new()), Value::Null);
    }
}
