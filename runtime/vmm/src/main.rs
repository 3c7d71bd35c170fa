//! `kiln-vmm`: boot the kiln guest kernel on KVM and run one static Linux
//! x86-64 program in it. The program's stdout and stderr become kiln-vmm's;
//! kiln-vmm's own messages go to stderr only; the exit status follows
//! `docker run`.
//!
//! The binary defines the C `main` itself (`no_main`): Rust's usual start-up
//! code installs a stack-overflow guard that makes glibc read
//! /proc/self/maps and polls the standard descriptors, which costs ~0.4 ms
//! of every boot on the test host; kiln-vmm needs neither. (Arguments still
//! reach `std::env::args`, which glibc hands to Rust's init hook.)
#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use kiln_vmm::cli::ConsoleSetup;
use kiln_vmm::cli::RunFlags;
use kiln_vmm::devices::legacy::console::Console;
use kiln_vmm::source::FileSlice;
use kiln_vmm::timings::Timings;
use kiln_vmm::vstate::kvm::Hypervisor;
use kiln_vmm::{bootinfo, VmConfig, VmmError};

/// Exit status for a failure of kiln-vmm or the guest kernel.
const EXIT_VMM_FAILURE: u8 = 125;
/// Exit status when the program cannot be started.
const EXIT_CANNOT_EXECUTE: u8 = 126;
/// Exit status when the program does not exist.
const EXIT_NOT_FOUND: u8 = 127;

use kiln_boot::DEFAULT_PATH_ENV as DEFAULT_PATH;

#[derive(Parser, Debug)]
#[command(
    name = "kiln-vmm",
    version,
    about = "Boot the kiln guest kernel on KVM and run one static Linux x86-64 program in it",
    long_about = "Boot the kiln guest kernel on KVM and run one unmodified, statically linked \
                  Linux x86-64 program in a fresh micro-VM. The program's stdout and stderr \
                  become kiln-vmm's, byte for byte; kiln-vmm's own messages go to stderr.",
    after_help = "Exit status (as docker run): the program's own status; 128+N when a signal N \
                  killed it (139 for a segmentation fault); 124 when --timeout stopped it; 125 \
                  when kiln-vmm or the guest kernel failed; 126 when the program cannot be \
                  executed; 127 when it does not exist.\n\n\
                  Example:\n  kiln-vmm --app ./hello --env GREETING=hi -- world"
)]
struct Cli {
    /// The program to run: a static x86-64 Linux ELF (ET_EXEC or static-pie)
    #[arg(long, value_name = "PROGRAM")]
    app: PathBuf,

    /// Arguments passed to the program (`argv[1..]`)
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<OsString>,

    /// Guest kernel ELF [default: $KILN_KERNEL, else kiln-kernel.elf next to kiln-vmm or up to two directories above]
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,

    /// Guest memory in MiB, 4 to 16384
    #[arg(long, value_name = "MiB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(
        kiln_boot::layout::MIN_MEMORY_MIB..=kiln_boot::layout::MAX_MEMORY_MIB))]
    memory: u64,

    /// Environment variable for the program, NAME=VALUE (repeatable; PATH has Docker's default)
    #[arg(long = "env", short = 'e', value_name = "NAME=VALUE")]
    env: Vec<OsString>,

    /// The program's path inside the guest (`argv[0]`, /proc/self/exe) [default: /<file name>]
    #[arg(long, value_name = "GUEST_PATH")]
    path: Option<String>,

    #[command(flatten)]
    run: RunFlags,

    /// Kernel options (for example kiln.syscall_rewrite=0 to keep every SYSCALL trapping)
    #[arg(long, value_name = "OPTIONS", default_value = "")]
    cmdline: String,

    /// Boot-info layout version to hand the kernel (for testing the boot contract)
    #[arg(long, hide = true, default_value_t = bootinfo::VERSION)]
    boot_info_version: u32,
}

/// A failure with the exit status it maps to.
struct Failure {
    status: u8,
    message: String,
}

impl Failure {
    fn vmm(message: impl Into<String>) -> Self {
        Self {
            status: EXIT_VMM_FAILURE,
            message: message.into(),
        }
    }
}

impl<E: Into<VmmError>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::vmm(e.into().to_string())
    }
}

