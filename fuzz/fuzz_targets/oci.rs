//! What a registry sends: image manifests and references. The first byte
//! picks the parser.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        if let Ok(m) = kiln_builder::oci::parse_manifest("fuzz", rest) {
            for blob in m.blobs() {
                let _ = blob.describe();
            }
        }
    } else if let Ok(text) = std::str::from_utf8(rest) {
        if let Ok(r) = kiln_builder::oci::reference::Reference::parse(text) {
            let _ = r.name();
            let _ = r.to_string();
            let _ = r.manifest_key();
            let _ = r.store_names();
        }
    }
});
