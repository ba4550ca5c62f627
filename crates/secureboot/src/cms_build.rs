//! A small PKCS#7 / CMS SignedData builder (RFC 2315, RFC 5652) for the
//! two shapes Secure Boot uses: Authenticode (`SpcIndirectDataContent`
//! embedded, signed attributes) and authenticated variables (content
//! detached, no signed attributes, as `sign-efi-sig-list`'s
//! `PKCS7_DETACHED | PKCS7_NOATTR`).
//!
//! SignedData version 1, one SignerInfo version 1 identified by issuer and
//! serial number, digest SHA-256 (with NULL parameters, as OpenSSL writes),
//! signature RSA PKCS#1 v1.5 (`rsaEncryption`) or ECDSA P-256, the signer
//! certificate plus any extra certificates included. `cms`'s own builder
//! is not used: it writes version 3 for any content type other than id-data,
//! which neither sbsign nor firmware expect.

use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use const_oid::ObjectIdentifier;
use der::asn1::{OctetString, SetOfVec};
use der::{Any, Encode};
use sha2::Digest;
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attribute;

use crate::keys::{parse_certificate, KeyError, SigningKey};
use crate::pkcs7::{OID_MESSAGE_DIGEST, OID_SHA256, OID_SIGNED_DATA};

/// id-contentType (PKCS#9).
pub const OID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
/// id-data.
pub const OID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");

/// Why a SignedData could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CmsBuildError {
    /// The signer certificate or an extra certificate does not parse.
    #[error("certificate {index} unreadable: {reason}")]
    BadCertificate {
        /// 0 for the signer certificate, 1.. for the extra certificates.
        index: usize,
        /// What the decoder said.
        reason: String,
    },
    /// The signer certificate's public key is not the signing key's.
    #[error("signer certificate does not match the signing key")]
    KeyMismatch,
    /// Signing failed.
    #[error("signing: {0}")]
    Key(#[from] KeyError),
    /// DER encoding failed (a set with duplicates, a value too long).
    #[error("DER encoding: {0}")]
    Der(String),
}

impl From<der::Error> for CmsBuildError {
    fn from(e: der::Error) -> Self {
        Self::Der(e.to_string())
    }
}

/// Who signs: the key, its certificate and the certificates to carry with
/// it (intermediates), all DER.
#[derive(Debug, Clone, Copy)]
pub struct Signer<'a> {
    /// The private key.
    pub key: &'a SigningKey,
    /// Its certificate (DER).
    pub cert_der: &'a [u8],
    /// Further certificates to include (DER), e.g. the issuing CA.
    pub extra_certs: &'a [Vec<u8>],
}

/// What is signed.
#[derive(Debug, Clone)]
pub struct Content<'a> {
    /// eContentType (also the contentType signed attribute).
    pub content_type: ObjectIdentifier,
    /// The eContent to embed (`[0] EXPLICIT`), as a full TLV; `None` for
    /// detached content.
    pub embedded: Option<Any>,
    /// The bytes whose SHA-256 is signed: for Authenticode the value
    /// octets of the embedded SEQUENCE, for detached content the content.
    pub digested: &'a [u8],
}

/// Whether and which signed attributes to include.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignedAttrs {
    /// No signed attributes: the signature is over the content digest
    /// itself (OpenSSL's `PKCS7_NOATTR`).
    None,
    /// contentType, messageDigest and these extra attributes; the
    /// signature is over their DER SET OF.
    Standard(Vec<Attribute>),
}

fn sha256_alg() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: OID_SHA256,
        parameters: Some(Any::null()),
    }
}

fn attribute(oid: ObjectIdentifier, value: Any) -> Result<Attribute, CmsBuildError> {
    let mut values = SetOfVec::new();
    values.insert(value)?;
    Ok(Attribute { oid, values })
}

