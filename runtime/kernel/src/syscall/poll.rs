//! Waiting for descriptors: poll, ppoll, select, pselect6 and epoll.
//!
//! None of them sleeps on a queue of its own: each checks readiness, and
//! when nothing is ready returns ERESTARTSYS, which makes the dispatcher
//! block the thread until any I/O object changes (or the deadline kept in
//! `sched::restart_deadline` passes) and then run the call again.

use alloc::sync::Arc;
use alloc::vec::Vec;

use kiln_kernel::errno::Errno;
use kiln_kernel::signal::UNBLOCKABLE;

use super::args::Flags;
use super::Call;
use crate::fd::epoll::{ev, Epoll};
use crate::fd::{poll, Fd, FileOps};
use crate::mm::uaccess::UserPtr;
use crate::process::Process;
use crate::sched;
use crate::time::monotonic_ns;

/// Most descriptors select(2) handles (FD_SETSIZE).
const FD_SETSIZE: u64 = 1024;

/// Reads an optional `struct timespec` as nanoseconds (None: no timeout).
fn timeout_ns(p: &mut Process, tsp: UserPtr<[i64; 2]>) -> Result<Option<u64>, Errno> {
    if tsp.is_null() {
        return Ok(None);
    }
    let t = p.mem.read(tsp)?;
    if t[0] < 0 || !(0..1_000_000_000).contains(&t[1]) {
        return Err(Errno::Inval);
    }
    Ok(Some(
        (t[0] as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(t[1] as u64),
    ))
}

/// Nothing is ready: return `Ok(0)` at the timeout, or wait and re-run.
fn wait_or_time_out(timeout: Option<u64>) -> Result<u64, Errno> {
    if timeout == Some(0) {
        return Ok(0);
    }
    let deadline = sched::restart_deadline(timeout);
    if deadline.is_some_and(|d| d <= monotonic_ns()) {
        return Ok(0);
    }
    Err(Errno::Restart)
}

/// Applies the temporary signal mask of ppoll, pselect6 and epoll_pwait
/// for the duration of the call (restored on its way out, or by
/// rt_sigreturn when a handler runs).
fn temporary_mask(p: &mut Process, mask: UserPtr<u64>, size: u64) -> Result<(), Errno> {
    if mask.is_null() {
        return Ok(());
    }
    if size != 8 {
        return Err(Errno::Inval);
    }
    let m = p.mem.read(mask)?;
    sched::with_current(|t| {
        t.sig.saved_mask.get_or_insert(t.sig.mask);
        t.sig.mask = m & !UNBLOCKABLE;
    });
    Ok(())
}

/// Writes the time left of `timeout` back to the program's timeval or
/// timespec at `addr`, as Linux does for select, pselect6 and ppoll.
fn write_time_left(
    p: &mut Process,
    at: UserPtr<[i64; 2]>,
    timeout: Option<u64>,
    timeval: bool,
) -> Result<(), Errno> {
    if at.is_null() || timeout.is_none() {
        return Ok(());
    }
    let left = sched::restart_deadline(timeout).map_or(0, |d| d.saturating_sub(monotonic_ns()));
    let sub = if timeval {
        (left % 1_000_000_000) / 1000
    } else {
        left % 1_000_000_000
    };
    p.mem
        .write(at.cast::<[u64; 2]>(), [left / 1_000_000_000, sub])
}

/// poll(2): `timeout_ms` negative waits forever.
pub fn poll(p: &mut Call, fds: UserPtr<u8>, count: u64, timeout_ms: i32) -> Result<u64, Errno> {
    let ready = poll_once(p, fds, count)?;
    if ready > 0 {
        return Ok(ready);
    }
    wait_or_time_out((timeout_ms >= 0).then(|| timeout_ms as u64 * 1_000_000))
}

/// ppoll(2).
pub fn ppoll(
    p: &mut Call,
    fds: UserPtr<u8>,
    count: u64,
    tsp: UserPtr<[i64; 2]>,
    mask: UserPtr<u64>,
    size: u64,
) -> Result<u64, Errno> {
    let timeout = timeout_ns(p, tsp)?;
    temporary_mask(p, mask, size)?;
    let ready = poll_once(p, fds, count)?;
    let result = if ready > 0 {
        Ok(ready)
    } else {
        wait_or_time_out(timeout)
    };
    if result.is_ok() {
        write_time_left(p, tsp, timeout, false)?;
    }
    result
}

fn poll_once(p: &mut Process, fds: UserPtr<u8>, count: u64) -> Result<u64, Errno> {
    if count > FD_SETSIZE {
        return Err(Errno::Inval);
    }
    let mut pollfds: Vec<u8> = p.mem.slice(fds, count as usize * 8)?.to_vec();
    let mut ready = 0;
    for e in pollfds.chunks_exact_mut(8) {
        let fd = i32::from_le_bytes([e[0], e[1], e[2], e[3]]);
        let events = u16::from_le_bytes([e[4], e[5]]);
        let revents = if fd < 0 {
            0
        } else {
            match p.fds.get(Fd(fd)) {
                // POLLERR and POLLHUP are reported whether asked for or not.
                Ok(file) => file.poll(events) & (events | poll::POLLERR | poll::POLLHUP),
                Err(_) => poll::POLLNVAL,
            }
        };
        e[6..8].copy_from_slice(&revents.to_le_bytes());
        if revents != 0 {
            ready += 1;
        }
    }
    p.mem.write_bytes(fds, &pollfds)?;
    Ok(ready)
}

/// The three descriptor sets of select(2), as read from the program.
struct FdSets {
    words: usize,
    sets: [Option<(UserPtr<u64>, Vec<u64>)>; 3],
}

impl FdSets {
    fn read(p: &mut Process, nfds: u64, addrs: [UserPtr<u64>; 3]) -> Result<Self, Errno> {
        if nfds > FD_SETSIZE {
            return Err(Errno::Inval);
        }
        let words = nfds.div_ceil(64) as usize;
        let mut sets: [Option<(UserPtr<u64>, Vec<u64>)>; 3] = [None, None, None];
        for (slot, addr) in sets.iter_mut().zip(addrs) {
            if !addr.is_null() && words > 0 {
                let bytes = p.mem.slice(addr.cast(), words * 8)?;
                let bits = bytes
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect();
                *slot = Some((addr, bits));
            }
        }
        Ok(Self { words, sets })
    }

    /// Checks every descriptor in the sets; returns the ready sets and
    /// their count, or EBADF for a closed descriptor.
    fn check(&self, p: &Process, nfds: u64) -> Result<([Vec<u64>; 3], u64), Errno> {
        let mut out = [
            alloc::vec![0u64; self.words],
            alloc::vec![0u64; self.words],
            alloc::vec![0u64; self.words],
        ];
        let mut count = 0;
        for fd in 0..nfds {
            let (w, b) = ((fd / 64) as usize, fd % 64);
            let wanted: Vec<usize> = (0..3)
                .filter(|&k| {
                    self.sets[k]
                        .as_ref()
                        .is_some_and(|(_, bits)| bits[w] & (1 << b) != 0)
                })
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let file = p.fds.get(Fd(fd as i32))?;
            let got = file.poll(poll::POLLIN | poll::POLLOUT | poll::POLLPRI);
            for k in wanted {
                let ready = match k {
                    0 => got & (poll::POLLIN | poll::POLLHUP | poll::POLLERR) != 0,
                    1 => got & (poll::POLLOUT | poll::POLLERR) != 0,
                    _ => got & poll::POLLPRI != 0,
                };
                if ready {
                    out[k][w] |= 1 << b;
                    count += 1;
                }
            }
        }
        Ok((out, count))
    }

    fn write(&self, p: &mut Process, ready: &[Vec<u64>; 3]) -> Result<(), Errno> {
        for (set, bits) in self.sets.iter().zip(ready) {
            if let Some((addr, _)) = set {
                let bytes: Vec<u8> = bits.iter().flat_map(|w| w.to_le_bytes()).collect();
                p.mem.write_bytes(*addr, &bytes)?;
            }
        }
        Ok(())
    }
}

fn select_common(
    p: &mut Process,
    nfds: u64,
    sets: [UserPtr<u64>; 3],
    timeout: Option<u64>,
) -> Result<u64, Errno> {
    let fd_sets = FdSets::read(p, nfds, sets)?;
    let (ready, count) = fd_sets.check(p, nfds)?;
    if count > 0 || timeout == Some(0) {
        fd_sets.write(p, &ready)?;
        return Ok(count);
    }
    match wait_or_time_out(timeout) {
        Ok(n) => {
            // Timed out: the sets come back empty.
            fd_sets.write(p, &ready)?;
            Ok(n)
        }
        Err(e) => Err(e),
    }
}

/// select(2): the timeout is a `struct timeval`, updated with the time
/// left (as Linux does).
pub fn select(
    p: &mut Call,
    nfds: u64,
    r: UserPtr<u64>,
    w: UserPtr<u64>,
    e: UserPtr<u64>,
    tvp: UserPtr<[i64; 2]>,
) -> Result<u64, Errno> {
    let timeout = if tvp.is_null() {
        None
    } else {
        let t = p.mem.read(tvp)?;
        if t[0] < 0 || t[1] < 0 {
            return Err(Errno::Inval);
        }
        Some(
            (t[0] as u64)
                .saturating_mul(1_000_000_000)
                .saturating_add((t[1] as u64).saturating_mul(1000)),
        )
    };
    let result = select_common(p, nfds, [r, w, e], timeout);
    if result.is_ok() {
        write_time_left(p, tvp, timeout, true)?;
    }
    result
}

/// pselect6(2): a timespec timeout and `{ const sigset_t *, size_t }`.
pub fn pselect6(
    p: &mut Call,
    nfds: u64,
    r: UserPtr<u64>,
    w: UserPtr<u64>,
    e: UserPtr<u64>,
    tsp: UserPtr<[i64; 2]>,
    sig: UserPtr<[u64; 2]>,
) -> Result<u64, Errno> {
    let timeout = timeout_ns(p, tsp)?;
    if !sig.is_null() {
        let [mask, size] = p.mem.read(sig)?;
        temporary_mask(p, UserPtr::new(mask), size)?;
    }
    let result = select_common(p, nfds, [r, w, e], timeout);
    if result.is_ok() {
        write_time_left(p, tsp, timeout, false)?;
    }
    result
}

/// epoll_create(2): the size must be positive, and is otherwise ignored.
pub fn epoll_create(p: &mut Call, size: i32) -> Result<u64, Errno> {
    if size <= 0 {
        return Err(Errno::Inval);
    }
    epoll_create1(p, Flags(0))
}

/// epoll_create1(2).
pub fn epoll_create1(p: &mut Call, Flags(flags): Flags) -> Result<u64, Errno> {
    const EPOLL_CLOEXEC: u64 = 0o2000000;
    if flags & !EPOLL_CLOEXEC != 0 {
        return Err(Errno::Inval);
    }
    p.fds
        .insert(Arc::new(Epoll::default()), flags & EPOLL_CLOEXEC != 0)
        .map(Fd::number)
}

fn epoll_of(p: &Process, epfd: Fd) -> Result<Arc<dyn FileOps>, Errno> {
    let file = p.fds.get(epfd)?;
    if file.epoll().is_none() {
        return Err(Errno::Inval);
    }
    Ok(file)
}

/// epoll_ctl(2).
pub fn epoll_ctl(
    p: &mut Call,
    epfd: Fd,
    op: u32,
    fd: Fd,
    event: UserPtr<[u8; 12]>,
) -> Result<u64, Errno> {
    const ADD: u32 = 1;
    const DEL: u32 = 2;
    const MOD: u32 = 3;
    let instance = epoll_of(p, epfd)?;
    let Some(epoll) = instance.epoll() else {
        return Err(Errno::Inval);
    };
    let target = p.fds.get(fd)?;
    if !target.pollable() {
        return Err(Errno::Perm);
    }
    if Arc::ptr_eq(&instance, &target) {
        return Err(Errno::Inval);
    }
    let read_event = |p: &mut Process| -> Result<(u32, u64), Errno> {
        let raw = p.mem.read(event)?;
        let events = u32::from_le_bytes(raw[0..4].try_into().unwrap_or_default());
        let data = u64::from_le_bytes(raw[4..12].try_into().unwrap_or_default());
        // Errors and hang-ups are always reported.
        Ok((events | ev::EPOLLERR | ev::EPOLLHUP, data))
    };
    match op {
        ADD => {
            let (events, data) = read_event(p)?;
            epoll.add(fd.number(), &target, events, data)?;
        }
        MOD => {
            let (events, data) = read_event(p)?;
            if events & ev::EPOLLEXCLUSIVE != 0 {
                return Err(Errno::Inval);
            }
            epoll.modify(fd.number(), events, data)?;
        }
        DEL => epoll.delete(fd.number())?,
        _ => return Err(Errno::Inval),
    }
    // A change may make a waiter's descriptor ready.
    sched::notify_io();
    Ok(0)
}

/// epoll_wait(2).
pub fn epoll_wait(
    p: &mut Call,
    epfd: Fd,
    events: UserPtr<u8>,
    max: i32,
    timeout_ms: i32,
) -> Result<u64, Errno> {
    wait_events(
        p,
        epfd,
        events,
        max,
        ms_timeout(timeout_ms),
        (UserPtr::new(0), 0),
    )
}

/// epoll_pwait(2).
pub fn epoll_pwait(
    p: &mut Call,
    epfd: Fd,
    events: UserPtr<u8>,
    max: i32,
    timeout_ms: i32,
    mask: UserPtr<u64>,
    size: u64,
) -> Result<u64, Errno> {
    wait_events(p, epfd, events, max, ms_timeout(timeout_ms), (mask, size))
}

/// epoll_pwait2(2): a timespec timeout.
pub fn epoll_pwait2(
    p: &mut Call,
    epfd: Fd,
    events: UserPtr<u8>,
    max: i32,
    timeout: UserPtr<[i64; 2]>,
    mask: UserPtr<u64>,
    size: u64,
) -> Result<u64, Errno> {
    let timeout = timeout_ns(p, timeout)?;
    wait_events(p, epfd, events, max, timeout, (mask, size))
}

/// The epoll_wait family; `timeout` in ns (None: forever).
fn wait_events(
    p: &mut Process,
    epfd: Fd,
    events: UserPtr<u8>,
    max: i32,
    timeout: Option<u64>,
    mask: (UserPtr<u64>, u64),
) -> Result<u64, Errno> {
    const MAX_EVENTS: i32 = i32::MAX / 12;
    if max <= 0 || max > MAX_EVENTS {
        return Err(Errno::Inval);
    }
    let max = max as usize;
    let instance = epoll_of(p, epfd)?;
    p.mem.check_writable_bytes(events, max.min(1024) * 12)?;
    temporary_mask(p, mask.0, mask.1)?;
    let Some(epoll) = instance.epoll() else {
        return Err(Errno::Inval);
    };
    let ready = epoll.collect(max.min(1024));
    if ready.is_empty() {
        return wait_or_time_out(timeout);
    }
    let mut out = Vec::with_capacity(ready.len() * 12);
    for e in &ready {
        out.extend_from_slice(&e.events.to_le_bytes());
        out.extend_from_slice(&e.data.to_le_bytes());
    }
    p.mem.write_bytes(events, &out)?;
    Ok(ready.len() as u64)
}

/// An epoll_wait timeout in ms (negative: forever) as ns.
fn ms_timeout(ms: i32) -> Option<u64> {
    (ms >= 0).then(|| ms as u64 * 1_000_000)
}
