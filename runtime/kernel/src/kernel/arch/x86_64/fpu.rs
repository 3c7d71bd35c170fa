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

impl FpuState {
    /// The save image (XSAVE standard format or FXSAVE).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `area` holds `layout.size()` initialised bytes owned by self.
        unsafe { core::slice::from_raw_parts(self.area, self.layout.size()) }
    }

    /// The save image, for editing before `restore`; the caller must keep
    /// it valid (see [`valid_image`]).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `&mut self` makes the access exclusive.
        unsafe { core::slice::from_raw_parts_mut(self.area, self.layout.size()) }
    }
}

/// Bytes of a save image.
pub fn area_size() -> usize {
    AREA_SIZE.load(Ordering::Relaxed).max(512)
}

/// Whether save images are in XSAVE format.
pub fn uses_xsave() -> bool {
    USE_XSAVE.load(Ordering::Relaxed) != 0
}

/// Offset of XMM0 in a save image.
pub const XMM_OFFSET: usize = 160;

/// Whether a save image that came from the program (a signal frame) can be
/// loaded without faulting: MXCSR has no reserved bit set, and an XSAVE
/// header names only enabled components in the standard format.
pub fn valid_image(image: &[u8]) -> bool {
    if image.len() < area_size() {
        return false;
    }
    let word = |at: usize| u64::from_le_bytes(image[at..at + 8].try_into().unwrap_or_default());
    let mxcsr = u32::from_le_bytes(image[24..28].try_into().unwrap_or_default());
    let mask = match u32::from_le_bytes(image[28..32].try_into().unwrap_or_default()) {
        0 => 0xffbf,
        m => m,
    };
    if mxcsr & !mask != 0 {
        return false;
    }
    if uses_xsave() {
        let xstate_bv = word(512);
        let xcomp_bv = word(520);
        if xstate_bv & !super::cpu::xcr0() != 0 || xcomp_bv != 0 {
            return false;
        }
        if image[528..576].iter().any(|&b| b != 0) {
            return false;
        }
    }
    true
}

impl Drop for FpuState {
    fn drop(&mut self) {
        // SAFETY: allocated in `capture` with this layout.
        unsafe { dealloc(self.area, self.layout) };
    }
}
