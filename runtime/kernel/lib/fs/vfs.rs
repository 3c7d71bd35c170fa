//! The program's file system: the image's read-only rootfs ([`TarFs`]) with
//! a writable in-memory layer on top, overlay style. Reads fall through to
//! the rootfs; the first write to a rootfs file copies it up; deleting a
//! rootfs entry leaves a whiteout that hides it (and everything below it).
//! A directory created where a rootfs one was deleted starts empty.
//!
//! Pure data and path logic, no kernel services: `cargo test` runs it on
//! the host. The kernel wraps it in its open-file objects.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use spin::Mutex;

use crate::errno::Errno;
use crate::fs::stat::{mode, Stat};
use crate::fs::tarfs::{self, normalise, TarFs, MAX_SYMLINKS};

/// Device number reported for every file of this file system.
pub const DEV: u64 = 0x801;
/// Inode numbers of created entries start here (rootfs ones are small).
const FIRST_UPPER_INO: u64 = 1 << 20;

/// The contents and metadata of a file created or copied up in memory.
#[derive(Debug, Default)]
pub struct FileData {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
    /// Inode number.
    pub ino: u64,
    /// Modification time (seconds).
    pub mtime: u64,
    /// Names it has in the writable layer (hard links).
    pub nlink: u64,
}

/// An in-memory file, shared by the directory entry and open descriptors.
pub type SharedFile = Arc<Mutex<FileData>>;

/// An entry of the writable layer.
#[derive(Clone, Debug)]
pub enum Upper {
    /// A regular file.
    File(SharedFile),
    /// A directory.
    Dir {
        /// Permission bits.
        mode: u32,
        /// Inode number.
        ino: u64,
        /// Modification time.
        mtime: u64,
    },
    /// A symbolic link.
    Symlink {
        /// Target.
        target: String,
        /// Inode number.
        ino: u64,
    },
    /// A local socket's name (bind of an AF_UNIX path); the kernel finds
    /// the socket by the inode number.
    Socket {
        /// Permission bits.
        mode: u32,
        /// Inode number.
        ino: u64,
        /// Modification time.
        mtime: u64,
    },
}

/// What a path names, in whichever layer.
#[derive(Clone, Debug)]
pub enum Node {
    /// A rootfs node (read-only until copied up).
    Lower(tarfs::Node),
    /// A node of the writable layer.
    Upper(Upper),
}

/// What kind of thing a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Socket.
    Socket,
}

impl Node {
    /// Its kind.
    pub fn kind(&self) -> NodeKind {
        match self {
            Node::Lower(n) => match n.kind {
                tarfs::Kind::File => NodeKind::File,
                tarfs::Kind::Dir => NodeKind::Dir,
                tarfs::Kind::Symlink(_) => NodeKind::Symlink,
            },
            Node::Upper(Upper::File(_)) => NodeKind::File,
            Node::Upper(Upper::Dir { .. }) => NodeKind::Dir,
            Node::Upper(Upper::Symlink { .. }) => NodeKind::Symlink,
            Node::Upper(Upper::Socket { .. }) => NodeKind::Socket,
        }
    }

    /// The inode of a socket node.
    pub fn socket_ino(&self) -> Option<u64> {
        match self {
            Node::Upper(Upper::Socket { ino, .. }) => Some(*ino),
            _ => None,
        }
    }

    /// The link target, for symbolic links.
    pub fn link_target(&self) -> Option<&str> {
        match self {
            Node::Lower(tarfs::Node {
                kind: tarfs::Kind::Symlink(t),
                ..
            }) => Some(t),
            Node::Upper(Upper::Symlink { target, .. }) => Some(target),
            _ => None,
        }
    }

