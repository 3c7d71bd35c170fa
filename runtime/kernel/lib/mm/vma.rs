//! Bookkeeping of the program's virtual memory areas (VMAs): which ranges
//! of the user half exist, with which protection, and what backs them.
//!
//! This is pure data: it decides *what* is mapped; the kernel's memory
//! manager makes the page tables agree (and consults this set on a page
//! fault to decide between demand paging and SIGSEGV).

use alloc::vec::Vec;

use crate::exec::elf::{PAGE_SIZE, USER_END, USER_MIN};

/// Protection bits, with Linux's `PROT_*` values.
pub mod prot {
    /// Readable.
    pub const READ: u32 = 1;
    /// Writable.
    pub const WRITE: u32 = 2;
    /// Executable.
    pub const EXEC: u32 = 4;
}

/// What fills a page of a VMA when it is first touched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// Zero-filled memory.
    Anonymous,
    /// Pages of a physically contiguous, read-only image (the boot module):
    /// the page at `vma.start` is image byte `offset`.
    Image {
        /// Physical address of the image.
        phys: u64,
        /// Offset within the image of the VMA's first byte.
        offset: u64,
    },
}

/// One area of the address space: `[start, end)`, page aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vma {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// [`prot`] bits.
    pub prot: u32,
    /// What backs it.
    pub backing: Backing,
    /// Shown as `[stack]`/`[heap]` etc. in /proc/self/maps later.
    pub label: Label,
}

/// What the area is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Label {
    /// A segment of the program.
    Program,
    /// The brk heap.
    Heap,
    /// The main thread's stack.
    Stack,
    /// An anonymous mmap.
    Mmap,
    /// A `MAP_SHARED` mapping of memory (anonymous, or a copy of a file
    /// written back): a fork shares its pages rather than copying them on
    /// write.
    Shared,
    /// The kernel's system-call trampolines.
    Trampoline,
    /// The vDSO image.
    Vdso,
    /// An anonymous mmap never backed by large pages: a thread's stack
    /// (`MAP_STACK`: it touches a few pages of many MiB), or memory the
    /// program advised so (`MADV_NOHUGEPAGE`), as Linux gives such areas
    /// no transparent huge pages.
    SmallPages,
}

impl Vma {
    /// Whether `addr` lies inside.
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.start && addr < self.end
    }

    /// The same area cut to `[start, end)` (which must lie inside it).
    fn slice(&self, start: u64, end: u64) -> Vma {
        let backing = match self.backing {
            Backing::Anonymous => Backing::Anonymous,
            Backing::Image { phys, offset } => Backing::Image {
                phys,
                offset: offset + (start - self.start),
            },
        };
        Vma {
            start,
            end,
            backing,
            ..*self
        }
    }
}

/// Why an address-space change was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmaError {
    /// Not page aligned, empty, or outside the user half.
    Invalid,
    /// Overlaps an existing area.
    Overlap,
    /// No free range is large enough.
    NoSpace,
}

/// The set of areas, sorted by address and never overlapping.
#[derive(Clone, Debug, Default)]
pub struct VmaSet {
    areas: Vec<Vma>,
}

fn valid_range(start: u64, end: u64) -> bool {
    start.is_multiple_of(PAGE_SIZE)
        && end.is_multiple_of(PAGE_SIZE)
        && start < end
        && start >= USER_MIN
        && end <= USER_END
}

impl VmaSet {
    /// An empty address space.
    pub fn new() -> Self {
        Self::default()
    }

    /// All areas in address order.
    pub fn iter(&self) -> impl Iterator<Item = &Vma> {
        self.areas.iter()
    }

    /// The area holding `addr`.
    pub fn find(&self, addr: u64) -> Option<&Vma> {
        let i = self.areas.partition_point(|v| v.end <= addr);
        self.areas.get(i).filter(|v| v.contains(addr))
    }

    /// Whether every byte of `[start, start+len)` is mapped with `prot`.
    pub fn covers(&self, start: u64, len: u64, want: u32) -> bool {
        let Some(end) = start.checked_add(len) else {
            return false;
        };
        let mut at = start;
        while at < end {
            match self.find(at) {
                Some(v) if v.prot & want == want => at = v.end,
                _ => return false,
            }
        }
        true
    }

    /// Whether no area overlaps `[start, end)`.
    pub fn is_free(&self, start: u64, end: u64) -> bool {
        let i = self.areas.partition_point(|v| v.end <= start);
        self.areas.get(i).is_none_or(|v| v.start >= end)
    }

    /// Adds an area; it must not overlap any existing one.
    pub fn insert(&mut self, vma: Vma) -> Result<(), VmaError> {
        if !valid_range(vma.start, vma.end) {
            return Err(VmaError::Invalid);
        }
        let i = self.areas.partition_point(|v| v.end <= vma.start);
        if self.areas.get(i).is_some_and(|v| v.start < vma.end) {
            return Err(VmaError::Overlap);
        }
        self.areas.insert(i, vma);
        Ok(())
    }

