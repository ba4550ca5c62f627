//! Windows' SIPA events in a real log (`ga-windows_gcp_shielded_vm.json`,
//! a Windows Shielded VM's boot; see shared/testdata/eventlogs/README.md):
//! every tagged event decodes, none is unknown; the boot counter, code
//! integrity, signing and debugging flags, DEP, BitLocker unlock, the ELAM
//! driver and the boot drivers with their Authenticode hashes and signers
//! are read as Windows measured them. Then properties: encoding and
//! decoding are inverse, and no input panics.

mod common;

use base64::Engine as _;
use common::sipa_events;
use proptest::prelude::*;
use serde_json::Value;
use trustlaunch_eventlog::sipa::{self, SipaEvent, SipaValue};
use trustlaunch_eventlog::EventLog;

fn windows_log() -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/eventlogs/ga-windows_gcp_shielded_vm.json");
    let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    base64::engine::general_purpose::STANDARD
        .decode(doc["Log"]["Raw"].as_str().unwrap())
        .unwrap()
}

fn values<'a>(all: &'a [(u32, SipaEvent)], name: &str) -> Vec<&'a SipaValue> {
    all.iter()
        .filter(|(_, e)| e.name == name)
        .map(|(_, e)| &e.value)
        .collect()
}

#[test]
fn a_windows_boot_as_windows_measured_it() {
    let log = EventLog::parse(&windows_log()).unwrap();
    let all = sipa_events(&log);
    assert_eq!(all.len(), 912, "SIPA events in all");
    assert!(
        all.iter().all(|(_, e)| e.name != "unknown"),
        "every type known"
    );
    // Boot counter 4, in PCR 12's trust boundary.
    let counters: Vec<_> = all
        .iter()
        .filter(|(_, e)| e.name == "BOOTCOUNTER")
        .map(|(pcr, e)| (*pcr, e.value.clone()))
        .collect();
    assert_eq!(counters, [(12, SipaValue::Number(4))]);
    // Code integrity on; test signing, flight signing, boot and kernel
    // debugging off, wherever measured; DEP on (OptIn = 1); no safe mode, no WinPE.
    for (name, want) in [
        ("CODEINTEGRITY", true),
        ("TESTSIGNING", false),
        ("FLIGHTSIGNING", false),
        ("BOOTDEBUGGING", false),
        ("OSKERNELDEBUG", false),
        ("SAFEMODE", false),
        ("WINPE", false),
    ] {
        let v = values(&all, name);
        assert!(!v.is_empty(), "{name} measured");
        assert!(
            v.iter().all(|x| **x == SipaValue::Flag(want)),
            "{name}: {v:?}"
        );
    }
    assert_eq!(
        values(&all, "DATAEXECUTIONPREVENTION"),
        [&SipaValue::Number(1); 2]
    );
    assert_eq!(values(&all, "BITLOCKER_UNLOCK"), [&SipaValue::Number(0); 4]);
    assert_eq!(
        values(&all, "SYSTEMROOT"),
        [&SipaValue::Text("\\Windows".into()); 2]
    );
    // The ELAM driver: Windows Defender, with its measured policy.
    assert_eq!(
        values(&all, "ELAM_KEYNAME"),
        [&SipaValue::Text("Windows Defender".into())]
    );
    assert_eq!(
        values(&all, "ELAM_MEASURED"),
        [&SipaValue::Bytes(
            trustlaunch_eventlog::hex::decode("067d5b9dc5627f97dcf3feff602a342ed698d2cc").unwrap()
        )]
    );
    // Loaded modules: winload.efi and the boot drivers, each with its
    // Authenticode hash, validated, signed by Microsoft's production PCA.
    let modules: Vec<&SipaEvent> = all
        .iter()
        .map(|(_, e)| e)
        .filter(|e| {
            e.name == "LOADEDMODULE_AGGREGATION"
                && matches!(&e.value, SipaValue::Events(x) if x.iter().any(|y| y.name == "FILEPATH"))
        })
        .collect();
    assert_eq!(modules.len(), 64);
    let field = |m: &SipaEvent, name: &str| -> SipaValue {
        let SipaValue::Events(x) = &m.value else {
            unreachable!()
        };
        x.iter()
            .find(|y| y.name == name)
            .map(|y| y.value.clone())
            .unwrap()
    };
    let winload = modules
        .iter()
        .find(|m| {
            field(m, "FILEPATH") == SipaValue::Text("\\Windows\\system32\\winload.efi".into())
        })
        .expect("winload.efi");
    assert_eq!(
        field(winload, "AUTHENTICODEHASH"),
        SipaValue::Bytes(
            trustlaunch_eventlog::hex::decode(
                "44e1ea32b24a048832eeda3d658743a68836aaa2e31ca2e0ee4e24ecb2f74619"
            )
            .unwrap()
        )
    );
    assert_eq!(field(winload, "HASHALGORITHMID"), SipaValue::Number(0x800c));
    // Signers as measured: 59 by the Windows Production PCA 2011, four by
    // the Code Signing PCA 2010, one by the Third Party Component CA 2014.
    let mut issuers = std::collections::BTreeMap::<String, usize>::new();
    for m in &modules {
        assert_eq!(field(m, "IMAGEVALIDATED"), SipaValue::Flag(true));
        let SipaValue::Text(issuer) = field(m, "AUTHORITYISSUER") else {
            panic!("issuer")
        };
        *issuers.entry(issuer).or_default() += 1;
    }
    assert_eq!(
        issuers.into_iter().collect::<Vec<_>>(),
        [
            ("Microsoft Code Signing PCA 2010".to_owned(), 4),
            ("Microsoft Windows Production PCA 2011".to_owned(), 59),
            (
                "Microsoft Windows Third Party Component CA 2014".to_owned(),
                1
            ),
        ]
    );
    assert!(modules.iter().any(|m| field(m, "FILEPATH")
        == SipaValue::Text("\\Windows\\System32\\drivers\\disk.sys".into())));
}

