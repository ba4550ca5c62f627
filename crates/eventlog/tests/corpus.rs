//! Golden tests over real logs from machines nobody here controls
//! (`../shared/testdata/eventlogs`, see its README): every log parses and
//! every published PCR value is reproduced.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;
use serde_json::Value;
use trustlaunch_eventlog::{
    initial_value, replay, startup_locality, verify, BootEvidence, Digest, EventLog, HashAlg,
    PcrBanks, PcrStatus, Workaround,
};

fn corpus_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/eventlogs");
    assert!(
        dir.join("expected.json").is_file(),
        "the shared test data is missing: expected {} (clone shared/ beside the project)",
        dir.display()
    );
    dir
}

/// The raw log bytes of a corpus entry (the Windows JSON document carries
/// its log base64-encoded in `Log.Raw`).
fn log_bytes(name: &str) -> Vec<u8> {
    let path = corpus_dir().join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if name.ends_with(".json") {
        let doc: Value = serde_json::from_slice(&bytes).expect("JSON document");
        let raw = doc["Log"]["Raw"].as_str().expect("Log.Raw");
        return base64::engine::general_purpose::STANDARD
            .decode(raw)
            .expect("base64 log");
    }
    bytes
}

fn expected() -> BTreeMap<String, PcrBanks> {
    let text = std::fs::read_to_string(corpus_dir().join("expected.json")).expect("expected.json");
    let doc: Value = serde_json::from_str(&text).expect("expected.json is JSON");
    let mut out = BTreeMap::new();
    for (file, entry) in doc.as_object().expect("object") {
        let mut banks = PcrBanks::new();
        for (alg, pcrs) in entry["pcrs"].as_object().expect("pcrs") {
            let alg = HashAlg::from_name(alg).expect("known bank");
            for (index, hex) in pcrs.as_object().expect("bank") {
                let bytes = trustlaunch_eventlog::hex::decode(hex.as_str().expect("hex"))
                    .expect("hex value");
                let digest = Digest::new(alg, &bytes).expect("digest size");
                banks
                    .entry(alg)
                    .or_default()
                    .insert(index.parse().expect("index"), digest);
            }
        }
        out.insert(file.clone(), banks);
    }
    out
}

