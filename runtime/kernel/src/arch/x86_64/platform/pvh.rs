//! The PVH boot protocol (QEMU `-kernel kiln-kernel.elf`, Xen's
//! `arch/x86/include/xen/interface/hvm/start_info.h`): the program or the
//! rootfs as the first module (`-initrd`), arguments on the command line
//! (`-append`), the memory map in the start info. The machine itself is a
//! standard PC (`pc.rs`).

use super::pc;
use crate::boot::{ArgSource, BootParams, Region};

const START_INFO_MAGIC: u32 = 0x336e_c578;

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

/// Reads the PVH start info at `info_phys`.
pub fn boot_params(info_phys: u64) -> BootParams {
    let info: StartInfo = pc::read_boot("PVH start info", info_phys);
    if info.magic != START_INFO_MAGIC {
        panic!("PVH start info: bad magic {:#x}", info.magic);
    }
    let mut p = BootParams::empty();
    p.cmdline = pc::c_string(info.cmdline_paddr);
    p.args = ArgSource::CommandLine;
    if info.nr_modules > 0 {
        let m: Module = pc::read_boot("PVH start info", info.modlist_paddr);
        p.module = pc::boot_module("PVH start info", m.paddr, m.size);
        p.path = pc::c_string(m.cmdline_paddr);
    }
    if info.version < 1 || info.memmap_entries == 0 {
        panic!("PVH start info: no memory map (version {})", info.version);
    }
    let reserved = pc::reserved_regions(
        p.module,
        Region {
            start: info_phys & !0xfff,
            end: (info_phys & !0xfff) + 0x1000,
        },
    );
    for i in 0..info.memmap_entries as u64 {
        let e: MemmapEntry = pc::read_boot(
            "PVH memory map",
            info.memmap_paddr + i * core::mem::size_of::<MemmapEntry>() as u64,
        );
        pc::add_memory(&mut p, e.addr, e.size, e.kind, &reserved);
    }
    pc::set_rsdp(info.rsdp_paddr);
    pc::init_machine(&mut p);
    p
}
