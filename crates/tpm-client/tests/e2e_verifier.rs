//! The whole trust chain of a vTPM against a real swtpm, with our own parts
//! only: the platform's vTPM CA certifies the EK and the certificate is
//! provisioned into the TPM's NV; a verifier reads it back and validates
//! the chain and its binding to the EK; the client creates an AK under the
//! EK; the verifier's MakeCredential is activated by the TPM (proving the
//! AK lives in the TPM that holds the EK); the TPM quotes RSA and ECC, and
//! the verifier checks the quotes against PCRs the client read.

use std::time::{SystemTime, UNIX_EPOCH};

use trustlaunch_tpm::ak::check_ak;
use trustlaunch_tpm::alg::HashAlg as VHash;
use trustlaunch_tpm::ca::{CaConfig, CaKeyAlgorithm, CaSigningKey, EkCertRequest, VtpmCa};
use trustlaunch_tpm::credential::make_credential;
use trustlaunch_tpm::ek::{cert_matches_ek, ek_public_key};
use trustlaunch_tpm::ekcert::{
    EkCertificate, EkTrustStore, TpmIdentity, TpmSpecification, UnixTime,
};
use trustlaunch_tpm::pcr::PcrValues as VPcrs;
use trustlaunch_tpm::public::Public;
use trustlaunch_tpm::quote::{QuoteFailure, QuoteVerifier};
use trustlaunch_tpm::signature::Signature;
use trustlaunch_tpm_client::harness::Swtpm;
use trustlaunch_tpm_client::{HashAlg, KeyAlg, PcrSelection};

fn now() -> UnixTime {
    UnixTime::from_secs(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs(),
    )
}

fn vtpm_ca() -> VtpmCa {
    let mut rng = rand_core::OsRng;
    let key = CaSigningKey::generate(CaKeyAlgorithm::P384, &mut rng);
    let config = CaConfig {
        common_name: "trustlaunch test vTPM CA".into(),
        organization: None,
        not_before: UnixTime::from_secs(now().as_secs().saturating_sub(60)),
        not_after: None,
        path_len_constraint: Some(0),
    };
    VtpmCa::create(key, &config, &mut rng).expect("CA")
}

fn verifier_pcrs(values: &trustlaunch_tpm_client::PcrValues) -> VPcrs {
    let mut out = VPcrs::new();
    for v in &values.values {
        let bank = match v.bank {
            HashAlg::Sha1 => VHash::Sha1,
            HashAlg::Sha256 => VHash::Sha256,
            HashAlg::Sha384 => VHash::Sha384,
            HashAlg::Sha512 => VHash::Sha512,
            other => panic!("bank {other:?}"),
        };
        out.entry(bank)
            .or_default()
            .insert(u32::from(v.index), v.digest.clone());
    }
    out
}

