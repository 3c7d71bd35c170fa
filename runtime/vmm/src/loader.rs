//! Loading the guest kernel ELF into guest RAM.
//!
//! Every PT_LOAD segment is placed at its physical address (`p_paddr`),
//! which must lie at or above the boot contract's `KERNEL_LOAD` and inside
//! RAM; the bytes are copied with vm-memory's checked writes. The entry
//! point (`e_entry`, a virtual address in the kernel window) must fall in
//! an executable segment.

use crate::source::FileSlice;

use crate::GuestMem;
use goblin::container::{Container, Ctx, Endian};
use goblin::elf::program_header::{ProgramHeader, PF_X, PT_LOAD, PT_NOTE};
use goblin::elf::{header, Elf};
use vm_memory::{Bytes, GuestAddress};

use crate::arch::layout::KERNEL_LOAD;

/// Why a kernel image cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// The file cannot be read.
    #[error("cannot read the guest kernel {path}: {error}")]
    Read {
        /// The kernel path.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file is not an ELF the kernel loader understands.
    #[error("the guest kernel {path} is not a valid x86-64 ELF: {reason}")]
    NotElf {
        /// The kernel path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A segment does not fit where it asks to go.
    #[error("the guest kernel {path} has a segment at {paddr:#x}+{size:#x} outside guest RAM [{min:#x}, {max:#x})")]
    Segment {
        /// The kernel path.
        path: String,
        /// Segment physical address.
        paddr: u64,
        /// Segment size in memory.
        size: u64,
        /// Lowest allowed address.
        min: u64,
        /// End of RAM.
        max: u64,
    },
}

/// A kernel loaded into guest memory.
#[derive(Clone, Copy, Debug)]
pub struct LoadedKernel {
    /// Virtual entry point.
    pub entry: u64,
    /// First physical byte after the highest segment.
    pub end: u64,
    /// The CPU state the kernel asks kiln-vmm to load (its note), if any.
    pub cpu_state: Option<kiln_boot::CpuStateNote>,
}

/// Maps the kernel ELF `kernel` and loads it into `mem` (`memory_size` bytes).
///
/// # Errors
/// [`LoaderError`] naming the file and what is wrong with it.
pub fn load_kernel(
    kernel: &FileSlice,
    mem: &GuestMem,
    memory_size: u64,
) -> Result<LoadedKernel, LoaderError> {
    let read_err = |error| LoaderError::Read {
        path: kernel.name.clone(),
        error,
    };
    // SAFETY: the mapping is read-only and private; kiln only reads it
    // while loading, and a kernel file modified meanwhile can at worst
    // make this load fail its checks or boot a broken guest.
    let bytes = unsafe {
        memmap2::MmapOptions::new()
            .offset(kernel.offset)
            .len(kernel.len as usize)
            .map(kernel.file.as_ref())
    }
    .map_err(read_err)?;
    load_kernel_bytes(&kernel.name, &bytes, mem, memory_size)
}

/// Loads an already-read kernel image (see [`load_kernel`]). Guest memory
/// is fresh (zero), so the part of a segment beyond its file bytes (bss)
/// needs no writes.
///
/// # Errors
/// As [`load_kernel`].
pub fn load_kernel_bytes(
    path: &str,
    bytes: &[u8],
    mem: &GuestMem,
    memory_size: u64,
) -> Result<LoadedKernel, LoaderError> {
    let not_elf = |reason: String| LoaderError::NotElf {
        path: path.to_string(),
        reason,
    };
    // Only the ELF and program headers are parsed (not sections or symbols).
    let hdr = Elf::parse_header(bytes).map_err(|e| not_elf(e.to_string()))?;
    if hdr.e_ident[header::EI_CLASS] != header::ELFCLASS64
        || hdr.e_ident[header::EI_DATA] != header::ELFDATA2LSB
        || hdr.e_machine != header::EM_X86_64
        || hdr.e_type != header::ET_EXEC
    {
        return Err(not_elf(
            "expected a 64-bit little-endian x86-64 executable".into(),
        ));
    }
    let ctx = Ctx::new(Container::Big, Endian::Little);
    let phdrs = ProgramHeader::parse(bytes, hdr.e_phoff as usize, hdr.e_phnum as usize, ctx)
        .map_err(|e| not_elf(format!("program headers: {e}")))?;
    let entry = hdr.e_entry;
    let mut end = 0;
    let mut entry_ok = false;
    for ph in phdrs.iter().filter(|ph| ph.p_type == PT_LOAD) {
        let seg_end = ph.p_paddr.checked_add(ph.p_memsz);
        if ph.p_paddr < KERNEL_LOAD.0 || seg_end.is_none_or(|e| e > memory_size) {
            return Err(LoaderError::Segment {
                path: path.to_string(),
                paddr: ph.p_paddr,
                size: ph.p_memsz,
                min: KERNEL_LOAD.0,
                max: memory_size,
            });
        }
        let file_range = ph.file_range();
        let data = bytes
            .get(file_range.clone())
            .filter(|_| ph.p_filesz <= ph.p_memsz)
            .ok_or_else(|| {
                not_elf(format!(
                    "segment at {:#x} lies outside the file",
                    ph.p_paddr
                ))
            })?;
        mem.write_slice(data, GuestAddress(ph.p_paddr))
            .map_err(|e| not_elf(format!("segment at {:#x}: {e}", ph.p_paddr)))?;
        end = end.max(seg_end.unwrap_or(0));
        if ph.p_flags & PF_X != 0 && entry >= ph.p_vaddr && entry - ph.p_vaddr < ph.p_memsz {
            entry_ok = true;
        }
    }
    if end == 0 {
        return Err(not_elf("no loadable segments".into()));
    }
    if !entry_ok {
        return Err(not_elf(format!(
            "entry point {entry:#x} is not in an executable segment"
        )));
    }
    let cpu_state = phdrs
        .iter()
        .filter(|ph| ph.p_type == PT_NOTE)
        .filter_map(|ph| bytes.get(ph.file_range()))
        .find_map(crate::arch::cpu_preset::find_note);
    Ok(LoadedKernel {
        entry,
        end,
        cpu_state,
    })
}
