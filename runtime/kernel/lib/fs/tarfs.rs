//! A read-only file system indexed in place over a tar archive (POSIX
//! ustar with pax extended headers, and GNU long names): the rootfs of a
//! kiln image. Nothing is copied or unpacked: each file is a byte range of
//! the archive, which the kernel maps straight into the program's memory
//! when its data is page aligned (the image builder aligns it).
//!
//! The archive is untrusted input: every header is checksummed and every
//! size and offset checked against the archive before it is used.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use crate::errno::Errno;

const BLOCK: usize = 512;
/// Symbolic links followed in one lookup before giving up (Linux: 40).
pub const MAX_SYMLINKS: usize = 40;
/// The longest path an entry may have (Linux's PATH_MAX, with its NUL).
pub const MAX_PATH: usize = 4096;
/// The index may hold this many bytes of paths per archive byte, plus
/// [`INDEX_SLACK`]: a real archive needs well under one (a 512-byte
/// header per entry, parents a few times over when not listed), while
/// one deep path of an archive that lists no parents implies every
/// prefix of it as a directory.
const INDEX_BYTES_PER_ARCHIVE_BYTE: usize = 8;
/// Path bytes the index may always hold.
const INDEX_SLACK: usize = 1 << 20;

/// What a path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link to this target.
    Symlink(String),
}

/// One file, directory or link of the archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// What it is.
    pub kind: Kind,
    /// Permission bits (and set-id/sticky), without the type.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time (seconds since the epoch).
    pub mtime: u64,
    /// Size in bytes (files; 0 for the rest).
    pub size: u64,
    /// Offset of the file's data in the archive.
    pub data: u64,
    /// Index number, unique per node (for st_ino).
    pub ino: u64,
    /// The CPUID sites the image builder found in this ELF file (its
    /// `user.kiln.cpuid` pax record), when it listed them.
    pub cpuid_sites: Option<CpuidSites>,
}

/// An ELF file's CPUID sites: (link-time address of the CPUID, what moves).
pub type CpuidSites = alloc::sync::Arc<[(u64, crate::syscall::site::Site)]>;

/// Why an archive cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TarError {
    /// A header's checksum is wrong (offset of the header).
    Checksum(u64),
    /// A header field does not parse (offset of the header).
    BadField(u64),
    /// An entry's data runs past the end of the archive.
    Truncated(u64),
    /// A path is empty, not UTF-8, or contains a NUL.
    BadPath(u64),
    /// A path is longer than [`MAX_PATH`].
    PathTooLong(u64),
    /// The entries' paths (with the directories they imply) would take
    /// far more memory than the archive's size justifies.
    IndexTooLarge(u64),
    /// An entry that has no data (a directory, link or device) gives a
    /// data size anyway, which would skip the headers that follow.
    DataOnNonFile(u64),
}

impl core::fmt::Display for TarError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Checksum(at) => write!(f, "tar header at offset {at} has a bad checksum"),
            Self::BadField(at) => write!(f, "tar header at offset {at} has an unreadable field"),
            Self::Truncated(at) => write!(
                f,
                "tar entry at offset {at} runs past the end of the archive"
            ),
            Self::BadPath(at) => write!(f, "tar entry at offset {at} has an unusable path"),
            Self::PathTooLong(at) => write!(
                f,
                "tar entry at offset {at} has a path longer than {MAX_PATH} bytes"
            ),
            Self::IndexTooLarge(at) => write!(
                f,
                "tar entry at offset {at}: the paths (and the directories they imply) \
                 would take too much memory for an archive of this size"
            ),
            Self::DataOnNonFile(at) => write!(
                f,
                "tar entry at offset {at} is not a regular file but claims data"
            ),
        }
    }
}

/// The index: absolute, normalised paths to nodes.
#[derive(Clone, Debug, Default)]
pub struct TarFs {
    nodes: BTreeMap<String, Node>,
    /// Bytes of paths in `nodes` (bounded while parsing).
    path_bytes: usize,
}

