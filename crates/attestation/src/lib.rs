//! Appraisal of a VM's boot evidence (pure: no IO, no clock — the caller
//! passes the time).
//!
//! [`appraise`] takes the evidence the guest agent sent
//! (`trustlaunch-protocol`'s `Evidence`) and what the platform knows about
//! the VM ([`Reference`]: the EK it created, its vTPM CA, the challenge's
//! nonce, whether credential activation succeeded, the Secure Boot setting
//! and key databases of the VM's template, its baseline) and returns an
//! [`Appraisal`]: every check by name, each failure citing its evidence
//! (event number, PCR, variable, digest, certificate), the component
//! measurements a baseline is made of ([`Measurements`]), and claims in
//! Azure's names ([`claims::Claims`]).
//!
//! Checks, in order (TCG PC Client PFP 1.05 for the log, TPM 2.0 Part 2/3
//! for the quote, UEFI 2.10 §32 for Secure Boot):
//!
//! | check | what |
//! | --- | --- |
//! | `quote.signature` | the quote is a TPM-made quote signed by the AK |
//! | `quote.nonce` | it answers this challenge (fresh) |
//! | `quote.pcr_digest` | the PCR values of the quote's selection are the ones quoted |
//! | `quote.pcr_coverage` | the quote's SHA-256 selection covers PCRs 0-7 and 8, 9, 11, 12, 14 where the log has events for them (values and events outside the selection are ignored) |
//! | `ak.attributes` | the AK is a restricted, fixedTPM signing key, RSA ≥ 2048 bits or ECC P-256+ |
//! | `ak.name` | the AK's name is its public area's |
//! | `ak.activated` | the AK was activated under the VM's EK |
//! | `ek.vm_identity` | the EK is the one the platform made for this VM |
//! | `ek.certificate` | the EK certificate chains to the vTPM CA and is for this EK |
//! | `log.parse` | the event log parses |
//! | `log.replay` | the log replays to every quoted PCR (PCR 10 is IMA's: skipped by name) |
//! | `log.event_data` | each event's data is what its digest covers, where the spec defines it |
//! | `secureboot.enabled` | SecureBoot = 1 as measured (when the VM has Secure Boot) |
//! | `secureboot.not_setup_mode` | a PK is enrolled |
//! | `secureboot.default_keys` | PK and KEK equal the template's |
//! | `secureboot.db` / `secureboot.dbx` | db and dbx equal the template's |
//! | `secureboot.sealed` | no Secure Boot configuration measured after PCR 7's separator |
//! | `boot.authorities` | boot applications were loaded and each was authorised by a db (or shim) entry — a `-kernel` boot has neither |
//! | `boot.dbx` | no boot application's digest is in dbx |
//! | `boot.debug` | no debug flags in the measured kernel command lines |
//! | `boot.testsigning` | shim's validation is not disabled (MokSBState) |
//! | `baseline` | the boot's components equal the VM's baseline (which component changed, from what to what) |
//! | `kernel.modules` | fails when the agent reports kernel modules that failed signature verification; guest-reported (not covered by the quote), so an empty report is skipped, never a pass |
//!
//! A Windows boot (SIPA events in PCRs 12-14) gets these too, between
//! `baseline` and `kernel.modules`, from what Windows measured ([`windows`]):
//!
//! | check | what |
//! | --- | --- |
//! | `windows.boot_manager` | a boot application was authorised by Microsoft's Windows certificates in db (PCR 7): the SIPA events are Windows' boot manager's, not a guest's |
//! | `windows.sealed` | PCRs 12-14 were closed by the boot manager's separator (later SIPA events are not read) and every SIPA event decodes |
//! | `windows.code_integrity` | code integrity on, wherever measured |
//! | `windows.test_signing` / `windows.flight_signing` | test- and flight-signed code refused |
//! | `windows.debugging` | boot, kernel and hypervisor debugging off |
//! | `windows.elam` | an early-launch anti-malware driver was measured |
//! | `windows.vbs` | VBS, HVCI and Credential Guard as measured (fails only when one boot measured two states) |
//! | `windows.boot_drivers` | every loaded boot module validated and signed under a Microsoft PCA, and every module PCR 12 names by hash among them |
//!
//! [`security`] turns a VM's posture and appraisals into Defender's
//! recommendations and alerts (deduplicated, with states and suppression
//! rules).
//!
//! What it does not do: fetch anything, remember anything (baselines and
//! history are the caller's), or trust anything the guest says that the
//! quote does not cover — PCR values count only where the verified quote's
//! selection names them, the event log is read only for those PCRs and
//! only after it replays to them, the claims' nonce and attested PCRs are
//! the quote's, and the SecureBoot value the guest read is only reported.

#![forbid(unsafe_code)]
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

pub mod baseline;
mod checks;
pub mod claims;
pub mod enrollment;
pub mod security;
pub mod token;
pub mod windows;

pub use baseline::{Baseline, BaselineSource, Component, Deviation, Measurements};
pub use checks::{appraise, pcr_values, quoted_values};

use serde::Serialize;
use trustlaunch_tpm::ekcert::{CaCertificate, UnixTime};

/// The Secure Boot databases of the VM's key template, as
/// EFI_SIGNATURE_LIST bytes (the variable data the firmware measures).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyDatabases {
    /// PK.
    pub pk: Option<Vec<u8>>,
    /// KEK.
    pub kek: Option<Vec<u8>>,
    /// db.
    pub db: Option<Vec<u8>>,
    /// dbx (`None`: the template has none, and none may be measured).
    pub dbx: Option<Vec<u8>>,
}

