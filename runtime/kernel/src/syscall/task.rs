//! The process as a whole: identity (ids, groups, sessions), limits,
//! uname, sysinfo, prctl, randomness, CPU affinity, and the wait calls
//! (no children).

use kiln_kernel::errno::Errno;

use alloc::vec::Vec;

use super::args::{DirFd, Flags, Word};
use super::Call;
use super::Outcome;
use crate::mm::space::STACK_SIZE;
use crate::mm::uaccess::{UserCStr, UserPtr};
use crate::process::Process;
use crate::sched;

/// getpid(2).
pub fn getpid(p: &mut Call) -> Result<u64, Errno> {
    Ok(u64::from(p.pid))
}

/// getppid(2): pid 1's parent is outside the VM (0).
pub fn getppid(p: &mut Call) -> Result<u64, Errno> {
    Ok(u64::from(p.ppid))
}

/// gettid(2).
pub fn gettid(_p: &mut Call) -> Result<u64, Errno> {
    Ok(u64::from(sched::current_tid()))
}

/// getpgrp(2).
pub fn getpgrp(p: &mut Call) -> Result<u64, Errno> {
    Ok(u64::from(p.pgid))
}

/// The process a pid argument names (0: the caller).
fn target_pid(p: &Process, pid: i32) -> Result<u32, Errno> {
    match pid {
        0 => Ok(p.pid),
        n if n > 0 => Ok(n as u32),
        _ => Err(Errno::Srch),
    }
}

/// getsid(2).
pub fn getsid(p: &mut Call, pid: i32) -> Result<u64, Errno> {
    let pid = target_pid(p, pid)?;
    crate::process::with_process(p, pid, |t| u64::from(t.sid)).ok_or(Errno::Srch)
}

/// getpgid(2).
pub fn getpgid(p: &mut Call, pid: i32) -> Result<u64, Errno> {
    let pid = target_pid(p, pid)?;
    crate::process::with_process(p, pid, |t| u64::from(t.pgid)).ok_or(Errno::Srch)
}

/// setsid(2): a new session and process group led by the caller, which
/// must not lead a group already.
pub fn setsid(p: &mut Call) -> Result<u64, Errno> {
    let me = p.pid;
    if crate::process::all_ids(p).iter().any(|i| i.pgid == me) {
        return Err(Errno::Perm);
    }
    p.sid = me;
    p.pgid = me;
    Ok(u64::from(me))
}

/// setpgid(2): moves the caller or one of its children (in its session,
/// not a session leader) into group `pgid` of the same session, or into a
/// new group of its own (`pgid` 0 or its pid).
pub fn setpgid(p: &mut Call, pid: i32, pgid: i32) -> Result<u64, Errno> {
    if pgid < 0 || pid < 0 {
        return Err(Errno::Inval);
    }
    let me = p.ids();
    let target = if pid == 0 { me.pid } else { pid as u32 };
    let all = crate::process::all_ids(p);
    let t = all
        .iter()
        .find(|i| i.pid == target && (i.pid == me.pid || i.ppid == me.pid))
        .copied()
        .ok_or(Errno::Srch)?;
    if t.sid != me.sid || t.sid == t.pid {
        return Err(Errno::Perm);
    }
    let group = if pgid == 0 { target } else { pgid as u32 };
    if group != target && !all.iter().any(|i| i.pgid == group && i.sid == me.sid) {
        return Err(Errno::Perm);
    }
    crate::process::with_process(p, target, |t| t.pgid = group).ok_or(Errno::Srch)?;
    Ok(0)
}

/// fork(2) and clone(2) without CLONE_THREAD: a new process running the
/// caller's code from this call on with RAX 0 — its memory the caller's,
/// copied on write, its descriptors shared.
pub fn fork(p: &mut Call) -> Outcome {
    fork_with_stack(p, 0, false)
}

/// vfork(2): as fork, but the child runs in the caller's memory while the
/// caller waits, until the child execs or ends (then vfork returns).
pub fn vfork(p: &mut Call) -> Outcome {
    fork_with_stack(p, 0, true)
}

