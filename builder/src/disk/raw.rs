//! The raw disk being built: a sparse file, and a window onto one of its
//! partitions that the FAT writer sees as a whole device.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

/// A raw disk image in a (sparse) file.
pub struct RawDisk {
    file: File,
    size: u64,
}

impl RawDisk {
    /// A disk of `size` bytes in `file`, which is truncated to that size.
    ///
    /// # Errors
    /// When the file cannot be resized.
    pub fn new(file: File, size: u64) -> io::Result<Self> {
        file.set_len(0)?;
        file.set_len(size)?;
        Ok(Self { file, size })
    }

    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The file holding it.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// `[start, start+len)` of the disk as a device of its own.
    pub fn window(&self, start: u64, len: u64) -> Window<'_> {
        Window {
            file: &self.file,
            start,
            len,
            pos: 0,
        }
    }

    /// Chunk `index` of `chunk` bytes (zero-padded past the end).
    ///
    /// # Errors
    /// When reading fails.
    pub fn chunk(&self, index: u64, chunk: u64) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; chunk as usize];
        let start = index * chunk;
        let len = chunk.min(self.size.saturating_sub(start)) as usize;
        self.file.read_exact_at(&mut buf[..len], start)?;
        Ok(buf)
    }

    /// The indices of the `chunk`-byte chunks holding any non-zero byte.
    ///
    /// # Errors
    /// When reading fails.
    pub fn nonzero_chunks(&self, chunk: u64) -> io::Result<Vec<u64>> {
        let mut out = Vec::new();
        for index in 0..self.size.div_ceil(chunk) {
            if self.chunk(index, chunk)?.iter().any(|&b| b != 0) {
                out.push(index);
            }
        }
        Ok(out)
    }
}

/// A byte range of a [`RawDisk`] with its own position: reads, writes and
/// seeks stay inside it.
pub struct Window<'a> {
    file: &'a File,
    start: u64,
    len: u64,
    pos: u64,
}

impl Read for Window<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        let got = self.file.read_at(&mut buf[..n], self.start + self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Write for Window<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.len.saturating_sub(self.pos)) as usize;
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        let put = self.file.write_at(&buf[..n], self.start + self.pos)?;
        self.pos += put as u64;
        Ok(put)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Window<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match target {
            Some(t) if t <= self.len => {
                self.pos = t;
                Ok(t)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek outside the partition",
            )),
        }
    }
}
