//! Destroying the VM after the process has gone.
//!
//! Releasing a KVM VM costs 10–17 ms on the PVM host (KVM_CREATE_VM's
//! counterpart waits for SRCU grace periods and frees the shadow MMU) —
//! half of a whole `kiln run` of a small program. Nothing the user waits
//! for depends on it: the program's output and exit status are known. So
//! a one-shot kiln-vmm hands the VM to a helper process that shares its
//! memory (`CLONE_VM`) and holds copies of its descriptors: the helper
//! closes every descriptor but the VM's and the devices' irqfds at once
//! (the caller's pipes reach end of file, locks and taps go as usual),
//! waits for kiln-vmm to exit, then closes the irqfds (whose last close
//! costs KVM work) and the VM's descriptor and exits. The VM goes with its
//! last reference — that descriptor, or the vCPUs' run areas mapped in the
//! shared address space (a vCPU's descriptor only holds one more) — in the
//! helper either way, and the guest memory with the last user of the
//! shared address space. kiln-vmm itself must then leave guest memory
//! mapped (the VM still refers to it).
//!
//! The helper runs on its own small stack in the shared address space and
//! makes raw system calls only: no allocation, no locks, no `errno` (it
//! shares the parent thread's TLS pointer). A run starts it while the
//! guest boots, so it shows as a second `kiln` process (a child of the
//! run's, sharing its memory, all signals blocked) for as long as the run
//! lasts, and then for the VM's destruction.

use std::os::fd::RawFd;

/// Bytes of the helper's stack.
const STACK: usize = 64 * 1024;

/// Most descriptors the helper keeps besides the VM's (see [`start`]).
pub const KEEP_MAX: usize = 32;

/// What the helper needs, written before it starts and only read by it.
#[derive(Debug)]
#[repr(C)]
struct Handover {
    /// Set to 1 by the helper once it holds only the VM's descriptor and
    /// the kept ones.
    closed: std::sync::atomic::AtomicU32,
    parent: i32,
    /// The highest descriptor open, for closing them one by one; -1 when
    /// `close_range` works (then it is not needed).
    highest_fd: i32,
    /// The VM's descriptor.
    vm: i32,
    /// The VM's descriptor and the kept ones, ascending; `keep_len` used.
    keep: [i32; KEEP_MAX + 1],
    keep_len: usize,
}

/// A started helper.
#[derive(Debug)]
pub struct Helper(&'static Handover);

/// Starts the helper that destroys the VM (descriptor `vm`) once this
/// process has exited. It also holds on to `keep` (at most [`KEEP_MAX`];
/// more are not kept): descriptors whose last close costs KVM work — an
/// irqfd's makes KVM shut the interrupt route down on a worker, which took
/// the CPU from kiln-vmm for ~0.05 ms each — so that this process's close
/// of them is a mere reference drop. The helper copies the descriptor
/// table as it is now: a descriptor opened later is not held by it, one
/// closed later still is until the helper closes its copy (at once).
/// `None` when it could not start. After `Some`, guest memory must stay
/// mapped for the rest of this process.
///
/// A run starts it early, on the devices thread while the guest boots, so
/// that the clone (~0.1–0.2 ms here) is not paid after the program's end.
pub fn start(vm: RawFd, keep: &[RawFd]) -> Option<Helper> {
    let mut kept: Vec<i32> = std::iter::once(vm)
        .chain(keep.iter().copied().filter(|&fd| fd >= 0).take(KEEP_MAX))
        .collect();
    kept.sort_unstable();
    kept.dedup();
    // SAFETY: close_range on a range no descriptor can be in (the highest
    // numbers) closes nothing; it only says whether the call works here.
    let close_range_works = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            libc::c_uint::MAX - 1,
            libc::c_uint::MAX - 1,
            0u32,
        )
    } == 0;
    let highest_fd = if close_range_works {
        -1
    } else {
        // The descriptors' numbers, to close them one by one.
        let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
            return None;
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .max()
            .unwrap_or(0)
    };
    let mut handover = Box::new(Handover {
        closed: std::sync::atomic::AtomicU32::new(0),
        parent: std::process::id() as i32,
        highest_fd,
        vm,
        keep: [-1; KEEP_MAX + 1],
        keep_len: kept.len(),
    });
    handover.keep[..kept.len()].copy_from_slice(&kept);
    // SAFETY: a fresh anonymous mapping for the helper's stack; it stays
    // mapped for as long as the shared address space exists.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return None;
    }
    let arg = Box::into_raw(handover);
    // SAFETY: `helper` only makes raw system calls on the stack given here
    // (its top, 16-byte aligned), reading `arg`, which is leaked for it.
    // Exit signal 0: no SIGCHLD for kiln-vmm, which is not waiting for it.
    let pid = unsafe {
        libc::clone(
            helper,
            stack.cast::<u8>().add(STACK).cast(),
            libc::CLONE_VM,
            arg.cast(),
        )
    };
    if pid < 0 {
        // SAFETY: the helper did not start; the box and the stack are ours.
        unsafe {
            drop(Box::from_raw(arg));
            libc::munmap(stack, STACK);
        }
        return None;
    }
    // SAFETY: the Handover is leaked: it lives as long as the process.
    Some(Helper(unsafe { &*arg }))
}

