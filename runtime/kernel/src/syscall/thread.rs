//! Threads: creating them (clone, clone3), their thread pointer
//! (arch_prctl), the words the C library registers (set_tid_address,
//! set_robust_list), yielding and ending (exit, exit_group).

use kiln_kernel::errno::Errno;

use super::args::{Flags, UserAddr, Word};
use super::{Call, Outcome};
use crate::arch;
use crate::mm::uaccess::UserPtr;
use crate::sched;

const ARCH_SET_GS: u32 = 0x1001;
const ARCH_SET_FS: u32 = 0x1002;
const ARCH_GET_FS: u32 = 0x1003;
const ARCH_GET_GS: u32 = 0x1004;
/// Addresses at or above this are refused as thread pointers (Linux's
/// TASK_SIZE rule, and a non-canonical value would fault in WRFSBASE).
const CANONICAL_END: u64 = 0x7fff_ffff_f000;

/// arch_prctl(2): the thread pointer (FS); `addr` is the new base, or
/// where to store the current one. The GS base is the kernel's (its
/// per-CPU area, see `arch`): a program's stays 0, and setting another
/// value fails with EINVAL.
pub fn arch_prctl(p: &mut Call, code: u32, addr: Word) -> Result<u64, Errno> {
    match code {
        ARCH_SET_FS | ARCH_SET_GS => {
            let base = addr.value();
            if base >= CANONICAL_END {
                return Err(Errno::Perm);
            }
            if code == ARCH_SET_FS {
                arch::set_fs_base(base);
            } else if base != 0 {
                return Err(Errno::Inval);
            }
            Ok(0)
        }
        ARCH_GET_FS => p.mem.write(addr.ptr::<u64>(), arch::fs_base()).map(|()| 0),
        ARCH_GET_GS => p.mem.write(addr.ptr::<u64>(), 0u64).map(|()| 0),
        _ => Err(Errno::Inval),
    }
}

/// set_tid_address(2): records the pointer; returns the thread id.
pub fn set_tid_address(_p: &mut Call, tidptr: UserPtr<u32>) -> Result<u64, Errno> {
    Ok(u64::from(sched::with_current(|t| {
        t.clear_child_tid = tidptr;
        t.tid
    })))
}

/// set_robust_list(2): accepted (the list matters only to a process that
/// dies with locks held, and kiln's program ends as a whole).
pub fn set_robust_list(_p: &mut Call, _head: UserPtr<u8>, len: u64) -> Result<u64, Errno> {
    if len != 24 {
        return Err(Errno::Inval);
    }
    Ok(0)
}

/// sched_yield(2): the CPU goes to another runnable thread once the call
/// has released the process.
pub fn sched_yield(_p: &mut Call) -> Result<u64, Errno> {
    sched::yield_now_later();
    Ok(0)
}

/// exit(2): ends the calling thread (the program with its last thread).
pub fn exit(_p: &mut Call, status: i32) -> Outcome {
    Outcome::ThreadExit(status as u8)
}

/// exit_group(2): ends the program.
pub fn exit_group(_p: &mut Call, status: i32) -> Outcome {
    Outcome::Exit(status as u8)
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

/// clone(2): new threads (CLONE_VM | CLONE_THREAD), or without
/// CLONE_THREAD a new process (as fork).
pub fn clone(
    p: &mut Call,
    Flags(flags): Flags,
    UserAddr(stack): UserAddr,
    parent_tid: UserPtr<u32>,
    child_tid: UserPtr<u32>,
    UserAddr(tls): UserAddr,
) -> Outcome {
    new_thread(p, flags, stack, parent_tid, child_tid, tls)
}

/// clone3(2): `struct clone_args { flags, pidfd, child_tid, parent_tid,
/// exit_signal, stack, stack_size, tls, … }`.
pub fn clone3(p: &mut Call, args: UserPtr<[u64; 8]>, size: u64) -> Outcome {
    if size < 64 {
        return Outcome::Return(Err(Errno::Inval));
    }
    let c = match p.mem.read(args) {
        Ok(c) => c,
        Err(e) => return Outcome::Return(Err(e)),
    };
    let stack = if c[5] != 0 { c[5] + c[6] } else { 0 };
    new_thread(p, c[0], stack, UserPtr::new(c[3]), UserPtr::new(c[2]), c[7])
}

/// Starts a thread running the caller's code with the caller's registers
/// (but RAX 0 and the given stack and thread pointer).
fn new_thread(
    p: &mut Call,
    flags: u64,
    stack: u64,
    parent_tid: UserPtr<u32>,
    child_tid: UserPtr<u32>,
    tls: u64,
) -> Outcome {
    if flags & CLONE_THREAD == 0 {
        // A new process (fork, or posix_spawn's CLONE_VM|CLONE_VFORK).
        let vfork = flags & (CLONE_VM | CLONE_VFORK) == CLONE_VM | CLONE_VFORK;
        return super::task::fork_with_stack(p, stack, vfork);
    }
    if flags & CLONE_VM == 0 {
        return Outcome::Return(Err(Errno::Inval));
    }
    if flags & (CLONE_SIGHAND | CLONE_FS | CLONE_FILES) != (CLONE_SIGHAND | CLONE_FS | CLONE_FILES)
    {
        return Outcome::Return(Err(Errno::Inval));
    }
    let mut child = *p.frame();
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
        UserPtr::new(0)
    };
    // Validate the ID pointers before the thread exists.
    for (flag, ptr) in [
        (CLONE_PARENT_SETTID, parent_tid),
        (CLONE_CHILD_SETTID, child_tid),
    ] {
        if flags & flag != 0 {
            if let Err(e) = p.mem.check_writable(ptr) {
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
            let _ = p.mem.write(ptr, tid);
        }
    }
    Outcome::Return(Ok(u64::from(tid)))
}

/// Ends the calling thread: clears its `clear_child_tid` word and wakes a
/// futex waiter there (pthread_join), then gives the CPU away for good.
/// Returns only when it was the program's last thread.
pub fn exit_thread() {
    let word = sched::with_current(|t| core::mem::replace(&mut t.clear_child_tid, UserPtr::new(0)));
    if !word.is_null() {
        let mut guard = crate::state::KERNEL.process.lock();
        if let Some(p) = guard.as_mut() {
            if p.mem.write(word, 0).is_ok() {
                sched::wake_futex(super::futex::key_of(p, word, true), u32::MAX, 1);
            }
        }
    }
    sched::exit_current();
}
