//! The physical frame allocator, and the share counts of frames that
//! several processes map after a fork (copy-on-write).

use crate::state::KERNEL;

use crate::arch::phys_to_virt;
use crate::boot::{Region, MAX_REGIONS};

/// Size of a frame.
pub const FRAME_SIZE: u64 = 4096;

/// The allocator's state; the instance is `state::KERNEL.frames`.
pub struct Frames {
    regions: [Region; MAX_REGIONS],
    count: usize,
    /// Index of the region the bump pointer is in.
    current: usize,
    /// Next never-used frame in `regions[current]`.
    bump: u64,
    /// Physical address of the first freed frame (0: none).
    free_list: u64,
    /// Physical address of the first freed whole large page (0: none),
    /// linked through its first word like `free_list`: a program's next
    /// large page reuses it rather than never-used memory, which the host
    /// must still back (on a nested PVM host, ~6 ms per 2 MiB the first
    /// time against ~0.1 ms to zero it again).
    large_free: u64,
    /// Frames handed out and not returned.
    used: u64,
    /// Frames in all regions.
    total: u64,
    /// Direct-map address of the share counts: one `u16` per frame below
    /// the highest usable address, the number of mappings beyond the first
    /// (0: one owner). Taken from the first region at `init`.
    shares: u64,
    /// Frames the share counts cover.
    share_frames: u64,
    /// Never-used memory reads as zeros (kiln-vmm's guest RAM is fresh
    /// anonymous memory): such frames need no zeroing, which on PVM saves
    /// the host a shadow fault on the kernel's mapping of each.
    fresh_is_zero: bool,
    /// The page-table area (see [`alloc_table`]), cut out of `regions`.
    tables: Region,
    /// Next never-used frame of the page-table area.
    tables_bump: u64,
    /// Freed frames of the page-table area, as frame indices from its
    /// start, the last freed on top. Kept here rather than linked through
    /// the frames like `free_list`: a freed page table is often still
    /// shadowed by the host, which traps each write to it (fork's child's
    /// tables, freed at its exit, cost five emulated writes per fork).
    tables_free: [u16; TABLE_AREA_FRAMES],
    /// How many of `tables_free` are held.
    tables_free_len: usize,
}

/// Frames of the page-table area (one large page).
const TABLE_AREA_FRAMES: usize = (crate::arch::LARGE_PAGE / FRAME_SIZE) as usize;

impl Frames {
    /// No memory until `init`.
    pub const fn new() -> Self {
        Self {
            regions: [Region { start: 0, end: 0 }; MAX_REGIONS],
            count: 0,
            current: 0,
            bump: 0,
            free_list: 0,
            large_free: 0,
            used: 0,
            total: 0,
            shares: 0,
            share_frames: 0,
            fresh_is_zero: false,
            tables: Region { start: 0, end: 0 },
            tables_bump: 0,
            tables_free: [0; TABLE_AREA_FRAMES],
            tables_free_len: 0,
        }
    }

    /// Moves the bump pointer to the next region, handing what is left
    /// of the current one to the free list: a run of frames asked for
    /// (a large page, a device ring) did not fit in it, but single frames
    /// still do.
    fn next_region(&mut self) {
        self.free_never_used(self.regions[self.current].end);
        self.current += 1;
        if self.current < self.count {
            self.bump = self.regions[self.current].start;
        }
    }

    /// Hands the never-used frames from the bump pointer up to `end` (in
    /// the current region) to the free list, moving the bump pointer past
    /// them: frames skipped by a request for a run of them stay usable as
    /// single frames.
    fn free_never_used(&mut self, end: u64) {
        while self.bump + FRAME_SIZE <= end {
            // SAFETY: a never-used frame of the current region, in the
            // direct map and handed to nobody; its first word links the
            // free list.
            unsafe { core::ptr::write(phys_to_virt(self.bump) as *mut u64, self.free_list) };
            self.free_list = self.bump;
            self.bump += FRAME_SIZE;
        }
    }

    /// Whether `pa` lies in the page-table area.
    fn in_table_area(&self, pa: u64) -> bool {
        (self.tables.start..self.tables.end).contains(&pa)
    }

    /// A frame of the page-table area and whether it is known to hold
    /// zeros; `None` when the area is used up.
    fn take_from_table_area(&mut self) -> Option<(u64, bool)> {
        if let Some(len) = self.tables_free_len.checked_sub(1) {
            self.tables_free_len = len;
            self.used += 1;
            let pa = self.tables.start + u64::from(self.tables_free[len]) * FRAME_SIZE;
            return Some((pa, false));
        }
        if self.tables_bump + FRAME_SIZE <= self.tables.end {
            let pa = self.tables_bump;
            self.tables_bump += FRAME_SIZE;
            self.used += 1;
            return Some((pa, self.fresh_is_zero));
        }
        None
    }