/// The fork of `fork`, with the child on `stack` when not 0 (clone), and
/// sharing the caller's memory while the caller waits with `vfork` (when
/// the caller is its process's only thread: with others running in that
/// memory, the child gets a copy instead).
pub fn fork_with_stack(p: &mut Call, stack: u64, vfork: bool) -> Outcome {
    // A fork bomb meets EAGAIN, and the kernel keeps the memory its own
    // structures need (a new thread's stack comes from its heap).
    if crate::state::KERNEL.parked.lock().len() + 1 >= MAX_PROCESSES {
        return Outcome::Return(Err(Errno::Again));
    }
    let (used, total) = crate::mm::frame::usage();
    if total.saturating_sub(used) < RESERVE_FRAMES {
        return Outcome::Return(Err(Errno::Again));
    }
    let pid = crate::sched::next_id();
    let lend = vfork && crate::sched::threads_of(p.pid).count == 1;
    let made = if lend { p.vfork(pid) } else { p.fork(pid) };
    let child = match made {
        Ok(c) => c,
        Err(e) => return Outcome::Return(Err(e)),
    };
    let (used, total) = crate::mm::frame::usage();
    if !lend && total.saturating_sub(used) < RESERVE_FRAMES {
        // The copy took what the kernel needs: give it back.
        child.mem.discard();
        return Outcome::Return(Err(Errno::Again));
    }
    let mut frame = *p.frame();
    frame.rax = 0;
    if stack != 0 {
        frame.rsp = stack;
    }
    crate::state::KERNEL.parked.lock().insert(pid, child);
    if let Err(e) =
        crate::sched::spawn_as(pid, pid, &frame, crate::arch::fs_base(), UserPtr::new(0))
    {
        if let Some(mut child) = crate::state::KERNEL.parked.lock().remove(&pid) {
            if lend {
                core::mem::swap(&mut p.mem, &mut child.mem);
            }
            child.mem.discard();
        }
        return Outcome::Return(Err(e));
    }
    if lend {
        // Suspended, without memory, until the child gives it back.
        return Outcome::Block {
            wait: crate::sched::Wait::Vfork { child: pid },
            deadline: None,
            on_event: Some(Ok(u64::from(pid))),
            on_timeout: None,
            on_signal: super::OnSignal::Rerun,
        };
    }
    Outcome::Return(Ok(u64::from(pid)))
}

/// Most processes at once (Linux's RLIMIT_NPROC plays this part); fork
/// fails with EAGAIN beyond.
pub const MAX_PROCESSES: usize = 256;
/// Free frames fork leaves for the kernel (1 MiB).
const RESERVE_FRAMES: u64 = 256;

/// wait4 and waitid options.
const WNOHANG: u64 = 1;
const WUNTRACED: u64 = 2;
const WEXITED: u64 = 4;
const WCONTINUED: u64 = 8;
const WNOWAIT: u64 = 0x0100_0000;
const WALL_CLONE: u64 = 0xc000_0000;

/// The ended child of the caller that `select` accepts (given its pid and
/// process group), collected (left for later with `keep`): `Ok(None)`
/// when children that match still run, ECHILD when none match.
fn reap(
    me: u32,
    select: impl Fn(u32, u32) -> bool,
    keep: bool,
) -> Result<Option<crate::process::Zombie>, Errno> {
    let mut zombies = crate::state::KERNEL.zombies.lock();
    if let Some(i) = zombies
        .iter()
        .position(|z| z.ppid == me && select(z.pid, z.pgid))
    {
        return Ok(Some(if keep { zombies[i] } else { zombies.remove(i) }));
    }
    drop(zombies);
    if crate::process::children_of(me)
        .into_iter()
        .any(|c| select(c.pid, c.pgid))
    {
        Ok(None)
    } else {
        Err(Errno::Child)
    }
}

