//! Keys and certificates for Secure Boot (PK, KEK, db): generation, PEM in
//! and out, and X.509 v3 certificates, self-signed or issued by a parent
//! key (PK issues KEK, KEK issues db), signed with SHA-256.
//!
//! [`SigningKey`] is the private key every signer of this crate takes
//! (Authenticode in [`crate::sign`], CMS in [`crate::cms_build`],
//! authenticated variables in [`crate::authvar`]): RSA (2048 bits by
//! default, PKCS#1 v1.5, as firmware requires of db/KEK/PK keys) or ECDSA
//! P-256.
//!
//! No clock and no randomness of its own: the caller passes the validity
//! period (Unix seconds) and the RNG that draws keys and serial numbers.
//! The certificate is built and its TBS signed here rather than with
//! `x509-cert`'s builder, as `trustlaunch-tpm`'s `ca.rs` does.

use const_oid::ObjectIdentifier;
use der::asn1::{BitString, GeneralizedTime, OctetString, SetOfVec, UtcTime, Utf8StringRef};
use der::pem::LineEnding;
use der::{Any, Decode, Encode};
use rand_core::CryptoRngCore;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use sha1::Digest;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::certificate::{TbsCertificate, Version};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use x509_cert::Certificate;

pub use rsa::pkcs8::der::zeroize::Zeroizing;

/// sha256WithRSAEncryption.
pub const OID_SHA256_WITH_RSA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
/// ecdsa-with-SHA256.
pub const OID_ECDSA_WITH_SHA256: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
/// rsaEncryption (the SignerInfo signature algorithm OpenSSL writes).
pub const OID_RSA_ENCRYPTION: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// id-kp-codeSigning.
pub const OID_KP_CODE_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");
const OID_COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");

/// RSA modulus size of generated keys unless asked otherwise.
pub const DEFAULT_RSA_BITS: usize = 2048;
/// Bytes of a serial number drawn from the RNG (RFC 5280 §4.1.2.2: at most 20).
const SERIAL_LEN: usize = 16;
/// Longest commonName accepted (RFC 5280 ub-common-name).
const MAX_COMMON_NAME: usize = 64;

/// Why a key or certificate operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The PEM or DER private key could not be read.
    #[error("private key unreadable: {0}")]
    BadKey(String),
    /// The PEM or DER certificate could not be read.
    #[error("certificate unreadable: {0}")]
    BadCertificate(String),
    /// The certificate's public key is not the private key's.
    #[error("certificate does not match the private key")]
    KeyMismatch,
    /// Key generation failed (RSA prime search, unsupported size).
    #[error("key generation failed: {0}")]
    Generate(String),
    /// notBefore after notAfter, or a time X.509 cannot express.
    #[error("bad validity: {0}")]
    BadValidity(String),
    /// The commonName is empty or longer than 64 characters.
    #[error("bad commonName: {0}")]
    BadName(String),
    /// The signature operation failed.
    #[error("signing failed: {0}")]
    Sign(String),
    /// DER encoding failed.
    #[error("encoding failed: {0}")]
    Encoding(String),
}

fn encoding(e: impl core::fmt::Display) -> KeyError {
    KeyError::Encoding(e.to_string())
}

/// A private key that signs with SHA-256.
#[derive(Clone)]
#[non_exhaustive]
pub enum SigningKey {
    /// RSA, signing with RSASSA-PKCS1-v1_5 (deterministic).
    Rsa(Box<rsa::RsaPrivateKey>),
    /// ECDSA on NIST P-256 (deterministic nonces, RFC 6979).
    EcdsaP256(p256::ecdsa::SigningKey),
}

impl core::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Rsa(k) => {
                use rsa::traits::PublicKeyParts;
                write!(
                    f,
                    "SigningKey::Rsa({} bits, ..)",
                    k.size().saturating_mul(8)
                )
            }
            Self::EcdsaP256(_) => f.write_str("SigningKey::EcdsaP256(..)"),
        }
    }
}

impl SigningKey {
    /// A new RSA key of [`DEFAULT_RSA_BITS`] bits from `rng`.
    pub fn generate_rsa(rng: &mut impl CryptoRngCore) -> Result<Self, KeyError> {
        Self::generate_rsa_bits(DEFAULT_RSA_BITS, rng)
    }

    /// A new RSA key of `bits` bits (2048..=4096) from `rng`.
    pub fn generate_rsa_bits(bits: usize, rng: &mut impl CryptoRngCore) -> Result<Self, KeyError> {
        if !(2048..=4096).contains(&bits) {
            return Err(KeyError::Generate(format!(
                "{bits} bits not in 2048..=4096"
            )));
        }
        rsa::RsaPrivateKey::new(rng, bits)
            .map(|k| Self::Rsa(Box::new(k)))
            .map_err(|e| KeyError::Generate(e.to_string()))
    }

