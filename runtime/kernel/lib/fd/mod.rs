//! The logic of open-file objects that needs no kernel: pipe buffers and
//! eventfd counters ([`pipe`]), epoll interest lists ([`epoll`]), and the
//! poll(2) event bits they answer with ([`poll`]). The kernel's `fd` wraps
//! them in file objects behind locks, wakes waiting threads when they
//! change, and turns "would block" into EAGAIN or a wait.

pub mod epoll;
pub mod pipe;
pub mod tty;

/// poll(2) event bits (include/uapi/asm-generic/poll.h).
#[allow(missing_docs)]
pub mod poll {
    pub const POLLIN: u16 = 0x1;
    pub const POLLPRI: u16 = 0x2;
    pub const POLLOUT: u16 = 0x4;
    pub const POLLERR: u16 = 0x8;
    pub const POLLHUP: u16 = 0x10;
    pub const POLLNVAL: u16 = 0x20;
}

/// Counts of the events that wake readers (data written, writer gone) and
/// writers (data read, reader gone): epoll's edge triggering compares them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wakeups {
    /// Times readers were woken.
    pub readable: u64,
    /// Times writers were woken.
    pub writable: u64,
}

impl Wakeups {
    /// Something readers wait for happened.
    pub fn wake_readers(&mut self) {
        self.readable += 1;
    }

    /// Something writers wait for happened.
    pub fn wake_writers(&mut self) {
        self.writable += 1;
    }
}
