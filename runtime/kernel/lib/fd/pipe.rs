//! A pipe's buffer and an eventfd's counter: what a read or a write does
//! to them, and what poll reports. `None` from a `try_*` method means "would
//! block": the caller decides between EAGAIN and waiting.

use alloc::collections::VecDeque;

use super::{poll, Wakeups};
use crate::errno::Errno;

/// Bytes a pipe holds (Linux's default).
pub const CAPACITY: usize = 64 * 1024;

/// The state both ends of a pipe share.
#[derive(Debug)]
pub struct PipeBuffer {
    bytes: VecDeque<u8>,
    readers: usize,
    writers: usize,
    /// How often each side was woken.
    pub wakeups: Wakeups,
}

impl Default for PipeBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl PipeBuffer {
    /// An empty pipe with one read end and one write end.
    pub fn new() -> Self {
        Self {
            bytes: VecDeque::new(),
            readers: 1,
            writers: 1,
            wakeups: Wakeups::default(),
        }
    }

    /// Bytes waiting to be read.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether nothing waits to be read.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// One end was closed: its side's count drops and the other side wakes
    /// (readers see EOF, writers EPIPE).
    pub fn close_end(&mut self, write_end: bool) {
        if write_end {
            self.writers = self.writers.saturating_sub(1);
            self.wakeups.wake_readers();
        } else {
            self.readers = self.readers.saturating_sub(1);
            self.wakeups.wake_writers();
        }
    }

    /// Reads into `buf`: the bytes there are, 0 at end of file (no writer
    /// left), `None` when empty with a writer still open.
    pub fn try_read(&mut self, buf: &mut [u8]) -> Option<Result<usize, Errno>> {
        if !self.bytes.is_empty() {
            let n = buf.len().min(self.bytes.len());
            for (dst, src) in buf.iter_mut().zip(self.bytes.drain(..n)) {
                *dst = src;
            }
            self.wakeups.wake_writers();
            return Some(Ok(n));
        }
        if self.writers == 0 {
            return Some(Ok(0));
        }
        None
    }

    /// Writes as much of `buf` as fits: EPIPE when no reader is left,
    /// `None` when full.
    pub fn try_write(&mut self, buf: &[u8]) -> Option<Result<usize, Errno>> {
        if self.readers == 0 {
            return Some(Err(Errno::Pipe));
        }
        let room = CAPACITY - self.bytes.len();
        if room == 0 {
            return None;
        }
        let n = buf.len().min(room);
        self.bytes.extend(&buf[..n]);
        self.wakeups.wake_readers();
        Some(Ok(n))
    }

    /// Which of `events` an end reports.
    pub fn poll(&self, write_end: bool, events: u16) -> u16 {
        if write_end {
            if self.readers == 0 {
                return poll::POLLERR | (events & poll::POLLOUT);
            }
            if self.bytes.len() < CAPACITY {
                events & poll::POLLOUT
            } else {
                0
            }
        } else {
            let mut r = if self.bytes.is_empty() {
                0
            } else {
                events & poll::POLLIN
            };
            if self.writers == 0 {
                r |= poll::POLLHUP;
            }
            r
        }
    }
}

/// An eventfd's counter (eventfd(2)): reads take the value (or 1 in
/// semaphore mode), writes add to it, and it never reaches `u64::MAX`.
#[derive(Debug)]
pub struct EventCounter {
    value: u64,
    semaphore: bool,
    /// How often each side was woken.
    pub wakeups: Wakeups,
}

impl EventCounter {
    /// A counter starting at `initial`.
    pub fn new(initial: u64, semaphore: bool) -> Self {
        Self {
            value: initial,
            semaphore,
            wakeups: Wakeups::default(),
        }
    }

    /// Takes the value (1 in semaphore mode); `None` while it is 0.
    pub fn try_read(&mut self) -> Option<u64> {
        if self.value == 0 {
            return None;
        }
        let v = if self.semaphore { 1 } else { self.value };
        self.value -= v;
        self.wakeups.wake_writers();
        Some(v)
    }

