//! Advisory file locks between processes: flock(2) locks, held by an open
//! file description (shared by the descriptors dup'ed or inherited from
//! it), and POSIX record locks (fcntl F_SETLK, F_SETLKW, F_GETLK), held by
//! a process over byte ranges. A file is named by its device and inode.
//! A lock that cannot be taken now makes the caller wait like any I/O wait
//! (`Errno::Restart`); a lock going away tells the waiters (`notify_io`).
//! A flock lock ends with the last descriptor of its open file; a record
//! lock with any close of the file by its process, or the process's end.

use alloc::collections::BTreeMap;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;

use kiln_kernel::errno::Errno;

use super::FileOps;

/// A file, as locks name it: (device, inode).
pub type FileId = (u64, u64);

/// The file `file` is open on.
pub fn file_id(file: &Arc<dyn FileOps>) -> FileId {
    let st = file.stat();
    (st.dev, st.ino)
}

/// One flock lock: its open file description and its kind.
struct Flock {
    owner: Weak<dyn FileOps>,
    exclusive: bool,
}

impl Flock {
    fn held_by(&self, file: &Arc<dyn FileOps>) -> bool {
        core::ptr::addr_eq(self.owner.as_ptr(), Arc::as_ptr(file))
    }
}

/// One record lock: its process and the bytes `[start, end)` it covers
/// (`end` u64::MAX: to the end of the file, however long it grows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// The process holding it.
    pub pid: u32,
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// A write (exclusive) lock, else a read (shared) one.
    pub write: bool,
}

impl Record {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start < end && start < self.end
    }
}

/// Every lock of the VM.
struct Locks {
    flocks: BTreeMap<FileId, Vec<Flock>>,
    records: BTreeMap<FileId, Vec<Record>>,
}

static LOCKS: spin::Mutex<Locks> = spin::Mutex::new(Locks {
    flocks: BTreeMap::new(),
    records: BTreeMap::new(),
});

/// flock(2) operations.
pub const LOCK_SH: u32 = 1;
/// Exclusive.
pub const LOCK_EX: u32 = 2;
/// Do not wait.
pub const LOCK_NB: u32 = 4;
/// Unlock.
pub const LOCK_UN: u32 = 8;

/// flock(2) on `file`.
///
/// # Errors
/// EINVAL for a bad operation, EWOULDBLOCK (EAGAIN) when another open file
/// holds a conflicting lock and LOCK_NB was given, `Restart` (wait) without
/// it.
pub fn flock(file: &Arc<dyn FileOps>, operation: u32) -> Result<(), Errno> {
    let id = file_id(file);
    let mut locks = LOCKS.lock();
    let held = locks.flocks.entry(id).or_default();
    // Locks of open files that are gone went with their last descriptor.
    held.retain(|l| l.owner.strong_count() > 0);
    let released = match operation & !LOCK_NB {
        LOCK_UN => {
            held.retain(|l| !l.held_by(file));
            true
        }
        op @ (LOCK_SH | LOCK_EX) => {
            let exclusive = op == LOCK_EX;
            let conflict = held
                .iter()
                .any(|l| !l.held_by(file) && (l.exclusive || exclusive));
            if conflict {
                return Err(if operation & LOCK_NB != 0 {
                    Errno::Again
                } else {
                    Errno::Restart
                });
            }
            // A conversion replaces the lock (and may let others in).
            let converted = held.iter().any(|l| l.held_by(file) && l.exclusive);
            held.retain(|l| !l.held_by(file));
            held.push(Flock {
                owner: Arc::downgrade(file),
                exclusive,
            });
            converted && !exclusive
        }
        _ => return Err(Errno::Inval),
    };
    if held.is_empty() {
        locks.flocks.remove(&id);
    }
    drop(locks);
    if released {
        crate::sched::notify_io();
    }
    Ok(())
}

/// The first record lock of another process than `pid` on `id` that
/// conflicts with a lock of `[start, end)` (`write`: exclusive).
pub fn conflicting(pid: u32, id: FileId, start: u64, end: u64, write: bool) -> Option<Record> {
    LOCKS.lock().records.get(&id).and_then(|held| {
        held.iter()
            .find(|r| r.pid != pid && r.overlaps(start, end) && (r.write || write))
            .copied()
    })
}

/// Sets (or with `kind` None, removes) process `pid`'s record lock over
/// `[start, end)` of `id`, replacing its own locks there.
///
/// # Errors
/// `Err(conflict)` when another process holds a conflicting lock.
pub fn set_record(
    pid: u32,
    id: FileId,
    start: u64,
    end: u64,
    kind: Option<bool>,
) -> Result<(), Record> {
    if let Some(write) = kind {
        if let Some(c) = conflicting(pid, id, start, end, write) {
            return Err(c);
        }
    }
    let mut locks = LOCKS.lock();
    let held = locks.records.entry(id).or_default();
    // Cut the range out of this process's locks (keeping what lies on
    // either side), then add the new one.
    let mut kept = Vec::new();
    let mut removed = false;
    for r in held.drain(..) {
        if r.pid != pid || !r.overlaps(start, end) {
            kept.push(r);
            continue;
        }
        removed = true;
        if r.start < start {
            kept.push(Record { end: start, ..r });
        }
        if r.end > end {
            kept.push(Record { start: end, ..r });
        }
    }
    if let Some(write) = kind {
        kept.push(Record {
            pid,
            start,
            end,
            write,
        });
    }
    *held = kept;
    if held.is_empty() {
        locks.records.remove(&id);
    }
    drop(locks);
    if removed {
        crate::sched::notify_io();
    }
    Ok(())
}

/// Drops process `pid`'s record locks on `id` (it closed a descriptor of
/// the file) or, with `id` None, on every file (its end).
pub fn release_records(pid: u32, id: Option<FileId>) {
    let mut locks = LOCKS.lock();
    let mut removed = false;
    locks.records.retain(|file, held| {
        if id.is_none_or(|i| i == *file) {
            let before = held.len();
            held.retain(|r| r.pid != pid);
            removed |= held.len() != before;
        }
        !held.is_empty()
    });
    drop(locks);
    if removed {
        crate::sched::notify_io();
    }
}

/// Whether any flock lock may be waiting for a descriptor to close.
pub fn any_flocks() -> bool {
    !LOCKS.lock().flocks.is_empty()
}
