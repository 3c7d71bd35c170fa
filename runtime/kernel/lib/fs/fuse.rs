//! The FUSE protocol as virtio-fs carries it (Linux `include/uapi/linux/
//! fuse.h`, protocol 7.31): each request is a 40-byte header and the
//! operation's arguments; each reply a 16-byte header (a negative errno or
//! 0) and the operation's result. Only the encoding lives here; the kernel's
//! `fs::volume` sends the requests.

use alloc::string::String;
use alloc::vec::Vec;

use crate::errno::Errno;
use crate::fs::stat::Stat;

/// Protocol version kiln speaks.
pub const MAJOR: u32 = 7;
/// Minor version (7.31: what virtiofsd and Linux 5.10 share).
pub const MINOR: u32 = 31;
/// Bytes of a request header.
pub const IN_HEADER: usize = 40;
/// Bytes of a reply header.
pub const OUT_HEADER: usize = 16;
/// The root directory's node id.
pub const ROOT: u64 = 1;

/// Operation codes.
#[allow(missing_docs)]
pub mod op {
    pub const LOOKUP: u32 = 1;
    pub const FORGET: u32 = 2;
    pub const GETATTR: u32 = 3;
    pub const SETATTR: u32 = 4;
    pub const READLINK: u32 = 5;
    pub const SYMLINK: u32 = 6;
    pub const MKNOD: u32 = 8;
    pub const MKDIR: u32 = 9;
    pub const UNLINK: u32 = 10;
    pub const RMDIR: u32 = 11;
    pub const RENAME: u32 = 12;
    pub const LINK: u32 = 13;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const WRITE: u32 = 16;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const FSYNC: u32 = 20;
    pub const FLUSH: u32 = 25;
    pub const INIT: u32 = 26;
    pub const OPENDIR: u32 = 27;
    pub const READDIR: u32 = 28;
    pub const RELEASEDIR: u32 = 29;
    pub const FSYNCDIR: u32 = 30;
    pub const GETLK: u32 = 31;
    pub const SETLK: u32 = 32;
    pub const SETLKW: u32 = 33;
    pub const ACCESS: u32 = 34;
    pub const CREATE: u32 = 35;
    pub const FALLOCATE: u32 = 43;
    pub const RENAME2: u32 = 45;
    pub const LSEEK: u32 = 46;
}

/// SETATTR `valid` bits.
#[allow(missing_docs)]
pub mod fattr {
    pub const MODE: u32 = 1;
    pub const SIZE: u32 = 1 << 3;
    pub const ATIME: u32 = 1 << 4;
    pub const MTIME: u32 = 1 << 5;
    pub const FH: u32 = 1 << 6;
    pub const ATIME_NOW: u32 = 1 << 7;
    pub const MTIME_NOW: u32 = 1 << 8;
}

/// Little-endian field readers over a reply.
fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).map_or(0, |s| {
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        u64::from_le_bytes(a)
    })
}

/// An argument block being built.
#[derive(Default)]
pub struct Args(pub Vec<u8>);

impl Args {
    /// An empty block.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Appends a u32.
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a u64.
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a NUL-terminated name.
    pub fn name(mut self, s: &str) -> Self {
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(0);
        self
    }
}

/// A request header for `opcode` on `nodeid`, `body` bytes of arguments
/// following, numbered `unique`.
pub fn in_header(opcode: u32, nodeid: u64, unique: u64, body: usize) -> [u8; IN_HEADER] {
    let mut h = [0u8; IN_HEADER];
    h[0..4].copy_from_slice(&((IN_HEADER + body) as u32).to_le_bytes());
    h[4..8].copy_from_slice(&opcode.to_le_bytes());
    h[8..16].copy_from_slice(&unique.to_le_bytes());
    h[16..24].copy_from_slice(&nodeid.to_le_bytes());
    // uid, gid, pid: 0 (the program is root; the pid is its own business).
    h
}

/// What a reply header says: the result's length, or the error.
///
/// # Errors
/// The errno the reply carries (EIO for a malformed reply).
pub fn out_header(reply: &[u8], unique: u64, written: usize) -> Result<usize, Errno> {
    if written < OUT_HEADER || reply.len() < OUT_HEADER {
        return Err(Errno::Io);
    }
    let len = u32_at(reply, 0) as usize;
    let error = u32_at(reply, 4) as i32;
    if u64_at(reply, 8) != unique {
        return Err(Errno::Io);
    }
    if error < 0 {
        return Err(Errno::from_raw(i64::from(-error)).unwrap_or(Errno::Io));
    }
    if len < OUT_HEADER || len > written {
        return Err(Errno::Io);
    }
    Ok(len - OUT_HEADER)
}

