//! Appraisals per second per core on real recorded evidence
//! (`tests/data/evidence/`: the `tiny-sb` UKI boot and the Debian `shim`
//! boot), and the parts of an appraisal on their own, to show where the
//! time goes. Results: docs/benchmarks.md ("Appraisal, pure part").
//!
//! A Windows boot too: the physical Windows Server 2022 log of
//! `crates/eventlog/tests/data/windows/`, replayed into a real swtpm.
//!
//! `full`: `appraise` with everything a platform passes — the EK it made,
//! its vTPM CA, the nonce, the template's key databases and a baseline
//! learned from the same boot — so every check runs and passes.
//! `parts`: what `appraise` does first, each alone:
//! - `quote_verify`: AK TPMT_PUBLIC and TPMT_SIGNATURE unmarshalled, then
//!   `trustlaunch_tpm::quote::verify_quote` (RSA-2048 signature, magic,
//!   nonce, PCR digest over the quoted SHA-256 bank);
//! - `log_parse_replay`: `EventLog::parse` + `replay` (all banks);
//! - `log_all`: the log work of an appraisal: parse, replay,
//!   `check_digests`, `BootEvidence::extract`, `Measurements::from_boot`;
//! - `ek_chain`: EK certificate parse and chain verification to the vTPM CA.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use trustlaunch_attestation::{appraise, pcr_values, Baseline, BaselineSource, Measurements};
use trustlaunch_eventlog::{check_digests, replay, BootEvidence, EventLog};
use trustlaunch_tpm::ekcert::{EkCertificate, EkTrustStore};
use trustlaunch_tpm::public::Public;
use trustlaunch_tpm::quote::verify_quote;
use trustlaunch_tpm::signature::Signature;

fn bench(c: &mut Criterion) {
    let ca = common::platform_ca();
    let cases = [
        ("tiny-sb", common::case("tiny-sb", "attestation-boot1.json")),
        ("shim", common::case("shim", "attestation.json")),
    ];
    // Baselines learned from the boots themselves, so the baseline check
    // compares every component and passes.
    let baselines: Vec<Baseline> = cases
        .iter()
        .map(|(name, case)| {
            let a = appraise(&case.evidence, &common::reference(case, &ca));
            assert!(a.healthy, "{name}: the recorded boot is healthy");
            Baseline {
                source: BaselineSource::Learned {
                    boot: (*name).into(),
                },
                measurements: a.measurements.expect("measurements"),
            }
        })
        .collect();

    let mut g = c.benchmark_group("full");
    g.throughput(Throughput::Elements(1));
    for ((name, case), base) in cases.iter().zip(&baselines) {
        let mut r = common::reference(case, &ca);
        r.baseline = Some(base);
        let a = appraise(&case.evidence, &r);
        assert!(a.healthy, "{name}: healthy with its baseline");
        assert!(a
            .checks
            .iter()
            .filter(|c| c.name != "kernel.modules")
            .all(|c| c.outcome == trustlaunch_attestation::Outcome::Pass));
        g.bench_function(format!("appraise/{name}"), |b| {
            b.iter(|| black_box(appraise(black_box(&case.evidence), black_box(&r))))
        });
        // An enrolled VM's periodic attestation: the EK chain and the AK
        // were verified at enrollment.
        let en = trustlaunch_attestation::enrollment::Enrollment::new(
            &case.evidence.ek_certificate.as_ref().expect("EK cert").0,
            &case.evidence.ak_public.0,
        )
        .expect("enrollment");
        let mut re = r.clone();
        re.enrollment = Some(&en);
        assert!(appraise(&case.evidence, &re).healthy);
        g.bench_function(format!("appraise_enrolled/{name}"), |b| {
            b.iter(|| black_box(appraise(black_box(&case.evidence), black_box(&re))))
        });
    }
    // A Windows boot: the physical Windows Server 2022 log (1,033 SIPA
    // events, 43 KB) replayed into a real swtpm, quoted by the agent, with
    // a baseline learned from it (its 73 boot modules compared by path).
    let win = windows();
    let mut r = win.reference();
    let learned = Baseline {
        source: BaselineSource::Learned {
            boot: "windows".into(),
        },
        measurements: appraise(&win.evidence, &r)
            .measurements
            .expect("measurements"),
    };
    r.baseline = Some(&learned);
    let a = appraise(&win.evidence, &r);
    for name in trustlaunch_attestation::windows::WINDOWS_CHECKS
        .iter()
        .chain(&["baseline"])
    {
        assert_eq!(
            a.check(name).map(|c| c.outcome),
            Some(trustlaunch_attestation::Outcome::Pass),
            "{name}"
        );
    }
    g.bench_function("appraise/windows-ws2022", |b| {
        b.iter(|| black_box(appraise(black_box(&win.evidence), black_box(&r))))
    });
    let en = trustlaunch_attestation::enrollment::Enrollment::new(
        &win.evidence.ek_certificate.as_ref().expect("EK cert").0,
        &win.evidence.ak_public.0,
    )
    .expect("enrollment");
    let mut re = r.clone();
    re.enrollment = Some(&en);
    g.bench_function("appraise_enrolled/windows-ws2022", |b| {
        b.iter(|| black_box(appraise(black_box(&win.evidence), black_box(&re))))
    });
    g.finish();

    let mut g = c.benchmark_group("parts");
    g.throughput(Throughput::Elements(1));
    for (name, case) in &cases {
        let e = &case.evidence;
        let pcrs = pcr_values(e);
        g.bench_function(format!("quote_verify/{name}"), |b| {
            b.iter(|| {
                let ak = Public::from_bytes(black_box(&e.ak_public.0)).expect("AK");
                let sig = Signature::from_bytes(black_box(&e.quote_signature.0)).expect("sig");
                black_box(
                    verify_quote(&ak, &e.quote_attest.0, &sig, &e.nonce.0, &pcrs)
                        .expect("quote verifies"),
                )
            })
        });
        g.bench_function(format!("log_parse_replay/{name}"), |b| {
            b.iter(|| {
                let log = EventLog::parse(black_box(&e.event_log.0)).expect("log");
                black_box(replay(&log))
            })
        });
        g.bench_function(format!("log_all/{name}"), |b| {
            b.iter(|| {
                let log = EventLog::parse(black_box(&e.event_log.0)).expect("log");
                let rep = replay(&log);
                let lies = check_digests(&log);
                let ev = BootEvidence::extract(&log);
                black_box((lies, Measurements::from_boot(&ev, &rep)))
            })
        });
        let der = e.ek_certificate.as_ref().expect("EK certificate");
        let now = common::now();
        g.bench_function(format!("ek_chain/{name}"), |b| {
            b.iter(|| {
                let cert = EkCertificate::parse(black_box(&der.0)).expect("EK cert");
                black_box(
                    EkTrustStore::new(ca.clone())
                        .verify(&cert, now)
                        .expect("chains"),
                )
            })
        });
    }
    // The Windows boot's log: 43 KB, 1,033 SIPA events.
    let log = &win.evidence.event_log.0;
    g.bench_function("log_parse_replay/windows-ws2022", |b| {
        b.iter(|| {
            let log = EventLog::parse(black_box(log)).expect("log");
            black_box(replay(&log))
        })
    });
    g.bench_function("log_all/windows-ws2022", |b| {
        b.iter(|| {
            let log = EventLog::parse(black_box(log)).expect("log");
            let rep = replay(&log);
            let lies = check_digests(&log);
            let ev = BootEvidence::extract(&log);
            black_box((lies, Measurements::from_boot(&ev, &rep)))
        })
    });
    g.finish();
}

