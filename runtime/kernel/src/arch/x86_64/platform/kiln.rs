//! The kiln platform: booted by kiln-vmm with a [`BootInfo`], console and
//! exit through the kiln I/O ports (`kiln_boot::port`).

use kiln_boot::{flags, layout, port, region, BootInfo, ExitReport, MemoryRegion, VirtioDevice};
use kiln_boot::{BOOT_INFO_MAGIC, BOOT_INFO_VERSION};

use crate::arch::x86_64::cpu;
use crate::arch::x86_64::paging::phys_to_virt;
use crate::boot::{ArgSource, BootParams, Region, MAX_REGIONS};
use crate::console::Stream;

/// Writes `bytes` to the VMM's stdout or stderr through the console buffer.
pub fn console_write(stream: Stream, bytes: &[u8]) {
    let port = match stream {
        Stream::Stdout => port::CONSOLE_STDOUT,
        Stream::Stderr => port::CONSOLE_STDERR,
    };
    let buffer = phys_to_virt(layout::CONSOLE_BUFFER);
    for chunk in bytes.chunks(layout::CONSOLE_BUFFER_SIZE as usize) {
        // SAFETY: the console buffer is RAM reserved for this purpose by the
        // boot contract (below 1 MiB, never handed to the allocator), mapped
        // by the direct map, and `chunk` fits in it.
        unsafe { core::ptr::copy_nonoverlapping(chunk.as_ptr(), buffer, chunk.len()) };
        cpu::outl(port, chunk.len() as u32);
    }
}

/// The boot flags, read once by [`adopt_boot_flags`].
static FLAGS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

fn boot_flags() -> u64 {
    FLAGS.load(core::sync::atomic::Ordering::Relaxed)
}

/// Reports a boot milestone to the VMM's boot timer (a resumed snapshot's
/// always; the others when kiln-vmm wants them).
pub fn milestone(m: kiln_boot::Milestone) {
    if m != kiln_boot::Milestone::Resumed && boot_flags() & flags::QUIET_MILESTONES != 0 {
        return;
    }
    cpu::outl(port::BOOT_TIMER, m as u32);
}

/// Tells the VMM how many of the program's pages a warm VM touched before
/// its claim.
pub fn prepared(pages: u32) {
    cpu::outl(port::PREPARED, pages);
}

/// Tells the VMM how the program ended; the VMM stops the VM.
pub fn exit(report: ExitReport) -> ! {
    cpu::outl(port::EXIT, report.encode());
    cpu::halt_forever()
}

/// Highest guest-physical address the boot page tables can map (64 GiB).
const MAX_PHYS: u64 = layout::BOOT_PDS_MAX << 30;

/// A `&'static [u8]` view of guest-physical `[addr, addr+len)`, checked
/// against the RAM size.
fn phys_slice(addr: u64, len: u64, memory: u64, what: &str) -> &'static [u8] {
    match addr.checked_add(len) {
        Some(end) if end <= memory => {}
        _ => panic!(
            "boot-info: {what} at {addr:#x}+{len:#x} lies outside guest memory ({memory:#x} bytes)"
        ),
    }
    // SAFETY: the range lies inside guest RAM (checked above), which the
    // direct map covers; boot data is never freed or written by the kernel.
    unsafe { core::slice::from_raw_parts(phys_to_virt(addr), len as usize) }
}

/// The boot flags, when the boot information at `info_phys` can be read
/// (else 0: [`boot_params`] refuses it later).
fn early_flags(info_phys: u64) -> u64 {
    if info_phys != layout::BOOT_INFO {
        return 0;
    }
    // SAFETY: as in `boot_params`.
    let info: BootInfo =
        unsafe { core::ptr::read_unaligned(phys_to_virt(info_phys) as *const BootInfo) };
    if info.magic != BOOT_INFO_MAGIC || info.version != BOOT_INFO_VERSION {
        return 0;
    }
    info.flags
}

/// First thing at boot: reads the boot flags of the boot information at
/// `info_phys` once, and adopts what they offer before the CPU is set up —
/// the CPUID table learnt on this host (flag `CPUID_TABLE`: the CPU layer
/// answers from it) and the CPU state kiln-vmm loaded (flag `CPU_PRESET`:
/// every CPU skips loading it). Which milestones to report follows from
/// them too.
pub fn adopt_boot_flags(info_phys: u64) {
    let flags = early_flags(info_phys);
    FLAGS.store(flags, core::sync::atomic::Ordering::Relaxed);
    if flags & flags::CPUID_TABLE != 0 {
        adopt_cpuid_table();
    }
    if flags & flags::CPU_PRESET != 0 {
        // SAFETY: the preset page is below 1 MiB, RAM the VMM provides and
        // the kernel never allocates; `read_unaligned` copes with any
        // content.
        let preset: kiln_boot::CpuPreset =
            unsafe { core::ptr::read_unaligned(phys_to_virt(layout::CPU_PRESET) as *const _) };
        if preset.magic == kiln_boot::CpuPreset::MAGIC {
            super::super::adopt_cpu_preset(&preset);
        }
    }
}

