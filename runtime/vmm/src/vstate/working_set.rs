//! The pages a VM resumed with shared snapshot memory writes: learnt on
//! one resume, made private ahead of the guest on the next ones.
//!
//! A snapshot's memory file is mapped private, so every page the guest
//! writes becomes its own copy anyway. On PVM's shadow paging each such
//! page costs the guest two exits: one when it is first read (KVM maps the
//! page-cache page read-only, and cannot map its neighbours with it, since
//! it only maps ahead pages the host has writable) and one more when it is
//! written (copy on write, with a TLB flush). A resumed program writes
//! much the same pages every time, so the first resume notes which pages
//! ended up private (from `/proc/self/pagemap`, at no cost while it runs)
//! in the snapshot's [`WRITE_SET_FILE`], and later resumes copy those
//! pages with `MADV_POPULATE_WRITE` on a helper thread while the vCPUs
//! already run. Pages only read stay shared with every other resumed VM.
//! (REAP, "Benchmarking, Analysis, and Optimization of Serverless
//! Function Snapshots", ASPLOS '21, prefetches a recorded working set the
//! same way.)
//!
//! The file only steers which pages are copied early: whatever it says,
//! the guest sees the snapshot's bytes. A damaged or foreign one is
//! ignored (and relearnt once removed).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The file in a snapshot directory holding the write set.
pub const WRITE_SET_FILE: &str = "memory.writes";

const PAGE: u64 = 4096;
/// Pages copied per `madvise` call: small enough that a VM ending early
/// stops the helper at once.
const CHUNK_PAGES: u64 = 64;

/// A run of pages: first page number and count.
type Run = (u64, u64);

/// What happens to the write set of a VM resumed with shared memory.
pub struct WorkingSet {
    inner: Inner,
}

enum Inner {
    /// A write set to copy once the vCPUs are about to run.
    Known { base: usize, runs: Vec<Run> },
    /// Copying the known write set; stopped and joined on drop. `done`
    /// is set when the thread ends.
    Prefetching {
        stop: Arc<AtomicBool>,
        done: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    },
    /// Learning it: the private pages of the mapping are noted on drop.
    Learning {
        host: usize,
        len: u64,
        file: PathBuf,
    },
}

impl WorkingSet {
    /// For a snapshot whose directory is `dir`, with guest memory mapped
    /// at `host` (`len` bytes, the memory file mapped private): the write
    /// set `dir` holds, to copy from [`Self::start`] on, or one to learn
    /// when there is none.
    ///
    /// The caller keeps the mapping alive until this is dropped.
    pub(crate) fn new(dir: &Path, host: *mut u8, len: u64) -> Self {
        let file = dir.join(WRITE_SET_FILE);
        let inner = match load(&file, len) {
            Some(runs) => Inner::Known {
                base: host as usize,
                runs,
            },
            None => Inner::Learning {
                host: host as usize,
                len,
                file,
            },
        };
        Self { inner }
    }

    /// Starts copying the write set on a helper thread. Called just
    /// before the vCPUs run, once the VM is built: the copying holds the
    /// address space's lock in turns, which would slow down every
    /// mapping made while the VM is built (vCPUs, threads).
    pub(crate) fn start(&mut self) {
        let Inner::Known { base, runs } = &mut self.inner else {
            return;
        };
        let (base, runs) = (*base, std::mem::take(runs));
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let (flag, finished) = (Arc::clone(&stop), Arc::clone(&done));
        let thread = std::thread::Builder::new()
            .name("kiln-prefetch".into())
            .spawn(move || {
                populate(base, &runs, &flag);
                finished.store(true, Ordering::SeqCst);
            })
            .ok();
        if thread.is_none() {
            done.store(true, Ordering::SeqCst);
        }
        self.inner = Inner::Prefetching { stop, done, thread };
    }

    /// Whether the write set is copied (or there is none to copy).
    pub(crate) fn copied(&self) -> Arc<AtomicBool> {
        match &self.inner {
            Inner::Prefetching { done, .. } => Arc::clone(done),
            _ => Arc::new(AtomicBool::new(true)),
        }
    }

    /// Waits until the write set is copied (tests: dropping stops it).
    #[cfg(test)]
    fn finish(mut self) {
        if let Inner::Prefetching { thread, .. } = &mut self.inner {
            if let Some(thread) = thread.take() {
                thread.join().unwrap();
            }
        }
    }
}

impl Drop for WorkingSet {
    fn drop(&mut self) {
        match &mut self.inner {
            Inner::Known { .. } => {}
            Inner::Prefetching { stop, thread, .. } => {
                stop.store(true, Ordering::Relaxed);
                if let Some(thread) = thread.take() {
                    let _ = thread.join();
                }
            }
            Inner::Learning { host, len, file } => {
                if let Some(runs) = private_runs(*host, *len).ok().filter(|r| !r.is_empty()) {
                    // A snapshot directory the user cannot write to simply
                    // keeps being learnt.
                    let _ = save(file, *len, &runs);
                }
            }
        }
    }
}

/// Copies `runs` of the mapping at `base` (page numbers) until done or
/// `stop` is set.
fn populate(base: usize, runs: &[Run], stop: &AtomicBool) {
    for &(first, count) in runs {
        let mut page = first;
        while page < first + count {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let n = CHUNK_PAGES.min(first + count - page);
            // SAFETY: `runs` lie inside the mapping (checked by `load`
            // against its length), which the WorkingSet's owner keeps
            // mapped until this thread is joined; MADV_POPULATE_WRITE
            // only faults the pages in (copying them, as a guest write
            // would), never changing what they hold.
            unsafe {
                libc::madvise(
                    (base + (page * PAGE) as usize) as *mut libc::c_void,
                    (n * PAGE) as usize,
                    libc::MADV_POPULATE_WRITE,
                );
            }
            page += n;
        }
    }
}

