//! Property tests: encode/decode round trips of events and logs, replay of
//! synthesised logs against extending PCRs by hand, and robustness of the
//! parser on arbitrary and mutated input.

use proptest::prelude::*;
use trustlaunch_eventlog::{
    replay, AlgorithmSize, Digest, EfiVariable, Event, EventLog, EventType, Guid, HashAlg,
    LogFormat, SpecIdEvent,
};

const KNOWN: [HashAlg; 5] = [
    HashAlg::Sha1,
    HashAlg::Sha256,
    HashAlg::Sha384,
    HashAlg::Sha512,
    HashAlg::Sm3_256,
];

/// A PCR extend written out with the RustCrypto hashes directly, not with
/// the crate's own code.
fn extend_by_hand(alg: HashAlg, pcr: &[u8], digest: &[u8]) -> Vec<u8> {
    fn h<D: sha2::Digest>(a: &[u8], b: &[u8]) -> Vec<u8> {
        let mut d = D::new();
        d.update(a);
        d.update(b);
        d.finalize().to_vec()
    }
    match alg {
        HashAlg::Sha1 => h::<sha1::Sha1>(pcr, digest),
        HashAlg::Sha256 => h::<sha2::Sha256>(pcr, digest),
        HashAlg::Sha384 => h::<sha2::Sha384>(pcr, digest),
        HashAlg::Sha512 => h::<sha2::Sha512>(pcr, digest),
        HashAlg::Sm3_256 => h::<sm3::Sm3>(pcr, digest),
        HashAlg::Other { .. } => unreachable!("only known algorithms are generated"),
    }
}

fn banks() -> impl Strategy<Value = Vec<HashAlg>> {
    proptest::sample::subsequence(KNOWN.to_vec(), 1..=KNOWN.len()).prop_shuffle()
}

#[derive(Clone, Debug)]
struct RawEvent {
    pcr: u32,
    event_type: u32,
    seeds: Vec<u8>,
    data: Vec<u8>,
}

fn raw_event() -> impl Strategy<Value = RawEvent> {
    (
        prop_oneof![0u32..24, Just(0xffff_ffff)],
        prop_oneof![
            Just(EventType::EV_NO_ACTION.0),
            Just(EventType::EV_SEPARATOR.0),
            Just(EventType::EV_EFI_ACTION.0),
            Just(EventType::EV_IPL.0),
            Just(EventType::EV_EFI_VARIABLE_DRIVER_CONFIG.0),
            any::<u32>(),
        ],
        proptest::collection::vec(any::<u8>(), 5),
        proptest::collection::vec(any::<u8>(), 0..96),
    )
        .prop_map(|(pcr, event_type, seeds, data)| RawEvent {
            pcr,
            event_type,
            seeds,
            data,
        })
}

fn digest_for(alg: HashAlg, seed: u8, data: &[u8]) -> Digest {
    let mut bytes = alg.hash(data).expect("known").as_bytes().to_vec();
    if let Some(b) = bytes.first_mut() {
        *b ^= seed;
    }
    Digest::new(alg, &bytes).expect("size")
}

/// Builds a crypto-agile log (Spec ID event first) from raw events.
fn agile_log(banks: &[HashAlg], raw: &[RawEvent]) -> EventLog {
    let spec = SpecIdEvent {
        platform_class: 0,
        spec_version_minor: 0,
        spec_version_major: 2,
        spec_errata: 0,
        uintn_size: 2,
        algorithms: banks
            .iter()
            .map(|a| AlgorithmSize {
                alg_id: a.id(),
                digest_size: u16::try_from(a.size()).expect("small"),
            })
            .collect(),
        vendor_info: Vec::new(),
    };
    let mut events = vec![Event {
        index: 0,
        offset: 0,
        pcr: 0,
        event_type: EventType::EV_NO_ACTION,
        digests: vec![Digest::zero(HashAlg::Sha1)].into(),
        data: spec.to_bytes().into(),
        data_offset: 32,
    }];
    for (i, r) in raw.iter().enumerate() {
        events.push(Event {
            index: i + 1,
            offset: 0,
            pcr: r.pcr,
            event_type: EventType(r.event_type),
            digests: banks
                .iter()
                .zip(&r.seeds)
                .map(|(a, s)| digest_for(*a, *s, &r.data))
                .collect(),
            data: r.data.clone().into(),
            data_offset: 0,
        });
    }
    EventLog::from_parts(LogFormat::CryptoAgile, Some(spec), events)
}

