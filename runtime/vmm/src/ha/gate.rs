//! Output held until the standby has the state that produced it (Remus's
//! rule): a frame the guest sends while checkpoint N is being made goes
//! out only once the standby acknowledged checkpoint N. A client therefore
//! never sees an answer the standby could not give again after failover.
//!
//! The gate sits between the NIC and its host backend ([`GatedBackend`]).
//! The devices thread alone writes to the backend: when a checkpoint is
//! acknowledged, the gate wakes it through an eventfd and it sends what
//! was released. The program's console output (stdout, stderr) is held
//! the same way ([`HeldWriter`]) and written out by whoever releases it:
//! after a failover the standby's console goes on from the last output the
//! primary's showed, without repeating a line.

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::devices::virtio::net::Backend;

/// Output waiting for its checkpoint: the NIC's frames and the program's
/// console bytes.
pub struct OutputGate {
    inner: Mutex<Held>,
    wake: EventFd,
    console: Mutex<HeldConsole>,
}

/// Console output waiting for its checkpoint, and where it goes then.
#[derive(Default)]
struct HeldConsole {
    /// (checkpoint, stream, bytes), oldest first.
    waiting: VecDeque<(u64, usize, Vec<u8>)>,
    /// Where stdout (0) and stderr (1) go once released.
    sinks: [Option<Box<dyn Write + Send>>; 2],
}

#[derive(Default)]
struct Held {
    /// The checkpoint the next frame belongs to.
    epoch: u64,
    /// Frames not released yet, with their checkpoint, oldest first.
    waiting: VecDeque<(u64, Vec<u8>)>,
    /// Frames released, not yet taken by the backend, oldest first.
    released: VecDeque<Vec<u8>>,
    /// The gate stands open: the standby is gone (or the run ended), so
    /// frames pass at once.
    open: bool,
    /// Frames held so far, and the most held at once (for the report).
    total: u64,
    peak: usize,
}

fn lock(m: &Mutex<Held>) -> MutexGuard<'_, Held> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock_console(m: &Mutex<HeldConsole>) -> MutexGuard<'_, HeldConsole> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A console sink whose bytes wait at the gate for their checkpoint.
pub struct HeldWriter {
    gate: Arc<OutputGate>,
    stream: usize,
}

