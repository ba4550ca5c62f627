//! Fuzz target for the event-log parser.
//!
//! Any input: `EventLog::parse` must not panic. When it parses, everything
//! downstream of the parser runs on the result (decode of every event,
//! replay, verify, digest check, boot evidence), none of which may panic,
//! and the log must survive an encode/parse round trip.
//!
//! The same sequence runs as a plain test over the committed corpora in
//! `crates/eventlog/tests/fuzz_regression.rs`; keep the two in step.

#![no_main]

use libfuzzer_sys::fuzz_target;
use trustlaunch_eventlog::{
    check_digests, replay, verify, BootEvidence, Digest, EventLog, PcrBanks, PcrStatus,
};

fuzz_target!(|data: &[u8]| {
    let Ok(log) = EventLog::parse(data) else {
        return;
    };

    let uintn = log.uintn_bytes();
    for event in log.events() {
        let _ = event.decode_with_uintn(uintn);
    }

    let replayed = replay(&log);
    // The log verifies against its own replay: every PCR matches.
    let own = verify(&log, &replayed.pcrs);
    for check in &own.checks {
        assert_eq!(
            check.status,
            PcrStatus::Match,
            "log does not verify against its own replay: {check:?}"
        );
    }
    // Against all-zero values every PCR mismatches (or matches through a
    // workaround): this walks the workaround code.
    let zeros: PcrBanks = replayed
        .pcrs
        .iter()
        .map(|(alg, pcrs)| {
            let pcrs = pcrs.keys().map(|&p| (p, Digest::zero(*alg))).collect();
            (*alg, pcrs)
        })
        .collect();
    let _ = verify(&log, &zeros);

    let _ = check_digests(&log);
    let _ = BootEvidence::extract(&log);

    // Round trip: to_bytes is the inverse of parse. Every event survives;
    // without trailing padding the encoding is the input itself.
    let bytes = log.to_bytes();
    let again = match EventLog::parse(&bytes) {
        Ok(again) => again,
        Err(e) => panic!("re-encoded log does not parse: {e}"),
    };
    assert_eq!(again.format(), log.format(), "format changed in round trip");
    let n = again.events().len();
    assert!(
        n <= log.events().len(),
        "round trip added events: {} -> {n}",
        log.events().len()
    );
    for (a, b) in log.events().iter().zip(again.events()) {
        assert_eq!(a.pcr, b.pcr, "event {}: pcr changed", a.index);
        assert_eq!(
            a.event_type, b.event_type,
            "event {}: type changed",
            a.index
        );
        assert_eq!(a.digests, b.digests, "event {}: digests changed", a.index);
        assert_eq!(a.data, b.data, "event {}: data changed", a.index);
    }
    assert_eq!(n, log.events().len(), "event count changed in round trip");
    if log.trailing_padding() == 0 {
        assert_eq!(bytes, data, "re-encoding differs from the input");
    }
});
