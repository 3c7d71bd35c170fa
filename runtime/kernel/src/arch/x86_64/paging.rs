//! 4-level page tables (Intel SDM vol. 3A §4.5), reached through the
//! direct map of physical memory.
//!
//! The kernel half (direct map, kernel image, heap) and the program's half
//! share one PML4: the program runs in the kernel's address space. Every
//! entry carries U/S=1, as the PVM probe's tables did: the program runs at
//! CPL0, so the bit grants nothing, and it keeps the PVM host's shadow
//! paging on its tested path.

use kiln_boot::vm::PHYS_MAP;

/// Page-table entry bits.
pub mod pte {
    /// Present.
    pub const PRESENT: u64 = 1 << 0;
    /// Writable.
    pub const WRITABLE: u64 = 1 << 1;
    /// User-accessible (always set, see the module comment).
    pub const USER: u64 = 1 << 2;
    /// Uncached (PCD | PWT), for device registers.
    pub const NO_CACHE: u64 = (1 << 4) | (1 << 3);
    /// Accessed (set by the CPU on use, or by the kernel up front).
    pub const ACCESSED: u64 = 1 << 5;
    /// Dirty (set by the CPU on a write, or by the kernel up front).
    pub const DIRTY: u64 = 1 << 6;
    /// Large page (2 MiB in a PD, 1 GiB in a PDPT).
    pub const HUGE: u64 = 1 << 7;
    /// Software bit: a PROT_NONE page whose frame is kept (not present, but
    /// the address field still names the frame).
    pub const KEPT: u64 = 1 << 9;
    /// Not executable (EFER.NXE is on).
    pub const NO_EXECUTE: u64 = 1 << 63;
    /// The physical-address field.
    pub const ADDR: u64 = 0x000f_ffff_ffff_f000;
}

/// The virtual address of physical address `pa` in the direct map.
pub fn phys_to_virt(pa: u64) -> *mut u8 {
    (PHYS_MAP + pa) as *mut u8
}

/// The physical address behind a direct-map address (`None` outside the
/// direct map).
pub fn virt_to_phys(va: u64) -> Option<u64> {
    va.checked_sub(PHYS_MAP).filter(|&pa| pa < 1 << 39)
}

/// A page could not be mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// No frame for an intermediate table.
    OutOfMemory,
    /// A large page already covers the address.
    HugePage,
}

/// Size of a large page mapped by a page directory entry.
pub const LARGE_PAGE: u64 = 2 << 20;

/// Where [`PageTables`] takes the page for a large page's split (a zeroed
/// frame): the memory manager sets it at boot, as this layer knows no
/// allocator. 0 until set.
static SPLIT_FRAMES: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Names the allocator large-page splits take their table page from.
pub fn set_split_frames(alloc: fn() -> Option<u64>) {
    SPLIT_FRAMES.store(alloc as usize, core::sync::atomic::Ordering::Relaxed);
}

fn split_frame() -> Option<u64> {
    let f = SPLIT_FRAMES.load(core::sync::atomic::Ordering::Relaxed);
    if f == 0 {
        return None;
    }
    // SAFETY: the only value ever stored is a `fn() -> Option<u64>`.
    let alloc: fn() -> Option<u64> = unsafe { core::mem::transmute(f) };
    alloc()
}

/// Whether `va` is in the program's half, where large pages are the
/// program's and may be split (the kernel's direct map never is).
fn is_lower_half(va: u64) -> bool {
    va >> 47 == 0
}

/// The 4 KiB entry that maps `va` inside the large page `e` of `level`
/// (1: 2 MiB, 2: 1 GiB).
fn small_entry(e: u64, va: u64, level: u32) -> u64 {
    let span = 1u64 << (12 + 9 * level);
    let base = e & pte::ADDR & !(span - 1);
    (base + (va & (span - 1) & !0xfff)) | (e & !pte::ADDR & !pte::HUGE)
}

/// A page-table hierarchy, by the physical address of its PML4.
pub struct PageTables {
    pml4: u64,
}

fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * level)) & 0x1ff) as usize
}

/// # Safety
/// `pa` must be the physical address of a page table owned by the caller's
/// `PageTables`, inside the direct map, with no other live reference to it.
unsafe fn table<'a>(pa: u64) -> &'a mut [u64; 512] {
    // SAFETY: the caller guarantees `pa` is a page table in the direct map.
    unsafe { &mut *(phys_to_virt(pa) as *mut [u64; 512]) }
}

