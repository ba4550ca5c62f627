//! The checks of an appraisal (see the crate docs for the list).

use std::collections::BTreeMap;

use std::collections::BTreeSet;

use trustlaunch_eventlog::{
    check_digests_in, is_extended, replay_banks, BootEvidence, EventLog, EventType,
    HashAlg as LogHash, ImageKind,
};
use trustlaunch_protocol::Evidence;
use trustlaunch_secureboot::siglist::{SignatureDb, SignatureType};
use trustlaunch_tpm::ak::{check_ak, weak_key};
use trustlaunch_tpm::alg::{AlgId, HashAlg};
use trustlaunch_tpm::ek::cert_matches_ek;
use trustlaunch_tpm::ekcert::{EkCertificate, EkTrustStore};
use trustlaunch_tpm::pcr::{PcrSelection, PcrValues};
use trustlaunch_tpm::public::Public;
use trustlaunch_tpm::quote::{QuoteFailure, QuoteVerifier, VerifiedQuote};
use trustlaunch_tpm::signature::Signature;

use crate::baseline::Measurements;
use crate::claims::Claims;
use crate::{hex, sha256, Appraisal, Check, Cite, Outcome, Reference};

/// PCR 10 belongs to the guest kernel's IMA; the firmware log never
/// extends it.
const IMA_PCR: u32 = 10;

/// Kernel command-line words that turn on kernel debugging.
const KERNEL_DEBUG_WORDS: [&str; 5] = [
    "debug",
    "kgdbwait",
    "kgdboc",
    "earlyprintk",
    "ignore_loglevel",
];

pub(crate) struct Checks(Vec<Check>);

impl Checks {
    /// Room for every check an appraisal makes (24, and 9 more for a
    /// Windows boot), so the list is not regrown as it fills.
    fn new() -> Self {
        Self(Vec::with_capacity(33))
    }

    fn push(&mut self, name: &'static str, outcome: Outcome, detail: String, evidence: Vec<Cite>) {
        self.0.push(Check {
            name,
            outcome,
            detail,
            evidence,
        });
    }
    pub(crate) fn pass(
        &mut self,
        name: &'static str,
        detail: impl Into<String>,
        evidence: Vec<Cite>,
    ) {
        self.push(name, Outcome::Pass, detail.into(), evidence);
    }
    pub(crate) fn fail(
        &mut self,
        name: &'static str,
        detail: impl Into<String>,
        evidence: Vec<Cite>,
    ) {
        self.push(name, Outcome::Fail, detail.into(), evidence);
    }
    pub(crate) fn skip(&mut self, name: &'static str, detail: impl Into<String>) {
        self.push(name, Outcome::Skipped, detail.into(), Vec::new());
    }
}

/// The PCR values the evidence *sends*, as the verifier's map. Only the
/// ones a verified quote selects are vouched for: see [`quoted_values`].
pub fn pcr_values(evidence: &Evidence) -> PcrValues {
    let mut out: PcrValues = BTreeMap::new();
    for bank in &evidence.pcrs {
        if let Some(h) = HashAlg::from_alg(AlgId(bank.alg)) {
            let m = out.entry(h).or_default();
            for (i, v) in &bank.values {
                m.insert(u32::from(*i), v.0.clone());
            }
        }
    }
    out
}

/// The values of `sent` that `selection` (a verified quote's) covers: the
/// only PCR values an appraisal may believe.
pub fn quoted_values(sent: &PcrValues, selection: &PcrSelection) -> PcrValues {
    let mut out: PcrValues = BTreeMap::new();
    for bank in &selection.banks {
        let Some(alg) = HashAlg::from_alg(bank.hash) else {
            continue;
        };
        for pcr in &bank.pcrs {
            if let Some(v) = sent.get(&alg).and_then(|b| b.get(pcr)) {
                out.entry(alg).or_default().insert(*pcr, v.clone());
            }
        }
    }
    out
}

/// PCRs every verdict depends on (PC Client PFP §3.3.4: firmware, its
/// configuration, option ROMs, boot manager code and configuration, the
/// GPT, Secure Boot policy).
const ALWAYS_REQUIRED: core::ops::RangeInclusive<u32> = 0..=7;

/// PCRs a verdict depends on where the log has events for them: grub's
/// commands and command lines (8) and files (9), systemd-stub's UKI
/// sections (11) and command line (12), shim's MOK state (14); Windows'
/// boot configuration (12), boot modules (13) and their authorities (14).
const REQUIRED_WHEN_LOGGED: [u32; 6] = [8, 9, 11, 12, 13, 14];

fn list(pcrs: impl IntoIterator<Item = u32>) -> String {
    let v: Vec<String> = pcrs.into_iter().map(|p| p.to_string()).collect();
    v.join(", ")
}

