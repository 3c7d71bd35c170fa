//! `cargo xtask hostile`: the hostile-guest suite. Guest programs that do
//! what a compromised guest kernel could (kiln runs every program at the
//! guest kernel's privilege level): tests/programs/attacker.c writes wild
//! ports and MMIO, floods the console, triple-faults, spins with
//! interrupts off, exhausts memory, threads and processes, stomps on the
//! page tables, kernel text, boot data and all of RAM, loads garbage into
//! the IDT, CR0 and MSRs, storms timer interrupts and IPIs;
//! tests/programs/hostile.c hands a device broken queues, and probe.c's
//! fork bomb meets EAGAIN. Each case must
//! end with its expected exit status and message within its time bound,
//! with kiln-vmm's memory bounded and no process of the run left behind;
//! a spinning guest must end on SIGTERM and SIGINT. Prints a table and
//! fails on the first case that does not hold.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use xtask::{build, host, paths};

/// How a case may end.
struct Case {
    /// The program (`attacker` or `hostile`) and its mode.
    program: &'static str,
    mode: &'static str,
    /// Exit statuses that are a clean end for it.
    statuses: &'static [i32],
    /// Text the VMM's or kernel's message (stderr) or the program's
    /// output (stdout) must contain, when there is one to expect.
    needle: Option<&'static str>,
    /// A signal sent to kiln-vmm after one second, if any.
    signal: Option<i32>,
}

const fn case(program: &'static str, mode: &'static str, statuses: &'static [i32]) -> Case {
    Case {
        program,
        mode,
        statuses,
        needle: None,
        signal: None,
    }
}

const fn with(mut c: Case, needle: &'static str) -> Case {
    c.needle = Some(needle);
    c
}

/// The guest's `--timeout` (seconds): spinning cases end on it.
const TIMEOUT: u64 = 10;
/// Wall time a case may take beyond the timeout.
const SLACK: Duration = Duration::from_secs(10);
/// kiln-vmm's largest resident set allowed (the guest has 64 MiB).
const MAX_RSS_KIB: i64 = 512 << 10;

const A: &str = "attacker";
const H: &str = "hostile";
const P: &str = "probe";

/// The cases, in the order they run.
const CASES: &[Case] = &[
    with(case(A, "ports", &[0]), "wrote every port"),
    with(case(A, "port-reads", &[0]), "read every port"),
    with(case(A, "mmio", &[0]), "mmio done"),
    case(A, "console-flood", &[0]),
    with(case(A, "triple-fault", &[125]), "triple-faulted"),
    with(case(A, "cli-spin", &[124]), "longer than --timeout"),
    with(case(A, "cli-hlt", &[124]), "longer than --timeout"),
    with(case(A, "memory", &[137]), "out of guest memory"),
    with(case(A, "stack", &[139]), "SIGSEGV"),
    with(case(A, "msr-writes", &[0]), "msr writes done"),
    with(case(A, "msr-reads", &[0]), "msr reads done"),
    with(case(A, "cpuid", &[0]), "cpuid done"),
    with(case(A, "ud2", &[132]), "SIGILL"),
    case(A, "int-vectors", &[0, 125, 139]),
    case(A, "kernel-text", &[124, 125]),
    case(A, "page-tables", &[124, 125]),
    case(A, "boot-data", &[0, 124, 125]),
    case(A, "ram", &[124, 125]),
    case(A, "idt", &[124, 125]),
    case(A, "cr0", &[125, 139]),
    with(case(A, "timer-storm", &[0]), "timer storm done"),
    with(case(A, "ipi-storm", &[0]), "ipi storm done"),
    case(A, "hypercalls", &[0, 132, 139]),
    case(A, "threads", &[0, 137]),
    with(case(P, "forkbomb", &[0]), "then EAGAIN"),
    with(case(A, "mappings", &[137]), "out of guest memory"),
    with(case(A, "signals", &[0]), "signals caught: 1"),
    with(case(A, "exit-port", &[125]), "invalid exit value"),
    with(case(H, "outside", &[0]), "needs reset"),
    with(case(H, "index", &[0]), "needs reset"),
    with(case(H, "loop", &[0]), "needs reset"),
    with(case(H, "length", &[0]), "needs reset"),
    with(case(H, "rings", &[0]), "needs reset"),
    with(case(H, "setup", &[0]), "needs reset"),
    Case {
        signal: Some(libc::SIGTERM),
        ..case(A, "cli-spin", &[128 + libc::SIGTERM])
    },
    Case {
        signal: Some(libc::SIGINT),
        ..case(A, "cli-spin", &[128 + libc::SIGINT])
    },
];

/// Options of `hostile`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct HostileArgs {
    /// Only the cases whose mode contains this text
    #[arg(long, value_name = "TEXT")]
    pub only: Option<String>,
}

/// Processes whose command line contains `needle` (what a run may leave).
fn processes_with(needle: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != std::process::id())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

