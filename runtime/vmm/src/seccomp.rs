//! What kiln-vmm does to itself just before the guest runs: no core dumps,
//! `--user`'s ids ([`contain`]), and a seccomp filter on every one of its
//! threads ([`install`]). Everything a run starts — passt, virtiofsd, the
//! vsock socket's sweeper — is started by then, so from that moment no
//! thread needs to run another program or reach into other processes or
//! the host's configuration. A guest that found a hole in a device model
//! would get a process that can do none of it: the calls below fail with
//! EPERM (and no new privileges can be gained, which seccomp requires).
//!
//! It is a list of what is refused, not of what is allowed: the VMM's
//! threads share one list of needs that varies with the devices a run
//! has, and a missing entry in an allow-list kills the VMM in the paths
//! tests reach least. Per-thread allow-lists are the next step.

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

/// The system calls refused once the guest runs.
pub const REFUSED: &[(&str, i64)] = &[
    // Running another program.
    ("execve", libc::SYS_execve),
    ("execveat", libc::SYS_execveat),
    // Reaching into other processes.
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("kcmp", libc::SYS_kcmp),
    // Changing the file system view, namespaces and the host.
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("setns", libc::SYS_setns),
    ("unshare", libc::SYS_unshare),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    // The host kernel's own configuration and code.
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("reboot", libc::SYS_reboot),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("acct", libc::SYS_acct),
    ("quotactl", libc::SYS_quotactl),
    ("syslog", libc::SYS_syslog),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    ("sethostname", libc::SYS_sethostname),
    ("setdomainname", libc::SYS_setdomainname),
    ("iopl", libc::SYS_iopl),
    ("ioperm", libc::SYS_ioperm),
];

/// Why the filter could not be put in place.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The filter did not compile (a bug).
    #[error("cannot build the seccomp filter: {0}")]
    Build(String),
    /// The kernel refused it.
    #[error("cannot install the seccomp filter: {0}")]
    Install(String),
    /// `--user` could not be taken on.
    #[error("cannot become --user: {0}")]
    User(String),
}

/// The filter as a BPF program.
///
/// # Errors
/// [`SeccompError::Build`].
pub fn program() -> Result<BpfProgram, SeccompError> {
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
        REFUSED.iter().map(|&(_, nr)| (nr, Vec::new())).collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        TargetArch::x86_64,
    )
    .map_err(|e| SeccompError::Build(e.to_string()))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| SeccompError::Build(e.to_string()))
}

/// What a run does to itself before the guest runs, besides the filter:
/// no core dumps (a crash would write guest memory to disk), and, when
/// `user` is given, that user and group (no supplementary groups) for
/// every thread — KVM, tap and socket descriptors opened as root keep
/// working.
///
/// # Errors
/// [`SeccompError::User`] when the ids cannot be taken on.
pub fn contain(user: Option<(u32, u32)>) -> Result<(), SeccompError> {
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit with a valid struct; only lowers a limit.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
    let Some((uid, gid)) = user else {
        return Ok(());
    };
    let fail = |what: &str| {
        SeccompError::User(format!(
            "{what} to {uid}:{gid}: {}",
            std::io::Error::last_os_error()
        ))
    };
    // Raw system calls change the ids of the calling thread only; glibc's
    // wrappers change every thread's (the devices thread exists already).
    // SAFETY: setgroups with an empty list, then setresgid and setresuid:
    // plain system calls with integer arguments.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(fail("setgroups"));
        }
        if libc::setresgid(gid, gid, gid) != 0 {
            return Err(fail("setresgid"));
        }
        if libc::setresuid(uid, uid, uid) != 0 {
            return Err(fail("setresuid"));
        }
    }
    Ok(())
}

/// Puts the filter on every thread of this process (and so on every
/// thread and process it starts from now on). It cannot be taken off.
///
/// # Errors
/// [`SeccompError`].
pub fn install() -> Result<(), SeccompError> {
    let program = program()?;
    seccompiler::apply_filter_all_threads(&program)
        .map_err(|e| SeccompError::Install(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a child process (the filter cannot be taken off again): an
    /// exec and a mount are refused with EPERM, ordinary calls still work.
    /// The child only makes system calls (no allocation after the fork).
    #[test]
    fn refused_calls_fail_and_the_rest_work() {
        let program = program().unwrap();
        // SAFETY: the child only makes system calls and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let refused = |r: i32| {
                r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
            };
            let ok = seccompiler::apply_filter_all_threads(&program).is_ok() && {
                let path = c"/bin/true";
                let argv = [path.as_ptr(), std::ptr::null()];
                // SAFETY: a valid NUL-terminated path and argv.
                let exec = unsafe { libc::execv(path.as_ptr(), argv.as_ptr()) };
                // SAFETY: mount with null arguments: refused before they are read.
                let mount = unsafe {
                    libc::mount(
                        std::ptr::null(),
                        std::ptr::null(),
                        std::ptr::null(),
                        0,
                        std::ptr::null(),
                    )
                };
                let mut status = [0u8; 4096];
                // SAFETY: a NUL-terminated path; the buffer is ours.
                let n = unsafe {
                    let fd = libc::open(c"/proc/self/status".as_ptr(), libc::O_RDONLY);
                    libc::read(fd, status.as_mut_ptr().cast(), status.len())
                };
                let filtered = n > 0
                    && status[..n as usize]
                        .windows(10)
                        .any(|w| w == b"Seccomp:\t2");
                refused(exec) && refused(mount) && filtered
            };
            // SAFETY: ends the forked child without running destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "status {status}"
        );
    }
}
