//! Checked access to the program's memory.
//!
//! The kernel reads and writes program memory through the program's own
//! addresses — but only after [`AddressSpace::prepare`] has checked the
//! range against the program's areas and made every page present. The
//! kernel therefore never takes a page fault on program memory.
//!
//! System calls see program addresses only as [`UserPtr<T>`] and
//! [`UserCStr`] values, accessed through the typed methods at the end of
//! this file. The byte-address methods are for addresses the kernel
//! computes itself (signal frames, the initial stack, the loader).

use alloc::vec::Vec;
use core::marker::PhantomData;

use kiln_kernel::errno::Errno;
use kiln_kernel::exec::elf::{PAGE_SIZE, USER_END};

use super::fault::FaultError;
use super::space::{page_down, AddressSpace};
use crate::arch::{self, pte};

impl AddressSpace {
    /// Checks that `[addr, addr+len)` is program memory allowing the access
    /// and makes all its pages present.
    pub fn prepare(&mut self, addr: u64, len: u64, write: bool) -> Result<(), Errno> {
        if len == 0 {
            return Ok(());
        }
        let end = addr
            .checked_add(len)
            .filter(|&e| e <= USER_END)
            .ok_or(Errno::Fault)?;
        let mut page = page_down(addr);
        while page < end {
            let e = self.tables.lookup(page);
            let fine = e & pte::PRESENT != 0 && (!write || e & pte::WRITABLE != 0);
            if !fine {
                self.populate(page, write, false)?;
            }
            page += PAGE_SIZE;
        }
        Ok(())
    }

    /// The program's bytes at `[addr, addr+len)`.
    pub fn user_bytes(&mut self, addr: u64, len: u64) -> Result<&[u8], Errno> {
        self.prepare(addr, len, false)?;
        if len == 0 {
            return Ok(&[]);
        }
        // SAFETY: `prepare` checked the range is mapped, readable program
        // memory; the program is stopped while the kernel runs, and `&mut
        // self` keeps the areas from changing while the slice lives.
        Ok(unsafe { core::slice::from_raw_parts(addr as *const u8, len as usize) })
    }

    /// The program's bytes at `[addr, addr+len)`, for writing.
    pub fn user_bytes_mut(&mut self, addr: u64, len: u64) -> Result<&mut [u8], Errno> {
        self.prepare(addr, len, true)?;
        if len == 0 {
            return Ok(&mut []);
        }
        // SAFETY: as in `user_bytes`, and the pages were made writable.
        Ok(unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, len as usize) })
    }

    /// Copies `data` to the program's memory at `addr`.
    pub fn write_user(&mut self, addr: u64, data: &[u8]) -> Result<(), Errno> {
        self.user_bytes_mut(addr, data.len() as u64)?
            .copy_from_slice(data);
        Ok(())
    }

    /// Reads a plain value from the program's memory.
    pub fn read_obj<T: Copy>(&mut self, addr: u64) -> Result<T, Errno> {
        let bytes = self.user_bytes(addr, core::mem::size_of::<T>() as u64)?;
        // SAFETY: `bytes` holds size_of::<T>() readable bytes; T is a plain
        // `Copy` type for which any bit pattern read is acceptable to callers
        // (integers and arrays of them).
        Ok(unsafe { core::ptr::read_unaligned(bytes.as_ptr() as *const T) })
    }

    /// Up to `max` bytes of a NUL-terminated string (a longer one is cut,
    /// as strncpy_from_user does).
    pub fn read_cstr_lossy(&mut self, addr: u64, max: usize) -> Result<Vec<u8>, Errno> {
        let mut out = Vec::new();
        for i in 0..max as u64 {
            let b = self.user_bytes(addr + i, 1)?[0];
            if b == 0 {
                break;
            }
            out.push(b);
        }
        Ok(out)
    }

    /// A NUL-terminated string from the program's memory (at most `max`
    /// bytes before the NUL).
    pub fn read_cstr(&mut self, addr: u64, max: usize) -> Result<Vec<u8>, Errno> {
        let mut out = Vec::new();
        let mut at = addr;
        loop {
            let chunk_len = PAGE_SIZE - (at % PAGE_SIZE);
            let chunk = self.user_bytes(at, chunk_len)?;
            if let Some(nul) = chunk.iter().position(|&b| b == 0) {
                out.extend_from_slice(&chunk[..nul]);
                return Ok(out);
            }
            out.extend_from_slice(chunk);
            if out.len() > max {
                return Err(Errno::Nametoolong);
            }
            at += chunk_len;
        }
    }

    /// Copies `data` to the program's area at `addr` (which must exist),
    /// whatever the area's protection.
    pub fn copy_into(&mut self, addr: u64, data: &[u8]) -> Result<(), FaultError> {
        let end = addr + data.len() as u64;
        let mut at = addr;
        while at < end {
            let page = page_down(at);
            self.populate(page, false, false)?;
            let chunk = (page + PAGE_SIZE).min(end) - at;
            let frame = self.tables.lookup(page) & pte::ADDR;
            let src = &data[(at - addr) as usize..][..chunk as usize];
            // SAFETY: `frame` backs a page of a program area that was just
            // made present (anonymous, so the program's own); `[at, at+chunk)`
            // lies inside that page.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    src.as_ptr(),
                    arch::phys_to_virt(frame + (at - page)),
                    src.len(),
                )
            };
            at += chunk;
        }
        Ok(())
    }
}

