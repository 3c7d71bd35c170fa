//! The console device: output chains go to a host stream, input (when the
//! console has any) fills the guest's receive buffers. The end of input is
//! a receive buffer returned with length 0, which kiln's kernel reads as
//! end of file.

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::GuestMem;
use kiln_boot::virtio_id;
use virtio_queue::Queue;

use super::input::Input;
use super::{F_SIZE, QUEUE_SIZE, RX_QUEUE, TX_QUEUE};
use crate::devices::virtio::device::{Active, Traffic};
use crate::devices::virtio::queue::{self, Chain};
use crate::devices::virtio::{Interrupt, QueueError, VirtioDevice};
use crate::terminal::Resizes;

/// Input bytes kept waiting for guest buffers before the reader is held
/// back.
const PENDING_LIMIT: usize = 16 * 1024;

/// How long the console keeps looking at its output queue on the poll
/// timer, without kicks, after output last came. A program's output comes
/// in bursts (busybox-sh: seven lines within a millisecond); each kick is
/// a write the host emulates while the guest waits, and wakes the devices
/// thread on another CPU.
const OUTPUT_QUIET: Duration = Duration::from_millis(1);

/// Where a console's output goes.
pub type Output = Box<dyn Write + Send>;

/// A virtio console.
pub struct Console {
    // virtio state
    active: Option<Active>,
    // this device
    output: Output,
    /// Output went to a closed pipe: later output is dropped, as a
    /// program's writes to a closed pipe are.
    output_closed: bool,
    input: Option<Input>,
    /// Input read from the host, not yet in a guest buffer.
    pending: VecDeque<u8>,
    /// The zero-length buffer that says "end of input" was delivered.
    eof_delivered: bool,
    /// Terminal size (columns, rows), 0 when not a terminal.
    size: (u16, u16),
    /// The host terminal's resizes, followed.
    resizes: Option<Resizes>,
    traffic: Traffic,
    first_output: Option<std::time::Instant>,
    /// The guest was asked not to kick the output queue: the poll timer
    /// looks at it until this moment passes with no output.
    output_polled_until: Option<Instant>,
    /// How long the output queue stays polled after output
    /// ([`OUTPUT_QUIET`]; longer in tests, which must not depend on how
    /// fast the machine runs them).
    output_quiet: Duration,
}

impl Console {
    /// A console writing to `output` and reading `input` (None: an output-
    /// only console, such as the one for standard error).
    pub fn new(output: Output, input: Option<Input>) -> Self {
        Self {
            active: None,
            output,
            output_closed: false,
            input,
            pending: VecDeque::new(),
            eof_delivered: false,
            size: (0, 0),
            resizes: None,
            traffic: Traffic::default(),
            first_output: None,
            output_polled_until: None,
            output_quiet: OUTPUT_QUIET,
        }
    }

    /// The same console, its output queue polled for `quiet` after output.
    #[cfg(test)]
    pub fn with_output_quiet(mut self, quiet: Duration) -> Self {
        self.output_quiet = quiet;
        self
    }

    /// Sets the terminal size the guest reads (and tells it when running).
    ///
    /// # Errors
    /// When the interrupt cannot be signalled.
    pub fn set_size(&mut self, cols: u16, rows: u16) -> std::io::Result<()> {
        self.size = (cols, rows);
        match &self.active {
            Some(a) => a.interrupt.config_change(),
            None => Ok(()),
        }
    }

    /// Follows the host terminal's size from now on.
    pub fn follow_resizes(&mut self, resizes: Resizes) {
        self.resizes = Some(resizes);
    }

    /// Writes the guest's queued output to the host stream now (at the end
    /// of the VM, and before the kernel's own messages, so nothing is lost
    /// or reordered).
    ///
    /// # Errors
    /// As for [`VirtioDevice::process_queue`].
    pub fn flush_output(&mut self) -> Result<(), QueueError> {
        self.transmit().map(|_| ())
    }

    /// The guest kicked the output queue (or a restored device looks at
    /// it once): output goes out, and while it keeps coming the guest is
    /// asked not to kick — the poll timer takes it ([`Console::poll`]).
    fn output_kicked(&mut self) -> Result<(), QueueError> {
        if self.transmit()? {
            self.poll_output()
        } else if self.output_polled_until.is_none() {
            // A snapshot saved while the output queue was polled left the
            // guest asked not to kick.
            self.ask_for_output_kicks()
        } else {
            Ok(())
        }
    }

    /// Looks at the output queue on the poll timer from now until
    /// [`OUTPUT_QUIET`] passes without output.
    fn poll_output(&mut self) -> Result<(), QueueError> {
        if self.output_polled_until.is_none() {
            if let Some(a) = self.active.as_mut() {
                a.ask_for_kicks(TX_QUEUE, false)?;
            }
        }
        self.output_polled_until = Some(Instant::now() + self.output_quiet);
        Ok(())
    }