impl KeyDatabases {
    /// The PK, KEK, db and dbx of a variable store (empty variables as
    /// `None`), e.g. the store a VM's key template makes.
    pub fn from_store(store: &trustlaunch_secureboot::varstore::VarStore) -> Self {
        use trustlaunch_secureboot::varstore::SecureBootVar;
        let get = |v: SecureBootVar| {
            let (name, guid) = v.id();
            store
                .get(name, guid)
                .map(|x| x.data.clone())
                .filter(|d| !d.is_empty())
        };
        Self {
            pk: get(SecureBootVar::Pk),
            kek: get(SecureBootVar::Kek),
            db: get(SecureBootVar::Db),
            dbx: get(SecureBootVar::Dbx),
        }
    }
}

/// What the platform knows about the VM and this challenge.
#[derive(Clone, Debug)]
pub struct Reference<'a> {
    /// The VM's id (for claims).
    pub vm_id: &'a str,
    /// The EK's TPMT_PUBLIC recorded when the platform created the vTPM.
    pub ek_public: &'a [u8],
    /// The platform's vTPM CA (roots).
    pub vtpm_ca: &'a [CaCertificate],
    /// The nonce of this challenge.
    pub nonce: &'a [u8],
    /// Whether the AK was activated under the EK for this challenge.
    pub ak_activated: bool,
    /// The VM's `secureBootEnabled`.
    pub secure_boot_expected: bool,
    /// The template's databases (`None`: not compared).
    pub template: Option<&'a KeyDatabases>,
    /// The VM's baseline (`None`: none to compare with).
    pub baseline: Option<&'a Baseline>,
    /// A baseline is required: without one, `baseline` fails (the VM's
    /// first boot awaits an operator's approval) instead of being skipped.
    pub baseline_required: bool,
    /// Now (certificate validity).
    pub now: UnixTime,
    /// The VM's enrollment, when it has one: the same EK certificate and
    /// AK bytes are then not verified again (see [`enrollment`]).
    pub enrollment: Option<&'a enrollment::Enrollment>,
}

/// A check's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Holds.
    Pass,
    /// Does not hold: the VM is unhealthy.
    Fail,
    /// Not evaluated (not applicable, or its input is missing); says why.
    Skipped,
}

/// A piece of evidence a check rests on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Cite {
    /// An event of the log.
    Event {
        /// Event number (0 = the Spec ID event).
        number: usize,
        /// Its PCR.
        pcr: u32,
    },
    /// A PCR (SHA-256 bank).
    Pcr {
        /// Index.
        index: u32,
        /// The value quoted (hex).
        quoted: String,
        /// The value the log replays to (hex), if any.
        replayed: Option<String>,
    },
    /// A UEFI variable as measured.
    Variable {
        /// Name.
        name: String,
        /// Event number.
        event: usize,
        /// SHA-256 of the measured data (hex).
        sha256: String,
    },
    /// A digest.
    Digest {
        /// What it is.
        what: String,
        /// Hex.
        value: String,
    },
    /// A certificate.
    Certificate {
        /// What it is.
        what: String,
        /// Subject or reason.
        detail: String,
    },
    /// A kernel module the guest reported (its name, or `unknown module
    /// (<reason>)` when the kernel did not name it); guest-reported, not
    /// covered by the quote.
    Module {
        /// Name.
        name: String,
    },
}

/// One check's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// The check's name (see the crate docs).
    pub name: &'static str,
    /// Outcome.
    pub outcome: Outcome,
    /// What was found, in words.
    pub detail: String,
    /// The evidence it rests on.
    pub evidence: Vec<Cite>,
}

/// The result of an appraisal.
#[derive(Clone, Debug, Serialize)]
pub struct Appraisal {
    /// Every check passed or was skipped.
    pub healthy: bool,
    /// Every check, in order.
    pub checks: Vec<Check>,
    /// The boot's components (for baselines), when the log could be read.
    pub measurements: Option<Measurements>,
    /// Claims in Azure's names.
    pub claims: claims::Claims,
    /// The quote, when its signature, nonce and PCR digest verified: its
    /// selection, the TPM's clock and reset/restart counters (how a caller
    /// tells one boot from the next), the signing hash.
    pub quote: Option<trustlaunch_tpm::quote::VerifiedQuote>,
    /// A Windows boot's VBS, HVCI and Credential Guard as measured, when
    /// the boot is Windows' (`windows.boot_manager` passed).
    pub windows: Option<windows::WindowsPosture>,
}

impl Appraisal {
    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.outcome == Outcome::Fail)
    }

    /// A check by name.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// The verdict: healthy or not, and which checks failed saying what
    /// (what the security center needs, and can be kept as JSON).
    pub fn verdict(&self) -> Verdict {
        Verdict {
            healthy: self.healthy,
            failed: self
                .failures()
                .map(|c| FailedCheck {
                    name: c.name.to_owned(),
                    detail: c.detail.clone(),
                })
                .collect(),
            windows: self.windows.clone(),
        }
    }
}

/// An appraisal's verdict ([`Appraisal::verdict`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Verdict {
    /// Every check passed or was skipped.
    pub healthy: bool,
    /// The failed checks, in order.
    pub failed: Vec<FailedCheck>,
    /// A Windows boot's isolation features as measured (what the
    /// VBS/HVCI/Credential Guard recommendations read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<windows::WindowsPosture>,
}

/// A failed check, by name, with what it found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FailedCheck {
    /// The check's name.
    pub name: String,
    /// What it found.
    pub detail: String,
}

/// How the `baseline` check's detail begins when no baseline has been
/// approved yet (the security center's alert reason reads it).
pub const NO_APPROVED_BASELINE: &str = "no approved baseline";

pub(crate) fn hex(b: &[u8]) -> String {
    trustlaunch_eventlog::hex::encode(b)
}

pub(crate) fn sha256(b: &[u8]) -> String {
    use sha2::Digest as _;
    hex(&sha2::Sha256::digest(b))
}
