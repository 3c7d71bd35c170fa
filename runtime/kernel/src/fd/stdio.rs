//! The standard streams: stdin at end-of-file, stdout and stderr to the
//! host's. They look like pipes (S_IFIFO, not terminals), which is what a
//! program sees when a container runtime or a test harness collects its
//! output, so its buffering matches such a run.

use alloc::sync::Arc;

use kiln_kernel::errno::Errno;
use kiln_kernel::fs::stat::{mode, Stat};

use super::{flags, poll, FileOps};
use crate::console::{self, Stream};

/// Standard input: always at end-of-file.
pub struct Stdin;

/// Standard output or error.
pub struct Output(pub Stream);

fn pipe_stat(ino: u64) -> Stat {
    Stat {
        dev: 0x0c,
        ino,
        mode: mode::S_IFIFO | 0o600,
        nlink: 1,
        blksize: 4096,
        ..Stat::default()
    }
}

impl FileOps for Stdin {
    fn read(&self, _buf: &mut [u8]) -> Result<usize, Errno> {
        Ok(0)
    }

    fn stat(&self) -> Stat {
        pipe_stat(1)
    }

    fn poll(&self, events: u16) -> u16 {
        (events & poll::POLLIN) | poll::POLLHUP
    }

    fn pollable(&self) -> bool {
        true
    }
}

impl FileOps for Output {
    fn write(&self, buf: &[u8]) -> Result<usize, Errno> {
        console::write(self.0, buf);
        Ok(buf.len())
    }

    fn stat(&self) -> Stat {
        pipe_stat(if self.0 == Stream::Stdout { 2 } else { 3 })
    }

    fn poll(&self, events: u16) -> u16 {
        events & poll::POLLOUT
    }

    fn pollable(&self) -> bool {
        true
    }

    fn status_flags(&self) -> u32 {
        flags::O_WRONLY
    }
}

/// stdin, stdout, stderr.
pub fn standard_streams() -> [Arc<dyn FileOps>; 3] {
    [
        Arc::new(Stdin),
        Arc::new(Output(Stream::Stdout)),
        Arc::new(Output(Stream::Stderr)),
    ]
}
