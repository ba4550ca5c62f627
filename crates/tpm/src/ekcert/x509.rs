//! Reading X.509 certificates (RFC 5280 §4) for the EK and its issuers:
//! bounded input, PEM or DER, the exact to-be-signed bytes, and the
//! extensions this module acts on, each decoded once.

use core::fmt;

use const_oid::ObjectIdentifier;
use der::asn1::{AnyRef, BitStringRef};
use der::{Decode, Encode, Sequence};
use x509_cert::attr::Attribute;
use x509_cert::certificate::Version;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::Certificate;

use super::oid;
use super::time::UnixTime;

/// Largest certificate accepted, in DER bytes. EK certificates are about
/// 1 KiB; manufacturer CA certificates a few KiB.
pub const MAX_CERT_LEN: usize = 64 * 1024;

/// Largest PEM text accepted (base64 and line breaks of [`MAX_CERT_LEN`]).
const MAX_PEM_LEN: usize = MAX_CERT_LEN * 2;

/// Why bytes could not be read as a certificate.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The input is empty.
    #[error("empty certificate")]
    Empty,
    /// The input is larger than this crate reads.
    #[error("certificate is {len} bytes, more than the {max} read")]
    TooLarge {
        /// Input length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// PEM armour that does not decode, or a label other than `CERTIFICATE`.
    #[error("bad PEM: {reason}")]
    Pem {
        /// What is wrong.
        reason: String,
    },
    /// The DER does not decode as an X.509 certificate.
    #[error("malformed certificate{}: {reason}", fmt_offset(*.offset))]
    Malformed {
        /// Byte offset in the DER where decoding stopped, when known.
        offset: Option<u32>,
        /// What the decoder found.
        reason: String,
    },
    /// The certificate is not version 3 (RFC 5280 §4.1.2.1): EK and CA
    /// certificates need extensions.
    #[error("certificate is not X.509 version 3")]
    NotV3,
    /// The outer signatureAlgorithm differs from the to-be-signed one
    /// (RFC 5280 §4.1.1.2).
    #[error("signatureAlgorithm differs from tbsCertificate.signature")]
    SignatureAlgorithmMismatch,
    /// An extension appears more than once (RFC 5280 §4.2).
    #[error("extension {oid} appears more than once")]
    DuplicateExtension {
        /// The extension's OID, dotted.
        oid: String,
    },
    /// An extension this crate reads does not decode.
    #[error("extension {oid} is malformed{}: {reason}", fmt_offset(*.offset))]
    BadExtension {
        /// The extension's OID, dotted.
        oid: String,
        /// Byte offset inside the extension value, when known.
        offset: Option<u32>,
        /// What the decoder found.
        reason: String,
    },
    /// The subject public key is of an algorithm or curve this crate does
    /// not handle as an EK (RSA 2048..4096, ECC P-256/P-384).
    #[error("unsupported EK key: {algorithm}")]
    UnsupportedKey {
        /// The algorithm or curve.
        algorithm: String,
    },
    /// The subject public key is of a known algorithm but does not decode
    /// (bad RSAPublicKey, point not on the curve).
    #[error("invalid EK key: {reason}")]
    InvalidKey {
        /// What is wrong.
        reason: String,
    },
}

fn fmt_offset(offset: Option<u32>) -> String {
    offset.map(|o| format!(" at byte {o}")).unwrap_or_default()
}

fn der_offset(err: &der::Error) -> Option<u32> {
    err.position().map(u32::from)
}

/// A certificate serial number: the big-endian bytes of the INTEGER.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CertSerial(Box<[u8]>);

impl CertSerial {
    /// The serial's big-endian bytes, leading zeros stripped.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for CertSerial {
    /// Lower-case hex, as `openssl x509 -serial` prints it (without colons).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("00");
        }
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Names a certificate in verdicts and reports: subject, issuer and serial.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CertId {
    subject: Box<str>,
    issuer: Box<str>,
    serial: CertSerial,
}

impl CertId {
    /// The subject, RFC 4514 form; empty for an EK certificate that follows
    /// the profile.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The issuer, RFC 4514 form.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The serial number.
    pub fn serial(&self) -> &CertSerial {
        &self.serial
    }
}

impl fmt::Display for CertId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let subject = if self.subject.is_empty() {
            "(empty subject)"
        } else {
            &self.subject
        };
        write!(
            f,
            "[{subject}] serial {} issued by [{}]",
            self.serial, self.issuer
        )
    }
}

/// The three fields of a Certificate, the TBS kept as raw bytes so the
/// signature is checked over exactly what was signed (the other two are
/// read from the typed [`Certificate`] decoded from the same bytes).
#[derive(Sequence)]
struct RawCertificate<'a> {
    tbs: AnyRef<'a>,
    signature_algorithm: AnyRef<'a>,
    signature: BitStringRef<'a>,
}