    /// Adds `add` (EINVAL for `u64::MAX`); `None` while it would overflow.
    pub fn try_write(&mut self, add: u64) -> Option<Result<(), Errno>> {
        if add == u64::MAX {
            return Some(Err(Errno::Inval));
        }
        if u64::MAX - 1 - self.value < add {
            return None;
        }
        self.value += add;
        self.wakeups.wake_readers();
        Some(Ok(()))
    }

    /// Which of `events` are ready: always writable, readable when non-zero.
    pub fn poll(&self, events: u16) -> u16 {
        let mut r = events & poll::POLLOUT;
        if self.value > 0 {
            r |= events & poll::POLLIN;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_was_written_in_order() {
        let mut p = PipeBuffer::new();
        assert_eq!(p.try_write(b"hello"), Some(Ok(5)));
        let mut buf = [0u8; 3];
        assert_eq!(p.try_read(&mut buf), Some(Ok(3)));
        assert_eq!(&buf, b"hel");
        assert_eq!(p.try_read(&mut buf), Some(Ok(2)));
        assert_eq!(&buf[..2], b"lo");
    }

    #[test]
    fn empty_pipe_blocks_until_the_writer_closes() {
        let mut p = PipeBuffer::new();
        let mut buf = [0u8; 4];
        assert_eq!(p.try_read(&mut buf), None);
        p.close_end(true);
        assert_eq!(p.try_read(&mut buf), Some(Ok(0)));
        assert_eq!(p.poll(false, poll::POLLIN), poll::POLLHUP);
    }

    #[test]
    fn full_pipe_blocks_and_takes_a_partial_write() {
        let mut p = PipeBuffer::new();
        let big = alloc::vec![7u8; CAPACITY - 10];
        assert_eq!(p.try_write(&big), Some(Ok(CAPACITY - 10)));
        assert_eq!(p.try_write(&[1u8; 64]), Some(Ok(10)));
        assert_eq!(p.try_write(b"x"), None);
        assert_eq!(p.poll(true, poll::POLLOUT), 0);
        let mut buf = [0u8; 1];
        p.try_read(&mut buf);
        assert_eq!(p.poll(true, poll::POLLOUT), poll::POLLOUT);
    }

    #[test]
    fn writing_without_a_reader_is_epipe() {
        let mut p = PipeBuffer::new();
        p.close_end(false);
        assert_eq!(p.try_write(b"x"), Some(Err(Errno::Pipe)));
        assert_eq!(p.poll(true, poll::POLLOUT), poll::POLLERR | poll::POLLOUT);
    }

    #[test]
    fn wakeups_count_each_side() {
        let mut p = PipeBuffer::new();
        p.try_write(b"ab");
        p.try_write(b"c");
        let mut buf = [0u8; 8];
        p.try_read(&mut buf);
        assert_eq!(
            p.wakeups,
            Wakeups {
                readable: 2,
                writable: 1
            }
        );
    }

    #[test]
    fn eventfd_counts_and_semaphores() {
        let mut c = EventCounter::new(3, false);
        assert_eq!(
            c.poll(poll::POLLIN | poll::POLLOUT),
            poll::POLLIN | poll::POLLOUT
        );
        assert_eq!(c.try_read(), Some(3));
        assert_eq!(c.try_read(), None);
        assert_eq!(c.poll(poll::POLLIN), 0);
        let mut s = EventCounter::new(2, true);
        assert_eq!(s.try_read(), Some(1));
        assert_eq!(s.try_read(), Some(1));
        assert_eq!(s.try_read(), None);
    }

    #[test]
    fn eventfd_refuses_max_and_blocks_before_overflow() {
        let mut c = EventCounter::new(0, false);
        assert_eq!(c.try_write(u64::MAX), Some(Err(Errno::Inval)));
        assert_eq!(c.try_write(u64::MAX - 1), Some(Ok(())));
        assert_eq!(c.try_write(1), None);
    }
}
