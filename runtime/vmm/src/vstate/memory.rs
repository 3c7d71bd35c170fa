//! Guest physical memory: RAM at guest-physical 0 (anonymous, faulted in
//! lazily, so a larger `--memory` costs nothing until touched) followed by
//! the boot module (the image's rootfs or the program's file), copied in at
//! boot — or, with `--share-image`, mapped read-only and private straight
//! from the file, shared with the host's page cache (a guest write there
//! then makes KVM_RUN fail with EFAULT instead of reaching the file).
//!
//! Both live in one host mapping registered as **one** KVM memory slot:
//! every KVM_SET_USER_MEMORY_REGION waits for an SRCU grace period, which
//! costs 0.1 to 1.5 ms on the PVM host.
//!
//! The mapping starts on a 2 MiB boundary and RAM is marked
//! `MADV_HUGEPAGE`: the host then backs it with transparent huge pages and
//! KVM can map a guest 2 MiB page (the kernel's direct map, a program's
//! large anonymous areas) with one 2 MiB entry — one host fault where 4 KiB
//! backing would take 512. KVM only does so when guest-physical and host
//! addresses agree modulo 2 MiB, hence the alignment. The page-table
//! area at the top of RAM is the exception: small pages, the first of
//! them populated up front (`advise_ram`).

use crate::GuestMem;
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::mmap::MmapRegion;
use vm_memory::{GuestAddress, GuestRegionMmap};

use super::kvm::KvmError;
use crate::source::FileSlice;

