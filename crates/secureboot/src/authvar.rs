//! Time-based authenticated variable updates: EFI_VARIABLE_AUTHENTICATION_2
//! (UEFI 2.10 §8.2.2 `SetVariable`, §32.3 Secure Boot variables), built as
//! `sign-efi-sig-list` (efitools) builds them, parsed, and verified as
//! edk2's `AuthVariableLib` (`VerifyTimeBasedPayload`) does.
//!
//! Payload layout: EFI_TIME TimeStamp (16 bytes), then
//! WIN_CERTIFICATE_UEFI_GUID { dwLength (covering the 24-byte header and
//! CertData), wRevision 0x0200, wCertificateType WIN_CERT_TYPE_EFI_GUID
//! (0x0EF1), CertType EFI_CERT_TYPE_PKCS7_GUID, CertData: DER PKCS#7
//! SignedData }, then the new variable data. The SignedData signs, detached,
//! the serialization `VariableName (UTF-16LE, no NUL) || VendorGuid ||
//! Attributes (u32 LE) || TimeStamp || Data`; `sign-efi-sig-list` writes a
//! bare SignedData without signed attributes.
//!
//! Verification follows edk2: the attributes must ask for time-based
//! authenticated writes; the timestamp's Pad1, Nanosecond, TimeZone,
//! Daylight and Pad2 must be zero; CertData must start with the DER prefix
//! edk2 checks for SHA-256 (which a ContentInfo-wrapped SignedData fails,
//! although the PKCS#7 parser itself accepts both forms); the signature
//! must verify over the serialization and the signer chain (through the
//! embedded certificates) must meet one of the trusted certificates (the
//! PK for PK and KEK, KEK entries or the PK for db and dbx: the caller
//! passes them); without APPEND_WRITE the timestamp must be later than
//! the variable's current one. Validity periods and key usages are not
//! checked (edk2 disables time checks and accepts any purpose).
//!
//! Not done here: the non-time-based and private (CertStack) variants,
//! the setup/custom-mode rules deciding which key must sign.

use cms::content_info::ContentInfo;
use cms::signed_data::SignedData;
use der::{Decode, Encode, Reader, SliceReader};
use trustlaunch_eventlog::Guid;

use crate::cms_build::{build_signed_data, signed_data_der, CmsBuildError, Content, SignedAttrs};
use crate::cms_build::{Signer as CmsSigner, OID_DATA};
use crate::keys::SigningKey;
use crate::pkcs7::{signer_from, DigestAlg, EmbeddedCert, Pkcs7Error, Signer, OID_SIGNED_DATA};
use crate::siglist::{SigListError, SignatureDb};
use crate::varstore::{EfiTime, SecureBootVar, ATTR_SECURE_BOOT_DB};
use crate::verify::{anchor, chain_from, signer_cert_index, verify_raw, Database};

