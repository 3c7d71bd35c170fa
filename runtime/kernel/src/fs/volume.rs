//! Shared directories from the host (`kiln run -v HOSTDIR:/path`): each is
//! a virtio-fs device whose FUSE server is virtiofsd, mounted at a path of
//! the program's file system. Paths under a mount point are resolved here,
//! a LOOKUP per component from the volume's root (symbolic links are read
//! and the resolution starts again from their target, wherever it lies);
//! open files and directories keep the server's handle and read, write
//! and list through it. Nothing is cached: every call asks the host, so
//! two appliances and the host see each other's changes at once, and what
//! fsync(2) returned for is on the host's disk (FSYNC is the host's fsync).

use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use kiln_kernel::boot::cmdline::Volume;
use kiln_kernel::errno::Errno;
use kiln_kernel::fs::fuse::{self, fattr, op, Args, Entry, SetAttr, ROOT};
use kiln_kernel::fs::stat::{dirent64, mode, Stat};
use spin::Mutex;

use crate::drivers::virtio::fs as device;
use crate::fd::{flags, FileOps};

/// A mounted volume.
pub struct Mount {
    /// Its mount point (absolute, no trailing slash).
    pub path: String,
    /// Its device's tag.
    pub tag: String,
    /// Its virtio-fs device.
    device: usize,
    /// Mounted read-only (virtiofsd refuses writes too).
    pub read_only: bool,
    /// The device number its files report.
    dev: u64,
}

static MOUNTS: spin::Once<Vec<Mount>> = spin::Once::new();

/// The mounted volumes, longest mount point first.
pub fn mounts() -> &'static [Mount] {
    MOUNTS.get().map_or(&[], Vec::as_slice)
}

/// Mounts the volumes the command line names (after the overlay exists:
/// each mount point is made there, so listings of its parent show it).
pub fn mount_all(volumes: &[Volume]) {
    let mut list = Vec::new();
    for v in volumes {
        let Some(device) = device::find(&v.tag) else {
            crate::kprintln!(
                "kiln: volume {}: no virtio-fs device tagged {}; not mounted",
                v.path,
                v.tag
            );
            continue;
        };
        if let Err(e) = super::make_dirs(&v.path) {
            crate::kprintln!(
                "kiln: volume {}: cannot make the mount point: {}",
                v.path,
                e.name()
            );
            continue;
        }
        list.push(Mount {
            path: v.path.clone(),
            tag: v.tag.clone(),
            device,
            read_only: v.read_only,
            // Anonymous block devices' major 0, as Linux numbers FUSE mounts.
            dev: 0x2a + list.len() as u64,
        });
    }
    // Longest mount points first: a volume mounted inside another wins.
    list.sort_by_key(|m| core::cmp::Reverse(m.path.len()));
    MOUNTS.call_once(|| list);
}

/// The mount `abs` lies on and the rest of the path after its mount point.
pub fn split(abs: &str) -> Option<(usize, &str)> {
    mounts().iter().enumerate().find_map(|(i, m)| {
        let rest = abs.strip_prefix(m.path.as_str())?;
        (rest.is_empty() || rest.starts_with('/')).then_some((i, rest))
    })
}

/// Whether mount `m` is read-only.
pub fn mount_read_only(m: usize) -> bool {
    mounts().get(m).is_some_and(|m| m.read_only)
}

/// One request to mount `m`'s server.
fn call(
    m: usize,
    opcode: u32,
    nodeid: u64,
    args: &[&[u8]],
    out: &mut [u8],
) -> Result<usize, Errno> {
    let device = mounts().get(m).ok_or(Errno::Nodev)?.device;
    device::with(device, |d| d.call(opcode, nodeid, args, out))
}

fn with_dev(m: usize, mut st: Stat) -> Stat {
    st.dev = mounts().get(m).map_or(0, |m| m.dev);
    st
}

fn is_type(st: &Stat, kind: u32) -> bool {
    st.mode & 0o170000 == kind
}

/// A node of a volume.
#[derive(Clone, Debug)]
pub struct VolNode {
    /// Its mount.
    pub mount: usize,
    /// The server's node id.
    pub nodeid: u64,
    /// Its metadata when looked up.
    pub stat: Stat,
    /// Its absolute path (links resolved).
    pub path: String,
}

