//! The Windows checks on a real Windows boot (the Shielded VM log of
//! `shared/testdata/eventlogs/ga-windows_gcp_shielded_vm.json`), quoted by
//! a real swtpm that replayed it, and the attacks of a guest's root on
//! them.
//!
//! That log is SHA-1 only (legacy format), and the verifier reads only a
//! SHA-256 quote: the boot is carried into a SHA-256 log
//! (`trustlaunch_agent::replayed::carry_to_sha256`: every event keeps its
//! PCR, type and data byte for byte, and every digest that was of its
//! data — all SIPA events — becomes the SHA-256 of that data). Event
//! numbers are the original's plus one. A physical Windows Server 2022
//! boot, crypto-agile with SHA-256 as recorded, is judged as it is.
//!
//! A boot that "measured" something else is this boot with its SIPA
//! events changed and measured again: what Windows would have logged.

mod common;

use base64::Engine as _;
use common::now;
use rand_core::OsRng;
use trustlaunch_agent::replayed::carry_to_sha256;
use trustlaunch_agent::replayed::ReplayedGuest;
use trustlaunch_attestation::security::{recommendations, RecommendationKind};
use trustlaunch_attestation::{appraise, Appraisal, Outcome, Reference};
use trustlaunch_eventlog::sipa::{self, SipaEvent, SipaValue};
use trustlaunch_eventlog::{Event, EventLog, EventType, HashAlg as LogHash, LogFormat};
use trustlaunch_tpm::ekcert::CaCertificate;
use trustlaunch_tpm_client::{HashAlg, PcrSelection};

/// The real Windows Shielded VM boot, carried into a SHA-256 log
/// (`carry_to_sha256`: same events and data, SHA-256 digests).
fn gcp_log() -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/eventlogs/ga-windows_gcp_shielded_vm.json");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(doc["Log"]["Raw"].as_str().unwrap())
        .unwrap();
    carry_to_sha256(&raw).unwrap()
}

/// A log of `events` (renumbered) in `like`'s format.
fn rebuild(like: &EventLog, mut events: Vec<Event>) -> Vec<u8> {
    for (i, e) in events.iter_mut().enumerate() {
        e.index = i;
    }
    EventLog::from_parts(LogFormat::CryptoAgile, like.spec_id().cloned(), events).to_bytes()
}

/// An EV_EVENT_TAG in `pcr` holding SIPA `events` (a
/// TCG_PCClientTaggedEvent is laid out as a SIPA event: id, size, data),
/// measured as Windows measures it: SHA-256 of the data.
fn tagged(pcr: u32, events: &[SipaEvent]) -> Event {
    let data = sipa::encode(events);
    Event {
        index: 0,
        offset: 0,
        pcr,
        event_type: EventType::EV_EVENT_TAG,
        digests: vec![LogHash::Sha256.hash(&data).unwrap()].into(),
        data: data.into(),
        data_offset: 0,
    }
}

/// `log` with `f` applied to its events.
fn with_events(log: &[u8], f: impl FnOnce(&mut Vec<Event>)) -> Vec<u8> {
    let parsed = EventLog::parse(log).unwrap();
    let mut events = parsed.events().to_vec();
    f(&mut events);
    rebuild(&parsed, events)
}

/// The SIPA events of a tagged event's data.
fn sipa_of(data: &[u8]) -> Vec<SipaEvent> {
    let log_event = Event {
        index: 1,
        offset: 0,
        pcr: 12,
        event_type: EventType::EV_EVENT_TAG,
        digests: Vec::new().into(),
        data: data.to_vec().into(),
        data_offset: 0,
    };
    match log_event.decode().unwrap() {
        trustlaunch_eventlog::EventData::Tagged { events } => {
            events.into_iter().map(|t| t.sipa.unwrap()).collect()
        }
        other => panic!("{other:?}"),
    }
}

/// The boot as it would have been had Windows measured what `f` makes
/// of its SIPA events (each changed event measured again).
fn rewrite(log: &[u8], f: &dyn Fn(&mut SipaEvent)) -> Vec<u8> {
    fn visit(e: &mut SipaEvent, f: &dyn Fn(&mut SipaEvent)) {
        f(e);
        if let SipaValue::Events(inner) = &mut e.value {
            for x in inner {
                visit(x, f);
            }
        }
    }
    with_events(log, |events| {
        for ev in events.iter_mut() {
            if ev.event_type == EventType::EV_EVENT_TAG {
                let mut s = sipa_of(&ev.data);
                for e in &mut s {
                    visit(e, f);
                }
                *ev = tagged(ev.pcr, &s);
            }
        }
    })
}

