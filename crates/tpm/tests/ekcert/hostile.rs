//! Hostile input: garbage, every truncation and corruption of real
//! certificates; property tests: issue/parse round trip, arbitrary bytes,
//! random edits of a real certificate.

use super::*;
use proptest::prelude::*;

#[test]
fn garbage_and_empty_input_are_typed_errors() {
    assert_eq!(EkCertificate::parse(b"").unwrap_err(), CertError::Empty);
    assert!(matches!(
        EkCertificate::parse(b"\x30\x82\xff\xff garbage").unwrap_err(),
        CertError::Malformed { .. }
    ));
    assert!(matches!(
        EkCertificate::parse(&[0x04, 0x00]).unwrap_err(),
        CertError::Malformed { .. }
    ));
    // A truncated certificate names the byte where decoding stopped.
    let der = read("swtpm/ek-rsa2048.der");
    let err = EkCertificate::parse(&der[..600]).unwrap_err();
    assert!(
        matches!(
            err,
            CertError::Malformed {
                offset: Some(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(matches!(
        EkCertificate::parse(&vec![0x30; trustlaunch_tpm::ekcert::MAX_CERT_LEN + 1]).unwrap_err(),
        CertError::TooLarge { .. }
    ));
    assert!(matches!(
        EkCertificate::parse(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
            .unwrap_err(),
        CertError::Pem { .. }
    ));
    assert!(matches!(
        EkCertificate::parse(b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")
            .unwrap_err(),
        CertError::Pem { .. }
    ));
    // A CA certificate (RSA-3072 key is fine for a CA) is a fine CaCertificate.
    CaCertificate::parse(&read("swtpm/localca-root.pem")).unwrap();
    // The verify_der entry point reports unreadable input as Malformed.
    let ca = make_ca("CA", CaKeyAlgorithm::P256, "garbage");
    assert!(matches!(
        store(&ca).verify_der(b"\x30\x03\x02\x01", NOW),
        Err(ChainError::Malformed(_))
    ));
}

fn real_certificates() -> Vec<Vec<u8>> {
    let ca = make_ca("CA", CaKeyAlgorithm::P256, "corpus");
    let ours = ca
        .issue_ek_cert(&request(ecc_ek("ek")), &mut TestRng::new("s"))
        .unwrap();
    vec![
        read("swtpm/ek-rsa2048.der"),
        read("swtpm/ek-secp384r1.der"),
        ours.der().to_vec(),
        ca.cert_der().to_vec(),
    ]
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    for der in real_certificates() {
        for len in 0..der.len() {
            let prefix = &der[..len];
            assert!(
                EkCertificate::parse(prefix).is_err(),
                "prefix of {len} bytes parsed"
            );
            assert!(
                CaCertificate::parse(prefix).is_err(),
                "prefix of {len} bytes parsed"
            );
        }
        let mut long = der.clone();
        long.push(0);
        assert!(
            EkCertificate::parse(&long).is_err(),
            "trailing byte accepted"
        );
    }
}

#[test]
fn every_corrupted_byte_is_an_error_or_fails_verification() {
    let root = CaCertificate::parse(&read("swtpm/localca-root.pem")).unwrap();
    let issuer = CaCertificate::parse(&read("swtpm/localca-issuer.pem")).unwrap();
    let trust = EkTrustStore::new(vec![root]).with_intermediates(vec![issuer]);
    let der = read("swtpm/ek-secp384r1.der");
    let now = EkCertificate::parse(&der).unwrap().not_before();
    trust.verify_der(&der, now).unwrap();
    for i in 0..der.len() {
        let mut bad = der.clone();
        bad[i] ^= 0x5a;
        if let Ok(ek) = EkCertificate::parse(&bad) {
            assert!(
                trust.verify(&ek, now).is_err(),
                "byte {i} corrupted, still verifies"
            );
        }
    }
    // Corrupt the issuer instead, used as the trust anchor: nothing panics,
    // and a corrupted key or subject never verifies. (Its serial, validity,
    // issuer name and own signature may change without consequence.)
    let ek = EkCertificate::parse(&der).unwrap();
    let issuer = CaCertificate::parse(&read("swtpm/localca-issuer.pem")).unwrap();
    let issuer_der = issuer.der().to_vec();
    let key_bits = Certificate::from_der(&issuer_der)
        .unwrap()
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes()
        .to_vec();
    let key_at = issuer_der
        .windows(key_bits.len())
        .position(|w| w == key_bits)
        .unwrap();
    for i in 0..issuer_der.len() {
        let mut bad = issuer_der.clone();
        bad[i] ^= 0x5a;
        if let Ok(bad_issuer) = CaCertificate::parse(&bad) {
            let verdict = EkTrustStore::new(vec![bad_issuer]).verify(&ek, now);
            if (key_at..key_at + key_bits.len()).contains(&i) {
                assert!(
                    verdict.is_err(),
                    "issuer key byte {i} corrupted, still verifies"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever the TPM's strings and times, the certificate says them back.
    #[test]
    fn issue_then_parse_round_trips(
        manufacturer in "[ -~]{1,40}",
        model in "\\PC{1,40}",
        version in "[0-9a-zA-Z:]{1,20}",
        level in any::<u32>(),
        revision in any::<u32>(),
        start in 0u64..4_000_000_000,
        length in proptest::option::of(1u64..3_000_000_000),
        ecc in any::<bool>(),
    ) {
        let ca = make_ca("property CA", CaKeyAlgorithm::P256, "property");
        let ek = if ecc { ecc_ek("property") } else { rsa_ek() };
        let req = EkCertRequest {
            ek,
            tpm: TpmIdentity { manufacturer, model, version },
            spec: TpmSpecification { family: "2.0".into(), level, revision },
            not_before: UnixTime::from_secs(start),
            not_after: length.map(|l| UnixTime::from_secs(start + l)),
            policies: Vec::new(),
        };
        let cert = ca.issue_ek_cert(&req, &mut TestRng::new("p")).unwrap();
        let parsed = EkCertificate::parse(cert.der()).unwrap();
        prop_assert_eq!(parsed.public_key(), &req.ek);
        prop_assert_eq!(parsed.tpm_identity(), Some(&req.tpm));
        prop_assert_eq!(parsed.tpm_specification(), Some(&req.spec));
        prop_assert_eq!(parsed.not_before(), req.not_before);
        prop_assert_eq!(parsed.not_after(), req.not_after.unwrap_or(UnixTime::NO_EXPIRY));
    }

    /// Arbitrary bytes never panic either parser.
    #[test]
    fn arbitrary_bytes_do_not_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = EkCertificate::parse(&bytes);
        let _ = CaCertificate::parse(&bytes);
    }

    /// Nor do random edits of a real certificate; what still parses
    /// does not verify unless the edit left the signed bytes alone.
    #[test]
    fn edited_real_certificate_does_not_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)
    ) {
        let original = read("swtpm/ek-rsa2048.der");
        let mut der = original.clone();
        for (index, byte) in edits {
            let i = index.index(der.len());
            der[i] = byte;
        }
        if let Ok(ek) = EkCertificate::parse(&der) {
            let issuer = CaCertificate::parse(&read("swtpm/localca-issuer.pem")).unwrap();
            let verdict = EkTrustStore::new(vec![issuer]).verify(&ek, ek.not_before());
            prop_assert!(verdict.is_err() || der == original);
        }
    }
}
