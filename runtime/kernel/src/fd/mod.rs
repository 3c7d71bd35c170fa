//! Open files and the descriptor table (the pure logic of pipes, eventfds
//! and epoll is in [`kiln_kernel::fd`]).
//!
//! Every kind of open file implements [`FileOps`]; the default methods give
//! the errors Linux gives for an operation the object does not support, so
//! each kind overrides only what it does. The table maps descriptor numbers
//! to shared open files (dup shares the object, and so the offset) plus the
//! per-descriptor close-on-exec flag. It belongs to the process.

pub mod device;
pub mod disk;
pub mod epoll;
pub mod file;
pub mod lock;
pub mod pipe;
pub mod socket;
pub mod stdio;
pub mod tty;

use alloc::sync::Arc;
use alloc::vec::Vec;

use kiln_kernel::errno::Errno;
use kiln_kernel::fs::stat::Stat;

use crate::boot::Region;
use crate::mm::space::AddressSpace;

/// Most descriptors a process may hold (RLIMIT_NOFILE's usual soft limit).
pub const MAX_FDS: usize = 1024;

pub use kiln_kernel::fd::{poll, Wakeups};

/// Open-file flags reported by F_GETFL.
#[allow(missing_docs)]
pub mod flags {
    pub const O_RDONLY: u32 = 0;
    pub const O_WRONLY: u32 = 1;
    pub const O_RDWR: u32 = 2;
    pub const O_APPEND: u32 = 0o2000;
    pub const O_NONBLOCK: u32 = 0o4000;
    pub const O_LARGEFILE: u32 = 0o100000;
    pub const O_DIRECTORY: u32 = 0o200000;
}

/// What an open file can do.
pub trait FileOps: Send + Sync {
    /// read(2) at the file's offset.
    fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        let _ = buf;
        Err(Errno::Badf)
    }

    /// write(2).
    fn write(&self, buf: &[u8]) -> Result<usize, Errno> {
        let _ = buf;
        Err(Errno::Badf)
    }

    /// pread64(2): read at `offset` without moving the file offset.
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
        let _ = (buf, offset);
        Err(Errno::Spipe)
    }

    /// pwrite64(2): write at `offset` without moving the file offset.
    fn pwrite(&self, buf: &[u8], offset: u64) -> Result<usize, Errno> {
        let _ = (buf, offset);
        Err(Errno::Spipe)
    }

    /// ftruncate(2).
    fn truncate(&self, len: u64) -> Result<(), Errno> {
        let _ = len;
        Err(Errno::Inval)
    }

    /// fsync(2) and fdatasync(2): what was written is durable when it
    /// returns (files kept in memory have nothing to write back).
    fn sync(&self) -> Result<(), Errno> {
        Ok(())
    }

    /// fallocate(2) with `mode` (FALLOC_FL_* bits) over `len` bytes at
    /// `offset`.
    fn allocate(&self, mode: u32, offset: u64, len: u64) -> Result<(), Errno> {
        let _ = (mode, offset, len);
        Err(Errno::Notsup)
    }

    /// Whether a `MAP_SHARED` writable mapping of it may be a copy written
    /// back at msync, munmap and exit (volume files).
    fn writes_back_mappings(&self) -> bool {
        false
    }

    /// A copy of the whole contents, for files that cannot be mapped
    /// straight from guest memory (in-memory and generated files).
    fn contents(&self) -> Option<Vec<u8>> {
        None
    }

    /// lseek(2).
    fn seek(&self, offset: i64, whence: u32) -> Result<u64, Errno> {
        let _ = (offset, whence);
        Err(Errno::Spipe)
    }

    /// fstat(2).
    fn stat(&self) -> Stat;

    /// ioctl(2), for the requests particular to the kind of file (the
    /// generic ones — FIONBIO, FIONREAD, FIOCLEX — are answered before);
    /// `arg` is the program's argument, `mem` its memory.
    fn ioctl(&self, request: u64, arg: u64, mem: &mut AddressSpace) -> Result<u64, Errno> {
        let _ = (request, arg, mem);
        Err(Errno::Notty)
    }

    /// Bytes a read would return now (FIONREAD), for streams that know.
    fn readable_bytes(&self) -> Option<usize> {
        None
    }

    /// getdents64(2): fills `out` with whole records; 0 at the end.
    fn getdents(&self, out: &mut [u8]) -> Result<usize, Errno> {
        let _ = out;
        Err(Errno::Notdir)
    }

    /// Which of `events` are ready now.
    fn poll(&self, events: u16) -> u16 {
        events & (poll::POLLIN | poll::POLLOUT)
    }

    /// Whether epoll may watch it (pipes, eventfds, the console, epoll
    /// instances; not regular files, directories or /dev/null, as on Linux).
    fn pollable(&self) -> bool {
        false
    }

    /// How often readers and writers have been woken so far (epoll's edge
    /// triggering reports a ready descriptor again after a new wake-up).
    fn wakeups(&self) -> Wakeups {
        Wakeups::default()
    }

    /// The socket, when this is one.
    fn socket(&self) -> Option<&dyn socket::Socket> {
        None
    }

    /// The epoll instance, when this is one.
    fn epoll(&self) -> Option<&epoll::Epoll> {
        None
    }

    /// The guest-physical bytes of a file that can be mapped straight into
    /// the program (rootfs files).
    fn mapping(&self) -> Option<Region> {
        None
    }

    /// F_GETFL flags.
    fn status_flags(&self) -> u32 {
        flags::O_RDONLY
    }

    /// F_SETFL: only O_NONBLOCK matters, for the objects that can block.
    fn set_status_flags(&self, new: u32) -> Result<(), Errno> {
        let _ = new;
        Ok(())
    }

    /// The path it was opened by, for directories (fchdir, *at calls).
    fn dir_path(&self) -> Option<&str> {
        None
    }
}

