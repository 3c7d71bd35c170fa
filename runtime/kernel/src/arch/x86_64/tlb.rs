//! Keeping the other CPUs' TLBs in step with page-table changes.
//!
//! Each CPU notes the top-level table it has loaded. A change to a live
//! entry of the program's half is flushed on the CPU that made it
//! (INVLPG) and, when another CPU has the same tables loaded, there too: a
//! flush request and an IPI, answered by a CR3 reload, waited for before
//! the change counts as done — so a page unmapped or made read-only here
//! is not written through a stale entry elsewhere once the frame is
//! reused. A range operation batches its changes into one flush at its end
//! ([`batch`]): one CR3 reload here instead of an INVLPG per page (each
//! INVLPG is an emulated instruction on PVM, the commonest exit of fork
//! and exec) and one shootdown; the frames it frees are reused only after
//! that (the kernel lock keeps every other CPU from allocating
//! meanwhile). Tables no CPU has loaded (a forked child's, being built)
//! need no flush at all.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use super::percpu::{self, MAX_CPUS};
use super::{apic, cpu};

/// The IPI vector of a flush request.
pub const FLUSH_VECTOR: u8 = 0x42;

/// The top-level table each CPU has loaded (0: not known yet).
static LOADED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Flush requests made of each CPU (a counter).
static REQUESTED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Flush requests each CPU has answered.
static ANSWERED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// How deep each CPU is in [`batch`]es.
static BATCH_DEPTH: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// A batch changed entries that other CPUs may hold.
static OWED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// A batch changed entries of the tables loaded here.
static OWED_HERE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Records that the running CPU loaded `pml4`.
pub fn loaded(pml4: u64) {
    LOADED[percpu::index()].store(pml4, Ordering::SeqCst);
}

/// The table the running CPU has loaded.
pub fn active() -> u64 {
    LOADED[percpu::index()].load(Ordering::SeqCst)
}

/// Whether any CPU has `pml4` loaded.
pub fn in_use(pml4: u64) -> bool {
    LOADED.iter().any(|l| l.load(Ordering::SeqCst) == pml4)
}

/// The entry of `va` in the tables `pml4` changed: flush it here if the
/// tables are loaded here, and on the other CPUs that have them loaded —
/// now, or at the end of the running batch.
pub fn changed(pml4: u64, va: u64) {
    let me = percpu::index();
    if LOADED[me].load(Ordering::SeqCst) != pml4 {
        // Tables loaded only elsewhere (rare): flushed there at once.
        if in_use(pml4) {
            shootdown(pml4);
        }
        return;
    }
    if BATCH_DEPTH[me].load(Ordering::Relaxed) > 0 {
        OWED_HERE[me].store(true, Ordering::Relaxed);
        OWED[me].store(true, Ordering::Relaxed);
        return;
    }
    cpu::invlpg(va);
    shootdown(pml4);
}

/// Runs `f`, which changes many entries of the running CPU's tables, with
/// one shootdown at its end instead of one per change.
pub fn batch<R>(f: impl FnOnce() -> R) -> R {
    let me = percpu::index();
    BATCH_DEPTH[me].fetch_add(1, Ordering::Relaxed);
    let r = f();
    if BATCH_DEPTH[me].fetch_sub(1, Ordering::Relaxed) == 1 {
        if OWED_HERE[me].swap(false, Ordering::Relaxed) {
            // SAFETY: reloading the loaded table changes no mapping.
            unsafe { cpu::write_cr3(LOADED[me].load(Ordering::SeqCst)) };
        }
        if OWED[me].swap(false, Ordering::Relaxed) {
            shootdown(LOADED[me].load(Ordering::SeqCst));
        }
    }
    r
}

/// Flushes the TLB of every other CPU that has `pml4` loaded, and waits
/// until each has.
pub fn shootdown(pml4: u64) {
    if pml4 == 0 || super::smp::online() < 2 {
        return;
    }
    let me = percpu::index();
    let mut waits = [0u64; MAX_CPUS];
    for (c, wait) in waits.iter_mut().enumerate() {
        if c != me && LOADED[c].load(Ordering::SeqCst) == pml4 {
            *wait = REQUESTED[c].fetch_add(1, Ordering::SeqCst) + 1;
            apic::send_ipi(c as u32, FLUSH_VECTOR);
        }
    }
    for (c, &wait) in waits.iter().enumerate() {
        while wait != 0 && ANSWERED[c].load(Ordering::SeqCst) < wait {
            serve();
            super::snapshot::serve();
            core::hint::spin_loop();
        }
    }
}

/// Answers the flush requests made of the running CPU (from the IPI, and
/// from every wait loop, which may run with interrupts off).
pub fn serve() {
    let me = percpu::index();
    let asked = REQUESTED[me].load(Ordering::SeqCst);
    if ANSWERED[me].load(Ordering::SeqCst) != asked {
        // SAFETY: reloading the loaded table changes no mapping (the one
        // recorded: reading CR3 back would be one more emulated
        // instruction on PVM).
        unsafe { cpu::write_cr3(LOADED[me].load(Ordering::SeqCst)) };
        ANSWERED[me].store(asked, Ordering::SeqCst);
    }
}
