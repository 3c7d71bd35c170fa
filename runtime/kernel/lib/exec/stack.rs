//! The initial program stack, laid out as Linux's `create_elf_tables` does
//! (x86-64 psABI §3.4.1): from the top, the executable's name, the
//! environment and argument strings, the platform string, 16 random bytes,
//! then (16-byte aligned) argc, argv[], NULL, envp[], NULL and the auxiliary
//! vector ending in AT_NULL. This module only builds the bytes; the loader
//! copies them to the top of the stack mapping.

use alloc::vec::Vec;

/// Auxiliary vector keys (`include/uapi/linux/auxvec.h`).
#[allow(missing_docs)]
pub mod at {
    pub const NULL: u64 = 0;
    pub const PHDR: u64 = 3;
    pub const PHENT: u64 = 4;
    pub const PHNUM: u64 = 5;
    pub const PAGESZ: u64 = 6;
    pub const BASE: u64 = 7;
    pub const FLAGS: u64 = 8;
    pub const ENTRY: u64 = 9;
    pub const UID: u64 = 11;
    pub const EUID: u64 = 12;
    pub const GID: u64 = 13;
    pub const EGID: u64 = 14;
    pub const PLATFORM: u64 = 15;
    pub const HWCAP: u64 = 16;
    pub const CLKTCK: u64 = 17;
    pub const SECURE: u64 = 23;
    pub const RANDOM: u64 = 25;
    pub const HWCAP2: u64 = 26;
    pub const EXECFN: u64 = 31;
    pub const SYSINFO_EHDR: u64 = 33;
    pub const MINSIGSTKSZ: u64 = 51;
}

/// The platform string Linux reports on x86-64 (AT_PLATFORM).
pub const PLATFORM: &[u8] = b"x86_64";

/// Inputs of the stack image.
pub struct StackSpec<'a> {
    /// Address just past the top of the stack mapping.
    pub top: u64,
    /// Argument strings (`argv[0]` first), without terminating NULs.
    pub argv: &'a [&'a [u8]],
    /// Environment strings (`NAME=value`).
    pub envp: &'a [&'a [u8]],
    /// The executable's path (AT_EXECFN).
    pub execfn: &'a [u8],
    /// 16 random bytes (AT_RANDOM, glibc's stack-protector canary source).
    pub random: [u8; 16],
    /// Auxiliary entries other than those this module fills in (AT_RANDOM,
    /// AT_EXECFN, AT_PLATFORM and the AT_NULL terminator).
    pub auxv: &'a [(u64, u64)],
}

/// A built stack: `bytes` go at `[sp, top)`.
pub struct StackImage {
    /// The stack contents from `sp` up to `top`.
    pub bytes: Vec<u8>,
    /// The initial stack pointer (points at argc, 16-byte aligned).
    pub sp: u64,
}

/// Builds the initial stack for `spec`.
pub fn build(spec: &StackSpec<'_>) -> StackImage {
    // Strings are placed downward from the top; `strings` collects them in
    // address order once their total size is known.
    let mut cursor = spec.top - 8; // a NULL word at the very top, as Linux leaves
    let mut place = |s: &[u8]| {
        cursor -= s.len() as u64 + 1;
        cursor
    };
    let execfn_at = place(spec.execfn);
    let env_at: Vec<u64> = spec.envp.iter().rev().map(|s| place(s)).collect();
    let arg_at: Vec<u64> = spec.argv.iter().rev().map(|s| place(s)).collect();
    let platform_at = place(PLATFORM);
    let strings_low = cursor;
    let random_at = (strings_low - 16) & !0xf;

    let mut auxv: Vec<(u64, u64)> = spec.auxv.to_vec();
    auxv.push((at::RANDOM, random_at));
    auxv.push((at::EXECFN, execfn_at));
    auxv.push((at::PLATFORM, platform_at));
    auxv.push((at::NULL, 0));

    let words = 1 + spec.argv.len() + 1 + spec.envp.len() + 1 + auxv.len() * 2;
    let sp = (random_at - words as u64 * 8) & !0xf;

    let mut bytes = alloc::vec![0u8; (spec.top - sp) as usize];
    let mut put = |addr: u64, data: &[u8]| {
        let at = (addr - sp) as usize;
        bytes[at..at + data.len()].copy_from_slice(data);
    };
    put(execfn_at, spec.execfn);
    for (s, at) in spec.envp.iter().rev().zip(&env_at) {
        put(*at, s);
    }
    for (s, at) in spec.argv.iter().rev().zip(&arg_at) {
        put(*at, s);
    }
    put(platform_at, PLATFORM);
    put(random_at, &spec.random);

    let mut words_out: Vec<u64> = Vec::with_capacity(words);
    words_out.push(spec.argv.len() as u64);
    words_out.extend(arg_at.iter().rev());
    words_out.push(0);
    words_out.extend(env_at.iter().rev());
    words_out.push(0);
    for (k, v) in auxv {
        words_out.push(k);
        words_out.push(v);
    }
    for (i, w) in words_out.iter().enumerate() {
        put(sp + i as u64 * 8, &w.to_le_bytes());
    }
    StackImage { bytes, sp }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(img: &StackImage, addr: u64) -> u64 {
        let at = (addr - img.sp) as usize;
        u64::from_le_bytes(img.bytes[at..at + 8].try_into().unwrap())
    }

    fn cstr(img: &StackImage, addr: u64) -> &[u8] {
        let at = (addr - img.sp) as usize;
        let end = img.bytes[at..].iter().position(|&b| b == 0).unwrap();
        &img.bytes[at..at + end]
    }

    #[test]
    fn lays_out_argc_argv_envp_auxv() {
        let top = 0x7fff_ffff_f000;
        let img = build(&StackSpec {
            top,
            argv: &[b"/hello", b"world"],
            envp: &[b"A=1"],
            execfn: b"/hello",
            random: [7; 16],
            auxv: &[(at::PAGESZ, 4096)],
        });
        assert_eq!(img.sp % 16, 0);
        assert_eq!(img.sp + img.bytes.len() as u64, top);
        assert_eq!(word(&img, img.sp), 2);
        assert_eq!(cstr(&img, word(&img, img.sp + 8)), b"/hello");
        assert_eq!(cstr(&img, word(&img, img.sp + 16)), b"world");
        assert_eq!(word(&img, img.sp + 24), 0);
        assert_eq!(cstr(&img, word(&img, img.sp + 32)), b"A=1");
        assert_eq!(word(&img, img.sp + 40), 0);
        // auxv: PAGESZ, RANDOM, EXECFN, PLATFORM, NULL
        assert_eq!(word(&img, img.sp + 48), at::PAGESZ);
        assert_eq!(word(&img, img.sp + 56), 4096);
        assert_eq!(word(&img, img.sp + 64), at::RANDOM);
        let random = word(&img, img.sp + 72);
        assert_eq!(random % 16, 0);
        assert_eq!(&img.bytes[(random - img.sp) as usize..][..16], &[7; 16]);
        assert_eq!(word(&img, img.sp + 80), at::EXECFN);
        assert_eq!(cstr(&img, word(&img, img.sp + 88)), b"/hello");
        assert_eq!(word(&img, img.sp + 96), at::PLATFORM);
        assert_eq!(cstr(&img, word(&img, img.sp + 104)), b"x86_64");
        assert_eq!(word(&img, img.sp + 112), at::NULL);
    }
}