/// Why guest memory could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// `--memory` out of range.
    #[error("guest memory of {size} bytes is out of range ({min}..={max})")]
    Size {
        /// Requested size.
        size: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// The boot module cannot be placed in the guest.
    #[error("cannot map {name} ({len} bytes at file offset {offset}) into the guest")]
    Module {
        /// The module's name.
        name: String,
        /// Its length.
        len: u64,
        /// Its offset in its file.
        offset: u64,
    },
    /// The host mapping of guest memory failed.
    #[error("cannot map {bytes} bytes of guest memory: {source}")]
    Map {
        /// The size asked for.
        bytes: u64,
        /// What mmap said.
        #[source]
        source: std::io::Error,
    },
    /// vm-memory refused the host mapping.
    #[error("guest memory region: {0}")]
    Region(#[source] vm_memory::mmap::MmapRegionError),
    /// The module's file could not be mapped.
    #[error("cannot map {name}: {source}")]
    MapModule {
        /// The module's name.
        name: String,
        /// What mmap said.
        #[source]
        source: std::io::Error,
    },
    /// vm-memory refused the region.
    #[error("guest memory: {0}")]
    Regions(#[source] vm_memory::GuestRegionCollectionError),
    /// The mapping does not fit vm-memory's address space.
    #[error("guest memory does not fit the address space")]
    AddressSpace,
    /// KVM refused the memory slot.
    #[error(transparent)]
    Slot(#[from] KvmError),
}

/// Smallest guest RAM kiln accepts (kernel, boot data and a tiny program).
pub const MIN_MEMORY: u64 = 2 << 20;

/// Guest memory and where the module landed.
pub struct GuestMemoryLayout {
    /// All regions.
    pub mem: GuestMem,
    /// RAM size.
    pub ram_size: u64,
    /// Guest-physical address of the module.
    pub module_addr: u64,
    /// Module length.
    pub module_len: u64,
    /// End of the highest region (what the boot page tables must map).
    pub mapped_end: u64,
    /// The memfd RAM lives in when it is shared with a vhost-user backend
    /// (virtiofsd maps it too).
    pub ram_file: Option<std::fs::File>,
    /// A resumed VM's write set being copied or learnt (shared snapshot
    /// memory); stopped before the mapping goes.
    working_set: Option<super::working_set::WorkingSet>,
    /// The host mapping behind `mem`; declared last so that it is unmapped
    /// only after `mem` is gone.
    _host: HostMapping,
}

impl GuestMemoryLayout {
    /// Starts copying a resumed VM's known write set: its vCPUs are about
    /// to run.
    pub fn start_working_set(&mut self) {
        if let Some(set) = &mut self.working_set {
            set.start();
        }
    }

    /// Set once a resumed VM's known write set is copied (at once when
    /// there is nothing to copy).
    pub fn working_set_copied(&self) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
        match &self.working_set {
            Some(set) => set.copied(),
            None => std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
        }
    }

    /// Ends the work on a resumed VM's write set once its vCPUs stopped:
    /// the prefetching thread stops, or the learnt set is saved. (Called
    /// before the mapping is handed to the teardown helper, after which
    /// it is never dropped.)
    pub fn end_working_set(&mut self) {
        self.working_set = None;
    }
}

/// The alignment of guest memory's host mapping (a huge page).
const HOST_ALIGN: usize = 2 << 20;

/// An anonymous host mapping starting on a [`HOST_ALIGN`] boundary,
/// unmapped on drop.
struct HostMapping {
    addr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory; HostMapping only unmaps it on drop
// and hands out no references itself.
unsafe impl Send for HostMapping {}
// SAFETY: as above.
unsafe impl Sync for HostMapping {}

impl HostMapping {
    /// Maps `len` bytes of zero-filled memory at a 2 MiB-aligned address.
    fn new(len: usize) -> Result<Self, MemoryError> {
        let fail = |source| MemoryError::Map {
            bytes: len as u64,
            source,
        };
        let padded = len
            .checked_add(HOST_ALIGN)
            .ok_or_else(|| fail(std::io::Error::from_raw_os_error(libc::ENOMEM)))?;
        // SAFETY: a fresh anonymous mapping at an address the kernel picks;
        // it overlaps nothing.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                padded,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(fail(std::io::Error::last_os_error()));
        }
        let start = raw as usize;
        let aligned = start.next_multiple_of(HOST_ALIGN);
        let (head, tail) = (aligned - start, start + padded - (aligned + len));
        // SAFETY: both ranges are the unused ends of the mapping just made,
        // which nothing else knows of.
        unsafe {
            if head > 0 {
                libc::munmap(raw, head);
            }
            if tail > 0 {
                libc::munmap((aligned + len) as *mut libc::c_void, tail);
            }
        }
        Ok(Self {
            addr: aligned as *mut u8,
            len,
        })
    }
}

impl Drop for HostMapping {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours (made in `new`); its owner drops the
        // guest memory that refers to it first.
        unsafe { libc::munmap(self.addr.cast(), self.len) };
    }
}

fn page_up(v: u64) -> u64 {
    (v + 0xfff) & !0xfff
}

/// Creates RAM of `ram_size` bytes plus the module above it and registers
/// them with the VM.
///
/// # Errors
/// When a size is out of range, a mapping fails or KVM refuses the slot.
pub fn create_guest_memory(
    vm: &VmFd,
    ram_size: u64,
    module: &FileSlice,
    shared: bool,
    copy_module: bool,
) -> Result<GuestMemoryLayout, MemoryError> {
    let max = crate::arch::layout::BOOT_PDS_MAX * crate::arch::layout::GIB;
    if !(MIN_MEMORY..=max / 2).contains(&ram_size) || !ram_size.is_multiple_of(4096) {
        return Err(MemoryError::Size {
            size: ram_size,
            min: MIN_MEMORY,
            max: max / 2,
        });
    }
    if module.len == 0 || !module.offset.is_multiple_of(4096) || module.len > max / 2 {
        return Err(MemoryError::Module {
            name: module.name.clone(),
            len: module.len,
            offset: module.offset,
        });
    }
    let module_addr = ram_size;
    // Guest memory ends on a 2 MiB boundary, past the module's last page:
    // KVM maps no 2 MiB entry over the end of a slot, and the host backs
    // no huge page past the end of a mapping, so the module's last 2 MiB
    // would otherwise cost the guest an exit per 32 KiB it reads there
    // (where the image's libraries usually lie: paths sort late).
    let total = (ram_size + page_up(module.len)).next_multiple_of(HOST_ALIGN as u64);
    let host_mapping = HostMapping::new(total as usize)?;
    // SAFETY: the range is the anonymous read-write mapping just made,
    // which `host_mapping` keeps alive for as long as the layout (and with
    // it `mem`) exists.
    let region = unsafe {
        MmapRegion::<AtomicBitmap>::build_raw(
            host_mapping.addr,
            total as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        )
    }
    .map_err(MemoryError::Region)?;
    if copy_module {
        copy_module_in(&region, module_addr, total - module_addr, module)?;
    } else {
        map_module(&region, module_addr, module)?;
    }
    let ram_file = if shared {
        Some(share_ram(region.as_ptr(), ram_size)?)
    } else {
        None
    };
    advise_ram(region.as_ptr(), ram_size, total);
    let mem = register(vm, region)?;
    Ok(GuestMemoryLayout {
        mem,
        ram_size,
        module_addr,
        module_len: module.len,
        mapped_end: total,
        ram_file,
        working_set: None,
        _host: host_mapping,
    })
}

/// Bytes at the start of the page-table area that kiln-vmm populates
/// before the guest runs: where the kernel takes its page tables first.
/// Backed, the host's fault handler maps their neighbours with each page
/// the guest touches there; not backed, each table the guest starts costs
/// one exit (hello: 33 exits instead of 57 without it, 32 with the area a
/// huge page). 128 KiB covered every program of bench-boot and bench-apps,
/// Python's included (their exits within ±3 of the huge page's).
const TABLE_AREA_POPULATED: u64 = 128 << 10;

/// Transparent huge pages for RAM (only a hint: a host with THP disabled
/// keeps 4 KiB pages), but for the page-table area
/// ([`kiln_boot::layout::page_table_area`]), which is left to 4 KiB pages
/// (`MADV_NOHUGEPAGE`, for a host whose THP is `always`) and whose first
/// [`TABLE_AREA_POPULATED`] bytes are populated. The guest's page tables
/// fill a few dozen of that area's frames; as one huge page, the host
/// zeroed all 2 MiB of it on kiln-vmm's first write of the boot tables
/// (~0.3 ms of CPU per run here: perf shows `clear_page_rep` under that
/// write) and kept it resident. On PVM the host maps that range with
/// 4 KiB entries anyway (it must see the guest write its page tables).
fn advise_ram(host: *mut u8, ram_size: u64, mapped_end: u64) {
    let area = kiln_boot::layout::page_table_area(ram_size, mapped_end);
    let huge_end = area.map_or(ram_size, |(start, _)| start);
    // SAFETY: madvise on RAM's own ranges of the mapping (`host` is guest
    // address 0, RAM its first `ram_size` bytes) changes no contents;
    // populating faults in zero pages nothing refers to yet.
    unsafe {
        libc::madvise(host.cast(), huge_end as usize, libc::MADV_HUGEPAGE);
        if let Some((start, end)) = area {
            let at = host.add(start as usize).cast();
            libc::madvise(at, (end - start) as usize, libc::MADV_NOHUGEPAGE);
            // Only a saving: a host without MADV_POPULATE_WRITE (before
            // Linux 5.14) faults the pages in on the guest's first touch.
            let populated = TABLE_AREA_POPULATED.min(end - start) as usize;
            libc::madvise(at, populated, libc::MADV_POPULATE_WRITE);
        }
    }
}

/// Makes `region` guest memory at guest-physical 0 and registers it with
/// the VM as its one slot.
fn register(vm: &VmFd, region: MmapRegion<AtomicBitmap>) -> Result<GuestMem, MemoryError> {
    let host = region.as_ptr();
    let size = region.size() as u64;
    let guest_region =
        GuestRegionMmap::new(region, GuestAddress(0)).ok_or(MemoryError::AddressSpace)?;
    let mem = GuestMem::from_regions(vec![guest_region]).map_err(MemoryError::Regions)?;
    let desc = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: size,
        userspace_addr: host as u64,
    };
    // SAFETY: the mapping is owned by `mem`, which the caller keeps (in
    // its `GuestMemoryLayout`) for as long as the VM exists (the VM and
    // vCPUs are dropped first); it is the only slot, so nothing overlaps.
    unsafe { vm.set_user_memory_region(desc) }
        .map_err(KvmError::ioctl("KVM_SET_USER_MEMORY_REGION"))?;
    Ok(mem)
}

