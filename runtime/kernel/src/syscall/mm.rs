//! Memory system calls: brk, mmap, munmap, mremap, mprotect, madvise.
//! Pages are allocated on first touch (see `mm::fault`); like
//! Linux's heuristic overcommit, a writable private mapping larger than all
//! of guest memory is refused with ENOMEM up front.

use kiln_kernel::errno::Errno;
use kiln_kernel::exec::elf::{page_up, PAGE_SIZE, USER_END, USER_MIN};
use kiln_kernel::mm::vma::{prot, Backing, Label, Vma, VmaError};

use kiln_kernel::fs::stat::mode;

use super::args::{Flags, UserAddr};
use super::Call;
use crate::fd::Fd;
use crate::mm::space::MMAP_TOP;
use crate::process::Process;

const MAP_SHARED: u64 = 0x01;
const MAP_PRIVATE: u64 = 0x02;
const MAP_FIXED: u64 = 0x10;
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_NORESERVE: u64 = 0x4000;
const MAP_STACK: u64 = 0x2_0000;
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
const MREMAP_MAYMOVE: u64 = 1;
const MREMAP_FIXED: u64 = 2;
const MADV_DONTNEED: u32 = 4;
const MADV_HUGEPAGE: u32 = 14;
const MADV_NOHUGEPAGE: u32 = 15;

fn vma_errno(e: VmaError) -> Errno {
    match e {
        VmaError::Invalid => Errno::Inval,
        VmaError::Overlap => Errno::Exist,
        VmaError::NoSpace => Errno::Nomem,
    }
}

/// brk(2): moves the program break; returns the (possibly unchanged) break.
pub fn brk(p: &mut Call, UserAddr(new): UserAddr) -> Result<u64, Errno> {
    let mem = &mut p.mem;
    if new < mem.brk_start || new > USER_END {
        return Ok(mem.brk);
    }
    let old_end = page_up(mem.brk);
    let new_end = page_up(new);
    let moved = if new_end == old_end {
        Ok(())
    } else if old_end == mem.brk_start {
        mem.add_area(Vma {
            start: mem.brk_start,
            end: new_end,
            prot: prot::READ | prot::WRITE,
            backing: Backing::Anonymous,
            label: Label::Heap,
        })
    } else if new_end == mem.brk_start {
        mem.remove_range(mem.brk_start, old_end)
    } else if new_end > old_end {
        mem.vmas.resize_end(old_end, new_end)
    } else {
        mem.remove_range(new_end, old_end)
    };
    if moved.is_ok() {
        mem.brk = new;
    }
    Ok(mem.brk)
}

fn valid_prot(bits: u64) -> Result<u32, Errno> {
    if bits & !0x7 != 0 {
        return Err(Errno::Inval);
    }
    Ok(bits as u32)
}

/// Where a file mapping's bytes come from.
enum Source {
    /// Guest memory (a rootfs file in the archive).
    Guest(crate::boot::Region),
    /// A copy (an in-memory or generated file).
    Copy(alloc::vec::Vec<u8>),
}

