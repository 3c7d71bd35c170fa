//! The terminal (`kiln run -t`): standard input, output and error are one
//! terminal over the first virtio console, with the line discipline of
//! [`kiln_kernel::fd::tty`] between them. Keys are fed through the
//! discipline as soon as the console's interrupt delivers them (so Ctrl-C
//! reaches a program that is busy), which is why its state lives with the
//! devices ([`TerminalState`], in `drivers::virtio::Devices`).

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use kiln_kernel::errno::Errno;
use kiln_kernel::fd::tty::{KeySignal, LineDiscipline, ReadResult, Termios, WinSize};
use kiln_kernel::fs::stat::{makedev, mode, Stat};
use kiln_kernel::signal::sig;

use super::{flags, poll, FileOps};
use crate::drivers::virtio::console::Console;
use crate::drivers::virtio::Devices;
use crate::mm::space::AddressSpace;
use crate::mm::uaccess::UserPtr;
use crate::state::KERNEL;

/// Output taken per write: what one console buffer holds once newlines
/// became CR NL, so a buffer goes to the host whole or not at all.
const OUTPUT_CHUNK: usize = 4096;

/// The terminal's state beside its console.
#[derive(Default)]
pub struct TerminalState {
    /// The line discipline (settings, typed input).
    discipline: LineDiscipline,
    /// Echo the console had no buffer for yet (it goes out before any
    /// further output).
    echo: Vec<u8>,
}

/// The signals raised by keys or a resize, as a bit mask by number.
pub type Raised = u64;

const fn bit(signo: u8) -> Raised {
    1 << signo
}

impl TerminalState {
    /// Takes the keys `console` received through the line discipline:
    /// echoes them, notes a resize or the end of the host's input, and
    /// returns the signals raised.
    pub fn receive(&mut self, console: &mut Console) -> Raised {
        let mut raised = 0;
        let discipline = &mut self.discipline;
        let echo = &mut self.echo;
        console.drain_input(|b| {
            raised |= match discipline.receive(b, echo) {
                Some(KeySignal::Interrupt) => bit(sig::SIGINT),
                Some(KeySignal::Quit) => bit(sig::SIGQUIT),
                Some(KeySignal::Suspend) => bit(sig::SIGTSTP),
                None => 0,
            };
        });
        if console.input_ended() {
            discipline.hang_up();
        }
        let (cols, rows) = console.size();
        if (cols, rows) != (discipline.size.cols, discipline.size.rows) {
            discipline.size.cols = cols;
            discipline.size.rows = rows;
            raised |= bit(sig::SIGWINCH);
        }
        self.flush_echo(console);
        raised
    }

    /// Hands pending echo to the console; returns whether all of it went.
    fn flush_echo(&mut self, console: &mut Console) -> bool {
        while !self.echo.is_empty() {
            let n = console.write(&self.echo);
            if n == 0 {
                // The rest goes when buffers come back (the interrupt that
                // brings them runs `receive` again).
                console.wait_for_output();
                return false;
            }
            self.echo.drain(..n);
        }
        true
    }

    /// Writes as much of `data` as one console buffer holds; `None` when
    /// no buffer is free (wait for the console).
    fn write(&mut self, console: &mut Console, data: &[u8]) -> Option<usize> {
        if !self.flush_echo(console) {
            return None;
        }
        let take = self
            .discipline
            .output_fits(data, OUTPUT_CHUNK)
            .clamp(1, data.len());
        let mut out = Vec::with_capacity(take * 2);
        self.discipline.output(&data[..take], &mut out);
        match console.write(&out) {
            0 => None,
            _ => Some(take),
        }
    }
}

/// Sends the signals in `raised` to the program. Call with no kernel lock
/// held.
pub fn deliver(raised: Raised) {
    for signo in [sig::SIGINT, sig::SIGQUIT, sig::SIGTSTP, sig::SIGWINCH] {
        if raised & bit(signo) != 0 {
            crate::signal::post_from_kernel(None, kiln_kernel::signal::SigInfo::kernel(signo));
        }
    }
}

/// The terminal as an open file (all three standard streams share one, as
/// a login's do; /dev/tty opens another).
#[derive(Default)]
pub struct Terminal {
    nonblocking: AtomicBool,
}

impl Terminal {
    /// A terminal file.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn would_block(&self) -> Errno {
        if self.nonblocking.load(Ordering::Relaxed) {
            Errno::Again
        } else {
            Errno::Restart
        }
    }
}

/// Runs `f` on the terminal's state and console (the console started);
/// EIO when the VM has no terminal console.
fn with_terminal<T>(
    f: impl FnOnce(&mut TerminalState, &mut Console) -> T,
) -> Result<(T, Raised), Errno> {
    let mut devices = KERNEL.devices.lock();
    let result = with_devices(&mut devices, f);
    devices.update_wake_sources();
    result
}

fn with_devices<T>(
    devices: &mut Devices,
    f: impl FnOnce(&mut TerminalState, &mut Console) -> T,
) -> Result<(T, Raised), Errno> {
    let (state, console) = devices.terminal().ok_or(Errno::Io)?;
    // Keys that arrived since the last interrupt service count first.
    let raised = state.receive(console);
    Ok((f(state, console), raised))
}

