//! Replay: the PCR values a TPM holds after the log's events were extended
//! into it (TPM 2.0 Part 1 §17; PC Client PFP §3.3.4 PCR initial values,
//! §10.4.5.3 StartupLocality, §9.4.4 H-CRTM), and verification of a log
//! against PCR values read from a TPM.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::alg::{Digest, HashAlg};
use crate::event_type::EventType;
use crate::log::{Event, EventLog};

/// Event data of the StartupLocality EV_NO_ACTION event (§10.4.5.3).
pub const STARTUP_LOCALITY_SIGNATURE: &[u8; 16] = b"StartupLocality\0";

/// PCR values per bank: `alg -> pcr index -> value`.
pub type PcrBanks = BTreeMap<HashAlg, BTreeMap<u32, Digest>>;

/// The outcome of replaying a log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Replay {
    /// Replayed values of every PCR that has at least one extended event
    /// (EV_NO_ACTION events are not extended), for every computable bank.
    pub pcrs: PcrBanks,
    /// Banks the log carries but that this crate cannot compute.
    pub skipped_banks: Vec<HashAlg>,
    /// PCRs, per bank, with at least one extended event that carries no
    /// digest of that bank: their value cannot be known and they are left
    /// out of `pcrs`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub incomplete: BTreeMap<HashAlg, Vec<u32>>,
    /// The locality TPM2_Startup was issued from, as the StartupLocality
    /// event records it (0 when the log has no such event).
    pub startup_locality: u8,
}

/// The value a PCR holds after TPM reset, before any extend.
///
/// PCRs 17–22 are the dynamic-launch PCRs: all ones until a dynamic launch
/// resets them (PC Client PTP §4.6, PFP Table 3). PCR 0 takes the startup
/// locality in its last byte (3 when TPM2_Startup came from locality 3, 4
/// after an H-CRTM sequence). Every other PCR starts at zero.
pub fn initial_value(alg: HashAlg, pcr: u32, startup_locality: u8) -> Digest {
    match pcr {
        17..=22 => Digest::filled(alg, 0xff),
        0 if startup_locality != 0 => {
            let mut bytes = vec![0u8; alg.size()];
            if let Some(last) = bytes.last_mut() {
                *last = startup_locality;
            }
            Digest::new(alg, &bytes).unwrap_or_else(|| Digest::zero(alg))
        }
        _ => Digest::zero(alg),
    }
}

/// The locality recorded by the log: the StartupLocality event's value;
/// else 4 when the log records an H-CRTM measurement (the TPM resets PCR 0
/// to 4 at _TPM_Hash_Start, TPM 2.0 Part 1 §34.3); else 0.
pub fn startup_locality(log: &EventLog) -> u8 {
    let mut hcrtm = false;
    for e in log.events() {
        if e.pcr != 0 {
            continue;
        }
        if e.event_type == EventType::EV_NO_ACTION {
            if let Some([locality]) = e.data.strip_prefix(STARTUP_LOCALITY_SIGNATURE) {
                return *locality;
            }
        } else if e.event_type == EventType::EV_EFI_HCRTM_EVENT {
            hcrtm = true;
        }
    }
    if hcrtm {
        4
    } else {
        0
    }
}

/// Whether the event is extended into its PCR (every type but
/// EV_NO_ACTION, §10.4.1).
pub fn is_extended(event: &Event) -> bool {
    event.event_type != EventType::EV_NO_ACTION
}

/// Replays every bank of the log.
pub fn replay(log: &EventLog) -> Replay {
    replay_banks(log, log.banks())
}

/// Replays only the given banks of the log (those it has): e.g. the
/// SHA-256 bank a quote covers, without hashing the others.
pub fn replay_banks(log: &EventLog, banks: &[HashAlg]) -> Replay {
    let locality = startup_locality(log);
    let mut pcrs = PcrBanks::new();
    let mut skipped_banks = Vec::new();
    let mut incomplete = BTreeMap::new();
    for &alg in log.banks().iter().filter(|a| banks.contains(a)) {
        if !alg.is_computable() {
            skipped_banks.push(alg);
            continue;
        }
        let bank = pcrs.entry(alg).or_default();
        let mut unknown = std::collections::BTreeSet::new();
        for e in log.events().iter().filter(|e| is_extended(e)) {
            let Some(d) = e.digest(alg) else {
                unknown.insert(e.pcr);
                continue;
            };
            let pcr = bank
                .entry(e.pcr)
                .or_insert_with(|| initial_value(alg, e.pcr, locality));
            if let Some(next) = pcr.extended(d) {
                *pcr = next;
            }
        }
        for pcr in &unknown {
            bank.remove(pcr);
        }
        if !unknown.is_empty() {
            incomplete.insert(alg, unknown.into_iter().collect());
        }
    }
    Replay {
        pcrs,
        skipped_banks,
        incomplete,
        startup_locality: locality,
    }
}

/// How one given PCR compared with the replay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PcrStatus {
    /// The replayed value equals the given one.
    Match,
    /// The replayed value equals the given one only after appending events
    /// that the log is known to lack (see [`Workaround`]).
    MatchWithWorkaround {
        /// Which workaround.
        workaround: Workaround,
    },
    /// The values differ.
    Mismatch {
        /// The replayed value.
        replayed: String,
    },
    /// The log has no extended event for this PCR in this bank, so the log
    /// says nothing about it: not compared.
    NoEvents,
    /// The log has no such bank, or this crate cannot compute it.
    BankNotReplayed,
    /// Some event of this PCR carries no digest of this bank, so the log
    /// cannot tell its value: not compared.
    Incomplete,
}

