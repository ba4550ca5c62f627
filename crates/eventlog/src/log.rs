//! The log container: the SHA-1 (TCG 1.2 style) format and the
//! crypto-agile format, PC Client Platform Firmware Profile §10.2.

use serde::Serialize;
use smallvec::SmallVec;

use crate::alg::{Digest, HashAlg, MAX_DIGEST_SIZE};
use crate::cursor::Cursor;
use crate::error::ParseError;
use crate::event_type::EventType;

/// The signature that opens the Spec ID event of a crypto-agile log.
pub const SPEC_ID_SIGNATURE_AGILE: &[u8; 16] = b"Spec ID Event03\0";
/// The signature of the TCG 1.2 style Spec ID event, in SHA-1 logs.
pub const SPEC_ID_SIGNATURE_LEGACY: &[u8; 16] = b"Spec ID Event00\0";

/// Size of the TCG_PCClientPCREvent header (pcr, type, SHA-1, size).
const LEGACY_HEADER: usize = 32;

/// Which of the two formats a log uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Every event is a TCG_PCClientPCREvent with one SHA-1 digest.
    Sha1Legacy,
    /// The first event is a Spec ID event, the others TCG_PCR_EVENT2.
    CryptoAgile,
}

/// One algorithm of the Spec ID event: its ID and declared digest size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct AlgorithmSize {
    /// TPM_ALG_ID.
    pub alg_id: u16,
    /// Digest size in bytes.
    pub digest_size: u16,
}

/// TCG_EfiSpecIdEvent (§10.4.5.1), the first event of a crypto-agile log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SpecIdEvent {
    /// `platformClass`: 0 client, 1 server.
    pub platform_class: u32,
    /// `specVersionMinor`.
    pub spec_version_minor: u8,
    /// `specVersionMajor`.
    pub spec_version_major: u8,
    /// `specErrata`.
    pub spec_errata: u8,
    /// `uintnSize`: 1 for 32-bit UINTN, 2 for 64-bit.
    pub uintn_size: u8,
    /// The declared banks, in log order.
    pub algorithms: Vec<AlgorithmSize>,
    /// `vendorInfo`.
    #[serde(serialize_with = "crate::ser::hex")]
    pub vendor_info: Vec<u8>,
}

impl SpecIdEvent {
    /// Parses the event data of a Spec ID event ("Spec ID Event03").
    /// `base` is the absolute offset of `data`.
    pub fn parse(data: &[u8], base: usize) -> Result<Self, ParseError> {
        let bad = |offset: usize, reason: &str| ParseError::SpecId {
            offset,
            reason: reason.to_string(),
        };
        let short = |s: crate::cursor::Short| ParseError::SpecId {
            offset: s.offset,
            reason: format!("truncated: needs {} bytes, {} left", s.needed, s.available),
        };
        let mut c = Cursor::new(data, base);
        let sig = c.take(16).map_err(short)?;
        if sig != SPEC_ID_SIGNATURE_AGILE {
            return Err(bad(base, "signature is not \"Spec ID Event03\""));
        }
        let platform_class = c.u32().map_err(short)?;
        let spec_version_minor = c.u8().map_err(short)?;
        let spec_version_major = c.u8().map_err(short)?;
        let spec_errata = c.u8().map_err(short)?;
        let uintn_size = c.u8().map_err(short)?;
        let count_at = c.offset();
        let count = c.u32().map_err(short)?;
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        if count == 0 {
            return Err(bad(count_at, "numberOfAlgorithms is 0"));
        }
        if count > c.remaining() / 4 {
            return Err(bad(count_at, "numberOfAlgorithms exceeds the event data"));
        }
        let mut algorithms = Vec::with_capacity(count);
        for _ in 0..count {
            let at = c.offset();
            let alg_id = c.u16().map_err(short)?;
            let digest_size = c.u16().map_err(short)?;
            if let Some(known) = HashAlg::from_known_id(alg_id) {
                if known.size() != usize::from(digest_size) {
                    return Err(bad(
                        at,
                        &format!(
                            "{known} is declared with {digest_size} bytes, it has {}",
                            known.size()
                        ),
                    ));
                }
            }
            if digest_size == 0 || digest_size > MAX_DIGEST_SIZE {
                return Err(bad(
                    at,
                    &format!("algorithm 0x{alg_id:04x} has digest size {digest_size}"),
                ));
            }
            if algorithms
                .iter()
                .any(|a: &AlgorithmSize| a.alg_id == alg_id)
            {
                return Err(bad(
                    at,
                    &format!("algorithm 0x{alg_id:04x} is declared twice"),
                ));
            }
            algorithms.push(AlgorithmSize {
                alg_id,
                digest_size,
            });
        }
        let vendor_size = usize::from(c.u8().map_err(short)?);
        let vendor_info = c.take(vendor_size).map_err(short)?.to_vec();
        if !c.is_empty() {
            return Err(bad(c.offset(), "bytes after vendorInfo"));
        }
        Ok(Self {
            platform_class,
            spec_version_minor,
            spec_version_major,
            spec_errata,
            uintn_size,
            algorithms,
            vendor_info,
        })
    }

