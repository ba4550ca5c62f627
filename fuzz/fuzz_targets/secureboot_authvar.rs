//! EFI_VARIABLE_AUTHENTICATION_2 payloads: parsing and edk2-style
//! verification never panic; what parses reassembles to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustlaunch_secureboot::authvar::{assemble, parse_payload, verify_payload, VariableUpdate};
use trustlaunch_secureboot::varstore::{EfiTime, SecureBootVar};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = parse_payload(data) else {
        // Verification of an unparsable payload must fail, not panic.
        let up = VariableUpdate::secure_boot(SecureBootVar::Db, false);
        assert!(verify_payload(&up, data, &[], None).is_err());
        return;
    };
    if p.revision == 0x0200 {
        assert_eq!(
            assemble(&p.timestamp, p.cert_data, p.data),
            data,
            "payload round trip"
        );
    }
    // Trust the payload's own certificates, so chain building and
    // signature checks run on fuzzed input.
    let trusted: Vec<Vec<u8>> = p.certificates.iter().map(|c| c.der.clone()).collect();
    let var = match data.first().copied().unwrap_or(0) & 3 {
        0 => SecureBootVar::Pk,
        1 => SecureBootVar::Kek,
        2 => SecureBootVar::Db,
        _ => SecureBootVar::Dbx,
    };
    let append = data.get(1).is_some_and(|b| b & 1 == 1);
    let up = VariableUpdate::secure_boot(var, append);
    if let Ok(v) = verify_payload(&up, data, &trusted, Some(&EfiTime::INITIAL)) {
        assert!(v.trusted_index < trusted.len());
        assert_eq!(v.data, p.data);
    }
});
