//! Windows' measured boot: SIPA events, the Windows Boot Configuration
//! Log's records that Windows' boot manager and loader put in
//! EV_EVENT_TAG events (`taggedEventID` = the SIPA event type,
//! `taggedEventData` = its data). A container's data is a list of SIPA
//! events (`u32` type, `u32` size, data) in turn.
//!
//! Types and their meaning as Windows' `wbcl.h` names them (the Win32
//! metadata's `SIPAEVENT_*` values): bits 16-19 are the category
//! (container, information, error, pre-OS parameter, OS parameter,
//! authority, loaded module, trust point, ELAM, VBS, KSR, DRTM), bit 30
//! marks an aggregation, bit 31 an event that is not measured. Each known
//! type is decoded to the value it carries (a flag, a number, a UTF-16
//! text, bytes); an unknown one is kept raw and named by its number.
//! Types of newer Windows releases (ReFS rollback protection, VSM's SRTM
//! sealing, a module's version and original file name, as the newest
//! Win32 metadata lists them) are named; where no real log shows their
//! layout they are kept as bytes (`MODULE_VERSION` among them, so no OS
//! version is read from it). Nesting is bounded ([`MAX_DEPTH`]); every length is checked.

use serde::Serialize;

use crate::cursor::Cursor;
use crate::efi::StructError;

/// `SIPAEVENTTYPE_NONMEASURED`.
pub const NONMEASURED: u32 = 0x8000_0000;
/// `SIPAEVENTTYPE_AGGREGATION`.
pub const AGGREGATION: u32 = 0x4000_0000;
/// `SIPAEVENTTYPE_CONTAINER`: the category of events holding events.
pub const CONTAINER: u32 = 0x0001_0000;
/// The category bits.
const CATEGORY: u32 = 0x000F_0000;
/// The deepest nesting of containers decoded.
pub const MAX_DEPTH: usize = 8;

/// One SIPA event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SipaEvent {
    /// Its type (`SIPAEVENT_*`).
    #[serde(rename = "type")]
    pub kind: u32,
    /// Its name without `SIPAEVENT_` (`BOOTCOUNTER`), or `unknown`.
    pub name: &'static str,
    /// What it carries.
    pub value: SipaValue,
}

/// What a SIPA event carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SipaValue {
    /// The events of a container.
    Events(Vec<SipaEvent>),
    /// A flag (one byte, 0 or 1).
    Flag(bool),
    /// A little-endian number (1, 2, 4 or 8 bytes).
    Number(u64),
    /// A UTF-16LE text (its terminating NULs dropped).
    Text(String),
    /// Bytes: digests, keys, policies, and what does not decode as its
    /// type says.
    Bytes(#[serde(serialize_with = "crate::ser::hex")] Vec<u8>),
}

/// How a type's data is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Events,
    Flag,
    Number,
    Text,
    Bytes,
}