    /// Asks the guest to kick the output queue again; output it offered
    /// before it saw that (with no kick) goes out now, and polling goes on.
    fn ask_for_output_kicks(&mut self) -> Result<(), QueueError> {
        self.output_polled_until = None;
        let Some(a) = self.active.as_mut() else {
            return Ok(());
        };
        if a.ask_for_kicks(TX_QUEUE, true)? {
            self.output_kicked()?;
        }
        Ok(())
    }

    /// Moves the output chains offered so far to the host stream; returns
    /// whether there were any.
    fn transmit(&mut self) -> Result<bool, QueueError> {
        let Some(a) = self.active.as_mut() else {
            return Ok(false);
        };
        let mut used = false;
        while let Some(chain) = queue::pop(&mut a.queues[TX_QUEUE], &a.mem, TX_QUEUE)? {
            let data = chain.read_all(&a.mem, TX_QUEUE)?;
            self.traffic.from_guest += data.len() as u64;
            if !data.is_empty() && self.first_output.is_none() {
                self.first_output = Some(std::time::Instant::now());
            }
            if !self.output_closed {
                match self
                    .output
                    .write_all(&data)
                    .and_then(|()| self.output.flush())
                {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                        self.output_closed = true
                    }
                    Err(e) => return Err(QueueError::Host(e)),
                }
            }
            queue::complete(&mut a.queues[TX_QUEUE], &a.mem, TX_QUEUE, chain.head, 0)?;
            used = true;
        }
        a.signal_used(TX_QUEUE, used)?;
        Ok(used)
    }

    /// Moves pending input (and then the end of input) into the guest's
    /// receive buffers.
    fn receive(&mut self) -> Result<(), QueueError> {
        if let Some(input) = self.input.as_mut() {
            // Take more only when little is pending: what stays in the
            // channel holds the reader back until the guest reads.
            let room = usize::from(self.pending.len() < PENDING_LIMIT);
            for c in input.take(room) {
                self.pending.extend(c);
            }
        }
        let ended = self.input.as_ref().is_none_or(Input::ended);
        let Some(a) = self.active.as_mut() else {
            return Ok(());
        };
        let mut used = false;
        loop {
            let eof_now = self.pending.is_empty() && ended && !self.eof_delivered;
            if self.pending.is_empty() && !eof_now {
                break;
            }
            let Some(chain): Option<Chain> = queue::pop(&mut a.queues[RX_QUEUE], &a.mem, RX_QUEUE)?
            else {
                break;
            };
            let room = chain.writable_len();
            if room == 0 {
                return Err(QueueError::Chain {
                    queue: RX_QUEUE,
                    reason: "a receive buffer has no writable descriptor",
                });
            }
            let take = room.min(self.pending.len());
            let bytes: Vec<u8> = self.pending.drain(..take).collect();
            let n = chain.write_all(&a.mem, RX_QUEUE, &bytes)?;
            self.traffic.to_guest += n as u64;
            queue::complete(
                &mut a.queues[RX_QUEUE],
                &a.mem,
                RX_QUEUE,
                chain.head,
                n as u32,
            )?;
            if eof_now {
                self.eof_delivered = true;
            }
            used = true;
        }
        a.signal_used(RX_QUEUE, used)?;
        Ok(())
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        virtio_id::CONSOLE
    }

    fn name(&self) -> &'static str {
        "console"
    }

    fn queue_max_sizes(&self) -> &'static [u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        // The size only means something on a terminal; elsewhere the
        // guest would read 0x0 (each configuration read is an exit).
        if self.size != (0, 0) || self.resizes.is_some() {
            F_SIZE
        } else {
            0
        }
    }

    /// `struct virtio_console_config { le16 cols; le16 rows; le32
    /// max_nr_ports; le32 emerg_wr; }`.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut config = [0u8; 12];
        config[0..2].copy_from_slice(&self.size.0.to_le_bytes());
        config[2..4].copy_from_slice(&self.size.1.to_le_bytes());
        config[4..8].copy_from_slice(&1u32.to_le_bytes());
        crate::devices::virtio::device::read_config_bytes(&config, offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMem,
        queues: Vec<Queue>,
        interrupt: Arc<Interrupt>,
        _features: u64,
    ) -> Result<(), QueueError> {
        self.active = Some(Active {
            mem,
            queues,
            interrupt,
        });
        // Input may have arrived before the driver was ready.
        self.receive()
    }

    fn reset(&mut self) {
        self.active = None;
        self.output_polled_until = None;
    }

    fn snapshot_queues(&self) -> Option<&[Queue]> {
        self.active.as_ref().map(|a| a.queues.as_slice())
    }

    fn process_queue(&mut self, index: usize) -> Result<(), QueueError> {
        match index {
            RX_QUEUE => self.receive(),
            TX_QUEUE => self.output_kicked(),
            _ => Ok(()),
        }
    }

    fn polling(&self) -> bool {
        self.output_polled_until.is_some()
    }

    fn poll(&mut self) -> Result<(), QueueError> {
        let Some(until) = self.output_polled_until else {
            return Ok(());
        };
        if self.transmit()? {
            self.output_polled_until = Some(Instant::now() + self.output_quiet);
            Ok(())
        } else if Instant::now() >= until {
            self.ask_for_output_kicks()
        } else {
            Ok(())
        }
    }

    fn backend_interest(&self, _fd: RawFd) -> u32 {
        // Until the driver starts the device (it kicks the receive queue
        // then), input waits where it is.
        if self.active.is_some() {
            libc::EPOLLIN as u32
        } else {
            0
        }
    }

    fn backend_fds(&self) -> Vec<RawFd> {
        let input = self.input.iter().map(Input::ready_fd);
        input.chain(self.resizes.iter().map(Resizes::fd)).collect()
    }

    fn process_backend(&mut self, fd: RawFd, _events: u32) -> Result<(), QueueError> {
        let resized = self
            .resizes
            .as_ref()
            .filter(|r| r.fd() == fd)
            .map(Resizes::take);
        match resized {
            Some(Some((cols, rows))) if (cols, rows) != self.size => {
                self.set_size(cols, rows).map_err(QueueError::Host)
            }
            Some(_) => Ok(()),
            None => self.receive(),
        }
    }

    fn traffic(&self) -> Traffic {
        self.traffic
    }

    fn first_output(&self) -> Option<std::time::Instant> {
        self.first_output
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::console::{Input, InputSource};
    use crate::devices::virtio::test_utils::{self, GuestQueue};
    use crate::devices::virtio::VIRTIO_F_VERSION_1;
    use vm_memory::{Bytes, GuestAddress};

    use crate::devices::virtio::test_utils::Sink;

    fn started(
        input: Option<Input>,
    ) -> (
        crate::devices::virtio::mmio::MmioTransport,
        GuestMem,
        GuestQueue,
        GuestQueue,
        Sink,
    ) {
        let mem = test_utils::memory();
        let sink = Sink::default();
        let console = Console::new(Box::new(sink.clone()), input);
        let (mut t, _) = test_utils::transport(Box::new(console), &mem);
        let rx = GuestQueue::new(0x10000, QUEUE_SIZE);
        let tx = GuestQueue::new(0x20000, QUEUE_SIZE);
        test_utils::kiln_setup(&mut t, &mem, 0x30000, VIRTIO_F_VERSION_1, &[&rx, &tx]);
        assert!(t.is_active());
        (t, mem, rx, tx, sink)
    }

    #[test]
    fn output_chains_reach_the_host_in_order() {
        let (mut t, mem, _, mut tx, sink) = started(None);
        mem.write_slice(b"hello, ", GuestAddress(0x40000)).unwrap();
        mem.write_slice(b"world\n", GuestAddress(0x41000)).unwrap();
        // One chain of two buffers, then a second chain.
        tx.add(&mem, &[(0x40000, 7, false), (0x41000, 3, false)]);
        tx.add(&mem, &[(0x41003, 3, false)]);
        t.kick(TX_QUEUE).unwrap();
        assert_eq!(&*sink.0.lock().unwrap(), b"hello, world\n");
        assert_eq!(tx.used(&mem).len(), 2);
        assert!(t.device().first_output().is_some());
    }

    #[test]
    fn no_input_is_end_of_file_at_once() {
        let (mut t, mem, mut rx, _, _) = started(Some(Input::start(InputSource::Closed).unwrap()));
        let head = rx.add(&mem, &[(0x40000, 4096, true)]);
        t.kick(RX_QUEUE).unwrap();
        assert_eq!(rx.used(&mem), [(u32::from(head), 0)]);
    }

    #[test]
    fn input_fills_receive_buffers_then_ends() {
        let (r, w) = {
            let mut fds = [0; 2];
            // SAFETY: pipe writes two descriptors into `fds`.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            (fds[0], fds[1])
        };
        let input = Input::start(InputSource::Host(r)).unwrap();
        let (mut t, mem, mut rx, _, _) = started(Some(input));
        let data = b"typed input\n";
        // SAFETY: `w` is the pipe's write end; `data` is valid.
        unsafe {
            libc::write(w, data.as_ptr().cast(), data.len());
            libc::close(w);
        }
        let a = rx.add(&mem, &[(0x40000, 5, true)]);
        let b = rx.add(&mem, &[(0x41000, 4096, true)]);
        let c = rx.add(&mem, &[(0x42000, 4096, true)]);
        // Wait for the reader thread to hand over the bytes and the end.
        let fd = t.device().backend_fds()[0];
        for _ in 0..200 {
            t.backend_ready(fd, 1).unwrap();
            if rx.used(&mem).len() == 3 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let used = rx.used(&mem);
        assert_eq!(
            used,
            [(u32::from(a), 5), (u32::from(b), 7), (u32::from(c), 0)],
            "the bytes, then an empty buffer for the end of input"
        );
        let mut got = [0u8; 12];
        mem.read_slice(&mut got[..5], GuestAddress(0x40000))
            .unwrap();
        mem.read_slice(&mut got[5..], GuestAddress(0x41000))
            .unwrap();
        assert_eq!(&got, data);
        // SAFETY: closing the read end this test opened.
        unsafe { libc::close(r) };
    }

    #[test]
    fn an_output_chain_outside_memory_breaks_the_console() {
        let (mut t, mem, _, mut tx, sink) = started(None);
        tx.add(&mem, &[(1 << 30, 16, false)]);
        t.kick(TX_QUEUE).unwrap();
        assert_ne!(
            test_utils::status(&t) & crate::devices::virtio::status::DEVICE_NEEDS_RESET,
            0
        );
        assert!(sink.0.lock().unwrap().is_empty());
    }

    #[test]
    fn no_interrupt_while_the_driver_says_so() {
        let (mut t, mem, _, mut tx, _) = started(None);
        tx.set_avail_flags(&mem, 1);
        mem.write_slice(b"x", GuestAddress(0x40000)).unwrap();
        tx.add(&mem, &[(0x40000, 1, false)]);
        t.kick(TX_QUEUE).unwrap();
        assert_eq!(
            t.interrupt()
                .count
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        tx.set_avail_flags(&mem, 0);
        tx.add(&mem, &[(0x40000, 1, false)]);
        t.kick(TX_QUEUE).unwrap();
        assert_eq!(
            t.interrupt()
                .count
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    /// After a kick the guest is asked not to kick while output keeps
    /// coming: the poll timer takes what it offers, and once the queue
    /// stays quiet kicks are asked for again.
    #[test]
    fn output_in_a_burst_is_polled_instead_of_kicked() {
        const QUIET: Duration = Duration::from_millis(500);
        let mem = test_utils::memory();
        let sink = Sink::default();
        let console = Console::new(Box::new(sink.clone()), None).with_output_quiet(QUIET);
        let (mut t, _) = test_utils::transport(Box::new(console), &mem);
        let rx = GuestQueue::new(0x10000, QUEUE_SIZE);
        let mut tx = GuestQueue::new(0x20000, QUEUE_SIZE);
        test_utils::kiln_setup(&mut t, &mem, 0x30000, VIRTIO_F_VERSION_1, &[&rx, &tx]);
        mem.write_slice(b"one\ntwo\n", GuestAddress(0x40000))
            .unwrap();
        assert!(!tx.kicks_unwanted(&mem));
        tx.add(&mem, &[(0x40000, 4, false)]);
        t.kick(TX_QUEUE).unwrap();
        assert!(tx.kicks_unwanted(&mem));
        assert!(t.polling());
        // Offered with no kick: the poll takes it.
        tx.add(&mem, &[(0x40004, 4, false)]);
        t.poll().unwrap();
        assert_eq!(&*sink.0.lock().unwrap(), b"one\ntwo\n");
        assert_eq!(tx.used(&mem).len(), 2);
        // Quiet: still polled until QUIET has passed.
        t.poll().unwrap();
        assert!(t.polling());
        std::thread::sleep(QUIET);
        t.poll().unwrap();
        assert!(!t.polling());
        assert!(!tx.kicks_unwanted(&mem));
    }

    /// A snapshot saved while output was polled holds the guest's "no
    /// kicks" flag; the restored console's first look (the devices thread
    /// looks at every queue once) asks for kicks again.
    #[test]
    fn a_restored_console_asks_for_kicks_again() {
        let (mut t, mem, _, tx, _) = started(None);
        mem.write_obj(1u16, GuestAddress(tx.used)).unwrap();
        assert!(tx.kicks_unwanted(&mem));
        t.kick(TX_QUEUE).unwrap();
        assert!(!tx.kicks_unwanted(&mem));
        assert!(!t.polling());
    }

    #[test]
    fn reports_the_terminal_size() {
        let mut c = Console::new(Box::new(Sink::default()), None);
        c.set_size(132, 43).unwrap();
        let mut b = [0u8; 4];
        c.read_config(0, &mut b);
        assert_eq!(b, [132, 0, 43, 0]);
    }
}
