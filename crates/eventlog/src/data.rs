//! Event data, decoded by event type (PC Client PFP §10.4, §9.4.5).

use serde::Serialize;

use crate::cursor::Cursor;
use crate::device_path::DevicePath;
use crate::efi::{EfiVariable, StructError};
use crate::event_type::EventType;
use crate::guid::Guid;
use crate::log::{Event, SpecIdEvent, SPEC_ID_SIGNATURE_AGILE, SPEC_ID_SIGNATURE_LEGACY};
use crate::replay::STARTUP_LOCALITY_SIGNATURE;
use crate::text::TextEncoding;

/// The SP800-155 reference manifest event signature (§10.4.5.2).
pub const SP800_155_SIGNATURE: &[u8; 16] = b"SP800-155 Event\0";
/// The SP800-155 Event3 signature (PFP 1.06 §10.4.5.2.1: with RIM and
/// platform-certificate locators).
pub const SP800_155_EVENT3_SIGNATURE: &[u8; 16] = b"SP800-155 Event3";

/// Decoded event data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventData {
    /// EV_NO_ACTION "Spec ID Event03": the crypto-agile header.
    SpecId(SpecIdEvent),
    /// EV_NO_ACTION "Spec ID Event00": the TCG 1.2 style header.
    SpecIdLegacy {
        /// `platformClass`.
        platform_class: u32,
        /// `specVersionMinor`.
        spec_version_minor: u8,
        /// `specVersionMajor`.
        spec_version_major: u8,
        /// `specErrata`.
        spec_errata: u8,
        /// `uintnSize`.
        uintn_size: u8,
        /// `vendorInfo`.
        #[serde(serialize_with = "crate::ser::hex")]
        vendor_info: Vec<u8>,
    },
    /// EV_NO_ACTION "StartupLocality".
    StartupLocality {
        /// The locality TPM2_Startup came from.
        locality: u8,
    },
    /// EV_NO_ACTION "SP800-155 Event": the platform's reference manifest.
    Sp800_155 {
        /// `PlatformManufacturerId` (SMI enterprise number).
        platform_manufacturer_id: u32,
        /// `ReferenceManifestGuid`.
        reference_manifest_guid: Guid,
        /// `PlatformManufacturerStr`.
        platform_manufacturer: String,
        /// `PlatformModel`.
        platform_model: String,
        /// `PlatformVersion`.
        platform_version: String,
        /// `FirmwareManufacturerStr`.
        firmware_manufacturer: String,
        /// `FirmwareManufacturerId`.
        firmware_manufacturer_id: u32,
        /// `FirmwareVersion`.
        firmware_version: String,
        /// Event3 only: `RIMLocatorType` and `RIMLocator`.
        #[serde(skip_serializing_if = "Option::is_none")]
        rim_locator: Option<Locator>,
        /// Event3 only: `PlatformCertLocatorType` and `PlatformCertLocator`.
        #[serde(skip_serializing_if = "Option::is_none")]
        platform_cert_locator: Option<Locator>,
    },
    /// EV_EFI_SPDM_FIRMWARE_BLOB, _CONFIG, _DEVICE_POLICY, _DEVICE_AUTHORITY
    /// (PFP 1.06 §10.4.7): the DEVICE_SECURITY_EVENT_DATA header decoded,
    /// the device-specific remainder kept raw.
    Spdm {
        /// `Signature` ("SPDM Device Sec", "SPDM Device Sec2", ...).
        signature: String,
        /// `Version`.
        version: u16,
        /// The bytes after the version.
        #[serde(serialize_with = "crate::ser::hex")]
        rest: Vec<u8>,
    },
    /// Any other EV_NO_ACTION event, with its 16-byte signature.
    NoAction {
        /// The signature, as text where printable.
        signature: String,
        /// The bytes after the signature.
        #[serde(serialize_with = "crate::ser::hex")]
        rest: Vec<u8>,
    },
    /// EV_SEPARATOR.
    Separator {
        /// The 32-bit value: 0 normal, 0xFFFFFFFF error.
        value: u32,
        /// Whether the value signals an error (§10.4.1 EV_SEPARATOR).
        error: bool,
    },
    /// Text: EV_EFI_ACTION, EV_ACTION, EV_IPL strings, EV_POST_CODE and
    /// S-CRTM strings, EV_EFI_HCRTM_EVENT, EV_OMIT_BOOT_DEVICE_EVENTS.
    Text {
        /// The string.
        text: String,
        /// How it was encoded.
        encoding: TextEncoding,
    },
    /// UEFI_VARIABLE_DATA: EV_EFI_VARIABLE_DRIVER_CONFIG, _BOOT, _BOOT2,
    /// _AUTHORITY.
    Variable(EfiVariable),
    /// UEFI_IMAGE_LOAD_EVENT: EV_EFI_BOOT_SERVICES_APPLICATION, _DRIVER,
    /// EV_EFI_RUNTIME_SERVICES_DRIVER.
    ImageLoad {
        /// `ImageLocationInMemory`.
        location: u64,
        /// `ImageLengthInMemory`.
        length: u64,
        /// `ImageLinkTimeAddress`.
        link_time_address: u64,
        /// `DevicePath`.
        device_path: DevicePath,
    },
    /// UEFI_GPT_DATA: EV_EFI_GPT_EVENT, EV_EFI_GPT_EVENT2.
    Gpt(GptData),
    /// UEFI_PLATFORM_FIRMWARE_BLOB: EV_EFI_PLATFORM_FIRMWARE_BLOB, and
    /// EV_S_CRTM_CONTENTS / EV_POST_CODE in blob form.
    FirmwareBlob {
        /// `BlobBase`.
        base: u64,
        /// `BlobLength`.
        length: u64,
    },
    /// UEFI_PLATFORM_FIRMWARE_BLOB2: EV_EFI_PLATFORM_FIRMWARE_BLOB2,
    /// EV_POST_CODE2.
    FirmwareBlob2 {
        /// `BlobDescription`.
        description: String,
        /// `BlobBase`.
        base: u64,
        /// `BlobLength`.
        length: u64,
    },
    /// UEFI_HANDOFF_TABLE_POINTERS(2): EV_EFI_HANDOFF_TABLES(2).
    HandoffTables {
        /// `TableDescription` (HANDOFF_TABLES2 only).
        #[serde(skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        /// The tables.
        tables: Vec<ConfigurationTable>,
    },
    /// EV_S_CRTM_VERSION as a GUID (binary form).
    CrtmVersionGuid {
        /// The version GUID.
        guid: Guid,
    },
    /// TCG_PCClientTaggedEvent(s): EV_EVENT_TAG.
    Tagged {
        /// The tagged events.
        events: Vec<TaggedEvent>,
    },
    /// Data kept raw: vendor events, SPDM events, types whose data the spec
    /// leaves to the platform, and binary EV_IPL data.
    Raw {
        /// The bytes.
        #[serde(serialize_with = "crate::ser::hex")]
        data: Vec<u8>,
    },
}

