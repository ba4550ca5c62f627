//! Shared by the Windows log tests (`sipa.rs`, `windows_logs.rs`).
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use trustlaunch_eventlog::sipa::SipaEvent;
use trustlaunch_eventlog::{EventData, EventLog};

/// Every SIPA event of the log (each tagged event's and all it contains),
/// with the PCR of the event holding it, asserting that each tagged event
/// is SIPA and decodes.
pub fn sipa_events(log: &EventLog) -> Vec<(u32, SipaEvent)> {
    let mut out = Vec::new();
    for e in log.events() {
        if let Ok(EventData::Tagged { events }) = e.decode() {
            for t in events {
                assert!(
                    t.sipa_error.is_none(),
                    "event {}: {:?}",
                    e.index,
                    t.sipa_error
                );
                let s = t
                    .sipa
                    .unwrap_or_else(|| panic!("event {}: tag {:#x} is not SIPA", e.index, t.id));
                for x in s.walk() {
                    out.push((e.pcr, x.clone()));
                }
            }
        }
    }
    out
}
