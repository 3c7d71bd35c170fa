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
    /// Its process group.
    pub pgid: u32,
    /// Its session.
    pub sid: u32,
    /// The signal it gets when its parent ends (prctl PR_SET_PDEATHSIG;
    /// 0: none).
    pub pdeathsig: u8,
    /// Its parent ended and pid 1 adopted it (with `--init`, the kernel
    /// reaps it when it ends, as an init process would).
    pub orphan: bool,
    /// A vfork child: the parent whose memory it runs in, suspended until
    /// the child gives it back (execve, or its end).
    pub vfork_parent: Option<u32>,
    /// Stopped by this signal (job control) until SIGCONT.
    pub stopped: Option<u8>,
    /// A stop or continue its parent's wait4/waitid has not reported yet
    /// (WUNTRACED/WSTOPPED, WCONTINUED).
    pub unreported: Option<WaitStatus>,
    /// Its user and group ids.
    pub cred: crate::syscall::Credentials,
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
    pub fn fork(&mut self, pid: u32) -> Result<Process, kiln_kernel::errno::Errno> {
        let mem = self.mem.fork()?;
        Ok(self.child(pid, mem))
    }

    /// A vfork child `pid` that runs in this process's memory — lent to
    /// it, this process keeping an empty address space until
    /// [`give_back_memory`] — with its descriptors shared as `fork`'s are.
    ///
    /// # Errors
    /// ENOMEM without a frame for the stand-in's page table.
    pub fn vfork(&mut self, pid: u32) -> Result<Process, kiln_kernel::errno::Errno> {
        let root = crate::arch::new_page_table_root().ok_or(kiln_kernel::errno::Errno::Nomem)?;
        // SAFETY: a fresh top-level table, used by this (suspended)
        // process only once the child hands the memory back.
        let tables = unsafe { crate::arch::PageTables::from_pml4(root) };
        let stand_in = AddressSpace::new(tables, self.mem.brk_start);
        let mem = core::mem::replace(&mut self.mem, stand_in);
        let mut child = self.child(pid, mem);
        child.vfork_parent = Some(self.pid);
        Ok(child)
    }

    fn child(&self, pid: u32, mem: AddressSpace) -> Process {
        Process {
            pid,
            ppid: self.pid,
            pgid: self.pgid,
            sid: self.sid,
            pdeathsig: 0,
            orphan: false,
            vfork_parent: None,
            stopped: None,
            unreported: None,
            cred: self.cred.clone(),
            exe: self.exe.clone(),
            rewriter: crate::state::KERNEL.rewriter.lock().clone(),
            mem,
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
        }
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

/// A vfork child (the running process) gives its parent's memory back,
/// with its SYSCALL-site rewriter, taking the parent's empty stand-in
/// address space in exchange, and wakes the parent. Nothing to do for
/// another process.
pub fn give_back_memory(child: &mut Process) {
    use crate::state::KERNEL;
    let Some(ppid) = child.vfork_parent.take() else {
        return;
    };
    if let Some(parent) = KERNEL.parked.lock().get_mut(&ppid) {
        core::mem::swap(&mut parent.mem, &mut child.mem);
        parent.rewriter = core::mem::take(&mut *KERNEL.rewriter.lock());
    }
    crate::sched::vfork_done(child.pid);
}

/// Whether the running program may be resumed at `frame` without IRETQ
/// (which traps on PVM): the flavour allows it and the 16 bytes the
/// return writes below the red zone are writable now (see
/// `arch::program_return_slot`). Takes the process's lock.
pub fn returns_without_iret(frame: &crate::arch::Frame) -> bool {
    crate::arch::program_return_slot(frame).is_some_and(|slot| {
        crate::state::KERNEL
            .process
            .lock()
            .as_ref()
            .is_some_and(|p| p.mem.writable_now(slot, 16))
    })
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
    /// Its process group when it ended.
    pub pgid: u32,
    /// Its first parent had ended (with `--init`, its end is reaped).
    pub orphan: bool,
    /// Its wait status, as wait4 reports it.
    pub status: WaitStatus,
}

/// How a process ended, stopped or went on, as its parent's wait sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitStatus {
    /// exit(status).
    Exited(u8),
    /// Killed by this signal.
    Signaled(u8),
    /// Stopped by this signal.
    Stopped(u8),
    /// Continued by SIGCONT.
    Continued,
}