/// Every SIPA event type Windows defines, its name and shape.
const TYPES: &[(u32, &str, Shape)] = &[
    (0x4001_0001, "TRUSTBOUNDARY", Shape::Events),
    (0x4001_0002, "ELAM_AGGREGATION", Shape::Events),
    (0x4001_0003, "LOADEDMODULE_AGGREGATION", Shape::Events),
    (0xC001_0004, "TRUSTPOINT_AGGREGATION", Shape::Events),
    (0x4001_0005, "KSR_AGGREGATION", Shape::Events),
    (
        0x4001_0006,
        "KSR_SIGNED_MEASUREMENT_AGGREGATION",
        Shape::Events,
    ),
    (0x0002_0001, "INFORMATION", Shape::Bytes),
    (0x0002_0002, "BOOTCOUNTER", Shape::Number),
    (0x0002_0003, "TRANSFER_CONTROL", Shape::Number),
    (0x0002_0004, "APPLICATION_RETURN", Shape::Number),
    (0x0002_0005, "BITLOCKER_UNLOCK", Shape::Number),
    (0x0002_0006, "EVENTCOUNTER", Shape::Number),
    (0x0002_0007, "COUNTERID", Shape::Number),
    (0x0002_0008, "MORBIT_NOT_CANCELABLE", Shape::Flag),
    (0x0002_0009, "APPLICATION_SVN", Shape::Number),
    (0x0002_000A, "SVN_CHAIN_STATUS", Shape::Number),
    (0x0002_000B, "MORBIT_API_STATUS", Shape::Number),
    (0x0002_000C, "IDK_GENERATION_STATUS", Shape::Number),
    (0x0003_0001, "ERROR_FIRMWAREFAILURE", Shape::Number),
    (0x0003_0003, "ERROR_INTERNALFAILURE", Shape::Number),
    (0x0004_0001, "BOOTDEBUGGING", Shape::Flag),
    (0x0004_0002, "BOOT_REVOCATION_LIST", Shape::Bytes),
    (0x0005_0001, "OSKERNELDEBUG", Shape::Flag),
    (0x0005_0002, "CODEINTEGRITY", Shape::Flag),
    (0x0005_0003, "TESTSIGNING", Shape::Flag),
    (0x0005_0004, "DATAEXECUTIONPREVENTION", Shape::Number),
    (0x0005_0005, "SAFEMODE", Shape::Flag),
    (0x0005_0006, "WINPE", Shape::Flag),
    (0x0005_0007, "PHYSICALADDRESSEXTENSION", Shape::Number),
    (0x0005_0008, "OSDEVICE", Shape::Number),
    (0x0005_0009, "SYSTEMROOT", Shape::Text),
    (0x0005_000A, "HYPERVISOR_LAUNCH_TYPE", Shape::Number),
    (0x0005_000B, "HYPERVISOR_PATH", Shape::Text),
    (0x0005_000C, "HYPERVISOR_IOMMU_POLICY", Shape::Number),
    (0x0005_000D, "HYPERVISOR_DEBUG", Shape::Flag),
    (0x0005_000E, "DRIVER_LOAD_POLICY", Shape::Number),
    (0x0005_000F, "SI_POLICY", Shape::Bytes),
    (0x0005_0010, "HYPERVISOR_MMIO_NX_POLICY", Shape::Number),
    (0x0005_0011, "HYPERVISOR_MSR_FILTER_POLICY", Shape::Number),
    (0x0005_0012, "VSM_LAUNCH_TYPE", Shape::Number),
    (0x0005_0013, "OS_REVOCATION_LIST", Shape::Bytes),
    (0x0005_0014, "SMT_STATUS", Shape::Number),
    (0x0005_0020, "VSM_IDK_INFO", Shape::Bytes),
    (0x0005_0021, "FLIGHTSIGNING", Shape::Flag),
    (0x0005_0022, "PAGEFILE_ENCRYPTION_ENABLED", Shape::Flag),
    (0x0005_0023, "VSM_IDKS_INFO", Shape::Bytes),
    (0x0005_0024, "HIBERNATION_DISABLED", Shape::Flag),
    (0x0005_0025, "DUMPS_DISABLED", Shape::Flag),
    (0x0005_0026, "DUMP_ENCRYPTION_ENABLED", Shape::Flag),
    (0x0005_0027, "DUMP_ENCRYPTION_KEY_DIGEST", Shape::Bytes),
    (0x0005_0028, "LSAISO_CONFIG", Shape::Bytes),
    (0x0005_0029, "SBCP_INFO", Shape::Bytes),
    (0x0005_0030, "HYPERVISOR_BOOT_DMA_PROTECTION", Shape::Number),
    (0x0005_0031, "SI_POLICY_SIGNER", Shape::Bytes),
    (0x0005_0032, "SI_POLICY_UPDATE_SIGNER", Shape::Bytes),
    (
        0x0005_0033,
        "REFS_VOLUME_CHECKPOINT_RECORD_CHECKSUM",
        Shape::Bytes,
    ),
    (
        0x0005_0034,
        "REFS_ROLLBACK_PROTECTION_FROZEN_VOLUME_CHECKSUM",
        Shape::Bytes,
    ),
    (
        0x0005_0035,
        "REFS_ROLLBACK_PROTECTION_USER_PAYLOAD_HASH",
        Shape::Bytes,
    ),
    (
        0x0005_0036,
        "REFS_ROLLBACK_PROTECTION_VERIFICATION_SUCCEEDED",
        Shape::Flag,
    ),
    (
        0x0005_0037,
        "REFS_ROLLBACK_PROTECTION_VOLUME_FIRST_EVER_MOUNT",
        Shape::Flag,
    ),
    (0x0005_003A, "VSM_SEALED_SI_POLICY", Shape::Bytes),
    (0x0005_003B, "VSM_DRTM_KEYROLL_DETECTED", Shape::Flag),
    (0x0005_003C, "VSM_SRTM_UNSEAL_POLICY", Shape::Bytes),
    (0x0005_003D, "VSM_SRTM_ANTI_ROLLBACK_COUNTER", Shape::Number),
    (0x0005_0040, "VTL1_DUMP_CONFIG", Shape::Bytes),
    (0x0006_0001, "NOAUTHORITY", Shape::Bytes),
    (0x0006_0002, "AUTHORITYPUBKEY", Shape::Bytes),
    (0x0007_0001, "FILEPATH", Shape::Text),
    (0x0007_0002, "IMAGESIZE", Shape::Number),
    (0x0007_0003, "HASHALGORITHMID", Shape::Number),
    (0x0007_0004, "AUTHENTICODEHASH", Shape::Bytes),
    (0x0007_0005, "AUTHORITYISSUER", Shape::Text),
    (0x0007_0006, "AUTHORITYSERIAL", Shape::Bytes),
    (0x0007_0007, "IMAGEBASE", Shape::Number),
    (0x0007_0008, "AUTHORITYPUBLISHER", Shape::Text),
    (0x0007_0009, "AUTHORITYSHA1THUMBPRINT", Shape::Bytes),
    (0x0007_000A, "IMAGEVALIDATED", Shape::Flag),
    (0x0007_000B, "MODULE_SVN", Shape::Number),
    // MODULE_HSP in older headers, MODULE_PLUTON in newer ones.
    (0x0007_000C, "MODULE_HSP", Shape::Bytes),
    (0x0007_000D, "MODULE_ORIGINAL_FILENAME", Shape::Text),
    (0x0007_000E, "MODULE_VERSION", Shape::Bytes),
    (0x0007_000F, "PUBLISHER_OEMNAME", Shape::Text),
    (0x8008_0001, "QUOTE", Shape::Bytes),
    (0x8008_0002, "QUOTESIGNATURE", Shape::Bytes),
    (0x8008_0003, "AIKID", Shape::Bytes),
    (0x8008_0004, "AIKPUBDIGEST", Shape::Bytes),
    (0x0009_0001, "ELAM_KEYNAME", Shape::Text),
    (0x0009_0002, "ELAM_CONFIGURATION", Shape::Bytes),
    (0x0009_0003, "ELAM_POLICY", Shape::Bytes),
    (0x0009_0004, "ELAM_MEASURED", Shape::Bytes),
    (0x000A_0001, "VBS_VSM_REQUIRED", Shape::Flag),
    (0x000A_0002, "VBS_SECUREBOOT_REQUIRED", Shape::Flag),
    (0x000A_0003, "VBS_IOMMU_REQUIRED", Shape::Flag),
    (0x000A_0004, "VBS_MMIO_NX_REQUIRED", Shape::Flag),
    (0x000A_0005, "VBS_MSR_FILTERING_REQUIRED", Shape::Flag),
    (0x000A_0006, "VBS_MANDATORY_ENFORCEMENT", Shape::Flag),
    (0x000A_0007, "VBS_HVCI_POLICY", Shape::Number),
    (
        0x000A_0008,
        "VBS_MICROSOFT_BOOT_CHAIN_REQUIRED",
        Shape::Flag,
    ),
    (0x000A_0009, "VBS_DUMP_USES_AMEROOT", Shape::Flag),
    (0x000A_000A, "VBS_VSM_NOSECRETS_ENFORCED", Shape::Flag),
    (0x000B_0001, "KSR_SIGNATURE", Shape::Bytes),
    (0x000C_0001, "DRTM_STATE_AUTH", Shape::Bytes),
    (0x000C_0002, "DRTM_SMM_LEVEL", Shape::Number),
    (0x000C_0003, "DRTM_AMD_SMM_HASH", Shape::Bytes),
    (0x000C_0004, "DRTM_AMD_SMM_SIGNER_KEY", Shape::Bytes),
];