/// Events that firmware extends but that are missing from the log as read,
/// and that verification may append when, and only when, a PCR mismatches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Workaround {
    /// PCR 5: "Exit Boot Services Invocation" and "... Returned with
    /// Success" (EV_EFI_ACTION) were extended after the OS captured the log.
    /// Upstream: go-attestation `eventlogWorkarounds`.
    EbsInvocationSuccess,
    /// PCR 5: invocation, then "... Returned with Failure".
    EbsInvocationFailure,
    /// PCR 5: invocation, failure, then success.
    EbsInvocationFailureSuccess,
}

const EBS_INVOCATION: &str = "Exit Boot Services Invocation";
const EBS_SUCCESS: &str = "Exit Boot Services Returned with Success";
const EBS_FAILURE: &str = "Exit Boot Services Returned with Failure";

impl Workaround {
    const ALL: [Workaround; 3] = [
        Workaround::EbsInvocationSuccess,
        Workaround::EbsInvocationFailure,
        Workaround::EbsInvocationFailureSuccess,
    ];

    /// The PCR the workaround applies to.
    pub fn pcr(self) -> u32 {
        5
    }

    /// The EV_EFI_ACTION strings appended.
    pub fn actions(self) -> &'static [&'static str] {
        match self {
            Workaround::EbsInvocationSuccess => &[EBS_INVOCATION, EBS_SUCCESS],
            Workaround::EbsInvocationFailure => &[EBS_INVOCATION, EBS_FAILURE],
            Workaround::EbsInvocationFailureSuccess => &[EBS_INVOCATION, EBS_FAILURE, EBS_SUCCESS],
        }
    }

    /// Applies only to logs that lack every Exit Boot Services event.
    fn applies_to(self, log: &EventLog) -> bool {
        !log.events().iter().any(|e| {
            e.pcr == self.pcr()
                && e.event_type == EventType::EV_EFI_ACTION
                && e.data.starts_with(b"Exit Boot Services")
        })
    }

    fn replay_pcr(self, start: &Digest) -> Option<Digest> {
        let mut pcr = *start;
        for action in self.actions() {
            let d = pcr.alg().hash(action.as_bytes())?;
            pcr = pcr.extended(&d)?;
        }
        Some(pcr)
    }
}

/// One line of a verification report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PcrCheck {
    /// Bank.
    pub alg: HashAlg,
    /// PCR index.
    pub pcr: u32,
    /// The value given by the caller (lowercase hex).
    pub expected: String,
    /// The outcome.
    #[serde(flatten)]
    pub status: PcrStatus,
}

/// The result of verifying a log against PCR values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// One entry per given PCR, by bank then index.
    pub checks: Vec<PcrCheck>,
}

impl Verification {
    /// Whether at least one PCR was compared and none mismatched. A report
    /// that compared nothing is not a pass: it proves nothing.
    pub fn passed(&self) -> bool {
        let compared = self.checks.iter().filter(|c| c.is_compared()).count();
        compared > 0
            && self
                .checks
                .iter()
                .all(|c| !matches!(c.status, PcrStatus::Mismatch { .. }))
    }

    /// The checks that mismatched.
    pub fn mismatches(&self) -> impl Iterator<Item = &PcrCheck> {
        self.checks
            .iter()
            .filter(|c| matches!(c.status, PcrStatus::Mismatch { .. }))
    }
}

impl PcrCheck {
    /// Whether the PCR was actually compared with the log.
    pub fn is_compared(&self) -> bool {
        matches!(
            self.status,
            PcrStatus::Match | PcrStatus::MatchWithWorkaround { .. } | PcrStatus::Mismatch { .. }
        )
    }
}

/// Verifies a log against PCR values (`alg -> pcr -> value`), typically
/// read from the TPM or from a quote.
pub fn verify(log: &EventLog, expected: &PcrBanks) -> Verification {
    let replayed = replay(log);
    let mut checks = Vec::new();
    for (alg, pcrs) in expected {
        for (pcr, want) in pcrs {
            let status = match replayed.pcrs.get(alg) {
                None => PcrStatus::BankNotReplayed,
                Some(_)
                    if replayed
                        .incomplete
                        .get(alg)
                        .is_some_and(|p| p.contains(pcr)) =>
                {
                    PcrStatus::Incomplete
                }
                Some(bank) => match bank.get(pcr) {
                    None => PcrStatus::NoEvents,
                    Some(got) if got == want => PcrStatus::Match,
                    Some(got) => Workaround::ALL
                        .into_iter()
                        .find(|w| {
                            w.pcr() == *pcr
                                && w.applies_to(log)
                                && w.replay_pcr(got).as_ref() == Some(want)
                        })
                        .map_or(
                            PcrStatus::Mismatch {
                                replayed: got.to_hex(),
                            },
                            |workaround| PcrStatus::MatchWithWorkaround { workaround },
                        ),
                },
            };
            checks.push(PcrCheck {
                alg: *alg,
                pcr: *pcr,
                expected: want.to_hex(),
                status,
            });
        }
    }
    Verification { checks }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_values_follow_the_profile() {
        let a = HashAlg::Sha256;
        assert!(initial_value(a, 0, 0).is_zero());
        assert_eq!(initial_value(a, 0, 3).as_bytes().last(), Some(&3));
        assert_eq!(initial_value(a, 0, 4).as_bytes().last(), Some(&4));
        assert!(initial_value(a, 7, 3).is_zero());
        assert!(initial_value(a, 17, 0)
            .as_bytes()
            .iter()
            .all(|b| *b == 0xff));
        assert!(initial_value(a, 22, 0)
            .as_bytes()
            .iter()
            .all(|b| *b == 0xff));
        assert!(initial_value(a, 23, 0).is_zero());
    }
}