/// A 2 MiB piece of the module's span holding less of the module than this
/// keeps 4 KiB host pages: zeroing a whole huge page costs ~0.25 ms on
/// PVM hosts (measured), more than the small pages and the few exits the
/// guest's reads of so little data cost (hello's 55 KiB module:
/// 6.90 → 6.57 ms a run, one exit more).
const HUGE_PAGE_MIN_MODULE_BYTES: u64 = 256 << 10;

/// The parts of the module's span `[module_addr, module_addr + span)`
/// worth huge host pages: each 2 MiB-aligned piece holding at least
/// [`HUGE_PAGE_MIN_MODULE_BYTES`] of the module's `module_len` bytes.
fn module_huge_page_ranges(module_addr: u64, span: u64, module_len: u64) -> Vec<(u64, u64)> {
    let align = HOST_ALIGN as u64;
    let (end, module_end) = (module_addr + span, module_addr + module_len);
    let mut ranges = Vec::new();
    let mut start = module_addr;
    while start < end {
        let piece_end = ((start / align) + 1) * align;
        let piece_end = piece_end.min(end);
        let data = module_end.min(piece_end).saturating_sub(start);
        if data >= HUGE_PAGE_MIN_MODULE_BYTES {
            ranges.push((start, piece_end));
        }
        start = piece_end;
    }
    ranges
}

