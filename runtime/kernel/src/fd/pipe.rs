//! Pipes (pipe2) and eventfd counters: in-kernel buffers shared by their
//! ends. A read that finds nothing yet and a write that finds no room fail
//! with EAGAIN on a non-blocking descriptor and otherwise ask for the
//! system call to be re-run when an I/O object changes (ERESTARTSYS, see
//! `sched`). Every change notifies waiting threads.

use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use kiln_kernel::errno::Errno;
use kiln_kernel::fd::pipe::{EventCounter, PipeBuffer};
use kiln_kernel::fd::Wakeups;
use kiln_kernel::fs::stat::{mode, Stat};
use spin::Mutex;

use super::{flags, FileOps};

pub use kiln_kernel::fd::pipe::CAPACITY;

struct Shared {
    buffer: Mutex<PipeBuffer>,
    ino: u64,
}

/// One end of a pipe.
pub struct PipeEnd {
    shared: Arc<Shared>,
    write_end: bool,
    nonblocking: AtomicBool,
}

static NEXT_INO: AtomicUsize = AtomicUsize::new(0x10_0000);

/// A new pipe: (read end, write end).
pub fn pipe(nonblocking: bool) -> (PipeEnd, PipeEnd) {
    let shared = Arc::new(Shared {
        buffer: Mutex::new(PipeBuffer::new()),
        ino: NEXT_INO.fetch_add(1, Ordering::Relaxed) as u64,
    });
    let end = |write_end| PipeEnd {
        shared: shared.clone(),
        write_end,
        nonblocking: AtomicBool::new(nonblocking),
    };
    (end(false), end(true))
}

impl Drop for PipeEnd {
    fn drop(&mut self) {
        self.shared.buffer.lock().close_end(self.write_end);
        crate::sched::notify_io();
    }
}

/// F_GETFL: the access mode plus O_NONBLOCK when it is set.
fn with_nonblock(mode: u32, nonblocking: &AtomicBool) -> u32 {
    if nonblocking.load(Ordering::Relaxed) {
        mode | flags::O_NONBLOCK
    } else {
        mode
    }
}

/// F_SETFL: only O_NONBLOCK changes anything here.
fn set_nonblock(nonblocking: &AtomicBool, f: u32) -> Result<(), Errno> {
    nonblocking.store(f & flags::O_NONBLOCK != 0, Ordering::Relaxed);
    Ok(())
}

/// Runs `attempt`; `None` (would block) becomes EAGAIN or ERESTARTSYS;
/// anything that happened wakes waiting threads.
fn wait_or<T>(
    nonblocking: bool,
    attempt: impl FnOnce() -> Option<Result<T, Errno>>,
) -> Result<T, Errno> {
    match attempt() {
        Some(r) => {
            crate::sched::notify_io();
            r
        }
        None if nonblocking => Err(Errno::Again),
        None => Err(Errno::Restart),
    }
}

impl FileOps for PipeEnd {
    fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        if self.write_end {
            return Err(Errno::Badf);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let nonblocking = self.nonblocking.load(Ordering::Relaxed);
        wait_or(nonblocking, || self.shared.buffer.lock().try_read(buf))
    }

    fn write(&self, buf: &[u8]) -> Result<usize, Errno> {
        if !self.write_end {
            return Err(Errno::Badf);
        }
        let nonblocking = self.nonblocking.load(Ordering::Relaxed);
        let mut done = 0;
        while done < buf.len() {
            match wait_or(nonblocking || done > 0, || {
                self.shared.buffer.lock().try_write(&buf[done..])
            }) {
                Ok(n) => done += n,
                Err(Errno::Again) if done > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn stat(&self) -> Stat {
        Stat {
            dev: 0x0c,
            ino: self.shared.ino,
            mode: mode::S_IFIFO | 0o600,
            nlink: 1,
            blksize: 4096,
            ..Stat::default()
        }
    }

    fn readable_bytes(&self) -> Option<usize> {
        (!self.write_end).then(|| self.shared.buffer.lock().len())
    }

    fn pollable(&self) -> bool {
        true
    }

    fn wakeups(&self) -> Wakeups {
        self.shared.buffer.lock().wakeups
    }

    fn poll(&self, events: u16) -> u16 {
        self.shared.buffer.lock().poll(self.write_end, events)
    }

    fn status_flags(&self) -> u32 {
        let mode = if self.write_end {
            flags::O_WRONLY
        } else {
            flags::O_RDONLY
        };
        with_nonblock(mode, &self.nonblocking)
    }

    fn set_status_flags(&self, f: u32) -> Result<(), Errno> {
        set_nonblock(&self.nonblocking, f)
    }
}

/// An eventfd counter.
pub struct EventFd {
    counter: Mutex<EventCounter>,
    nonblocking: AtomicBool,
}

impl EventFd {
    /// A counter starting at `initial`.
    pub fn new(initial: u64, semaphore: bool, nonblocking: bool) -> Self {
        Self {
            counter: Mutex::new(EventCounter::new(initial, semaphore)),
            nonblocking: AtomicBool::new(nonblocking),
        }
    }
}

impl FileOps for EventFd {
    fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        if buf.len() < 8 {
            return Err(Errno::Inval);
        }
        let nonblocking = self.nonblocking.load(Ordering::Relaxed);
        let value = wait_or(nonblocking, || self.counter.lock().try_read().map(Ok))?;
        buf[..8].copy_from_slice(&value.to_le_bytes());
        Ok(8)
    }

    fn write(&self, buf: &[u8]) -> Result<usize, Errno> {
        let value = u64::from_le_bytes(
            buf.get(..8)
                .ok_or(Errno::Inval)?
                .try_into()
                .map_err(|_| Errno::Inval)?,
        );
        let nonblocking = self.nonblocking.load(Ordering::Relaxed);
        wait_or(nonblocking, || {
            self.counter.lock().try_write(value).map(|r| r.map(|()| 8))
        })
    }

    fn stat(&self) -> Stat {
        anon_stat()
    }

    fn pollable(&self) -> bool {
        true
    }

    fn wakeups(&self) -> Wakeups {
        self.counter.lock().wakeups
    }

    fn poll(&self, events: u16) -> u16 {
        self.counter.lock().poll(events)
    }

    fn status_flags(&self) -> u32 {
        with_nonblock(flags::O_RDWR, &self.nonblocking)
    }

    fn set_status_flags(&self, f: u32) -> Result<(), Errno> {
        set_nonblock(&self.nonblocking, f)
    }
}

/// What fstat(2) shows for an anonymous-inode object (eventfd, epoll).
pub fn anon_stat() -> Stat {
    Stat {
        dev: 0x0d,
        ino: 0x20_0000,
        mode: 0o600,
        nlink: 1,
        blksize: 4096,
        ..Stat::default()
    }
}
