//! The rolling-upgrade planner on arbitrary views, reports and times: see `fleet_checks::rolling`.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod fleet_checks;

fuzz_target!(|data: &[u8]| fleet_checks::rolling(data));
