//! The whole appraisal (`trustlaunch_attestation::appraise`) on evidence the
//! guest controls, against a fixed `Reference` built once from the recorded
//! `tiny-sb` fixture (its EK, the platform's vTPM CA, the challenge's nonce,
//! the template's key databases from the store as created, and a baseline
//! learned from the real boot). The first byte picks what the rest of the
//! input is (`% 5`):
//!
//! 0. the event log (replaces the real one);
//! 1. a JSON `Evidence` (appraised if it decodes);
//! 2. a window written over the real event log at the offset given by the
//!    next 2 bytes (little endian, `% (len + 1)`; the log grows if the
//!    window runs past its end);
//! 3. the EK certificate;
//! 4. the quote's TPMS_ATTEST.
//!
//! When `mode / 5` is odd the reference has no template and no baseline.
//!
//! `appraise` must not panic, and its result must be consistent: `healthy`
//! exactly when no check failed, every failure says why (non-empty detail),
//! and no check name appears twice.
#![no_main]

use std::collections::BTreeSet;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use trustlaunch_attestation::{
    appraise, Appraisal, Baseline, BaselineSource, KeyDatabases, Outcome, Reference,
};
use trustlaunch_protocol::{decode, Bytes, Evidence};
use trustlaunch_secureboot::varstore::VarStore;
use trustlaunch_tpm::ekcert::{CaCertificate, UnixTime};

const ATTESTATION: &str =
    include_str!("../../crates/attestation/tests/data/evidence/tiny-sb/attestation-boot1.json");
const STATE: &str = include_str!("../../crates/attestation/tests/data/evidence/tiny-sb/state.json");
const VARS: &[u8] =
    include_bytes!("../../crates/attestation/tests/data/evidence/tiny-sb/vars-created.fd");
const VTPM_CA: &[u8] = include_bytes!("../../crates/attestation/tests/data/evidence/vtpm-ca.crt");

/// The fixture's `received_at`: inside the EK certificate's validity.
const NOW: u64 = 1_795_456_634;

struct Fixture {
    evidence: Evidence,
    ek_public: Vec<u8>,
    ca: Vec<CaCertificate>,
    template: KeyDatabases,
    baseline: Baseline,
}

/// The JSON object that is the value of `"key":` in `text` (brace matching
/// outside strings; enough for the recorded files).
fn object_after<'a>(text: &'a str, key: &str) -> &'a str {
    let at = text.find(&format!("\"{key}\"")).expect("key") + key.len() + 2;
    let start = at + text[at..].find('{').expect("object");
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    for (i, ch) in text[start..].char_indices() {
        match (in_str, esc, ch) {
            (true, true, _) => esc = false,
            (true, false, '\\') => esc = true,
            (true, false, '"') => in_str = false,
            (true, false, _) => {}
            (false, _, '"') => in_str = true,
            (false, _, '{') => depth += 1,
            (false, _, '}') => {
                depth -= 1;
                if depth == 0 {
                    return &text[start..=start + i];
                }
            }
            _ => {}
        }
    }
    panic!("unterminated object");
}

/// The string value of `"key": "..."` in `text`.
fn string_after<'a>(text: &'a str, key: &str) -> &'a str {
    let at = text.find(&format!("\"{key}\"")).expect("key") + key.len() + 2;
    let start = at + text[at..].find('"').expect("string") + 1;
    let end = start + text[start..].find('"').expect("end of string");
    &text[start..end]
}

fn reference(f: &Fixture) -> Reference<'_> {
    Reference {
        vm_id: "tiny-sb",
        ek_public: &f.ek_public,
        vtpm_ca: &f.ca,
        nonce: &f.evidence.nonce.0,
        ak_activated: true,
        secure_boot_expected: true,
        template: Some(&f.template),
        baseline: Some(&f.baseline),
        baseline_required: false,
        now: UnixTime::from_secs(NOW),
        enrollment: None,
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let evidence: Evidence =
            decode(0, object_after(ATTESTATION, "evidence").as_bytes()).expect("evidence");
        let ek_public =
            trustlaunch_eventlog::hex::decode(string_after(STATE, "ekPublic")).expect("ekPublic");
        let ca = vec![CaCertificate::parse(VTPM_CA).expect("vTPM CA")];
        let vars = VarStore::parse(VARS).expect("variable store");
        let template = KeyDatabases::from_store(&vars);
        let mut f = Fixture {
            evidence,
            ek_public,
            ca,
            template,
            baseline: Baseline {
                source: BaselineSource::Learned {
                    boot: "boot1".into(),
                },
                measurements: Default::default(),
            },
        };
        // Learn the baseline from the real boot, and make sure the fixture
        // is what the tests say it is: a healthy boot.
        let mut r = reference(&f);
        r.baseline = None;
        let a = appraise(&f.evidence, &r);
        assert!(a.healthy, "the real tiny-sb evidence must be healthy");
        f.baseline.measurements = a.measurements.expect("measurements");
        let a = appraise(&f.evidence, &reference(&f));
        assert!(a.healthy, "the real evidence must match its own baseline");
        f
    })
}

fn check(a: &Appraisal) {
    let failed = a.checks.iter().any(|c| c.outcome == Outcome::Fail);
    assert_eq!(a.healthy, !failed, "healthy iff no check failed: {a:?}");
    for c in &a.checks {
        if c.outcome == Outcome::Fail {
            assert!(!c.detail.is_empty(), "failed check {} says why", c.name);
        }
    }
    let mut names = BTreeSet::new();
    for c in &a.checks {
        assert!(names.insert(c.name), "check {} appears twice", c.name);
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let e = match mode % 5 {
        0 => {
            let mut e = f.evidence.clone();
            e.event_log = Bytes(rest.to_vec());
            e
        }
        1 => match decode::<Evidence>(0, rest) {
            Ok(e) => e,
            Err(_) => return,
        },
        2 => {
            let (Some(&lo), Some(&hi)) = (rest.first(), rest.get(1)) else {
                return;
            };
            let window = &rest[2..];
            let mut e = f.evidence.clone();
            let log = &mut e.event_log.0;
            let at = usize::from(u16::from_le_bytes([lo, hi])) % (log.len() + 1);
            let end = at + window.len();
            if end > log.len() {
                log.resize(end, 0);
            }
            log[at..end].copy_from_slice(window);
            e
        }
        3 => {
            let mut e = f.evidence.clone();
            e.ek_certificate = Some(Bytes(rest.to_vec()));
            e
        }
        _ => {
            let mut e = f.evidence.clone();
            e.quote_attest = Bytes(rest.to_vec());
            e
        }
    };
    let mut r = reference(f);
    if mode / 5 % 2 == 1 {
        // No template and no baseline yet: the other branches.
        r.template = None;
        r.baseline = None;
    }
    check(&appraise(&e, &r));
});
