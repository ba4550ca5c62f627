//! Appraisal on evidence recorded from real VM boots
//! (`tests/data/evidence/`, see its README): clean boots are healthy with
//! no false alert, and a tamper suite where each attack fails exactly the
//! checks it should, citing its evidence.

mod common;

use std::collections::BTreeSet;

use trustlaunch_attestation::{appraise, Appraisal, Baseline, BaselineSource, Cite, Outcome};
use trustlaunch_eventlog::{EventLog, EventType, HashAlg};
use trustlaunch_protocol::{Bytes, Evidence};
use trustlaunch_tpm::ca::{CaConfig, CaKeyAlgorithm, CaSigningKey, VtpmCa};
use trustlaunch_tpm::ekcert::UnixTime;

use common::{case, platform_ca, reference, Case};
use trustlaunch_tpm::public::Public;

fn failed(a: &Appraisal) -> BTreeSet<&'static str> {
    a.failures().map(|c| c.name).collect()
}

fn assert_fails(a: &Appraisal, expected: &[&str], what: &str) {
    let want: BTreeSet<&str> = expected.iter().copied().collect();
    assert_eq!(
        failed(a),
        want,
        "{what}: {}",
        serde_json::to_string_pretty(&a.checks).unwrap()
    );
    assert!(!a.healthy, "{what}: unhealthy");
    for c in a.failures() {
        assert!(!c.detail.is_empty(), "{what}: {} says why", c.name);
    }
}

#[test]
fn clean_boots_are_healthy_and_claim_what_they_measured() {
    let ca = platform_ca();
    for (name, file) in [
        ("tiny-sb", "attestation-boot1.json"),
        ("tiny-sb", "attestation-boot2.json"),
        ("shim", "attestation.json"),
        ("tiny-sb-cmdline", "attestation.json"),
    ] {
        let c = case(name, file);
        assert!(c
            .checks_at_recording
            .iter()
            .any(|x| x == "ak_activated_under_ek"));
        let a = appraise(&c.evidence, &reference(&c, &ca));
        assert!(
            a.healthy,
            "{name}/{file}: {}",
            serde_json::to_string_pretty(&a.checks).unwrap()
        );
        for check in [
            "quote.signature",
            "quote.nonce",
            "quote.pcr_digest",
            "ak.attributes",
            "ak.name",
            "ak.activated",
            "ek.vm_identity",
            "ek.certificate",
            "log.parse",
            "log.replay",
            "log.event_data",
            "secureboot.enabled",
            "secureboot.not_setup_mode",
            "secureboot.default_keys",
            "secureboot.db",
            "secureboot.dbx",
            "secureboot.sealed",
            "boot.authorities",
            "boot.dbx",
            "boot.debug",
            "boot.testsigning",
            "quote.pcr_coverage",
        ] {
            assert_eq!(
                a.check(check).map(|x| x.outcome),
                Some(Outcome::Pass),
                "{name}: {check}"
            );
        }
        // The guest's own report of its modules is never a pass.
        assert_eq!(
            a.check("kernel.modules").map(|x| x.outcome),
            Some(Outcome::Skipped),
            "{name}"
        );
        assert_eq!(a.check("baseline").unwrap().outcome, Outcome::Skipped);
        let cl = &a.claims;
        assert!(cl.secureboot && cl.db_validated && cl.dbx_validated);
        assert!(cl.default_secure_boot_keys_validated);
        assert!(!cl.kernel_debug_enabled && !cl.test_signing_enabled && !cl.boot_debug_enabled);
        assert_eq!(cl.attested_pcrs, (0..16).collect::<Vec<u32>>());
        let j = serde_json::to_value(cl).unwrap();
        assert_eq!(j["x-ms-attestation-type"], "azurevm");
        assert_eq!(j["secureboot"], true);
    }
    // Debian's shim chain: the distribution comes from grub's measured paths.
    let c = case("shim", "attestation.json");
    assert_eq!(
        appraise(&c.evidence, &reference(&c, &ca)).claims.os_distro,
        "debian"
    );
}