/// Whether the page table at `pa` holds no entry at all (nothing present,
/// nothing kept).
fn table_empty(pa: u64) -> bool {
    // SAFETY: callers pass a table that page tables own (from a present,
    // non-huge entry); it is only read.
    unsafe { table(pa).iter().all(|&e| e == 0) }
}

impl PageTables {
    /// The tables whose PML4 is at physical address `pml4`.
    ///
    /// # Safety
    /// `pml4` must be the active top-level table. Several `PageTables` may
    /// name it, but each range of the address space has one editor at a
    /// time: the process owns the lower half, the heap lock the heap range.
    pub unsafe fn from_pml4(pml4: u64) -> Self {
        Self { pml4 }
    }

    /// Physical address of the PML4.
    pub fn pml4(&self) -> u64 {
        self.pml4
    }

    /// Clears the PML4 entry of `slot` (used to drop the PVH identity map).
    pub fn clear_slot(&mut self, slot: usize) {
        // SAFETY: `self` owns the tables (constructor contract).
        unsafe { table(self.pml4)[slot] = 0 };
    }

    /// The leaf entry of `va` (0 when nothing is mapped there). Inside a
    /// large page the answer is the 4 KiB entry that would map `va` alone
    /// (its frame, the large page's flags without [`pte::HUGE`]).
    pub fn lookup(&self, va: u64) -> u64 {
        let mut pa = self.pml4;
        for level in (1..4).rev() {
            // SAFETY: every non-leaf entry points at a table these tables own.
            let e = unsafe { table(pa)[index(va, level)] };
            if e & pte::PRESENT == 0 {
                return 0;
            }
            if e & pte::HUGE != 0 {
                return small_entry(e, va, level);
            }
            pa = e & pte::ADDR;
        }
        // SAFETY: as above.
        unsafe { table(pa)[index(va, 0)] }
    }

    /// Points the 4 KiB page at `va` to frame `pa` with `flags`
    /// (PRESENT/USER are added, and ACCESSED/DIRTY: a shadowing host —
    /// KVM on PVM — maps a faulting entry's present neighbours along with
    /// it only when their accessed bit is set, and keeps a writable entry
    /// without the dirty bit read-only until a second fault; the kernel
    /// reads neither bit). Intermediate tables come from `alloc`,
    /// which returns a zeroed frame. The caller flushes the TLB if the entry
    /// was present before.
    pub fn map(
        &mut self,
        va: u64,
        pa: u64,
        flags: u64,
        alloc: &mut dyn FnMut() -> Option<u64>,
    ) -> Result<(), MapError> {
        let table_pa = self.table_for(va, 0, alloc)?;
        // SAFETY: `table_pa` is a page table these tables own.
        unsafe {
            table(table_pa)[index(va, 0)] =
                pa | flags | pte::PRESENT | pte::USER | pte::ACCESSED | pte::DIRTY
        };
        Ok(())
    }

    /// [`Self::map`], first splitting a 2 MiB page that covers `va` into
    /// small pages with the same frames and flags: the 32-bit boot paths map
    /// the whole first 4 GiB with large pages, device registers included,
    /// and a device page needs its own (uncached) entry.
    pub fn map_splitting(
        &mut self,
        va: u64,
        pa: u64,
        flags: u64,
        alloc: &mut dyn FnMut() -> Option<u64>,
    ) -> Result<(), MapError> {
        let directory = self.table_for(va, 1, alloc)?;
        // SAFETY: `directory` is a page directory these tables own.
        let e = unsafe { &mut table(directory)[index(va, 1)] };
        if *e & (pte::PRESENT | pte::HUGE) == pte::PRESENT | pte::HUGE
            && !Self::split(self.pml4, va, e)
        {
            return Err(MapError::OutOfMemory);
        }
        self.map(va, pa, flags, alloc)
    }

    /// The table holding `va`'s entry at `level` (0: page table, 1: page
    /// directory), with the missing tables above it made from `alloc`.
    fn table_for(
        &mut self,
        va: u64,
        level: u32,
        alloc: &mut dyn FnMut() -> Option<u64>,
    ) -> Result<u64, MapError> {
        let mut table_pa = self.pml4;
        for l in (level + 1..4).rev() {
            // SAFETY: `table_pa` is a table these tables own.
            let t = unsafe { table(table_pa) };
            let e = &mut t[index(va, l)];
            if *e & pte::PRESENT == 0 {
                let frame = alloc().ok_or(MapError::OutOfMemory)?;
                *e = frame | pte::PRESENT | pte::WRITABLE | pte::USER | pte::ACCESSED;
            } else if *e & pte::HUGE != 0 {
                return Err(MapError::HugePage);
            }
            table_pa = *e & pte::ADDR;
        }
        Ok(table_pa)
    }