    /// A new ECDSA P-256 key from `rng`.
    pub fn generate_p256(rng: &mut impl CryptoRngCore) -> Self {
        Self::EcdsaP256(p256::ecdsa::SigningKey::random(rng))
    }

    /// Reads a PEM private key: PKCS#8 `PRIVATE KEY` (RSA or P-256, as
    /// `openssl req -newkey -nodes` writes), PKCS#1 `RSA PRIVATE KEY`
    /// (`openssl genrsa -traditional`) or SEC1 `EC PRIVATE KEY`. Encrypted
    /// keys are not accepted.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let (label, der) = der::pem::decode_vec(pem.trim().as_bytes())
            .map_err(|e| KeyError::BadKey(e.to_string()))?;
        let der = Zeroizing::new(der);
        match label {
            "PRIVATE KEY" => Self::from_pkcs8_der(&der),
            "RSA PRIVATE KEY" => rsa::RsaPrivateKey::from_pkcs1_der(&der)
                .map(|k| Self::Rsa(Box::new(k)))
                .map_err(|e| KeyError::BadKey(format!("PKCS#1: {e}"))),
            "EC PRIVATE KEY" => p256::SecretKey::from_sec1_der(&der)
                .map(|k| Self::EcdsaP256(k.into()))
                .map_err(|e| KeyError::BadKey(format!("SEC1 (P-256 only): {e}"))),
            other => Err(KeyError::BadKey(format!(
                "PEM label {other:?} is not an unencrypted private key"
            ))),
        }
    }

    /// Reads a PKCS#8 DER private key (RSA or P-256).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_der(der) {
            return Ok(Self::Rsa(Box::new(k)));
        }
        p256::SecretKey::from_pkcs8_der(der)
            .map(|k| Self::EcdsaP256(k.into()))
            .map_err(|e| KeyError::BadKey(format!("PKCS#8, neither RSA nor P-256: {e}")))
    }

    /// The key as PKCS#8 PEM (`PRIVATE KEY`); zeroed when dropped.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        match self {
            Self::Rsa(k) => k.to_pkcs8_pem(LineEnding::LF),
            Self::EcdsaP256(k) => p256::SecretKey::from(k).to_pkcs8_pem(LineEnding::LF),
        }
        .map_err(encoding)
    }

    /// The SubjectPublicKeyInfo of the public half.
    pub fn public_key_info(&self) -> Result<SubjectPublicKeyInfoOwned, KeyError> {
        let der = match self {
            Self::Rsa(k) => k.to_public_key().to_public_key_der(),
            Self::EcdsaP256(k) => k.verifying_key().to_public_key_der(),
        }
        .map_err(encoding)?;
        SubjectPublicKeyInfoOwned::from_der(der.as_bytes()).map_err(encoding)
    }

    /// The X.509 signature algorithm: sha256WithRSAEncryption (NULL
    /// parameters) or ecdsa-with-SHA256 (absent parameters, RFC 5758).
    pub fn x509_signature_algorithm(&self) -> AlgorithmIdentifierOwned {
        match self {
            Self::Rsa(_) => AlgorithmIdentifierOwned {
                oid: OID_SHA256_WITH_RSA,
                parameters: Some(Any::null()),
            },
            Self::EcdsaP256(_) => AlgorithmIdentifierOwned {
                oid: OID_ECDSA_WITH_SHA256,
                parameters: None,
            },
        }
    }

    /// The SignerInfo signature algorithm OpenSSL writes: rsaEncryption
    /// (NULL parameters) or ecdsa-with-SHA256.
    pub fn cms_signature_algorithm(&self) -> AlgorithmIdentifierOwned {
        match self {
            Self::Rsa(_) => AlgorithmIdentifierOwned {
                oid: OID_RSA_ENCRYPTION,
                parameters: Some(Any::null()),
            },
            Self::EcdsaP256(_) => self.x509_signature_algorithm(),
        }
    }

    /// Signs `message` hashed with SHA-256: a PKCS#1 v1.5 signature block,
    /// or a DER ECDSA-Sig-Value.
    pub fn sign_sha256(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.sign_sha256_digest(&sha2::Sha256::digest(message).into())
    }

    /// Signs an already computed SHA-256 digest.
    pub fn sign_sha256_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, KeyError> {
        match self {
            Self::Rsa(k) => k
                .sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), digest)
                .map_err(|e| KeyError::Sign(e.to_string())),
            Self::EcdsaP256(k) => {
                use signature::hazmat::PrehashSigner;
                let sig: p256::ecdsa::Signature = k
                    .sign_prehash(digest)
                    .map_err(|e| KeyError::Sign(e.to_string()))?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
        }
    }

    /// Whether `cert_der`'s public key is this key's.
    pub fn matches_certificate(&self, cert_der: &[u8]) -> Result<bool, KeyError> {
        let cert = parse_certificate(cert_der)?;
        Ok(cert.tbs_certificate.subject_public_key_info == self.public_key_info()?)
    }
}

