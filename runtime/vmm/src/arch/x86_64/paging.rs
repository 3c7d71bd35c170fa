//! The boot page tables kiln-vmm builds so that vCPU 0 can start directly
//! in 64-bit mode at the kernel's (higher-half) entry point: all guest
//! memory (RAM and the boot module above it) in the direct map (PML4 slot
//! 273) and the first GiB at the kernel base (slot 511), with 2 MiB pages.
//! There is no identity map: nothing runs at low addresses.

use crate::GuestMem;
use kiln_boot::vm::{KERNEL_SLOT, PHYS_MAP_SLOT};
use vm_memory::{Bytes, GuestAddress};

use super::layout::{
    BOOT_PDPT_KERNEL, BOOT_PDPT_PHYS_MAP, BOOT_PDS, BOOT_PDS_MAX, BOOT_PML4, GIB, HUGE_PAGE,
};

/// Present | writable | user | accessed (see the kernel's paging module
/// for why U/S, and for why the accessed and dirty bits are set up front).
const TABLE: u64 = 0x27;
/// Present | writable | user | accessed | dirty | 2 MiB page.
const HUGE: u64 = 0xe7;

/// Writes the boot page tables mapping guest-physical `[0, mapped_end)`.
///
/// # Errors
/// Fails when that needs more page directories than the boot area holds,
/// or when guest memory rejects a write.
pub fn write_boot_page_tables(
    mem: &GuestMem,
    mapped_end: u64,
) -> Result<(), vm_memory::GuestMemoryError> {
    let memory_size = mapped_end;
    let gibs = memory_size.div_ceil(GIB);
    if gibs > BOOT_PDS_MAX {
        return Err(vm_memory::GuestMemoryError::InvalidGuestAddress(
            GuestAddress(memory_size),
        ));
    }
    let mut pml4 = [0u64; 512];
    pml4[PHYS_MAP_SLOT] = BOOT_PDPT_PHYS_MAP.0 | TABLE;
    pml4[KERNEL_SLOT] = BOOT_PDPT_KERNEL.0 | TABLE;
    write_table(mem, BOOT_PML4, &pml4)?;

    let mut pdpt = [0u64; 512];
    for gib in 0..gibs {
        let pd_addr = BOOT_PDS.0 + gib * 0x1000;
        pdpt[gib as usize] = pd_addr | TABLE;
        let mut pd = [0u64; 512];
        for (i, e) in pd.iter_mut().enumerate() {
            let phys = gib * GIB + i as u64 * HUGE_PAGE;
            if phys < memory_size {
                *e = phys | HUGE;
            }
        }
        write_table(mem, GuestAddress(pd_addr), &pd)?;
    }
    write_table(mem, BOOT_PDPT_PHYS_MAP, &pdpt)?;

    // The kernel image lives in the first GiB: kernel base -> physical 0.
    let mut kernel_pdpt = [0u64; 512];
    kernel_pdpt[510] = BOOT_PDS.0 | TABLE;
    write_table(mem, BOOT_PDPT_KERNEL, &kernel_pdpt)
}

fn write_table(
    mem: &GuestMem,
    at: GuestAddress,
    table: &[u64; 512],
) -> Result<(), vm_memory::GuestMemoryError> {
    let mut bytes = [0u8; 4096];
    for (chunk, e) in bytes.chunks_exact_mut(8).zip(table) {
        chunk.copy_from_slice(&e.to_le_bytes());
    }
    mem.write_slice(&bytes, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(mem: &GuestMem, table: GuestAddress, i: usize) -> u64 {
        mem.read_obj(GuestAddress(table.0 + 8 * i as u64)).unwrap()
    }

    #[test]
    fn maps_ram_in_the_direct_map_and_kernel_window() {
        let size = 6 << 20;
        let mem = crate::GuestMem::from_ranges(&[(GuestAddress(0), size as usize)]).unwrap();
        write_boot_page_tables(&mem, size).unwrap();
        assert_eq!(entry(&mem, BOOT_PML4, 273), BOOT_PDPT_PHYS_MAP.0 | TABLE);
        assert_eq!(entry(&mem, BOOT_PML4, 511), BOOT_PDPT_KERNEL.0 | TABLE);
        assert_eq!(entry(&mem, BOOT_PML4, 0), 0);
        assert_eq!(entry(&mem, BOOT_PDPT_KERNEL, 510), BOOT_PDS.0 | TABLE);
        assert_eq!(entry(&mem, BOOT_PDS, 2), (4 << 20) | HUGE);
        assert_eq!(entry(&mem, BOOT_PDS, 3), 0, "no mapping beyond RAM");
    }

    #[test]
    fn refuses_more_ram_than_the_boot_area_maps() {
        let mem = crate::GuestMem::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        assert!(write_boot_page_tables(&mem, (BOOT_PDS_MAX + 1) * GIB).is_err());
    }
}
