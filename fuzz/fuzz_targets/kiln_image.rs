//! The `.kiln` header and section checks over bytes in memory.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kiln_builder::image::verify_bytes(data);
});
