//! Length of x86-64 instructions (64-bit mode): enough decoding to walk a
//! function instruction by instruction, which system-call rewriting needs
//! to know that the bytes before a SYSCALL are an instruction of their own.
//!
//! Handles legacy prefixes, REX, the one-byte, 0F, 0F38 and 0F3A opcode
//! maps, VEX, EVEX and XOP, ModRM/SIB/displacements and immediates.
//! Anything it does not recognise (or that is invalid in 64-bit mode) is
//! `None`, so callers fail safe. Checked against objdump on whole
//! binaries (glibc, busybox, Rust programs) by the tests.

/// The longest x86 instruction.
pub const MAX_LEN: usize = 15;

/// Immediate size of an instruction, in bytes (with the operand-size
/// prefix turning 4 into 2).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Imm {
    None,
    B1,
    B2,
    /// imm16/imm32 by operand size (imm32 with REX.W too).
    Z,
    /// enter: imm16 + imm8.
    B3,
}

/// Opcodes of the one-byte map that take a ModRM byte.
fn one_byte_modrm(op: u8) -> bool {
    matches!(op,
        0x00..=0x03 | 0x08..=0x0b | 0x10..=0x13 | 0x18..=0x1b |
        0x20..=0x23 | 0x28..=0x2b | 0x30..=0x33 | 0x38..=0x3b |
        0x63 | 0x69 | 0x6b | 0x80..=0x8f | 0xc0 | 0xc1 | 0xc6 | 0xc7 |
        0xd0..=0xd3 | 0xd8..=0xdf | 0xf6 | 0xf7 | 0xfe | 0xff)
}

/// Immediate of a one-byte-map opcode (F6/F7 are handled with ModRM).
fn one_byte_imm(op: u8) -> Imm {
    match op {
        0x04 | 0x0c | 0x14 | 0x1c | 0x24 | 0x2c | 0x34 | 0x3c => Imm::B1,
        0x05 | 0x0d | 0x15 | 0x1d | 0x25 | 0x2d | 0x35 | 0x3d => Imm::Z,
        0x68 | 0x69 | 0x81 | 0xa9 | 0xc7 | 0xe8 | 0xe9 => Imm::Z,
        0x6a | 0x6b | 0x70..=0x7f | 0x80 | 0x83 | 0xa8 | 0xb0..=0xb7 => Imm::B1,
        0xc0 | 0xc1 | 0xc6 | 0xcd | 0xe0..=0xe7 | 0xeb => Imm::B1,
        0xc2 | 0xca => Imm::B2,
        0xc8 => Imm::B3,
        _ => Imm::None,
    }
}

/// One-byte opcodes that do not exist in 64-bit mode (62, C4, C5 and 8F
/// are EVEX, VEX and XOP escapes there, handled before).
fn invalid_in_64(op: u8) -> bool {
    matches!(
        op,
        0x06 | 0x07
            | 0x0e
            | 0x16
            | 0x17
            | 0x1e
            | 0x1f
            | 0x27
            | 0x2f
            | 0x37
            | 0x3f
            | 0x60
            | 0x61
            | 0x82
            | 0x9a
            | 0xce
            | 0xd4
            | 0xd5
            | 0xd6
            | 0xea
    )
}

/// Opcodes of the 0F map without a ModRM byte.
fn map0f_no_modrm(op: u8) -> bool {
    matches!(op,
        0x05..=0x09 | 0x0b | 0x0e | 0x30..=0x37 | 0x77 | 0x80..=0x8f |
        0xa0..=0xa2 | 0xa8..=0xaa | 0xc8..=0xcf)
}

/// Immediate of a 0F-map opcode (also used for VEX/EVEX map 1).
fn map0f_imm(op: u8) -> Imm {
    match op {
        0x80..=0x8f => Imm::Z,
        0x70..=0x73 | 0xa4 | 0xac | 0xba | 0xc2 | 0xc4..=0xc6 => Imm::B1,
        _ => Imm::None,
    }
}

/// Length of the ModRM byte and what follows it (SIB, displacement),
/// starting at `at`.
fn modrm_len(code: &[u8], at: usize) -> Option<usize> {
    let modrm = *code.get(at)?;
    let (md, rm) = (modrm >> 6, modrm & 7);
    if md == 3 {
        return Some(1);
    }
    let mut len = 1;
    let mut base_is_disp32 = md == 0 && rm == 5;
    if rm == 4 {
        let sib = *code.get(at + 1)?;
        len += 1;
        base_is_disp32 = md == 0 && sib & 7 == 5;
    }
    len += match md {
        1 => 1,
        2 => 4,
        _ if base_is_disp32 => 4,
        _ => 0,
    };
    Some(len)
}

fn imm_len(imm: Imm, opsize16: bool) -> usize {
    match imm {
        Imm::None => 0,
        Imm::B1 => 1,
        Imm::B2 => 2,
        Imm::B3 => 3,
        Imm::Z if opsize16 => 2,
        Imm::Z => 4,
    }
}

