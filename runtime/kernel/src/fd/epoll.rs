//! epoll instances: the host-tested interest list
//! ([`kiln_kernel::fd::epoll`]) behind a lock, as an open file.

use alloc::sync::Arc;
use alloc::vec::Vec;

use kiln_kernel::errno::Errno;
use kiln_kernel::fd::epoll::{Event, InterestList, Watched};
use kiln_kernel::fd::Wakeups;
use kiln_kernel::fs::stat::Stat;
use spin::Mutex;

use super::{poll, FileOps};

pub use kiln_kernel::fd::epoll::ev;

impl Watched for dyn FileOps {
    fn poll(&self, events: u16) -> u16 {
        FileOps::poll(self, events)
    }

    fn wakeups(&self) -> Wakeups {
        FileOps::wakeups(self)
    }
}

/// One epoll instance (the object behind an epoll descriptor).
#[derive(Default)]
pub struct Epoll {
    interests: Mutex<InterestList<dyn FileOps>>,
}

impl Epoll {
    /// EPOLL_CTL_ADD.
    ///
    /// # Errors
    /// EEXIST when `fd` is already watched, ENOSPC when the list is full.
    pub fn add(
        &self,
        fd: u64,
        file: &Arc<dyn FileOps>,
        events: u32,
        data: u64,
    ) -> Result<(), Errno> {
        self.interests.lock().add(fd, file, events, data)
    }

    /// EPOLL_CTL_MOD.
    ///
    /// # Errors
    /// ENOENT when `fd` is not watched.
    pub fn modify(&self, fd: u64, events: u32, data: u64) -> Result<(), Errno> {
        self.interests.lock().modify(fd, events, data)
    }

    /// EPOLL_CTL_DEL.
    ///
    /// # Errors
    /// ENOENT when `fd` is not watched.
    pub fn delete(&self, fd: u64) -> Result<(), Errno> {
        self.interests.lock().delete(fd)
    }

    /// Up to `max` ready descriptors, consuming edge and one-shot state.
    pub fn collect(&self, max: usize) -> Vec<Event> {
        self.interests.lock().collect(max)
    }
}

impl FileOps for Epoll {
    fn stat(&self) -> Stat {
        super::pipe::anon_stat()
    }

    fn poll(&self, events: u16) -> u16 {
        if self.interests.lock().any_ready() {
            events & poll::POLLIN
        } else {
            0
        }
    }

    fn pollable(&self) -> bool {
        true
    }

    fn epoll(&self) -> Option<&Epoll> {
        Some(self)
    }

    fn status_flags(&self) -> u32 {
        super::flags::O_RDWR
    }
}