/// What a certificate is for; decides basicConstraints, keyUsage and
/// extendedKeyUsage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertRole {
    /// A key that certifies other keys and signs variable updates (PK, a
    /// KEK that issues db keys): basicConstraints cA (critical), keyUsage
    /// digitalSignature|keyCertSign|cRLSign (critical).
    Authority,
    /// A key that signs images or variable updates (db, a KEK): basicConstraints
    /// cA false (critical), keyUsage digitalSignature (critical),
    /// extendedKeyUsage codeSigning.
    CodeSigning,
}

/// The subject, validity and role of a certificate to issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRequest {
    /// Subject commonName (the subject has this one attribute).
    pub common_name: String,
    /// Start of validity, Unix seconds.
    pub not_before: u64,
    /// End of validity, Unix seconds (253402300799 for 9999-12-31T23:59:59Z).
    pub not_after: u64,
    /// Extensions profile.
    pub role: CertRole,
}

/// A private key and its certificate (DER).
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// The private key.
    pub key: SigningKey,
    /// Its X.509 certificate, DER.
    pub cert_der: Vec<u8>,
}

impl KeyPair {
    /// A self-signed certificate for `key` (issuer = subject; the
    /// authorityKeyIdentifier is its own key identifier, as OpenSSL writes).
    pub fn self_signed(
        key: SigningKey,
        request: &CertRequest,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, KeyError> {
        let spki = key.public_key_info()?;
        let key_id = key_identifier(&spki)?;
        let subject = common_name(&request.common_name)?;
        let cert_der =
            sign_certificate(&key, subject.clone(), &key_id, subject, spki, request, rng)?;
        Ok(Self { key, cert_der })
    }

    /// Issues a certificate for `key`, signed by this pair (so PK can
    /// certify a KEK, and a KEK a db key).
    pub fn issue(
        &self,
        key: SigningKey,
        request: &CertRequest,
        rng: &mut impl CryptoRngCore,
    ) -> Result<KeyPair, KeyError> {
        let issuer = parse_certificate(&self.cert_der)?;
        let issuer_spki = self.key.public_key_info()?;
        if issuer.tbs_certificate.subject_public_key_info != issuer_spki {
            return Err(KeyError::KeyMismatch);
        }
        let issuer_key_id = key_identifier(&issuer_spki)?;
        let cert_der = sign_certificate(
            &self.key,
            issuer.tbs_certificate.subject,
            &issuer_key_id,
            common_name(&request.common_name)?,
            key.public_key_info()?,
            request,
            rng,
        )?;
        Ok(KeyPair { key, cert_der })
    }

    /// Loads a key (see [`SigningKey::from_pem`]) and its certificate (PEM
    /// or DER), checking that they belong together.
    pub fn from_pem(key_pem: &str, cert: &[u8]) -> Result<Self, KeyError> {
        let key = SigningKey::from_pem(key_pem)?;
        let cert_der = certificate_der(cert)?;
        if !key.matches_certificate(&cert_der)? {
            return Err(KeyError::KeyMismatch);
        }
        Ok(Self { key, cert_der })
    }

    /// The certificate as PEM (`CERTIFICATE`).
    pub fn cert_pem(&self) -> Result<String, KeyError> {
        cert_to_pem(&self.cert_der)
    }
}

/// A certificate given as PEM (`CERTIFICATE`) or DER, as DER (checked to
/// parse as X.509).
pub fn certificate_der(cert: &[u8]) -> Result<Vec<u8>, KeyError> {
    let der = if cert.starts_with(b"-----") || cert.first().is_some_and(u8::is_ascii_whitespace) {
        let text = core::str::from_utf8(cert)
            .map_err(|e| KeyError::BadCertificate(format!("PEM is not UTF-8: {e}")))?;
        let (label, der) = der::pem::decode_vec(text.trim().as_bytes())
            .map_err(|e| KeyError::BadCertificate(e.to_string()))?;
        if label != "CERTIFICATE" {
            return Err(KeyError::BadCertificate(format!(
                "PEM label {label:?}, not CERTIFICATE"
            )));
        }
        der
    } else {
        cert.to_vec()
    };
    parse_certificate(&der)?;
    Ok(der)
}

/// A DER certificate as PEM (`CERTIFICATE`, LF line endings).
pub fn cert_to_pem(cert_der: &[u8]) -> Result<String, KeyError> {
    der::pem::encode_string("CERTIFICATE", LineEnding::LF, cert_der).map_err(encoding)
}

pub(crate) fn parse_certificate(der: &[u8]) -> Result<Certificate, KeyError> {
    Certificate::from_der(der).map_err(|e| KeyError::BadCertificate(e.to_string()))
}

fn common_name(cn: &str) -> Result<Name, KeyError> {
    let chars = cn.chars().count();
    if chars == 0 || chars > MAX_COMMON_NAME {
        return Err(KeyError::BadName(format!(
            "{chars} characters, not 1..={MAX_COMMON_NAME}"
        )));
    }
    let value = Any::encode_from(&Utf8StringRef::new(cn).map_err(encoding)?).map_err(encoding)?;
    let mut set = SetOfVec::new();
    set.insert(AttributeTypeAndValue {
        oid: OID_COMMON_NAME,
        value,
    })
    .map_err(encoding)?;
    Ok(RdnSequence(vec![RelativeDistinguishedName(set)]))
}

/// RFC 5280 §4.2.1.2 method (1): SHA-1 of the subjectPublicKey bits.
fn key_identifier(spki: &SubjectPublicKeyInfoOwned) -> Result<Vec<u8>, KeyError> {
    let bits = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| encoding("public key has unused bits"))?;
    Ok(sha1::Sha1::digest(bits).to_vec())
}

