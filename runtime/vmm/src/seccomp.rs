//! What kiln-vmm does to itself just before the guest runs: no core dumps,
//! `--user`'s ids ([`contain`]), and a seccomp filter per thread
//! ([`install_process`], [`install_thread`]). Everything a run starts —
//! passt, virtiofsd, the vsock socket's sweeper — is started by then, so
//! from that moment no thread needs to run another program or reach into
//! other processes or the host's configuration. A guest that found a hole
//! in a device model would get a thread that can make only the calls its
//! role needs.
//!
//! Each role has an allow-list ([`Role::allowed`]); anything else fails
//! with EPERM (never a kill: a call missing from a list in a path the
//! tests do not reach turns into an error message, not a lost VM; the
//! lists were checked by tracing the failed calls of the VMM's whole test
//! suite with `strace -f -Z`). Filters stack: the [`Role::Main`] filter
//! goes on every thread at once (the main thread runs vCPU 0 and ends the
//! run: stops helpers, removes sockets, writes reports), then the devices
//! thread and each further vCPU thread add their narrower one. [`REFUSED`]
//! names calls no role allows, kept as a checked list because they are
//! what an attacker would reach for.

use seccompiler::{sock_filter, BpfProgram};

/// Calls that no thread is allowed once the guest runs (none of the
/// allow-lists may hold one; a unit test checks).
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

/// Calls every thread makes: memory for the allocator, locks, signal
/// return and masks, clocks and sleeps, thread exit, reads and writes on
/// descriptors it already holds.
const EVERY_THREAD: &[(&str, i64)] = &[
    ("read", libc::SYS_read),
    ("write", libc::SYS_write),
    ("readv", libc::SYS_readv),
    ("writev", libc::SYS_writev),
    ("pread64", libc::SYS_pread64),
    ("close", libc::SYS_close),
    ("fcntl", libc::SYS_fcntl),
    ("mmap", libc::SYS_mmap),
    ("munmap", libc::SYS_munmap),
    ("mprotect", libc::SYS_mprotect),
    ("madvise", libc::SYS_madvise),
    ("mremap", libc::SYS_mremap),
    ("brk", libc::SYS_brk),
    ("futex", libc::SYS_futex),
    ("rt_sigreturn", libc::SYS_rt_sigreturn),
    ("rt_sigprocmask", libc::SYS_rt_sigprocmask),
    ("sigaltstack", libc::SYS_sigaltstack),
    ("tgkill", libc::SYS_tgkill),
    ("sched_yield", libc::SYS_sched_yield),
    ("sched_getaffinity", libc::SYS_sched_getaffinity),
    ("getpid", libc::SYS_getpid),
    ("gettid", libc::SYS_gettid),
    ("getrandom", libc::SYS_getrandom),
    ("clock_gettime", libc::SYS_clock_gettime),
    ("clock_nanosleep", libc::SYS_clock_nanosleep),
    ("nanosleep", libc::SYS_nanosleep),
    ("rseq", libc::SYS_rseq),
    ("set_robust_list", libc::SYS_set_robust_list),
    ("exit", libc::SYS_exit),
    ("exit_group", libc::SYS_exit_group),
];

/// What a vCPU thread adds: KVM ioctls only (see [`Role::ioctl_types`]),
/// and the vhost-user messages a guest's start of a file-system device
/// sends to virtiofsd from the vCPU that wrote the register.
const VCPU: &[(&str, i64)] = &[
    ("ioctl", libc::SYS_ioctl),
    ("sendmsg", libc::SYS_sendmsg),
    ("recvmsg", libc::SYS_recvmsg),
    ("eventfd2", libc::SYS_eventfd2),
];

