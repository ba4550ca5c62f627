//! PCR 7 prediction against a real OVMF boot (fixture in
//! `data/pcr7-boot/`, see its README): the variable store we enrolled, the
//! event log that boot measured, the db certificate that authorised the
//! UKI. The prediction must reproduce every PCR 7 event byte for byte and
//! the replayed PCR 7 in every bank. The live version of this check (build,
//! sign, enroll, boot, compare) is the VM-tier test
//! `crates/cli/tests/secureboot_boot.rs`.

use trustlaunch_eventlog::{replay, EventLog, EventType, Guid, HashAlg};
use trustlaunch_secureboot::pcr7::{
    predict_pcr7, secure_boot_enforced, EV_EFI_VARIABLE_AUTHORITY, EV_SEPARATOR,
};
use trustlaunch_secureboot::siglist::SignatureData;
use trustlaunch_secureboot::varstore::VarStore;

const EMPTY_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// The owner GUID `trustlaunch secureboot vars enroll` used.
const OWNER: &str = "a0baa8a3-041d-48a8-bc87-c36d121b5e3d";

fn store() -> VarStore {
    let template = std::fs::read(EMPTY_VARS)
        .unwrap_or_else(|e| panic!("{EMPTY_VARS}: {e}; apt-get install -y ovmf"));
    let prefix = include_bytes!("data/pcr7-boot/vars.prefix.bin");
    let mut img = prefix.to_vec();
    img.extend_from_slice(&template[prefix.len()..]);
    VarStore::parse(&img).expect("fixture store parses")
}

fn authority() -> SignatureData {
    SignatureData {
        owner: Guid::parse(OWNER).unwrap(),
        data: include_bytes!("data/pcr7-boot/db.der").to_vec(),
    }
}

fn log() -> EventLog {
    EventLog::parse(include_bytes!("data/pcr7-boot/boot.log")).expect("fixture log parses")
}

#[test]
fn prediction_reproduces_every_pcr7_event_of_a_real_boot() {
    let store = store();
    assert!(secure_boot_enforced(&store));
    let prediction = predict_pcr7(&store, &[authority()]);
    let log = log();
    let logged: Vec<_> = log.events().iter().filter(|e| e.pcr == 7).collect();
    assert_eq!(
        logged.len(),
        prediction.events.len(),
        "number of PCR 7 events"
    );
    for (real, predicted) in logged.iter().zip(&prediction.events) {
        assert_eq!(
            real.event_type,
            EventType(predicted.event_type),
            "event {}",
            real.index
        );
        assert_eq!(real.data, predicted.event_data, "event {} data", real.index);
        for d in &real.digests {
            assert_eq!(
                Some(*d),
                predicted.digest(d.alg()),
                "event {} {}",
                real.index,
                d.alg()
            );
        }
    }
    let replayed = replay(&log);
    for alg in [
        HashAlg::Sha1,
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
    ] {
        assert_eq!(
            replayed.pcrs.get(&alg).and_then(|b| b.get(&7)),
            prediction.value(alg).as_ref(),
            "PCR 7 {alg}"
        );
    }
}

#[test]
fn a_different_authority_or_store_predicts_a_different_pcr7() {
    let store = store();
    let replayed = replay(&log());
    let real = replayed.pcrs[&HashAlg::Sha256][&7];

    // No boot application verified: no authority event.
    let p = predict_pcr7(&store, &[]);
    assert_eq!(p.events.last().unwrap().event_type, EV_SEPARATOR);
    assert_ne!(p.value(HashAlg::Sha256).unwrap(), real);

    // Another owner GUID for the same certificate.
    let mut other = authority();
    other.owner = Guid::from_bytes([0x11; 16]);
    let p = predict_pcr7(&store, &[other]);
    assert_ne!(p.value(HashAlg::Sha256).unwrap(), real);

    // The same authority twice is measured once.
    let p = predict_pcr7(&store, &[authority(), authority()]);
    assert_eq!(
        p.events
            .iter()
            .filter(|e| e.event_type == EV_EFI_VARIABLE_AUTHORITY)
            .count(),
        1
    );
    assert_eq!(p.value(HashAlg::Sha256).unwrap(), real);

    // Secure Boot switched off: SecureBoot=0, no authorities.
    let mut off = store.clone();
    off.disable_secure_boot().unwrap();
    assert!(!secure_boot_enforced(&off));
    let p = predict_pcr7(&off, &[authority()]);
    assert!(!p.secure_boot);
    assert_eq!(p.events[0].event_data.last(), Some(&0));
    assert!(p
        .events
        .iter()
        .all(|e| e.event_type != EV_EFI_VARIABLE_AUTHORITY));

    // An empty store (setup mode): no PK, Secure Boot not enforced, the
    // databases measured with no data.
    let empty = VarStore::parse(&std::fs::read(EMPTY_VARS).unwrap()).unwrap();
    assert!(!secure_boot_enforced(&empty));
    let p = predict_pcr7(&empty, &[]);
    assert_eq!(p.events.len(), 6);
    for e in &p.events[1..4] {
        assert_eq!(&e.event_data[24..32], &[0u8; 8], "{} has no data", e.name);
    }
}
