//! Full quote verifications per second per core (unmarshal the quote and
//! signature, verify the signature, check the nonce, compute and compare the
//! PCR digest) for RSA-2048 and ECC P-256 AKs, and MakeCredential per second
//! for RSA-2048 and ECC P-256 EKs. Results: docs/benchmarks.md.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand_core::OsRng;
use rsa::traits::PublicKeyParts;
use signature::hazmat::PrehashSigner;
use trustlaunch_tpm::alg::{AlgId, HashAlg};
use trustlaunch_tpm::attest::{Attest, Attested, ClockInfo, TPM_GENERATED};
use trustlaunch_tpm::credential::make_credential;
use trustlaunch_tpm::pcr::{pcr_digest, PcrSelection, PcrValues};
use trustlaunch_tpm::public::{curve, ObjectAttributes as A, Public, PublicKey, Scheme, SymDef};
use trustlaunch_tpm::quote::QuoteVerifier;
use trustlaunch_tpm::signature::Signature;

const AK_ATTRS: u32 = A::FIXED_TPM
    | A::FIXED_PARENT
    | A::SENSITIVE_DATA_ORIGIN
    | A::USER_WITH_AUTH
    | A::RESTRICTED
    | A::SIGN_ENCRYPT;

fn pcrs() -> (PcrSelection, PcrValues) {
    let sel = PcrSelection::single(HashAlg::Sha256, &(0..24).collect::<Vec<_>>());
    let mut values = PcrValues::new();
    let bank: BTreeMap<u32, Vec<u8>> = (0..24)
        .map(|i| (i, HashAlg::Sha256.hash(&[i as u8])))
        .collect();
    values.insert(HashAlg::Sha256, bank);
    (sel, values)
}

fn attest_bytes(nonce: &[u8]) -> Vec<u8> {
    let (sel, values) = pcrs();
    let digest = pcr_digest(&sel, &values, HashAlg::Sha256).expect("digest");
    Attest {
        magic: TPM_GENERATED,
        qualified_signer: vec![0, 0x0b, 1, 2, 3],
        extra_data: nonce.to_vec(),
        clock_info: ClockInfo {
            clock: 123_456,
            reset_count: 3,
            restart_count: 0,
            safe: true,
        },
        firmware_version: 0x2019_1023,
        attested: Attested::Quote {
            pcr_select: sel,
            pcr_digest: digest,
        },
    }
    .to_bytes()
}