    /// The share count of frame `pa` (`None` outside the usable memory:
    /// image and device frames are never counted).
    fn share_count(&mut self, pa: u64) -> Option<&mut u16> {
        let index = pa / FRAME_SIZE;
        if self.shares == 0 || index >= self.share_frames {
            return None;
        }
        // SAFETY: `shares` is the direct-map address of `share_frames`
        // counts, reserved at `init` and used only under the allocator's
        // lock, which `&mut self` holds.
        Some(unsafe { &mut *(self.shares as *mut u16).add(index as usize) })
    }
}

/// Takes ownership of the usable regions, keeping room for the share
/// counts at the start of the first one large enough (2 bytes a frame:
/// 32 KiB for 64 MiB of RAM), and setting the usable part of
/// `table_area` aside for page tables ([`alloc_table`]).
/// `fresh_is_zero`: the boot protocol promises that usable memory nobody
/// used yet reads as zeros.
pub fn init(usable: &[Region], fresh_is_zero: bool, table_area: Region) {
    let mut f = KERNEL.frames.lock();
    f.fresh_is_zero = fresh_is_zero;
    let n = usable.len().min(MAX_REGIONS);
    f.count = n;
    f.regions[..n].copy_from_slice(&usable[..n]);
    let top = usable[..n].iter().map(|r| r.end).max().unwrap_or(0);
    let share_frames = top / FRAME_SIZE;
    let table = (share_frames * 2).div_ceil(FRAME_SIZE) * FRAME_SIZE;
    if let Some(r) = f.regions[..n]
        .iter_mut()
        .find(|r| r.end - r.start >= table + FRAME_SIZE)
    {
        let at = r.start;
        r.start += table;
        // SAFETY: the range was just cut out of usable RAM, which the
        // direct map covers; nothing else will ever be handed it.
        unsafe { core::ptr::write_bytes(phys_to_virt(at), 0, table as usize) };
        f.shares = phys_to_virt(at) as u64;
        f.share_frames = share_frames;
    }
    // The page-table area: the usable frames of `table_area` (kiln-vmm's
    // boot tables fill its top), cut from the end of the region they end.
    if let Some(r) = f.regions[..n]
        .iter_mut()
        .find(|r| r.start < table_area.start && r.end > table_area.start && r.end <= table_area.end)
    {
        let tables = Region {
            start: table_area.start,
            end: r.end,
        };
        r.end = table_area.start;
        f.tables = tables;
        f.tables_bump = tables.start;
    }
    let regions = f.regions;
    let tables = f.tables;
    f.total = regions[..n]
        .iter()
        .chain(core::iter::once(&tables))
        .map(|r| (r.end - r.start) / FRAME_SIZE)
        .sum();
    f.current = 0;
    f.bump = regions[..n].first().map_or(0, |r| r.start);
}

/// A zero-filled frame, or `None` when memory is exhausted.
pub fn alloc_zeroed() -> Option<u64> {
    let (pa, zero) = take()?;
    if !zero {
        zero_frame(pa);
    }
    Some(pa)
}

/// Zeroes the frame at `pa`, writing only the words that are not zero
/// already, one 8-byte store each. A freed frame may have been a page
/// table the host still shadows, so each write to it traps until the
/// host notices the flood and lets go: a `rep stosb` over it (what
/// `write_bytes` compiles to) was emulated byte by byte on PVM — about
/// 650 tracked writes per frame, most of fork's cost — while a frame
/// that was a leaf table after munmap is all zeros and needs no write.
///
/// The first write is a 2-byte store: KVM takes a write narrower than an
/// entry for one that no longer updates a page table and drops its shadow
/// of the page at once, where 8-byte stores are emulated one by one until
/// its flood count lets go (three; a freed table of fork's child held
/// that many entries).
fn zero_frame(pa: u64) {
    let words = phys_to_virt(pa) as *mut u64;
    let mut first = true;
    for i in 0..(FRAME_SIZE / 8) as usize {
        // SAFETY: the frame was just taken from the allocator, so nothing
        // else refers to it; the direct map covers all usable RAM, and
        // `i` stays within the frame.
        unsafe {
            let word = words.add(i);
            if core::ptr::read_volatile(word) != 0 {
                if first {
                    core::ptr::write_volatile(word.cast::<u16>(), 0);
                    first = false;
                }
                core::ptr::write_volatile(word, 0);
            }
        }
    }
}

/// Takes the first frame (or large page) of the free list whose head is
/// `head`, `None` when it is empty.
fn pop(head: &mut u64) -> Option<u64> {
    if *head == 0 {
        return None;
    }
    let pa = *head;
    // SAFETY: a listed frame holds the next one's address in its first
    // word (written by `free` or `release_large` under the allocator's
    // lock, which the caller holds); it is the caller's now.
    *head = unsafe { core::ptr::read(phys_to_virt(pa) as *const u64) };
    Some(pa)
}

