//! The boot page tables kiln-vmm builds so that vCPU 0 can start directly
//! in 64-bit mode at the kernel's (higher-half) entry point: all guest
//! memory (RAM and the boot module above it) in the direct map (PML4 slot
//! 273) and the first GiB at the kernel base (slot 511), with 2 MiB pages.
//! There is no identity map: nothing runs at low addresses. The tables sit
//! at the top of RAM (`kiln_boot::layout::boot_page_tables_at`), away from
//! the kernel image, so that on PVM the host can map the image's 2 MiB
//! with one large entry.

use crate::GuestMem;
use kiln_boot::layout::{boot_page_tables_at, boot_page_tables_len};
use kiln_boot::vm::{KERNEL_SLOT, PHYS_MAP_SLOT};
use vm_memory::{Bytes, GuestAddress};

use super::layout::{BOOT_PDS_MAX, GIB, HUGE_PAGE};

/// Present | writable | user | accessed (see the kernel's paging module
/// for why U/S, and for why the accessed and dirty bits are set up front).
const TABLE: u64 = 0x27;
/// Present | writable | user | accessed | dirty | 2 MiB page.
const HUGE: u64 = 0xe7;

/// Where the boot page tables of a VM lie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootTables {
    /// The PML4 (CR3 at boot).
    pub pml4: u64,
    /// Bytes from the PML4 to the end of the last page directory.
    pub len: u64,
}

impl BootTables {
    /// The tables of a VM with `ram_size` bytes of RAM mapping
    /// guest-physical `[0, mapped_end)`.
    pub fn place(ram_size: u64, mapped_end: u64) -> Self {
        Self {
            pml4: boot_page_tables_at(ram_size, mapped_end),
            len: boot_page_tables_len(mapped_end),
        }
    }

    fn pdpt_phys_map(self) -> u64 {
        self.pml4 + 0x1000
    }

    fn pdpt_kernel(self) -> u64 {
        self.pml4 + 0x2000
    }

    fn pd(self, gib: u64) -> u64 {
        self.pml4 + 0x3000 + gib * 0x1000
    }
}

/// Writes the boot page tables mapping guest-physical `[0, mapped_end)`
/// at `at`.
///
/// # Errors
/// Fails when that needs more page directories than the boot contract
/// allows, or when guest memory rejects a write.
pub fn write_boot_page_tables(
    mem: &GuestMem,
    mapped_end: u64,
    at: BootTables,
) -> Result<(), vm_memory::GuestMemoryError> {
    let memory_size = mapped_end;
    let gibs = memory_size.div_ceil(GIB);
    if gibs > BOOT_PDS_MAX {
        return Err(vm_memory::GuestMemoryError::InvalidGuestAddress(
            GuestAddress(memory_size),
        ));
    }
    let mut pml4 = [0u64; 512];
    pml4[PHYS_MAP_SLOT] = at.pdpt_phys_map() | TABLE;
    pml4[KERNEL_SLOT] = at.pdpt_kernel() | TABLE;
    write_table(mem, GuestAddress(at.pml4), &pml4)?;

    let mut pdpt = [0u64; 512];
    for gib in 0..gibs {
        let pd_addr = at.pd(gib);
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
    write_table(mem, GuestAddress(at.pdpt_phys_map()), &pdpt)?;

    // The kernel image lives in the first GiB: kernel base -> physical 0.
    let mut kernel_pdpt = [0u64; 512];
    kernel_pdpt[510] = at.pd(0) | TABLE;
    write_table(mem, GuestAddress(at.pdpt_kernel()), &kernel_pdpt)
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
        let at = BootTables::place(size, size);
        assert_eq!(at.pml4, size - 0x4000, "at the top of RAM");
        write_boot_page_tables(&mem, size, at).unwrap();
        let pml4 = GuestAddress(at.pml4);
        assert_eq!(entry(&mem, pml4, 273), (at.pml4 + 0x1000) | TABLE);
        assert_eq!(entry(&mem, pml4, 511), (at.pml4 + 0x2000) | TABLE);
        assert_eq!(entry(&mem, pml4, 0), 0);
        let pd = GuestAddress(at.pml4 + 0x3000);
        assert_eq!(
            entry(&mem, GuestAddress(at.pml4 + 0x2000), 510),
            pd.0 | TABLE
        );
        assert_eq!(entry(&mem, pd, 2), (4 << 20) | HUGE);
        assert_eq!(entry(&mem, pd, 3), 0, "no mapping beyond RAM");
    }

    #[test]
    fn refuses_more_ram_than_the_boot_area_maps() {
        let mem = crate::GuestMem::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let end = (BOOT_PDS_MAX + 1) * GIB;
        let at = BootTables { pml4: 0, len: 0 };
        assert!(write_boot_page_tables(&mem, end, at).is_err());
    }
}
