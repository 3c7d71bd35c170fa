//! `-t`: the host terminal in raw mode for the guest's terminal. Keys go to
//! the guest as they are typed (the guest kernel does the line editing,
//! echo and Ctrl-C, as a remote terminal does); the terminal's settings are
//! put back when the [`RawTerminal`] is dropped — after a normal end, an
//! error or a guest crash alike. [`Resizes`] follows the window size.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The host terminal on `fd`, switched to raw mode.
pub struct RawTerminal {
    fd: RawFd,
    saved: libc::termios,
}

/// Why `-t` cannot be honoured.
#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    /// Standard input is not a terminal.
    #[error(
        "-t needs a terminal on standard input (it is {0}); run it from a terminal, or drop -t"
    )]
    NotATerminal(&'static str),
    /// The terminal's settings cannot be read or changed.
    #[error("cannot switch the terminal to raw mode: {0}")]
    Settings(#[source] std::io::Error),
}

/// Whether `fd` is a terminal.
pub fn is_terminal(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// The terminal's size as (columns, rows), when `fd` is one.
pub fn size(fd: RawFd) -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into `ws`.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0).then_some((ws.ws_col, ws.ws_row))
}

impl RawTerminal {
    /// Switches the terminal on `fd` to raw mode.
    ///
    /// # Errors
    /// When `fd` is not a terminal or its settings cannot be changed.
    pub fn enter(fd: RawFd) -> Result<Self, TerminalError> {
        if !is_terminal(fd) {
            return Err(TerminalError::NotATerminal(describe(fd)));
        }
        // SAFETY: termios is plain data; tcgetattr fills it.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid termios to fill.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(TerminalError::Settings(std::io::Error::last_os_error()));
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw edits the termios it is given.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: `raw` is a valid termios derived from the current one.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return Err(TerminalError::Settings(std::io::Error::last_os_error()));
        }
        Ok(Self { fd, saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `enter` on the same
        // descriptor.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

fn describe(fd: RawFd) -> &'static str {
    // SAFETY: stat is plain data; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is valid to fill.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return "closed";
    }
    match st.st_mode & libc::S_IFMT {
        libc::S_IFIFO => "a pipe",
        libc::S_IFREG => "a file",
        libc::S_IFSOCK => "a socket",
        libc::S_IFCHR => "a device that is not a terminal",
        _ => "not a terminal",
    }
}

/// SIGWINCH blocked in the calling thread, the set signalfd needs.
fn winch_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGWINCH);
    }
    set
}

/// Blocks SIGWINCH in the calling thread and every thread it starts later,
/// so that window-size changes queue up for [`Resizes`] instead of being
/// dropped by a thread that does not watch for them. Call before any
/// thread starts.
pub fn hold_resize_signals() {
    let set = winch_set();
    // SAFETY: adds SIGWINCH to this thread's mask; `set` is valid.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Window-size changes of a terminal, as a descriptor an epoll loop can
/// watch (a signalfd for SIGWINCH).
pub struct Resizes {
    signals: OwnedFd,
    terminal: RawFd,
}

impl Resizes {
    /// Watches the size of the terminal on `terminal`
    /// ([`hold_resize_signals`] must have run first).
    ///
    /// # Errors
    /// When the signalfd cannot be made.
    pub fn watch(terminal: RawFd) -> std::io::Result<Self> {
        let set = winch_set();
        // SAFETY: a new signalfd for a valid set; the result is checked.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor only this value owns.
        let signals = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { signals, terminal })
    }

    /// The descriptor that becomes readable on a resize.
    pub fn fd(&self) -> RawFd {
        self.signals.as_raw_fd()
    }

    /// Takes the queued resize notices; returns the size now, if the
    /// terminal still reports one.
    pub fn take(&self) -> Option<(u16, u16)> {
        let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
        // SAFETY: reads whole siginfo records into a buffer of that size
        // from a non-blocking descriptor this value owns.
        while unsafe { libc::read(self.fd(), info.as_mut_ptr().cast(), info.len()) } > 0 {}
        size(self.terminal)
    }
}