    /// Maps the 2 MiB page at `va` (aligned) to the 2 MiB of frames at `pa`
    /// (aligned) with one page-directory entry; the directory entry must
    /// be empty (no table below it). Intermediate tables come from `alloc`.
    pub fn map_large(
        &mut self,
        va: u64,
        pa: u64,
        flags: u64,
        alloc: &mut dyn FnMut() -> Option<u64>,
        free: &mut dyn FnMut(u64),
    ) -> Result<(), MapError> {
        debug_assert!(va.is_multiple_of(LARGE_PAGE) && pa.is_multiple_of(LARGE_PAGE));
        let table_pa = self.table_for(va, 1, alloc)?;
        // SAFETY: `table_pa` is a page directory these tables own.
        let e = unsafe { &mut table(table_pa)[index(va, 1)] };
        if *e != 0 {
            // A table of small pages left empty by an earlier unmap goes
            // (flushed first: the CPU may cache the entry pointing at it).
            if *e & (pte::PRESENT | pte::HUGE) != pte::PRESENT || !table_empty(*e & pte::ADDR) {
                return Err(MapError::HugePage);
            }
            let old = *e & pte::ADDR;
            *e = 0;
            super::tlb::changed(self.pml4, va);
            free(old);
        }
        *e = pa | flags | pte::PRESENT | pte::USER | pte::HUGE | pte::ACCESSED | pte::DIRTY;
        Ok(())
    }

    /// Whether the page directory entry covering `va` is empty: no large
    /// page and no table of small pages, or a table whose every entry is
    /// empty (so a large page can go there).
    pub fn directory_entry_free(&self, va: u64) -> bool {
        let mut pa = self.pml4;
        for level in (2..4).rev() {
            // SAFETY: every non-leaf entry points at a table these tables own.
            let e = unsafe { table(pa)[index(va, level)] };
            if e & pte::PRESENT == 0 {
                return true;
            }
            if e & pte::HUGE != 0 {
                return false;
            }
            pa = e & pte::ADDR;
        }
        // SAFETY: as above.
        let e = unsafe { table(pa)[index(va, 1)] };
        e == 0 || (e & (pte::PRESENT | pte::HUGE) == pte::PRESENT && table_empty(e & pte::ADDR))
    }

    /// Removes the 2 MiB page mapping `va`; returns its first frame.
    pub fn unmap_large(&mut self, va: u64) -> Option<u64> {
        let e = self.directory_entry_mut(va)?;
        if *e & (pte::PRESENT | pte::HUGE) != pte::PRESENT | pte::HUGE {
            return None;
        }
        let pa = *e & pte::ADDR & !(LARGE_PAGE - 1);
        *e = 0;
        super::tlb::changed(self.pml4, va & !(LARGE_PAGE - 1));
        Some(pa)
    }

    fn directory_entry_mut(&mut self, va: u64) -> Option<&mut u64> {
        let mut pa = self.pml4;
        for level in (2..4).rev() {
            // SAFETY: `pa` is a table these tables own.
            let e = unsafe { table(pa)[index(va, level)] };
            if e & pte::PRESENT == 0 || e & pte::HUGE != 0 {
                return None;
            }
            pa = e & pte::ADDR;
        }
        // SAFETY: as above; `&mut self` makes the reference unique.
        Some(unsafe { &mut table(pa)[index(va, 1)] })
    }

    /// Replaces the 2 MiB page `*entry` by a table of 512 small pages with
    /// the same frames and flags. The table is filled before it is linked,
    /// so the only write the hypervisor sees is the directory entry's.
    /// False when no page is free for the table.
    fn split(pml4: u64, va: u64, entry: &mut u64) -> bool {
        let Some(t) = split_frame() else {
            return false;
        };
        let base = *entry & pte::ADDR & !(LARGE_PAGE - 1);
        let flags = *entry & !pte::ADDR & !pte::HUGE;
        // SAFETY: `t` is a fresh frame no one else refers to yet.
        let small = unsafe { table(t) };
        for (i, e) in small.iter_mut().enumerate() {
            *e = (base + i as u64 * 0x1000) | flags;
        }
        *entry = t | pte::PRESENT | pte::WRITABLE | pte::USER | pte::ACCESSED;
        super::tlb::changed(pml4, va & !(LARGE_PAGE - 1));
        true
    }

