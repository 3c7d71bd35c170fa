//! The kernel's global state, all of it, in two places: what changes at
//! run time, behind locks ([`KERNEL`]), and what boot fixes once and
//! nothing changes afterwards ([`BOOT`]). Each subsystem owns the type of
//! its part and the functions that use it; this module only says where the
//! one instance lives and in which order its locks nest.
//!
//! # Lock order
//!
//! All of it is used under the kernel lock (`sched::cpu`): kernel code runs
//! on one CPU at a time and is never preempted, so these locks only order
//! what that one CPU does. Take them in this order and never an earlier one
//! while holding a later one (a spin lock taken twice hangs):
//!
//! 1. `process` — held for a whole system call or page fault;
//! 2. `vfs`, `rewriter`, `devices`, `net` — taken under `process`, never
//!    together (a socket's own lock comes before `net`; the NIC driver's
//!    lock, in `net::nic`, after it);
//! 3. `sched` — taken under `process` (the current thread's record);
//!    signals are queued here too;
//! 4. `timers` — taken under `sched` (re-arming asks for the next
//!    deadline); firing them releases `timers` before posting signals;
//! 5. `random` — under `process` (getrandom);
//! 6. `heap` — any allocation, under any of the above;
//! 7. `frames` — under `process` (demand paging) and `heap` (growth).
//!
//! Interrupt handlers take none of them while kernel code runs: the timer
//! and device interrupts only set flags then (see `sched` and
//! `drivers::virtio`), and page faults in kernel code only `try_lock` the
//! process.
//!
//! Outside these structs remain each CPU's own tables, stacks and entry
//! words in `arch/` (GDT, IDT, TSS, interrupt stacks, the per-CPU area
//! behind GS), which the hardware and the entry assembly address directly,
//! the TLB shootdown counters, and a few counters that need no lock (pipe
//! inode numbers, the per-CPU timer-fired and yield flags of `sched`, the
//! panic flag).

use alloc::string::String;
use alloc::vec::Vec;

use kiln_kernel::fs::vfs::Overlay;
use kiln_kernel::random::chacha::ChaCha20;
use spin::{Mutex, Once};

use crate::arch::platform::Platform;
use crate::arch::{Features, Flavour};
use crate::boot::Region;
use crate::drivers::virtio::Devices;
use crate::mm::frame::Frames;
use crate::mm::heap::KernelHeap;
use crate::process::Process;
use crate::sched::Scheduler;
use crate::syscall::rewrite::Rewriter;
use crate::time::timer::Timers;
use crate::time::Clock;

/// The kernel's mutable state (see the lock order above).
pub struct Kernel {
    /// The running process.
    pub process: Mutex<Option<Process>>,
    /// The other processes, by pid, while their threads are off the CPU
    /// (the scheduler swaps them in and out of `process`).
    pub parked: Mutex<alloc::collections::BTreeMap<u32, Process>>,
    /// Processes that ended and wait for their parent's wait4/waitid.
    pub zombies: Mutex<Vec<crate::process::Zombie>>,
    /// The file system: the image's root file system and the writable
    /// layer over it (created on first use).
    pub vfs: Once<Mutex<Overlay>>,
    /// SYSCALL sites seen and rewritten, and their trampolines.
    pub rewriter: Mutex<Rewriter>,
    /// The virtio drivers (consoles, entropy).
    pub devices: Mutex<Devices>,
    /// The TCP/IP stacks (set up at boot).
    pub net: Mutex<Option<crate::net::Net>>,
    /// Threads, the run queue and pending signals.
    pub sched: Mutex<Scheduler>,
    /// Interval timers and POSIX timers.
    pub timers: Mutex<Timers>,
    /// The random generator used when the CPU has no RDRAND.
    pub random: Mutex<Option<ChaCha20>>,
    /// The kernel heap's allocator.
    pub heap: Mutex<KernelHeap>,
    /// Free physical frames.
    pub frames: Mutex<Frames>,
}

/// The one instance.
pub static KERNEL: Kernel = Kernel {
    process: Mutex::new(None),
    parked: Mutex::new(alloc::collections::BTreeMap::new()),
    zombies: Mutex::new(Vec::new()),
    vfs: Once::new(),
    rewriter: Mutex::new(Rewriter::new()),
    devices: Mutex::new(Devices::new()),
    net: Mutex::new(None),
    sched: Mutex::new(Scheduler::new()),
    timers: Mutex::new(Timers::new()),
    random: Mutex::new(None),
    heap: Mutex::new(KernelHeap::new()),
    frames: Mutex::new(Frames::new()),
};

/// Kernel options from the command line.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Rewrite hot SYSCALL sites into jumps (`kiln.syscall_rewrite=0`
    /// turns it off).
    pub syscall_rewrite: bool,
    /// Map the vDSO into the program (`kiln.vdso=0` turns it off).
    pub vdso: bool,
    /// Reap orphaned processes when they end (`kiln.init=1`).
    pub init_reaps: bool,
    /// Ask for a snapshot at this point (`kiln.snapshot_at=`).
    pub snapshot_at: Option<kiln_kernel::boot::cmdline::SnapshotAt>,
}

/// What the boot module holds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Module {
    /// The root file system archive (empty when the module is a bare
    /// program).
    pub archive: Region,
    /// The module itself, when it is a bare program.
    pub bare_program: Option<Region>,
}

/// Values fixed during boot, each set once before the program starts and
/// read-only afterwards, in the order boot sets them.
pub struct Boot {
    /// The boot protocol (first thing at entry).
    pub platform: Once<Platform>,
    /// Native or PVM, with the CPU features the kernel uses.
    pub cpu: Once<(Flavour, Features)>,
    /// The clock's anchor.
    pub clock: Once<Clock>,
    /// Command-line options.
    pub options: Once<Options>,
    /// What the boot module holds.
    pub module: Once<Module>,
    /// The program's path in the guest.
    pub exe_path: Mutex<String>,
}

/// The command-line options (the defaults until boot reads them).
pub fn options() -> Options {
    BOOT.options.get().copied().unwrap_or(Options {
        syscall_rewrite: true,
        vdso: true,
        init_reaps: false,
        snapshot_at: None,
    })
}

/// The one instance.
pub static BOOT: Boot = Boot {
    platform: Once::new(),
    cpu: Once::new(),
    clock: Once::new(),
    options: Once::new(),
    module: Once::new(),
    exe_path: Mutex::new(String::new()),
};
