//! End-to-end tests of kiln-vmm on this host's KVM: real programs, real
//! guest kernel, compared byte for byte with the same binaries run natively.

mod common;

use std::process::{Command, Output};

use common::{kvm_or_skip, native, status, stderr, stdout};

/// The kiln-vmm binary under test, with the freshly built kernel.
fn vmm() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln-vmm"));
    cmd.arg("--kernel").arg(xtask::paths::kernel());
    cmd
}

/// Boots `name` with `args` and `env` (NAME=VALUE) under kiln-vmm, the
/// guest path `/name`.
fn boot(name: &str, extra: &[&str], args: &[&str], env: &[&str]) -> Output {
    let mut cmd = vmm();
    cmd.arg("--app").arg(common::program(name)).args(extra);
    for e in env {
        cmd.args(["--env", e]);
    }
    cmd.arg("--").args(args);
    cmd.output().expect("kiln-vmm runs")
}

const GREETING: &str = "GREETING=hello from the tests";

fn assert_same_as_native(name: &str, extra: &[&str]) {
    let args = ["first", "second arg", ""];
    let guest = boot(name, extra, &args, &[GREETING]);
    let host = native(name, &args, &[GREETING]);
    assert_eq!(
        stdout(&guest),
        stdout(&host),
        "{name}: stdout differs; kiln stderr: {}",
        stderr(&guest)
    );
    assert_eq!(stderr(&guest), stderr(&host), "{name}: stderr differs");
    assert_eq!(status(&guest), status(&host), "{name}: exit status differs");
    assert!(
        stdout(&guest).contains("hello from the tests"),
        "{name}: {}",
        stdout(&guest)
    );
}

#[test]
fn glibc_static_hello_matches_native() {
    if kvm_or_skip("glibc_static_hello_matches_native") {
        assert_same_as_native("hello-glibc", &[]);
    }
}

#[test]
fn musl_static_hello_matches_native() {
    if kvm_or_skip("musl_static_hello_matches_native") {
        assert_same_as_native("hello-musl", &[]);
    }
}

#[test]
fn rust_static_pie_hello_matches_native() {
    if kvm_or_skip("rust_static_pie_hello_matches_native") {
        assert_same_as_native("hello-rust", &[]);
    }
}

#[test]
fn threads_futexes_and_sleeps_match_native() {
    if !kvm_or_skip("threads_futexes_and_sleeps_match_native") {
        return;
    }
    let guest = boot("threads", &[], &[], &[]);
    let host = native("threads", &[], &[]);
    assert_eq!(
        stdout(&guest),
        stdout(&host),
        "kiln stderr: {}",
        stderr(&guest)
    );
    assert_eq!(status(&guest), 0, "{}", stderr(&guest));
    assert!(stdout(&guest).contains("counter 160000 (expected 160000)"));
}

#[test]
fn signal_handlers_timers_and_default_actions_match_native() {
    if !kvm_or_skip("signal_handlers_timers_and_default_actions_match_native") {
        return;
    }
    let guest = boot("signals", &[], &[], &[]);
    let host = native("signals", &[], &[]);
    assert_eq!(
        stdout(&guest),
        stdout(&host),
        "kiln stderr: {}",
        stderr(&guest)
    );
    assert_eq!(status(&guest), 143, "{}", stderr(&guest));
    assert_eq!(status(&host), 143);
    assert!(stdout(&guest).contains("ill: resumed after ud2 with rax 1234"));
}

