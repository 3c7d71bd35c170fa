//! Writing the boot contract's data into guest RAM: the string area
//! (command line, path, argv and envp), the memory map, and finally the
//! [`BootInfo`] structure. The program itself is not copied: it is mapped
//! above RAM as the boot module (see `vstate::memory`).

use crate::arch::BootTables;
use crate::GuestMem;
use kiln_boot::layout::{LOW_RAM, PAGE_TABLE_AREA_MIN_RAM};
use kiln_boot::{
    flags, region, BootInfo, CpuidEntry, MemoryRegion, VirtioDevice, BOOT_INFO_MAGIC,
    BOOT_INFO_VERSION,
};
use vm_memory::{ByteValued, Bytes, GuestAddress};

use crate::arch::layout::{
    BOOT_INFO, CONSOLE_BUFFER, CONSOLE_BUFFER_SIZE, DEVICES, DEVICES_MAX, KERNEL_LOAD, MEMORY_MAP,
    STRINGS, STRINGS_SIZE,
};
/// Why the boot data could not be written.
#[derive(Debug, thiserror::Error)]
pub enum BootInfoError {
    /// RAM leaves the kernel no room to work.
    #[error("guest memory of {} KiB is too small: the kernel needs at least {} KiB (raise --memory)", .memory / 1024, .needed.div_ceil(1024))]
    MemoryTooSmall {
        /// RAM size.
        memory: u64,
        /// What would be needed.
        needed: u64,
    },
    /// argv/envp do not fit in the boot string area.
    #[error(
        "arguments and environment take {size} bytes, more than the {max} the boot area holds"
    )]
    ArgumentsTooLong {
        /// Bytes needed.
        size: u64,
        /// Bytes available.
        max: u64,
    },
    /// More devices than the table holds.
    #[error("{0} virtio devices, more than the boot device table holds")]
    TooManyDevices(usize),
    /// Writing to guest memory failed.
    #[error("cannot write the boot data to guest memory: {0}")]
    Write(#[source] vm_memory::GuestMemoryError),
}

/// Guest RAM the kernel needs beyond its image (heap, stacks, page tables
/// and the program's writable pages start here).
pub const MIN_FREE_RAM: u64 = 1 << 20;

/// [`BootInfo`] as vm-memory plain data.
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct BootInfoBytes(BootInfo);
// SAFETY: BootInfo is repr(C) and made only of u32/u64 fields and a byte
// array laid out without padding (kiln-boot's layout test pins its size),
// so every bit pattern is a valid value.
unsafe impl ByteValued for BootInfoBytes {}

/// [`MemoryRegion`] as vm-memory plain data.
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct RegionBytes(MemoryRegion);
// SAFETY: MemoryRegion is repr(C): two u64 and two u32, no padding.
unsafe impl ByteValued for RegionBytes {}

/// [`VirtioDevice`] as vm-memory plain data.
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct DeviceBytes(VirtioDevice);
// SAFETY: VirtioDevice is repr(C): three u64 and four u32, no padding.
unsafe impl ByteValued for DeviceBytes {}

/// What goes into the boot data.
pub struct BootSpec<'a> {
    /// Guest RAM size.
    pub memory_size: u64,
    /// Guest-physical address of the boot module (above RAM).
    pub module_addr: u64,
    /// Length of the boot module.
    pub module_len: u64,
    /// End of the kernel image (physical).
    pub kernel_end: u64,
    /// Where the boot page tables are (at the top of RAM).
    pub page_tables: BootTables,
    /// `kiln_boot::flags` bits.
    pub flags: u64,
    /// Kernel command line (options only).
    pub cmdline: &'a [u8],
    /// The program's path in the guest.
    pub path: &'a [u8],
    /// argv (`argv[0]` first).
    pub argv: &'a [Vec<u8>],
    /// envp.
    pub envp: &'a [Vec<u8>],
    /// TSC frequency in kHz.
    pub tsc_khz: u64,
    /// Host entropy for the guest.
    pub seed: [u8; 32],
    /// Layout version to write (normally `BOOT_INFO_VERSION`; tests change
    /// it to exercise the kernel's rejection).
    pub version: u32,
    /// The virtio devices.
    pub devices: &'a [VirtioDevice],
    /// Number of vCPUs.
    pub vcpus: u8,
    /// The CPUID table learnt on this host (`learnt_cpuid`); `None`: the
    /// kernel is to learn it (boot flag `CPUID_LEARN`).
    pub cpuid: Option<&'a [CpuidEntry]>,
}

fn block(strings: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in strings {
        out.extend_from_slice(s);
        out.push(0);
    }
    out
}

