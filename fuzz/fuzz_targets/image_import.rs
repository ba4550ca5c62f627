//! `image import` on hostile bytes: the disk readers (partition table,
//! FAT, ext4) and the boot chain's parsers (shim's `.vendor_cert`, grub's
//! configuration, the bzImage header) never panic. The input is written
//! to a file (the readers work on files) and inspected against no
//! templates.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustlaunch_runtime::import::{bzimage_release, grub_default_entry, inspect};
use trustlaunch_secureboot::chain::VendorCerts;

fuzz_target!(|data: &[u8]| {
    let _ = VendorCerts::parse(data);
    let _ = grub_default_entry(&String::from_utf8_lossy(data));
    let _ = bzimage_release(data);
    let path = std::env::temp_dir().join(format!("image-import-fuzz-{}.raw", std::process::id()));
    if std::fs::write(&path, data).is_ok() {
        let _ = inspect(&path, &[]);
    }
});
