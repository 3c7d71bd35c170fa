//! The program's address space: its areas (the host-tested
//! [`kiln_kernel::mm::vma`] set), the page tables that back them, and its
//! program break. Demand paging is in [`fault`](super::fault), checked
//! access to its memory in [`uaccess`](super::uaccess).
//!
//! The program shares the kernel's page tables (the lower half is its own)
//! and runs at the kernel's privilege level.

use kiln_kernel::exec::elf::{PAGE_SIZE, USER_END, USER_MIN};
use kiln_kernel::mm::vma::{Backing, Label, Vma, VmaError, VmaSet};

use super::fault::{copy_frame, pte_flags, FaultError};
use super::frame;
use crate::arch::{self, pte, PageTables};

/// Top of the main thread's stack (Linux's, without randomisation).
pub const STACK_TOP: u64 = USER_END;
/// Size of the main thread's stack area (Linux's default RLIMIT_STACK).
pub const STACK_SIZE: u64 = 8 << 20;
/// Where anonymous mappings start, growing down (Linux's `mmap_base`
/// without randomisation: 128 MiB below the stack top).
pub const MMAP_TOP: u64 = STACK_TOP - (128 << 20);

/// Largest shared-memory area whose untouched pages a fork makes present
/// so that parent and child share them (larger ones share the pages
/// touched before the fork; the rest become each process's own).
const SHARED_POPULATE_MAX: u64 = 64 << 20;

/// The program's memory: areas, page tables and break.
pub struct AddressSpace {
    /// The program's areas.
    pub vmas: VmaSet,
    pub(super) tables: PageTables,
    /// Start of the brk heap.
    pub brk_start: u64,
    /// Current program break.
    pub brk: u64,
}

impl AddressSpace {
    /// An empty address space over `tables` with its break at `brk_start`.
    pub fn new(tables: PageTables, brk_start: u64) -> Self {
        Self {
            vmas: VmaSet::new(),
            tables,
            brk_start,
            brk: brk_start,
        }
    }
}

impl AddressSpace {
    /// Adds an area (no pages are mapped until touched).
    pub fn add_area(&mut self, vma: Vma) -> Result<(), VmaError> {
        self.vmas.insert(vma)
    }

    /// Frees its page tables (after `remove_range` of everything). They
    /// must not be the active ones.
    pub fn free_tables(self) {
        self.tables.free_process_tables(&mut frame::free);
    }

    /// Gives back every frame it maps and then its page tables (which must
    /// not be the active ones): an address space no process will run in.
    pub fn discard(mut self) {
        let _ = self.remove_range(USER_MIN, USER_END);
        self.free_tables();
    }

    /// Whether a store to each of the `len` bytes at `addr` (of the
    /// program's half) would succeed now without a page fault: their pages
    /// are present and writable (not copy-on-write, not `PROT_NONE`).
    pub fn writable_now(&self, addr: u64, len: u64) -> bool {
        let Some(last) = addr.checked_add(len.saturating_sub(1)) else {
            return false;
        };
        if last >= USER_END {
            return false;
        }
        (page_down(addr)..=page_down(last))
            .step_by(PAGE_SIZE as usize)
            .all(|va| {
                let e = self.tables.lookup(va);
                e & pte::PRESENT != 0 && e & pte::WRITABLE != 0
            })
    }

    /// Physical address of its top-level page table.
    pub fn pml4(&self) -> u64 {
        self.tables.pml4()
    }

