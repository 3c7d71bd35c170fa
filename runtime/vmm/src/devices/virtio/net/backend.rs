//! Where a NIC's frames go on the host: a stream socket carrying frames
//! behind a 4-byte big-endian length (the protocol of passt and of QEMU's
//! `-netdev stream`), or a tap device (one frame per read or write). Both
//! are non-blocking; output that does not fit is held and retried when the
//! descriptor becomes writable.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Largest frame either side may send (a 64 KiB MTU plus the Ethernet
/// header, with room to spare).
pub const MAX_FRAME: usize = 65_550 + 64;

/// A host-side frame transport.
pub trait Backend: Send {
    /// The descriptor the devices thread watches.
    fn fd(&self) -> RawFd;

    /// A second descriptor to watch for reading: it becomes readable when
    /// held output may go ([`crate::ha::gate`]); then [`Backend::woken`] is
    /// called and transmission retried.
    fn wake_fd(&self) -> Option<RawFd> {
        None
    }

    /// [`Backend::wake_fd`] became readable.
    fn woken(&mut self) {}

    /// The next frame received, if one is complete.
    ///
    /// # Errors
    /// When the peer is gone (EOF) or the descriptor fails.
    fn recv(&mut self) -> std::io::Result<Option<Vec<u8>>>;

    /// Sends one frame; `Ok(false)` when it cannot be taken now (the
    /// caller keeps it and retries once the descriptor is writable).
    ///
    /// # Errors
    /// When the peer is gone or the descriptor fails.
    fn send(&mut self, frame: &[u8]) -> std::io::Result<bool>;

    /// Whether output is held back, waiting for the descriptor to become
    /// writable.
    fn blocked(&self) -> bool;

    /// Retries held-back output; returns whether it all went.
    ///
    /// # Errors
    /// As for [`Backend::send`].
    fn flush(&mut self) -> std::io::Result<bool>;
}

/// Frames on a stream socket, each behind its length (passt).
pub struct StreamBackend<S> {
    socket: S,
    /// Bytes read, not yet a whole frame.
    input: Vec<u8>,
    /// Bytes to write that did not fit.
    output: Vec<u8>,
}

impl<S: Read + Write + AsRawFd + Send> StreamBackend<S> {
    /// Frames on `socket` (which must be non-blocking).
    pub fn new(socket: S) -> Self {
        Self {
            socket,
            input: Vec::new(),
            output: Vec::new(),
        }
    }

    /// A whole frame at the front of the input, taken off.
    fn frame(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        if self.input.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.input[0], self.input[1], self.input[2], self.input[3]])
            as usize;
        if len > MAX_FRAME {
            return Err(std::io::Error::new(
                ErrorKind::InvalidData,
                format!("the network backend sent a {len}-byte frame"),
            ));
        }
        if self.input.len() < 4 + len {
            return Ok(None);
        }
        let frame = self.input[4..4 + len].to_vec();
        self.input.drain(..4 + len);
        Ok(Some(frame))
    }
}

