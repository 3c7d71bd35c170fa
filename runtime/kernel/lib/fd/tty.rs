//! A terminal's line discipline (Linux's N_TTY, the parts programs rely
//! on): the termios settings, input processing (CR→NL, line editing in
//! canonical mode, echo, the signal keys) and output processing (NL→CR NL).
//!
//! The host terminal is in raw mode under `kiln run -t`, so every key
//! arrives here as typed and the guest does what a Linux tty would — the
//! model of a remote login, where the far end owns the line discipline.
//! The kernel feeds received bytes in with [`LineDiscipline::receive`] as
//! they arrive (so Ctrl-C interrupts a program that is not reading), reads
//! with [`LineDiscipline::read`], and passes output through
//! [`LineDiscipline::output`].

use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// `struct termios` as the TCGETS/TCSETS ioctls pass it (asm-generic, 36
/// bytes; glibc's larger userspace struct is converted by glibc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Termios {
    /// Input modes.
    pub iflag: u32,
    /// Output modes.
    pub oflag: u32,
    /// Control modes.
    pub cflag: u32,
    /// Local modes.
    pub lflag: u32,
    /// Line discipline number (0, N_TTY).
    pub line: u8,
    /// Control characters.
    pub cc: [u8; NCCS],
}

impl Termios {
    /// Size of the structure in the program's memory.
    pub const SIZE: usize = 36;

    /// The bytes the program reads (TCGETS).
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut out = [0; Self::SIZE];
        for (i, v) in [self.iflag, self.oflag, self.cflag, self.lflag]
            .iter()
            .enumerate()
        {
            out[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        out[16] = self.line;
        out[17..].copy_from_slice(&self.cc);
        out
    }

    /// The settings the program hands over (TCSETS).
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut cc = [0; NCCS];
        cc.copy_from_slice(&b[17..]);
        Termios {
            iflag: word(0),
            oflag: word(4),
            cflag: word(8),
            lflag: word(12),
            line: b[16],
            cc,
        }
    }
}

impl WinSize {
    /// The bytes the program reads (TIOCGWINSZ).
    pub fn to_bytes(&self) -> [u8; 8] {
        let mut out = [0; 8];
        for (i, v) in [self.rows, self.cols, self.xpixel, self.ypixel]
            .iter()
            .enumerate()
        {
            out[i * 2..i * 2 + 2].copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// The size the program hands over (TIOCSWINSZ).
    pub fn from_bytes(b: &[u8; 8]) -> Self {
        let half = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        WinSize {
            rows: half(0),
            cols: half(2),
            xpixel: half(4),
            ypixel: half(6),
        }
    }
}

/// Number of control characters in [`Termios::cc`].
pub const NCCS: usize = 19;

/// `struct winsize` (TIOCGWINSZ).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct WinSize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
    /// Width in pixels (unused).
    pub xpixel: u16,
    /// Height in pixels (unused).
    pub ypixel: u16,
}

/// termios flag bits and control-character indices (asm-generic/termbits.h).
#[allow(missing_docs)]
pub mod bits {
    // c_iflag
    pub const IGNBRK: u32 = 0o1;
    pub const BRKINT: u32 = 0o2;
    pub const ISTRIP: u32 = 0o40;
    pub const INLCR: u32 = 0o100;
    pub const IGNCR: u32 = 0o200;
    pub const ICRNL: u32 = 0o400;
    pub const IXON: u32 = 0o2000;
    pub const IUTF8: u32 = 0o40000;
    // c_oflag
    pub const OPOST: u32 = 0o1;
    pub const ONLCR: u32 = 0o4;
    pub const OCRNL: u32 = 0o10;
    // c_cflag
    pub const B38400: u32 = 0o17;
    pub const CS8: u32 = 0o60;
    pub const CREAD: u32 = 0o200;
    pub const HUPCL: u32 = 0o2000;
    // c_lflag
    pub const ISIG: u32 = 0o1;
    pub const ICANON: u32 = 0o2;
    pub const ECHO: u32 = 0o10;
    pub const ECHOE: u32 = 0o20;
    pub const ECHOK: u32 = 0o40;
    pub const ECHONL: u32 = 0o100;
    pub const NOFLSH: u32 = 0o200;
    pub const ECHOCTL: u32 = 0o1000;
    pub const ECHOKE: u32 = 0o4000;
    pub const IEXTEN: u32 = 0o100000;
    // c_cc indices
    pub const VINTR: usize = 0;
    pub const VQUIT: usize = 1;
    pub const VERASE: usize = 2;
    pub const VKILL: usize = 3;
    pub const VEOF: usize = 4;
    pub const VTIME: usize = 5;
    pub const VMIN: usize = 6;
    pub const VSTART: usize = 8;
    pub const VSTOP: usize = 9;
    pub const VSUSP: usize = 10;
    pub const VEOL: usize = 11;
    pub const VREPRINT: usize = 12;
    pub const VDISCARD: usize = 13;
    pub const VWERASE: usize = 14;
    pub const VLNEXT: usize = 15;
    pub const VEOL2: usize = 16;
}

use bits::*;

impl Default for Termios {
    /// What a fresh Linux pseudo-terminal starts with (`stty sane`).
    fn default() -> Self {
        let mut cc = [0; NCCS];
        cc[VINTR] = 0x03; // ^C
        cc[VQUIT] = 0x1c; // ^\
        cc[VERASE] = 0x7f; // DEL
        cc[VKILL] = 0x15; // ^U
        cc[VEOF] = 0x04; // ^D
        cc[VMIN] = 1;
        cc[VSTART] = 0x11; // ^Q
        cc[VSTOP] = 0x13; // ^S
        cc[VSUSP] = 0x1a; // ^Z
        cc[VREPRINT] = 0x12; // ^R
        cc[VDISCARD] = 0x0f; // ^O
        cc[VWERASE] = 0x17; // ^W
        cc[VLNEXT] = 0x16; // ^V
        Termios {
            iflag: ICRNL | IXON | IUTF8,
            oflag: OPOST | ONLCR,
            cflag: B38400 | CS8 | CREAD | HUPCL,
            lflag: ISIG | ICANON | ECHO | ECHOE | ECHOK | ECHOCTL | ECHOKE | IEXTEN,
            line: 0,
            cc,
        }
    }
}

/// A signal a key raised (ISIG).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySignal {
    /// VINTR (Ctrl-C): SIGINT.
    Interrupt,
    /// VQUIT (Ctrl-\): SIGQUIT.
    Quit,
    /// VSUSP (Ctrl-Z): SIGTSTP.
    Suspend,
}

