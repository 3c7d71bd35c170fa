//! Guest physical memory: RAM (one anonymous mapping at guest-physical 0,
//! faulted in lazily, so a larger `--memory` costs nothing until touched)
//! and, above it, the boot module: the program's file mapped read-only
//! straight into the guest (no copy; the guest touches only the pages it
//! runs). Each region is one KVM memory slot.

use std::fs::File;
use std::sync::Arc;

use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_READONLY};
use kvm_ioctls::VmFd;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap,
};

use crate::arch::layout::HUGE_PAGE;
use crate::VmmError;

/// Smallest guest RAM kiln accepts (kernel, boot data and a tiny program).
pub const MIN_MEMORY: u64 = 2 << 20;

/// A byte range of a file to map into the guest as the boot module.
#[derive(Clone, Debug)]
pub struct ModuleFile {
    /// The file.
    pub file: Arc<File>,
    /// Offset of the first byte (a multiple of the page size).
    pub offset: u64,
    /// Length in bytes (not zero).
    pub len: u64,
}

/// Guest memory and where the module landed.
pub struct GuestMemoryLayout {
    /// All regions.
    pub mem: GuestMemoryMmap,
    /// RAM size.
    pub ram_size: u64,
    /// Guest-physical address of the module.
    pub module_addr: u64,
    /// Module length.
    pub module_len: u64,
    /// End of the highest region (what the boot page tables must map).
    pub mapped_end: u64,
}

fn page_up(v: u64) -> u64 {
    (v + 0xfff) & !0xfff
}

/// Creates RAM of `ram_size` bytes plus the module region and registers
/// both with the VM.
///
/// # Errors
/// When the size is out of range, a mapping fails or KVM refuses a slot.
pub fn create_guest_memory(
    vm: &VmFd,
    ram_size: u64,
    module: &ModuleFile,
) -> Result<GuestMemoryLayout, VmmError> {
    let max = crate::arch::layout::BOOT_PDS_MAX * crate::arch::layout::GIB;
    if !(MIN_MEMORY..=max / 2).contains(&ram_size) || !ram_size.is_multiple_of(4096) {
        return Err(VmmError::MemorySize {
            size: ram_size,
            min: MIN_MEMORY,
            max: max / 2,
        });
    }
    if module.len == 0 || !module.offset.is_multiple_of(4096) || module.len > max / 2 {
        return Err(VmmError::GuestMemory(format!(
            "cannot map a boot module of {} bytes at file offset {}",
            module.len, module.offset
        )));
    }
    let map_err = |what: &str, e: &dyn std::fmt::Display| {
        VmmError::GuestMemory(format!("cannot map {what}: {e}"))
    };
    let ram = GuestRegionMmap::<()>::from_range(GuestAddress(0), ram_size as usize, None)
        .map_err(|e| map_err(&format!("{ram_size} bytes of guest RAM"), &e))?;
    // The module starts on a 2 MiB boundary above RAM, so the boot page
    // tables' large pages never mix RAM and module.
    let module_addr = ram_size.div_ceil(HUGE_PAGE) * HUGE_PAGE;
    let module_len = page_up(module.len);
    let region = MmapRegionBuilder::new(module_len as usize)
        .with_file_offset(FileOffset::from_arc(module.file.clone(), module.offset))
        .with_mmap_prot(libc::PROT_READ)
        .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
        .build()
        .map_err(|e| map_err("the program file", &e))?;
    let module_region =
        GuestRegionMmap::new(region, GuestAddress(module_addr)).ok_or_else(|| {
            VmmError::GuestMemory("the program does not fit in the guest address space".into())
        })?;
    let mem = GuestMemoryMmap::from_regions(vec![ram, module_region])
        .map_err(|e| VmmError::GuestMemory(e.to_string()))?;
    for (slot, region) in mem.iter().enumerate() {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| VmmError::GuestMemory(e.to_string()))?;
        let read_only = region.start_addr().0 == module_addr;
        let desc = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: if read_only { KVM_MEM_READONLY } else { 0 },
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region's mapping is owned by `mem`, which the caller
        // keeps alive for as long as the VM runs (`run` drops it after the
        // vCPU and VM fds), and the slots do not overlap (one per region).
        unsafe { vm.set_user_memory_region(desc) }
            .map_err(|e| VmmError::Kvm("KVM_SET_USER_MEMORY_REGION", e))?;
    }
    Ok(GuestMemoryLayout {
        mem,
        ram_size,
        module_addr,
        module_len: module.len,
        mapped_end: module_addr + module_len,
    })
}