impl WaitStatus {
    /// The SIGCHLD siginfo of child `pid` that ended so (what waitid
    /// stores, too): CLD_EXITED with its exit code, or CLD_KILLED with the
    /// signal.
    pub fn child_info(self, pid: u32) -> kiln_kernel::signal::SigInfo {
        const CLD_EXITED: i32 = 1;
        const CLD_KILLED: i32 = 2;
        const CLD_STOPPED: i32 = 5;
        const CLD_CONTINUED: i32 = 6;
        let (code, value) = match self {
            WaitStatus::Exited(c) => (CLD_EXITED, c),
            WaitStatus::Signaled(s) => (CLD_KILLED, s),
            WaitStatus::Stopped(s) => (CLD_STOPPED, s),
            WaitStatus::Continued => (CLD_CONTINUED, kiln_kernel::signal::sig::SIGCONT),
        };
        kiln_kernel::signal::SigInfo {
            signo: kiln_kernel::signal::sig::SIGCHLD,
            code,
            errno: 0,
            word0: u64::from(pid),
            word1: u64::from(value),
        }
    }

    /// The `int` wait4 stores (WIFEXITED: status << 8; WIFSIGNALED: the
    /// signal number; WIFSTOPPED: signal << 8 | 0x7f; WIFCONTINUED: 0xffff).
    pub fn raw(self) -> i32 {
        match self {
            WaitStatus::Exited(code) => i32::from(code) << 8,
            WaitStatus::Signaled(sig) => i32::from(sig),
            WaitStatus::Stopped(sig) => (i32::from(sig) << 8) | 0x7f,
            WaitStatus::Continued => 0xffff,
        }
    }
}

/// Stops the running process `p` (a stop signal's default action): its
/// parent hears of it (SIGCHLD with CLD_STOPPED unless it set
/// SA_NOCLDSTOP; a wait4 with WUNTRACED reports it), and its threads stop
/// on their way back to the program (those on other CPUs are sent an IPI).
pub fn stop(p: &mut Process, signal: u8) {
    p.stopped = Some(signal);
    p.unreported = Some(WaitStatus::Stopped(signal));
    crate::sched::kick_process(p.pid);
    tell_parent(p, p.ppid, p.pid, WaitStatus::Stopped(signal));
}

/// SIGCONT was sent by the running process `caller` to process `pid` (it
/// may be `caller`): a stopped one goes on (its stopped threads wake, its
/// parent hears of it, a wait4 with WCONTINUED reports it), and its
/// pending stop signals are dropped.
pub fn continue_process(caller: &mut Process, pid: u32) {
    let ppid = {
        let mut parked = crate::state::KERNEL.parked.lock();
        let target = if caller.pid == pid {
            Some(&mut *caller)
        } else {
            parked.get_mut(&pid)
        };
        match target {
            Some(t) if t.stopped.is_some() => {
                t.stopped = None;
                t.unreported = Some(WaitStatus::Continued);
                Some(t.ppid)
            }
            _ => None,
        }
    };
    crate::sched::drop_stop_signals(pid);
    if let Some(ppid) = ppid {
        crate::sched::resume_stopped(pid);
        tell_parent(caller, ppid, pid, WaitStatus::Continued);
    }
}

/// Tells parent `ppid` that child `pid` stopped or went on (`running` is
/// the running process, which may be the parent): a waiting wait4 runs
/// again, and SIGCHLD comes unless the parent set SA_NOCLDSTOP.
fn tell_parent(running: &mut Process, ppid: u32, pid: u32, what: WaitStatus) {
    use kiln_kernel::signal::{sa, sig};
    crate::sched::notify_io();
    let info = what.child_info(pid);
    if running.pid == ppid {
        if running.signals.action(sig::SIGCHLD).flags & sa::NOCLDSTOP == 0 {
            let target = (ppid != 1).then_some(ppid);
            let _ = crate::signal::send(running, target, info);
        }
        return;
    }
    let nocldstop = crate::state::KERNEL
        .parked
        .lock()
        .get(&ppid)
        .is_some_and(|p| p.signals.action(sig::SIGCHLD).flags & sa::NOCLDSTOP != 0);
    if !nocldstop {
        let _ = signal_other(ppid, info);
    }
}

/// The running process's pid.
pub fn current_pid() -> u32 {
    crate::sched::current_pid()
}

/// The ids of a live process, for the calls that select processes by
/// group or session.
#[derive(Clone, Copy, Debug)]
pub struct Ids {
    /// Its id.
    pub pid: u32,
    /// Its parent.
    pub ppid: u32,
    /// Its process group.
    pub pgid: u32,
    /// Its session.
    pub sid: u32,
}

impl Process {
    /// Its ids.
    pub fn ids(&self) -> Ids {
        Ids {
            pid: self.pid,
            ppid: self.ppid,
            pgid: self.pgid,
            sid: self.sid,
        }
    }
}

/// Every live process's ids: `running`'s (the caller holds its lock) and
/// the parked ones'.
pub fn all_ids(running: &Process) -> Vec<Ids> {
    let mut all = alloc::vec![running.ids()];
    all.extend(
        crate::state::KERNEL
            .parked
            .lock()
            .values()
            .map(Process::ids),
    );
    all
}

