//! edk2 OVMF variable stores (the `OVMF_VARS*.fd` flash image): read, list,
//! modify and write authenticated variables.
//!
//! Layout (edk2 `MdePkg/Include/Pi/PiFirmwareVolume.h`,
//! `MdeModulePkg/Include/Guid/VariableFormat.h`): an
//! EFI_FIRMWARE_VOLUME_HEADER (`_FVH`, file system GUID
//! EFI_SYSTEM_NV_DATA_FV_GUID, 16-bit checksum over the header), then a
//! VARIABLE_STORE_HEADER (authenticated-variable GUID, size, format 0x5A,
//! state 0xFE), then AUTHENTICATED_VARIABLE_HEADERs, each followed by the
//! UTF-16 name and the data, 4-byte aligned, until a header without StartId
//! 0x55AA. What follows the store (FTW working block, spare area) is kept
//! byte for byte.
//!
//! Writing mirrors `virt-fw-vars` (virt-firmware): live variables are
//! rewritten compacted, sorted by name, with State VAR_ADDED, the rest of
//! the store filled with 0xFF. Deleted and superseded variables are dropped.
//!
//! Not done here: edk2's "in deleted transition" recovery beyond keeping the
//! transitional copy when no VAR_ADDED copy exists; signing of authenticated
//! variable updates (the store is written directly, as firmware would).

mod json;
mod keys;
mod time;

pub use json::{VarStoreJson, VariableJson};
pub use keys::{KeyTemplate, SecureBootVar};
pub use time::{cert_not_before, EfiTime};

use trustlaunch_eventlog::Guid;

use crate::siglist::{SigListError, SignatureDb};

/// EFI_VARIABLE_NON_VOLATILE.
pub const ATTR_NON_VOLATILE: u32 = 0x1;
/// EFI_VARIABLE_BOOTSERVICE_ACCESS.
pub const ATTR_BOOTSERVICE_ACCESS: u32 = 0x2;
/// EFI_VARIABLE_RUNTIME_ACCESS.
pub const ATTR_RUNTIME_ACCESS: u32 = 0x4;
/// EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS.
pub const ATTR_TIME_BASED_AUTH: u32 = 0x20;
/// Attributes of PK, KEK, db, dbx: NV | BS | RT | time-based auth (0x27).
pub const ATTR_SECURE_BOOT_DB: u32 =
    ATTR_NON_VOLATILE | ATTR_BOOTSERVICE_ACCESS | ATTR_RUNTIME_ACCESS | ATTR_TIME_BASED_AUTH;
/// Attributes of SecureBootEnable and CustomMode: NV | BS (3).
pub const ATTR_NV_BS: u32 = ATTR_NON_VOLATILE | ATTR_BOOTSERVICE_ACCESS;

/// EFI_SYSTEM_NV_DATA_FV_GUID.
pub const NV_DATA_FV: Guid = Guid::from_fields(
    0xfff1_2b8d,
    0x7696,
    0x4c8b,
    [0xa9, 0x85, 0x27, 0x47, 0x07, 0x5b, 0x4f, 0x50],
);
/// EFI_FIRMWARE_FILE_SYSTEM2_GUID.
pub const FFS2: Guid = Guid::from_fields(
    0x8c8c_e578,
    0x8a3d,
    0x4f1c,
    [0x99, 0x35, 0x89, 0x61, 0x85, 0xc3, 0x2d, 0xd3],
);
/// EFI_AUTHENTICATED_VARIABLE_GUID (the variable store signature).
pub const AUTH_VARIABLE_STORE: Guid = Guid::from_fields(
    0xaaf3_2c78,
    0x947b,
    0x439a,
    [0xa1, 0x80, 0x2e, 0x14, 0x4e, 0xc3, 0x77, 0x92],
);
/// EFI_SECURE_BOOT_ENABLE_DISABLE (edk2): SecureBootEnable.
pub const SECURE_BOOT_ENABLE_DISABLE: Guid = Guid::from_fields(
    0xf0a3_0bc7,
    0xaf08,
    0x4556,
    [0x99, 0xc4, 0x00, 0x10, 0x09, 0xc9, 0x3a, 0x44],
);
/// EFI_CUSTOM_MODE_ENABLE_GUID (edk2): CustomMode.
pub const CUSTOM_MODE_ENABLE: Guid = Guid::from_fields(
    0xc076_ec0c,
    0x7028,
    0x4399,
    [0xa0, 0x72, 0x71, 0xee, 0x5c, 0x44, 0x8b, 0x9f],
);
/// OVMF EnrollDefaultKeys owner GUID (virt-fw-vars' default owner).
pub const OVMF_ENROLL_DEFAULT_KEYS: Guid = Guid::from_fields(
    0xa0ba_a8a3,
    0x041d,
    0x48a8,
    [0xbc, 0x87, 0xc3, 0x6d, 0x12, 0x1b, 0x5e, 0x3d],
);