/// `quote.pcr_coverage`: the SHA-256 bank is quoted and covers every PCR
/// a verdict depends on. Returns whether it does.
fn coverage_check(
    quote: Option<&VerifiedQuote>,
    sent: &PcrValues,
    quoted: &PcrValues,
    logged: &BTreeSet<u32>,
    c: &mut Checks,
) -> bool {
    let Some(q) = quote else {
        c.skip(
            "quote.pcr_coverage",
            "the quote is not verified: no PCR value is vouched for",
        );
        return false;
    };
    let mut ignored = Vec::new();
    for (alg, bank) in sent {
        for pcr in bank.keys() {
            if !quoted.get(alg).is_some_and(|b| b.contains_key(pcr)) {
                ignored.push(format!("{} PCR {pcr}", alg.name()));
            }
        }
    }
    let ignored = if ignored.is_empty() {
        String::new()
    } else {
        format!(
            "; values sent for {} are outside the quote's selection and ignored",
            ignored.join(", ")
        )
    };
    let banks: Vec<String> = q
        .selection
        .banks
        .iter()
        .map(|b| {
            HashAlg::from_alg(b.hash)
                .map_or_else(|| format!("0x{:04x}", b.hash.0), |h| h.name().to_owned())
        })
        .collect();
    let Some(sha256) = quoted.get(&HashAlg::Sha256).filter(|b| !b.is_empty()) else {
        c.fail(
            "quote.pcr_coverage",
            format!(
                "the quote selects no SHA-256 PCRs (banks quoted: {}): a SHA-256 quote of PCRs {} is required{ignored}",
                if banks.is_empty() { "none".to_owned() } else { banks.join(", ") },
                list(ALWAYS_REQUIRED),
            ),
            Vec::new(),
        );
        return false;
    };
    let required: Vec<u32> = ALWAYS_REQUIRED
        .chain(
            REQUIRED_WHEN_LOGGED
                .into_iter()
                .filter(|p| logged.contains(p)),
        )
        .collect();
    let missing: Vec<u32> = required
        .iter()
        .copied()
        .filter(|p| !sha256.contains_key(p))
        .collect();
    let unquoted_events: Vec<u32> = logged
        .iter()
        .copied()
        .filter(|p| !sha256.contains_key(p))
        .collect();
    let unquoted = if unquoted_events.is_empty() {
        String::new()
    } else {
        format!(
            "; the log's events for PCR {} are not covered and not read",
            list(unquoted_events)
        )
    };
    if missing.is_empty() {
        c.pass(
            "quote.pcr_coverage",
            format!(
                "SHA-256 PCRs {} quoted, covering every PCR a verdict reads ({}){ignored}{unquoted}",
                list(sha256.keys().copied()),
                list(required)
            ),
            Vec::new(),
        );
        true
    } else {
        c.fail(
            "quote.pcr_coverage",
            format!(
                "the quote does not cover SHA-256 PCR {} (quoted: {}): what the log and the values sent say of them is not vouched for{ignored}",
                list(missing),
                list(sha256.keys().copied())
            ),
            Vec::new(),
        );
        false
    }
}