fn set_flag(name: &'static str, to: bool) -> impl Fn(&mut SipaEvent) {
    move |e| {
        if e.name == name {
            e.value = SipaValue::Flag(to);
        }
    }
}

const NONCE: [u8; 32] = [0x3c; 32];

struct Vm {
    guest: ReplayedGuest,
    roots: Vec<CaCertificate>,
}

/// A guest whose vTPM holds the PCRs of `log`'s boot.
fn boot(log: &[u8]) -> Vm {
    let ca = common::fresh_ca("windows test vTPM CA");
    let guest = ReplayedGuest::start(log, Some(1), &ca, now().as_secs(), &mut OsRng)
        .unwrap_or_else(|e| panic!("replayed guest: {e} (swtpm is installed by scripts/test.sh)"));
    Vm {
        guest,
        roots: vec![ca.certificate().clone()],
    }
}

fn judge(vm: &mut Vm, sent_log: Option<Vec<u8>>) -> Appraisal {
    judge_against(vm, sent_log, None)
}

fn judge_against(
    vm: &mut Vm,
    sent_log: Option<Vec<u8>>,
    baseline: Option<&trustlaunch_attestation::Baseline>,
) -> Appraisal {
    let mut e = vm.guest.evidence(&NONCE).unwrap();
    if let Some(log) = sent_log {
        e.event_log = trustlaunch_protocol::Bytes(log);
    }
    judge_evidence(vm, &e, baseline)
}

fn judge_evidence(
    vm: &Vm,
    e: &trustlaunch_protocol::Evidence,
    baseline: Option<&trustlaunch_attestation::Baseline>,
) -> Appraisal {
    appraise(
        e,
        &Reference {
            vm_id: "windows",
            ek_public: vm.guest.ek_public(),
            vtpm_ca: &vm.roots,
            nonce: &NONCE,
            ak_activated: true,
            secure_boot_expected: true,
            // Google's db, not one of this platform's templates: not
            // compared.
            template: None,
            baseline,
            baseline_required: false,
            now: now(),
            enrollment: None,
        },
    )
}

fn check<'a>(a: &'a Appraisal, name: &str) -> &'a trustlaunch_attestation::Check {
    a.check(name)
        .unwrap_or_else(|| panic!("no check {name}: {:?}", a.checks))
}

fn outcome(a: &Appraisal, name: &str) -> Outcome {
    check(a, name).outcome
}

fn every_windows_check_passes(a: &Appraisal) {
    for name in trustlaunch_attestation::windows::WINDOWS_CHECKS {
        assert_eq!(
            outcome(a, name),
            Outcome::Pass,
            "{name}: {}",
            check(a, name).detail
        );
    }
}

