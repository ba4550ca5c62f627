//! What the attestation server reads from clients and from its own
//! database, decoded from attacker-chosen bytes. The first byte picks the
//! shape (`% 7`): a VM registration (then its template decoded, its VM id
//! checked), evidence submitted by a host, a stateless appraisal request,
//! a suppression rule, a stored attestation, a stored alert, a stored
//! baseline. Nothing may panic; a registration whose template decodes must
//! encode back to the same hex.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustlaunch_server::api::{AppraiseRequest, Rule, SubmitEvidence};
use trustlaunch_server::error::check_vm_id;
use trustlaunch_server::model::{AlertDoc, AttestationDoc, BaselineDoc, Template, VmRegistration};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 7 {
        0 => {
            if let Ok(r) = serde_json::from_slice::<VmRegistration>(rest) {
                if let Some(dbs) = r.template.to_dbs() {
                    let back = Template::from_dbs(&dbs);
                    let lower = |t: &Template| {
                        [&t.pk, &t.kek, &t.db, &t.dbx]
                            .map(|x| x.as_ref().map(|s| s.to_ascii_lowercase()))
                    };
                    assert_eq!(lower(&back), lower(&r.template));
                }
            }
            if let Ok(s) = std::str::from_utf8(rest) {
                let _ = check_vm_id(s);
            }
        }
        1 => {
            let _ = serde_json::from_slice::<SubmitEvidence>(rest);
        }
        2 => {
            let _ = serde_json::from_slice::<AppraiseRequest>(rest);
        }
        3 => {
            let _ = serde_json::from_slice::<Rule>(rest);
        }
        4 => {
            let _ = serde_json::from_slice::<AttestationDoc>(rest);
        }
        5 => {
            let _ = serde_json::from_slice::<AlertDoc>(rest);
        }
        _ => {
            let _ = serde_json::from_slice::<BaselineDoc>(rest);
        }
    }
});