/// EFI_VARIABLE_APPEND_WRITE.
pub const ATTR_APPEND_WRITE: u32 = 0x40;
/// EFI_VARIABLE_TIME_BASED_AUTHENTICATED_WRITE_ACCESS.
pub const ATTR_TIME_BASED_AUTH: u32 = crate::varstore::ATTR_TIME_BASED_AUTH;
/// WIN_CERT_TYPE_EFI_GUID.
pub const WIN_CERT_TYPE_EFI_GUID: u16 = 0x0ef1;
/// WIN_CERT_REVISION 2.0.
pub const WIN_CERT_REVISION: u16 = 0x0200;
/// EFI_CERT_TYPE_PKCS7_GUID 4aafd29d-68df-49ee-8aa9-347d375665a7.
pub const CERT_TYPE_PKCS7: Guid = Guid::from_fields(
    0x4aaf_d29d,
    0x68df,
    0x49ee,
    [0x8a, 0xa9, 0x34, 0x7d, 0x37, 0x56, 0x65, 0xa7],
);
/// EFI_TIME + WIN_CERTIFICATE_UEFI_GUID header (OFFSET_OF_AUTHINFO2_CERT_DATA).
pub const AUTH_HEADER_LEN: usize = 40;
/// WIN_CERTIFICATE_UEFI_GUID header: dwLength, wRevision, wCertificateType, CertType.
const WIN_CERT_UEFI_GUID_LEN: usize = 24;
/// The DER value of id-sha256, which edk2 expects at CertData offset 13.
const SHA256_OID_VALUE: [u8; 9] = [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
/// Where edk2 looks for it, and the end of that range.
const SHA256_OID_AT: usize = 13;
const SHA256_OID_END: usize = 22;
/// Upper bound on the variable name (UTF-16 code units).
const MAX_NAME_UNITS: usize = 1024;

/// Why a payload could not be built or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthVarError {
    /// Shorter than the 40-byte EFI_TIME + WIN_CERTIFICATE_UEFI_GUID header.
    #[error("payload of {len} bytes is shorter than the {AUTH_HEADER_LEN}-byte header")]
    Truncated {
        /// Payload length.
        len: usize,
    },
    /// dwLength (at offset 16) is below 24 or runs past the payload.
    #[error(
        "WIN_CERTIFICATE dwLength {len:#x} at offset 16 does not fit the {payload:#x}-byte payload"
    )]
    BadLength {
        /// dwLength.
        len: u32,
        /// Payload length.
        payload: usize,
    },
    /// wCertificateType (offset 22) is not WIN_CERT_TYPE_EFI_GUID.
    #[error("wCertificateType {0:#06x} at offset 22 is not WIN_CERT_TYPE_EFI_GUID (0x0ef1)")]
    CertificateType(u16),
    /// CertType (offset 24) is not EFI_CERT_TYPE_PKCS7_GUID.
    #[error("CertType {0} at offset 24 is not EFI_CERT_TYPE_PKCS7_GUID")]
    CertTypeGuid(Guid),
    /// CertData (offset 40) is not DER PKCS#7 SignedData.
    #[error("CertData at offset 40: {0}")]
    Pkcs7(#[from] Pkcs7Error),
    /// The SignedData does not have exactly one SignerInfo.
    #[error("CertData at offset 40: expected one SignerInfo, found {0}")]
    SignerCount(usize),
    /// The variable name is empty, too long, or has a NUL.
    #[error("variable name unusable: {0}")]
    BadName(String),
    /// Building the SignedData failed.
    #[error("PKCS#7: {0}")]
    Cms(#[from] CmsBuildError),
}

/// A parsed EFI_VARIABLE_AUTHENTICATION_2 payload, borrowing its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthPayload<'a> {
    /// TimeStamp.
    pub timestamp: EfiTime,
    /// wRevision (edk2 does not check it; sign-efi-sig-list writes 0x0200).
    pub revision: u16,
    /// CertData: the DER PKCS#7 as carried.
    pub cert_data: &'a [u8],
    /// Whether CertData is a ContentInfo rather than a bare SignedData.
    pub wrapped: bool,
    /// Certificates carried in the SignedData.
    pub certificates: Vec<EmbeddedCert>,
    /// The single SignerInfo.
    pub signer: Signer,
    /// The new variable data following the header.
    pub data: &'a [u8],
}

/// The variable update an authenticated payload is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VariableUpdate<'a> {
    /// Variable name (without NUL).
    pub name: &'a str,
    /// Vendor GUID.
    pub vendor: Guid,
    /// SetVariable attributes (with TIME_BASED_AUTHENTICATED_WRITE_ACCESS,
    /// and APPEND_WRITE for an append).
    pub attributes: u32,
}

impl VariableUpdate<'static> {
    /// PK, KEK, db or dbx with NV|BS|RT|TIME_BASED_AUTH, plus APPEND_WRITE
    /// when `append`.
    #[must_use]
    pub fn secure_boot(var: SecureBootVar, append: bool) -> Self {
        let (name, vendor) = var.id();
        let append = if append { ATTR_APPEND_WRITE } else { 0 };
        VariableUpdate {
            name,
            vendor,
            attributes: ATTR_SECURE_BOOT_DB | append,
        }
    }
}

