//! Shared by the appraisal tests: the recorded evidence fixtures
//! (`tests/data/evidence/`) and the platform's view of each VM.
#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::Value;
use trustlaunch_attestation::{KeyDatabases, Reference};
use trustlaunch_protocol::Evidence;
use trustlaunch_secureboot::varstore::VarStore;
use trustlaunch_tpm::ekcert::{CaCertificate, UnixTime};

pub fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/evidence")
}

pub fn now() -> UnixTime {
    UnixTime::from_secs(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
}

pub struct Case {
    pub evidence: Evidence,
    pub ek_public: Vec<u8>,
    pub template: KeyDatabases,
    pub secure_boot: bool,
    pub checks_at_recording: Vec<String>,
}

pub fn json(path: PathBuf) -> Value {
    serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

pub fn case(name: &str, attestation: &str) -> Case {
    let dir = data().join(name);
    let a = json(dir.join(attestation));
    let evidence: Evidence = serde_json::from_value(a["evidence"].clone()).unwrap();
    let state = json(dir.join("state.json"));
    let spec = json(dir.join("spec.json"));
    let ek_public = trustlaunch_eventlog::hex::decode(state["ekPublic"].as_str().unwrap()).unwrap();
    let vars = VarStore::parse(&std::fs::read(dir.join("vars-created.fd")).unwrap()).unwrap();
    Case {
        template: KeyDatabases::from_store(&vars),
        secure_boot: spec["securityProfile"]["uefiSettings"]["secureBootEnabled"] == true,
        checks_at_recording: a["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect(),
        evidence,
        ek_public,
    }
}

pub fn platform_ca() -> Vec<CaCertificate> {
    vec![CaCertificate::parse(&std::fs::read(data().join("vtpm-ca.crt")).unwrap()).unwrap()]
}

pub fn reference<'a>(c: &'a Case, ca: &'a [CaCertificate]) -> Reference<'a> {
    Reference {
        vm_id: "vm",
        ek_public: &c.ek_public,
        vtpm_ca: ca,
        nonce: &c.evidence.nonce.0,
        ak_activated: true,
        secure_boot_expected: c.secure_boot,
        template: Some(&c.template),
        baseline: None,
        baseline_required: false,
        now: now(),
        enrollment: None,
    }
}

pub fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}