/// mmap(2): anonymous memory, or private mappings of rootfs files (shared
/// ones too, as long as they are not writable: the rootfs is read-only).
pub fn mmap(
    p: &mut Call,
    UserAddr(addr): UserAddr,
    len: u64,
    Flags(prot_bits): Flags,
    Flags(flags): Flags,
    fd: Fd,
    off: u64,
) -> Result<u64, Errno> {
    let protection = valid_prot(prot_bits)?;
    if len == 0 || !addr.is_multiple_of(PAGE_SIZE) || !off.is_multiple_of(PAGE_SIZE) {
        return Err(Errno::Inval);
    }
    if flags & (MAP_SHARED | MAP_PRIVATE) == 0 {
        return Err(Errno::Inval);
    }
    // A file mapping shows the file's bytes: straight from guest memory for
    // rootfs files, as a private copy for in-memory ones. A device
    // (/dev/zero) maps zeros.
    let mut write_back = None;
    let source = if flags & MAP_ANONYMOUS == 0 {
        let file = p.fds.get(fd)?;
        let kind = file.stat().mode & 0o170000;
        if kind == mode::S_IFCHR {
            None
        } else if kind != mode::S_IFREG {
            return Err(Errno::Nodev);
        } else if let Some(region) = file.mapping() {
            if flags & MAP_SHARED != 0 && protection & prot::WRITE != 0 {
                return Err(Errno::Acces);
            }
            Some(Source::Guest(region))
        } else {
            let shared_write = flags & MAP_SHARED != 0 && protection & prot::WRITE != 0;
            // A shared writable mapping of an in-memory file would not
            // write through: refuse it rather than lose writes. A volume
            // file's is a copy written back (msync, munmap, exit).
            if shared_write && !file.writes_back_mappings() {
                return Err(Errno::Nodev);
            }
            if shared_write {
                write_back = Some(file.clone());
            }
            Some(Source::Copy(file.contents().ok_or(Errno::Nodev)?))
        }
    } else {
        None
    };
    let len = page_up(len);
    if len > USER_END {
        return Err(Errno::Nomem);
    }
    let accounted =
        protection & prot::WRITE != 0 && flags & MAP_PRIVATE != 0 && flags & MAP_NORESERVE == 0;
    if accounted && len > guest_memory() {
        return Err(Errno::Nomem);
    }
    let fixed = flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0;
    let start = if fixed {
        let end = addr
            .checked_add(len)
            .filter(|&e| e <= USER_END)
            .ok_or(Errno::Nomem)?;
        if addr < USER_MIN {
            return Err(Errno::Perm);
        }
        if flags & MAP_FIXED_NOREPLACE != 0 {
            if !p.mem.vmas.is_free(addr, end) {
                return Err(Errno::Exist);
            }
        } else {
            let _ = p.write_back(addr, end, true);
            p.mem.remove_range(addr, end).map_err(vma_errno)?;
        }
        addr
    } else {
        let hint_free = addr >= USER_MIN
            && addr
                .checked_add(len)
                .is_some_and(|e| e <= MMAP_TOP && p.mem.vmas.is_free(addr, e));
        // Private anonymous memory of a large page or more starts on a
        // large-page boundary, so that large pages can back it (as Linux
        // aligns such mappings for transparent huge pages).
        let align = if source.is_none()
            && flags & (MAP_SHARED | MAP_STACK) == 0
            && len >= crate::arch::LARGE_PAGE
        {
            crate::arch::LARGE_PAGE
        } else {
            PAGE_SIZE
        };
        if hint_free {
            addr
        } else {
            p.mem
                .vmas
                .find_free_below_aligned(len, MMAP_TOP, align)
                .map_err(vma_errno)?
        }
    };
    // Shared memory stays shared with forked children; a shared mapping of
    // a rootfs file needs nothing more (its pages are the image's).
    let label = if flags & MAP_SHARED != 0 {
        Label::Shared
    } else if flags & MAP_STACK != 0 {
        Label::SmallPages
    } else {
        Label::Mmap
    };
    let anonymous = |from: u64| Vma {
        start: from,
        end: start + len,
        prot: protection,
        backing: Backing::Anonymous,
        label,
    };
    let Some(source) = source else {
        p.mem.add_area(anonymous(start)).map_err(vma_errno)?;
        return Ok(start);
    };
    // Pages holding file bytes map the archive directly when aligned (kiln
    // images align every file) or hold a copy; the pages past the end of
    // the file are zero-filled (Linux would raise SIGBUS there).
    let file_len = match &source {
        Source::Guest(r) => r.end - r.start,
        Source::Copy(bytes) => bytes.len() as u64,
    };
    let file_bytes = file_len.saturating_sub(off).min(len);
    let file_pages = page_up(file_bytes);
    match source {
        _ if file_pages == 0 => {}
        Source::Guest(data) if (data.start + off).is_multiple_of(PAGE_SIZE) => {
            p.mem
                .add_area(Vma {
                    start,
                    end: start + file_pages,
                    prot: protection,
                    backing: Backing::Image {
                        phys: data.start,
                        offset: off,
                    },
                    label: Label::Mmap,
                })
                .map_err(vma_errno)?;
        }
        Source::Guest(data) => {
            p.mem
                .add_area(Vma {
                    end: start + file_pages,
                    ..anonymous(start)
                })
                .map_err(vma_errno)?;
            // SAFETY: the range is the mapped file's bytes in guest memory.
            let bytes = unsafe {
                core::slice::from_raw_parts(
                    crate::arch::phys_to_virt(data.start + off),
                    file_bytes as usize,
                )
            };
            p.mem.copy_into(start, bytes).map_err(|_| Errno::Nomem)?;
        }
        Source::Copy(bytes) => {
            p.mem
                .add_area(Vma {
                    end: start + file_pages,
                    ..anonymous(start)
                })
                .map_err(vma_errno)?;
            p.mem
                .copy_into(start, &bytes[off as usize..][..file_bytes as usize])
                .map_err(|_| Errno::Nomem)?;
        }
    }
    if file_pages < len {
        p.mem
            .add_area(anonymous(start + file_pages))
            .map_err(vma_errno)?;
    }
    // A file's code, or a segment placed where it stays (the dynamic
    // loader maps a library's span first, then each segment over it with
    // MAP_FIXED): all of it now. Writable data is copied, so only up to
    // EAGER_DATA of it.
    const EAGER_DATA: u64 = 1 << 20;
    let final_place = protection & prot::EXEC != 0 || flags & MAP_FIXED != 0;
    if final_place && (protection & prot::WRITE == 0 || file_pages <= EAGER_DATA) {
        p.mem.map_image_now(start, start + file_pages);
    }
    if let Some(file) = write_back {
        // A mapping replaced by this one (MAP_FIXED) was written back when
        // it was removed; this one is written back from now on.
        p.shared_maps.push(crate::process::SharedMap {
            start,
            len: file_bytes,
            file,
            offset: off,
        });
    }
    Ok(start)
}

