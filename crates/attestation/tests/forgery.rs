//! A guest with root in its VM controls the agent, the event log and every
//! value it sends; only the vTPM's signature is beyond it. These tests are
//! such a guest: a real swtpm (the agent's `replayed-guest`) holding the
//! PCRs of one real boot, quoting whatever selection suits it, and sending
//! the log and PCR values of another. Each forgery would have been judged
//! healthy by an appraisal that believed the values sent rather than the
//! quote's selection; each is now refused by `quote.pcr_coverage` or
//! ignored where it names nothing the verdict reads.

mod common;

use common::{case, now, Case};
use rand_core::OsRng;
use trustlaunch_agent::replayed::ReplayedGuest;
use trustlaunch_attestation::{appraise, Appraisal, Outcome, Reference};
use trustlaunch_eventlog::{replay_banks, EventLog, HashAlg as LogHash};
use trustlaunch_protocol::{Bytes, Evidence, PcrBank};
use trustlaunch_tpm::ca::VtpmCa;
use trustlaunch_tpm::ekcert::CaCertificate;
use trustlaunch_tpm_client::{HashAlg, PcrSelection};

fn ca() -> VtpmCa {
    common::fresh_ca("forgery test vTPM CA")
}

fn guest(log: &[u8], ca: &VtpmCa) -> ReplayedGuest {
    ReplayedGuest::start(log, Some(1), ca, now().as_secs(), &mut OsRng)
        .unwrap_or_else(|e| panic!("replayed guest: {e} (swtpm is installed by scripts/test.sh)"))
}

const NONCE: [u8; 32] = [0x5a; 32];

fn judge(e: &Evidence, c: &Case, g: &ReplayedGuest, roots: &[CaCertificate]) -> Appraisal {
    appraise(
        e,
        &Reference {
            vm_id: "forgery",
            ek_public: g.ek_public(),
            vtpm_ca: roots,
            nonce: &NONCE,
            // What the verifier's own credential activation established.
            ak_activated: true,
            secure_boot_expected: c.secure_boot,
            template: Some(&c.template),
            baseline: None,
            baseline_required: false,
            now: now(),
            enrollment: None,
        },
    )
}

fn outcome(a: &Appraisal, check: &str) -> Option<Outcome> {
    a.check(check).map(|c| c.outcome)
}

/// The SHA-256 values a log replays to, as the guest would send them.
fn replayed_values(log: &[u8]) -> PcrBank {
    let log = EventLog::parse(log).unwrap();
    let r = replay_banks(&log, &[LogHash::Sha256]);
    let bank = r.pcrs.get(&LogHash::Sha256).unwrap();
    PcrBank {
        alg: 0x000b,
        values: (0u8..16)
            .map(|i| {
                let v = bank
                    .get(&u32::from(i))
                    .map_or_else(|| vec![0; 32], |d| d.as_bytes().to_vec());
                (i, Bytes(v))
            })
            .collect(),
    }
}

fn only_pcrs(log: &[u8], keep: impl Fn(u32) -> bool) -> Vec<u8> {
    EventLog::parse(log).unwrap().restricted_to(keep).to_bytes()
}

#[test]
fn an_honest_replayed_guest_is_healthy_and_claims_its_quote() {
    let c = case("tiny-sb", "attestation-boot1.json");
    let ca = ca();
    let roots = vec![ca.certificate().clone()];
    let mut g = guest(&c.evidence.event_log.0, &ca);
    let e = g.evidence(&NONCE).unwrap();
    let a = judge(&e, &c, &g, &roots);
    assert!(a.healthy, "{:?}", a.verdict());
    assert_eq!(outcome(&a, "quote.pcr_coverage"), Some(Outcome::Pass));
    assert_eq!(a.claims.attested_pcrs, (0..16).collect::<Vec<u32>>());
    assert_eq!(a.claims.nonce, "5a".repeat(32));
    assert!(a.claims.secureboot);
    assert!(a.quote.is_some());
}

