//! A standard PC, as QEMU (PVH, `-M microvm` or `q35`) and UEFI machines
//! booted through GRUB present it: console on the first 16550 serial port,
//! time from the CMOS RTC and the TSC measured against the PIT, the exit
//! status through QEMU's `isa-debug-exit` device when there is one, else
//! printed on the console before an ACPI power-off (`acpi.rs`). The boot
//! protocols (`pvh.rs`, `multiboot2.rs`) read their tables with the helpers
//! here.

use kiln_boot::{port, ExitReport};

use super::acpi;
use crate::arch::x86_64::cpu::{self, inb, outb};
use crate::arch::x86_64::entry::BOOT_MAP_GIB;
use crate::arch::x86_64::paging::phys_to_virt;
use crate::boot::{BootParams, Region};
use crate::console::Stream;

/// The 32-bit entries' boot tables map this much physical memory (see
/// `entry.rs`); boot structures and usable RAM must lie below it.
pub const DIRECT_MAP_LIMIT: u64 = BOOT_MAP_GIB << 30;

/// The ACPI RSDP's address the boot protocol gave (0: none).
static RSDP: spin::Once<u64> = spin::Once::new();

/// Records where the ACPI RSDP is (for the power-off at exit).
pub fn set_rsdp(phys: u64) {
    RSDP.call_once(|| phys);
}

/// Writes to the serial port (both streams share it).
pub fn console_write(_stream: Stream, bytes: &[u8]) {
    for &b in bytes {
        // Wait (boundedly) for the transmitter holding register to empty.
        for _ in 0..100_000 {
            if inb(port::COM1 + 5) & 0x20 != 0 {
                break;
            }
        }
        outb(port::COM1, b);
    }
}

/// Ends the machine with the program's container-style status: through
/// QEMU's `isa-debug-exit` (QEMU then exits with `status * 2 + 1`); where
/// that device is missing the write changes nothing, so the status is
/// printed on the console and the machine powered off through ACPI.
pub fn exit(report: ExitReport) -> ! {
    let status = report.exit_status();
    outb(port::QEMU_DEBUG_EXIT, status);
    crate::kprintln!("kiln: the program ended with status {status}; powering off");
    if let Some(&rsdp) = RSDP.get() {
        if let Err(why) = acpi::power_off(rsdp) {
            crate::kprintln!("kiln: no ACPI power-off ({why}); halting");
        }
    }
    cpu::halt_forever()
}

/// A `T` read from boot memory at `phys`; panics naming `what` when it lies
/// beyond the boot map.
pub fn read_boot<T: Copy>(what: &str, phys: u64) -> T {
    if phys
        .checked_add(core::mem::size_of::<T>() as u64)
        .is_none_or(|e| e > DIRECT_MAP_LIMIT)
    {
        panic!("{what}: structure at {phys:#x} lies outside the boot map");
    }
    // SAFETY: the range lies below DIRECT_MAP_LIMIT, which the boot tables
    // map; `read_unaligned` copes with any content.
    unsafe { core::ptr::read_unaligned(phys_to_virt(phys) as *const T) }
}

/// `len` bytes of boot memory at `phys` (empty when they lie beyond the
/// boot map).
pub fn boot_bytes(phys: u64, len: u64) -> &'static [u8] {
    if phys.checked_add(len).is_none_or(|e| e > DIRECT_MAP_LIMIT) {
        return &[];
    }
    // SAFETY: `[phys, phys+len)` lies within the boot map, which stays
    // mapped (the direct map) for the kernel's lifetime.
    unsafe { core::slice::from_raw_parts(phys_to_virt(phys), len as usize) }
}

/// The NUL-terminated string at `phys` (at most 64 KiB; empty for 0).
pub fn c_string(phys: u64) -> &'static [u8] {
    if phys == 0 || phys >= DIRECT_MAP_LIMIT {
        return &[];
    }
    let bytes = boot_bytes(phys, (DIRECT_MAP_LIMIT - phys).min(64 * 1024));
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..len]
}

/// The boot module `[paddr, paddr+size)`, checked to lie in the boot map.
pub fn boot_module(what: &str, paddr: u64, size: u64) -> Region {
    if paddr.checked_add(size).is_none_or(|e| e > DIRECT_MAP_LIMIT) {
        panic!("{what}: the boot module lies outside the first {BOOT_MAP_GIB} GiB");
    }
    Region {
        start: paddr,
        end: paddr + size,
    }
}

/// What the allocator must not hand out: low memory (firmware, the SMP
/// trampoline), the kernel, the boot module and the protocol's own table.
pub fn reserved_regions(module: Region, table: Region) -> [Region; 4] {
    [
        Region {
            start: 0,
            end: kiln_boot::layout::KERNEL_LOAD,
        },
        crate::mm::kernel_image(),
        module,
        table,
    ]
}