/// The address of a `T` in the program's memory, as a system call passes
/// it. The kernel reads or writes through it only with the checked
/// accessors of [`AddressSpace`] ([`read`](AddressSpace::read),
/// [`write`](AddressSpace::write), [`slice`](AddressSpace::slice), …).
pub struct UserPtr<T> {
    addr: u64,
    _to: PhantomData<*const T>,
}

impl<T> Clone for UserPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for UserPtr<T> {}

impl<T> PartialEq for UserPtr<T> {
    fn eq(&self, other: &Self) -> bool {
        self.addr == other.addr
    }
}

impl<T> core::fmt::Debug for UserPtr<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:#x}", self.addr)
    }
}

// SAFETY: a UserPtr is an address, not a reference: it grants no access by
// itself (every access goes through a checked AddressSpace method).
unsafe impl<T> Send for UserPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for UserPtr<T> {}

impl<T> UserPtr<T> {
    /// A pointer the program handed over (a register, or a field of a
    /// structure read from its memory).
    pub const fn new(addr: u64) -> Self {
        Self {
            addr,
            _to: PhantomData,
        }
    }

    /// The null pointer (an absent optional argument).
    pub fn is_null(self) -> bool {
        self.addr == 0
    }

    /// `None` for the null pointer.
    pub fn non_null(self) -> Option<Self> {
        (!self.is_null()).then_some(self)
    }

    /// The numeric address (for messages and the tracer).
    pub fn addr(self) -> u64 {
        self.addr
    }

    /// The `n`-th `T` after this one (arrays); wraps like the program's own
    /// pointer arithmetic, and the access check catches the result.
    pub fn add(self, n: usize) -> Self {
        Self::new(
            self.addr
                .wrapping_add((n as u64).wrapping_mul(core::mem::size_of::<T>() as u64)),
        )
    }

    /// The same address seen as a `U` (a structure read field by field).
    pub fn cast<U>(self) -> UserPtr<U> {
        UserPtr::new(self.addr)
    }

    /// The address `bytes` further on, as a `U`.
    pub fn byte_add<U>(self, bytes: u64) -> UserPtr<U> {
        UserPtr::new(self.addr.wrapping_add(bytes))
    }
}

/// A NUL-terminated string in the program's memory (paths, names).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UserCStr(pub UserPtr<u8>);

impl UserCStr {
    /// Whether the pointer is null (an absent optional string).
    pub fn is_null(self) -> bool {
        self.0.is_null()
    }
}

/// Values that can be copied to the program's memory as their bytes:
/// integers and arrays of them (no padding, every bit pattern valid).
pub trait Plain: Copy {
    /// The value's bytes, as the program sees them (little endian).
    fn write_to(&self, out: &mut [u8]);
}

macro_rules! plain_int {
    ($($t:ty),*) => {$(
        impl Plain for $t {
            fn write_to(&self, out: &mut [u8]) {
                out.copy_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}

plain_int!(u8, u16, u32, u64, i32, i64, usize);

impl<T: Plain, const N: usize> Plain for [T; N] {
    fn write_to(&self, out: &mut [u8]) {
        let size = core::mem::size_of::<T>();
        for (v, chunk) in self.iter().zip(out.chunks_exact_mut(size)) {
            v.write_to(chunk);
        }
    }
}

impl AddressSpace {
    /// Reads a `T` from the program's memory.
    pub fn read<T: Copy>(&mut self, at: UserPtr<T>) -> Result<T, Errno> {
        self.read_obj(at.addr)
    }

    /// Writes `value` to the program's memory.
    pub fn write<T: Plain>(&mut self, at: UserPtr<T>, value: T) -> Result<(), Errno> {
        let out = self.user_bytes_mut(at.addr, core::mem::size_of::<T>() as u64)?;
        value.write_to(out);
        Ok(())
    }

    /// Checks that a `T` can be written at `at` (before work that is hard
    /// to undo), without writing it.
    pub fn check_writable<T>(&mut self, at: UserPtr<T>) -> Result<(), Errno> {
        self.prepare(at.addr, core::mem::size_of::<T>() as u64, true)
    }

    /// Checks that `len` bytes can be written at `at`, without writing.
    pub fn check_writable_bytes(&mut self, at: UserPtr<u8>, len: usize) -> Result<(), Errno> {
        self.prepare(at.addr, len as u64, true)
    }

    /// The program's `len` bytes at `at`.
    pub fn slice(&mut self, at: UserPtr<u8>, len: usize) -> Result<&[u8], Errno> {
        self.user_bytes(at.addr, len as u64)
    }

    /// The program's `len` bytes at `at`, for writing.
    pub fn slice_mut(&mut self, at: UserPtr<u8>, len: usize) -> Result<&mut [u8], Errno> {
        self.user_bytes_mut(at.addr, len as u64)
    }

    /// Copies `data` to the program's memory at `at` (a byte-encoded
    /// structure or a buffer).
    pub fn write_bytes<T>(&mut self, at: UserPtr<T>, data: &[u8]) -> Result<(), Errno> {
        self.write_user(at.addr, data)
    }

    /// A string from the program's memory (at most `max` bytes before the
    /// NUL; ENAMETOOLONG beyond).
    pub fn cstr(&mut self, s: UserCStr, max: usize) -> Result<Vec<u8>, Errno> {
        self.read_cstr(s.0.addr, max)
    }

    /// A string from the program's memory, cut at `max` bytes.
    pub fn cstr_lossy(&mut self, s: UserCStr, max: usize) -> Result<Vec<u8>, Errno> {
        self.read_cstr_lossy(s.0.addr, max)
    }
}