/// The length of the instruction at the start of `code`, or `None` when
/// it is truncated, invalid in 64-bit mode or not recognised.
pub fn length(code: &[u8]) -> Option<usize> {
    let mut i = 0;
    let mut opsize16 = false;
    let mut addr32 = false;
    // Legacy prefixes.
    loop {
        match *code.get(i)? {
            0xf0 | 0xf2 | 0xf3 | 0x2e | 0x36 | 0x3e | 0x26 | 0x64 | 0x65 => {}
            0x66 => opsize16 = true,
            0x67 => addr32 = true,
            _ => break,
        }
        i += 1;
        if i >= MAX_LEN {
            return None;
        }
    }
    let mut rex_w = false;
    if let b @ 0x40..=0x4f = *code.get(i)? {
        rex_w = b & 8 != 0;
        i += 1;
    }
    let op = *code.get(i)?;
    i += 1;
    let total = match op {
        0x0f => {
            let op2 = *code.get(i)?;
            i += 1;
            match op2 {
                0x38 => {
                    i += 1; // the opcode
                    i + modrm_len(code, i)?
                }
                0x3a => {
                    i += 1;
                    i + modrm_len(code, i)? + 1
                }
                0x0f => i + modrm_len(code, i)? + 1, // 3DNow!: suffix byte
                _ if map0f_no_modrm(op2) => i + imm_len(map0f_imm(op2), opsize16),
                _ => i + modrm_len(code, i)? + imm_len(map0f_imm(op2), opsize16),
            }
        }
        // VEX (C4: three bytes, C5: two bytes).
        0xc4 | 0xc5 => {
            let map = if op == 0xc4 {
                let m = *code.get(i)? & 0x1f;
                i += 2;
                m
            } else {
                i += 1;
                1
            };
            let vop = *code.get(i)?;
            i += 1;
            if map == 1 && vop == 0x77 {
                i // vzeroupper / vzeroall
            } else {
                let imm = match map {
                    1 => map0f_imm(vop),
                    2 => Imm::None,
                    3 => Imm::B1,
                    _ => return None,
                };
                i + modrm_len(code, i)? + imm_len(imm, false)
            }
        }
        // EVEX.
        0x62 => {
            let map = *code.get(i)? & 7;
            i += 3;
            let eop = *code.get(i)?;
            i += 1;
            let imm = match map {
                1 => map0f_imm(eop),
                2 | 5 | 6 => Imm::None,
                3 => Imm::B1,
                _ => return None,
            };
            i + modrm_len(code, i)? + imm_len(imm, false)
        }
        // XOP (8F with a map field of 8 or more); else POP r/m64.
        0x8f if *code.get(i)? & 0x1f >= 8 => {
            let map = *code.get(i)? & 0x1f;
            i += 3;
            let imm = match map {
                8 => Imm::B1,
                9 => Imm::None,
                0xa => Imm::Z,
                _ => return None,
            };
            i + modrm_len(code, i)? + imm_len(imm, false)
        }
        _ if invalid_in_64(op) => return None,
        0xb8..=0xbf => i + if rex_w { 8 } else { imm_len(Imm::Z, opsize16) },
        0xa0..=0xa3 => i + if addr32 { 4 } else { 8 },
        0xf6 | 0xf7 => {
            let reg = (*code.get(i)? >> 3) & 7;
            let imm = match (op, reg) {
                (0xf6, 0 | 1) => Imm::B1,
                (0xf7, 0 | 1) => Imm::Z,
                _ => Imm::None,
            };
            i + modrm_len(code, i)? + imm_len(imm, opsize16)
        }
        _ if one_byte_modrm(op) => i + modrm_len(code, i)? + imm_len(one_byte_imm(op), opsize16),
        _ => i + imm_len(one_byte_imm(op), opsize16 && !matches!(op, 0xe8 | 0xe9)),
    };
    (total <= MAX_LEN && total <= code.len()).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::vec::Vec;

    #[test]
    fn common_instructions() {
        let cases: &[(&[u8], usize)] = &[
            (&[0x0f, 0x05], 2),                                   // syscall
            (&[0xb8, 0x27, 0, 0, 0], 5),                          // mov eax, 39
            (&[0x48, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8], 10),          // movabs rax, imm64
            (&[0x41, 0xb8, 9, 0, 0, 0], 6),                       // mov r8d, 9
            (&[0x66, 0xb8, 1, 0], 4),                             // mov ax, 1
            (&[0x48, 0x8b, 0x44, 0x24, 0x08], 5),                 // mov rax, [rsp+8]
            (&[0x48, 0x8b, 0x05, 1, 2, 3, 4], 7),                 // mov rax, [rip+disp32]
            (&[0x8b, 0x04, 0x25, 1, 2, 3, 4], 7), // mov eax, [disp32] (SIB, no base)
            (&[0xe8, 1, 2, 3, 4], 5),             // call rel32
            (&[0x0f, 0x84, 1, 2, 3, 4], 6),       // je rel32
            (&[0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff], 6), // cmp rax, -4095
            (&[0xf6, 0x05, 1, 2, 3, 4, 0x10], 7), // test byte [rip+d], 0x10
            (&[0xf7, 0xd8], 2),                   // neg eax
            (&[0xc5, 0xf8, 0x77], 3),             // vzeroupper
            (&[0xc5, 0xfd, 0x6f, 0x06], 4),       // vmovdqa ymm0, [rsi]
            (&[0xc4, 0xe3, 0x7d, 0x39, 0xc1, 0x01], 6), // vextracti128 xmm1, ymm0, 1
            (&[0x62, 0xe1, 0xfe, 0x48, 0x6f, 0x06], 6), // vmovdqu64 zmm16, [rsi]
            (&[0x66, 0x0f, 0x3a, 0x0f, 0xc1, 0x08], 6), // palignr xmm0, xmm1, 8
            (&[0xf3, 0x0f, 0x1e, 0xfa], 4),       // endbr64
            (&[0x66, 0x2e, 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0], 10), // nopw cs:[rax+rax]
            (&[0xc3], 1),
            (&[0xc8, 0x10, 0x00, 0x00], 4), // enter
        ];
        for (bytes, len) in cases {
            assert_eq!(length(bytes), Some(*len), "{bytes:02x?}");
        }
        assert_eq!(length(&[0x06]), None, "push es is invalid in 64-bit mode");
        assert_eq!(length(&[0xe8, 1, 2]), None, "truncated");
        assert_eq!(length(&[0x66; 16]), None, "too many prefixes");
    }

    /// What objdump shows of a `.text` section: its address, its bytes,
    /// and each instruction's address with whether objdump called it "(bad)".
    type Listing = (u64, Vec<u8>, Vec<(u64, bool)>);

    fn objdump(path: &str) -> Option<Listing> {
        let out = Command::new("objdump")
            .args(["-d", "--insn-width=16", "-j", ".text", path])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let text = std::string::String::from_utf8_lossy(&out.stdout).into_owned();
        let mut starts = Vec::new();
        let mut bytes = Vec::new();
        let mut base = None;
        for line in text.lines() {
            let mut parts = line.split('\t');
            let (Some(addr), Some(hex)) = (parts.next(), parts.next()) else {
                continue;
            };
            let bad = parts.next().is_none_or(|m| m.contains("(bad)"));
            let Ok(addr) = u64::from_str_radix(addr.trim().trim_end_matches(':'), 16) else {
                continue;
            };
            if !addr_line(line) {
                continue;
            }
            let b: Vec<u8> = hex
                .split_whitespace()
                .filter_map(|h| u8::from_str_radix(h, 16).ok())
                .collect();
            if b.is_empty() {
                continue;
            }
            let base = *base.get_or_insert(addr);
            if addr != base + bytes.len() as u64 {
                return None; // a gap objdump skipped: compare no further
            }
            starts.push((addr, bad));
            bytes.extend(b);
        }
        Some((base?, bytes, starts))
    }

    fn addr_line(line: &str) -> bool {
        line.starts_with("  ") && line.contains(":\t")
    }

    fn check_binary(path: &str) {
        let Some((base, bytes, starts)) = objdump(path) else {
            std::eprintln!("skipping {path}: objdump or the file is unavailable");
            return;
        };
        let mut at = 0usize;
        let mut checked = 0;
        for (n, &(start, bad)) in starts.iter().enumerate() {
            let off = (start - base) as usize;
            assert_eq!(off, at, "{path}: decoder out of step at {start:#x}");
            let end = starts
                .get(n + 1)
                .map_or(bytes.len(), |&(s, _)| (s - base) as usize);
            // objdump prints "(bad)" for bytes it cannot decode; skip those.
            match length(&bytes[off..]) {
                Some(len) => {
                    assert_eq!(
                        off + len,
                        end,
                        "{path}: length of {:02x?} at {start:#x}",
                        &bytes[off..end]
                    );
                    checked += 1;
                }
                None => assert!(
                    bad,
                    "{path}: no length for {:02x?} at {start:#x}, which objdump decodes",
                    &bytes[off..end]
                ),
            }
            at = end;
        }
        assert!(checked > 1000, "{path}: only {checked} instructions");
    }

    #[test]
    fn agrees_with_objdump_on_whole_binaries() {
        for path in [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib64/ld-linux-x86-64.so.2",
            "/bin/busybox",
            "/usr/bin/gawk",
        ] {
            if std::path::Path::new(path).exists() {
                check_binary(path);
            }
        }
    }
}
