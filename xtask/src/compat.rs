//! `cargo xtask compat`: the differential compatibility suite.
//!
//! Every case of tests/compat/cases.toml becomes a kiln image (the program,
//! its shared libraries, the files of tests/compat/data under /data). The
//! image's root file system is unpacked and the program run natively,
//! chrooted into it, in fresh mount, UTS and PID namespaces (with /proc,
//! the /dev devices kiln provides and the host name "kiln"), then run in
//! kiln. Both runs get the same arguments, environment and an empty stdin;
//! their stdout, stderr and exit status must match byte for byte (kiln's
//! own one-line report of a fatal signal on stderr aside). A failing case
//! is run again with --trace-syscalls to name the system calls that failed.
//! The results go to docs/compat.md and target/compat/report.json.
//!
//! So that no case passes by luck, the C cases are built with
//! `-Wall -Wextra -Werror`, and the native side runs twice: the second time
//! with the stack main uses and the heap prefilled with a non-zero pattern
//! (tests/compat/perturb.c, preloaded; `MALLOC_PERTURB_`) and a larger
//! environment. A case whose two native runs differ prints memory it never
//! wrote, and fails whatever kiln does.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use xtask::{appliance, build, host, paths};

use crate::python;

/// `cargo xtask compat` options.
#[derive(clap::Args, Default)]
pub struct CompatArgs {
    /// Run only the cases whose name contains this text
    #[arg(long, value_name = "TEXT")]
    pub only: Option<String>,
    /// Do not rewrite docs/compat.md (for partial runs)
    #[arg(long)]
    pub no_report: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    case: Vec<Case>,
}

/// One case of cases.toml.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    area: String,
    c: Option<String>,
    c_static: Option<String>,
    rust: Option<String>,
    go: Option<String>,
    /// A Python script, run by Debian's python3 (`-I /app/SCRIPT ARGS`);
    /// the image holds the modules it loads natively.
    python: Option<String>,
    program: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    /// A guest path kiln mounts a fresh host directory at (`-v`), to run
    /// the case on a volume (virtio-fs) instead of the in-memory layer;
    /// natively it is a directory of the host's disk either way.
    volume: Option<String>,
    /// vCPUs of the image (`[vm] vcpus`, default 1): the same program with
    /// its threads and processes spread over several CPUs.
    vcpus: Option<u32>,
}

impl Case {
    /// Where a Python case's script sits in the image.
    fn script_guest_path(script: &str) -> String {
        format!("/app/{script}")
    }

    /// The program's arguments: a Python case's interpreter gets the
    /// script first.
    fn program_args(&self) -> Vec<String> {
        match &self.python {
            Some(script) => ["-I".to_owned(), Self::script_guest_path(script)]
                .into_iter()
                .chain(self.args.iter().cloned())
                .collect(),
            None => self.args.clone(),
        }
    }
}

/// The outcome of one case.
#[derive(Serialize)]
struct Outcome {
    name: String,
    area: String,
    program: String,
    passed: bool,
    /// What differs (empty when passed).
    difference: String,
    /// System calls that failed in kiln's trace (failures only).
    failing_syscalls: Vec<String>,
    /// System calls kiln answered with ENOSYS (every case).
    unimplemented: Vec<String>,
    native_status: i32,
    kiln_status: i32,
    image_bytes: u64,
}

fn compat_dir() -> PathBuf {
    paths::root().join("tests").join("compat")
}

fn work_dir() -> PathBuf {
    paths::target().join("compat")
}

/// The guest path and a description of the case's program.
fn describe(case: &Case) -> Result<(String, String)> {
    let built = |kind: &str, src: &str| (format!("/app/{}", case.name), format!("{src} ({kind})"));
    Ok(
        match (
            &case.c,
            &case.c_static,
            &case.rust,
            &case.go,
            &case.python,
            &case.program,
        ) {
            (Some(s), None, None, None, None, None) => built("C, dynamic glibc", s),
            (None, Some(s), None, None, None, None) => built("C, static glibc", s),
            (None, None, Some(s), None, None, None) => built("Rust", s),
            (None, None, None, Some(s), None, None) => built("Go, static", s),
            (None, None, None, None, Some(s), None) => (
                python::interpreter()?.display().to_string(),
                format!("{s} (Python 3, Debian)"),
            ),
            (None, None, None, None, None, Some(p)) => (p.clone(), format!("`{p}` (Debian)")),
            _ => bail!(
                "case {}: give exactly one of c, c_static, rust, go, python, program",
                case.name
            ),
        },
    )
}

