//! TPMT_SIGNATURE unmarshalling: never panics; round trips byte for byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustlaunch_tpm::signature::Signature;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = Signature::from_bytes(data) {
        assert_eq!(s.to_bytes(), data, "TPMT_SIGNATURE round trip");
    }
});