/// What a read finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadResult {
    /// Bytes copied.
    Data(usize),
    /// End of file: Ctrl-D on an empty line, or the host's input ended.
    EndOfFile,
    /// Nothing to read yet.
    Empty,
}

/// Most bytes a line may hold; typing more is ignored (Linux: 4095).
const LINE_MAX: usize = 4095;
/// Most bytes kept unread (raw mode) before more input is dropped.
const INPUT_MAX: usize = 64 * 1024;

/// A terminal's line discipline.
#[derive(Debug, Default)]
pub struct LineDiscipline {
    /// The settings (TCGETS/TCSETS).
    pub termios: Termios,
    /// The window size (TIOCGWINSZ).
    pub size: WinSize,
    /// Input readers may take: whole lines in canonical mode (each entry
    /// one line, an empty entry an end of file), single chunks otherwise.
    ready: VecDeque<Vec<u8>>,
    /// The line being edited (canonical mode).
    line: Vec<u8>,
    /// The next byte is taken literally (after VLNEXT).
    literal: bool,
    /// The host's input ended: reads find end of file once `ready` is empty.
    hung_up: bool,
}

/// Whether `b` is a control character echoed as `^X` under ECHOCTL.
fn is_control(b: u8) -> bool {
    (b < 0x20 && b != b'\t' && b != b'\n') || b == 0x7f
}

impl LineDiscipline {
    /// A terminal with the default settings.
    pub fn new() -> Self {
        Self::default()
    }

    fn lflag(&self, bit: u32) -> bool {
        self.termios.lflag & bit != 0
    }

    fn iflag(&self, bit: u32) -> bool {
        self.termios.iflag & bit != 0
    }

    /// Whether `b` is the (enabled) control character at `index`.
    fn is_cc(&self, b: u8, index: usize) -> bool {
        let c = self.termios.cc[index];
        c != 0 && c == b
    }

    /// Echoes `b` into `echo` as ECHO/ECHOCTL say.
    fn echo_byte(&self, b: u8, echo: &mut Vec<u8>) {
        if self.lflag(ECHOCTL) && is_control(b) {
            echo.push(b'^');
            echo.push(b ^ 0x40);
        } else {
            self.output(&[b], echo);
        }
    }

