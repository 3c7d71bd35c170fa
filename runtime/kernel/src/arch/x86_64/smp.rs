//! Starting the other CPUs, and the interrupts CPUs send each other.
//!
//! kiln-vmm creates every vCPU at boot and runs vCPU `n` when the boot CPU
//! writes `n` to `kiln_boot::port::START_CPU`: it enters `_start` in
//! 64-bit mode with the boot page tables, registers its own PVM page, and
//! comes here on the stack the boot CPU left in [`AP_BOOT_STACK`]. There it
//! sets up its own descriptor tables, system-call entry, FPU state and
//! local APIC, and joins the scheduler, whose idle loop it runs on that
//! stack.
//!
//! Under QEMU (the PVH boot, `kiln.cpus=N` with `-smp N`) the other CPUs
//! wait for INIT and STARTUP IPIs and begin in real mode: the boot CPU
//! copies a trampoline into a page below 1 MiB, which goes through
//! protected mode into long mode on page tables that also map the first
//! 2 MiB one to one, and jumps to `_start` as kiln-vmm would.

use core::arch::global_asm;
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

/// Starts CPUs 1 to `count - 1` one after the other; returns how many
/// CPUs run. A CPU that does not come up within a second is reported and
/// the rest are not started.
pub fn start_cpus(count: usize) -> usize {
    let count = count.min(MAX_CPUS);
    if count < 2 || !super::enable_interrupt_controller() {
        return online();
    }
    let trampoline = if platform::current().is_pc() {
        match Trampoline::install() {
            Some(t) => Some(t),
            None => {
                crate::kprintln!("kiln: no room for the CPU start-up trampoline; running on 1 CPU");
                return online();
            }
        }
    } else {
        None
    };
    let tsc_per_second = crate::time::tsc_khz().max(1) * 1000;
    for index in 1..count {
        let top = new_stack(AP_STACK_SIZE);
        // SAFETY: only the boot CPU writes it, before starting the CPU that
        // reads it; that CPU reads it once, before the next one starts.
        unsafe { core::ptr::write_volatile(&raw mut AP_BOOT_STACK, top) };
        match &trampoline {
            Some(t) => t.start(index),
            None => cpu::outl(kiln_boot::port::START_CPU, index as u32),
        }
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
    super::tlb::loaded(super::boot_cr3());
    ONLINE.fetch_add(1, Ordering::SeqCst);
    crate::sched::cpu_main()
}

/// Sends `vector` to CPU `index`.
pub fn send(index: usize, vector: u8) {
    apic::send_ipi(index as u32, vector);
}

// The real-mode start-up code (copied to `TRAMPOLINE_PAGE`). Offsets into
// the page: the code at 0, the GDT at 0xe00, the data block at 0xf00
// (GDT pointer; far pointers to the 32- and 64-bit parts; CR3; the CPU's
// index; `_start`).
global_asm!(
    ".section .text.trampoline, \"ax\"",
    ".globl ap_trampoline_start",
    ".globl ap_trampoline_end",
    ".code16",
    "ap_trampoline_start:",
    "cli",
    "cld",
    "mov ax, cs",
    "mov ds, ax",
    "xor ebx, ebx",
    "mov bx, ax",
    "shl ebx, 4",
    "lgdt [0xf00]",
    "mov eax, cr0",
    "or eax, 1",
    "mov cr0, eax",
    ".byte 0x66, 0xff, 0x2e",
    ".word 0xf08",
    ".code32",
    ".globl ap_trampoline_32",
    "ap_trampoline_32:",
    "mov ax, 0x18",
    "mov ds, ax",
    "mov es, ax",
    "mov ss, ax",
    "mov eax, cr4",
    "or eax, 0x620",
    "mov cr4, eax",
    "mov eax, [ebx + 0xf18]",
    "mov cr3, eax",
    "mov ecx, 0xc0000080",
    "rdmsr",
    "or eax, 0x901",
    "wrmsr",
    "mov eax, cr0",
    "or eax, 0x80010023",
    "and eax, 0xfffffffb",
    "mov cr0, eax",
    "jmp fword ptr [ebx + 0xf10]",
    ".code64",
    ".globl ap_trampoline_64",
    "ap_trampoline_64:",
    "mov rdi, [rbx + 0xf20]",
    "xor edx, edx",
    "mov rax, [rbx + 0xf28]",
    "jmp rax",
    "ap_trampoline_end:",
    ".text",
);

extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_32: u8;
    static ap_trampoline_64: u8;
    static ap_trampoline_end: u8;
    fn _start();
}