/// The attack as found: a genuine quote of sha256 PCR 0 only, beside the
/// PCR values and log of a Secure Boot boot that never happened in this
/// TPM (its PCRs 1-15 hold nothing).
#[test]
fn a_quote_of_pcr_0_alone_does_not_vouch_for_a_made_up_boot() {
    let c = case("tiny-sb", "attestation-boot1.json");
    let ca = ca();
    let roots = vec![ca.certificate().clone()];
    let real = only_pcrs(&c.evidence.event_log.0, |p| p == 0);
    let mut g = guest(&real, &ca);
    let fake_log = c.evidence.event_log.clone();
    let fake_values = replayed_values(&fake_log.0);
    let e = g
        .quote_with(&NONCE, &PcrSelection::new(HashAlg::Sha256, [0]), |e| {
            e.event_log = fake_log;
            e.pcrs = vec![fake_values];
        })
        .unwrap();
    let a = judge(&e, &c, &g, &roots);
    assert!(!a.healthy);
    let cov = a.check("quote.pcr_coverage").unwrap();
    assert_eq!(cov.outcome, Outcome::Fail);
    assert!(
        cov.detail
            .contains("does not cover SHA-256 PCR 1, 2, 3, 4, 5, 6, 7, 9, 11"),
        "{}",
        cov.detail
    );
    assert!(cov
        .detail
        .contains("outside the quote's selection and ignored"));
    // Nothing read from the log: no Secure Boot claim, no measurements to
    // learn a baseline from.
    assert_eq!(outcome(&a, "secureboot.enabled"), Some(Outcome::Skipped));
    assert_eq!(outcome(&a, "log.replay"), Some(Outcome::Skipped));
    assert!(!a.claims.secureboot);
    assert!(a.measurements.is_none());
    assert_eq!(a.claims.attested_pcrs, vec![0]);
}

/// The TPM holds a boot whose PCR 7 is another's (Secure Boot off); the
/// quote leaves PCR 7 out and the guest sends the Secure Boot boot's PCR 7
/// and log.
#[test]
fn one_required_pcr_missing_from_the_selection_is_named() {
    let on = case("tiny-sb", "attestation-boot1.json");
    let off = case("tiny-sb-off", "attestation.json");
    let ca = ca();
    let roots = vec![ca.certificate().clone()];
    let mut g = guest(&off.evidence.event_log.0, &ca);
    let fake_values = replayed_values(&on.evidence.event_log.0);
    let all_but_7: Vec<u8> = (0u8..16).filter(|p| *p != 7).collect();
    let e = g
        .quote_with(
            &NONCE,
            &PcrSelection::new(HashAlg::Sha256, all_but_7),
            |e| {
                // The real values, but PCR 7's from the Secure Boot boot.
                if let Some(bank) = e.pcrs.iter_mut().find(|b| b.alg == 0x000b) {
                    bank.values.push((7, fake_values.values[7].1.clone()));
                    bank.values.sort_by_key(|v| v.0);
                }
            },
        )
        .unwrap();
    let a = judge(&e, &on, &g, &roots);
    assert!(!a.healthy);
    let cov = a.check("quote.pcr_coverage").unwrap();
    assert_eq!(cov.outcome, Outcome::Fail, "{}", cov.detail);
    assert!(
        cov.detail.contains("does not cover SHA-256 PCR 7 "),
        "{}",
        cov.detail
    );
    assert!(
        cov.detail.contains("sha256 PCR 7 are outside"),
        "{}",
        cov.detail
    );
}

