//! A snapshot's memory file: guest memory as a sparse file (pages that are
//! all zero are holes, so only what the guest touched takes disk space),
//! with a digest over its non-zero pages, and the private mapping a
//! restored VM runs on (pages are read from the file when the guest first
//! touches them, and shared through the page cache by every VM restored
//! from the same file until one writes to them).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::SnapshotError;

/// The unit of saving and hashing.
const PAGE: usize = 4096;

/// What was written.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct MemoryFile {
    /// The file's (and guest memory's) size in bytes.
    pub size: u64,
    /// Bytes of non-zero pages it holds.
    pub data_bytes: u64,
    /// sha256 over each non-zero page's offset (8 bytes, little-endian)
    /// and contents, in address order, as hex.
    pub sha256: String,
}

pub(crate) fn is_zero(page: &[u8]) -> bool {
    // SAFETY: any bytes are valid u64s; align_to only splits at alignment.
    let (head, words, tail) = unsafe { page.align_to::<u64>() };
    head.iter().all(|&b| b == 0) && words.iter().all(|&w| w == 0) && tail.iter().all(|&b| b == 0)
}

/// Pages of `[host, host + len)` that may hold data: with `resident_only`
/// those the host has in memory (an anonymous mapping's untouched pages
/// are zero), else all.
pub(crate) fn candidate_pages(host: *const u8, len: usize, resident_only: bool) -> Vec<bool> {
    // (The pointer is only handed to mincore, which reads no memory.)
    let pages = len.div_ceil(PAGE);
    if !resident_only {
        return vec![true; pages];
    }
    let mut vec = vec![0u8; pages];
    // SAFETY: `host..host+len` is a live, page-aligned mapping owned by the
    // caller, and `vec` has one byte per page of it.
    let rc = unsafe { libc::mincore(host as *mut libc::c_void, len, vec.as_mut_ptr()) };
    if rc != 0 {
        return vec![true; pages];
    }
    vec.iter().map(|b| b & 1 != 0).collect()
}

