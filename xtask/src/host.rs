//! The host tools kiln's build and tests use, and installing the missing
//! ones (Debian packages) with a line saying what is installed.

use std::process::Command;

use anyhow::{bail, Context, Result};

/// A tool and the Debian package that provides it.
pub struct Tool {
    /// Command name looked up on PATH.
    pub command: &'static str,
    /// Debian package.
    pub package: &'static str,
    /// What kiln uses it for.
    pub purpose: &'static str,
}

/// Everything the tests need.
pub const TOOLS: &[Tool] = &[
    Tool {
        command: "gcc",
        package: "gcc",
        purpose: "static glibc test programs",
    },
    Tool {
        command: "musl-gcc",
        package: "musl-tools",
        purpose: "static musl test programs",
    },
    Tool {
        command: "as",
        package: "binutils",
        purpose: "the 32-bit ELF test program",
    },
    Tool {
        command: "qemu-system-x86_64",
        package: "qemu-system-x86",
        purpose: "booting the kernel on standard x86 (TCG)",
    },
    Tool {
        command: "busybox",
        package: "busybox-static",
        purpose: "the busybox shell-script example image and compat cases",
    },
    Tool {
        command: "gawk",
        package: "gawk",
        purpose: "a dynamically linked Debian program of the compat suite",
    },
    Tool {
        command: "go",
        package: "golang-go",
        purpose: "the static Go program of the compat suite",
    },
    Tool {
        command: "skopeo",
        package: "skopeo",
        purpose: "reading and copying what kiln exports and pushes (OCI tests)",
    },
    Tool {
        command: "docker-registry",
        package: "docker-registry",
        purpose: "the local OCI registry of the push/pull tests",
    },
    Tool {
        command: "htpasswd",
        package: "apache2-utils",
        purpose: "the registry's basic-auth password file (push/pull tests)",
    },
    Tool {
        command: "openssl",
        package: "openssl",
        purpose: "the self-signed CA of the registry TLS tests",
    },
    Tool {
        command: "passt",
        package: "passt",
        purpose: "user-mode networking (--net user) and its tests",
    },
    Tool {
        command: "ip",
        package: "iproute2",
        purpose: "network namespaces for the tap tests",
    },
    Tool {
        command: "python3",
        package: "python3",
        purpose: "socket clients inside the tap tests' network namespaces",
    },
    Tool {
        command: "nginx",
        package: "nginx-light",
        purpose: "the web server appliance (manifests/httpd.toml) and its tests",
    },
    Tool {
        command: "curl",
        package: "curl",
        purpose: "the HTTP client of the web server tests",
    },
    Tool {
        command: "wrk",
        package: "wrk",
        purpose: "the HTTP load of cargo xtask bench-net",
    },
    Tool {
        command: "sqlite3",
        package: "sqlite3",
        purpose: "the database CLI of cargo xtask bench-apps",
    },
    Tool {
        command: "zstd",
        package: "zstd",
        purpose: "the compressor of cargo xtask bench-apps",
    },
    Tool {
        command: "tmux",
        package: "tmux",
        purpose: "a real terminal for the -t tests",
    },
    Tool {
        command: "strace",
        package: "strace",
        purpose: "which process of kiln run opens the registry credentials (registry tests)",
    },
    Tool {
        command: "grub-mkimage",
        package: "grub-common",
        purpose: "making the UEFI boot loader of kiln export --disk",
    },
    Tool {
        command: GRUB_EFI_MODULE,
        package: "grub-efi-amd64-bin",
        purpose: "GRUB's UEFI modules for kiln export --disk",
    },
    Tool {
        command: "qemu-img",
        package: "qemu-utils",
        purpose: "checking exported qcow2 and VMDK disks",
    },
    Tool {
        command: "containerd",
        package: "containerd",
        purpose: "the containerd daemon and ctr of the shim tests (containerd-shim-kiln-v1)",
    },
];

/// Installs the tools of [`TOOLS`] named in `commands` where missing.
///
/// # Errors
/// When one is missing and cannot be installed.
pub fn ensure_named(commands: &[&str]) -> Result<()> {
    let tools: Vec<&Tool> = TOOLS
        .iter()
        .filter(|t| commands.contains(&t.command))
        .collect();
    ensure_tools_ref(&tools)
}

/// A file of GRUB's x86-64 UEFI build: grub-mkimage (grub-common) may be
/// installed without it.
pub const GRUB_EFI_MODULE: &str = "/usr/lib/grub/x86_64-efi/multiboot2.mod";

/// Where `command` is on PATH, if it is (an absolute path: that file).
pub fn which(command: &str) -> Option<std::path::PathBuf> {
    if command.starts_with('/') {
        let path = std::path::PathBuf::from(command);
        return path.is_file().then_some(path);
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(command))
        .find(|p| p.is_file())
}

