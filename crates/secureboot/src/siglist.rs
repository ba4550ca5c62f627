//! Signature databases (UEFI 2.10 §32.4.1): EFI_SIGNATURE_LIST and
//! EFI_SIGNATURE_DATA, parsed and built.
//!
//! A database (the content of PK, KEK, db, dbx) is a concatenation of
//! signature lists; each list has a type GUID, an optional header, and
//! entries of one fixed size, each an owner GUID followed by the signature
//! data. Sizes of the fixed-size hash types are checked on parse.

use serde::{Deserialize, Serialize};
use trustlaunch_eventlog::Guid;

/// Size of the EFI_SIGNATURE_LIST header (type GUID + three u32).
const LIST_HEADER_LEN: usize = 28;
/// Size of the owner GUID that starts every EFI_SIGNATURE_DATA.
const OWNER_LEN: usize = 16;

/// The signature types of UEFI 2.10 §32.4.1 that this module knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SignatureType {
    /// EFI_CERT_SHA1_GUID: 20-byte digest.
    Sha1,
    /// EFI_CERT_SHA224_GUID: 28-byte digest.
    Sha224,
    /// EFI_CERT_SHA256_GUID: 32-byte digest.
    Sha256,
    /// EFI_CERT_SHA384_GUID: 48-byte digest.
    Sha384,
    /// EFI_CERT_SHA512_GUID: 64-byte digest.
    Sha512,
    /// EFI_CERT_RSA2048_GUID: 256-byte modulus.
    Rsa2048,
    /// EFI_CERT_X509_GUID: a DER certificate (variable size).
    X509,
    /// EFI_CERT_X509_SHA256_GUID: TBS digest + 16-byte revocation time.
    X509Sha256,
    /// EFI_CERT_X509_SHA384_GUID: TBS digest + 16-byte revocation time.
    X509Sha384,
    /// EFI_CERT_X509_SHA512_GUID: TBS digest + 16-byte revocation time.
    X509Sha512,
    /// EFI_CERT_EXTERNAL_MANAGEMENT_GUID (edk2): one byte.
    ExternalManagement,
}

const fn g(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
    Guid::from_fields(d1, d2, d3, d4)
}

impl SignatureType {
    /// Every type UEFI 2.10 §32.4.1 lists (and edk2's external management).
    pub const ALL: [SignatureType; 11] = [
        SignatureType::Sha1,
        SignatureType::Sha224,
        SignatureType::Sha256,
        SignatureType::Sha384,
        SignatureType::Sha512,
        SignatureType::Rsa2048,
        SignatureType::X509,
        SignatureType::X509Sha256,
        SignatureType::X509Sha384,
        SignatureType::X509Sha512,
        SignatureType::ExternalManagement,
    ];

    /// The type GUID.
    pub const fn guid(self) -> Guid {
        match self {
            Self::Sha1 => g(
                0x826c_a512,
                0xcf10,
                0x4ac9,
                [0xb1, 0x87, 0xbe, 0x01, 0x49, 0x66, 0x31, 0xbd],
            ),
            Self::Sha224 => g(
                0x0b6e_5233,
                0xa65c,
                0x44c9,
                [0x94, 0x07, 0xd9, 0xab, 0x83, 0xbf, 0xc8, 0xbd],
            ),
            Self::Sha256 => g(
                0xc1c4_1626,
                0x504c,
                0x4092,
                [0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93, 0x43, 0x28],
            ),
            Self::Sha384 => g(
                0xff3e_5307,
                0x9fd0,
                0x48c9,
                [0x85, 0xf1, 0x8a, 0xd5, 0x6c, 0x70, 0x1e, 0x01],
            ),
            Self::Sha512 => g(
                0x093e_0fae,
                0xa6c4,
                0x4f50,
                [0x9f, 0x1b, 0xd4, 0x1e, 0x2b, 0x89, 0xc1, 0x9a],
            ),
            Self::Rsa2048 => g(
                0x3c58_66e8,
                0xaa9f,
                0x4a0d,
                [0x9a, 0x1d, 0x0b, 0x02, 0x92, 0x2b, 0x23, 0x14],
            ),
            Self::X509 => g(
                0xa5c0_59a1,
                0x94e4,
                0x4aa7,
                [0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72],
            ),
            Self::X509Sha256 => g(
                0x3bd2_a492,
                0x96c0,
                0x4079,
                [0xb4, 0x20, 0xfc, 0xf9, 0x8e, 0xf1, 0x03, 0xed],
            ),
            Self::X509Sha384 => g(
                0x7076_876e,
                0x80c2,
                0x4ee6,
                [0xaa, 0xd2, 0x28, 0xb3, 0x49, 0xa6, 0x86, 0x5b],
            ),
            Self::X509Sha512 => g(
                0x446d_bf63,
                0x2502,
                0x4cda,
                [0xbc, 0xfa, 0x24, 0x65, 0xd2, 0xb0, 0xfe, 0x9d],
            ),
            Self::ExternalManagement => g(
                0x452e_8ced,
                0xdfff,
                0x4b8c,
                [0xae, 0x01, 0x51, 0x18, 0x86, 0x2e, 0x68, 0x2c],
            ),
        }
    }