fn leaf() -> impl Strategy<Value = SipaEvent> {
    prop_oneof![
        (
            prop::sample::select(vec![0x0005_0002u32, 0x0005_0003, 0x0004_0001]),
            any::<bool>()
        )
            .prop_map(|(k, b)| SipaEvent {
                kind: k,
                name: sipa::name(k).unwrap(),
                value: SipaValue::Flag(b)
            }),
        (
            prop::sample::select(vec![0x0002_0002u32, 0x0007_0002, 0x0005_0004]),
            any::<u64>()
        )
            .prop_map(|(k, n)| SipaEvent {
                kind: k,
                name: sipa::name(k).unwrap(),
                value: SipaValue::Number(n)
            }),
        (
            prop::sample::select(vec![0x0007_0001u32, 0x0007_0005, 0x0009_0001]),
            "[a-zA-Z0-9\\\\. éü]{1,40}"
        )
            .prop_map(|(k, t)| SipaEvent {
                kind: k,
                name: sipa::name(k).unwrap(),
                value: SipaValue::Text(t)
            }),
        (
            prop::sample::select(vec![0x0007_0004u32, 0x0009_0004]),
            prop::collection::vec(any::<u8>(), 9..64)
        )
            .prop_map(|(k, b)| SipaEvent {
                kind: k,
                name: sipa::name(k).unwrap(),
                value: SipaValue::Bytes(b)
            }),
    ]
}

fn tree() -> impl Strategy<Value = SipaEvent> {
    leaf().prop_recursive(4, 64, 8, |inner| {
        (
            prop::sample::select(vec![0x4001_0001u32, 0x4001_0002, 0x4001_0003]),
            prop::collection::vec(inner, 0..8),
        )
            .prop_map(|(k, v)| SipaEvent {
                kind: k,
                name: sipa::name(k).unwrap(),
                value: SipaValue::Events(v),
            })
    })
}

proptest! {
    #[test]
    fn encode_then_decode_is_the_identity(events in prop::collection::vec(tree(), 0..6)) {
        let data = sipa::encode(&events);
        let got = sipa::decode(0x4001_0001, &data, 0).unwrap();
        prop_assert_eq!(got.value, SipaValue::Events(events));
    }

    #[test]
    fn any_bytes_decode_or_fail_with_an_offset_inside(kind in any::<u32>(), data in prop::collection::vec(any::<u8>(), 0..512)) {
        match sipa::decode(kind, &data, 1000) {
            Ok(e) => prop_assert_eq!(e.kind, kind),
            Err(e) => prop_assert!(e.offset >= 1000 && e.offset <= 1000 + data.len(), "{:?}", e),
        }
    }
}

