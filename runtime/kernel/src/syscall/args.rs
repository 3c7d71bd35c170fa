//! System-call arguments as types.
//!
//! The table (`table.rs`) names the type of every argument; the dispatcher
//! decodes each register into it before the handler runs, and the tracer
//! shows each by its type's [`Show`]. So a handler receives a descriptor
//! as an [`Fd`], a program address as a [`UserPtr`] or [`UserCStr`] (which
//! only the address space's checked accessors read through), flags as
//! [`Flags`] — never a bare register.

use crate::fd::Fd;
use crate::mm::uaccess::{UserCStr, UserPtr};

/// How `--trace-syscalls` prints an argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Show {
    /// Signed decimal.
    Int,
    /// Hexadecimal (addresses, flags).
    Hex,
    /// Octal (file modes).
    Octal,
    /// A descriptor (`AT_FDCWD` by name).
    Fd,
    /// A NUL-terminated string in program memory.
    Str,
    /// Bytes in program memory whose count is the next argument, quoted.
    Bytes,
}

/// A type a register decodes into.
pub trait Arg: Sized {
    /// How the tracer shows it.
    const SHOW: Show;
    /// The value of the register `raw` (the upper half is ignored for
    /// 32-bit C types, as Linux does).
    fn from_reg(raw: u64) -> Self;
}

impl Arg for Fd {
    const SHOW: Show = Show::Fd;
    fn from_reg(raw: u64) -> Self {
        Fd(raw as u32 as i32)
    }
}

/// The directory a `*at` call's relative path starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirFd {
    /// `AT_FDCWD`: the current directory.
    Cwd,
    /// An open directory.
    Fd(Fd),
}

/// `AT_FDCWD` (include/uapi/linux/fcntl.h).
const AT_FDCWD: i32 = -100;

impl Arg for DirFd {
    const SHOW: Show = Show::Fd;
    fn from_reg(raw: u64) -> Self {
        match raw as u32 as i32 {
            AT_FDCWD => DirFd::Cwd,
            fd => DirFd::Fd(Fd(fd)),
        }
    }
}

impl<T> Arg for UserPtr<T> {
    const SHOW: Show = Show::Hex;
    fn from_reg(raw: u64) -> Self {
        UserPtr::new(raw)
    }
}

impl Arg for UserCStr {
    const SHOW: Show = Show::Str;
    fn from_reg(raw: u64) -> Self {
        UserCStr(UserPtr::new(raw))
    }
}

/// Bytes the program hands to the kernel (write, send), their count in the
/// next argument; the tracer shows their start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UserData(pub UserPtr<u8>);

impl Arg for UserData {
    const SHOW: Show = Show::Bytes;
    fn from_reg(raw: u64) -> Self {
        UserData(UserPtr::new(raw))
    }
}

/// An address the call manages rather than reads through: where to map,
/// unmap or protect memory, the program break, a thread-pointer base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserAddr(pub u64);

impl Arg for UserAddr {
    const SHOW: Show = Show::Hex;
    fn from_reg(raw: u64) -> Self {
        UserAddr(raw)
    }
}

/// A flags word (its bits are the call's to interpret).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flags(pub u64);

impl Arg for Flags {
    const SHOW: Show = Show::Hex;
    fn from_reg(raw: u64) -> Self {
        Flags(raw)
    }
}

/// A file mode (permission bits and file type), a C `mode_t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode(pub u32);

impl Arg for Mode {
    const SHOW: Show = Show::Octal;
    fn from_reg(raw: u64) -> Self {
        Mode(raw as u32)
    }
}

macro_rules! int_arg {
    ($($t:ty),*) => {$(
        impl Arg for $t {
            const SHOW: Show = Show::Int;
            fn from_reg(raw: u64) -> Self {
                raw as $t
            }
        }
    )*};
}

// Counts and sizes (usize, u64), C ints (i32, u32: the low half), offsets
// and timeouts (i64).
int_arg!(u64, usize, i64, i32, u32);

/// A register whose meaning depends on another argument (the third
/// argument of fcntl and ioctl, prctl's second, arch_prctl's second): a
/// number for some commands, the address of a result for others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Word(pub u64);

impl Word {
    /// The value as a number.
    pub fn value(self) -> u64 {
        self.0
    }

    /// The value as the address of a `T`, for the commands that say so.
    pub fn ptr<T>(self) -> UserPtr<T> {
        UserPtr::new(self.0)
    }
}

impl Arg for Word {
    const SHOW: Show = Show::Hex;
    fn from_reg(raw: u64) -> Self {
        Word(raw)
    }
}