fn bench(c: &mut Criterion) {
    let nonce = [7u8; 32];
    let attest = attest_bytes(&nonce);
    let (_, values) = pcrs();
    let digest = HashAlg::Sha256.hash(&attest);

    // RSA-2048 AK, RSASSA-SHA256.
    let rsa_key = rsa::RsaPrivateKey::new(&mut OsRng, 2048).expect("RSA key");
    let rsa_sig = rsa_key
        .sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &digest)
        .expect("sign");
    let rsa_ak = Public {
        name_alg: AlgId::SHA256,
        attributes: A(AK_ATTRS),
        auth_policy: vec![],
        key: PublicKey::Rsa {
            symmetric: SymDef::NULL,
            scheme: Scheme {
                scheme: AlgId::RSASSA,
                hash: AlgId::SHA256,
                count: 0,
            },
            key_bits: 2048,
            exponent: 0,
            modulus: rsa_key.n().to_bytes_be(),
        },
    };
    let rsa_sig = Signature::Rsassa {
        hash: AlgId::SHA256,
        sig: rsa_sig,
    }
    .to_bytes();

    // ECC P-256 AK, ECDSA-SHA256.
    let ecc_key = p256::ecdsa::SigningKey::random(&mut OsRng);
    let sig: p256::ecdsa::Signature = ecc_key.sign_prehash(&digest).expect("sign");
    let point = ecc_key.verifying_key().to_encoded_point(false);
    let ecc_ak = Public {
        name_alg: AlgId::SHA256,
        attributes: A(AK_ATTRS),
        auth_policy: vec![],
        key: PublicKey::Ecc {
            symmetric: SymDef::NULL,
            scheme: Scheme {
                scheme: AlgId::ECDSA,
                hash: AlgId::SHA256,
                count: 0,
            },
            curve: curve::NIST_P256,
            kdf: Scheme::NULL,
            x: point.x().expect("x").to_vec(),
            y: point.y().expect("y").to_vec(),
        },
    };
    let (r, s) = sig.split_bytes();
    let ecc_sig = Signature::Ecdsa {
        hash: AlgId::SHA256,
        r: r.to_vec(),
        s: s.to_vec(),
    }
    .to_bytes();

    let mut g = c.benchmark_group("quote-verify");
    g.throughput(Throughput::Elements(1));
    for (name, ak, sig) in [
        ("rsa2048", &rsa_ak, &rsa_sig),
        ("ecc-p256", &ecc_ak, &ecc_sig),
    ] {
        let verifier = QuoteVerifier::new(ak).expect("AK");
        verifier
            .verify(
                &attest,
                &Signature::from_bytes(sig).expect("sig"),
                &nonce,
                &values,
            )
            .expect("valid");
        // Per quote: unmarshal the signature, verify, unmarshal the attest,
        // nonce and PCR digest. The AK is prepared once per VM.
        g.bench_function(name, |b| {
            b.iter(|| {
                let sig = Signature::from_bytes(black_box(sig)).expect("sig");
                black_box(
                    verifier
                        .verify(black_box(&attest), &sig, &nonce, &values)
                        .expect("valid"),
                )
            })
        });
        // Including the AK's preparation from its TPMT_PUBLIC bytes.
        let ak_bytes = ak.to_bytes();
        g.bench_function(format!("{name}+ak-parse"), |b| {
            b.iter(|| {
                let ak = Public::from_bytes(black_box(&ak_bytes)).expect("AK");
                let verifier = QuoteVerifier::new(&ak).expect("AK");
                let sig = Signature::from_bytes(black_box(sig)).expect("sig");
                black_box(
                    verifier
                        .verify(black_box(&attest), &sig, &nonce, &values)
                        .expect("valid"),
                )
            })
        });
    }
    g.finish();

    // MakeCredential for RSA-2048 and ECC P-256 EKs (EK templates L-1/L-2).
    let ek_sym = SymDef {
        algorithm: AlgId::AES,
        key_bits: 128,
        mode: AlgId::CFB,
    };
    let ek_rsa = Public {
        name_alg: AlgId::SHA256,
        attributes: A(0x000300b2),
        auth_policy: vec![0; 32],
        key: PublicKey::Rsa {
            symmetric: ek_sym,
            scheme: Scheme::NULL,
            key_bits: 2048,
            exponent: 0,
            modulus: rsa::RsaPrivateKey::new(&mut OsRng, 2048)
                .expect("key")
                .n()
                .to_bytes_be(),
        },
    };
    let ek_point = p256::SecretKey::random(&mut OsRng)
        .public_key()
        .to_encoded_point(false);
    let ek_ecc = Public {
        name_alg: AlgId::SHA256,
        attributes: A(0x000300b2),
        auth_policy: vec![0; 32],
        key: PublicKey::Ecc {
            symmetric: ek_sym,
            scheme: Scheme::NULL,
            curve: curve::NIST_P256,
            kdf: Scheme::NULL,
            x: ek_point.x().expect("x").to_vec(),
            y: ek_point.y().expect("y").to_vec(),
        },
    };
    let name = rsa_ak.name().expect("name");
    let mut g = c.benchmark_group("make-credential");
    g.throughput(Throughput::Elements(1));
    for (label, ek) in [("rsa2048-ek", &ek_rsa), ("ecc-p256-ek", &ek_ecc)] {
        g.bench_function(label, |b| {
            b.iter(|| black_box(make_credential(ek, &name, &[9u8; 32], &mut OsRng).expect("made")))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
