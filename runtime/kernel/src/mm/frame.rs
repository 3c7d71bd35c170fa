//! The physical frame allocator.

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
    /// Frames handed out and not returned.
    used: u64,
    /// Frames in all regions.
    total: u64,
}

impl Frames {
    /// No memory until `init`.
    pub const fn new() -> Self {
        Self {
            regions: [Region { start: 0, end: 0 }; MAX_REGIONS],
            count: 0,
            current: 0,
            bump: 0,
            free_list: 0,
            used: 0,
            total: 0,
        }
    }
}

/// Takes ownership of the usable regions.
pub fn init(usable: &[Region]) {
    let mut f = KERNEL.frames.lock();
    let n = usable.len().min(MAX_REGIONS);
    f.count = n;
    f.regions[..n].copy_from_slice(&usable[..n]);
    f.total = usable.iter().map(|r| (r.end - r.start) / FRAME_SIZE).sum();
    f.current = 0;
    f.bump = usable.first().map_or(0, |r| r.start);
}

/// A zero-filled frame, or `None` when memory is exhausted.
pub fn alloc_zeroed() -> Option<u64> {
    let pa = alloc()?;
    // SAFETY: the frame was just taken from the allocator, so nothing else
    // refers to it; the direct map covers all usable RAM.
    unsafe { core::ptr::write_bytes(phys_to_virt(pa), 0, FRAME_SIZE as usize) };
    Some(pa)
}

/// A frame with unspecified contents.
pub fn alloc() -> Option<u64> {
    let mut f = KERNEL.frames.lock();
    if f.free_list != 0 {
        let pa = f.free_list;
        // SAFETY: freed frames hold the next free frame's address in their
        // first word (written by `free`); the frame is ours until returned.
        f.free_list = unsafe { core::ptr::read(phys_to_virt(pa) as *const u64) };
        f.used += 1;
        return Some(pa);
    }
    while f.current < f.count {
        let region = f.regions[f.current];
        if f.bump + FRAME_SIZE <= region.end {
            let pa = f.bump;
            f.bump += FRAME_SIZE;
            f.used += 1;
            return Some(pa);
        }
        f.current += 1;
        if f.current < f.count {
            f.bump = f.regions[f.current].start;
        }
    }
    None
}

/// `pages` physically contiguous zero-filled frames (device rings and
/// buffers), taken from never-used memory; `None` when no region has room.
pub fn alloc_contiguous_zeroed(pages: u64) -> Option<u64> {
    if pages <= 1 {
        return alloc_zeroed();
    }
    let len = pages * FRAME_SIZE;
    let pa = {
        let mut f = KERNEL.frames.lock();
        loop {
            if f.current >= f.count {
                return None;
            }
            let region = f.regions[f.current];
            if f.bump + len <= region.end {
                let pa = f.bump;
                f.bump += len;
                f.used += pages;
                break pa;
            }
            f.current += 1;
            if f.current < f.count {
                f.bump = f.regions[f.current].start;
            }
        }
    };
    // SAFETY: the frames were just taken from never-used memory, so nothing
    // else refers to them; the direct map covers all usable RAM.
    unsafe { core::ptr::write_bytes(phys_to_virt(pa), 0, len as usize) };
    Some(pa)
}

/// Returns a frame to the allocator.
pub fn free(pa: u64) {
    let mut f = KERNEL.frames.lock();
    // SAFETY: the caller hands the frame back, so nothing else uses it; its
    // first word now links the free list.
    unsafe { core::ptr::write(phys_to_virt(pa) as *mut u64, f.free_list) };
    f.free_list = pa;
    f.used -= 1;
}

/// (frames in use, frames in total), for /proc/meminfo.
pub fn usage() -> (u64, u64) {
    let f = KERNEL.frames.lock();
    (f.used, f.total)
}
