//! The challenge/response path's attacker-chosen inputs. The first byte
//! picks the shape (`% 3`): an AK's TPMT_PUBLIC as raw bytes, a challenge
//! request naming one (hex in JSON, as a caller sends it), or an answer
//! (`SubmitEvidence`). For any AK the service makes a credential under a
//! real EK (the recorded tiny-sb VM's) or refuses with a typed error —
//! never a panic; an answer decodes or is refused.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use trustlaunch_server::api::{ChallengeRequest, SubmitEvidence};
use trustlaunch_server::challenge::credential_for;
use trustlaunch_server::model::unhex;

fn ek() -> &'static [u8] {
    static EK: OnceLock<Vec<u8>> = OnceLock::new();
    EK.get_or_init(|| {
        let state: serde_json::Value = serde_json::from_str(include_str!(
            "../../crates/attestation/tests/data/evidence/tiny-sb/state.json"
        ))
        .unwrap();
        unhex(state["ekPublic"].as_str().unwrap()).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let _ = credential_for(ek(), rest);
        }
        1 => {
            if let Ok(r) = serde_json::from_slice::<ChallengeRequest>(rest) {
                if let Some(ak) = r.ak_public.as_deref().and_then(unhex) {
                    let _ = credential_for(ek(), &ak);
                }
            }
        }
        _ => {
            let _ = serde_json::from_slice::<SubmitEvidence>(rest);
        }
    }
});
