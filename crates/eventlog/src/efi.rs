//! UEFI structures that appear in event data: UEFI_VARIABLE_DATA
//! (PFP §10.4.8), EFI_LOAD_OPTION (UEFI 2.10 §3.1.3), and
//! EFI_SIGNATURE_LIST / EFI_SIGNATURE_DATA (UEFI 2.10 §32.4.1).

use serde::Serialize;

use crate::cursor::{Cursor, Short};
use crate::device_path::DevicePath;
use crate::guid::Guid;

/// EFI_CERT_X509_GUID.
pub const CERT_X509: Guid = Guid::from_fields(
    0xa5c0_59a1,
    0x94e4,
    0x4aa7,
    [0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72],
);
/// EFI_CERT_SHA256_GUID.
pub const CERT_SHA256: Guid = Guid::from_fields(
    0xc1c4_1626,
    0x504c,
    0x4092,
    [0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93, 0x43, 0x28],
);

/// Why a UEFI structure could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} at offset {offset}: {reason}")]
pub struct StructError {
    /// Which structure.
    pub what: &'static str,
    /// Absolute offset.
    pub offset: usize,
    /// What is wrong.
    pub reason: String,
}

impl StructError {
    pub(crate) fn short(what: &'static str) -> impl Fn(Short) -> StructError {
        move |s| StructError {
            what,
            offset: s.offset,
            reason: format!("truncated: needs {} bytes, {} left", s.needed, s.available),
        }
    }
}

/// UEFI_VARIABLE_DATA: a measured UEFI variable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EfiVariable {
    /// `VariableName` (the vendor GUID).
    pub guid: Guid,
    /// `UnicodeName`.
    pub name: String,
    /// `VariableData`.
    #[serde(serialize_with = "crate::ser::hex")]
    pub data: Vec<u8>,
    /// Absolute offset of `VariableData`.
    #[serde(skip)]
    pub data_offset: usize,
    /// The variable's content, decoded where its name says what it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decoded: Option<VariableContent>,
}

/// Decoded content of a well-known variable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VariableContent {
    /// A one-byte boolean (SecureBoot, SetupMode, MokSBState, ...).
    Flag {
        /// The value.
        value: u8,
    },
    /// BootOrder: Boot#### numbers.
    BootOrder {
        /// The order.
        order: Vec<u16>,
    },
    /// Boot####: an EFI_LOAD_OPTION.
    LoadOption(LoadOption),
    /// A signature database (PK, KEK, db, dbx, MokList, ...).
    SignatureLists {
        /// The lists.
        lists: Vec<SignatureList>,
    },
    /// EV_EFI_VARIABLE_AUTHORITY data: one EFI_SIGNATURE_DATA.
    Authority(SignatureData),
    /// EV_EFI_VARIABLE_AUTHORITY data that is a bare DER certificate, as
    /// shim logs for its built-in and MOK certificates.
    AuthorityCertificate {
        /// The DER certificate.
        #[serde(serialize_with = "crate::ser::hex")]
        der: Vec<u8>,
    },
    /// The content could not be decoded as its name suggests.
    Undecodable {
        /// Why.
        reason: String,
    },
}

/// EFI_LOAD_OPTION.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LoadOption {
    /// `Attributes` (LOAD_OPTION_ACTIVE = 1, ...).
    pub attributes: u32,
    /// `Description`.
    pub description: String,
    /// `FilePathList`.
    pub file_path: DevicePath,
    /// `OptionalData`.
    #[serde(serialize_with = "crate::ser::hex")]
    pub optional_data: Vec<u8>,
}

/// EFI_SIGNATURE_LIST.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SignatureList {
    /// `SignatureType`.
    pub signature_type: Guid,
    /// `SignatureHeader`.
    #[serde(serialize_with = "crate::ser::hex")]
    pub header: Vec<u8>,
    /// The entries.
    pub signatures: Vec<SignatureData>,
}

/// EFI_SIGNATURE_DATA: an owner GUID and a certificate or hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SignatureData {
    /// `SignatureOwner`.
    pub owner: Guid,
    /// `SignatureData`: DER certificate, hash, ...
    #[serde(serialize_with = "crate::ser::hex")]
    pub data: Vec<u8>,
}

