//! OVMF variable store parsing: never panics; what parses re-writes to a
//! store that parses to the same variables (the writer packs them sorted by
//! name then GUID, as virt-fw-vars does, so compare in that order).
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustlaunch_secureboot::varstore::VarStore;

fuzz_target!(|data: &[u8]| {
    if let Ok(store) = VarStore::parse(data) {
        if let Ok(bytes) = store.to_bytes() {
            let again = VarStore::parse(&bytes).expect("rewritten store parses");
            let sorted = |mut v: Vec<_>| {
                v.sort_by(|a: &trustlaunch_secureboot::varstore::Variable, b| {
                    (a.name.as_str(), a.guid).cmp(&(b.name.as_str(), b.guid))
                });
                v
            };
            assert_eq!(
                sorted(again.variables.clone()),
                sorted(store.variables.clone()),
                "varstore round trip"
            );
        }
    }
});
