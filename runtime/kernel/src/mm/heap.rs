//! The kernel heap (`alloc`'s global allocator): a first-fit
//! `linked_list_allocator` over a dedicated virtual range that grows by
//! mapping fresh frames at its top.

use core::alloc::{GlobalAlloc, Layout};

use crate::state::KERNEL;
use linked_list_allocator::Heap;

use super::frame;
use crate::arch::{pte, PageTables};

/// Start of the heap's virtual range (PML4 slot 402).
const HEAP_BASE: u64 = 0xffff_c900_0000_0000;
/// The heap never grows beyond this.
const HEAP_MAX: u64 = 1 << 30;
/// Grow by at least this much at a time.
const GROW_STEP: u64 = 64 * 1024;

/// The heap's allocator and how much of its range is mapped; the
/// instance is `state::KERNEL.heap`.
pub struct KernelHeap {
    heap: Heap,
    /// End of the mapped part of the range.
    mapped_end: u64,
}

impl KernelHeap {
    /// Nothing mapped until `init`.
    pub const fn new() -> Self {
        Self {
            heap: Heap::empty(),
            mapped_end: HEAP_BASE,
        }
    }
}

/// Maps `[from, from+len)` of the heap range to fresh frames.
fn map_range(from: u64, len: u64) -> bool {
    // SAFETY: the active PML4 maps the kernel; the heap range is touched
    // only under the KERNEL.heap lock, so this is the only writer of those entries.
    let mut tables = unsafe { PageTables::from_pml4(crate::arch::active_page_table()) };
    let mut va = from;
    while va < from + len {
        let Some(pa) = frame::alloc() else {
            return false;
        };
        if tables
            .map(
                va,
                pa,
                pte::WRITABLE | pte::NO_EXECUTE,
                &mut frame::alloc_table,
            )
            .is_err()
        {
            return false;
        }
        va += frame::FRAME_SIZE;
    }
    true
}

/// Maps the first part of the heap.
pub fn init() {
    let mut h = KERNEL.heap.lock();
    if !map_range(HEAP_BASE, GROW_STEP) {
        panic!("out of memory setting up the kernel heap");
    }
    // SAFETY: `[HEAP_BASE, +GROW_STEP)` was just mapped and is used by
    // nothing else.
    unsafe { h.heap.init(HEAP_BASE as *mut u8, GROW_STEP as usize) };
    h.mapped_end = HEAP_BASE + GROW_STEP;
}

struct KernelAllocator;

// SAFETY: allocation and deallocation go through the locked
// linked-list heap, which returns disjoint, correctly aligned blocks.
unsafe impl GlobalAlloc for KernelAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut h = KERNEL.heap.lock();
        loop {
            if let Ok(p) = h.heap.allocate_first_fit(layout) {
                return p.as_ptr();
            }
            let need = (layout.size() + layout.align()) as u64;
            let step = need.div_ceil(GROW_STEP) * GROW_STEP;
            let end = h.mapped_end;
            if end + step > HEAP_BASE + HEAP_MAX || !map_range(end, step) {
                return core::ptr::null_mut();
            }
            // SAFETY: `[end, end+step)` directly follows the heap and was
            // just mapped.
            unsafe { h.heap.extend(step as usize) };
            h.mapped_end = end + step;
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = core::ptr::NonNull::new(ptr) {
            // SAFETY: `ptr` came from `alloc` with this layout (GlobalAlloc
            // contract).
            unsafe { KERNEL.heap.lock().heap.deallocate(p, layout) };
        }
    }
}

#[global_allocator]
static ALLOCATOR: KernelAllocator = KernelAllocator;