#[test]
fn a_real_windows_boot_passes_every_windows_check_on_its_quote() {
    let mut vm = boot(&gcp_log());
    let a = judge(&mut vm, None);
    every_windows_check_passes(&a);
    assert!(a.healthy, "{:?}", a.verdict());
    let bm = check(&a, "windows.boot_manager");
    assert!(
        bm.detail
            .contains("Microsoft Root Certificate Authority 2010 in db (event 8)"),
        "{}",
        bm.detail
    );
    let sealed = check(&a, "windows.sealed");
    assert_eq!(
        sealed.evidence,
        [19, 20, 21]
            .iter()
            .zip([12, 13, 14])
            .map(|(n, p)| trustlaunch_attestation::Cite::Event { number: *n, pcr: p })
            .collect::<Vec<_>>()
    );
    let drivers = check(&a, "windows.boot_drivers");
    assert_eq!(
        drivers.detail,
        "64 boot modules validated and signed under Microsoft's PCAs: 4 under Microsoft Code Signing PCA 2010, 59 under Microsoft Windows Production PCA 2011, 1 under Microsoft Windows Third Party Component CA 2014"
    );
    assert!(check(&a, "windows.elam")
        .detail
        .contains("Windows Defender"));
    // Each event once, though it measured boot and kernel debugging both.
    let ev = |number, pcr| trustlaunch_attestation::Cite::Event { number, pcr };
    assert_eq!(
        check(&a, "windows.debugging").evidence,
        [ev(12, 12), ev(13, 13), ev(15, 12), ev(16, 13)]
    );
    assert_eq!(
        check(&a, "windows.vbs").detail,
        "as measured: VBS off (VSM launch type 0), HVCI off (policy 0x0), Credential Guard off"
    );
    // The claims Azure's Windows guests get.
    let claims = serde_json::to_value(&a.claims).unwrap();
    for (k, v) in [
        ("x-ms-azurevm-is-windows", serde_json::json!(true)),
        ("x-ms-azurevm-ostype", "Windows".into()),
        ("x-ms-azurevm-osdistro", "Microsoft".into()),
        ("x-ms-azurevm-bootdebug-enabled", false.into()),
        ("x-ms-azurevm-kerneldebug-enabled", false.into()),
        ("x-ms-azurevm-hypervisordebug-enabled", false.into()),
        ("x-ms-azurevm-testsigning-enabled", false.into()),
        ("x-ms-azurevm-flightsigning-enabled", false.into()),
        ("x-ms-azurevm-signingdisabled", false.into()),
        ("x-ms-azurevm-debuggersdisabled", true.into()),
        ("x-ms-azurevm-elam-enabled", true.into()),
        ("x-ms-azurevm-hvci-policy", 0.into()),
        ("secureboot", true.into()),
    ] {
        assert_eq!(claims[k], v, "{k} in {claims}");
    }
    assert!(claims.get("x-ms-azurevm-osbuild").is_none());
    let verdict = a.verdict();
    let posture = verdict.windows.clone().unwrap();
    assert!(!posture.vbs && !posture.hvci && !posture.credential_guard);
    assert_eq!(posture.events, [15, 16]);
    // The posture travels with the stored verdict.
    let stored: trustlaunch_attestation::Verdict =
        serde_json::from_value(serde_json::to_value(&verdict).unwrap()).unwrap();
    assert_eq!(stored, verdict);
    // Defender's recommendations for what the boot measured off.
    let recs = recommendations(&common::posture("win", Some(&verdict)));
    let kinds: Vec<_> = recs.iter().map(|r| (r.kind, r.reason.as_str())).collect();
    assert_eq!(
        kinds,
        [
            (
                RecommendationKind::EnableHvci,
                "the last attested boot measured HVCI off (VBS off, HVCI policy 0x0; events 15, 16)"
            ),
            (
                RecommendationKind::EnableCredentialGuard,
                "the last attested boot measured no Credential Guard (VBS off; events 15, 16)"
            ),
        ]
    );
    assert_eq!(
        recs[0].name,
        "HVCI should be enabled on Windows virtual machines"
    );
}

/// The boot measured test signing on; the guest's root sends the log with
/// it off. The SIPA data is what the digest covers, so the lie is caught.
#[test]
fn a_log_edited_to_hide_test_signing_is_caught() {
    let real = rewrite(&gcp_log(), &set_flag("TESTSIGNING", true));
    let mut vm = boot(&real);
    // What really booted: test signing on, named with its events.
    let honest = judge(&mut vm, None);
    let t = check(&honest, "windows.test_signing");
    assert_eq!(t.outcome, Outcome::Fail);
    assert_eq!(t.detail, "test signing on");
    assert_eq!(t.evidence.len(), 4);
    assert!(honest.claims.test_signing_enabled);
    // The lie: the untouched log, with the real boot's digests.
    let real_log = EventLog::parse(&real).unwrap();
    let lie = with_events(&gcp_log(), |events| {
        for (e, r) in events.iter_mut().zip(real_log.events()) {
            e.digests = r.digests.clone();
        }
    });
    let a = judge(&mut vm, Some(lie));
    assert!(!a.healthy);
    assert_eq!(outcome(&a, "log.replay"), Outcome::Pass);
    let data = check(&a, "log.event_data");
    assert_eq!(data.outcome, Outcome::Fail, "{}", data.detail);
    assert!(data
        .evidence
        .contains(&trustlaunch_attestation::Cite::Event {
            number: 12,
            pcr: 12
        }));
    // And the same data with digests made to match: the quote refuses it.
    let a = judge(&mut vm, Some(gcp_log()));
    assert_eq!(outcome(&a, "log.replay"), Outcome::Fail);
    assert!(a.check("windows.test_signing").is_none());
}