/// Appraises one piece of evidence against what the platform knows.
///
/// Only what the quote's signature covers counts: the PCR values are the
/// ones its verified selection names, the log is read only for those PCRs
/// and only after it replays to them, and the claims (attested PCRs,
/// nonce, TPM clock) come from the verified quote, never from the guest's
/// own fields.
pub fn appraise(e: &Evidence, r: &Reference<'_>) -> Appraisal {
    let mut c = Checks::new();
    let sent = pcr_values(e);
    let quote = quote_checks(e, r, &sent, &mut c);
    identity_checks(e, r, &mut c);

    let pcrs = quote
        .as_ref()
        .map(|q| quoted_values(&sent, &q.selection))
        .unwrap_or_default();
    let quoted_sha256: BTreeSet<u32> = pcrs
        .get(&HashAlg::Sha256)
        .map(|m| m.keys().copied().collect())
        .unwrap_or_default();
    let mut claims = Claims {
        attestation_type: "azurevm",
        os_type: "Linux",
        vm_id: r.vm_id.to_owned(),
        nonce: quote.as_ref().map(|q| hex(&q.nonce)).unwrap_or_default(),
        attested_pcrs: quoted_sha256.iter().copied().collect(),
        ..Claims::default()
    };
    let parsed = EventLog::parse(&e.event_log.0);
    let logged: BTreeSet<u32> = parsed
        .as_ref()
        .map(|log| {
            log.events()
                .iter()
                .filter(|ev| is_extended(ev))
                .map(|ev| ev.pcr)
                .collect()
        })
        .unwrap_or_default();
    let covered = coverage_check(quote.as_ref(), &sent, &pcrs, &logged, &mut c);
    let log = match parsed {
        Ok(log) => {
            c.pass(
                "log.parse",
                format!("{} events", log.events().len()),
                Vec::new(),
            );
            Some(log)
        }
        Err(err) => {
            c.fail("log.parse", err.to_string(), Vec::new());
            None
        }
    };
    let Some(log) = log else {
        skip_log_checks(&mut c, "the event log does not parse");
        return finish(c, None, claims, quote);
    };
    if !covered {
        skip_log_checks(
            &mut c,
            "the quote does not vouch for the PCRs the log's claims rest on (see quote.*)",
        );
        return finish(c, None, claims, quote);
    }
    // Events of PCRs the quote does not cover are the guest's word: they
    // are left out of everything below (their numbers are kept).
    let restricted;
    let log = if logged.is_subset(&quoted_sha256) {
        &log
    } else {
        restricted = log.restricted_to(|p| quoted_sha256.contains(&p));
        &restricted
    };
    // Only the SHA-256 bank is quoted: the others are neither replayed
    // nor hashed (nothing rests on them).
    let replayed = replay_banks(log, &[LogHash::Sha256]);
    if !replay_check(&replayed, &pcrs, quote.is_some(), &mut c) {
        skip_log_checks(
            &mut c,
            "the event log is not verified against the quote (see quote.* and log.replay)",
        );
        return finish(c, None, claims, quote);
    }
    let ev = BootEvidence::extract(log);
    let mut measurements = Measurements::from_boot(&ev, &replayed);
    // A label for deviations, never compared: the quote does not cover it.
    measurements.kernel_release =
        Some(e.kernel_release.clone()).filter(|r| !r.is_empty() && r.len() <= 128);
    // The log replays, so its digests are what was extended; the data
    // beside a digest must be what that digest covers where the spec says
    // so (variables, separators, actions, ...), or the log lies about
    // what was measured.
    let lies = check_digests_in(log, &[LogHash::Sha256]);
    if lies.is_empty() {
        c.pass(
            "log.event_data",
            "every event's data matches its digest where the spec defines it",
            Vec::new(),
        );
    } else {
        let cites = lies
            .iter()
            .map(|m| Cite::Event {
                number: m.event,
                pcr: m.pcr,
            })
            .collect();
        c.fail(
            "log.event_data",
            format!(
                "{} events carry data that is not what their digest measured",
                lies.len()
            ),
            cites,
        );
    }
    secure_boot_checks(&ev, r, &mut c, &mut claims);
    boot_checks(log, &ev, r, &mut c, &mut claims);
    match r.baseline {
        None if r.baseline_required => c.fail(
            "baseline",
            format!(
                "{}: the VM's baseline is neither predicted from its image nor approved; this boot's components await an operator's approval (trustlaunch baseline approve {})",
                crate::NO_APPROVED_BASELINE,
                r.vm_id
            ),
            Vec::new(),
        ),
        None => c.skip("baseline", "no baseline to compare with (a relearn is pending)"),
        Some(b) => {
            let deviations = measurements.compare(&b.measurements);
            if deviations.is_empty() {
                c.pass(
                    "baseline",
                    "every component equals the baseline",
                    Vec::new(),
                );
            } else {
                let cites = deviations
                    .iter()
                    .map(|d| Cite::Digest {
                        what: d.component.clone(),
                        value: d.actual.clone().unwrap_or_default(),
                    })
                    .collect();
                let text: Vec<String> = deviations.iter().map(ToString::to_string).collect();
                c.fail("baseline", text.join("; "), cites);
            }
        }
    }
    let windows = ev
        .windows
        .as_ref()
        .and_then(|w| crate::windows::windows_checks(&ev, w, &mut c, &mut claims));
    module_check(e, r, &mut c);
    if !claims.is_windows {
        claims.os_distro = distro(&ev);
    }
    let mut a = finish(c, Some(measurements), claims, quote);
    a.windows = windows;
    a
}

/// `kernel.modules`: the modules the guest kernel refused or flagged for a
/// failed or missing signature, as the agent read them from its log. The
/// guest reports them (the quote does not cover the kernel log), so a
/// compromised guest can hide them; one that reports them is not healthy.
fn module_check(e: &Evidence, r: &Reference<'_>, c: &mut Checks) {
    if !r.secure_boot_expected {
        c.skip(
            "kernel.modules",
            "the VM has no Secure Boot: module signatures are not enforced",
        );
        return;
    }
    if e.untrusted_modules.is_empty() {
        // The guest's own report, outside the quote: its silence proves
        // nothing, so it cannot count as a pass.
        c.skip(
            "kernel.modules",
            "the agent reported no module that failed signature verification (guest-reported, not covered by the quote)",
        );
        return;
    }
    // The guest chooses these strings: cite a bounded number, each bounded.
    let names: Vec<String> = e
        .untrusted_modules
        .iter()
        .take(MAX_CITED_MODULES)
        .map(|n| n.chars().take(MAX_MODULE_TEXT).collect())
        .collect();
    let more = e.untrusted_modules.len().saturating_sub(names.len());
    let mut detail = format!(
        "the guest kernel refused or flagged {} kernel module(s) for a failed or missing signature (untrusted kernel module): {}",
        e.untrusted_modules.len(),
        names.join(", ")
    );
    if more > 0 {
        detail.push_str(&format!(" and {more} more"));
    }
    let cites = names
        .into_iter()
        .map(|name| Cite::Module { name })
        .collect();
    c.fail("kernel.modules", detail, cites);
}