    /// The declared banks as [`HashAlg`]s.
    pub fn banks(&self) -> Vec<HashAlg> {
        self.algorithms
            .iter()
            .map(|a| {
                HashAlg::from_known_id(a.alg_id).unwrap_or(HashAlg::Other {
                    id: a.alg_id,
                    size: a.digest_size,
                })
            })
            .collect()
    }

    /// Encodes the event data.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(SPEC_ID_SIGNATURE_AGILE);
        out.extend_from_slice(&self.platform_class.to_le_bytes());
        out.extend_from_slice(&[
            self.spec_version_minor,
            self.spec_version_major,
            self.spec_errata,
            self.uintn_size,
        ]);
        let n = u32::try_from(self.algorithms.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&n.to_le_bytes());
        for a in &self.algorithms {
            out.extend_from_slice(&a.alg_id.to_le_bytes());
            out.extend_from_slice(&a.digest_size.to_le_bytes());
        }
        out.push(u8::try_from(self.vendor_info.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(&self.vendor_info);
        out
    }
}

/// An event's digests, one per bank: inline up to four banks (SHA-1,
/// SHA-256, SHA-384, SHA-512: what OVMF and swtpm log), so parsing a log
/// does not allocate per event.
pub type EventDigests = SmallVec<[Digest; 4]>;

/// One measured event, as it stands in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Event number, 0-based, in log order (the Spec ID event is 0).
    pub index: usize,
    /// Offset of the event's header in the log.
    pub offset: usize,
    /// PCR index (`pcrIndex`).
    pub pcr: u32,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The digests, one per bank, in log order.
    pub digests: EventDigests,
    /// The event data (`event`), undecoded: a view into the parsed log's
    /// one copy of its bytes (no allocation per event).
    #[serde(skip)]
    pub data: bytes::Bytes,
    /// Offset of the event data in the log.
    #[serde(skip)]
    pub data_offset: usize,
}

impl Event {
    /// The digest of bank `alg`, if the event has one.
    pub fn digest(&self, alg: HashAlg) -> Option<&Digest> {
        self.digests.iter().find(|d| d.alg() == alg)
    }
}

/// Limits that keep parsing of hostile input bounded.
#[derive(Clone, Copy, Debug)]
pub struct ParseLimits {
    /// Most events a log may hold. Real logs hold hundreds to a few
    /// thousand (IMA is not in this log).
    pub max_events: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        Self {
            max_events: 1 << 20,
        }
    }
}

/// A parsed TCG event log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EventLog {
    format: LogFormat,
    spec_id: Option<SpecIdEvent>,
    banks: Vec<HashAlg>,
    events: Vec<Event>,
    /// Bytes of padding (only 0x00 and 0xFF) after the last event: firmware
    /// that hands over its whole reserved log area.
    trailing_padding: usize,
}