    /// How many columns `b` took when echoed (for erasing it).
    fn echo_width(&self, b: u8) -> usize {
        if self.lflag(ECHOCTL) && is_control(b) {
            2
        } else if b & 0xc0 == 0x80 && self.iflag(IUTF8) {
            0 // a UTF-8 continuation byte: the lead byte holds the column
        } else {
            1
        }
    }

    /// Erases the last character of the line (one UTF-8 sequence), echoing
    /// the erasure when ECHOE says so. Returns whether there was one.
    fn erase_one(&mut self, echo: &mut Vec<u8>) -> bool {
        let mut width = 0;
        while let Some(b) = self.line.pop() {
            width += self.echo_width(b);
            let continuation = self.iflag(IUTF8) && b & 0xc0 == 0x80;
            if !continuation {
                break;
            }
        }
        if width == 0 {
            return false;
        }
        if self.lflag(ECHO) && self.lflag(ECHOE) {
            for _ in 0..width {
                echo.extend_from_slice(b"\x08 \x08");
            }
        }
        true
    }

    /// Takes one byte of input from the host: edits the line, appends to
    /// `echo` what the terminal must show, and returns the signal a key
    /// raised.
    pub fn receive(&mut self, mut b: u8, echo: &mut Vec<u8>) -> Option<KeySignal> {
        if self.iflag(ISTRIP) {
            b &= 0x7f;
        }
        if self.literal {
            self.literal = false;
            self.store(b, echo);
            return None;
        }
        if self.lflag(ISIG) {
            let signal = if self.is_cc(b, VINTR) {
                Some(KeySignal::Interrupt)
            } else if self.is_cc(b, VQUIT) {
                Some(KeySignal::Quit)
            } else if self.is_cc(b, VSUSP) {
                Some(KeySignal::Suspend)
            } else {
                None
            };
            if let Some(signal) = signal {
                if !self.lflag(NOFLSH) {
                    self.flush_input();
                }
                if self.lflag(ECHO) {
                    self.echo_byte(b, echo);
                }
                return Some(signal);
            }
        }
        if b == b'\r' {
            if self.iflag(IGNCR) {
                return None;
            }
            if self.iflag(ICRNL) {
                b = b'\n';
            }
        } else if b == b'\n' && self.iflag(INLCR) {
            b = b'\r';
        }
        if self.lflag(ICANON) {
            if self.lflag(IEXTEN) && self.is_cc(b, VLNEXT) {
                self.literal = true;
                return None;
            }
            if self.is_cc(b, VERASE) {
                self.erase_one(echo);
                return None;
            }
            if self.lflag(IEXTEN) && self.is_cc(b, VWERASE) {
                while self.line.last().is_some_and(|c| c.is_ascii_whitespace()) {
                    self.erase_one(echo);
                }
                while self.line.last().is_some_and(|c| !c.is_ascii_whitespace()) {
                    self.erase_one(echo);
                }
                return None;
            }
            if self.is_cc(b, VKILL) {
                if self.lflag(ECHOKE) || !self.lflag(ECHOK) {
                    while self.erase_one(echo) {}
                } else {
                    self.line.clear();
                    if self.lflag(ECHO) {
                        self.echo_byte(b, echo);
                    }
                    self.output(b"\n", echo);
                }
                return None;
            }
            if self.lflag(IEXTEN) && self.is_cc(b, VREPRINT) {
                if self.lflag(ECHO) {
                    self.echo_byte(b, echo);
                    self.output(b"\n", echo);
                    let line = core::mem::take(&mut self.line);
                    for &c in &line {
                        self.echo_byte(c, echo);
                    }
                    self.line = line;
                }
                return None;
            }
            if self.is_cc(b, VEOF) {
                // The line so far goes to the reader without a newline; on
                // an empty line that is an end of file.
                let line = core::mem::take(&mut self.line);
                self.ready.push_back(line);
                return None;
            }
            let ends_line = b == b'\n' || self.is_cc(b, VEOL) || self.is_cc(b, VEOL2);
            if !ends_line && self.line.len() >= LINE_MAX {
                return None;
            }
            self.line.push(b);
            if self.lflag(ECHO) || (b == b'\n' && self.lflag(ECHONL)) {
                self.echo_byte(b, echo);
            }
            if ends_line {
                let line = core::mem::take(&mut self.line);
                self.ready.push_back(line);
            }
            return None;
        }
        if self.lflag(IEXTEN) && self.is_cc(b, VLNEXT) {
            self.literal = true;
            return None;
        }
        self.store(b, echo);
        None
    }

