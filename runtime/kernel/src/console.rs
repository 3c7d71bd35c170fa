//! Kernel console output: the program's stdout/stderr and the kernel's own
//! messages (always on stderr, so a program's stdout stays byte-exact).

use core::fmt::{self, Write};

use crate::arch::platform;

/// Which host stream output goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Writes raw bytes to a stream.
pub fn write(stream: Stream, bytes: &[u8]) {
    platform::console_write(stream, bytes);
}

/// A formatter that collects a line on the stack and writes it to stderr in
/// as few console writes as possible (each one is an exit to the VMM).
pub struct LineWriter {
    buf: [u8; 512],
    len: usize,
}

impl LineWriter {
    /// An empty writer.
    pub const fn new() -> Self {
        Self {
            buf: [0; 512],
            len: 0,
        }
    }

    /// Writes out what was collected.
    pub fn flush(&mut self) {
        if self.len > 0 {
            write(Stream::Stderr, &self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl Write for LineWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// Prints formatted text to stderr (no heap needed; usable in a panic).
pub fn print_stderr(args: fmt::Arguments<'_>) {
    let mut w = LineWriter::new();
    let _ = w.write_fmt(args);
    w.flush();
}

/// Prints a kernel message line to stderr.
#[macro_export]
macro_rules! kprintln {
    ($($arg:tt)*) => {
        $crate::console::print_stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}
