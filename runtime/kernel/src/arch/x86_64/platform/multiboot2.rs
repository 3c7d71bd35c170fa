//! The multiboot2 boot protocol (GRUB's `multiboot2` and `module2`
//! commands; the Multiboot2 Specification, version 2.0): the boot
//! information is a list of tags, each 8-byte aligned. kiln reads the
//! command line (`kiln.path=`, the environment and `-- args`, as under
//! PVH), the first module (the image's rootfs), the memory map and the
//! ACPI RSDP. The machine itself is a standard PC
//! (`pc.rs`); on UEFI, GRUB has left boot services before entering.

use super::pc;
use crate::boot::{ArgSource, BootParams, Region};

const TAG_END: u32 = 0;
const TAG_CMDLINE: u32 = 1;
const TAG_MODULE: u32 = 3;
const TAG_MMAP: u32 = 6;
const TAG_ACPI_OLD: u32 = 14;
const TAG_ACPI_NEW: u32 = 15;

/// Largest boot information kiln accepts (GRUB's is a few KiB).
const MAX_INFO_SIZE: u32 = 1 << 20;

#[repr(C)]
#[derive(Clone, Copy)]
struct TagHeader {
    kind: u32,
    size: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct MmapEntry {
    addr: u64,
    len: u64,
    kind: u32,
    reserved: u32,
}

/// Reads the multiboot2 boot information at `info_phys`.
pub fn boot_params(info_phys: u64) -> BootParams {
    const WHAT: &str = "multiboot2 boot information";
    let total: u32 = pc::read_boot(WHAT, info_phys);
    if !(16..=MAX_INFO_SIZE).contains(&total) {
        panic!("{WHAT}: implausible size {total}");
    }
    let info = pc::boot_bytes(info_phys, u64::from(total));
    if info.is_empty() {
        panic!("{WHAT} at {info_phys:#x} lies outside the boot map");
    }
    let mut p = BootParams::empty();
    p.args = ArgSource::CommandLine;
    let mut mmap: &[u8] = &[];
    let mut mmap_entry_size = 0usize;
    let mut rsdp = 0u64;
    let mut offset = 8usize;
    while offset + 8 <= info.len() {
        let tag: TagHeader = read_at(info, offset);
        let size = tag.size as usize;
        if tag.kind == TAG_END {
            break;
        }
        if size < 8 || offset + size > info.len() {
            panic!(
                "{WHAT}: tag {} at offset {offset} has a bad size {size}",
                tag.kind
            );
        }
        let body = &info[offset + 8..offset + size];
        let body_phys = info_phys + offset as u64 + 8;
        match tag.kind {
            TAG_CMDLINE => p.cmdline = until_nul(body),
            TAG_MODULE if p.module.end == 0 && body.len() >= 8 => {
                let start = u64::from(u32::from_le_bytes(body[0..4].try_into().unwrap()));
                let end = u64::from(u32::from_le_bytes(body[4..8].try_into().unwrap()));
                if end < start {
                    panic!("{WHAT}: the module ends before it starts");
                }
                // The module's string is GRUB's to fill (it may hold the
                // file name); the program's path is `kiln.path=`.
                p.module = pc::boot_module(WHAT, start, end - start);
            }
            TAG_MMAP if body.len() >= 8 => {
                mmap_entry_size = u32::from_le_bytes(body[0..4].try_into().unwrap()) as usize;
                mmap = &body[8..];
            }
            // The new (ACPI 2.0+) RSDP wins over the old one.
            TAG_ACPI_NEW => rsdp = body_phys,
            TAG_ACPI_OLD if rsdp == 0 => rsdp = body_phys,
            _ => {}
        }
        offset += (size + 7) & !7;
    }
    if mmap.is_empty() || mmap_entry_size < core::mem::size_of::<MmapEntry>() {
        panic!("{WHAT}: no memory map");
    }
    let table = Region {
        start: info_phys & !0xfff,
        end: (info_phys + u64::from(total) + 0xfff) & !0xfff,
    };
    let reserved = pc::reserved_regions(p.module, table);
    for entry in mmap.chunks_exact(mmap_entry_size) {
        let e: MmapEntry = read_at(entry, 0);
        pc::add_memory(&mut p, e.addr, e.len, e.kind, &reserved);
    }
    pc::set_rsdp(rsdp);
    pc::init_machine(&mut p);
    p
}

/// The `T` at `offset` of `bytes` (the caller checked the length).
fn read_at<T: Copy>(bytes: &[u8], offset: usize) -> T {
    assert!(offset + core::mem::size_of::<T>() <= bytes.len());
    // SAFETY: the range lies within `bytes`; `read_unaligned` copes with
    // any alignment and content (T is plain integers).
    unsafe { core::ptr::read_unaligned(bytes.as_ptr().add(offset) as *const T) }
}

/// `bytes` up to its first NUL.
fn until_nul(bytes: &'static [u8]) -> &'static [u8] {
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..len]
}