/// What the devices thread adds: its epoll loop, sockets to passt, the
/// vsock listeners and connections, disk I/O and flushes, terminal size.
const DEVICES: &[(&str, i64)] = &[
    ("ioctl", libc::SYS_ioctl),
    ("epoll_wait", libc::SYS_epoll_wait),
    ("epoll_pwait", libc::SYS_epoll_pwait),
    ("epoll_ctl", libc::SYS_epoll_ctl),
    ("pwrite64", libc::SYS_pwrite64),
    ("preadv", libc::SYS_preadv),
    ("pwritev", libc::SYS_pwritev),
    ("lseek", libc::SYS_lseek),
    ("fdatasync", libc::SYS_fdatasync),
    ("fsync", libc::SYS_fsync),
    ("fallocate", libc::SYS_fallocate),
    ("fstat", libc::SYS_fstat),
    ("recvfrom", libc::SYS_recvfrom),
    ("sendto", libc::SYS_sendto),
    ("recvmsg", libc::SYS_recvmsg),
    ("sendmsg", libc::SYS_sendmsg),
    ("socket", libc::SYS_socket),
    ("connect", libc::SYS_connect),
    ("accept4", libc::SYS_accept4),
    ("shutdown", libc::SYS_shutdown),
    ("getsockopt", libc::SYS_getsockopt),
    ("setsockopt", libc::SYS_setsockopt),
    ("poll", libc::SYS_poll),
    ("ppoll", libc::SYS_ppoll),
    // The poll timer (started and stopped as devices poll their queues).
    ("timerfd_settime", libc::SYS_timerfd_settime),
    // Whether virtiofsd or passt is still there (WNOHANG on our children).
    ("wait4", libc::SYS_wait4),
];

/// What the main thread (and the helper threads it started: the `-p`
/// proxy, the stdin reader, the teardown helper) adds beyond the vCPU and
/// devices lists: ending the run — helpers stopped and reaped, sockets and
/// files removed, reports written, the VM handed to the teardown helper.
const MAIN: &[(&str, i64)] = &[
    ("openat", libc::SYS_openat),
    ("newfstatat", libc::SYS_newfstatat),
    ("statx", libc::SYS_statx),
    ("readlink", libc::SYS_readlink),
    ("getdents64", libc::SYS_getdents64),
    ("mincore", libc::SYS_mincore),
    ("rename", libc::SYS_rename),
    ("renameat2", libc::SYS_renameat2),
    ("unlink", libc::SYS_unlink),
    ("unlinkat", libc::SYS_unlinkat),
    ("ftruncate", libc::SYS_ftruncate),
    // A snapshot's directory (vCPU 0 writes it).
    ("mkdir", libc::SYS_mkdir),
    ("mkdirat", libc::SYS_mkdirat),
    ("rmdir", libc::SYS_rmdir),
    ("dup", libc::SYS_dup),
    // A warm VM's claim makes the client's descriptors its standard ones.
    ("dup2", libc::SYS_dup2),
    ("pipe2", libc::SYS_pipe2),
    ("epoll_create1", libc::SYS_epoll_create1),
    // The devices thread's poll timer.
    ("timerfd_create", libc::SYS_timerfd_create),
    ("kill", libc::SYS_kill),
    ("wait4", libc::SYS_wait4),
    ("waitid", libc::SYS_waitid),
    ("pidfd_open", libc::SYS_pidfd_open),
    // The teardown helper closes all but the VM's descriptor.
    ("close_range", libc::SYS_close_range),
    ("clone", libc::SYS_clone),
    ("clone3", libc::SYS_clone3),
    ("set_tid_address", libc::SYS_set_tid_address),
    ("prctl", libc::SYS_prctl),
    // The devices and vCPU threads add their own filter under this one
    // (filters only ever narrow).
    ("seccomp", libc::SYS_seccomp),
    ("rt_sigaction", libc::SYS_rt_sigaction),
    ("setitimer", libc::SYS_setitimer),
    ("timer_settime", libc::SYS_timer_settime),
    ("timer_delete", libc::SYS_timer_delete),
    ("getuid", libc::SYS_getuid),
    ("geteuid", libc::SYS_geteuid),
    ("getgid", libc::SYS_getgid),
    ("getegid", libc::SYS_getegid),
];

/// The ioctl type byte (bits 8–15 of the request) of KVM's ioctls.
const KVM_IOCTL_TYPE: u64 = 0xAE;

/// The ioctl type byte of terminal and tap ioctls ('T').
const TTY_IOCTL_TYPE: u64 = 0x54;

/// Which thread of the VMM a filter is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The main thread (vCPU 0, the end of the run) and every helper
    /// thread started before the guest.
    Main,
    /// The devices thread.
    Devices,
    /// vCPUs 1, 2, … (vCPU 0 is the main thread).
    Vcpu,
}

