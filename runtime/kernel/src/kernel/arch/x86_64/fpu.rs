//! Saving and restoring a thread's full FPU/SSE/AVX register state when
//! the kernel switches threads (XSAVE with every state component XCR0
//! enables; FXSAVE on CPUs without XSAVE). Within one thread, the entry
//! stubs save XMM0-15 in the frame; the upper halves of the YMM/ZMM
//! registers are untouched by the kernel's SSE code and need saving only
//! when another thread will run.

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use core::arch::asm;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Bytes of one save area (0 until `init`).
static AREA_SIZE: AtomicUsize = AtomicUsize::new(0);
/// Whether XSAVE is in use.
static USE_XSAVE: AtomicUsize = AtomicUsize::new(0);

/// Sizes the save area from CPUID (call after XCR0 is set).
pub fn init(xsave: bool) {
    let size = if xsave {
        super::cpu::cpuid(0xd, 0).ebx as usize
    } else {
        512
    };
    AREA_SIZE.store(size.max(512), Ordering::Relaxed);
    USE_XSAVE.store(usize::from(xsave), Ordering::Relaxed);
}

/// One thread's saved register state (64-byte aligned, zero-initialised:
/// a valid "initial state" for XRSTOR only after a first XSAVE, so new
/// threads start by copying their creator's state).
pub struct FpuState {
    area: *mut u8,
    layout: Layout,
}

// SAFETY: the area is owned exclusively by its FpuState and only touched
// by the CPU the kernel runs on.
unsafe impl Send for FpuState {}
// SAFETY: as above; shared references never access the area.
unsafe impl Sync for FpuState {}

impl FpuState {
    /// A state holding the CPU's current registers.
    pub fn capture() -> Option<Self> {
        let layout =
            Layout::from_size_align(AREA_SIZE.load(Ordering::Relaxed).max(512), 64).ok()?;
        // SAFETY: the layout has a non-zero size.
        let area = unsafe { alloc_zeroed(layout) };
        if area.is_null() {
            return None;
        }
        let s = Self { area, layout };
        s.save();
        Some(s)
    }

    /// Stores the CPU's current registers here.
    pub fn save(&self) {
        // SAFETY: `area` is a 64-byte-aligned buffer of the size CPUID
        // gives for the enabled components; EDX:EAX = all ones saves them all.
        unsafe {
            if USE_XSAVE.load(Ordering::Relaxed) != 0 {
                asm!("xsave64 [{}]", in(reg) self.area, in("eax") u32::MAX, in("edx") u32::MAX, options(nostack));
            } else {
                asm!("fxsave64 [{}]", in(reg) self.area, options(nostack));
            }
        }
    }

    /// Loads the registers saved here into the CPU.
    pub fn restore(&self) {
        // SAFETY: the area holds a state saved by `save`.
        unsafe {
            if USE_XSAVE.load(Ordering::Relaxed) != 0 {
                asm!("xrstor64 [{}]", in(reg) self.area, in("eax") u32::MAX, in("edx") u32::MAX, options(nostack));
            } else {
                asm!("fxrstor64 [{}]", in(reg) self.area, options(nostack));
            }
        }
    }
}

impl Drop for FpuState {
    fn drop(&mut self) {
        // SAFETY: allocated in `capture` with this layout.
        unsafe { dealloc(self.area, self.layout) };
    }
}