/// Where the header after an entry whose data starts at `data_start` and
/// takes `size` bytes begins; an error when the data (rounded up to whole
/// blocks) would end past the archive or overflow — never a position at
/// or before `data_start`.
fn next_header(
    data_start: usize,
    size: u64,
    archive_len: usize,
    at: u64,
) -> Result<usize, TarError> {
    usize::try_from(size)
        .ok()
        .and_then(|s| s.checked_next_multiple_of(BLOCK))
        .and_then(|s| data_start.checked_add(s))
        .filter(|&next| next <= archive_len.next_multiple_of(BLOCK))
        .ok_or(TarError::Truncated(at))
}

fn octal(field: &[u8], at: u64) -> Result<u64, TarError> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // GNU base-256: big-endian, top bit is the marker.
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v.checked_mul(256).ok_or(TarError::BadField(at))? | u64::from(b);
        }
        return Ok(v);
    }
    let mut v: u64 = 0;
    for &b in field.iter().skip_while(|&&b| b == b' ') {
        match b {
            b'0'..=b'7' => {
                v = v.checked_mul(8).ok_or(TarError::BadField(at))? + u64::from(b - b'0')
            }
            0 | b' ' => break,
            _ => return Err(TarError::BadField(at)),
        }
    }
    Ok(v)
}

fn c_str(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

/// Makes `raw` an absolute path without `.`, empty components or a
/// trailing slash (`..` is kept for resolution to clamp at the root).
pub fn normalise(raw: &str) -> String {
    let mut out = String::from("/");
    for part in raw.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if out.len() > 1 {
            out.push('/');
        }
        out.push_str(part);
    }
    out
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

fn pax_records(data: &[u8], at: u64) -> Result<Vec<(String, String)>, TarError> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() && rest[0] != 0 {
        let space = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or(TarError::BadField(at))?;
        let len: usize = core::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&l| l > space + 1 && l <= rest.len())
            .ok_or(TarError::BadField(at))?;
        let record = &rest[space + 1..len - 1];
        if let Some(eq) = record.iter().position(|&b| b == b'=') {
            let key = core::str::from_utf8(&record[..eq]).map_err(|_| TarError::BadField(at))?;
            let value =
                core::str::from_utf8(&record[eq + 1..]).map_err(|_| TarError::BadField(at))?;
            out.push((key.into(), value.into()));
        }
        rest = &rest[len..];
    }
    Ok(out)
}