#[test]
fn secure_boot_off_is_reported_not_failed_when_the_vm_says_so() {
    let ca = platform_ca();
    let c = case("tiny-sb-off", "attestation.json");
    assert!(!c.secure_boot);
    let a = appraise(&c.evidence, &reference(&c, &ca));
    assert!(
        a.healthy,
        "{}",
        serde_json::to_string_pretty(&a.checks).unwrap()
    );
    assert_eq!(
        a.check("secureboot.enabled").unwrap().outcome,
        Outcome::Skipped
    );
    assert_eq!(a.check("kernel.modules").unwrap().outcome, Outcome::Skipped);
    assert!(!a.claims.secureboot);
}

/// Byte ranges of the events of a log.
fn event_ranges(log: &[u8]) -> Vec<(usize, usize, u32)> {
    let parsed = EventLog::parse(log).unwrap();
    let ev = parsed.events();
    ev.iter()
        .enumerate()
        .map(|(i, e)| {
            let end = ev
                .get(i + 1)
                .map_or(e.data_offset + e.data.len(), |n| n.offset);
            (e.offset, end, e.pcr)
        })
        .collect()
}

/// Offset of an event's SHA-256 digest in a crypto-agile log.
fn sha256_offset(log: &[u8], index: usize) -> usize {
    let parsed = EventLog::parse(log).unwrap();
    let e = &parsed.events()[index];
    let mut at = e.offset + 12;
    for d in &e.digests {
        at += 2;
        if d.alg() == HashAlg::Sha256 {
            return at;
        }
        at += d.as_bytes().len();
    }
    panic!("no sha256 digest in event {index}");
}

fn with_log(c: &Case, log: Vec<u8>) -> Evidence {
    let mut e = c.evidence.clone();
    e.event_log = Bytes(log);
    e
}

fn first_event(log: &[u8], pred: impl Fn(&trustlaunch_eventlog::Event) -> bool) -> usize {
    EventLog::parse(log)
        .unwrap()
        .events()
        .iter()
        .position(pred)
        .unwrap()
}

