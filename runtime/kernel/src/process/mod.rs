//! The program's process: its resources — address space, open files,
//! current directory, signal dispositions, identity and limits. The one
//! instance lives in `state::KERNEL.process`; system calls and faults take
//! its lock for their whole duration, and the kernel never faults while
//! holding it. Threads are the scheduler's; memory is `mm`'s.

use alloc::vec::Vec;

use crate::fd::FdTable;
use crate::mm::space::AddressSpace;
use crate::signal::Signals;

/// A process's state.
pub struct Process {
    /// Its id (the first program is 1; a child's is its first thread's id).
    pub pid: u32,
    /// Its parent's id (0 for pid 1: its parent is outside the VM).
    pub ppid: u32,
    /// Its program's path (/proc/self/exe).
    pub exe: alloc::string::String,
    /// Its SYSCALL-site rewriter while it is parked (the running process's
    /// is `state::KERNEL.rewriter`).
    pub rewriter: crate::syscall::rewrite::Rewriter,
    /// Its address space.
    pub mem: AddressSpace,
    /// Print every system call.
    pub trace: bool,
    /// Signal dispositions and mask.
    pub signals: Signals,
    /// Open files.
    pub fds: FdTable,
    /// Current directory (a resolved path).
    pub cwd: alloc::string::String,
    /// File-mode creation mask.
    pub umask: u32,
    /// The arguments it was started with (/proc/self/cmdline).
    pub argv: Vec<Vec<u8>>,
    /// Its initial environment (/proc/self/environ).
    pub envp: Vec<Vec<u8>>,
    /// Resource limits set by the program (`prlimit64`), by resource.
    pub rlimits: [(u64, u64); 16],
    /// Monotonic time at program start (for the CPU-time clocks).
    pub start_ns: u64,
    /// Shared writable mappings of files that write back (volume files):
    /// their pages are a copy, written to the file at msync, munmap and
    /// the program's end.
    pub shared_maps: Vec<SharedMap>,
}

/// A `MAP_SHARED` writable mapping of a file whose pages are written back.
pub struct SharedMap {
    /// First address of the mapping.
    pub start: u64,
    /// Bytes of it that hold the file (the rest, past the file's end, is
    /// not written back).
    pub len: u64,
    /// The file.
    pub file: alloc::sync::Arc<dyn crate::fd::FileOps>,
    /// The file offset of `start`.
    pub offset: u64,
}

impl Process {
    /// A copy of the running process for a forked child `pid`: memory
    /// copied, descriptors shared (dup'ed: the same open files, offsets
    /// and all), dispositions, directory, limits and identity kept.
    ///
    /// # Errors
    /// ENOMEM when memory runs out.
    pub fn fork(&self, pid: u32) -> Result<Process, kiln_kernel::errno::Errno> {
        Ok(Process {
            pid,
            ppid: self.pid,
            exe: self.exe.clone(),
            rewriter: crate::state::KERNEL.rewriter.lock().clone(),
            mem: self.mem.fork()?,
            trace: self.trace,
            signals: self.signals.clone(),
            fds: self.fds.clone(),
            cwd: self.cwd.clone(),
            umask: self.umask,
            argv: self.argv.clone(),
            envp: self.envp.clone(),
            rlimits: self.rlimits,
            start_ns: crate::time::monotonic_ns(),
            shared_maps: Vec::new(),
        })
    }

    /// Writes the pages of the shared file mappings that overlap
    /// `[start, end)` back to their files; drops those mappings when
    /// `forget` (munmap).
    ///
    /// # Errors
    /// The first write's error (every mapping is still tried).
    pub fn write_back(
        &mut self,
        start: u64,
        end: u64,
        forget: bool,
    ) -> Result<(), kiln_kernel::errno::Errno> {
        let mut result = Ok(());
        let maps = core::mem::take(&mut self.shared_maps);
        let mut kept = Vec::new();
        for m in maps {
            if m.start >= end || m.start + m.len <= start {
                kept.push(m);
                continue;
            }
            let written = match self
                .mem
                .slice(crate::mm::uaccess::UserPtr::new(m.start), m.len as usize)
            {
                Ok(bytes) => m.file.pwrite(bytes, m.offset).map(drop),
                Err(e) => Err(e),
            };
            if result.is_ok() {
                result = written;
            }
            if !forget {
                kept.push(m);
            }
        }
        self.shared_maps = kept;
        result
    }
}

/// The program's path (/proc/self/exe, AT_EXECFN).
pub fn exe_path() -> alloc::string::String {
    let path = crate::state::BOOT.exe_path.lock();
    if path.is_empty() {
        "/".into()
    } else {
        path.clone()
    }
}