    /// Its metadata.
    pub fn stat(&self) -> Stat {
        let base = Stat {
            dev: DEV,
            nlink: 1,
            blksize: 4096,
            ..Stat::default()
        };
        match self {
            Node::Lower(n) => {
                let (kind, nlink) = match n.kind {
                    tarfs::Kind::File => (mode::S_IFREG, 1),
                    tarfs::Kind::Dir => (mode::S_IFDIR, 2),
                    tarfs::Kind::Symlink(_) => (mode::S_IFLNK, 1),
                };
                let size = match &n.kind {
                    tarfs::Kind::Symlink(t) => t.len() as u64,
                    _ => n.size,
                };
                Stat {
                    ino: n.ino,
                    mode: kind | n.mode,
                    nlink,
                    uid: n.uid,
                    gid: n.gid,
                    size,
                    mtime: n.mtime,
                    ..base
                }
            }
            Node::Upper(Upper::File(f)) => {
                let f = f.lock();
                Stat {
                    ino: f.ino,
                    mode: mode::S_IFREG | f.mode,
                    size: f.bytes.len() as u64,
                    mtime: f.mtime,
                    nlink: f.nlink.max(1),
                    ..base
                }
            }
            Node::Upper(Upper::Dir {
                mode: m,
                ino,
                mtime,
            }) => Stat {
                ino: *ino,
                mode: mode::S_IFDIR | m,
                nlink: 2,
                mtime: *mtime,
                ..base
            },
            Node::Upper(Upper::Symlink { target, ino }) => Stat {
                ino: *ino,
                mode: mode::S_IFLNK | 0o777,
                size: target.len() as u64,
                ..base
            },
            Node::Upper(Upper::Socket {
                mode: m,
                ino,
                mtime,
            }) => Stat {
                ino: *ino,
                mode: mode::S_IFSOCK | m,
                mtime: *mtime,
                ..base
            },
        }
    }
}

/// The layered file system.
pub struct Overlay {
    lower: TarFs,
    /// The archive the lower layer indexes (for copy-up).
    archive: &'static [u8],
    upper: BTreeMap<String, Upper>,
    whiteouts: BTreeSet<String>,
    next_ino: u64,
    /// Clock for new entries (seconds), set by the kernel.
    pub now: u64,
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        alloc::format!("/{name}")
    } else {
        alloc::format!("{dir}/{name}")
    }
}

impl Overlay {
    /// A file system over `lower` (which indexes `archive`), with `/tmp`
    /// present and writable.
    pub fn new(lower: TarFs, archive: &'static [u8]) -> Self {
        let mut fs = Overlay {
            lower,
            archive,
            upper: BTreeMap::new(),
            whiteouts: BTreeSet::new(),
            next_ino: FIRST_UPPER_INO,
            now: 0,
        };
        if fs.get("/tmp").is_none() {
            let ino = fs.ino();
            fs.upper.insert(
                "/tmp".into(),
                Upper::Dir {
                    mode: 0o1777,
                    ino,
                    mtime: 0,
                },
            );
        }
        fs
    }

    /// An empty file system (no rootfs): just `/` and `/tmp`.
    pub fn empty() -> Self {
        Self::new(TarFs::default(), &[])
    }

    fn ino(&mut self) -> u64 {
        self.next_ino += 1;
        self.next_ino
    }

    fn hidden(&self, path: &str) -> bool {
        let mut p = path;
        loop {
            if self.whiteouts.contains(p) {
                return true;
            }
            if p == "/" {
                return false;
            }
            p = parent_of(p);
        }
    }

    /// The node at exactly `path` (resolved, normalised), without following links.
    pub fn get(&self, path: &str) -> Option<Node> {
        if let Some(u) = self.upper.get(path) {
            return Some(Node::Upper(u.clone()));
        }
        if self.hidden(path) {
            return None;
        }
        if path == "/" && self.lower.get("/").is_none() {
            return Some(Node::Upper(Upper::Dir {
                mode: 0o755,
                ino: 1,
                mtime: 0,
            }));
        }
        self.lower.get(path).cloned().map(Node::Lower)
    }

    /// Resolves `path` (absolute, or relative to `cwd`), following links in
    /// every component and, when `follow`, in the last one.
    ///
    /// # Errors
    /// ENOENT, ENOTDIR, ELOOP, ENAMETOOLONG.
    pub fn resolve(&self, cwd: &str, path: &str, follow: bool) -> Result<(String, Node), Errno> {
        // "name/" (or "name/.") names a directory: links are followed and
        // anything else is ENOTDIR.
        if path.ends_with('/') || path.ends_with("/.") {
            let (at, node) = self.resolve_any(cwd, path, true)?;
            if node.kind() != NodeKind::Dir {
                return Err(Errno::Notdir);
            }
            return Ok((at, node));
        }
        self.resolve_any(cwd, path, follow)
    }