/// Runs `f` on live process `pid`: `running` itself when it is that one,
/// otherwise the parked one. `None` when no such process lives.
pub fn with_process<R>(
    running: &mut Process,
    pid: u32,
    f: impl FnOnce(&mut Process) -> R,
) -> Option<R> {
    if running.pid == pid {
        return Some(f(running));
    }
    crate::state::KERNEL.parked.lock().get_mut(&pid).map(f)
}

/// The live children of `pid` (parked: the caller is the running one).
pub fn children_of(pid: u32) -> Vec<Ids> {
    crate::state::KERNEL
        .parked
        .lock()
        .values()
        .filter(|p| p.ppid == pid)
        .map(Process::ids)
        .collect()
}

/// Makes process `pid` the kernel's running one (the process of the
/// thread this CPU runs), parking the one that was — without touching the
/// page tables this CPU has loaded.
pub fn make_running(pid: u32) {
    use crate::state::{BOOT, KERNEL};
    debug_assert!(
        crate::sched::holds_kernel_lock(),
        "make_running outside the kernel lock"
    );
    let mut running = KERNEL.process.lock();
    if running.as_ref().is_some_and(|p| p.pid == pid) {
        return;
    }
    let mut parked = KERNEL.parked.lock();
    if let Some(mut p) = running.take() {
        p.rewriter = core::mem::take(&mut *KERNEL.rewriter.lock());
        parked.insert(p.pid, p);
    }
    if let Some(mut next) = parked.remove(&pid) {
        *KERNEL.rewriter.lock() = core::mem::take(&mut next.rewriter);
        *BOOT.exe_path.lock() = next.exe.clone();
        *running = Some(next);
    }
}

/// Before this CPU runs a thread of process `next_pid`: makes it the
/// running process and loads its page tables; frees the tables of ended
/// processes that no CPU has loaded any more.
pub fn switch_to(next_pid: u32) {
    use crate::state::KERNEL;
    make_running(next_pid);
    if let Some(p) = KERNEL.process.lock().as_ref() {
        crate::arch::load_page_table(p.mem.pml4());
    }
    let mut dead = DEAD_TABLES.lock();
    let mut i = 0;
    while i < dead.len() {
        if crate::arch::page_table_in_use(dead[i].pml4()) {
            i += 1;
        } else {
            dead.swap_remove(i).free_tables();
        }
    }
}

/// The address spaces (emptied) of processes that ended while some CPU
/// had their page tables loaded.
static DEAD_TABLES: spin::Mutex<Vec<AddressSpace>> = spin::Mutex::new(Vec::new());

/// Ends the running process (not pid 1, whose end is the VM's): its memory
/// and files go now — pipes see their end — it stays a zombie for its
/// parent's wait, its children go to pid 1, and the CPU goes elsewhere.
pub fn exit_current(status: WaitStatus) -> ! {
    use crate::state::KERNEL;
    // Its other threads leave every CPU before its memory goes.
    crate::sched::stop_other_threads();
    let pid = current_pid();
    crate::time::timer::drop_process(pid, true);
    crate::fd::lock::release_records(pid, None);
    crate::signal::pending::forget_process(pid);
    let gone = KERNEL.process.lock().take();
    let ended = match gone {
        Some(mut p) => {
            // A vfork child's memory is its parent's: given back, not freed.
            give_back_memory(&mut p);
            let _ = p.write_back(0, u64::MAX, true);
            let _ = p.mem.remove_range(
                kiln_kernel::exec::elf::USER_MIN,
                kiln_kernel::exec::elf::USER_END,
            );
            let ended = (p.ids(), p.orphan);
            // Its page tables may still be loaded here: freed once no CPU
            // has them.
            let Process { mem, .. } = p;
            DEAD_TABLES.lock().push(mem);
            ended
        }
        None => (
            Ids {
                pid,
                ppid: 1,
                pgid: 1,
                sid: 1,
            },
            true,
        ),
    };
    bury(ended.0, ended.1, status);
    crate::sched::exit_process_threads()
}

/// A stop or continue of a child of `parent` that `select` accepts (given
/// its pid and group) and the caller wants (`stops`, `continues`), not
/// reported yet: its pid and status, marked reported unless `keep`.
pub fn take_stop_report(
    parent: u32,
    select: impl Fn(u32, u32) -> bool,
    stops: bool,
    continues: bool,
    keep: bool,
) -> Option<(u32, WaitStatus)> {
    let mut parked = crate::state::KERNEL.parked.lock();
    let child = parked.values_mut().find(|c| {
        c.ppid == parent
            && select(c.pid, c.pgid)
            && match c.unreported {
                Some(WaitStatus::Stopped(_)) => stops,
                Some(WaitStatus::Continued) => continues,
                _ => false,
            }
    })?;
    let status = child.unreported?;
    if !keep {
        child.unreported = None;
    }
    Some((child.pid, status))
}