/// The most modules `kernel.modules` cites.
const MAX_CITED_MODULES: usize = 64;

/// The most characters of a module's name (or reason) cited.
const MAX_MODULE_TEXT: usize = 128;

fn finish(
    c: Checks,
    measurements: Option<Measurements>,
    claims: Claims,
    quote: Option<VerifiedQuote>,
) -> Appraisal {
    let healthy = c.0.iter().all(|x| x.outcome != Outcome::Fail);
    Appraisal {
        healthy,
        checks: c.0,
        measurements,
        claims,
        quote,
        windows: None,
    }
}

const LOG_CHECKS: [&str; 13] = [
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
    "baseline",
    "kernel.modules",
];

fn skip_log_checks(c: &mut Checks, why: &str) {
    if !c.0.iter().any(|x| x.name == "log.replay") {
        c.skip("log.replay", why.to_owned());
    }
    for n in LOG_CHECKS {
        c.skip(n, why.to_owned());
    }
}

/// `quote.signature`, `quote.nonce`, `quote.pcr_digest`. Returns the
/// verified quote when all three hold: only then does anything it selects
/// count.
fn quote_checks(
    e: &Evidence,
    r: &Reference<'_>,
    pcrs: &PcrValues,
    c: &mut Checks,
) -> Option<VerifiedQuote> {
    let not_authentic = |c: &mut Checks| {
        c.skip("quote.nonce", "the quote is not authentic");
        c.skip("quote.pcr_digest", "the quote is not authentic");
    };
    let ak = match Public::from_bytes(&e.ak_public.0) {
        Ok(ak) => ak,
        Err(err) => {
            c.fail(
                "quote.signature",
                format!("the AK's public area: {err}"),
                Vec::new(),
            );
            not_authentic(c);
            return None;
        }
    };
    let prepared;
    let verifier = match r.enrollment.and_then(|en| en.verifier_for(&e.ak_public.0)) {
        Some(v) => v,
        None => match QuoteVerifier::new(&ak) {
            Ok(v) => {
                prepared = v;
                &prepared
            }
            Err(err) => {
                c.fail("quote.signature", err.to_string(), Vec::new());
                not_authentic(c);
                return None;
            }
        },
    };
    let sig = match Signature::from_bytes(&e.quote_signature.0) {
        Ok(s) => s,
        Err(err) => {
            c.fail(
                "quote.signature",
                format!("TPMT_SIGNATURE: {err}"),
                Vec::new(),
            );
            not_authentic(c);
            return None;
        }
    };
    let sig_cite = vec![Cite::Digest {
        what: "quote (TPMS_ATTEST) SHA-256".into(),
        value: sha256(&e.quote_attest.0),
    }];
    // SHA-1 is broken for collisions: a quote signed over it proves less
    // than its signature suggests.
    if sig.hash().and_then(HashAlg::from_alg) == Some(HashAlg::Sha1) {
        c.fail(
            "quote.signature",
            "the quote is signed over SHA-1: SHA-256 or stronger is required",
            sig_cite,
        );
        not_authentic(c);
        return None;
    }
    match verifier.verify(&e.quote_attest.0, &sig, r.nonce, pcrs) {
        Ok(q) => {
            c.pass(
                "quote.signature",
                format!("TPM-made quote signed by the AK over {}", q.hash.name()),
                sig_cite,
            );
            c.pass(
                "quote.nonce",
                "answers this challenge",
                vec![Cite::Digest {
                    what: "nonce".into(),
                    value: hex(r.nonce),
                }],
            );
            c.pass(
                "quote.pcr_digest",
                "the PCR values of the quote's selection are the ones quoted",
                Vec::new(),
            );
            Some(q)
        }
        Err(QuoteFailure::NonceMismatch { expected, found }) => {
            c.pass(
                "quote.signature",
                "TPM-made quote signed by the AK",
                sig_cite,
            );
            c.fail(
                "quote.nonce",
                format!("the quote answers nonce {found}, not this challenge's {expected} (stale or replayed)"),
                vec![Cite::Digest {
                    what: "quoted nonce".into(),
                    value: found.clone(),
                }],
            );
            // The PCR digest on its own, under the quote's own nonce.
            let own = trustlaunch_eventlog::hex::decode(&found).unwrap_or_default();
            match verifier.verify(&e.quote_attest.0, &sig, &own, pcrs) {
                Ok(_) => c.pass(
                    "quote.pcr_digest",
                    "the PCR values of the quote's selection are the ones quoted",
                    Vec::new(),
                ),
                Err(err) => c.fail("quote.pcr_digest", err.to_string(), Vec::new()),
            }
            None
        }
        Err(err @ (QuoteFailure::PcrValues { .. } | QuoteFailure::PcrDigestMismatch { .. })) => {
            c.pass(
                "quote.signature",
                "TPM-made quote signed by the AK",
                sig_cite,
            );
            c.pass("quote.nonce", "answers this challenge", Vec::new());
            c.fail("quote.pcr_digest", err.to_string(), Vec::new());
            None
        }
        Err(err) => {
            c.fail("quote.signature", err.to_string(), sig_cite);
            not_authentic(c);
            None
        }
    }
}

