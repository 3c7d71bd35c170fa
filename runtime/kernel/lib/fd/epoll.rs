//! An epoll instance's interest list: the watched descriptors, each with
//! the events wanted and the program's 64-bit cookie. Readiness is asked
//! of the files themselves at every wait (there are few, and one CPU), so
//! nothing has to call back into the instance when a pipe fills.
//!
//! Level-triggered by default. EPOLLET reports a descriptor when an event
//! it wants became ready since the previous report, or when the file woke
//! that side again meanwhile (a pipe written to while still readable), as
//! Linux's wake-up callbacks do; EPOLLONESHOT disables the entry after one
//! report until EPOLL_CTL_MOD. Entries whose file is gone (closed
//! everywhere) drop out.

use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;

use super::{poll, Wakeups};
use crate::errno::Errno;

/// epoll event bits (include/uapi/linux/eventpoll.h).
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
pub const MAX_INTERESTS: usize = 4096;

/// What epoll needs of a watched file.
pub trait Watched {
    /// Which of the poll(2) `events` are ready now.
    fn poll(&self, events: u16) -> u16;
    /// How often its readers and writers have been woken so far.
    fn wakeups(&self) -> Wakeups;
}

struct Interest<F: ?Sized> {
    fd: u64,
    file: Weak<F>,
    events: u32,
    data: u64,
    /// EPOLLONESHOT fired; waits for EPOLL_CTL_MOD.
    disarmed: bool,
    /// For EPOLLET: the events reported last time, and the file's
    /// wake-up counts then.
    reported: u32,
    seen: Wakeups,
}

impl<F: ?Sized> Interest<F> {
    fn reported_if_edge(&self) -> u32 {
        if self.events & ev::EPOLLET != 0 {
            self.reported
        } else {
            0
        }
    }
}

/// An event as epoll_wait returns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// The ready events.
    pub events: u32,
    /// The program's cookie.
    pub data: u64,
}

/// The poll(2) readiness of `file` as epoll event bits.
fn readiness<F: ?Sized + Watched>(file: &F, wanted: u32) -> u32 {
    let mask = (wanted & (ev::EPOLLIN | ev::EPOLLOUT | ev::EPOLLPRI)) as u16;
    let got = u32::from(file.poll(mask | poll::POLLIN | poll::POLLOUT));
    let mut out = got & (ev::EPOLLERR | ev::EPOLLHUP);
    out |= got & wanted & (ev::EPOLLIN | ev::EPOLLOUT | ev::EPOLLPRI);
    if wanted & ev::EPOLLRDHUP != 0 && got & ev::EPOLLHUP != 0 {
        out |= ev::EPOLLRDHUP;
    }
    out
}

/// The interest list of one epoll instance, over files of type `F`.
pub struct InterestList<F: ?Sized> {
    entries: Vec<Interest<F>>,
}

