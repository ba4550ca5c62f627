//! EK certificates and the vTPM CA through the public API: issue, parse,
//! verify, and every verdict; real swtpm EK certificates (fixtures in
//! tests/data/ekcert, see its README); interop with OpenSSL and swtpm.
//!
//! The OpenSSL and swtpm tests run the tools and fail, saying what to
//! install, when they are missing.

use std::path::{Path, PathBuf};

use der::{Decode, Encode};
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use trustlaunch_tpm::ca::{CaConfig, CaError, CaKeyAlgorithm, CaSigningKey, EkCertRequest, VtpmCa};
use trustlaunch_tpm::ekcert::{
    CaCertificate, CertError, ChainError, EccCurve, EkCertificate, EkPublicKey, EkTrustStore,
    ProfileDeviation, TpmIdentity, TpmSpecification, UnixTime,
};
use x509_cert::certificate::TbsCertificate;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
use x509_cert::ext::Extension;
use x509_cert::Certificate;

/// "Now" for every test that does not run a tool: 2027-01-15T08:00:00Z.
const NOW: UnixTime = UnixTime::from_secs(1_800_000_000);
const DAY: u64 = 86_400;

fn at(offset_days: i64) -> UnixTime {
    let secs = NOW.as_secs() as i64 + offset_days * DAY as i64;
    UnixTime::from_secs(secs as u64)
}

/// A deterministic RNG (SHA-256 in counter mode) so runs are reproducible.
struct TestRng {
    seed: [u8; 32],
    counter: u64,
}

impl TestRng {
    fn new(label: &str) -> Self {
        TestRng {
            seed: Sha256::digest(label.as_bytes()).into(),
            counter: 0,
        }
    }
}