/// Where a path leads.
pub enum Resolved {
    /// A node of a volume.
    Node(VolNode),
    /// Out through a symbolic link: resolve this absolute path instead.
    Elsewhere(String),
}

fn lookup_child(m: usize, parent: u64, name: &str) -> Result<Entry, Errno> {
    if name.len() > 255 {
        return Err(Errno::Nametoolong);
    }
    let mut out = [0u8; fuse::ENTRY_OUT];
    let n = call(
        m,
        op::LOOKUP,
        parent,
        &[&Args::new().name(name).0],
        &mut out,
    )?;
    let mut e = fuse::entry(&out[..n.min(out.len())])?;
    e.stat = with_dev(m, e.stat);
    Ok(e)
}

fn getattr(m: usize, nodeid: u64, fh: Option<u64>) -> Result<Stat, Errno> {
    let args = Args::new()
        .u32(u32::from(fh.is_some()))
        .u32(0)
        .u64(fh.unwrap_or(0));
    let mut out = [0u8; fuse::ATTR_OUT];
    let n = call(m, op::GETATTR, nodeid, &[&args.0], &mut out)?;
    Ok(with_dev(m, fuse::attr_out(&out[..n.min(out.len())])?))
}

/// The target of symbolic link `nodeid`.
fn read_link(m: usize, nodeid: u64) -> Result<String, Errno> {
    let mut out = alloc::vec![0u8; 4096];
    let n = call(m, op::READLINK, nodeid, &[], &mut out)?;
    out.truncate(n.min(4096));
    String::from_utf8(out).map_err(|_| Errno::Inval)
}

/// Resolves absolute path `abs` (on a volume), following a final symbolic
/// link when `follow`.
///
/// # Errors
/// ENOENT, ENOTDIR, ENAMETOOLONG, or the server's error.
pub fn resolve(abs: &str, follow: bool) -> Result<Resolved, Errno> {
    let (m, rest) = split(abs).ok_or(Errno::Noent)?;
    let comps: Vec<&str> = rest.split('/').filter(|c| !c.is_empty()).collect();
    let mut node = VolNode {
        mount: m,
        nodeid: ROOT,
        stat: Stat {
            mode: mode::S_IFDIR | 0o755,
            ..Stat::default()
        },
        path: mounts()[m].path.clone(),
    };
    if comps.is_empty() {
        node.stat = getattr(m, ROOT, None)?;
        return Ok(Resolved::Node(node));
    }
    for (i, c) in comps.iter().enumerate() {
        if !is_type(&node.stat, mode::S_IFDIR) {
            return Err(Errno::Notdir);
        }
        let e = lookup_child(m, node.nodeid, c)?;
        let last = i + 1 == comps.len();
        if is_type(&e.stat, 0o120000) && (!last || follow) {
            let target = read_link(m, e.nodeid)?;
            let remaining = comps[i + 1..].join("/");
            let joined = if target.starts_with('/') {
                alloc::format!("{target}/{remaining}")
            } else {
                alloc::format!("{}/{target}/{remaining}", node.path)
            };
            return Ok(Resolved::Elsewhere(super::absolute("/", &joined)));
        }
        node = VolNode {
            mount: m,
            nodeid: e.nodeid,
            stat: e.stat,
            path: alloc::format!("{}/{c}", node.path),
        };
    }
    Ok(Resolved::Node(node))
}

/// The directory a new name at `abs` goes in, and the name.
///
/// # Errors
/// EBUSY for the mount point itself; EXDEV when the parent leads off the
/// volume; lookup errors.
pub fn parent_of(abs: &str) -> Result<(VolNode, String), Errno> {
    let (m, rest) = split(abs).ok_or(Errno::Noent)?;
    let rest = rest.trim_end_matches('/');
    let (dir, name) = match rest.rsplit_once('/') {
        Some((dir, name)) if !name.is_empty() => (dir, name),
        _ => return Err(Errno::Busy),
    };
    let dir_abs = alloc::format!("{}{dir}", mounts()[m].path);
    let mut at = dir_abs;
    for _ in 0..40 {
        match resolve(&at, true)? {
            Resolved::Node(n) if is_type(&n.stat, mode::S_IFDIR) => {
                return Ok((n, name.to_string()))
            }
            Resolved::Node(_) => return Err(Errno::Notdir),
            Resolved::Elsewhere(p) if split(&p).is_some() => at = p,
            Resolved::Elsewhere(_) => return Err(Errno::Xdev),
        }
    }
    Err(Errno::Loop)
}