impl EfiVariable {
    /// Decodes UEFI_VARIABLE_DATA; `base` is the absolute offset of `bytes`.
    pub fn parse(bytes: &[u8], base: usize) -> Result<Self, StructError> {
        const WHAT: &str = "UEFI_VARIABLE_DATA";
        let short = StructError::short(WHAT);
        let mut c = Cursor::new(bytes, base);
        let guid = c.guid().map_err(&short)?;
        let name_len = c.u64().map_err(&short)?;
        let data_len = c.u64().map_err(&short)?;
        let name_bytes = usize::try_from(name_len)
            .ok()
            .and_then(|n| n.checked_mul(2))
            .ok_or_else(|| StructError {
                what: WHAT,
                offset: base.saturating_add(16),
                reason: format!("UnicodeNameLength {name_len} is too large"),
            })?;
        let name_at = c.offset();
        let name_raw = c.take(name_bytes).map_err(&short)?;
        let name = crate::text::utf16le(name_raw).ok_or_else(|| StructError {
            what: WHAT,
            offset: name_at,
            reason: "UnicodeName is not valid UTF-16".into(),
        })?;
        let data_len = usize::try_from(data_len).unwrap_or(usize::MAX);
        let data_offset = c.offset();
        let data = c.take(data_len).map_err(&short)?.to_vec();
        // Some firmware appends padding after VariableData; it is not part
        // of the variable and is ignored (the digest check still covers it).
        Ok(Self {
            guid,
            name,
            data,
            data_offset,
            decoded: None,
        })
    }

    /// Decodes the content of well-known variables, by event type.
    pub fn with_content(mut self, authority: bool) -> Self {
        self.decoded = self.content(authority);
        self
    }

    fn content(&self, authority: bool) -> Option<VariableContent> {
        let undecodable = |e: StructError| VariableContent::Undecodable {
            reason: e.to_string(),
        };
        if authority {
            // shim logs MokListTrusted's one-byte state as an authority.
            if let [value] = self.data.as_slice() {
                return Some(VariableContent::Flag { value: *value });
            }
            if is_der_sequence(&self.data) {
                return Some(VariableContent::AuthorityCertificate {
                    der: self.data.clone(),
                });
            }
            return Some(
                SignatureData::parse_one(&self.data, self.data_offset)
                    .map_or_else(undecodable, VariableContent::Authority),
            );
        }
        let name = self.name.as_str();
        let is_global = self.guid == Guid::GLOBAL_VARIABLE;
        match name {
            "SecureBoot" | "SetupMode" | "AuditMode" | "DeployedMode" | "MokSBState"
            | "MokSBStateRT" | "MokListTrusted" | "MokListTrustedRT" => {
                match self.data.as_slice() {
                    [value] => Some(VariableContent::Flag { value: *value }),
                    _ => None,
                }
            }
            "BootOrder" if is_global => {
                if self.data.len() % 2 != 0 {
                    return Some(VariableContent::Undecodable {
                        reason: "BootOrder has an odd length".into(),
                    });
                }
                let order = self
                    .data
                    .chunks_exact(2)
                    .filter_map(|p| p.try_into().ok().map(u16::from_le_bytes))
                    .collect();
                Some(VariableContent::BootOrder { order })
            }
            "PK" | "KEK" | "PKDefault" | "KEKDefault" | "db" | "dbx" | "dbt" | "dbr"
            | "dbDefault" | "dbxDefault" | "MokList" | "MokListX" | "MokListRT" | "MokListXRT" => {
                Some(
                    SignatureList::parse_all(&self.data, self.data_offset)
                        .map_or_else(undecodable, |lists| VariableContent::SignatureLists {
                            lists,
                        }),
                )
            }
            _ if is_global && is_boot_option_name(name) => Some(
                LoadOption::parse(&self.data, self.data_offset)
                    .map_or_else(undecodable, VariableContent::LoadOption),
            ),
            _ => None,
        }
    }

    /// Encodes UEFI_VARIABLE_DATA.
    pub fn to_bytes(&self) -> Vec<u8> {
        let name: Vec<u8> = self
            .name
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let mut out = Vec::new();
        out.extend_from_slice(&self.guid.to_bytes());
        out.extend_from_slice(&u64::try_from(name.len() / 2).unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&u64::try_from(self.data.len()).unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&name);
        out.extend_from_slice(&self.data);
        out
    }
}