impl EventLog {
    /// Parses a log in either format, with default limits.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        Self::parse_with(bytes, ParseLimits::default())
    }

    /// Parses a log in either format.
    pub fn parse_with(bytes: &[u8], limits: ParseLimits) -> Result<Self, ParseError> {
        if bytes.is_empty() {
            return Err(ParseError::Empty);
        }
        // One copy of the log; every event's data is a view into it.
        let shared = bytes::Bytes::copy_from_slice(bytes);
        let mut c = Cursor::new(&shared, 0);
        let first = read_legacy_event(&mut c, 0, &shared)?;
        let agile = first.event_type == EventType::EV_NO_ACTION
            && first.pcr == 0
            && first.data.starts_with(SPEC_ID_SIGNATURE_AGILE);
        let (format, spec_id, banks) = if agile {
            let spec = SpecIdEvent::parse(&first.data, first.data_offset)?;
            let banks = spec.banks();
            (LogFormat::CryptoAgile, Some(spec), banks)
        } else {
            (LogFormat::Sha1Legacy, None, vec![HashAlg::Sha1])
        };
        // A hint only (the vector grows past it if it must): as many events
        // as fit when each carries every bank's digest.
        let full_event = banks.iter().fold(16_usize, |n, b| {
            n.saturating_add(b.size()).saturating_add(2)
        });
        let hint = bytes.len().checked_div(full_event).unwrap_or(0);
        let mut events = Vec::with_capacity(hint.min(limits.max_events));
        events.push(first);
        let mut trailing_padding = 0;
        while !c.is_empty() {
            let rest = c.rest();
            if is_padding(rest) {
                trailing_padding = rest.len();
                break;
            }
            let index = events.len();
            if index >= limits.max_events {
                return Err(ParseError::TooManyEvents {
                    limit: limits.max_events,
                    offset: c.offset(),
                });
            }
            let event = match format {
                LogFormat::Sha1Legacy => read_legacy_event(&mut c, index, &shared)?,
                LogFormat::CryptoAgile => read_agile_event(&mut c, index, &banks, &shared)?,
            };
            events.push(event);
        }
        Ok(Self {
            format,
            spec_id,
            banks,
            events,
            trailing_padding,
        })
    }

    /// Builds a log from parts (for encoders and tests). The caller keeps
    /// the invariants: a crypto-agile log's event 0 is its Spec ID event.
    pub fn from_parts(format: LogFormat, spec_id: Option<SpecIdEvent>, events: Vec<Event>) -> Self {
        let banks = spec_id
            .as_ref()
            .map_or_else(|| vec![HashAlg::Sha1], SpecIdEvent::banks);
        Self {
            format,
            spec_id,
            banks,
            events,
            trailing_padding: 0,
        }
    }

    /// The log with only the events of the PCRs `keep` accepts, each
    /// keeping its number and offset (so a citation still names the event
    /// of the whole log). What a verifier reads from a log must come from
    /// PCRs a quote covers: the others' events are the guest's word.
    pub fn restricted_to(&self, keep: impl Fn(u32) -> bool) -> EventLog {
        EventLog {
            format: self.format,
            spec_id: self.spec_id.clone(),
            banks: self.banks.clone(),
            events: self
                .events
                .iter()
                .filter(|e| keep(e.pcr))
                .cloned()
                .collect(),
            trailing_padding: self.trailing_padding,
        }
    }

    /// The format.
    pub fn format(&self) -> LogFormat {
        self.format
    }

    /// The Spec ID event of a crypto-agile log.
    pub fn spec_id(&self) -> Option<&SpecIdEvent> {
        self.spec_id.as_ref()
    }

    /// The banks the log carries digests for, in log order.
    pub fn banks(&self) -> &[HashAlg] {
        &self.banks
    }

    /// All events, the Spec ID event included.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Padding bytes after the last event.
    pub fn trailing_padding(&self) -> usize {
        self.trailing_padding
    }

    /// Encodes the log in its format (the inverse of [`EventLog::parse`],
    /// without any trailing padding).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, e) in self.events.iter().enumerate() {
            let legacy = self.format == LogFormat::Sha1Legacy || i == 0;
            out.extend_from_slice(&e.pcr.to_le_bytes());
            out.extend_from_slice(&e.event_type.0.to_le_bytes());
            if legacy {
                let sha1 = e.digest(HashAlg::Sha1).copied();
                let sha1 = sha1.unwrap_or_else(|| Digest::zero(HashAlg::Sha1));
                out.extend_from_slice(sha1.as_bytes());
            } else {
                let n = u32::try_from(e.digests.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&n.to_le_bytes());
                for d in &e.digests {
                    out.extend_from_slice(&d.alg().id().to_le_bytes());
                    out.extend_from_slice(d.as_bytes());
                }
            }
            let n = u32::try_from(e.data.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(&e.data);
        }
        out
    }
}

/// Whether the rest of the log is padding: only 0x00 and 0xFF bytes (the
/// erased or zeroed remainder of the firmware's log area). No real event is
/// made of those bytes alone, and deciding on the whole tail keeps parsing
/// and encoding inverse: a log re-encoded without its padding parses to the
/// same events (found by fuzzing, see docs/fuzzing.md).
fn is_padding(rest: &[u8]) -> bool {
    rest.iter().all(|b| *b == 0x00 || *b == 0xff)
}