fn read_only(m: usize) -> Result<(), Errno> {
    if mount_read_only(m) {
        Err(Errno::Rofs)
    } else {
        Ok(())
    }
}

/// mkdir at `abs`.
///
/// # Errors
/// The server's (EEXIST, ENOENT, …), EROFS on a read-only volume.
pub fn mkdir(abs: &str, perm: u32) -> Result<(), Errno> {
    let (dir, name) = parent_of(abs)?;
    read_only(dir.mount)?;
    let args = Args::new().u32(perm & 0o7777).u32(0).name(&name);
    let mut out = [0u8; fuse::ENTRY_OUT];
    call(dir.mount, op::MKDIR, dir.nodeid, &[&args.0], &mut out).map(|_| ())
}

/// unlink (or rmdir with `dir`) at `abs`.
///
/// # Errors
/// The server's; EBUSY for a mount point.
pub fn remove(abs: &str, dir: bool) -> Result<(), Errno> {
    let (parent, name) = parent_of(abs)?;
    read_only(parent.mount)?;
    let opcode = if dir { op::RMDIR } else { op::UNLINK };
    call(
        parent.mount,
        opcode,
        parent.nodeid,
        &[&Args::new().name(&name).0],
        &mut [],
    )
    .map(|_| ())
}

/// rename from `from` to `to` (both on one volume; RENAME_NOREPLACE with
/// `noreplace`).
///
/// # Errors
/// EXDEV across volumes; the server's.
pub fn rename(from: &str, to: &str, noreplace: bool) -> Result<(), Errno> {
    let (op_dir, old) = parent_of(from)?;
    let (np_dir, new) = parent_of(to)?;
    if op_dir.mount != np_dir.mount {
        return Err(Errno::Xdev);
    }
    read_only(op_dir.mount)?;
    let (opcode, args) = if noreplace {
        (op::RENAME2, Args::new().u64(np_dir.nodeid).u32(1).u32(0))
    } else {
        (op::RENAME, Args::new().u64(np_dir.nodeid))
    };
    let args = args.name(&old).name(&new);
    call(op_dir.mount, opcode, op_dir.nodeid, &[&args.0], &mut []).map(|_| ())
}

/// symlink at `abs` pointing at `target`.
///
/// # Errors
/// The server's.
pub fn symlink(target: &str, abs: &str) -> Result<(), Errno> {
    let (dir, name) = parent_of(abs)?;
    read_only(dir.mount)?;
    let args = Args::new().name(&name).name(target);
    let mut out = [0u8; fuse::ENTRY_OUT];
    call(dir.mount, op::SYMLINK, dir.nodeid, &[&args.0], &mut out).map(|_| ())
}

/// A hard link at `to` to the node `from` (same volume).
///
/// # Errors
/// EXDEV across volumes; the server's.
pub fn link(from: &VolNode, to: &str) -> Result<(), Errno> {
    let (dir, name) = parent_of(to)?;
    if dir.mount != from.mount {
        return Err(Errno::Xdev);
    }
    read_only(dir.mount)?;
    let args = Args::new().u64(from.nodeid).name(&name);
    let mut out = [0u8; fuse::ENTRY_OUT];
    call(dir.mount, op::LINK, dir.nodeid, &[&args.0], &mut out).map(|_| ())
}

/// The target of the symbolic link `node`.
///
/// # Errors
/// EINVAL when it is not a link.
pub fn readlink(node: &VolNode) -> Result<String, Errno> {
    if !is_type(&node.stat, 0o120000) {
        return Err(Errno::Inval);
    }
    read_link(node.mount, node.nodeid)
}

/// Changes `node`'s attributes (through open handle `fh` when given).
///
/// # Errors
/// The server's; EROFS on a read-only volume.
pub fn setattr(node: &VolNode, mut s: SetAttr, fh: Option<u64>) -> Result<(), Errno> {
    read_only(node.mount)?;
    if let Some(fh) = fh {
        s.valid |= fattr::FH;
        s.fh = fh;
    }
    let mut out = [0u8; fuse::ATTR_OUT];
    call(
        node.mount,
        op::SETATTR,
        node.nodeid,
        &[&s.encode().0],
        &mut out,
    )
    .map(|_| ())
}