/// `struct fuse_attr` (88 bytes) as the kernel's [`Stat`] (the volume's
/// device number is the caller's).
pub fn attr(b: &[u8]) -> Stat {
    Stat {
        dev: 0,
        ino: u64_at(b, 0),
        size: u64_at(b, 8),
        mtime: u64_at(b, 32),
        mode: u32_at(b, 60),
        nlink: u64::from(u32_at(b, 64)),
        uid: u32_at(b, 68),
        gid: u32_at(b, 72),
        rdev: u64::from(u32_at(b, 76)),
        blksize: match u32_at(b, 80) {
            0 => 4096,
            n => u64::from(n),
        },
    }
}

/// Bytes of `struct fuse_attr`.
pub const ATTR: usize = 88;
/// Bytes of `struct fuse_entry_out`.
pub const ENTRY_OUT: usize = 40 + ATTR;
/// Bytes of `struct fuse_attr_out`.
pub const ATTR_OUT: usize = 16 + ATTR;
/// Bytes of `struct fuse_open_out`.
pub const OPEN_OUT: usize = 16;

/// A looked-up (or created) node: its id and metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Node id for later requests.
    pub nodeid: u64,
    /// Its metadata.
    pub stat: Stat,
}

/// `struct fuse_entry_out`.
///
/// # Errors
/// EIO when the reply is short; ENOENT for a negative entry (node id 0).
pub fn entry(b: &[u8]) -> Result<Entry, Errno> {
    if b.len() < ENTRY_OUT {
        return Err(Errno::Io);
    }
    let nodeid = u64_at(b, 0);
    if nodeid == 0 {
        return Err(Errno::Noent);
    }
    Ok(Entry {
        nodeid,
        stat: attr(&b[40..]),
    })
}

/// `struct fuse_attr_out`'s attributes.
///
/// # Errors
/// EIO when the reply is short.
pub fn attr_out(b: &[u8]) -> Result<Stat, Errno> {
    if b.len() < ATTR_OUT {
        return Err(Errno::Io);
    }
    Ok(attr(&b[16..]))
}

/// `struct fuse_open_out`'s file handle.
///
/// # Errors
/// EIO when the reply is short.
pub fn open_out(b: &[u8]) -> Result<u64, Errno> {
    if b.len() < OPEN_OUT {
        return Err(Errno::Io);
    }
    Ok(u64_at(b, 0))
}

/// `struct fuse_init_in` (7.31 layout, 16 bytes): version, readahead and
/// the capability flags kiln wants (none it would have to honour).
pub fn init_in(max_readahead: u32) -> Args {
    Args::new().u32(MAJOR).u32(MINOR).u32(max_readahead).u32(0)
}

/// From `struct fuse_init_out`: the server's version and its `max_write`.
///
/// # Errors
/// EIO when short; EPROTO when the major version is not 7.
pub fn init_out(b: &[u8]) -> Result<(u32, u32, u32), Errno> {
    if b.len() < 24 {
        return Err(Errno::Io);
    }
    let (major, minor) = (u32_at(b, 0), u32_at(b, 4));
    if major != MAJOR {
        return Err(Errno::Proto);
    }
    Ok((major, minor, u32_at(b, 20)))
}

/// `struct fuse_setattr_in` (88 bytes).
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    /// [`fattr`] bits of the fields set.
    pub valid: u32,
    /// Open file handle (with [`fattr::FH`]).
    pub fh: u64,
    /// New size.
    pub size: u64,
    /// New access time, seconds and nanoseconds.
    pub atime: (u64, u32),
    /// New modification time.
    pub mtime: (u64, u32),
    /// New permission bits (and type).
    pub mode: u32,
}

impl SetAttr {
    /// The request's argument bytes.
    pub fn encode(&self) -> Args {
        Args::new()
            .u32(self.valid)
            .u32(0)
            .u64(self.fh)
            .u64(self.size)
            .u64(0) // lock_owner
            .u64(self.atime.0)
            .u64(self.mtime.0)
            .u64(0) // ctime
            .u32(self.atime.1)
            .u32(self.mtime.1)
            .u32(0)
            .u32(self.mode)
            .u32(0)
            .u32(0) // uid
            .u32(0) // gid
            .u32(0)
    }
}

/// `struct fuse_read_in` / `fuse_write_in` (40 bytes) for `size` bytes at
/// `offset` of open file `fh`.
pub fn io_in(fh: u64, offset: u64, size: u32, open_flags: u32) -> Args {
    Args::new()
        .u64(fh)
        .u64(offset)
        .u32(size)
        .u32(0)
        .u64(0)
        .u32(open_flags)
        .u32(0)
}

/// One directory entry of a READDIR reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// Inode number.
    pub ino: u64,
    /// Offset of the next entry (for the next READDIR).
    pub next: u64,
    /// `DT_*` type.
    pub kind: u8,
    /// The name.
    pub name: String,
}

