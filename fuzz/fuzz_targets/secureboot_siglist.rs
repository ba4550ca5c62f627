//! EFI_SIGNATURE_LIST parsing: never panics; what parses re-encodes to
//! something that parses to the same lists.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustlaunch_secureboot::siglist::SignatureDb;

fuzz_target!(|data: &[u8]| {
    if let Ok(db) = SignatureDb::parse(data) {
        let again = SignatureDb::parse(&db.encode().expect("parsed lists encode"))
            .expect("re-encoded lists parse");
        assert_eq!(again, db, "signature list round trip");
    }
});