/// The extensions this module acts on, decoded.
#[derive(Clone, Debug, Default)]
pub(crate) struct Extensions {
    pub basic_constraints: Option<BasicConstraints>,
    pub key_usage: Option<KeyUsage>,
    pub subject_key_id: Option<Vec<u8>>,
    pub authority_key_id: Option<Vec<u8>>,
    /// (critical, value)
    pub subject_alt_name: Option<(bool, SubjectAltName)>,
    pub ext_key_usage: Option<ExtendedKeyUsage>,
    pub subject_directory_attributes: Option<Vec<Attribute>>,
    pub has_certificate_policies: bool,
    /// Critical extensions this module does not process (RFC 5280 §4.2:
    /// a verifier must reject a certificate with one).
    pub unhandled_critical: Vec<ObjectIdentifier>,
}

impl Extensions {
    /// Whether the key may sign certificates: keyUsage absent (any use, RFC
    /// 5280 §4.2.1.3) or with keyCertSign.
    pub fn allows_cert_sign(&self) -> bool {
        self.key_usage
            .as_ref()
            .is_none_or(|ku| ku.0.contains(KeyUsages::KeyCertSign))
    }
}

/// A decoded certificate with what verification needs.
#[derive(Clone, Debug)]
pub(crate) struct ParsedCert {
    pub der: Vec<u8>,
    pub tbs_der: Vec<u8>,
    pub cert: Certificate,
    pub id: CertId,
    pub not_before: UnixTime,
    pub not_after: UnixTime,
    pub ext: Extensions,
}

impl ParsedCert {
    /// Reads a certificate from DER or PEM (`-----BEGIN CERTIFICATE-----`).
    pub fn parse(input: &[u8]) -> Result<Self, CertError> {
        let der = to_der(input)?;
        Self::from_der(der)
    }

    fn from_der(der: Vec<u8>) -> Result<Self, CertError> {
        let malformed = |e: der::Error| CertError::Malformed {
            offset: der_offset(&e),
            reason: e.to_string(),
        };
        let raw = RawCertificate::from_der(&der).map_err(malformed)?;
        let tbs_der = raw.tbs.to_der().map_err(malformed)?;
        let cert = Certificate::from_der(&der).map_err(malformed)?;
        let tbs = &cert.tbs_certificate;
        if tbs.version != Version::V3 {
            return Err(CertError::NotV3);
        }
        if tbs.signature != cert.signature_algorithm {
            return Err(CertError::SignatureAlgorithmMismatch);
        }
        let ext = read_extensions(tbs.extensions.as_deref().unwrap_or_default())?;
        let id = CertId {
            subject: display_name(&tbs.subject).into(),
            issuer: display_name(&tbs.issuer).into(),
            serial: CertSerial(tbs.serial_number.as_bytes().into()),
        };
        Ok(ParsedCert {
            not_before: UnixTime::from_x509(&tbs.validity.not_before),
            not_after: UnixTime::from_x509(&tbs.validity.not_after),
            der,
            tbs_der,
            id,
            ext,
            cert,
        })
    }

    /// The signature BIT STRING's bytes (`None` if it has unused bits).
    pub fn signature(&self) -> Option<&[u8]> {
        self.cert.signature.as_bytes()
    }

    /// The PEM form.
    pub fn to_pem(&self) -> String {
        der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &self.der)
            .unwrap_or_default()
    }
}

/// RFC 4514 form of a name. `x509-cert`'s `Display` may return an error
/// (which `to_string` would turn into a panic), so write it by hand.
fn display_name(name: &x509_cert::name::Name) -> String {
    use core::fmt::Write;
    let mut out = String::new();
    if write!(out, "{name}").is_err() {
        out = "(unprintable name)".to_string();
    }
    out
}

/// Turns DER or PEM input into DER, bounding the size first.
fn to_der(input: &[u8]) -> Result<Vec<u8>, CertError> {
    let trimmed = input.trim_ascii_start();
    if trimmed.is_empty() {
        return Err(CertError::Empty);
    }
    if trimmed.starts_with(b"-----BEGIN") {
        if input.len() > MAX_PEM_LEN {
            return Err(CertError::TooLarge {
                len: input.len(),
                max: MAX_PEM_LEN,
            });
        }
        let (label, der) =
            der::pem::decode_vec(trimmed.trim_ascii_end()).map_err(|e| CertError::Pem {
                reason: e.to_string(),
            })?;
        if label != "CERTIFICATE" {
            return Err(CertError::Pem {
                reason: format!("label {label:?}, not CERTIFICATE"),
            });
        }
        if der.len() > MAX_CERT_LEN {
            return Err(CertError::TooLarge {
                len: der.len(),
                max: MAX_CERT_LEN,
            });
        }
        Ok(der)
    } else {
        if input.len() > MAX_CERT_LEN {
            return Err(CertError::TooLarge {
                len: input.len(),
                max: MAX_CERT_LEN,
            });
        }
        Ok(input.to_vec())
    }
}

