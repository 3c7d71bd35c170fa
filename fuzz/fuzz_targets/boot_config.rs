//! An image's boot configuration (JSON).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = kiln_builder::config::BootConfig::from_bytes(data) {
        // What passes is what the runtime may ask the host for.
        assert!((4..=16384).contains(&c.memory_mib));
        assert!((1..=4).contains(&c.vcpus));
        let _ = c.to_bytes();
    }
});