/// Writes the module, strings and memory map; returns the boot-info
/// structure, complete except for the boot timestamp ([`finish`]).
///
/// # Errors
/// When RAM is too small, the strings do not fit, or a write fails.
pub fn write_boot_data(mem: &GuestMem, spec: &BootSpec<'_>) -> Result<BootInfo, BootInfoError> {
    let guest_err = BootInfoError::Write;
    let kernel_end = (spec.kernel_end + 0xfff) & !0xfff;
    let tables = spec.page_tables;
    let needed = kernel_end + MIN_FREE_RAM + tables.len;
    if spec.memory_size < needed || tables.pml4 + tables.len > spec.memory_size {
        return Err(BootInfoError::MemoryTooSmall {
            memory: spec.memory_size,
            needed,
        });
    }

    let mut strings = Vec::new();
    let mut place = |bytes: &[u8]| {
        let at = STRINGS.0 + strings.len() as u64;
        strings.extend_from_slice(bytes);
        (at, bytes.len() as u64)
    };
    let (cmdline_addr, cmdline_len) = place(spec.cmdline);
    let (path_addr, path_len) = place(spec.path);
    let (argv_addr, argv_len) = place(&block(spec.argv));
    let (envp_addr, envp_len) = place(&block(spec.envp));
    if strings.len() as u64 > STRINGS_SIZE {
        return Err(BootInfoError::ArgumentsTooLong {
            size: strings.len() as u64,
            max: STRINGS_SIZE,
        });
    }
    mem.write_slice(&strings, STRINGS).map_err(guest_err)?;

    // A big enough VM's boot tables start the kernel's page-table area.
    let tables_kind = if spec.memory_size >= PAGE_TABLE_AREA_MIN_RAM {
        region::PAGE_TABLES
    } else {
        region::RESERVED
    };
    // Below the kernel, the boot data and around it low memory the
    // kernel may use (kernels older than that entry reserve all of it).
    let [(low_a, low_a_end), (low_b, low_b_end)] = LOW_RAM;
    let regions = [
        (0, low_a, region::RESERVED),
        (low_a, low_a_end - low_a, region::USABLE),
        (low_a_end, low_b - low_a_end, region::RESERVED),
        (low_b, low_b_end - low_b, region::USABLE),
        (KERNEL_LOAD.0, kernel_end - KERNEL_LOAD.0, region::RESERVED),
        (kernel_end, tables.pml4 - kernel_end, region::USABLE),
        (tables.pml4, spec.memory_size - tables.pml4, tables_kind),
        (spec.module_addr, spec.module_len, region::MODULE),
    ];
    for (i, (addr, len, kind)) in regions.iter().enumerate() {
        let r = RegionBytes(MemoryRegion {
            addr: *addr,
            len: *len,
            kind: *kind,
            reserved: 0,
        });
        mem.write_obj(r, GuestAddress(MEMORY_MAP.0 + 24 * i as u64))
            .map_err(guest_err)?;
    }

    if spec.devices.len() as u64 > DEVICES_MAX {
        return Err(BootInfoError::TooManyDevices(spec.devices.len()));
    }
    for (i, d) in spec.devices.iter().enumerate() {
        let entry = core::mem::size_of::<VirtioDevice>() as u64;
        mem.write_obj(DeviceBytes(*d), GuestAddress(DEVICES.0 + entry * i as u64))
            .map_err(guest_err)?;
    }

    let mut boot_flags = spec.flags;
    match spec.cpuid {
        Some(table) => {
            crate::arch::learnt_cpuid::write_table(mem, table).map_err(guest_err)?;
            boot_flags |= flags::CPUID_TABLE;
        }
        None => boot_flags |= flags::CPUID_LEARN,
    }

    Ok(BootInfo {
        magic: BOOT_INFO_MAGIC,
        version: spec.version,
        size: BootInfo::SIZE as u32,
        flags: boot_flags,
        memory_map_addr: MEMORY_MAP.0,
        memory_map_count: regions.len() as u64,
        cmdline_addr,
        cmdline_len,
        module_addr: spec.module_addr,
        module_len: spec.module_len,
        module_path_addr: path_addr,
        module_path_len: path_len,
        argv_addr,
        argv_len,
        argc: spec.argv.len() as u64,
        envp_addr,
        envp_len,
        envc: spec.envp.len() as u64,
        boot_realtime_ns: 0,
        boot_tsc: 0,
        tsc_khz: spec.tsc_khz,
        random_seed: spec.seed,
        console_addr: CONSOLE_BUFFER.0,
        console_len: CONSOLE_BUFFER_SIZE,
        vcpus: u64::from(spec.vcpus),
        memory_size: spec.memory_size,
        devices_addr: DEVICES.0,
        devices_count: spec.devices.len() as u64,
    })
}

/// Stamps the boot time and writes the structure at `BOOT_INFO`.
///
/// # Errors
/// When the write fails.
pub fn finish(
    mem: &GuestMem,
    mut info: BootInfo,
    realtime_ns: u64,
    tsc: u64,
) -> Result<(), BootInfoError> {
    info.boot_realtime_ns = realtime_ns;
    info.boot_tsc = tsc;
    mem.write_obj(BootInfoBytes(info), BOOT_INFO)
        .map_err(BootInfoError::Write)
}

