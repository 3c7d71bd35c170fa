//! epoll instances: an interest list of descriptors, each with the events
//! wanted and the program's 64-bit cookie. Readiness is asked of the files
//! themselves at every wait (there are few, and one CPU), so nothing has
//! to call back into the instance when a pipe fills.
//!
//! Level-triggered by default. EPOLLET reports a descriptor when an event
//! it wants became ready since the previous report, or when the file woke
//! that side again meanwhile (a pipe written to while still readable), as
//! Linux's wake-up callbacks do; EPOLLONESHOT disables the entry after one
//! report until EPOLL_CTL_MOD.

use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;

use kiln_kernel::errno::Errno;
use kiln_kernel::fs::stat::Stat;
use spin::Mutex;

use super::{poll, FileOps};

/// epoll event bits.
#[allow(missing_docs)]
pub mod ev {
    pub const EPOLLIN: u32 = 0x1;
    pub const EPOLLPRI: u32 = 0x2;
    pub const EPOLLOUT: u32 = 0x4;
    pub const EPOLLERR: u32 = 0x8;
    pub const EPOLLHUP: u32 = 0x10;
    pub const EPOLLRDHUP: u32 = 0x2000;
    pub const EPOLLEXCLUSIVE: u32 = 1 << 28;
    pub const EPOLLONESHOT: u32 = 1 << 30;
    pub const EPOLLET: u32 = 1 << 31;
}

/// Most descriptors one instance watches.
const MAX_INTERESTS: usize = 4096;

struct Interest {
    fd: u64,
    file: Weak<dyn FileOps>,
    events: u32,
    data: u64,
    /// EPOLLONESHOT fired; waits for EPOLL_CTL_MOD.
    disarmed: bool,
    /// For EPOLLET: the events reported last time, and the file's
    /// wake-up counts then.
    reported: u32,
    seen: (u64, u64),
}

/// One epoll instance (the object behind an epoll descriptor).
#[derive(Default)]
pub struct Epoll {
    interests: Mutex<Vec<Interest>>,
}

/// An event as epoll_wait returns it.
#[derive(Clone, Copy, Debug)]
pub struct Event {
    /// The ready events.
    pub events: u32,
    /// The program's cookie.
    pub data: u64,
}

/// The poll(2) readiness of `file` as epoll event bits.
fn readiness(file: &dyn FileOps, wanted: u32) -> u32 {
    let mask = (wanted & (ev::EPOLLIN | ev::EPOLLOUT | ev::EPOLLPRI)) as u16;
    let got = u32::from(file.poll(mask | poll::POLLIN | poll::POLLOUT));
    let mut out = got & (ev::EPOLLERR | ev::EPOLLHUP);
    out |= got & wanted & (ev::EPOLLIN | ev::EPOLLOUT | ev::EPOLLPRI);
    if wanted & ev::EPOLLRDHUP != 0 && got & ev::EPOLLHUP != 0 {
        out |= ev::EPOLLRDHUP;
    }
    out
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
        let mut list = self.interests.lock();
        list.retain(|i| i.file.strong_count() > 0);
        if list.iter().any(|i| i.fd == fd) {
            return Err(Errno::Exist);
        }
        if list.len() >= MAX_INTERESTS {
            return Err(Errno::Nospc);
        }
        list.push(Interest {
            fd,
            file: Arc::downgrade(file),
            events,
            data,
            disarmed: false,
            reported: 0,
            seen: file.wakeups(),
        });
        Ok(())
    }

    /// EPOLL_CTL_MOD.
    ///
    /// # Errors
    /// ENOENT when `fd` is not watched.
    pub fn modify(&self, fd: u64, events: u32, data: u64) -> Result<(), Errno> {
        let mut list = self.interests.lock();
        let i = list.iter_mut().find(|i| i.fd == fd).ok_or(Errno::Noent)?;
        i.events = events;
        i.data = data;
        i.disarmed = false;
        i.reported = 0;
        Ok(())
    }

    /// EPOLL_CTL_DEL.
    ///
    /// # Errors
    /// ENOENT when `fd` is not watched.
    pub fn delete(&self, fd: u64) -> Result<(), Errno> {
        let mut list = self.interests.lock();
        let at = list.iter().position(|i| i.fd == fd).ok_or(Errno::Noent)?;
        list.remove(at);
        Ok(())
    }

    /// Up to `max` ready descriptors, consuming edge and one-shot state.
    pub fn collect(&self, max: usize) -> Vec<Event> {
        let mut list = self.interests.lock();
        list.retain(|i| i.file.strong_count() > 0);
        let mut out = Vec::new();
        for i in list.iter_mut() {
            if out.len() == max {
                break;
            }
            if i.disarmed {
                continue;
            }
            let Some(file) = i.file.upgrade() else {
                continue;
            };
            let ready = readiness(&*file, i.events);
            if i.events & ev::EPOLLET != 0 {
                let now = file.wakeups();
                let woken = (ready & ev::EPOLLIN != 0 && now.0 != i.seen.0)
                    || (ready & ev::EPOLLOUT != 0 && now.1 != i.seen.1);
                let new = ready & !i.reported;
                i.reported = ready;
                i.seen = now;
                if new == 0 && !woken {
                    continue;
                }
            }
            if ready == 0 {
                continue;
            }
            if i.events & ev::EPOLLONESHOT != 0 {
                i.disarmed = true;
            }
            out.push(Event {
                events: ready,
                data: i.data,
            });
        }
        out
    }

    /// Whether any watched descriptor is ready (without consuming state).
    fn any_ready(&self) -> bool {
        self.interests.lock().iter().any(|i| {
            !i.disarmed
                && i.file
                    .upgrade()
                    .is_some_and(|f| readiness(&*f, i.events) & !i.reported_if_edge() != 0)
        })
    }
}

impl Interest {
    fn reported_if_edge(&self) -> u32 {
        if self.events & ev::EPOLLET != 0 {
            self.reported
        } else {
            0
        }
    }
}

impl FileOps for Epoll {
    fn stat(&self) -> Stat {
        super::pipe::anon_stat()
    }

    fn poll(&self, events: u16) -> u16 {
        if self.any_ready() {
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
