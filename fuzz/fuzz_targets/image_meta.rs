//! `image.json` parsing and validation (`ImageMetadata::parse`): never
//! panics; what parses is written back with `to_json` and parses again to
//! an equal value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustlaunch_runtime::image_meta::ImageMetadata;

fuzz_target!(|data: &[u8]| {
    if let Ok(meta) = ImageMetadata::parse(data) {
        let json = meta.to_json();
        let again = ImageMetadata::parse(json.as_bytes()).expect("to_json output parses");
        assert_eq!(again, meta, "image.json round trip");
    }
});