/// A zero-filled frame for a page table: from the page-table area while
/// it lasts, then from anywhere.
///
/// On PVM the host shadows every page table and, to see the guest write
/// them, cannot map the 2 MiB range holding one with a 2 MiB entry of its
/// own: kept together in one area, page tables leave the kernel's image
/// and the rest of RAM to 2 MiB host entries, so the kernel's direct-map
/// accesses to frames (zeroing, copies) cost one exit per 2 MiB instead
/// of one per 32 KiB.
pub fn alloc_table() -> Option<u64> {
    let taken = KERNEL.frames.lock().take_from_table_area();
    let (pa, zero) = match taken {
        Some(t) => t,
        None => take()?,
    };
    if !zero {
        zero_frame(pa);
    }
    Some(pa)
}

/// A frame with unspecified contents.
pub fn alloc() -> Option<u64> {
    take().map(|(pa, _)| pa)
}

/// A frame, and whether it is known to hold zeros (never used, on a
/// platform whose fresh memory is zero).
fn take() -> Option<(u64, bool)> {
    let mut f = KERNEL.frames.lock();
    if let Some(pa) = pop(&mut f.free_list) {
        f.used += 1;
        return Some((pa, false));
    }
    while f.current < f.count {
        let region = f.regions[f.current];
        if f.bump + FRAME_SIZE <= region.end {
            let pa = f.bump;
            f.bump += FRAME_SIZE;
            f.used += 1;
            return Some((pa, f.fresh_is_zero));
        }
        f.current += 1;
        if f.current < f.count {
            f.bump = f.regions[f.current].start;
        }
    }
    // Nothing else left: what the page tables do not use yet, then a
    // freed large page as small frames.
    if let Some(t) = f.take_from_table_area() {
        return Some(t);
    }
    if let Some(pa) = pop(&mut f.large_free) {
        for i in 1..LARGE_FRAMES {
            let frame = pa + i * FRAME_SIZE;
            // SAFETY: a frame of the large page just taken; its first word
            // links the free list.
            unsafe { core::ptr::write(phys_to_virt(frame) as *mut u64, f.free_list) };
            f.free_list = frame;
        }
        f.used += 1;
        return Some((pa, false));
    }
    None
}

/// Frames in a large page.
const LARGE_FRAMES: u64 = crate::arch::LARGE_PAGE / FRAME_SIZE;

/// A zero-filled, 2 MiB-aligned run of 2 MiB of frames for a program's
/// large page: a freed large page, or never-used memory; `None` when none
/// is left or when taking it would leave less than a quarter of memory
/// for small pages (a large page may hold mostly untouched memory). The
/// frames go back whole through [`release_large`].
pub fn alloc_large() -> Option<u64> {
    let (pa, zero) = {
        let mut f = KERNEL.frames.lock();
        if f.used + LARGE_FRAMES > f.total - f.total / 4 {
            return None;
        }
        if let Some(pa) = pop(&mut f.large_free) {
            f.used += LARGE_FRAMES;
            drop(f);
            // SAFETY: the large page was just taken from the allocator, so
            // nothing else refers to it; the direct map covers all usable RAM.
            unsafe {
                core::ptr::write_bytes(phys_to_virt(pa), 0, crate::arch::LARGE_PAGE as usize)
            };
            return Some(pa);
        }
        // A region without room for an aligned large page (the low RAM
        // below the kernel) leaves its rest to small pages and the next
        // one is tried; the last one keeps its rest for small pages.
        let start = loop {
            if f.current >= f.count {
                return None;
            }
            let start = f.bump.next_multiple_of(crate::arch::LARGE_PAGE);
            if start + crate::arch::LARGE_PAGE <= f.regions[f.current].end {
                break start;
            }
            if f.current + 1 >= f.count {
                return None;
            }
            f.next_region();
        };
        // The frames skipped to reach the boundary stay usable as small
        // pages.
        f.free_never_used(start);
        f.bump = start + crate::arch::LARGE_PAGE;
        f.used += LARGE_FRAMES;
        (start, f.fresh_is_zero)
    };
    if !zero {
        // SAFETY: the frames were just taken from never-used memory, so
        // nothing else refers to them; the direct map covers all usable RAM.
        unsafe { core::ptr::write_bytes(phys_to_virt(pa), 0, crate::arch::LARGE_PAGE as usize) };
    }
    Some(pa)
}

