//! Checks, for the event types whose digest the PC Client PFP defines as the
//! hash of (part of) the event data, that each digest equals that hash.
//! Firmware that measures something else is reported, not rejected: the PCR
//! holds what was extended, and replay uses the digests as logged.
//!
//! EV_EVENT_TAG is checked where it holds Windows' SIPA events (the
//! digest is of the whole event data), not elsewhere: the Linux EFI
//! stub's tagged events in PCR 9 carry a name while the digest is of the
//! file it loaded.
//!
//! Types left out on purpose: EV_COMPACT_HASH (Windows logs a 4-byte
//! value and extends a digest of something else: seen in the corpus),
//! EV_IPL in general (the digest is of the loaded image or string as the
//! loader chose), image loads, firmware blobs and handoff tables (the
//! digest is of memory the log does not hold).
//!
//! One EV_IPL form is checked: grub's commands and command lines in PCR 8
//! (`grub_cmd: …`, `kernel_cmdline: …`, `module_cmdline: …`), whose digest
//! is of the text after the prefix (every grub log of the corpus — CoreOS
//! on GCP, tpm2-tss's H-CRTM machine — and Debian's grub measure it so).
//! Without it a log could carry another command line than the one
//! measured, and the text is what `boot.debug` and the baseline read.

use serde::Serialize;

use crate::alg::{Digest, HashAlg};
use crate::efi::EfiVariable;
use crate::event_type::EventType;
use crate::log::{Event, EventLog};

/// What the spec says an event's digest covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Hashed {
    /// The whole event data.
    EventData,
    /// Only `VariableData` of a UEFI_VARIABLE_DATA (EV_EFI_VARIABLE_BOOT,
    /// PFP 1.05 §10.4.4).
    VariableData,
    /// Nothing: EV_NO_ACTION digests must be zero.
    Zero,
    /// grub's PCR 8 strings: the text after its `grub_cmd: ` /
    /// `kernel_cmdline: ` / `module_cmdline: ` prefix, without a
    /// trailing NUL.
    GrubText,
}

/// The prefixes grub puts before the string it measures into PCR 8.
pub const GRUB_PREFIXES: [&[u8]; 3] = [b"grub_cmd: ", b"kernel_cmdline: ", b"module_cmdline: "];

/// The bytes grub hashed for a PCR 8 string event, if `data` is one.
pub fn grub_measured_text(data: &[u8]) -> Option<&[u8]> {
    let rest = GRUB_PREFIXES.iter().find_map(|p| data.strip_prefix(*p))?;
    let mut end = rest.len();
    while end > 0 && rest.get(end.wrapping_sub(1)) == Some(&0) {
        end = end.saturating_sub(1);
    }
    rest.get(..end)
}

/// A digest that does not equal what the spec says was hashed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DigestMismatch {
    /// Event number.
    pub event: usize,
    /// Offset of the event in the log.
    pub offset: usize,
    /// PCR.
    pub pcr: u32,
    /// Event type.
    pub event_type: EventType,
    /// Bank.
    pub alg: HashAlg,
    /// The digest in the log.
    pub logged: String,
    /// What the spec says the digest covers.
    pub expected_over: Hashed,
    /// The digest of that.
    pub computed: String,
}