/// Sends `info` to process `pid`, which is not the running one. As on
/// Linux, the process acts on it itself when it next runs (a terminating
/// default ends it then): an ignored signal it does not block is dropped;
/// otherwise its first thread gets it (pid 1's process-wide queue for
/// pid 1), which wakes it from a wait the signal ends.
///
/// # Errors
/// ESRCH when no such process lives.
pub fn signal_other(
    pid: u32,
    info: kiln_kernel::signal::SigInfo,
) -> Result<(), kiln_kernel::errno::Errno> {
    signal_process(pid, None, info)
}

/// Sends `info` to process `pid` (running or not) as [`signal_other`]
/// does, or to its thread `thread`: what a timer of that process raises.
///
/// # Errors
/// ESRCH when no such process lives.
pub fn signal_process(
    pid: u32,
    thread: Option<u32>,
    info: kiln_kernel::signal::SigInfo,
) -> Result<(), kiln_kernel::errno::Errno> {
    use crate::state::KERNEL;
    let signal = info.signo;
    let parked = KERNEL
        .parked
        .lock()
        .get(&pid)
        .map(|p| p.signals.action(signal));
    let running = || {
        KERNEL.process.try_lock().and_then(|g| {
            g.as_ref()
                .filter(|p| p.pid == pid)
                .map(|p| p.signals.action(signal))
        })
    };
    // The running process, when nobody holds it (a timer firing).
    let action = match parked.or_else(running) {
        Some(a) => a,
        // A zombie takes signals and does nothing with them, as on Linux.
        None if KERNEL.zombies.lock().iter().any(|z| z.pid == pid) => return Ok(()),
        None => return Err(kiln_kernel::errno::Errno::Srch),
    };
    if signal == 0 {
        return Ok(());
    }
    use crate::signal::pending::{self, Target};
    let (target, blocked) = match thread {
        Some(tid) => (Target::Thread(tid), pending::thread_blocks(tid, signal)),
        None => (
            Target::Process(pid),
            pending::blocked_everywhere(pid, signal),
        ),
    };
    if !blocked && action.ignores(signal) {
        return Ok(());
    }
    pending::post(target, info);
    Ok(())
}

/// After process `ended` ended (it is not the running one any more; an
/// `orphan` its first parent outlived): its
/// children go to pid 1 (those that asked get their parent-death signal),
/// a zombie stays for its parent's wait — unless the parent ignores
/// SIGCHLD or set SA_NOCLDWAIT, or it was an orphan and `--init` reaps
/// those — the parent gets SIGCHLD, and waiters wake.
fn bury(ended: Ids, orphan: bool, status: WaitStatus) {
    use crate::state::KERNEL;
    use kiln_kernel::signal::{sa, sig, SigInfo, SIG_IGN};
    let init_reaps = crate::state::options().init_reaps;
    let pid = ended.pid;
    let mut bereaved = Vec::new();
    for child in KERNEL.parked.lock().values_mut() {
        if child.ppid == pid {
            child.ppid = 1;
            child.orphan = true;
            if child.pdeathsig != 0 {
                bereaved.push((child.pid, child.pdeathsig));
            }
        }
    }
    let parent_action = KERNEL
        .parked
        .lock()
        .get(&ended.ppid)
        .map(|p| p.signals.action(sig::SIGCHLD));
    let reaped = parent_action
        .is_some_and(|a| a.handler == SIG_IGN || a.flags & sa::NOCLDWAIT != 0)
        || (init_reaps && orphan && ended.ppid == 1);
    {
        let mut zombies = KERNEL.zombies.lock();
        // Its zombie children go to pid 1 too (reaped at once with --init).
        zombies.retain_mut(|z| {
            if z.ppid != pid {
                return true;
            }
            z.ppid = 1;
            z.orphan = true;
            !init_reaps
        });
        if !reaped {
            zombies.push(Zombie {
                pid,
                ppid: ended.ppid,
                pgid: ended.pgid,
                orphan,
                status,
            });
        }
    }
    // A parent waiting in wait4 runs its call again — woken for that
    // before SIGCHLD arrives, so that, as on Linux, the call completes
    // (with ECHILD when nothing is left to wait for) rather than failing
    // with EINTR.
    crate::sched::notify_io();
    if parent_action.is_some_and(|a| a.handler != SIG_IGN) {
        let _ = signal_other(ended.ppid, status.child_info(pid));
    }
    for (child, signal) in bereaved {
        let info = SigInfo {
            word0: u64::from(pid),
            ..SigInfo::user(signal, kiln_kernel::signal::code::SI_USER)
        };
        let _ = signal_other(child, info);
    }
}
