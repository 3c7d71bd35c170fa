//! Demand paging: making a page of the program's address space present
//! when it is first touched, with the frame its area's backing calls for.

use kiln_kernel::errno::Errno;
use kiln_kernel::exec::elf::PAGE_SIZE;
use kiln_kernel::mm::vma::{prot, Backing, Label};

use super::frame;
use super::space::{page_down, AddressSpace};
use crate::arch::{self, pte};

/// Why a page could not be made present.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultError {
    /// No area holds the address.
    Unmapped,
    /// The area does not allow this access.
    Protection,
    /// No free frame.
    OutOfMemory,
}

impl From<FaultError> for Errno {
    fn from(e: FaultError) -> Errno {
        match e {
            FaultError::Unmapped | FaultError::Protection => Errno::Fault,
            FaultError::OutOfMemory => Errno::Nomem,
        }
    }
}

/// Page-table flags for an area's protection.
pub(super) fn pte_flags(p: u32) -> u64 {
    let mut f = 0;
    if p & prot::WRITE != 0 {
        f |= pte::WRITABLE;
    }
    if p & prot::EXEC == 0 {
        f |= pte::NO_EXECUTE;
    }
    f
}

impl AddressSpace {
    /// Makes the page holding `addr` present for an access of kind
    /// `write`/`exec`, allocating, copying or un-sharing a frame as the
    /// area's backing says. The first touch of an untouched, 2 MiB-aligned
    /// range of a large private anonymous area maps a 2 MiB page (see
    /// [`Self::map_large_page`]).
    pub fn populate(&mut self, addr: u64, write: bool, exec: bool) -> Result<(), FaultError> {
        let page = page_down(addr);
        let vma = *self.vmas.find(page).ok_or(FaultError::Unmapped)?;
        let mut need = prot::READ;
        if write {
            need |= prot::WRITE;
        }
        if exec {
            need = prot::EXEC;
        }
        if vma.prot & need != need {
            return Err(FaultError::Protection);
        }
        let entry = self.tables.lookup(page);
        let flags = pte_flags(vma.prot);
        if entry & pte::PRESENT != 0 {
            if !write || entry & pte::WRITABLE != 0 {
                return Ok(()); // already fine (a stale TLB entry, or a race we cannot have)
            }
            let pa = entry & pte::ADDR;
            let image = self.is_image_frame(&vma, page, pa);
            if !image && (vma.label == Label::Shared || !frame::is_shared(pa)) {
                // Shared memory, or copy-on-write whose other holders are
                // gone (the frame is this process's alone now).
                self.tables.protect(page, flags, true);
                return Ok(());
            }
            // A write to a frame of the image, or one a fork shares: copy.
            let copy = frame::alloc_copy_for_program().ok_or(FaultError::OutOfMemory)?;
            copy_frame(pa, copy);
            self.tables.unmap(page);
            if !image {
                frame::release(pa);
            }
            return self.map(page, copy, flags);
        }
        if entry & pte::KEPT != 0 {
            // A PROT_NONE page made accessible again keeps its contents
            // (read-only while a fork shares it).
            let mut flags = flags;
            if vma.label != Label::Shared && frame::is_shared(entry & pte::ADDR) {
                flags &= !pte::WRITABLE;
            }
            self.tables.protect(page, flags, true);
            return Ok(());
        }
        match vma.backing {
            Backing::Anonymous => {
                if self.map_large_page(page, exec) {
                    return Ok(());
                }
                let pa = frame::alloc_for_program().ok_or(FaultError::OutOfMemory)?;
                self.map(page, pa, flags)
            }
            Backing::Image { phys, offset } => {
                let source = phys + offset + (page - vma.start);
                // A writable private mapping of a file (a program's or a
                // library's data and GOT) gets its own copy at the first
                // touch, read or write, neighbours included: mapping the
                // image's frame read-only would cost a second fault, a TLB
                // flush (an emulated INVLPG on PVM) and a second shadow
                // fault when the program writes the page, as it nearly
                // always does (relocations, Python's reference counts).
                if write || vma.prot & prot::WRITE != 0 {
                    let copy = frame::alloc_copy_for_program().ok_or(FaultError::OutOfMemory)?;
                    copy_frame(source, copy);
                    self.map(page, copy, flags)
                } else {
                    self.map(page, source, flags & !pte::WRITABLE)
                }
            }
        }
    }

