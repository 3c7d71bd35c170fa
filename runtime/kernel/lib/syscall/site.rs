//! Which SYSCALL instructions can be rewritten into calls, and how.
//!
//! The program runs at the kernel's privilege level, where on PVM a
//! SYSCALL instruction still traps to the host (~1.2 µs) while a jump into
//! kernel code costs nothing. A SYSCALL is two bytes, too short for a jump,
//! but glibc (and most code using it) loads the number just before:
//!
//! ```text
//! b8 NN NN NN NN    mov eax, NN
//! 0f 05             syscall
//! ```
//!
//! The five bytes of the `mov` become `jmp trampoline` (e9 rel32); the
//! trampoline runs the `mov` and enters the kernel as the SYSCALL would.
//! The same works for any run of instructions just before a SYSCALL that
//! can execute unchanged at another address (register and stack moves,
//! `xor eax, eax` — read(2) is number 0 —, `mov eax, r8d` in glibc's
//! `syscall()`), once they add up to five bytes: they move into the
//! trampoline. The SYSCALL stays, so code that jumps straight to it still
//! works (through the trap), and the call returns after it, in the
//! program's own code.
//!
//! This is safe only if those bytes really are whole instructions (a
//! `41 b8 …` — mov r8d, imm32 — ends in the same bytes as a `mov eax`) and
//! nothing jumps into the middle of them. So the enclosing function is found
//! in the ELF's `.eh_frame_hdr` table and decoded from its first
//! instruction ([`crate::syscall::x86len`]); the site is taken only when the
//! decoding reaches the SYSCALL exactly (a boundary the CPU has just proven
//! by executing it), every moved instruction is of a known position-free
//! form, and no relative jump of the function lands inside the moved bytes
//! (a function with an indirect jump is left alone). Objects without unwind
//! tables (Go binaries) are left alone.

/// What the check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Site {
    /// Link-time address of the first instruction that moves into the
    /// trampoline.
    pub start_vaddr: u64,
    /// Bytes from there to the SYSCALL (up to [`MAX_MOVED`]).
    pub len: u8,
    /// Bytes of instructions after the SYSCALL that move too (0: none; the
    /// moved bytes before it are then at least five). When the bytes before
    /// are fewer than five, the jump also covers the SYSCALL and these
    /// instructions, and the call returns into the trampoline, which runs
    /// them and jumps back after them.
    pub after: u8,
    /// The system-call number, when the moved instructions are one
    /// `mov eax, imm32` (otherwise the number is computed at run time).
    pub number: Option<u32>,
}

/// The most bytes of instructions before a SYSCALL moved into a trampoline.
pub const MAX_MOVED: usize = 16;

/// The most bytes of instructions after a SYSCALL moved into a trampoline.
pub const MAX_AFTER: usize = 8;

/// Whether the instruction `insn` runs the same at any address: a move,
/// load, store, `lea` or two-operand arithmetic of a known opcode, without
/// prefixes other than REX, without a RIP-relative operand — nothing that
/// branches or depends on where it sits.
fn movable(insn: &[u8]) -> bool {
    let rex = insn.first().is_some_and(|b| (0x40..=0x4f).contains(b));
    let at = usize::from(rex);
    let Some(&op) = insn.get(at) else {
        return false;
    };
    let not_rip_relative = |modrm: u8| !(modrm >> 6 == 0 && modrm & 7 == 5);
    match op {
        0xb8..=0xbf => true, // mov reg, imm
        // add/or/adc/sbb/and/sub/xor/cmp/test with the accumulator and an
        // immediate (glibc's `cmp rax, -4096` after a SYSCALL)
        0x04 | 0x05 | 0x0c | 0x0d | 0x14 | 0x15 | 0x1c | 0x1d | 0x24 | 0x25 | 0x2c | 0x2d
        | 0x34 | 0x35 | 0x3c | 0x3d | 0xa8 | 0xa9 => true,
        0x01
        | 0x03
        | 0x09
        | 0x0b
        | 0x21
        | 0x23
        | 0x29
        | 0x2b
        | 0x31
        | 0x33
        | 0x39
        | 0x3b
        | 0x63
        | 0x85
        | 0x88..=0x8b
        | 0x8d => insn.get(at + 1).is_some_and(|&m| not_rip_relative(m)),
        // mov r/m, imm32 (C7 /0; C7 F8 is XBEGIN, a branch)
        0xc7 => insn
            .get(at + 1)
            .is_some_and(|&m| (m >> 3) & 7 == 0 && not_rip_relative(m)),
        _ => false,
    }
}

/// The targets of the relative jumps of the instruction `insn` at `vaddr`;
/// `Err` for an indirect jump (whose target cannot be known).
fn jump_target(insn: &[u8], vaddr: u64) -> Result<Option<u64>, ()> {
    let mut at = 0;
    while insn.get(at).is_some_and(|b| {
        matches!(
            b,
            0x66 | 0x67 | 0xf2 | 0xf3 | 0x2e | 0x3e | 0x26 | 0x36 | 0x64 | 0x65 | 0xf0
        )
    }) {
        at += 1;
    }
    if insn.get(at).is_some_and(|b| (0x40..=0x4f).contains(b)) {
        at += 1;
    }
    let end = vaddr + insn.len() as u64;
    let rel8 = || end.wrapping_add_signed(i64::from(*insn.last().unwrap_or(&0) as i8));
    let rel32 = || {
        let b = insn.get(insn.len().saturating_sub(4)..).unwrap_or(&[]);
        let d = b.try_into().map(i32::from_le_bytes).unwrap_or(0);
        end.wrapping_add_signed(i64::from(d))
    };
    Ok(match (insn.get(at), insn.get(at + 1)) {
        (Some(0x70..=0x7f | 0xeb | 0xe0..=0xe3), _) => Some(rel8()),
        (Some(0xe8 | 0xe9), _) => Some(rel32()),
        (Some(0x0f), Some(0x80..=0x8f)) => Some(rel32()),
        (Some(0xff), Some(m)) if matches!((m >> 3) & 7, 4 | 5) => return Err(()),
        _ => None,
    })
}