/// A locator of an SP800-155 Event3 (type 0 raw, 1 URI, 2 device path,
/// 3 UEFI variable).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Locator {
    /// The locator type.
    pub locator_type: u32,
    /// The locator.
    #[serde(serialize_with = "crate::ser::hex")]
    pub locator: Vec<u8>,
}

/// EFI_CONFIGURATION_TABLE.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfigurationTable {
    /// `VendorGuid`.
    pub guid: Guid,
    /// `VendorTable` (an address).
    pub address: u64,
}

/// TCG_PCClientTaggedEvent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TaggedEvent {
    /// `taggedEventID`.
    pub id: u32,
    /// `taggedEventData`.
    #[serde(serialize_with = "crate::ser::hex")]
    pub data: Vec<u8>,
    /// The data as text, where printable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The Windows SIPA event it is, when its id is a SIPA type and its
    /// data decodes as one ([`crate::sipa`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sipa: Option<crate::sipa::SipaEvent>,
    /// Why a SIPA-typed event's data did not decode (it is kept raw).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sipa_error: Option<String>,
}

/// UEFI_GPT_DATA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GptData {
    /// `Revision`.
    pub revision: u32,
    /// `HeaderSize`.
    pub header_size: u32,
    /// `MyLBA`.
    pub my_lba: u64,
    /// `AlternateLBA`.
    pub alternate_lba: u64,
    /// `FirstUsableLBA`.
    pub first_usable_lba: u64,
    /// `LastUsableLBA`.
    pub last_usable_lba: u64,
    /// `DiskGUID`.
    pub disk_guid: Guid,
    /// `PartitionEntryLBA`.
    pub partition_entry_lba: u64,
    /// `NumberOfPartitionEntries`.
    pub number_of_partition_entries: u32,
    /// `SizeOfPartitionEntry`.
    pub size_of_partition_entry: u32,
    /// The partitions measured.
    pub partitions: Vec<GptPartition>,
}