/// The Windows boot's evidence, from a replayed guest (kept alive: its
/// swtpm answered once, the evidence is then fixed).
struct Windows {
    evidence: trustlaunch_protocol::Evidence,
    ek_public: Vec<u8>,
    roots: Vec<trustlaunch_tpm::ekcert::CaCertificate>,
}

const WINDOWS_NONCE: [u8; 32] = [0x77; 32];

impl Windows {
    fn reference(&self) -> trustlaunch_attestation::Reference<'_> {
        trustlaunch_attestation::Reference {
            vm_id: "windows",
            ek_public: &self.ek_public,
            vtpm_ca: &self.roots,
            nonce: &WINDOWS_NONCE,
            ak_activated: true,
            secure_boot_expected: true,
            template: None,
            baseline: None,
            baseline_required: false,
            now: common::now(),
            enrollment: None,
        }
    }
}

fn windows() -> Windows {
    use rand_core::OsRng;
    use trustlaunch_tpm::ca::{CaConfig, CaKeyAlgorithm, CaSigningKey, VtpmCa};
    let log = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../eventlog/tests/data/windows/guard-imn-supermicro-ws2022.bin"),
    )
    .expect("the Windows Server 2022 log");
    let ca = VtpmCa::create(
        CaSigningKey::generate(CaKeyAlgorithm::P256, &mut OsRng),
        &CaConfig {
            common_name: "bench vTPM CA".into(),
            organization: None,
            not_before: trustlaunch_tpm::ekcert::UnixTime::from_secs(
                common::now().as_secs() - 3600,
            ),
            not_after: None,
            path_len_constraint: Some(0),
        },
        &mut OsRng,
    )
    .expect("CA");
    let mut g = trustlaunch_agent::replayed::ReplayedGuest::start(
        &log,
        Some(1),
        &ca,
        common::now().as_secs(),
        &mut OsRng,
    )
    .expect("replayed guest (swtpm)");
    Windows {
        evidence: g.evidence(&WINDOWS_NONCE).expect("evidence"),
        ek_public: g.ek_public().to_vec(),
        roots: vec![ca.certificate().clone()],
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