/// A process that ended, until its parent collects it.
#[derive(Clone, Copy, Debug)]
pub struct Zombie {
    /// Its id.
    pub pid: u32,
    /// Its parent.
    pub ppid: u32,
    /// Its wait status, as wait4 reports it.
    pub status: WaitStatus,
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitStatus {
    /// exit(status).
    Exited(u8),
    /// Killed by this signal.
    Signaled(u8),
}

impl WaitStatus {
    /// The `int` wait4 stores (WIFEXITED: status << 8; WIFSIGNALED: the
    /// signal number).
    pub fn raw(self) -> i32 {
        match self {
            WaitStatus::Exited(code) => i32::from(code) << 8,
            WaitStatus::Signaled(sig) => i32::from(sig),
        }
    }
}

/// The running process's pid.
pub fn current_pid() -> u32 {
    crate::sched::current_pid()
}

/// The children of `pid` still running (ids), and whether any zombie child
/// waits.
pub fn children_of(pid: u32) -> (Vec<u32>, bool) {
    let live = crate::state::KERNEL
        .parked
        .lock()
        .values()
        .filter(|p| p.ppid == pid)
        .map(|p| p.pid)
        .collect();
    let zombie = crate::state::KERNEL
        .zombies
        .lock()
        .iter()
        .any(|z| z.ppid == pid);
    (live, zombie)
}

/// Swaps the running process for `next_pid`'s: the running one (if any
/// and alive) is parked, the next one unparked, its page tables loaded,
/// its rewriter and program path installed. Called by the scheduler with
/// no other kernel lock held.
pub fn switch_to(next_pid: u32) {
    use crate::state::{BOOT, KERNEL};
    let mut running = KERNEL.process.lock();
    if running.as_ref().is_some_and(|p| p.pid == next_pid) {
        return;
    }
    let mut parked = KERNEL.parked.lock();
    if let Some(mut p) = running.take() {
        p.rewriter = core::mem::take(&mut *KERNEL.rewriter.lock());
        parked.insert(p.pid, p);
    }
    if let Some(mut next) = parked.remove(&next_pid) {
        *KERNEL.rewriter.lock() = core::mem::take(&mut next.rewriter);
        *BOOT.exe_path.lock() = next.exe.clone();
        crate::arch::load_page_table(next.mem.pml4());
        *running = Some(next);
    }
    // An ended process's tables, now that they are not the active ones.
    let dead = DEAD_TABLES.lock().take();
    if let Some(mem) = dead {
        if mem.pml4() != crate::arch::active_page_table() {
            mem.free_tables();
        } else {
            *DEAD_TABLES.lock() = Some(mem);
        }
    }
}

/// The address space (emptied) of the process that ended last, whose page
/// tables were active when it did.
static DEAD_TABLES: spin::Mutex<Option<AddressSpace>> = spin::Mutex::new(None);

/// Ends the running process (not pid 1, whose end is the VM's): its memory
/// and files go now — pipes see their end — it stays a zombie for its
/// parent's wait, its children go to pid 1, and the CPU goes elsewhere.
pub fn exit_current(status: WaitStatus) -> ! {
    use crate::state::KERNEL;
    let pid = current_pid();
    let gone = KERNEL.process.lock().take();
    let ppid = match gone {
        Some(mut p) => {
            let _ = p.write_back(0, u64::MAX, true);
            let _ = p.mem.remove_range(
                kiln_kernel::exec::elf::USER_MIN,
                kiln_kernel::exec::elf::USER_END,
            );
            let ppid = p.ppid;
            // Its page tables are still the active ones: freed once the
            // next process's are loaded.
            let Process { mem, .. } = p;
            *DEAD_TABLES.lock() = Some(mem);
            ppid
        }
        None => 1,
    };
    bury(pid, ppid, status);
    crate::sched::exit_process_threads()
}

/// Sends `signal` to parked process `pid` (kill from another process): 0
/// only checks it exists; SIGKILL, and a signal whose default action ends
/// the process and that it neither handles nor blocks, end it at once;
/// an ignored one does nothing; otherwise its first thread gets it.
///
/// # Errors
/// ESRCH when no such process lives.
pub fn signal_other(pid: u32, signal: u8) -> Result<(), kiln_kernel::errno::Errno> {
    use crate::state::KERNEL;
    use kiln_kernel::signal::{default_action, DefaultAction, SigInfo, SIG_DFL};
    let action = {
        let parked = KERNEL.parked.lock();
        let p = parked.get(&pid).ok_or(kiln_kernel::errno::Errno::Srch)?;
        p.signals.action(signal)
    };
    if signal == 0 {
        return Ok(());
    }
    let blocked = crate::signal::pending::thread_blocks(pid, signal);
    let ends = signal == kiln_kernel::signal::sig::SIGKILL
        || (action.handler == SIG_DFL
            && !blocked
            && default_action(signal) == DefaultAction::Terminate);
    if ends {
        end_parked(pid, WaitStatus::Signaled(signal));
        return Ok(());
    }
    if !blocked && action.ignores(signal) {
        return Ok(());
    }
    let info = SigInfo::user(signal, kiln_kernel::signal::code::SI_USER);
    crate::signal::pending::post_signal(Some(pid), info);
    Ok(())
}

/// Ends parked process `pid` with `status`: its memory freed through its
/// own (inactive) page tables, its files closed, its threads gone, a
/// zombie left for its parent.
fn end_parked(pid: u32, status: WaitStatus) {
    use crate::state::KERNEL;
    let Some(mut p) = KERNEL.parked.lock().remove(&pid) else {
        return;
    };
    let _ = p.write_back(0, u64::MAX, true);
    let _ = p.mem.remove_range(
        kiln_kernel::exec::elf::USER_MIN,
        kiln_kernel::exec::elf::USER_END,
    );
    let ppid = p.ppid;
    let Process { mem, .. } = p;
    mem.free_tables();
    crate::sched::remove_threads_of(pid);
    bury(pid, ppid, status);
}

/// Leaves a zombie for `pid`'s parent, gives its children to pid 1 and
/// wakes waiters.
fn bury(pid: u32, ppid: u32, status: WaitStatus) {
    use crate::state::KERNEL;
    for child in KERNEL.parked.lock().values_mut() {
        if child.ppid == pid {
            child.ppid = 1;
        }
    }
    let mut zombies = KERNEL.zombies.lock();
    for z in zombies.iter_mut() {
        if z.ppid == pid {
            z.ppid = 1;
        }
    }
    zombies.push(Zombie { pid, ppid, status });
    drop(zombies);
    // A parent waiting in wait4 runs its call again.
    crate::sched::notify_io();
}