/// EFI_PARTITION_ENTRY.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GptPartition {
    /// `PartitionTypeGUID`.
    pub type_guid: Guid,
    /// `UniquePartitionGUID`.
    pub unique_guid: Guid,
    /// `StartingLBA`.
    pub starting_lba: u64,
    /// `EndingLBA`.
    pub ending_lba: u64,
    /// `Attributes`.
    pub attributes: u64,
    /// `PartitionName`.
    pub name: String,
}

/// Why an event's data could not be decoded as its type says. The log
/// still parses: the event is kept, with its raw data.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("event {event} ({event_type}): {source}")]
pub struct DecodeError {
    /// Event number.
    pub event: usize,
    /// The event type.
    pub event_type: EventType,
    /// The structure error, with its absolute offset.
    pub source: StructError,
}

const EFI_HEADER_UINTN: usize = 8;

impl Event {
    /// Decodes the event data by the event's type. `uintn` is the size of
    /// UINTN in bytes (8 unless the Spec ID event says 32-bit).
    pub fn decode(&self) -> Result<EventData, DecodeError> {
        self.decode_with_uintn(EFI_HEADER_UINTN)
    }

    /// As [`Event::decode`], with an explicit UINTN size.
    pub fn decode_with_uintn(&self, uintn: usize) -> Result<EventData, DecodeError> {
        decode(self, uintn).map_err(|source| DecodeError {
            event: self.index,
            event_type: self.event_type,
            source,
        })
    }
}

fn raw(data: &[u8]) -> EventData {
    EventData::Raw {
        data: data.to_vec(),
    }
}

fn text_or_raw(data: &[u8]) -> EventData {
    match crate::text::printable(data) {
        Some((text, encoding)) => EventData::Text { text, encoding },
        None => raw(data),
    }
}

