//! The kiln guest kernel binary: a freestanding ELF (see `linker.ld`)
//! that boots on kiln-vmm, through its PVH note on QEMU or through multiboot2 (GRUB), and runs one
//! unmodified Linux x86-64 program. Build it with `cargo xtask kernel`.
//!
//! The kernel is laid out by subsystem; each folder here is the part of a
//! subsystem that needs the CPU, memory or the kernel's state, and its pure,
//! host-tested part lives in the `kiln_kernel` library under the same name
//! (`../lib/`). `arch/` isolates the CPU: nothing outside it names x86.
//!
//! This file is the boot sequence (`kernel_start`, called by the entry code
//! in `arch::x86_64::entry` on the boot stack), the routing of exceptions
//! and interrupts, and the end of the program.
#![no_std]
#![no_main]

extern crate alloc;

mod arch;
mod boot;
mod console;
mod drivers;
mod exec;
mod fd;
mod fs;
mod mm;
mod net;
mod process;
mod random;
mod sched;
mod signal;
mod snapshot;
mod state;
mod syscall;
mod time;

use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

use kiln_boot::{flags, split_block, ExitReport, Milestone};
use kiln_kernel::boot::cmdline;

use crate::arch::platform::{self, Platform};
use crate::arch::{Flavour, Frame};
use crate::boot::{ArgSource, BootParams};
use crate::exec::{Args, ExecError};
use crate::signal::sig;
use crate::state::KERNEL;

/// Default program path when the boot protocol names none.
const DEFAULT_PATH: &[u8] = b"/app";

/// First Rust code of the kernel. `platform` is `PLATFORM_KILN` or
/// `PLATFORM_PVH` or `PLATFORM_MULTIBOOT2`, `info` the physical address of the boot protocol's
/// structure, `pv_page` the PVM registration page (0 when not on PVM).
#[no_mangle]
extern "C" fn kernel_start(platform: u64, info: u64, pv_page: u64) -> ! {
    platform::set(match platform {
        arch::PLATFORM_PVH => Platform::Pvh,
        arch::PLATFORM_MULTIBOOT2 => Platform::Multiboot2,
        _ => Platform::Kiln,
    });
    platform::adopt_boot_flags(info);
    platform::milestone(Milestone::KernelEntry);
    let flavour = if pv_page != 0 {
        Flavour::Pvm { page: pv_page }
    } else {
        Flavour::Native
    };
    arch::init(flavour);
    platform::learn_cpuid_table();
    let params = platform::boot_params(info);
    if params.has(flags::PVM) != matches!(flavour, Flavour::Pvm { .. }) {
        panic!(
            "boot-info PVM flag disagrees with the registration page ({})",
            flavour.name()
        );
    }
    mm::init(&params);
    time::init(&params);
    let parsed = cmdline::parse(core::str::from_utf8(params.cmdline).unwrap_or(""));
    // kiln-vmm says how many vCPUs there are; under QEMU the command line
    // does (kiln.cpus=N, with -smp N).
    let cpus = match platform::current() {
        Platform::Pvh | Platform::Multiboot2 => parsed.cpus.unwrap_or(1),
        Platform::Kiln => params.cpus,
    };
    arch::set_cpu_count(cpus);
    drivers::virtio::init(&params, &parsed.virtio_mmio);
    drivers::serial::init(parsed.serial_stdin);
    random::init(&params.seed);
    snapshot::init();
    let (path, args, trace) = program_args(&params, parsed);
    {
        // SAFETY: the active PML4 is the boot one; the kernel alone edits its
        // lower half at this point.
        let mut tables = unsafe { arch::PageTables::from_pml4(arch::active_page_table()) };
        arch::drop_identity_map(&mut tables);
    }
    let shown = core::str::from_utf8(&path).unwrap_or("(program)");
    let program = match fs::init(params.module, shown) {
        Ok(region) => region,
        Err(fs::ProgramError::NotFound) => {
            kprintln!("kiln: {shown}: program not found");
            platform::exit(ExitReport::NotFound)
        }
        Err(fs::ProgramError::NotExecutable(why)) => {
            kprintln!("kiln: cannot execute {shown}: {why}");
            platform::exit(ExitReport::CannotExecute)
        }
        Err(fs::ProgramError::Lookup(e)) => {
            kprintln!(
                "kiln: cannot execute {shown}: {} ({})",
                e.description(),
                e.name()
            );
            platform::exit(ExitReport::CannotExecute)
        }
    };
    fs::volume::mount_all(VOLUMES.get().map_or(&[], Vec::as_slice));
    net::init(NET_CONFIG.get().cloned().unwrap_or_default());
    match exec::exec(program, &path, &args, trace) {
        Ok((mut process, entry, sp, own_entry)) => {
            snapshot::arm_after_loader(&mut process, own_entry);
            *KERNEL.process.lock() = Some(process);
            let kstack = sched::init_main_thread();
            sched::start_cpus(cpus);
            platform::milestone(Milestone::ProgramEntry);
            snapshot::at_program_entry();
            sched::leave_kernel();
            arch::enter_program(entry, sp, kstack)
        }
        Err(ExecError::NotFound) => {
            kprintln!("kiln: {shown}: program not found");
            platform::exit(ExitReport::NotFound)
        }
        Err(ExecError::Elf(e)) => {
            kprintln!("kiln: cannot execute {shown}: {e}");
            platform::exit(ExitReport::CannotExecute)
        }
        Err(ExecError::Layout) => {
            kprintln!(
                "kiln: cannot execute {shown}: its segments overlap or its arguments are too large"
            );
            platform::exit(ExitReport::CannotExecute)
        }
        Err(ExecError::Interpreter(interp)) => {
            kprintln!("kiln: cannot execute {shown}: its interpreter {interp} is missing from the image or unusable");
            platform::exit(ExitReport::CannotExecute)
        }
        Err(ExecError::OutOfMemory) => {
            kprintln!("kiln: cannot execute {shown}: out of guest memory while loading it");
            platform::exit(ExitReport::CannotExecute)
        }
    }
}