impl TarFs {
    /// Indexes `archive`.
    ///
    /// # Errors
    /// [`TarError`] naming the offset of the first bad header.
    pub fn parse(archive: &[u8]) -> Result<Self, TarError> {
        let mut fs = TarFs::default();
        fs.insert_dir("/", 0o755);
        let mut at = 0usize;
        let mut long_name: Option<String> = None;
        let mut long_link: Option<String> = None;
        let mut pax: Vec<(String, String)> = Vec::new();
        let budget = archive
            .len()
            .saturating_mul(INDEX_BYTES_PER_ARCHIVE_BYTE)
            .saturating_add(INDEX_SLACK);
        while at + BLOCK <= archive.len() {
            let h = &archive[at..at + BLOCK];
            if h.iter().all(|&b| b == 0) {
                break;
            }
            let here = at as u64;
            let stored = octal(&h[148..156], here)?;
            let sum: u64 = h
                .iter()
                .enumerate()
                .map(|(i, &b)| {
                    if (148..156).contains(&i) {
                        u64::from(b' ')
                    } else {
                        u64::from(b)
                    }
                })
                .sum();
            if sum != stored {
                return Err(TarError::Checksum(here));
            }
            let mut size = octal(&h[124..136], here)?;
            let typeflag = h[156];
            let data_start = at + BLOCK;
            let header_size = size;
            if typeflag == b'x' || typeflag == b'L' || typeflag == b'K' || typeflag == b'g' {
                let end = data_start
                    .checked_add(size as usize)
                    .filter(|&e| e <= archive.len());
                let end = end.ok_or(TarError::Truncated(here))?;
                let data = &archive[data_start..end];
                match typeflag {
                    b'x' => pax = pax_records(data, here)?,
                    b'L' => {
                        long_name = Some(
                            String::from_utf8(c_str(data).to_vec())
                                .map_err(|_| TarError::BadPath(here))?,
                        )
                    }
                    b'K' => {
                        long_link = Some(
                            String::from_utf8(c_str(data).to_vec())
                                .map_err(|_| TarError::BadPath(here))?,
                        )
                    }
                    _ => {}
                }
                at = next_header(data_start, size, archive.len(), here)?;
                continue;
            }
            let mut name = match long_name.take() {
                Some(n) => n,
                None => {
                    let mut n = Vec::new();
                    let prefix = c_str(&h[345..500]);
                    if &h[257..262] == b"ustar" && !prefix.is_empty() {
                        n.extend_from_slice(prefix);
                        n.push(b'/');
                    }
                    n.extend_from_slice(c_str(&h[0..100]));
                    String::from_utf8(n).map_err(|_| TarError::BadPath(here))?
                }
            };
            let mut link = match long_link.take() {
                Some(l) => l,
                None => String::from_utf8(c_str(&h[157..257]).to_vec())
                    .map_err(|_| TarError::BadPath(here))?,
            };
            let mut mtime = octal(&h[136..148], here)?;
            let mut cpuid_sites = None;
            for (k, v) in pax.drain(..) {
                match k.as_str() {
                    crate::syscall::site::CPUID_RECORD => {
                        cpuid_sites = crate::syscall::site::decode_sites(&v).map(CpuidSites::from)
                    }
                    "path" => name = v,
                    "linkpath" => link = v,
                    "size" => size = v.parse().map_err(|_| TarError::BadField(here))?,
                    "mtime" => {
                        mtime = v
                            .split('.')
                            .next()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(mtime)
                    }
                    _ => {}
                }
            }
            if name.is_empty() || name.contains('\0') {
                return Err(TarError::BadPath(here));
            }
            if name.len() >= MAX_PATH || link.len() >= MAX_PATH {
                return Err(TarError::PathTooLong(here));
            }
            let path = normalise(&name);
            let mode = (octal(&h[100..108], here)? & 0o7777) as u32;
            let uid = octal(&h[108..116], here)? as u32;
            let gid = octal(&h[116..124], here)? as u32;
            let kind = match typeflag {
                b'0' | 0 | b'7' => Some(Kind::File),
                b'5' => Some(Kind::Dir),
                b'2' => Some(Kind::Symlink(link.clone())),
                b'1' => None, // hard link: resolved below
                _ => None,
            };
            let regular = matches!(typeflag, b'0' | 0 | b'7');
            if !regular && header_size != 0 {
                return Err(TarError::DataOnNonFile(here));
            }
            let data_len = if regular { size } else { 0 };
            let end = (data_start as u64)
                .checked_add(data_len)
                .filter(|&e| e <= archive.len() as u64);
            end.ok_or(TarError::Truncated(here))?;
            match kind {
                Some(kind) => {
                    let ino = fs.nodes.len() as u64 + 1;
                    fs.ensure_parents(&path, budget, here)?;
                    fs.path_bytes += path.len();
                    fs.nodes.insert(
                        path,
                        Node {
                            kind,
                            mode,
                            uid,
                            gid,
                            mtime,
                            size: data_len,
                            data: data_start as u64,
                            ino,
                            cpuid_sites,
                        },
                    );
                }
                None if typeflag == b'1' => {
                    // A hard link shares its target's data (and inode).
                    if let Some(target) = fs.nodes.get(&normalise(&link)).cloned() {
                        fs.ensure_parents(&path, budget, here)?;
                        fs.path_bytes += path.len();
                        fs.nodes.insert(path, target);
                    }
                }
                None => {} // devices, FIFOs: not part of a kiln rootfs
            }
            // A pax size overrides the header's for a regular file; other
            // entries have no data (checked above).
            let skip = if regular { size } else { 0 };
            at = next_header(data_start, skip, archive.len(), here)?;
        }
        Ok(fs)
    }

    fn insert_dir(&mut self, path: &str, mode: u32) {
        let ino = self.nodes.len() as u64 + 1;
        if !self.nodes.contains_key(path) {
            self.path_bytes += path.len();
        }
        self.nodes.entry(path.into()).or_insert(Node {
            kind: Kind::Dir,
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
            size: 0,
            data: 0,
            ino,
            cpuid_sites: None,
        });
    }