fn decode(e: &Event, uintn: usize) -> Result<EventData, StructError> {
    let d: &[u8] = &e.data;
    let base = e.data_offset;
    Ok(match e.event_type {
        EventType::EV_NO_ACTION => decode_no_action(d, base)?,
        EventType::EV_SEPARATOR => match d {
            [a, b, c, x] => {
                let value = u32::from_le_bytes([*a, *b, *c, *x]);
                EventData::Separator {
                    value,
                    error: value == 0xffff_ffff,
                }
            }
            _ => raw(d),
        },
        EventType::EV_EFI_ACTION
        | EventType::EV_ACTION
        | EventType::EV_EFI_HCRTM_EVENT
        | EventType::EV_OMIT_BOOT_DEVICE_EVENTS
        | EventType::EV_IPL => text_or_raw(d),
        EventType::EV_EFI_VARIABLE_DRIVER_CONFIG
        | EventType::EV_EFI_VARIABLE_BOOT
        | EventType::EV_EFI_VARIABLE_BOOT2 => {
            EventData::Variable(EfiVariable::parse(d, base)?.with_content(false))
        }
        EventType::EV_EFI_VARIABLE_AUTHORITY => {
            EventData::Variable(EfiVariable::parse(d, base)?.with_content(true))
        }
        EventType::EV_EFI_BOOT_SERVICES_APPLICATION
        | EventType::EV_EFI_BOOT_SERVICES_DRIVER
        | EventType::EV_EFI_RUNTIME_SERVICES_DRIVER => decode_image_load(d, base, uintn)?,
        EventType::EV_EFI_GPT_EVENT | EventType::EV_EFI_GPT_EVENT2 => {
            EventData::Gpt(decode_gpt(d, base)?)
        }
        EventType::EV_EFI_PLATFORM_FIRMWARE_BLOB => decode_blob(d, base)?,
        EventType::EV_EFI_PLATFORM_FIRMWARE_BLOB2 | EventType::EV_POST_CODE2 => {
            decode_blob2(d, base)?
        }
        EventType::EV_EFI_HANDOFF_TABLES => decode_handoff(d, base, uintn, false)?,
        EventType::EV_EFI_HANDOFF_TABLES2 => decode_handoff(d, base, uintn, true)?,
        EventType::EV_S_CRTM_VERSION => match crate::text::printable(d) {
            Some((text, encoding)) => EventData::Text { text, encoding },
            // An empty CHAR16 string (GCE's firmware logs just the NUL).
            None if d.len() == 2 && d.iter().all(|b| *b == 0) => EventData::Text {
                text: String::new(),
                encoding: TextEncoding::Utf16le,
            },
            None => match <[u8; 16]>::try_from(d) {
                Ok(g) => EventData::CrtmVersionGuid {
                    guid: Guid::from_bytes(g),
                },
                Err(_) => raw(d),
            },
        },
        // Either a UEFI_PLATFORM_FIRMWARE_BLOB or a string (§10.4.1).
        EventType::EV_S_CRTM_CONTENTS | EventType::EV_POST_CODE => {
            if d.len() == 16 {
                decode_blob(d, base)?
            } else {
                text_or_raw(d)
            }
        }
        EventType::EV_EVENT_TAG => decode_tagged(d, base)?,
        EventType::EV_EFI_SPDM_FIRMWARE_BLOB
        | EventType::EV_EFI_SPDM_FIRMWARE_CONFIG
        | EventType::EV_EFI_SPDM_DEVICE_POLICY
        | EventType::EV_EFI_SPDM_DEVICE_AUTHORITY => {
            let short = StructError::short("DEVICE_SECURITY_EVENT_DATA");
            let mut c = Cursor::new(d, base);
            let sig = c.take(16).map_err(&short)?;
            let signature = String::from_utf8_lossy(sig)
                .trim_end_matches('\0')
                .to_string();
            let version = c.u16().map_err(&short)?;
            EventData::Spdm {
                signature,
                version,
                rest: c.rest().to_vec(),
            }
        }
        _ => raw(d),
    })
}

fn decode_no_action(d: &[u8], base: usize) -> Result<EventData, StructError> {
    let short = StructError::short("EV_NO_ACTION event");
    if d.starts_with(SPEC_ID_SIGNATURE_AGILE) {
        let spec = SpecIdEvent::parse(d, base).map_err(|e| StructError {
            what: "TCG_EfiSpecIdEvent",
            offset: base,
            reason: e.to_string(),
        })?;
        return Ok(EventData::SpecId(spec));
    }
    let mut c = Cursor::new(d, base);
    if d.starts_with(SPEC_ID_SIGNATURE_LEGACY) {
        c.take(16).map_err(&short)?;
        let platform_class = c.u32().map_err(&short)?;
        let spec_version_minor = c.u8().map_err(&short)?;
        let spec_version_major = c.u8().map_err(&short)?;
        let spec_errata = c.u8().map_err(&short)?;
        let uintn_size = c.u8().map_err(&short)?;
        let n = usize::from(c.u8().map_err(&short)?);
        let vendor_info = c.take(n).map_err(&short)?.to_vec();
        return Ok(EventData::SpecIdLegacy {
            platform_class,
            spec_version_minor,
            spec_version_major,
            spec_errata,
            uintn_size,
            vendor_info,
        });
    }
    if let Some([locality]) = d.strip_prefix(STARTUP_LOCALITY_SIGNATURE) {
        return Ok(EventData::StartupLocality {
            locality: *locality,
        });
    }
    let event3 = d.starts_with(SP800_155_EVENT3_SIGNATURE);
    if event3 || d.starts_with(SP800_155_SIGNATURE) {
        c.take(16).map_err(&short)?;
        let string = |c: &mut Cursor<'_>| -> Result<String, StructError> {
            let n = usize::from(c.u8().map_err(&short)?);
            let bytes = c.take(n).map_err(&short)?;
            Ok(String::from_utf8_lossy(bytes)
                .trim_end_matches('\0')
                .to_string())
        };
        let platform_manufacturer_id = c.u32().map_err(&short)?;
        let reference_manifest_guid = c.guid().map_err(&short)?;
        let platform_manufacturer = string(&mut c)?;
        let platform_model = string(&mut c)?;
        let platform_version = string(&mut c)?;
        let firmware_manufacturer = string(&mut c)?;
        let firmware_manufacturer_id = c.u32().map_err(&short)?;
        let firmware_version = string(&mut c)?;
        let locator = |c: &mut Cursor<'_>| -> Result<Locator, StructError> {
            let locator_type = c.u32().map_err(&short)?;
            let n = c.len_u32().map_err(&short)?;
            let locator = c.take(n).map_err(&short)?.to_vec();
            Ok(Locator {
                locator_type,
                locator,
            })
        };
        let (rim_locator, platform_cert_locator) = if event3 {
            (Some(locator(&mut c)?), Some(locator(&mut c)?))
        } else {
            (None, None)
        };
        return Ok(EventData::Sp800_155 {
            platform_manufacturer_id,
            reference_manifest_guid,
            platform_manufacturer,
            platform_model,
            platform_version,
            firmware_manufacturer,
            firmware_manufacturer_id,
            firmware_version,
            rim_locator,
            platform_cert_locator,
        });
    }
    let (sig, rest) = d.split_at(d.len().min(16));
    let signature = match crate::text::printable(sig) {
        Some((t, _)) => t,
        None => crate::hex::encode(sig),
    };
    Ok(EventData::NoAction {
        signature,
        rest: rest.to_vec(),
    })
}