fn identity_checks(e: &Evidence, r: &Reference<'_>, c: &mut Checks) {
    match Public::from_bytes(&e.ak_public.0) {
        Ok(ak) => {
            match (check_ak(&ak), weak_key(&ak)) {
                (Ok(()), None) => c.pass(
                    "ak.attributes",
                    "restricted fixedTPM signing key of sufficient strength",
                    Vec::new(),
                ),
                (Ok(()), Some(weak)) => c.fail(
                    "ak.attributes",
                    format!("the AK is too weak to attest: {weak}"),
                    Vec::new(),
                ),
                (Err(f), weak) => c.fail(
                    "ak.attributes",
                    match weak {
                        Some(w) => format!("{f}; and it is {w}"),
                        None => f.to_string(),
                    },
                    Vec::new(),
                ),
            }
            if ak.name().as_deref() == Some(e.ak_name.0.as_slice()) {
                c.pass(
                    "ak.name",
                    "the name is the public area's",
                    vec![Cite::Digest {
                        what: "AK name".into(),
                        value: hex(&e.ak_name.0),
                    }],
                );
            } else {
                c.fail(
                    "ak.name",
                    "the AK name sent is not its public area's name",
                    vec![Cite::Digest {
                        what: "AK name sent".into(),
                        value: hex(&e.ak_name.0),
                    }],
                );
            }
        }
        Err(err) => {
            c.fail("ak.attributes", err.to_string(), Vec::new());
            c.skip("ak.name", "the AK's public area does not parse");
        }
    }
    if r.ak_activated {
        c.pass(
            "ak.activated",
            "credential activated under the VM's EK",
            Vec::new(),
        );
    } else {
        c.fail(
            "ak.activated",
            "the AK was not activated under the VM's EK: it is not proven to live in this vTPM",
            Vec::new(),
        );
    }
    let ek_cite = vec![Cite::Digest {
        what: "EK public SHA-256".into(),
        value: sha256(&e.ek_public.0),
    }];
    if e.ek_public.0 == r.ek_public {
        c.pass(
            "ek.vm_identity",
            "the EK the platform created for this VM",
            ek_cite,
        );
    } else {
        c.fail(
            "ek.vm_identity",
            format!(
                "the EK is not the one the platform created for this VM (expected SHA-256 {})",
                sha256(r.ek_public)
            ),
            ek_cite,
        );
    }
    let Some(der) = &e.ek_certificate else {
        c.fail("ek.certificate", "no EK certificate in NV", Vec::new());
        return;
    };
    if r.enrollment
        .is_some_and(|en| en.is_enrolled_certificate(&der.0))
        && e.ek_public.0 == r.ek_public
    {
        // Same bytes as verified at enrollment (chain and key); the EK is
        // checked against the platform's record above.
        c.pass(
            "ek.certificate",
            "the certificate verified at enrollment",
            vec![Cite::Certificate {
                what: "EK certificate".into(),
                detail: format!("SHA-256 {}", sha256(&der.0)),
            }],
        );
        return;
    }
    let cert = match EkCertificate::parse(&der.0) {
        Ok(cert) => cert,
        Err(err) => {
            c.fail(
                "ek.certificate",
                format!("does not parse: {err}"),
                Vec::new(),
            );
            return;
        }
    };
    let cite = vec![Cite::Certificate {
        what: "EK certificate".into(),
        detail: format!("SHA-256 {}", sha256(&der.0)),
    }];
    match EkTrustStore::new(r.vtpm_ca.to_vec()).verify(&cert, r.now) {
        Err(err) => c.fail(
            "ek.certificate",
            format!("does not chain to the platform's vTPM CA: {err}"),
            cite,
        ),
        Ok(_) => match Public::from_bytes(&e.ek_public.0) {
            Ok(ek) if cert_matches_ek(&cert, &ek) => c.pass(
                "ek.certificate",
                "chains to the platform's vTPM CA and certifies this EK",
                cite,
            ),
            _ => c.fail(
                "ek.certificate",
                "the certificate is for another key than the EK sent",
                cite,
            ),
        },
    }
}

