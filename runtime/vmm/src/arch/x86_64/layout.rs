//! Guest-physical addresses of the boot contract (`kiln_boot::layout`), as
//! `GuestAddress` values.

use vm_memory::GuestAddress;

pub use kiln_boot::layout::{
    BOOT_PDS_MAX, CONSOLE_BUFFER_SIZE, DEVICES_MAX, MAX_VCPUS, MEMORY_MAP_MAX, STRINGS_SIZE,
    VIRTIO_MMIO_BASE, VIRTIO_MMIO_SIZE, VIRTIO_VECTOR_BASE,
};

/// PVM registration page of vCPU 0.
pub const PV_PAGES: GuestAddress = GuestAddress(kiln_boot::layout::PV_PAGES);
/// The boot-info structure.
pub const BOOT_INFO: GuestAddress = GuestAddress(kiln_boot::layout::BOOT_INFO);
/// The memory map.
pub const MEMORY_MAP: GuestAddress = GuestAddress(kiln_boot::layout::MEMORY_MAP);
/// The virtio device table.
pub const DEVICES: GuestAddress = GuestAddress(kiln_boot::layout::DEVICES);
/// The string area.
pub const STRINGS: GuestAddress = GuestAddress(kiln_boot::layout::STRINGS);
/// The console buffer.
pub const CONSOLE_BUFFER: GuestAddress = GuestAddress(kiln_boot::layout::CONSOLE_BUFFER);
/// Where the kernel image starts.
pub const KERNEL_LOAD: GuestAddress = GuestAddress(kiln_boot::layout::KERNEL_LOAD);

/// Size of a 2 MiB page.
pub const HUGE_PAGE: u64 = 2 << 20;
/// Size of a GiB.
pub const GIB: u64 = 1 << 30;
