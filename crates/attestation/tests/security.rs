//! The security center on real appraisals (recorded evidence): no alert on
//! a clean boot, each failure raised once with Defender's name, severity
//! and cause, resolved when it goes away, suppressible by rule; and the
//! recommendations.

mod common;

use common::{case, platform_ca, posture, reference};
use trustlaunch_attestation::security::{
    alert_candidates, recommendations, AlertBook, AlertCandidate, AlertEvent, AlertKind,
    AlertState, Cause, FailureReason, RecommendationKind, RuleError, Severity, SuppressionRule,
};
use trustlaunch_attestation::{appraise, Baseline, BaselineSource};
use trustlaunch_protocol::Bytes;
use trustlaunch_tpm::public::Public;

fn reasons(c: &[trustlaunch_attestation::security::AlertCandidate]) -> Vec<FailureReason> {
    c.iter()
        .filter_map(|c| match c.cause {
            Cause::Attestation { reason } => Some(reason),
            Cause::Module { .. } => None,
        })
        .collect()
}

#[test]
fn clean_boot_no_alert_and_each_failure_named_once() {
    let ca = platform_ca();
    let tiny = case("tiny-sb", "attestation-boot1.json");
    let clean = appraise(&tiny.evidence, &reference(&tiny, &ca));
    assert!(clean.healthy);
    let clean_v = clean.verdict();
    let p = posture("vm1", Some(&clean_v));
    assert!(
        alert_candidates(&p).is_empty(),
        "no false alert on a clean boot"
    );
    assert!(recommendations(&p).is_empty());

    // A quote by a foreign AK: "the quote cannot be verified to come from
    // the VM's vTPM".
    let shim = case("shim", "attestation.json");
    let mut e = tiny.evidence.clone();
    e.ak_public = shim.evidence.ak_public.clone();
    e.ak_name = Bytes(Public::from_bytes(&e.ak_public.0).unwrap().name().unwrap());
    let bad = appraise(&e, &reference(&tiny, &ca));
    let c = alert_candidates(&posture("vm1", Some(&bad.verdict())));
    assert_eq!(reasons(&c), [FailureReason::QuoteNotFromVtpm]);
    assert!(c[0].detail.contains("quote.signature"), "{}", c[0].detail);
    assert_eq!(
        c[0].kind.display_name(),
        "Attestation failed your virtual machine"
    );
    assert_eq!(c[0].kind.severity(), Severity::Medium);
    let r = recommendations(&posture("vm1", Some(&bad.verdict())));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].kind, RecommendationKind::AttestationHealthy);
    assert_eq!(r[0].severity, Severity::Medium);

    // A changed command line against the baseline: "the boot log deviates
    // from the trusted baseline".
    let cmdline = case("tiny-sb-cmdline", "attestation.json");
    let base = Baseline {
        source: BaselineSource::Learned { boot: "1".into() },
        measurements: clean.measurements.clone().unwrap(),
    };
    let mut r = reference(&cmdline, &ca);
    r.baseline = Some(&base);
    let dev = appraise(&cmdline.evidence, &r);
    let c = alert_candidates(&posture("vm1", Some(&dev.verdict())));
    assert_eq!(reasons(&c), [FailureReason::BaselineDeviation]);
    assert!(
        c[0].detail.contains(".cmdline changed from"),
        "{}",
        c[0].detail
    );

    // A silent agent.
    let clean_v = clean.verdict();
    let mut p = posture("vm1", Some(&clean_v));
    p.agent_silent_for = Some(3600);
    assert_eq!(
        reasons(&alert_candidates(&p)),
        [FailureReason::AgentUnresponsive]
    );
    p.agent_silent_for = None;
    assert_eq!(
        reasons(&alert_candidates(&p)),
        [FailureReason::AgentUnresponsive]
    );

    // An untrusted module, under Secure Boot.
    let modules = vec!["evil.ko".to_owned()];
    let clean_v = clean.verdict();
    let mut p = posture("vm1", Some(&clean_v));
    p.untrusted_modules = &modules;
    let c = alert_candidates(&p);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].kind, AlertKind::UntrustedKernelModule);
    assert_eq!(c[0].kind.severity(), Severity::Low);
}

