//! The guest kernel's instruction-length decoder and the SYSCALL-site
//! check it drives over an ELF file: the first 8 bytes name the SYSCALL's
//! link-time address, the rest is the file. The input as text is also an
//! image's CPUID-site list (`user.kiln.cpuid`).
#![no_main]
use kiln_kernel::syscall::{site, x86len};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Every decoded length is within the instruction limit and the input.
    let mut at = 0;
    while at < data.len().min(4096) {
        match x86len::length(&data[at..]) {
            Some(n) => {
                assert!(n >= 1 && n <= x86len::MAX_LEN && at + n <= data.len());
                at += n;
            }
            None => at += 1,
        }
    }
    let Some((vaddr, elf)) = data.split_first_chunk::<8>() else {
        return;
    };
    let vaddr = u64::from_le_bytes(*vaddr);
    if let Some(found) = site::check(elf, vaddr) {
        assert!(usize::from(found.len) <= site::MAX_MOVED);
        assert!(usize::from(found.after) <= site::MAX_AFTER);
        assert!(found.len >= 5 || found.after > 0);
    }
    let mut out = [0u8; 64];
    let _ = site::relocate(&data[..data.len().min(16)], vaddr, vaddr ^ 0x5000, &mut out);
    // A list decodes to sites that could be ones, in order, and encodes
    // back to a list that decodes the same.
    if let Some(sites) = std::str::from_utf8(data).ok().and_then(site::decode_sites) {
        for w in sites.windows(2) {
            assert!(w[0].0 < w[1].1.start_vaddr);
        }
        assert_eq!(site::decode_sites(&site::encode_sites(&sites)), Some(sites));
    }
});