/// The number in the kernel's "N system-call sites were rewritten" line.
fn rewritten_sites(out: &Output) -> u64 {
    let err = stderr(out);
    let line = err
        .lines()
        .find(|l| l.contains("system-call sites were rewritten"))
        .unwrap_or_else(|| panic!("no rewrite report in {err}"));
    line.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

#[test]
fn syscall_sites_are_rewritten_unless_turned_off() {
    if !kvm_or_skip("syscall_sites_are_rewritten_unless_turned_off") {
        return;
    }
    // glibc's wrappers load the number with `mov eax, imm32`: the sites
    // the threads test calls again and again (futex, sched_yield, …) are
    // rewritten once hot.
    let on = boot("threads", &["--trace-syscalls"], &[], &[]);
    assert_eq!(status(&on), 0, "{}", stderr(&on));
    assert!(rewritten_sites(&on) >= 3, "{}", stderr(&on));
    let off = boot(
        "threads",
        &["--trace-syscalls", "--cmdline", "kiln.syscall_rewrite=0"],
        &[],
        &[],
    );
    assert_eq!(rewritten_sites(&off), 0);
    assert_eq!(stdout(&on), stdout(&off));
    // The same program behaves the same either way, signals and restarts
    // included.
    let fast = boot("signals", &[], &[], &[]);
    let slow = boot(
        "signals",
        &["--cmdline", "kiln.syscall_rewrite=0"],
        &[],
        &[],
    );
    assert_eq!(stdout(&fast), stdout(&slow));
    assert_eq!(status(&fast), status(&slow));
}

#[test]
fn hello_runs_in_4_mib() {
    if kvm_or_skip("hello_runs_in_4_mib") {
        assert_same_as_native("hello-glibc", &["--memory", "4"]);
        assert_same_as_native("hello-musl", &["--memory", "4"]);
    }
}

#[test]
fn exit_status_propagates() {
    if !kvm_or_skip("exit_status_propagates") {
        return;
    }
    for code in ["0", "1", "42", "255"] {
        let out = boot("probe", &[], &["exit", code], &[]);
        assert_eq!(status(&out).to_string(), code, "{}", stderr(&out));
    }
}

#[test]
fn faults_end_the_program_with_the_matching_signal() {
    if !kvm_or_skip("faults_end_the_program_with_the_matching_signal") {
        return;
    }
    for (mode, code, signal) in [
        ("segv", 139, "SIGSEGV"),
        ("ud2", 132, "SIGILL"),
        ("div0", 136, "SIGFPE"),
        ("abort", 134, "SIGABRT"),
    ] {
        let out = boot("probe", &[], &[mode], &[]);
        assert_eq!(status(&out), code, "{mode}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(signal),
            "{mode}: no {signal} report in {err:?}"
        );
        assert!(stdout(&out).is_empty(), "{mode}: unexpected stdout");
    }
    let out = boot("probe", &[], &["segv"], &[]);
    let err = stderr(&out);
    assert!(
        err.contains("address 0x0") && err.contains("ip 0x"),
        "segfault report names address and ip: {err:?}"
    );
}

#[test]
fn unimplemented_syscall_returns_enosys_and_is_traced() {
    if !kvm_or_skip("unimplemented_syscall_returns_enosys_and_is_traced") {
        return;
    }
    let out = boot("probe", &["--trace-syscalls"], &["enosys"], &[]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "kexec_load returned -1, errno ENOSYS\n");
    let err = stderr(&out);
    assert!(
        err.contains("kexec_load(") && err.contains("= -1 ENOSYS"),
        "trace: {err}"
    );
    assert!(err.contains("exit_group(0) = ?"), "trace: {err}");
}

#[test]
fn fork_makes_a_child_the_parent_waits_for() {
    if !kvm_or_skip("fork_makes_a_child_the_parent_waits_for") {
        return;
    }
    let out = boot("probe", &["--trace-syscalls"], &["fork"], &[]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "child reaped, exited 42; wait again: No child process\n"
    );
    let err = stderr(&out);
    assert!(
        err.contains("fork() = 2") && err.contains("wait4(2,"),
        "trace: {err}"
    );
}

/// fork shares memory copy-on-write: forking a process of 100 MiB copies
/// no page; the child's write of 10 MiB copies those 10 MiB only; both
/// report their RSS; the parent's bytes stay its own.
#[test]
fn fork_copies_memory_only_when_written() {
    if !kvm_or_skip("fork_copies_memory_only_when_written") {
        return;
    }
    let out = boot("probe", &["--memory", "256"], &["forkmem"], &[]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "fork copied 0 MiB; child RSS 100 MiB; its write of 10 MiB copied 10 MiB\n\
         child exited 0; parent RSS 100 MiB; parent's bytes its own: yes\n"
    );
}

/// A child's fault kills the child only (SIGSEGV, reported on stderr); its
/// parent collects it and goes on, on one CPU or two.
#[test]
fn a_childs_fault_kills_only_the_child() {
    if !kvm_or_skip("a_childs_fault_kills_only_the_child") {
        return;
    }
    for cpus in ["1", "2"] {
        let out = boot("probe", &["--cpus", cpus], &["childfault"], &[]);
        assert_eq!(status(&out), 0, "{}", stderr(&out));
        assert_eq!(
            stdout(&out),
            "child killed by signal 11; the parent goes on\n"
        );
        assert!(
            stderr(&out).contains("killed by SIGSEGV"),
            "{}",
            stderr(&out)
        );
    }
}

/// An orphan (its parent ended first) is adopted by pid 1: it stays a
/// zombie when pid 1 never waits for it, as in a container; `--init`
/// reaps it, as docker's init does.
#[test]
fn init_reaps_orphans_pid_1_never_waits_for() {
    if !kvm_or_skip("init_reaps_orphans_pid_1_never_waits_for") {
        return;
    }
    let out = boot("probe", &[], &["orphan"], &[]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "the orphan is a zombie\n");
    let out = boot("probe", &["--init"], &["orphan"], &[]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "the orphan is reaped\n");
}

/// A fork bomb meets EAGAIN at the process limit (or when memory runs
/// low) and the VM stays in order: the program goes on and its end ends the
/// appliance, children and all.
#[test]
fn a_fork_bomb_meets_eagain_and_the_vm_stays_responsive() {
    if !kvm_or_skip("a_fork_bomb_meets_eagain_and_the_vm_stays_responsive") {
        return;
    }
    for memory in ["12", "64"] {
        let out = boot("probe", &["--memory", memory], &["forkbomb"], &[]);
        assert_eq!(status(&out), 0, "{}", stderr(&out));
        assert_eq!(stdout(&out), "made many children, then EAGAIN\n");
    }
}

#[test]
fn trace_syscalls_prints_calls_without_touching_stdout() {
    if !kvm_or_skip("trace_syscalls_prints_calls_without_touching_stdout") {
        return;
    }
    let plain = boot("hello-musl", &[], &["x"], &[]);
    let traced = boot("hello-musl", &["--trace-syscalls"], &["x"], &[]);
    assert_eq!(stdout(&plain), stdout(&traced));
    let err = stderr(&traced);
    assert!(err.contains("set_tid_address("), "{err}");
    assert!(
        err.contains(r#"writev(1, "#) || err.contains(r#"write(1, "hello"#),
        "{err}"
    );
}

#[test]
fn demand_paged_stack_grows() {
    if kvm_or_skip("demand_paged_stack_grows") {
        let out = boot("probe", &["--memory", "16"], &["stack"], &[]);
        assert_eq!(status(&out), 0, "{}", stderr(&out));
        assert_eq!(stdout(&out), "touched 4000 KiB of stack\n");
    }
}

#[test]
fn endless_loop_is_stopped_by_timeout() {
    if !kvm_or_skip("endless_loop_is_stopped_by_timeout") {
        return;
    }
    let start = std::time::Instant::now();
    let out = boot("probe", &["--timeout", "1"], &["spin"], &[]);
    assert_eq!(status(&out), 124, "{}", stderr(&out));
    assert!(stderr(&out).contains("--timeout"), "{}", stderr(&out));
    assert!(
        start.elapsed().as_secs() < 30,
        "the timeout did not stop the guest promptly"
    );
}

/// Once the guest runs, every thread of kiln-vmm (and so of `kiln run`)
/// is under seccomp with no new privileges and, with `--user`, runs as
/// that user: a running VMM shows it in /proc, on all its threads. The
/// main thread has the main filter; the devices thread and the second
/// vCPU's thread have added their own narrower one.
#[test]
fn a_running_vmm_is_under_its_seccomp_filter() {
    if !kvm_or_skip("a_running_vmm_is_under_its_seccomp_filter") {
        return;
    }
    let mut child = vmm()
        .args([
            "--timeout",
            "20",
            "--user",
            "65534:65533",
            "--cpus",
            "2",
            "--app",
        ])
        .arg(common::program("probe"))
        .args(["--", "spin"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let contained = |status: &str| {
        let name = status
            .lines()
            .find_map(|l| l.strip_prefix("Name:\t"))
            .unwrap_or("");
        let filters = if name == "kiln-devices" || name.starts_with("kiln-vcpu") {
            "Seccomp_filters:\t2"
        } else {
            "Seccomp_filters:\t1"
        };
        status.contains("Seccomp:\t2")
            && status.contains(filters)
            && status.contains("NoNewPrivs:\t1")
            && status.contains("Uid:\t65534\t65534\t65534")
            && status.contains("Gid:\t65533\t65533\t65533")
    };
    let mut last = Vec::new();
    let filtered = loop {
        let threads: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.flatten()
                    .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
                    .collect()
            })
            .unwrap_or_default();
        // The guest runs once both vCPU threads exist beside the devices
        // thread (vCPU 0 is the main thread).
        let named = |n: &str| threads.iter().any(|s| s.contains(&format!("Name:\t{n}\n")));
        if named("kiln-devices") && named("kiln-vcpu1") && threads.iter().all(|s| contained(s)) {
            break true;
        }
        last = threads;
        if std::time::Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        filtered,
        "kiln-vmm's threads never all showed their seccomp filters and --user: {last:#?}"
    );
    // A program still runs whole as another user; bad ids are refused.
    let out = boot("hello-glibc", &["--user", "65534"], &["x"], &[]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("argv[1] = x"), "{}", stdout(&out));
    let out = boot("hello-glibc", &["--user", "nobody"], &[], &[]);
    assert_eq!(status(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not a numeric user"),
        "{}",
        stderr(&out)
    );
}

/// SIGINT, SIGTERM and SIGHUP stop the VM in order: the run is reported
/// (timings written) and the status is 128 + the signal, as a container's.
#[test]
fn terminating_signals_stop_the_vm_and_report_the_run() {
    if !kvm_or_skip("terminating_signals_stop_the_vm_and_report_the_run") {
        return;
    }
    use std::io::BufRead;
    let dir = common::scratch("terminating_signals");
    for (signal, name) in [
        (libc::SIGINT, "SIGINT"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGHUP, "SIGHUP"),
    ] {
        let json = dir.join(format!("{name}.json"));
        let mut cmd = vmm();
        common::default_signals(&mut cmd);
        let mut child = cmd
            .arg("--timings-json")
            .arg(&json)
            .arg("--app")
            .arg(common::program("idle"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "ready\n");
        // SAFETY: signals the child this test started.
        unsafe { libc::kill(child.id() as i32, signal) };
        let out = child.wait_with_output().unwrap();
        assert_eq!(status(&out), 128 + signal, "{}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("{name} received; the guest was stopped")),
            "{}",
            stderr(&out)
        );
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).expect("timings written")).unwrap();
        assert!(
            doc["phases_ms"]["program_entry"].as_f64().is_some(),
            "{doc}"
        );
    }
}

#[test]
fn missing_program_is_127() {
    if !kvm_or_skip("missing_program_is_127") {
        return;
    }
    let out = vmm()
        .args(["--app", "/nonexistent/program"])
        .output()
        .unwrap();
    assert_eq!(status(&out), 127);
    assert!(
        stderr(&out).contains("/nonexistent/program"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn non_elf_and_32_bit_programs_are_126() {
    if !kvm_or_skip("non_elf_and_32_bit_programs_are_126") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("kiln-boot-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("script.sh");
    std::fs::write(&script, "#!/bin/sh\necho not an ELF\n").unwrap();
    let out = vmm().arg("--app").arg(&script).output().unwrap();
    assert_eq!(status(&out), 126, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/script.sh") && stderr(&out).contains("not an ELF"),
        "{}",
        stderr(&out)
    );

    let out = boot("x32", &[], &[], &[]);
    assert_eq!(status(&out), 126, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/x32") && stderr(&out).contains("32-bit"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kernel_panic_on_rejected_boot_info_is_125() {
    if !kvm_or_skip("kernel_panic_on_rejected_boot_info_is_125") {
        return;
    }
    let out = boot("hello-musl", &["--boot-info-version", "99"], &[], &[]);
    assert_eq!(status(&out), 125, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("kiln kernel panic") && err.contains("version 99"),
        "{err}"
    );
    assert!(stdout(&out).is_empty());
}

/// An empty directory of this test process named after `name` (removed
/// first if a previous run left it).
fn fresh_temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Boots `name` with `--stats` and `XDG_CACHE_HOME=cache` (where kiln-vmm
/// keeps the CPUID table learnt on this host); its stdout, its emulated
/// instruction count and whether KVM is the PVM flavour (where CPUID is
/// an emulated instruction).
fn boot_with_cache(name: &str, cache: &std::path::Path) -> (String, u64, bool) {
    let file = cache.join("timings.json");
    let out = vmm()
        .env("XDG_CACHE_HOME", cache)
        .args(["--stats", "--timings-json", file.to_str().unwrap()])
        .arg("--app")
        .arg(common::program(name))
        .output()
        .expect("kiln-vmm runs");
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let emulated = doc["kvm_stats"]["insn_emulation"].as_u64().unwrap_or(0);
    (stdout(&out), emulated, doc["kvm_flavour"] == "pvm")
}

/// Whether the CPUID instruction exits to KVM on this host (counted as an
/// emulated instruction): 20000 of them from a static program, which the
/// kernel leaves alone without an image's list of its CPUID sites. On
/// some nested hosts the outer hypervisor answers CPUID itself and KVM
/// never sees it.
fn cpuid_reaches_kvm(cache: &std::path::Path) -> bool {
    let file = cache.join("flood.json");
    let out = vmm()
        .env("XDG_CACHE_HOME", cache)
        .args(["--stats", "--timings-json", file.to_str().unwrap()])
        .arg("--app")
        .arg(common::program("attacker"))
        .args(["--", "cpuid"])
        .output()
        .expect("kiln-vmm runs");
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("cpuid done"), "{}", stdout(&out));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    doc["kvm_stats"]["insn_emulation"].as_u64().unwrap_or(0) >= 20_000
}

#[test]
fn cpuid_is_learnt_once_per_host_then_answered_from_the_table() {
    if !kvm_or_skip("cpuid_is_learnt_once_per_host_then_answered_from_the_table") {
        return;
    }
    let cache = fresh_temp_dir("cpuid-cache");
    // The first VM's kernel asks the instruction (every leaf once) and
    // kiln-vmm keeps what it said, under the kernel's digest.
    let (first, learning, pvm) = boot_with_cache("hello-glibc", &cache);
    let table = std::fs::read_dir(cache.join("kiln"))
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path()))
        .find(|p| p.to_string_lossy().contains("guest-cpuid-"))
        .unwrap_or_else(|| panic!("no table kept in {}", cache.display()));
    // The next ones answer the kernel's questions from it (a static
    // program's own CPUIDs still reach the host).
    let (second, answered, _) = boot_with_cache("hello-glibc", &cache);
    assert_eq!(first, second);
    // Where CPUID never reaches KVM the table spares no exit to count;
    // what is left to check is that it is kept, used and relearnt.
    let counted = pvm && cpuid_reaches_kvm(&cache);
    if pvm && !counted {
        eprintln!(
            "NOTE: CPUID does not exit to KVM on this host (20000 of them counted no emulated \
             instruction): the table's saving cannot be counted here ({learning} emulated \
             learning, {answered} from the table)"
        );
    }
    if counted {
        assert!(
            answered + 30 < learning,
            "emulated instructions: {learning} learning, {answered} from the table"
        );
    }
    // A damaged table is not used: the next VM learns it again.
    std::fs::write(&table, b"KILNCPL1 not a table").unwrap();
    let (third, relearning, _) = boot_with_cache("hello-glibc", &cache);
    assert_eq!(first, third);
    if counted {
        assert!(relearning > answered + 30, "{relearning} vs {answered}");
    }
    assert!(std::fs::read(&table).unwrap().len() > 100, "learnt again");
    std::fs::remove_dir_all(&cache).unwrap();
}

/// A run that asks for no phases or statistics still learns the CPUID
/// table: the kernel then still reports the program's entry, where
/// kiln-vmm reads the table (otherwise it skips the milestones, boot flag
/// `QUIET_MILESTONES`).
#[test]
fn a_run_that_asks_for_nothing_still_learns_the_cpuid_table() {
    if !kvm_or_skip("a_run_that_asks_for_nothing_still_learns_the_cpuid_table") {
        return;
    }
    let cache = fresh_temp_dir("quiet");
    for _ in 0..2 {
        let out = vmm()
            .env("XDG_CACHE_HOME", &cache)
            .arg("--app")
            .arg(common::program("hello-glibc"))
            .output()
            .expect("kiln-vmm runs");
        assert_eq!(status(&out), 0, "{}", stderr(&out));
        assert!(stdout(&out).contains("hello"), "{}", stdout(&out));
    }
    let learnt = std::fs::read_dir(cache.join("kiln"))
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path()))
        .any(|p| p.to_string_lossy().contains("guest-cpuid-"));
    assert!(learnt, "no CPUID table kept in {}", cache.display());
    std::fs::remove_dir_all(&cache).unwrap();
}

/// kiln-vmm hands the VM to a helper that destroys it after kiln-vmm has
/// exited; the helper must let go of every other descriptor first: a pipe
/// kiln-vmm inherited reaches end of file when kiln-vmm exits (a file kept
/// open would keep a container's root file system busy, as containerd's
/// unmount found).
#[test]
fn every_inherited_descriptor_is_closed_when_kiln_vmm_exits() {
    use std::os::fd::{FromRawFd, OwnedFd};
    if !kvm_or_skip("every_inherited_descriptor_is_closed_when_kiln_vmm_exits") {
        return;
    }
    let mut fds = [0; 2];
    // SAFETY: pipe(2) writes two new descriptors into the array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both are new descriptors this test owns from now on.
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // Only the write end goes to kiln-vmm (pipe(2) leaves both inheritable).
    // SAFETY: fcntl on a descriptor this test owns.
    unsafe {
        libc::fcntl(fds[0], libc::F_SETFD, libc::FD_CLOEXEC);
        libc::fcntl(fds[0], libc::F_SETFL, libc::O_NONBLOCK);
    }
    let child = vmm()
        .arg("--app")
        .arg(common::program("hello-glibc"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("kiln-vmm runs");
    drop(writer);
    let out = child.wait_with_output().unwrap();
    assert_eq!(status(&out), 0);
    let mut byte = [0u8; 1];
    // SAFETY: a read into a local buffer of its length.
    let n = unsafe { libc::read(fds[0], byte.as_mut_ptr().cast(), 1) };
    assert_eq!(
        n,
        0,
        "the pipe is still open somewhere after kiln-vmm exited: {}",
        std::io::Error::last_os_error()
    );
    drop(reader);
}

/// Runs `smp MODE` on 2 vCPUs with `kernel`, the CPUID table kept in
/// `cache`; returns its stdout and the emulated instructions (`None` when
/// the host is not PVM, where loading registers costs no emulation).
fn smp_with_kernel(
    kernel: &std::path::Path,
    cache: &std::path::Path,
    mode: &str,
) -> (String, Option<u64>) {
    let file = cache.join("timings.json");
    let out = Command::new(env!("CARGO_BIN_EXE_kiln-vmm"))
        .arg("--kernel")
        .arg(kernel)
        .env("XDG_CACHE_HOME", cache)
        .args([
            "--cpus",
            "2",
            "--timeout",
            "60",
            "--stats",
            "--timings-json",
        ])
        .arg(&file)
        .arg("--app")
        .arg(common::program("smp"))
        .args(["--", mode])
        .output()
        .expect("kiln-vmm runs");
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let pvm = doc["kvm_flavour"] == "pvm";
    (
        stdout(&out),
        pvm.then(|| doc["kvm_stats"]["insn_emulation"].as_u64().unwrap_or(0)),
    )
}

/// kiln-vmm loads the CPU state the kernel's note asks for (descriptor
/// tables, task register, SYSCALL MSRs, GS base, x2APIC, CR4 and XCR0)
/// into every vCPU; a kernel without the note — an older one — loads its
/// own, with the same result, each load an emulated instruction on PVM.
#[test]
fn kiln_vmm_loads_the_cpu_state_the_kernel_asks_for_and_a_kernel_without_the_note_loads_its_own() {
    if !kvm_or_skip("kiln_vmm_loads_the_cpu_state_the_kernel_asks_for") {
        return;
    }
    let cache = fresh_temp_dir("preset");
    // The note: name size 5, descriptor size, type 1, "kiln".
    let kernel = xtask::paths::kernel();
    let bytes = std::fs::read(&kernel).unwrap();
    let size = (std::mem::size_of::<kiln_boot::CpuStateNote>() as u32).to_le_bytes();
    let head: Vec<u8> = [
        &5u32.to_le_bytes()[..],
        &size,
        &1u32.to_le_bytes(),
        b"kiln\0",
    ]
    .concat();
    let at = bytes
        .windows(head.len())
        .position(|w| w == head.as_slice())
        .expect("the kernel carries its CPU-state note");
    let mut without = bytes.clone();
    without[at + 8] = 0x7f; // a note type kiln-vmm does not know
    let old_kernel = cache.join("kernel-without-note.elf");
    std::fs::write(&old_kernel, &without).unwrap();
    let mut emulated = Vec::new();
    for k in [&kernel, &old_kernel] {
        // The first run of each kernel learns the CPUID table.
        smp_with_kernel(k, &cache, "count");
        let (count, n) = smp_with_kernel(k, &cache, "count");
        assert_eq!(
            count,
            "sched_getaffinity: 2\nsysconf: 2\n/proc/cpuinfo: 2\n"
        );
        emulated.push(n);
        // Interrupts, IPIs, per-CPU data and system calls on both vCPUs.
        let (pin, _) = smp_with_kernel(k, &cache, "pin");
        assert_eq!(
            pin,
            "pinned to CPU 1: runs on CPU 1\npinned to CPU 0: runs on CPU 0\n\
             a mask of no CPU: Invalid argument\n"
        );
        let (spread, _) = smp_with_kernel(k, &cache, "spread");
        assert_eq!(spread, "threads ran on 2 of 2 CPUs\n");
    }
    if let [Some(with), Some(without)] = emulated[..] {
        // About fifteen loads on the boot vCPU, more on the other.
        assert!(
            without >= with + 15,
            "emulated instructions: {with} with the note, {without} without"
        );
    }
    std::fs::remove_dir_all(&cache).unwrap();
}

/// Boots `name` with `flag` and `--timings-json`; returns the run and the
/// JSON document (the boot must succeed).
fn boot_with_json(name: &str, flag: &str) -> (Output, serde_json::Value) {
    let file = std::env::temp_dir().join(format!("kiln-{name}{flag}-{}.json", std::process::id()));
    let out = boot(
        name,
        &[flag, "--timings-json", file.to_str().unwrap()],
        &[],
        &[],
    );
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let doc = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    std::fs::remove_file(&file).unwrap();
    (out, doc)
}

#[test]
fn timings_json_records_every_phase() {
    if !kvm_or_skip("timings_json_records_every_phase") {
        return;
    }
    let (out, doc) = boot_with_json("hello-musl", "--timings");
    assert!(stderr(&out).contains("program_entry"), "{}", stderr(&out));
    let phases = &doc["phases_ms"];
    let order = [
        "vm_created",
        "memory_ready",
        "vcpu_start",
        "kernel_entry",
        "program_entry",
        "program_exit",
    ];
    let times: Vec<f64> = order
        .iter()
        .map(|p| {
            phases[p]
                .as_f64()
                .unwrap_or_else(|| panic!("{p} missing: {doc}"))
        })
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "phases out of order: {doc}"
    );
    assert_eq!(doc["exit_status"], 0);
}

/// The host zeroes each 2 MiB of guest RAM first touched (a huge page,
/// ~0.3 ms here). A small static program's boot and run fit in one: the
/// kernel image's (its touched part ends below 2 MiB, and the low RAM
/// around the boot data serves the first frames). The page-table area is
/// left to 4 KiB pages, of which kiln-vmm populates the first 128 KiB. A
/// kernel grown past its first 2 MiB, frames taken from elsewhere first,
/// or a page-table area backed by a huge page makes it two or more.
#[test]
fn a_small_program_runs_in_one_huge_page_of_ram() {
    if !kvm_or_skip("a_small_program_runs_in_one_huge_page_of_ram") {
        return;
    }
    let (_, doc) = boot_with_json("hello-musl", "--stats");
    let resident = doc["guest_resident_kib"]
        .as_u64()
        .unwrap_or_else(|| panic!("no guest_resident_kib: {doc}"));
    // One huge page of RAM, the page-table area's small pages and the
    // program file's few pages.
    assert!(
        resident < 4096,
        "guest memory resident after hello: {resident} KiB (two or more 2 MiB pages of RAM touched)"
    );
}

#[test]
fn guest_kernel_runs_natively_on_pvm() {
    if !kvm_or_skip("guest_kernel_runs_natively_on_pvm") {
        return;
    }
    let (_, doc) = boot_with_json("hello-glibc", "--stats");
    // Every counter KVM keeps for the vCPUs and for the VM is reported.
    for key in ["kvm_stats", "kvm_vm_stats"] {
        assert!(
            doc[key].as_object().is_some_and(|m| !m.is_empty()),
            "{key} missing from the JSON: {doc}"
        );
    }
    // Exits counted at the milestones: in order, and no more than in all.
    let at = |p: &str| {
        doc["exits_at"][p]
            .as_u64()
            .unwrap_or_else(|| panic!("exits_at.{p} missing: {doc}"))
    };
    let all = doc["kvm_stats"]["exits"].as_u64().expect("exits counter");
    let (kernel, program, exit) = (at("kernel_entry"), at("program_entry"), at("program_exit"));
    assert!(
        kernel <= program && program <= exit && exit <= all && all > 0,
        "exits at the milestones out of order: {doc}"
    );
    if doc["kvm_flavour"] != "pvm" {
        eprintln!("not a PVM host: the emulation count is not meaningful here");
        return;
    }
    // Until the PV registration every guest instruction is emulated: the
    // boot alone runs hundreds of thousands. A boot that registers first
    // emulates only the registration sequence and the instructions that
    // always trap — among them every CPUID, and glibc's start-up feature
    // detection runs ~70 of them on Intel hosts (110 in all there, ~40 for
    // a musl hello) — so the bound sits well above that and far below a
    // kernel that is not native.
    let emulated = doc["kvm_stats"]["insn_emulation"]
        .as_u64()
        .expect("insn_emulation counter");
    assert!(
        emulated < 1_000,
        "{emulated} emulated instructions: the kernel is not running natively"
    );
}

/// `--cpus N` gives the guest N vCPUs, and every way a program counts CPUs
/// agrees: sched_getaffinity, sysconf(_SC_NPROCESSORS_ONLN) and
/// /proc/cpuinfo.
#[test]
fn cpus_flag_gives_the_guest_that_many_cpus() {
    if !kvm_or_skip("cpus_flag_gives_the_guest_that_many_cpus") {
        return;
    }
    for n in ["1", "2", "4"] {
        let out = boot("smp", &["--cpus", n], &["count"], &[]);
        assert_eq!(status(&out), 0, "{}", stderr(&out));
        assert_eq!(
            stdout(&out),
            format!("sched_getaffinity: {n}\nsysconf: {n}\n/proc/cpuinfo: {n}\n")
        );
    }
    let out = vmm()
        .args(["--cpus", "5", "--app"])
        .arg(common::program("smp"))
        .output()
        .expect("kiln-vmm runs");
    assert_eq!(status(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("5 is not in 1..=4"),
        "{}",
        stderr(&out)
    );
}

/// Threads spread over the CPUs (each runs one of them, getcpu says), and
/// sched_setaffinity moves the caller to the CPU it names; a mask of no
/// CPU of the VM is refused.
#[test]
fn threads_run_on_every_cpu_and_follow_their_affinity() {
    if !kvm_or_skip("threads_run_on_every_cpu_and_follow_their_affinity") {
        return;
    }
    let out = boot("smp", &["--cpus", "2", "--timeout", "60"], &["spread"], &[]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "threads ran on 2 of 2 CPUs\n");
    let out = boot("smp", &["--cpus", "2", "--timeout", "60"], &["pin"], &[]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "pinned to CPU 1: runs on CPU 1\npinned to CPU 0: runs on CPU 0\n\
         a mask of no CPU: Invalid argument\n"
    );
}

/// A minute of threads on both CPUs passing tokens through mutexes and
/// condition variables (futexes), replacing a page other CPUs keep reading
/// (TLB shootdowns: no CPU may read an older page than the one
/// published), and round-tripping messages through pipes to a forked
/// child — with no hang, no lost wake-up and no stale read.
#[test]
fn threads_on_two_cpus_survive_a_minute_of_futexes_remaps_and_pipes() {
    if !kvm_or_skip("threads_on_two_cpus_survive_a_minute_of_futexes_remaps_and_pipes") {
        return;
    }
    let out = boot(
        "smp",
        &["--cpus", "2", "--memory", "256", "--timeout", "240"],
        &["stress", "60"],
        &[],
    );
    assert_eq!(status(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).ends_with("stress: ok\n"), "{}", stdout(&out));
}