/// One case: (status, seconds, kiln-vmm's largest resident set in KiB,
/// what stdout and stderr said).
fn run_case(vmm: &Path, program: &Path, c: &Case) -> Result<(i32, f64, i64, String)> {
    let start = Instant::now();
    let mut child = Command::new(vmm)
        .arg("--kernel")
        .arg(paths::kernel())
        .args(["--timeout", &TIMEOUT.to_string(), "--app"])
        .arg(program)
        .args(["--", c.mode])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", vmm.display()))?;
    // Drain both pipes (the console flood writes 64 MiB), keeping only
    // the ends.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut tail = Vec::new();
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0u64;
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n as u64;
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 8192 {
                    tail.drain(..tail.len() - 4096);
                }
            }
            (total, String::from_utf8_lossy(&tail).into_owned())
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped")));
    let err = drain(Box::new(child.stderr.take().expect("piped")));
    if let Some(sig) = c.signal {
        std::thread::sleep(Duration::from_secs(1));
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, sig) };
    }
    let bound = Duration::from_secs(TIMEOUT) + SLACK;
    let pid = child.id() as libc::pid_t;
    // wait4 rather than Child::wait: it reports this child's own largest
    // resident set.
    let (wait_status, usage) = loop {
        let mut wait_status = 0;
        // SAFETY: an all-zero rusage is valid; wait4 fills it in.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 on our own child, with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut wait_status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break (wait_status, usage);
        }
        if r < 0 {
            bail!(
                "{} {}: wait4 failed: {}",
                c.program,
                c.mode,
                std::io::Error::last_os_error()
            );
        }
        if start.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{} {}: still running after {bound:?}", c.program, c.mode);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let seconds = start.elapsed().as_secs_f64();
    let (out_bytes, out_tail) = out.join().expect("stdout reader");
    let (_, err_tail) = err.join().expect("stderr reader");
    let code = if libc::WIFEXITED(wait_status) {
        libc::WEXITSTATUS(wait_status)
    } else if libc::WIFSIGNALED(wait_status) {
        128 + libc::WTERMSIG(wait_status)
    } else {
        -1
    };
    if c.mode == "console-flood" && code == 0 && out_bytes != 64 << 20 {
        bail!("console-flood: {out_bytes} bytes of output arrived, not 64 MiB");
    }
    Ok((
        code,
        seconds,
        usage.ru_maxrss,
        format!("{out_tail}\n{err_tail}"),
    ))
}

/// Runs the suite.
///
/// # Errors
/// When a case ends otherwise than expected, takes too long, uses too much
/// memory or leaves a process behind; or KVM is missing.
pub fn run(args: &HostileArgs) -> Result<()> {
    if !host::kvm_available() {
        bail!("the hostile-guest suite needs /dev/kvm");
    }
    build::kernel()?;
    let programs = build::programs()?;
    let vmm = build::vmm_release()?;
    let cases: Vec<&Case> = CASES
        .iter()
        .filter(|c| args.only.as_deref().is_none_or(|o| c.mode.contains(o)))
        .collect();
    if cases.is_empty() {
        bail!("no hostile case matches {:?}", args.only);
    }
    println!(
        "hostile: {} cases, --timeout {TIMEOUT}s, kiln-vmm at most {} MiB resident",
        cases.len(),
        MAX_RSS_KIB >> 10
    );
    println!(
        "  {:<28} {:>6} {:>8}  how it ended",
        "case", "status", "seconds"
    );
    let mut largest = 0;
    for c in cases {
        let program = programs.join(c.program);
        let (code, seconds, rss, said) = run_case(&vmm, &program, c)?;
        largest = largest.max(rss);
        let name = match c.signal {
            Some(s) if s == libc::SIGTERM => format!("{} {} + SIGTERM", c.program, c.mode),
            Some(_) => format!("{} {} + SIGINT", c.program, c.mode),
            None => format!("{} {}", c.program, c.mode),
        };
        let last = said
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("")
            .chars()
            .take(70)
            .collect::<String>();
        println!("  {name:<28} {code:>6} {seconds:>8.2}  {last}");
        if !c.statuses.contains(&code) {
            bail!(
                "{name}: exit status {code}, expected one of {:?}:\n{said}",
                c.statuses
            );
        }
        if let Some(needle) = c.needle {
            if !said.contains(needle) {
                bail!("{name}: expected {needle:?} in its output:\n{said}");
            }
        }
        if rss > MAX_RSS_KIB {
            bail!("{name}: kiln-vmm reached {} MiB resident", rss >> 10);
        }
        // The VM's teardown helper may outlive kiln-vmm by a few ms.
        let needle = program.to_string_lossy().into_owned();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !processes_with(&needle).is_empty() {
            if Instant::now() > deadline {
                bail!(
                    "{name}: processes left behind: {:?}",
                    processes_with(&needle)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    println!(
        "hostile: every case ended cleanly; kiln-vmm's largest resident set {} MiB",
        largest >> 10
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_suite_has_at_least_25_cases_and_every_mode_exists() {
        assert!(CASES.len() >= 25);
        let attacker = std::fs::read_to_string(paths::root().join("tests/programs/attacker.c"))
            .expect("attacker.c");
        let hostile = std::fs::read_to_string(paths::root().join("tests/programs/hostile.c"))
            .expect("hostile.c");
        let probe =
            std::fs::read_to_string(paths::root().join("tests/programs/probe.c")).expect("probe.c");
        for c in CASES {
            let source = match c.program {
                A => &attacker,
                H => &hostile,
                _ => &probe,
            };
            assert!(
                source.contains(&format!("\"{}\"", c.mode)),
                "{} has no mode {}",
                c.program,
                c.mode
            );
        }
    }
}
