//! The task's standard streams. containerd hands the shim paths: FIFOs
//! its client (ctr, the CRI plugin) reads and writes, `file://` URIs for
//! log files, or nothing at all; a task with a terminal gets a
//! pseudo-terminal between the program and the FIFOs.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;

/// Errors opening a stream.
#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    /// The path could not be opened.
    #[error("opening the task's {stream} at {path}: {source}")]
    Open {
        /// stdin, stdout or stderr.
        stream: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A URI scheme kiln does not handle (`binary://` log drivers).
    #[error("the task's {stream} is {uri}: kiln's shim takes FIFOs and file:// paths only")]
    Scheme {
        /// stdout or stderr.
        stream: &'static str,
        /// The URI.
        uri: String,
    },
    /// No pipe for standard input.
    #[error("making a pipe for the task's stdin: {0}")]
    Pipe(io::Error),
    /// No pseudo-terminal for a task that asked for one.
    #[error("making the task's terminal: {0}")]
    Pty(io::Error),
}

/// Where `stream` (stdout or stderr) goes: nowhere when containerd gave
/// no path, a file for `file://`, else the FIFO at `path`.
///
/// The FIFO is opened for reading and writing, as containerd's own
/// shims do: the open does not wait for a reader, and output is never
/// lost to EPIPE while a client reattaches (a reader gone for good leaves
/// the program waiting once the pipe's buffer is full, as with runc).
///
/// # Errors
/// [`StdioError`] naming the stream.
pub fn output(stream: &'static str, path: &str) -> Result<Stdio, StdioError> {
    Ok(open_output(stream, path)?.map_or_else(Stdio::null, Stdio::from))
}

/// The file behind [`output`]; `None` when containerd gave no path.
fn open_output(stream: &'static str, path: &str) -> Result<Option<File>, StdioError> {
    if path.is_empty() {
        return Ok(None);
    }
    let open_error = |path: &str| {
        let path = PathBuf::from(path);
        move |source| StdioError::Open {
            stream,
            path,
            source,
        }
    };
    if let Some(file) = path.strip_prefix("file://") {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .map_err(open_error(file))?;
        return Ok(Some(log));
    }
    if path.contains("://") {
        return Err(StdioError::Scheme {
            stream,
            uri: path.into(),
        });
    }
    let fifo = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(open_error(path))?;
    Ok(Some(fifo))
}

/// The program's standard input: the read end of a pipe a thread fills
/// from the FIFO at `path`, so the program sees end-of-file only when the
/// client closes its end (opening the FIFO itself would race the client's
/// open and could read an early end-of-file).
///
/// # Errors
/// [`StdioError::Pipe`].
pub fn input(path: &str) -> Result<Stdio, StdioError> {
    let (reader, writer) = kiln_builder::daemon::pipe().map_err(StdioError::Pipe)?;
    pump_from_fifo(path, File::from(writer));
    Ok(reader.into())
}

/// Copies what the client writes into the FIFO at `path` to `sink`, on a
/// thread: the open waits for the client's end; the copy ends with the
/// client's end-of-file or when the program has gone (EPIPE, EIO).
fn pump_from_fifo(path: &str, mut sink: File) {
    let fifo = PathBuf::from(path);
    std::thread::spawn(move || match File::open(&fifo) {
        Ok(mut source) => {
            let _ = io::copy(&mut source, &mut sink);
        }
        Err(e) => containerd_shim::warn!("opening the task's stdin {}: {e}", fifo.display()),
    });
}

/// A task's terminal (`ctr run -t`, a pod's `tty: true`): a
/// pseudo-terminal whose child side is the program's three streams and
/// whose parent side the shim copies to and from the client's FIFOs.
pub struct Terminal {
    /// The parent side, kept for resizes.
    master: File,
}

/// A new terminal wired to the FIFOs `stdin` (may be empty) and
/// `stdout`; the returned descriptor is the child side, for the program.
///
/// # Errors
/// [`StdioError`] when the pseudo-terminal or a FIFO cannot be opened.
pub fn terminal(stdin: &str, stdout: &str) -> Result<(Terminal, OwnedFd), StdioError> {
    let (mut master, mut child) = (-1, -1);
    // SAFETY: openpty writes two descriptors into the two integers; the
    // name, termios and size arguments may be null.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut child,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(StdioError::Pty(io::Error::last_os_error()));
    }
    // SAFETY: both descriptors were just created and are owned by no one
    // else.
    let (master, child) = unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(child)) };
    for fd in [master.as_raw_fd(), child.as_raw_fd()] {
        // SAFETY: F_SETFD on a descriptor this function owns: neither side
        // leaks into the program beyond its three standard streams.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    if !stdin.is_empty() {
        pump_from_fifo(stdin, master.try_clone().map_err(StdioError::Pty)?);
    }
    if let Some(mut out) = open_output("stdout", stdout)? {
        let mut source = master.try_clone().map_err(StdioError::Pty)?;
        // Ends with EIO once the program (the last holder of the child
        // side) has gone; dropping `out` then ends the client's copy.
        std::thread::spawn(move || {
            let _ = io::copy(&mut source, &mut out);
        });
    }
    Ok((Terminal { master }, child))
}

impl Terminal {
    /// Gives the terminal a new size; the program gets SIGWINCH.
    ///
    /// # Errors
    /// When the ioctl fails.
    pub fn resize(&self, columns: u16, rows: u16) -> io::Result<()> {
        let size = libc::winsize {
            ws_row: rows,
            ws_col: columns,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which
        // lives across the call.
        if unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn no_path_is_null_and_other_schemes_are_refused() {
        assert!(output("stdout", "").is_ok());
        let err = output("stdout", "binary:///usr/bin/logger?x=1").unwrap_err();
        assert!(
            err.to_string().contains("binary:///usr/bin/logger"),
            "{err}"
        );
    }

    #[test]
    fn file_uris_append_to_a_log() {
        let log = std::env::temp_dir().join(format!("kiln-stdio-{}.log", std::process::id()));
        std::fs::write(&log, "earlier\n").unwrap();
        let stdio = output("stderr", &format!("file://{}", log.display())).unwrap();
        let mut child = std::process::Command::new("echo")
            .arg("later")
            .stdout(stdio)
            .spawn()
            .unwrap();
        child.wait().unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        std::fs::remove_file(&log).unwrap();
        assert_eq!(text, "earlier\nlater\n");
    }

    #[test]
    fn stdin_is_pumped_from_the_fifo_until_the_client_closes_it() {
        let fifo = std::env::temp_dir().join(format!("kiln-stdin-{}.fifo", std::process::id()));
        let _ = std::fs::remove_file(&fifo);
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let stdin = input(fifo.to_str().unwrap()).unwrap();
        let mut child = std::process::Command::new("cat")
            .stdin(stdin)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut client = OpenOptions::new().write(true).open(&fifo).unwrap();
        client.write_all(b"typed\n").unwrap();
        drop(client);
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert!(child.wait().unwrap().success());
        std::fs::remove_file(&fifo).unwrap();
        assert_eq!(out, "typed\n");
    }
}