    /// Stores a byte as input (no editing meaning), with its echo.
    fn store(&mut self, b: u8, echo: &mut Vec<u8>) {
        if self.lflag(ECHO) {
            self.echo_byte(b, echo);
        }
        if self.lflag(ICANON) {
            if self.line.len() < LINE_MAX {
                self.line.push(b);
            }
            return;
        }
        if self.pending() >= INPUT_MAX {
            return;
        }
        match self.ready.back_mut() {
            Some(chunk) if !chunk.is_empty() => chunk.push(b),
            _ => self.ready.push_back(alloc::vec![b]),
        }
    }

    /// The host's input ended (the guest sees end of file after what is
    /// already typed; an unfinished line is handed over as it is).
    pub fn hang_up(&mut self) {
        if !self.line.is_empty() {
            let line = core::mem::take(&mut self.line);
            self.ready.push_back(line);
        }
        self.hung_up = true;
    }

    /// Discards typed input (signals, TCFLSH, TCSETSF).
    pub fn flush_input(&mut self) {
        self.ready.clear();
        self.line.clear();
        self.literal = false;
    }

    /// Bytes a read may take now (FIONREAD).
    pub fn pending(&self) -> usize {
        self.ready.iter().map(Vec::len).sum()
    }

    /// Whether a read would return now (data or end of file).
    pub fn readable(&self) -> bool {
        if self.hung_up || self.ready.iter().any(Vec::is_empty) {
            return true;
        }
        let pending = self.pending();
        if self.lflag(ICANON) {
            return pending > 0;
        }
        // Non-canonical: VMIN bytes (VMIN 0: a read never waits; VTIME
        // timing is not modelled).
        let min = usize::from(self.termios.cc[VMIN]);
        pending >= min.max(1) || min == 0
    }

    /// Reads into `out`: at most one line in canonical mode.
    pub fn read(&mut self, out: &mut [u8]) -> ReadResult {
        if out.is_empty() {
            return ReadResult::Data(0);
        }
        if !self.lflag(ICANON) {
            let min = usize::from(self.termios.cc[VMIN]);
            if !self.hung_up && self.pending() < min.max(1).min(out.len()) {
                return if min == 0 {
                    ReadResult::Data(self.take(out, false))
                } else {
                    ReadResult::Empty
                };
            }
            let n = self.take(out, false);
            return if n == 0 && self.hung_up {
                ReadResult::EndOfFile
            } else {
                ReadResult::Data(n)
            };
        }
        match self.ready.front() {
            Some(line) if line.is_empty() => {
                self.ready.pop_front();
                ReadResult::EndOfFile
            }
            Some(_) => ReadResult::Data(self.take(out, true)),
            None if self.hung_up => ReadResult::EndOfFile,
            None => ReadResult::Empty,
        }
    }

    /// Moves bytes from `ready` into `out`; one entry at most when
    /// `one_line`.
    fn take(&mut self, out: &mut [u8], one_line: bool) -> usize {
        let mut done = 0;
        while done < out.len() {
            let Some(front) = self.ready.front_mut() else {
                break;
            };
            if front.is_empty() {
                // An end-of-file marker is for canonical readers only.
                if one_line || done > 0 {
                    break;
                }
                self.ready.pop_front();
                continue;
            }
            let n = front.len().min(out.len() - done);
            out[done..done + n].copy_from_slice(&front[..n]);
            front.drain(..n);
            done += n;
            if front.is_empty() {
                self.ready.pop_front();
                if one_line {
                    break;
                }
            }
        }
        done
    }

    /// Appends `data` to `out` as the terminal must show it (OPOST: ONLCR
    /// turns NL into CR NL, OCRNL CR into NL).
    pub fn output(&self, data: &[u8], out: &mut Vec<u8>) {
        let post = self.termios.oflag & OPOST != 0;
        let onlcr = post && self.termios.oflag & ONLCR != 0;
        let ocrnl = post && self.termios.oflag & OCRNL != 0;
        if !onlcr && !ocrnl {
            out.extend_from_slice(data);
            return;
        }
        for &b in data {
            match b {
                b'\n' if onlcr => out.extend_from_slice(b"\r\n"),
                b'\r' if ocrnl => out.push(b'\n'),
                _ => out.push(b),
            }
        }
    }