/// The name and shape of SIPA type `kind`: known types by the table;
/// other containers hold events; anything else is bytes, `unknown`.
fn shape(kind: u32) -> (&'static str, Shape) {
    match TYPES.iter().find(|(k, _, _)| *k == kind) {
        Some((_, name, shape)) => (name, *shape),
        None if kind & CATEGORY == CONTAINER => ("unknown", Shape::Events),
        None => ("unknown", Shape::Bytes),
    }
}

/// Whether a tagged event's id is a SIPA type: a category Windows
/// defines (container through DRTM) with only Windows' flag bits above.
pub fn is_sipa(kind: u32) -> bool {
    let category = (kind & CATEGORY) >> 16;
    (1..=0xC).contains(&category) && kind & !(NONMEASURED | AGGREGATION | 0x000F_FFFF) == 0
}

/// Whether an EV_EVENT_TAG's data begins with a tagged event whose id is
/// a SIPA type: a Windows boot's measurement.
pub fn starts_tagged(data: &[u8]) -> bool {
    data.first_chunk::<4>()
        .is_some_and(|id| is_sipa(u32::from_le_bytes(*id)))
}

/// The name of SIPA type `kind` (`BOOTCOUNTER`), `None` for a type
/// Windows does not define.
pub fn name(kind: u32) -> Option<&'static str> {
    TYPES
        .iter()
        .find(|(k, _, _)| *k == kind)
        .map(|(_, n, _)| *n)
}