/// Where the trampoline goes: a page below 1 MiB, which the kernel never
/// hands out.
const TRAMPOLINE_PAGE: u64 = 0x7000;

/// The installed trampoline.
struct Trampoline {
    /// Its page, through the direct map.
    page: *mut u8,
}

impl Trampoline {
    /// Copies the code to [`TRAMPOLINE_PAGE`] with its GDT and data, and
    /// makes page tables for the started CPUs: the kernel's upper half
    /// plus the first 2 MiB mapped one to one (the trampoline runs there
    /// when paging comes on).
    fn install() -> Option<Trampoline> {
        let pml4 = crate::mm::frame::alloc_zeroed()?;
        let pdpt = crate::mm::frame::alloc_zeroed()?;
        let pd = crate::mm::frame::alloc_zeroed()?;
        // CR3 is loaded in 32-bit mode.
        let pml4_low = u32::try_from(pml4).ok()?;
        let active = super::tlb::active();
        let base = (&raw const ap_trampoline_start) as u64;
        let len = (&raw const ap_trampoline_end) as u64 - base;
        let offset_32 = (&raw const ap_trampoline_32) as u64 - base;
        let offset_64 = (&raw const ap_trampoline_64) as u64 - base;
        if len > 0xe00 {
            return None;
        }
        let page = super::paging::phys_to_virt(TRAMPOLINE_PAGE);
        // SAFETY: the three tables are fresh frames reached through the
        // direct map, the active PML4 is only read; the trampoline page lies
        // below 1 MiB, which the kernel never hands out, and the code and
        // the data block fit in it; the kernel's code is read as bytes.
        unsafe {
            let from = &*(super::paging::phys_to_virt(active) as *const [u64; 512]);
            let to = &mut *(super::paging::phys_to_virt(pml4) as *mut [u64; 512]);
            to[256..].copy_from_slice(&from[256..]);
            to[0] = pdpt | 0x3;
            (*(super::paging::phys_to_virt(pdpt) as *mut [u64; 512]))[0] = pd | 0x3;
            (*(super::paging::phys_to_virt(pd) as *mut [u64; 512]))[0] = 0x83;
            core::ptr::write_bytes(page, 0, 0x1000);
            core::ptr::copy_nonoverlapping(base as *const u8, page, len as usize);
            let gdt = page.add(0xe00) as *mut u64;
            gdt.add(1).write(0x00cf_9a00_0000_ffff); // 0x08: 32-bit code
            gdt.add(2).write(0x00af_9a00_0000_ffff); // 0x10: 64-bit code
            gdt.add(3).write(0x00cf_9200_0000_ffff); // 0x18: data
            let data = page.add(0xf00);
            (data as *mut u16).write_unaligned(4 * 8 - 1);
            (data.add(2) as *mut u32).write_unaligned((TRAMPOLINE_PAGE + 0xe00) as u32);
            (data.add(8) as *mut u32).write_unaligned((TRAMPOLINE_PAGE + offset_32) as u32);
            (data.add(12) as *mut u16).write_unaligned(0x08);
            (data.add(0x10) as *mut u32).write_unaligned((TRAMPOLINE_PAGE + offset_64) as u32);
            (data.add(0x14) as *mut u16).write_unaligned(0x10);
            (data.add(0x18) as *mut u32).write_unaligned(pml4_low);
            (data.add(0x28) as *mut u64).write_unaligned(_start as *const () as u64);
        }
        Some(Trampoline { page })
    }

    /// Starts CPU `index` through the trampoline.
    fn start(&self, index: usize) {
        // SAFETY: the data block lies in the trampoline page; the CPU that
        // reads it does not run yet.
        unsafe { (self.page.add(0xf20) as *mut u64).write_volatile(index as u64) };
        apic::start_cpu(index as u32, (TRAMPOLINE_PAGE >> 12) as u8);
    }
}
