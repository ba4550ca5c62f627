//! The serial-console judge (`console::judge`) on arbitrary text (lossy
//! UTF-8): never panics; a `SecureBootDenied` verdict's reason (shown to
//! users and logged) holds no control characters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustlaunch_runtime::console::{judge, ConsoleVerdict};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let ConsoleVerdict::SecureBootDenied { reason, .. } = judge(&text, "EFI/BOOT/BOOTX64.EFI") {
        assert!(
            !reason.chars().any(char::is_control),
            "control character in the SecureBootDenied reason: {reason:?}"
        );
    }
});