/// A positive serial of [`SERIAL_LEN`] bytes, top byte in 0x40..=0x7f.
fn random_serial(rng: &mut impl CryptoRngCore) -> Result<SerialNumber, KeyError> {
    let mut bytes = [0u8; SERIAL_LEN];
    rng.fill_bytes(&mut bytes);
    if let Some(first) = bytes.first_mut() {
        *first = (*first & 0x3f) | 0x40;
    }
    SerialNumber::new(&bytes).map_err(encoding)
}

/// UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 §4.1.2.5).
fn x509_time(unix: u64) -> Result<Time, KeyError> {
    let dt = der::DateTime::from_unix_duration(core::time::Duration::from_secs(unix))
        .map_err(|e| KeyError::BadValidity(format!("{unix}: {e}")))?;
    if dt.year() < 2050 {
        UtcTime::from_date_time(dt)
            .map(Time::UtcTime)
            .map_err(|e| KeyError::BadValidity(e.to_string()))
    } else {
        Ok(Time::GeneralTime(GeneralizedTime::from_date_time(dt)))
    }
}

fn extension<E: Encode + const_oid::AssociatedOid>(
    value: &E,
    critical: bool,
) -> Result<Extension, KeyError> {
    Ok(Extension {
        extn_id: E::OID,
        critical,
        extn_value: OctetString::new(value.to_der().map_err(encoding)?).map_err(encoding)?,
    })
}

fn extensions(
    role: CertRole,
    subject_key_id: Vec<u8>,
    issuer_key_id: &[u8],
) -> Result<Vec<Extension>, KeyError> {
    let (ca, usage) = match role {
        CertRole::Authority => (
            true,
            KeyUsages::DigitalSignature | KeyUsages::KeyCertSign | KeyUsages::CRLSign,
        ),
        CertRole::CodeSigning => (false, KeyUsages::DigitalSignature.into()),
    };
    let mut out = vec![
        extension(
            &BasicConstraints {
                ca,
                path_len_constraint: None,
            },
            true,
        )?,
        extension(&KeyUsage(usage), true)?,
        extension(
            &SubjectKeyIdentifier(OctetString::new(subject_key_id).map_err(encoding)?),
            false,
        )?,
        extension(
            &AuthorityKeyIdentifier {
                key_identifier: Some(OctetString::new(issuer_key_id).map_err(encoding)?),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            },
            false,
        )?,
    ];
    if role == CertRole::CodeSigning {
        out.push(extension(
            &ExtendedKeyUsage(vec![OID_KP_CODE_SIGNING]),
            false,
        )?);
    }
    Ok(out)
}

