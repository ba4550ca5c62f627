//! Authenticode signatures: the PE certificate table (WIN_CERTIFICATE,
//! UEFI 2.10 §32.2.4; PE/COFF "The Attribute Certificate Table") and the
//! PKCS#7 SignedData inside it (RFC 2315 / RFC 5652, Microsoft Authenticode
//! `SpcIndirectDataContent`).
//!
//! Only parsing: no verification happens here (see [`crate::verify`]).

use crate::authenticode::ImageHashAlg;
use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier, SignerInfo};
use const_oid::ObjectIdentifier;
use der::asn1::OctetString;
use der::{Decode, Encode, Reader, SliceReader};
use spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;

/// WIN_CERTIFICATE revision 2.0.
pub const WIN_CERT_REVISION_2_0: u16 = 0x0200;
/// WIN_CERT_TYPE_PKCS_SIGNED_DATA.
pub const WIN_CERT_TYPE_PKCS_SIGNED_DATA: u16 = 0x0002;
/// id-signedData.
pub const OID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
/// SPC_INDIRECT_DATA_OBJID.
pub const OID_SPC_INDIRECT_DATA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.4");
/// id-messageDigest (PKCS#9).
pub const OID_MESSAGE_DIGEST: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
/// szOID_NESTED_SIGNATURE (unauthenticated attribute).
pub const OID_NESTED_SIGNATURE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.4.1");
/// id-sha1.
pub const OID_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
/// id-sha256.
pub const OID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
/// id-sha384.
pub const OID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
/// id-sha512.
pub const OID_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");

/// Upper bound on nesting of nested signatures.
const MAX_NESTING: usize = 4;
/// Upper bound on WIN_CERTIFICATE entries in one table.
const MAX_ENTRIES: usize = 64;

/// Errors reading the certificate table or a SignedData.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Pkcs7Error {
    /// A WIN_CERTIFICATE header or body does not fit the table.
    #[error("WIN_CERTIFICATE at table offset {offset:#x} is truncated or has bad length {len:#x}")]
    BadEntry {
        /// Offset within the certificate table.
        offset: usize,
        /// Its dwLength.
        len: u32,
    },
    /// Revision is not 0x0200 or type is not PKCS_SIGNED_DATA.
    #[error("WIN_CERTIFICATE at table offset {offset:#x}: revision {revision:#x} type {cert_type:#x} unsupported")]
    Unsupported {
        /// Offset within the certificate table.
        offset: usize,
        /// wRevision.
        revision: u16,
        /// wCertificateType.
        cert_type: u16,
    },
    /// Too many entries or too deeply nested signatures.
    #[error("too many certificate entries or nested signatures")]
    TooMany,
    /// DER decoding failed.
    #[error("DER: {0}")]
    Der(String),
    /// ContentInfo is not signedData, or content is not SpcIndirectDataContent.
    #[error("unexpected content type {0}")]
    ContentType(ObjectIdentifier),
    /// The SignedData does not have exactly one SignerInfo.
    #[error("expected exactly one SignerInfo, found {0}")]
    SignerCount(usize),
    /// The signer is identified by subject key identifier (Authenticode uses issuer+serial).
    #[error("signer identified by subject key identifier, not issuer and serial")]
    SignerBySki,
    /// A digest algorithm other than SHA-1/256/384/512.
    #[error("unsupported digest algorithm {0}")]
    DigestAlg(ObjectIdentifier),
}

impl From<der::Error> for Pkcs7Error {
    fn from(e: der::Error) -> Self {
        Self::Der(e.to_string())
    }
}

/// One WIN_CERTIFICATE entry of the certificate table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WinCertificate<'a> {
    /// Offset of the entry within the certificate table.
    pub offset: usize,
    /// wRevision.
    pub revision: u16,
    /// wCertificateType.
    pub cert_type: u16,
    /// bCertificate (dwLength - 8 bytes; may carry trailing padding).
    pub data: &'a [u8],
}

/// Split a certificate table into its WIN_CERTIFICATE entries (each starts
/// 8-byte aligned; trailing zero padding after the last one is allowed).
pub fn win_certificates(table: &[u8]) -> Result<Vec<WinCertificate<'_>>, Pkcs7Error> {
    let mut out = Vec::new();
    let mut offset = 0usize;
    while offset.checked_add(8).is_some_and(|e| e <= table.len()) {
        let rest = table.get(offset..).unwrap_or(&[]);
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let hdr = rest
            .get(..8)
            .ok_or(Pkcs7Error::BadEntry { offset, len: 0 })?;
        let len = u32::from_le_bytes([
            *hdr.first().unwrap_or(&0),
            *hdr.get(1).unwrap_or(&0),
            *hdr.get(2).unwrap_or(&0),
            *hdr.get(3).unwrap_or(&0),
        ]);
        let revision = u16::from_le_bytes([*hdr.get(4).unwrap_or(&0), *hdr.get(5).unwrap_or(&0)]);
        let cert_type = u16::from_le_bytes([*hdr.get(6).unwrap_or(&0), *hdr.get(7).unwrap_or(&0)]);
        let ulen = usize::try_from(len).unwrap_or(usize::MAX);
        let data = (ulen >= 8)
            .then(|| rest.get(8..ulen))
            .flatten()
            .ok_or(Pkcs7Error::BadEntry { offset, len })?;
        if out.len() >= MAX_ENTRIES {
            return Err(Pkcs7Error::TooMany);
        }
        out.push(WinCertificate {
            offset,
            revision,
            cert_type,
            data,
        });
        // Next entry is 8-byte aligned.
        let next = ulen.checked_add(7).map(|v| v & !7usize);
        offset = match next.and_then(|n| offset.checked_add(n)) {
            Some(o) => o,
            None => break,
        };
    }
    Ok(out)
}

