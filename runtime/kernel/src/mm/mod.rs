//! Memory: physical frames, the kernel heap and the kernel's view of its
//! own image; the program's address space ([`space`]), its demand paging
//! ([`fault`]) and checked access to it ([`uaccess`]).
//!
//! Frames come from a bump pointer over the usable regions plus a free list
//! threaded through freed frames (via the direct map): no per-frame table
//! to initialise, so booting with 4 MiB or 4 GiB costs the same. The heap
//! lives in its own virtual range and grows a page run at a time.

pub mod fault;
pub mod frame;
pub mod heap;
pub mod space;
pub mod uaccess;

use crate::boot::{BootParams, Region};

extern "C" {
    static __kernel_start: u8;
    static __kernel_end: u8;
}

/// Physical range of the kernel image (text, data and bss).
pub fn kernel_image() -> Region {
    let (start, end) = (
        (&raw const __kernel_start) as u64,
        (&raw const __kernel_end) as u64,
    );
    let base = kiln_boot::vm::KERNEL_BASE;
    Region {
        start: start - base,
        end: ((end - base) + 0xfff) & !0xfff,
    }
}

/// Sets up the frame allocator and the heap from the boot memory map.
pub fn init(params: &BootParams) {
    // kiln-vmm's guest RAM is fresh anonymous memory; under QEMU the boot
    // loader's leftovers are not ruled out.
    let fresh_is_zero = crate::arch::platform::current() == crate::arch::platform::Platform::Kiln;
    frame::init(
        &params.usable[..params.usable_count],
        fresh_is_zero,
        params.table_area,
    );
    crate::arch::set_split_frames(frame::alloc_table);
    heap::init();
}

/// Reads one byte of every page the running program has mapped, through
/// its own addresses (a warm VM before its claim, `kiln_boot::snapshot::
/// hints::PREPARE`). On PVM the host builds its shadow page tables on the
/// first access to each page (one exit per 32 KiB of 4 KiB mappings, the
/// host filling 8 neighbours at a time); done here, the claimed run finds
/// them built. Nothing happens when the process lock is taken (a snapshot
/// taken inside the kernel) or another address space is loaded. Returns
/// the number of pages read.
pub fn touch_running_program() -> u64 {
    let Some(running) = crate::state::KERNEL.process.try_lock() else {
        return 0;
    };
    match running.as_ref() {
        Some(p) if p.mem.pml4() == crate::arch::active_page_table() => p.mem.touch_resident(),
        _ => 0,
    }
}