/// A relative jump that can move if re-aimed: `jmp rel8/rel32` or
/// `jcc rel8/rel32`, without prefixes. Returns its condition code (`None`:
/// unconditional) and its displacement.
fn relative_branch(insn: &[u8]) -> Option<(Option<u8>, i32)> {
    match *insn {
        [0xeb, d] => Some((None, i32::from(d as i8))),
        [0xe9, a, b, c, d] => Some((None, i32::from_le_bytes([a, b, c, d]))),
        [op @ 0x70..=0x7f, d] => Some((Some(op & 0xf), i32::from(d as i8))),
        [0x0f, op @ 0x80..=0x8f, a, b, c, d] => {
            Some((Some(op & 0xf), i32::from_le_bytes([a, b, c, d])))
        }
        _ => None,
    }
}

/// Re-encodes the instructions `insns`, taken from address `from`, to run
/// at `to`: position-free ones are copied, a relative jump (which
/// [`check`] lets end them) becomes its rel32 form aimed at the same
/// target. Writes into `out`; returns the length and whether the last one
/// is an unconditional jump (nothing after it runs).
pub fn relocate(insns: &[u8], from: u64, to: u64, out: &mut [u8]) -> Option<(usize, bool)> {
    let (mut read, mut written, mut ends_in_jump) = (0, 0, false);
    while read < insns.len() {
        let n = crate::syscall::x86len::length(insns.get(read..)?)?;
        let insn = insns.get(read..read + n)?;
        if let Some((condition, displacement)) = relative_branch(insn) {
            let target = (from + (read + n) as u64).wrapping_add_signed(i64::from(displacement));
            let encoded: &[u8] = match condition {
                None => &[0xe9],
                Some(cc) => &[0x0f, 0x80 | cc],
            };
            let end = to + (written + encoded.len() + 4) as u64;
            let rel = i32::try_from(target.wrapping_sub(end) as i64).ok()?;
            out.get_mut(written..written + encoded.len())?
                .copy_from_slice(encoded);
            written += encoded.len();
            out.get_mut(written..written + 4)?
                .copy_from_slice(&rel.to_le_bytes());
            written += 4;
            ends_in_jump = condition.is_none();
        } else {
            out.get_mut(written..written + n)?.copy_from_slice(insn);
            written += n;
            ends_in_jump = false;
        }
        read += n;
    }
    Some((written, ends_in_jump))
}

const PT_LOAD: u32 = 1;
const PT_GNU_EH_FRAME: u32 = 0x6474_e550;
/// How far from a function's start the decoding goes at most.
const MAX_FUNCTION: u64 = 256 * 1024;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A program header's fields that matter here.
#[derive(Clone, Copy)]
struct Segment {
    kind: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

fn segments(elf: &[u8]) -> Option<impl Iterator<Item = Segment> + '_> {
    if elf.get(..4)? != b"\x7fELF" || *elf.get(4)? != 2 || *elf.get(5)? != 1 {
        return None;
    }
    let phoff = usize::try_from(u64_at(elf, 32)?).ok()?;
    let entsize = usize::from(u16_at(elf, 54)?);
    let count = usize::from(u16_at(elf, 56)?);
    if entsize < 56 {
        return None;
    }
    Some((0..count).filter_map(move |i| {
        let at = phoff.checked_add(i.checked_mul(entsize)?)?;
        Some(Segment {
            kind: u32_at(elf, at)?,
            flags: u32_at(elf, at + 4)?,
            offset: u64_at(elf, at + 8)?,
            vaddr: u64_at(elf, at + 16)?,
            filesz: u64_at(elf, at + 32)?,
        })
    }))
}

/// The file offset of link-time address `vaddr` (inside a loaded
/// segment's file bytes).
fn file_offset(elf: &[u8], vaddr: u64) -> Option<usize> {
    segments(elf)?
        .filter(|s| s.kind == PT_LOAD)
        .find(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.filesz)
        .and_then(|s| usize::try_from(s.offset + (vaddr - s.vaddr)).ok())
        .filter(|&o| o < elf.len())
}

/// Link-time addresses in the executable segments of `elf` where the
/// bytes of `insn` appear: candidates for [`check_instruction`], which
/// keeps only real instructions (most byte pairs found are parts of
/// others).
pub fn find_bytes(elf: &[u8], insn: [u8; 2]) -> alloc::vec::Vec<u64> {
    const PF_X: u32 = 1;
    let mut found = alloc::vec::Vec::new();
    let Some(segs) = segments(elf) else {
        return found;
    };
    for s in segs.filter(|s| s.kind == PT_LOAD && s.flags & PF_X != 0) {
        let (Ok(from), Ok(len)) = (usize::try_from(s.offset), usize::try_from(s.filesz)) else {
            continue;
        };
        let Some(bytes) = elf.get(from..from.saturating_add(len)) else {
            continue;
        };
        found.extend(
            positions_of(bytes, insn[1])
                .filter(|&i| i > 0 && bytes[i - 1] == insn[0])
                .map(|i| s.vaddr + (i - 1) as u64),
        );
    }
    found
}