    /// The type with this GUID, if known.
    pub fn from_guid(guid: Guid) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.guid() == guid)
    }

    /// Size of the signature data (without the owner GUID), or `None` for
    /// the variable-size X.509 type.
    pub const fn data_len(self) -> Option<usize> {
        match self {
            Self::Sha1 => Some(20),
            Self::Sha224 => Some(28),
            Self::Sha256 => Some(32),
            Self::Sha384 => Some(48),
            Self::Sha512 => Some(64),
            Self::Rsa2048 => Some(256),
            Self::X509 => None,
            Self::X509Sha256 => Some(32 + 16),
            Self::X509Sha384 => Some(48 + 16),
            Self::X509Sha512 => Some(64 + 16),
            Self::ExternalManagement => Some(1),
        }
    }
}

/// Why a signature database did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SigListError {
    /// Fewer bytes remain than the structure at `offset` needs.
    #[error("signature list truncated at offset {offset}: need {need} bytes, have {have}")]
    Truncated {
        /// Offset of the structure in the database.
        offset: usize,
        /// Bytes needed.
        need: usize,
        /// Bytes left.
        have: usize,
    },
    /// SignatureListSize is smaller than its header, or SignatureSize is
    /// smaller than an owner GUID, or the entries do not fill the list.
    #[error("signature list at offset {offset}: inconsistent sizes (list {list_size}, header {header_size}, entry {entry_size})")]
    BadSizes {
        /// Offset of the list.
        offset: usize,
        /// SignatureListSize.
        list_size: u32,
        /// SignatureHeaderSize.
        header_size: u32,
        /// SignatureSize.
        entry_size: u32,
    },
    /// A known fixed-size type with the wrong entry size.
    #[error("signature list at offset {offset}: {kind:?} entries must be {expected} bytes, found {found}")]
    WrongEntrySize {
        /// Offset of the list.
        offset: usize,
        /// The list type.
        kind: SignatureType,
        /// Expected SignatureSize (owner + data).
        expected: usize,
        /// SignatureSize found.
        found: u32,
    },
    /// An entry's data does not have the size its list requires (build).
    #[error("entry of {found} bytes does not fit a list of {expected}-byte entries")]
    EntrySizeMismatch {
        /// The list's entry data size.
        expected: usize,
        /// The offending entry's data size.
        found: usize,
    },
    /// A list or entry is too large for the 32-bit size fields.
    #[error("signature list too large")]
    TooLarge,
}

/// One EFI_SIGNATURE_DATA: owner and data.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SignatureData {
    /// SignatureOwner.
    pub owner: Guid,
    /// SignatureData (a DER certificate, a digest, ...).
    pub data: Vec<u8>,
}

impl SignatureData {
    /// EFI_SIGNATURE_DATA as stored in a list (and measured as an
    /// EV_EFI_VARIABLE_AUTHORITY): owner GUID, then the data.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len().saturating_add(OWNER_LEN));
        out.extend_from_slice(&self.owner.to_bytes());
        out.extend_from_slice(&self.data);
        out
    }
}

