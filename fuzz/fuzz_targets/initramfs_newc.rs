//! The cpio "newc" reader (`initramfs::parse_newc`): never panics, every
//! length is checked against the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustlaunch_runtime::initramfs::parse_newc;

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = parse_newc(data) {
        // Each entry holds at least its 110-byte header and name.
        let held: usize = entries
            .iter()
            .map(|e| e.data.len() + e.name.len() + 110)
            .sum();
        assert!(held <= data.len(), "entries hold more than the input");
        for e in &entries {
            let _ = (e.is_dir(), e.is_file(), e.is_symlink());
        }
    }
});
