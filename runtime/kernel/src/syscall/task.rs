//! Process and thread system calls: identity, limits, TLS, clone, exit.

use kiln_kernel::errno::Errno;

use super::Outcome;
use crate::arch;
use crate::mm::space::STACK_SIZE;
use crate::process::Process;
use crate::sched;

const ARCH_SET_GS: u64 = 0x1001;
const ARCH_SET_FS: u64 = 0x1002;
const ARCH_GET_FS: u64 = 0x1003;
const ARCH_GET_GS: u64 = 0x1004;
/// Addresses at or above this are refused as thread pointers (Linux's
/// TASK_SIZE rule, and a non-canonical value would fault in WRFSBASE).
const CANONICAL_END: u64 = 0x7fff_ffff_f000;

/// arch_prctl(2): the thread pointer (FS) and GS base.
pub fn arch_prctl(p: &mut Process, code: u64, addr: u64) -> Result<u64, Errno> {
    match code {
        ARCH_SET_FS | ARCH_SET_GS => {
            if addr >= CANONICAL_END {
                return Err(Errno::Perm);
            }
            if code == ARCH_SET_FS {
                arch::set_fs_base(addr);
            } else {
                arch::set_gs_base(addr);
            }
            Ok(0)
        }
        ARCH_GET_FS => p
            .mem
            .write_user(addr, &arch::fs_base().to_le_bytes())
            .map(|()| 0),
        ARCH_GET_GS => p
            .mem
            .write_user(addr, &arch::gs_base().to_le_bytes())
            .map(|()| 0),
        _ => Err(Errno::Inval),
    }
}

/// set_tid_address(2): records the pointer; returns the thread id.
pub fn set_tid_address(_p: &mut Process, tidptr: u64) -> Result<u64, Errno> {
    Ok(u64::from(sched::with_current(|t| {
        t.clear_child_tid = tidptr;
        t.tid
    })))
}

/// set_robust_list(2): accepted (one thread, nothing to clean up).
pub fn set_robust_list(len: u64) -> Result<u64, Errno> {
    if len != 24 {
        return Err(Errno::Inval);
    }
    Ok(0)
}

const RLIMIT_STACK: u64 = 3;
const RLIMIT_NOFILE: u64 = 7;
const RLIM_INFINITY: u64 = u64::MAX;

/// prlimit64(2) on the program itself.
pub fn prlimit64(
    p: &mut Process,
    pid: u64,
    resource: u64,
    new: u64,
    old: u64,
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
    if old != 0 {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&current.0.to_le_bytes());
        bytes[8..].copy_from_slice(&current.1.to_le_bytes());
        p.mem.write_user(old, &bytes)?;
    }
    if new != 0 {
        let limit: [u64; 2] = p.mem.read_obj(new)?;
        if limit[0] > limit[1] {
            return Err(Errno::Inval);
        }
        p.rlimits[r] = (limit[0], limit[1]);
    }
    Ok(0)
}

/// uname(2).
pub fn uname(p: &mut Process, buf: u64) -> Result<u64, Errno> {
    let fields: [&[u8]; 6] = [
        b"Linux",
        b"kiln",
        b"6.1.0-kiln",
        b"#1 SMP kiln",
        b"x86_64",
        b"(none)",
    ];
    let mut out = [0u8; 6 * 65];
    for (i, f) in fields.iter().enumerate() {
        out[i * 65..i * 65 + f.len()].copy_from_slice(f);
    }
    p.mem.write_user(buf, &out)?;
    Ok(0)
}

/// getresuid(2) / getresgid(2): real, effective and saved ids, all 0.
pub fn getres_ids(p: &mut Process, ptrs: [u64; 3]) -> Result<u64, Errno> {
    for ptr in ptrs {
        p.mem.write_user(ptr, &0u32.to_le_bytes())?;
    }
    Ok(0)
}