/// After Windows closed PCRs 12-14, the guest's root extends a SIPA event
/// claiming HVCI and Credential Guard (the vTPM lets the OS extend them):
/// it is the running system's word, not the boot's.
#[test]
fn sipa_events_extended_after_the_separator_are_not_the_boots() {
    let claim = vec![
        SipaEvent {
            kind: 0x0005_0012,
            name: "VSM_LAUNCH_TYPE",
            value: SipaValue::Number(1),
        },
        SipaEvent {
            kind: 0x000A_0007,
            name: "VBS_HVCI_POLICY",
            value: SipaValue::Number(1),
        },
        SipaEvent {
            kind: 0x0005_0028,
            name: "LSAISO_CONFIG",
            value: SipaValue::Bytes(vec![1, 0, 0, 0]),
        },
    ];
    let mut vm = boot(&with_events(&gcp_log(), |e| e.push(tagged(13, &claim))));
    let a = judge(&mut vm, None);
    assert!(a.healthy, "{:?}", a.verdict());
    let sealed = check(&a, "windows.sealed");
    assert!(
        sealed.detail.contains(
            "3 SIPA events measured after the separators are the running system's and not read"
        ),
        "{}",
        sealed.detail
    );
    let posture = a.verdict().windows.unwrap();
    assert!(!posture.vbs && !posture.hvci && !posture.credential_guard);
    assert_eq!(a.claims.hvci_policy, Some(0));
}

/// A boot that never closed PCRs 12-14: anything extended later would
/// read as the boot's, so the Windows facts prove nothing.
#[test]
fn a_windows_boot_that_did_not_close_its_pcrs_fails_sealed() {
    let log = with_events(&gcp_log(), |events| {
        events.retain(|e| !(e.event_type == EventType::EV_SEPARATOR && e.pcr >= 12));
    });
    let mut vm = boot(&log);
    let a = judge(&mut vm, None);
    let sealed = check(&a, "windows.sealed");
    assert_eq!(sealed.outcome, Outcome::Fail);
    assert!(
        sealed.detail.contains("did not close PCR 12, 13, 14"),
        "{}",
        sealed.detail
    );
    assert!(!a.healthy);
}

/// SIPA events in a boot that no Windows certificate authorised (a Linux
/// guest's root extending PCRs 12-14 to look like a hardened Windows):
/// nobody's word — the VM is not Windows and the facts are not read.
#[test]
fn sipa_events_without_windows_boot_manager_are_refused() {
    let log = with_events(&gcp_log(), |events| {
        events.retain(|e| e.event_type != EventType::EV_EFI_VARIABLE_AUTHORITY);
    });
    let mut vm = boot(&log);
    let a = judge(&mut vm, None);
    let bm = check(&a, "windows.boot_manager");
    assert_eq!(bm.outcome, Outcome::Fail);
    assert!(bm.detail.contains("not measured by Windows' boot manager"));
    assert_eq!(outcome(&a, "windows.code_integrity"), Outcome::Skipped);
    assert!(!a.claims.is_windows);
    assert_eq!(a.claims.os_type, "Linux");
    let v = a.verdict();
    assert!(v.windows.is_none());
    // No Windows recommendation rests on words nobody vouches for.
    assert!(recommendations(&common::posture("win", Some(&v)))
        .iter()
        .all(|r| r.kind == RecommendationKind::AttestationHealthy));
}

/// A change to the SIPA events of a boot.
type Edit = Box<dyn Fn(&mut SipaEvent)>;

/// What each check names when the boot really measured a weakness.
#[test]
fn each_weakness_windows_measured_fails_its_check() {
    let cases: Vec<(&str, Edit, &str, &str)> = vec![
        (
            "code integrity off",
            Box::new(set_flag("CODEINTEGRITY", false)),
            "windows.code_integrity",
            "code integrity off",
        ),
        (
            "flight signing on",
            Box::new(set_flag("FLIGHTSIGNING", true)),
            "windows.flight_signing",
            "flight signing on",
        ),
        (
            "kernel debugger on",
            Box::new(set_flag("OSKERNELDEBUG", true)),
            "windows.debugging",
            "kernel debugging on",
        ),
        (
            "an unsigned-by-Microsoft boot driver",
            Box::new(|e: &mut SipaEvent| {
                if e.name == "AUTHORITYISSUER"
                    && e.value
                        == SipaValue::Text("Microsoft Windows Third Party Component CA 2014".into())
                {
                    e.value = SipaValue::Text("Contoso Driver CA".into());
                }
            }),
            "windows.boot_drivers",
            "signed under Contoso Driver CA, not a Microsoft PCA",
        ),
        (
            "no ELAM driver",
            Box::new(|e: &mut SipaEvent| {
                if let SipaValue::Events(inner) = &mut e.value {
                    inner.retain(|x| x.name != "ELAM_AGGREGATION");
                }
            }),
            "windows.elam",
            "no early-launch anti-malware driver was measured",
        ),
    ];
    for (what, f, name, found) in cases {
        let mut vm = boot(&rewrite(&gcp_log(), &*f));
        let a = judge(&mut vm, None);
        let c = check(&a, name);
        assert_eq!(c.outcome, Outcome::Fail, "{what}: {}", c.detail);
        assert!(c.detail.contains(found), "{what}: {}", c.detail);
        assert!(!c.evidence.is_empty() || name == "windows.elam", "{what}");
        assert!(!a.healthy, "{what}");
        // Every other Windows check still passes: each names its own.
        for other in trustlaunch_attestation::windows::WINDOWS_CHECKS {
            if other != name {
                assert_eq!(
                    outcome(&a, other),
                    Outcome::Pass,
                    "{what}: {other}: {}",
                    check(&a, other).detail
                );
            }
        }
    }
}