/// The kernel to boot: --kernel, or kiln-vmm's default search.
fn find_kernel(explicit: Option<PathBuf>) -> Result<FileSlice, Failure> {
    let path = match explicit {
        Some(p) => p,
        None => kiln_vmm::source::default_kernel().map_err(|e| Failure::vmm(e.to_string()))?,
    };
    FileSlice::whole(&path).map_err(|e| {
        Failure::vmm(format!(
            "cannot open the guest kernel {}: {e}",
            path.display()
        ))
    })
}

/// Opens the program for mapping into the guest.
fn open_program(path: &Path) -> Result<FileSlice, Failure> {
    let cannot = |why: String| Failure {
        status: EXIT_CANNOT_EXECUTE,
        message: format!("cannot execute {}: {why}", path.display()),
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Failure {
                status: EXIT_NOT_FOUND,
                message: format!("program {} not found", path.display()),
            })
        }
        Err(e) => return Err(cannot(e.to_string())),
    };
    let meta = file.metadata().map_err(|e| cannot(e.to_string()))?;
    if !meta.is_file() {
        return Err(cannot("not a regular file".into()));
    }
    if meta.len() == 0 {
        return Err(cannot("an empty file, not an ELF program".into()));
    }
    Ok(FileSlice {
        file: std::sync::Arc::new(file),
        offset: 0,
        len: meta.len(),
        name: path.display().to_string(),
    })
}

fn config(cli: &Cli, console: &ConsoleSetup) -> Result<VmConfig, Failure> {
    let program = open_program(&cli.app)?;
    let guest_path = match &cli.path {
        Some(p) if p.starts_with('/') => p.clone(),
        Some(p) => return Err(Failure::vmm(format!("--path {p:?} must be absolute"))),
        None => format!(
            "/{}",
            cli.app
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ),
    };
    let mut argv = vec![guest_path.clone().into_bytes()];
    argv.extend(cli.args.iter().map(|a| a.clone().into_vec()));
    let mut envp = Vec::new();
    let mut has_path = false;
    for e in &cli.env {
        let bytes = e.clone().into_vec();
        if !bytes.contains(&b'=') || bytes[0] == b'=' {
            return Err(Failure::vmm(format!("--env {e:?} is not NAME=VALUE")));
        }
        has_path |= bytes.starts_with(b"PATH=");
        envp.push(bytes);
    }
    if !has_path {
        envp.insert(0, DEFAULT_PATH.as_bytes().to_vec());
    }
    let timeout = cli.run.timeout().map_err(|e| Failure::vmm(e.to_string()))?;
    Ok(VmConfig {
        snapshot: None,
        standby: None,
        kernel: find_kernel(cli.kernel.clone())?,
        kernel_digest: None,
        module: program,
        guest_path,
        argv,
        envp,
        memory_mib: cli.memory,
        timeout,
        trace_syscalls: cli.run.trace_syscalls,
        init: cli.run.init,
        cpus: cli.run.cpus.unwrap_or(1),
        stats: cli.run.stats,
        phases: cli.run.timings || cli.run.timings_json.is_some(),
        share_image: cli.run.share_image,
        background_teardown: true,
        seccomp: true,
        user: cli.run.user,
        boot_info_version: cli.boot_info_version,
        cmdline: cli.cmdline.clone(),
        stdin: console.stdin,
        terminal: console.terminal,
        net: cli.run.net.spec(&kiln_vmm::net::NetSpec::default()),
        vsock: cli.run.vsock.clone(),
        disks: cli.run.disks.clone(),
        volumes: cli.run.volumes.clone(),
    })
}

#[no_mangle]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    // As Rust's start-up would: a closed stdout is an EPIPE error the
    // console handles, not a fatal SIGPIPE.
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let code = real_main();
    let _ = std::io::Write::flush(&mut std::io::stdout());
    code
}

fn real_main() -> libc::c_int {
    let start = Instant::now();
    kiln_vmm::timings::note_main_start();
    let cli = Cli::parse();
    let outcome = cli
        .run
        .console()
        .map_err(|e| Failure::vmm(e.to_string()))
        .and_then(|console| {
            let config = config(&cli, &console)?;
            let hv = Hypervisor::open()?;
            let run = kiln_vmm::run(&hv, &config, Console::stdio(), Timings::new(start))?;
            // The host terminal is itself again before the report.
            drop(console);
            cli.run
                .report("kiln-vmm", &run)
                .map_err(|e| Failure::vmm(e.to_string()))?;
            Ok(run)
        });
    match outcome {
        Ok(run) => libc::c_int::from(run.exit_status()),
        Err(f) => {
            eprintln!("kiln-vmm: {}", f.message);
            libc::c_int::from(f.status)
        }
    }
}
