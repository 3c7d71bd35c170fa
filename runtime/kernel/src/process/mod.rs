//! The program's process: its resources — address space, open files,
//! current directory, signal dispositions, identity and limits — behind the
//! [`PROCESS`] lock. Threads are the scheduler's; memory is `mm`'s.

use alloc::vec::Vec;

use spin::Mutex;

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

/// The running program. One CPU, no nesting: syscalls and faults take the
/// lock for their whole duration and the kernel never faults while holding it.
pub static PROCESS: Mutex<Option<Process>> = Mutex::new(None);

/// The program's path in the guest, set once at exec.
pub(crate) static EXE_PATH: spin::Once<alloc::string::String> = spin::Once::new();

/// The program's path (/proc/self/exe, AT_EXECFN).
pub fn exe_path() -> &'static str {
    EXE_PATH.get().map_or("/", |s| s.as_str())
}