impl Role {
    /// The calls this role may make (other than ioctl's request check).
    #[must_use]
    pub fn allowed(self) -> Vec<(&'static str, i64)> {
        let extra: &[&[(&str, i64)]] = match self {
            Role::Vcpu => &[VCPU],
            Role::Devices => &[DEVICES],
            // The main thread runs vCPU 0 and is the parent of the others'
            // filters: it needs everything they need.
            Role::Main => &[VCPU, DEVICES, MAIN],
        };
        let mut all: Vec<(&str, i64)> = EVERY_THREAD.to_vec();
        for list in extra {
            all.extend_from_slice(list);
        }
        all.sort_by_key(|&(_, nr)| nr);
        all.dedup_by_key(|&mut (_, nr)| nr);
        all
    }

    /// The ioctl request types this role may use (`None`: any).
    #[must_use]
    pub fn ioctl_types(self) -> Option<&'static [u64]> {
        match self {
            Role::Vcpu => Some(&[KVM_IOCTL_TYPE]),
            Role::Devices => Some(&[KVM_IOCTL_TYPE, TTY_IOCTL_TYPE]),
            Role::Main => None,
        }
    }
}

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

// Classic BPF opcodes (linux/filter.h) and the seccomp_data layout
// (linux/seccomp.h) the filters are written in.
/// BPF_LD | BPF_W | BPF_ABS.
const BPF_LD_W_ABS: u16 = 0x20;
/// BPF_ALU | BPF_AND | BPF_K.
const BPF_ALU_AND_K: u16 = 0x54;
/// BPF_JMP | BPF_JEQ | BPF_K.
const BPF_JEQ_K: u16 = 0x15;
/// BPF_JMP | BPF_JGE | BPF_K.
const BPF_JGE_K: u16 = 0x35;
/// BPF_RET | BPF_K.
const BPF_RET_K: u16 = 0x06;
/// Offsets in `struct seccomp_data`: the call number, the architecture,
/// the low half of the second argument.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const DATA_ARG1_LOW: u32 = 16 + 8;
/// AUDIT_ARCH_X86_64: a 64-bit call (`int 0x80` from a 64-bit process
/// arrives as i386 and is refused).
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
/// Call numbers of the x32 ABI have this bit; all are refused.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

/// Where a jump of the filter goes before its target's place is known.
#[derive(Clone, Copy)]
enum Target {
    /// The next instruction.
    Next,
    /// An instruction index.
    At(usize),
    /// The shared refusal.
    Deny,
    /// The shared allowance.
    Allow,
    /// The check of an ioctl's request type.
    Ioctl,
}

/// A filter being written: instructions whose jumps are resolved once
/// every target's place is known.
#[derive(Default)]
struct Writer {
    code: Vec<(u16, u32, Target, Target)>,
}

impl Writer {
    fn statement(&mut self, code: u16, k: u32) {
        self.code.push((code, k, Target::Next, Target::Next));
    }

    /// A conditional jump; returns its index (to aim it later).
    fn jump(&mut self, code: u16, k: u32, to_true: Target, to_false: Target) -> usize {
        self.code.push((code, k, to_true, to_false));
        self.code.len() - 1
    }

    /// A binary search over `calls` (sorted): `JGE` on the middle one
    /// down to runs of a few, then one `JEQ` each, to `Allow` (or, for
    /// `ioctl` when its request type is checked, `Ioctl`); none matching
    /// goes to `Deny`.
    fn search(&mut self, calls: &[u32], ioctl: Option<u32>) {
        const RUN: usize = 4;
        if calls.len() <= RUN {
            for (i, &nr) in calls.iter().enumerate() {
                let hit = if Some(nr) == ioctl {
                    Target::Ioctl
                } else {
                    Target::Allow
                };
                let miss = if i + 1 == calls.len() {
                    Target::Deny
                } else {
                    Target::Next
                };
                self.jump(BPF_JEQ_K, nr, hit, miss);
            }
            if calls.is_empty() {
                self.statement(BPF_RET_K, SECCOMP_RET_ERRNO | libc::EPERM as u32);
            }
            return;
        }
        let (low, high) = calls.split_at(calls.len() / 2);
        let split = self.jump(BPF_JGE_K, high[0], Target::Next, Target::Next);
        self.search(low, ioctl);
        self.code[split].2 = Target::At(self.code.len());
        self.search(high, ioctl);
    }