/// sysinfo(2): uptime, guest memory, one process.
pub fn sysinfo(p: &mut Process, info: u64) -> Result<u64, Errno> {
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
    p.mem.write_user(info, &out)?;
    Ok(0)
}

/// prctl(2): thread names, the dumpable and no-new-privileges flags, the
/// parent-death signal and capability queries; other options are EINVAL,
/// as Linux answers options it does not know.
pub fn prctl(p: &mut Process, option: u64, arg: u64) -> Result<u64, Errno> {
    const PR_SET_PDEATHSIG: u64 = 1;
    const PR_GET_PDEATHSIG: u64 = 2;
    const PR_GET_DUMPABLE: u64 = 3;
    const PR_SET_DUMPABLE: u64 = 4;
    const PR_SET_NAME: u64 = 15;
    const PR_GET_NAME: u64 = 16;
    const PR_CAPBSET_READ: u64 = 23;
    const PR_GET_TIMERSLACK: u64 = 30;
    const PR_SET_CHILD_SUBREAPER: u64 = 36;
    const PR_GET_CHILD_SUBREAPER: u64 = 37;
    const PR_SET_NO_NEW_PRIVS: u64 = 38;
    const PR_GET_NO_NEW_PRIVS: u64 = 39;
    const CAP_LAST_CAP: u64 = 40;
    match option {
        PR_SET_NAME => {
            let name = p.mem.read_cstr_lossy(arg, 15)?;
            sched::with_current(|t| t.set_comm(&name));
            Ok(0)
        }
        PR_GET_NAME => {
            let comm = sched::with_current(|t| t.comm);
            p.mem.write_user(arg, &comm)?;
            Ok(0)
        }
        PR_SET_PDEATHSIG => (arg <= 64).then_some(0).ok_or(Errno::Inval),
        PR_GET_PDEATHSIG => {
            p.mem.write_user(arg, &0u32.to_le_bytes())?;
            Ok(0)
        }
        PR_GET_DUMPABLE => Ok(1),
        PR_SET_DUMPABLE => (arg <= 1).then_some(0).ok_or(Errno::Inval),
        PR_CAPBSET_READ => (arg <= CAP_LAST_CAP).then_some(1).ok_or(Errno::Inval),
        PR_GET_TIMERSLACK => Ok(50_000),
        PR_SET_CHILD_SUBREAPER => Ok(0),
        PR_GET_CHILD_SUBREAPER => {
            p.mem.write_user(arg, &0u32.to_le_bytes())?;
            Ok(0)
        }
        PR_SET_NO_NEW_PRIVS => (arg == 1).then_some(0).ok_or(Errno::Inval),
        PR_GET_NO_NEW_PRIVS => Ok(0),
        _ => Err(Errno::Inval),
    }
}

/// getrandom(2).
pub fn getrandom(p: &mut Process, buf: u64, len: u64, flags: u64) -> Result<u64, Errno> {
    if flags & !0x7 != 0 {
        return Err(Errno::Inval);
    }
    let len = len.min(32 * 1024 * 1024);
    let out = p.mem.user_bytes_mut(buf, len)?;
    crate::random::fill(out);
    Ok(len)
}

/// sched_getaffinity(2): one CPU.
pub fn sched_getaffinity(p: &mut Process, size: u64, mask: u64) -> Result<u64, Errno> {
    if size < 8 || !size.is_multiple_of(8) {
        return Err(Errno::Inval);
    }
    p.mem.write_user(mask, &1u64.to_le_bytes())?;
    Ok(8)
}

const CLONE_VM: u64 = 0x100;
const CLONE_FS: u64 = 0x200;
const CLONE_FILES: u64 = 0x400;
const CLONE_SIGHAND: u64 = 0x800;
const CLONE_VFORK: u64 = 0x4000;
const CLONE_THREAD: u64 = 0x10000;
const CLONE_SETTLS: u64 = 0x80000;
const CLONE_PARENT_SETTID: u64 = 0x100000;
const CLONE_CHILD_CLEARTID: u64 = 0x200000;
const CLONE_CHILD_SETTID: u64 = 0x1000000;