    /// How many bytes of `data` fit into `room` bytes once processed for
    /// output (so a write can take exactly what one buffer holds).
    pub fn output_fits(&self, data: &[u8], room: usize) -> usize {
        let post = self.termios.oflag & OPOST != 0;
        let onlcr = post && self.termios.oflag & ONLCR != 0;
        if !onlcr {
            return data.len().min(room);
        }
        let mut used = 0;
        for (i, &b) in data.iter().enumerate() {
            let w = if b == b'\n' { 2 } else { 1 };
            if used + w > room {
                return i;
            }
            used += w;
        }
        data.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn typed(t: &mut LineDiscipline, keys: &[u8]) -> (Vec<u8>, Vec<KeySignal>) {
        let mut echo = Vec::new();
        let mut signals = Vec::new();
        for &k in keys {
            signals.extend(t.receive(k, &mut echo));
        }
        (echo, signals)
    }

    fn read_all(t: &mut LineDiscipline) -> ReadResult {
        let mut buf = [0u8; 64];
        t.read(&mut buf)
    }

    fn read_string(t: &mut LineDiscipline) -> Vec<u8> {
        let mut buf = [0u8; 64];
        match t.read(&mut buf) {
            ReadResult::Data(n) => buf[..n].to_vec(),
            other => panic!("expected data, got {other:?}"),
        }
    }

    #[test]
    fn a_line_is_read_only_when_enter_is_pressed() {
        let mut t = LineDiscipline::new();
        let (echo, _) = typed(&mut t, b"ls");
        assert_eq!(echo, b"ls");
        assert_eq!(read_all(&mut t), ReadResult::Empty);
        assert!(!t.readable());
        // Enter sends CR; ICRNL makes it NL, ONLCR echoes CR NL.
        let (echo, _) = typed(&mut t, b"\r");
        assert_eq!(echo, b"\r\n");
        assert!(t.readable());
        assert_eq!(read_string(&mut t), b"ls\n");
    }

    #[test]
    fn each_read_takes_one_line() {
        let mut t = LineDiscipline::new();
        typed(&mut t, b"one\rtwo\r");
        assert_eq!(t.pending(), 8);
        assert_eq!(read_string(&mut t), b"one\n");
        assert_eq!(read_string(&mut t), b"two\n");
        assert_eq!(read_all(&mut t), ReadResult::Empty);
    }

    #[test]
    fn a_short_buffer_takes_the_line_in_parts() {
        let mut t = LineDiscipline::new();
        typed(&mut t, b"abcdef\r");
        let mut buf = [0u8; 4];
        assert_eq!(t.read(&mut buf), ReadResult::Data(4));
        assert_eq!(&buf, b"abcd");
        assert_eq!(read_string(&mut t), b"ef\n");
    }

    #[test]
    fn erase_and_kill_edit_the_line() {
        let mut t = LineDiscipline::new();
        let (echo, _) = typed(&mut t, b"lsx\x7f");
        assert_eq!(echo, b"lsx\x08 \x08");
        typed(&mut t, b" -l\x17-a\r");
        assert_eq!(read_string(&mut t), b"ls -a\n");
        typed(&mut t, b"garbage\x15ok\r");
        assert_eq!(read_string(&mut t), b"ok\n");
    }

    #[test]
    fn erase_removes_a_whole_utf8_character() {
        let mut t = LineDiscipline::new();
        let (echo, _) = typed(&mut t, "aé\x7f".as_bytes());
        assert!(echo.ends_with(b"\x08 \x08"));
        assert_eq!(echo.len(), 3 + 3);
        typed(&mut t, b"\r");
        assert_eq!(read_string(&mut t), b"a\n");
    }

    #[test]
    fn ctrl_d_on_an_empty_line_is_end_of_file() {
        let mut t = LineDiscipline::new();
        typed(&mut t, b"\x04");
        assert!(t.readable());
        assert_eq!(read_all(&mut t), ReadResult::EndOfFile);
        // Only once: the terminal is still open.
        assert_eq!(read_all(&mut t), ReadResult::Empty);
        // Mid-line it hands over the line without a newline.
        typed(&mut t, b"abc\x04");
        assert_eq!(read_string(&mut t), b"abc");
    }

    #[test]
    fn ctrl_c_raises_sigint_flushes_the_line_and_echoes() {
        let mut t = LineDiscipline::new();
        let (echo, signals) = typed(&mut t, b"half\x03");
        assert_eq!(signals, vec![KeySignal::Interrupt]);
        assert!(echo.ends_with(b"^C"));
        typed(&mut t, b"x\r");
        assert_eq!(read_string(&mut t), b"x\n");
        let (_, signals) = typed(&mut t, b"\x1c\x1a");
        assert_eq!(signals, vec![KeySignal::Quit, KeySignal::Suspend]);
    }

    #[test]
    fn without_isig_ctrl_c_is_data() {
        let mut t = LineDiscipline::new();
        t.termios.lflag &= !(ISIG | ICANON | ECHO);
        let (echo, signals) = typed(&mut t, b"\x03");
        assert!(signals.is_empty());
        assert!(echo.is_empty());
        assert_eq!(read_string(&mut t), b"\x03");
    }

    #[test]
    fn raw_mode_hands_over_bytes_as_they_come() {
        let mut t = LineDiscipline::new();
        // What cfmakeraw sets (a full-screen program, a line editor).
        t.termios.iflag &= !(ICRNL | IXON);
        t.termios.oflag &= !OPOST;
        t.termios.lflag &= !(ECHO | ICANON | ISIG | IEXTEN);
        let (echo, _) = typed(&mut t, b"\x1b[A\r");
        assert!(echo.is_empty());
        assert_eq!(read_string(&mut t), b"\x1b[A\r");
        assert_eq!(read_all(&mut t), ReadResult::Empty);
        let mut out = Vec::new();
        t.output(b"a\nb", &mut out);
        assert_eq!(out, b"a\nb");
    }

    #[test]
    fn vmin_zero_never_waits() {
        let mut t = LineDiscipline::new();
        t.termios.lflag &= !ICANON;
        t.termios.cc[VMIN] = 0;
        assert!(t.readable());
        assert_eq!(read_all(&mut t), ReadResult::Data(0));
    }

    #[test]
    fn vmin_waits_for_that_many_bytes() {
        let mut t = LineDiscipline::new();
        t.termios.lflag &= !(ICANON | ECHO);
        t.termios.cc[VMIN] = 3;
        typed(&mut t, b"ab");
        assert!(!t.readable());
        assert_eq!(read_all(&mut t), ReadResult::Empty);
        typed(&mut t, b"c");
        assert_eq!(read_string(&mut t), b"abc");
    }

    #[test]
    fn hang_up_ends_input_after_what_was_typed() {
        let mut t = LineDiscipline::new();
        typed(&mut t, b"last");
        t.hang_up();
        assert_eq!(read_string(&mut t), b"last");
        assert_eq!(read_all(&mut t), ReadResult::EndOfFile);
        assert_eq!(read_all(&mut t), ReadResult::EndOfFile);
    }

    #[test]
    fn control_characters_echo_as_caret_letters() {
        let mut t = LineDiscipline::new();
        let (echo, _) = typed(&mut t, b"\x01\t");
        assert_eq!(echo, b"^A\t");
    }

    #[test]
    fn lnext_takes_the_next_key_literally() {
        let mut t = LineDiscipline::new();
        let (_, signals) = typed(&mut t, b"\x16\x03\r");
        assert!(signals.is_empty());
        assert_eq!(read_string(&mut t), b"\x03\n");
    }

    #[test]
    fn output_turns_newlines_into_crlf_and_fits_buffers() {
        let t = LineDiscipline::new();
        let mut out = Vec::new();
        t.output(b"a\nb\n", &mut out);
        assert_eq!(out, b"a\r\nb\r\n");
        assert_eq!(t.output_fits(b"a\nb\n", 3), 2);
        assert_eq!(t.output_fits(b"a\nb\n", 4), 3);
        assert_eq!(t.output_fits(b"abc", 10), 3);
    }

    #[test]
    fn termios_and_winsize_round_trip_in_the_kernel_layout() {
        assert_eq!(core::mem::size_of::<Termios>(), Termios::SIZE);
        let t = Termios::default();
        let bytes = t.to_bytes();
        assert_eq!(&bytes[0..4], &(ICRNL | IXON | IUTF8).to_le_bytes());
        assert_eq!(bytes[17 + VINTR], 3);
        assert_eq!(Termios::from_bytes(&bytes), t);
        let w = WinSize {
            rows: 24,
            cols: 80,
            ..WinSize::default()
        };
        assert_eq!(w.to_bytes()[..4], [24, 0, 80, 0]);
        assert_eq!(WinSize::from_bytes(&w.to_bytes()), w);
    }
}
