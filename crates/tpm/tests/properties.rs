//! Property tests: marshal/unmarshal round trips of every structure, and
//! unmarshalling of arbitrary bytes never panics.

use proptest::prelude::*;
use trustlaunch_tpm::alg::AlgId;
use trustlaunch_tpm::attest::{Attest, Attested, ClockInfo, TPM_GENERATED};
use trustlaunch_tpm::pcr::{BankSelection, PcrSelection};
use trustlaunch_tpm::public::{ObjectAttributes, Public, PublicKey, Scheme, SymDef};
use trustlaunch_tpm::signature::Signature;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..=max)
}

fn hash_alg() -> impl Strategy<Value = AlgId> {
    prop_oneof![
        Just(AlgId::SHA1),
        Just(AlgId::SHA256),
        Just(AlgId::SHA384),
        Just(AlgId::SHA512)
    ]
}

fn selection() -> impl Strategy<Value = PcrSelection> {
    proptest::collection::vec(
        (hash_alg(), proptest::collection::btree_set(0u32..24, 0..24)),
        0..4,
    )
    .prop_map(|banks| PcrSelection {
        banks: banks
            .into_iter()
            .map(|(hash, pcrs)| BankSelection {
                hash,
                pcrs: pcrs.into_iter().collect(),
                size_of_select: 3,
            })
            .collect(),
    })
}

fn attest() -> impl Strategy<Value = Attest> {
    let attested = prop_oneof![
        (selection(), bytes(64)).prop_map(|(pcr_select, pcr_digest)| Attested::Quote {
            pcr_select,
            pcr_digest
        }),
        (bytes(66), bytes(66)).prop_map(|(name, qualified_name)| Attested::Certify {
            name,
            qualified_name
        }),
        (bytes(66), bytes(64)).prop_map(|(object_name, creation_hash)| Attested::Creation {
            object_name,
            creation_hash
        }),
        (0x8014u16..0x8017, bytes(40)).prop_map(|(tag, body)| Attested::Other { tag, body }),
    ];
    (
        prop_oneof![Just(TPM_GENERATED), any::<u32>()],
        bytes(66),
        bytes(66),
        any::<(u64, u32, u32, bool)>(),
        any::<u64>(),
        attested,
    )
        .prop_map(
            |(
                magic,
                qualified_signer,
                extra_data,
                (clock, reset_count, restart_count, safe),
                firmware_version,
                attested,
            )| Attest {
                magic,
                qualified_signer,
                extra_data,
                clock_info: ClockInfo {
                    clock,
                    reset_count,
                    restart_count,
                    safe,
                },
                firmware_version,
                attested,
            },
        )
}

fn signature() -> impl Strategy<Value = Signature> {
    prop_oneof![
        (hash_alg(), bytes(512)).prop_map(|(hash, sig)| Signature::Rsassa { hash, sig }),
        (hash_alg(), bytes(512)).prop_map(|(hash, sig)| Signature::Rsapss { hash, sig }),
        (hash_alg(), bytes(66), bytes(66)).prop_map(|(hash, r, s)| Signature::Ecdsa { hash, r, s }),
        Just(Signature::Null),
    ]
}

fn sym() -> impl Strategy<Value = SymDef> {
    prop_oneof![
        Just(SymDef::NULL),
        (prop_oneof![Just(128u16), Just(256)]).prop_map(|key_bits| SymDef {
            algorithm: AlgId::AES,
            key_bits,
            mode: AlgId::CFB
        }),
    ]
}

fn scheme(kinds: Vec<AlgId>) -> impl Strategy<Value = Scheme> {
    (proptest::sample::select(kinds), hash_alg()).prop_map(|(scheme, hash)| {
        if scheme == AlgId::NULL || scheme == AlgId::RSAES {
            Scheme {
                scheme,
                hash: AlgId::NULL,
                count: 0,
            }
        } else {
            Scheme {
                scheme,
                hash,
                count: 0,
            }
        }
    })
}

fn public() -> impl Strategy<Value = Public> {
    let rsa = (
        sym(),
        scheme(vec![
            AlgId::NULL,
            AlgId::RSASSA,
            AlgId::RSAPSS,
            AlgId::RSAES,
            AlgId::OAEP,
        ]),
        any::<u16>(),
        any::<u32>(),
        bytes(512),
    )
        .prop_map(
            |(symmetric, scheme, key_bits, exponent, modulus)| PublicKey::Rsa {
                symmetric,
                scheme,
                key_bits,
                exponent,
                modulus,
            },
        );
    let ecc = (
        sym(),
        scheme(vec![AlgId::NULL, AlgId::ECDSA, AlgId::ECDH]),
        1u16..6,
        scheme(vec![AlgId::NULL, AlgId::KDF1_SP800_56A]),
        bytes(66),
        bytes(66),
    )
        .prop_map(|(symmetric, scheme, curve, kdf, x, y)| PublicKey::Ecc {
            symmetric,
            scheme,
            curve,
            kdf,
            x,
            y,
        });
    let sym_cipher = (sym(), bytes(64))
        .prop_map(|(symmetric, unique)| PublicKey::SymCipher { symmetric, unique });
    (
        hash_alg(),
        any::<u32>(),
        bytes(64),
        prop_oneof![rsa, ecc, sym_cipher],
    )
        .prop_map(|(name_alg, attrs, auth_policy, key)| Public {
            name_alg,
            attributes: ObjectAttributes(attrs),
            auth_policy,
            key,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn attest_round_trips(a in attest()) {
        let bytes = a.to_bytes();
        prop_assert_eq!(Attest::from_bytes(&bytes).expect("parses"), a);
    }

    #[test]
    fn signatures_round_trip(s in signature()) {
        prop_assert_eq!(Signature::from_bytes(&s.to_bytes()).expect("parses"), s);
    }

    #[test]
    fn public_areas_round_trip(p in public()) {
        let bytes = p.to_bytes();
        let parsed = Public::from_bytes(&bytes).expect("parses");
        prop_assert_eq!(&parsed, &p);
        prop_assert_eq!(Public::from_tpm2b(&p.to_tpm2b()).expect("tpm2b"), p.clone());
        prop_assert_eq!(parsed.name(), p.name());
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in bytes(600)) {
        let _ = Attest::from_bytes(&data);
        let _ = Signature::from_bytes(&data);
        let _ = Public::from_bytes(&data);
        let _ = Public::from_tpm2b(&data);
    }
}
