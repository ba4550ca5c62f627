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

/// A fresh vTPM CA (ECDSA P-256, valid from an hour ago) for replayed
/// guests' EK certificates.
pub fn fresh_ca(name: &str) -> trustlaunch_tpm::ca::VtpmCa {
    use trustlaunch_tpm::ca::{CaConfig, CaKeyAlgorithm, CaSigningKey, VtpmCa};
    VtpmCa::create(
        CaSigningKey::generate(CaKeyAlgorithm::P256, &mut rand_core::OsRng),
        &CaConfig {
            common_name: name.into(),
            organization: None,
            not_before: UnixTime::from_secs(now().as_secs() - 3600),
            not_after: None,
            path_len_constraint: Some(0),
        },
        &mut rand_core::OsRng,
    )
    .unwrap()
}

/// A Trusted Launch VM's posture with the agent answering and the last
/// appraisal's verdict `a`.
pub fn posture<'a>(
    vm: &'a str,
    a: Option<&'a trustlaunch_attestation::Verdict>,
) -> trustlaunch_attestation::security::Posture<'a> {
    trustlaunch_attestation::security::Posture {
        vm_id: vm,
        trusted_launch_supported: true,
        secure_boot: true,
        vtpm: true,
        attestation_agent: true,
        last_appraisal: a,
        agent_silent_for: Some(5),
        agent_timeout: 600,
        untrusted_modules: &[],
    }
}
