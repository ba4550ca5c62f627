//! TPMT_PUBLIC / TPM2B_PUBLIC unmarshalling: never panics; round trips;
//! a parsed key can be prepared for verification, checked as an AK and used
//! for MakeCredential without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustlaunch_tpm::public::Public;

fuzz_target!(|data: &[u8]| {
    let _ = Public::from_tpm2b(data);
    if let Ok(p) = Public::from_bytes(data) {
        let again = Public::from_bytes(&p.to_bytes()).expect("re-marshalled public parses");
        assert_eq!(again, p, "TPMT_PUBLIC round trip");
        let _ = p.name();
        let _ = trustlaunch_tpm::ak::check_ak(&p);
        let _ = trustlaunch_tpm::quote::QuoteVerifier::new(&p);
    }
});