/// Runs `f` like [`with_terminal`] and delivers the signals keys raised
/// meanwhile (after the devices lock is gone).
fn terminal_call<T>(f: impl FnOnce(&mut TerminalState, &mut Console) -> T) -> Result<T, Errno> {
    let (value, raised) = with_terminal(f)?;
    if raised != 0 {
        deliver(raised);
    }
    Ok(value)
}

/// ioctl numbers (asm-generic/ioctls.h).
mod request {
    pub const TCGETS: u64 = 0x5401;
    pub const TCSETS: u64 = 0x5402;
    pub const TCSETSW: u64 = 0x5403;
    pub const TCSETSF: u64 = 0x5404;
    pub const TCXONC: u64 = 0x540a;
    pub const TCFLSH: u64 = 0x540b;
    pub const TIOCSCTTY: u64 = 0x540e;
    pub const TIOCGPGRP: u64 = 0x540f;
    pub const TIOCSPGRP: u64 = 0x5410;
    pub const TIOCGWINSZ: u64 = 0x5413;
    pub const TIOCSWINSZ: u64 = 0x5414;
    pub const TIOCNOTTY: u64 = 0x5422;
    pub const TIOCGSID: u64 = 0x5429;
}

/// TCFLSH's queue selectors.
const TCIFLUSH: u64 = 0;
const TCIOFLUSH: u64 = 2;

impl FileOps for Terminal {
    fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        if buf.is_empty() {
            return Ok(0);
        }
        match terminal_call(|state, _| state.discipline.read(buf))? {
            ReadResult::Data(n) => Ok(n),
            ReadResult::EndOfFile => Ok(0),
            ReadResult::Empty => Err(self.would_block()),
        }
    }

    fn write(&self, buf: &[u8]) -> Result<usize, Errno> {
        if buf.is_empty() {
            return Ok(0);
        }
        let written = terminal_call(|state, console| match state.write(console, buf) {
            Some(n) => Ok(n),
            // Buffers came back meanwhile: try once more.
            None if !console.wait_for_output() => state.write(console, buf).ok_or(()),
            None => Err(()),
        })?;
        written.map_err(|()| self.would_block())
    }

    fn stat(&self) -> Stat {
        // /dev/pts/0, as a container runtime's terminal is.
        Stat {
            dev: 0x18,
            ino: 3,
            mode: mode::S_IFCHR | 0o620,
            nlink: 1,
            rdev: makedev(136, 0),
            blksize: 1024,
            ..Stat::default()
        }
    }

    fn ioctl(&self, req: u64, arg: u64, mem: &mut AddressSpace) -> Result<u64, Errno> {
        use request::*;
        let ptr = UserPtr::<u8>::new(arg);
        match req {
            TCGETS => {
                let termios = terminal_call(|state, _| state.discipline.termios)?;
                mem.write_bytes(ptr, &termios.to_bytes())?;
                Ok(0)
            }
            TCSETS | TCSETSW | TCSETSF => {
                let bytes: [u8; Termios::SIZE] = mem.read(ptr.cast())?;
                let termios = Termios::from_bytes(&bytes);
                terminal_call(|state, _| {
                    if req == TCSETSF {
                        state.discipline.flush_input();
                    }
                    state.discipline.termios = termios;
                })?;
                Ok(0)
            }
            TIOCGWINSZ => {
                let size = terminal_call(|state, _| state.discipline.size)?;
                mem.write_bytes(ptr, &size.to_bytes())?;
                Ok(0)
            }
            TIOCSWINSZ => {
                let bytes: [u8; 8] = mem.read(ptr.cast())?;
                let size = WinSize::from_bytes(&bytes);
                terminal_call(|state, _| state.discipline.size = size)?;
                Ok(0)
            }
            TCFLSH => match arg {
                TCIFLUSH | TCIOFLUSH => {
                    terminal_call(|state, _| state.discipline.flush_input())?;
                    Ok(0)
                }
                1 => Ok(0), // TCOFLUSH: output is already on its way
                _ => Err(Errno::Inval),
            },
            TCXONC => Ok(0),
            // One process, leader of its group and session, whose
            // controlling terminal this is: job-control shells find
            // themselves in the foreground.
            TIOCGPGRP | TIOCGSID => {
                mem.write(UserPtr::<i32>::new(arg), 1)?;
                Ok(0)
            }
            TIOCSPGRP | TIOCSCTTY | TIOCNOTTY => Ok(0),
            _ => Err(Errno::Notty),
        }
    }

    fn readable_bytes(&self) -> Option<usize> {
        terminal_call(|state, _| state.discipline.pending()).ok()
    }

    fn poll(&self, events: u16) -> u16 {
        let readable = terminal_call(|state, _| state.discipline.readable()).unwrap_or(true);
        let mut ready = events & poll::POLLOUT;
        if readable {
            ready |= events & poll::POLLIN;
        }
        ready
    }

    fn pollable(&self) -> bool {
        true
    }

    fn status_flags(&self) -> u32 {
        if self.nonblocking.load(Ordering::Relaxed) {
            flags::O_RDWR | flags::O_NONBLOCK
        } else {
            flags::O_RDWR
        }
    }

    fn set_status_flags(&self, f: u32) -> Result<(), Errno> {
        self.nonblocking
            .store(f & flags::O_NONBLOCK != 0, Ordering::Relaxed);
        Ok(())
    }
}