    /// Removes `[start, end)` from every area it touches, splitting areas
    /// as needed; returns the removed pieces (for the caller to unmap).
    pub fn remove(&mut self, start: u64, end: u64) -> Result<Vec<Vma>, VmaError> {
        if !valid_range(start, end) {
            return Err(VmaError::Invalid);
        }
        let mut removed = Vec::new();
        let mut kept = Vec::with_capacity(self.areas.len() + 1);
        for v in self.areas.drain(..) {
            if v.end <= start || v.start >= end {
                kept.push(v);
                continue;
            }
            if v.start < start {
                kept.push(v.slice(v.start, start));
            }
            removed.push(v.slice(v.start.max(start), v.end.min(end)));
            if v.end > end {
                kept.push(v.slice(end, v.end));
            }
        }
        self.areas = kept;
        Ok(removed)
    }

    /// Changes the protection of `[start, end)`, which must be fully mapped.
    pub fn protect(&mut self, start: u64, end: u64, prot: u32) -> Result<(), VmaError> {
        if !valid_range(start, end) {
            return Err(VmaError::Invalid);
        }
        if !self.covers(start, end - start, 0) {
            return Err(VmaError::NoSpace);
        }
        for mut piece in self.remove(start, end)? {
            piece.prot = prot;
            self.insert(piece)?;
        }
        Ok(())
    }

    /// Gives the parts of `[start, end)` labelled `from` the label `to`
    /// (madvise's huge-page advice), splitting areas at the edges.
    pub fn relabel(
        &mut self,
        start: u64,
        end: u64,
        from: Label,
        to: Label,
    ) -> Result<(), VmaError> {
        if !valid_range(start, end) {
            return Err(VmaError::Invalid);
        }
        let matching: Vec<(u64, u64)> = self
            .areas
            .iter()
            .filter(|v| v.label == from && v.start < end && v.end > start)
            .map(|v| (v.start.max(start), v.end.min(end)))
            .collect();
        for (from_addr, to_addr) in matching {
            for mut piece in self.remove(from_addr, to_addr)? {
                piece.label = to;
                self.insert(piece)?;
            }
        }
        Ok(())
    }

    /// Grows or shrinks the area ending at `old_end` (the heap) to end at
    /// `new_end`; growing must not run into the next area.
    pub fn resize_end(&mut self, old_end: u64, new_end: u64) -> Result<(), VmaError> {
        let i = self
            .areas
            .iter()
            .position(|v| v.end == old_end)
            .ok_or(VmaError::Invalid)?;
        if new_end <= self.areas[i].start
            || !new_end.is_multiple_of(PAGE_SIZE)
            || new_end > USER_END
        {
            return Err(VmaError::Invalid);
        }
        if self
            .areas
            .get(i + 1)
            .is_some_and(|next| next.start < new_end)
        {
            return Err(VmaError::Overlap);
        }
        self.areas[i].end = new_end;
        Ok(())
    }

    /// The highest free range of `len` bytes that ends at or below `below`
    /// (the mmap area grows down from under the stack, as on Linux).
    pub fn find_free_below(&self, len: u64, below: u64) -> Result<u64, VmaError> {
        self.find_free_below_aligned(len, below, PAGE_SIZE)
    }

