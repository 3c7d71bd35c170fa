//! Parking a vCPU for a snapshot (kiln-vmm only, `kiln_boot::snapshot`).
//!
//! The vCPU writes [`kiln_boot::port::SNAPSHOT`] and stays in that exit
//! while the VMM saves the VM. A VM restored from the snapshot resumes
//! every vCPU right after that `OUT`, in a fresh vCPU that PVM has not seen
//! register: until it does (`WRMSR`, which only the guest can make) its
//! kernel code is emulated, so the registration follows the `OUT` at once,
//! before anything else — a handful of emulated instructions.

use core::arch::asm;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::{percpu, pvm};

/// The interrupt one CPU sends the others to have them park in the round
/// it started (kernel-internal; the VMM's request is
/// [`kiln_boot::snapshot::VECTOR`]).
pub const JOIN_VECTOR: u8 = 0x4d;

/// The latest snapshot round asked for (0: none yet).
static ROUND: AtomicU64 = AtomicU64::new(0);
/// The round each CPU last parked in.
static PARKED: [AtomicU64; percpu::MAX_CPUS] = [const { AtomicU64::new(0) }; percpu::MAX_CPUS];
/// What runs on a CPU that comes back from a snapshot (a `fn(Resumed)`,
/// set by the kernel; 0: nothing).
static RESUME_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Sets what runs on each CPU of a restored VM as it comes back.
pub fn on_resume(hook: fn(Resumed)) {
    RESUME_HOOK.store(hook as usize, Ordering::SeqCst);
}

/// Starts a snapshot round: every running CPU is asked to park (the
/// others by [`JOIN_VECTOR`], and any that waits with interrupts off
/// through [`serve`]), then this one parks. Interrupts off.
pub fn take() {
    ROUND.fetch_add(1, Ordering::SeqCst);
    let me = percpu::index();
    for cpu in 0..super::smp::online() {
        if cpu != me {
            super::smp::send(cpu, JOIN_VECTOR);
        }
    }
    serve();
}

/// Parks this CPU if a snapshot round it has not parked in is under way.
/// Called by the join interrupt and by every loop that waits for another
/// CPU with interrupts off (else a CPU spinning on a lock the parked one
/// holds would never park).
pub fn serve() {
    let me = percpu::index();
    let round = ROUND.load(Ordering::SeqCst);
    if PARKED[me].load(Ordering::SeqCst) >= round {
        return;
    }
    PARKED[me].store(round, Ordering::SeqCst);
    if let Some(resumed) = park() {
        let hook = RESUME_HOOK.load(Ordering::SeqCst);
        if hook != 0 {
            // SAFETY: only `on_resume` stores here, always a `fn(Resumed)`.
            let hook: fn(Resumed) = unsafe { core::mem::transmute(hook) };
            hook(resumed);
        }
    }
}

/// What the VMM hands a vCPU restored from a snapshot.
#[derive(Clone, Copy, Debug)]
pub struct Resumed {
    /// The host's wall-clock time, ns since the epoch.
    pub realtime_ns: u64,
    /// The guest's TSC at `realtime_ns`.
    pub tsc: u64,
    /// Fresh random bytes (each clone its own).
    pub seed: [u64; 4],
    /// What the VMM asks of the kernel ([`kiln_boot::snapshot::hints`]).
    pub hints: u64,
}

/// Parks this vCPU until the VMM has saved the VM. Returns `None` when the
/// VM that parked goes on, and what the VMM said when this is a VM restored
/// from the snapshot (the vCPU is registered with PVM again by then).
///
/// Call with interrupts off; the caller's registers are whole again on
/// return either way.
fn park() -> Option<Resumed> {
    let page = percpu::pv_page();
    let registration = if page != 0 {
        page | pvm::FLAG_CR2_CELL
    } else {
        0
    };
    let (resumed, hints): (u64, u64);
    let (realtime_ns, tsc, s0, s1, s2, s3): (u64, u64, u64, u64, u64, u64);
    // SAFETY: the OUT exits to kiln-vmm, which either returns without
    // changing a register, or (restored VM) sets exactly the registers
    // declared here as outputs (`rdx`'s hints are kept in r13 before the
    // registration needs `rdx`). The WRMSR re-registers this vCPU's own PVM
    // page with the value `_start` used; it runs only when rax says the
    // VM was restored and `registration` is not 0 (PVM).
    unsafe {
        asm!(
            "out dx, eax",
            "mov r13, rdx",
            "test rax, rax",
            "jz 2f",
            "test r12, r12",
            "jz 2f",
            "mov ecx, {msr}",
            "mov eax, r12d",
            "mov rdx, r12",
            "shr rdx, 32",
            "wrmsr",
            "mov eax, 1",
            "2:",
            msr = const pvm::REGISTER_MSR,
            inout("rax") 0u64 => resumed,
            inout("rdx") u64::from(kiln_boot::port::SNAPSHOT) => _,
            out("rcx") _,
            in("r12") registration,
            out("r13") hints,
            inout("rdi") 0u64 => realtime_ns,
            inout("rsi") 0u64 => tsc,
            inout("r8") 0u64 => s0,
            inout("r9") 0u64 => s1,
            inout("r10") 0u64 => s2,
            inout("r11") 0u64 => s3,
            options(nostack),
        );
    }
    (resumed == kiln_boot::snapshot::RESUMED).then_some(Resumed {
        realtime_ns,
        tsc,
        seed: [s0, s1, s2, s3],
        hints,
    })
}
