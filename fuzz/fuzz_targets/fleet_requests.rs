//! VM and scale set JSON bodies, then create/update validation: see `fleet_checks::requests`.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod fleet_checks;

fuzz_target!(|data: &[u8]| fleet_checks::requests(data));
