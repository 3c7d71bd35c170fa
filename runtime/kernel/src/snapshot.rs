//! Snapshots from the guest's side (`kiln_boot::snapshot`): every running
//! CPU parks on the VMM's snapshot port at a point where its state is
//! whole, and a VM restored from the snapshot continues from there.
//!
//! A snapshot round starts when the VMM's snapshot interrupt arrives, or
//! when the kernel reaches the point `kiln.snapshot_at=` names; the CPU
//! that starts it asks the others to join (an IPI, and a flag every
//! wait-with-interrupts-off loop checks, `arch::serve_snapshot`), then
//! parks. On a restored VM, CPU 0 sets the wall clock to the host's and
//! reseeds the random generator with the bytes the VMM handed over, so
//! clones of one snapshot do not share their randomness. A warm VM
//! (`kiln warm`, held at its resume report until a run claims it) also
//! reads every page the running program has mapped, so that the host's
//! shadow page tables hold them before the run starts.

use core::sync::atomic::{AtomicBool, Ordering};

use kiln_kernel::boot::cmdline::SnapshotAt;

use crate::arch::{self, platform};

/// The kernel's own snapshot point was passed (it is taken once).
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Whether the VM runs under kiln-vmm, which alone has the snapshot port.
fn supported() -> bool {
    platform::current() == platform::Platform::Kiln
}

/// Just before the program's first instruction (interrupts off).
pub fn at_program_entry() {
    take_if(SnapshotAt::ProgramEntry);
}

/// After a write to standard output or error reached the VMM (interrupts
/// off, no lock held).
pub fn after_output() {
    take_if(SnapshotAt::FirstOutput);
}

fn take_if(point: SnapshotAt) {
    if crate::state::options().snapshot_at != Some(point) || !supported() {
        return;
    }
    if TAKEN.swap(true, Ordering::SeqCst) {
        return;
    }
    arch::take_snapshot();
}

/// The VMM's snapshot interrupt (it starts a round), or another CPU's
/// request to join one (interrupts off).
pub fn interrupt(from_vmm: bool) {
    arch::interrupt_done();
    if !supported() {
        return;
    }
    if from_vmm {
        arch::take_snapshot();
    } else {
        arch::serve_snapshot();
    }
}

/// Registers what a CPU of a restored VM does first (at boot).
pub fn init() {
    arch::on_snapshot_resume(resumed);
}

/// CPU 0 of a restored VM sets the wall clock to the host's and reseeds
/// the random generator (each clone its own bytes); in a VM held for a
/// later run it also touches the program's pages while no one waits.
fn resumed(resumed: arch::Resumed) {
    if arch::cpu_index() != 0 {
        return;
    }
    crate::time::set_realtime(resumed.realtime_ns, resumed.tsc);
    let mut seed = [0u8; 32];
    for (chunk, word) in seed.chunks_exact_mut(8).zip(resumed.seed) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    crate::random::init(&seed);
    if resumed.hints & kiln_boot::snapshot::hints::PREPARE != 0 {
        platform::prepared(crate::mm::touch_running_program());
    }
    platform::milestone(kiln_boot::Milestone::Resumed);
}