/// A SHA-1 quote of PCRs 0-15 and, beside it, SHA-256 values nobody
/// signed.
#[test]
fn a_sha1_only_selection_is_refused() {
    let c = case("tiny-sb", "attestation-boot1.json");
    let ca = ca();
    let roots = vec![ca.certificate().clone()];
    let mut g = guest(&c.evidence.event_log.0, &ca);
    let sha256_values = replayed_values(&c.evidence.event_log.0);
    let e = g
        .quote_with(&NONCE, &PcrSelection::new(HashAlg::Sha1, 0..16), |e| {
            e.pcrs.push(sha256_values);
        })
        .unwrap();
    let a = judge(&e, &c, &g, &roots);
    // The signature, nonce and digest are genuine...
    assert_eq!(outcome(&a, "quote.pcr_digest"), Some(Outcome::Pass));
    // ...but nothing a verdict reads is in it.
    let cov = a.check("quote.pcr_coverage").unwrap();
    assert_eq!(cov.outcome, Outcome::Fail);
    assert!(
        cov.detail
            .contains("selects no SHA-256 PCRs (banks quoted: sha1)"),
        "{}",
        cov.detail
    );
    assert!(!a.healthy);
    assert!(a.claims.attested_pcrs.is_empty());
}

/// Values for PCRs the quote does not select, contradicting the log: they
/// are ignored and said to be, and the verdict stands on the quote.
#[test]
fn claimed_values_outside_the_selection_are_ignored_and_reported() {
    let c = case("tiny-sb", "attestation-boot1.json");
    let ca = ca();
    let roots = vec![ca.certificate().clone()];
    let mut g = guest(&c.evidence.event_log.0, &ca);
    let e = g
        .quote_with(&NONCE, &PcrSelection::new(HashAlg::Sha256, 0..16), |e| {
            e.pcrs[0].values.push((23, Bytes(vec![0xee; 32])));
            e.pcrs.push(PcrBank {
                alg: 0x0004,
                values: vec![(7, Bytes(vec![0x11; 20]))],
            });
        })
        .unwrap();
    let a = judge(&e, &c, &g, &roots);
    assert!(a.healthy, "{:?}", a.verdict());
    let cov = a.check("quote.pcr_coverage").unwrap();
    assert_eq!(cov.outcome, Outcome::Pass);
    assert!(
        cov.detail
            .contains("values sent for sha1 PCR 7, sha256 PCR 23 are outside the quote's selection and ignored"),
        "{}",
        cov.detail
    );
    assert_eq!(a.claims.attested_pcrs, (0..16).collect::<Vec<u32>>());
}

/// Events for a PCR the quote does not cover (here a `kernel_cmdline:
/// … debug` in PCR 15) never reach a verdict.
#[test]
fn log_events_for_unquoted_pcrs_never_count() {
    let c = case("tiny-sb", "attestation-boot1.json");
    let ca = ca();
    let roots = vec![ca.certificate().clone()];
    let mut g = guest(&c.evidence.event_log.0, &ca);
    let log = EventLog::parse(&c.evidence.event_log.0).unwrap();
    let mut events = log.events().to_vec();
    let text = b"kernel_cmdline: console=ttyS0 debug".to_vec();
    let last = events.last().unwrap().clone();
    let digests = log
        .banks()
        .iter()
        .map(|b| b.hash(&text["kernel_cmdline: ".len()..]).unwrap())
        .collect();
    events.push(trustlaunch_eventlog::Event {
        index: last.index + 1,
        offset: 0,
        pcr: 15,
        event_type: trustlaunch_eventlog::EventType::EV_IPL,
        digests,
        data: text.into(),
        data_offset: 0,
    });
    let forged = EventLog::from_parts(log.format(), log.spec_id().cloned(), events).to_bytes();
    let e = g
        .quote_with(&NONCE, &PcrSelection::new(HashAlg::Sha256, 0..15), |e| {
            e.event_log = Bytes(forged);
        })
        .unwrap();
    let a = judge(&e, &c, &g, &roots);
    assert!(a.healthy, "{:?}", a.verdict());
    assert_eq!(outcome(&a, "boot.debug"), Some(Outcome::Pass));
    assert!(!a.claims.kernel_debug_enabled);
    let cov = a.check("quote.pcr_coverage").unwrap();
    assert!(
        cov.detail
            .contains("the log's events for PCR 15 are not covered and not read"),
        "{}",
        cov.detail
    );
}
