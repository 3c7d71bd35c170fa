//! The builder's ELF analysis of a program it is asked to pack.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kiln_builder::analysis::inspect_bytes(std::path::Path::new("/fuzz/program"), data);
});