/// Compares every quoted SHA-256 PCR but IMA's with the replayed log.
fn replay_check(
    replayed: &trustlaunch_eventlog::Replay,
    pcrs: &PcrValues,
    quote_ok: bool,
    c: &mut Checks,
) -> bool {
    if !quote_ok {
        // Comparing with PCR values the quote does not vouch for proves
        // nothing either way.
        c.skip(
            "log.replay",
            "the PCR values sent are not authenticated by the quote",
        );
        return false;
    }
    let Some(quoted) = pcrs.get(&HashAlg::Sha256) else {
        c.fail("log.replay", "no SHA-256 PCRs were quoted", Vec::new());
        return false;
    };
    let bank = replayed.pcrs.get(&LogHash::Sha256);
    let mut bad = Vec::new();
    let mut compared = 0usize;
    for (i, q) in quoted {
        if *i == IMA_PCR {
            continue;
        }
        compared = compared.saturating_add(1);
        let rep = bank.and_then(|b| b.get(i)).map(|d| d.as_bytes().to_vec());
        let expect = rep.clone().unwrap_or_else(|| vec![0u8; 32]);
        if *q != expect {
            bad.push(Cite::Pcr {
                index: *i,
                quoted: hex(q),
                replayed: rep.map(|r| hex(&r)),
            });
        }
    }
    if compared == 0 {
        c.fail(
            "log.replay",
            "no PCR to compare (only IMA's was quoted)",
            Vec::new(),
        );
        return false;
    }
    if !bad.is_empty() {
        let list: Vec<String> = bad
            .iter()
            .filter_map(|b| match b {
                Cite::Pcr { index, .. } => Some(index.to_string()),
                _ => None,
            })
            .collect();
        c.fail(
            "log.replay",
            format!("the log does not replay to quoted PCR {} (edited, truncated, reordered or foreign log)", list.join(", ")),
            bad,
        );
        return false;
    }
    c.pass(
        "log.replay",
        format!(
            "{compared} quoted PCRs equal the replayed log (PCR 10 is IMA's, not the firmware's)"
        ),
        Vec::new(),
    );
    true
}

fn var_cite(v: &trustlaunch_eventlog::MeasuredVariable) -> Cite {
    Cite::Variable {
        name: v.name.clone(),
        event: v.event,
        sha256: sha256(&v.data),
    }
}

