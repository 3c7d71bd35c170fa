//! Standard input for the console: a reader thread does blocking reads of
//! the host descriptor (a pipe, a terminal, a regular file — epoll cannot
//! wait on the last, and making a shared descriptor non-blocking would
//! leak into the user's shell) and hands chunks to the devices thread
//! through a bounded channel, which is the backpressure: when the guest
//! does not read, the reader stops reading.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc::{sync_channel, Receiver, TryRecvError};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Bytes per read of the host descriptor.
const CHUNK: usize = 16 * 1024;
/// Chunks in flight between the reader and the device.
const DEPTH: usize = 4;

/// What the console's standard input reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InputSource {
    /// Nothing: the program reads end of file at once (`docker run`
    /// without `-i`).
    #[default]
    Closed,
    /// The host descriptor `fd` (kiln's own standard input, with `-i`).
    Host(RawFd),
}

/// Chunks of input on their way to the guest.
pub struct Input {
    /// Signalled when chunks (or the end) arrived.
    ready: EventFd,
    chunks: Option<Receiver<Vec<u8>>>,
    ended: bool,
}

impl Input {
    /// Starts reading `source`.
    ///
    /// # Errors
    /// When the eventfd or the reader thread cannot be created.
    pub fn start(source: InputSource) -> std::io::Result<Self> {
        let ready = EventFd::new(EFD_NONBLOCK)?;
        let InputSource::Host(fd) = source else {
            return Ok(Self {
                ready,
                chunks: None,
                ended: true,
            });
        };
        let (tx, rx) = sync_channel::<Vec<u8>>(DEPTH);
        let wake = ready.try_clone()?;
        std::thread::Builder::new()
            .name("kiln-stdin".into())
            .spawn(move || {
                crate::stop::block_vcpu_signals();
                read_until_end(fd, &tx, &wake)
            })?;
        Ok(Self {
            ready,
            chunks: Some(rx),
            ended: false,
        })
    }
}

/// The reader thread: reads `fd` until its end, sending chunks.
fn read_until_end(fd: RawFd, tx: &std::sync::mpsc::SyncSender<Vec<u8>>, wake: &EventFd) {
    loop {
        let mut buf = vec![0u8; CHUNK];
        // SAFETY: `buf` has CHUNK writable bytes; `fd` is the
        // caller's descriptor, open for the VMM's lifetime (its
        // standard input).
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), CHUNK) };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        // End of input (or an error, which ends it too): an empty chunk.
        buf.truncate(n.max(0) as usize);
        let end = buf.is_empty();
        if tx.send(buf).is_err() {
            return; // the device is gone
        }
        let _ = wake.write(1);
        if end {
            return;
        }
    }
}

impl Input {
    /// The descriptor the devices thread waits on.
    pub fn ready_fd(&self) -> RawFd {
        self.ready.as_raw_fd()
    }

    /// Takes up to `max` chunks that arrived (the rest wait in the
    /// channel, holding the reader back).
    pub fn take(&mut self, max: usize) -> Vec<Vec<u8>> {
        let _ = self.ready.read();
        let mut out = Vec::new();
        if let Some(rx) = &self.chunks {
            while out.len() < max {
                match rx.try_recv() {
                    Ok(chunk) if chunk.is_empty() => {
                        self.ended = true;
                        break;
                    }
                    Ok(chunk) => out.push(chunk),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.ended = true;
                        break;
                    }
                }
            }
        }
        out
    }

    /// Whether the input has ended (all chunks taken).
    pub fn ended(&self) -> bool {
        self.ended
    }
}
