//! File metadata in the layouts the Linux x86-64 ABI uses: `struct stat`
//! (fstat, newfstatat) and `struct statx`.

/// File type bits of `st_mode` (`include/uapi/linux/stat.h`).
#[allow(missing_docs)]
pub mod mode {
    pub const S_IFIFO: u32 = 0o010000;
    pub const S_IFCHR: u32 = 0o020000;
    pub const S_IFBLK: u32 = 0o060000;
    pub const S_IFDIR: u32 = 0o040000;
    pub const S_IFREG: u32 = 0o100000;
    pub const S_IFLNK: u32 = 0o120000;
    pub const S_IFSOCK: u32 = 0o140000;
}

/// What the kernel knows about a file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    /// Device of the file system.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Type and permission bits.
    pub mode: u32,
    /// Link count.
    pub nlink: u64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number, for device files.
    pub rdev: u64,
    /// Size in bytes.
    pub size: u64,
    /// Preferred I/O size.
    pub blksize: u64,
    /// Modification (and change and access) time, seconds.
    pub mtime: u64,
}

/// Linux's `makedev`.
pub fn makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xfff) << 8) | (minor & 0xff) | ((minor & !0xff) << 12) | ((major & !0xfff) << 32)
}

fn put(out: &mut [u8], at: usize, bytes: &[u8]) {
    out[at..at + bytes.len()].copy_from_slice(bytes);
}

impl Stat {
    /// 512-byte blocks, as `st_blocks` counts them.
    pub fn blocks(&self) -> u64 {
        self.size.div_ceil(512)
    }

    /// The x86-64 `struct stat` (144 bytes).
    pub fn to_stat(&self) -> [u8; 144] {
        let mut st = [0u8; 144];
        put(&mut st, 0, &self.dev.to_le_bytes());
        put(&mut st, 8, &self.ino.to_le_bytes());
        put(&mut st, 16, &self.nlink.to_le_bytes());
        put(&mut st, 24, &self.mode.to_le_bytes());
        put(&mut st, 28, &self.uid.to_le_bytes());
        put(&mut st, 32, &self.gid.to_le_bytes());
        put(&mut st, 40, &self.rdev.to_le_bytes());
        put(&mut st, 48, &self.size.to_le_bytes());
        put(&mut st, 56, &self.blksize.to_le_bytes());
        put(&mut st, 64, &self.blocks().to_le_bytes());
        for at in [72, 88, 104] {
            put(&mut st, at, &self.mtime.to_le_bytes()); // atime, mtime, ctime
        }
        st
    }

    /// `struct statx` (256 bytes) with the basic fields valid.
    pub fn to_statx(&self) -> [u8; 256] {
        const STATX_BASIC_STATS: u32 = 0x7ff;
        let mut sx = [0u8; 256];
        put(&mut sx, 0, &STATX_BASIC_STATS.to_le_bytes());
        put(&mut sx, 4, &(self.blksize as u32).to_le_bytes());
        put(&mut sx, 16, &(self.nlink as u32).to_le_bytes());
        put(&mut sx, 20, &self.uid.to_le_bytes());
        put(&mut sx, 24, &self.gid.to_le_bytes());
        put(&mut sx, 28, &(self.mode as u16).to_le_bytes());
        put(&mut sx, 32, &self.ino.to_le_bytes());
        put(&mut sx, 40, &self.size.to_le_bytes());
        put(&mut sx, 48, &self.blocks().to_le_bytes());
        for at in [64, 80, 96, 112] {
            put(&mut sx, at, &self.mtime.to_le_bytes()); // atime, btime, ctime, mtime
        }
        put(
            &mut sx,
            128,
            &((self.rdev >> 8) as u32 & 0xfff).to_le_bytes(),
        );
        put(&mut sx, 132, &(self.rdev as u32 & 0xff).to_le_bytes());
        put(
            &mut sx,
            136,
            &((self.dev >> 8) as u32 & 0xfff).to_le_bytes(),
        );
        put(&mut sx, 140, &(self.dev as u32 & 0xff).to_le_bytes());
        sx
    }
}

/// One `struct linux_dirent64` record for getdents64: `d_ino`, `d_off`,
/// `d_reclen`, `d_type`, the NUL-terminated name, padded to 8 bytes.
pub fn dirent64(ino: u64, next: u64, d_type: u8, name: &[u8]) -> alloc::vec::Vec<u8> {
    let len = (19 + name.len() + 1).div_ceil(8) * 8;
    let mut r = alloc::vec![0u8; len];
    put(&mut r, 0, &ino.to_le_bytes());
    put(&mut r, 8, &next.to_le_bytes());
    put(&mut r, 16, &(len as u16).to_le_bytes());
    r[18] = d_type;
    put(&mut r, 19, name);
    r
}

/// `d_type` values.
#[allow(missing_docs)]
pub mod dtype {
    pub const DT_FIFO: u8 = 1;
    pub const DT_CHR: u8 = 2;
    pub const DT_DIR: u8 = 4;
    pub const DT_REG: u8 = 8;
    pub const DT_LNK: u8 = 10;
    pub const DT_SOCK: u8 = 12;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_layout_matches_the_abi() {
        let s = Stat {
            ino: 7,
            mode: mode::S_IFREG | 0o644,
            size: 1000,
            nlink: 1,
            blksize: 4096,
            ..Default::default()
        };
        let b = s.to_stat();
        assert_eq!(u64::from_le_bytes(b[8..16].try_into().unwrap()), 7);
        assert_eq!(u32::from_le_bytes(b[24..28].try_into().unwrap()), 0o100644);
        assert_eq!(u64::from_le_bytes(b[48..56].try_into().unwrap()), 1000);
        assert_eq!(u64::from_le_bytes(b[64..72].try_into().unwrap()), 2);
        let x = s.to_statx();
        assert_eq!(u16::from_le_bytes(x[28..30].try_into().unwrap()), 0o100644);
        assert_eq!(u64::from_le_bytes(x[40..48].try_into().unwrap()), 1000);
    }

    #[test]
    fn dirents_are_aligned() {
        let d = dirent64(1, 2, dtype::DT_REG, b"hello");
        assert_eq!(d.len(), 32);
        assert_eq!(u16::from_le_bytes([d[16], d[17]]), 32);
        assert_eq!(&d[19..25], b"hello\0");
        assert_eq!(makedev(1, 3), 0x103);
    }
}