/// The volumes of the command line (for `fs::volume::mount_all`).
static VOLUMES: spin::Once<Vec<kiln_kernel::boot::cmdline::Volume>> = spin::Once::new();

/// The network configuration of the command line (for `net::init`).
static NET_CONFIG: spin::Once<kiln_kernel::net::config::NetConfig> = spin::Once::new();

/// The program's path, argv/envp and whether to trace its syscalls.
fn program_args(params: &BootParams, parsed: cmdline::KernelArgs) -> (Vec<u8>, Args, bool) {
    for unknown in &parsed.unknown {
        if unknown.starts_with("kiln.") {
            kprintln!("kiln: ignoring unknown kernel option {unknown}");
        }
    }
    for bad in &parsed.bad {
        kprintln!("kiln: ignoring kernel option with a bad value: {bad}");
    }
    NET_CONFIG.call_once(|| parsed.net.clone());
    VOLUMES.call_once(|| parsed.volumes.clone());
    let trace = parsed.trace_syscalls || params.has(flags::TRACE_SYSCALLS);
    state::BOOT.options.call_once(|| state::Options {
        syscall_rewrite: !parsed.no_syscall_rewrite,
        vdso: !parsed.no_vdso,
        init_reaps: parsed.init,
        snapshot_at: parsed.snapshot_at,
    });
    let path: Vec<u8> = match (params.path.is_empty(), &parsed.path) {
        (false, _) => params.path.to_vec(),
        (true, Some(p)) => p.as_bytes().to_vec(),
        (true, None) => DEFAULT_PATH.to_vec(),
    };
    let args = match params.args {
        ArgSource::Blocks { argv, envp } => Args {
            argv: split_block(argv.0)
                .take(argv.1)
                .map(<[u8]>::to_vec)
                .collect(),
            envp: split_block(envp.0)
                .take(envp.1)
                .map(<[u8]>::to_vec)
                .collect(),
        },
        ArgSource::CommandLine => {
            let mut argv = alloc::vec![path.clone()];
            argv.extend(parsed.args.iter().map(|a| a.as_bytes().to_vec()));
            // The default PATH unless the command line sets one (an
            // exported disk passes the image's whole environment).
            let mut envp: Vec<Vec<u8>> = Vec::new();
            if !parsed.env.iter().any(|e| e.starts_with("PATH=")) {
                envp.push(kiln_boot::DEFAULT_PATH_ENV.as_bytes().to_vec());
            }
            envp.extend(parsed.env.iter().map(|e| e.as_bytes().to_vec()));
            Args { argv, envp }
        }
    };
    (path, args, trace)
}

/// Writes shared mappings of volume files back before the program ends
/// (as Linux's page cache would keep them).
fn write_back_mappings() {
    if let Some(mut guard) = KERNEL.process.try_lock() {
        if let Some(p) = guard.as_mut() {
            let _ = p.write_back(0, u64::MAX, true);
        }
    }
}

/// Ends the program normally with `status` (exit/exit_group).
pub fn exit_program(status: u8) -> ! {
    if process::current_pid() != 1 {
        process::exit_current(process::WaitStatus::Exited(status));
    }
    write_back_mappings();
    let tracing = KERNEL
        .process
        .try_lock()
        .is_some_and(|p| p.as_ref().is_some_and(|p| p.trace));
    if tracing {
        kprintln!(
            "kiln: {} system-call sites were rewritten into calls",
            syscall::rewrite::rewritten()
        );
    }
    platform::exit(ExitReport::Exited(status))
}