/// How the C cases are compiled: every warning is an error, so that a
/// result read before the call that produces it, an unused result or an
/// uninitialised variable the compiler can see stops the build.
const C_FLAGS: &[&str] = &["-O2", "-pthread", "-Wall", "-Wextra", "-Werror"];

/// Where the perturbing library lives in a case's unpacked root.
const PERTURB_GUEST_PATH: &str = "/.kiln-compat/perturb.so";

/// Where the static busybox that sets the native run's environment inside
/// the chroot (`busybox env -i …`) lives in a case's unpacked root.
const LAUNCHER_GUEST_PATH: &str = "/.kiln-compat/busybox";

/// Puts the launcher and the perturbing library into a case's unpacked
/// root, under /.kiln-compat.
fn install_native_helpers(root: &Path, perturb: &Path) -> Result<()> {
    let inside = |guest: &str| root.join(guest.trim_start_matches('/'));
    std::fs::create_dir_all(inside("/.kiln-compat"))?;
    let busybox = host::which("busybox").context("busybox is missing: run `cargo xtask deps`")?;
    std::fs::copy(&busybox, inside(LAUNCHER_GUEST_PATH))
        .with_context(|| format!("copying {} into the unpacked root", busybox.display()))?;
    std::fs::copy(perturb, inside(PERTURB_GUEST_PATH))
        .context("copying the perturbing library into the unpacked root")?;
    Ok(())
}

/// Builds tests/compat/perturb.c, the library preloaded into the second
/// native run; returns its host path.
fn perturb_library() -> Result<PathBuf> {
    let bin = work_dir().join("bin");
    std::fs::create_dir_all(&bin)?;
    let out = bin.join("perturb.so");
    build::run(
        Command::new("gcc")
            .args(C_FLAGS)
            .args(["-shared", "-fPIC"])
            .arg(compat_dir().join("perturb.c"))
            .arg("-o")
            .arg(&out)
            .arg("-ldl"),
    )?;
    Ok(out)
}

/// The environment of the second native run: the case's own, plus what
/// makes leftover memory look different (see perturb.c).
fn perturbed_env(env: &[String]) -> Vec<String> {
    let mut env = env.to_vec();
    env.push(format!("LD_PRELOAD={PERTURB_GUEST_PATH}"));
    env.push("MALLOC_PERTURB_=165".to_owned());
    // Moves everything the kernel puts on the initial stack.
    env.push(format!("KILN_COMPAT_PAD={}", "p".repeat(3000)));
    env
}

/// Builds (or finds) the case's program; returns its host path.
fn program(case: &Case) -> Result<PathBuf> {
    let bin = work_dir().join("bin");
    std::fs::create_dir_all(&bin)?;
    let out = bin.join(&case.name);
    let src = |s: &str| compat_dir().join(s);
    let mut cmd = if let Some(s) = &case.c {
        let mut c = Command::new("gcc");
        c.args(C_FLAGS).arg(src(s));
        c
    } else if let Some(s) = &case.c_static {
        let mut c = Command::new("gcc");
        c.args(C_FLAGS).arg("-static").arg(src(s));
        c
    } else if let Some(s) = &case.rust {
        let mut c = Command::new("rustc");
        c.args(["-O", "--edition", "2021", "-C", "strip=symbols"])
            .arg(src(s));
        c
    } else if let Some(s) = &case.go {
        let mut c = Command::new("go");
        c.args(["build", "-ldflags=-s -w", "-trimpath"])
            .env("CGO_ENABLED", "0")
            .env("GOCACHE", work_dir().join("go-cache"))
            .env("GOPATH", work_dir().join("go-path"))
            .env("GO111MODULE", "off")
            .arg("-o")
            .arg(&out)
            .arg(src(s));
        build::run(&mut c)?;
        return Ok(out);
    } else if case.python.is_some() {
        return python::interpreter();
    } else if let Some(p) = &case.program {
        return Ok(PathBuf::from(p));
    } else {
        bail!("case {} names no program", case.name);
    };
    cmd.arg("-o").arg(&out);
    build::run(&mut cmd)?;
    Ok(out)
}

