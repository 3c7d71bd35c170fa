//! The rootfs tar index (shared by the host tools and the guest kernel),
//! and lookups in whatever it indexed.
#![no_main]
use kiln_kernel::fs::tarfs::TarFs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(fs) = TarFs::parse(data) else {
        return;
    };
    let names: Vec<String> = fs
        .children("/")
        .into_iter()
        .map(|(n, _)| n.to_owned())
        .collect();
    for name in names.iter().take(16) {
        let path = format!("/{name}");
        if let Ok((resolved, node)) = fs.resolve("/", &path, true) {
            let _ = fs.children(&resolved);
            let end = node.data.saturating_add(node.size);
            assert!(
                end as usize <= data.len() || node.size == 0,
                "a file past the archive"
            );
            let _ = fs.file_containing(node.data);
        }
        let _ = fs.resolve(&path, "../x/../../y", false);
    }
});