    /// The program, every jump resolved (`deny`, `allow`, `ioctl`: where
    /// those targets lie).
    fn finish(self, deny: usize, allow: usize, ioctl: usize) -> Result<BpfProgram, SeccompError> {
        let offset = |at: usize, to: Target| -> Result<u8, SeccompError> {
            let to = match to {
                Target::Next => return Ok(0),
                Target::At(i) => i,
                Target::Deny => deny,
                Target::Allow => allow,
                Target::Ioctl => ioctl,
            };
            // BPF jumps only go forward: a target at or before the jump
            // would be a bug in the writer, reported rather than wrapped.
            to.checked_sub(at + 1)
                .and_then(|distance| u8::try_from(distance).ok())
                .ok_or_else(|| {
                    SeccompError::Build(format!("a jump from {at} to {to} is backward or too long"))
                })
        };
        self.code
            .iter()
            .enumerate()
            .map(|(at, &(code, k, jt, jf))| {
                Ok(sock_filter {
                    code,
                    jt: offset(at, jt)?,
                    jf: offset(at, jf)?,
                    k,
                })
            })
            .collect()
    }
}

/// `role`'s filter as a BPF program: the architecture check, then a
/// binary search of the allowed calls (and, for a role with
/// [`Role::ioctl_types`], a check of the ioctl request's type byte).
/// Written here rather than by seccompiler's generic rule compiler, whose
/// output was 2.5–4× longer. A search rather than one comparison per call
/// in a row: the host kernel runs the filter for each of its ~460 call
/// numbers when it loads it (to cache which are always allowed), ~2.6 µs
/// per instruction of the row here (0.4 ms for the main filter, on every
/// run's path to the guest); a search takes ~9 steps per call.
///
/// # Errors
/// [`SeccompError::Build`] if a list outgrew what a BPF jump reaches.
pub fn program(role: Role) -> Result<BpfProgram, SeccompError> {
    let mut calls: Vec<u32> = role
        .allowed()
        .into_iter()
        .map(|(_, nr)| nr as u32)
        .collect();
    calls.sort_unstable();
    calls.dedup();
    let types = role.ioctl_types().unwrap_or(&[]);
    let ioctl = role.ioctl_types().map(|_| libc::SYS_ioctl as u32);
    let mut w = Writer::default();
    w.statement(BPF_LD_W_ABS, DATA_ARCH);
    w.jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, Target::At(3), Target::Next);
    w.statement(BPF_RET_K, SECCOMP_RET_ERRNO | libc::EPERM as u32);
    w.statement(BPF_LD_W_ABS, DATA_NR);
    w.jump(BPF_JGE_K, X32_SYSCALL_BIT, Target::Deny, Target::Next);
    w.search(&calls, ioctl);
    let deny = w.code.len();
    w.statement(BPF_RET_K, SECCOMP_RET_ERRNO | libc::EPERM as u32);
    let allow = w.code.len();
    w.statement(BPF_RET_K, SECCOMP_RET_ALLOW);
    let ioctl_at = w.code.len();
    if ioctl.is_some() {
        // The request's type byte (bits 8-15) must be one of the role's
        // (BPF jumps only forward: this block ends with its own allow).
        w.statement(BPF_LD_W_ABS, DATA_ARG1_LOW);
        w.statement(BPF_ALU_AND_K, 0xff00);
        let refuse = ioctl_at + 2 + types.len();
        for &t in types {
            w.jump(
                BPF_JEQ_K,
                (t as u32) << 8,
                Target::At(refuse + 1),
                Target::Next,
            );
        }
        w.statement(BPF_RET_K, SECCOMP_RET_ERRNO | libc::EPERM as u32);
        w.statement(BPF_RET_K, SECCOMP_RET_ALLOW);
    }
    w.finish(deny, allow, ioctl_at)
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

/// Puts the [`Role::Main`] filter on every thread of this process (and so
/// on every thread and process it starts from now on). It cannot be taken
/// off.
///
/// # Errors
/// [`SeccompError`].
pub fn install_process() -> Result<(), SeccompError> {
    seccompiler::apply_filter_all_threads(&program(Role::Main)?)
        .map_err(|e| SeccompError::Install(e.to_string()))
}

