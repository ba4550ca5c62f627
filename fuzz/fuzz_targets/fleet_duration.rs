//! ISO 8601 durations (`parse_iso8601_duration`, `pauseTimeBetweenBatches`): see `fleet_checks::duration`.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod fleet_checks;

fuzz_target!(|data: &[u8]| fleet_checks::duration(data));
