//! Queues of whole pages, the way the NIC and the socket device use them:
//! [`RxPages`] keeps single pages posted for the device to fill,
//! [`TxPages`] copies each message into pages chained in one descriptor
//! chain. Kicks are batched (each is an exit to the VMM), and transmit
//! interrupts are asked for only while messages wait for room.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::Transport as _;

use super::hal::KernelHal;
use super::{Page, Transport};

const PAGE: usize = Page::SIZE;

/// Pages posted to a device-writable queue.
pub struct RxPages<const SIZE: usize> {
    queue: VirtQueue<KernelHal, SIZE>,
    index: u16,
    posted: Vec<(u16, Page)>,
    idle: Vec<Page>,
    count: usize,
}

impl<const SIZE: usize> RxPages<SIZE> {
    /// `count` fresh pages for queue `index`; `None` without memory.
    pub fn new(queue: VirtQueue<KernelHal, SIZE>, index: u16, count: usize) -> Option<Self> {
        let mut idle = Vec::with_capacity(count);
        for _ in 0..count {
            idle.push(Page::new()?);
        }
        Some(Self {
            queue,
            index,
            posted: Vec::new(),
            idle,
            count,
        })
    }

    /// Posts every idle page (one kick for all).
    pub fn post(&mut self, transport: &mut Transport) {
        let mut posted = false;
        while let Some(page) = self.idle.pop() {
            // SAFETY: the page is idle; it stays untouched until its token
            // comes back.
            match unsafe { self.queue.add(&[], &mut [page.bytes()]) } {
                Ok(t) => {
                    self.posted.push((t, page));
                    posted = true;
                }
                Err(_) => {
                    self.idle.push(page);
                    break;
                }
            }
        }
        if posted && super::wants_kick(&self.queue) {
            transport.notify(self.index);
        }
    }

    /// Hands the next filled page to `take` (its bytes as the device wrote
    /// them); false when none is filled.
    pub fn next(&mut self, take: impl FnOnce(&[u8])) -> bool {
        let Some(token) = self.queue.peek_used() else {
            return false;
        };
        let Some(i) = self.posted.iter().position(|&(t, _)| t == token) else {
            return false;
        };
        let (_, page) = self.posted.swap_remove(i);
        // SAFETY: the buffer added with this token.
        let len = match unsafe { self.queue.pop_used(token, &[], &mut [page.bytes()]) } {
            Ok(len) => (len as usize).min(PAGE),
            Err(_) => {
                self.idle.push(page);
                return false;
            }
        };
        // SAFETY: the device is done with the page.
        take(&unsafe { page.bytes() }[..len]);
        self.idle.push(page);
        true
    }

    /// Posts the pages taken back once enough have gathered (batching the
    /// kicks), or when few are left with the device.
    pub fn refill(&mut self, transport: &mut Transport) {
        if self.idle.len() >= self.count / 4 || self.posted.len() < self.count / 2 {
            self.post(transport);
        }
    }
}

/// Pages carrying messages to a device-readable queue.
pub struct TxPages<const SIZE: usize> {
    queue: VirtQueue<KernelHal, SIZE>,
    index: u16,
    free: Vec<Page>,
    /// Pages made so far, at most `limit`.
    made: usize,
    limit: usize,
    /// Chains the device has: token and pages.
    busy: Vec<(u16, Vec<Page>)>,
}

impl<const SIZE: usize> TxPages<SIZE> {
    /// Up to `limit` pages in flight on queue `index`, made as needed.
    /// Transmit interrupts start off.
    pub fn new(mut queue: VirtQueue<KernelHal, SIZE>, index: u16, limit: usize) -> Self {
        queue.set_dev_notify(false);
        Self {
            queue,
            index,
            free: Vec::new(),
            made: 0,
            limit,
            busy: Vec::new(),
        }
    }

    /// Takes back the pages of messages the device has read.
    fn reclaim(&mut self) {
        while let Some(token) = self.queue.peek_used() {
            let Some(i) = self.busy.iter().position(|(t, _)| *t == token) else {
                break;
            };
            let (_, pages) = self.busy.swap_remove(i);
            // SAFETY: the chain added with this token: its pages, in order.
            let slices: Vec<&[u8]> = pages.iter().map(|p| &unsafe { p.bytes() }[..]).collect();
            // SAFETY: as above.
            if unsafe { self.queue.pop_used(token, &slices, &mut []) }.is_err() {
                break;
            }
            self.free.extend(pages);
        }
    }

    /// Pages for `needed`, if that many can be had.
    fn pages(&mut self, needed: usize) -> Option<Vec<Page>> {
        if needed > self.free.len() + (self.limit - self.made) {
            return None;
        }
        let mut pages = Vec::with_capacity(needed);
        while pages.len() < needed {
            let page = match self.free.pop() {
                Some(p) => p,
                None => match Page::new() {
                    Some(p) => {
                        self.made += 1;
                        p
                    }
                    None => {
                        self.free.extend(pages);
                        return None;
                    }
                },
            };
            pages.push(page);
        }
        Some(pages)
    }

    /// Queues one message, the concatenation of `parts`; false when there
    /// is no room now (nothing is queued then).
    fn add(&mut self, parts: &[&[u8]]) -> bool {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let Some(pages) = self.pages(total.div_ceil(PAGE).max(1)) else {
            return false;
        };
        let mut lens = Vec::with_capacity(pages.len());
        let mut page = 0;
        let mut filled = 0;
        for part in parts {
            let mut at = 0;
            while at < part.len() {
                if filled == PAGE {
                    lens.push(filled);
                    page += 1;
                    filled = 0;
                }
                let n = (PAGE - filled).min(part.len() - at);
                // SAFETY: the pages are ours until added below.
                let bytes = unsafe { pages[page].bytes() };
                bytes[filled..filled + n].copy_from_slice(&part[at..at + n]);
                filled += n;
                at += n;
            }
        }
        lens.push(filled);
        // SAFETY: as above.
        let slices: Vec<&[u8]> = pages
            .iter()
            .zip(&lens)
            .map(|(p, &l)| &unsafe { p.bytes() }[..l])
            .collect();
        // SAFETY: the pages stay untouched until their token is popped.
        match unsafe { self.queue.add(&slices, &mut []) } {
            Ok(token) => {
                self.busy.push((token, pages));
                true
            }
            Err(_) => {
                self.free.extend(pages);
                false
            }
        }
    }

    /// Queues the messages of `outbox` (each the two parts `parts` gives)
    /// while there is room, with one kick for all; returns whether any
    /// went. With messages left over, the device is asked to interrupt
    /// when it returns pages — and pages it returned before it was asked
    /// are taken at once, or no interrupt would ever come for them.
    pub fn transmit<T>(
        &mut self,
        transport: &mut Transport,
        outbox: &mut VecDeque<T>,
        parts: impl Fn(&T) -> (&[u8], &[u8]),
    ) -> bool {
        let mut sent = false;
        loop {
            self.reclaim();
            while let Some(message) = outbox.front() {
                let (head, body) = parts(message);
                if !self.add(&[head, body]) {
                    break;
                }
                outbox.pop_front();
                sent = true;
            }
            if outbox.is_empty() {
                self.queue.set_dev_notify(false);
                break;
            }
            self.queue.set_dev_notify(true);
            if !self.queue.can_pop() {
                break;
            }
        }
        if sent && super::wants_kick(&self.queue) {
            transport.notify(self.index);
        }
        sent
    }
}