/// Splits PEM text holding several certificates into single-certificate
/// PEM blocks (as CA bundles and swtpm's issuer files come).
pub(crate) fn split_pem(text: &[u8]) -> Vec<&[u8]> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const END: &[u8] = b"-----END ";
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = find(rest, BEGIN) {
        let Some(after_begin) = rest.get(start..) else {
            break;
        };
        let Some(end_at) = find(after_begin, END) else {
            break;
        };
        // The END line runs to the next "-----" after "-----END ".
        let Some(tail) = after_begin.get(end_at.saturating_add(END.len())..) else {
            break;
        };
        let Some(close) = find(tail, b"-----") else {
            break;
        };
        let block_len = end_at
            .saturating_add(END.len())
            .saturating_add(close)
            .saturating_add(5);
        let Some(block) = after_begin.get(..block_len) else {
            break;
        };
        blocks.push(block);
        let Some(next) = after_begin.get(block_len..) else {
            break;
        };
        rest = next;
    }
    blocks
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decodes the extensions this module acts on; rejects duplicates.
fn read_extensions(list: &[x509_cert::ext::Extension]) -> Result<Extensions, CertError> {
    let mut out = Extensions::default();
    let mut seen: Vec<&ObjectIdentifier> = Vec::with_capacity(list.len());
    for ext in list {
        if seen.contains(&&ext.extn_id) {
            return Err(CertError::DuplicateExtension {
                oid: ext.extn_id.to_string(),
            });
        }
        seen.push(&ext.extn_id);
        let value = ext.extn_value.as_bytes();
        let bad = |e: der::Error| CertError::BadExtension {
            oid: ext.extn_id.to_string(),
            offset: der_offset(&e),
            reason: e.to_string(),
        };
        match ext.extn_id {
            oid::CE_BASIC_CONSTRAINTS => {
                out.basic_constraints = Some(BasicConstraints::from_der(value).map_err(bad)?);
            }
            oid::CE_KEY_USAGE => out.key_usage = Some(KeyUsage::from_der(value).map_err(bad)?),
            oid::CE_SUBJECT_KEY_IDENTIFIER => {
                let ski = SubjectKeyIdentifier::from_der(value).map_err(bad)?;
                out.subject_key_id = Some(ski.0.as_bytes().to_vec());
            }
            oid::CE_AUTHORITY_KEY_IDENTIFIER => {
                let aki = AuthorityKeyIdentifier::from_der(value).map_err(bad)?;
                out.authority_key_id = aki.key_identifier.map(|k| k.as_bytes().to_vec());
            }
            oid::CE_SUBJECT_ALT_NAME => {
                let san = SubjectAltName::from_der(value).map_err(bad)?;
                out.subject_alt_name = Some((ext.critical, san));
            }
            oid::CE_EXT_KEY_USAGE => {
                out.ext_key_usage = Some(ExtendedKeyUsage::from_der(value).map_err(bad)?);
            }
            oid::CE_SUBJECT_DIRECTORY_ATTRIBUTES => {
                // RFC 5280 §4.2.1.8: SEQUENCE SIZE (1..MAX) OF Attribute.
                out.subject_directory_attributes =
                    Some(Vec::<Attribute>::from_der(value).map_err(bad)?);
            }
            oid::CE_CERTIFICATE_POLICIES => {
                out.has_certificate_policies = true;
                if ext.critical {
                    // Policy processing (RFC 5280 §6.1.3 (d)) is not done.
                    out.unhandled_critical.push(ext.extn_id);
                }
            }
            other if ext.critical => out.unhandled_critical.push(other),
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_pem_bundles() {
        let text = b"junk\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n\
                     -----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\ntrailer";
        let blocks = split_pem(text);
        assert_eq!(blocks.len(), 2);
        assert!(blocks[0].starts_with(b"-----BEGIN") && blocks[0].ends_with(b"CERTIFICATE-----"));
        assert!(blocks[1].windows(4).any(|w| w == b"BBBB"));
        assert!(split_pem(b"-----BEGIN CERTIFICATE-----\nAAAA").is_empty());
        assert!(split_pem(b"").is_empty());
    }

    #[test]
    fn serial_and_id_display() {
        assert_eq!(CertSerial(vec![0x0b, 0xa1].into()).to_string(), "0ba1");
        assert_eq!(CertSerial(Vec::new().into()).to_string(), "00");
        let id = CertId {
            subject: "".into(),
            issuer: "CN=CA".into(),
            serial: CertSerial([2].into()),
        };
        assert_eq!(
            id.to_string(),
            "[(empty subject)] serial 02 issued by [CN=CA]"
        );
    }

    #[test]
    fn bounds_input_before_decoding() {
        assert_eq!(to_der(b"  \n"), Err(CertError::Empty));
        let big = vec![0u8; MAX_CERT_LEN + 1];
        assert!(matches!(to_der(&big), Err(CertError::TooLarge { .. })));
        let mut pem = b"-----BEGIN CERTIFICATE-----\n".to_vec();
        pem.resize(MAX_PEM_LEN + 1, b'A');
        assert!(matches!(to_der(&pem), Err(CertError::TooLarge { .. })));
    }
}