/// One EFI_SIGNATURE_LIST.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureList {
    /// SignatureType GUID (kept even when unknown).
    pub type_guid: Guid,
    /// SignatureHeader bytes (empty for every type UEFI defines).
    pub header: Vec<u8>,
    /// Size of each entry's data (SignatureSize minus the owner GUID).
    pub data_len: usize,
    /// The entries.
    pub entries: Vec<SignatureData>,
}

impl SignatureList {
    /// The known type, if any.
    pub fn kind(&self) -> Option<SignatureType> {
        SignatureType::from_guid(self.type_guid)
    }

    /// A list holding one X.509 certificate (the form edk2 and virt-fw-vars
    /// use: one list per certificate).
    pub fn x509(owner: Guid, der: Vec<u8>) -> Self {
        SignatureList {
            type_guid: SignatureType::X509.guid(),
            header: Vec::new(),
            data_len: der.len(),
            entries: vec![SignatureData { owner, data: der }],
        }
    }

    /// An empty list of a fixed-size hash type.
    pub fn hashes(kind: SignatureType) -> Option<Self> {
        Some(SignatureList {
            type_guid: kind.guid(),
            header: Vec::new(),
            data_len: kind.data_len()?,
            entries: Vec::new(),
        })
    }

    /// Appends an entry whose data has this list's entry size.
    pub fn push(&mut self, entry: SignatureData) -> Result<(), SigListError> {
        if entry.data.len() != self.data_len {
            return Err(SigListError::EntrySizeMismatch {
                expected: self.data_len,
                found: entry.data.len(),
            });
        }
        self.entries.push(entry);
        Ok(())
    }

    fn entry_size(&self) -> Result<u32, SigListError> {
        let n = self
            .data_len
            .checked_add(OWNER_LEN)
            .ok_or(SigListError::TooLarge)?;
        u32::try_from(n).map_err(|_| SigListError::TooLarge)
    }

    /// SignatureListSize of the encoded list.
    pub fn encoded_len(&self) -> Result<usize, SigListError> {
        let entries = (self.entry_size()? as usize)
            .checked_mul(self.entries.len())
            .ok_or(SigListError::TooLarge)?;
        LIST_HEADER_LEN
            .checked_add(self.header.len())
            .and_then(|n| n.checked_add(entries))
            .ok_or(SigListError::TooLarge)
    }

    /// Appends the encoded list to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), SigListError> {
        let list_size = u32::try_from(self.encoded_len()?).map_err(|_| SigListError::TooLarge)?;
        let header_size = u32::try_from(self.header.len()).map_err(|_| SigListError::TooLarge)?;
        let entry_size = self.entry_size()?;
        for e in &self.entries {
            if e.data.len() != self.data_len {
                return Err(SigListError::EntrySizeMismatch {
                    expected: self.data_len,
                    found: e.data.len(),
                });
            }
        }
        out.extend_from_slice(&self.type_guid.to_bytes());
        out.extend_from_slice(&list_size.to_le_bytes());
        out.extend_from_slice(&header_size.to_le_bytes());
        out.extend_from_slice(&entry_size.to_le_bytes());
        out.extend_from_slice(&self.header);
        for e in &self.entries {
            out.extend_from_slice(&e.to_bytes());
        }
        Ok(())
    }
}

fn take(buf: &[u8], at: usize, n: usize) -> Result<&[u8], SigListError> {
    let have = buf.len().saturating_sub(at);
    at.checked_add(n)
        .and_then(|end| buf.get(at..end))
        .ok_or(SigListError::Truncated {
            offset: at,
            need: n,
            have,
        })
}

fn u32_at(buf: &[u8], at: usize) -> Result<u32, SigListError> {
    let b = take(buf, at, 4)?;
    let arr: [u8; 4] = b.try_into().map_err(|_| SigListError::Truncated {
        offset: at,
        need: 4,
        have: b.len(),
    })?;
    Ok(u32::from_le_bytes(arr))
}

fn guid_at(buf: &[u8], at: usize) -> Result<Guid, SigListError> {
    let b = take(buf, at, 16)?;
    let arr: [u8; 16] = b.try_into().map_err(|_| SigListError::Truncated {
        offset: at,
        need: 16,
        have: b.len(),
    })?;
    Ok(Guid::from_bytes(arr))
}

/// A signature database: the content of PK, KEK, db, dbx, MokList.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignatureDb {
    /// The lists in order.
    pub lists: Vec<SignatureList>,
}

