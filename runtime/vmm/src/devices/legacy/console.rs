//! The console: the guest kernel copies program output into the console
//! buffer (boot contract) and writes its length to the stdout or stderr
//! port; the bytes go to the VMM's stdout or stderr unchanged.

use std::io::Write;

use crate::GuestMem;
use vm_memory::Bytes;

use crate::arch::layout::{CONSOLE_BUFFER, CONSOLE_BUFFER_SIZE};
use crate::devices::DeviceError;

/// A console stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// The program's stdout.
    Stdout,
    /// The program's stderr (and the guest kernel's messages).
    Stderr,
}

/// The console device.
pub struct Console {
    stdout: Box<dyn Write + Send>,
    stderr: Box<dyn Write + Send>,
    buffer: Vec<u8>,
    /// Bytes written to stdout and stderr.
    pub bytes: [u64; 2],
    /// Writes refused because the guest named a length beyond the buffer.
    pub refused: u64,
    broken_pipe: bool,
}

impl Console {
    /// A console writing to the process's own stdout and stderr.
    pub fn stdio() -> Self {
        Self::new(Box::new(std::io::stdout()), Box::new(std::io::stderr()))
    }

    /// A console writing to the given sinks.
    pub fn new(stdout: Box<dyn Write + Send>, stderr: Box<dyn Write + Send>) -> Self {
        Self {
            stdout,
            stderr,
            buffer: Vec::with_capacity(CONSOLE_BUFFER_SIZE as usize),
            bytes: [0; 2],
            refused: 0,
            broken_pipe: false,
        }
    }

    /// Holds what this console writes at `gate` until its checkpoint is
    /// acknowledged (`--standby`).
    pub fn hold_output(&mut self, gate: &std::sync::Arc<crate::ha::gate::OutputGate>) {
        let stdout = std::mem::replace(&mut self.stdout, Box::new(std::io::sink()));
        let stderr = std::mem::replace(&mut self.stderr, Box::new(std::io::sink()));
        self.stdout = Box::new(gate.hold_console(0, stdout));
        self.stderr = Box::new(gate.hold_console(1, stderr));
    }

    /// Copies `len` bytes of the console buffer to `stream`.
    ///
    /// # Errors
    /// When writing to the host stream fails (other than a closed pipe,
    /// after which output is dropped, as a program's writes to a closed
    /// pipe are).
    pub fn write_from_guest(
        &mut self,
        stream: Stream,
        len: u32,
        mem: &GuestMem,
    ) -> Result<(), DeviceError> {
        if u64::from(len) > CONSOLE_BUFFER_SIZE {
            // A hostile or broken guest: refuse, never read outside the buffer.
            self.refused += 1;
            return Ok(());
        }
        self.buffer.resize(len as usize, 0);
        mem.read_slice(&mut self.buffer, CONSOLE_BUFFER)
            .map_err(DeviceError::ConsoleBuffer)?;
        let (sink, i) = match stream {
            Stream::Stdout => (&mut self.stdout, 0),
            Stream::Stderr => (&mut self.stderr, 1),
        };
        self.bytes[i] += u64::from(len);
        if self.broken_pipe {
            return Ok(());
        }
        match sink.write_all(&self.buffer).and_then(|()| sink.flush()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.broken_pipe = true;
                Ok(())
            }
            Err(e) => Err(DeviceError::Output(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    use crate::devices::virtio::test_utils::Sink;

    #[test]
    fn copies_exactly_the_named_bytes_and_refuses_oversized_lengths() {
        let mem = crate::GuestMem::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        mem.write_slice(b"hi\nthere", CONSOLE_BUFFER).unwrap();
        let (out, err) = (Sink::default(), Sink::default());
        let mut c = Console::new(Box::new(out.clone()), Box::new(err.clone()));
        c.write_from_guest(Stream::Stdout, 3, &mem).unwrap();
        c.write_from_guest(Stream::Stderr, 8, &mem).unwrap();
        c.write_from_guest(Stream::Stdout, CONSOLE_BUFFER_SIZE as u32 + 1, &mem)
            .unwrap();
        assert_eq!(&*out.0.lock().unwrap(), b"hi\n");
        assert_eq!(&*err.0.lock().unwrap(), b"hi\nthere");
        assert_eq!(c.refused, 1);
    }
}