/// The `struct statfs` words after `f_type` for the volume of `abs`.
///
/// # Errors
/// The server's.
pub fn statfs(abs: &str) -> Result<[u64; 8], Errno> {
    let (m, _) = split(abs).ok_or(Errno::Noent)?;
    let mut out = [0u8; 80];
    let n = call(m, op::STATFS, ROOT, &[], &mut out)?;
    fuse::statfs(&out[..n.min(80)])
}

/// FUSE_SUPER_MAGIC, statfs's `f_type` for a volume.
pub const FUSE_MAGIC: u64 = 0x6573_5546;

/// Open flags the server gets (creation and descriptor flags are the
/// client's business; O_DIRECT is dropped: virtiofsd ignores it).
fn server_flags(oflags: u32) -> u32 {
    const DROP: u32 = 0o100 | 0o200 | 0o400 | 0o1000 | 0o40000 | 0o400000 | 0o2000000 | 0o10000000;
    oflags & !DROP
}

/// Opens `node` with open(2) flags `oflags`.
///
/// # Errors
/// The server's; EROFS when writing a read-only volume.
pub fn open(node: VolNode, oflags: u32) -> Result<Arc<dyn FileOps>, Errno> {
    let write = oflags & 3 != 0 || oflags & 0o1000 != 0;
    if write {
        read_only(node.mount)?;
    }
    let dir = is_type(&node.stat, mode::S_IFDIR);
    if dir && write {
        return Err(Errno::Isdir);
    }
    let opcode = if dir { op::OPENDIR } else { op::OPEN };
    let args = Args::new().u32(server_flags(oflags)).u32(0);
    let mut out = [0u8; fuse::OPEN_OUT];
    let n = call(node.mount, opcode, node.nodeid, &[&args.0], &mut out)?;
    let fh = fuse::open_out(&out[..n.min(out.len())])?;
    if dir {
        return Ok(Arc::new(VolumeDir {
            node,
            fh,
            state: Mutex::new(DirState::default()),
        }));
    }
    let file = VolumeFile {
        node,
        fh,
        offset: AtomicU64::new(0),
        oflags,
    };
    if oflags & 0o1000 != 0 && oflags & 3 != 0 {
        file.truncate(0)?;
    }
    Ok(Arc::new(file))
}

/// Creates (or, without O_EXCL, opens) the file at `abs`.
///
/// # Errors
/// The server's (EEXIST with O_EXCL); EROFS.
pub fn create(abs: &str, oflags: u32, perm: u32) -> Result<Arc<dyn FileOps>, Errno> {
    let (dir, name) = parent_of(abs)?;
    read_only(dir.mount)?;
    // O_CREAT and O_EXCL go to the server (it creates atomically).
    let flags = server_flags(oflags) | (oflags & 0o300);
    let args = Args::new()
        .u32(flags)
        .u32(perm & 0o7777)
        .u32(0)
        .u32(0)
        .name(&name);
    let mut out = [0u8; fuse::ENTRY_OUT + fuse::OPEN_OUT];
    let n = call(dir.mount, op::CREATE, dir.nodeid, &[&args.0], &mut out)?;
    if n < out.len() {
        return Err(Errno::Io);
    }
    let entry = fuse::entry(&out[..fuse::ENTRY_OUT])?;
    let fh = fuse::open_out(&out[fuse::ENTRY_OUT..])?;
    let file = VolumeFile {
        node: VolNode {
            mount: dir.mount,
            nodeid: entry.nodeid,
            stat: with_dev(dir.mount, entry.stat),
            path: alloc::format!("{}/{name}", dir.path),
        },
        fh,
        offset: AtomicU64::new(0),
        oflags,
    };
    if oflags & 0o1000 != 0 && oflags & 3 != 0 {
        file.truncate(0)?;
    }
    Ok(Arc::new(file))
}

/// An open file of a volume.
pub struct VolumeFile {
    node: VolNode,
    fh: u64,
    offset: AtomicU64,
    oflags: u32,
}

