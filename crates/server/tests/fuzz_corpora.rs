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

/// The `server_challenge` target's seeds: the recorded VM's AK gets a
/// credential under its EK, raw and as a request; the answer decodes.
#[test]
fn challenge_seeds_make_credentials_and_decode() {
    use trustlaunch_server::api::{ChallengeRequest, SubmitEvidence};
    use trustlaunch_server::challenge::credential_for;
    use trustlaunch_server::model::unhex;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("../attestation/tests/data/evidence/tiny-sb/state.json")).unwrap(),
    )
    .unwrap();
    let ek = unhex(state["ekPublic"].as_str().unwrap()).unwrap();
    let seeds: Vec<(String, Vec<u8>)> = {
        let d = dir.join("../../fuzz/seeds/server_challenge");
        let mut v: Vec<_> = std::fs::read_dir(&d)
            .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
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
    };
    assert_eq!(seeds.len(), 3);
    for (name, bytes) in seeds {
        let (mode, rest) = bytes.split_first().unwrap();
        match mode % 3 {
            0 => assert!(credential_for(&ek, rest).is_ok(), "{name}"),
            1 => {
                let r: ChallengeRequest = serde_json::from_slice(rest).unwrap();
                let ak = unhex(r.ak_public.as_deref().unwrap()).unwrap();
                let (c, secret) = credential_for(&ek, &ak).unwrap();
                assert_eq!(secret.len(), 32);
                assert!(!c.credential_blob.is_empty(), "{name}");
            }
            _ => assert!(
                serde_json::from_slice::<SubmitEvidence>(rest).is_ok(),
                "{name}"
            ),
        }
    }
    // Garbage AKs are refused with an error, not a panic.
    for ak in [&b""[..], &[0u8; 3], &[0xff; 300]] {
        assert!(credential_for(&ek, ak).is_err());
    }
}