/// Why a payload was refused, each as edk2 refuses it
/// (EFI_SECURITY_VIOLATION).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthVarFailure {
    /// The payload is malformed.
    #[error("malformed payload: {0}")]
    Malformed(#[from] AuthVarError),
    /// The attributes lack TIME_BASED_AUTHENTICATED_WRITE_ACCESS.
    #[error("attributes {0:#x} lack TIME_BASED_AUTHENTICATED_WRITE_ACCESS")]
    NotTimeBased(u32),
    /// Pad1, Nanosecond, TimeZone, Daylight or Pad2 of the timestamp is set.
    #[error("timestamp {0:?} has nonzero Pad1/Nanosecond/TimeZone/Daylight/Pad2")]
    TimestampFields(EfiTime),
    /// CertData does not start `30 82 .. .. 02 01 01 31 0f 30 0d 06 09`
    /// followed by id-sha256 at offset 13: edk2's SHA-256 check, which a
    /// ContentInfo-wrapped SignedData also fails.
    #[error("CertData is not a bare SignedData with SHA-256 first (edk2 checks offset 13); wrapped: {wrapped}")]
    NotSha256SignedData {
        /// Whether CertData was a ContentInfo.
        wrapped: bool,
    },
    /// The signer's digest algorithm is not SHA-256.
    #[error("signer digest algorithm {0:?} is not SHA-256")]
    SignerDigest(DigestAlg),
    /// No embedded certificate matches the signer's issuer and serial.
    #[error("signer certificate not found in the SignedData")]
    SignerCertNotFound,
    /// The messageDigest signed attribute is not the SHA-256 of the
    /// serialized update (or is missing while other attributes are present).
    #[error("messageDigest does not match the serialized update")]
    MessageDigestMismatch,
    /// The signature does not verify over the serialized update: wrong key,
    /// wrong variable, attributes, timestamp or data.
    #[error("signature does not verify over the serialized update")]
    BadSignature,
    /// The signature verifies but its chain meets none of the trusted
    /// certificates.
    #[error("signer is not trusted: its chain meets none of the {trusted} trusted certificate(s)")]
    Untrusted {
        /// How many trusted certificates were offered.
        trusted: usize,
    },
    /// Not an append and the timestamp is not later than the current one.
    #[error("timestamp {given} is not later than the variable's current {current}")]
    Stale {
        /// The payload's timestamp.
        given: EfiTime,
        /// The variable's current timestamp.
        current: EfiTime,
    },
    /// The data of PK/KEK/db/dbx is not a valid EFI_SIGNATURE_LIST sequence.
    #[error("new data is not a valid signature list: {0}")]
    BadSignatureList(SigListError),
}

/// An update that verified: who allowed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedUpdate<'a> {
    /// The trusted certificate (index into the caller's list) that the
    /// signer chain met.
    pub trusted_index: usize,
    /// That certificate's subject.
    pub trusted_subject: String,
    /// Position in the signer chain (0 = signer) that equals or was issued
    /// by that trusted certificate.
    pub chain_position: usize,
    /// The payload's timestamp. It becomes the variable's timestamp; for
    /// an append edk2 keeps the later of it and the current one.
    pub timestamp: EfiTime,
    /// The new data.
    pub data: &'a [u8],
}

/// The X.509 certificates (DER) of signature databases, in order: the
/// `trusted` list for [`verify_payload`] (KEK then PK for db/dbx, PK for
/// PK/KEK).
#[must_use]
pub fn trusted_certs(dbs: &[&SignatureDb]) -> Vec<Vec<u8>> {
    let x509 = crate::siglist::SignatureType::X509.guid();
    dbs.iter()
        .flat_map(|db| db.entries())
        .filter(|(kind, _)| *kind == x509)
        .map(|(_, e)| e.data.clone())
        .collect()
}