const FVH_SIGNATURE: u32 = 0x4856_465f; // "_FVH"
const STORE_HEADER_LEN: usize = 28;
const VAR_HEADER_LEN: usize = 60;
const START_ID: u16 = 0x55aa;
const VAR_ADDED: u8 = 0x3f;
/// VAR_ADDED & VAR_IN_DELETED_TRANSITION.
const VAR_ADDED_IN_TRANSITION: u8 = 0x3e;
const FORMAT_FORMATTED: u8 = 0x5a;
const STATE_HEALTHY: u8 = 0xfe;

/// Why a variable store did not parse or could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VarStoreError {
    /// A structure at `offset` runs past the end of the image.
    #[error("truncated at offset {offset:#x}: need {need} bytes")]
    Truncated {
        /// Offset of the structure.
        offset: usize,
        /// Bytes needed.
        need: usize,
    },
    /// No `_FVH` signature.
    #[error("no firmware volume signature at offset 0x28")]
    NotFirmwareVolume,
    /// The volume is not an NV data volume.
    #[error("firmware volume file system {0} is not the NV data GUID")]
    NotNvData(Guid),
    /// The 16-bit sum over the volume header is not zero.
    #[error("firmware volume header checksum is {0:#06x}, not 0")]
    BadChecksum(u16),
    /// The variable store is not an authenticated one.
    #[error("variable store signature {0} is not the authenticated variable GUID")]
    NotAuthenticatedStore(Guid),
    /// Format or state not 0x5A / 0xFE.
    #[error("variable store format {format:#x} / state {state:#x} not formatted and healthy")]
    BadStoreState {
        /// Format byte.
        format: u8,
        /// State byte.
        state: u8,
    },
    /// A header length or store size is out of range.
    #[error("bad size field at offset {offset:#x}")]
    BadSize {
        /// Offset of the field.
        offset: usize,
    },
    /// A variable name is not NUL-terminated UTF-16.
    #[error("variable at offset {offset:#x}: name is not NUL-terminated UTF-16")]
    BadName {
        /// Offset of the variable header.
        offset: usize,
    },
    /// The variables do not fit in the store.
    #[error("variables need {need} bytes, the store has {have}")]
    StoreFull {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// A value too large for its field.
    #[error("variable too large")]
    TooLarge,
    /// A signature database inside a variable did not parse or build.
    #[error("variable {name}: {source}")]
    SigList {
        /// Variable name.
        name: String,
        /// The error.
        source: SigListError,
    },
    /// A certificate could not be parsed (for its notBefore).
    #[error("certificate does not parse: {0}")]
    BadCertificate(String),
    /// A date and time that is not `YYYY-MM-DD HH:MM:SS` (UTC, 1970-9999)
    /// or not a real date.
    #[error("time {0:?}: expected YYYY-MM-DD HH:MM:SS (UTC)")]
    BadTime(String),
    /// A JSON field is malformed.
    #[error("bad JSON field {field} of variable {name}")]
    BadJson {
        /// Variable name.
        name: String,
        /// Field.
        field: &'static str,
    },
    /// A template store lacks a variable.
    #[error("template lacks variable {0}")]
    MissingVariable(String),
}

fn take(buf: &[u8], at: usize, n: usize) -> Result<&[u8], VarStoreError> {
    at.checked_add(n)
        .and_then(|end| buf.get(at..end))
        .ok_or(VarStoreError::Truncated {
            offset: at,
            need: n,
        })
}

fn arr<const N: usize>(buf: &[u8], at: usize) -> Result<[u8; N], VarStoreError> {
    take(buf, at, N)?
        .try_into()
        .map_err(|_| VarStoreError::Truncated {
            offset: at,
            need: N,
        })
}