/// Which children a wait4 `pid` argument selects: one pid, the caller's
/// group (0), group `-pid`, or any (-1).
fn wait4_selects(pid: i32, own_group: u32) -> impl Fn(u32, u32) -> bool {
    move |child, group| match pid {
        -1 => true,
        0 => group == own_group,
        p if p > 0 => child == p as u32,
        p => group == p.unsigned_abs(),
    }
}

/// wait4(2) (and waitpid, wait through it): an ended child's status — or,
/// with WUNTRACED and WCONTINUED, a stopped or continued one's; waits for
/// one unless WNOHANG.
pub fn wait4(
    p: &mut Call,
    pid: i32,
    status: UserPtr<i32>,
    Flags(options): Flags,
    rusage: UserPtr<u8>,
) -> Result<u64, Errno> {
    if options & !(WNOHANG | WUNTRACED | WCONTINUED | WALL_CLONE) != 0 {
        return Err(Errno::Inval);
    }
    if pid == i32::MIN {
        return Err(Errno::Srch);
    }
    let reaped = reap(p.pid, wait4_selects(pid, p.pgid), false)?.map(|z| (z.pid, z.status));
    let found = reaped.or_else(|| {
        crate::process::take_stop_report(
            p.pid,
            wait4_selects(pid, p.pgid),
            options & WUNTRACED != 0,
            options & WCONTINUED != 0,
            false,
        )
    });
    match found {
        Some((child, how)) => {
            if !status.is_null() {
                p.mem.write(status, how.raw())?;
            }
            if !rusage.is_null() {
                p.mem.write_bytes(rusage, &[0u8; 144])?;
            }
            Ok(u64::from(child))
        }
        None if options & WNOHANG != 0 => Ok(0),
        // Blocks until a child ends (its end wakes waiters), then runs again.
        None => Err(Errno::Restart),
    }
}

/// waitid(2): P_ALL (0), P_PID (1), P_PGID (2; id 0: the caller's group).
pub fn waitid(
    p: &mut Call,
    which: u32,
    id: i32,
    info: UserPtr<u8>,
    Flags(options): Flags,
) -> Result<u64, Errno> {
    if options & (WEXITED | WUNTRACED | WCONTINUED) == 0 || which > 2 {
        return Err(Errno::Inval);
    }
    let group = if id == 0 { p.pgid } else { id as u32 };
    let select = move |child: u32, pgid: u32| match which {
        1 => child == id as u32,
        2 => pgid == group,
        _ => true,
    };
    let keep = options & WNOWAIT != 0;
    let reaped = if options & WEXITED != 0 {
        reap(p.pid, select, keep)?.map(|z| (z.pid, z.status))
    } else {
        // ECHILD when no child matches, as for WEXITED.
        reap(p.pid, select, true)?;
        None
    };
    let found = reaped.or_else(|| {
        crate::process::take_stop_report(
            p.pid,
            select,
            options & WUNTRACED != 0,
            options & WCONTINUED != 0,
            keep,
        )
    });
    match found {
        Some((child, how)) => {
            if !info.is_null() {
                p.mem.write_bytes(info, &how.child_info(child).encode())?;
            }
            Ok(0)
        }
        None if options & WNOHANG != 0 => {
            if !info.is_null() {
                p.mem.write_bytes(info, &[0u8; 128])?;
            }
            Ok(0)
        }
        None => Err(Errno::Restart),
    }
}

const RLIMIT_STACK: u32 = 3;
const RLIMIT_NOFILE: u32 = 7;
const RLIM_INFINITY: u64 = u64::MAX;

/// getrlimit(2).
pub fn getrlimit(p: &mut Call, resource: u32, limit: UserPtr<[u64; 2]>) -> Result<u64, Errno> {
    limits(p, 0, resource, UserPtr::new(0), limit)
}

/// setrlimit(2).
pub fn setrlimit(p: &mut Call, resource: u32, limit: UserPtr<[u64; 2]>) -> Result<u64, Errno> {
    limits(p, 0, resource, limit, UserPtr::new(0))
}