/// Where `byte` occurs in `bytes`, eight bytes compared at a time (a
/// program's text is megabytes; most words hold no match).
fn positions_of(bytes: &[u8], byte: u8) -> impl Iterator<Item = usize> + '_ {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let pattern = ONES * u64::from(byte);
    bytes
        .chunks(8)
        .enumerate()
        .filter(move |(_, chunk)| {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            // A zero byte in `x` (a match) sets its high bit here; a
            // false alarm only costs the byte-wise look below.
            let x = u64::from_le_bytes(word) ^ pattern;
            x.wrapping_sub(ONES) & !x & HIGHS != 0
        })
        .flat_map(move |(i, chunk)| {
            chunk
                .iter()
                .enumerate()
                .filter(move |(_, &b)| b == byte)
                .map(move |(j, _)| i * 8 + j)
        })
}

/// The file offset of link-time address `vaddr`.
pub fn file_offset_of(elf: &[u8], vaddr: u64) -> Option<usize> {
    file_offset(elf, vaddr)
}

/// The link-time address of file offset `offset`.
pub fn vaddr_of(elf: &[u8], offset: u64) -> Option<u64> {
    segments(elf)?
        .filter(|s| s.kind == PT_LOAD)
        .find(|s| offset >= s.offset && offset - s.offset < s.filesz)
        .map(|s| s.vaddr + (offset - s.offset))
}