fn uintn(c: &mut Cursor<'_>, size: usize) -> Result<u64, crate::cursor::Short> {
    if size == 4 {
        c.u32().map(u64::from)
    } else {
        c.u64()
    }
}

fn decode_image_load(d: &[u8], base: usize, size: usize) -> Result<EventData, StructError> {
    const WHAT: &str = "UEFI_IMAGE_LOAD_EVENT";
    let short = StructError::short(WHAT);
    let mut c = Cursor::new(d, base);
    let location = c.u64().map_err(&short)?;
    let length = uintn(&mut c, size).map_err(&short)?;
    let link_time_address = uintn(&mut c, size).map_err(&short)?;
    let len_at = c.offset();
    let path_len = uintn(&mut c, size).map_err(&short)?;
    let path_len = usize::try_from(path_len).unwrap_or(usize::MAX);
    let path_at = c.offset();
    let path = c.take(path_len).map_err(|s| StructError {
        what: WHAT,
        offset: len_at,
        reason: format!(
            "LengthOfDevicePath {path_len} exceeds the {} bytes left",
            s.available
        ),
    })?;
    let device_path = DevicePath::parse(path, path_at).map_err(|e| StructError {
        what: WHAT,
        offset: e.offset,
        reason: e.reason,
    })?;
    Ok(EventData::ImageLoad {
        location,
        length,
        link_time_address,
        device_path,
    })
}