/// The `size` bytes at the cursor, as a view into `shared`: the log the
/// cursor reads (so what it takes is always within `shared`).
fn take_shared(
    c: &mut Cursor<'_>,
    size: usize,
    shared: &bytes::Bytes,
) -> Result<bytes::Bytes, crate::cursor::Short> {
    c.take(size).map(|taken| shared.slice_ref(taken))
}

fn read_legacy_event(
    c: &mut Cursor<'_>,
    index: usize,
    shared: &bytes::Bytes,
) -> Result<Event, ParseError> {
    let offset = c.offset();
    let trunc = |field| move |s| ParseError::truncated(index, offset, field, s);
    if c.remaining() < LEGACY_HEADER {
        let s = c.take(LEGACY_HEADER).map_err(trunc("event header"));
        return Err(s.err().unwrap_or(ParseError::Empty));
    }
    let pcr = c.u32().map_err(trunc("pcrIndex"))?;
    let event_type = EventType(c.u32().map_err(trunc("eventType"))?);
    let sha1 = c.take(20).map_err(trunc("digest"))?;
    let digest = Digest::new(HashAlg::Sha1, sha1).ok_or(ParseError::Empty)?;
    let size = c.len_u32().map_err(trunc("eventDataSize"))?;
    let data_offset = c.offset();
    let data = take_shared(c, size, shared).map_err(trunc("event data"))?;
    Ok(Event {
        index,
        offset,
        pcr,
        event_type,
        digests: smallvec::smallvec![digest],
        data,
        data_offset,
    })
}

fn read_agile_event(
    c: &mut Cursor<'_>,
    index: usize,
    banks: &[HashAlg],
    shared: &bytes::Bytes,
) -> Result<Event, ParseError> {
    let offset = c.offset();
    let trunc = |field| move |s| ParseError::truncated(index, offset, field, s);
    let pcr = c.u32().map_err(trunc("pcrIndex"))?;
    let event_type = EventType(c.u32().map_err(trunc("eventType"))?);
    let count_at = c.offset();
    let count = c.u32().map_err(trunc("digests.count"))?;
    // PFP §10.2.2 wants one digest per declared bank; real logs (tpm2-tss's
    // test data, written by real stacks) carry fewer. A subset is accepted
    // and replay marks the banks it lacks as incomplete for that PCR.
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    if count > banks.len() {
        return Err(ParseError::Digests {
            event: index,
            event_offset: offset,
            reason: format!(
                "digests.count at offset {count_at} is {count}, the Spec ID event declares only {} banks",
                banks.len()
            ),
        });
    }
    let mut digests = EventDigests::with_capacity(count);
    for _ in 0..count {
        let at = c.offset();
        let id = c.u16().map_err(trunc("digest hashAlg"))?;
        let Some(alg) = banks.iter().copied().find(|b| b.id() == id) else {
            return Err(ParseError::UndeclaredAlgorithm {
                event: index,
                event_offset: offset,
                offset: at,
                alg: id,
            });
        };
        if digests.iter().any(|d: &Digest| d.alg() == alg) {
            return Err(ParseError::Digests {
                event: index,
                event_offset: offset,
                reason: format!("algorithm {alg} at offset {at} appears twice"),
            });
        }
        let bytes = c.take(alg.size()).map_err(trunc("digest"))?;
        let digest = Digest::new(alg, bytes).ok_or(ParseError::Digests {
            event: index,
            event_offset: offset,
            reason: format!("digest of {alg} at offset {at} has the wrong size"),
        })?;
        digests.push(digest);
    }
    let size = c.len_u32().map_err(trunc("eventSize"))?;
    let data_offset = c.offset();
    let data = take_shared(c, size, shared).map_err(trunc("event data"))?;
    Ok(Event {
        index,
        offset,
        pcr,
        event_type,
        digests,
        data,
        data_offset,
    })
}

impl EventLog {
    /// Size of UINTN in image-load and handoff-table events: 4 when the
    /// Spec ID event says 32-bit (`uintnSize` 1), else 8.
    pub fn uintn_bytes(&self) -> usize {
        match self.spec_id.as_ref().map(|s| s.uintn_size) {
            Some(1) => 4,
            _ => 8,
        }
    }
}