impl<S: Read + Write + AsRawFd + Send> Backend for StreamBackend<S> {
    fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    fn recv(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        if let Some(f) = self.frame()? {
            return Ok(Some(f));
        }
        let mut buf = [0u8; 64 * 1024];
        loop {
            match self.socket.read(&mut buf) {
                Ok(0) => {
                    return Err(std::io::Error::new(
                        ErrorKind::UnexpectedEof,
                        "the network backend closed its connection",
                    ))
                }
                Ok(n) => {
                    self.input.extend_from_slice(&buf[..n]);
                    if let Some(f) = self.frame()? {
                        return Ok(Some(f));
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn send(&mut self, frame: &[u8]) -> std::io::Result<bool> {
        if !self.output.is_empty() && !self.flush()? {
            return Ok(false);
        }
        let mut record = Vec::with_capacity(4 + frame.len());
        record.extend_from_slice(&(frame.len() as u32).to_be_bytes());
        record.extend_from_slice(frame);
        let mut done = 0;
        while done < record.len() {
            match self.socket.write(&record[done..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // A partly written record must be finished before any other: keep
        // the rest (the frame counts as sent).
        self.output.extend_from_slice(&record[done..]);
        Ok(true)
    }

    fn blocked(&self) -> bool {
        !self.output.is_empty()
    }

    fn flush(&mut self) -> std::io::Result<bool> {
        while !self.output.is_empty() {
            match self.socket.write(&self.output) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.output.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

/// Frames on a tap device (IFF_TAP | IFF_NO_PI: one frame per read/write).
pub struct TapBackend {
    fd: OwnedFd,
}

impl TapBackend {
    /// Frames on the open, non-blocking tap `fd`.
    pub fn new(fd: OwnedFd) -> Self {
        Self { fd }
    }
}

impl Backend for TapBackend {
    fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn recv(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; MAX_FRAME];
        loop {
            // SAFETY: reads at most `buf.len()` bytes into `buf` from the
            // tap descriptor this value owns.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                buf.truncate(n as usize);
                return Ok(Some(buf));
            }
            let e = std::io::Error::last_os_error();
            match e.kind() {
                ErrorKind::WouldBlock => return Ok(None),
                ErrorKind::Interrupted => {}
                _ => return Err(e),
            }
        }
    }

    fn send(&mut self, frame: &[u8]) -> std::io::Result<bool> {
        loop {
            // SAFETY: writes `frame` to the tap descriptor this value owns.
            let n = unsafe { libc::write(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
            if n >= 0 {
                return Ok(true);
            }
            let e = std::io::Error::last_os_error();
            match e.kind() {
                ErrorKind::WouldBlock => return Ok(false),
                ErrorKind::Interrupted => {}
                // A tap whose link is down drops frames (EIO): as a cable
                // would.
                _ if e.raw_os_error() == Some(libc::EIO) => return Ok(true),
                _ => return Err(e),
            }
        }
    }

    fn blocked(&self) -> bool {
        false
    }

    fn flush(&mut self) -> std::io::Result<bool> {
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn pair() -> (StreamBackend<UnixStream>, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (StreamBackend::new(a), b)
    }

    #[test]
    fn frames_travel_behind_their_length() {
        let (mut backend, mut peer) = pair();
        assert!(backend.send(b"frame one").unwrap());
        let mut got = [0u8; 13];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got[..4], &9u32.to_be_bytes());
        assert_eq!(&got[4..], b"frame one");
        // Two frames, the second split across writes.
        peer.write_all(&3u32.to_be_bytes()).unwrap();
        peer.write_all(b"abc\x00\x00").unwrap();
        assert_eq!(backend.recv().unwrap().unwrap(), b"abc");
        assert_eq!(backend.recv().unwrap(), None);
        peer.write_all(b"\x00\x02xy").unwrap();
        assert_eq!(backend.recv().unwrap().unwrap(), b"xy");
    }

    #[test]
    fn a_lying_length_is_an_error_not_an_allocation() {
        let (mut backend, mut peer) = pair();
        peer.write_all(&u32::MAX.to_be_bytes()).unwrap();
        assert!(backend.recv().is_err());
    }

    #[test]
    fn a_closed_peer_is_an_error() {
        let (mut backend, peer) = pair();
        drop(peer);
        assert!(backend.recv().is_err());
    }

    #[test]
    fn output_that_does_not_fit_is_held_then_flushed() {
        let (mut backend, mut peer) = pair();
        let frame = vec![7u8; 60_000];
        let mut sent = 0;
        while backend.send(&frame).unwrap() {
            sent += 1;
            if backend.blocked() {
                break;
            }
        }
        assert!(backend.blocked() || sent > 0);
        // Drain the peer; the held part goes out.
        peer.set_nonblocking(true).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0;
        loop {
            while let Ok(n) = peer.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n;
            }
            if backend.flush().unwrap() {
                break;
            }
        }
        while let Ok(n) = peer.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
        }
        assert_eq!(total, sent * (4 + frame.len()));
    }
}