/// Whether `command` is on PATH.
pub fn has(command: &str) -> bool {
    which(command).is_some()
}

/// Installs the Debian packages of missing tools (needs root and apt).
///
/// # Errors
/// When a tool is missing and cannot be installed.
pub fn ensure_tools(tools: &[Tool]) -> Result<()> {
    ensure_tools_ref(&tools.iter().collect::<Vec<_>>())
}

/// [`ensure_tools`] for tools picked out of [`TOOLS`].
///
/// # Errors
/// When a tool is missing and cannot be installed.
pub fn ensure_tools_ref(tools: &[&Tool]) -> Result<()> {
    let missing: Vec<&Tool> = tools.iter().copied().filter(|t| !has(t.command)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut packages: Vec<&str> = missing.iter().map(|t| t.package).collect();
    packages.dedup();
    for t in &missing {
        eprintln!(
            "xtask: installing Debian package {} ({} is missing; needed for {})",
            t.package, t.command, t.purpose
        );
    }
    if !has("apt-get") {
        bail!(
            "missing tools ({}) and no apt-get to install them; install: {}",
            missing
                .iter()
                .map(|t| t.command)
                .collect::<Vec<_>>()
                .join(", "),
            packages.join(" ")
        );
    }
    apt_install(&packages)?;
    // An install may remove another tool's package to resolve a conflict
    // (Debian's qemu-system-x86 removed a backported qemu-utils that the
    // machine came with): put back what went missing, at the distribution's
    // version that now fits.
    let lost: Vec<&Tool> = tools
        .iter()
        .copied()
        .filter(|t| !has(t.command) && !missing.iter().any(|m| m.command == t.command))
        .collect();
    if !lost.is_empty() {
        let mut again: Vec<&str> = lost.iter().map(|t| t.package).collect();
        again.dedup();
        for t in &lost {
            eprintln!(
                "xtask: installing Debian package {} again ({} went missing while installing the others)",
                t.package, t.command
            );
        }
        apt_install(&again)?;
    }
    for t in missing.iter().chain(&lost) {
        if !has(t.command) {
            bail!(
                "installed {} but {} is still not on PATH",
                t.package,
                t.command
            );
        }
    }
    Ok(())
}

/// Installs Debian `packages` with apt-get (through sudo unless root).
fn apt_install(packages: &[&str]) -> Result<()> {
    let sudo = if unsafe_is_root() {
        vec![]
    } else {
        vec!["sudo"]
    };
    let run = |args: &[&str]| -> Result<()> {
        let mut cmd = Command::new(sudo.first().copied().unwrap_or(args[0]));
        if sudo.is_empty() {
            cmd.args(&args[1..]);
        } else {
            cmd.args(args);
        }
        let status = cmd
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .with_context(|| format!("running {}", args.join(" ")))?;
        if !status.success() {
            bail!("`{}` failed ({status})", args.join(" "));
        }
        Ok(())
    };
    let mut install = vec!["apt-get", "install", "-y", "-q", "--no-install-recommends"];
    install.extend(packages);
    if run(&install).is_err() {
        run(&["apt-get", "update", "-q"])?;
        run(&install)?;
    }
    Ok(())
}

/// The virtiofsd version the volume tests are run with.
const VIRTIOFSD_VERSION: &str = "1.14.0";

/// Where `cargo install` puts programs.
fn cargo_bin() -> std::path::PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cargo")))
        .unwrap_or_default()
        .join("bin")
}

/// Makes sure virtiofsd (the daemon behind `kiln run -v`) is installed:
/// Debian 12 does not package it, so it is built from crates.io with
/// `cargo install` (about a minute), after Debian's libseccomp-dev and
/// libcap-ng-dev it links against.
///
/// # Errors
/// When apt or cargo fail.
pub fn ensure_virtiofsd() -> Result<()> {
    if has("virtiofsd") || cargo_bin().join("virtiofsd").is_file() {
        return Ok(());
    }
    eprintln!(
        "xtask: installing virtiofsd {VIRTIOFSD_VERSION} with cargo install (volume tests; needs libseccomp-dev, libcap-ng-dev)"
    );
    if has("apt-get") {
        apt_install(&["libseccomp-dev", "libcap-ng-dev", "pkg-config"])?;
    }
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "install",
            "--locked",
            "--quiet",
            "virtiofsd",
            "--version",
            VIRTIOFSD_VERSION,
        ])
        .status()
        .context("running cargo install virtiofsd")?;
    if !status.success() {
        bail!("`cargo install virtiofsd` failed ({status})");
    }
    Ok(())
}

fn unsafe_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether this host can run KVM guests (`/dev/kvm` readable and writable).
pub fn kvm_available() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Whether we run under CI (`CI=true`), where missing capabilities fail.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}