/// The bytes the signature covers: VariableName (UTF-16LE, no NUL) ||
/// VendorGuid || Attributes (u32 LE) || TimeStamp || Data.
pub fn serialize(
    update: &VariableUpdate<'_>,
    timestamp: &EfiTime,
    data: &[u8],
) -> Result<Vec<u8>, AuthVarError> {
    let units: Vec<u16> = update.name.encode_utf16().collect();
    if units.is_empty() || units.len() > MAX_NAME_UNITS || units.contains(&0) {
        return Err(AuthVarError::BadName(format!("{:?}", update.name)));
    }
    let mut out = Vec::with_capacity(
        units
            .len()
            .saturating_mul(2)
            .saturating_add(36)
            .saturating_add(data.len()),
    );
    for u in units {
        out.extend_from_slice(&u.to_le_bytes());
    }
    out.extend_from_slice(&update.vendor.to_bytes());
    out.extend_from_slice(&update.attributes.to_le_bytes());
    out.extend_from_slice(&timestamp.to_bytes());
    out.extend_from_slice(data);
    Ok(out)
}

/// Builds the payload `sign-efi-sig-list` writes: timestamp, the
/// WIN_CERTIFICATE_UEFI_GUID with a bare SignedData (no signed attributes,
/// content detached) signed by `key`/`cert_der` (plus `extra_certs`), then
/// `data`.
pub fn build_payload(
    update: &VariableUpdate<'_>,
    timestamp: &EfiTime,
    data: &[u8],
    key: &SigningKey,
    cert_der: &[u8],
    extra_certs: &[Vec<u8>],
) -> Result<Vec<u8>, AuthVarError> {
    let serialized = serialize(update, timestamp, data)?;
    let sd = build_signed_data(
        &CmsSigner {
            key,
            cert_der,
            extra_certs,
        },
        &Content {
            content_type: OID_DATA,
            embedded: None,
            digested: &serialized,
        },
        &SignedAttrs::None,
    )?;
    Ok(assemble(timestamp, &signed_data_der(&sd)?, data))
}

/// Puts a payload together from a timestamp, CertData (DER PKCS#7) and data.
#[must_use]
pub fn assemble(timestamp: &EfiTime, cert_data: &[u8], data: &[u8]) -> Vec<u8> {
    let len = cert_data.len().saturating_add(WIN_CERT_UEFI_GUID_LEN);
    let mut out = Vec::with_capacity(len.saturating_add(16).saturating_add(data.len()));
    out.extend_from_slice(&timestamp.to_bytes());
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&WIN_CERT_REVISION.to_le_bytes());
    out.extend_from_slice(&WIN_CERT_TYPE_EFI_GUID.to_le_bytes());
    out.extend_from_slice(&CERT_TYPE_PKCS7.to_bytes());
    out.extend_from_slice(cert_data);
    out.extend_from_slice(data);
    out
}

fn le16(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    if let Some(s) = b.get(at..at.saturating_add(2)) {
        a.copy_from_slice(s);
    }
    u16::from_le_bytes(a)
}

/// Parses a payload: header fields, then the PKCS#7 (a bare SignedData or
/// a ContentInfo around one) with exactly one SignerInfo.
pub fn parse_payload(payload: &[u8]) -> Result<AuthPayload<'_>, AuthVarError> {
    let header = payload
        .get(..AUTH_HEADER_LEN)
        .ok_or(AuthVarError::Truncated { len: payload.len() })?;
    let mut ts = [0u8; 16];
    ts.copy_from_slice(header.get(..16).unwrap_or(&[0; 16]));
    let len = u32::from(le16(header, 16)) | (u32::from(le16(header, 18)) << 16);
    let revision = le16(header, 20);
    let cert_type = le16(header, 22);
    let cert_end = usize::try_from(len)
        .ok()
        .filter(|&l| l >= WIN_CERT_UEFI_GUID_LEN)
        .and_then(|l| l.checked_add(16))
        .filter(|&end| end <= payload.len())
        .ok_or(AuthVarError::BadLength {
            len,
            payload: payload.len(),
        })?;
    if cert_type != WIN_CERT_TYPE_EFI_GUID {
        return Err(AuthVarError::CertificateType(cert_type));
    }
    let mut guid = [0u8; 16];
    guid.copy_from_slice(header.get(24..40).unwrap_or(&[0; 16]));
    let guid = Guid::from_bytes(guid);
    if guid != CERT_TYPE_PKCS7 {
        return Err(AuthVarError::CertTypeGuid(guid));
    }
    let cert_data = payload.get(AUTH_HEADER_LEN..cert_end).unwrap_or(&[]);
    let data = payload.get(cert_end..).unwrap_or(&[]);
    let (sd, wrapped) = signed_data(cert_data)?;
    let mut certificates = Vec::new();
    for c in sd.certificates.iter().flat_map(|s| s.0.iter()) {
        if let cms::cert::CertificateChoices::Certificate(cert) = c {
            certificates.push(EmbeddedCert {
                der: cert.to_der().map_err(Pkcs7Error::from)?,
                cert: cert.clone(),
            });
        }
    }
    let count = sd.signer_infos.0.len();
    let si = match sd.signer_infos.0.iter().next() {
        Some(si) if count == 1 => si,
        _ => return Err(AuthVarError::SignerCount(count)),
    };
    Ok(AuthPayload {
        timestamp: EfiTime::from_bytes(ts),
        revision,
        cert_data,
        wrapped,
        certificates,
        signer: signer_from(si)?,
        data,
    })
}