/// The boot measured VBS with HVCI and Credential Guard: the posture
/// says so (and the claims carry the policy).
#[test]
fn vbs_hvci_and_credential_guard_as_measured() {
    let log = rewrite(&gcp_log(), &|e: &mut SipaEvent| {
        if e.name == "VSM_LAUNCH_TYPE" {
            e.value = SipaValue::Number(1);
        }
        if e.name == "TRUSTBOUNDARY" {
            if let SipaValue::Events(inner) = &mut e.value {
                if inner.iter().any(|x| x.name == "VSM_LAUNCH_TYPE") {
                    inner.push(SipaEvent {
                        kind: 0x000A_0007,
                        name: "VBS_HVCI_POLICY",
                        value: SipaValue::Number(2),
                    });
                    inner.push(SipaEvent {
                        kind: 0x0005_0028,
                        name: "LSAISO_CONFIG",
                        value: SipaValue::Bytes(vec![1, 0, 0, 0]),
                    });
                }
            }
        }
    });
    let mut vm = boot(&log);
    let a = judge(&mut vm, None);
    assert!(a.healthy, "{:?}", a.verdict());
    assert_eq!(
        check(&a, "windows.vbs").detail,
        "as measured: VBS on (VSM launch type 1), HVCI on (policy 0x2), Credential Guard on"
    );
    assert_eq!(a.claims.hvci_policy, Some(2));
    let v = a.verdict();
    let p = v.windows.clone().unwrap();
    assert!(p.vbs && p.hvci && p.credential_guard);
    assert!(
        recommendations(&common::posture("win", Some(&v))).is_empty(),
        "nothing to recommend"
    );
}

/// The quote must cover PCR 13 of a Windows boot: its signer facts are
/// there.
#[test]
fn a_quote_leaving_out_pcr_13_vouches_for_no_windows_fact() {
    let mut vm = boot(&gcp_log());
    let pcrs: Vec<u8> = (0..16).filter(|p| *p != 13).collect();
    let e = vm
        .guest
        .quote_with(&NONCE, &PcrSelection::new(HashAlg::Sha256, pcrs), |_| {})
        .unwrap();
    let a = judge_evidence(&vm, &e, None);
    let cov = check(&a, "quote.pcr_coverage");
    assert_eq!(cov.outcome, Outcome::Fail);
    assert!(
        cov.detail.contains("does not cover SHA-256 PCR 13"),
        "{}",
        cov.detail
    );
    assert!(a.check("windows.boot_drivers").is_none());
}

/// A physical server's Windows Server 2022 boot (crypto-agile, SHA-256 as
/// its firmware and Windows measured it; `crates/eventlog/tests/data/
/// windows/`), replayed into a vTPM as recorded.
fn supermicro_log() -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../eventlog/tests/data/windows/guard-imn-supermicro-ws2022.bin"),
    )
    .unwrap()
}

#[test]
fn a_physical_windows_server_boot_with_its_own_sha256_digests() {
    let mut vm = boot(&supermicro_log());
    let a = judge(&mut vm, None);
    every_windows_check_passes(&a);
    assert_eq!(outcome(&a, "log.replay"), Outcome::Pass);
    assert_eq!(outcome(&a, "log.event_data"), Outcome::Pass);
    assert!(
        check(&a, "windows.boot_manager")
            .detail
            .contains("Microsoft Windows Production PCA 2011 in db (event 25)"),
        "{}",
        check(&a, "windows.boot_manager").detail
    );
    assert_eq!(
        check(&a, "windows.boot_drivers").detail,
        "73 boot modules validated and signed under Microsoft's PCAs: 5 under Microsoft Code Signing PCA 2010, 67 under Microsoft Windows Production PCA 2011, 1 under Microsoft Windows Third Party Component CA 2014"
    );
    // This server's firmware measures no SecureBoot variable into PCR 7
    // (only the authority that allowed bootmgfw): what the verifier says
    // of Secure Boot stands apart from Windows' own facts.
    assert_eq!(outcome(&a, "secureboot.enabled"), Outcome::Fail);
    assert!(a.claims.is_windows);
    assert_eq!(a.claims.elam_enabled, Some(true));
    assert_eq!(a.claims.signing_disabled, Some(false));
}