/// The default layout version.
pub const VERSION: u32 = BOOT_INFO_VERSION;

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(memory_size: u64, argv: &'a [Vec<u8>]) -> BootSpec<'a> {
        BootSpec {
            memory_size,
            module_addr: 4 << 20,
            module_len: 5000,
            kernel_end: 0x140000,
            page_tables: BootTables::place(memory_size, (4 << 20) + 5000),
            flags: 0,
            cmdline: b"",
            path: b"/hello",
            argv,
            envp: &[],
            tsc_khz: 1,
            seed: [0; 32],
            version: VERSION,
            devices: &[],
            vcpus: 1,
            cpuid: None,
        }
    }

    #[test]
    fn writes_strings_and_the_memory_map() {
        let mem = crate::GuestMem::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let argv = vec![b"/hello".to_vec(), b"x".to_vec()];
        let info = write_boot_data(&mem, &spec(4 << 20, &argv)).unwrap();
        assert_eq!((info.module_addr, info.module_len), (4 << 20, 5000));
        let mut block = vec![0u8; info.argv_len as usize];
        mem.read_slice(&mut block, GuestAddress(info.argv_addr))
            .unwrap();
        assert_eq!(block, b"/hello\0x\0");
        assert_eq!(info.argc, 2);
        let region = |i: u64| -> (u64, u64, u32) {
            let r = mem
                .read_obj::<RegionBytes>(GuestAddress(MEMORY_MAP.0 + 24 * i))
                .unwrap()
                .0;
            (r.addr, r.addr + r.len, r.kind)
        };
        assert_eq!(info.memory_map_count, 8);
        // Low RAM around the boot data (the strings, the console buffer).
        assert_eq!(region(0), (0, 0x20000, region::RESERVED));
        assert_eq!(region(1), (0x20000, 0x70000, region::USABLE));
        assert_eq!(region(2), (0x70000, 0x80000, region::RESERVED));
        assert_eq!(region(3), (0x80000, 0x100000, region::USABLE));
        assert_eq!(region(4), (0x100000, 0x140000, region::RESERVED));
        // RAM up to the boot page tables (three tables and one page
        // directory) at its top; a VM this small has no page-table area.
        let tables = (4 << 20) - 0x4000;
        assert_eq!(region(5), (0x140000, tables, region::USABLE));
        assert_eq!(region(6), (tables, 4 << 20, region::RESERVED));
        assert_eq!(region(7), (4 << 20, (4 << 20) + 5000, region::MODULE));
        let info = write_boot_data(&mem, &spec(32 << 20, &argv)).unwrap();
        assert_eq!(info.memory_map_count, 8);
        let tables = (32 << 20) - 0x4000;
        assert_eq!(region(6), (tables, 32 << 20, region::PAGE_TABLES));
        assert_eq!(info.flags & flags::CPUID_TABLE, 0, "no CPUID given");
        assert_ne!(
            info.flags & flags::CPUID_LEARN,
            0,
            "so the kernel learns it"
        );
    }

    #[test]
    fn writes_the_cpuid_table() {
        let mem = crate::GuestMem::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let leaf = |function, index| CpuidEntry {
            function,
            index,
            flags: CpuidEntry::SIGNIFICANT_INDEX,
            eax: function * 10 + index,
            ..CpuidEntry::default()
        };
        let cpuid = [leaf(0xd, 0), leaf(0xd, 2)];
        let info = write_boot_data(
            &mem,
            &BootSpec {
                cpuid: Some(&cpuid),
                ..spec(4 << 20, &[])
            },
        )
        .unwrap();
        assert_ne!(info.flags & flags::CPUID_TABLE, 0);
        assert_eq!(info.flags & flags::CPUID_LEARN, 0);
        assert_eq!(
            crate::arch::learnt_cpuid::read_learnt(&mem).as_deref(),
            Some(&cpuid[..])
        );
        // A table longer than its page is refused.
        let long = vec![leaf(1, 0); kiln_boot::layout::CPUID_TABLE_MAX as usize + 1];
        let spec = BootSpec {
            cpuid: Some(&long),
            ..spec(4 << 20, &[])
        };
        assert!(write_boot_data(&mem, &spec).is_err());
    }

    #[test]
    fn refuses_ram_that_leaves_the_kernel_no_room() {
        let mem = crate::GuestMem::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap();
        let err = write_boot_data(&mem, &spec(2 << 20, &[])).unwrap_err();
        assert!(matches!(err, BootInfoError::MemoryTooSmall { .. }), "{err}");
    }

    #[test]
    fn refuses_oversized_arguments() {
        let mem = crate::GuestMem::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let argv = vec![vec![b'a'; STRINGS_SIZE as usize]];
        let err = write_boot_data(&mem, &spec(4 << 20, &argv)).unwrap_err();
        assert!(
            matches!(err, BootInfoError::ArgumentsTooLong { .. }),
            "{err}"
        );
    }
}