/// Writes guest memory (`mem`, the whole host mapping) to `path` as a
/// sparse file (into the page cache; the caller flushes it). `resident_only`: the mapping is anonymous memory, whose
/// pages the host never had are zero and need not be read.
///
/// # Errors
/// When the file cannot be written.
pub fn save(mem: &[u8], resident_only: bool, path: &Path) -> Result<MemoryFile, SnapshotError> {
    let len = mem.len();
    let fail = |cause| SnapshotError::Io {
        what: format!("writing {}", path.display()),
        cause,
    };
    let file = File::create(path).map_err(fail)?;
    file.set_len(len as u64).map_err(fail)?;
    let candidates = candidate_pages(mem.as_ptr(), len, resident_only);
    let mut hash = Sha256::new();
    let mut data_bytes = 0u64;
    for (i, candidate) in candidates.iter().enumerate() {
        if !candidate {
            continue;
        }
        let offset = i * PAGE;
        let n = PAGE.min(len - offset);
        let page = &mem[offset..offset + n];
        if is_zero(page) {
            continue;
        }
        hash.update((offset as u64).to_le_bytes());
        hash.update(page);
        file.write_all_at(page, offset as u64).map_err(fail)?;
        data_bytes += n as u64;
    }
    // Not flushed to disk here: the vCPUs wait for this call, and the
    // flush (`Coordinator`'s finisher) need not hold them.
    Ok(MemoryFile {
        size: len as u64,
        data_bytes,
        sha256: hex(&hash.finalize()),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sha256 of `data`, as hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Checks `path` against `expected`: its size and the digest of its
/// non-zero pages (read through the file's data extents).
///
/// # Errors
/// [`SnapshotError::Corrupt`] when they differ, or the file cannot be read.
pub fn verify(path: &Path, expected: &MemoryFile) -> Result<(), SnapshotError> {
    let fail = |cause| SnapshotError::Io {
        what: format!("reading {}", path.display()),
        cause,
    };
    let mut file = File::open(path).map_err(fail)?;
    let size = file.metadata().map_err(fail)?.len();
    if size != expected.size {
        return Err(SnapshotError::Corrupt(format!(
            "{} holds {size} bytes, the snapshot's memory is {}",
            path.display(),
            expected.size
        )));
    }
    let mut hash = Sha256::new();
    let mut page = vec![0u8; PAGE];
    let mut at = 0u64;
    while at < size {
        let data = match seek_data(&file, at) {
            Some(d) => d,
            None => break,
        };
        let hole = seek_hole(&file, data).unwrap_or(size);
        let mut offset = data / PAGE as u64 * PAGE as u64;
        file.seek(SeekFrom::Start(offset)).map_err(fail)?;
        while offset < hole {
            let n = PAGE.min((size - offset) as usize);
            file.read_exact(&mut page[..n]).map_err(fail)?;
            if !is_zero(&page[..n]) {
                hash.update(offset.to_le_bytes());
                hash.update(&page[..n]);
            }
            offset += n as u64;
        }
        at = offset;
    }
    let digest = hex(&hash.finalize());
    if digest != expected.sha256 {
        return Err(SnapshotError::Corrupt(format!(
            "{} does not match the snapshot's digest (sha256 {digest}, expected {})",
            path.display(),
            expected.sha256
        )));
    }
    Ok(())
}

/// The memory file's identity and change time, as recorded after a
/// successful [`verify`]: any write to the file changes its ctime (which a
/// user cannot set back), so an unchanged stamp means unchanged contents.
#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct VerifiedStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    sha256: String,
}

impl VerifiedStamp {
    fn of(path: &Path, sha256: &str) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(Self {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
            sha256: sha256.to_owned(),
        })
    }
}

/// [`verify`], skipped when `stamp` (a file beside the memory file) says
/// this very file was verified against `expected` and has not changed
/// since; after a verification the stamp is written (when the directory
/// is writable).
///
/// # Errors
/// As [`verify`].
pub fn verify_once(path: &Path, expected: &MemoryFile, stamp: &Path) -> Result<(), SnapshotError> {
    let now = VerifiedStamp::of(path, &expected.sha256);
    let recorded = std::fs::read(stamp)
        .ok()
        .and_then(|b| serde_json::from_slice::<VerifiedStamp>(&b).ok());
    if now.is_some() && now == recorded {
        return Ok(());
    }
    verify(path, expected)?;
    if let Some(now) = now {
        if let Ok(json) = serde_json::to_vec(&now) {
            let _ = crate::write_atomically(stamp, &json);
        }
    }
    Ok(())
}

fn seek_data(file: &File, from: u64) -> Option<u64> {
    lseek(file, from, libc::SEEK_DATA)
}

fn seek_hole(file: &File, from: u64) -> Option<u64> {
    lseek(file, from, libc::SEEK_HOLE)
}

fn lseek(file: &File, from: u64, whence: libc::c_int) -> Option<u64> {
    use std::os::fd::AsRawFd;
    // SAFETY: lseek on a descriptor this File owns; no memory is involved.
    let at = unsafe { libc::lseek(file.as_raw_fd(), from as libc::off_t, whence) };
    (at >= 0).then_some(at as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_only_non_zero_pages_and_verifies_them() {
        let dir = std::env::temp_dir().join(format!("kiln-memfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("memory");
        let mut mem = vec![0u8; 64 * PAGE];
        mem[3 * PAGE + 5] = 7;
        mem[40 * PAGE] = 1;
        let saved = save(&mem, false, &path).unwrap();
        assert_eq!(saved.size, mem.len() as u64);
        assert_eq!(saved.data_bytes, 2 * PAGE as u64);
        verify(&path, &saved).unwrap();
        // A flipped byte in a data page, and data where a hole was, are
        // both caught.
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[9], (3 * PAGE + 6) as u64).unwrap();
        assert!(matches!(
            verify(&path, &saved),
            Err(SnapshotError::Corrupt(_))
        ));
        file.write_all_at(&[0], (3 * PAGE + 6) as u64).unwrap();
        verify(&path, &saved).unwrap();
        file.write_all_at(&[1], (20 * PAGE) as u64).unwrap();
        assert!(matches!(
            verify(&path, &saved),
            Err(SnapshotError::Corrupt(_))
        ));
        file.set_len(10 * PAGE as u64).unwrap();
        assert!(matches!(
            verify(&path, &saved),
            Err(SnapshotError::Corrupt(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
