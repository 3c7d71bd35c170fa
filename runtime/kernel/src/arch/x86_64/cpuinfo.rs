//! /proc/cpuinfo, in Linux's x86 format, from CPUID (read when the file is
//! opened: each CPUID traps to the hypervisor, so not at boot).

use alloc::string::String;
use core::fmt::Write;

use super::cpu::cpuid;

/// Feature names Linux prints for CPUID.1:EDX, by bit.
const LEAF1_EDX: [(u32, &str); 25] = [
    (0, "fpu"),
    (1, "vme"),
    (2, "de"),
    (3, "pse"),
    (4, "tsc"),
    (5, "msr"),
    (6, "pae"),
    (7, "mce"),
    (8, "cx8"),
    (9, "apic"),
    (11, "sep"),
    (12, "mtrr"),
    (13, "pge"),
    (14, "mca"),
    (15, "cmov"),
    (16, "pat"),
    (17, "pse36"),
    (19, "clflush"),
    (23, "mmx"),
    (24, "fxsr"),
    (25, "sse"),
    (26, "sse2"),
    (27, "ss"),
    (28, "ht"),
    (29, "tm"),
];
/// … CPUID.1:ECX.
const LEAF1_ECX: [(u32, &str); 19] = [
    (0, "pni"),
    (1, "pclmulqdq"),
    (3, "monitor"),
    (9, "ssse3"),
    (12, "fma"),
    (13, "cx16"),
    (19, "sse4_1"),
    (20, "sse4_2"),
    (21, "x2apic"),
    (22, "movbe"),
    (23, "popcnt"),
    (24, "tsc_deadline_timer"),
    (25, "aes"),
    (26, "xsave"),
    (27, "osxsave"),
    (28, "avx"),
    (29, "f16c"),
    (30, "rdrand"),
    (31, "hypervisor"),
];
/// … CPUID.7.0:EBX.
const LEAF7_EBX: [(u32, &str); 14] = [
    (0, "fsgsbase"),
    (3, "bmi1"),
    (5, "avx2"),
    (7, "smep"),
    (8, "bmi2"),
    (9, "erms"),
    (10, "invpcid"),
    (16, "avx512f"),
    (18, "rdseed"),
    (19, "adx"),
    (20, "smap"),
    (23, "clflushopt"),
    (29, "sha_ni"),
    (30, "avx512bw"),
];

fn regs_text(words: &[u32]) -> String {
    let mut s = String::new();
    for w in words {
        for b in w.to_le_bytes() {
            if b != 0 {
                s.push(b as char);
            }
        }
    }
    String::from(s.trim())
}

/// The text of /proc/cpuinfo for the (single) vCPU.
pub fn cpuinfo(tsc_khz: u64) -> String {
    let l0 = cpuid(0, 0);
    let l1 = cpuid(1, 0);
    let l7 = if l0.eax >= 7 {
        cpuid(7, 0)
    } else {
        Default::default()
    };
    let vendor = regs_text(&[l0.ebx, l0.edx, l0.ecx]);
    let ext = cpuid(0x8000_0000, 0).eax;
    let model_name = if ext >= 0x8000_0004 {
        let mut words = [0u32; 12];
        for (i, leaf) in (0x8000_0002..=0x8000_0004).enumerate() {
            let r = cpuid(leaf, 0);
            words[i * 4..i * 4 + 4].copy_from_slice(&[r.eax, r.ebx, r.ecx, r.edx]);
        }
        regs_text(&words)
    } else {
        String::from("unknown")
    };
    let base_family = (l1.eax >> 8) & 0xf;
    let family = if base_family == 0xf {
        base_family + ((l1.eax >> 20) & 0xff)
    } else {
        base_family
    };
    let model = ((l1.eax >> 4) & 0xf)
        | if base_family >= 6 {
            ((l1.eax >> 16) & 0xf) << 4
        } else {
            0
        };
    let mut flags = String::new();
    for (set, table) in [
        (l1.edx, &LEAF1_EDX[..]),
        (l1.ecx, &LEAF1_ECX[..]),
        (l7.ebx, &LEAF7_EBX[..]),
    ] {
        for (bit, name) in table {
            if set & (1 << bit) != 0 {
                if !flags.is_empty() {
                    flags.push(' ');
                }
                flags.push_str(name);
            }
        }
    }
    let mhz = tsc_khz as f64 / 1000.0;
    let mut out = String::new();
    let cpus = super::smp::online();
    for cpu in 0..cpus {
        let _ = write!(
            out,
            "processor\t: {cpu}\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: {model}\n\
             model name\t: {model_name}\nstepping\t: {}\ncpu MHz\t\t: {mhz:.3}\ncache size\t: 0 KB\n\
             physical id\t: 0\nsiblings\t: {cpus}\ncore id\t\t: {cpu}\ncpu cores\t: {cpus}\napicid\t\t: {cpu}\n\
             fpu\t\t: yes\nfpu_exception\t: yes\ncpuid level\t: {}\nwp\t\t: yes\nflags\t\t: {flags}\n\
             bogomips\t: {:.2}\nclflush size\t: 64\ncache_alignment\t: 64\naddress sizes\t: 48 bits physical, 48 bits virtual\n\n",
            l1.eax & 0xf,
            l0.eax,
            mhz * 2.0
        );
    }
    out
}