/// A file descriptor number, as the program passes it: a C `int` (only
/// the low 32 bits of a register count; the upper ones are undefined in
/// the ABI). Negative numbers name nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fd(pub i32);

impl Fd {
    /// The descriptor's slot in a table, if it can have one.
    fn index(self) -> Option<usize> {
        usize::try_from(self.0).ok()
    }

    /// The number returned to the program.
    pub fn number(self) -> u64 {
        self.0 as u64
    }
}

impl From<usize> for Fd {
    fn from(slot: usize) -> Self {
        Fd(i32::try_from(slot).unwrap_or(-1))
    }
}

/// One open descriptor: the file and its close-on-exec flag.
#[derive(Clone)]
pub struct Descriptor {
    /// The open file.
    pub file: Arc<dyn FileOps>,
    /// Close on exec.
    pub cloexec: bool,
}

/// The descriptor table.
#[derive(Clone, Default)]
pub struct FdTable {
    slots: Vec<Option<Descriptor>>,
}

impl FdTable {
    /// Closes every descriptor marked close-on-exec (execve).
    pub fn close_on_exec(&mut self) {
        for slot in &mut self.slots {
            if slot.as_ref().is_some_and(|d| d.cloexec) {
                *slot = None;
            }
        }
    }

    /// A table with stdin, stdout and stderr open.
    pub fn with_stdio() -> Self {
        let mut t = FdTable::default();
        for file in stdio::standard_streams() {
            t.slots.push(Some(Descriptor {
                file,
                cloexec: false,
            }));
        }
        t
    }

    /// The open file behind `fd`.
    pub fn get(&self, fd: Fd) -> Result<Arc<dyn FileOps>, Errno> {
        self.entry(fd).map(|e| e.file.clone())
    }

    /// The descriptor entry.
    pub fn entry(&self, fd: Fd) -> Result<&Descriptor, Errno> {
        fd.index()
            .and_then(|i| self.slots.get(i))
            .and_then(Option::as_ref)
            .ok_or(Errno::Badf)
    }

    /// Installs `file` at the lowest free descriptor ≥ `min`.
    pub fn insert_from(
        &mut self,
        min: usize,
        file: Arc<dyn FileOps>,
        cloexec: bool,
    ) -> Result<Fd, Errno> {
        if min >= MAX_FDS {
            return Err(Errno::Inval);
        }
        let free = (min..MAX_FDS)
            .find(|&i| self.slots.get(i).is_none_or(Option::is_none))
            .ok_or(Errno::Mfile)?;
        if self.slots.len() <= free {
            self.slots.resize(free + 1, None);
        }
        self.slots[free] = Some(Descriptor { file, cloexec });
        Ok(Fd::from(free))
    }

    /// Installs `file` at the lowest free descriptor.
    pub fn insert(&mut self, file: Arc<dyn FileOps>, cloexec: bool) -> Result<Fd, Errno> {
        self.insert_from(0, file, cloexec)
    }

    /// Makes `new` refer to `old`'s file (dup2/dup3), closing what `new` held.
    pub fn dup_to(&mut self, old: Fd, new: Fd, cloexec: bool) -> Result<Fd, Errno> {
        let file = self.get(old)?;
        let i = new.index().filter(|&i| i < MAX_FDS).ok_or(Errno::Badf)?;
        if self.slots.len() <= i {
            self.slots.resize(i + 1, None);
        }
        self.slots[i] = Some(Descriptor { file, cloexec });
        Ok(new)
    }

    /// Sets the close-on-exec flag of `fd`.
    pub fn set_cloexec(&mut self, fd: Fd, cloexec: bool) -> Result<(), Errno> {
        let i = fd.index().ok_or(Errno::Badf)?;
        match self.slots.get_mut(i) {
            Some(Some(e)) => {
                e.cloexec = cloexec;
                Ok(())
            }
            _ => Err(Errno::Badf),
        }
    }

    /// Closes `fd`.
    pub fn close(&mut self, fd: Fd) -> Result<(), Errno> {
        let i = fd.index().ok_or(Errno::Badf)?;
        match self.slots.get_mut(i) {
            Some(slot @ Some(_)) => {
                *slot = None;
                Ok(())
            }
            _ => Err(Errno::Badf),
        }
    }
}