impl SignatureDb {
    /// Parses a database; every byte must belong to a list.
    pub fn parse(buf: &[u8]) -> Result<Self, SigListError> {
        let mut lists = Vec::new();
        let mut at = 0usize;
        while at < buf.len() {
            let type_guid = guid_at(buf, at)?;
            let list_size = u32_at(buf, at.saturating_add(16))?;
            let header_size = u32_at(buf, at.saturating_add(20))?;
            let entry_size = u32_at(buf, at.saturating_add(24))?;
            let bad = SigListError::BadSizes {
                offset: at,
                list_size,
                header_size,
                entry_size,
            };
            let list_len = list_size as usize;
            let body_len = list_len
                .checked_sub(LIST_HEADER_LEN)
                .and_then(|n| n.checked_sub(header_size as usize))
                .ok_or(bad.clone())?;
            let data_len = (entry_size as usize)
                .checked_sub(OWNER_LEN)
                .ok_or(bad.clone())?;
            if entry_size == 0 || body_len.checked_rem(entry_size as usize) != Some(0) {
                return Err(bad);
            }
            let kind = SignatureType::from_guid(type_guid);
            if let Some(expected) = kind.and_then(SignatureType::data_len) {
                if expected != data_len {
                    return Err(SigListError::WrongEntrySize {
                        offset: at,
                        kind: kind.unwrap_or(SignatureType::X509),
                        expected: expected.saturating_add(OWNER_LEN),
                        found: entry_size,
                    });
                }
            }
            let list = take(buf, at, list_len)?;
            let header = take(list, LIST_HEADER_LEN, header_size as usize)?.to_vec();
            let body_at = LIST_HEADER_LEN.saturating_add(header_size as usize);
            let body = take(list, body_at, body_len)?;
            let mut entries = Vec::new();
            for chunk in body.chunks_exact(entry_size as usize) {
                let owner = guid_at(chunk, 0)?;
                let data = chunk.get(OWNER_LEN..).unwrap_or_default().to_vec();
                entries.push(SignatureData { owner, data });
            }
            lists.push(SignatureList {
                type_guid,
                header,
                data_len,
                entries,
            });
            at = at.saturating_add(list_len);
        }
        Ok(SignatureDb { lists })
    }

    /// Encodes the database.
    pub fn encode(&self) -> Result<Vec<u8>, SigListError> {
        let mut out = Vec::new();
        for l in &self.lists {
            l.encode_into(&mut out)?;
        }
        Ok(out)
    }

    /// True if an entry of this type with this data is present (any owner).
    pub fn contains(&self, type_guid: Guid, data: &[u8]) -> bool {
        self.lists
            .iter()
            .filter(|l| l.type_guid == type_guid)
            .any(|l| l.entries.iter().any(|e| e.data == data))
    }

    /// All entries with their list type.
    pub fn entries(&self) -> impl Iterator<Item = (Guid, &SignatureData)> {
        self.lists
            .iter()
            .flat_map(|l| l.entries.iter().map(move |e| (l.type_guid, e)))
    }

    /// Adds an X.509 certificate as its own list unless already present
    /// (virt-fw-vars `add_cert`).
    pub fn add_x509(&mut self, owner: Guid, der: Vec<u8>) -> bool {
        if self.contains(SignatureType::X509.guid(), &der) {
            return false;
        }
        self.lists.push(SignatureList::x509(owner, der));
        true
    }

    /// Adds a digest to the first list of its type (creating one) unless
    /// already present (virt-fw-vars `add_hash`).
    pub fn add_hash(
        &mut self,
        kind: SignatureType,
        owner: Guid,
        digest: Vec<u8>,
    ) -> Result<bool, SigListError> {
        let Some(expected) = kind.data_len() else {
            return Err(SigListError::EntrySizeMismatch {
                expected: 0,
                found: digest.len(),
            });
        };
        if digest.len() != expected {
            return Err(SigListError::EntrySizeMismatch {
                expected,
                found: digest.len(),
            });
        }
        if self.contains(kind.guid(), &digest) {
            return Ok(false);
        }
        let entry = SignatureData {
            owner,
            data: digest,
        };
        if let Some(l) = self
            .lists
            .iter_mut()
            .find(|l| l.type_guid == kind.guid() && l.data_len == expected)
        {
            l.push(entry)?;
        } else if let Some(mut l) = SignatureList::hashes(kind) {
            l.push(entry)?;
            self.lists.push(l);
        }
        Ok(true)
    }