impl RngCore for TestRng {
    fn next_u32(&mut self) -> u32 {
        rand_core::impls::next_u32_via_fill(self)
    }
    fn next_u64(&mut self) -> u64 {
        rand_core::impls::next_u64_via_fill(self)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(32) {
            let block = Sha256::new()
                .chain_update(self.seed)
                .chain_update(self.counter.to_be_bytes())
                .finalize();
            self.counter += 1;
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for TestRng {}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ekcert")
}

fn read(path: &str) -> Vec<u8> {
    let full = data_dir().join(path);
    std::fs::read(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn ca_config(name: &str) -> CaConfig {
    CaConfig {
        common_name: name.to_string(),
        organization: Some("trustlaunch".to_string()),
        not_before: at(-365),
        not_after: Some(at(3650)),
        path_len_constraint: Some(0),
    }
}

fn make_ca(name: &str, alg: CaKeyAlgorithm, seed: &str) -> VtpmCa {
    let mut rng = TestRng::new(seed);
    let key = CaSigningKey::generate(alg, &mut rng);
    VtpmCa::create(key, &ca_config(name), &mut rng).expect("create CA")
}

fn swtpm_identity() -> TpmIdentity {
    TpmIdentity {
        manufacturer: "id:00001014".into(),
        model: "swtpm".into(),
        version: "id:20191023".into(),
    }
}

fn tpm_spec() -> TpmSpecification {
    TpmSpecification {
        family: "2.0".into(),
        level: 0,
        revision: 164,
    }
}

/// The RSA-2048 EK of the swtpm fixture: a real TPM-made modulus.
fn rsa_ek() -> EkPublicKey {
    EkCertificate::parse(&read("swtpm/ek-rsa2048.der"))
        .unwrap()
        .public_key()
        .clone()
}

/// A P-256 EK from the test RNG.
fn ecc_ek(seed: &str) -> EkPublicKey {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let secret = p256::SecretKey::random(&mut TestRng::new(seed));
    let point = secret.public_key().to_encoded_point(false);
    EkPublicKey::Ecc {
        curve: EccCurve::NistP256,
        x: point.x().unwrap().to_vec(),
        y: point.y().unwrap().to_vec(),
    }
}

fn request(ek: EkPublicKey) -> EkCertRequest {
    EkCertRequest {
        ek,
        tpm: swtpm_identity(),
        spec: tpm_spec(),
        not_before: at(-1),
        not_after: Some(at(365)),
        policies: Vec::new(),
    }
}

fn store(ca: &VtpmCa) -> EkTrustStore {
    EkTrustStore::new(vec![ca.certificate().clone()])
}

/// Re-signs a copy of `cert` with `ca`'s key after `edit` changes its TBS.
fn resign(cert: &[u8], ca: &VtpmCa, edit: impl FnOnce(&mut TbsCertificate)) -> Vec<u8> {
    use p256::pkcs8::DecodePrivateKey;
    use signature::Signer;
    let key = p256::ecdsa::SigningKey::from_pkcs8_pem(&ca.key_pkcs8_pem().unwrap()).unwrap();
    let mut cert = Certificate::from_der(cert).unwrap();
    edit(&mut cert.tbs_certificate);
    let sig: p256::ecdsa::DerSignature = key.sign(&cert.tbs_certificate.to_der().unwrap());
    cert.signature = der::asn1::BitString::from_bytes(sig.as_bytes()).unwrap();
    cert.to_der().unwrap()
}

fn set_extension(tbs: &mut TbsCertificate, ext: Extension) {
    let list = tbs.extensions.get_or_insert_with(Vec::new);
    list.retain(|e| e.extn_id != ext.extn_id);
    list.push(ext);
}

fn extension<E: Encode>(oid: &str, value: &E, critical: bool) -> Extension {
    Extension {
        extn_id: oid.parse().unwrap(),
        critical,
        extn_value: der::asn1::OctetString::new(value.to_der().unwrap()).unwrap(),
    }
}

// ---------------------------------------------------------------- round trips

#[test]
fn issued_rsa_ek_cert_round_trips_and_verifies() {
    let ca = make_ca("trustlaunch vTPM CA", CaKeyAlgorithm::P256, "ca-rsa");
    let req = request(rsa_ek());
    let ek = ca
        .issue_ek_cert(&req, &mut TestRng::new("serial-1"))
        .unwrap();

    let parsed = EkCertificate::parse(ek.der()).unwrap();
    assert_eq!(parsed.public_key(), &req.ek);
    assert_eq!(parsed.public_key().bits(), 2048);
    assert_eq!(parsed.tpm_identity(), Some(&req.tpm));
    assert_eq!(
        parsed.tpm_identity().unwrap().manufacturer_id(),
        Some(0x1014)
    );
    assert_eq!(parsed.tpm_specification(), Some(&req.spec));
    assert!(parsed.has_ek_key_usage());
    assert!(parsed.san_is_critical());
    assert_eq!(parsed.id().subject(), "");
    assert_eq!(parsed.id().issuer(), "CN=trustlaunch vTPM CA,O=trustlaunch");
    assert_eq!(parsed.not_before(), req.not_before);
    assert_eq!(parsed.not_after(), req.not_after.unwrap());
    let serial = parsed.serial().as_bytes();
    assert!(!serial.is_empty() && serial.len() <= 20 && serial[0] & 0x80 == 0);
    assert!(parsed.authority_key_id().is_some());
    assert_eq!(parsed.profile_deviations(), vec![]);
    // PEM parses to the same certificate.
    let from_pem = EkCertificate::parse(parsed.to_pem().as_bytes()).unwrap();
    assert_eq!(from_pem.der(), ek.der());

    let chain = store(&ca).verify(&parsed, NOW).unwrap();
    assert_eq!(
        chain.certs,
        vec![parsed.id().clone(), ca.certificate().id().clone()]
    );
    assert_eq!(chain.anchor(), Some(ca.certificate().id()));
}

#[test]
fn issued_ecc_ek_cert_round_trips_with_p384_ca_no_expiry_and_policies() {
    let ca = make_ca("trustlaunch vTPM CA P-384", CaKeyAlgorithm::P384, "ca-ecc");
    let mut req = request(ecc_ek("ek-ecc"));
    req.not_after = None;
    req.policies = vec!["1.3.6.1.4.1.99999.1.2".parse().unwrap()];
    let ek = ca
        .issue_ek_cert(&req, &mut TestRng::new("serial-2"))
        .unwrap();

    assert_eq!(ek.public_key(), &req.ek);
    assert_eq!(ek.tpm_identity(), Some(&req.tpm));
    assert_eq!(ek.not_after(), UnixTime::NO_EXPIRY);
    assert_eq!(ek.profile_deviations(), vec![]);
    let (parsed, chain) = store(&ca).verify_der(ek.der(), at(3000)).unwrap();
    assert_eq!(parsed.der(), ek.der());
    assert_eq!(chain.certs.len(), 2);
}

#[test]
fn serials_differ_and_come_from_the_callers_rng() {
    let ca = make_ca("CA", CaKeyAlgorithm::P256, "serials");
    let req = request(ecc_ek("ek"));
    let a = ca.issue_ek_cert(&req, &mut TestRng::new("a")).unwrap();
    let b = ca.issue_ek_cert(&req, &mut TestRng::new("b")).unwrap();
    let a2 = ca.issue_ek_cert(&req, &mut TestRng::new("a")).unwrap();
    assert_ne!(a.serial(), b.serial());
    // ECDSA signing is deterministic (RFC 6979), so the same RNG gives the
    // same certificate.
    assert_eq!(a.der(), a2.der());
}

#[test]
fn ca_exports_and_imports_as_pem() {
    let ca = make_ca("CA", CaKeyAlgorithm::P384, "pem");
    let key_pem = ca.key_pkcs8_pem().unwrap();
    assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let cert_pem = ca.cert_pem();
    let loaded = VtpmCa::from_pem(&key_pem, &cert_pem).unwrap();
    assert_eq!(loaded.cert_der(), ca.cert_der());

    // A certificate the reloaded CA issues verifies against the original.
    let ek = loaded
        .issue_ek_cert(&request(rsa_ek()), &mut TestRng::new("s"))
        .unwrap();
    store(&ca).verify(&ek, NOW).unwrap();

    // Another CA's key does not go with this certificate.
    let other = make_ca("CA", CaKeyAlgorithm::P384, "other");
    let err = VtpmCa::from_pem(&other.key_pkcs8_pem().unwrap(), &cert_pem).unwrap_err();
    assert_eq!(err, CaError::KeyMismatch);
    assert!(matches!(
        VtpmCa::from_pem("not a key", &cert_pem),
        Err(CaError::BadKey { .. })
    ));
}

#[test]
fn ca_rejects_bad_requests() {
    let ca = make_ca("CA", CaKeyAlgorithm::P256, "bad-requests");
    let mut rng = TestRng::new("r");
    let mut req = request(ecc_ek("ek"));
    if let EkPublicKey::Ecc { y, .. } = &mut req.ek {
        y[31] ^= 1; // off the curve
    }
    assert!(matches!(
        ca.issue_ek_cert(&req, &mut rng),
        Err(CaError::BadEkKey { .. })
    ));

    let short = EkPublicKey::Rsa {
        modulus: vec![0xc5; 128],
        exponent: 65537,
    };
    assert!(matches!(
        ca.issue_ek_cert(&request(short), &mut rng),
        Err(CaError::BadEkKey { .. })
    ));

    let mut req = request(rsa_ek());
    req.not_before = at(10);
    req.not_after = Some(at(5));
    assert!(matches!(
        ca.issue_ek_cert(&req, &mut rng),
        Err(CaError::BadValidity { .. })
    ));

    let mut req = request(rsa_ek());
    req.tpm.model = String::new();
    assert!(matches!(
        ca.issue_ek_cert(&req, &mut rng),
        Err(CaError::BadField { .. })
    ));
}

#[test]
fn sub_ca_chain_verifies_and_path_length_is_enforced() {
    let mut rng = TestRng::new("hierarchy");
    let mut root_config = ca_config("trustlaunch root");
    root_config.path_len_constraint = Some(1);
    let root = VtpmCa::create(
        CaSigningKey::generate(CaKeyAlgorithm::P384, &mut rng),
        &root_config,
        &mut rng,
    )
    .unwrap();
    let host = root
        .issue_sub_ca(
            CaSigningKey::generate(CaKeyAlgorithm::P256, &mut rng),
            &ca_config("host-7 vTPM CA"),
            &mut rng,
        )
        .unwrap();
    let ek = host
        .issue_ek_cert(&request(ecc_ek("ek")), &mut rng)
        .unwrap();

    let trust = EkTrustStore::new(vec![root.certificate().clone()]);
    // Without the intermediate the issuer is unknown.
    assert!(matches!(
        trust.verify(&ek, NOW),
        Err(ChainError::UnknownIssuer { ref cert, .. }) if cert == ek.id()
    ));
    let chain = trust
        .verify_with(&ek, &[host.certificate().clone()], NOW)
        .unwrap();
    assert_eq!(
        chain.certs,
        vec![
            ek.id().clone(),
            host.certificate().id().clone(),
            root.certificate().id().clone()
        ]
    );
    let trust = trust.with_intermediates(vec![host.certificate().clone()]);
    trust.verify(&ek, NOW).unwrap();
    // A bound of two certificates cannot reach the root.
    assert!(matches!(
        trust.clone().with_max_chain_len(2).verify(&ek, NOW),
        Err(ChainError::ChainTooLong { max: 2, .. })
    ));

    // A sub-CA under a root with pathLenConstraint 0, with another sub-CA
    // below it, exceeds the root's constraint.
    let strict = make_ca("strict root", CaKeyAlgorithm::P256, "strict");
    let mut lenient = ca_config("mid");
    lenient.path_len_constraint = None;
    let mid = strict
        .issue_sub_ca(
            CaSigningKey::generate(CaKeyAlgorithm::P256, &mut rng),
            &lenient,
            &mut rng,
        )
        .unwrap();
    let low = mid
        .issue_sub_ca(
            CaSigningKey::generate(CaKeyAlgorithm::P256, &mut rng),
            &ca_config("low"),
            &mut rng,
        )
        .unwrap();
    let ek = low.issue_ek_cert(&request(rsa_ek()), &mut rng).unwrap();
    let trust = EkTrustStore::new(vec![strict.certificate().clone()])
        .with_intermediates(vec![mid.certificate().clone(), low.certificate().clone()]);
    assert_eq!(
        trust.verify(&ek, NOW),
        Err(ChainError::PathLenExceeded {
            cert: strict.certificate().id().clone(),
            path_len: 0
        })
    );
}

// ------------------------------------------------------------------ verdicts

#[test]
fn unknown_ca_is_unknown_issuer() {
    let ca = make_ca("CA one", CaKeyAlgorithm::P256, "one");
    let other = make_ca("CA two", CaKeyAlgorithm::P256, "two");
    let ek = ca
        .issue_ek_cert(&request(rsa_ek()), &mut TestRng::new("s"))
        .unwrap();
    assert_eq!(
        store(&other).verify(&ek, NOW),
        Err(ChainError::UnknownIssuer {
            cert: ek.id().clone(),
            issuer: "CN=CA one,O=trustlaunch".into()
        })
    );
    assert!(matches!(
        EkTrustStore::new(vec![]).verify(&ek, NOW),
        Err(ChainError::UnknownIssuer { .. })
    ));
}

#[test]
fn expired_and_not_yet_valid() {
    let ca = make_ca("CA", CaKeyAlgorithm::P256, "validity");
    let ek = ca
        .issue_ek_cert(&request(rsa_ek()), &mut TestRng::new("s"))
        .unwrap();
    let trust = store(&ca);
    assert_eq!(
        trust.verify(&ek, at(366)),
        Err(ChainError::Expired {
            cert: ek.id().clone(),
            not_after: at(365)
        })
    );
    assert_eq!(
        trust.verify(&ek, at(-2)),
        Err(ChainError::NotYetValid {
            cert: ek.id().clone(),
            not_before: at(-1)
        })
    );
    // Both ends are inclusive (RFC 5280 §4.1.2.5).
    trust.verify(&ek, at(365)).unwrap();
    trust.verify(&ek, at(-1)).unwrap();

    // An expired CA fails the chain, naming the CA.
    let mut config = ca_config("short-lived CA");
    config.not_after = Some(at(-30));
    config.not_before = at(-400);
    let mut rng = TestRng::new("short");
    let old = VtpmCa::create(
        CaSigningKey::generate(CaKeyAlgorithm::P256, &mut rng),
        &config,
        &mut rng,
    )
    .unwrap();
    let ek = old.issue_ek_cert(&request(rsa_ek()), &mut rng).unwrap();
    assert_eq!(
        store(&old).verify(&ek, NOW),
        Err(ChainError::Expired {
            cert: old.certificate().id().clone(),
            not_after: at(-30)
        })
    );
}

#[test]
fn signature_by_another_key_is_bad_signature() {
    // Same name, different key: the name matches, the signature does not.
    let real = make_ca("vTPM CA", CaKeyAlgorithm::P256, "real");
    let impostor = make_ca("vTPM CA", CaKeyAlgorithm::P256, "impostor");
    let forged = impostor
        .issue_ek_cert(&request(rsa_ek()), &mut TestRng::new("s"))
        .unwrap();
    assert_eq!(
        store(&real).verify(&forged, NOW),
        Err(ChainError::BadSignature {
            cert: forged.id().clone(),
            issuer: real.certificate().id().clone()
        })
    );
    // With both roots trusted, the search finds the one that signed.
    let both = EkTrustStore::new(vec![
        real.certificate().clone(),
        impostor.certificate().clone(),
    ]);
    assert_eq!(
        both.verify(&forged, NOW).unwrap().anchor(),
        Some(impostor.certificate().id())
    );
}

#[test]
fn tampered_certificate_is_bad_signature() {
    let ca = make_ca("CA", CaKeyAlgorithm::P256, "tamper");
    let ek = ca
        .issue_ek_cert(&request(rsa_ek()), &mut TestRng::new("s"))
        .unwrap();
    let mut der = ek.der().to_vec();
    // The model string "swtpm" sits inside the signed part.
    let at_model = der.windows(5).position(|w| w == b"swtpm").unwrap();
    der[at_model] = b'S';
    let tampered = EkCertificate::parse(&der).unwrap();
    assert_eq!(tampered.tpm_identity().unwrap().model, "Swtpm");
    assert!(matches!(
        store(&ca).verify(&tampered, NOW),
        Err(ChainError::BadSignature { .. })
    ));
}

#[test]
fn issuer_that_is_not_a_ca() {
    let ca = make_ca("CA", CaKeyAlgorithm::P256, "not-a-ca");
    let ek = ca
        .issue_ek_cert(&request(rsa_ek()), &mut TestRng::new("s"))
        .unwrap();

    // The same key and name, but basicConstraints cA false.
    let leaf_like = resign(ca.cert_der(), &ca, |tbs| {
        let bc = BasicConstraints {
            ca: false,
            path_len_constraint: None,
        };
        set_extension(tbs, extension("2.5.29.19", &bc, true));
    });
    let not_ca = CaCertificate::parse(&leaf_like).unwrap();
    assert!(!not_ca.is_ca());
    assert_eq!(
        EkTrustStore::new(vec![not_ca.clone()]).verify(&ek, NOW),
        Err(ChainError::NotACa {
            cert: not_ca.id().clone()
        })
    );

    // A CA whose keyUsage lacks keyCertSign.
    let no_sign = resign(ca.cert_der(), &ca, |tbs| {
        let ku = KeyUsage(KeyUsages::DigitalSignature.into());
        set_extension(tbs, extension("2.5.29.15", &ku, true));
    });
    let no_sign = CaCertificate::parse(&no_sign).unwrap();
    assert_eq!(
        EkTrustStore::new(vec![no_sign.clone()]).verify(&ek, NOW),
        Err(ChainError::NoKeyCertSign {
            cert: no_sign.id().clone()
        })
    );

    // An EK certificate cannot act as an issuer either.
    let as_root = CaCertificate::parse(ek.der()).unwrap();
    assert!(!as_root.is_ca());
}

#[test]
fn unhandled_critical_extension_fails_the_chain() {
    let ca = make_ca("CA", CaKeyAlgorithm::P256, "critical");
    let ek = ca
        .issue_ek_cert(&request(rsa_ek()), &mut TestRng::new("s"))
        .unwrap();
    let der = resign(ek.der(), &ca, |tbs| {
        set_extension(
            tbs,
            extension("1.3.6.1.4.1.99999.7", &der::asn1::Null, true),
        );
    });
    let ek = EkCertificate::parse(&der).unwrap();
    assert_eq!(
        store(&ca).verify(&ek, NOW),
        Err(ChainError::UnhandledCriticalExtension {
            cert: ek.id().clone(),
            oid: "1.3.6.1.4.1.99999.7".into()
        })
    );
}

#[path = "ekcert/hostile.rs"]
mod hostile;
#[path = "ekcert/interop.rs"]
mod interop;

// --------------------------------------------------- real swtpm certificates

fn check_swtpm_certs(dir: &Path) {
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    let root = CaCertificate::parse(&read("localca-root.pem")).unwrap();
    let issuer = CaCertificate::parse(&read("localca-issuer.pem")).unwrap();
    assert!(root.is_ca() && issuer.is_ca());
    assert_eq!(root.id().subject(), "CN=swtpm-localca-rootca");
    assert_eq!(issuer.id().subject(), "CN=swtpm-localca");

    let rsa = EkCertificate::parse(&read("ek-rsa2048.der")).unwrap();
    let ecc = EkCertificate::parse(&read("ek-secp384r1.der")).unwrap();
    for ek in [&rsa, &ecc] {
        assert_eq!(ek.tpm_identity(), Some(&swtpm_identity()));
        assert_eq!(ek.tpm_specification(), Some(&tpm_spec()));
        assert!(ek.has_ek_key_usage());
        assert!(ek.san_is_critical());
        assert_eq!(ek.id().issuer(), "CN=swtpm-localca");
        assert_eq!(ek.not_after(), UnixTime::NO_EXPIRY);
        // swtpm puts "CN=unknown" (or the --vmid) in the subject.
        assert_eq!(ek.id().subject(), "CN=unknown");
        assert_eq!(
            ek.profile_deviations(),
            vec![ProfileDeviation::SubjectNotEmpty]
        );

        let now = ek.not_before();
        let trust = EkTrustStore::new(vec![root.clone()]);
        assert!(matches!(
            trust.verify(ek, now),
            Err(ChainError::UnknownIssuer { .. })
        ));
        let chain = trust
            .verify_with(ek, std::slice::from_ref(&issuer), now)
            .unwrap();
        assert_eq!(
            chain.certs,
            vec![ek.id().clone(), issuer.id().clone(), root.id().clone()]
        );
        // Trusting the intermediate directly also works.
        EkTrustStore::new(vec![issuer.clone()])
            .verify(ek, now)
            .unwrap();
    }
    match rsa.public_key() {
        EkPublicKey::Rsa { modulus, exponent } => {
            assert_eq!((modulus.len(), *exponent), (256, 65537));
        }
        other => panic!("RSA EK parsed as {other:?}"),
    }
    match ecc.public_key() {
        EkPublicKey::Ecc { curve, x, y } => {
            assert_eq!((*curve, x.len(), y.len()), (EccCurve::NistP384, 48, 48));
        }
        other => panic!("ECC EK parsed as {other:?}"),
    }
    // The bundle form (root and issuer in one PEM file) reads both.
    let bundle = [read("localca-root.pem"), read("localca-issuer.pem")].concat();
    assert_eq!(CaCertificate::parse_pem_bundle(&bundle).unwrap().len(), 2);
}

#[test]
fn swtpm_fixture_certificates_parse_and_verify() {
    check_swtpm_certs(&data_dir().join("swtpm"));
}

#[test]
fn rsa_pss_chain_from_openssl_fixture_verifies() {
    let root = CaCertificate::parse(&read("openssl/pss-root.pem")).unwrap();
    let leaf = EkCertificate::parse(&read("openssl/pss-leaf.pem")).unwrap();
    assert!(leaf.has_ek_key_usage());
    let chain = EkTrustStore::new(vec![root.clone()])
        .verify(&leaf, leaf.not_before())
        .unwrap();
    assert_eq!(chain.anchor(), Some(root.id()));
    // Flip one bit of the PSS signature.
    let mut der = leaf.der().to_vec();
    let last = der.len() - 1;
    der[last] ^= 1;
    let bad = EkCertificate::parse(&der).unwrap();
    assert!(matches!(
        EkTrustStore::new(vec![root]).verify(&bad, leaf.not_before()),
        Err(ChainError::BadSignature { .. })
    ));
}