/// clone(2) and clone3(2): new threads of the program (CLONE_VM |
/// CLONE_THREAD). New processes (fork, vfork, plain clone) are not
/// supported: kiln runs one program, and spawning a second one is future
/// work; they fail with ENOSYS, which the trace explains.
pub fn clone(p: &mut Process, frame: &crate::arch::Frame, number: u64, a: super::Args) -> Outcome {
    let [a0, a1, a2, a3, a4, _] = a.0;
    // clone(flags, stack, parent_tid, child_tid, tls)
    let (flags, stack, parent_tid, child_tid, tls) =
        if number == kiln_kernel::syscall::names::nr::CLONE3 {
            // struct clone_args: flags, pidfd, child_tid, parent_tid,
            // exit_signal, stack, stack_size, tls, …
            if a1 < 64 {
                return Outcome::Return(Err(Errno::Inval));
            }
            let c: [u64; 8] = match p.mem.read_obj(a0) {
                Ok(c) => c,
                Err(e) => return Outcome::Return(Err(e)),
            };
            let stack = if c[5] != 0 { c[5] + c[6] } else { 0 };
            (c[0], stack, c[3], c[2], c[7])
        } else {
            (a0, a1, a2, a3, a4)
        };
    if flags & (CLONE_VM | CLONE_THREAD) != CLONE_VM | CLONE_THREAD || flags & CLONE_VFORK != 0 {
        if p.trace {
            crate::kprintln!("kiln: clone(flags {flags:#x}) would create a process; kiln runs one program (threads only)");
        }
        return Outcome::Return(Err(Errno::Nosys));
    }
    if flags & (CLONE_SIGHAND | CLONE_FS | CLONE_FILES) != (CLONE_SIGHAND | CLONE_FS | CLONE_FILES)
    {
        return Outcome::Return(Err(Errno::Inval));
    }
    let mut child = *frame;
    child.rax = 0;
    if stack != 0 {
        child.rsp = stack;
    }
    let fs_base = if flags & CLONE_SETTLS != 0 {
        tls
    } else {
        arch::fs_base()
    };
    if fs_base >= CANONICAL_END {
        return Outcome::Return(Err(Errno::Perm));
    }
    let clear = if flags & CLONE_CHILD_CLEARTID != 0 {
        child_tid
    } else {
        0
    };
    // Validate the ID pointers before the thread exists.
    for (flag, ptr) in [
        (CLONE_PARENT_SETTID, parent_tid),
        (CLONE_CHILD_SETTID, child_tid),
    ] {
        if flags & flag != 0 {
            if let Err(e) = p.mem.prepare(ptr, 4, true) {
                return Outcome::Return(Err(e));
            }
        }
    }
    let tid = match sched::spawn(&child, fs_base, clear) {
        Ok(t) => t,
        Err(e) => return Outcome::Return(Err(e)),
    };
    for (flag, ptr) in [
        (CLONE_PARENT_SETTID, parent_tid),
        (CLONE_CHILD_SETTID, child_tid),
    ] {
        if flags & flag != 0 {
            let _ = p.mem.write_user(ptr, &tid.to_le_bytes());
        }
    }
    Outcome::Return(Ok(u64::from(tid)))
}

/// Ends the calling thread: clears its `clear_child_tid` word and wakes a
/// futex waiter there (pthread_join), then gives the CPU away for good.
/// Returns only when it was the program's last thread.
pub fn exit_thread() {
    let addr = sched::with_current(|t| core::mem::take(&mut t.clear_child_tid));
    if addr != 0 {
        let mut guard = crate::process::PROCESS.lock();
        if let Some(p) = guard.as_mut() {
            if p.mem.write_user(addr, &0u32.to_le_bytes()).is_ok() {
                sched::wake_futex(addr, u32::MAX, 1);
            }
        }
    }
    sched::exit_current();
}
