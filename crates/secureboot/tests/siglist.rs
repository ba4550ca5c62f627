//! Signature list (EFI_SIGNATURE_LIST) tests: real databases from Debian's
//! OVMF_VARS_4M.ms.fd, typed errors, merge/remove/dedup, property round
//! trips and hostile input.

use proptest::prelude::*;
use trustlaunch_eventlog::Guid;
use trustlaunch_secureboot::siglist::{
    SigListError, SignatureData, SignatureDb, SignatureList, SignatureType,
};
use trustlaunch_secureboot::varstore::VarStore;

const MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";

fn ms_store() -> VarStore {
    let img = std::fs::read(MS)
        .unwrap_or_else(|e| panic!("{MS}: {e}; install it with `apt-get install -y ovmf`"));
    VarStore::parse(&img).unwrap()
}

const KINDS: [SignatureType; 11] = SignatureType::ALL;

#[test]
fn ms_databases_parse_and_re_encode_byte_for_byte() {
    let store = ms_store();
    for (name, guid) in [
        ("PK", Guid::GLOBAL_VARIABLE),
        ("KEK", Guid::GLOBAL_VARIABLE),
        ("db", Guid::IMAGE_SECURITY_DATABASE),
        ("dbx", Guid::IMAGE_SECURITY_DATABASE),
    ] {
        let v = store.get(name, guid).unwrap();
        let db = v.signature_db().unwrap();
        assert_eq!(db.encode().unwrap(), v.data, "{name}");
    }
    let db = store
        .get("db", Guid::IMAGE_SECURITY_DATABASE)
        .unwrap()
        .signature_db()
        .unwrap();
    assert!(db.lists.len() >= 2);
    assert!(db
        .lists
        .iter()
        .all(|l| l.kind() == Some(SignatureType::X509)));
    // Every certificate starts with a DER SEQUENCE.
    assert!(db.entries().all(|(_, e)| e.data.first() == Some(&0x30)));
}

#[test]
fn fixed_sizes_follow_the_spec() {
    let sizes = [20, 28, 32, 48, 64, 256, 0, 48, 64, 80, 1];
    for (k, n) in KINDS.iter().zip(sizes) {
        assert_eq!(k.data_len().unwrap_or(0), n, "{k:?}");
        assert_eq!(SignatureType::from_guid(k.guid()), Some(*k));
    }
    assert_eq!(
        SignatureType::X509.guid().to_string(),
        "a5c059a1-94e4-4aa7-87b5-ab155c2bf072"
    );
    assert_eq!(
        SignatureType::Sha256.guid().to_string(),
        "c1c41626-504c-4092-aca9-41f936934328"
    );
}

#[test]
fn truncation_and_bad_sizes_are_typed_with_offsets() {
    let mut db = SignatureDb::default();
    db.add_x509(Guid::GLOBAL_VARIABLE, vec![0x30, 1, 2]);
    db.add_hash(SignatureType::Sha256, Guid::GLOBAL_VARIABLE, vec![7; 32])
        .unwrap();
    let bytes = db.encode().unwrap();
    let second = 28 + 16 + 3;
    for len in 1..bytes.len() {
        if len == second {
            continue; // exactly the first list: a valid database
        }
        let err = SignatureDb::parse(&bytes[..len]).unwrap_err();
        match err {
            SigListError::Truncated { offset, .. } => {
                assert!((len < second) == (offset < second), "{len}: {offset}")
            }
            other => panic!("{len}: {other}"),
        }
    }
    let mut bad = bytes.clone();
    bad[16..20].copy_from_slice(&10u32.to_le_bytes()); // list size < header
    assert!(matches!(
        SignatureDb::parse(&bad),
        Err(SigListError::BadSizes {
            offset: 0,
            list_size: 10,
            ..
        })
    ));
    let mut bad = bytes;
    bad[second + 24..second + 28].copy_from_slice(&40u32.to_le_bytes()); // SHA-256 entry of 40
    assert!(matches!(
        SignatureDb::parse(&bad),
        Err(SigListError::BadSizes { .. } | SigListError::WrongEntrySize { .. })
    ));
}

