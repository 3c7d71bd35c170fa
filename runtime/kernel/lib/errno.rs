//! Linux error numbers (`include/uapi/asm-generic/errno-base.h` and
//! `errno.h`). Everything below the syscall layer returns
//! `Result<_, Errno>`; the dispatcher turns an `Errno` into `-errno` once.

/// A Linux error number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
#[allow(missing_docs)]
pub enum Errno {
    Perm = 1,
    Noent = 2,
    Srch = 3,
    Intr = 4,
    Io = 5,
    Nxio = 6,
    TooBig = 7,
    Noexec = 8,
    Badf = 9,
    Child = 10,
    Again = 11,
    Nomem = 12,
    Acces = 13,
    Fault = 14,
    Busy = 16,
    Exist = 17,
    Xdev = 18,
    Nodev = 19,
    Notdir = 20,
    Isdir = 21,
    Inval = 22,
    Nfile = 23,
    Mfile = 24,
    Notty = 25,
    Fbig = 27,
    Nospc = 28,
    Spipe = 29,
    Rofs = 30,
    Pipe = 32,
    Range = 34,
    Deadlk = 35,
    Nametoolong = 36,
    Nosys = 38,
    Notempty = 39,
    Loop = 40,
    Nodata = 61,
    Overflow = 75,
    Notsup = 95,
    Timedout = 110,
    /// Kernel-internal (Linux's ERESTARTSYS): the call would block and is
    /// re-run when something changes. Never returned to the program.
    Restart = 512,
}

impl Errno {
    /// The symbolic name, as strace prints it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Perm => "EPERM",
            Self::Noent => "ENOENT",
            Self::Srch => "ESRCH",
            Self::Intr => "EINTR",
            Self::Io => "EIO",
            Self::Nxio => "ENXIO",
            Self::TooBig => "E2BIG",
            Self::Noexec => "ENOEXEC",
            Self::Badf => "EBADF",
            Self::Child => "ECHILD",
            Self::Again => "EAGAIN",
            Self::Nomem => "ENOMEM",
            Self::Acces => "EACCES",
            Self::Fault => "EFAULT",
            Self::Busy => "EBUSY",
            Self::Exist => "EEXIST",
            Self::Xdev => "EXDEV",
            Self::Nodev => "ENODEV",
            Self::Notdir => "ENOTDIR",
            Self::Isdir => "EISDIR",
            Self::Inval => "EINVAL",
            Self::Nfile => "ENFILE",
            Self::Mfile => "EMFILE",
            Self::Notty => "ENOTTY",
            Self::Fbig => "EFBIG",
            Self::Nospc => "ENOSPC",
            Self::Spipe => "ESPIPE",
            Self::Rofs => "EROFS",
            Self::Pipe => "EPIPE",
            Self::Range => "ERANGE",
            Self::Deadlk => "EDEADLK",
            Self::Nametoolong => "ENAMETOOLONG",
            Self::Nosys => "ENOSYS",
            Self::Notempty => "ENOTEMPTY",
            Self::Loop => "ELOOP",
            Self::Nodata => "ENODATA",
            Self::Overflow => "EOVERFLOW",
            Self::Notsup => "EOPNOTSUPP",
            Self::Timedout => "ETIMEDOUT",
            Self::Restart => "ERESTARTSYS",
        }
    }

    /// The C library's description (`strerror`), for trace lines.
    pub fn description(self) -> &'static str {
        match self {
            Self::Perm => "Operation not permitted",
            Self::Noent => "No such file or directory",
            Self::Srch => "No such process",
            Self::Intr => "Interrupted system call",
            Self::Io => "Input/output error",
            Self::Nxio => "No such device or address",
            Self::TooBig => "Argument list too long",
            Self::Noexec => "Exec format error",
            Self::Badf => "Bad file descriptor",
            Self::Child => "No child processes",
            Self::Again => "Resource temporarily unavailable",
            Self::Nomem => "Cannot allocate memory",
            Self::Acces => "Permission denied",
            Self::Fault => "Bad address",
            Self::Busy => "Device or resource busy",
            Self::Exist => "File exists",
            Self::Xdev => "Invalid cross-device link",
            Self::Nodev => "No such device",
            Self::Notdir => "Not a directory",
            Self::Isdir => "Is a directory",
            Self::Inval => "Invalid argument",
            Self::Nfile => "Too many open files in system",
            Self::Mfile => "Too many open files",
            Self::Notty => "Inappropriate ioctl for device",
            Self::Fbig => "File too large",
            Self::Nospc => "No space left on device",
            Self::Spipe => "Illegal seek",
            Self::Rofs => "Read-only file system",
            Self::Pipe => "Broken pipe",
            Self::Range => "Numerical result out of range",
            Self::Deadlk => "Resource deadlock avoided",
            Self::Nametoolong => "File name too long",
            Self::Nosys => "Function not implemented",
            Self::Notempty => "Directory not empty",
            Self::Loop => "Too many levels of symbolic links",
            Self::Nodata => "No data available",
            Self::Overflow => "Value too large for defined data type",
            Self::Notsup => "Operation not supported",
            Self::Timedout => "Connection timed out",
            Self::Restart => "Interrupted system call (to be restarted)",
        }
    }

    /// Looks an error number up (for decoding a raw `-errno` result).
    pub fn from_raw(raw: i64) -> Option<Self> {
        const ALL: [Errno; 39] = [
            Errno::Perm,
            Errno::Noent,
            Errno::Srch,
            Errno::Intr,
            Errno::Io,
            Errno::Nxio,
            Errno::TooBig,
            Errno::Noexec,
            Errno::Badf,
            Errno::Child,
            Errno::Again,
            Errno::Nomem,
            Errno::Acces,
            Errno::Fault,
            Errno::Busy,
            Errno::Exist,
            Errno::Xdev,
            Errno::Nodev,
            Errno::Notdir,
            Errno::Isdir,
            Errno::Inval,
            Errno::Nfile,
            Errno::Mfile,
            Errno::Notty,
            Errno::Fbig,
            Errno::Nospc,
            Errno::Spipe,
            Errno::Rofs,
            Errno::Pipe,
            Errno::Range,
            Errno::Deadlk,
            Errno::Nametoolong,
            Errno::Nosys,
            Errno::Notempty,
            Errno::Loop,
            Errno::Nodata,
            Errno::Overflow,
            Errno::Notsup,
            Errno::Timedout,
        ];
        ALL.into_iter().find(|e| *e as i64 == raw)
    }

    /// The value a system call returns for this error: `-errno`.
    pub fn as_return(self) -> u64 {
        (-(self as i64)) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_return_round_trips() {
        let raw = Errno::Nosys.as_return() as i64;
        assert_eq!(raw, -38);
        assert_eq!(Errno::from_raw(-raw), Some(Errno::Nosys));
        assert_eq!(Errno::Noent.name(), "ENOENT");
    }
}