/// The fuzz target's checks (`fuzz/fuzz_targets/eventlog_sipa.rs`) over
/// its committed seeds: every tagged event of the real Windows log.
#[test]
fn the_fuzz_seeds_decode_and_round_trip() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/eventlog_sipa");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let (kind, body) = data.split_first_chunk::<4>().expect("a type");
        let kind = u32::from_le_bytes(*kind);
        let e = sipa::decode(kind, body, 64).expect("a real event decodes");
        assert_ne!(e.name, "unknown");
        if let SipaValue::Events(events) = &e.value {
            let again = sipa::decode(kind, &sipa::encode(events), 0).unwrap();
            assert_eq!(again.value, e.value);
        }
        n += 1;
    }
    assert!(n >= 6, "{n} seeds");
}

/// `BootEvidence`'s Windows section of the real log: each fact with the
/// event that measured it.
#[test]
fn the_windows_section_of_the_boot_evidence() {
    let log = EventLog::parse(&windows_log()).unwrap();
    let w = trustlaunch_eventlog::BootEvidence::extract(&log)
        .windows
        .expect("a Windows boot");
    let first = |v: &[trustlaunch_eventlog::windows::WindowsFact<bool>]| {
        v.iter().map(|f| f.value).collect::<Vec<_>>()
    };
    assert_eq!(w.boot_counter.len(), 1);
    assert_eq!(
        (
            w.boot_counter[0].value,
            w.boot_counter[0].event,
            w.boot_counter[0].pcr
        ),
        (4, 11, 12)
    );
    assert_eq!(first(&w.code_integrity), [true; 4]);
    assert_eq!(first(&w.test_signing), [false; 4]);
    assert_eq!(first(&w.flight_signing), [false; 4]);
    assert_eq!(first(&w.boot_debugging), [false; 4]);
    assert_eq!(first(&w.kernel_debugging), [false; 2]);
    assert_eq!(first(&w.safe_mode), [false; 2]);
    assert_eq!(first(&w.winpe), [false; 2]);
    assert!(w.dep_policy.iter().all(|f| f.value == 1));
    assert!(
        w.hypervisor_launch_type.iter().all(|f| f.value == 0),
        "no hypervisor"
    );
    assert!(w.vsm_launch_type.iter().all(|f| f.value == 0), "VBS off");
    assert!(w.hvci_policy.is_empty(), "no HVCI policy measured");
    assert_eq!(w.bitlocker_unlock.len(), 4);
    assert_eq!(w.elam.len(), 1);
    assert_eq!(w.elam[0].key_name, "Windows Defender");
    assert_eq!(
        w.elam[0].measured.as_deref(),
        Some("067d5b9dc5627f97dcf3feff602a342ed698d2cc")
    );
    let named: Vec<_> = w.modules.iter().filter(|m| m.path.is_some()).collect();
    assert_eq!(named.len(), 64);
    let winload = named
        .iter()
        .find(|m| m.path.as_deref() == Some("\\Windows\\system32\\winload.efi"))
        .unwrap();
    assert_eq!(
        winload.issuer.as_deref(),
        Some("Microsoft Windows Production PCA 2011")
    );
    assert_eq!(winload.publisher.as_deref(), Some("Microsoft Windows"));
    assert_eq!(winload.hash_algorithm, Some(0x800c));
    assert_eq!(winload.validated, Some(true));
    assert!(w.unknown_types.is_empty());
    assert!(w.malformed.is_empty());
    assert!(w.lsaiso_config.is_empty(), "no Credential Guard configured");
    // PCRs 12-14 closed by the WBCL separators (events 18-20), nothing
    // measured after them.
    let seps: Vec<_> = w.separators.iter().map(|s| (s.pcr, s.event)).collect();
    assert_eq!(seps, [(12, 18), (13, 19), (14, 20)]);
    assert!(w.after_separator.is_empty());
    // A Linux log has no Windows section.
    let linux = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/eventlogs/ga-sb_cert_eventlog");
    let linux = EventLog::parse(&std::fs::read(linux).unwrap()).unwrap();
    assert!(trustlaunch_eventlog::BootEvidence::extract(&linux)
        .windows
        .is_none());
}