/// tests/compat/data plus derived files (a tar archive and a gzip file,
/// both reproducible), in target/compat/data.
fn prepare_data() -> Result<PathBuf> {
    let data = work_dir().join("data");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(work_dir())?;
    build::run(
        Command::new("cp")
            .arg("-a")
            .arg(compat_dir().join("data"))
            .arg(&data),
    )?;
    build::run(
        Command::new("tar")
            .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0"])
            .args(["--numeric-owner", "--format=ustar", "-cf", "archive.tar"])
            .args(["tree", "words.txt"])
            .current_dir(&data),
    )?;
    let gz = Command::new("gzip")
        .args(["-9", "-n", "-c", "words.txt"])
        .current_dir(&data)
        .output()
        .context("running gzip")?;
    if !gz.status.success() {
        bail!("gzip failed");
    }
    std::fs::write(data.join("words.txt.gz"), gz.stdout)?;
    Ok(data)
}

/// Every file under `dir`, as (host path, path relative to `dir`).
fn files_under(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir)?.to_string_lossy().into_owned();
                out.push((p, rel));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A TOML basic string.
pub fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Writes the case's manifest and builds its image; returns the image.
fn build_image(case: &Case, prog: &Path, guest: &str, data: &Path, kiln: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = work_dir().join("cases").join(&case.name);
    std::fs::create_dir_all(&dir)?;
    let mut m = String::new();
    writeln!(
        m,
        "name = {}",
        toml_string(&format!("compat-{}", case.name))
    )?;
    writeln!(m, "version = \"0.0.0\"\n\n[program]")?;
    writeln!(m, "path = {}", toml_string(&prog.to_string_lossy()))?;
    writeln!(m, "guest_path = {}", toml_string(guest))?;
    let args: Vec<String> = case.program_args().iter().map(|a| toml_string(a)).collect();
    writeln!(m, "args = [{}]", args.join(", "))?;
    if let Some(script) = &case.python {
        let host_script = compat_dir().join(script);
        let modules = python::modules(prog, &host_script, &case.args)?;
        let libs: Vec<String> = modules.extensions.iter().map(|l| toml_string(l)).collect();
        writeln!(m, "libraries = [{}]", libs.join(", "))?;
        let script_file = (host_script, Case::script_guest_path(script));
        let module_files = modules
            .files
            .iter()
            .map(|f| (f.clone(), f.display().to_string()));
        for (src, dst) in std::iter::once(script_file).chain(module_files) {
            writeln!(m, "\n[[files]]")?;
            writeln!(m, "src = {}", toml_string(&src.to_string_lossy()))?;
            writeln!(m, "dst = {}", toml_string(&dst))?;
        }
    }
    for (host_path, rel) in files_under(data)? {
        let mode = std::fs::metadata(&host_path)?.permissions().mode() & 0o7777;
        writeln!(m, "\n[[files]]")?;
        writeln!(m, "src = {}", toml_string(&host_path.to_string_lossy()))?;
        writeln!(m, "dst = {}", toml_string(&format!("/data/{rel}")))?;
        writeln!(m, "mode = \"{mode:04o}\"")?;
    }
    writeln!(m, "\n[vm]\nmemory = 256")?;
    if let Some(n) = case.vcpus {
        writeln!(m, "vcpus = {n}")?;
    }
    let manifest = dir.join("kiln.toml");
    std::fs::write(&manifest, m)?;
    let image = dir.join("image.kiln");
    build::kiln_build(kiln, &manifest, &image)?;
    Ok(image)
}

/// The script the native run executes inside its namespaces: /proc, the
/// devices and the host name as kiln has them, then the program in the
/// chroot (as a child, so that it is not the PID namespace's init, which
/// Linux shields from default signal actions).
const NATIVE_SCRIPT: &str = r#"set -e
root=$1; shift
mkdir -p "$root/proc" "$root/dev" "$root/tmp"
mount -t proc proc "$root/proc"
for d in null zero full random urandom; do
    : > "$root/dev/$d"
    mount --bind "/dev/$d" "$root/dev/$d"