fn decode_gpt(d: &[u8], base: usize) -> Result<GptData, StructError> {
    const WHAT: &str = "UEFI_GPT_DATA";
    let short = StructError::short(WHAT);
    let mut c = Cursor::new(d, base);
    let sig_at = c.offset();
    let sig = c.take(8).map_err(&short)?;
    if sig != b"EFI PART" {
        return Err(StructError {
            what: WHAT,
            offset: sig_at,
            reason: "header signature is not \"EFI PART\"".into(),
        });
    }
    let revision = c.u32().map_err(&short)?;
    let header_size = c.u32().map_err(&short)?;
    let _header_crc = c.u32().map_err(&short)?;
    let _reserved = c.u32().map_err(&short)?;
    let my_lba = c.u64().map_err(&short)?;
    let alternate_lba = c.u64().map_err(&short)?;
    let first_usable_lba = c.u64().map_err(&short)?;
    let last_usable_lba = c.u64().map_err(&short)?;
    let disk_guid = c.guid().map_err(&short)?;
    let partition_entry_lba = c.u64().map_err(&short)?;
    let number_of_partition_entries = c.u32().map_err(&short)?;
    let size_of_partition_entry = c.u32().map_err(&short)?;
    let _array_crc = c.u32().map_err(&short)?;
    let n_at = c.offset();
    let n = c.u64().map_err(&short)?;
    let entry = usize::try_from(size_of_partition_entry).unwrap_or(usize::MAX);
    if entry < 128 {
        return Err(StructError {
            what: WHAT,
            offset: n_at,
            reason: format!("SizeOfPartitionEntry {entry} is below 128"),
        });
    }
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    if n > c.remaining().checked_div(entry).unwrap_or(0) {
        return Err(StructError {
            what: WHAT,
            offset: n_at,
            reason: format!("NumberOfPartitions {n} exceeds the event data"),
        });
    }
    let mut partitions = Vec::with_capacity(n);
    for _ in 0..n {
        let at = c.offset();
        let bytes = c.take(entry).map_err(&short)?;
        let mut p = Cursor::new(bytes, at);
        let type_guid = p.guid().map_err(&short)?;
        let unique_guid = p.guid().map_err(&short)?;
        let starting_lba = p.u64().map_err(&short)?;
        let ending_lba = p.u64().map_err(&short)?;
        let attributes = p.u64().map_err(&short)?;
        let name_raw = p.take(72).map_err(&short)?;
        let name = crate::text::utf16le_nul(name_raw)
            .map(|(s, _)| s)
            .or_else(|| crate::text::utf16le(name_raw))
            .unwrap_or_default();
        partitions.push(GptPartition {
            type_guid,
            unique_guid,
            starting_lba,
            ending_lba,
            attributes,
            name,
        });
    }
    Ok(GptData {
        revision,
        header_size,
        my_lba,
        alternate_lba,
        first_usable_lba,
        last_usable_lba,
        disk_guid,
        partition_entry_lba,
        number_of_partition_entries,
        size_of_partition_entry,
        partitions,
    })
}

fn decode_blob(d: &[u8], base: usize) -> Result<EventData, StructError> {
    let short = StructError::short("UEFI_PLATFORM_FIRMWARE_BLOB");
    let mut c = Cursor::new(d, base);
    let blob = EventData::FirmwareBlob {
        base: c.u64().map_err(&short)?,
        length: c.u64().map_err(&short)?,
    };
    Ok(blob)
}

fn decode_blob2(d: &[u8], base: usize) -> Result<EventData, StructError> {
    let short = StructError::short("UEFI_PLATFORM_FIRMWARE_BLOB2");
    let mut c = Cursor::new(d, base);
    let n = usize::from(c.u8().map_err(&short)?);
    let desc = c.take(n).map_err(&short)?;
    let description = String::from_utf8_lossy(desc)
        .trim_end_matches('\0')
        .to_string();
    Ok(EventData::FirmwareBlob2 {
        description,
        base: c.u64().map_err(&short)?,
        length: c.u64().map_err(&short)?,
    })
}

fn decode_handoff(
    d: &[u8],
    base: usize,
    size: usize,
    with_description: bool,
) -> Result<EventData, StructError> {
    const WHAT: &str = "UEFI_HANDOFF_TABLE_POINTERS";
    let short = StructError::short(WHAT);
    let mut c = Cursor::new(d, base);
    let description = if with_description {
        let n = usize::from(c.u8().map_err(&short)?);
        let desc = c.take(n).map_err(&short)?;
        Some(
            String::from_utf8_lossy(desc)
                .trim_end_matches('\0')
                .to_string(),
        )
    } else {
        None
    };
    let n_at = c.offset();
    let n = uintn(&mut c, size).map_err(&short)?;
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    let entry = 16usize.saturating_add(size);
    if n > c.remaining().checked_div(entry).unwrap_or(0) {
        return Err(StructError {
            what: WHAT,
            offset: n_at,
            reason: format!("NumberOfTables {n} exceeds the event data"),
        });
    }
    let mut tables = Vec::with_capacity(n);
    for _ in 0..n {
        let guid = c.guid().map_err(&short)?;
        let address = uintn(&mut c, size).map_err(&short)?;
        tables.push(ConfigurationTable { guid, address });
    }
    Ok(EventData::HandoffTables {
        description,
        tables,
    })
}

