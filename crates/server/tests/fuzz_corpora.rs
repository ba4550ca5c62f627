//! The `server_requests` fuzz target's seeds and regression inputs
//! (`fuzz/seeds/server_requests`, `fuzz/regression/server_requests`), run
//! through the same decoding in the ordinary test suite: nothing panics,
//! the seeds decode, and the template the fuzzer found (`"0x00"`) is
//! refused.

use std::path::PathBuf;

use trustlaunch_server::api::{AppraiseRequest, Rule, SubmitEvidence};
use trustlaunch_server::model::{BaselineDoc, VmRegistration};

fn files(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz")
        .join(kind)
        .join("server_requests");
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn seeds_decode_and_regressions_are_refused() {
    for (name, bytes) in files("seeds") {
        let (mode, rest) = bytes.split_first().unwrap();
        let ok = match mode % 7 {
            0 => serde_json::from_slice::<VmRegistration>(rest)
                .is_ok_and(|r| r.template.to_dbs().is_some()),
            1 => serde_json::from_slice::<SubmitEvidence>(rest).is_ok(),
            2 => serde_json::from_slice::<AppraiseRequest>(rest).is_ok(),
            3 => serde_json::from_slice::<Rule>(rest).is_ok(),
            _ => serde_json::from_slice::<BaselineDoc>(rest).is_ok(),
        };
        assert!(ok, "seed {name} decodes");
    }
    let regressions = files("regression");
    assert!(!regressions.is_empty());
    for (name, bytes) in regressions {
        let (_, rest) = bytes.split_first().unwrap();
        let r: VmRegistration = serde_json::from_slice(rest).unwrap();
        assert!(
            r.template.to_dbs().is_none(),
            "{name}: a 0x-prefixed database is refused"
        );
    }
}