/// Adds `program` (from [`program`]) to the calling thread's filters.
///
/// # Errors
/// [`SeccompError::Install`].
pub fn install_thread(program: &BpfProgram) -> Result<(), SeccompError> {
    seccompiler::apply_filter(program).map_err(|e| SeccompError::Install(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backward_or_too_long_jump_is_an_error() {
        let mut backward = Writer::default();
        backward.statement(0x06, 0);
        backward.jump(BPF_JEQ_K, 1, Target::At(0), Target::Next);
        assert!(matches!(
            backward.finish(0, 0, 0),
            Err(SeccompError::Build(_))
        ));
        let mut far = Writer::default();
        far.jump(BPF_JEQ_K, 1, Target::At(300), Target::Next);
        assert!(matches!(far.finish(0, 0, 0), Err(SeccompError::Build(_))));
        let mut near = Writer::default();
        near.jump(BPF_JEQ_K, 1, Target::At(2), Target::Next);
        near.statement(0x06, 0);
        near.statement(0x06, 0);
        let program = near.finish(0, 0, 0).expect("a forward jump");
        assert_eq!((program[0].jt, program[0].jf), (1, 0));
    }

    #[test]
    fn no_role_allows_a_refused_call() {
        for role in [Role::Main, Role::Devices, Role::Vcpu] {
            for (name, nr) in role.allowed() {
                assert!(
                    REFUSED.iter().all(|&(_, r)| r != nr),
                    "{role:?} allows {name}"
                );
            }
        }
    }

    /// Runs `program` on one call as the kernel would (the instructions
    /// the filters use).
    fn evaluate(program: &BpfProgram, arch: u32, nr: u32, arg1: u32) -> u32 {
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let i = &program[pc];
            pc += 1;
            match i.code {
                BPF_LD_W_ABS => {
                    acc = match i.k {
                        DATA_NR => nr,
                        DATA_ARCH => arch,
                        DATA_ARG1_LOW => arg1,
                        k => panic!("load of seccomp_data offset {k}"),
                    }
                }
                BPF_ALU_AND_K => acc &= i.k,
                BPF_JEQ_K | BPF_JGE_K => {
                    let taken = if i.code == BPF_JEQ_K {
                        acc == i.k
                    } else {
                        acc >= i.k
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                BPF_RET_K => return i.k,
                code => panic!("instruction {code:#x}"),
            }
        }
    }

    /// Each role's filter allows exactly its calls (an ioctl only with one
    /// of its request types), refuses every other number, the x32 ABI and
    /// other architectures — checked for every call number by running it.
    #[test]
    fn each_filter_allows_exactly_its_calls() {
        let deny = SECCOMP_RET_ERRNO | libc::EPERM as u32;
        for role in [Role::Main, Role::Devices, Role::Vcpu] {
            let program = program(role).unwrap();
            let allowed: Vec<u32> = role.allowed().iter().map(|&(_, nr)| nr as u32).collect();
            let kvm_request = (KVM_IOCTL_TYPE as u32) << 8 | 0x80;
            for nr in 0..1024 {
                let want = if allowed.contains(&nr) {
                    SECCOMP_RET_ALLOW
                } else {
                    deny
                };
                let got = evaluate(&program, AUDIT_ARCH_X86_64, nr, kvm_request);
                assert_eq!(got, want, "{role:?}: call {nr}");
                let x32 = evaluate(&program, AUDIT_ARCH_X86_64, nr | X32_SYSCALL_BIT, 0);
                assert_eq!(x32, deny, "{role:?}: x32 call {nr}");
                let i386 = evaluate(&program, 0x4000_0003, nr, 0);
                assert_eq!(i386, deny, "{role:?}: i386 call {nr}");
            }
            let ioctl = libc::SYS_ioctl as u32;
            let other_request = 0x5400 | 0x1b; // TIOCINQ, type 'T'
            let want = match role.ioctl_types() {
                Some(types) if !types.contains(&TTY_IOCTL_TYPE) => deny,
                _ => SECCOMP_RET_ALLOW,
            };
            assert_eq!(
                evaluate(&program, AUDIT_ARCH_X86_64, ioctl, other_request),
                want,
                "{role:?}: a terminal ioctl"
            );
        }
    }

    #[test]
    fn every_role_is_a_subset_of_main() {
        let main = Role::Main.allowed();
        for role in [Role::Devices, Role::Vcpu] {
            for call in role.allowed() {
                assert!(main.contains(&call), "{role:?}'s {} is not main's", call.0);
            }
        }
    }

    fn refused(r: libc::c_long) -> bool {
        r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }

    /// Runs `check` in a forked child under the main filter and then
    /// `role`'s (as the threads get them); true when it held. The child
    /// only makes system calls after the fork (no allocation).
    fn in_filtered_child(role: Role, check: fn() -> bool) -> bool {
        let main = program(Role::Main).unwrap();
        let own = program(role).unwrap();
        // SAFETY: the child only makes system calls and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // /proc/self/status is opened first: the devices and vCPU
            // filters refuse opening files.
            // SAFETY: a NUL-terminated path.
            let status_fd = unsafe { libc::open(c"/proc/self/status".as_ptr(), libc::O_RDONLY) };
            let installed = seccompiler::apply_filter(&main).is_ok()
                && (role == Role::Main || seccompiler::apply_filter(&own).is_ok());
            let filters = if role == Role::Main { b'1' } else { b'2' };
            let mut status = [0u8; 4096];
            // SAFETY: reads into our own buffer.
            let n = unsafe { libc::pread(status_fd, status.as_mut_ptr().cast(), status.len(), 0) };
            let shown = n > 0 && {
                let text = &status[..n as usize];
                let needle = [b"Seccomp_filters:\t".as_slice(), &[filters]].concat();
                text.windows(needle.len()).any(|w| w == needle.as_slice())
            };
            let ok = installed && shown && check();
            // SAFETY: ends the forked child without running destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
    }

    /// What every role refuses: running a program, mounting.
    fn exec_and_mount_refused() -> bool {
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
        // SAFETY: writes nothing (zero bytes) to standard error.
        let write = unsafe { libc::write(2, c"".as_ptr().cast(), 0) };
        refused(exec.into()) && refused(mount.into()) && write == 0
    }

    #[test]
    fn the_main_thread_cannot_run_programs_or_mount() {
        assert!(in_filtered_child(Role::Main, || {
            // SAFETY: a NUL-terminated path; the descriptor is closed.
            let open_ok = unsafe {
                let fd = libc::open(c"/proc/self/stat".as_ptr(), libc::O_RDONLY);
                fd >= 0 && libc::close(fd) == 0
            };
            exec_and_mount_refused() && open_ok
        }));
    }

    #[test]
    fn a_vcpu_thread_makes_kvm_ioctls_only_and_opens_nothing() {
        assert!(in_filtered_child(Role::Vcpu, || {
            let mut n: libc::c_int = 0;
            // SAFETY: FIONREAD into our own integer; refused before that.
            let tty_ioctl = unsafe { libc::ioctl(0, libc::FIONREAD, &mut n) };
            // SAFETY: a NUL-terminated path.
            let open = unsafe { libc::open(c"/proc/self/stat".as_ptr(), libc::O_RDONLY) };
            // SAFETY: plain integer arguments.
            let socket = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
            // A KVM request passes the filter (and fails on a descriptor
            // that is no KVM object with something other than EPERM).
            // SAFETY: KVM_GET_API_VERSION takes no argument.
            let kvm_ioctl = unsafe { libc::ioctl(0, 0xAE00, 0) };
            let kvm_passed = kvm_ioctl == -1
                && std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM);
            // SAFETY: getpid through the x32 ABI: no arguments.
            let x32 = unsafe { libc::syscall(0x4000_0000 | libc::SYS_getpid) };
            exec_and_mount_refused()
                && kvm_passed
                && refused(x32)
                && refused(tty_ioctl.into())
                && refused(open.into())
                && refused(socket.into())
        }));
    }

    #[test]
    fn the_devices_thread_opens_no_files_and_starts_no_threads() {
        assert!(in_filtered_child(Role::Devices, || {
            // SAFETY: a NUL-terminated path.
            let open = unsafe { libc::open(c"/proc/self/stat".as_ptr(), libc::O_RDONLY) };
            // SAFETY: a plain clone with no flags (a fork); refused first.
            let clone = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) };
            // SAFETY: plain integer arguments; the socket is closed.
            let socket_ok = unsafe {
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                fd >= 0 && libc::close(fd) == 0
            };
            exec_and_mount_refused() && refused(open.into()) && refused(clone) && socket_ok
        }));
    }
}