    /// Adds the missing directories above `path` (an entry at archive
    /// offset `at`), keeping the index's paths within `budget` bytes.
    fn ensure_parents(&mut self, path: &str, budget: usize, at: u64) -> Result<(), TarError> {
        let mut p = parent_of(path);
        while p != "/" && !self.nodes.contains_key(p) {
            if self.path_bytes.saturating_add(p.len()) > budget {
                return Err(TarError::IndexTooLarge(at));
            }
            self.insert_dir(p, 0o755);
            p = parent_of(p);
        }
        if self.path_bytes.saturating_add(path.len()) > budget {
            return Err(TarError::IndexTooLarge(at));
        }
        Ok(())
    }

    /// The regular file whose data holds archive offset `offset`.
    pub fn file_containing(&self, offset: u64) -> Option<&Node> {
        self.nodes
            .values()
            .find(|n| matches!(n.kind, Kind::File) && offset >= n.data && offset - n.data < n.size)
    }

    /// The node at exactly `path` (normalised), without following links.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// Resolves `path` (absolute, or relative to `cwd`) inside the file
    /// system, following symbolic links in every component and, when
    /// `follow` is set, in the last one. Returns the resolved path and node.
    ///
    /// # Errors
    /// ENOENT, ENOTDIR, ELOOP (more than [`MAX_SYMLINKS`] links) or
    /// ENAMETOOLONG, as Linux would return them.
    pub fn resolve(&self, cwd: &str, path: &str, follow: bool) -> Result<(String, &Node), Errno> {
        if path.is_empty() {
            return Err(Errno::Noent);
        }
        if path.len() > 4096 {
            return Err(Errno::Nametoolong);
        }
        let mut pending: Vec<String> = Vec::new();
        let start = if path.starts_with('/') {
            String::from("/")
        } else {
            normalise(cwd)
        };
        push_components(&mut pending, path);
        let mut current = start;
        let mut links = 0;
        while let Some(part) = pending.pop() {
            if part == ".." {
                current = String::from(parent_of(&current));
                continue;
            }
            let node = self.nodes.get(&current).ok_or(Errno::Noent)?;
            if !matches!(node.kind, Kind::Dir) {
                return Err(Errno::Notdir);
            }
            let next = if current == "/" {
                alloc::format!("/{part}")
            } else {
                alloc::format!("{current}/{part}")
            };
            let node = self.nodes.get(&next).ok_or(Errno::Noent)?;
            match &node.kind {
                Kind::Symlink(target) if follow || !pending.is_empty() => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(Errno::Loop);
                    }
                    if target.starts_with('/') {
                        current = String::from("/");
                    }
                    push_components(&mut pending, target);
                }
                _ => current = next,
            }
        }
        let node = self.nodes.get(&current).ok_or(Errno::Noent)?;
        Ok((current, node))
    }

    /// The entries directly inside directory `dir` (a resolved path), in
    /// name order.
    pub fn children<'a>(&'a self, dir: &str) -> Vec<(&'a str, &'a Node)> {
        let prefix = if dir == "/" {
            String::from("/")
        } else {
            alloc::format!("{dir}/")
        };
        self.nodes
            .range::<str, _>((
                core::ops::Bound::Included(prefix.as_str()),
                core::ops::Bound::Unbounded,
            ))
            .take_while(|(p, _)| p.starts_with(prefix.as_str()))
            .filter_map(|(p, n)| {
                let rest = &p[prefix.len()..];
                (!rest.is_empty() && !rest.contains('/')).then_some((rest, n))
            })
            .collect()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether only the root exists.
    pub fn is_empty(&self) -> bool {
        self.nodes.len() <= 1
    }
}

/// Pushes the components of `path` so that the first is popped first.
fn push_components(stack: &mut Vec<String>, path: &str) {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    for p in parts.into_iter().rev() {
        stack.push(p.into());
    }
}