/// A certificate embedded in a SignedData, with its original DER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedCert {
    /// Parsed certificate.
    pub cert: Certificate,
    /// DER as re-encoded (identical to the original for DER input).
    pub der: Vec<u8>,
}

/// A parsed Authenticode signature (one SignedData).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticodeSignature {
    /// Digest algorithm of the image hash in SpcIndirectDataContent.
    pub image_digest_alg: ImageHashAlg,
    /// The image digest the signer signed.
    pub image_digest: Vec<u8>,
    /// Content octets (value without tag and length) of the
    /// SpcIndirectDataContent, over which messageDigest is computed.
    pub content: Vec<u8>,
    /// Certificates carried in the SignedData.
    pub certificates: Vec<EmbeddedCert>,
    /// The signer info.
    pub signer: Signer,
    /// Nested signatures (unauthenticated attribute 1.3.6.1.4.1.311.2.4.1).
    pub nested: Vec<AuthenticodeSignature>,
}

/// Digest algorithms used by signer infos.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DigestAlg {
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl DigestAlg {
    /// From an algorithm OID.
    pub fn from_oid(oid: ObjectIdentifier) -> Result<Self, Pkcs7Error> {
        match oid {
            OID_SHA1 => Ok(Self::Sha1),
            OID_SHA256 => Ok(Self::Sha256),
            OID_SHA384 => Ok(Self::Sha384),
            OID_SHA512 => Ok(Self::Sha512),
            o => Err(Pkcs7Error::DigestAlg(o)),
        }
    }

    /// Hash `data`.
    #[must_use]
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            Self::Sha1 => sha1::Sha1::digest(data).to_vec(),
            Self::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Self::Sha384 => sha2::Sha384::digest(data).to_vec(),
            Self::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }
}

/// The single SignerInfo of an Authenticode SignedData.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// Issuer of the signer certificate (DER of the Name).
    pub issuer_der: Vec<u8>,
    /// Serial number of the signer certificate (DER INTEGER content).
    pub serial: Vec<u8>,
    /// Digest algorithm for content and authenticated attributes.
    pub digest_alg: DigestAlg,
    /// The messageDigest authenticated attribute, if present.
    pub message_digest: Option<Vec<u8>>,
    /// DER of the authenticated attributes as a SET OF (what is signed);
    /// `None` if the signer has none.
    pub signed_attrs_der: Option<Vec<u8>>,
    /// Signature algorithm OID (rsaEncryption, sha256WithRSA, ecdsa...).
    pub signature_alg: AlgorithmIdentifierOwned,
    /// Signature bytes.
    pub signature: Vec<u8>,
}

/// The SpcIndirectDataContent structure (only the fields we use).
#[derive(Debug, der::Sequence)]
struct SpcIndirectDataContent {
    data: der::Any,
    message_digest: DigestInfo,
}

/// DigestInfo (RFC 8017).
#[derive(Debug, der::Sequence)]
struct DigestInfo {
    digest_algorithm: AlgorithmIdentifierOwned,
    digest: OctetString,
}

/// Parse the PKCS#7 ContentInfo in a WIN_CERTIFICATE's bCertificate
/// (trailing zero padding after the DER is allowed).
pub fn parse_signature(der_bytes: &[u8]) -> Result<AuthenticodeSignature, Pkcs7Error> {
    parse_at_depth(der_bytes, 0)
}

fn first_tlv(bytes: &[u8]) -> Result<&[u8], Pkcs7Error> {
    let mut r = SliceReader::new(bytes)?;
    Ok(r.tlv_bytes()?)
}