#[test]
fn tamper_suite_each_attack_fails_exactly_its_checks() {
    let ca = platform_ca();
    let tiny = case("tiny-sb", "attestation-boot1.json");
    let tiny2 = case("tiny-sb", "attestation-boot2.json");
    let shim = case("shim", "attestation.json");
    let off = case("tiny-sb-off", "attestation.json");
    let log = tiny.evidence.event_log.0.clone();
    let mut attacks = 0;

    // 1. Wrong nonce: the challenge was another one.
    let other = vec![0x42u8; 32];
    let mut r = reference(&tiny, &ca);
    r.nonce = &other;
    let a = appraise(&tiny.evidence, &r);
    assert_fails(&a, &["quote.nonce"], "wrong nonce");
    assert!(
        matches!(&a.check("quote.nonce").unwrap().evidence[0], Cite::Digest { value, .. } if *value == trustlaunch_eventlog::hex::encode(&tiny.evidence.nonce.0))
    );
    attacks += 1;

    // 2. Replayed evidence: boot 1's answer to boot 2's challenge.
    let mut r = reference(&tiny, &ca);
    r.nonce = &tiny2.evidence.nonce.0;
    assert_fails(&appraise(&tiny.evidence, &r), &["quote.nonce"], "replay");
    attacks += 1;

    // 3. Quote checked with a foreign AK (the shim VM's), its name made
    // consistent: the signature does not verify.
    let mut e = tiny.evidence.clone();
    e.ak_public = shim.evidence.ak_public.clone();
    e.ak_name = Bytes(Public::from_bytes(&e.ak_public.0).unwrap().name().unwrap());
    assert_fails(
        &appraise(&e, &reference(&tiny, &ca)),
        &["quote.signature"],
        "foreign AK",
    );
    attacks += 1;

    // 4. AK not in the VM's vTPM: credential activation failed.
    let mut r = reference(&tiny, &ca);
    r.ak_activated = false;
    assert_fails(
        &appraise(&tiny.evidence, &r),
        &["ak.activated"],
        "AK not activated",
    );
    attacks += 1;

    // 5. EK from another VM: the platform made a different EK for this one.
    let mut r = reference(&tiny, &ca);
    r.ek_public = &shim.ek_public;
    assert_fails(
        &appraise(&tiny.evidence, &r),
        &["ek.vm_identity"],
        "EK of another VM",
    );
    attacks += 1;

    // 6. EK certificate from an unknown CA.
    let stranger = VtpmCa::create(
        CaSigningKey::generate(CaKeyAlgorithm::P256, &mut rand_core::OsRng),
        &CaConfig {
            common_name: "not the platform".into(),
            organization: None,
            not_before: UnixTime::from_secs(0),
            not_after: None,
            path_len_constraint: Some(0),
        },
        &mut rand_core::OsRng,
    )
    .unwrap();
    let roots = vec![stranger.certificate().clone()];
    let mut r = reference(&tiny, &ca);
    r.vtpm_ca = &roots;
    assert_fails(
        &appraise(&tiny.evidence, &r),
        &["ek.certificate"],
        "unknown CA",
    );
    attacks += 1;

    // 7. Event log edited: a digest changed (PCR 4's first application).
    let app = first_event(&log, |e| {
        e.pcr == 4 && e.event_type == EventType::EV_EFI_BOOT_SERVICES_APPLICATION
    });
    let mut edited = log.clone();
    edited[sha256_offset(&log, app)] ^= 1;
    let a = appraise(&with_log(&tiny, edited), &reference(&tiny, &ca));
    assert_fails(&a, &["log.replay"], "edited digest");
    assert!(a
        .check("log.replay")
        .unwrap()
        .evidence
        .iter()
        .any(|c| matches!(c, Cite::Pcr { index: 4, .. })));
    attacks += 1;

    // 8. Event log edited: data no longer what its digest measured (a
    // Boot#### variable's description).
    // BootOrder comes first; its digest covers only its data, so take a
    // Boot#### option (name at data offset 32, UTF-16) and change the last
    // byte of its data.
    let boot_var = first_event(&log, |e| {
        e.pcr == 1
            && e.event_type == EventType::EV_EFI_VARIABLE_BOOT
            && e.data.get(32..42) == Some(b"B\x00o\x00o\x00t\x000\x00".as_slice())
    });
    let (_, end, _) = event_ranges(&log)[boot_var];
    let mut edited = log.clone();
    edited[end - 1] ^= 0x20;
    let a = appraise(&with_log(&tiny, edited), &reference(&tiny, &ca));
    assert_fails(&a, &["log.event_data"], "edited data");
    attacks += 1;

    // 9. Truncated: the last event dropped.
    let ranges = event_ranges(&log);
    let (last_start, _, last_pcr) = *ranges.last().unwrap();
    let a = appraise(
        &with_log(&tiny, log[..last_start].to_vec()),
        &reference(&tiny, &ca),
    );
    assert_fails(&a, &["log.replay"], "truncated");
    assert!(a
        .check("log.replay")
        .unwrap()
        .evidence
        .iter()
        .any(|c| matches!(c, Cite::Pcr { index, .. } if *index == last_pcr)));
    attacks += 1;

    // 10. Reordered: two PCR 7 events swapped.
    let pcr7: Vec<usize> = ranges
        .iter()
        .enumerate()
        .filter(|(_, r)| r.2 == 7)
        .map(|(i, _)| i)
        .collect();
    let (a0, a1, _) = ranges[pcr7[0]];
    let (b0, b1, _) = ranges[pcr7[1]];
    assert_eq!(a1, b0, "adjacent");
    let mut reordered = log[..a0].to_vec();
    reordered.extend_from_slice(&log[b0..b1]);
    reordered.extend_from_slice(&log[a0..a1]);
    reordered.extend_from_slice(&log[b1..]);
    let a = appraise(&with_log(&tiny, reordered), &reference(&tiny, &ca));
    assert_fails(&a, &["log.replay"], "reordered");
    attacks += 1;

    // 11. PCR values that are not the quoted ones.
    let mut e = tiny.evidence.clone();
    e.pcrs[0].values[7].1 .0[0] ^= 1;
    assert_fails(
        &appraise(&e, &reference(&tiny, &ca)),
        &["quote.pcr_digest"],
        "PCR mismatch",
    );
    attacks += 1;

    // 12. Secure Boot off (and so in setup mode, no keys) on a VM whose
    // profile says on: a real boot of the same image with an empty store.
    let mut r = reference(&off, &ca);
    r.secure_boot_expected = true;
    r.template = Some(&tiny.template);
    let a = appraise(&off.evidence, &r);
    assert_fails(
        &a,
        &[
            "secureboot.enabled",
            "secureboot.not_setup_mode",
            "secureboot.default_keys",
            "secureboot.db",
            "secureboot.dbx",
            "boot.authorities",
        ],
        "Secure Boot off / setup mode",
    );
    attacks += 1;

    // 13. A foreign db certificate: the VM booted with Microsoft's db where
    // its template says the platform's (keys swapped under it).
    let mut t = tiny.template.clone();
    t.db = shim.template.db.clone();
    let mut r = reference(&tiny, &ca);
    r.template = Some(&t);
    let a = appraise(&tiny.evidence, &r);
    assert_fails(&a, &["secureboot.db"], "foreign db");
    assert!(!a.claims.db_validated);
    attacks += 1;

    // 14. The boot application's hash is revoked in the template's dbx.
    let parsed = EventLog::parse(&log).unwrap();
    let uki = parsed.events()[app]
        .digest(HashAlg::Sha256)
        .unwrap()
        .as_bytes()
        .to_vec();
    let mut dbx = trustlaunch_secureboot::siglist::SignatureDb::default();
    let mut list = trustlaunch_secureboot::siglist::SignatureList::hashes(
        trustlaunch_secureboot::siglist::SignatureType::Sha256,
    )
    .unwrap();
    list.entries
        .push(trustlaunch_secureboot::siglist::SignatureData {
            owner: trustlaunch_eventlog::Guid::from_fields(1, 2, 3, [4; 8]),
            data: uki,
        });
    dbx.lists.push(list);
    let mut t = tiny.template.clone();
    t.dbx = Some(dbx.encode().unwrap());
    let mut r = reference(&tiny, &ca);
    r.template = Some(&t);
    let a = appraise(&tiny.evidence, &r);
    assert_fails(&a, &["secureboot.dbx", "boot.dbx"], "hash in dbx");
    assert!(a
        .check("boot.dbx")
        .unwrap()
        .evidence
        .contains(&Cite::Event {
            number: app,
            pcr: 4
        }));
    attacks += 1;

    // 15. The kernel command line changed against the baseline (a rebuilt
    // UKI with `debug` added): which components changed, from what to what.
    let cmdline = case("tiny-sb-cmdline", "attestation.json");
    let base = Baseline {
        source: BaselineSource::Learned {
            boot: "boot1".into(),
        },
        measurements: appraise(&tiny.evidence, &reference(&tiny, &ca))
            .measurements
            .unwrap(),
    };
    let mut r = reference(&cmdline, &ca);
    r.baseline = Some(&base);
    let a = appraise(&cmdline.evidence, &r);
    assert_fails(&a, &["baseline"], "command line vs baseline");
    let detail = &a.check("baseline").unwrap().detail;
    assert!(
        detail.contains("UKI section") && detail.contains(".cmdline changed from"),
        "{detail}"
    );
    assert!(
        !detail.contains(".linux"),
        "the kernel itself did not change: {detail}"
    );
    attacks += 1;

    // 16. grub's kernel command line edited in the shim boot's log, its
    // digest kept (so the log still replays): "debug" hidden or added in
    // the text would fool boot.debug; the text no longer hashes to what
    // PCR 8 measured.
    let mut e = shim.evidence.clone();
    let parsed = trustlaunch_eventlog::EventLog::parse(&e.event_log.0).unwrap();
    let cmdline = parsed
        .events()
        .iter()
        .find(|ev| ev.data.starts_with(b"kernel_cmdline: "))
        .unwrap();
    let at = cmdline.data_offset + cmdline.data.len() - 2;
    e.event_log.0[at] = b'X';
    let a = appraise(&e, &reference(&shim, &ca));
    assert_fails(&a, &["log.event_data"], "grub command line edited");
    assert!(a
        .check("log.event_data")
        .unwrap()
        .evidence
        .contains(&Cite::Event {
            number: cmdline.index,
            pcr: 8
        }));
    attacks += 1;

    // 17. A 1024-bit AK (its public area rewritten, its name made
    // consistent): too weak to attest, whatever it signed.
    let mut e = tiny.evidence.clone();
    let mut ak = Public::from_bytes(&e.ak_public.0).unwrap();
    if let trustlaunch_tpm::public::PublicKey::Rsa {
        modulus, key_bits, ..
    } = &mut ak.key
    {
        modulus.truncate(128);
        *key_bits = 1024;
    }
    e.ak_public = Bytes(ak.to_bytes());
    e.ak_name = Bytes(ak.name().unwrap());
    let a = appraise(&e, &reference(&tiny, &ca));
    assert!(a
        .check("ak.attributes")
        .unwrap()
        .detail
        .contains("RSA key of 1024 bits"));
    assert_fails(&a, &["ak.attributes", "quote.signature"], "1024-bit AK");
    attacks += 1;

    // The same baseline passes its own boot and the next one.
    for c in [&tiny, &tiny2] {
        let mut r = reference(c, &ca);
        r.baseline = Some(&base);
        let a = appraise(&c.evidence, &r);
        assert!(
            a.healthy,
            "{}",
            serde_json::to_string_pretty(&a.checks).unwrap()
        );
        assert_eq!(a.check("baseline").unwrap().outcome, Outcome::Pass);
    }
    assert!(attacks >= 17);
}