/// msync(2): shared mappings of volume files are written back (the rest
/// have nothing to write).
pub fn msync(
    p: &mut Call,
    UserAddr(addr): UserAddr,
    len: u64,
    _flags: Flags,
) -> Result<u64, Errno> {
    if !addr.is_multiple_of(PAGE_SIZE) {
        return Err(Errno::Inval);
    }
    let end = addr.checked_add(len).ok_or(Errno::Nomem)?;
    p.write_back(addr, end, false).map(|()| 0)
}

/// munmap(2).
pub fn munmap(p: &mut Call, UserAddr(addr): UserAddr, len: u64) -> Result<u64, Errno> {
    if !addr.is_multiple_of(PAGE_SIZE) || len == 0 {
        return Err(Errno::Inval);
    }
    let end = addr
        .checked_add(page_up(len))
        .filter(|&e| e <= USER_END)
        .ok_or(Errno::Inval)?;
    // Unmapping writes a shared volume-file mapping back first (Linux's
    // page cache would hold the writes).
    let _ = p.write_back(addr, end, true);
    p.mem.remove_range(addr, end).map_err(vma_errno)?;
    Ok(0)
}

/// mprotect(2).
pub fn mprotect(
    p: &mut Call,
    UserAddr(addr): UserAddr,
    len: u64,
    Flags(prot_bits): Flags,
) -> Result<u64, Errno> {
    let protection = valid_prot(prot_bits & !0x0300_0000)?; // PROT_GROWSDOWN/UP ignored
    if !addr.is_multiple_of(PAGE_SIZE) {
        return Err(Errno::Inval);
    }
    if len == 0 {
        return Ok(0);
    }
    let end = addr
        .checked_add(page_up(len))
        .filter(|&e| e <= USER_END)
        .ok_or(Errno::Nomem)?;
    p.mem
        .protect_range(addr, end, protection)
        .map_err(|e| match e {
            VmaError::NoSpace => Errno::Nomem,
            other => vma_errno(other),
        })?;
    Ok(0)
}

/// madvise(2): MADV_DONTNEED drops pages; MADV_NOHUGEPAGE keeps an
/// anonymous mapping's future pages small (MADV_HUGEPAGE undoes it);
/// other advice is accepted.
pub fn madvise(
    p: &mut Call,
    UserAddr(addr): UserAddr,
    len: u64,
    advice: u32,
) -> Result<u64, Errno> {
    if !addr.is_multiple_of(PAGE_SIZE) {
        return Err(Errno::Inval);
    }
    let end = addr
        .checked_add(page_up(len))
        .filter(|&e| e <= USER_END)
        .ok_or(Errno::Inval)?;
    if !p.mem.vmas.covers(addr, end - addr, 0) {
        return Err(Errno::Nomem);
    }
    match advice {
        MADV_DONTNEED => p.mem.discard_range(addr, end),
        MADV_NOHUGEPAGE => p
            .mem
            .vmas
            .relabel(addr, end, Label::Mmap, Label::SmallPages)
            .map_err(vma_errno)?,
        MADV_HUGEPAGE => p
            .mem
            .vmas
            .relabel(addr, end, Label::SmallPages, Label::Mmap)
            .map_err(vma_errno)?,
        _ => {}
    }
    Ok(0)
}