/// prlimit64(2) on the program itself.
pub fn prlimit64(
    p: &mut Call,
    pid: i32,
    resource: u32,
    new: UserPtr<[u64; 2]>,
    old: UserPtr<[u64; 2]>,
) -> Result<u64, Errno> {
    limits(p, pid, resource, new, old)
}

/// Reads (into `old`) and sets (from `new`) a resource limit.
fn limits(
    p: &mut Process,
    pid: i32,
    resource: u32,
    new: UserPtr<[u64; 2]>,
    old: UserPtr<[u64; 2]>,
) -> Result<u64, Errno> {
    if pid != 0 && pid != 1 {
        return Err(Errno::Srch);
    }
    let r = resource as usize;
    if r >= p.rlimits.len() {
        return Err(Errno::Inval);
    }
    let current = match (resource, p.rlimits[r]) {
        (_, (RLIM_INFINITY, RLIM_INFINITY)) if resource == RLIMIT_STACK => {
            (STACK_SIZE, RLIM_INFINITY)
        }
        (_, (RLIM_INFINITY, RLIM_INFINITY)) if resource == RLIMIT_NOFILE => (1024, 4096),
        (_, set) => set,
    };
    if !old.is_null() {
        p.mem.write(old, [current.0, current.1])?;
    }
    if !new.is_null() {
        let limit = p.mem.read(new)?;
        if limit[0] > limit[1] {
            return Err(Errno::Inval);
        }
        p.rlimits[r] = (limit[0], limit[1]);
    }
    Ok(0)
}

/// uname(2).
pub fn uname(p: &mut Call, buf: UserPtr<u8>) -> Result<u64, Errno> {
    let host = crate::net::hostname();
    let fields: [&[u8]; 6] = [
        b"Linux",
        host.as_bytes(),
        b"6.1.0-kiln",
        b"#1 SMP kiln",
        b"x86_64",
        b"(none)",
    ];
    let mut out = [0u8; 6 * 65];
    for (i, f) in fields.iter().enumerate() {
        out[i * 65..i * 65 + f.len()].copy_from_slice(f);
    }
    p.mem.write_bytes(buf, &out)?;
    Ok(0)
}

/// sysinfo(2): uptime, guest memory, one process.
pub fn sysinfo(p: &mut Call, info: UserPtr<u8>) -> Result<u64, Errno> {
    let (used, total) = crate::mm::frame::usage();
    let page = 4096u64;
    let mut out = [0u8; 112];
    let uptime = crate::time::monotonic_ns() / 1_000_000_000;
    out[0..8].copy_from_slice(&uptime.to_le_bytes());
    out[32..40].copy_from_slice(&(total * page).to_le_bytes()); // totalram
    out[40..48].copy_from_slice(&(total.saturating_sub(used) * page).to_le_bytes()); // freeram
    let threads = crate::sched::thread_count() as u16;
    out[80..82].copy_from_slice(&threads.to_le_bytes()); // procs
    out[104..108].copy_from_slice(&1u32.to_le_bytes()); // mem_unit
    p.mem.write_bytes(info, &out)?;
    Ok(0)
}

