//! The PVH platform (QEMU `-kernel kiln-kernel.elf`, Xen's
//! `arch/x86/include/xen/interface/hvm/start_info.h`): console on the first
//! serial port, exit through QEMU's `isa-debug-exit` device, the program as
//! the first module (`-initrd`), arguments on the command line (`-append`),
//! wall-clock time from the CMOS RTC and the TSC rate from the PIT.

use kiln_boot::{port, ExitReport};

use crate::arch::x86_64::cpu::{self, inb, outb};
use crate::arch::x86_64::paging::phys_to_virt;
use crate::boot::{ArgSource, BootParams, Region};
use crate::console::Stream;

const START_INFO_MAGIC: u32 = 0x336e_c578;
/// The PVH boot tables map the first GiB only (see `entry.rs`).
const DIRECT_MAP_LIMIT: u64 = 1 << 30;

#[repr(C)]
#[derive(Clone, Copy)]
struct StartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Module {
    paddr: u64,
    size: u64,
    cmdline_paddr: u64,
    reserved: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct MemmapEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

/// Writes to the serial port (both streams share it under QEMU).
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

/// Ends QEMU through `isa-debug-exit` with the container-style status.
pub fn exit(report: ExitReport) -> ! {
    outb(port::QEMU_DEBUG_EXIT, report.exit_status());
    cpu::halt_forever()
}

fn read<T: Copy>(phys: u64) -> T {
    if phys
        .checked_add(core::mem::size_of::<T>() as u64)
        .is_none_or(|e| e > DIRECT_MAP_LIMIT)
    {
        panic!("PVH start info: structure at {phys:#x} lies outside the first GiB");
    }
    // SAFETY: the address lies in the first GiB, which the boot tables map;
    // `read_unaligned` copes with any content.
    unsafe { core::ptr::read_unaligned(phys_to_virt(phys) as *const T) }
}

fn c_string(phys: u64) -> &'static [u8] {
    if phys == 0 || phys >= DIRECT_MAP_LIMIT {
        return &[];
    }
    let max = (DIRECT_MAP_LIMIT - phys).min(64 * 1024) as usize;
    // SAFETY: `[phys, phys+max)` lies within the mapped first GiB.
    let bytes = unsafe { core::slice::from_raw_parts(phys_to_virt(phys), max) };
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(max);
    &bytes[..len]
}

/// Reads the PVH start info at `info_phys`.
pub fn boot_params(info_phys: u64) -> BootParams {
    mask_legacy_pic();
    let info: StartInfo = read(info_phys);
    if info.magic != START_INFO_MAGIC {
        panic!("PVH start info: bad magic {:#x}", info.magic);
    }
    let mut p = BootParams::empty();
    p.cmdline = c_string(info.cmdline_paddr);
    p.args = ArgSource::CommandLine;
    if info.nr_modules > 0 {
        let m: Module = read(info.modlist_paddr);
        if m.paddr
            .checked_add(m.size)
            .is_none_or(|e| e > DIRECT_MAP_LIMIT)
        {
            panic!("PVH start info: the program (initrd) lies outside the first GiB");
        }
        p.module = Region {
            start: m.paddr,
            end: m.paddr + m.size,
        };
        p.path = c_string(m.cmdline_paddr);
    }
    if info.version < 1 || info.memmap_entries == 0 {
        panic!("PVH start info: no memory map (version {})", info.version);
    }
    let reserved = [
        Region {
            start: 0,
            end: kiln_boot::layout::KERNEL_LOAD,
        },
        crate::mm::kernel_image(),
        p.module,
        Region {
            start: info_phys & !0xfff,
            end: (info_phys & !0xfff) + 0x1000,
        },
    ];
    for i in 0..info.memmap_entries as u64 {
        let e: MemmapEntry =
            read(info.memmap_paddr + i * core::mem::size_of::<MemmapEntry>() as u64);
        let end = e.addr.saturating_add(e.size);
        p.memory_size = p.memory_size.max(end);
        if e.kind == 1 && e.addr < DIRECT_MAP_LIMIT {
            p.add_usable(e.addr, end.min(DIRECT_MAP_LIMIT), &reserved);
        }
    }
    p.tsc_khz = calibrate_tsc_khz();
    p.boot_tsc = cpu::rdtsc();
    p.boot_realtime_ns = rtc_unix_seconds() * 1_000_000_000;
    p
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
