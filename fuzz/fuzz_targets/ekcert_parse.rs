//! EK and CA certificate parsing (DER and PEM): never panics; a parsed EK
//! certificate's fields and chain verification against itself as a root
//! never panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustlaunch_tpm::ekcert::{CaCertificate, EkCertificate, EkTrustStore, UnixTime};

fuzz_target!(|data: &[u8]| {
    let _ = CaCertificate::parse_pem_bundle(data);
    let ca = CaCertificate::parse(data);
    if let Ok(ek) = EkCertificate::parse(data) {
        let _ = ek.profile_deviations();
        let _ = ek.tpm_identity();
        if let Ok(ca) = ca {
            let store = EkTrustStore::new(vec![ca]);
            let _ = store.verify(&ek, UnixTime::from_secs(1_700_000_000));
        }
    }
});