#[test]
fn garbage_evidence_fails_cleanly() {
    let ca = platform_ca();
    let tiny = case("tiny-sb", "attestation-boot1.json");
    let mut e = tiny.evidence.clone();
    e.event_log = Bytes(vec![0xff; 100]);
    e.ak_public = Bytes(vec![1, 2, 3]);
    e.ek_certificate = Some(Bytes(vec![0x30, 0x03, 1, 2, 3]));
    e.pcrs.clear();
    let a = appraise(&e, &reference(&tiny, &ca));
    assert!(!a.healthy);
    for n in [
        "quote.signature",
        "ak.attributes",
        "ek.certificate",
        "log.parse",
    ] {
        assert_eq!(a.check(n).unwrap().outcome, Outcome::Fail, "{n}");
    }
    assert_eq!(
        a.check("secureboot.enabled").unwrap().outcome,
        Outcome::Skipped
    );
}

/// The baseline predicted from the image and the VM's variable store,
/// before any boot, equals what the real boots measured; and it names the
/// changed section of a rebuilt image.
#[test]
fn baseline_predicted_before_the_first_boot_matches_real_boots() {
    use trustlaunch_attestation::baseline::{predict, ImageFacts};
    use trustlaunch_secureboot::pcr7::predict_pcr7;
    use trustlaunch_secureboot::varstore::{SecureBootVar, VarStore};

    let ca = platform_ca();
    let dir = common::data().join("tiny-sb");
    let meta = common::json(dir.join("image.json"));
    let store = VarStore::parse(&std::fs::read(dir.join("vars-created.fd")).unwrap()).unwrap();
    // The authority: the db entry that signs the UKI (image.json names the
    // platform db certificate).
    let db = store.secure_boot_db(SecureBootVar::Db).unwrap().unwrap();
    let (_, entry) = db.entries().next().unwrap();
    let signer_sha = meta["db_certificate"]["sha256"].as_str().unwrap();
    assert_eq!(common::sha256_hex(&entry.data), signer_sha);
    let pcr7 = predict_pcr7(&store, std::slice::from_ref(entry));
    let comp = &meta["boot_components"][0];
    let apps = vec![(
        comp["esp_path"].as_str().unwrap().to_owned(),
        comp["authenticode_sha256"].as_str().unwrap().to_owned(),
    )];
    let sections: Vec<(String, String)> = comp["uki_sections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["sha256"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let predicted = predict(&ImageFacts {
        image: "tiny",
        boot_applications: &apps,
        uki_sections: &sections,
        pcr7: Some(&pcr7),
    });
    for file in ["attestation-boot1.json", "attestation-boot2.json"] {
        let c = case("tiny-sb", file);
        let mut r = reference(&c, &ca);
        r.baseline = Some(&predicted);
        let a = appraise(&c.evidence, &r);
        assert!(
            a.healthy,
            "{file}: {}",
            serde_json::to_string_pretty(&a.checks).unwrap()
        );
        assert_eq!(a.check("baseline").unwrap().outcome, Outcome::Pass);
    }
    let c = case("tiny-sb-cmdline", "attestation.json");
    let mut r = reference(&c, &ca);
    r.baseline = Some(&predicted);
    let a = appraise(&c.evidence, &r);
    assert_fails(&a, &["baseline"], "rebuilt image vs predicted baseline");
    let detail = &a.check("baseline").unwrap().detail;
    assert!(
        detail.contains("boot application 1: \\EFI\\BOOT\\BOOTX64.EFI changed from"),
        "{detail}"
    );
    assert!(
        detail.contains("UKI section 3: .cmdline changed from"),
        "{detail}"
    );
}

