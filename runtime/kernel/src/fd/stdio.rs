//! The standard streams, over the virtio consoles: standard input from
//! the first console (end of file when the host gives none), standard
//! output to it, standard error to the second — or both to the first when
//! it is a terminal. Without virtio consoles (QEMU, an exported disk),
//! output goes to the platform's port console and input is at end of file,
//! or the serial port with `kiln.serial_stdin=1` (`drivers::serial`).
//!
//! They look like pipes (S_IFIFO, not terminals), which is what a program
//! sees when a container runtime or a test harness collects its output, so
//! its buffering matches such a run. Under `-t` all three are the terminal
//! of `super::tty` instead.
//!
//! Output keeps its order across streams: a write to one console waits
//! until the other has handed everything it holds to the host.

use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, Ordering};

use kiln_kernel::errno::Errno;
use kiln_kernel::fs::stat::{mode, Stat};

use super::{flags, poll, FileOps};
use crate::console::{self, Stream};
use crate::drivers::serial;
use crate::drivers::virtio::console::Console;
use crate::drivers::virtio::Devices;
use crate::state::KERNEL;

/// Standard input.
#[derive(Default)]
pub struct Stdin {
    nonblocking: AtomicBool,
}

/// Standard output or error.
pub struct Output {
    stream: Stream,
    nonblocking: AtomicBool,
}

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

/// "Would block": EAGAIN for a non-blocking descriptor, otherwise wait and
/// run the call again.
fn would_block(nonblocking: &AtomicBool) -> Errno {
    if nonblocking.load(Ordering::Relaxed) {
        Errno::Again
    } else {
        Errno::Restart
    }
}

/// F_SETFL: only O_NONBLOCK changes anything here.
fn set_nonblocking(flag: &AtomicBool, f: u32) -> Result<(), Errno> {
    flag.store(f & flags::O_NONBLOCK != 0, Ordering::Relaxed);
    Ok(())
}

/// F_GETFL.
fn status(mode: u32, flag: &AtomicBool) -> u32 {
    if flag.load(Ordering::Relaxed) {
        mode | flags::O_NONBLOCK
    } else {
        mode
    }
}

impl FileOps for Stdin {
    fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut devices = KERNEL.devices.lock();
        let Some(console) = devices.stdio() else {
            drop(devices);
            if !serial::enabled() {
                return Ok(0);
            }
            return match serial::read(buf) {
                serial::Input::Data(n) => Ok(n),
                serial::Input::Empty => Err(would_block(&self.nonblocking)),
                serial::Input::End => Ok(0),
            };
        };
        let got = console.read(buf);
        devices.update_wake_sources();
        got.ok_or_else(|| would_block(&self.nonblocking))
    }

    fn stat(&self) -> Stat {
        pipe_stat(1)
    }

    fn poll(&self, events: u16) -> u16 {
        let mut devices = KERNEL.devices.lock();
        let ready = match devices.stdio() {
            // Asked nothing about input (Rust's start-up polls its standard
            // descriptors with no events, for POLLNVAL): input is not
            // started for that — receive buffers posted, a kick, the host
            // reading its input — so its end is not known yet either.
            Some(c) if events & poll::POLLIN == 0 && !c.receiving() => 0,
            Some(c) => match (c.pending_input(), c.input_open()) {
                (0, true) => 0,
                (0, false) => (events & poll::POLLIN) | poll::POLLHUP,
                _ => events & poll::POLLIN,
            },
            None if serial::enabled() => match (serial::readable(), serial::ended()) {
                (_, true) => (events & poll::POLLIN) | poll::POLLHUP,
                (true, false) => events & poll::POLLIN,
                (false, false) => 0,
            },
            None => (events & poll::POLLIN) | poll::POLLHUP,
        };
        devices.update_wake_sources();
        ready
    }

    fn pollable(&self) -> bool {
        true
    }

    fn status_flags(&self) -> u32 {
        status(flags::O_RDONLY, &self.nonblocking)
    }

    fn set_status_flags(&self, f: u32) -> Result<(), Errno> {
        set_nonblocking(&self.nonblocking, f)
    }
}

/// The console `stream` goes to, and the other one when it runs (whose
/// output must be out first).
fn consoles(devices: &mut Devices, stream: Stream) -> (Option<&mut Console>, Option<&mut Console>) {
    devices.consoles(stream == Stream::Stderr)
}

impl FileOps for Output {
    fn write(&self, buf: &[u8]) -> Result<usize, Errno> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut devices = KERNEL.devices.lock();
        let (target, other) = consoles(&mut devices, self.stream);
        let Some(target) = target else {
            drop(devices);
            console::write(self.stream, buf);
            crate::snapshot::after_output();
            return Ok(buf.len());
        };
        // The other stream's output goes out first.
        if let Some(other) = other {
            if other.output_in_flight() && other.wait_for_output() {
                devices.update_wake_sources();
                return Err(would_block(&self.nonblocking));
            }
        }
        let written = match target.write(buf) {
            0 if target.wait_for_output() => Err(would_block(&self.nonblocking)),
            // Buffers came back meanwhile.
            0 => Ok(target.write(buf)),
            n => Ok(n),
        };
        devices.update_wake_sources();
        drop(devices);
        match written {
            Ok(0) => Err(would_block(&self.nonblocking)),
            Ok(n) => {
                crate::snapshot::after_output();
                Ok(n)
            }
            Err(e) => Err(e),
        }
    }

    fn stat(&self) -> Stat {
        pipe_stat(if self.stream == Stream::Stdout { 2 } else { 3 })
    }

    fn poll(&self, events: u16) -> u16 {
        events & poll::POLLOUT
    }

    fn pollable(&self) -> bool {
        true
    }

    fn status_flags(&self) -> u32 {
        status(flags::O_WRONLY, &self.nonblocking)
    }

    fn set_status_flags(&self, f: u32) -> Result<(), Errno> {
        set_nonblocking(&self.nonblocking, f)
    }
}

/// stdin, stdout, stderr: one terminal for all three under `-t`.
pub fn standard_streams() -> [Arc<dyn FileOps>; 3] {
    if KERNEL.devices.lock().is_terminal() {
        let terminal: Arc<dyn FileOps> = super::tty::Terminal::new();
        return [terminal.clone(), terminal.clone(), terminal];
    }
    let output = |stream| {
        Arc::new(Output {
            stream,
            nonblocking: AtomicBool::new(false),
        })
    };
    [
        Arc::new(Stdin::default()),
        output(Stream::Stdout),
        output(Stream::Stderr),
    ]
}
