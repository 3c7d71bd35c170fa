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