/// GCP-style early/late boot reports: a changed command line fails the late
/// phase only (and the early one through the UKI's own digest).
#[test]
fn boot_reports_split_early_and_late() {
    use trustlaunch_attestation::baseline::BootReport;
    let ca = platform_ca();
    let tiny = case("tiny-sb", "attestation-boot1.json");
    let m1 = appraise(&tiny.evidence, &reference(&tiny, &ca))
        .measurements
        .unwrap();
    let base = Baseline {
        source: BaselineSource::Learned { boot: "1".into() },
        measurements: m1.clone(),
    };
    let tiny2 = case("tiny-sb", "attestation-boot2.json");
    let m2 = appraise(&tiny2.evidence, &reference(&tiny2, &ca))
        .measurements
        .unwrap();
    let r = BootReport::new(2, &m2, Some(&base));
    assert!(r.early_boot_report_event.policy_evaluation_passed);
    assert!(r.late_boot_report_event.policy_evaluation_passed);
    assert_eq!(
        r.late_boot_report_event.actual_measurements,
        r.late_boot_report_event.policy_measurements
    );
    let cmd = case("tiny-sb-cmdline", "attestation.json");
    let m3 = appraise(&cmd.evidence, &reference(&cmd, &ca))
        .measurements
        .unwrap();
    let r = BootReport::new(3, &m3, Some(&base));
    let late = &r.late_boot_report_event;
    assert!(!late.policy_evaluation_passed);
    // The UKI's .cmdline section, and the kernel's own measurement of its
    // load options (the command line) in PCR 9.
    assert_eq!(late.deviations.len(), 2, "{:?}", late.deviations);
    assert!(late.deviations[0].component.contains(".cmdline"));
    assert_eq!(
        late.deviations[1].component,
        "loaded file 1: LOADED_IMAGE::LoadOptions"
    );
    // The UKI as a whole is a boot application: early boot sees it too.
    assert!(!r.early_boot_report_event.policy_evaluation_passed);
    let j = serde_json::to_value(&r).unwrap();
    assert_eq!(j["bootCounter"], 3);
    assert_eq!(j["lateBootReportEvent"]["policyEvaluationPassed"], false);
    // No baseline: nothing passes.
    let r = BootReport::new(1, &m1, None);
    assert!(!r.early_boot_report_event.policy_evaluation_passed);
}