/// The SignedData in CertData, and whether it was wrapped in a ContentInfo.
fn signed_data(cert_data: &[u8]) -> Result<(SignedData, bool), AuthVarError> {
    let mut r = SliceReader::new(cert_data).map_err(Pkcs7Error::from)?;
    let tlv = r.tlv_bytes().map_err(Pkcs7Error::from)?;
    if let Ok(ci) = ContentInfo::from_der(tlv) {
        if ci.content_type != OID_SIGNED_DATA {
            return Err(Pkcs7Error::ContentType(ci.content_type).into());
        }
        let sd = ci.content.decode_as().map_err(Pkcs7Error::from)?;
        return Ok((sd, true));
    }
    Ok((SignedData::from_der(tlv).map_err(Pkcs7Error::from)?, false))
}

/// edk2's check that CertData is a bare SignedData whose first digest
/// algorithm is SHA-256 (`VerifyTimeBasedPayload`, SigData + 13).
fn edk2_sha256_prefix(cert_data: &[u8]) -> bool {
    if cert_data.len() < SHA256_OID_END {
        // edk2 skips the check for data this short; it cannot parse anyway.
        return true;
    }
    cert_data.get(1).is_some_and(|b| b & 0x82 == 0x82)
        && cert_data.get(SHA256_OID_AT..SHA256_OID_END) == Some(&SHA256_OID_VALUE[..])
}

/// edk2's timestamp order (`AuthServiceInternalCompareTimeStamp`): true
/// when `first` is not later than `second` (nanoseconds ignored).
fn not_later(first: &EfiTime, second: &EfiTime) -> bool {
    let key = |t: &EfiTime| (t.year, t.month, t.day, t.hour, t.minute, t.second);
    key(first) <= key(second)
}