/// Builds a SignedData (version 1) over `content`, signed by `signer`.
pub fn build_signed_data(
    signer: &Signer<'_>,
    content: &Content<'_>,
    attrs: &SignedAttrs,
) -> Result<SignedData, CmsBuildError> {
    let cert = parse_certificate(signer.cert_der).map_err(|e| CmsBuildError::BadCertificate {
        index: 0,
        reason: e.to_string(),
    })?;
    if cert.tbs_certificate.subject_public_key_info != signer.key.public_key_info()? {
        return Err(CmsBuildError::KeyMismatch);
    }
    let mut certs = vec![CertificateChoices::Certificate(cert.clone())];
    for (i, der) in signer.extra_certs.iter().enumerate() {
        let c = parse_certificate(der).map_err(|e| CmsBuildError::BadCertificate {
            index: i.saturating_add(1),
            reason: e.to_string(),
        })?;
        certs.push(CertificateChoices::Certificate(c));
    }
    let digest: [u8; 32] = sha2::Sha256::digest(content.digested).into();
    let (signed_attrs, signature) = match attrs {
        SignedAttrs::None => (None, signer.key.sign_sha256_digest(&digest)?),
        SignedAttrs::Standard(extra) => {
            let mut set = SetOfVec::new();
            set.insert(attribute(
                OID_CONTENT_TYPE,
                Any::encode_from(&content.content_type)?,
            )?)?;
            set.insert(attribute(
                OID_MESSAGE_DIGEST,
                Any::encode_from(&OctetString::new(digest.to_vec())?)?,
            )?)?;
            for a in extra {
                set.insert(a.clone())?;
            }
            let signature = signer.key.sign_sha256(&set.to_der()?)?;
            (Some(set), signature)
        }
    };
    let signer_info = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: cert.tbs_certificate.issuer.clone(),
            serial_number: cert.tbs_certificate.serial_number.clone(),
        }),
        digest_alg: sha256_alg(),
        signed_attrs,
        signature_algorithm: signer.key.cms_signature_algorithm(),
        signature: OctetString::new(signature)?,
        unsigned_attrs: None,
    };
    let mut digest_algorithms = SetOfVec::new();
    digest_algorithms.insert(sha256_alg())?;
    Ok(SignedData {
        version: CmsVersion::V1,
        digest_algorithms,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: content.content_type,
            econtent: content.embedded.clone(),
        },
        certificates: Some(CertificateSet(SetOfVec::try_from(certs)?)),
        crls: None,
        signer_infos: SignerInfos(SetOfVec::try_from(vec![signer_info])?),
    })
}

/// The DER of a bare SignedData (what `sign-efi-sig-list` puts in an
/// authenticated variable).
pub fn signed_data_der(sd: &SignedData) -> Result<Vec<u8>, CmsBuildError> {
    Ok(sd.to_der()?)
}

/// The DER of a ContentInfo wrapping `sd` (what a WIN_CERTIFICATE of an
/// Authenticode signature holds).
pub fn content_info_der(sd: &SignedData) -> Result<Vec<u8>, CmsBuildError> {
    Ok(ContentInfo {
        content_type: OID_SIGNED_DATA,
        content: Any::encode_from(sd)?,
    }
    .to_der()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::tests::p256_pair;
    use crate::keys::{CertRole, KeyPair};

    fn pair() -> KeyPair {
        p256_pair("cms test", CertRole::CodeSigning)
    }

    #[test]
    fn detached_without_attributes_signs_the_content_digest() {
        let p = pair();
        let signer = Signer {
            key: &p.key,
            cert_der: &p.cert_der,
            extra_certs: &[],
        };
        let content = Content {
            content_type: OID_DATA,
            embedded: None,
            digested: b"hello",
        };
        let sd = build_signed_data(&signer, &content, &SignedAttrs::None).unwrap();
        assert_eq!(sd.version, CmsVersion::V1);
        let si = sd.signer_infos.0.get(0).unwrap();
        assert!(si.signed_attrs.is_none());
        let cert = parse_certificate(&p.cert_der).unwrap();
        let spki = cert.tbs_certificate.subject_public_key_info;
        let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(spki.subject_public_key.raw_bytes())
            .unwrap();
        let sig = p256::ecdsa::Signature::from_der(si.signature.as_bytes()).unwrap();
        use signature::Verifier;
        vk.verify(b"hello", &sig).unwrap();
        // Both encodings decode back.
        use der::Decode;
        let bare = signed_data_der(&sd).unwrap();
        assert_eq!(SignedData::from_der(&bare).unwrap(), sd);
        let wrapped = content_info_der(&sd).unwrap();
        let ci = ContentInfo::from_der(&wrapped).unwrap();
        assert_eq!(ci.content_type, OID_SIGNED_DATA);
    }

    #[test]
    fn wrong_certificate_is_rejected() {
        let (a, b) = (pair(), pair());
        let content = Content {
            content_type: OID_DATA,
            embedded: None,
            digested: b"",
        };
        let signer = Signer {
            key: &a.key,
            cert_der: &b.cert_der,
            extra_certs: &[],
        };
        assert_eq!(
            build_signed_data(&signer, &content, &SignedAttrs::None).unwrap_err(),
            CmsBuildError::KeyMismatch
        );
        let bad = vec![vec![0x30, 0x00]];
        let signer = Signer {
            key: &a.key,
            cert_der: &a.cert_der,
            extra_certs: &bad,
        };
        assert!(matches!(
            build_signed_data(&signer, &content, &SignedAttrs::None),
            Err(CmsBuildError::BadCertificate { index: 1, .. })
        ));
    }
}