/// Adds one memory-map entry (`kind` 1 = usable, as in E820) to `p`.
pub fn add_memory(p: &mut BootParams, addr: u64, size: u64, kind: u32, reserved: &[Region]) {
    let end = addr.saturating_add(size);
    if kind == 1 {
        p.memory_size = p.memory_size.max(end.min(DIRECT_MAP_LIMIT));
        if addr < DIRECT_MAP_LIMIT {
            p.add_usable(addr, end.min(DIRECT_MAP_LIMIT), reserved);
        }
    }
}

/// Sets up the machine the same way for every protocol: legacy interrupts
/// masked, the serial port initialised, the TSC measured, the time read.
pub fn init_machine(p: &mut BootParams) {
    mask_legacy_pic();
    init_serial();
    p.tsc_khz = calibrate_tsc_khz();
    p.boot_tsc = cpu::rdtsc();
    p.boot_realtime_ns = rtc_unix_seconds() * 1_000_000_000;
}

/// 115200 baud, 8 data bits, no parity, one stop bit, FIFOs on, no
/// interrupts: what firmware usually leaves, set again for machines whose
/// firmware left the port alone.
fn init_serial() {
    outb(port::COM1 + 1, 0x00); // no interrupts
    outb(port::COM1 + 3, 0x80); // DLAB: divisor follows
    outb(port::COM1, 0x01); // divisor 1 = 115200 baud
    outb(port::COM1 + 1, 0x00);
    outb(port::COM1 + 3, 0x03); // 8N1, DLAB off
    outb(port::COM1 + 2, 0x07); // FIFOs on and cleared
    outb(port::COM1 + 4, 0x0b); // DTR, RTS, and OUT2: a PC's UART interrupt gate
}

/// Line status: a received byte is waiting.
const DATA_READY: u8 = 0x01;
/// Interrupt enable: received data available.
const RX_INTERRUPT: u8 = 0x01;
/// The first serial port's interrupt line (ISA IRQ 4).
pub const SERIAL_IRQ: u32 = 4;

/// Reads the bytes the serial port holds into `buf`; 0 when none waits.
pub fn serial_read(buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() && inb(port::COM1 + 5) & DATA_READY != 0 {
        buf[n] = inb(port::COM1);
        n += 1;
    }
    n
}

/// Whether a received byte waits.
pub fn serial_has_input() -> bool {
    inb(port::COM1 + 5) & DATA_READY != 0
}

/// Turns the receive interrupt on (a reader waits) or off (the interrupt
/// came: the line drops until a reader waits again, so unread input does
/// not raise it over and over).
pub fn serial_rx_interrupt(on: bool) {
    outb(port::COM1 + 1, if on { RX_INTERRUPT } else { 0 });
}

/// Masks both 8259 PICs so no legacy interrupt (the PIT's IRQ 0 would
/// arrive as vector 8, a double fault) reaches the CPU.
fn mask_legacy_pic() {
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
}

/// Measures the TSC against 10 ms of PIT channel 0, read back through
/// its latch. (Channel 2 would need the speaker port 0x61 for its gate and
/// output, and QEMU's microvm has no speaker.) Channel 0's IRQ is masked
/// at the PIC, so counting down raises nothing.
fn calibrate_tsc_khz() -> u64 {
    const PIT_HZ: u64 = 1_193_182;
    const MS: u64 = 10;
    let wanted = PIT_HZ * MS / 1000;
    let read_count = || {
        outb(0x43, 0x00); // latch channel 0
        let lo = inb(0x40);
        let hi = inb(0x40);
        u64::from(u16::from_le_bytes([lo, hi]))
    };
    outb(0x43, 0x30); // channel 0, lo/hi byte, mode 0 (count down once)
    outb(0x40, 0xff);
    outb(0x40, 0xff);
    let first = read_count();
    let start = cpu::rdtsc();
    let mut spins = 0u64;
    loop {
        let now = read_count();
        if now <= first && first - now >= wanted {
            break;
        }
        spins += 1;
        if spins > 10_000_000 || now > first {
            // No PIT (or it wrapped): assume 1 GHz rather than hang.
            return 1_000_000;
        }
    }
    (cpu::rdtsc() - start) / MS
}

fn cmos(reg: u8) -> u8 {
    outb(0x70, reg);
    inb(0x71)
}

/// Seconds since the epoch from the CMOS real-time clock (UTC).
fn rtc_unix_seconds() -> u64 {
    while cmos(0x0a) & 0x80 != 0 {} // update in progress
    let status_b = cmos(0x0b);
    let bcd = status_b & 0x04 == 0;
    let conv = |v: u8| {
        if bcd {
            u64::from((v & 0x0f) + (v >> 4) * 10)
        } else {
            u64::from(v)
        }
    };
    let sec = conv(cmos(0x00));
    let min = conv(cmos(0x02));
    let hour_raw = cmos(0x04);
    let mut hour = conv(hour_raw & 0x7f);
    if status_b & 0x02 == 0 && hour_raw & 0x80 != 0 {
        hour = (hour % 12) + 12; // 12-hour mode, PM
    }
    let day = conv(cmos(0x07));
    let month = conv(cmos(0x08));
    let year = 2000 + conv(cmos(0x09));
    crate::time::days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec
}
