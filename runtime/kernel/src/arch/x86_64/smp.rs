//! Starting the other CPUs, and the interrupts CPUs send each other.
//!
//! kiln-vmm creates every vCPU at boot and runs vCPU `n` when the boot CPU
//! writes `n` to `kiln_boot::port::START_CPU`: it enters `_start` in
//! 64-bit mode with the boot page tables, registers its own PVM page, and
//! comes here on the stack the boot CPU left in [`AP_BOOT_STACK`]. There it
//! sets up its own descriptor tables, system-call entry, FPU state and
//! local APIC, and joins the scheduler, whose idle loop it runs on that
//! stack. Under QEMU (PVH boot) the kernel runs on one CPU.

use core::sync::atomic::{AtomicUsize, Ordering};

use super::percpu::{self, MAX_CPUS};
use super::{apic, cpu, gdt, platform, traps};

/// The IPI vector that makes a CPU look at the scheduler (a thread woke up
/// for an idle CPU, or its running thread has a signal or must end).
pub const RESCHEDULE_VECTOR: u8 = 0x41;

/// Size of each started CPU's boot stack (its idle loop's stack).
const AP_STACK_SIZE: usize = 64 * 1024;

/// The stack the CPU being started switches to (read by `_start`).
#[no_mangle]
static mut AP_BOOT_STACK: u64 = 0;

/// How many CPUs run kernel code.
static ONLINE: AtomicUsize = AtomicUsize::new(1);

/// The number of CPUs running.
pub fn online() -> usize {
    ONLINE.load(Ordering::SeqCst)
}

/// A leaked, zeroed, 16-byte-aligned stack of `size` bytes; its top.
fn new_stack(size: usize) -> u64 {
    let stack = alloc::vec![0u128; size / 16].leak();
    stack.as_ptr() as u64 + size as u64
}

/// Starts CPUs 1 to `count - 1` one after the other (kiln platform only);
/// returns how many CPUs run. A CPU that does not come up within a second
/// is reported and the rest are not started.
pub fn start_cpus(count: usize) -> usize {
    let count = count.min(MAX_CPUS);
    if count < 2
        || platform::current() != platform::Platform::Kiln
        || !super::enable_interrupt_controller()
    {
        return online();
    }
    let tsc_per_second = crate::time::tsc_khz().max(1) * 1000;
    for index in 1..count {
        let top = new_stack(AP_STACK_SIZE);
        // SAFETY: only the boot CPU writes it, before starting the CPU that
        // reads it; that CPU reads it once, before the next one starts.
        unsafe { core::ptr::write_volatile(&raw mut AP_BOOT_STACK, top) };
        cpu::outl(kiln_boot::port::START_CPU, index as u32);
        let start = cpu::rdtsc();
        while ONLINE.load(Ordering::SeqCst) <= index {
            if cpu::rdtsc() - start > tsc_per_second {
                crate::kprintln!("kiln: vCPU {index} did not start; running on {index} CPUs");
                return online();
            }
            core::hint::spin_loop();
        }
    }
    online()
}

/// First Rust code of a started CPU (called by `_start`).
#[no_mangle]
extern "C" fn ap_start(index: u64, pv_page: u64) -> ! {
    let index = index as usize;
    percpu::init(index, pv_page);
    gdt::init_cpu(
        index,
        [
            new_stack(gdt::IST_EXCEPTION_SIZE),
            new_stack(gdt::IST_CRITICAL_SIZE),
            new_stack(gdt::IST_INTERRUPT_SIZE),
        ],
    );
    traps::load_idt();
    traps::init_syscall();
    super::init_cpu_registers();
    apic::init_this_cpu();
    super::tlb::loaded(cpu::read_cr3() & super::paging::pte::ADDR);
    ONLINE.fetch_add(1, Ordering::SeqCst);
    crate::sched::cpu_main()
}

/// Sends `vector` to CPU `index`.
pub fn send(index: usize, vector: u8) {
    apic::send_ipi(index as u32, vector);
}