/// A boot driver that changed since the baseline (another build, still
/// Microsoft-signed) is named by its path; one driver more or less does
/// not read as every later one changing.
#[test]
fn a_changed_windows_boot_driver_is_a_baseline_deviation_named_by_path() {
    let mut vm = boot(&gcp_log());
    let clean = judge(&mut vm, None);
    let baseline = trustlaunch_attestation::Baseline {
        source: trustlaunch_attestation::BaselineSource::Pinned { by: "test".into() },
        measurements: clean.measurements.clone().unwrap(),
    };
    let modules = baseline.measurements.windows_modules.clone().unwrap();
    assert_eq!(modules.len(), 64);
    let fltmgr = modules
        .iter()
        .find(|m| m.name == "\\Windows\\System32\\drivers\\FLTMGR.SYS")
        .unwrap()
        .sha256
        .clone();
    assert_eq!(
        judge_against(&mut vm, None, Some(&baseline))
            .check("baseline")
            .unwrap()
            .outcome,
        Outcome::Pass
    );
    // FLTMGR.SYS with another Authenticode hash, in both its PCR 12 hash
    // record and its PCR 13 module record.
    let old = trustlaunch_eventlog::hex::decode(&fltmgr).unwrap();
    let new_hash = vec![0x42; 32];
    let changed = {
        let (old, new_hash) = (old.clone(), new_hash.clone());
        rewrite(&gcp_log(), &move |e: &mut SipaEvent| {
            if e.name == "AUTHENTICODEHASH" && e.value == SipaValue::Bytes(old.clone()) {
                e.value = SipaValue::Bytes(new_hash.clone());
            }
        })
    };
    let mut vm = boot(&changed);
    let a = judge_against(&mut vm, None, Some(&baseline));
    let b = check(&a, "baseline");
    assert_eq!(b.outcome, Outcome::Fail);
    assert_eq!(
        b.detail,
        format!(
            "Windows boot module: \\Windows\\System32\\drivers\\FLTMGR.SYS changed from {fltmgr} to {}",
            "42".repeat(32)
        )
    );
    assert_eq!(outcome(&a, "windows.boot_drivers"), Outcome::Pass);
    // The boot report puts it in the late boot.
    let report = trustlaunch_attestation::baseline::BootReport::new(
        2,
        a.measurements.as_ref().unwrap(),
        Some(&baseline),
    );
    assert!(report.early_boot_report_event.policy_evaluation_passed);
    assert!(!report.late_boot_report_event.policy_evaluation_passed);
    // A driver that was not loaded before: new, and only it.
    let extra = with_events(&gcp_log(), |events| {
        let pos = events
            .iter()
            .position(|e| e.event_type == EventType::EV_SEPARATOR && e.pcr == 13)
            .unwrap();
        let module = SipaEvent {
            kind: 0x4001_0003,
            name: "LOADEDMODULE_AGGREGATION",
            value: SipaValue::Events(vec![
                SipaEvent {
                    kind: 0x0007_0001,
                    name: "FILEPATH",
                    value: SipaValue::Text("\\Windows\\System32\\drivers\\extra.sys".into()),
                },
                SipaEvent {
                    kind: 0x0007_0004,
                    name: "AUTHENTICODEHASH",
                    value: SipaValue::Bytes(vec![7; 32]),
                },
            ]),
        };
        events.insert(pos, tagged(13, &[module]));
    });
    let mut vm = boot(&extra);
    let a = judge_against(&mut vm, None, Some(&baseline));
    assert_eq!(
        check(&a, "baseline").detail,
        format!(
            "Windows boot module: \\Windows\\System32\\drivers\\extra.sys ({}) is new",
            "07".repeat(32)
        )
    );
    // Its signer was never measured: not a Microsoft-signed driver.
    assert_eq!(outcome(&a, "windows.boot_drivers"), Outcome::Fail);
}