impl<F: ?Sized> Default for InterestList<F> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<F: ?Sized + Watched> InterestList<F> {
    /// EPOLL_CTL_ADD.
    ///
    /// # Errors
    /// EEXIST when `fd` is already watched, ENOSPC when the list is full.
    pub fn add(&mut self, fd: u64, file: &Arc<F>, events: u32, data: u64) -> Result<(), Errno> {
        self.entries.retain(|i| i.file.strong_count() > 0);
        if self.entries.iter().any(|i| i.fd == fd) {
            return Err(Errno::Exist);
        }
        if self.entries.len() >= MAX_INTERESTS {
            return Err(Errno::Nospc);
        }
        self.entries.push(Interest {
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

    /// EPOLL_CTL_MOD (re-arms a one-shot entry).
    ///
    /// # Errors
    /// ENOENT when `fd` is not watched.
    pub fn modify(&mut self, fd: u64, events: u32, data: u64) -> Result<(), Errno> {
        let i = self
            .entries
            .iter_mut()
            .find(|i| i.fd == fd)
            .ok_or(Errno::Noent)?;
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
    pub fn delete(&mut self, fd: u64) -> Result<(), Errno> {
        let at = self
            .entries
            .iter()
            .position(|i| i.fd == fd)
            .ok_or(Errno::Noent)?;
        self.entries.remove(at);
        Ok(())
    }

    /// Up to `max` ready descriptors, consuming edge and one-shot state.
    pub fn collect(&mut self, max: usize) -> Vec<Event> {
        self.entries.retain(|i| i.file.strong_count() > 0);
        let mut out = Vec::new();
        for i in self.entries.iter_mut() {
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
                let woken = (ready & ev::EPOLLIN != 0 && now.readable != i.seen.readable)
                    || (ready & ev::EPOLLOUT != 0 && now.writable != i.seen.writable);
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

    /// Whether any watched descriptor is ready (without consuming state):
    /// what poll on the epoll descriptor itself reports.
    pub fn any_ready(&self) -> bool {
        self.entries.iter().any(|i| {
            !i.disarmed
                && i.file
                    .upgrade()
                    .is_some_and(|f| readiness(&*f, i.events) & !i.reported_if_edge() != 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::{AtomicU16, AtomicU64, Ordering};

    /// A file whose readiness and wake-up counts the test sets.
    #[derive(Default)]
    struct Fake {
        ready: AtomicU16,
        woken: AtomicU64,
    }

    impl Watched for Fake {
        fn poll(&self, events: u16) -> u16 {
            self.ready.load(Ordering::Relaxed) & (events | poll::POLLERR | poll::POLLHUP)
        }
        fn wakeups(&self) -> Wakeups {
            Wakeups {
                readable: self.woken.load(Ordering::Relaxed),
                writable: 0,
            }
        }
    }

    fn readable(f: &Fake) {
        f.ready.store(poll::POLLIN, Ordering::Relaxed);
        f.woken.fetch_add(1, Ordering::Relaxed);
    }

    #[test]
    fn level_triggered_reports_while_ready() {
        let f = Arc::new(Fake::default());
        let mut list = InterestList::default();
        list.add(3, &f, ev::EPOLLIN, 42).unwrap();
        assert!(list.collect(8).is_empty());
        readable(&f);
        let want = Event {
            events: ev::EPOLLIN,
            data: 42,
        };
        assert_eq!(list.collect(8), [want]);
        assert_eq!(list.collect(8), [want]);
        assert!(list.any_ready());
    }

    #[test]
    fn edge_triggered_reports_once_per_wakeup() {
        let f = Arc::new(Fake::default());
        let mut list = InterestList::default();
        list.add(3, &f, ev::EPOLLIN | ev::EPOLLET, 1).unwrap();
        readable(&f);
        assert_eq!(list.collect(8).len(), 1);
        assert!(list.collect(8).is_empty());
        assert!(!list.any_ready());
        // Written to again while still readable: a new edge.
        readable(&f);
        assert_eq!(list.collect(8).len(), 1);
    }

    #[test]
    fn one_shot_disarms_until_modified() {
        let f = Arc::new(Fake::default());
        let mut list = InterestList::default();
        list.add(3, &f, ev::EPOLLIN | ev::EPOLLONESHOT, 1).unwrap();
        readable(&f);
        assert_eq!(list.collect(8).len(), 1);
        assert!(list.collect(8).is_empty());
        list.modify(3, ev::EPOLLIN | ev::EPOLLONESHOT, 2).unwrap();
        assert_eq!(list.collect(8)[0].data, 2);
    }

    #[test]
    fn errors_and_hangups_are_always_reported() {
        let f = Arc::new(Fake::default());
        let mut list = InterestList::default();
        list.add(3, &f, ev::EPOLLOUT | ev::EPOLLRDHUP, 0).unwrap();
        f.ready.store(poll::POLLHUP, Ordering::Relaxed);
        assert_eq!(list.collect(8)[0].events, ev::EPOLLHUP | ev::EPOLLRDHUP);
    }

    #[test]
    fn control_errors_name_the_problem() {
        let f = Arc::new(Fake::default());
        let mut list = InterestList::default();
        list.add(3, &f, ev::EPOLLIN, 0).unwrap();
        assert_eq!(list.add(3, &f, ev::EPOLLIN, 0), Err(Errno::Exist));
        assert_eq!(list.modify(4, ev::EPOLLIN, 0), Err(Errno::Noent));
        assert_eq!(list.delete(4), Err(Errno::Noent));
        assert_eq!(list.delete(3), Ok(()));
        assert_eq!(list.delete(3), Err(Errno::Noent));
    }

    #[test]
    fn closed_files_drop_out_and_max_is_honoured() {
        let files: Vec<Arc<Fake>> = (0..3).map(|_| Arc::new(Fake::default())).collect();
        let mut list = InterestList::default();
        for (fd, f) in files.iter().enumerate() {
            list.add(fd as u64, f, ev::EPOLLIN, fd as u64).unwrap();
            readable(f);
        }
        assert_eq!(list.collect(2).len(), 2);
        drop(files);
        assert!(list.collect(8).is_empty());
        assert!(!list.any_ready());
    }
}
