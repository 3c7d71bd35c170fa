//! Building the guest kernel and the test programs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::paths;

/// Code-generation flags of the freestanding kernel (DESIGN.md): static
/// relocations in the top 2 GiB, no red zone (interrupts may arrive on the
/// kernel's stack), abort on panic.
pub const KERNEL_RUSTFLAGS: &str =
    "-C relocation-model=static -C code-model=kernel -C no-redzone=yes -C panic=abort -C strip=symbols";

/// The host target, given explicitly so that RUSTFLAGS apply to the kernel
/// only and not to build scripts.
pub const HOST_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Runs `cmd`, failing with the command line when it does not succeed.
///
/// # Errors
/// When the command cannot start or exits unsuccessfully.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

/// `cargo` with the kernel's flags and target directory, for `verb`
/// (`build`, `clippy`, …).
pub fn kernel_cargo(verb: &str) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(paths::root())
        .arg(verb)
        .args([
            "--package",
            "kiln-kernel",
            "--features",
            "kernel",
            "--release",
        ])
        .args(["--target", HOST_TARGET])
        .arg("--target-dir")
        .arg(paths::target().join("kernel"))
        .env("RUSTFLAGS", KERNEL_RUSTFLAGS)
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    cmd
}

/// Builds the guest kernel and copies it to `target/kiln-kernel.elf`.
///
/// # Errors
/// When cargo fails.
pub fn kernel() -> Result<PathBuf> {
    run(&mut kernel_cargo("build"))?;
    let built = paths::target()
        .join("kernel")
        .join(HOST_TARGET)
        .join("release")
        .join("kiln-kernel");
    let out = paths::kernel();
    copy_atomically(&built, &out)?;
    Ok(out)
}

/// Builds a release binary of `package`, statically linked: no dynamic
/// loader at start-up, which halves the time from exec to `main` on this
/// host. The explicit `--target` keeps the static flag away from proc-macros.
fn static_release(package: &str) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(Command::new(cargo)
        .current_dir(paths::root())
        .args([
            "build",
            "--quiet",
            "--release",
            "--package",
            package,
            "--target",
            HOST_TARGET,
        ])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS"))
}

/// Builds the release `kiln-vmm` (static).
///
/// # Errors
/// When cargo fails.
pub fn vmm_release() -> Result<PathBuf> {
    static_release("kiln-vmm")?;
    Ok(paths::vmm_release())
}

/// Builds the release `kiln` command (static).
///
/// # Errors
/// When cargo fails.
pub fn kiln_release() -> Result<PathBuf> {
    static_release("kiln-builder")?;
    Ok(paths::kiln_release())
}

/// Copies through a temporary file and a rename, so readers never see a
/// half-written file.
pub fn copy_atomically(from: &Path, to: &Path) -> Result<()> {
    let tmp = to.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::copy(from, &tmp)
        .with_context(|| format!("copying {} to {}", from.display(), tmp.display()))?;
    std::fs::rename(&tmp, to)
        .with_context(|| format!("renaming {} to {}", tmp.display(), to.display()))?;
    Ok(())
}

