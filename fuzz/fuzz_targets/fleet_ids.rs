//! ARM resource ids and gallery image version ids (`ResourceId`, `GalleryImageVersionId`): see `fleet_checks::ids`.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod fleet_checks;

fuzz_target!(|data: &[u8]| fleet_checks::ids(data));
