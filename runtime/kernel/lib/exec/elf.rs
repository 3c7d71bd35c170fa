//! Reading a program's ELF headers into a load plan.
//!
//! This module only parses and validates (System V gABI, ELF-64 x86-64
//! psABI): every offset, size and address is checked against the file and
//! the user address space before anyone maps a page. Mapping the plan is the
//! loader's job.

use alloc::vec::Vec;
use core::fmt;

/// Size of a page on x86-64.
pub const PAGE_SIZE: u64 = 4096;
/// End (exclusive) of the user address space, as on Linux (`TASK_SIZE`).
pub const USER_END: u64 = 0x7fff_ffff_f000;
/// Lowest address a segment may be mapped at (Linux `mmap_min_addr`).
pub const USER_MIN: u64 = 0x1_0000;
/// Where a position-independent executable is placed (Linux's
/// `ELF_ET_DYN_BASE` without address-space randomisation).
pub const PIE_BASE: u64 = 0x5555_5555_4000;

const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_INTERP: u32 = 3;
const PT_PHDR: u32 = 6;
const PT_TLS: u32 = 7;

/// Segment permission: readable.
pub const PF_R: u32 = 4;
/// Segment permission: writable.
pub const PF_W: u32 = 2;
/// Segment permission: executable.
pub const PF_X: u32 = 1;

/// Why a file cannot be run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// Shorter than an ELF header, or not starting with `\x7fELF`.
    NotElf,
    /// An ELF file of another class (1 = 32-bit).
    WrongClass(u8),
    /// Big-endian.
    WrongEndian,
    /// Another machine (the `e_machine` value).
    WrongMachine(u16),
    /// Not an executable (relocatable object, core file, …).
    WrongType(u16),
    /// A dynamically linked program (PT_INTERP names its loader).
    Dynamic,
    /// The program headers lie outside the file or have a strange size.
    BadProgramHeaders,
    /// A PT_LOAD segment is inconsistent (index into the program headers).
    BadSegment(usize),
    /// There is nothing to load.
    NoSegments,
    /// The entry point lies outside every executable segment.
    BadEntry(u64),
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotElf => write!(f, "not an ELF file"),
            Self::WrongClass(1) => write!(f, "a 32-bit ELF file (only x86-64 ELF64 runs)"),
            Self::WrongClass(c) => write!(f, "an ELF file of unknown class {c}"),
            Self::WrongEndian => write!(f, "a big-endian ELF file"),
            Self::WrongMachine(m) => {
                write!(f, "an ELF file for machine {m} (only x86-64, 62, runs)")
            }
            Self::WrongType(t) => write!(f, "an ELF file of type {t}, not an executable"),
            Self::Dynamic => write!(
                f,
                "a dynamically linked program, whose interpreter and libraries only an image's rootfs provides (build an image with kiln build)"
            ),
            Self::BadProgramHeaders => write!(f, "a damaged ELF file (bad program headers)"),
            Self::BadSegment(i) => write!(f, "a damaged ELF file (bad segment {i})"),
            Self::NoSegments => write!(f, "an ELF file with nothing to load"),
            Self::BadEntry(e) => write!(f, "an ELF file whose entry point {e:#x} is not code"),
        }
    }
}

/// One PT_LOAD segment, already relocated by the load bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Virtual address of the first byte.
    pub vaddr: u64,
    /// Bytes taken from the file.
    pub filesz: u64,
    /// Bytes in memory (the rest is zero).
    pub memsz: u64,
    /// File offset of the first byte.
    pub offset: u64,
    /// [`PF_R`] | [`PF_W`] | [`PF_X`].
    pub flags: u32,
}

impl Segment {
    /// First page of the segment.
    pub fn page_start(&self) -> u64 {
        self.vaddr & !(PAGE_SIZE - 1)
    }

    /// End of the segment's last page.
    pub fn page_end(&self) -> u64 {
        page_up(self.vaddr + self.memsz)
    }
}

/// What the loader needs to map and start a program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadPlan {
    /// Whether the file was position-independent (ET_DYN).
    pub position_independent: bool,
    /// Load bias added to every address of the file.
    pub bias: u64,
    /// The segments, in ascending address order.
    pub segments: Vec<Segment>,
    /// Entry point (relocated).
    pub entry: u64,
    /// Address of the program headers in memory (for AT_PHDR).
    pub phdr: u64,
    /// Number of program headers (AT_PHNUM).
    pub phnum: u64,
    /// Size of one program header (AT_PHENT).
    pub phent: u64,
    /// End of the highest segment: where the heap (brk) starts.
    pub brk_start: u64,
    /// PT_INTERP: the program interpreter a dynamic program names.
    pub interpreter: Option<alloc::string::String>,
}

impl LoadPlan {
    /// Bytes from the first segment's page to the end of the last one.
    pub fn span(&self) -> u64 {
        let first = self.segments.first().map_or(0, Segment::page_start);
        self.brk_start - first
    }
}

fn u16_at(data: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([data[off], data[off + 1]])
}