    /// Merges `other` into `self`: X.509 lists not yet present are
    /// appended; hash entries are added one by one, skipping duplicates.
    pub fn merge(&mut self, other: &SignatureDb) -> Result<(), SigListError> {
        for l in &other.lists {
            match l.kind() {
                Some(SignatureType::X509) => {
                    for e in &l.entries {
                        self.add_x509(e.owner, e.data.clone());
                    }
                }
                Some(kind) if kind.data_len().is_some() => {
                    for e in &l.entries {
                        self.add_hash(kind, e.owner, e.data.clone())?;
                    }
                }
                _ => {
                    if !self.lists.contains(l) {
                        self.lists.push(l.clone());
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes every entry whose data equals `data` (in lists of
    /// `type_guid`); drops lists left empty. Returns how many were removed.
    pub fn remove(&mut self, type_guid: Guid, data: &[u8]) -> usize {
        let mut removed = 0usize;
        for l in self.lists.iter_mut().filter(|l| l.type_guid == type_guid) {
            let before = l.entries.len();
            l.entries.retain(|e| e.data != data);
            removed = removed.saturating_add(before.saturating_sub(l.entries.len()));
        }
        self.lists.retain(|l| !l.entries.is_empty());
        removed
    }

    /// Removes duplicate entries (same type and data; the first owner
    /// wins) and lists left empty.
    pub fn dedup(&mut self) {
        let mut seen: Vec<(Guid, Vec<u8>)> = Vec::new();
        for l in &mut self.lists {
            let t = l.type_guid;
            l.entries.retain(|e| {
                let key = (t, e.data.clone());
                if seen.contains(&key) {
                    false
                } else {
                    seen.push(key);
                    true
                }
            });
        }
        self.lists.retain(|l| !l.entries.is_empty());
    }
}

/// A JSON-friendly view of one entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureEntryView {
    /// List type GUID.
    pub r#type: String,
    /// Known type name, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kind: Option<SignatureType>,
    /// Owner GUID.
    pub owner: String,
    /// Data, hex.
    pub data: String,
}

impl SignatureDb {
    /// A flat, JSON-friendly view of the entries.
    pub fn view(&self) -> Vec<SignatureEntryView> {
        self.entries()
            .map(|(t, e)| SignatureEntryView {
                r#type: t.to_string(),
                kind: SignatureType::from_guid(t),
                owner: e.owner.to_string(),
                data: trustlaunch_eventlog::hex::encode(&e.data),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_round_trip_and_sizes() {
        let mut db = SignatureDb::default();
        assert!(db
            .add_hash(SignatureType::Sha256, Guid::GLOBAL_VARIABLE, vec![1; 32])
            .unwrap());
        assert!(!db
            .add_hash(SignatureType::Sha256, Guid::GLOBAL_VARIABLE, vec![1; 32])
            .unwrap());
        assert!(db
            .add_hash(SignatureType::Sha256, Guid::GLOBAL_VARIABLE, vec![2; 32])
            .unwrap());
        let bytes = db.encode().unwrap();
        assert_eq!(bytes.len(), 28 + 2 * 48);
        assert_eq!(SignatureDb::parse(&bytes).unwrap(), db);
        assert!(db
            .add_hash(SignatureType::Sha256, Guid::GLOBAL_VARIABLE, vec![2; 31])
            .is_err());
    }

    #[test]
    fn wrong_entry_size_is_typed() {
        let mut l = SignatureList::hashes(SignatureType::Sha1).unwrap();
        l.data_len = 32;
        l.entries.push(SignatureData {
            owner: Guid::GLOBAL_VARIABLE,
            data: vec![0; 32],
        });
        let mut out = Vec::new();
        l.encode_into(&mut out).unwrap();
        assert!(matches!(
            SignatureDb::parse(&out),
            Err(SigListError::WrongEntrySize {
                offset: 0,
                kind: SignatureType::Sha1,
                expected: 36,
                found: 48
            })
        ));
    }
}