    /// Handles the program's page fault at `addr`: makes that page present,
    /// then maps the not-yet-present neighbours in an aligned window,
    /// because each fault costs several exits to the hypervisor (~10 µs on
    /// PVM, against ~4.5 µs for the first touch of a page already mapped:
    /// `cargo xtask bench-syscall` measured 15.2 µs per page without
    /// neighbours, 7.8 with 4, 4.7 with 16) and programs touch memory in
    /// runs. The window is 128 KiB for anonymous memory (each neighbour
    /// costs a frame) and 256 KiB over the image's files (their frames
    /// exist already); bench-apps' Python run takes 3540 exits with 64 KiB
    /// windows, 3229 with 256 KiB over files, 2922 with 128 KiB more for
    /// anonymous memory. Neighbours that cannot be mapped are left alone.
    pub fn handle_fault(&mut self, addr: u64, write: bool, exec: bool) -> Result<(), FaultError> {
        self.populate(addr, write, exec)?;
        let Some(vma) = self.vmas.find(addr).copied() else {
            return Ok(());
        };
        let window = match vma.backing {
            Backing::Anonymous => 32 * PAGE_SIZE,
            Backing::Image { .. } => 64 * PAGE_SIZE,
        };
        let start = (addr & !(window - 1)).max(vma.start);
        let end = ((addr & !(window - 1)) + window).min(vma.end);
        let fault_page = page_down(addr);
        let mut page = start;
        while page < end {
            if page != fault_page && self.tables.lookup(page) & (pte::PRESENT | pte::KEPT) == 0 {
                let _ = self.populate(page, false, false);
            }
            page += PAGE_SIZE;
        }
        Ok(())
    }

    /// Maps every page of `[start, end)` of an area backed by the image (a
    /// program's or library's code, read-only data, or — copied — its
    /// data) now, rather than a fault-around window at a time: the entries
    /// are written while the tables are still new (no host trap), and
    /// each guest page fault spared saves two round trips to the host on
    /// PVM (the fault the host passes on, and the shadow fault when the
    /// program touches the page again). Pages that cannot be mapped are
    /// left to demand paging.
    pub fn map_image_now(&mut self, start: u64, end: u64) {
        let mut page = page_down(start);
        while page < end {
            let Some(vma) = self.vmas.find(page).copied() else {
                return;
            };
            if !matches!(vma.backing, Backing::Image { .. }) || vma.prot & prot::READ == 0 {
                page = vma.end;
                continue;
            }
            if self.tables.lookup(page) & (pte::PRESENT | pte::KEPT) == 0
                && self.populate(page, false, false).is_err()
            {
                return;
            }
            page += PAGE_SIZE;
        }
    }

    /// Maps the 2 MiB page around `addr` when its area is private
    /// anonymous memory (an anonymous mmap or the heap, not a stack) that
    /// covers the whole aligned range, nothing of the range is mapped yet
    /// and a 2 MiB run of fresh frames is free. On PVM this turns 512
    /// first-touch faults the host must fix (one exit each) into one, as
    /// the host backs guest RAM with huge pages too. False when any
    /// condition fails: the caller maps a small page.
    fn map_large_page(&mut self, addr: u64, exec: bool) -> bool {
        let start = addr & !(arch::LARGE_PAGE - 1);
        let Some(vma) = self.vmas.find(addr).copied() else {
            return false;
        };
        let suitable = matches!(vma.backing, Backing::Anonymous)
            && matches!(vma.label, Label::Mmap | Label::Heap)
            && vma.prot & prot::WRITE != 0
            && (!exec || vma.prot & prot::EXEC != 0)
            && vma.start <= start
            && start + arch::LARGE_PAGE <= vma.end
            && self.tables.directory_entry_free(start);
        if !suitable {
            return false;
        }
        let Some(pa) = frame::alloc_large() else {
            return false;
        };
        let flags = pte_flags(vma.prot);
        if self
            .tables
            .map_large(start, pa, flags, &mut frame::alloc_table, &mut frame::free)
            .is_err()
        {
            for i in 0..arch::LARGE_PAGE / PAGE_SIZE {
                frame::free(pa + i * PAGE_SIZE);
            }
            return false;
        }
        true
    }

    pub(super) fn map(&mut self, page: u64, pa: u64, flags: u64) -> Result<(), FaultError> {
        self.tables
            .map(page, pa, flags, &mut frame::alloc_table)
            .map_err(|_| FaultError::OutOfMemory)
    }
}

pub(super) fn copy_frame(from: u64, to: u64) {
    // SAFETY: both are RAM frames reached through the direct map; `to` was
    // just allocated, so nothing else refers to it.
    unsafe {
        core::ptr::copy_nonoverlapping(
            arch::phys_to_virt(from),
            arch::phys_to_virt(to),
            PAGE_SIZE as usize,
        )
    };
}