/// Makes the CPU layer answer CPUID from the table at `CPUID_TABLE`, when
/// it is a learnt one.
fn adopt_cpuid_table() {
    // SAFETY: the table's page is below 1 MiB, RAM the VMM provides and
    // the kernel never allocates; `read_unaligned` copes with any content.
    let head: kiln_boot::CpuidTable =
        unsafe { core::ptr::read_unaligned(phys_to_virt(layout::CPUID_TABLE) as *const _) };
    let count = u64::from(head.count);
    if head.source != kiln_boot::CpuidTable::LEARNT || count > layout::CPUID_TABLE_MAX {
        return; // the instruction answers instead
    }
    let entries = phys_to_virt(layout::CPUID_TABLE + 32) as *const kiln_boot::CpuidEntry;
    // SAFETY: `count` entries fit in the table's page (checked above),
    // which stays as the VMM wrote it.
    unsafe { super::super::cpu::use_cpuid_table(entries, count as usize) };
}

/// When kiln-vmm asks for it (flag `CPUID_LEARN`), fills the CPUID table's
/// page with what the instruction answers, now that this CPU's CR4 and
/// XCR0 are set, for kiln-vmm to keep; and answers from it from now on.
pub fn learn_cpuid_table() {
    if boot_flags() & flags::CPUID_LEARN == 0 {
        return;
    }
    let max = layout::CPUID_TABLE_MAX as usize;
    let entries = phys_to_virt(layout::CPUID_TABLE + 32) as *mut kiln_boot::CpuidEntry;
    // SAFETY: the table's page is boot data below 1 MiB, which the kernel
    // never allocates; it holds `max` entries after the head.
    let out = unsafe { core::slice::from_raw_parts_mut(entries, max) };
    let count = super::super::cpu::learn_cpuid_table(out);
    let head = kiln_boot::CpuidTable {
        count: count as u32,
        source: kiln_boot::CpuidTable::LEARNT,
        reserved: [0; 6],
    };
    // SAFETY: as above; the head comes first in the page.
    unsafe {
        core::ptr::write_unaligned(phys_to_virt(layout::CPUID_TABLE) as *mut _, head);
        super::super::cpu::use_cpuid_table(entries, count);
    }
}

