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

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use kiln_kernel::boot::cmdline::SnapshotAt;

use crate::arch::{self, platform};

/// The kernel's own snapshot point was passed (it is taken once).
static TAKEN: AtomicBool = AtomicBool::new(false);
/// Where the breakpoint at a dynamic program's own entry sits
/// (`after-loader`; 0: none), and the byte it replaced.
static ENTRY_BREAKPOINT: AtomicU64 = AtomicU64::new(0);
static ENTRY_BYTE: AtomicU8 = AtomicU8::new(0);
/// INT3.
const BREAKPOINT: u8 = 0xcc;

/// Whether the VM runs under kiln-vmm, which alone has the snapshot port.
fn supported() -> bool {
    platform::current() == platform::Platform::Kiln
}

/// Just before the program's first instruction (interrupts off): the
/// `program-entry` snapshot, and the `after-loader` one when no breakpoint
/// waits for it further on (a static program).
pub fn at_program_entry() {
    take_if(SnapshotAt::ProgramEntry);
    if ENTRY_BREAKPOINT.load(Ordering::SeqCst) == 0 {
        take_if(SnapshotAt::AfterLoader);
    }
}

/// For `after-loader`, once a dynamic program is loaded (`own_entry`: its
/// own entry, where its loader jumps once the libraries are mapped and
/// relocated): a breakpoint there (see [`at_entry_breakpoint`]). Without
/// one the snapshot is taken at program entry (reported).
pub fn arm_after_loader(p: &mut crate::process::Process, own_entry: Option<u64>) {
    if crate::state::options().snapshot_at != Some(SnapshotAt::AfterLoader) || !supported() {
        return;
    }
    let Some(entry) = own_entry else {
        return;
    };
    let Ok(&[byte]) = p.mem.user_bytes(entry, 1) else {
        crate::kprintln!(
            "kiln: cannot read the program's entry at {entry:#x}: the snapshot is taken at program entry"
        );
        return;
    };
    if p.mem.poke_code(entry, &[BREAKPOINT]).is_err() {
        crate::kprintln!(
            "kiln: cannot set a breakpoint at the program's entry: the snapshot is taken at program entry"
        );
        return;
    }
    ENTRY_BYTE.store(byte, Ordering::SeqCst);
    ENTRY_BREAKPOINT.store(entry, Ordering::SeqCst);
}

/// A breakpoint trap of the program (`rip` just past the INT3): the one
/// [`arm_after_loader`] set puts its byte back, takes the snapshot and has
/// the program go on at its entry (`rip` moved back). Returns whether it
/// was that one; any other is the program's own (SIGTRAP).
pub fn at_entry_breakpoint(rip: &mut u64) -> bool {
    let entry = ENTRY_BREAKPOINT.load(Ordering::SeqCst);
    if entry == 0 || *rip != entry + 1 {
        return false;
    }
    ENTRY_BREAKPOINT.store(0, Ordering::SeqCst);
    let byte = ENTRY_BYTE.load(Ordering::SeqCst);
    let restored = crate::state::KERNEL
        .process
        .lock()
        .as_mut()
        .is_some_and(|p| p.mem.poke_code(entry, &[byte]).is_ok());
    if !restored {
        return false;
    }
    *rip = entry;
    take_if(SnapshotAt::AfterLoader);
    true
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
