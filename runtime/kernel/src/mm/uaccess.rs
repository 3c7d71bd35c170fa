//! Checked access to the program's memory.
//!
//! The kernel reads and writes program memory through the program's own
//! addresses — but only after [`AddressSpace::prepare`] has checked the
//! range against the program's areas and made every page present. The
//! kernel therefore never takes a page fault on program memory.

use alloc::vec::Vec;

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
