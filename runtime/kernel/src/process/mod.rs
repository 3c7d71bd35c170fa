//! The program's process: its resources — address space, open files,
//! current directory, signal dispositions, identity and limits. The one
//! instance lives in `state::KERNEL.process`; system calls and faults take
//! its lock for their whole duration, and the kernel never faults while
//! holding it. Threads are the scheduler's; memory is `mm`'s.

use alloc::vec::Vec;

use crate::fd::FdTable;
use crate::mm::space::AddressSpace;
use crate::signal::Signals;

/// The program's state.
pub struct Process {
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
}

/// The program's path (/proc/self/exe, AT_EXECFN).
pub fn exe_path() -> &'static str {
    crate::state::BOOT
        .exe_path
        .get()
        .map_or("/", |s| s.as_str())
}