    /// Changes the flags of a 4 KiB mapping, keeping its frame. With
    /// `present == false` the page becomes inaccessible (PROT_NONE) but keeps
    /// its frame (marked [`pte::KEPT`]).
    pub fn protect(&mut self, va: u64, flags: u64, present: bool) {
        if let Some(e) = self.leaf_mut(va) {
            if *e & (pte::PRESENT | pte::KEPT) != 0 {
                let state = if present { pte::PRESENT } else { pte::KEPT };
                *e = (*e & pte::ADDR) | flags | state | pte::USER | pte::ACCESSED | pte::DIRTY;
                super::tlb::changed(self.pml4, va);
            }
        }
    }

    /// Removes the 4 KiB mapping at `va` (present or kept); returns its frame.
    pub fn unmap(&mut self, va: u64) -> Option<u64> {
        let e = self.leaf_mut(va)?;
        if *e & (pte::PRESENT | pte::KEPT) == 0 {
            return None;
        }
        let pa = *e & pte::ADDR;
        *e = 0;
        super::tlb::changed(self.pml4, va);
        Some(pa)
    }

    /// Frees the page-table pages of the lower (program) half and then
    /// the top-level table itself — for a process that ended, whose
    /// mappings are gone already. The tables must not be active.
    pub fn free_process_tables(self, free: &mut dyn FnMut(u64)) {
        fn walk(pa: u64, level: u32, free: &mut dyn FnMut(u64)) {
            if level > 0 {
                // SAFETY: `pa` is a table of these (inactive) tables.
                let t = unsafe { table(pa) };
                for &e in t.iter() {
                    if e & pte::PRESENT != 0 && e & pte::HUGE == 0 {
                        walk(e & pte::ADDR, level - 1, free);
                    }
                }
            }
            free(pa);
        }
        // SAFETY: the top-level table is ours; only its lower half is the
        // process's (the upper half is the kernel's, shared).
        let top = unsafe { table(self.pml4) };
        for &e in &top[..256] {
            if e & pte::PRESENT != 0 && e & pte::HUGE == 0 {
                walk(e & pte::ADDR, 2, free);
            }
        }
        free(self.pml4);
    }

    /// The first 4 KiB page at or after `va` and before `end` whose entry
    /// is present or kept, with that entry; absent tables are skipped
    /// whole, so sparse areas cost little.
    pub fn next_mapped(&self, va: u64, end: u64) -> Option<(u64, u64)> {
        let mut at = va & !0xfff;
        'search: while at < end {
            let mut pa = self.pml4;
            for level in (1..4).rev() {
                // SAFETY: every non-leaf entry points at a table these tables own.
                let e = unsafe { table(pa)[index(at, level)] };
                if level == 1 && e & pte::PRESENT != 0 && e & pte::HUGE != 0 && is_lower_half(at) {
                    return Some((at, small_entry(e, at, level)));
                }
                if e & pte::PRESENT == 0 || e & pte::HUGE != 0 {
                    // Nothing below this entry: on to the next one.
                    let span = 1u64 << (12 + 9 * level);
                    at = (at & !(span - 1)).checked_add(span)?;
                    continue 'search;
                }
                pa = e & pte::ADDR;
            }
            // SAFETY: as above.
            let leaf = unsafe { table(pa) };
            let mut i = index(at, 0);
            while i < 512 && at < end {
                let e = leaf[i];
                if e & (pte::PRESENT | pte::KEPT) != 0 {
                    return Some((at, e));
                }
                i += 1;
                at += 0x1000;
            }
        }
        None
    }

    /// Clears the writable bit of the present 4 KiB mapping at `va`
    /// without flushing the TLB: the caller flushes once after many.
    pub fn write_protect(&mut self, va: u64) {
        if let Some(e) = self.leaf_mut(va) {
            *e &= !pte::WRITABLE;
        }
    }

    /// The 4 KiB entry of `va`; a 2 MiB page of the program's half is
    /// split first (`None` if no page is free for the split).
    fn leaf_mut(&mut self, va: u64) -> Option<&mut u64> {
        let pml4 = self.pml4;
        let mut pa = pml4;
        for level in (1..4).rev() {
            // SAFETY: `pa` is a table these tables own; `&mut self` makes
            // the reference unique.
            let e = unsafe { &mut table(pa)[index(va, level)] };
            if *e & pte::PRESENT != 0 && *e & pte::HUGE != 0 && level == 1 && is_lower_half(va) {
                if !Self::split(pml4, va, e) {
                    return None;
                }
            } else if *e & pte::PRESENT == 0 || *e & pte::HUGE != 0 {
                return None;
            }
            pa = *e & pte::ADDR;
        }
        // SAFETY: as above; `&mut self` makes the reference unique.
        Some(unsafe { &mut table(pa)[index(va, 0)] })
    }
}