    /// [`Self::find_free_below`] for a range starting on a multiple of
    /// `align` (a power of two, at least a page): large anonymous mappings
    /// start on a large-page boundary so that large pages can back them.
    pub fn find_free_below_aligned(
        &self,
        len: u64,
        below: u64,
        align: u64,
    ) -> Result<u64, VmaError> {
        if len == 0 || !len.is_multiple_of(PAGE_SIZE) || !align.is_power_of_two() {
            return Err(VmaError::Invalid);
        }
        // The aligned start of a range of `len` ending at or below `ceiling`
        // that stays at or above `floor`.
        let fit = |floor: u64, ceiling: u64| {
            let start = ceiling.checked_sub(len)? & !(align - 1);
            (start >= floor).then_some(start)
        };
        let mut ceiling = below;
        for v in self.areas.iter().rev() {
            if v.start >= ceiling {
                continue;
            }
            if v.end <= ceiling {
                if let Some(start) = fit(v.end, ceiling) {
                    return Ok(start);
                }
            }
            ceiling = ceiling.min(v.start);
        }
        fit(USER_MIN, ceiling).ok_or(VmaError::NoSpace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anon(start: u64, end: u64) -> Vma {
        Vma {
            start,
            end,
            prot: prot::READ | prot::WRITE,
            backing: Backing::Anonymous,
            label: Label::Mmap,
        }
    }

    #[test]
    fn finds_and_rejects_overlaps() {
        let mut s = VmaSet::new();
        s.insert(anon(0x10000, 0x20000)).unwrap();
        s.insert(anon(0x30000, 0x40000)).unwrap();
        assert_eq!(s.insert(anon(0x1f000, 0x21000)), Err(VmaError::Overlap));
        assert_eq!(s.insert(anon(0x1000, 0x2000)), Err(VmaError::Invalid));
        assert!(s.find(0x1ffff).is_some());
        assert!(s.find(0x20000).is_none());
        assert!(s.covers(0x10000, 0x10000, prot::WRITE));
        assert!(!s.covers(0x10000, 0x10001, prot::READ));
        assert!(s.is_free(0x20000, 0x30000));
        assert!(!s.is_free(0x20000, 0x30001));
    }

    #[test]
    fn removes_from_the_middle_by_splitting() {
        let mut s = VmaSet::new();
        s.insert(Vma {
            backing: Backing::Image {
                phys: 0x100000,
                offset: 0,
            },
            ..anon(0x10000, 0x14000)
        })
        .unwrap();
        let removed = s.remove(0x11000, 0x12000).unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(
            removed[0].backing,
            Backing::Image {
                phys: 0x100000,
                offset: 0x1000
            }
        );
        let left: Vec<_> = s.iter().map(|v| (v.start, v.end)).collect();
        assert_eq!(left, [(0x10000, 0x11000), (0x12000, 0x14000)]);
        assert_eq!(
            s.find(0x12000).unwrap().backing,
            Backing::Image {
                phys: 0x100000,
                offset: 0x2000
            }
        );
    }

    #[test]
    fn relabel_changes_only_the_named_label_within_the_range() {
        let mut s = VmaSet::new();
        s.insert(anon(0x10000, 0x14000)).unwrap();
        s.insert(Vma {
            label: Label::Heap,
            ..anon(0x14000, 0x16000)
        })
        .unwrap();
        s.relabel(0x11000, 0x15000, Label::Mmap, Label::SmallPages)
            .unwrap();
        let got: Vec<_> = s.iter().map(|v| (v.start, v.end, v.label)).collect();
        assert_eq!(
            got,
            [
                (0x10000, 0x11000, Label::Mmap),
                (0x11000, 0x14000, Label::SmallPages),
                (0x14000, 0x16000, Label::Heap),
            ]
        );
        s.relabel(0x10000, 0x16000, Label::SmallPages, Label::Mmap)
            .unwrap();
        assert!(s
            .iter()
            .filter(|v| v.start < 0x14000)
            .all(|v| v.label == Label::Mmap));
        assert_eq!(
            s.relabel(0x10800, 0x11000, Label::Mmap, Label::SmallPages),
            Err(VmaError::Invalid)
        );
    }

    #[test]
    fn protect_splits_and_requires_mapping() {
        let mut s = VmaSet::new();
        s.insert(anon(0x10000, 0x13000)).unwrap();
        s.protect(0x11000, 0x12000, prot::READ).unwrap();
        assert_eq!(s.iter().count(), 3);
        assert_eq!(s.find(0x11000).unwrap().prot, prot::READ);
        assert_eq!(
            s.protect(0x12000, 0x14000, prot::READ),
            Err(VmaError::NoSpace)
        );
    }

    #[test]
    fn finds_free_space_top_down() {
        let mut s = VmaSet::new();
        s.insert(anon(0x7000_0000, 0x7000_4000)).unwrap();
        assert_eq!(s.find_free_below(0x2000, 0x7000_4000).unwrap(), 0x6fff_e000);
        assert_eq!(s.find_free_below(0x2000, 0x8000_0000).unwrap(), 0x7fff_e000);
        assert_eq!(
            s.find_free_below(0x1000_0000, 0x7000_0000 + 0x1000_0000)
                .unwrap(),
            0x6000_0000
        );
        assert_eq!(s.find_free_below(0x2000, 0x11000), Err(VmaError::NoSpace));
        // Aligned: the highest 2 MiB boundary with room below the ceiling.
        assert_eq!(
            s.find_free_below_aligned(0x40_0000, 0x7fff_e000, 0x20_0000)
                .unwrap(),
            0x7fa0_0000
        );
    }

    #[test]
    fn resizes_the_heap() {
        let mut s = VmaSet::new();
        s.insert(anon(0x10000, 0x11000)).unwrap();
        s.insert(anon(0x20000, 0x21000)).unwrap();
        s.resize_end(0x11000, 0x18000).unwrap();
        assert_eq!(s.resize_end(0x18000, 0x21000), Err(VmaError::Overlap));
        s.resize_end(0x18000, 0x12000).unwrap();
        assert_eq!(s.find(0x11000).unwrap().end, 0x12000);
    }
}
