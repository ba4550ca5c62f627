//! Fuzz target for Windows' SIPA events (`trustlaunch_eventlog::sipa`).
//!
//! Input: a SIPA event type (4 bytes, little-endian) and its data. Decoding
//! must not panic; a failure names an offset inside the data; a decoded
//! container encodes back to data that decodes to the same events.
//!
//! `crates/eventlog/tests/sipa.rs` runs the same checks over the committed
//! seeds (`fuzz/seeds/eventlog_sipa`); keep the two in step.

#![no_main]

use libfuzzer_sys::fuzz_target;
use trustlaunch_eventlog::sipa::{self, SipaValue};

fuzz_target!(|data: &[u8]| {
    let Some((kind, body)) = data.split_first_chunk::<4>() else {
        return;
    };
    let kind = u32::from_le_bytes(*kind);
    match sipa::decode(kind, body, 64) {
        Ok(e) => {
            assert_eq!(e.kind, kind);
            if let SipaValue::Events(events) = &e.value {
                let again = sipa::decode(kind, &sipa::encode(events), 0).expect("re-decodes");
                assert_eq!(&again.value, &e.value);
            }
        }
        Err(e) => assert!(e.offset >= 64 && e.offset <= 64 + body.len(), "{e:?}"),
    }
});