/// prctl(2): thread names, the dumpable and no-new-privileges flags, the
/// parent-death signal and capability queries; other options are EINVAL,
/// as Linux answers options it does not know.
pub fn prctl(p: &mut Call, option: u32, arg: Word) -> Result<u64, Errno> {
    const PR_SET_PDEATHSIG: u32 = 1;
    const PR_GET_PDEATHSIG: u32 = 2;
    const PR_GET_DUMPABLE: u32 = 3;
    const PR_SET_DUMPABLE: u32 = 4;
    const PR_SET_NAME: u32 = 15;
    const PR_GET_NAME: u32 = 16;
    const PR_CAPBSET_READ: u32 = 23;
    const PR_GET_TIMERSLACK: u32 = 30;
    const PR_SET_CHILD_SUBREAPER: u32 = 36;
    const PR_GET_CHILD_SUBREAPER: u32 = 37;
    const PR_SET_NO_NEW_PRIVS: u32 = 38;
    const PR_GET_NO_NEW_PRIVS: u32 = 39;
    const CAP_LAST_CAP: u64 = 40;
    match option {
        PR_SET_NAME => {
            let name = p
                .mem
                .cstr_lossy(crate::mm::uaccess::UserCStr(arg.ptr()), 15)?;
            sched::with_current(|t| t.set_comm(&name));
            Ok(0)
        }
        PR_GET_NAME => {
            let comm = sched::with_current(|t| t.comm);
            p.mem.write(arg.ptr(), comm)?;
            Ok(0)
        }
        PR_SET_PDEATHSIG => {
            let signal = u8::try_from(arg.value())
                .ok()
                .filter(|&s| s <= kiln_kernel::signal::NSIG)
                .ok_or(Errno::Inval)?;
            p.pdeathsig = signal;
            Ok(0)
        }
        PR_GET_PDEATHSIG => {
            let signal = u32::from(p.pdeathsig);
            p.mem.write(arg.ptr::<u32>(), signal)?;
            Ok(0)
        }
        PR_GET_DUMPABLE => Ok(1),
        PR_SET_DUMPABLE => (arg.value() <= 1).then_some(0).ok_or(Errno::Inval),
        PR_CAPBSET_READ => (arg.value() <= CAP_LAST_CAP)
            .then_some(1)
            .ok_or(Errno::Inval),
        PR_GET_TIMERSLACK => Ok(50_000),
        PR_SET_CHILD_SUBREAPER => Ok(0),
        PR_GET_CHILD_SUBREAPER => {
            p.mem.write(arg.ptr::<u32>(), 0)?;
            Ok(0)
        }
        PR_SET_NO_NEW_PRIVS => (arg.value() == 1).then_some(0).ok_or(Errno::Inval),
        PR_GET_NO_NEW_PRIVS => Ok(0),
        _ => Err(Errno::Inval),
    }
}

/// getrandom(2).
pub fn getrandom(
    p: &mut Call,
    buf: UserPtr<u8>,
    count: u64,
    Flags(flags): Flags,
) -> Result<u64, Errno> {
    if flags & !0x7 != 0 {
        return Err(Errno::Inval);
    }
    let len = count.min(32 * 1024 * 1024);
    let out = p.mem.slice_mut(buf, len as usize)?;
    crate::random::fill(out);
    Ok(len)
}

/// sched_getaffinity(2): the CPUs thread `pid` (0: the caller) may run on,
/// as a mask of `size` bytes (the kernel's mask is 8; Linux returns the
/// bytes written).
pub fn sched_getaffinity(
    p: &mut Call,
    pid: i32,
    size: u64,
    mask: UserPtr<u64>,
) -> Result<u64, Errno> {
    if size < 8 || !size.is_multiple_of(8) {
        return Err(Errno::Inval);
    }
    let tid = u32::try_from(pid).map_err(|_| Errno::Srch)?;
    let set = crate::sched::affinity(tid).ok_or(Errno::Srch)?;
    p.mem.write(mask, set)?;
    Ok(8)
}

/// getcpu(2): the CPU the caller runs on (and NUMA node 0); either
/// pointer may be null.
pub fn getcpu(
    p: &mut Call,
    cpu: UserPtr<u32>,
    node: UserPtr<u32>,
    _cache: Word,
) -> Result<u64, Errno> {
    if !cpu.is_null() {
        p.mem.write(cpu, crate::arch::cpu_index() as u32)?;
    }
    if !node.is_null() {
        p.mem.write(node, 0)?;
    }
    Ok(0)
}