    /// A copy for a forked child: new page tables (the kernel's half
    /// shared), the same areas and the same frames. Private pages become
    /// read-only in both and are copied by whichever process writes first
    /// (copy-on-write, [`frame::share`] counts the holders); pages of
    /// shared memory stay writable and shared (those not yet touched are
    /// made present first, so that both see the same ones); the image's
    /// own frames are mapped as they are.
    ///
    /// # Errors
    /// ENOMEM when frames run out (the child's tables are freed again).
    fn fork_here(&mut self) -> Result<AddressSpace, kiln_kernel::errno::Errno> {
        use kiln_kernel::errno::Errno;
        let pml4 = arch::new_page_table_root().ok_or(Errno::Nomem)?;
        // SAFETY: a fresh top-level table that only the child will use; it
        // is not active until the scheduler loads it.
        let tables = unsafe { PageTables::from_pml4(pml4) };
        let mut child = AddressSpace::new(tables, self.brk_start);
        child.brk = self.brk;
        let areas: alloc::vec::Vec<Vma> = self.vmas.iter().copied().collect();
        let mut write_protected = false;
        let shared = (|| {
            for vma in &areas {
                child.vmas.insert(*vma).map_err(|_| Errno::Nomem)?;
                let shared_memory = vma.label == Label::Shared;
                if shared_memory && vma.end - vma.start <= SHARED_POPULATE_MAX {
                    self.populate_shared(vma)?;
                }
                let mut next = vma.start;
                while let Some((page, e)) = self.tables.next_mapped(next, vma.end) {
                    next = page + PAGE_SIZE;
                    let pa = e & pte::ADDR;
                    let mut flags = e & !pte::ADDR & !(pte::PRESENT | pte::KEPT | pte::USER);
                    let image = self.is_image_frame(vma, page, pa);
                    let target = if image {
                        pa
                    } else if frame::share(pa) {
                        if !shared_memory && flags & pte::WRITABLE != 0 {
                            flags &= !pte::WRITABLE;
                            self.tables.write_protect(page);
                            write_protected = true;
                        }
                        pa
                    } else {
                        let copy = frame::alloc().ok_or(Errno::Nomem)?;
                        copy_frame(pa, copy);
                        copy
                    };
                    if child
                        .tables
                        .map(page, target, flags, &mut frame::alloc_table)
                        .is_err()
                    {
                        if !image {
                            frame::release(target);
                        }
                        return Err(Errno::Nomem);
                    }
                    if e & pte::PRESENT == 0 {
                        child.tables.protect(page, flags, false);
                    }
                }
            }
            Ok(())
        })();
        // The parent's write-protected entries may sit writable in the
        // TLB: one flush for all of them.
        if write_protected && arch::active_page_table() == self.pml4() {
            arch::flush_tlb();
        }
        match shared {
            Ok(()) => Ok(child),
            Err(e) => {
                child.discard();
                Err(e)
            }
        }
    }

    /// Makes every page of shared-memory area `vma` present (zeroed), so
    /// that a forked child and its parent map the same frames.
    fn populate_shared(&mut self, vma: &Vma) -> Result<(), kiln_kernel::errno::Errno> {
        use kiln_kernel::errno::Errno;
        let flags = pte_flags(vma.prot);
        let mut page = vma.start;
        while page < vma.end {
            if self.tables.lookup(page) & (pte::PRESENT | pte::KEPT) == 0 {
                let pa = frame::alloc_zeroed().ok_or(Errno::Nomem)?;
                if self.map(page, pa, flags).is_err() {
                    frame::free(pa);
                    return Err(Errno::Nomem);
                }
                if vma.prot == 0 {
                    self.tables.protect(page, flags, false);
                }
            }
            page += PAGE_SIZE;
        }
        Ok(())
    }

    /// Resident pages: (all present pages, those of them that are the
    /// image's own), for /proc's RSS figures.
    pub fn resident_pages(&self) -> (u64, u64) {
        let (mut resident, mut image) = (0, 0);
        self.for_each_present(|vma, page, e| {
            resident += 1;
            if self.is_image_frame(vma, page, e & pte::ADDR) {
                image += 1;
            }
        });
        (resident, image)
    }

    /// Calls `f` with each present 4 KiB page of the areas: its area, its
    /// address and its entry.
    fn for_each_present(&self, mut f: impl FnMut(&Vma, u64, u64)) {
        for vma in self.vmas.iter() {
            let mut next = vma.start;
            while let Some((page, e)) = self.tables.next_mapped(next, vma.end) {
                next = page + PAGE_SIZE;
                if e & pte::PRESENT != 0 {
                    f(vma, page, e);
                }
            }
        }
    }

