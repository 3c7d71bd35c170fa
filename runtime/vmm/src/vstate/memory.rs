//! Guest RAM: one anonymous mapping at guest-physical 0, registered as
//! KVM memory slot 0. Pages are faulted in lazily, so a larger `--memory`
//! costs nothing until the guest touches it.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::VmmError;

/// Smallest guest RAM kiln accepts (kernel, boot data and a tiny program).
pub const MIN_MEMORY: u64 = 2 << 20;

/// Creates guest RAM of `size` bytes and registers it with the VM.
///
/// # Errors
/// When the size is out of range, the mapping fails or KVM refuses the slot.
pub fn create_guest_memory(vm: &VmFd, size: u64) -> Result<GuestMemoryMmap, VmmError> {
    let max = crate::arch::layout::BOOT_PDS_MAX * crate::arch::layout::GIB;
    if !(MIN_MEMORY..=max).contains(&size) {
        return Err(VmmError::MemorySize { size, min: MIN_MEMORY, max });
    }
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), size as usize)])
        .map_err(|e| VmmError::GuestMemory(format!("cannot map {size} bytes of guest RAM: {e}")))?;
    for (slot, region) in mem.iter().enumerate() {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| VmmError::GuestMemory(e.to_string()))?;
        let desc = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region's mapping is owned by `mem`, which the caller
        // keeps alive for as long as the VM runs (it is dropped after the
        // VmFd in `Vm`), and slots do not overlap (one region per slot).
        unsafe { vm.set_user_memory_region(desc) }.map_err(|e| VmmError::Kvm("KVM_SET_USER_MEMORY_REGION", e))?;
    }
    Ok(mem)
}