/// sched_setaffinity(2): limits thread `pid` (0: the caller) to the CPUs
/// of the mask (`size` bytes; CPUs beyond the VM's are ignored, and a
/// mask with none of the VM's fails with EINVAL).
pub fn sched_setaffinity(
    p: &mut Call,
    pid: i32,
    size: u64,
    mask: UserPtr<u64>,
) -> Result<u64, Errno> {
    let tid = u32::try_from(pid).map_err(|_| Errno::Srch)?;
    let first = if size >= 8 {
        p.mem.read(mask)?
    } else {
        let n = size as usize;
        let mut bytes = [0u8; 8];
        bytes[..n].copy_from_slice(p.mem.slice(UserPtr::new(mask.addr()), n)?);
        u64::from_le_bytes(bytes)
    };
    let set = first & crate::sched::online_mask();
    if set == 0 {
        return Err(Errno::Inval);
    }
    if !crate::sched::set_affinity(tid, set) {
        return Err(Errno::Srch);
    }
    Ok(0)
}

/// A program image waiting to start: set by execve, taken by the system
/// call's way out, which returns to it with every register fresh.
static PENDING_EXEC: spin::Mutex<Option<(u64, u64)>> = spin::Mutex::new(None);

/// The entry point and stack pointer of the program execve just loaded.
pub(super) fn take_exec() -> Option<(u64, u64)> {
    PENDING_EXEC.lock().take()
}

/// Most argv/envp strings one execve takes (Linux's MAX_ARG_STRINGS is
/// larger; kiln's limit is the bytes of the stack).
const MAX_ARG_STRINGS: u64 = 1 << 17;

/// A NULL-terminated array of C strings from the program.
fn string_array(
    p: &mut Process,
    at: UserPtr<u64>,
    budget: &mut usize,
) -> Result<Vec<Vec<u8>>, Errno> {
    let mut out = Vec::new();
    if at.is_null() {
        return Ok(out);
    }
    for i in 0..MAX_ARG_STRINGS {
        let ptr = p.mem.read(UserPtr::<u64>::new(at.addr() + 8 * i))?;
        if ptr == 0 {
            return Ok(out);
        }
        let s = p
            .mem
            .cstr(UserCStr(UserPtr::new(ptr)), *budget)
            .map_err(|e| match e {
                Errno::Nametoolong => Errno::TooBig,
                e => e,
            })?;
        *budget = budget.checked_sub(s.len() + 1 + 8).ok_or(Errno::TooBig)?;
        out.push(s);
    }
    Err(Errno::TooBig)
}

/// execve(2).
pub fn execve(p: &mut Call, path: UserCStr, argv: UserPtr<u64>, envp: UserPtr<u64>) -> Outcome {
    execveat(p, DirFd::Cwd, path, argv, envp, Flags(0))
}

/// execveat(2): the program `path` names (`#!` scripts through their
/// interpreter) replaces the calling process's image; other threads end.
/// Only files of the image's root file system run.
pub fn execveat(
    p: &mut Call,
    dirfd: DirFd,
    path: UserCStr,
    argv: UserPtr<u64>,
    envp: UserPtr<u64>,
    Flags(_flags): Flags,
) -> Outcome {
    let prepared = (|| {
        let name = super::path::path_arg(p, path)?;
        if name.is_empty() {
            return Err(Errno::Noent);
        }
        let base = super::path::base_dir(p, dirfd, &name)?;
        // argv and envp share a quarter of the stack, as on Linux.
        let mut budget = (crate::mm::space::STACK_SIZE / 4 - 4096) as usize;
        let argv = string_array(p, argv, &mut budget)?;
        let envp = string_array(p, envp, &mut budget)?;
        let program = crate::exec::find_program(&base, &name, argv)?;
        Ok((program, envp))
    })();
    let (program, envp) = match prepared {
        Ok(x) => x,
        Err(e) => return Outcome::Return(Err(e)),
    };
    // The point of no return.
    crate::sched::stop_other_threads();
    match crate::exec::replace(p, &program, envp) {
        Ok((entry, sp)) => {
            *crate::state::KERNEL.rewriter.lock() = crate::syscall::rewrite::Rewriter::new();
            crate::sched::reset_current_for_exec();
            *PENDING_EXEC.lock() = Some((entry, sp));
            Outcome::Return(Ok(0))
        }
        // The old image is gone: nothing to return to (Linux: SIGKILL).
        Err(_) => Outcome::Kill(kiln_kernel::signal::sig::SIGKILL),
    }
}
