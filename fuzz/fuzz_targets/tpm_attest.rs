//! TPMS_ATTEST unmarshalling: never panics; what parses re-marshals to the
//! same bytes; quote verification of arbitrary attestations never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustlaunch_tpm::attest::Attest;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = Attest::from_bytes(data) {
        assert_eq!(a.to_bytes(), data, "TPMS_ATTEST round trip");
    }
});
