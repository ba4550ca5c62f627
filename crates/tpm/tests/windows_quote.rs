//! The real quote of a Windows Shielded VM (`../shared/testdata/eventlogs/
//! ga-windows_gcp_shielded_vm.json`): it verifies with its AK and nonce, its
//! log replays to the quoted PCRs, and every tampering is caught by the
//! check that names it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;
use trustlaunch_tpm::alg::HashAlg;
use trustlaunch_tpm::attest::Attest;
use trustlaunch_tpm::pcr::PcrValues;
use trustlaunch_tpm::public::Public;
use trustlaunch_tpm::quote::{verify_quote, QuoteFailure, QuoteVerifier};
use trustlaunch_tpm::signature::Signature;

struct Doc {
    ak: Public,
    quote: Vec<u8>,
    sig: Signature,
    nonce: Vec<u8>,
    pcrs: PcrValues,
    log: Vec<u8>,
}

fn b64(s: &serde_json::Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s.as_str().expect("base64 string"))
        .expect("base64")
}

fn doc() -> Doc {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/eventlogs/ga-windows_gcp_shielded_vm.json");
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (the shared test data is required)", path.display()));
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
    let mut pcrs: PcrValues = BTreeMap::new();
    for p in v["Log"]["PCRs"].as_array().expect("PCRs") {
        // go-attestation's DigestAlg is Go's crypto.Hash: 3 = SHA-1, 5 = SHA-256.
        let bank = match p["DigestAlg"].as_u64() {
            Some(3) => HashAlg::Sha1,
            Some(5) => HashAlg::Sha256,
            other => panic!("DigestAlg {other:?}"),
        };
        let index = u32::try_from(p["Index"].as_u64().expect("Index")).expect("u32");
        pcrs.entry(bank)
            .or_default()
            .insert(index, b64(&p["Digest"]));
    }
    Doc {
        ak: Public::from_bytes(&b64(&v["AK"]["Public"])).expect("AK TPMT_PUBLIC"),
        quote: b64(&v["Quote"]["Quote"]),
        sig: Signature::from_bytes(&b64(&v["Quote"]["Signature"])).expect("TPMT_SIGNATURE"),
        nonce: b64(&v["Quote"]["Nonce"]),
        pcrs,
        log: b64(&v["Log"]["Raw"]),
    }
}

#[test]
fn the_real_quote_verifies_and_the_log_replays_to_its_pcrs() {
    let d = doc();
    let q = verify_quote(&d.ak, &d.quote, &d.sig, &d.nonce, &d.pcrs).expect("valid quote");
    assert_eq!(q.selection.banks.len(), 1);
    assert_eq!(q.selection.banks[0].pcrs, (0..24).collect::<Vec<u32>>());
    // The event log replays to exactly the quoted values (one verifier path).
    let log = trustlaunch_eventlog::EventLog::parse(&d.log).expect("log");
    let replay = trustlaunch_eventlog::replay(&log);
    let sha1 = &replay.pcrs[&trustlaunch_eventlog::HashAlg::Sha1];
    assert!(!sha1.is_empty());
    for (index, value) in sha1 {
        assert_eq!(
            value.as_bytes(),
            d.pcrs[&HashAlg::Sha1][index],
            "PCR {index}"
        );
    }
}

#[test]
fn structures_round_trip_byte_for_byte() {
    let d = doc();
    assert_eq!(
        Attest::from_bytes(&d.quote).expect("attest").to_bytes(),
        d.quote
    );
    assert_eq!(
        Signature::from_bytes(&d.sig.to_bytes()).expect("sig"),
        d.sig
    );
    let ak_bytes = d.ak.to_bytes();
    assert_eq!(Public::from_bytes(&ak_bytes).expect("public"), d.ak);
    assert_eq!(d.ak.name().expect("name").len(), 34);
}