/// Decodes one SIPA event of type `kind` whose data is `data`, at
/// absolute offset `base`.
pub fn decode(kind: u32, data: &[u8], base: usize) -> Result<SipaEvent, StructError> {
    decode_at(kind, data, base, 0)
}

fn decode_at(kind: u32, data: &[u8], base: usize, depth: usize) -> Result<SipaEvent, StructError> {
    let (name, shape) = shape(kind);
    let value = match shape {
        Shape::Events => {
            if depth >= MAX_DEPTH {
                return Err(StructError {
                    what: "SIPA container",
                    offset: base,
                    reason: format!("nested deeper than {MAX_DEPTH} containers"),
                });
            }
            SipaValue::Events(decode_list(data, base, depth.saturating_add(1))?)
        }
        Shape::Flag if matches!(data, [0 | 1]) => SipaValue::Flag(data == [1]),
        Shape::Number | Shape::Flag if matches!(data.len(), 1 | 2 | 4 | 8) => {
            // Little-endian: byte i is worth 256^i.
            let n = data
                .iter()
                .rev()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            SipaValue::Number(n)
        }
        Shape::Text => utf16(data).map_or_else(|| SipaValue::Bytes(data.to_vec()), SipaValue::Text),
        _ => SipaValue::Bytes(data.to_vec()),
    };
    Ok(SipaEvent { kind, name, value })
}

/// A container's events: `u32` type, `u32` size, data, to the end.
fn decode_list(data: &[u8], base: usize, depth: usize) -> Result<Vec<SipaEvent>, StructError> {
    let short = StructError::short("SIPA event");
    let mut c = Cursor::new(data, base);
    let mut out = Vec::new();
    while !c.is_empty() {
        let kind = c.u32().map_err(&short)?;
        let n = c.len_u32().map_err(&short)?;
        let at = c.offset();
        let body = c.take(n).map_err(&short)?;
        out.push(decode_at(kind, body, at, depth)?);
    }
    Ok(out)
}

/// UTF-16LE text without its terminating NULs; `None` unless every unit
/// decodes and the text is printable.
fn utf16(data: &[u8]) -> Option<String> {
    if data.len() % 2 != 0 {
        return None;
    }
    let mut units: Vec<u16> = data
        .chunks_exact(2)
        .filter_map(|p| p.try_into().ok().map(u16::from_le_bytes))
        .collect();
    while units.last() == Some(&0) {
        units.pop();
    }
    let s = String::from_utf16(&units).ok()?;
    (!s.chars().any(char::is_control)).then_some(s)
}

/// Encodes `events` as a container's data (the inverse of decoding, for
/// tests and tools that build logs).
pub fn encode(events: &[SipaEvent]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        let data = match &e.value {
            SipaValue::Events(inner) => encode(inner),
            SipaValue::Flag(b) => vec![u8::from(*b)],
            SipaValue::Number(n) => n.to_le_bytes().to_vec(),
            SipaValue::Text(t) => t
                .encode_utf16()
                .chain([0])
                .flat_map(u16::to_le_bytes)
                .collect(),
            SipaValue::Bytes(b) => b.clone(),
        };
        out.extend_from_slice(&e.kind.to_le_bytes());
        out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&data);
    }
    out
}