impl Write for HeldWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        // The console lock first: `open` sets the flag, then flushes under
        // this lock, so bytes queued here are never left behind.
        let mut console = lock_console(&self.gate.console);
        let (epoch, open) = {
            let held = lock(&self.gate.inner);
            (held.epoch, held.open)
        };
        if open && console.waiting.is_empty() {
            if let Some(sink) = console.sinks.get_mut(self.stream).and_then(Option::as_mut) {
                return sink.write_all(bytes).map(|()| bytes.len());
            }
        }
        console
            .waiting
            .push_back((epoch, self.stream, bytes.to_vec()));
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl OutputGate {
    /// A closed gate whose first frames belong to checkpoint 1.
    ///
    /// # Errors
    /// When the wake-up eventfd cannot be made.
    pub fn new() -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            inner: Mutex::new(Held {
                epoch: 1,
                ..Held::default()
            }),
            wake: EventFd::new(EFD_NONBLOCK)?,
            console: Mutex::new(HeldConsole::default()),
        }))
    }

    /// A writer for console stream `stream` (0 stdout, 1 stderr) whose
    /// bytes go to `sink` once their checkpoint is acknowledged (both
    /// console devices write the same process streams: the sink given last
    /// serves every writer of the stream).
    pub fn hold_console(
        self: &Arc<Self>,
        stream: usize,
        sink: Box<dyn Write + Send>,
    ) -> HeldWriter {
        if let Some(slot) = lock_console(&self.console).sinks.get_mut(stream) {
            *slot = Some(sink);
        }
        HeldWriter {
            gate: self.clone(),
            stream,
        }
    }

    /// Writes out the held console output of checkpoints up to `epoch`
    /// (all of it: `None`).
    fn release_console(&self, epoch: Option<u64>) {
        let mut console = lock_console(&self.console);
        while console
            .waiting
            .front()
            .is_some_and(|(e, _, _)| epoch.is_none_or(|n| *e <= n))
        {
            let Some((_, stream, bytes)) = console.waiting.pop_front() else {
                break;
            };
            if let Some(sink) = console.sinks.get_mut(stream).and_then(Option::as_mut) {
                // A closed pipe drops output, as the console does.
                let _ = sink.write_all(&bytes).and_then(|()| sink.flush());
            }
        }
    }

    /// Ends the current checkpoint's output (called with every vCPU parked
    /// and every device locked); returns its number.
    pub fn seal(&self) -> u64 {
        let mut held = lock(&self.inner);
        let sealed = held.epoch;
        held.epoch += 1;
        sealed
    }

    /// The standby has checkpoint `epoch`: its output (and older) may go.
    pub fn release(&self, epoch: u64) {
        let mut held = lock(&self.inner);
        let mut moved = false;
        while held.waiting.front().is_some_and(|(e, _)| *e <= epoch) {
            if let Some((_, frame)) = held.waiting.pop_front() {
                held.released.push_back(frame);
                moved = true;
            }
        }
        drop(held);
        if moved {
            let _ = self.wake.write(1);
        }
        self.release_console(Some(epoch));
    }

    /// Lets everything through from now on (the standby is gone): what
    /// waits is released.
    pub fn open(&self) {
        let mut held = lock(&self.inner);
        held.open = true;
        while let Some((_, frame)) = held.waiting.pop_front() {
            held.released.push_back(frame);
        }
        drop(held);
        let _ = self.wake.write(1);
        self.release_console(None);
    }

    /// Frames held in all, and the most held at once.
    pub fn held(&self) -> (u64, usize) {
        let held = lock(&self.inner);
        (held.total, held.peak)
    }

    /// Keeps `frame` until its checkpoint is acknowledged (behind the
    /// released ones when the gate stands open).
    fn hold(&self, frame: &[u8]) {
        let mut held = lock(&self.inner);
        if held.open {
            held.released.push_back(frame.to_vec());
            return;
        }
        let epoch = held.epoch;
        held.waiting.push_back((epoch, frame.to_vec()));
        held.total += 1;
        held.peak = held.peak.max(held.waiting.len());
    }
}

/// Whether `frame` is an Ethernet frame carrying ARP.
fn is_arp(frame: &[u8]) -> bool {
    frame.get(12..14) == Some(&[0x08, 0x06][..])
}

/// A NIC backend whose output passes the gate.
pub struct GatedBackend {
    inner: Box<dyn Backend>,
    gate: Arc<OutputGate>,
}

impl GatedBackend {
    /// `inner`, gated by `gate`.
    pub fn new(inner: Box<dyn Backend>, gate: Arc<OutputGate>) -> Self {
        Self { inner, gate }
    }

    /// Sends released frames in order; false when the backend took no more.
    fn send_released(&mut self) -> std::io::Result<bool> {
        loop {
            let Some(frame) = lock(&self.gate.inner).released.pop_front() else {
                return Ok(true);
            };
            if !self.inner.send(&frame)? {
                lock(&self.gate.inner).released.push_front(frame);
                return Ok(false);
            }
        }
    }
}

impl Backend for GatedBackend {
    fn fd(&self) -> RawFd {
        self.inner.fd()
    }

    fn wake_fd(&self) -> Option<RawFd> {
        Some(self.gate.wake.as_raw_fd())
    }

    fn woken(&mut self) {
        let _ = self.gate.wake.read();
    }

    fn recv(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        self.inner.recv()
    }