#[test]
fn every_tampering_names_its_check() {
    let d = doc();
    let v = QuoteVerifier::new(&d.ak).expect("AK");

    let err = v
        .verify(&d.quote, &d.sig, b"fresh nonce", &d.pcrs)
        .unwrap_err();
    assert!(matches!(err, QuoteFailure::NonceMismatch { .. }), "{err}");

    let mut pcrs = d.pcrs.clone();
    pcrs.get_mut(&HashAlg::Sha1).unwrap().insert(7, vec![0; 20]);
    let err = v.verify(&d.quote, &d.sig, &d.nonce, &pcrs).unwrap_err();
    assert!(
        matches!(err, QuoteFailure::PcrDigestMismatch { .. }),
        "{err}"
    );

    let mut pcrs = d.pcrs.clone();
    pcrs.get_mut(&HashAlg::Sha1).unwrap().remove(&23);
    let err = v.verify(&d.quote, &d.sig, &d.nonce, &pcrs).unwrap_err();
    assert!(matches!(err, QuoteFailure::PcrValues { .. }), "{err}");

    let mut quote = d.quote.clone();
    let last = quote.len() - 1;
    quote[last] ^= 1;
    let err = v.verify(&quote, &d.sig, &d.nonce, &d.pcrs).unwrap_err();
    assert_eq!(err, QuoteFailure::BadSignature);

    let Signature::Rsassa { hash, mut sig } = d.sig.clone() else {
        panic!("RSASSA expected");
    };
    sig[10] ^= 0x40;
    let err = v
        .verify(
            &d.quote,
            &Signature::Rsassa { hash, sig },
            &d.nonce,
            &d.pcrs,
        )
        .unwrap_err();
    assert_eq!(err, QuoteFailure::BadSignature);

    let pss = Signature::Rsapss {
        hash,
        sig: vec![0; 256],
    };
    let err = v.verify(&d.quote, &pss, &d.nonce, &d.pcrs).unwrap_err();
    assert!(matches!(err, QuoteFailure::SchemeMismatch { .. }), "{err}");
}

#[test]
fn every_truncation_is_a_typed_error() {
    let d = doc();
    for n in 0..d.quote.len() {
        assert!(Attest::from_bytes(&d.quote[..n]).is_err(), "{n}");
    }
    let ak = d.ak.to_bytes();
    for n in 0..ak.len() {
        assert!(Public::from_bytes(&ak[..n]).is_err(), "{n}");
    }
    let mut long = d.quote.clone();
    long.push(0);
    assert!(Attest::from_bytes(&long).is_err());
}

#[test]
fn the_real_ak_is_a_proper_ak_and_tampered_attributes_are_named() {
    use trustlaunch_tpm::ak::check_ak;
    use trustlaunch_tpm::public::ObjectAttributes as A;
    let d = doc();
    check_ak(&d.ak).expect("the GCE AK is a restricted signing key");
    let mut ak = d.ak.clone();
    ak.attributes = A(ak.attributes.0 & !A::RESTRICTED);
    let err = check_ak(&ak).unwrap_err();
    assert_eq!(err.missing, ["restricted"]);
    ak.attributes = A(ak.attributes.0 | A::RESTRICTED | A::DECRYPT);
    let err = check_ak(&ak).unwrap_err();
    assert_eq!(err.forbidden, ["decrypt"]);
    assert!(err.to_string().contains("decrypt"), "{err}");
    // The name changes with the attributes: a swapped AK is a different key.
    assert_ne!(ak.name(), d.ak.name());
}

#[test]
fn clock_info_tells_reboots_and_rollbacks() {
    use trustlaunch_tpm::attest::ClockInfo;
    use trustlaunch_tpm::quote::{clock_change, ClockChange};
    let a = ClockInfo {
        clock: 1000,
        reset_count: 5,
        restart_count: 0,
        safe: true,
    };
    let later = ClockInfo { clock: 2000, ..a };
    let rebooted = ClockInfo {
        clock: 10,
        reset_count: 6,
        ..a
    };
    let resumed = ClockInfo {
        restart_count: 1,
        ..later
    };
    assert_eq!(clock_change(&a, &later), ClockChange::SameBoot);
    assert_eq!(clock_change(&a, &rebooted), ClockChange::Rebooted);
    assert_eq!(clock_change(&a, &resumed), ClockChange::Resumed);
    assert_eq!(clock_change(&later, &a), ClockChange::WentBackwards);
    assert_eq!(clock_change(&rebooted, &a), ClockChange::WentBackwards);
}