fn parse_at_depth(der_bytes: &[u8], depth: usize) -> Result<AuthenticodeSignature, Pkcs7Error> {
    if depth > MAX_NESTING {
        return Err(Pkcs7Error::TooMany);
    }
    let ci = ContentInfo::from_der(first_tlv(der_bytes)?)?;
    if ci.content_type != OID_SIGNED_DATA {
        return Err(Pkcs7Error::ContentType(ci.content_type));
    }
    let sd: SignedData = ci.content.decode_as()?;
    let eci = &sd.encap_content_info;
    if eci.econtent_type != OID_SPC_INDIRECT_DATA {
        return Err(Pkcs7Error::ContentType(eci.econtent_type));
    }
    let econtent = eci
        .econtent
        .as_ref()
        .ok_or(Pkcs7Error::ContentType(eci.econtent_type))?;
    let content = econtent.value().to_vec();
    let spc: SpcIndirectDataContent = econtent.decode_as()?;
    let image_digest_alg = match spc.message_digest.digest_algorithm.oid {
        OID_SHA1 => ImageHashAlg::Sha1,
        OID_SHA256 => ImageHashAlg::Sha256,
        OID_SHA384 => ImageHashAlg::Sha384,
        OID_SHA512 => ImageHashAlg::Sha512,
        o => return Err(Pkcs7Error::DigestAlg(o)),
    };
    let image_digest = spc.message_digest.digest.as_bytes().to_vec();

    let mut certificates = Vec::new();
    if let Some(set) = &sd.certificates {
        for choice in set.0.iter() {
            if let CertificateChoices::Certificate(c) = choice {
                certificates.push(EmbeddedCert {
                    der: c.to_der()?,
                    cert: c.clone(),
                });
            }
        }
    }
    let count = sd.signer_infos.0.len();
    let si: &SignerInfo = match sd.signer_infos.0.iter().next() {
        Some(si) if count == 1 => si,
        _ => return Err(Pkcs7Error::SignerCount(count)),
    };
    let signer = signer_from(si)?;
    let mut nested = Vec::new();
    if let Some(attrs) = &si.unsigned_attrs {
        for attr in attrs.iter().filter(|a| a.oid == OID_NESTED_SIGNATURE) {
            for v in attr.values.iter() {
                nested.push(parse_at_depth(&v.to_der()?, depth.saturating_add(1))?);
            }
        }
    }
    Ok(AuthenticodeSignature {
        image_digest_alg,
        image_digest,
        content,
        certificates,
        signer,
        nested,
    })
}

pub(crate) fn signer_from(si: &SignerInfo) -> Result<Signer, Pkcs7Error> {
    let SignerIdentifier::IssuerAndSerialNumber(isn) = &si.sid else {
        return Err(Pkcs7Error::SignerBySki);
    };
    let digest_alg = DigestAlg::from_oid(si.digest_alg.oid)?;
    let mut message_digest = None;
    let mut signed_attrs_der = None;
    if let Some(attrs) = &si.signed_attrs {
        for attr in attrs.iter().filter(|a| a.oid == OID_MESSAGE_DIGEST) {
            if let Some(v) = attr.values.iter().next() {
                let os: OctetString = v.decode_as()?;
                message_digest = Some(os.as_bytes().to_vec());
            }
        }
        signed_attrs_der = Some(attrs.to_der()?);
    }
    Ok(Signer {
        issuer_der: isn.issuer.to_der()?,
        serial: isn.serial_number.as_bytes().to_vec(),
        digest_alg,
        message_digest,
        signed_attrs_der,
        signature_alg: si.signature_algorithm.clone(),
        signature: si.signature.as_bytes().to_vec(),
    })
}

/// Read every signature from an image's certificate table. Entries that are
/// not revision 2.0 PKCS_SIGNED_DATA are reported as errors, as edk2 does.
pub fn signatures(table: &[u8]) -> Result<Vec<AuthenticodeSignature>, Pkcs7Error> {
    win_certificates(table)?
        .into_iter()
        .map(|w| {
            if w.revision != WIN_CERT_REVISION_2_0 || w.cert_type != WIN_CERT_TYPE_PKCS_SIGNED_DATA
            {
                return Err(Pkcs7Error::Unsupported {
                    offset: w.offset,
                    revision: w.revision,
                    cert_type: w.cert_type,
                });
            }
            parse_signature(w.data)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(len: u32, body: &[u8]) -> Vec<u8> {
        let mut v = len.to_le_bytes().to_vec();
        v.extend_from_slice(&WIN_CERT_REVISION_2_0.to_le_bytes());
        v.extend_from_slice(&WIN_CERT_TYPE_PKCS_SIGNED_DATA.to_le_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn entries_are_8_byte_aligned() {
        let mut table = entry(11, b"abc");
        table.extend_from_slice(&[0; 5]); // pad 11 -> 16
        table.extend_from_slice(&entry(10, b"de"));
        table.extend_from_slice(&[0; 6]);
        let e = win_certificates(&table).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].offset, e[0].data), (0, &b"abc"[..]));
        assert_eq!((e[1].offset, e[1].data), (16, &b"de"[..]));
    }

    #[test]
    fn bad_lengths_are_errors() {
        assert!(matches!(
            win_certificates(&entry(4, b"")),
            Err(Pkcs7Error::BadEntry { offset: 0, len: 4 })
        ));
        assert!(matches!(
            win_certificates(&entry(100, b"short")),
            Err(Pkcs7Error::BadEntry {
                offset: 0,
                len: 100
            })
        ));
    }
}