/// Reads and validates the boot-info structure at `info_phys`.
pub fn boot_params(info_phys: u64) -> BootParams {
    if info_phys != layout::BOOT_INFO {
        panic!(
            "boot-info: expected at {:#x}, got {info_phys:#x}",
            layout::BOOT_INFO
        );
    }
    // SAFETY: BOOT_INFO is below 1 MiB, in RAM the VMM always provides and
    // maps; `read_unaligned` copes with any content.
    let info: BootInfo =
        unsafe { core::ptr::read_unaligned(phys_to_virt(info_phys) as *const BootInfo) };
    if info.magic != BOOT_INFO_MAGIC {
        panic!("boot-info: bad magic {:#018x}", info.magic);
    }
    if info.version != BOOT_INFO_VERSION {
        panic!(
            "boot-info: version {} is not supported (this kernel reads version {BOOT_INFO_VERSION})",
            info.version
        );
    }
    if info.size as usize != BootInfo::SIZE {
        panic!(
            "boot-info: size {} does not match this kernel's {}",
            info.size,
            BootInfo::SIZE
        );
    }
    if info.memory_map_count > layout::MEMORY_MAP_MAX {
        panic!(
            "boot-info: {} memory regions (at most {})",
            info.memory_map_count,
            layout::MEMORY_MAP_MAX
        );
    }
    let map_len = info.memory_map_count * core::mem::size_of::<MemoryRegion>() as u64;
    let map = phys_slice(
        info.memory_map_addr,
        map_len,
        info.memory_size,
        "memory map",
    );
    let region_at = |i: usize| -> MemoryRegion {
        // SAFETY: `map` holds `memory_map_count` entries (checked above).
        unsafe { core::ptr::read_unaligned((map.as_ptr() as *const MemoryRegion).add(i)) }
    };
    // Everything the boot data points at must lie in a mapped region: RAM,
    // or the module region above it.
    let mut memory = info.memory_size;
    for i in 0..info.memory_map_count as usize {
        let r = region_at(i);
        match r.addr.checked_add(r.len) {
            Some(end) if end <= MAX_PHYS => memory = memory.max(end),
            _ => panic!(
                "boot-info: memory region {:#x}+{:#x} is out of range",
                r.addr, r.len
            ),
        }
    }
    let mut p = BootParams::empty();
    p.memory_size = memory;
    p.cpus = info.vcpus.clamp(1, layout::MAX_VCPUS) as usize;
    p.flags = info.flags;
    p.tsc_khz = info.tsc_khz;
    p.boot_realtime_ns = info.boot_realtime_ns;
    p.boot_tsc = info.boot_tsc;
    p.seed = info.random_seed;
    p.cmdline = phys_slice(info.cmdline_addr, info.cmdline_len, memory, "command line");
    p.path = phys_slice(
        info.module_path_addr,
        info.module_path_len,
        memory,
        "program path",
    );
    phys_slice(info.module_addr, info.module_len, memory, "program");
    p.module = Region {
        start: info.module_addr,
        end: info.module_addr + info.module_len,
    };
    p.args = ArgSource::Blocks {
        argv: (
            phys_slice(info.argv_addr, info.argv_len, memory, "argv"),
            info.argc as usize,
        ),
        envp: (
            phys_slice(info.envp_addr, info.envp_len, memory, "envp"),
            info.envc as usize,
        ),
    };
    let reserved = [
        // The boot data: all below KERNEL_LOAD but the low RAM the
        // memory map offers.
        Region {
            start: 0,
            end: layout::LOW_RAM[0].0,
        },
        Region {
            start: layout::LOW_RAM[0].1,
            end: layout::LOW_RAM[1].0,
        },
        crate::mm::kernel_image(),
        p.module,
    ];
    for i in 0..info.memory_map_count as usize {
        let r = region_at(i);
        if r.kind == region::PAGE_TABLES && r.addr + r.len <= info.memory_size {
            // The boot tables start the page-table area: its usable part
            // is what the kernel's page tables take first.
            let large = crate::arch::LARGE_PAGE;
            let start = r.addr & !(large - 1);
            p.table_area = Region {
                start,
                end: start + large,
            };
        }
        if r.kind == region::USABLE
            && r.addr + r.len <= info.memory_size
            && p.usable_count < MAX_REGIONS
        {
            p.add_usable(r.addr, r.addr + r.len, &reserved);
        }
    }
    if info.flags & flags::PVM != 0 && info.vcpus == 0 {
        panic!("boot-info: PVM flavour with no vCPUs");
    }
    read_devices(&info, memory, &mut p);
    p
}

/// Copies the virtio device table, checking each window and vector.
fn read_devices(info: &BootInfo, memory: u64, p: &mut BootParams) {
    if info.devices_count > layout::DEVICES_MAX {
        panic!(
            "boot-info: {} virtio devices (at most {})",
            info.devices_count,
            layout::DEVICES_MAX
        );
    }
    let size = core::mem::size_of::<VirtioDevice>() as u64;
    let table = phys_slice(
        info.devices_addr,
        info.devices_count * size,
        memory,
        "device table",
    );
    for i in 0..info.devices_count as usize {
        // SAFETY: `table` holds `devices_count` entries (checked above).
        let d: VirtioDevice =
            unsafe { core::ptr::read_unaligned((table.as_ptr() as *const VirtioDevice).add(i)) };
        let window_ok = d.size == layout::VIRTIO_MMIO_SIZE
            && d.base >= layout::VIRTIO_MMIO_BASE
            && d.base.is_multiple_of(layout::VIRTIO_MMIO_SIZE)
            && d.base < layout::VIRTIO_MMIO_BASE + (1 << 30);
        let vector_ok =
            (0x30..0xf0).contains(&d.vector) && d.vector != u32::from(crate::arch::TIMER_VECTOR);
        if !window_ok || !vector_ok {
            panic!(
                "boot-info: virtio device {i} at {:#x}+{:#x} with vector {:#x} is out of range",
                d.base, d.size, d.vector
            );
        }
        if p.device_count < crate::boot::MAX_DEVICES {
            p.devices[p.device_count] = d;
            p.device_count += 1;
        }
    }
}