/// Every thread waits and nothing can wake any of them: say so and end the
/// program (rather than leave the VM hanging).
pub fn deadlock() -> ! {
    kprintln!(
        "kiln: every thread of the program waits and nothing can wake it (deadlock); stopping it"
    );
    platform::exit(ExitReport::Signaled(sig::SIGKILL))
}

/// Ends the program as killed by `signal`, with a one-line report on
/// stderr when `detail` says why.
pub fn kill_program(signal: u8, detail: Option<fmt::Arguments<'_>>) -> ! {
    let pid = process::current_pid();
    if pid != 1 {
        if let Some(d) = detail {
            let (name, what) = signal::describe(signal);
            kprintln!("kiln: process {pid} killed by {name} ({what}): {d}");
        }
        process::exit_current(process::WaitStatus::Signaled(signal));
    }
    write_back_mappings();
    let (name, what) = signal::describe(signal);
    match detail {
        Some(d) => kprintln!("kiln: program killed by {name} ({what}): {d}"),
        None => kprintln!("kiln: program killed by {name} ({what})"),
    }
    platform::exit(ExitReport::Signaled(signal))
}

const PF_PRESENT: u64 = 1;
const PF_WRITE: u64 = 2;
const PF_FETCH: u64 = 0x10;

/// The signal (and `si_code`) an exception vector raises in the program
/// (Linux's mapping).
fn exception_signal(vector: u64) -> (u8, i32, &'static str) {
    use kiln_kernel::signal::code;
    match vector {
        0 => (sig::SIGFPE, code::FPE_INTDIV, "divide error"),
        1 | 3 => (sig::SIGTRAP, code::TRAP_BRKPT, "breakpoint"),
        4 => (sig::SIGSEGV, code::SI_KERNEL, "overflow"),
        5 => (sig::SIGSEGV, code::SI_KERNEL, "bound range exceeded"),
        6 => (sig::SIGILL, code::ILL_ILLOPN, "invalid opcode"),
        7 => (sig::SIGSEGV, code::SI_KERNEL, "device not available"),
        12 => (sig::SIGBUS, code::SI_KERNEL, "stack segment fault"),
        13 => (sig::SIGSEGV, code::SI_KERNEL, "general protection fault"),
        16 | 19 => (sig::SIGFPE, code::FPE_FLTINV, "floating-point exception"),
        17 => (sig::SIGBUS, code::BUS_ADRALN, "alignment check"),
        _ => (sig::SIGSEGV, code::SI_KERNEL, "unexpected exception"),
    }
}

/// Called by the trap stubs for every exception and interrupt. An event
/// that interrupted the program is handled under the kernel lock; one that
/// interrupted kernel code only notes what happened (see `sched`). Returns
/// non-zero when the way back to the program may skip IRETQ (see
/// `arch::program_return_slot`).
#[no_mangle]
extern "C" fn trap_dispatch(frame: &mut Frame) -> u64 {
    let from_program = frame.rip < kiln_boot::vm::PHYS_MAP;
    let snapshot_vmm = frame.vector == u64::from(kiln_boot::snapshot::VECTOR);
    if snapshot_vmm || frame.vector == u64::from(arch::SNAPSHOT_JOIN_VECTOR) {
        // Parks this CPU for a snapshot: needs no lock (another CPU may
        // hold the kernel's while it parks).
        snapshot::interrupt(snapshot_vmm);
        if !from_program {
            arch::idle_fixup(frame);
        }
        return 0;
    }
    if frame.vector == u64::from(arch::FLUSH_VECTOR) {
        // Another CPU changed page tables this one uses: needs no lock.
        arch::serve_flush_requests();
        arch::interrupt_done();
        if !from_program {
            arch::idle_fixup(frame);
        }
        return 0;
    }
    if !from_program {
        handle_trap(frame, false);
        return 0;
    }
    sched::enter_kernel();
    handle_trap(frame, true);
    let fast = process::returns_without_iret(frame);
    sched::leave_kernel();
    u64::from(fast)
}