/// The runs of pages of `[host, host + len)` that are present and no
/// longer the file's (bit 63 present, bit 61 file page or shared, in
/// `/proc/self/pagemap`).
fn private_runs(host: usize, len: u64) -> std::io::Result<Vec<Run>> {
    let pages = len / PAGE;
    let pagemap = std::fs::File::open("/proc/self/pagemap")?;
    let mut entries = vec![0u8; (pages * 8) as usize];
    pagemap.read_exact_at(&mut entries, (host as u64 / PAGE) * 8)?;
    let private = entries.chunks_exact(8).map(|e| {
        let entry = u64::from_le_bytes(e.try_into().unwrap_or_default());
        entry & (1 << 63) != 0 && entry & (1 << 61) == 0
    });
    Ok(runs_of(private))
}

/// Runs of `true` in `flags`, by index.
fn runs_of(flags: impl Iterator<Item = bool>) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for (page, set) in flags.enumerate() {
        if !set {
            continue;
        }
        let page = page as u64;
        match runs.last_mut() {
            Some((first, count)) if *first + *count == page => *count += 1,
            _ => runs.push((page, 1)),
        }
    }
    runs
}

/// The file's text: `kiln-write-set 1 <memory bytes>`, then one
/// `<first page> <pages>` line per run.
fn save(file: &Path, len: u64, runs: &[Run]) -> std::io::Result<()> {
    use std::fmt::Write as _;
    let mut text = format!("kiln-write-set 1 {len}\n");
    for (first, count) in runs {
        let _ = writeln!(text, "{first} {count}");
    }
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, file).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// The runs `file` holds, when it is a write set for `len` bytes of
/// memory whose runs all lie inside it and ascend.
fn load(file: &Path, len: u64) -> Option<Vec<Run>> {
    let text = std::fs::read_to_string(file).ok()?;
    parse(&text, len)
}

fn parse(text: &str, len: u64) -> Option<Vec<Run>> {
    let mut lines = text.lines();
    if lines.next()? != format!("kiln-write-set 1 {len}") {
        return None;
    }
    let pages = len / PAGE;
    let mut runs = Vec::new();
    let mut end = 0;
    for line in lines {
        let (first, count) = line.split_once(' ')?;
        let (first, count): (u64, u64) = (first.parse().ok()?, count.parse().ok()?);
        if first < end || count == 0 || first.checked_add(count)? > pages {
            return None;
        }
        end = first + count;
        runs.push((first, count));
    }
    Some(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_join_neighbouring_pages() {
        let flags = [false, true, true, false, true, true, true, false, true];
        assert_eq!(runs_of(flags.into_iter()), vec![(1, 2), (4, 3), (8, 1)]);
    }

    #[test]
    fn a_write_set_reads_back_and_bad_ones_are_ignored() {
        let dir = std::env::temp_dir().join(format!("kiln-ws-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(WRITE_SET_FILE);
        save(&file, 16 * PAGE, &[(0, 2), (5, 11)]).unwrap();
        assert_eq!(load(&file, 16 * PAGE), Some(vec![(0, 2), (5, 11)]));
        // Another memory size, a run past the end, overlapping or empty
        // runs, garbage: all ignored.
        assert_eq!(load(&file, 8 * PAGE), None);
        let header = format!("kiln-write-set 1 {}\n", 16 * PAGE);
        for body in ["15 2\n", "0 4\n2 1\n", "3 0\n", "x y\n", "1\n"] {
            assert_eq!(parse(&format!("{header}{body}"), 16 * PAGE), None, "{body}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn written_pages_of_a_private_file_mapping_are_found_and_prefetched() {
        use std::os::fd::AsRawFd;
        let dir = std::env::temp_dir().join(format!("kiln-ws-map-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("memory");
        std::fs::write(&path, vec![7u8; 8 * PAGE as usize]).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let len = 8 * PAGE as usize;
        let map_private = || {
            // SAFETY: a fresh private mapping of the test's own file.
            let host = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE,
                    file.as_raw_fd(),
                    0,
                )
            };
            assert_ne!(host, libc::MAP_FAILED);
            host.cast::<u8>()
        };
        let host = map_private();
        // SAFETY: pages 0..8 of the mapping just made.
        unsafe {
            let _ = std::ptr::read_volatile(host);
            std::ptr::write_volatile(host.add(2 * PAGE as usize), 1);
            std::ptr::write_volatile(host.add(3 * PAGE as usize), 1);
            std::ptr::write_volatile(host.add(6 * PAGE as usize), 1);
        }
        drop(WorkingSet::new(&dir, host, len as u64));
        let runs = load(&dir.join(WRITE_SET_FILE), len as u64).unwrap();
        assert_eq!(runs, vec![(2, 2), (6, 1)]);
        // SAFETY: the mapping is the test's; nothing refers to it.
        unsafe { libc::munmap(host.cast(), len) };

        // A second mapping gets those pages made private up front, with
        // the file's bytes in them.
        let host = map_private();
        let mut set = WorkingSet::new(&dir, host, len as u64);
        set.start();
        set.finish();
        assert_eq!(private_runs(host as usize, len as u64).unwrap(), runs);
        // SAFETY: page 6 of the live mapping.
        assert_eq!(unsafe { *host.add(6 * PAGE as usize) }, 7);
        // SAFETY: as above.
        unsafe { libc::munmap(host.cast(), len) };
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