done
hostname kiln
# A volume case: its directory is a mount of its own, as in kiln (a rename
# across it is EXDEV in both).
if [ -n "${VOLUME_AT:-}" ]; then
    mkdir -p "$root$VOLUME_AT"
    mount --bind "$VOLUME_DIR" "$root$VOLUME_AT"
fi
# The shell's own messages ("Terminated" for a program killed by a signal)
# go nowhere; the program's stderr is fd 3, the real one. (Run in the
# background and waited for, or dash reports on the program's stderr.)
exec 3>&2 2>/dev/null
"$@" < /dev/null 2>&3 3>&- &
wait $!
"#;

fn native_run(
    root: &Path,
    env: &[String],
    guest: &str,
    args: &[String],
    volume: Option<&str>,
) -> Result<Output> {
    let mut cmd = Command::new("timeout");
    if let Some(at) = volume {
        let dir = root.with_file_name("volume-native");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        cmd.env("VOLUME_AT", at).env("VOLUME_DIR", &dir);
    } else {
        cmd.env_remove("VOLUME_AT");
    }
    cmd.args(["-k", "5", "120", "unshare"]);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        cmd.args(["--user", "--map-root-user"]);
    }
    cmd.args(["--mount", "--uts", "--pid", "--fork", "--kill-child"])
        .args(["sh", "-c", NATIVE_SCRIPT, "sh"])
        .arg(root)
        .args(["env", "-i", "/usr/sbin/chroot"])
        .arg(root)
        // The environment is set inside the chroot, by a static program, so
        // that the host's dynamic chroot never sees the perturbed run's
        // LD_PRELOAD.
        .args([LAUNCHER_GUEST_PATH, "env", "-i"])
        .args(env)
        .arg(guest)
        .args(args)
        .stdin(Stdio::null());
    // The program in kiln starts with descriptors 0-2 only; natively it
    // would inherit whatever the caller of xtask left open (CI harnesses
    // do), so every other descriptor is marked close-on-exec.
    // SAFETY: the closure runs between fork and exec and only makes one
    // async-signal-safe system call.
    unsafe {
        cmd.pre_exec(|| {
            const CLOSE_RANGE_CLOEXEC: libc::c_long = 1 << 2;
            if libc::syscall(
                libc::SYS_close_range,
                3,
                libc::c_uint::MAX,
                CLOSE_RANGE_CLOEXEC,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().context("running the native side (unshare)")
}

fn kiln_run(kiln: &Path, image: &Path, trace: bool, volume: Option<&str>) -> Result<Output> {
    let mut cmd = Command::new(kiln);
    cmd.arg("run").args(["--timeout", "120"]);
    if trace {
        cmd.arg("--trace-syscalls");
    }
    if let Some(guest) = volume {
        // A fresh, empty host directory each run, as the native side's.
        let host = image.with_file_name("volume");
        let _ = std::fs::remove_dir_all(&host);
        std::fs::create_dir_all(&host)?;
        cmd.arg("-v").arg(format!("{}:{guest}", host.display()));
    }
    cmd.arg(image).stdin(Stdio::null());
    cmd.output().context("running kiln")
}

fn code(o: &Output) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    o.status
        .code()
        .unwrap_or_else(|| 128 + o.status.signal().unwrap_or(0))
}

/// stderr without kiln's own report of a fatal signal.
fn program_stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| !l.starts_with("kiln: program killed by "))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The first line where `a` (native) and `b` (the run called `b_name`)
/// differ.
fn first_difference(what: &str, a: &str, b: &str, b_name: &str) -> Option<String> {
    if a == b {
        return None;
    }
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let i = la
        .iter()
        .zip(&lb)
        .position(|(x, y)| x != y)
        .unwrap_or(la.len().min(lb.len()));
    let show = |v: &[&str]| {
        v.get(i)
            .map_or("(end)".to_owned(), |l| format!("`{}`", l.trim()))
    };
    Some(format!(
        "{what} line {}: native {}, {b_name} {}",
        i + 1,
        show(&la),
        show(&lb)
    ))
}

/// System calls that failed in a `--trace-syscalls` stderr: the
/// unimplemented ones (ENOSYS) first, then the last few other failures.
fn failing_syscalls(trace: &str) -> Vec<String> {
    let mut enosys = BTreeSet::new();
    let mut others: Vec<String> = Vec::new();
    for line in trace.lines() {
        let Some((call, result)) = line.rsplit_once(") = ") else {
            continue;
        };
        let name = call.split('(').next().unwrap_or("").trim().to_owned();
        if name.is_empty() || !result.starts_with("-1 ") {
            continue;
        }
        let errno = result[3..]
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_owned();
        if errno == "ENOSYS" {
            enosys.insert(format!("{name} ENOSYS"));
        } else {
            let entry = format!("{name} {errno}");
            others.retain(|o| o != &entry);
            others.push(entry);
        }
    }
    let tail = others.len().saturating_sub(4);
    enosys.into_iter().chain(others.drain(tail..)).collect()
}

/// Where two runs' stdout, stderr and exit status differ (empty when they
/// match); `a` is the native run, `b` the other.
fn differences(a: &Output, b: &Output, b_name: &str) -> Vec<String> {
    let out = |o: &Output| String::from_utf8_lossy(&o.stdout).into_owned();
    let mut found: Vec<String> = [
        first_difference("stdout", &out(a), &out(b), b_name),
        first_difference("stderr", &program_stderr(a), &program_stderr(b), b_name),
    ]
    .into_iter()
    .flatten()
    .collect();
    if code(a) != code(b) {
        found.push(format!(
            "exit status: native {}, {b_name} {}",
            code(a),
            code(b)
        ));
    }
    found
}

fn run_case(case: &Case, data: &Path, kiln: &Path, perturb: &Path) -> Result<Outcome> {
    let (guest, description) = describe(case)?;
    let prog = program(case)?;
    let image = build_image(case, &prog, &guest, data, kiln)?;
    let image_bytes = std::fs::metadata(&image)?.len();
    let env = appliance::config(kiln, &image)?.env;
    let root = work_dir().join("cases").join(&case.name).join("root");
    // Each native run gets a freshly unpacked root: programs change files.
    let native_in_fresh_root = |env: &[String]| -> Result<Output> {
        appliance::unpack(kiln, &image, &root)?;
        install_native_helpers(&root, perturb)?;
        let out = native_run(
            &root,
            env,
            &guest,
            &case.program_args(),
            case.volume.as_deref(),
        );
        let _ = std::fs::remove_dir_all(&root);
        out
    };
    let native = native_in_fresh_root(&env)?;
    let perturbed = native_in_fresh_root(&perturbed_env(&env))?;
    let volume = case.volume.as_deref();
    let guest_run = kiln_run(kiln, &image, false, volume)?;
    let mut found: Vec<String> = differences(&native, &perturbed, "perturbed native")
        .into_iter()
        .map(|d| format!("native output depends on leftover memory ({d})"))
        .collect();
    found.extend(differences(&native, &guest_run, "kiln"));
    let passed = found.is_empty();
    let traced = kiln_run(kiln, &image, true, volume)?;
    let failing = failing_syscalls(&String::from_utf8_lossy(&traced.stderr));
    let unimplemented = failing
        .iter()
        .filter_map(|f| f.strip_suffix(" ENOSYS").map(str::to_owned))
        .collect();
    let failing = if passed { Vec::new() } else { failing };
    Ok(Outcome {
        name: case.name.clone(),
        area: case.area.clone(),
        program: description,
        passed,
        difference: found.join("; "),
        failing_syscalls: failing,
        unimplemented,
        native_status: code(&native),
        kiln_status: code(&guest_run),
        image_bytes,
    })
}

fn markdown(outcomes: &[Outcome]) -> String {
    let passed = outcomes.iter().filter(|o| o.passed).count();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Linux compatibility\n\n\
         Generated by `cargo xtask compat` (do not edit). Each case runs the same\n\
         program twice — natively, chrooted into the image's unpacked root file\n\
         system, and inside kiln — with the same arguments, environment and empty\n\
         stdin, and compares stdout, stderr and the exit status byte for byte.\n\
         The native side runs a second time with the stack and heap prefilled\n\
         with a non-zero pattern and a larger environment; a case whose two\n\
         native runs differ reads memory it never wrote and counts as differing.\n\
         The cases are listed in `tests/compat/cases.toml`; the C programs and\n\
         data are beside it.\n\n\
         **{passed} of {} cases match.**\n",
        outcomes.len()
    );
    let _ = writeln!(
        md,
        "| case | area | program | image | exit | result | ENOSYS seen |\n\
         |---|---|---|---:|---:|---|---|"
    );
    for o in outcomes {
        let result = if o.passed {
            "same".to_owned()
        } else {
            format!(
                "**differs**: {}; failing calls: {}",
                o.difference.replace('|', "\\|"),
                o.failing_syscalls.join(", ")
            )
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} KiB | {} | {} | {} |",
            o.name,
            o.area,
            o.program.replace('|', "\\|"),
            o.image_bytes / 1024,
            o.kiln_status,
            result,
            o.unimplemented.join(", ")
        );
    }
    let _ = writeln!(
        md,
        "\n\"ENOSYS seen\" lists the system calls kiln answered with ENOSYS in the\n\
         run (from `--trace-syscalls`); the programs cope, as on older Linux\n\
         kernels. `rseq` is glibc registering restartable sequences, `socket`\n\
         glibc looking for nscd. Not covered yet: fork, vfork and execve fail with\n\
         ENOSYS (kiln runs one program), so shell scripts use builtins only and\n\
         pipelines of programs cannot run."
    );
    md
}