/// Reads an unsigned LEB128 number.
fn uleb(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Size of a DWARF pointer encoding's value (absptr is 8 here).
fn encoded_size(enc: u8) -> Option<usize> {
    match enc & 0x0f {
        0x0 | 0x4 | 0xc => Some(8),
        0x2 | 0xa => Some(2),
        0x3 | 0xb => Some(4),
        _ => None,
    }
}

/// The FDE pointer encoding a CIE declares (its 'R' augmentation).
fn cie_fde_encoding(elf: &[u8], cie: usize) -> Option<u8> {
    let len = u32_at(elf, cie)?;
    if len == 0 || len == u32::MAX || u32_at(elf, cie + 4)? != 0 {
        return None;
    }
    let mut at = cie + 9;
    let aug_start = at;
    while *elf.get(at)? != 0 {
        at += 1;
    }
    let aug = elf.get(aug_start..at)?;
    at += 1;
    uleb(elf, &mut at)?; // code alignment
    uleb(elf, &mut at)?; // data alignment (sleb; only skipped)
    if *elf.get(cie + 8)? == 1 {
        at += 1; // return address register (a byte in version 1)
    } else {
        uleb(elf, &mut at)?;
    }
    if aug.first() != Some(&b'z') {
        return Some(0); // absptr
    }
    uleb(elf, &mut at)?; // augmentation data length
    for &c in &aug[1..] {
        match c {
            b'R' => return elf.get(at).copied(),
            b'P' => {
                let enc = *elf.get(at)?;
                at += 1 + encoded_size(enc)?;
            }
            b'L' => at += 1,
            b'S' | b'B' => {}
            _ => return None,
        }
    }
    Some(0)
}

/// The function `[start, end)` containing link-time address `vaddr`,
/// from the binary-search table of `.eh_frame_hdr`.
pub fn function_at(elf: &[u8], vaddr: u64) -> Option<(u64, u64)> {
    let hdr_seg = segments(elf)?.find(|s| s.kind == PT_GNU_EH_FRAME)?;
    let hdr = usize::try_from(hdr_seg.offset).ok()?;
    let (version, ptr_enc, count_enc, table_enc) = (
        *elf.get(hdr)?,
        *elf.get(hdr + 1)?,
        *elf.get(hdr + 2)?,
        *elf.get(hdr + 3)?,
    );
    // The layout every GNU toolchain writes: a udata4 count and a
    // datarel|sdata4 table.
    if version != 1 || count_enc != 0x03 || table_enc != 0x3b {
        return None;
    }
    let count_at = hdr + 4 + encoded_size(ptr_enc)?;
    let count = u32_at(elf, count_at)? as usize;
    let table = count_at + 4;
    let entry = |i: usize| -> Option<(u64, u64)> {
        let init = u32_at(elf, table + i * 8)? as i32;
        let fde = u32_at(elf, table + i * 8 + 4)? as i32;
        Some((
            hdr_seg.vaddr.wrapping_add(init as i64 as u64),
            hdr_seg.vaddr.wrapping_add(fde as i64 as u64),
        ))
    };
    // The last entry whose start is at or below `vaddr`.
    let (mut lo, mut hi) = (0usize, count);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if entry(mid)?.0 <= vaddr {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let (start, fde_vaddr) = entry(lo.checked_sub(1)?)?;
    // The FDE gives the function's length.
    let (begin, end) = fde_range(elf, file_offset(elf, fde_vaddr)?, fde_vaddr, &mut None)?;
    (begin == start && vaddr >= start && vaddr < end).then_some((start, end))
}

/// Reads a value of pointer encoding `enc`'s format at `at`.
fn read_encoded(elf: &[u8], at: usize, enc: u8) -> Option<u64> {
    Some(match enc & 0x0f {
        0x0 | 0x4 | 0xc => u64_at(elf, at)?,
        0x2 => u64::from(u16_at(elf, at)?),
        0xa => u16_at(elf, at)? as i16 as i64 as u64,
        0x3 => u64::from(u32_at(elf, at)?),
        0xb => u32_at(elf, at)? as i32 as i64 as u64,
        _ => return None,
    })
}

/// The `[begin, end)` an FDE (at file offset `fde`, link-time address
/// `fde_vaddr`) covers. `cache` remembers the last CIE's encoding (most
/// FDEs of a file share one CIE).
fn fde_range(
    elf: &[u8],
    fde: usize,
    fde_vaddr: u64,
    cache: &mut Option<(usize, u8)>,
) -> Option<(u64, u64)> {
    if u32_at(elf, fde)? == u32::MAX {
        return None; // 64-bit DWARF: not written for x86-64 code
    }
    let cie_ptr = u32_at(elf, fde + 4)? as usize;
    let cie = (fde + 4).checked_sub(cie_ptr)?;
    let enc = match *cache {
        Some((c, enc)) if c == cie => enc,
        _ => {
            let enc = cie_fde_encoding(elf, cie)?;
            *cache = Some((cie, enc));
            enc
        }
    };
    let size = encoded_size(enc)?;
    let raw = read_encoded(elf, fde + 8, enc)?;
    let begin = match enc & 0x70 {
        0x00 => raw,
        0x10 => (fde_vaddr + 8).wrapping_add(raw), // pcrel
        _ => return None,
    };
    let range = read_encoded(elf, fde + 8 + size, enc & 0x0f)?;
    Some((begin, begin.checked_add(range)?))
}

/// The `.eh_frame` section: (file offset, size, link-time address), from
/// the section headers (static binaries have no `.eh_frame_hdr`).
fn eh_frame_section(elf: &[u8]) -> Option<(usize, usize, u64)> {
    let shoff = usize::try_from(u64_at(elf, 40)?).ok()?;
    let entsize = usize::from(u16_at(elf, 58)?);
    let count = usize::from(u16_at(elf, 60)?);
    let strndx = usize::from(u16_at(elf, 62)?);
    if entsize < 64 || shoff == 0 {
        return None;
    }
    let field = |i: usize, at: usize| u64_at(elf, shoff + i * entsize + at);
    let names = usize::try_from(field(strndx, 24)?).ok()?;
    (0..count).find_map(|i| {
        let name = names + u32_at(elf, shoff + i * entsize)? as usize;
        if elf.get(name..name + 10)? != b".eh_frame\0" {
            return None;
        }
        Some((
            usize::try_from(field(i, 24)?).ok()?,
            usize::try_from(field(i, 32)?).ok()?,
            field(i, 16)?,
        ))
    })
}

/// The function containing `vaddr`, by scanning every FDE of `.eh_frame`.
fn function_by_scan(elf: &[u8], vaddr: u64) -> Option<(u64, u64)> {
    let (start, size, section_vaddr) = eh_frame_section(elf)?;
    let end = start.checked_add(size)?.min(elf.len());
    let mut at = start;
    let mut cache = None;
    while at + 8 <= end {
        let len = u32_at(elf, at)? as usize;
        if len == 0 || len == u32::MAX as usize {
            break;
        }
        if u32_at(elf, at + 4)? != 0 {
            let fde_vaddr = section_vaddr + (at - start) as u64;
            if let Some((b, e)) = fde_range(elf, at, fde_vaddr, &mut cache) {
                if vaddr >= b && vaddr < e {
                    return Some((b, e));
                }
            }
        }
        at += 4 + len;
    }
    None
}

/// Whether a relative jump of the function `[start, end)` lands strictly
/// between `from` and `to`; `None` when the function cannot be decoded to
/// its end or has an indirect jump.
fn jumps_between(elf: &[u8], (start, end): (u64, u64), from: u64, to: u64) -> Option<bool> {
    let first = file_offset(elf, start)?;
    let last = file_offset(elf, end - 1)? + 1;
    let mut at = first;
    while at < last {
        let n = crate::syscall::x86len::length(
            elf.get(at..(at + crate::syscall::x86len::MAX_LEN).min(elf.len()))?,
        )?;
        let vaddr = start + (at - first) as u64;
        if let Some(target) = jump_target(elf.get(at..at + n)?, vaddr).ok()? {
            if target > from && target < to {
                return Some(true);
            }
        }
        at += n;
    }
    Some(false)
}

/// The SYSCALL instruction.
pub const SYSCALL: [u8; 2] = [0x0f, 0x05];
/// The CPUID instruction: on PVM the host emulates each one (~20 µs); the
/// kernel can answer from a table instead (see `syscall::rewrite`).
pub const CPUID: [u8; 2] = [0x0f, 0xa2];

/// Checks the SYSCALL at link-time address `syscall_vaddr` of the ELF file
/// `elf`: the run of instructions before it that can move into a
/// trampoline, if there is one.
pub fn check(elf: &[u8], syscall_vaddr: u64) -> Option<Site> {
    check_instruction(elf, syscall_vaddr, SYSCALL)
}

/// [`check`] for the two-byte instruction `insn` ([`SYSCALL`] or
/// [`CPUID`]) at link-time address `syscall_vaddr`.
pub fn check_instruction(elf: &[u8], syscall_vaddr: u64, insn: [u8; 2]) -> Option<Site> {
    let site = file_offset(elf, syscall_vaddr)?;
    if elf.get(site..site + 2)? != insn {
        return None;
    }
    let function = |vaddr| function_at(elf, vaddr).or_else(|| function_by_scan(elf, vaddr));
    // glibc's clone3 ends its unwind range right at the SYSCALL (the
    // child must not unwind past it): that range holds the moved bytes,
    // and nothing after the SYSCALL may move.
    let (start, end, may_take_after) = match function(syscall_vaddr) {
        Some((start, end)) => (start, end, true),
        None => match function(syscall_vaddr.checked_sub(1)?)? {
            (start, end) if end == syscall_vaddr => (start, end, false),
            _ => return None,
        },
    };
    if syscall_vaddr - start > MAX_FUNCTION || end - start > MAX_FUNCTION {
        return None;
    }
    let first = file_offset(elf, start)?;
    let decode = |at: usize| {
        crate::syscall::x86len::length(
            elf.get(at..(at + crate::syscall::x86len::MAX_LEN).min(elf.len()))?,
        )
    };
    // Instruction boundaries up to the SYSCALL, the last few kept.
    let mut at = first;
    let mut recent = [0usize; MAX_MOVED];
    let mut count = 0;
    while at < site {
        recent[count % MAX_MOVED] = at;
        count += 1;
        at += decode(at)?;
    }
    if at != site {
        return None;
    }
    // Take instructions backwards from the SYSCALL until five bytes.
    let mut moved_from = site;
    for k in 1..=count.min(MAX_MOVED) {
        let insn_at = recent[(count - k) % MAX_MOVED];
        if site - insn_at > MAX_MOVED || !movable(elf.get(insn_at..moved_from)?) {
            break;
        }
        moved_from = insn_at;
        if site - moved_from >= 5 {
            break;
        }
    }
    let len = site - moved_from;
    // Fewer than five: the SYSCALL and at least one instruction after it
    // move too (`after` > 0 marks that form). A relative jump may end
    // them (glibc's thread exit loops back over `syscall; jmp`): it is
    // re-aimed from the trampoline.
    let mut after = 0;
    if len < 5 && !may_take_after {
        return None;
    }
    while len < 5 && (after == 0 || len + 2 + after < 5) {
        let at = site + 2 + after;
        let n = decode(at)?;
        let insn = elf.get(at..at + n)?;
        let branch = relative_branch(insn).is_some();
        if !(movable(insn) || branch) || after + n > MAX_AFTER {
            return None;
        }
        after += n;
        if branch && len + 2 + after < 5 {
            return None;
        }
    }
    let from_vaddr = syscall_vaddr - len as u64;
    // Nothing in the function may jump into the moved bytes (between two
    // of its instructions: one instruction has no inside to jump to; with
    // instructions after it, the SYSCALL itself is inside).
    let (inside_end, single) = if after == 0 {
        (syscall_vaddr, decode(moved_from)? == len)
    } else {
        (syscall_vaddr + 2 + after as u64, false)
    };
    if !single && jumps_between(elf, (start, end), from_vaddr, inside_end)? {
        return None;
    }
    let number = (insn == SYSCALL && len == 5 && after == 0 && elf[moved_from] == 0xb8)
        .then(|| u32_at(elf, moved_from + 1))
        .flatten();
    Some(Site {
        start_vaddr: from_vaddr,
        len: len as u8,
        after: after as u8,
        number,
    })
}

/// The pax record in which the image builder lists an ELF file's CPUID
/// sites (docs/image-format.md), so that the kernel need not read the
/// whole of the file's code to find them at each exec: reading a static
/// program's code cost about as many exits as the CPUIDs it spared. An
/// extended attribute of the file as far as other tar readers go
/// (`user.kiln.cpuid`): they ignore it silently, or restore it as such.
pub const CPUID_RECORD: &str = "SCHILY.xattr.user.kiln.cpuid";

/// The CPUID instructions of `elf` that [`check_instruction`] can move into
/// a trampoline: (link-time address of the CPUID, what moves), in address
/// order.
pub fn cpuid_sites(elf: &[u8]) -> alloc::vec::Vec<(u64, Site)> {
    find_bytes(elf, CPUID)
        .into_iter()
        .filter_map(|at| Some((at, check_instruction(elf, at, CPUID)?)))
        .collect()
}

/// `sites` as the text of a [`CPUID_RECORD`] record: `VADDR:LEN:AFTER` per
/// site (the address in hex), separated by spaces.
pub fn encode_sites(sites: &[(u64, Site)]) -> alloc::string::String {
    use core::fmt::Write;
    let mut text = alloc::string::String::new();
    for (i, (at, site)) in sites.iter().enumerate() {
        let sep = if i == 0 { "" } else { " " };
        let _ = write!(text, "{sep}{at:x}:{}:{}", site.len, site.after);
    }
    text
}

/// Parses [`encode_sites`]'s text; `None` when it is malformed or a site
/// could not be one (more bytes moved than a trampoline takes, fewer than a
/// jump needs, sites out of order or overlapping).
pub fn decode_sites(text: &str) -> Option<alloc::vec::Vec<(u64, Site)>> {
    let mut sites = alloc::vec::Vec::new();
    let mut end = 0u64;
    for item in text.split(' ').filter(|t| !t.is_empty()) {
        let mut parts = item.split(':');
        let at = u64::from_str_radix(parts.next()?, 16).ok()?;
        let len: u8 = parts.next()?.parse().ok()?;
        let after: u8 = parts.next()?.parse().ok()?;
        if parts.next().is_some()
            || usize::from(len) > MAX_MOVED
            || usize::from(after) > MAX_AFTER
            || usize::from(len) + 2 + usize::from(after) < 5
            || (len < 5 && after == 0)
        {
            return None;
        }
        let start_vaddr = at.checked_sub(u64::from(len))?;
        if start_vaddr < end {
            return None;
        }
        end = at.checked_add(2 + u64::from(after))?;
        sites.push((
            at,
            Site {
                start_vaddr,
                len,
                after,
                number: None,
            },
        ));
    }
    Some(sites)
}

/// Whether the bytes of `insn` are at link-time address `vaddr` of `elf`.
pub fn has_instruction_at(elf: &[u8], vaddr: u64, insn: [u8; 2]) -> bool {
    file_offset(elf, vaddr).is_some_and(|at| elf.get(at..at + 2) == Some(&insn[..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::string::String;
    use std::vec::Vec;

    /// Addresses where objdump's instructions start.
    type InstructionStarts = std::collections::BTreeSet<u64>;

    /// objdump's view: (address of every SYSCALL, whether the instruction
    /// before it is `mov $imm,%eax` with opcode b8), and the address of
    /// every instruction.
    fn syscalls(path: &str) -> Option<(Vec<(u64, bool)>, InstructionStarts)> {
        let out = Command::new("objdump")
            .args(["-d", "--insn-width=16", path])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut found = Vec::new();
        let mut starts = std::collections::BTreeSet::new();
        let mut previous_is_mov = false;
        for line in text.lines() {
            let mut parts = line.split('\t');
            let (Some(addr), Some(hex), Some(insn)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Ok(addr) = u64::from_str_radix(addr.trim().trim_end_matches(':'), 16) else {
                continue;
            };
            starts.insert(addr);
            if insn.trim() == "syscall" {
                found.push((addr, previous_is_mov));
            }
            previous_is_mov = hex.trim().starts_with("b8 ") && hex.split_whitespace().count() == 5;
        }
        Some((found, starts))
    }

    #[test]
    fn cpuid_site_lists_round_trip_and_refuse_what_cannot_be_a_site() {
        let Ok(elf) = std::fs::read("/lib64/ld-linux-x86-64.so.2") else {
            return;
        };
        let sites = cpuid_sites(&elf);
        assert!(
            sites.len() > 10,
            "glibc's loader asks CPUID often: {sites:?}"
        );
        assert!(sites
            .iter()
            .all(|&(at, _)| has_instruction_at(&elf, at, CPUID)));
        assert_eq!(decode_sites(&encode_sites(&sites)), Some(sites.clone()));
        assert_eq!(decode_sites(""), Some(Vec::new()));
        for bad in [
            "x:5:0",
            "1000:5",
            "1000:5:0:1",
            "1000:17:0",
            "1000:2:9",
            "1000:2:0",
            "1000:1:1",
            "3:5:0",
            "1000:5:0 1001:5:0",
            "ffffffffffffffff:5:1",
        ] {
            assert_eq!(decode_sites(bad), None, "{bad}");
        }
        assert!(!has_instruction_at(&elf, sites[0].0 + 1, CPUID));
    }

    fn check_file(path: &str) -> (usize, usize) {
        let Ok(elf) = std::fs::read(path) else {
            return (0, 0);
        };
        let Some((sites, starts)) = syscalls(path) else {
            return (0, 0);
        };
        let mut taken = 0;
        for &(addr, mov_before) in &sites {
            let got = check(&elf, addr);
            if let Some(s) = got {
                // The moved bytes end at the SYSCALL; a lone `mov eax` is
                // recognised as such.
                assert_eq!(s.start_vaddr + u64::from(s.len), addr);
                assert!(
                    starts.contains(&s.start_vaddr),
                    "{path}: {addr:#x}: the moved bytes start inside an instruction"
                );
                assert!(s.len as usize <= MAX_MOVED && s.after as usize <= MAX_AFTER);
                assert!(s.len + 2 + s.after >= 5);
                if s.after > 0 {
                    assert!(s.len < 5);
                    assert!(
                        starts.contains(&(addr + 2 + u64::from(s.after))),
                        "{path}: {addr:#x}: the moved bytes after it end inside an instruction"
                    );
                }
                if s.number.is_some() {
                    assert!(mov_before, "{path}: {addr:#x} number without a mov");
                }
                taken += 1;
            }
        }
        // Addresses that are not SYSCALLs are never taken.
        for &(addr, _) in sites.iter().take(50) {
            assert_eq!(check(&elf, addr + 1), None);
            assert_eq!(check(&elf, addr - 5), None);
        }
        (taken, sites.len())
    }

    #[test]
    fn finds_the_rewritable_syscalls_of_real_binaries() {
        for path in ["/lib/x86_64-linux-gnu/libc.so.6", "/bin/busybox"] {
            let (taken, total) = check_file(path);
            if total == 0 {
                std::eprintln!("skipping {path}: objdump or the file is unavailable");
                continue;
            }
            // Most of glibc's SYSCALLs follow `mov eax, imm32` or other
            // movable instructions.
            assert!(taken * 2 > total, "{path}: {taken} of {total}");
        }
    }

    #[test]
    fn finds_the_movable_cpuid_sites_of_the_dynamic_loader() {
        let path = "/lib64/ld-linux-x86-64.so.2";
        let (Ok(elf), Ok(out)) = (
            std::fs::read(path),
            Command::new("objdump").args(["-d", path]).output(),
        ) else {
            std::eprintln!("skipping: objdump or {path} is unavailable");
            return;
        };
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let cpuids: std::collections::BTreeSet<u64> = text
            .lines()
            .filter(|l| l.trim_end().ends_with("cpuid"))
            .filter_map(|l| u64::from_str_radix(l.split(':').next()?.trim(), 16).ok())
            .collect();
        let found = find_bytes(&elf, CPUID);
        let taken: Vec<u64> = found
            .iter()
            .copied()
            .filter(|&at| check_instruction(&elf, at, CPUID).is_some())
            .collect();
        // Every byte pair taken is a real CPUID instruction, and most of
        // the loader's are taken (glibc loads the leaf just before).
        assert!(taken.iter().all(|at| cpuids.contains(at)), "{taken:x?}");
        assert!(
            taken.len() * 2 > cpuids.len(),
            "{} of {}",
            taken.len(),
            cpuids.len()
        );
        // A SYSCALL check never takes a CPUID, nor the other way round.
        assert!(taken.iter().all(|&at| check(&elf, at).is_none()));
    }

    /// A minimal ELF: `code` at 0x1000 as one function with an FDE, its
    /// SYSCALL at `0x1000 + syscall_at`.
    fn tiny_elf(code: &[u8]) -> Vec<u8> {
        let mut e = std::vec![0u8; 0x4000];
        e[..4].copy_from_slice(b"\x7fELF");
        e[4] = 2;
        e[5] = 1;
        e[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        e[54..56].copy_from_slice(&56u16.to_le_bytes());
        e[56..58].copy_from_slice(&2u16.to_le_bytes());
        let phdr = |e: &mut Vec<u8>, at: usize, kind: u32, off: u64, size: u64| {
            e[at..at + 4].copy_from_slice(&kind.to_le_bytes());
            e[at + 8..at + 16].copy_from_slice(&off.to_le_bytes());
            e[at + 16..at + 24].copy_from_slice(&off.to_le_bytes());
            e[at + 32..at + 40].copy_from_slice(&size.to_le_bytes());
        };
        phdr(&mut e, 64, PT_LOAD, 0, 0x4000);
        phdr(&mut e, 120, PT_GNU_EH_FRAME, 0x3000, 0x20);
        e[0x1000..0x1000 + code.len()].copy_from_slice(code);
        // CIE at 0x2000: version 1, "zR", code 1, data -8, ra 16, R = pcrel|sdata4.
        let cie: &[u8] = &[1, b'z', b'R', 0, 1, 0x78, 16, 1, 0x1b, 0, 0, 0];
        e[0x2000..0x2004].copy_from_slice(&((4 + cie.len()) as u32).to_le_bytes());
        e[0x2008..0x2008 + cie.len()].copy_from_slice(cie);
        // FDE at 0x2020: pc_begin (pcrel) -> 0x1000, range = code length.
        let fde = 0x2020usize;
        e[fde..fde + 4].copy_from_slice(&16u32.to_le_bytes());
        e[fde + 4..fde + 8].copy_from_slice(&((fde + 4 - 0x2000) as u32).to_le_bytes());
        let rel = 0x1000i64 - (fde as i64 + 8);
        e[fde + 8..fde + 12].copy_from_slice(&(rel as i32).to_le_bytes());
        e[fde + 12..fde + 16].copy_from_slice(&(code.len() as u32).to_le_bytes());
        // .eh_frame_hdr at 0x3000 with one table entry.
        e[0x3000..0x3004].copy_from_slice(&[1, 0x1b, 0x03, 0x3b]);
        e[0x3004..0x3008].copy_from_slice(&(0x2000i32 - 0x3004).to_le_bytes());
        e[0x3008..0x300c].copy_from_slice(&1u32.to_le_bytes());
        e[0x300c..0x3010].copy_from_slice(&(0x1000i32 - 0x3000).to_le_bytes());
        e[0x3010..0x3014].copy_from_slice(&((fde as i32) - 0x3000).to_le_bytes());
        e
    }

    #[test]
    fn takes_a_real_mov_and_refuses_one_inside_a_longer_instruction() {
        // push rbx; mov eax, 39; syscall; pop rbx; ret
        let good = tiny_elf(&[0x53, 0xb8, 39, 0, 0, 0, 0x0f, 0x05, 0x5b, 0xc3]);
        assert_eq!(function_at(&good, 0x1006), Some((0x1000, 0x100a)));
        assert_eq!(
            check(&good, 0x1006),
            Some(Site {
                start_vaddr: 0x1001,
                len: 5,
                after: 0,
                number: Some(39)
            })
        );
        // push rbx; mov r8d, 9; syscall: the bytes "b8 09 00 00 00" before
        // the SYSCALL are the tail of a 6-byte instruction, which moves
        // whole (and is not taken for a `mov eax`).
        let r8 = tiny_elf(&[0x53, 0x41, 0xb8, 9, 0, 0, 0, 0x0f, 0x05, 0x5b, 0xc3]);
        assert_eq!(
            check(&r8, 0x1007),
            Some(Site {
                start_vaddr: 0x1001,
                len: 6,
                after: 0,
                number: None
            })
        );
        // jmp short over nothing; mov r8d, 9: a branch cannot move.
        let branch = tiny_elf(&[0xeb, 0x00, 0x41, 0xb8, 9, 0, 0, 0, 0x0f, 0x05, 0xc3]);
        assert_eq!(check(&branch, 0x1008).map(|s| s.start_vaddr), Some(0x1002));
        let short_after_branch = tiny_elf(&[0xeb, 0x00, 0x31, 0xc0, 0x0f, 0x05, 0xc3]);
        assert_eq!(check(&short_after_branch, 0x1004), None);
        // push rbx; mov edi, [rsp+8]; xor eax, eax; syscall; pop rbx; ret:
        // six bytes of two movable instructions (read's shape).
        let read = tiny_elf(&[
            0x53, 0x8b, 0x7c, 0x24, 0x08, 0x31, 0xc0, 0x0f, 0x05, 0x5b, 0xc3,
        ]);
        assert_eq!(
            check(&read, 0x1007),
            Some(Site {
                start_vaddr: 0x1001,
                len: 6,
                after: 0,
                number: None
            })
        );
        // The same with a jump to the xor: refused.
        let jumped = tiny_elf(&[
            0x53, 0x8b, 0x7c, 0x24, 0x08, 0x31, 0xc0, 0x0f, 0x05, 0x5b, 0xeb, 0xf9, 0xc3,
        ]);
        assert_eq!(check(&jumped, 0x1007), None);
        // push rbx; mov edi, [rip+0]; xor eax, eax; syscall: a RIP-relative
        // load cannot move.
        let rip = tiny_elf(&[
            0x53, 0x8b, 0x3d, 0, 0, 0, 0, 0x31, 0xc0, 0x0f, 0x05, 0x5b, 0xc3,
        ]);
        assert_eq!(check(&rip, 0x1009), None);
        // push rbx; xor eax, eax; syscall; pop rbx: two bytes before, and
        // pop cannot move.
        let short = tiny_elf(&[0x53, 0x31, 0xc0, 0x0f, 0x05, 0x5b, 0xc3]);
        assert_eq!(check(&short, 0x1003), None);
        // read's single-threaded path: cmp byte [rip+d], 0; je; xor eax,
        // eax; syscall; cmp rax, -4096; ja; ret; ret: the xor, the SYSCALL
        // and the cmp move.
        let fast = tiny_elf(&[
            0x80, 0x3d, 0, 0, 0, 0, 0, 0x74, 0x0c, 0x31, 0xc0, 0x0f, 0x05, 0x48, 0x3d, 0x00, 0xf0,
            0xff, 0xff, 0x77, 0x01, 0xc3, 0xc3,
        ]);
        assert_eq!(
            check(&fast, 0x100b),
            Some(Site {
                start_vaddr: 0x1009,
                len: 2,
                after: 6,
                number: None
            })
        );
        // glibc's thread exit: xor edi, edi; mov eax, edx; syscall; jmp
        // back: four bytes before, and the jump after moves re-aimed (it
        // lands on the first moved byte, which is not inside them).
        let exit = tiny_elf(&[0x31, 0xff, 0x89, 0xd0, 0x0f, 0x05, 0xeb, 0xf8]);
        assert_eq!(
            check(&exit, 0x1004),
            Some(Site {
                start_vaddr: 0x1000,
                len: 4,
                after: 2,
                number: None
            })
        );
        // push rbx; syscall; jne +0; nop: the jump would end the moved
        // bytes at four.
        let early = tiny_elf(&[0x53, 0x0f, 0x05, 0x75, 0x00, 0x90, 0xc3]);
        assert_eq!(check(&early, 0x1001), None);
        // The same with the je aimed at the SYSCALL: refused.
        let mut aimed = fast.clone();
        aimed[0x1008] = 0x02;
        assert_eq!(check(&aimed, 0x100b), None);
        // glibc's clone3: the unwind range ends at the SYSCALL. Taken
        // (from the range before it); with fewer than five bytes, refused.
        let mut clone3 = tiny_elf(&[0x49, 0x89, 0xc8, 0xb8, 0xb3, 1, 0, 0, 0x0f, 0x05, 0xc3]);
        clone3[0x202c..0x2030].copy_from_slice(&8u32.to_le_bytes());
        assert_eq!(
            check(&clone3, 0x1008),
            Some(Site {
                start_vaddr: 0x1003,
                len: 5,
                after: 0,
                number: Some(0x1b3)
            })
        );
        let mut short = tiny_elf(&[
            0x31, 0xc0, 0x0f, 0x05, 0x48, 0x3d, 0, 0xf0, 0xff, 0xff, 0xc3,
        ]);
        short[0x202c..0x2030].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(check(&short, 0x1002), None);
        // Outside every function, or not at a SYSCALL: nothing.
        assert_eq!(check(&good, 0x1008), None);
        assert_eq!(function_at(&good, 0x2000), None);
    }

    #[test]
    fn relocates_moves_as_they_are_and_jumps_re_aimed() {
        let mut out = [0u8; 32];
        // cmp rax, -4096; ja +1 (to 0x100b) moved from 0x1000 to 0x5000.
        let code = [0x48, 0x3d, 0x00, 0xf0, 0xff, 0xff, 0x77, 0x03];
        let (n, ends) = relocate(&code, 0x1000, 0x5000, &mut out).unwrap();
        assert_eq!((n, ends), (12, false));
        assert_eq!(out[..6], code[..6]);
        assert_eq!(out[6..8], [0x0f, 0x87]);
        let rel = i32::from_le_bytes(out[8..12].try_into().unwrap());
        assert_eq!(0x500c_u64.wrapping_add_signed(i64::from(rel)), 0x100b);
        // jmp -8 (back to 0x0ffa) from 0x1000: an unconditional jump ends.
        let (n, ends) = relocate(&[0xeb, 0xf8], 0x1000, 0x5000, &mut out).unwrap();
        assert_eq!((n, ends), (5, true));
        let rel = i32::from_le_bytes(out[1..5].try_into().unwrap());
        assert_eq!(
            (out[0], 0x5005_u64.wrapping_add_signed(i64::from(rel))),
            (0xe9, 0x0ffa)
        );
        // Out of reach, or no room: refused.
        assert_eq!(relocate(&[0xeb, 0], 0x1000, 1 << 40, &mut out), None);
        assert_eq!(relocate(&code, 0x1000, 0x5000, &mut out[..8]), None);
    }
}