/// `pages` physically contiguous zero-filled frames (device rings and
/// buffers), taken from never-used memory; `None` when no region has room.
pub fn alloc_contiguous_zeroed(pages: u64) -> Option<u64> {
    if pages <= 1 {
        return alloc_zeroed();
    }
    let len = pages * FRAME_SIZE;
    let (pa, zero) = {
        let mut f = KERNEL.frames.lock();
        loop {
            if f.current >= f.count {
                return None;
            }
            if f.bump + len <= f.regions[f.current].end {
                let pa = f.bump;
                f.bump += len;
                f.used += pages;
                break (pa, f.fresh_is_zero);
            }
            f.next_region();
        }
    };
    if !zero {
        // SAFETY: the frames were just taken from never-used memory, so
        // nothing else refers to them; the direct map covers all usable RAM.
        unsafe { core::ptr::write_bytes(phys_to_virt(pa), 0, len as usize) };
    }
    Some(pa)
}

/// Records one more mapping of frame `pa` (a fork shares it). False when
/// it cannot be counted (outside usable memory, or shared too often):
/// the caller copies it instead.
pub fn share(pa: u64) -> bool {
    let mut f = KERNEL.frames.lock();
    match f.share_count(pa) {
        Some(c) if *c < u16::MAX => {
            *c += 1;
            true
        }
        _ => false,
    }
}

/// Whether more than one mapping holds frame `pa`.
pub fn is_shared(pa: u64) -> bool {
    KERNEL.frames.lock().share_count(pa).is_some_and(|c| *c > 0)
}

/// Drops one mapping of a program's frame `pa`: the frame is freed when
/// it was the last.
pub fn release(pa: u64) {
    {
        let mut f = KERNEL.frames.lock();
        if let Some(c) = f.share_count(pa) {
            if *c > 0 {
                *c -= 1;
                return;
            }
        }
    }
    free(pa);
}

/// Drops one mapping of a program's large page at `pa` (2 MiB-aligned,
/// from [`alloc_large`]): kept whole for the next large page when none of
/// its frames is mapped elsewhere, else released frame by frame.
pub fn release_large(pa: u64) {
    {
        let mut f = KERNEL.frames.lock();
        let shared =
            (0..LARGE_FRAMES).any(|i| f.share_count(pa + i * FRAME_SIZE).is_some_and(|c| *c > 0));
        if !shared {
            // SAFETY: nothing maps the large page any more; its first word
            // now links the list of freed large pages.
            unsafe { core::ptr::write(phys_to_virt(pa) as *mut u64, f.large_free) };
            f.large_free = pa;
            f.used -= LARGE_FRAMES;
            return;
        }
    }
    for i in 0..LARGE_FRAMES {
        release(pa + i * FRAME_SIZE);
    }
}

/// Returns a frame to the allocator (one that no one else maps; a
/// program's frames go back through [`release`]).
pub fn free(pa: u64) {
    let mut f = KERNEL.frames.lock();
    f.used -= 1;
    if f.in_table_area(pa) {
        // Each frame of the area is freed at most once between takes, so
        // the stack (one slot per frame) has room.
        let len = f.tables_free_len;
        f.tables_free[len] = ((pa - f.tables.start) / FRAME_SIZE) as u16;
        f.tables_free_len = len + 1;
        return;
    }
    // SAFETY: the caller hands the frame back, so nothing else uses it; its
    // first word now links the free list.
    unsafe { core::ptr::write(phys_to_virt(pa) as *mut u64, f.free_list) };
    f.free_list = pa;
}

/// Frames kept for the kernel's own needs (its heap: thread stacks, page
/// tables, tables of areas and files) out of `total`: a program's memory
/// and new threads and processes stop short of them, so memory pressure
/// ends in the program's out-of-memory kill or EAGAIN, never in a kernel
/// allocation failure (a panic). 2 MiB, or a sixteenth of a small guest's
/// memory (256 KiB of a 4 MiB one).
pub fn kernel_reserve(total: u64) -> u64 {
    (total / 16).min(512)
}

/// Frames free beyond the [`kernel_reserve`].
pub fn available_to_programs() -> u64 {
    let f = KERNEL.frames.lock();
    f.total
        .saturating_sub(f.used)
        .saturating_sub(kernel_reserve(f.total))
}

/// A zero-filled frame for a program's memory, or `None` when only the
/// kernel's reserve is left.
pub fn alloc_for_program() -> Option<u64> {
    if available_to_programs() == 0 {
        return None;
    }
    alloc_zeroed()
}

/// A frame with unspecified contents for a program's memory (a copy),
/// or `None` when only the kernel's reserve is left.
pub fn alloc_copy_for_program() -> Option<u64> {
    if available_to_programs() == 0 {
        return None;
    }
    alloc()
}

/// (frames in use, frames in total), for /proc/meminfo.
pub fn usage() -> (u64, u64) {
    let f = KERNEL.frames.lock();
    (f.used, f.total)
}