fn secure_boot_checks(ev: &BootEvidence, r: &Reference<'_>, c: &mut Checks, claims: &mut Claims) {
    let var = |name: &str| ev.secure_boot_variables.iter().find(|v| v.name == name);
    let sb_cite: Vec<Cite> = var("SecureBoot").map(var_cite).into_iter().collect();
    claims.secureboot = ev.secure_boot == Some(1);
    match (r.secure_boot_expected, ev.secure_boot) {
        (true, Some(1)) => c.pass("secureboot.enabled", "SecureBoot = 1", sb_cite),
        (true, v) => c.fail(
            "secureboot.enabled",
            format!(
                "the VM has Secure Boot on, but the firmware measured SecureBoot = {}",
                v.map_or("nothing".into(), |v| v.to_string())
            ),
            sb_cite,
        ),
        (false, v) => c.skip(
            "secureboot.enabled",
            format!(
                "Secure Boot is off in the VM's profile (measured SecureBoot = {})",
                v.map_or("nothing".into(), |v| v.to_string())
            ),
        ),
    }
    if !r.secure_boot_expected {
        for n in [
            "secureboot.not_setup_mode",
            "secureboot.default_keys",
            "secureboot.db",
            "secureboot.dbx",
        ] {
            c.skip(n, "Secure Boot is off in the VM's profile");
        }
    } else {
        match var("PK") {
            Some(pk) if !pk.data.is_empty() => c.pass(
                "secureboot.not_setup_mode",
                "a PK is enrolled",
                vec![var_cite(pk)],
            ),
            Some(pk) => c.fail(
                "secureboot.not_setup_mode",
                "PK is empty: the firmware is in setup mode",
                vec![var_cite(pk)],
            ),
            None => c.fail(
                "secureboot.not_setup_mode",
                "PK was not measured",
                Vec::new(),
            ),
        }
        let cmp = |names: &[&str],
                   c: &mut Checks,
                   check: &'static str,
                   want: Vec<Option<&Vec<u8>>>|
         -> bool {
            let Some(_) = r.template else {
                c.skip(check, "no key template to compare with");
                return false;
            };
            let mut cites = Vec::new();
            let mut ok = true;
            let mut why = Vec::new();
            for (name, expected) in names.iter().zip(want) {
                let got = var(name);
                if let Some(v) = got {
                    cites.push(var_cite(v));
                }
                let measured = got.map(|v| v.data.as_slice()).filter(|d| !d.is_empty());
                let expected = expected.map(Vec::as_slice).filter(|d| !d.is_empty());
                if measured != expected {
                    ok = false;
                    why.push(format!(
                        "{name} is {} (template: {})",
                        measured.map_or("empty".into(), |d| format!("SHA-256 {}", sha256(d))),
                        expected.map_or("empty".into(), |d| format!("SHA-256 {}", sha256(d)))
                    ));
                }
            }
            if ok {
                c.pass(
                    check,
                    format!("{} equal the template's", names.join(" and ")),
                    cites,
                );
            } else {
                c.fail(check, why.join("; "), cites);
            }
            ok
        };
        let t = r.template;
        claims.default_secure_boot_keys_validated = cmp(
            &["PK", "KEK"],
            c,
            "secureboot.default_keys",
            vec![
                t.and_then(|t| t.pk.as_ref()),
                t.and_then(|t| t.kek.as_ref()),
            ],
        );
        claims.db_validated = cmp(
            &["db"],
            c,
            "secureboot.db",
            vec![t.and_then(|t| t.db.as_ref())],
        );
        claims.dbx_validated = cmp(
            &["dbx"],
            c,
            "secureboot.dbx",
            vec![t.and_then(|t| t.dbx.as_ref())],
        );
    }
    if ev.pcr7_config_after_separator.is_empty() {
        c.pass(
            "secureboot.sealed",
            "no Secure Boot configuration after PCR 7's separator",
            Vec::new(),
        );
    } else {
        let cites = ev
            .pcr7_config_after_separator
            .iter()
            .map(|n| Cite::Event { number: *n, pcr: 7 })
            .collect();
        c.fail(
            "secureboot.sealed",
            "Secure Boot configuration was measured after PCR 7's separator",
            cites,
        );
    }
}

fn boot_checks(
    log: &EventLog,
    ev: &BootEvidence,
    r: &Reference<'_>,
    c: &mut Checks,
    claims: &mut Claims,
) {
    let apps: Vec<_> = ev
        .images
        .iter()
        .filter(|i| i.kind == ImageKind::Application)
        .filter(|i| ev.exit_boot_services.is_none_or(|x| i.event < x))
        .collect();
    if !r.secure_boot_expected {
        c.skip("boot.authorities", "Secure Boot is off in the VM's profile");
    } else if apps.is_empty() {
        c.fail(
            "boot.authorities",
            "no boot application was measured: the kernel did not come through the firmware's verified load (a -kernel boot?)",
            Vec::new(),
        );
    } else {
        // An authority is logged once per db entry (PFP §3.3.4.8), so each
        // application needs an authority logged at or before its load.
        let unauthorised: Vec<Cite> = apps
            .iter()
            .filter(|a| !ev.authorities.iter().any(|x| x.event < a.event))
            .map(|a| Cite::Event {
                number: a.event,
                pcr: a.pcr,
            })
            .collect();
        if unauthorised.is_empty() {
            let cites = ev
                .authorities
                .iter()
                .map(|a| Cite::Certificate {
                    what: format!("authority from {} (event {})", a.database, a.event),
                    detail: format!("SHA-256 {}", sha256(&a.entry)),
                })
                .collect();
            c.pass(
                "boot.authorities",
                format!(
                    "{} boot applications, each after an authority event",
                    apps.len()
                ),
                cites,
            );
        } else {
            c.fail(
                "boot.authorities",
                "boot applications were loaded without any authority event before them",
                unauthorised,
            );
        }
    }
    // dbx hashes: from the template, else as measured.
    let dbx_bytes = r.template.and_then(|t| t.dbx.clone()).or_else(|| {
        ev.secure_boot_variables
            .iter()
            .find(|v| v.name == "dbx")
            .map(|v| v.data.clone())
    });
    let revoked: Vec<Vec<u8>> = dbx_bytes
        .and_then(|b| SignatureDb::parse(&b).ok())
        .map(|db| {
            db.entries()
                .filter(|(t, _)| *t == SignatureType::Sha256.guid())
                .map(|(_, d)| d.data.clone())
                .collect()
        })
        .unwrap_or_default();
    let hits: Vec<Cite> = apps
        .iter()
        .filter(|a| {
            a.digests.iter().any(|d| {
                d.alg() == LogHash::Sha256 && revoked.iter().any(|x| x.as_slice() == d.as_bytes())
            })
        })
        .map(|a| Cite::Event {
            number: a.event,
            pcr: a.pcr,
        })
        .collect();
    if hits.is_empty() {
        c.pass(
            "boot.dbx",
            format!(
                "no boot application digest among {} dbx SHA-256 entries",
                revoked.len()
            ),
            Vec::new(),
        );
    } else {
        c.fail(
            "boot.dbx",
            "a boot application's Authenticode SHA-256 is revoked in dbx",
            hits,
        );
    }
    // Debug flags in measured command lines and boot loader commands.
    // grub's texts are bound to their digests by `log.event_data`; a PCR
    // 12 command line (systemd-stub) must hash to its digest here, or its
    // text proves nothing.
    let unbound: Vec<Cite> = ev
        .kernel_command_lines
        .iter()
        .filter(|cl| cl.pcr == 12 && !ipl_text_bound(log, cl.event))
        .map(|cl| Cite::Event {
            number: cl.event,
            pcr: cl.pcr,
        })
        .collect();
    if !unbound.is_empty() {
        c.fail(
            "boot.debug",
            "a kernel command line's text is not what its PCR 12 digest measured: the boot's debug state cannot be read from it",
            unbound,
        );
        return moksb_check(log, c, claims);
    }
    let mut debug = Vec::new();
    for cl in &ev.kernel_command_lines {
        let words: Vec<&str> = cl.text.split_whitespace().collect();
        if words.iter().any(|w| {
            let key = w.split('=').next().unwrap_or(w);
            KERNEL_DEBUG_WORDS.contains(&key)
        }) {
            claims.kernel_debug_enabled = true;
            debug.push(Cite::Event {
                number: cl.event,
                pcr: cl.pcr,
            });
        }
    }
    for s in &ev.ipl_strings {
        if s.text.contains("set debug=") {
            claims.boot_debug_enabled = true;
            debug.push(Cite::Event {
                number: s.event,
                pcr: s.pcr,
            });
        }
    }
    if debug.is_empty() {
        let n = ev.kernel_command_lines.len();
        if n == 0 {
            c.pass(
                "boot.debug",
                "no debug flag measured (the command line is measured only as a digest: see baseline)",
                Vec::new(),
            );
        } else {
            c.pass(
                "boot.debug",
                format!("no debug flag in {n} measured command lines"),
                Vec::new(),
            );
        }
    } else {
        c.fail(
            "boot.debug",
            "a debug flag is on in a measured command line or boot loader command",
            debug,
        );
    }
    moksb_check(log, c, claims);
}