impl Helper {
    /// Waits (at most about a second) until the helper has let go of every
    /// other descriptor: a tap, a lock or a pipe must not outlive this
    /// process because the helper still held a copy.
    pub fn wait_until_alone(&self) {
        let closed = &self.0.closed;
        for _ in 0..100 {
            if closed.load(std::sync::atomic::Ordering::Acquire) == 1 {
                break;
            }
            let timeout = libc::timespec {
                tv_sec: 0,
                tv_nsec: 10_000_000,
            };
            // SAFETY: FUTEX_WAIT on a live atomic with a timeout.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    closed.as_ptr(),
                    libc::FUTEX_WAIT,
                    0,
                    &timeout as *const libc::timespec,
                );
            }
        }
    }
}

/// A system call without errno (see the module comment).
///
/// # Safety
/// As the system call `nr` with these arguments.
unsafe fn raw_syscall(nr: i64, a: i64, b: i64, c: i64, d: i64) -> i64 {
    let ret: i64;
    // SAFETY: the caller vouches for the call; SYSCALL clobbers RCX and R11.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr => ret,
            in("rdi") a,
            in("rsi") b,
            in("rdx") c,
            in("r10") d,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// The helper process (see the module comment).
extern "C" fn helper(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the leaked Handover written before the clone.
    let h = unsafe { &*(arg as *const Handover) };
    // SAFETY: raw system calls on this process's own signal mask and
    // descriptors (its own copy of the table: no CLONE_FILES).
    unsafe {
        // No signal handler of kiln-vmm's may run here.
        let all: u64 = !0;
        raw_syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_BLOCK as i64,
            &all as *const u64 as i64,
            0,
            8,
        );
        // Every descriptor but the kept ones: the ranges between them, or
        // one by one where close_range fails (an older kernel, or a seccomp
        // filter without it: any descriptor left open would keep its file,
        // its mount, a pipe's end, busy while the VM goes).
        let keep = &h.keep[..h.keep_len.min(KEEP_MAX + 1)];
        if h.highest_fd < 0 {
            let mut from: i64 = 0;
            for &fd in keep {
                if i64::from(fd) > from {
                    raw_syscall(libc::SYS_close_range, from, i64::from(fd) - 1, 0, 0);
                }
                from = i64::from(fd) + 1;
            }
            raw_syscall(libc::SYS_close_range, from, i64::from(u32::MAX), 0, 0);
        } else {
            for fd in 0..=h.highest_fd {
                if !keep.contains(&fd) {
                    raw_syscall(libc::SYS_close, i64::from(fd), 0, 0, 0);
                }
            }
        }
        h.closed.store(1, std::sync::atomic::Ordering::Release);
        raw_syscall(
            libc::SYS_futex,
            h.closed.as_ptr() as i64,
            libc::FUTEX_WAKE as i64,
            1,
            0,
        );
        let pidfd = raw_syscall(libc::SYS_pidfd_open, i64::from(h.parent), 0, 0, 0);
        if pidfd >= 0 {
            let mut poll = libc::pollfd {
                fd: pidfd as i32,
                events: libc::POLLIN,
                revents: 0,
            };
            // Until kiln-vmm has exited (or a signal, which is blocked).
            while raw_syscall(
                libc::SYS_poll,
                &mut poll as *mut libc::pollfd as i64,
                1,
                -1,
                0,
            ) == -i64::from(libc::EINTR)
            {}
        }
        // The kept descriptors, the VM's last: it goes with its last
        // reference.
        for &fd in keep {
            if fd != h.vm {
                raw_syscall(libc::SYS_close, i64::from(fd), 0, 0, 0);
            }
        }
        raw_syscall(libc::SYS_close, i64::from(h.vm), 0, 0, 0);
        raw_syscall(libc::SYS_exit, 0, 0, 0, 0);
    }
    0
}