fn same_events(a: &EventLog, b: &EventLog) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.events().len(), b.events().len());
    for (x, y) in a.events().iter().zip(b.events()) {
        prop_assert_eq!(x.pcr, y.pcr);
        prop_assert_eq!(x.event_type, y.event_type);
        prop_assert_eq!(&x.digests, &y.digests);
        prop_assert_eq!(&x.data, &y.data);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn agile_logs_round_trip(banks in banks(), raw in proptest::collection::vec(raw_event(), 0..40)) {
        let log = agile_log(&banks, &raw);
        let bytes = log.to_bytes();
        let parsed = EventLog::parse(&bytes).expect("a log we encoded parses");
        prop_assert_eq!(parsed.format(), LogFormat::CryptoAgile);
        prop_assert_eq!(parsed.banks(), &banks[..]);
        same_events(&log, &parsed)?;
        prop_assert_eq!(parsed.to_bytes(), bytes);
    }

    #[test]
    fn sha1_logs_round_trip(raw in proptest::collection::vec(raw_event(), 1..40)) {
        // The first event of a SHA-1 log must not look like a Spec ID event.
        let events: Vec<Event> = raw
            .iter()
            .enumerate()
            .map(|(i, r)| Event {
                index: i,
                offset: 0,
                pcr: r.pcr,
                event_type: EventType(r.event_type),
                digests: vec![digest_for(HashAlg::Sha1, r.seeds[0], &r.data)].into(),
                data: r.data.clone().into(),
                data_offset: 0,
            })
            .collect();
        let log = EventLog::from_parts(LogFormat::Sha1Legacy, None, events);
        let bytes = log.to_bytes();
        let parsed = EventLog::parse(&bytes).expect("parses");
        prop_assert_eq!(parsed.format(), LogFormat::Sha1Legacy);
        same_events(&log, &parsed)?;
    }

    #[test]
    fn replay_equals_extending_by_hand(banks in banks(), raw in proptest::collection::vec(raw_event(), 0..40)) {
        let log = EventLog::parse(&agile_log(&banks, &raw).to_bytes()).expect("parses");
        let replayed = replay(&log);
        for alg in &banks {
            let mut by_hand: std::collections::BTreeMap<u32, Vec<u8>> = Default::default();
            for e in log.events().iter().skip(1) {
                if e.event_type == EventType::EV_NO_ACTION {
                    continue;
                }
                let d = e.digest(*alg).expect("every bank");
                let init = match e.pcr {
                    17..=22 => vec![0xff; alg.size()],
                    _ => vec![0; alg.size()],
                };
                let pcr = by_hand.entry(e.pcr).or_insert(init);
                *pcr = extend_by_hand(*alg, pcr, d.as_bytes());
            }
            let got: std::collections::BTreeMap<u32, Vec<u8>> = replayed.pcrs[alg]
                .iter()
                .map(|(i, d)| (*i, d.as_bytes().to_vec()))
                .collect();
            prop_assert_eq!(got, by_hand);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(log) = EventLog::parse(&bytes) {
            for e in log.events() {
                let _ = e.decode_with_uintn(log.uintn_bytes());
            }
            let _ = replay(&log);
        }
    }

    #[test]
    fn mutated_logs_never_panic(
        banks in banks(),
        raw in proptest::collection::vec(raw_event(), 1..10),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = agile_log(&banks, &raw).to_bytes();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let end = cut.index(bytes.len() + 1);
        match EventLog::parse(&bytes[..end]) {
            Ok(log) => {
                let _ = trustlaunch_eventlog::BootEvidence::extract(&log);
                let _ = trustlaunch_eventlog::check_digests(&log);
            }
            Err(e) => prop_assert!(e.to_string().contains("offset") || end == 0, "{}", e),
        }
    }

    #[test]
    fn efi_variables_round_trip(
        d1 in any::<u32>(), d2 in any::<u16>(), d3 in any::<u16>(), d4 in any::<[u8; 8]>(),
        name in "[A-Za-z0-9]{0,16}",
        data in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let var = EfiVariable {
            guid: Guid::from_fields(d1, d2, d3, d4),
            name,
            data,
            data_offset: 0,
            decoded: None,
        };
        let bytes = var.to_bytes();
        let parsed = EfiVariable::parse(&bytes, 0).expect("parses");
        prop_assert_eq!(parsed.guid, var.guid);
        prop_assert_eq!(&parsed.name, &var.name);
        prop_assert_eq!(&parsed.data, &var.data);
        prop_assert_eq!(Guid::parse(&var.guid.to_string()), Some(var.guid));
    }
}