fn u16_at(buf: &[u8], at: usize) -> Result<u16, VarStoreError> {
    Ok(u16::from_le_bytes(arr(buf, at)?))
}
fn u32_at(buf: &[u8], at: usize) -> Result<u32, VarStoreError> {
    Ok(u32::from_le_bytes(arr(buf, at)?))
}
fn u64_at(buf: &[u8], at: usize) -> Result<u64, VarStoreError> {
    Ok(u64::from_le_bytes(arr(buf, at)?))
}
fn guid_at(buf: &[u8], at: usize) -> Result<Guid, VarStoreError> {
    Ok(Guid::from_bytes(arr(buf, at)?))
}
fn off(base: usize, add: usize) -> Result<usize, VarStoreError> {
    base.checked_add(add)
        .ok_or(VarStoreError::BadSize { offset: base })
}

/// One authenticated variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variable {
    /// Name (without the terminating NUL).
    pub name: String,
    /// VendorGuid.
    pub guid: Guid,
    /// Attributes.
    pub attributes: u32,
    /// MonotonicCount.
    pub monotonic_count: u64,
    /// TimeStamp (zero unless time-based authenticated).
    pub timestamp: EfiTime,
    /// PubKeyIndex.
    pub pubkey_index: u32,
    /// Data.
    pub data: Vec<u8>,
}

impl Variable {
    /// A new variable with zero count, timestamp and key index.
    pub fn new(name: &str, guid: Guid, attributes: u32, data: Vec<u8>) -> Self {
        Variable {
            name: name.to_owned(),
            guid,
            attributes,
            monotonic_count: 0,
            timestamp: EfiTime::default(),
            pubkey_index: 0,
            data,
        }
    }

    /// Moves the timestamp forward to `ts` if the variable is time-based
    /// authenticated (virt-fw-vars `update_time`).
    pub fn update_time(&mut self, ts: EfiTime) {
        if self.attributes & ATTR_TIME_BASED_AUTH != 0
            && (self.timestamp.is_zero() || self.timestamp.key() < ts.key())
        {
            self.timestamp = ts;
        }
    }

    /// The data as a signature database.
    pub fn signature_db(&self) -> Result<SignatureDb, VarStoreError> {
        SignatureDb::parse(&self.data).map_err(|source| VarStoreError::SigList {
            name: self.name.clone(),
            source,
        })
    }

    fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), VarStoreError> {
        let mut name: Vec<u8> = self
            .name
            .encode_utf16()
            .chain([0u16])
            .flat_map(u16::to_le_bytes)
            .collect();
        let name_size = u32::try_from(name.len()).map_err(|_| VarStoreError::TooLarge)?;
        let data_size = u32::try_from(self.data.len()).map_err(|_| VarStoreError::TooLarge)?;
        out.extend_from_slice(&START_ID.to_le_bytes());
        out.push(VAR_ADDED);
        out.push(0);
        out.extend_from_slice(&self.attributes.to_le_bytes());
        out.extend_from_slice(&self.monotonic_count.to_le_bytes());
        out.extend_from_slice(&self.timestamp.to_bytes());
        out.extend_from_slice(&self.pubkey_index.to_le_bytes());
        out.extend_from_slice(&name_size.to_le_bytes());
        out.extend_from_slice(&data_size.to_le_bytes());
        out.extend_from_slice(&self.guid.to_bytes());
        out.append(&mut name);
        out.extend_from_slice(&self.data);
        while out.len() % 4 != 0 {
            out.push(0xff);
        }
        Ok(())
    }
}

/// A parsed OVMF variable store image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VarStore {
    image: Vec<u8>,
    start: usize,
    end: usize,
    /// The live variables in store order.
    pub variables: Vec<Variable>,
}

