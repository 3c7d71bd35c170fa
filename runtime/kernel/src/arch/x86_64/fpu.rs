//! Saving and restoring a thread's full FPU/SSE/AVX register state when
//! the kernel switches threads (XSAVE of the state components the kernel
//! enabled in XCR0; FXSAVE on CPUs without XSAVE). Within one thread, the
//! entry stubs save XMM0-15 in the frame; the upper halves of the YMM/ZMM
//! registers are untouched by the kernel's SSE code and need saving only
//! when another thread will run.
//!
//! XSAVE and XRSTOR are always given the kernel's own component mask, never
//! "all ones": under PVM on Intel hosts the hardware XCR0 is the host's
//! (XGETBV reads 0x600e7 there: AMX tile state included) while CPUID
//! describes the guest's XCR0 (0xe7, a 2688-byte area), so an all-ones
//! XSAVE writes the 8 KiB tile area past the end of the buffer.

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use core::arch::asm;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Bytes of one save area (0 until `init`).
static AREA_SIZE: AtomicUsize = AtomicUsize::new(0);
/// The XSAVE components the kernel enabled (0: XSAVE is not in use).
static COMPONENTS: AtomicU64 = AtomicU64::new(0);

/// Bytes of the legacy (FXSAVE) region plus the XSAVE header.
const XSAVE_HEADER_END: usize = 576;

/// Sizes the save area for `components`, the XCR0 the kernel set (`None`
/// when the CPU has no XSAVE and FXSAVE is used).
pub fn init(components: Option<u64>) {
    let size = match components {
        // Each enabled component i >= 2 lies at CPUID.(0xD, i).EBX and
        // spans EAX bytes in the standard format (Intel SDM vol. 1, 13.4.3).
        Some(mask) => (2..64)
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| {
                let leaf = super::cpu::cpuid(0xd, i);
                leaf.ebx as usize + leaf.eax as usize
            })
            .fold(XSAVE_HEADER_END, usize::max),
        None => 512,
    };
    AREA_SIZE.store(size, Ordering::Relaxed);
    COMPONENTS.store(components.unwrap_or(0), Ordering::Relaxed);
}

/// The component mask for XSAVE/XRSTOR, split into EAX and EDX.
fn mask_halves() -> (u32, u32) {
    let mask = COMPONENTS.load(Ordering::Relaxed);
    (mask as u32, (mask >> 32) as u32)
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
        let (lo, hi) = mask_halves();
        // SAFETY: `area` is a 64-byte-aligned buffer that holds every
        // component of the mask in EDX:EAX (sized from CPUID in `init`).
        unsafe {
            if uses_xsave() {
                asm!("xsave64 [{}]", in(reg) self.area, in("eax") lo, in("edx") hi, options(nostack));
            } else {
                asm!("fxsave64 [{}]", in(reg) self.area, options(nostack));
            }
        }
    }

    /// Loads the registers saved here into the CPU.
    pub fn restore(&self) {
        let (lo, hi) = mask_halves();
        // SAFETY: the area holds a state saved by `save` (or checked by
        // `valid_image`) for the components of the mask.
        unsafe {
            if uses_xsave() {
                asm!("xrstor64 [{}]", in(reg) self.area, in("eax") lo, in("edx") hi, options(nostack));
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
    COMPONENTS.load(Ordering::Relaxed) != 0
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
        if xstate_bv & !COMPONENTS.load(Ordering::Relaxed) != 0 || xcomp_bv != 0 {
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

/// Resets the x87 and SSE control state to what a new program starts with
/// (execve): FNINIT and MXCSR 0x1f80. The XMM registers themselves come
/// from the frame the program returns with.
pub fn reset_control() {
    let mxcsr: u32 = 0x1f80;
    // SAFETY: FNINIT and LDMXCSR of the default value change only the FPU's
    // control and status state, which belongs to the running thread.
    unsafe {
        asm!("fninit", "ldmxcsr [{m}]", m = in(reg) &mxcsr, options(nostack));
    }
}