/// The entries of a READDIR reply (`struct fuse_dirent`s, each padded to 8
/// bytes); a malformed tail is ignored.
pub fn dirents(mut b: &[u8]) -> Vec<DirEntry> {
    let mut out = Vec::new();
    while b.len() >= 24 {
        let namelen = u32_at(b, 16) as usize;
        let Some(name) = b.get(24..24 + namelen) else {
            break;
        };
        out.push(DirEntry {
            ino: u64_at(b, 0),
            next: u64_at(b, 8),
            kind: u32_at(b, 20) as u8,
            name: String::from_utf8_lossy(name).into_owned(),
        });
        let size = (24 + namelen).div_ceil(8) * 8;
        b = b.get(size..).unwrap_or(&[]);
    }
    out
}

/// `struct fuse_kstatfs` as the words of `struct statfs` after `f_type`:
/// bsize, blocks, bfree, bavail, files, ffree, namelen, frsize.
///
/// # Errors
/// EIO when short.
pub fn statfs(b: &[u8]) -> Result<[u64; 8], Errno> {
    if b.len() < 80 {
        return Err(Errno::Io);
    }
    Ok([
        u64::from(u32_at(b, 40)),
        u64_at(b, 0),
        u64_at(b, 8),
        u64_at(b, 16),
        u64_at(b, 24),
        u64_at(b, 32),
        u64::from(u32_at(b, 44)),
        u64::from(u32_at(b, 48)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let h = in_header(op::LOOKUP, 7, 42, 5);
        assert_eq!(u32_at(&h, 0), 45);
        assert_eq!(u32_at(&h, 4), op::LOOKUP);
        assert_eq!(u64_at(&h, 8), 42);
        assert_eq!(u64_at(&h, 16), 7);
        let mut reply = [0u8; 24];
        reply[0..4].copy_from_slice(&24u32.to_le_bytes());
        reply[8..16].copy_from_slice(&42u64.to_le_bytes());
        assert_eq!(out_header(&reply, 42, 24), Ok(8));
        assert_eq!(
            out_header(&reply, 43, 24),
            Err(Errno::Io),
            "another request's reply"
        );
        reply[4..8].copy_from_slice(&(-2i32).to_le_bytes());
        assert_eq!(out_header(&reply, 42, 24), Err(Errno::Noent));
        reply[4..8].copy_from_slice(&0i32.to_le_bytes());
        reply[0..4].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(
            out_header(&reply, 42, 24),
            Err(Errno::Io),
            "longer than written"
        );
    }

    #[test]
    fn entries_and_attributes() {
        let mut e = [0u8; ENTRY_OUT];
        e[0..8].copy_from_slice(&9u64.to_le_bytes());
        let a = &mut e[40..];
        a[0..8].copy_from_slice(&1234u64.to_le_bytes()); // ino
        a[8..16].copy_from_slice(&5000u64.to_le_bytes()); // size
        a[32..40].copy_from_slice(&1_700_000_000u64.to_le_bytes()); // mtime
        a[60..64].copy_from_slice(&0o100644u32.to_le_bytes());
        a[64..68].copy_from_slice(&2u32.to_le_bytes());
        let got = entry(&e).unwrap();
        assert_eq!(got.nodeid, 9);
        assert_eq!(
            (
                got.stat.ino,
                got.stat.size,
                got.stat.mode,
                got.stat.nlink,
                got.stat.mtime,
                got.stat.blksize
            ),
            (1234, 5000, 0o100644, 2, 1_700_000_000, 4096)
        );
        e[0..8].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(entry(&e), Err(Errno::Noent), "a negative entry");
        assert_eq!(entry(&e[..50]), Err(Errno::Io));
    }

    #[test]
    fn directory_entries_are_padded_to_eight_bytes() {
        let mut b = Vec::new();
        for (ino, name) in [(5u64, "a"), (6, "longer-name")] {
            b.extend_from_slice(&ino.to_le_bytes());
            b.extend_from_slice(&(ino + 100).to_le_bytes());
            b.extend_from_slice(&(name.len() as u32).to_le_bytes());
            b.extend_from_slice(&8u32.to_le_bytes());
            b.extend_from_slice(name.as_bytes());
            while b.len() % 8 != 0 {
                b.push(0);
            }
        }
        b.extend_from_slice(&[1, 2, 3]); // a torn tail
        let d = dirents(&b);
        assert_eq!(d.len(), 2);
        assert_eq!(
            (d[0].ino, d[0].next, d[0].kind, d[0].name.as_str()),
            (5, 105, 8, "a")
        );
        assert_eq!(d[1].name, "longer-name");
    }

    #[test]
    fn setattr_is_88_bytes() {
        let s = SetAttr {
            valid: fattr::SIZE,
            size: 77,
            ..SetAttr::default()
        };
        let a = s.encode();
        assert_eq!(a.0.len(), 88);
        assert_eq!(u64_at(&a.0, 16), 77);
        assert_eq!(io_in(1, 2, 3, 4).0.len(), 40);
        assert_eq!(init_in(0).0.len(), 16);
    }
}