/// Verifies `payload` for `update` as edk2 does: `trusted` are the DER
/// certificates allowed to sign it (the PK for PK/KEK; the KEK entries and
/// the PK for db/dbx), `current` the variable's timestamp (`None` if it does
/// not exist).
pub fn verify_payload<'a>(
    update: &VariableUpdate<'_>,
    payload: &'a [u8],
    trusted: &[Vec<u8>],
    current: Option<&EfiTime>,
) -> Result<VerifiedUpdate<'a>, AuthVarFailure> {
    if update.attributes & ATTR_TIME_BASED_AUTH == 0 {
        return Err(AuthVarFailure::NotTimeBased(update.attributes));
    }
    let p = parse_payload(payload)?;
    let t = p.timestamp;
    if t.pad1 != 0 || t.nanosecond != 0 || t.timezone != 0 || t.daylight != 0 || t.pad2 != 0 {
        return Err(AuthVarFailure::TimestampFields(t));
    }
    // edk2 checks the order before the signature.
    if let Some(current) = current {
        if update.attributes & ATTR_APPEND_WRITE == 0 && not_later(&t, current) {
            return Err(AuthVarFailure::Stale {
                given: t,
                current: *current,
            });
        }
    }
    if !edk2_sha256_prefix(p.cert_data) {
        return Err(AuthVarFailure::NotSha256SignedData { wrapped: p.wrapped });
    }
    let serialized = serialize(update, &t, p.data)?;
    let chain = check_signer(&p, &serialized)?;
    // The trusted certificates anchor the signer as db certificates anchor
    // an image's signer (no dbx here).
    let trusted_db = Database::from_certs(Guid::from_bytes([0; 16]), trusted.iter().cloned());
    let (trusted_index, chain_position) =
        anchor(&trusted_db, &Database::default(), &p.certificates, &chain).map_err(|_| {
            AuthVarFailure::Untrusted {
                trusted: trusted.len(),
            }
        })?;
    let trusted_subject = trusted_db
        .entry(trusted_index)
        .and_then(|e| e.subject)
        .unwrap_or_default();
    if is_signature_db(update) && !p.data.is_empty() {
        SignatureDb::parse(p.data).map_err(AuthVarFailure::BadSignatureList)?;
    }
    Ok(VerifiedUpdate {
        trusted_index,
        trusted_subject,
        chain_position,
        timestamp: t,
        data: p.data,
    })
}

fn is_signature_db(update: &VariableUpdate<'_>) -> bool {
    [
        SecureBootVar::Pk,
        SecureBootVar::Kek,
        SecureBootVar::Db,
        SecureBootVar::Dbx,
    ]
    .iter()
    .any(|v| v.id() == (update.name, update.vendor))
}