/// With an enrollment, the same EK certificate and AK are not verified
/// again; anything else still is.
#[test]
fn enrollment_reuses_what_was_verified_once() {
    use trustlaunch_attestation::enrollment::Enrollment;
    let ca = platform_ca();
    let tiny = case("tiny-sb", "attestation-boot1.json");
    let first = appraise(&tiny.evidence, &reference(&tiny, &ca));
    assert!(first.healthy);
    let en = Enrollment::new(
        &tiny.evidence.ek_certificate.as_ref().unwrap().0,
        &tiny.evidence.ak_public.0,
    )
    .unwrap();
    let tiny2 = case("tiny-sb", "attestation-boot2.json");
    let mut r = reference(&tiny2, &ca);
    r.enrollment = Some(&en);
    let a = appraise(&tiny2.evidence, &r);
    assert!(
        a.healthy,
        "{}",
        serde_json::to_string_pretty(&a.checks).unwrap()
    );
    assert_eq!(
        a.check("ek.certificate").unwrap().detail,
        "the certificate verified at enrollment"
    );
    // Another VM's evidence with this enrollment: nothing is taken from it.
    let shim = case("shim", "attestation.json");
    let mut r = reference(&shim, &ca);
    r.enrollment = Some(&en);
    r.ek_public = &tiny.ek_public;
    let a = appraise(&shim.evidence, &r);
    assert_fails(&a, &["ek.vm_identity"], "other VM under an enrollment");
    assert_ne!(
        a.check("ek.certificate").unwrap().detail,
        "the certificate verified at enrollment"
    );
    // A foreign AK under the enrollment is verified in full (and fails).
    let mut e = tiny2.evidence.clone();
    e.ak_public = shim.evidence.ak_public.clone();
    e.ak_name = Bytes(Public::from_bytes(&e.ak_public.0).unwrap().name().unwrap());
    let mut r = reference(&tiny2, &ca);
    r.enrollment = Some(&en);
    assert_fails(
        &appraise(&e, &r),
        &["quote.signature"],
        "foreign AK under enrollment",
    );
}