/// Copies the module into its place in guest memory (`module_addr`), which
/// is anonymous memory backed by huge pages like RAM (where it holds enough
/// of the module, [`HUGE_PAGE_MIN_MODULE_BYTES`]): the guest's direct
/// map then reaches it through 2 MiB host pages, so reading a file of the
/// image costs no exit per page (a page-cache mapping costs one per 4 KiB
/// page first touched). Costs a copy at boot (about 0.3 ms a MiB) and the
/// image's size in host memory per VM.
fn copy_module_in(
    region: &MmapRegion<AtomicBitmap>,
    module_addr: u64,
    span: u64,
    module: &FileSlice,
) -> Result<(), MemoryError> {
    use std::os::unix::fs::FileExt;
    for (start, end) in module_huge_page_ranges(module_addr, span, module.len) {
        // SAFETY: the range lies inside the module's span, inside
        // `region`'s anonymous mapping (the caller sized it so); madvise
        // changes no contents.
        unsafe {
            libc::madvise(
                region.as_ptr().add(start as usize).cast(),
                (end - start) as usize,
                libc::MADV_HUGEPAGE,
            )
        };
    }
    // SAFETY: `[module_addr, module_addr + span)` lies inside `region`'s
    // read-write anonymous mapping (the caller sized it so); no guest runs
    // yet and nothing else refers to that part of it.
    let target = unsafe {
        let at = region.as_ptr().add(module_addr as usize);
        std::slice::from_raw_parts_mut(at, module.len as usize)
    };
    module
        .file
        .read_exact_at(target, module.offset)
        .map_err(|source| MemoryError::MapModule {
            name: module.name.clone(),
            source,
        })
}