fn trust_chain(alg: KeyAlg) {
    let swtpm = Swtpm::start().expect("swtpm (installed by ./scripts/test.sh)");
    let mut tpm = swtpm.client().expect("client");
    tpm.startup_clear().expect("startup");

    // Platform side, at vTPM creation: certify the EK, write it to NV.
    let ek = tpm.create_ek(alg).expect("EK");
    let ek_pub = Public::from_bytes(&ek.public).expect("EK TPMT_PUBLIC");
    assert_eq!(
        ek_pub.name().expect("name"),
        ek.name,
        "our name is the TPM's"
    );
    let ca = vtpm_ca();
    let request = EkCertRequest {
        ek: ek_public_key(&ek_pub).expect("EK key"),
        tpm: TpmIdentity {
            manufacturer: "id:00001014".into(),
            model: "swtpm".into(),
            version: "id:20191023".into(),
        },
        spec: TpmSpecification {
            family: "2.0".into(),
            level: 0,
            revision: 164,
        },
        not_before: UnixTime::from_secs(now().as_secs().saturating_sub(60)),
        not_after: None,
        policies: Vec::new(),
    };
    let cert = ca
        .issue_ek_cert(&request, &mut rand_core::OsRng)
        .expect("EK cert");
    tpm.provision_ek_certificate(alg, cert.der(), true)
        .expect("NV write");

    // Verifier side: the EK certificate from NV chains to the CA and
    // certifies this EK.
    let from_nv = tpm
        .read_ek_certificate(alg)
        .expect("NV read")
        .expect("EK cert present");
    let parsed = EkCertificate::parse(&from_nv).expect("EK cert parses");
    let store = EkTrustStore::new(vec![ca.certificate().clone()]);
    store.verify(&parsed, now()).expect("chains to the vTPM CA");
    assert!(cert_matches_ek(&parsed, &ek_pub));
    let other_ca = vtpm_ca();
    assert!(
        EkTrustStore::new(vec![other_ca.certificate().clone()])
            .verify(&parsed, now())
            .is_err(),
        "an unknown CA does not vouch for it"
    );

    // The AK, created under the EK.
    let ak = tpm.create_ak(ek.handle, alg).expect("AK");
    let ak_pub = Public::from_bytes(&ak.key.public).expect("AK TPMT_PUBLIC");
    check_ak(&ak_pub).expect("a proper AK");
    let ak_name = ak_pub.name().expect("name");
    assert_eq!(ak_name, ak.key.name);

    // Credential activation: the verifier's secret comes back only from
    // the TPM that holds the EK, for this AK.
    let secret = b"enrollment challenge 0123456789";
    let made = make_credential(&ek_pub, &ak_name, secret, &mut rand_core::OsRng).expect("made");
    let got = tpm
        .activate_credential(
            ak.key.handle,
            ek.handle,
            &made.credential_blob,
            &made.secret,
        )
        .expect("activation");
    assert_eq!(got, secret);

    // An AK that is not in this EK's TPM: made for the other TPM's AK name
    // with this EK, the other TPM cannot activate it.
    let other = Swtpm::start().expect("second swtpm");
    let mut tpm2 = other.client().expect("client");
    tpm2.startup_clear().expect("startup");
    let ek2 = tpm2.create_ek(alg).expect("EK2");
    let ak2 = tpm2.create_ak(ek2.handle, alg).expect("AK2");
    let made =
        make_credential(&ek_pub, &ak2.key.name, secret, &mut rand_core::OsRng).expect("made");
    assert!(
        tpm2.activate_credential(
            ak2.key.handle,
            ek2.handle,
            &made.credential_blob,
            &made.secret
        )
        .is_err(),
        "a credential for EK 1 must not activate in TPM 2"
    );

    // Quotes: extend, quote with a fresh nonce, read the PCRs, verify.
    tpm.pcr_extend(4, HashAlg::Sha256, &[0x44; 32])
        .expect("extend");
    tpm.pcr_extend(7, HashAlg::Sha256, &[0x77; 32])
        .expect("extend");
    let selection = PcrSelection::new(HashAlg::Sha256, 0..8).with(HashAlg::Sha1, [0, 7]);
    let nonce = tpm.get_random(32).expect("random");
    let quote = tpm.quote(ak.key.handle, &nonce, &selection).expect("quote");
    let read = tpm.pcr_read(&selection).expect("PCR read");
    let pcrs = verifier_pcrs(&read);
    let verifier = QuoteVerifier::new(&ak_pub).expect("AK");
    let sig = Signature::from_bytes(&quote.signature).expect("TPMT_SIGNATURE");
    let q = verifier
        .verify(&quote.attest, &sig, &nonce, &pcrs)
        .expect("quote verifies");
    assert_eq!(q.selection.banks.len(), 2);
    assert_eq!(q.qualified_signer.len(), 34);

    // The verdicts of a tampered exchange.
    let err = verifier
        .verify(&quote.attest, &sig, &[0; 32], &pcrs)
        .unwrap_err();
    assert!(matches!(err, QuoteFailure::NonceMismatch { .. }), "{err}");
    let mut changed = pcrs.clone();
    changed
        .get_mut(&VHash::Sha256)
        .expect("bank")
        .insert(7, vec![0; 32]);
    let err = verifier
        .verify(&quote.attest, &sig, &nonce, &changed)
        .unwrap_err();
    assert!(
        matches!(err, QuoteFailure::PcrDigestMismatch { .. }),
        "{err}"
    );
    let ak2_pub = Public::from_bytes(&ak2.key.public).expect("AK2");
    let err = QuoteVerifier::new(&ak2_pub)
        .expect("AK2")
        .verify(&quote.attest, &sig, &nonce, &pcrs)
        .unwrap_err();
    assert_eq!(
        err,
        QuoteFailure::BadSignature,
        "a quote checked with another TPM's AK"
    );
    // A later quote after more extends: the old PCR values no longer fit.
    tpm.pcr_extend(7, HashAlg::Sha256, &[0x78; 32])
        .expect("extend");
    let nonce2 = tpm.get_random(32).expect("random");
    let quote2 = tpm
        .quote(ak.key.handle, &nonce2, &selection)
        .expect("quote");
    let sig2 = Signature::from_bytes(&quote2.signature).expect("sig");
    let err = verifier
        .verify(&quote2.attest, &sig2, &nonce2, &pcrs)
        .unwrap_err();
    assert!(
        matches!(err, QuoteFailure::PcrDigestMismatch { .. }),
        "{err}"
    );
    let q2 = verifier
        .verify(
            &quote2.attest,
            &sig2,
            &nonce2,
            &verifier_pcrs(&tpm.pcr_read(&selection).expect("read")),
        )
        .expect("fresh values verify");
    assert_eq!(
        trustlaunch_tpm::quote::clock_change(&q.clock_info, &q2.clock_info),
        trustlaunch_tpm::quote::ClockChange::SameBoot
    );
}

#[test]
fn rsa_vtpm_trust_chain_end_to_end() {
    trust_chain(KeyAlg::Rsa2048);
}

#[test]
fn ecc_vtpm_trust_chain_end_to_end() {
    trust_chain(KeyAlg::EccP256);
}
