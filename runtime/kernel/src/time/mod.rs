//! Time: the clocks (the TSC, scaled by its frequency, anchored at the
//! boot wall-clock), the program's timers ([`timer`]) and the kernel
//! functions the vDSO points at ([`vdso`]).

pub mod timer;
pub mod vdso;

use core::sync::atomic::{AtomicI64, Ordering};

use crate::arch::rdtsc;
use crate::boot::BootParams;
pub use kiln_kernel::time::civil::days_from_civil;

/// The clock's anchor: the TSC rate, and the TSC and wall-clock time at
/// boot.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    tsc_khz: u64,
    boot_tsc: u64,
    boot_realtime_ns: u64,
}

/// Before `init`: a 1 GHz TSC counted from 0.
const UNSET: Clock = Clock {
    tsc_khz: 1_000_000,
    boot_tsc: 0,
    boot_realtime_ns: 0,
};

/// Anchors the clock (once, at boot).
pub fn init(params: &BootParams) {
    crate::state::BOOT.clock.call_once(|| Clock {
        tsc_khz: if params.tsc_khz == 0 {
            UNSET.tsc_khz
        } else {
            params.tsc_khz
        },
        boot_tsc: params.boot_tsc,
        boot_realtime_ns: params.boot_realtime_ns,
    });
}

fn clock() -> Clock {
    crate::state::BOOT.clock.get().copied().unwrap_or(UNSET)
}

/// Nanoseconds since boot.
pub fn monotonic_ns() -> u64 {
    let c = clock();
    let ticks = rdtsc().saturating_sub(c.boot_tsc);
    (u128::from(ticks) * 1_000_000 / u128::from(c.tsc_khz)) as u64
}

/// What a restored snapshot moved the wall clock by (ns, added to the
/// boot wall-clock time).
static REALTIME_SHIFT_NS: AtomicI64 = AtomicI64::new(0);

/// The wall-clock time at boot, as the clock stands now.
fn boot_realtime_ns() -> u64 {
    clock()
        .boot_realtime_ns
        .wrapping_add_signed(REALTIME_SHIFT_NS.load(Ordering::Relaxed))
}

/// Nanoseconds since the Unix epoch.
pub fn realtime_ns() -> u64 {
    boot_realtime_ns() + monotonic_ns()
}

/// Sets the wall clock: it showed `realtime_ns` when the TSC read `tsc`
/// (a VM restored from a snapshot takes the host's time). The monotonic
/// clocks go on from where they were.
pub fn set_realtime(realtime_ns: u64, tsc: u64) {
    let c = clock();
    let since_boot =
        (u128::from(tsc.saturating_sub(c.boot_tsc)) * 1_000_000 / u128::from(c.tsc_khz)) as u64;
    let shift = i128::from(realtime_ns) - i128::from(c.boot_realtime_ns) - i128::from(since_boot);
    REALTIME_SHIFT_NS.store(
        shift.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64,
        Ordering::Relaxed,
    );
}

/// The TSC frequency in kHz.
pub fn tsc_khz() -> u64 {
    clock().tsc_khz
}

/// The TSC value at monotonic time `ns`.
pub fn tsc_at(ns: u64) -> u64 {
    let c = clock();
    c.boot_tsc + (u128::from(ns) * u128::from(c.tsc_khz) / 1_000_000) as u64
}

/// The monotonic time at which the wall clock shows `realtime_ns`.
pub fn realtime_to_monotonic(realtime_ns: u64) -> u64 {
    realtime_ns.saturating_sub(boot_realtime_ns())
}