#[test]
fn alerts_are_deduplicated_resolved_raised_again_and_suppressed() {
    let ca = platform_ca();
    let tiny = case("tiny-sb", "attestation-boot1.json");
    let clean = appraise(&tiny.evidence, &reference(&tiny, &ca));
    let clean_v = clean.verdict();
    let mut silent = posture("vm1", Some(&clean_v));
    silent.agent_silent_for = Some(9999);
    let mut book = AlertBook::default();

    let ev = book.reconcile("vm1", &alert_candidates(&silent), &[], 100);
    assert!(matches!(&ev[..], [AlertEvent::Raised { .. }]));
    // The same condition again: no new event, one alert, counted.
    let ev = book.reconcile("vm1", &alert_candidates(&silent), &[], 160);
    assert!(ev.is_empty(), "deduplicated: {ev:?}");
    assert_eq!(book.alerts.len(), 1);
    let a = book.alerts.values().next().unwrap();
    assert_eq!((a.count, a.first_seen, a.last_seen), (2, 100, 160));
    // Another VM's evaluation does not touch vm1's alert.
    assert!(book.reconcile("vm2", &[], &[], 170).is_empty());
    // The agent answers: resolved.
    let clean_v = clean.verdict();
    let ok = posture("vm1", Some(&clean_v));
    let ev = book.reconcile("vm1", &alert_candidates(&ok), &[], 200);
    assert!(matches!(&ev[..], [AlertEvent::Resolved { .. }]));
    assert_eq!(book.in_state(AlertState::Active).count(), 0);
    // Silent again: raised again, same alert (history kept).
    let ev = book.reconcile("vm1", &alert_candidates(&silent), &[], 300);
    assert!(
        matches!(&ev[..], [AlertEvent::Raised { alert }] if alert.count == 3 && alert.first_seen == 100)
    );
    // Dismissed by an operator: stays dismissed while the condition holds.
    let key = book.alerts.keys().next().unwrap().clone();
    assert!(book.dismiss(&key));
    assert!(book
        .reconcile("vm1", &alert_candidates(&silent), &[], 400)
        .is_empty());
    assert_eq!(book.alerts[&key].state, AlertState::Dismissed);

    // Secure Boot intentionally off: Azure's attestation alert always
    // fires; a rule suppresses it for these VMs, and only for them.
    let off = case("tiny-sb-off", "attestation.json");
    let a_off = appraise(&off.evidence, &reference(&off, &ca));
    let off_v = a_off.verdict();
    let mut p = posture("lab-vm", Some(&off_v));
    p.secure_boot = false;
    let c = alert_candidates(&p);
    assert_eq!(reasons(&c), [FailureReason::SecureBootOff]);
    let rule = SuppressionRule {
        name: "lab VMs run without Secure Boot".into(),
        kind: Some(AlertKind::AttestationFailed),
        reason: Some(FailureReason::SecureBootOff),
        vm_ids: Some(vec!["lab-vm".into()]),
        author: Some("token 0123456789ab (ops)".into()),
        created_at: Some(400),
        expires_at: Some(1_000),
    };
    assert_eq!(rule.validate(400), Ok(()));
    let ev = book.reconcile("lab-vm", &c, std::slice::from_ref(&rule), 500);
    assert!(
        matches!(&ev[..], [AlertEvent::Suppressed { alert }] if alert.suppressed_by.as_deref() == Some(rule.name.as_str()))
    );
    let mut p2 = p.clone();
    p2.vm_id = "prod-vm";
    let ev = book.reconcile(
        "prod-vm",
        &alert_candidates(&p2),
        std::slice::from_ref(&rule),
        500,
    );
    assert!(
        matches!(&ev[..], [AlertEvent::Raised { .. }]),
        "the rule is for lab-vm only"
    );

    // Recommendations for the Secure Boot off VM.
    let r = recommendations(&p);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].kind, RecommendationKind::EnableSecureBoot);
    assert_eq!(
        r[0].name,
        "Secure Boot should be enabled on supported virtual machines"
    );
    assert_eq!(r[0].severity, Severity::Low);
}

#[test]
fn recommendations_follow_the_security_profile() {
    let mut p = posture("vm", None);
    p.secure_boot = false;
    p.vtpm = false;
    p.attestation_agent = false;
    let kinds: Vec<_> = recommendations(&p).into_iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [
            RecommendationKind::EnableSecureBoot,
            RecommendationKind::EnableVtpm
        ]
    );
    p.secure_boot = true;
    p.vtpm = true;
    let kinds: Vec<_> = recommendations(&p).into_iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [RecommendationKind::InstallGuestAttestation]);
    p.attestation_agent = true;
    let kinds: Vec<_> = recommendations(&p).into_iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [RecommendationKind::AttestationHealthy],
        "never attested"
    );
    p.trusted_launch_supported = false;
    assert!(
        recommendations(&p).is_empty(),
        "not for VMs that cannot have Trusted Launch"
    );
}

#[test]
fn alert_state_names_are_their_serialized_names() {
    for s in [
        AlertState::Active,
        AlertState::Resolved,
        AlertState::Dismissed,
    ] {
        assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
    }
}

#[test]
fn a_rule_must_select_something_and_stops_when_it_expires() {
    let any = SuppressionRule {
        name: "everything".into(),
        kind: None,
        reason: None,
        vm_ids: None,
        author: None,
        created_at: None,
        expires_at: None,
    };
    assert_eq!(any.validate(0), Err(RuleError::NoSelector));
    let empty = SuppressionRule {
        vm_ids: Some(Vec::new()),
        ..any.clone()
    };
    assert_eq!(empty.validate(0), Err(RuleError::EmptyVmList));
    let fleet = SuppressionRule {
        reason: Some(FailureReason::SecureBootOff),
        expires_at: Some(100),
        ..any.clone()
    };
    assert!(fleet.fleet_wide());
    assert_eq!(fleet.validate(99), Ok(()));
    assert_eq!(fleet.validate(100), Err(RuleError::AlreadyExpired));
    let c = AlertCandidate {
        kind: AlertKind::AttestationFailed,
        vm_id: "vm".into(),
        cause: Cause::Attestation {
            reason: FailureReason::SecureBootOff,
        },
        detail: String::new(),
    };
    assert!(fleet.matches(&c, 99));
    assert!(!fleet.matches(&c, 100), "expired rules silence nothing");
    // Raised again after the rule expired.
    let mut book = AlertBook::default();
    let ev = book.reconcile(
        "vm",
        std::slice::from_ref(&c),
        std::slice::from_ref(&fleet),
        150,
    );
    assert!(matches!(&ev[..], [AlertEvent::Raised { .. }]), "{ev:?}");
}
