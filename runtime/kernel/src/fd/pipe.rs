//! Pipes (pipe2) and eventfd counters: in-kernel buffers shared by their
//! ends. A read that finds nothing yet and a write that finds no room fail
//! with EAGAIN on a non-blocking descriptor and otherwise ask for the
//! system call to be re-run when an I/O object changes (ERESTARTSYS, see
//! `sched`). Every change notifies waiting threads.

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use kiln_kernel::errno::Errno;
use kiln_kernel::fs::stat::{mode, Stat};
use spin::Mutex;

use super::{flags, poll, FileOps};

/// Bytes a pipe holds (Linux's default).
pub const CAPACITY: usize = 64 * 1024;

struct Shared {
    buffer: Mutex<VecDeque<u8>>,
    readers: AtomicUsize,
    writers: AtomicUsize,
    ino: u64,
    wakeups: Wakeups,
}

/// Counts of the events that wake readers (data written, writer gone) and
/// writers (data read, reader gone): epoll's edge triggering compares them.
#[derive(Default)]
pub struct Wakeups {
    readable: AtomicU64,
    writable: AtomicU64,
}

impl Wakeups {
    fn readers(&self) {
        self.readable.fetch_add(1, Ordering::Relaxed);
    }

    fn writers(&self) {
        self.writable.fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> (u64, u64) {
        (
            self.readable.load(Ordering::Relaxed),
            self.writable.load(Ordering::Relaxed),
        )
    }
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
        buffer: Mutex::new(VecDeque::new()),
        readers: AtomicUsize::new(1),
        writers: AtomicUsize::new(1),
        ino: NEXT_INO.fetch_add(1, Ordering::Relaxed) as u64,
        wakeups: Wakeups::default(),
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
        let count = if self.write_end {
            &self.shared.writers
        } else {
            &self.shared.readers
        };
        count.fetch_sub(1, Ordering::Relaxed);
        if self.write_end {
            self.shared.wakeups.readers();
        } else {
            self.shared.wakeups.writers();
        }
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

impl PipeEnd {
    fn try_read(&self, buf: &mut [u8]) -> Option<Result<usize, Errno>> {
        let mut b = self.shared.buffer.lock();
        if !b.is_empty() {
            let n = buf.len().min(b.len());
            for (dst, src) in buf.iter_mut().zip(b.drain(..n)) {
                *dst = src;
            }
            self.shared.wakeups.writers();
            return Some(Ok(n));
        }
        if self.shared.writers.load(Ordering::Relaxed) == 0 {
            return Some(Ok(0)); // end of file
        }
        None
    }

    fn try_write(&self, buf: &[u8]) -> Option<Result<usize, Errno>> {
        if self.shared.readers.load(Ordering::Relaxed) == 0 {
            return Some(Err(Errno::Pipe));
        }
        let mut b = self.shared.buffer.lock();
        let room = CAPACITY - b.len();
        if room == 0 {
            return None;
        }
        let n = buf.len().min(room);
        b.extend(&buf[..n]);
        self.shared.wakeups.readers();
        Some(Ok(n))
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
        wait_or(nonblocking, || self.try_read(buf))
    }

    fn write(&self, buf: &[u8]) -> Result<usize, Errno> {
        if !self.write_end {
            return Err(Errno::Badf);
        }
        let nonblocking = self.nonblocking.load(Ordering::Relaxed);
        let mut done = 0;
        while done < buf.len() {
            match wait_or(nonblocking || done > 0, || self.try_write(&buf[done..])) {
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

    fn ioctl(&self, request: u64) -> Result<u64, Errno> {
        const FIONREAD: u64 = 0x541b;
        match request {
            FIONREAD => Err(Errno::Notty), // needs the argument pointer; callers fall back
            _ => Err(Errno::Notty),
        }
    }

    fn pollable(&self) -> bool {
        true
    }

    fn wakeups(&self) -> (u64, u64) {
        self.shared.wakeups.get()
    }

    fn poll(&self, events: u16) -> u16 {
        let len = self.shared.buffer.lock().len();
        if self.write_end {
            if self.shared.readers.load(Ordering::Relaxed) == 0 {
                return poll::POLLERR | (events & poll::POLLOUT);
            }
            if len < CAPACITY {
                events & poll::POLLOUT
            } else {
                0
            }
        } else {
            let mut r = if len > 0 { events & poll::POLLIN } else { 0 };
            if self.shared.writers.load(Ordering::Relaxed) == 0 {
                r |= poll::POLLHUP;
            }
            r
        }
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
    count: Mutex<u64>,
    semaphore: bool,
    nonblocking: AtomicBool,
    wakeups: Wakeups,
}

impl EventFd {
    /// A counter starting at `initial`.
    pub fn new(initial: u64, semaphore: bool, nonblocking: bool) -> Self {
        Self {
            count: Mutex::new(initial),
            semaphore,
            nonblocking: AtomicBool::new(nonblocking),
            wakeups: Wakeups::default(),
        }
    }
}

impl FileOps for EventFd {
    fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        if buf.len() < 8 {
            return Err(Errno::Inval);
        }
        let nonblocking = self.nonblocking.load(Ordering::Relaxed);
        let value = wait_or(nonblocking, || {
            let mut c = self.count.lock();
            if *c == 0 {
                return None;
            }
            let v = if self.semaphore { 1 } else { *c };
            *c -= v;
            self.wakeups.writers();
            Some(Ok(v))
        })?;
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
        if value == u64::MAX {
            return Err(Errno::Inval);
        }
        let nonblocking = self.nonblocking.load(Ordering::Relaxed);
        wait_or(nonblocking, || {
            let mut c = self.count.lock();
            if u64::MAX - 1 - *c < value {
                return None;
            }
            *c += value;
            self.wakeups.readers();
            Some(Ok(8))
        })
    }

    fn stat(&self) -> Stat {
        anon_stat()
    }

    fn pollable(&self) -> bool {
        true
    }

    fn wakeups(&self) -> (u64, u64) {
        self.wakeups.get()
    }

    fn poll(&self, events: u16) -> u16 {
        let c = *self.count.lock();
        let mut r = events & poll::POLLOUT;
        if c > 0 {
            r |= events & poll::POLLIN;
        }
        r
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
