//! The vDSO image: a minimal ELF shared object the kernel maps into the
//! program and names in AT_SYSINFO_EHDR. glibc, musl and Go look up
//! `__vdso_clock_gettime` and friends in it (through DT_HASH) and call them
//! instead of making a system call.
//!
//! kiln's program runs at the kernel's privilege level in the kernel's
//! address space, so the symbols point straight at kernel functions: a
//! symbol's value is its absolute address minus the image's load address
//! (wrapping), which is what `base + st_value` gives back.

use alloc::vec::Vec;

/// The soname glibc shows for the vDSO.
pub const SONAME: &str = "linux-vdso.so.1";
/// The version every symbol has (Go insists on version information).
pub const VERSION: &str = "LINUX_2.6";

const EHDR: usize = 64;
const PHDR: usize = 56;
const SYM: usize = 24;
const DYN: usize = 16;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const DT_NULL: u64 = 0;
const DT_HASH: u64 = 4;
const DT_STRTAB: u64 = 5;
const DT_SYMTAB: u64 = 6;
const DT_STRSZ: u64 = 10;
const DT_SYMENT: u64 = 11;
const DT_SONAME: u64 = 14;
const DT_VERSYM: u64 = 0x6fff_fff0;
const DT_VERDEF: u64 = 0x6fff_fffc;
const DT_VERDEFNUM: u64 = 0x6fff_fffd;
/// Bytes of an Elf64_Verdef and of an Elf64_Verdaux.
const VERDEF: usize = 20;
const VERDAUX: usize = 8;
const STB_GLOBAL_FUNC: u8 = (1 << 4) | 2;

/// The System V ELF hash of a symbol name.
pub fn elf_hash(name: &[u8]) -> u32 {
    let mut h: u32 = 0;
    for &c in name {
        h = (h << 4).wrapping_add(u32::from(c));
        let g = h & 0xf000_0000;
        if g != 0 {
            h ^= g >> 24;
        }
        h &= !g;
    }
    h
}

fn put(out: &mut [u8], at: usize, bytes: &[u8]) {
    out[at..at + bytes.len()].copy_from_slice(bytes);
}