/// The rule for an event type, or `None` where the digest covers something
/// outside the log (an image, a firmware volume, a table in memory).
fn rule(event: &Event) -> Option<&'static [Hashed]> {
    use Hashed::{EventData, GrubText, VariableData, Zero};
    Some(match event.event_type {
        // Windows logs its trust points (a SIPA aggregation holding a TPM
        // quote of the log so far) as EV_NO_ACTION in PCR 0xFFFFFFFF,
        // which no TPM has, with the hash of the data as digest (seen in
        // a Windows Server 2022 log of the corpus). Never extended.
        EventType::EV_NO_ACTION if event.pcr == u32::MAX => &[Zero, EventData],
        EventType::EV_NO_ACTION => &[Zero],
        EventType::EV_SEPARATOR
        | EventType::EV_EFI_ACTION
        | EventType::EV_ACTION
        | EventType::EV_S_CRTM_VERSION
        | EventType::EV_EFI_VARIABLE_DRIVER_CONFIG
        | EventType::EV_EFI_VARIABLE_BOOT2
        | EventType::EV_EFI_GPT_EVENT
        | EventType::EV_EFI_GPT_EVENT2 => &[EventData],
        // PFP 1.05 says VariableData; EDK2 and most firmware hash the whole
        // UEFI_VARIABLE_DATA for some variables (BootOrder vs Boot####
        // differ between vendors). Both are what real firmware does.
        EventType::EV_EFI_VARIABLE_BOOT => &[VariableData, EventData],
        // The whole UEFI_VARIABLE_DATA (PFP §10.4.4); shim logs its own
        // authority events the same way.
        EventType::EV_EFI_VARIABLE_AUTHORITY => &[EventData],
        // Windows measures its SIPA events as the hash of the whole
        // tagged event (as every Windows log of the corpus does); the
        // facts the verifier reads are that data.
        EventType::EV_EVENT_TAG if crate::sipa::starts_tagged(&event.data) => &[EventData],
        EventType::EV_IPL if event.pcr == 8 && grub_measured_text(&event.data).is_some() => {
            &[GrubText]
        }
        _ => return None,
    })
}

fn covered(event: &Event, what: Hashed) -> Option<&[u8]> {
    match what {
        Hashed::EventData => Some(&event.data),
        Hashed::VariableData => {
            let var = EfiVariable::parse(&event.data, event.data_offset).ok()?;
            let start = var.data_offset.checked_sub(event.data_offset)?;
            let end = start.checked_add(var.data.len())?;
            event.data.get(start..end)
        }
        Hashed::GrubText => grub_measured_text(&event.data),
        Hashed::Zero => None,
    }
}

fn matches(digest: &Digest, event: &Event, what: Hashed) -> bool {
    match what {
        Hashed::Zero => digest.is_zero(),
        _ => covered(event, what)
            .and_then(|bytes| digest.alg().hash(bytes))
            .is_some_and(|d| d == *digest),
    }
}

/// Every digest of every event whose digest the spec ties to its data and
/// that does not match. Banks this crate cannot compute are not checked.
pub fn check_digests(log: &EventLog) -> Vec<DigestMismatch> {
    check_digests_in(log, log.banks())
}

/// [`check_digests`] for the digests of the given banks only (e.g. the
/// SHA-256 bank a quote vouches for).
pub fn check_digests_in(log: &EventLog, banks: &[HashAlg]) -> Vec<DigestMismatch> {
    let mut out = Vec::new();
    // Event 0 of a crypto-agile log is the Spec ID event; its SHA-1 field
    // is zero by definition and covered by the EV_NO_ACTION rule.
    for event in log.events() {
        let Some(forms) = rule(event) else { continue };
        for digest in &event.digests {
            if !digest.alg().is_computable() || !banks.contains(&digest.alg()) {
                continue;
            }
            if forms.iter().any(|f| matches(digest, event, *f)) {
                continue;
            }
            let first = forms.first().copied().unwrap_or(Hashed::EventData);
            let computed = match first {
                Hashed::Zero => Digest::zero(digest.alg()).to_hex(),
                _ => covered(event, first)
                    .and_then(|b| digest.alg().hash(b))
                    .map(|d| d.to_hex())
                    .unwrap_or_default(),
            };
            out.push(DigestMismatch {
                event: event.index,
                offset: event.offset,
                pcr: event.pcr,
                event_type: event.event_type,
                alg: digest.alg(),
                logged: digest.to_hex(),
                expected_over: first,
                computed,
            });
        }
    }
    out
}