/// Runs the suite.
///
/// # Errors
/// When a case cannot be built or run, or when any case differs.
pub fn run(args: &CompatArgs) -> Result<()> {
    if !host::kvm_available() {
        bail!("cargo xtask compat needs /dev/kvm");
    }
    for tool in ["unshare", "timeout", "tar", "gzip", "gcc", "rustc", "go"] {
        if !host::has(tool) {
            bail!("{tool} is missing: run `cargo xtask deps`");
        }
    }
    let start = Instant::now();
    build::kernel()?;
    let kiln = build::kiln_release()?;
    let text = std::fs::read_to_string(compat_dir().join("cases.toml"))?;
    let file: CaseFile = toml::from_str(&text).context("parsing tests/compat/cases.toml")?;
    let cases: Vec<Case> = file
        .case
        .into_iter()
        .filter(|c| {
            args.only
                .as_ref()
                .is_none_or(|o| c.name.contains(o.as_str()))
        })
        .collect();
    if cases.is_empty() {
        bail!("no case matches");
    }
    let data = prepare_data()?;
    let perturb = perturb_library()?;
    let mut outcomes = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let t = Instant::now();
        let o = run_case(case, &data, &kiln, &perturb)
            .with_context(|| format!("case {}", case.name))?;
        eprintln!(
            "compat [{:>2}/{}] {:<24} {} ({:.1} s){}",
            i + 1,
            cases.len(),
            o.name,
            if o.passed { "same" } else { "DIFFERS" },
            t.elapsed().as_secs_f64(),
            if o.passed {
                String::new()
            } else {
                format!(
                    "\n    {}\n    failing: {}",
                    o.difference,
                    o.failing_syscalls.join(", ")
                )
            }
        );
        outcomes.push(o);
    }
    let json = work_dir().join("report.json");
    std::fs::write(&json, serde_json::to_vec_pretty(&outcomes)?)?;
    if !args.no_report && args.only.is_none() {
        let md = paths::root().join("docs").join("compat.md");
        build::write_atomically(&md, markdown(&outcomes).as_bytes())?;
        eprintln!("compat: wrote {} and {}", md.display(), json.display());
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.passed)
        .map(|o| o.name.as_str())
        .collect();
    eprintln!(
        "compat: {} of {} cases match ({:.0} s)",
        outcomes.len() - failed.len(),
        outcomes.len(),
        start.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        bail!("cases that differ: {}", failed.join(", "));
    }
    Ok(())
}
