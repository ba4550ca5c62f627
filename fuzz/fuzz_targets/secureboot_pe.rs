//! PE/COFF parsing, Authenticode hashing, WIN_CERTIFICATE / PKCS#7 reading
//! and db/dbx verification: never panic on any image.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustlaunch_secureboot::authenticode::{image_hash, ImageHashAlg};
use trustlaunch_secureboot::pe::PeImage;
use trustlaunch_secureboot::verify::{verify_image, Database};

fuzz_target!(|data: &[u8]| {
    let Ok(pe) = PeImage::parse(data) else {
        return;
    };
    let _ = image_hash(data, ImageHashAlg::Sha256);
    let _ = image_hash(data, ImageHashAlg::Sha1);
    if let Some(table) = pe.cert_table_bytes(data) {
        let _ = trustlaunch_secureboot::pkcs7::signatures(table);
    }
    let db = Database { certs: Vec::new(), sha256_hashes: vec![[0u8; 32]] };
    let _ = verify_image(data, &db, &Database::default());
});