#[test]
fn every_corpus_file_is_listed_and_parses() {
    let listed = expected();
    let mut seen = 0;
    for entry in std::fs::read_dir(corpus_dir()).expect("corpus dir") {
        let name = entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("utf-8");
        if name == "README.md" || name == "expected.json" {
            continue;
        }
        assert!(listed.contains_key(&name), "{name} is not in expected.json");
        let log = EventLog::parse(&log_bytes(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!log.events().is_empty(), "{name}");
        // Every event's data either decodes or is reported with an offset
        // inside the log; evidence extraction never fails.
        for event in log.events() {
            if let Err(e) = event.decode_with_uintn(log.uintn_bytes()) {
                panic!("{name}: event {} does not decode: {e}", event.index);
            }
        }
        let _ = BootEvidence::extract(&log);
        seen += 1;
    }
    assert_eq!(
        seen,
        listed.len(),
        "expected.json lists files that are missing"
    );
}

#[test]
fn every_published_pcr_value_is_reproduced() {
    let mut compared = 0;
    for (name, banks) in expected() {
        if banks.is_empty() {
            continue;
        }
        let log = EventLog::parse(&log_bytes(&name)).expect("parses");
        let replayed = replay(&log);
        let locality = startup_locality(&log);
        let report = verify(&log, &banks);
        for check in &report.checks {
            if !replayed.pcrs.contains_key(&check.alg) {
                // ga-ebs_event_missing_eventlog is a SHA-1 log published
                // with SHA-256 PCRs too: a log says nothing about a bank it
                // does not carry, so those values cannot be compared.
                assert_eq!(check.status, PcrStatus::BankNotReplayed, "{name}");
                assert_eq!(log.banks(), [HashAlg::Sha1], "{name}");
                continue;
            }
            let has_events = replayed
                .pcrs
                .get(&check.alg)
                .is_some_and(|b| b.contains_key(&check.pcr));
            if has_events {
                let ebs = name == "ga-ebs_event_missing_eventlog" && check.pcr == 5;
                if ebs {
                    // The log was captured before ExitBootServices: the
                    // EBS actions were extended but are not in the log.
                    assert_eq!(
                        check.status,
                        PcrStatus::MatchWithWorkaround {
                            workaround: Workaround::EbsInvocationSuccess
                        },
                        "{name} {} PCR {}",
                        check.alg,
                        check.pcr
                    );
                } else {
                    assert_eq!(
                        check.status,
                        PcrStatus::Match,
                        "{name} {} PCR {}",
                        check.alg,
                        check.pcr
                    );
                }
            } else if check.pcr < 8 || check.pcr > 15 {
                // A firmware PCR (0-7) or a dynamic/debug PCR (16-23)
                // without events holds its initial value. PCRs 8-15 belong
                // to the OS (IMA in PCR 10, ...), which this log does not
                // cover, so they are not judged here.
                let want = &banks[&check.alg][&check.pcr];
                assert_eq!(
                    &initial_value(check.alg, check.pcr, locality),
                    want,
                    "{name} {} PCR {} has no events: initial value",
                    check.alg,
                    check.pcr
                );
            }
            compared += 1;
        }
        assert!(
            report.passed(),
            "{name}: {:?}",
            report.mismatches().collect::<Vec<_>>()
        );
    }
    // 8 (option ROM) + 24 (sb_cert) + 24 (Windows) + 1 (EBS, SHA-1) + 1 (H-CRTM).
    assert_eq!(compared, 58, "values compared");
}

#[test]
fn hcrtm_log_starts_pcr0_at_locality_4() {
    let log = EventLog::parse(&log_bytes("tss-binary_measurements_hcrtm.bin")).expect("parses");
    assert_eq!(startup_locality(&log), 4);
    let want = &expected()["tss-binary_measurements_hcrtm.bin"][&HashAlg::Sha1][&0];
    assert_eq!(&replay(&log).pcrs[&HashAlg::Sha1][&0], want);
}

#[test]
fn a_changed_pcr_value_is_reported_as_a_mismatch() {
    let name = "ga-sb_cert_eventlog";
    let mut banks = expected()[name].clone();
    let pcr7 = banks
        .get_mut(&HashAlg::Sha1)
        .and_then(|b| b.get_mut(&7))
        .expect("PCR 7");
    *pcr7 = Digest::zero(HashAlg::Sha1);
    let log = EventLog::parse(&log_bytes(name)).expect("parses");
    let report = verify(&log, &banks);
    assert!(!report.passed());
    let bad: Vec<u32> = report.mismatches().map(|c| c.pcr).collect();
    assert_eq!(bad, vec![7]);
}

#[test]
fn the_ebs_workaround_never_hides_a_real_mismatch() {
    let name = "ga-ebs_event_missing_eventlog";
    let mut banks = expected()[name].clone();
    let pcr5 = banks
        .get_mut(&HashAlg::Sha1)
        .and_then(|b| b.get_mut(&5))
        .expect("PCR 5");
    *pcr5 = HashAlg::Sha1.hash(b"something else").expect("sha1");
    let log = EventLog::parse(&log_bytes(name)).expect("parses");
    assert!(!verify(&log, &banks).passed());
}

#[test]
fn secure_boot_evidence_of_a_shim_boot() {
    let log = EventLog::parse(&log_bytes("ga-sb_cert_eventlog")).expect("parses");
    let ev = BootEvidence::extract(&log);
    assert_eq!(ev.secure_boot, Some(1));
    let names: Vec<&str> = ev
        .secure_boot_variables
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(names, ["SecureBoot", "PK", "KEK", "db", "dbx"]);
    // Firmware authorised shim from db; shim authorised grub and the
    // kernel with its built-in certificate.
    let dbs: Vec<&str> = ev.authorities.iter().map(|a| a.database.as_str()).collect();
    assert_eq!(dbs, ["db", "Shim", "Shim"]);
    assert!(ev
        .authorities
        .iter()
        .all(|a| a.authorised_image_event.is_some()));
    let apps = ev.images.iter().filter(|i| i.pcr == 4).count();
    assert_eq!(apps, 3);
    // This log was read before ExitBootServices: no EBS action in it.
    assert_eq!(ev.exit_boot_services, None);
    let separators = ev
        .timeline
        .iter()
        .filter(|m| {
            matches!(
                m.what,
                trustlaunch_eventlog::MilestoneKind::Separator { .. }
            )
        })
        .count();
    assert_eq!(separators, 1);
    assert!(ev.pcr7_config_after_separator.is_empty());
}

#[test]
fn the_windows_log_replays_to_the_quoted_pcrs() {
    let name = "ga-windows_gcp_shielded_vm.json";
    let log = EventLog::parse(&log_bytes(name)).expect("parses");
    let report = verify(&log, &expected()[name]);
    assert!(report.passed());
    let matched = report
        .checks
        .iter()
        .filter(|c| c.status == PcrStatus::Match)
        .count();
    assert!(matched >= 7, "{matched}");
}

#[test]
fn truncated_logs_fail_with_an_offset_inside_the_log() {
    let bytes = log_bytes("ga-crypto_agile_eventlog");
    let full = EventLog::parse(&bytes).expect("parses");
    for cut in (1..bytes.len()).step_by(7) {
        let Some(part) = bytes.get(..cut) else {
            continue;
        };
        match EventLog::parse(part) {
            Ok(log) => assert!(log.events().len() <= full.events().len()),
            Err(e) => {
                let text = e.to_string();
                assert!(text.contains("offset"), "{text}");
            }
        }
    }
}

#[test]
fn one_bank_replays_and_checks_as_it_does_among_all() {
    for name in expected().keys() {
        let bytes = log_bytes(name);
        let Ok(log) = EventLog::parse(&bytes) else {
            continue;
        };
        let all = replay(&log);
        let only = trustlaunch_eventlog::replay_banks(&log, &[HashAlg::Sha256]);
        assert_eq!(
            only.pcrs.get(&HashAlg::Sha256),
            all.pcrs.get(&HashAlg::Sha256),
            "{name}"
        );
        assert!(only.pcrs.keys().all(|a| *a == HashAlg::Sha256), "{name}");
        let mut all_lies: Vec<_> = trustlaunch_eventlog::check_digests(&log)
            .into_iter()
            .filter(|m| m.alg == HashAlg::Sha256)
            .map(|m| m.event)
            .collect();
        let mut lies: Vec<_> = trustlaunch_eventlog::check_digests_in(&log, &[HashAlg::Sha256])
            .into_iter()
            .map(|m| m.event)
            .collect();
        all_lies.sort_unstable();
        lies.sort_unstable();
        assert_eq!(lies, all_lies, "{name}");
    }
}

/// grub measures the text after its `grub_cmd: ` / `kernel_cmdline: `
/// prefix into PCR 8: every such event of the real grub logs holds, and a
/// command line edited in the log while its digest stays is caught.
#[test]
fn grub_strings_are_bound_to_their_digests() {
    use trustlaunch_eventlog::{EventType, Hashed};
    let mut checked = 0;
    for name in [
        "ga-coreos_36_shielded_vm_no_secure_boot_eventlog",
        "tss-binary_measurements_hcrtm.bin",
    ] {
        let log = EventLog::parse(&log_bytes(name)).expect(name);
        let grub: Vec<_> = log
            .events()
            .iter()
            .filter(|e| e.pcr == 8 && e.event_type == EventType::EV_IPL)
            .filter(|e| trustlaunch_eventlog::grub_measured_text(&e.data).is_some())
            .collect();
        assert!(!grub.is_empty(), "{name} has grub events");
        checked += grub.len();
        let lies: Vec<_> = trustlaunch_eventlog::check_digests(&log)
            .into_iter()
            .filter(|m| m.expected_over == Hashed::GrubText)
            .collect();
        assert!(lies.is_empty(), "{name}: {lies:?}");
    }
    assert!(checked > 100, "{checked} grub strings checked");

    // The CoreOS log's kernel command line, with one word changed in the
    // log only: the digest still replays, the text no longer matches it.
    let bytes = log_bytes("ga-coreos_36_shielded_vm_no_secure_boot_eventlog");
    let log = EventLog::parse(&bytes).unwrap();
    let cmdline = log
        .events()
        .iter()
        .find(|e| e.data.starts_with(b"kernel_cmdline: "))
        .expect("a kernel_cmdline event");
    let mut forged = bytes.clone();
    let at = cmdline.data_offset + "kernel_cmdline: ".len();
    forged[at] ^= 0x01;
    let forged = EventLog::parse(&forged).unwrap();
    let lies = trustlaunch_eventlog::check_digests_in(&forged, &[HashAlg::Sha256]);
    assert!(
        lies.iter()
            .any(|m| m.event == cmdline.index && m.expected_over == Hashed::GrubText),
        "{lies:?}"
    );
    assert_eq!(replay(&forged).pcrs, replay(&log).pcrs);
}