/// An image to be mapped at `base` exporting `symbols` (name, absolute
/// address). Its size is a few hundred bytes.
pub fn image(base: u64, symbols: &[(&str, u64)]) -> Vec<u8> {
    // Layout: header, 2 program headers, dynamic, symbols, hash, version
    // symbols, version definitions, strings.
    let nsyms = symbols.len() + 1; // entry 0 is the null symbol
    let dynamic = EHDR + 2 * PHDR;
    let ndyn = 10;
    let symtab = dynamic + ndyn * DYN;
    let hash = symtab + nsyms * SYM;
    let nbuckets = symbols.len().max(1);
    let versym = hash + 4 * (2 + nbuckets + nsyms);
    let verdef = (versym + 2 * nsyms).next_multiple_of(4);
    let strtab = verdef + 2 * (VERDEF + VERDAUX);
    let mut strings: Vec<u8> = alloc::vec![0];
    let soname_at = strings.len();
    strings.extend_from_slice(SONAME.as_bytes());
    strings.push(0);
    let version_at = strings.len();
    strings.extend_from_slice(VERSION.as_bytes());
    strings.push(0);
    let mut names = Vec::new();
    for (name, _) in symbols {
        names.push(strings.len());
        strings.extend_from_slice(name.as_bytes());
        strings.push(0);
    }
    let size = strtab + strings.len();
    let mut out = alloc::vec![0u8; size];

    // ELF header: 64-bit, little-endian, ET_DYN, x86-64.
    put(&mut out, 0, b"\x7fELF\x02\x01\x01");
    put(&mut out, 16, &3u16.to_le_bytes()); // ET_DYN
    put(&mut out, 18, &62u16.to_le_bytes()); // EM_X86_64
    put(&mut out, 20, &1u32.to_le_bytes());
    put(&mut out, 32, &(EHDR as u64).to_le_bytes()); // e_phoff
    put(&mut out, 52, &(EHDR as u16).to_le_bytes());
    put(&mut out, 54, &(PHDR as u16).to_le_bytes());
    put(&mut out, 56, &2u16.to_le_bytes());
    put(&mut out, 58, &64u16.to_le_bytes()); // e_shentsize (no sections)

    // PT_LOAD of the whole image at address 0; PT_DYNAMIC.
    let phdr = |out: &mut [u8], at: usize, kind: u32, flags: u32, off: usize, len: usize| {
        put(out, at, &kind.to_le_bytes());
        put(out, at + 4, &flags.to_le_bytes());
        for field in [8, 16, 24] {
            put(out, at + field, &(off as u64).to_le_bytes()); // offset, vaddr, paddr
        }
        put(out, at + 32, &(len as u64).to_le_bytes());
        put(out, at + 40, &(len as u64).to_le_bytes());
        put(out, at + 48, &8u64.to_le_bytes());
    };
    phdr(&mut out, EHDR, PT_LOAD, 4 | 1, 0, size); // R + X
    phdr(&mut out, EHDR + PHDR, PT_DYNAMIC, 4, dynamic, ndyn * DYN);

    // Dynamic section (addresses relative to the image, as linked at 0).
    let entries = [
        (DT_HASH, hash as u64),
        (DT_STRTAB, strtab as u64),
        (DT_SYMTAB, symtab as u64),
        (DT_STRSZ, strings.len() as u64),
        (DT_SYMENT, SYM as u64),
        (DT_SONAME, soname_at as u64),
        (DT_VERSYM, versym as u64),
        (DT_VERDEF, verdef as u64),
        (DT_VERDEFNUM, 2),
        (DT_NULL, 0),
    ];
    for (i, (tag, value)) in entries.iter().enumerate() {
        put(&mut out, dynamic + i * DYN, &tag.to_le_bytes());
        put(&mut out, dynamic + i * DYN + 8, &value.to_le_bytes());
    }

    // Symbols: global functions in section 1 (any defined index will do).
    for (i, ((_, addr), &name)) in symbols.iter().zip(&names).enumerate() {
        let at = symtab + (i + 1) * SYM;
        put(&mut out, at, &(name as u32).to_le_bytes());
        out[at + 4] = STB_GLOBAL_FUNC;
        put(&mut out, at + 6, &1u16.to_le_bytes());
        put(&mut out, at + 8, &addr.wrapping_sub(base).to_le_bytes());
    }

    // DT_HASH: nbucket, nchain, buckets, chains.
    put(&mut out, hash, &(nbuckets as u32).to_le_bytes());
    put(&mut out, hash + 4, &(nsyms as u32).to_le_bytes());
    let mut buckets = alloc::vec![0u32; nbuckets];
    let mut chains = alloc::vec![0u32; nsyms];
    for (i, (name, _)) in symbols.iter().enumerate() {
        let index = i as u32 + 1;
        let b = elf_hash(name.as_bytes()) as usize % nbuckets;
        // Prepend to the bucket's chain.
        chains[index as usize] = buckets[b];
        buckets[b] = index;
    }
    for (i, v) in buckets.iter().chain(&chains).enumerate() {
        put(&mut out, hash + 8 + 4 * i, &v.to_le_bytes());
    }
    // Version of each symbol: 0 (local) for the null one, 2 (LINUX_2.6).
    for i in 1..nsyms {
        put(&mut out, versym + 2 * i, &2u16.to_le_bytes());
    }
    // Version definitions: 1 is the object itself, 2 is LINUX_2.6.
    for (i, (flags, name, name_at)) in [(1u16, SONAME, soname_at), (0, VERSION, version_at)]
        .into_iter()
        .enumerate()
    {
        let at = verdef + i * (VERDEF + VERDAUX);
        put(&mut out, at, &1u16.to_le_bytes()); // vd_version
        put(&mut out, at + 2, &flags.to_le_bytes()); // vd_flags (VER_FLG_BASE)
        put(&mut out, at + 4, &(i as u16 + 1).to_le_bytes()); // vd_ndx
        put(&mut out, at + 6, &1u16.to_le_bytes()); // vd_cnt
        put(&mut out, at + 8, &elf_hash(name.as_bytes()).to_le_bytes());
        put(&mut out, at + 12, &(VERDEF as u32).to_le_bytes()); // vd_aux
        let next = if i == 0 { VERDEF + VERDAUX } else { 0 };
        put(&mut out, at + 16, &(next as u32).to_le_bytes()); // vd_next
        put(&mut out, at + VERDEF, &(name_at as u32).to_le_bytes()); // vda_name
    }
    put(&mut out, strtab, &strings);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    /// Looks `name` up the way ld.so does: PT_DYNAMIC, DT_HASH, the chain.
    fn lookup(img: &[u8], base: u64, name: &str) -> Option<u64> {
        let phoff = u64_at(img, 32) as usize;
        let dynamic = (0..u16::from_le_bytes([img[56], img[57]]) as usize)
            .map(|i| phoff + i * PHDR)
            .find(|&p| u32_at(img, p) == PT_DYNAMIC)
            .map(|p| u64_at(img, p + 16) as usize)?;
        let mut tags = std::collections::BTreeMap::new();
        for i in 0.. {
            let tag = u64_at(img, dynamic + i * DYN);
            if tag == DT_NULL {
                break;
            }
            tags.insert(tag, u64_at(img, dynamic + i * DYN + 8) as usize);
        }
        let (hash, symtab, strtab) = (tags[&DT_HASH], tags[&DT_SYMTAB], tags[&DT_STRTAB]);
        let nbucket = u32_at(img, hash) as usize;
        let nchain = u32_at(img, hash + 4) as usize;
        let mut i = u32_at(
            img,
            hash + 8 + 4 * (elf_hash(name.as_bytes()) as usize % nbucket),
        ) as usize;
        while i != 0 {
            let sym = symtab + i * SYM;
            let at = strtab + u32_at(img, sym) as usize;
            let end = at + img[at..].iter().position(|&b| b == 0).unwrap();
            if &img[at..end] == name.as_bytes() {
                return Some(base.wrapping_add(u64_at(img, sym + 8)));
            }
            i = u32_at(img, hash + 8 + 4 * (nbucket + i)) as usize;
            assert!(i < nchain);
        }
        None
    }

    #[test]
    fn symbols_resolve_to_their_absolute_addresses() {
        let base = 0x7fff_f7ff_0000;
        let syms = [
            ("__vdso_clock_gettime", 0xffff_ffff_8010_1234u64),
            ("__vdso_gettimeofday", 0xffff_ffff_8010_2000),
            ("__vdso_time", 0xffff_ffff_8010_3000),
            ("__vdso_getcpu", 0xffff_ffff_8010_4000),
        ];
        let img = image(base, &syms);
        assert!(img.len() < 4096);
        for (name, addr) in syms {
            assert_eq!(lookup(&img, base, name), Some(addr), "{name}");
        }
        assert_eq!(lookup(&img, base, "__vdso_nothing"), None);
    }

    #[test]
    fn readelf_accepts_it() {
        let img = image(0x1000, &[("__vdso_time", 0x1234)]);
        let path = std::env::temp_dir().join(std::format!("kiln-vdso-{}.so", std::process::id()));
        std::fs::write(&path, &img).unwrap();
        let out = std::process::Command::new("readelf")
            .arg("-d")
            .arg(&path)
            .output();
        let _ = std::fs::remove_file(&path);
        let Ok(out) = out else {
            std::eprintln!("readelf is not available; skipped");
            return;
        };
        let text = std::string::String::from_utf8_lossy(&out.stdout).into_owned();
        let errors = std::string::String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{text}{errors}");
        // (binutils lists dynamic symbols only with section headers.)
        assert!(text.contains("linux-vdso.so.1"), "{text}");
        assert!(
            text.contains("(HASH)") && text.contains("(SYMTAB)"),
            "{text}"
        );
        assert!(text.contains("VERDEF") && text.contains("VERSYM"), "{text}");
        assert!(!errors.contains("Error"), "{errors}");
    }
}
