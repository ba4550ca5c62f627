//! OVMF variable store parsing: never panics; what parses re-writes to a
//! store that parses to the same variables.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustlaunch_secureboot::varstore::VarStore;

fuzz_target!(|data: &[u8]| {
    if let Ok(store) = VarStore::parse(data) {
        if let Ok(bytes) = store.to_bytes() {
            let again = VarStore::parse(&bytes).expect("rewritten store parses");
            assert_eq!(again.variables, store.variables, "varstore round trip");
        }
    }
});