/// `kiln build MANIFEST -o IMAGE` with the freshly built guest kernel,
/// quietly; kiln's message is the error when it fails.
///
/// # Errors
/// When kiln cannot run or refuses the manifest.
pub fn kiln_build(kiln: &Path, manifest: &Path, image: &Path) -> Result<()> {
    let out = Command::new(kiln)
        .arg("build")
        .arg(manifest)
        .arg("-o")
        .arg(image)
        .arg("--kernel")
        .arg(paths::kernel())
        .arg("--quiet")
        .output()
        .with_context(|| format!("running {}", kiln.display()))?;
    if !out.status.success() {
        anyhow::bail!(
            "kiln build {} failed: {}",
            manifest.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Writes `bytes` to `to` through a temporary file and a rename.
pub fn write_atomically(to: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = to.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, to)
        .with_context(|| format!("renaming {} to {}", tmp.display(), to.display()))?;
    Ok(())
}

/// How one test program is built.
pub struct Program {
    /// Output file name under `target/programs/`.
    pub name: &'static str,
    /// Source file under `tests/`.
    pub source: &'static str,
    /// Compiler and flags (the source and `-o OUT` are appended).
    pub compile: &'static [&'static str],
}

/// The test and example programs.
pub const PROGRAMS: &[Program] = &[
    Program {
        name: "hello-glibc",
        source: "programs/hello.c",
        compile: &["gcc", "-static", "-O2"],
    },
    Program {
        name: "hello-musl",
        source: "programs/hello.c",
        compile: &["musl-gcc", "-static", "-O2"],
    },
    Program {
        name: "hello-rust",
        source: "programs/hello.rs",
        compile: &[
            "rustc",
            "-O",
            "-C",
            "target-feature=+crt-static",
            "-C",
            "strip=symbols",
        ],
    },
    Program {
        name: "echo",
        source: "programs/echo.rs",
        compile: &[
            "rustc",
            "-O",
            "-C",
            "target-feature=+crt-static",
            "-C",
            "strip=symbols",
        ],
    },
    Program {
        name: "idle",
        source: "programs/idle.c",
        compile: &["musl-gcc", "-static", "-O2"],
    },
    Program {
        name: "probe",
        source: "programs/probe.c",
        compile: &["musl-gcc", "-static", "-O2"],
    },
    Program {
        name: "tty",
        source: "programs/tty.c",
        compile: &["musl-gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror"],
    },
    Program {
        name: "vsock",
        source: "programs/vsock.c",
        compile: &["musl-gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror"],
    },
    Program {
        name: "counter",
        source: "programs/counter.c",
        compile: &["musl-gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror"],
    },
    Program {
        name: "durable",
        source: "programs/durable.c",
        compile: &["musl-gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror"],
    },
    Program {
        name: "iobench",
        source: "programs/iobench.c",
        compile: &["musl-gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror"],
    },
    Program {
        name: "hostile",
        source: "programs/hostile.c",
        compile: &["musl-gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror"],
    },
    Program {
        name: "attacker",
        source: "programs/attacker.c",
        compile: &[
            "gcc", "-static", "-O2", "-pthread", "-Wall", "-Wextra", "-Werror",
        ],
    },
    Program {
        name: "threads",
        source: "compat/threads.c",
        compile: &["gcc", "-static", "-O2", "-pthread"],
    },
    Program {
        name: "smp",
        source: "programs/smp.c",
        compile: &[
            "gcc", "-static", "-O2", "-pthread", "-Wall", "-Wextra", "-Werror",
        ],
    },
    Program {
        name: "sysbench",
        source: "programs/sysbench.c",
        compile: &["gcc", "-static", "-O2", "-pthread"],
    },
    Program {
        name: "signals",
        source: "compat/signals.c",
        compile: &["gcc", "-static", "-O2", "-pthread"],
    },
];

fn up_to_date(out: &Path, source: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    matches!((modified(out), modified(source)), (Some(o), Some(s)) if o >= s)
}

/// Builds every program of [`PROGRAMS`] plus the 32-bit ELF `x32` into
/// `target/programs/`, skipping those already newer than their source and
/// built with the same recipe.
///
/// # Errors
/// When a compiler is missing or fails.
pub fn programs() -> Result<PathBuf> {
    let out_dir = paths::programs();
    std::fs::create_dir_all(&out_dir)?;
    let tests_dir = paths::root().join("tests");
    for p in PROGRAMS {
        let source = tests_dir.join(p.source);
        let out = out_dir.join(p.name);
        let recipe = out.with_extension("recipe");
        let wanted = p.compile.join(" ");
        let same_recipe = std::fs::read_to_string(&recipe).is_ok_and(|r| r == wanted);
        if same_recipe && up_to_date(&out, &source) {
            continue;
        }
        let tmp = out.with_extension("tmp");
        run(Command::new(p.compile[0])
            .args(&p.compile[1..])
            .arg(&source)
            .arg("-o")
            .arg(&tmp))?;
        std::fs::rename(&tmp, &out)?;
        std::fs::write(&recipe, wanted)?;
    }
    let x32 = out_dir.join("x32");
    let source = tests_dir.join("programs").join("x32.s");
    if !up_to_date(&x32, &source) {
        let obj = out_dir.join("x32.o");
        run(Command::new("as")
            .arg("--32")
            .arg(&source)
            .arg("-o")
            .arg(&obj))?;
        run(Command::new("ld")
            .args(["-m", "elf_i386"])
            .arg(&obj)
            .arg("-o")
            .arg(&x32))?;
        std::fs::remove_file(&obj)?;
    }
    Ok(out_dir)
}