/// Whether `bytes` is exactly one DER SEQUENCE with a long-form length
/// (every X.509 certificate is).
fn is_der_sequence(bytes: &[u8]) -> bool {
    match bytes {
        [0x30, 0x82, hi, lo, rest @ ..] => {
            usize::from(u16::from_be_bytes([*hi, *lo])) == rest.len()
        }
        [0x30, 0x81, n, rest @ ..] => usize::from(*n) == rest.len(),
        _ => false,
    }
}

/// Whether `name` is `Boot` + four hex digits (Boot0001).
fn is_boot_option_name(name: &str) -> bool {
    name.len() == 8
        && name.starts_with("Boot")
        && name.chars().skip(4).all(|c| c.is_ascii_hexdigit())
}

impl LoadOption {
    /// Decodes EFI_LOAD_OPTION.
    pub fn parse(bytes: &[u8], base: usize) -> Result<Self, StructError> {
        const WHAT: &str = "EFI_LOAD_OPTION";
        let short = StructError::short(WHAT);
        let mut c = Cursor::new(bytes, base);
        let attributes = c.u32().map_err(&short)?;
        let path_len = usize::from(c.u16().map_err(&short)?);
        let desc_at = c.offset();
        let (description, used) =
            crate::text::utf16le_nul(c.rest()).ok_or_else(|| StructError {
                what: WHAT,
                offset: desc_at,
                reason: "Description is not a NUL-terminated UTF-16 string".into(),
            })?;
        c.take(used).map_err(&short)?;
        let path_at = c.offset();
        let path_bytes = c.take(path_len).map_err(&short)?;
        let file_path = DevicePath::parse(path_bytes, path_at).map_err(|e| StructError {
            what: WHAT,
            offset: e.offset,
            reason: e.reason,
        })?;
        Ok(Self {
            attributes,
            description,
            file_path,
            optional_data: c.rest().to_vec(),
        })
    }
}

impl SignatureList {
    /// Decodes a sequence of EFI_SIGNATURE_LISTs that fills `bytes`.
    pub fn parse_all(bytes: &[u8], base: usize) -> Result<Vec<Self>, StructError> {
        const WHAT: &str = "EFI_SIGNATURE_LIST";
        let short = StructError::short(WHAT);
        let mut c = Cursor::new(bytes, base);
        let mut lists = Vec::new();
        while !c.is_empty() {
            let at = c.offset();
            let bad = |reason: String| StructError {
                what: WHAT,
                offset: at,
                reason,
            };
            let signature_type = c.guid().map_err(&short)?;
            let list_size = usize::try_from(c.u32().map_err(&short)?).unwrap_or(usize::MAX);
            let header_size = usize::try_from(c.u32().map_err(&short)?).unwrap_or(usize::MAX);
            let sig_size = usize::try_from(c.u32().map_err(&short)?).unwrap_or(usize::MAX);
            let body_len = list_size
                .checked_sub(28)
                .ok_or_else(|| bad(format!("SignatureListSize {list_size} is below 28")))?;
            let body = c.take(body_len).map_err(&short)?;
            let mut b = Cursor::new(body, at.saturating_add(28));
            let header = b.take(header_size).map_err(&short)?.to_vec();
            if sig_size < 16 {
                return Err(bad(format!("SignatureSize {sig_size} is below 16")));
            }
            if b.remaining().checked_rem(sig_size) != Some(0) {
                return Err(bad(format!(
                    "{} bytes of signatures are not a multiple of SignatureSize {sig_size}",
                    b.remaining()
                )));
            }
            let mut signatures =
                Vec::with_capacity(b.remaining().checked_div(sig_size).unwrap_or(0));
            while !b.is_empty() {
                let owner = b.guid().map_err(&short)?;
                let data = b
                    .take(sig_size.saturating_sub(16))
                    .map_err(&short)?
                    .to_vec();
                signatures.push(SignatureData { owner, data });
            }
            lists.push(SignatureList {
                signature_type,
                header,
                signatures,
            });
        }
        Ok(lists)
    }
}

impl SignatureData {
    /// Decodes one EFI_SIGNATURE_DATA that fills `bytes`.
    pub fn parse_one(bytes: &[u8], base: usize) -> Result<Self, StructError> {
        let mut c = Cursor::new(bytes, base);
        let owner = c.guid().map_err(StructError::short("EFI_SIGNATURE_DATA"))?;
        Ok(Self {
            owner,
            data: c.rest().to_vec(),
        })
    }
}
