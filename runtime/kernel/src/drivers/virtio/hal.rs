//! What the virtio-drivers crate needs from the kernel: DMA memory (frames
//! from the frame allocator, reached through the direct map) and the
//! physical address of a buffer (buffers handed to devices always live in
//! such frames, never on the heap or a stack).

use core::ptr::NonNull;

use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

use crate::arch::{phys_to_virt, virt_to_phys};
use crate::mm::frame;

/// The kernel's side of virtio-drivers.
pub struct KernelHal;

// SAFETY: `dma_alloc` returns zeroed, page-aligned, physically contiguous
// frames nothing else owns, mapped by the direct map at the returned
// pointer; `share` returns the physical address of a direct-map buffer,
// which is what the device (the VMM) reads and writes.
unsafe impl Hal for KernelHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        match frame::alloc_contiguous_zeroed(pages as u64) {
            Some(pa) => (
                pa,
                NonNull::new(phys_to_virt(pa)).unwrap_or(NonNull::dangling()),
            ),
            // virtio-drivers reports a 0 physical address as DmaError.
            None => (0, NonNull::dangling()),
        }
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        for i in 0..pages as u64 {
            frame::free(paddr + i * PAGE_SIZE as u64);
        }
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        // The register windows are mapped at their direct-map address when
        // the devices are set up.
        NonNull::new(phys_to_virt(paddr)).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        let va = buffer.as_ptr() as *mut u8 as u64;
        match virt_to_phys(va) {
            Some(pa) => pa,
            None => panic!("virtio: buffer {va:#x} is not in the direct map"),
        }
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}
