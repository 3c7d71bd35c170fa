//! Linux error numbers (`include/uapi/asm-generic/errno-base.h` and
//! `errno.h`). Everything below the syscall layer returns
//! `Result<_, Errno>`; the dispatcher turns an `Errno` into `-errno` once.

/// Defines [`Errno`] from one line per error: variant, number, symbolic
/// name (as strace prints it) and the C library's description.
macro_rules! errnos {
    ($( $variant:ident = $n:literal, $name:literal, $text:literal; )*) => {
        /// A Linux error number.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(i32)]
        #[allow(missing_docs)]
        pub enum Errno {
            $( $variant = $n, )*
            /// Kernel-internal (Linux's ERESTARTSYS): the call would block
            /// and is re-run when something changes. Never returned to the
            /// program.
            Restart = 512,
        }

        impl Errno {
            /// The symbolic name, as strace prints it.
            pub fn name(self) -> &'static str {
                match self {
                    $( Self::$variant => $name, )*
                    Self::Restart => "ERESTARTSYS",
                }
            }

            /// The C library's description (`strerror`), for trace lines.
            pub fn description(self) -> &'static str {
                match self {
                    $( Self::$variant => $text, )*
                    Self::Restart => "Interrupted system call (to be restarted)",
                }
            }

            /// Looks an error number up (for decoding a raw `-errno`
            /// result).
            pub fn from_raw(raw: i64) -> Option<Self> {
                match raw {
                    $( $n => Some(Self::$variant), )*
                    _ => None,
                }
            }
        }
    };
}

errnos! {
    Perm = 1, "EPERM", "Operation not permitted";
    Noent = 2, "ENOENT", "No such file or directory";
    Srch = 3, "ESRCH", "No such process";
    Intr = 4, "EINTR", "Interrupted system call";
    Io = 5, "EIO", "Input/output error";
    Nxio = 6, "ENXIO", "No such device or address";
    TooBig = 7, "E2BIG", "Argument list too long";
    Noexec = 8, "ENOEXEC", "Exec format error";
    Badf = 9, "EBADF", "Bad file descriptor";
    Child = 10, "ECHILD", "No child processes";
    Again = 11, "EAGAIN", "Resource temporarily unavailable";
    Nomem = 12, "ENOMEM", "Cannot allocate memory";
    Acces = 13, "EACCES", "Permission denied";
    Fault = 14, "EFAULT", "Bad address";
    Busy = 16, "EBUSY", "Device or resource busy";
    Exist = 17, "EEXIST", "File exists";
    Xdev = 18, "EXDEV", "Invalid cross-device link";
    Nodev = 19, "ENODEV", "No such device";
    Notdir = 20, "ENOTDIR", "Not a directory";
    Isdir = 21, "EISDIR", "Is a directory";
    Inval = 22, "EINVAL", "Invalid argument";
    Nfile = 23, "ENFILE", "Too many open files in system";
    Mfile = 24, "EMFILE", "Too many open files";
    Notty = 25, "ENOTTY", "Inappropriate ioctl for device";
    Txtbsy = 26, "ETXTBSY", "Text file busy";
    Fbig = 27, "EFBIG", "File too large";
    Nospc = 28, "ENOSPC", "No space left on device";
    Spipe = 29, "ESPIPE", "Illegal seek";
    Rofs = 30, "EROFS", "Read-only file system";
    Mlink = 31, "EMLINK", "Too many links";
    Pipe = 32, "EPIPE", "Broken pipe";
    Range = 34, "ERANGE", "Numerical result out of range";
    Deadlk = 35, "EDEADLK", "Resource deadlock avoided";
    Nametoolong = 36, "ENAMETOOLONG", "File name too long";
    Nolck = 37, "ENOLCK", "No locks available";
    Nosys = 38, "ENOSYS", "Function not implemented";
    Notempty = 39, "ENOTEMPTY", "Directory not empty";
    Loop = 40, "ELOOP", "Too many levels of symbolic links";
    Nodata = 61, "ENODATA", "No data available";
    Proto = 71, "EPROTO", "Protocol error";
    Overflow = 75, "EOVERFLOW", "Value too large for defined data type";
    Notsock = 88, "ENOTSOCK", "Socket operation on non-socket";
    Destaddrreq = 89, "EDESTADDRREQ", "Destination address required";
    Msgsize = 90, "EMSGSIZE", "Message too long";
    Prototype = 91, "EPROTOTYPE", "Protocol wrong type for socket";
    Noprotoopt = 92, "ENOPROTOOPT", "Protocol not available";
    Protonosupport = 93, "EPROTONOSUPPORT", "Protocol not supported";
    Socktnosupport = 94, "ESOCKTNOSUPPORT", "Socket type not supported";
    Notsup = 95, "EOPNOTSUPP", "Operation not supported";
    Afnosupport = 97, "EAFNOSUPPORT", "Address family not supported by protocol";
    Addrinuse = 98, "EADDRINUSE", "Address already in use";
    Addrnotavail = 99, "EADDRNOTAVAIL", "Cannot assign requested address";
    Netdown = 100, "ENETDOWN", "Network is down";
    Netunreach = 101, "ENETUNREACH", "Network is unreachable";
    Connaborted = 103, "ECONNABORTED", "Software caused connection abort";
    Connreset = 104, "ECONNRESET", "Connection reset by peer";
    Nobufs = 105, "ENOBUFS", "No buffer space available";
    Isconn = 106, "EISCONN", "Transport endpoint is already connected";
    Notconn = 107, "ENOTCONN", "Transport endpoint is not connected";
    Shutdown = 108, "ESHUTDOWN", "Cannot send after transport endpoint shutdown";
    Timedout = 110, "ETIMEDOUT", "Connection timed out";
    Connrefused = 111, "ECONNREFUSED", "Connection refused";
    Hostunreach = 113, "EHOSTUNREACH", "No route to host";
    Already = 114, "EALREADY", "Operation already in progress";
    Inprogress = 115, "EINPROGRESS", "Operation now in progress";
    Stale = 116, "ESTALE", "Stale file handle";
    Dquot = 122, "EDQUOT", "Disk quota exceeded";
}

impl Errno {
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
        assert_eq!(Errno::from_raw(115), Some(Errno::Inprogress));
        assert_eq!(Errno::from_raw(512), None);
        assert_eq!(Errno::Connrefused.description(), "Connection refused");
    }
}