impl VarStore {
    /// Parses a VARS image.
    pub fn parse(image: &[u8]) -> Result<Self, VarStoreError> {
        let fs = guid_at(image, 16)?;
        if u32_at(image, 40)? != FVH_SIGNATURE {
            return Err(VarStoreError::NotFirmwareVolume);
        }
        if fs != NV_DATA_FV {
            return Err(VarStoreError::NotNvData(fs));
        }
        let hlen = usize::from(u16_at(image, 48)?);
        if hlen < 56 {
            return Err(VarStoreError::BadSize { offset: 48 });
        }
        let header = take(image, 0, hlen)?;
        let sum = header
            .chunks(2)
            .map(|c| {
                u16::from_le_bytes([
                    c.first().copied().unwrap_or(0),
                    c.get(1).copied().unwrap_or(0),
                ])
            })
            .fold(0u16, u16::wrapping_add);
        if sum != 0 {
            return Err(VarStoreError::BadChecksum(sum));
        }
        let sig = guid_at(image, hlen)?;
        if sig != AUTH_VARIABLE_STORE {
            return Err(VarStoreError::NotAuthenticatedStore(sig));
        }
        let size = u32_at(image, off(hlen, 16)?)? as usize;
        let format = *take(image, off(hlen, 20)?, 1)?.first().unwrap_or(&0);
        let state = *take(image, off(hlen, 21)?, 1)?.first().unwrap_or(&0);
        if format != FORMAT_FORMATTED || state != STATE_HEALTHY {
            return Err(VarStoreError::BadStoreState { format, state });
        }
        let start = off(hlen, STORE_HEADER_LEN)?;
        let end = off(hlen, size)?;
        if end > image.len() || end < start {
            return Err(VarStoreError::BadSize {
                offset: off(hlen, 16)?,
            });
        }
        let store = image.get(..end).unwrap_or_default();
        let mut found: Vec<(u8, Variable)> = Vec::new();
        let mut pos = start;
        while off(pos, VAR_HEADER_LEN)? <= end && u16_at(store, pos)? == START_ID {
            let vstate = *take(store, off(pos, 2)?, 1)?.first().unwrap_or(&0);
            let attributes = u32_at(store, off(pos, 4)?)?;
            let monotonic_count = u64_at(store, off(pos, 8)?)?;
            let timestamp = EfiTime::from_bytes(arr(store, off(pos, 16)?)?);
            let pubkey_index = u32_at(store, off(pos, 32)?)?;
            let name_size = u32_at(store, off(pos, 36)?)? as usize;
            let data_size = u32_at(store, off(pos, 40)?)? as usize;
            let guid = guid_at(store, off(pos, 44)?)?;
            let name_at = off(pos, VAR_HEADER_LEN)?;
            let name_bytes = take(store, name_at, name_size)?;
            let data = take(store, off(name_at, name_size)?, data_size)?;
            if vstate == VAR_ADDED || vstate == VAR_ADDED_IN_TRANSITION {
                let name = decode_name(name_bytes).ok_or(VarStoreError::BadName { offset: pos })?;
                found.push((
                    vstate,
                    Variable {
                        name,
                        guid,
                        attributes,
                        monotonic_count,
                        timestamp,
                        pubkey_index,
                        data: data.to_vec(),
                    },
                ));
            }
            let next = off(off(name_at, name_size)?, data_size)?;
            pos = next
                .checked_next_multiple_of(4)
                .ok_or(VarStoreError::BadSize { offset: pos })?;
        }
        // edk2: a copy in deleted transition counts only when no VAR_ADDED
        // copy of the same variable exists.
        let added: Vec<(String, Guid)> = found
            .iter()
            .filter(|(s, _)| *s == VAR_ADDED)
            .map(|(_, v)| (v.name.clone(), v.guid))
            .collect();
        let variables = found
            .into_iter()
            .filter(|(s, v)| *s == VAR_ADDED || !added.contains(&(v.name.clone(), v.guid)))
            .map(|(_, v)| v)
            .collect();
        Ok(VarStore {
            image: image.to_vec(),
            start,
            end,
            variables,
        })
    }