/// Bytes of guest memory the kernel manages.
fn guest_memory() -> u64 {
    crate::mm::frame::usage().1 * PAGE_SIZE
}

/// mremap(2): shrinks in place, grows in place when the pages after the
/// area are free, and otherwise moves the area (MREMAP_MAYMOVE) or puts
/// it at `new_addr` (MREMAP_FIXED), pages and contents included.
pub fn mremap(
    p: &mut Call,
    UserAddr(old): UserAddr,
    old_size: u64,
    new_size: u64,
    Flags(flags): Flags,
    UserAddr(new_addr): UserAddr,
) -> Result<u64, Errno> {
    if !old.is_multiple_of(PAGE_SIZE)
        || flags & !(MREMAP_MAYMOVE | MREMAP_FIXED) != 0
        || (flags & MREMAP_FIXED != 0 && flags & MREMAP_MAYMOVE == 0)
    {
        return Err(Errno::Inval);
    }
    let old_size = page_up(old_size);
    let new_size = page_up(new_size);
    // old_size 0 duplicates shared mappings on Linux; kiln has none to copy.
    if new_size == 0 || old_size == 0 || new_size > USER_END {
        return Err(Errno::Inval);
    }
    let old_end = old.checked_add(old_size).ok_or(Errno::Fault)?;
    let vma = p
        .mem
        .vmas
        .find(old)
        .copied()
        .filter(|v| v.end >= old_end)
        .ok_or(Errno::Fault)?;
    if new_size > old_size && vma.prot & prot::WRITE != 0 && new_size - old_size > guest_memory() {
        return Err(Errno::Nomem);
    }
    if flags & MREMAP_FIXED != 0 {
        let new_end = new_addr
            .checked_add(new_size)
            .filter(|&e| e <= USER_END)
            .ok_or(Errno::Inval)?;
        if !new_addr.is_multiple_of(PAGE_SIZE)
            || new_addr < USER_MIN
            || (new_addr < old_end && old < new_end)
        {
            return Err(Errno::Inval);
        }
        p.mem.remove_range(new_addr, new_end).map_err(vma_errno)?;
        return relocate(p, old, old_size, new_size, new_addr);
    }
    if new_size <= old_size {
        if new_size < old_size {
            p.mem
                .remove_range(old + new_size, old_end)
                .map_err(vma_errno)?;
        }
        return Ok(old);
    }
    let grown_end = old.checked_add(new_size).ok_or(Errno::Nomem)?;
    if vma.end == old_end && grown_end <= MMAP_TOP && p.mem.vmas.is_free(old_end, grown_end) {
        grow(p, &vma, old_end, grown_end)?;
        return Ok(old);
    }
    if flags & MREMAP_MAYMOVE == 0 {
        return Err(Errno::Nomem);
    }
    let to = p
        .mem
        .vmas
        .find_free_below(new_size, MMAP_TOP)
        .map_err(vma_errno)?;
    relocate(p, old, old_size, new_size, to)
}

/// Moves `[old, old+old_size)` to `to` and sizes it to `new_size`.
fn relocate(
    p: &mut Process,
    old: u64,
    old_size: u64,
    new_size: u64,
    to: u64,
) -> Result<u64, Errno> {
    let keep = old_size.min(new_size);
    if new_size < old_size {
        p.mem
            .remove_range(old + new_size, old + old_size)
            .map_err(vma_errno)?;
    }
    p.mem.move_range(old, old + keep, to).map_err(vma_errno)?;
    if new_size > keep {
        let moved = p.mem.vmas.find(to).copied().ok_or(Errno::Fault)?;
        grow(p, &moved, to + keep, to + new_size)?;
    }
    Ok(to)
}

/// Extends the area `vma` (ending at `end`) to `new_end`: anonymous areas
/// simply grow; file-backed ones get zero pages after the file's.
fn grow(p: &mut Process, vma: &Vma, end: u64, new_end: u64) -> Result<(), Errno> {
    match vma.backing {
        Backing::Anonymous if vma.end == end => {
            p.mem.vmas.resize_end(end, new_end).map_err(vma_errno)
        }
        _ => p
            .mem
            .add_area(Vma {
                start: end,
                end: new_end,
                prot: vma.prot,
                backing: Backing::Anonymous,
                label: vma.label,
            })
            .map_err(vma_errno),
    }
}
