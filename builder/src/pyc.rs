//! CPython byte-code caches that stay valid in the image.
//!
//! A timestamp-based `.pyc` (PEP 3147 layout, `dir/__pycache__/NAME.TAG.pyc`)
//! records the modification time and size of the source it was compiled
//! from; CPython compiles the source again whenever either differs from what
//! `stat` says. The rootfs stamps every entry with one fixed time
//! (SOURCE_DATE_EPOCH, else 0), so every cache taken from the host would be
//! stale in the guest: a Python appliance would compile each module it
//! imports at every start (tens of milliseconds for the standard library),
//! and write the result into the VM's throw-away memory. The builder
//! therefore restamps a cache that was valid for its source on the host with
//! the image's time, so that it is valid for the same source in the image.
//! A cache that was stale on the host, a hash-based cache (PEP 552, valid
//! whatever the times) and anything that is not a cache are left alone.

use std::fs::Metadata;

/// Bytes of a `.pyc` header: magic, flags, source mtime, source size.
const HEADER: usize = 16;

/// The source file (guest path) of the cache at guest path `pyc`, when
/// `pyc` is named as CPython names caches: `dir/__pycache__/NAME.TAG.pyc`
/// (TAG such as `cpython-311` or `cpython-311.opt-1`) → `dir/NAME.py`.
pub fn source_of(pyc: &str) -> Option<String> {
    let (cache_dir, file) = pyc.rsplit_once('/')?;
    let dir = cache_dir.strip_suffix("/__pycache__")?;
    let stem = file.strip_suffix(".pyc")?;
    let (name, tag) = stem.split_once('.')?;
    // CPython accepts a tag and at most one optimisation level after it.
    if name.is_empty() || tag.is_empty() || tag.split('.').count() > 2 {
        return None;
    }
    Some(format!("{dir}/{name}.py"))
}

/// The modification time CPython compares: whole seconds, truncated to 32
/// bits.
fn stamp_field(seconds: i64) -> [u8; 4] {
    (seconds as u32).to_le_bytes()
}

/// Restamps the timestamp-based cache `pyc` for the image, where its source
/// (described on the host by `source`) carries the time `image_mtime`:
/// only when the header matches the source on the host (time and size), so
/// that a stale cache stays stale. Returns whether it changed the bytes.
pub fn restamp(pyc: &mut [u8], source: &Metadata, image_mtime: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    if pyc.len() < HEADER || pyc[2..4] != *b"\r\n" {
        return false;
    }
    let flags = u32::from_le_bytes([pyc[4], pyc[5], pyc[6], pyc[7]]);
    let recorded_size = u32::from_le_bytes([pyc[12], pyc[13], pyc[14], pyc[15]]);
    if flags != 0
        || pyc[8..12] != stamp_field(source.mtime())
        || recorded_size != source.size() as u32
    {
        return false;
    }
    pyc[8..12].copy_from_slice(&stamp_field(image_mtime as i64));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_source_of_pep_3147_caches_only() {
        let cases = [
            (
                "/usr/lib/python3.11/__pycache__/enum.cpython-311.pyc",
                Some("/usr/lib/python3.11/enum.py"),
            ),
            ("/a/__pycache__/m.cpython-311.opt-1.pyc", Some("/a/m.py")),
            ("/a/__pycache__/m.pyc", None),
            ("/a/m.cpython-311.pyc", None),
            ("/a/__pycache__/m.cpython-311.opt-1.x.pyc", None),
            ("/a/__pycache__/.cpython-311.pyc", None),
            ("/a/__pycache__/m.cpython-311.py", None),
        ];
        for (pyc, source) in cases {
            assert_eq!(source_of(pyc).as_deref(), source, "{pyc}");
        }
    }

    fn header(flags: u32, mtime: u32, size: u32) -> Vec<u8> {
        let mut h = vec![0xa7, 0x0d, b'\r', b'\n'];
        h.extend_from_slice(&flags.to_le_bytes());
        h.extend_from_slice(&mtime.to_le_bytes());
        h.extend_from_slice(&size.to_le_bytes());
        h.extend_from_slice(b"code");
        h
    }

    #[test]
    fn restamps_only_a_cache_valid_for_its_source() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("kiln-pyc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let source = dir.join("m.py");
        std::fs::write(&source, "x = 1\n").unwrap();
        let meta = std::fs::metadata(&source).unwrap();
        let (mtime, size) = (meta.mtime() as u32, meta.size() as u32);

        let mut valid = header(0, mtime, size);
        assert!(restamp(&mut valid, &meta, 1_700_000_000));
        assert_eq!(valid, header(0, 1_700_000_000, size));

        for (what, mut other) in [
            ("older source", header(0, mtime.wrapping_sub(1), size)),
            ("other size", header(0, mtime, size + 1)),
            ("hash-based", header(1, mtime, size)),
            ("truncated", header(0, mtime, size)[..12].to_vec()),
            ("not a cache", b"#!/bin/sh\necho hello there\n".to_vec()),
        ] {
            let before = other.clone();
            assert!(!restamp(&mut other, &meta, 0), "{what}");
            assert_eq!(other, before, "{what}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