    /// Bytes available for variables.
    pub fn capacity(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    /// The variable with this name and GUID.
    pub fn get(&self, name: &str, guid: Guid) -> Option<&Variable> {
        self.variables
            .iter()
            .find(|v| v.name == name && v.guid == guid)
    }

    /// Mutable access to a variable.
    pub fn get_mut(&mut self, name: &str, guid: Guid) -> Option<&mut Variable> {
        self.variables
            .iter_mut()
            .find(|v| v.name == name && v.guid == guid)
    }

    /// Inserts or replaces (same name and GUID) a variable.
    pub fn set(&mut self, var: Variable) {
        if let Some(v) = self.get_mut(&var.name, var.guid) {
            *v = var;
        } else {
            self.variables.push(var);
        }
    }

    /// Deletes a variable; true if it existed.
    pub fn delete(&mut self, name: &str, guid: Guid) -> bool {
        let before = self.variables.len();
        self.variables
            .retain(|v| !(v.name == name && v.guid == guid));
        before != self.variables.len()
    }

    /// Returns the variable, creating it with `attributes` if absent.
    fn entry(
        &mut self,
        name: &str,
        guid: Guid,
        attributes: u32,
    ) -> Result<&mut Variable, VarStoreError> {
        if self.get(name, guid).is_none() {
            self.variables
                .push(Variable::new(name, guid, attributes, Vec::new()));
        }
        self.get_mut(name, guid)
            .ok_or_else(|| VarStoreError::MissingVariable(name.to_owned()))
    }

    /// Sets a boolean (one byte) variable, keeping existing attributes
    /// (virt-fw-vars `set_bool`).
    pub fn set_bool(&mut self, name: &str, guid: Guid, value: bool) -> Result<(), VarStoreError> {
        let v = self.entry(name, guid, ATTR_NV_BS)?;
        v.data = vec![u8::from(value)];
        Ok(())
    }

    /// unchanged, variables sorted by name (then GUID), 0xFF fill.
    pub fn to_bytes(&self) -> Result<Vec<u8>, VarStoreError> {
        let mut vars: Vec<&Variable> = self.variables.iter().collect();
        vars.sort_by(|a, b| a.name.cmp(&b.name).then(a.guid.cmp(&b.guid)));
        let mut out = self.image.get(..self.start).unwrap_or_default().to_vec();
        for v in vars {
            v.encode_into(&mut out)?;
        }
        let need = out.len().saturating_sub(self.start);
        if out.len() > self.end {
            return Err(VarStoreError::StoreFull {
                need,
                have: self.capacity(),
            });
        }
        out.resize(self.end, 0xff);
        out.extend_from_slice(self.image.get(self.end..).unwrap_or_default());
        Ok(out)
    }
}

fn decode_name(bytes: &[u8]) -> Option<String> {
    let units: Vec<u16> = bytes
        .chunks(2)
        .map(|c| match c {
            [a, b] => Some(u16::from_le_bytes([*a, *b])),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let (last, body) = units.split_last()?;
    if *last != 0 || body.contains(&0) {
        return None;
    }
    char::decode_utf16(body.iter().copied())
        .collect::<Result<String, _>>()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_nul_terminated_utf16() {
        assert_eq!(
            decode_name(&[b'P', 0, b'K', 0, 0, 0]).as_deref(),
            Some("PK")
        );
        assert_eq!(decode_name(&[b'P', 0, b'K', 0]), None);
        assert_eq!(decode_name(&[b'P', 0, 0, 0, b'K', 0, 0, 0]), None);
        assert_eq!(decode_name(&[b'P', 0, 0]), None);
        assert_eq!(decode_name(&[0x00, 0xd8, 0, 0]), None); // lone surrogate
    }

    #[test]
    fn variable_encoding_is_aligned_and_reparses() {
        let mut out = Vec::new();
        Variable::new("a", Guid::GLOBAL_VARIABLE, 7, vec![1])
            .encode_into(&mut out)
            .unwrap();
        // 60-byte header + 4-byte name ("a", NUL) + 1 data byte, padded to 68.
        assert_eq!(out.len(), 68);
        assert_eq!(out[65..], [0xff; 3]);
        assert_eq!(out[..3], [0xaa, 0x55, 0x3f]);
    }

    #[test]
    fn time_update_only_moves_forward_for_time_based_variables() {
        let mut v = Variable::new(
            "db",
            Guid::IMAGE_SECURITY_DATABASE,
            ATTR_SECURE_BOOT_DB,
            vec![],
        );
        v.update_time(EfiTime::utc(2020, 1, 1, 0, 0, 0));
        v.update_time(EfiTime::INITIAL);
        assert_eq!(v.timestamp, EfiTime::utc(2020, 1, 1, 0, 0, 0));
        let mut plain = Variable::new("x", Guid::GLOBAL_VARIABLE, ATTR_NV_BS, vec![]);
        plain.update_time(EfiTime::INITIAL);
        assert!(plain.timestamp.is_zero());
        let t = EfiTime::utc(2023, 3, 10, 2, 53, 39);
        assert_eq!(EfiTime::from_bytes(t.to_bytes()), t);
    }
}