/// A module the guest kernel refused or flagged for its signature fails
/// exactly `kernel.modules`, citing each module; without Secure Boot the
/// check is skipped.
#[test]
fn untrusted_kernel_modules_fail_kernel_modules() {
    let ca = platform_ca();
    for (name, file) in [
        ("tiny-sb", "attestation-boot1.json"),
        ("shim", "attestation.json"),
    ] {
        let c = case(name, file);
        assert!(c.evidence.untrusted_modules.is_empty(), "{name}: recorded");
        let mut e = c.evidence.clone();
        e.untrusted_modules = vec![
            "hello".into(),
            "unknown module (unsigned module loading is restricted)".into(),
        ];
        let a = appraise(&e, &reference(&c, &ca));
        assert_fails(&a, &["kernel.modules"], name);
        let check = a.check("kernel.modules").unwrap();
        assert_eq!(
            check.evidence,
            [
                Cite::Module {
                    name: "hello".into()
                },
                Cite::Module {
                    name: "unknown module (unsigned module loading is restricted)".into()
                },
            ]
        );
        assert!(check.detail.contains("hello"), "{}", check.detail);
        let j = serde_json::to_value(&check.evidence).unwrap();
        assert_eq!(j[0]["kind"], "module");
        assert_eq!(j[0]["name"], "hello");
    }

    // Secure Boot off: module signatures are not enforced, nothing fails.
    let c = case("tiny-sb-off", "attestation.json");
    let mut e = c.evidence.clone();
    e.untrusted_modules = vec!["hello".into()];
    let a = appraise(&e, &reference(&c, &ca));
    assert!(a.healthy);
    assert_eq!(a.check("kernel.modules").unwrap().outcome, Outcome::Skipped);

    // A flood of names: a bounded number is cited.
    let c = case("tiny-sb", "attestation-boot2.json");
    let mut e = c.evidence.clone();
    e.untrusted_modules = (0..1000).map(|i| format!("m{i}")).collect();
    let a = appraise(&e, &reference(&c, &ca));
    assert_fails(&a, &["kernel.modules"], "many modules");
    let check = a.check("kernel.modules").unwrap();
    assert!(check.evidence.len() < 1000);
    assert!(
        check.detail.contains("1000 kernel module(s)"),
        "{}",
        check.detail
    );
}

/// shim logs its SBAT level as an EV_EFI_VARIABLE_AUTHORITY event that
/// authorises nothing: it is SBAT text, not a db entry (real shim log).
#[test]
fn shims_sbat_level_is_not_an_authority() {
    let shim = case("shim", "attestation.json");
    let log = EventLog::parse(&shim.evidence.event_log.0).unwrap();
    let ev = trustlaunch_eventlog::BootEvidence::extract(&log);
    assert!(ev.authorities.iter().all(|a| a.database != "SbatLevel"));
    assert_eq!(ev.sbat_levels.len(), 1);
    assert!(
        ev.sbat_levels[0].text.starts_with("sbat,1,"),
        "{:?}",
        ev.sbat_levels[0].text
    );
    let names: Vec<&str> = ev.authorities.iter().map(|a| a.database.as_str()).collect();
    assert_eq!(names, ["db", "MokListRT"]);
}