const O_APPEND: u32 = 0o2000;
const O_DSYNC: u32 = 0o10000;

impl VolumeFile {
    fn size(&self) -> Result<u64, Errno> {
        Ok(getattr(self.node.mount, self.node.nodeid, Some(self.fh))?.size)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
        let max = device::with(mounts()[self.node.mount].device, |d| Ok(d.max_io))?;
        let mut done = 0;
        while done < buf.len() {
            let n = (buf.len() - done).min(max);
            let args = fuse::io_in(self.fh, offset + done as u64, n as u32, self.oflags);
            let got = call(
                self.node.mount,
                op::READ,
                self.node.nodeid,
                &[&args.0],
                &mut buf[done..done + n],
            )?;
            let got = got.min(n);
            done += got;
            if got < n {
                break;
            }
        }
        Ok(done)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<usize, Errno> {
        if self.oflags & 3 == 0 {
            return Err(Errno::Badf);
        }
        let max = device::with(mounts()[self.node.mount].device, |d| Ok(d.max_io))?;
        let mut done = 0;
        while done < buf.len() {
            let n = (buf.len() - done).min(max);
            let args = fuse::io_in(self.fh, offset + done as u64, n as u32, self.oflags);
            let mut out = [0u8; 8];
            call(
                self.node.mount,
                op::WRITE,
                self.node.nodeid,
                &[&args.0, &buf[done..done + n]],
                &mut out,
            )?;
            let wrote = (u32::from_le_bytes([out[0], out[1], out[2], out[3]]) as usize).min(n);
            done += wrote;
            if wrote < n {
                break;
            }
        }
        if self.oflags & O_DSYNC != 0 && done > 0 {
            self.sync()?;
        }
        Ok(done)
    }
}

impl FileOps for VolumeFile {
    fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        let at = self.offset.load(Ordering::Relaxed);
        let n = self.read_at(buf, at)?;
        self.offset.store(at + n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn write(&self, buf: &[u8]) -> Result<usize, Errno> {
        let at = if self.oflags & O_APPEND != 0 {
            // virtiofsd opened the host file O_APPEND: it appends whatever
            // the offset; the new end is the file offset after.
            0
        } else {
            self.offset.load(Ordering::Relaxed)
        };
        let n = self.write_at(buf, at)?;
        let next = if self.oflags & O_APPEND != 0 {
            self.size()?
        } else {
            at + n as u64
        };
        self.offset.store(next, Ordering::Relaxed);
        Ok(n)
    }

    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
        self.read_at(buf, offset)
    }

    fn pwrite(&self, buf: &[u8], offset: u64) -> Result<usize, Errno> {
        self.write_at(buf, offset)
    }

    fn truncate(&self, len: u64) -> Result<(), Errno> {
        if self.oflags & 3 == 0 {
            return Err(Errno::Inval);
        }
        let s = SetAttr {
            valid: fattr::SIZE,
            size: len,
            ..SetAttr::default()
        };
        setattr(&self.node, s, Some(self.fh))
    }

    fn sync(&self) -> Result<(), Errno> {
        fsync(&self.node, self.fh, op::FSYNC)
    }

    fn allocate(&self, mode: u32, offset: u64, len: u64) -> Result<(), Errno> {
        if self.oflags & 3 == 0 {
            return Err(Errno::Badf);
        }
        let args = Args::new()
            .u64(self.fh)
            .u64(offset)
            .u64(len)
            .u32(mode)
            .u32(0);
        call(
            self.node.mount,
            op::FALLOCATE,
            self.node.nodeid,
            &[&args.0],
            &mut [],
        )
        .map(|_| ())
    }

    fn writes_back_mappings(&self) -> bool {
        self.oflags & 3 != 0
    }

    fn contents(&self) -> Option<Vec<u8>> {
        // For mappings: a copy of the file as it is now.
        let size = self.size().ok()?;
        if size > 256 << 20 {
            return None;
        }
        let mut bytes = alloc::vec![0u8; size as usize];
        let n = self.read_at(&mut bytes, 0).ok()?;
        bytes.truncate(n);
        Some(bytes)
    }

