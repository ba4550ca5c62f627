//! The fuzz targets' seeds and minimised regression corpora
//! (`fuzz/seeds/<target>`, `fuzz/regression/<target>`), run through the
//! same checks as the targets, as plain tests: no panic, and what parses
//! re-marshals to the same bytes.

use std::path::PathBuf;

use trustlaunch_tpm::alg::HashAlg;
use trustlaunch_tpm::attest::Attest;
use trustlaunch_tpm::ekcert::{CaCertificate, EkCertificate, EkTrustStore, UnixTime};
use trustlaunch_tpm::pcr::{parse_tpm2_tools_pcrs, pcr_digest};
use trustlaunch_tpm::public::Public;
use trustlaunch_tpm::signature::Signature;

/// Every file of the target's seeds (which must exist and be non-empty)
/// and of its regression corpus (when present).
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut out = Vec::new();
    for (dir, required) in [("seeds", true), ("regression", false)] {
        let d = fuzz.join(dir).join(target);
        let Ok(entries) = std::fs::read_dir(&d) else {
            assert!(!required, "{} is missing", d.display());
            continue;
        };
        let before = out.len();
        for e in entries {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|x| x == "md") {
                continue;
            }
            out.push((
                p.display().to_string(),
                std::fs::read(&p).expect("readable"),
            ));
        }
        assert!(!required || out.len() > before, "{} is empty", d.display());
    }
    out
}

#[test]
fn tpm_attest_corpus() {
    for (name, data) in inputs("tpm_attest") {
        if let Ok(a) = Attest::from_bytes(&data) {
            assert_eq!(a.to_bytes(), data, "{name}");
        }
    }
}

#[test]
fn tpm_signature_corpus() {
    for (name, data) in inputs("tpm_signature") {
        if let Ok(s) = Signature::from_bytes(&data) {
            assert_eq!(s.to_bytes(), data, "{name}");
        }
    }
}

#[test]
fn tpm_public_corpus() {
    let mut parsed = 0;
    for (name, data) in inputs("tpm_public") {
        let _ = Public::from_tpm2b(&data);
        if let Ok(p) = Public::from_bytes(&data) {
            assert_eq!(Public::from_bytes(&p.to_bytes()).as_ref(), Ok(&p), "{name}");
            let _ = trustlaunch_tpm::ak::check_ak(&p);
            let _ = trustlaunch_tpm::quote::QuoteVerifier::new(&p);
            parsed += 1;
        }
    }
    assert!(parsed >= 3, "the real seeds parse");
}

#[test]
fn tpm_pcr_file_corpus() {
    for (_, data) in inputs("tpm_pcr_file") {
        if let Ok((selection, values)) = parse_tpm2_tools_pcrs(&data) {
            let _ = pcr_digest(&selection, &values, HashAlg::Sha256);
        }
    }
}

#[test]
fn ekcert_parse_corpus() {
    let mut ek_certs = 0;
    for (_, data) in inputs("ekcert_parse") {
        let _ = CaCertificate::parse_pem_bundle(&data);
        let ca = CaCertificate::parse(&data);
        if let Ok(ek) = EkCertificate::parse(&data) {
            ek_certs += 1;
            let _ = ek.profile_deviations();
            if let Ok(ca) = ca {
                let _ = EkTrustStore::new(vec![ca]).verify(&ek, UnixTime::from_secs(1_700_000_000));
            }
        }
    }
    assert!(ek_certs >= 3, "the real EK certificates parse");
}
