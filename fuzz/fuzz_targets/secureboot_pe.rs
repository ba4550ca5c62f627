//! PE/COFF parsing, Authenticode hashing, WIN_CERTIFICATE / PKCS#7 reading
//! db/dbx verification (every hash type, certificate TBS hashes in dbx) and
//! signature removal: never panic on any image.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustlaunch_eventlog::Guid;
use trustlaunch_secureboot::authenticode::{image_hash, ImageHashAlg};
use trustlaunch_secureboot::pe::PeImage;
use trustlaunch_secureboot::sign::{remove_all_signatures, remove_signature};
use trustlaunch_secureboot::verify::{
    verify_image, verify_image_with, Database, EntryKind, HashPolicy,
};

fuzz_target!(|data: &[u8]| {
    let Ok(pe) = PeImage::parse(data) else {
        return;
    };
    let _ = image_hash(data, ImageHashAlg::Sha256);
    let _ = image_hash(data, ImageHashAlg::Sha1);
    if let Some(table) = pe.cert_table_bytes(data) {
        let _ = trustlaunch_secureboot::pkcs7::signatures(table);
    }
    let owner = Guid::from_bytes([0x11; 16]);
    let mut db = Database::default();
    db.push(
        EntryKind::ImageHash(ImageHashAlg::Sha256),
        owner,
        vec![0; 32],
    );
    let mut dbx = Database::default();
    dbx.push(
        EntryKind::ImageHash(ImageHashAlg::Sha512),
        owner,
        vec![0; 64],
    );
    dbx.push(
        EntryKind::CertTbsHash(ImageHashAlg::Sha256),
        owner,
        vec![0; 48],
    );
    let _ = verify_image(data, &db, &dbx);
    let _ = verify_image_with(data, &db, &Database::default(), HashPolicy::Edk2);
    let _ = remove_signature(data, 0);
    let _ = remove_all_signatures(data);
});