/// Whether `archive` looks like a tar archive (ustar magic in the first header).
pub fn is_tar(archive: &[u8]) -> bool {
    archive.len() >= BLOCK && &archive[257..262] == b"ustar"
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use std::io::Write;

    fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data).unwrap();
    }

    fn symlink(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        h.set_entry_type(tar::EntryType::Symlink);
        b.append_link(&mut h, path, target).unwrap();
    }

    #[test]
    fn indexes_files_in_place() {
        let a = archive(|b| {
            file(b, "app/hello", b"\x7fELF....");
            file(b, "app-x", b"sorts between /app and /app/");
            file(b, "etc/passwd", b"root:x:0:0::/:/bin/sh\n");
        });
        let fs = TarFs::parse(&a).unwrap();
        let (path, node) = fs.resolve("/", "/app/hello", true).unwrap();
        assert_eq!(path, "/app/hello");
        assert_eq!(
            &a[node.data as usize..][..node.size as usize],
            b"\x7fELF...."
        );
        assert_eq!(node.mode, 0o755);
        assert!(
            matches!(fs.get("/app").unwrap().kind, Kind::Dir),
            "parents are implied"
        );
        let names: Vec<&str> = fs.children("/").into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["app", "app-x", "etc"]);
        let in_app: Vec<&str> = fs.children("/app").into_iter().map(|(n, _)| n).collect();
        assert_eq!(in_app, ["hello"]);
    }

    #[test]
    fn follows_symlinks_and_clamps_dotdot_at_the_root() {
        let a = archive(|b| {
            file(b, "lib/x86_64-linux-gnu/libc.so.6", b"libc");
            symlink(b, "lib64/ld.so", "/lib/x86_64-linux-gnu/libc.so.6");
            symlink(b, "usr/lib", "../lib");
            symlink(b, "escape", "../../../../lib/x86_64-linux-gnu/libc.so.6");
        });
        let fs = TarFs::parse(&a).unwrap();
        assert_eq!(
            fs.resolve("/", "/lib64/ld.so", true).unwrap().0,
            "/lib/x86_64-linux-gnu/libc.so.6"
        );
        assert_eq!(
            fs.resolve("/", "/usr/lib/x86_64-linux-gnu/libc.so.6", true)
                .unwrap()
                .0,
            "/lib/x86_64-linux-gnu/libc.so.6"
        );
        assert_eq!(
            fs.resolve("/", "escape", true).unwrap().0,
            "/lib/x86_64-linux-gnu/libc.so.6"
        );
        let (p, n) = fs.resolve("/", "/lib64/ld.so", false).unwrap();
        assert_eq!(p, "/lib64/ld.so");
        assert!(matches!(n.kind, Kind::Symlink(_)));
    }

    #[test]
    fn reports_linux_errors() {
        let a = archive(|b| {
            file(b, "f", b"x");
            symlink(b, "loop1", "loop2");
            symlink(b, "loop2", "loop1");
        });
        let fs = TarFs::parse(&a).unwrap();
        assert_eq!(fs.resolve("/", "/missing", true).unwrap_err(), Errno::Noent);
        assert_eq!(fs.resolve("/", "/f/x", true).unwrap_err(), Errno::Notdir);
        assert_eq!(fs.resolve("/", "/loop1", true).unwrap_err(), Errno::Loop);
    }

    #[test]
    fn long_names_and_pax_paths() {
        let long = "d/".repeat(80) + "file";
        let a = archive(|b| file(b, &long, b"deep"));
        let fs = TarFs::parse(&a).unwrap();
        let (_, node) = fs.resolve("/", &long, true).unwrap();
        assert_eq!(&a[node.data as usize..][..4], b"deep");

        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("path", "x/from-pax".as_bytes())])
            .unwrap();
        file(&mut b, "short", b"pax");
        let a = b.into_inner().unwrap();
        let fs = TarFs::parse(&a).unwrap();
        assert!(fs.get("/x/from-pax").is_some());
        assert!(fs.get("/short").is_none());
    }

    #[test]
    fn the_builders_cpuid_site_lists_are_kept_and_bad_ones_dropped() {
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([(
            crate::syscall::site::CPUID_RECORD,
            "401000:5:0 401100:2:3".as_bytes(),
        )])
        .unwrap();
        file(&mut b, "listed", b"elf");
        b.append_pax_extensions([(crate::syscall::site::CPUID_RECORD, "401000:1:0".as_bytes())])
            .unwrap();
        file(&mut b, "malformed", b"elf");
        file(&mut b, "unlisted", b"elf");
        let a = b.into_inner().unwrap();
        let fs = TarFs::parse(&a).unwrap();
        let sites = fs.get("/listed").unwrap().cpuid_sites.clone().unwrap();
        assert_eq!(
            sites
                .iter()
                .map(|(at, s)| (*at, s.len, s.after))
                .collect::<Vec<_>>(),
            [(0x401000, 5, 0), (0x401100, 2, 3)]
        );
        assert_eq!(fs.get("/malformed").unwrap().cpuid_sites, None);
        assert_eq!(fs.get("/unlisted").unwrap().cpuid_sites, None);
    }

    /// A directory header for `path` whose size field is `size` (raw, as
    /// a hostile archive may write it), checksummed.
    fn dir_with_size(path: &str, size: [u8; 12]) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).unwrap();
        h.set_mode(0o755);
        h.set_entry_type(tar::EntryType::Directory);
        h.as_old_mut().size = size;
        h.set_cksum();
        h
    }

    #[test]
    fn a_size_on_a_directory_is_an_error_not_a_loop_or_a_skip() {
        // Base-256 size of 2^64 - 512: the skip used to wrap back to the
        // same header, forever.
        let huge = [
            0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0x00,
        ];
        for size in [huge, *b"00000002000\0"] {
            let mut b = tar::Builder::new(Vec::new());
            b.append(&dir_with_size("d/", size), &[][..]).unwrap();
            file(&mut b, "d/after", b"kept");
            let a = b.into_inner().unwrap();
            assert_eq!(TarFs::parse(&a).unwrap_err(), TarError::DataOnNonFile(0));
        }
        // The same size on a regular file: past the end of the archive.
        let mut h = tar::Header::new_gnu();
        h.set_path("f").unwrap();
        h.set_entry_type(tar::EntryType::Regular);
        h.as_old_mut().size = huge;
        h.set_cksum();
        let mut a = h.as_bytes().to_vec();
        a.extend_from_slice(&[0u8; 1024]);
        assert_eq!(TarFs::parse(&a).unwrap_err(), TarError::Truncated(0));
    }

    #[test]
    fn deep_paths_are_bounded() {
        // One 34 KiB pax path made 255 MB of index keys.
        let deep = "a/".repeat(17 * 1024) + "f";
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("path", deep.as_bytes())])
            .unwrap();
        file(&mut b, "short", b"x");
        let a = b.into_inner().unwrap();
        assert!(matches!(
            TarFs::parse(&a).unwrap_err(),
            TarError::PathTooLong(_)
        ));
        // Paths under the limit whose implied parents would take far more
        // memory than the archive justifies.
        let mut b = tar::Builder::new(Vec::new());
        for i in 0..4 {
            let path = alloc::format!("x{i}/") + &"a/".repeat(2000) + "f";
            b.append_pax_extensions([("path", path.as_bytes())])
                .unwrap();
            file(&mut b, "short", b"x");
        }
        let a = b.into_inner().unwrap();
        assert!(a.len() < 64 * 1024);
        assert!(matches!(
            TarFs::parse(&a).unwrap_err(),
            TarError::IndexTooLarge(_)
        ));
        // A realistic deep tree is fine.
        let path = "d/".repeat(200) + "f";
        let a = archive(|b| file(b, &path, b"ok"));
        assert!(TarFs::parse(&a).unwrap().resolve("/", &path, true).is_ok());
    }

    #[test]
    fn rejects_damaged_archives() {
        let mut a = archive(|b| file(b, "f", &vec![7u8; 2000]));
        let truncated = &a[..1024];
        assert_eq!(TarFs::parse(truncated).unwrap_err(), TarError::Truncated(0));
        a[10] ^= 1;
        assert_eq!(TarFs::parse(&a).unwrap_err(), TarError::Checksum(0));
        let mut w: Vec<u8> = Vec::new();
        w.write_all(&[0u8; 1024]).unwrap();
        assert_eq!(
            TarFs::parse(&w).unwrap().len(),
            1,
            "an empty archive has only the root"
        );
    }
}