/// SIPA events are hashed whole: a log whose SIPA data is not what its
/// digest measured is named by the digest check.
#[test]
fn a_sipa_event_edited_after_measurement_is_a_digest_mismatch() {
    let log = EventLog::parse(&windows_log()).unwrap();
    assert!(
        trustlaunch_eventlog::check_digests(&log).is_empty(),
        "every event of the real log is what its digest measured"
    );
    let mut events = log.events().to_vec();
    let ev = events.get_mut(12).unwrap();
    assert_eq!(ev.pcr, 13);
    let mut data = ev.data.to_vec();
    // The flag of TESTSIGNING in PCR 13's trust boundary.
    let needle = 0x0005_0003u32.to_le_bytes();
    let at = data
        .windows(4)
        .position(|w| w == needle)
        .expect("TESTSIGNING in event 12");
    data[at + 8] = 1;
    ev.data = data.into();
    let edited = EventLog::from_parts(log.format(), None, events);
    let lies = trustlaunch_eventlog::check_digests(&edited);
    assert_eq!(lies.len(), 1);
    assert_eq!((lies[0].event, lies[0].pcr), (12, 13));
    // It still decodes, and says test signing was on: only the digest
    // check tells that it was not measured so.
    let w = trustlaunch_eventlog::BootEvidence::extract(&edited)
        .windows
        .unwrap();
    assert!(w.test_signing.iter().any(|f| f.value && f.event == 12));
}

/// SIPA events after their PCR's separator are the running system's: not
/// read as the boot's facts, listed apart; a SIPA event that does not
/// decode is listed as malformed.
#[test]
fn sipa_events_after_the_separator_and_malformed_ones_are_kept_apart() {
    let log = EventLog::parse(&windows_log()).unwrap();
    let mut events = log.events().to_vec();
    let hvci = sipa::encode(&[SipaEvent {
        kind: 0x000A_0007,
        name: "VBS_HVCI_POLICY",
        value: SipaValue::Number(1),
    }]);
    // A trust boundary holding a TESTSIGNING flag whose size says 8
    // bytes but that has 1: the SIPA data does not decode.
    let mut inner = 0x0005_0003u32.to_le_bytes().to_vec();
    inner.extend_from_slice(&8u32.to_le_bytes());
    inner.push(1);
    let mut bad = 0x4001_0001u32.to_le_bytes().to_vec();
    bad.extend_from_slice(&u32::try_from(inner.len()).unwrap().to_le_bytes());
    bad.extend_from_slice(&inner);
    // And a tagged event whose own size overruns the event.
    let mut unframed = 0x0005_0003u32.to_le_bytes().to_vec();
    unframed.extend_from_slice(&8u32.to_le_bytes());
    unframed.push(1);
    for (i, (pcr, data)) in [(13, hvci.clone()), (12, unframed.clone())]
        .into_iter()
        .enumerate()
    {
        let mut e = events.last().unwrap().clone();
        e.index = 21 + i;
        e.pcr = pcr;
        e.event_type = trustlaunch_eventlog::EventType::EV_EVENT_TAG;
        e.data = data.into();
        events.push(e);
    }
    // And both kinds before the separators.
    for data in [unframed, bad] {
        let mut early = events.get(11).unwrap().clone();
        early.data = data.into();
        events.insert(12, early);
    }
    for (i, e) in events.iter_mut().enumerate() {
        e.index = i;
    }
    let edited = EventLog::from_parts(log.format(), None, events);
    let w = trustlaunch_eventlog::BootEvidence::extract(&edited)
        .windows
        .unwrap();
    assert!(w.hvci_policy.is_empty(), "{:?}", w.hvci_policy);
    let after: Vec<_> = w
        .after_separator
        .iter()
        .map(|f| (f.value, f.event, f.pcr))
        .collect();
    assert_eq!(after, [(0x000A_0007, 23, 13), (0, 24, 12)]);
    let malformed: Vec<_> = w.malformed.iter().map(|f| (f.event, f.pcr)).collect();
    assert_eq!(malformed, [(12, 12), (13, 12)]);
    assert!(w.malformed.iter().all(|f| !f.value.is_empty()));
}