fn sign_certificate(
    issuer_key: &SigningKey,
    issuer: Name,
    issuer_key_id: &[u8],
    subject: Name,
    subject_public_key_info: SubjectPublicKeyInfoOwned,
    request: &CertRequest,
    rng: &mut impl CryptoRngCore,
) -> Result<Vec<u8>, KeyError> {
    if request.not_before > request.not_after {
        return Err(KeyError::BadValidity(format!(
            "notBefore {} after notAfter {}",
            request.not_before, request.not_after
        )));
    }
    let validity = Validity {
        not_before: x509_time(request.not_before)?,
        not_after: x509_time(request.not_after)?,
    };
    let subject_key_id = key_identifier(&subject_public_key_info)?;
    let signature_algorithm = issuer_key.x509_signature_algorithm();
    let tbs_certificate = TbsCertificate {
        version: Version::V3,
        serial_number: random_serial(rng)?,
        signature: signature_algorithm.clone(),
        issuer,
        validity,
        subject,
        subject_public_key_info,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions(request.role, subject_key_id, issuer_key_id)?),
    };
    let tbs = tbs_certificate.to_der().map_err(encoding)?;
    let signature = BitString::from_bytes(&issuer_key.sign_sha256(&tbs)?).map_err(encoding)?;
    Certificate {
        tbs_certificate,
        signature_algorithm,
        signature,
    }
    .to_der()
    .map_err(encoding)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::verify::issued_by;

    /// A fresh self-signed P-256 pair (fast; for unit tests elsewhere).
    pub(crate) fn p256_pair(cn: &str, role: CertRole) -> KeyPair {
        let mut rng = rand_core::OsRng;
        KeyPair::self_signed(
            SigningKey::generate_p256(&mut rng),
            &CertRequest {
                common_name: cn.into(),
                not_before: 0,
                not_after: 2_000_000_000,
                role,
            },
            &mut rng,
        )
        .unwrap()
    }

    fn request(cn: &str, role: CertRole) -> CertRequest {
        CertRequest {
            common_name: cn.into(),
            not_before: 1_767_225_600, // 2026-01-01
            not_after: 2_524_608_000,  // 2050-01-01: GeneralizedTime
            role,
        }
    }

    #[test]
    fn chain_of_generated_keys_verifies_and_round_trips_pem() {
        let mut rng = rand_core::OsRng;
        let pk = KeyPair::self_signed(
            SigningKey::generate_p256(&mut rng),
            &request("PK", CertRole::Authority),
            &mut rng,
        )
        .unwrap();
        let kek = pk
            .issue(
                SigningKey::generate_p256(&mut rng),
                &request("KEK", CertRole::CodeSigning),
                &mut rng,
            )
            .unwrap();
        let pkc = Certificate::from_der(&pk.cert_der).unwrap();
        let kekc = Certificate::from_der(&kek.cert_der).unwrap();
        assert!(issued_by(&pk.cert_der, &pkc, &pkc));
        assert!(issued_by(&kek.cert_der, &kekc, &pkc));
        assert!(!issued_by(&pk.cert_der, &pkc, &kekc));
        let again = KeyPair::from_pem(
            &kek.key.to_pkcs8_pem().unwrap(),
            kek.cert_pem().unwrap().as_bytes(),
        )
        .unwrap();
        assert_eq!(again.cert_der, kek.cert_der);
        assert_eq!(
            KeyPair::from_pem(&pk.key.to_pkcs8_pem().unwrap(), &kek.cert_der).unwrap_err(),
            KeyError::KeyMismatch
        );
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let mut rng = rand_core::OsRng;
        let key = SigningKey::generate_p256(&mut rng);
        let mut r = request("", CertRole::Authority);
        assert!(matches!(
            KeyPair::self_signed(key.clone(), &r, &mut rng),
            Err(KeyError::BadName(_))
        ));
        r.common_name = "x".into();
        r.not_after = r.not_before - 1;
        assert!(matches!(
            KeyPair::self_signed(key.clone(), &r, &mut rng),
            Err(KeyError::BadValidity(_))
        ));
        r.not_after = u64::MAX;
        assert!(matches!(
            KeyPair::self_signed(key, &r, &mut rng),
            Err(KeyError::BadValidity(_))
        ));
        assert!(SigningKey::from_pem("").is_err());
        assert!(SigningKey::from_pem(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"
        )
        .is_err());
        assert!(matches!(
            SigningKey::from_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"),
            Err(KeyError::BadKey(_))
        ));
        assert!(certificate_der(b"\x30\x03\x02\x01").is_err());
        assert!(certificate_der(b"-----BEGIN X-----\n-----END X-----").is_err());
        assert!(matches!(
            SigningKey::generate_rsa_bits(1024, &mut rng),
            Err(KeyError::Generate(_))
        ));
    }
}