    /// Reads one byte of each present page of the areas (their tables
    /// loaded on this CPU); returns how many.
    pub fn touch_resident(&self) -> u64 {
        let mut touched = 0;
        self.for_each_present(|_, page, _| {
            // SAFETY: a present page of the loaded address space, mapped
            // readable by the kernel (program memory is read through its
            // own addresses); a read changes nothing.
            unsafe { core::ptr::read_volatile(page as *const u8) };
            touched += 1;
        });
        touched
    }

    /// Removes `[start, end)` from the address space, freeing its frames.
    fn remove_range_here(&mut self, start: u64, end: u64) -> Result<(), VmaError> {
        for piece in self.vmas.remove(start, end)? {
            let mut next = piece.start;
            while let Some((page, _)) = self.tables.next_mapped(next, piece.end) {
                // A large page the range covers goes whole (a part of one
                // is split by `unmap` below).
                if page.is_multiple_of(arch::LARGE_PAGE) && page + arch::LARGE_PAGE <= piece.end {
                    if let Some(pa) = self.tables.unmap_large(page) {
                        frame::release_large(pa);
                        next = page + arch::LARGE_PAGE;
                        continue;
                    }
                }
                next = page + PAGE_SIZE;
                if let Some(pa) = self.tables.unmap(page) {
                    if !self.is_image_frame(&piece, page, pa) {
                        frame::release(pa);
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes `bytes` into the program's code at `addr` (system-call
    /// rewriting): pages shared with the image get a private copy first,
    /// and keep their protection.
    pub fn poke_code(&mut self, addr: u64, bytes: &[u8]) -> Result<(), FaultError> {
        for (i, &b) in bytes.iter().enumerate() {
            let at = addr + i as u64;
            let page = page_down(at);
            let vma = self.vmas.find(at).copied().ok_or(FaultError::Unmapped)?;
            if self.tables.lookup(page) & pte::PRESENT == 0 {
                self.populate(page, false, true)?;
            }
            let entry = self.tables.lookup(page);
            let mut pa = entry & pte::ADDR;
            let forked = frame::is_shared(pa);
            if forked || self.is_image_frame(&vma, page, pa) {
                let copy = frame::alloc().ok_or(FaultError::OutOfMemory)?;
                copy_frame(pa, copy);
                let flags = entry & !(pte::ADDR | pte::PRESENT);
                self.tables.unmap(page);
                if self.map(page, copy, flags).is_err() {
                    frame::free(copy);
                    return Err(FaultError::OutOfMemory);
                }
                if forked {
                    frame::release(pa);
                }
                pa = copy;
            }
            // SAFETY: `pa` is the program's private frame backing `page`
            // (just made private if it was shared), reached through the
            // direct map; the byte lies inside it.
            unsafe { *arch::phys_to_virt(pa + (at - page)) = b };
        }
        Ok(())
    }

    /// Moves the area piece `[start, end)` (inside one area) to `to`, pages
    /// and all: their frames change address, not content (mremap).
    fn move_range_here(&mut self, start: u64, end: u64, to: u64) -> Result<(), VmaError> {
        let vma = self
            .vmas
            .find(start)
            .copied()
            .filter(|v| v.end >= end)
            .ok_or(VmaError::Invalid)?;
        let backing = match vma.backing {
            Backing::Image { phys, offset } => Backing::Image {
                phys,
                offset: offset + (start - vma.start),
            },
            Backing::Anonymous => Backing::Anonymous,
        };
        self.vmas.insert(Vma {
            start: to,
            end: to + (end - start),
            backing,
            ..vma
        })?;
        let mut page = start;
        while page < end {
            let entry = self.tables.lookup(page);
            if entry & (pte::PRESENT | pte::KEPT) != 0 {
                let pa = self.tables.unmap(page).unwrap_or(entry & pte::ADDR);
                let flags = entry & !(pte::ADDR | pte::PRESENT | pte::KEPT);
                let target = to + (page - start);
                if self.map(target, pa, flags).is_err() {
                    // Out of page-table memory: the page is lost, not leaked.
                    if !self.is_image_frame(&vma, page, pa) {
                        frame::release(pa);
                    }
                } else if entry & pte::KEPT != 0 {
                    self.tables.protect(target, flags, false);
                }
            }
            page += PAGE_SIZE;
        }
        self.vmas.remove(start, end)?;
        Ok(())
    }

    /// Drops the contents of `[start, end)` (MADV_DONTNEED): anonymous
    /// pages read as zero again, image pages as the image.
    /// Only mapped pages are visited: glibc discards the unused part of
    /// every exiting thread's 8 MiB stack, of which a few pages are.
    fn discard_range_here(&mut self, start: u64, end: u64) {
        let mut next = start;
        while let Some((page, _)) = self.tables.next_mapped(next, end) {
            next = page + PAGE_SIZE;
            if let Some(vma) = self.vmas.find(page).copied() {
                if let Some(pa) = self.tables.unmap(page) {
                    if !self.is_image_frame(&vma, page, pa) {
                        frame::release(pa);
                    }
                }
            }
        }
    }

    /// The physical address of `addr` when it lies in present memory
    /// shared between processes (`MAP_SHARED`, label `Shared`), whose
    /// frames never move; None otherwise.
    pub fn shared_phys(&self, addr: u64) -> Option<u64> {
        let vma = self.vmas.find(addr)?;
        if vma.label != Label::Shared {
            return None;
        }
        let entry = self.tables.lookup(page_down(addr));
        (entry & pte::PRESENT != 0).then(|| (entry & pte::ADDR) + (addr - page_down(addr)))
    }

    /// [`Self::fork_here`], with the other CPUs' TLBs flushed once at the
    /// end (see `arch::tlb_batch`).
    pub fn fork(&mut self) -> Result<AddressSpace, kiln_kernel::errno::Errno> {
        arch::tlb_batch(|| self.fork_here())
    }

    /// [`Self::remove_range_here`], with the other CPUs' TLBs flushed once at the
    /// end (see `arch::tlb_batch`).
    pub fn remove_range(&mut self, start: u64, end: u64) -> Result<(), VmaError> {
        arch::tlb_batch(|| self.remove_range_here(start, end))
    }

    /// [`Self::move_range_here`], with the other CPUs' TLBs flushed once at the
    /// end (see `arch::tlb_batch`).
    pub fn move_range(&mut self, start: u64, end: u64, to: u64) -> Result<(), VmaError> {
        arch::tlb_batch(|| self.move_range_here(start, end, to))
    }

    /// [`Self::discard_range_here`], with the other CPUs' TLBs flushed once at the
    /// end (see `arch::tlb_batch`).
    pub fn discard_range(&mut self, start: u64, end: u64) {
        arch::tlb_batch(|| self.discard_range_here(start, end))
    }

    /// [`Self::protect_range_here`], with the other CPUs' TLBs flushed once at the
    /// end (see `arch::tlb_batch`).
    pub fn protect_range(&mut self, start: u64, end: u64, new: u32) -> Result<(), VmaError> {
        arch::tlb_batch(|| self.protect_range_here(start, end, new))
    }

    pub(super) fn is_image_frame(&self, vma: &Vma, page: u64, pa: u64) -> bool {
        match vma.backing {
            Backing::Image { phys, offset } => pa == phys + offset + (page - vma.start),
            Backing::Anonymous => false,
        }
    }

    /// Changes the protection of `[start, end)`.
    fn protect_range_here(&mut self, start: u64, end: u64, new: u32) -> Result<(), VmaError> {
        self.vmas.protect(start, end, new)?;
        let mut next = start;
        while let Some((page, e)) = self.tables.next_mapped(next, end) {
            next = page + PAGE_SIZE;
            let vma = self.vmas.find(page).copied();
            let mut flags = pte_flags(new);
            // Frames shared with the image, or copy-on-write with another
            // process, stay read-only: the first write copies.
            if let Some(v) = vma {
                let pa = e & pte::ADDR;
                if self.is_image_frame(&v, page, pa)
                    || (v.label != Label::Shared && frame::is_shared(pa))
                {
                    flags &= !pte::WRITABLE;
                }
            }
            self.tables.protect(page, flags, new != 0);
        }
        Ok(())
    }
}

/// Rounds down to a page boundary.
pub(super) fn page_down(v: u64) -> u64 {
    v & !(PAGE_SIZE - 1)
}