/// Handles an exception or interrupt.
fn handle_trap(frame: &mut Frame, from_program: bool) {
    if frame.vector == 14 {
        page_fault(frame, from_program);
    } else if frame.vector == 3 && from_program && snapshot::at_entry_breakpoint(&mut frame.rip) {
        // The after-loader snapshot's breakpoint: taken, the program goes
        // on at its entry.
    } else if frame.vector < 32 {
        if !from_program || matches!(frame.vector, 2 | 8 | 18) {
            panic!(
                "exception {} in the kernel at ip {:#x}, error {:#x}, rsp {:#x}",
                frame.vector, frame.rip, frame.error, frame.rsp
            );
        }
        let (signo, si_code, what) = exception_signal(frame.vector);
        let ip = frame.rip;
        // si_addr: the faulting instruction (0 for a protection fault).
        let addr = if frame.vector == 13 { 0 } else { ip };
        signal::fault(
            frame,
            signo,
            si_code,
            addr,
            format_args!("{what} at ip {ip:#x}"),
        );
    } else if drivers::interrupt(frame.vector) {
        arch::interrupt_done();
        if from_program {
            drivers::service();
        } else {
            arch::idle_fixup(frame);
        }
    } else if frame.vector == u64::from(arch::TIMER_VECTOR) {
        arch::interrupt_done();
        if !from_program {
            arch::idle_fixup(frame);
        }
        sched::timer_interrupt(from_program);
    } else if frame.vector == u64::from(arch::RESCHEDULE_VECTOR) {
        // Another CPU queued a thread for this one (idle), or has a signal
        // or an end for the thread it runs, which the way back to the
        // program acts on.
        arch::interrupt_done();
        if !from_program {
            arch::idle_fixup(frame);
        }
    } else if frame.vector != 0xff {
        // Nothing else is wired up; acknowledge stray interrupts.
        arch::interrupt_done();
    }
    if from_program {
        signal::deliver(frame, None);
    }
}

/// A page fault: demand paging, or SIGSEGV (SIGKILL when guest memory ran
/// out).
fn page_fault(frame: &mut Frame, from_program: bool) {
    use kiln_kernel::signal::code;
    let addr = arch::flavour().fault_address();
    let write = frame.error & PF_WRITE != 0;
    let fetch = frame.error & PF_FETCH != 0;
    if !from_program {
        // Kernel code touching the program's memory without preparing it
        // first (the system-call return writes below the program's stack
        // pointer): demand paging as for the program, when the process is
        // not locked by the interrupted code. After the kernel lock was
        // given back (on the way out, while another CPU forked the
        // process, say), it is taken again for this.
        if addr < kiln_kernel::exec::elf::USER_END && !fetch {
            let relock = !sched::holds_kernel_lock();
            if relock {
                sched::enter_kernel();
            }
            let handled = KERNEL
                .process
                .try_lock()
                .and_then(|mut g| g.as_mut().map(|p| p.mem.handle_fault(addr, write, false)));
            if relock && matches!(handled, Some(Ok(())) | None) {
                sched::leave_kernel();
            }
            match handled {
                Some(Ok(())) => return,
                Some(Err(_)) => kill_program(
                    sig::SIGSEGV,
                    Some(format_args!(
                        "the kernel found no valid program memory at {addr:#x} (stack pointer {:#x})",
                        frame.rsp
                    )),
                ),
                None => {}
            }
        }
        panic!(
            "page fault in the kernel at address {addr:#x}, ip {:#x}, error {:#x}",
            frame.rip, frame.error
        );
    }
    let result = match KERNEL.process.lock().as_mut() {
        Some(p) => p.mem.handle_fault(addr, write, fetch),
        None => Err(mm::fault::FaultError::Unmapped),
    };
    match result {
        Ok(()) => {}
        Err(mm::fault::FaultError::OutOfMemory) => kill_program(
            sig::SIGKILL,
            Some(format_args!(
                "out of guest memory at address {addr:#x}, ip {:#x}",
                frame.rip
            )),
        ),
        Err(_) => {
            let access = if fetch {
                "execute"
            } else if write {
                "write"
            } else {
                "read"
            };
            // SEGV_ACCERR when an area is there but forbids the access
            // (even if its page was never touched), SEGV_MAPERR otherwise.
            let in_area = KERNEL
                .process
                .lock()
                .as_ref()
                .is_some_and(|p| p.mem.vmas.find(addr).is_some());
            let present = frame.error & PF_PRESENT != 0 || in_area;
            let (why, si_code) = if present {
                ("protection", code::SEGV_ACCERR)
            } else {
                ("unmapped", code::SEGV_MAPERR)
            };
            let ip = frame.rip;
            signal::fault(
                frame,
                sig::SIGSEGV,
                si_code,
                addr,
                format_args!("invalid {access} at address {addr:#x} ({why}), ip {ip:#x}"),
            );
        }
    }
}

/// Set by the first panic, so a panic while panicking ends at once.
static PANICKING: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    if PANICKING.swap(true, Ordering::SeqCst) {
        platform::exit(ExitReport::KernelPanic);
    }
    match info.location() {
        Some(l) => kprintln!(
            "kiln kernel panic: {} ({}:{})",
            info.message(),
            l.file(),
            l.line()
        ),
        None => kprintln!("kiln kernel panic: {}", info.message()),
    }
    platform::exit(ExitReport::KernelPanic)
}