#[test]
fn merge_remove_dedup() {
    let a = Guid::GLOBAL_VARIABLE;
    let b = Guid::IMAGE_SECURITY_DATABASE;
    let mut one = SignatureDb::default();
    one.add_x509(a, vec![0x30, 1]);
    one.add_hash(SignatureType::Sha256, a, vec![1; 32]).unwrap();
    let mut two = SignatureDb::default();
    two.add_x509(b, vec![0x30, 1]); // duplicate cert, other owner
    two.add_x509(b, vec![0x30, 2]);
    two.add_hash(SignatureType::Sha256, b, vec![1; 32]).unwrap(); // duplicate
    two.add_hash(SignatureType::Sha256, b, vec![2; 32]).unwrap();
    one.merge(&two).unwrap();
    assert_eq!(one.entries().count(), 4);
    assert_eq!(one.lists.len(), 3); // 2 certs + 1 sha256 list with 2 entries

    assert_eq!(one.remove(SignatureType::Sha256.guid(), &[1; 32]), 1);
    assert_eq!(one.remove(SignatureType::Sha256.guid(), &[2; 32]), 1);
    assert_eq!(one.lists.len(), 2);

    // dedup over hand-built duplicates
    let mut l = SignatureList::hashes(SignatureType::Sha1).unwrap();
    for owner in [a, b, a] {
        l.push(SignatureData {
            owner,
            data: vec![9; 20],
        })
        .unwrap();
    }
    let mut d = SignatureDb {
        lists: vec![l.clone(), l],
    };
    d.dedup();
    assert_eq!(d.lists.len(), 1);
    assert_eq!(
        d.lists[0].entries,
        vec![SignatureData {
            owner: a,
            data: vec![9; 20]
        }]
    );
}

fn arb_list() -> impl Strategy<Value = SignatureList> {
    (
        0usize..KINDS.len(),
        any::<[u8; 16]>(),
        1usize..5,
        proptest::collection::vec(any::<u8>(), 1..300),
    )
        .prop_map(|(k, owner, n, seed)| {
            let kind = KINDS[k];
            let len = kind.data_len().unwrap_or(seed.len());
            let entries: Vec<SignatureData> = (0..n)
                .map(|i| SignatureData {
                    owner: Guid::from_bytes(owner),
                    data: (0..len).map(|j| seed[(i + j) % seed.len()]).collect(),
                })
                .collect();
            SignatureList {
                type_guid: kind.guid(),
                header: Vec::new(),
                data_len: len,
                entries,
            }
        })
}

proptest! {
    #[test]
    fn encode_parse_round_trip(lists in proptest::collection::vec(arb_list(), 0..5)) {
        let db = SignatureDb { lists };
        let bytes = db.encode().unwrap();
        prop_assert_eq!(SignatureDb::parse(&bytes).unwrap(), db.clone());
        let mut merged = SignatureDb::default();
        merged.merge(&db).unwrap();
        merged.dedup();
        let again = SignatureDb::parse(&merged.encode().unwrap()).unwrap();
        prop_assert_eq!(again, merged);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = SignatureDb::parse(&bytes);
    }

    #[test]
    fn mutated_real_db_never_panics(edits in proptest::collection::vec((0usize..3143, any::<u8>()), 1..8)) {
        let store = ms_store();
        let mut data = store.get("db", Guid::IMAGE_SECURITY_DATABASE).unwrap().data.clone();
        for (at, b) in edits {
            if let Some(x) = data.get_mut(at) { *x = b; }
        }
        if let Ok(db) = SignatureDb::parse(&data) {
            let _ = db.view();
            prop_assert_eq!(db.encode().unwrap(), data);
        }
    }
}