impl SipaEvent {
    /// Every event under this one (itself first), depth first.
    pub fn walk(&self) -> Vec<&SipaEvent> {
        let mut out = vec![self];
        if let SipaValue::Events(inner) = &self.value {
            for e in inner {
                out.extend(e.walk());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: u32, value: SipaValue) -> SipaEvent {
        SipaEvent {
            kind,
            name: shape(kind).0,
            value,
        }
    }

    #[test]
    fn newer_windows_types_are_named_and_kept_as_their_data_allows() {
        for (kind, name) in [
            (0x0002_000C, "IDK_GENERATION_STATUS"),
            (0x0005_0035, "REFS_ROLLBACK_PROTECTION_USER_PAYLOAD_HASH"),
            (0x0005_003D, "VSM_SRTM_ANTI_ROLLBACK_COUNTER"),
            (0x0005_0040, "VTL1_DUMP_CONFIG"),
            (0x0007_000D, "MODULE_ORIGINAL_FILENAME"),
            (0x0007_000E, "MODULE_VERSION"),
            (0x0007_000F, "PUBLISHER_OEMNAME"),
        ] {
            assert!(is_sipa(kind), "{name}");
            assert_eq!(super::name(kind), Some(name));
        }
        // A version's layout is not known from a real log: its bytes, as
        // measured.
        let v = decode(0x0007_000E, &[0, 0, 0x4a, 0x61, 0, 0, 0x0a, 0], 0).unwrap();
        assert_eq!(
            v.value,
            SipaValue::Bytes(vec![0, 0, 0x4a, 0x61, 0, 0, 0x0a, 0])
        );
        let t = decode(0x0007_000D, &[b'n', 0, b't', 0, 0, 0], 0).unwrap();
        assert_eq!(t.value, SipaValue::Text("nt".into()));
    }

    #[test]
    fn a_trust_boundary_with_flags_numbers_and_text() {
        let inner = vec![
            ev(0x0005_0002, SipaValue::Flag(true)),
            ev(0x0002_0002, SipaValue::Number(12)),
            ev(
                0x0007_0001,
                SipaValue::Text("\\Windows\\system32\\winload.efi".into()),
            ),
            ev(0x0007_0004, SipaValue::Bytes(vec![0xab; 32])),
            ev(0x0012_3456, SipaValue::Bytes(vec![1, 2, 3])),
        ];
        let data = encode(&inner);
        let got = decode(0x4001_0001, &data, 100).unwrap();
        assert_eq!(got.name, "TRUSTBOUNDARY");
        assert_eq!(got.value, SipaValue::Events(inner));
        assert_eq!(got.walk().len(), 6);
    }

    #[test]
    fn shapes_that_do_not_fit_stay_bytes() {
        // A "flag" of 2 is a number; a 3-byte number, bytes; odd UTF-16, bytes.
        assert_eq!(
            decode(0x0005_0003, &[2], 0).unwrap().value,
            SipaValue::Number(2)
        );
        assert_eq!(
            decode(0x0002_0002, &[1, 2, 3], 0).unwrap().value,
            SipaValue::Bytes(vec![1, 2, 3])
        );
        assert_eq!(
            decode(0x0007_0001, &[b'a', 0, b'b'], 0).unwrap().value,
            SipaValue::Bytes(vec![b'a', 0, b'b'])
        );
    }

    #[test]
    fn truncation_and_depth_are_typed_errors() {
        let mut data = encode(&[ev(0x0002_0002, SipaValue::Number(1))]);
        data.truncate(data.len() - 1);
        let e = decode(0x4001_0001, &data, 40).unwrap_err();
        // At the size that overruns the container.
        assert_eq!((e.what, e.offset), ("SIPA event", 44));
        let mut nested = ev(0x0002_0002, SipaValue::Number(1));
        for _ in 0..=MAX_DEPTH {
            nested = ev(0x4001_0001, SipaValue::Events(vec![nested]));
        }
        let SipaValue::Events(top) = &nested.value else {
            unreachable!()
        };
        let e = decode(0x4001_0001, &encode(top), 0).unwrap_err();
        assert!(e.reason.contains("nested deeper"), "{e:?}");
    }

    #[test]
    fn what_is_sipa() {
        assert!(is_sipa(0x4001_0001));
        assert!(is_sipa(0x0005_0002));
        assert!(is_sipa(0x8008_0001));
        assert!(!is_sipa(0));
        assert!(!is_sipa(0x0000_0001));
        assert!(!is_sipa(0x0010_0001));
        assert!(!is_sipa(0x2005_0002));
    }
}