/// Checks the signer's signature over `serialized`; returns its chain
/// (indexes into the certificates, signer first).
fn check_signer(p: &AuthPayload<'_>, serialized: &[u8]) -> Result<Vec<usize>, AuthVarFailure> {
    let s = &p.signer;
    if s.digest_alg != DigestAlg::Sha256 {
        return Err(AuthVarFailure::SignerDigest(s.digest_alg));
    }
    let leaf = signer_cert_index(&p.certificates, s).ok_or(AuthVarFailure::SignerCertNotFound)?;
    let leaf_cert = p
        .certificates
        .get(leaf)
        .ok_or(AuthVarFailure::SignerCertNotFound)?;
    let signed: &[u8] = match &s.signed_attrs_der {
        Some(attrs) => {
            if s.message_digest.as_deref() != Some(&s.digest_alg.digest(serialized)[..]) {
                return Err(AuthVarFailure::MessageDigestMismatch);
            }
            attrs
        }
        None => serialized,
    };
    let spki = &leaf_cert.cert.tbs_certificate.subject_public_key_info;
    if !verify_raw(spki, s.digest_alg, signed, &s.signature) {
        return Err(AuthVarFailure::BadSignature);
    }
    Ok(chain_from(&p.certificates, leaf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cms_build::content_info_der;
    use crate::keys::tests::p256_pair;
    use crate::keys::{CertRole, KeyPair};

    fn pair(cn: &str) -> KeyPair {
        p256_pair(cn, CertRole::Authority)
    }

    const T1: EfiTime = EfiTime::utc(2026, 1, 1, 0, 0, 0);

    #[test]
    fn builds_parses_and_verifies() {
        let kek = pair("KEK");
        let up = VariableUpdate::secure_boot(SecureBootVar::Db, false);
        let p = build_payload(&up, &T1, &[], &kek.key, &kek.cert_der, &[]).unwrap();
        let parsed = parse_payload(&p).unwrap();
        assert_eq!(parsed.timestamp, T1);
        assert!(!parsed.wrapped);
        assert!(parsed.data.is_empty());
        let trusted = vec![pair("other").cert_der, kek.cert_der.clone()];
        let v = verify_payload(&up, &p, &trusted, Some(&EfiTime::INITIAL)).unwrap();
        assert_eq!((v.trusted_index, v.chain_position), (1, 0));
        assert_eq!(
            verify_payload(&up, &p, &trusted[..1], None).unwrap_err(),
            AuthVarFailure::Untrusted { trusted: 1 }
        );
        assert!(matches!(
            verify_payload(&up, &p, &trusted, Some(&T1)),
            Err(AuthVarFailure::Stale { .. })
        ));
        let append = VariableUpdate::secure_boot(SecureBootVar::Db, true);
        assert_eq!(
            verify_payload(&append, &p, &trusted, None).unwrap_err(),
            AuthVarFailure::BadSignature
        );
        let kek_var = VariableUpdate::secure_boot(SecureBootVar::Kek, false);
        assert_eq!(
            verify_payload(&kek_var, &p, &trusted, None).unwrap_err(),
            AuthVarFailure::BadSignature
        );
    }

    #[test]
    fn wrapped_parses_but_fails_the_edk2_prefix() {
        let kek = pair("KEK");
        let up = VariableUpdate::secure_boot(SecureBootVar::Db, false);
        let ser = serialize(&up, &T1, &[]).unwrap();
        let sd = build_signed_data(
            &CmsSigner {
                key: &kek.key,
                cert_der: &kek.cert_der,
                extra_certs: &[],
            },
            &Content {
                content_type: OID_DATA,
                embedded: None,
                digested: &ser,
            },
            &SignedAttrs::None,
        )
        .unwrap();
        let p = assemble(&T1, &content_info_der(&sd).unwrap(), &[]);
        assert!(parse_payload(&p).unwrap().wrapped);
        assert_eq!(
            verify_payload(&up, &p, &[kek.cert_der], None).unwrap_err(),
            AuthVarFailure::NotSha256SignedData { wrapped: true }
        );
    }

    #[test]
    fn malformed_headers_are_typed() {
        let kek = pair("KEK");
        let up = VariableUpdate::secure_boot(SecureBootVar::Db, false);
        let p = build_payload(&up, &T1, &[1, 2, 3], &kek.key, &kek.cert_der, &[]).unwrap();
        for len in 0..p.len() {
            let _ = parse_payload(&p[..len]);
            let _ = verify_payload(&up, &p[..len], &[], None);
        }
        assert_eq!(
            parse_payload(&p[..39]).unwrap_err(),
            AuthVarError::Truncated { len: 39 }
        );
        let mut bad = p.clone();
        bad[16..20].copy_from_slice(&23u32.to_le_bytes());
        assert!(matches!(
            parse_payload(&bad),
            Err(AuthVarError::BadLength { len: 23, .. })
        ));
        bad[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            parse_payload(&bad),
            Err(AuthVarError::BadLength { .. })
        ));
        let mut bad = p.clone();
        bad[22] = 0x02;
        assert_eq!(
            parse_payload(&bad).unwrap_err(),
            AuthVarError::CertificateType(0x0e02)
        );
        let mut bad = p.clone();
        bad[24] ^= 1;
        assert!(matches!(
            parse_payload(&bad),
            Err(AuthVarError::CertTypeGuid(_))
        ));
        let mut bad = p.clone();
        bad[40] = 0x31;
        assert!(matches!(parse_payload(&bad), Err(AuthVarError::Pkcs7(_))));
        // Nonzero nanoseconds.
        let mut bad = p.clone();
        bad[8] = 1;
        assert!(matches!(
            verify_payload(&up, &bad, std::slice::from_ref(&kek.cert_der), None),
            Err(AuthVarFailure::TimestampFields(_))
        ));
        // Data that is not a signature list (signature still valid).
        assert!(matches!(
            verify_payload(&up, &p, std::slice::from_ref(&kek.cert_der), None),
            Err(AuthVarFailure::BadSignatureList(_))
        ));
        let mut no_tba = up;
        no_tba.attributes = 7;
        assert_eq!(
            verify_payload(&no_tba, &p, &[], None).unwrap_err(),
            AuthVarFailure::NotTimeBased(7)
        );
        assert!(serialize(&VariableUpdate { name: "", ..up }, &T1, &[]).is_err());
        assert!(serialize(&VariableUpdate { name: "a\0", ..up }, &T1, &[]).is_err());
    }
}