fn u32_at(data: &[u8], off: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&data[off..off + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(data: &[u8], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&data[off..off + 8]);
    u64::from_le_bytes(b)
}

/// Rounds up to a page boundary (saturating at the top of the space).
pub fn page_up(v: u64) -> u64 {
    v.checked_add(PAGE_SIZE - 1)
        .map_or(!(PAGE_SIZE - 1), |x| x & !(PAGE_SIZE - 1))
}

/// Parses and validates `data` as an x86-64 executable; a
/// position-independent one is placed at `pie_base` (page aligned).
pub fn plan(data: &[u8], pie_base: u64) -> Result<LoadPlan, ElfError> {
    if data.len() < 64 || &data[..4] != b"\x7fELF" {
        return Err(ElfError::NotElf);
    }
    if data[4] != 2 {
        return Err(ElfError::WrongClass(data[4]));
    }
    if data[5] != 1 {
        return Err(ElfError::WrongEndian);
    }
    let e_type = u16_at(data, 16);
    let machine = u16_at(data, 18);
    if machine != EM_X86_64 {
        return Err(ElfError::WrongMachine(machine));
    }
    if e_type != ET_EXEC && e_type != ET_DYN {
        return Err(ElfError::WrongType(e_type));
    }
    let entry = u64_at(data, 24);
    let phoff = u64_at(data, 32);
    let phent = u16_at(data, 54) as u64;
    let phnum = u16_at(data, 56) as u64;
    let ph_bytes = phent
        .checked_mul(phnum)
        .ok_or(ElfError::BadProgramHeaders)?;
    if phent != 56
        || phnum == 0
        || phoff
            .checked_add(ph_bytes)
            .is_none_or(|end| end > data.len() as u64)
    {
        return Err(ElfError::BadProgramHeaders);
    }
    let position_independent = e_type == ET_DYN;
    // The load bias: PIE files are linked at 0 (their first segment's page),
    // so the bias places that page at `pie_base`.
    let bias = if position_independent { pie_base } else { 0 };
    let mut interpreter = None;

    let mut segments: Vec<Segment> = Vec::new();
    let mut phdr_vaddr = None;
    for i in 0..phnum as usize {
        let off = phoff as usize + i * 56;
        let p_type = u32_at(data, off);
        let p_flags = u32_at(data, off + 4);
        let p_offset = u64_at(data, off + 8);
        let p_vaddr = u64_at(data, off + 16);
        let p_filesz = u64_at(data, off + 32);
        let p_memsz = u64_at(data, off + 40);
        let p_align = u64_at(data, off + 48);
        match p_type {
            PT_INTERP => {
                let p_offset = u64_at(data, off + 8);
                let p_filesz = u64_at(data, off + 32);
                let end = p_offset
                    .checked_add(p_filesz)
                    .filter(|&e| e <= data.len() as u64);
                let raw = end
                    .map(|e| &data[p_offset as usize..e as usize])
                    .ok_or(ElfError::BadSegment(i))?;
                let name = raw.split(|&b| b == 0).next().unwrap_or(&[]);
                let name = core::str::from_utf8(name).map_err(|_| ElfError::BadSegment(i))?;
                if name.is_empty() {
                    return Err(ElfError::BadSegment(i));
                }
                interpreter = Some(alloc::string::String::from(name));
            }
            PT_PHDR => phdr_vaddr = Some(p_vaddr),
            PT_LOAD => {
                let vaddr = p_vaddr.checked_add(bias).ok_or(ElfError::BadSegment(i))?;
                let end = vaddr.checked_add(p_memsz).ok_or(ElfError::BadSegment(i))?;
                let file_end = p_offset
                    .checked_add(p_filesz)
                    .ok_or(ElfError::BadSegment(i))?;
                let aligned = p_align <= 1 || (p_vaddr % PAGE_SIZE == p_offset % PAGE_SIZE);
                let ordered = segments
                    .last()
                    .is_none_or(|prev| prev.vaddr + prev.memsz <= vaddr);
                if p_filesz > p_memsz
                    || file_end > data.len() as u64
                    || vaddr < USER_MIN
                    || end > USER_END
                    || !aligned
                    || !ordered
                {
                    return Err(ElfError::BadSegment(i));
                }
                if p_memsz == 0 {
                    continue;
                }
                segments.push(Segment {
                    vaddr,
                    filesz: p_filesz,
                    memsz: p_memsz,
                    offset: p_offset,
                    flags: p_flags & (PF_R | PF_W | PF_X),
                });
            }
            PT_TLS => {}
            _ => {}
        }
    }
    if segments.is_empty() {
        return Err(ElfError::NoSegments);
    }
    let entry = entry.checked_add(bias).ok_or(ElfError::BadEntry(entry))?;
    if !segments
        .iter()
        .any(|s| s.flags & PF_X != 0 && entry >= s.vaddr && entry < s.vaddr + s.memsz)
    {
        return Err(ElfError::BadEntry(entry));
    }
    // AT_PHDR: PT_PHDR if present, else where the headers land inside a
    // loaded segment (the usual case for static programs).
    let phdr = match phdr_vaddr {
        Some(v) => v.wrapping_add(bias),
        None => segments
            .iter()
            .find(|s| phoff >= s.offset && phoff + ph_bytes <= s.offset + s.filesz)
            .map_or(0, |s| s.vaddr + (phoff - s.offset)),
    };
    let brk_start = segments.iter().map(|s| s.page_end()).max().unwrap_or(0);
    Ok(LoadPlan {
        position_independent,
        bias,
        segments,
        entry,
        phdr,
        phnum,
        phent,
        brk_start,
        interpreter,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// A minimal ELF64 executable image: header + one program header + code.
    fn tiny_elf(e_type: u16, vaddr: u64) -> Vec<u8> {
        let mut f = vec![0u8; 0x1000 + 16];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[6] = 1;
        f[16..18].copy_from_slice(&e_type.to_le_bytes());
        f[18..20].copy_from_slice(&62u16.to_le_bytes());
        f[24..32].copy_from_slice(&(vaddr + 0x1000).to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[52..54].copy_from_slice(&64u16.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&1u16.to_le_bytes());
        let ph = 64;
        f[ph..ph + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
        f[ph + 4..ph + 8].copy_from_slice(&(PF_R | PF_X).to_le_bytes());
        f[ph + 16..ph + 24].copy_from_slice(&vaddr.to_le_bytes());
        f[ph + 32..ph + 40].copy_from_slice(&(0x1010u64).to_le_bytes());
        f[ph + 40..ph + 48].copy_from_slice(&(0x2000u64).to_le_bytes());
        f[ph + 48..ph + 56].copy_from_slice(&0x1000u64.to_le_bytes());
        f
    }

    #[test]
    fn plans_a_static_executable() {
        let p = plan(&tiny_elf(ET_EXEC, 0x40_0000), PIE_BASE).unwrap();
        assert!(!p.position_independent);
        assert_eq!(p.entry, 0x40_1000);
        assert_eq!(p.phdr, 0x40_0040);
        assert_eq!(p.phnum, 1);
        assert_eq!(p.brk_start, 0x40_2000);
        assert_eq!(p.segments[0].memsz, 0x2000);
    }

    #[test]
    fn relocates_a_static_pie() {
        let p = plan(&tiny_elf(ET_DYN, 0), PIE_BASE).unwrap();
        assert!(p.position_independent);
        assert_eq!(p.entry, PIE_BASE + 0x1000);
        assert_eq!(p.segments[0].vaddr, PIE_BASE);
    }

    #[test]
    fn rejects_non_elf_and_other_machines() {
        assert_eq!(
            plan(b"#!/bin/sh\necho hi\n", PIE_BASE),
            Err(ElfError::NotElf)
        );
        let mut f = tiny_elf(ET_EXEC, 0x40_0000);
        f[4] = 1;
        assert_eq!(plan(&f, PIE_BASE), Err(ElfError::WrongClass(1)));
        let mut f = tiny_elf(ET_EXEC, 0x40_0000);
        f[18] = 3;
        assert_eq!(plan(&f, PIE_BASE), Err(ElfError::WrongMachine(3)));
        let f = tiny_elf(1, 0x40_0000);
        assert_eq!(plan(&f, PIE_BASE), Err(ElfError::WrongType(1)));
    }

    #[test]
    fn rejects_segments_outside_the_file_or_space() {
        let mut f = tiny_elf(ET_EXEC, 0x40_0000);
        f[64 + 32..64 + 40].copy_from_slice(&0x10_0000u64.to_le_bytes());
        f[64 + 40..64 + 48].copy_from_slice(&0x10_0000u64.to_le_bytes());
        assert_eq!(plan(&f, PIE_BASE), Err(ElfError::BadSegment(0)));
        let f = tiny_elf(ET_EXEC, USER_END - 0x1000);
        assert_eq!(plan(&f, PIE_BASE), Err(ElfError::BadSegment(0)));
        let f = tiny_elf(ET_EXEC, 0);
        assert_eq!(plan(&f, PIE_BASE), Err(ElfError::BadSegment(0)));
    }

    #[test]
    fn rejects_truncated_program_headers() {
        let f = tiny_elf(ET_EXEC, 0x40_0000);
        assert_eq!(plan(&f[..100], PIE_BASE), Err(ElfError::BadProgramHeaders));
    }

    #[test]
    fn reports_the_interpreter() {
        let mut f = tiny_elf(ET_DYN, 0);
        // A second program header: PT_INTERP pointing at a name in the file.
        f[56..58].copy_from_slice(&2u16.to_le_bytes());
        let ph = 64 + 56;
        f[ph..ph + 4].copy_from_slice(&PT_INTERP.to_le_bytes());
        f[ph + 8..ph + 16].copy_from_slice(&0x200u64.to_le_bytes());
        f[ph + 32..ph + 40].copy_from_slice(&28u64.to_le_bytes());
        f[0x200..0x200 + 28].copy_from_slice(b"/lib64/ld-linux-x86-64.so.2\0");
        let p = plan(&f, PIE_BASE).unwrap();
        assert_eq!(
            p.interpreter.as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
        assert_eq!(p.span(), 0x2000);
    }
}