    fn seek(&self, offset: i64, whence: u32) -> Result<u64, Errno> {
        let size = if whence == 2 || whence == 3 || whence == 4 {
            self.size()?
        } else {
            0
        };
        crate::fd::file::seek(&self.offset, size, offset, whence)
    }

    fn stat(&self) -> Stat {
        getattr(self.node.mount, self.node.nodeid, Some(self.fh)).unwrap_or(self.node.stat)
    }

    fn status_flags(&self) -> u32 {
        self.oflags & (3 | O_APPEND | flags::O_NONBLOCK)
    }
}

impl Drop for VolumeFile {
    fn drop(&mut self) {
        release(&self.node, self.fh, op::RELEASE, self.oflags);
    }
}

/// What a directory listing has read and not yet returned.
#[derive(Default)]
struct DirState {
    /// The server's offset of the next READDIR.
    next: u64,
    /// Entries read, not yet returned.
    pending: Vec<fuse::DirEntry>,
    /// The server said there are no more.
    done: bool,
    /// getdents calls' own position (for `d_off`).
    position: u64,
}

/// An open directory of a volume.
pub struct VolumeDir {
    node: VolNode,
    fh: u64,
    state: Mutex<DirState>,
}

impl FileOps for VolumeDir {
    fn read(&self, _buf: &mut [u8]) -> Result<usize, Errno> {
        Err(Errno::Isdir)
    }

    fn seek(&self, offset: i64, whence: u32) -> Result<u64, Errno> {
        // Only rewinding (what rewinddir and seekdir(0) do) is supported.
        if whence != 0 || offset != 0 {
            return Err(Errno::Inval);
        }
        *self.state.lock() = DirState::default();
        Ok(0)
    }

    fn stat(&self) -> Stat {
        getattr(self.node.mount, self.node.nodeid, None).unwrap_or(self.node.stat)
    }

    fn getdents(&self, out: &mut [u8]) -> Result<usize, Errno> {
        let mut st = self.state.lock();
        let mut written = 0;
        loop {
            if st.pending.is_empty() {
                if st.done {
                    break;
                }
                let mut reply = alloc::vec![0u8; 8192];
                let args = fuse::io_in(self.fh, st.next, reply.len() as u32, 0);
                let n = call(
                    self.node.mount,
                    op::READDIR,
                    self.node.nodeid,
                    &[&args.0],
                    &mut reply,
                )?;
                let entries = fuse::dirents(&reply[..n.min(reply.len())]);
                match entries.last() {
                    Some(last) => st.next = last.next,
                    None => st.done = true,
                }
                st.pending = entries;
                st.pending.reverse();
                continue;
            }
            let Some(e) = st.pending.last() else { break };
            let record = dirent64(e.ino, st.position + 1, e.kind, e.name.as_bytes());
            if written + record.len() > out.len() {
                if written == 0 {
                    return Err(Errno::Inval);
                }
                break;
            }
            out[written..written + record.len()].copy_from_slice(&record);
            written += record.len();
            st.position += 1;
            st.pending.pop();
        }
        Ok(written)
    }

    fn sync(&self) -> Result<(), Errno> {
        fsync(&self.node, self.fh, op::FSYNCDIR)
    }

    fn status_flags(&self) -> u32 {
        flags::O_RDONLY | flags::O_DIRECTORY
    }

    fn dir_path(&self) -> Option<&str> {
        Some(&self.node.path)
    }
}

impl Drop for VolumeDir {
    fn drop(&mut self) {
        release(&self.node, self.fh, op::RELEASEDIR, 0);
    }
}

/// FSYNC or FSYNCDIR of open handle `fh` (its data and metadata: the host
/// fsync(2)s the file).
fn fsync(node: &VolNode, fh: u64, opcode: u32) -> Result<(), Errno> {
    let args = Args::new().u64(fh).u32(0).u32(0);
    call(node.mount, opcode, node.nodeid, &[&args.0], &mut []).map(|_| ())
}

/// RELEASE or RELEASEDIR of open handle `fh`: closing cannot fail for the
/// program, so an error is only the server's to forget.
fn release(node: &VolNode, fh: u64, opcode: u32, oflags: u32) {
    let args = Args::new().u64(fh).u32(oflags).u32(0).u64(0);
    let _ = call(node.mount, opcode, node.nodeid, &[&args.0], &mut []);
}