/// Whether the SHA-256 digest of event `number` is the hash of its data
/// (as systemd-stub measures a command line: UTF-16, with or without its
/// terminating NUL).
fn ipl_text_bound(log: &EventLog, number: usize) -> bool {
    let Some(event) = log.events().iter().find(|e| e.index == number) else {
        return false;
    };
    let Some(d) = event.digest(LogHash::Sha256) else {
        return false;
    };
    let data: &[u8] = &event.data;
    let trimmed = data.strip_suffix(&[0, 0]).unwrap_or(data);
    [data, trimmed]
        .iter()
        .any(|b| LogHash::Sha256.hash(b).is_some_and(|h| h == *d))
}

/// `boot.testsigning`: shim's MokSBState.
fn moksb_check(log: &EventLog, c: &mut Checks, claims: &mut Claims) {
    // Shim's MokSBState = 1 disables its validation (mokutil --disable-validation).
    let one = sha256(&[1]);
    let moksb: Vec<Cite> = log
        .events()
        .iter()
        .enumerate()
        .filter(|(_, ev)| ev.event_type == EventType::EV_IPL && ev.data.starts_with(b"MokSBState"))
        .filter(|(_, ev)| {
            ev.digest(LogHash::Sha256)
                .is_some_and(|d| d.to_hex() == one)
        })
        .map(|(n, ev)| Cite::Event {
            number: n,
            pcr: ev.pcr,
        })
        .collect();
    if moksb.is_empty() {
        c.pass(
            "boot.testsigning",
            "shim validation not disabled",
            Vec::new(),
        );
    } else {
        claims.test_signing_enabled = true;
        c.fail(
            "boot.testsigning",
            "shim's MokSBState = 1: signature validation is disabled",
            moksb,
        );
    }
}

/// The distribution, from where the boot loader measured its files
/// (`/EFI/<distro>/`).
fn distro(ev: &BootEvidence) -> String {
    for s in ev.ipl_strings.iter().chain(&ev.kernel_command_lines) {
        let t = s.text.to_ascii_lowercase();
        if let Some(rest) = t.split("/efi/").nth(1) {
            if let Some(d) = rest.split(|c: char| c == '/' || c.is_whitespace()).next() {
                if !d.is_empty() && d != "boot" {
                    return d.to_owned();
                }
            }
        }
    }
    String::new()
}