    fn send(&mut self, frame: &[u8]) -> std::io::Result<bool> {
        let open = {
            let held = lock(&self.gate.inner);
            held.open && held.released.is_empty()
        };
        // ARP says only which MAC has which address — no state of the
        // program — and the backend learns the guest's MAC from it: held,
        // the first connections of a new VM went to a MAC passt did not
        // know yet and were lost.
        if open || is_arp(frame) {
            if self.inner.send(frame)? {
                return Ok(true);
            }
            lock(&self.gate.inner).released.push_back(frame.to_vec());
            return Ok(true);
        }
        self.gate.hold(frame);
        Ok(true)
    }

    fn blocked(&self) -> bool {
        self.inner.blocked() || !lock(&self.gate.inner).released.is_empty()
    }

    fn flush(&mut self) -> std::io::Result<bool> {
        if !self.inner.flush()? {
            return Ok(false);
        }
        if !self.send_released()? {
            return Ok(false);
        }
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::net::StreamBackend;
    use std::io::Read;

    use crate::devices::virtio::test_utils::Sink;

    #[test]
    fn console_output_waits_for_its_checkpoint_and_keeps_its_order() {
        let gate = OutputGate::new().unwrap();
        let (out, err) = (Sink::default(), Sink::default());
        let mut stdout = gate.hold_console(0, Box::new(out.clone()));
        let mut stderr = gate.hold_console(1, Box::new(err.clone()));
        stdout.write_all(b"one\n").unwrap();
        stderr.write_all(b"warn\n").unwrap();
        let first = gate.seal();
        stdout.write_all(b"two\n").unwrap();
        assert!(out.0.lock().unwrap().is_empty());
        gate.release(first);
        assert_eq!(&*out.0.lock().unwrap(), b"one\n");
        assert_eq!(&*err.0.lock().unwrap(), b"warn\n");
        gate.open();
        assert_eq!(&*out.0.lock().unwrap(), b"one\ntwo\n");
        stdout.write_all(b"three\n").unwrap();
        assert_eq!(&*out.0.lock().unwrap(), b"one\ntwo\nthree\n");
    }
    use std::os::unix::net::UnixStream;

    fn gated() -> (GatedBackend, Arc<OutputGate>, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        let gate = OutputGate::new().unwrap();
        (
            GatedBackend::new(Box::new(StreamBackend::new(a)), gate.clone()),
            gate,
            b,
        )
    }

    fn received(peer: &mut UnixStream) -> Vec<u8> {
        let mut buf = vec![0u8; 4096];
        match peer.read(&mut buf) {
            Ok(n) => buf[..n].to_vec(),
            Err(_) => Vec::new(),
        }
    }

    #[test]
    fn frames_wait_for_the_checkpoint_that_covers_them() {
        let (mut backend, gate, mut peer) = gated();
        assert!(backend.send(b"one").unwrap());
        let first = gate.seal();
        assert!(backend.send(b"two").unwrap());
        // Nothing goes before the acknowledgement.
        assert!(!backend.blocked());
        assert!(received(&mut peer).is_empty());
        gate.release(first);
        assert!(backend.blocked(), "released frames wait for the backend");
        assert!(backend.flush().unwrap());
        assert_eq!(received(&mut peer), b"\0\0\0\x03one");
        // "two" belongs to the next checkpoint.
        gate.release(gate.seal());
        assert!(backend.flush().unwrap());
        assert_eq!(received(&mut peer), b"\0\0\0\x03two");
        assert_eq!(gate.held(), (2, 2));
    }

    #[test]
    fn arp_is_not_held() {
        let (mut backend, _gate, mut peer) = gated();
        let mut arp = vec![0xffu8; 12];
        arp.extend_from_slice(&[0x08, 0x06, 0, 1]);
        assert!(backend.send(&arp).unwrap());
        assert_eq!(&received(&mut peer)[4..], &arp[..]);
    }

    #[test]
    fn an_open_gate_lets_frames_through_in_order() {
        let (mut backend, gate, mut peer) = gated();
        assert!(backend.send(b"held").unwrap());
        gate.open();
        assert!(backend.send(b"after").unwrap());
        assert!(backend.flush().unwrap());
        assert_eq!(received(&mut peer), b"\0\0\0\x04held\0\0\0\x05after");
    }
}