    fn resolve_any(&self, cwd: &str, path: &str, follow: bool) -> Result<(String, Node), Errno> {
        let (parent, name) = self.resolve_parent(cwd, path)?;
        let Some(name) = name else {
            let node = self.get(&parent).ok_or(Errno::Noent)?;
            return Ok((parent, node));
        };
        let mut current = join(&parent, &name);
        let mut links = 0;
        loop {
            let node = self.get(&current).ok_or(Errno::Noent)?;
            match node.link_target() {
                Some(target) if follow => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(Errno::Loop);
                    }
                    let dir = String::from(parent_of(&current));
                    let (p, n) = self.resolve_parent_from(&dir, target, links)?;
                    current = match n {
                        Some(n) => join(&p, &n),
                        None => p,
                    };
                }
                _ => return Ok((current, node)),
            }
        }
    }

    /// Resolves everything but the last component of `path`: returns the
    /// resolved parent directory and the last name (None for `/` or paths
    /// ending in `..`, which name the directory itself).
    ///
    /// # Errors
    /// As [`Overlay::resolve`].
    pub fn resolve_parent(&self, cwd: &str, path: &str) -> Result<(String, Option<String>), Errno> {
        self.resolve_parent_from(cwd, path, 0)
    }

    fn resolve_parent_from(
        &self,
        cwd: &str,
        path: &str,
        mut links: usize,
    ) -> Result<(String, Option<String>), Errno> {
        if path.is_empty() {
            return Err(Errno::Noent);
        }
        if path.len() > 4096 {
            return Err(Errno::Nametoolong);
        }
        let mut current = if path.starts_with('/') {
            String::from("/")
        } else {
            normalise(cwd)
        };
        let mut pending: Vec<String> = path
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .rev()
            .map(String::from)
            .collect();
        while let Some(part) = pending.pop() {
            if part.len() > 255 {
                return Err(Errno::Nametoolong);
            }
            if part == ".." {
                current = String::from(parent_of(&current));
                if pending.is_empty() {
                    return Ok((current, None));
                }
                continue;
            }
            let dir = self.get(&current).ok_or(Errno::Noent)?;
            if dir.kind() != NodeKind::Dir {
                return Err(Errno::Notdir);
            }
            if pending.is_empty() {
                return Ok((current, Some(part)));
            }
            let next = join(&current, &part);
            let node = self.get(&next).ok_or(Errno::Noent)?;
            match node.link_target() {
                Some(target) => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(Errno::Loop);
                    }
                    if target.starts_with('/') {
                        current = String::from("/");
                    }
                    pending.extend(
                        target
                            .split('/')
                            .filter(|c| !c.is_empty() && *c != ".")
                            .rev()
                            .map(String::from),
                    );
                }
                None => current = next,
            }
        }
        Ok((current, None))
    }

    /// The entries of directory `dir` (resolved), both layers merged, in
    /// name order.
    pub fn children(&self, dir: &str) -> Vec<(String, Node)> {
        let mut names: BTreeSet<String> = BTreeSet::new();
        if !self.hidden(dir) || self.upper.contains_key(dir) {
            for (name, _) in self.lower.children(dir) {
                names.insert(name.into());
            }
        }
        let prefix = if dir == "/" {
            String::from("/")
        } else {
            alloc::format!("{dir}/")
        };
        for path in self
            .upper
            .range::<str, _>((
                core::ops::Bound::Included(prefix.as_str()),
                core::ops::Bound::Unbounded,
            ))
            .map(|(p, _)| p)
        {
            if !path.starts_with(&prefix) {
                break;
            }
            let rest = &path[prefix.len()..];
            if !rest.is_empty() && !rest.contains('/') {
                names.insert(rest.into());
            }
        }
        names
            .into_iter()
            .filter_map(|n| self.get(&join(dir, &n)).map(|node| (n, node)))
            .collect()
    }

    /// The rootfs file holding archive byte `offset`: its bytes and the
    /// archive offset where they start.
    pub fn lower_file_containing(&self, offset: u64) -> Option<(&'static [u8], u64)> {
        let node = self.lower.file_containing(offset)?;
        Some((self.lower_bytes(node), node.data))
    }

    /// The CPUID sites the image builder listed for the rootfs file whose
    /// data starts at archive offset `offset`.
    pub fn lower_cpuid_sites(&self, offset: u64) -> Option<tarfs::CpuidSites> {
        self.lower
            .file_containing(offset)
            .filter(|n| n.data == offset)?
            .cpuid_sites
            .clone()
    }

    /// The bytes of a rootfs file.
    pub fn lower_bytes(&self, node: &tarfs::Node) -> &'static [u8] {
        let start = (node.data as usize).min(self.archive.len());
        let end = (start + node.size as usize).min(self.archive.len());
        &self.archive[start..end]
    }

    /// The writable file at resolved `path`, copying a rootfs file up first.
    ///
    /// # Errors
    /// EISDIR for directories, ENOENT when absent.
    pub fn writable(&mut self, path: &str) -> Result<SharedFile, Errno> {
        match self.get(path).ok_or(Errno::Noent)? {
            Node::Upper(Upper::File(f)) => Ok(f),
            Node::Lower(n) if matches!(n.kind, tarfs::Kind::File) => {
                let data = FileData {
                    bytes: self.lower_bytes(&n).to_vec(),
                    mode: n.mode,
                    ino: n.ino,
                    mtime: n.mtime,
                    nlink: 1,
                };
                let f: SharedFile = Arc::new(Mutex::new(data));
                self.upper.insert(path.into(), Upper::File(f.clone()));
                Ok(f)
            }
            n if n.kind() == NodeKind::Dir => Err(Errno::Isdir),
            _ => Err(Errno::Inval),
        }
    }

    fn check_parent(&self, parent: &str) -> Result<(), Errno> {
        match self.get(parent) {
            Some(n) if n.kind() == NodeKind::Dir => Ok(()),
            Some(_) => Err(Errno::Notdir),
            None => Err(Errno::Noent),
        }
    }

    /// Creates an empty file `name` in resolved directory `parent`.
    ///
    /// # Errors
    /// EEXIST, ENOENT, ENOTDIR.
    pub fn create_file(
        &mut self,
        parent: &str,
        name: &str,
        perm: u32,
    ) -> Result<SharedFile, Errno> {
        self.check_parent(parent)?;
        let path = join(parent, name);
        if self.get(&path).is_some() {
            return Err(Errno::Exist);
        }
        let ino = self.ino();
        let f: SharedFile = Arc::new(Mutex::new(FileData {
            bytes: Vec::new(),
            mode: perm & 0o7777,
            ino,
            mtime: self.now,
            nlink: 1,
        }));
        self.upper.insert(path, Upper::File(f.clone()));
        Ok(f)
    }

    /// mkdir(2) of `name` in resolved directory `parent`.
    ///
    /// # Errors
    /// EEXIST, ENOENT, ENOTDIR.
    pub fn mkdir(&mut self, parent: &str, name: &str, perm: u32) -> Result<(), Errno> {
        let mtime = self.now;
        self.add_entry(parent, name, |ino| Upper::Dir {
            mode: perm & 0o7777,
            ino,
            mtime,
        })
    }

    /// Adds a new entry `name` to resolved directory `parent`, made by
    /// `make` from a fresh inode number.
    fn add_entry(
        &mut self,
        parent: &str,
        name: &str,
        make: impl FnOnce(u64) -> Upper,
    ) -> Result<(), Errno> {
        self.check_parent(parent)?;
        let path = join(parent, name);
        if self.get(&path).is_some() {
            return Err(Errno::Exist);
        }
        let ino = self.ino();
        self.upper.insert(path, make(ino));
        Ok(())
    }

    /// Makes the socket node `name` in resolved directory `parent` (bind of
    /// a local socket to a path); returns its inode number.
    ///
    /// # Errors
    /// EEXIST, ENOENT, ENOTDIR.
    pub fn make_socket(&mut self, parent: &str, name: &str, perm: u32) -> Result<u64, Errno> {
        let mtime = self.now;
        let mut made = 0;
        self.add_entry(parent, name, |ino| {
            made = ino;
            Upper::Socket {
                mode: perm & 0o7777,
                ino,
                mtime,
            }
        })?;
        Ok(made)
    }

    /// symlink(2): `name` in `parent` pointing at `target`.
    ///
    /// # Errors
    /// EEXIST, ENOENT, ENOTDIR.
    pub fn symlink(&mut self, parent: &str, name: &str, target: &str) -> Result<(), Errno> {
        self.add_entry(parent, name, |ino| Upper::Symlink {
            target: target.into(),
            ino,
        })
    }

    fn remove(&mut self, path: &str) {
        self.drop_upper(path);
        if self.lower.get(path).is_some() {
            self.whiteouts.insert(path.into());
        }
    }

    /// Removes `path`'s entry from the writable layer (one name fewer for
    /// its file).
    fn drop_upper(&mut self, path: &str) {
        if let Some(Upper::File(f)) = self.upper.remove(path) {
            let mut f = f.lock();
            f.nlink = f.nlink.saturating_sub(1);
        }
    }

    /// unlink(2) of the non-directory at resolved `path`.
    ///
    /// # Errors
    /// ENOENT, EISDIR.
    pub fn unlink(&mut self, path: &str) -> Result<(), Errno> {
        match self.get(path) {
            None => Err(Errno::Noent),
            Some(n) if n.kind() == NodeKind::Dir => Err(Errno::Isdir),
            Some(_) => {
                self.remove(path);
                Ok(())
            }
        }
    }

    /// rmdir(2) of the directory at resolved `path`.
    ///
    /// # Errors
    /// ENOENT, ENOTDIR, ENOTEMPTY, EBUSY for `/`.
    pub fn rmdir(&mut self, path: &str) -> Result<(), Errno> {
        if path == "/" {
            return Err(Errno::Busy);
        }
        match self.get(path) {
            None => Err(Errno::Noent),
            Some(n) if n.kind() != NodeKind::Dir => Err(Errno::Notdir),
            Some(_) if !self.children(path).is_empty() => Err(Errno::Notempty),
            Some(_) => {
                self.remove(path);
                Ok(())
            }
        }
    }

    /// rename(2) from resolved `from` to resolved `to` (both full paths).
    ///
    /// # Errors
    /// ENOENT, EISDIR/ENOTDIR on a kind mismatch, ENOTEMPTY, EINVAL for a
    /// directory moved into itself, EXDEV for a directory of the rootfs
    /// (as overlayfs without redirects).
    pub fn rename(&mut self, from: &str, to: &str) -> Result<(), Errno> {
        let node = self.get(from).ok_or(Errno::Noent)?;
        self.check_parent(parent_of(to))?;
        if from == to {
            return Ok(());
        }
        if to.starts_with(from) && to.as_bytes().get(from.len()) == Some(&b'/') {
            return Err(Errno::Inval);
        }
        if let Some(existing) = self.get(to) {
            match (node.kind(), existing.kind()) {
                (NodeKind::Dir, NodeKind::Dir) if !self.children(to).is_empty() => {
                    return Err(Errno::Notempty)
                }
                (NodeKind::Dir, k) if k != NodeKind::Dir => return Err(Errno::Notdir),
                (k, NodeKind::Dir) if k != NodeKind::Dir => return Err(Errno::Isdir),
                _ => {}
            }
        }
        let moved = match node {
            Node::Upper(u) => {
                if let Upper::Dir { .. } = u {
                    // Move the subtree of the writable layer along.
                    let prefix = alloc::format!("{from}/");
                    let inner: Vec<String> = self
                        .upper
                        .keys()
                        .filter(|k| k.starts_with(&prefix))
                        .cloned()
                        .collect();
                    if !inner.is_empty() && self.lower.get(from).is_some() {
                        return Err(Errno::Xdev);
                    }
                    for k in inner {
                        if let Some(v) = self.upper.remove(&k) {
                            self.upper
                                .insert(alloc::format!("{to}/{}", &k[prefix.len()..]), v);
                        }
                    }
                }
                u
            }
            Node::Lower(n) => match n.kind {
                tarfs::Kind::Dir => return Err(Errno::Xdev),
                tarfs::Kind::File => Upper::File(self.writable(from)?),
                tarfs::Kind::Symlink(t) => Upper::Symlink {
                    target: t,
                    ino: n.ino,
                },
            },
        };
        if let Upper::File(f) = &moved {
            // The name moves: `from`'s removal must not count as a lost link.
            f.lock().nlink += 1;
        }
        self.remove(from);
        self.drop_upper(to);
        self.upper.insert(to.into(), moved);
        Ok(())
    }

    /// chmod(2) of resolved `path` (copies a rootfs file up).
    ///
    /// # Errors
    /// ENOENT, EROFS for rootfs directories and links.
    pub fn chmod(&mut self, path: &str, perm: u32) -> Result<(), Errno> {
        match self.get(path).ok_or(Errno::Noent)? {
            Node::Upper(Upper::Dir { ino, mtime, .. }) => {
                self.upper.insert(
                    path.into(),
                    Upper::Dir {
                        mode: perm & 0o7777,
                        ino,
                        mtime,
                    },
                );
                Ok(())
            }
            Node::Upper(Upper::Symlink { .. }) => Ok(()),
            n if n.kind() == NodeKind::File => {
                self.writable(path)?.lock().mode = perm & 0o7777;
                Ok(())
            }
            _ => Err(Errno::Rofs),
        }
    }

    /// link(2): `to` becomes another name of the file at `from` (copied up
    /// first when it is a rootfs file).
    ///
    /// # Errors
    /// ENOENT, EEXIST, EPERM for directories.
    pub fn link(&mut self, from: &str, to: &str) -> Result<(), Errno> {
        let node = self.get(from).ok_or(Errno::Noent)?;
        if node.kind() == NodeKind::Dir {
            return Err(Errno::Perm);
        }
        self.check_parent(parent_of(to))?;
        if self.get(to).is_some() {
            return Err(Errno::Exist);
        }
        let entry = match node {
            Node::Upper(u) => u,
            Node::Lower(n) => match n.kind {
                tarfs::Kind::Symlink(t) => Upper::Symlink {
                    target: t,
                    ino: n.ino,
                },
                _ => Upper::File(self.writable(from)?),
            },
        };
        if let Upper::File(f) = &entry {
            f.lock().nlink += 1;
        }
        self.upper.insert(to.into(), entry);
        Ok(())
    }

    /// Sets the modification time of resolved `path` (rootfs files are
    /// copied up; rootfs directories keep theirs).
    ///
    /// # Errors
    /// ENOENT.
    pub fn set_mtime(&mut self, path: &str, mtime: u64) -> Result<(), Errno> {
        match self.get(path).ok_or(Errno::Noent)? {
            Node::Upper(Upper::Dir { mode, ino, .. }) => {
                self.upper
                    .insert(path.into(), Upper::Dir { mode, ino, mtime });
            }
            n if n.kind() == NodeKind::File => self.writable(path)?.lock().mtime = mtime,
            _ => {}
        }
        Ok(())
    }

    /// Number of entries of the writable layer (for tests and statistics).
    pub fn upper_len(&self) -> usize {
        self.upper.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn fs() -> Overlay {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in [
            ("etc/hosts", &b"127.0.0.1 localhost\n"[..]),
            ("usr/share/doc/x", b"doc"),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, path, data).unwrap();
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "etc/link", "hosts").unwrap();
        let archive: &'static [u8] = vec::Vec::leak(b.into_inner().unwrap());
        Overlay::new(TarFs::parse(archive).unwrap(), archive)
    }

    fn read(fs: &Overlay, path: &str) -> Vec<u8> {
        match fs.resolve("/", path, true).unwrap().1 {
            Node::Lower(n) => fs.lower_bytes(&n).to_vec(),
            Node::Upper(Upper::File(f)) => f.lock().bytes.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_fall_through_and_writes_copy_up() {
        let mut fs = fs();
        assert_eq!(read(&fs, "/etc/link"), b"127.0.0.1 localhost\n");
        let f = fs.writable("/etc/hosts").unwrap();
        f.lock().bytes.extend_from_slice(b"::1 localhost\n");
        assert_eq!(
            read(&fs, "/etc/hosts"),
            b"127.0.0.1 localhost\n::1 localhost\n"
        );
        assert!(fs.get("/tmp").is_some(), "/tmp exists");
    }

    #[test]
    fn a_trailing_slash_names_a_directory() {
        let fs = fs();
        assert_eq!(
            fs.resolve("/", "/etc/hosts/", true).unwrap_err(),
            Errno::Notdir
        );
        assert_eq!(
            fs.resolve("/", "/etc/hosts/.", false).unwrap_err(),
            Errno::Notdir
        );
        assert_eq!(fs.resolve("/", "/etc/", false).unwrap().0, "/etc");
        assert_eq!(
            fs.resolve("/", "/usr/share/", false).unwrap().0,
            "/usr/share"
        );
    }

    #[test]
    fn creates_lists_and_removes() {
        let mut fs = fs();
        fs.create_file("/tmp", "a", 0o600).unwrap();
        fs.mkdir("/tmp", "d", 0o755).unwrap();
        assert_eq!(
            fs.create_file("/tmp", "a", 0o600).unwrap_err(),
            Errno::Exist
        );
        let names: Vec<String> = fs.children("/tmp").into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a", "d"]);
        fs.create_file("/etc", "new", 0o644).unwrap();
        let names: Vec<String> = fs.children("/etc").into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["hosts", "link", "new"]);
        fs.unlink("/etc/hosts").unwrap();
        assert!(fs.resolve("/", "/etc/hosts", true).is_err());
        assert_eq!(
            fs.resolve("/", "/etc/link", true).unwrap_err(),
            Errno::Noent,
            "the link now dangles"
        );
        assert_eq!(fs.rmdir("/usr/share").unwrap_err(), Errno::Notempty);
        fs.unlink("/usr/share/doc/x").unwrap();
        fs.rmdir("/usr/share/doc").unwrap();
        fs.rmdir("/usr/share").unwrap();
        fs.mkdir("/usr", "share", 0o755).unwrap();
        assert!(
            fs.children("/usr/share").is_empty(),
            "a re-created directory starts empty"
        );
    }

    #[test]
    fn renames_files_and_refuses_rootfs_directories() {
        let mut fs = fs();
        fs.rename("/etc/hosts", "/tmp/hosts").unwrap();
        assert_eq!(read(&fs, "/tmp/hosts"), b"127.0.0.1 localhost\n");
        assert!(fs.get("/etc/hosts").is_none());
        assert_eq!(
            fs.rename("/usr/share", "/tmp/share").unwrap_err(),
            Errno::Xdev
        );
        fs.mkdir("/tmp", "d", 0o755).unwrap();
        fs.create_file("/tmp/d", "f", 0o644).unwrap();
        fs.rename("/tmp/d", "/tmp/e").unwrap();
        assert!(fs.get("/tmp/e/f").is_some() && fs.get("/tmp/d").is_none());
        assert_eq!(
            fs.rename("/tmp/e", "/tmp/e/inside").unwrap_err(),
            Errno::Inval
        );
    }

    #[test]
    fn resolves_parents_for_creation() {
        let fs = fs();
        assert_eq!(
            fs.resolve_parent("/tmp", "x").unwrap(),
            ("/tmp".into(), Some("x".into()))
        );
        assert_eq!(
            fs.resolve_parent("/", "/etc/../tmp/y").unwrap(),
            ("/tmp".into(), Some("y".into()))
        );
        assert_eq!(
            fs.resolve_parent("/", "/etc/hosts/z").unwrap_err(),
            Errno::Notdir
        );
        assert_eq!(fs.resolve_parent("/", "/nope/z").unwrap_err(), Errno::Noent);
    }

    #[test]
    fn a_socket_name_is_a_node_of_its_own_kind() {
        let mut o = fs();
        let ino = o.make_socket("/tmp", "s", 0o755).unwrap();
        let node = o.get("/tmp/s").unwrap();
        assert_eq!(node.kind(), NodeKind::Socket);
        assert_eq!(node.socket_ino(), Some(ino));
        assert_eq!(node.stat().mode, mode::S_IFSOCK | 0o755);
        assert_eq!(o.make_socket("/tmp", "s", 0o755), Err(Errno::Exist));
        o.unlink("/tmp/s").unwrap();
        assert!(o.get("/tmp/s").is_none());
    }
}