/// Maps the module read-only and private from its file at `module_addr`,
/// replacing that part of `region`: the guest shares the host's page cache
/// with every other VM of the image (`--share-image`).
fn map_module(
    region: &MmapRegion<AtomicBitmap>,
    module_addr: u64,
    module: &FileSlice,
) -> Result<(), MemoryError> {
    // SAFETY: `[host + module_addr, host + total)` lies inside `region`'s
    // own anonymous mapping, which its owner unmaps as a whole, so
    // replacing that part with a read-only private file mapping (MAP_FIXED)
    // touches no memory anyone else owns. The file stays open (Arc) while
    // mapped and is only read.
    let mapped = unsafe {
        libc::mmap(
            region.as_ptr().add(module_addr as usize).cast(),
            page_up(module.len) as usize,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_NORESERVE,
            std::os::fd::AsRawFd::as_raw_fd(module.file.as_ref()),
            module.offset as libc::off_t,
        )
    };
    if mapped == libc::MAP_FAILED {
        return Err(MemoryError::MapModule {
            name: module.name.clone(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// A new, empty memfd (close-on-exec) named `name`.
///
/// # Errors
/// When the kernel refuses one.
pub fn memfd(name: &std::ffi::CStr) -> std::io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create with a NUL-terminated name; the returned
    // descriptor is owned by the File below.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and nothing else owns it.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Turns on KVM's dirty log for guest memory's slot (a standby's
/// checkpoints read it): from now on the first write to a page after each
/// read of the log costs an exit.
///
/// # Errors
/// When KVM refuses.
pub fn log_dirty_pages(vm: &VmFd, mem: &GuestMem) -> Result<(), MemoryError> {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    let region = mem.iter().next().ok_or(MemoryError::AddressSpace)?;
    let desc = kvm_userspace_memory_region {
        slot: 0,
        flags: kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES,
        guest_phys_addr: 0,
        memory_size: region.len(),
        userspace_addr: region.as_ptr() as u64,
    };
    // SAFETY: the same slot, mapping and size as registered (`register`),
    // only its flags change; the mapping lives as long as the VM.
    unsafe { vm.set_user_memory_region(desc) }
        .map_err(KvmError::ioctl("KVM_SET_USER_MEMORY_REGION (dirty log)"))?;
    Ok(())
}

/// Puts RAM (`size` bytes at `host`, the start of guest memory's mapping)
/// in a memfd mapped shared in its place, so that a vhost-user backend
/// can map the same pages; returns the memfd.
fn share_ram(host: *mut u8, size: u64) -> Result<std::fs::File, MemoryError> {
    use std::os::fd::AsRawFd;
    let fail = |source: std::io::Error| MemoryError::MapModule {
        name: "guest RAM (shared memfd)".into(),
        source,
    };
    let file = memfd(c"kiln-guest-ram").map_err(fail)?;
    file.set_len(size).map_err(fail)?;
    // SAFETY: `[host, host + size)` is the RAM part of the caller's
    // anonymous mapping, which unmaps it as a whole on drop; replacing it
    // with a shared mapping of the memfd (MAP_FIXED) touches no memory
    // anyone else owns. The memfd stays open while the VM lives.
    let mapped = unsafe {
        libc::mmap(
            host.cast(),
            size as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_FIXED | libc::MAP_NORESERVE,
            file.as_raw_fd(),
            0,
        )
    };
    if mapped == libc::MAP_FAILED {
        return Err(fail(std::io::Error::last_os_error()));
    }
    Ok(file)
}

/// How a restored VM gets its memory from the snapshot's file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SnapshotMemory {
    /// Mapped private from the file: the guest reads the file's pages
    /// (shared through the host's page cache with every VM restored from
    /// it) until it writes one, which then becomes this VM's own copy.
    /// Nothing is read up front, but each page the guest first touches
    /// costs an exit (4 KiB at a time).
    #[default]
    Shared,
    /// Copied into the VM's own anonymous, huge-page-backed memory at
    /// restore (only the file's data): no sharing between clones, but the
    /// guest then runs as fast as a booted one.
    Copy,
}

/// Guest memory of `size` bytes from a snapshot's memory file, `how` says
/// how. `ram_size` is where RAM ends. Registered with the VM as its one
/// slot. Shared memory of a snapshot in the directory `write_set_dir`
/// gets its write set copied early, or learnt
/// ([`super::working_set`]).
///
/// # Errors
/// When the file cannot be mapped or read, or KVM refuses the slot.
pub fn map_snapshot_memory(
    vm: &VmFd,
    file: &std::fs::File,
    size: u64,
    ram_size: u64,
    how: SnapshotMemory,
    write_set_dir: Option<&std::path::Path>,
) -> Result<GuestMemoryLayout, MemoryError> {
    use std::os::fd::AsRawFd;
    let max = crate::arch::layout::BOOT_PDS_MAX * crate::arch::layout::GIB;
    if size == 0 || !size.is_multiple_of(4096) || size > max || ram_size > size {
        return Err(MemoryError::Size {
            size,
            min: MIN_MEMORY,
            max,
        });
    }
    let host_mapping = HostMapping::new(size as usize)?;
    if how == SnapshotMemory::Copy {
        // SAFETY: madvise on the anonymous mapping just made changes no
        // contents; it lets the host back it with huge pages.
        unsafe { libc::madvise(host_mapping.addr.cast(), size as usize, libc::MADV_HUGEPAGE) };
        // SAFETY: the mapping was just made, read-write, `size` bytes, and
        // nothing else refers to it yet.
        let target = unsafe { std::slice::from_raw_parts_mut(host_mapping.addr, size as usize) };
        read_data_extents(file, target).map_err(|source| MemoryError::MapModule {
            name: "the snapshot's memory file".into(),
            source,
        })?;
        return register_snapshot_memory(vm, host_mapping, size, ram_size);
    }
    // SAFETY: the range is the anonymous mapping just made (owned by
    // `host_mapping`); MAP_FIXED replaces it with a private mapping of the
    // snapshot's file, which the mapping keeps referenced after `file` is
    // closed.
    let mapped = unsafe {
        libc::mmap(
            host_mapping.addr.cast(),
            size as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_NORESERVE,
            file.as_raw_fd(),
            0,
        )
    };
    if mapped == libc::MAP_FAILED {
        return Err(MemoryError::MapModule {
            name: "the snapshot's memory file".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    let host = host_mapping.addr;
    let mut layout = register_snapshot_memory(vm, host_mapping, size, ram_size)?;
    layout.working_set =
        write_set_dir.map(|dir| super::working_set::WorkingSet::new(dir, host, size));
    Ok(layout)
}

/// Reads the data of `file` (its holes are zero, as `target` already is)
/// into `target`.
fn read_data_extents(file: &std::fs::File, target: &mut [u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    for (offset, len) in crate::source::data_extents(file, target.len() as u64)? {
        file.read_exact_at(
            &mut target[offset as usize..(offset + len) as usize],
            offset,
        )?;
    }
    Ok(())
}

/// Registers a snapshot's guest memory (the host mapping, filled or
/// mapped) as the VM's one slot.
fn register_snapshot_memory(
    vm: &VmFd,
    host_mapping: HostMapping,
    size: u64,
    ram_size: u64,
) -> Result<GuestMemoryLayout, MemoryError> {
    // SAFETY: the mapping (anonymous, or the snapshot's file mapped private
    // over it) lives as long as `host_mapping`, which the layout (and with
    // it `mem`) owns.
    let region = unsafe {
        MmapRegion::<AtomicBitmap>::build_raw(
            host_mapping.addr,
            size as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_NORESERVE,
        )
    }
    .map_err(MemoryError::Region)?;
    let mem = register(vm, region)?;
    Ok(GuestMemoryLayout {
        mem,
        ram_size,
        module_addr: ram_size,
        module_len: size - ram_size,
        mapped_end: size,
        ram_file: None,
        working_set: None,
        _host: host_mapping,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_small_module_keeps_small_pages() {
        assert!(module_huge_page_ranges(16 * MIB, 2 * MIB, 55 << 10).is_empty());
    }

    #[test]
    fn each_piece_holding_enough_of_the_module_gets_huge_pages() {
        // 2.3 MiB from 16 MiB: a full piece, then 0.3 MiB (enough).
        let len = 2 * MIB + 300 * 1024;
        assert_eq!(
            module_huge_page_ranges(16 * MIB, 4 * MIB, len),
            vec![(16 * MIB, 18 * MIB), (18 * MIB, 20 * MIB)]
        );
        // 2.1 MiB: the second piece holds too little.
        assert_eq!(
            module_huge_page_ranges(16 * MIB, 4 * MIB, 2 * MIB + 100 * 1024),
            vec![(16 * MIB, 18 * MIB)]
        );
    }

    #[test]
    fn a_module_starting_inside_a_piece_is_counted_from_its_start() {
        // RAM of 15 MiB: the module starts 1 MiB before a 2 MiB boundary.
        let ranges = module_huge_page_ranges(15 * MIB, 3 * MIB, 1536 * 1024);
        assert_eq!(ranges, vec![(15 * MIB, 16 * MIB), (16 * MIB, 18 * MIB)]);
    }
}