fn decode_tagged(d: &[u8], base: usize) -> Result<EventData, StructError> {
    let short = StructError::short("TCG_PCClientTaggedEvent");
    let mut c = Cursor::new(d, base);
    let mut events = Vec::new();
    while !c.is_empty() {
        let id = c.u32().map_err(&short)?;
        let n = c.len_u32().map_err(&short)?;
        let at = c.offset();
        let data = c.take(n).map_err(&short)?.to_vec();
        let (sipa, sipa_error) = if crate::sipa::is_sipa(id) {
            match crate::sipa::decode(id, &data, at) {
                Ok(e) => (Some(e), None),
                Err(e) => (None, Some(e.to_string())),
            }
        } else {
            (None, None)
        };
        let text = if sipa.is_some() {
            None
        } else {
            crate::text::printable(&data).map(|(t, _)| t)
        };
        events.push(TaggedEvent {
            id,
            data,
            text,
            sipa,
            sipa_error,
        });
    }
    Ok(EventData::Tagged { events })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alg::{Digest, HashAlg};

    fn event(t: EventType, data: Vec<u8>) -> Event {
        Event {
            index: 3,
            offset: 100,
            pcr: 0,
            event_type: t,
            digests: smallvec::smallvec![Digest::zero(HashAlg::Sha1)],
            data: data.into(),
            data_offset: 132,
        }
    }

    fn sized(s: &[u8]) -> Vec<u8> {
        let mut v = vec![u8::try_from(s.len()).unwrap()];
        v.extend_from_slice(s);
        v
    }

    #[test]
    fn separators_normal_and_error() {
        let e = event(EventType::EV_SEPARATOR, vec![0; 4]);
        assert_eq!(
            e.decode().unwrap(),
            EventData::Separator {
                value: 0,
                error: false
            }
        );
        let e = event(EventType::EV_SEPARATOR, vec![0xff; 4]);
        assert_eq!(
            e.decode().unwrap(),
            EventData::Separator {
                value: 0xffff_ffff,
                error: true
            }
        );
    }

    #[test]
    fn sp800_155_event3_with_locators() {
        let mut d = SP800_155_EVENT3_SIGNATURE.to_vec();
        d.extend_from_slice(&311u32.to_le_bytes());
        d.extend_from_slice(&Guid::GLOBAL_VARIABLE.to_bytes());
        for s in [&b"Acme"[..], b"Model 1", b"1.0", b"FW Inc"] {
            d.extend(sized(s));
        }
        d.extend_from_slice(&42u32.to_le_bytes());
        d.extend(sized(b"2.3"));
        for (t, loc) in [(1u32, &b"https://rim"[..]), (0, b"")] {
            d.extend_from_slice(&t.to_le_bytes());
            d.extend_from_slice(&u32::try_from(loc.len()).unwrap().to_le_bytes());
            d.extend_from_slice(loc);
        }
        let got = event(EventType::EV_NO_ACTION, d).decode().unwrap();
        let EventData::Sp800_155 {
            platform_manufacturer,
            firmware_manufacturer_id,
            firmware_version,
            rim_locator,
            platform_cert_locator,
            ..
        } = got
        else {
            panic!("{got:?}");
        };
        assert_eq!(platform_manufacturer, "Acme");
        assert_eq!(firmware_manufacturer_id, 42);
        assert_eq!(firmware_version, "2.3");
        assert_eq!(rim_locator.unwrap().locator, b"https://rim");
        assert_eq!(platform_cert_locator.unwrap().locator_type, 0);
    }

    #[test]
    fn truncated_structures_name_their_offset() {
        let mut d = SP800_155_SIGNATURE.to_vec();
        d.extend_from_slice(&[1, 2]);
        let err = event(EventType::EV_NO_ACTION, d).decode().unwrap_err();
        assert_eq!(err.event, 3);
        assert_eq!(err.source.offset, 132 + 16);
        let err = event(EventType::EV_EFI_VARIABLE_DRIVER_CONFIG, vec![0; 20])
            .decode()
            .unwrap_err();
        assert!(err.to_string().contains("UEFI_VARIABLE_DATA"), "{err}");
    }

    #[test]
    fn blobs_handoff_tables_and_tags() {
        let mut d = sized(b"POST CODE");
        d.extend_from_slice(&0x1000u64.to_le_bytes());
        d.extend_from_slice(&0x20u64.to_le_bytes());
        assert_eq!(
            event(EventType::EV_EFI_PLATFORM_FIRMWARE_BLOB2, d)
                .decode()
                .unwrap(),
            EventData::FirmwareBlob2 {
                description: "POST CODE".into(),
                base: 0x1000,
                length: 0x20
            }
        );
        let mut d = sized(b"SMBIOS");
        d.extend_from_slice(&1u64.to_le_bytes());
        d.extend_from_slice(&Guid::SHIM_LOCK.to_bytes());
        d.extend_from_slice(&0xdead_beefu64.to_le_bytes());
        let got = event(EventType::EV_EFI_HANDOFF_TABLES2, d)
            .decode()
            .unwrap();
        assert_eq!(
            got,
            EventData::HandoffTables {
                description: Some("SMBIOS".into()),
                tables: vec![ConfigurationTable {
                    guid: Guid::SHIM_LOCK,
                    address: 0xdead_beef
                }]
            }
        );
        // A table count larger than the data is refused before allocating.
        let mut d = u64::MAX.to_le_bytes().to_vec();
        d.extend_from_slice(&[0; 24]);
        assert!(event(EventType::EV_EFI_HANDOFF_TABLES, d).decode().is_err());
        let mut d = 7u32.to_le_bytes().to_vec();
        d.extend_from_slice(&3u32.to_le_bytes());
        d.extend_from_slice(b"abc");
        let EventData::Tagged { events } = event(EventType::EV_EVENT_TAG, d).decode().unwrap()
        else {
            panic!("tagged");
        };
        assert_eq!(events[0].id, 7);
        assert_eq!(events[0].text.as_deref(), Some("abc"));
    }

    #[test]
    fn spdm_header_and_hcrtm_text() {
        let mut d = b"SPDM Device Sec2".to_vec();
        d.extend_from_slice(&2u16.to_le_bytes());
        d.extend_from_slice(&[9, 9]);
        assert_eq!(
            event(EventType::EV_EFI_SPDM_FIRMWARE_BLOB, d)
                .decode()
                .unwrap(),
            EventData::Spdm {
                signature: "SPDM Device Sec2".into(),
                version: 2,
                rest: vec![9, 9]
            }
        );
        assert_eq!(
            event(EventType::EV_EFI_HCRTM_EVENT, b"HCRTM".to_vec())
                .decode()
                .unwrap(),
            EventData::Text {
                text: "HCRTM".into(),
                encoding: TextEncoding::Utf8
            }
        );
        let vendor = event(EventType(0x0000_8001), vec![1, 2, 3]);
        assert_eq!(vendor.event_type.display_name(), "EV_VENDOR_0x00008001");
        assert_eq!(
            vendor.decode().unwrap(),
            EventData::Raw {
                data: vec![1, 2, 3]
            }
        );
    }

    #[test]
    fn gpt_partitions() {
        let mut d = b"EFI PART".to_vec();
        d.extend_from_slice(&0x0001_0000u32.to_le_bytes());
        d.extend_from_slice(&92u32.to_le_bytes());
        d.extend_from_slice(&[0; 8]);
        for v in [1u64, 100, 34, 90] {
            d.extend_from_slice(&v.to_le_bytes());
        }
        d.extend_from_slice(&Guid::GLOBAL_VARIABLE.to_bytes());
        d.extend_from_slice(&2u64.to_le_bytes());
        d.extend_from_slice(&128u32.to_le_bytes());
        d.extend_from_slice(&128u32.to_le_bytes());
        d.extend_from_slice(&0u32.to_le_bytes());
        d.extend_from_slice(&1u64.to_le_bytes());
        let mut p = vec![0u8; 128];
        p[32..40].copy_from_slice(&2048u64.to_le_bytes());
        let name: Vec<u8> = "EFI system"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        p[56..56 + name.len()].copy_from_slice(&name);
        d.extend(p);
        let EventData::Gpt(g) = event(EventType::EV_EFI_GPT_EVENT, d).decode().unwrap() else {
            panic!("gpt");
        };
        assert_eq!(g.partitions.len(), 1);
        assert_eq!(g.partitions[0].starting_lba, 2048);
        assert_eq!(g.partitions[0].name, "EFI system");
    }
}
