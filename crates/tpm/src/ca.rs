//! The platform's vTPM CA: issues the EK certificate of every vTPM.
//!
//! Creates a self-signed root (ECDSA P-256 or P-384; basicConstraints cA,
//! keyUsage keyCertSign|cRLSign, subjectKeyIdentifier) and issues EK
//! certificates per the TCG EK Credential Profile for TPM Family 2.0: empty
//! subject, critical subjectAltName directoryName with the TPM's
//! manufacturer, model and version, extendedKeyUsage tcg-kp-EKCertificate,
//! keyUsage keyEncipherment (RSA EK) or keyAgreement (ECC EK),
//! authorityKeyIdentifier, subjectDirectoryAttributes with the TPM
//! specification, optional certificate policies, basicConstraints cA false.
//!
//! No IO, no randomness of its own: keys and serial numbers come from the
//! caller's RNG, times from the caller, and storage of the exported PEM is
//! the caller's.

use const_oid::ObjectIdentifier;
use der::asn1::{BitString, OctetString, SetOfVec, Utf8StringRef};
use der::{Any, Decode, Encode};
use p256::elliptic_curve::zeroize::Zeroizing;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rand_core::CryptoRngCore;
use sha1::{Digest, Sha1};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::attr::{Attribute, AttributeTypeAndValue};
use x509_cert::certificate::{TbsCertificate, Version};
use x509_cert::ext::pkix::certpolicy::PolicyInformation;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, CertificatePolicies, ExtendedKeyUsage, KeyUsage,
    KeyUsages, SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::ext::Extension;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::Validity;
use x509_cert::Certificate;

use crate::ekcert::oid;
use crate::ekcert::{
    CaCertificate, CertError, EkCertificate, EkPublicKey, TpmIdentity, TpmSpecification, UnixTime,
};

/// Bytes of a serial number drawn from the RNG (RFC 5280 §4.1.2.2: at most
/// 20; CA/Browser Forum practice: at least 64 bits of randomness).
const SERIAL_LEN: usize = 16;

/// Why a CA operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// The private key does not decode as PKCS#8 for P-256 or P-384.
    #[error("CA key unreadable: {reason}")]
    BadKey {
        /// What the decoder said.
        reason: String,
    },
    /// The CA certificate does not decode.
    #[error("CA certificate unreadable: {0}")]
    BadCertificate(#[from] CertError),
    /// The CA certificate's public key is not the key's.
    #[error("CA certificate does not match the CA key")]
    KeyMismatch,
    /// The CA certificate is not a CA certificate.
    #[error("certificate is not a CA (basicConstraints cA and keyCertSign)")]
    NotACa,
    /// The EK public key cannot be certified (RSA not 2048..=4096 bits with
    /// an odd exponent, ECC point off its curve or of the wrong length).
    #[error("EK public key rejected: {reason}")]
    BadEkKey {
        /// What is wrong.
        reason: String,
    },
    /// notBefore after notAfter, or a time X.509 cannot express.
    #[error("bad validity: {reason}")]
    BadValidity {
        /// What is wrong.
        reason: String,
    },
    /// A name or field is not encodable (empty, or too long for the profile).
    #[error("bad field {field}: {reason}")]
    BadField {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// DER encoding or signing failed.
    #[error("encoding failed: {reason}")]
    Encoding {
        /// What failed.
        reason: String,
    },
}

fn encoding(e: impl core::fmt::Display) -> CaError {
    CaError::Encoding {
        reason: e.to_string(),
    }
}

/// The curve of the CA key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CaKeyAlgorithm {
    /// ECDSA on NIST P-256, signing with SHA-256.
    P256,
    /// ECDSA on NIST P-384, signing with SHA-384.
    P384,
}

/// The CA's private key.
#[derive(Clone)]
pub struct CaSigningKey(KeyInner);

#[derive(Clone)]
enum KeyInner {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

impl core::fmt::Debug for CaSigningKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "CaSigningKey({:?}, ..)", self.algorithm())
    }
}

impl CaSigningKey {
    /// Generates a key from the caller's RNG.
    pub fn generate(algorithm: CaKeyAlgorithm, rng: &mut impl CryptoRngCore) -> Self {
        CaSigningKey(match algorithm {
            CaKeyAlgorithm::P256 => KeyInner::P256(p256::ecdsa::SigningKey::random(rng)),
            CaKeyAlgorithm::P384 => KeyInner::P384(p384::ecdsa::SigningKey::random(rng)),
        })
    }

    /// Reads a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, CaError> {
        let (label, der) =
            der::pem::decode_vec(pem.trim().as_bytes()).map_err(|e| CaError::BadKey {
                reason: e.to_string(),
            })?;
        if label != "PRIVATE KEY" {
            return Err(CaError::BadKey {
                reason: format!("label {label:?}, not PRIVATE KEY"),
            });
        }
        Self::from_pkcs8_der(&Zeroizing::new(der))
    }

    /// Reads a PKCS#8 DER private key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, CaError> {
        if let Ok(key) = p256::SecretKey::from_pkcs8_der(der) {
            return Ok(CaSigningKey(KeyInner::P256(key.into())));
        }
        p384::SecretKey::from_pkcs8_der(der)
            .map(|key| CaSigningKey(KeyInner::P384(key.into())))
            .map_err(|e| CaError::BadKey {
                reason: format!("not a P-256 or P-384 key: {e}"),
            })
    }

    /// The key as PKCS#8 PEM; the returned string is zeroed when dropped.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, CaError> {
        match &self.0 {
            KeyInner::P256(k) => p256::SecretKey::from(k).to_pkcs8_pem(LineEnding::LF),
            KeyInner::P384(k) => p384::SecretKey::from(k).to_pkcs8_pem(LineEnding::LF),
        }
        .map_err(encoding)
    }

    /// The curve.
    pub fn algorithm(&self) -> CaKeyAlgorithm {
        match self.0 {
            KeyInner::P256(_) => CaKeyAlgorithm::P256,
            KeyInner::P384(_) => CaKeyAlgorithm::P384,
        }
    }

    fn public_key_info(&self) -> Result<SubjectPublicKeyInfoOwned, CaError> {
        let der = match &self.0 {
            KeyInner::P256(k) => k.verifying_key().to_public_key_der(),
            KeyInner::P384(k) => k.verifying_key().to_public_key_der(),
        }
        .map_err(encoding)?;
        SubjectPublicKeyInfoOwned::from_der(der.as_bytes()).map_err(encoding)
    }

    fn signature_algorithm(&self) -> AlgorithmIdentifierOwned {
        let oid = match self.0 {
            KeyInner::P256(_) => oid::ECDSA_WITH_SHA256,
            KeyInner::P384(_) => oid::ECDSA_WITH_SHA384,
        };
        // RFC 5758 §3.2: the parameters are absent.
        AlgorithmIdentifierOwned {
            oid,
            parameters: None,
        }
    }

    /// Signs `tbs` (DER); returns the DER Ecdsa-Sig-Value.
    fn sign(&self, tbs: &[u8]) -> Result<Vec<u8>, CaError> {
        use ::signature::Signer;
        match &self.0 {
            KeyInner::P256(k) => {
                let sig: p256::ecdsa::DerSignature = k.try_sign(tbs).map_err(encoding)?;
                Ok(sig.as_bytes().to_vec())
            }
            KeyInner::P384(k) => {
                let sig: p384::ecdsa::DerSignature = k.try_sign(tbs).map_err(encoding)?;
                Ok(sig.as_bytes().to_vec())
            }
        }
    }
}

/// The root certificate's subject and validity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaConfig {
    /// commonName, e.g. `trustlaunch vTPM CA`.
    pub common_name: String,
    /// organizationName, if any.
    pub organization: Option<String>,
    /// Start of validity.
    pub not_before: UnixTime,
    /// End of validity; `None` for 9999-12-31T23:59:59Z (no expiry).
    pub not_after: Option<UnixTime>,
    /// basicConstraints pathLenConstraint: `Some(0)` for a CA that issues
    /// only EK certificates, `None` for no limit on CAs below it.
    pub path_len_constraint: Option<u8>,
}

/// What an EK certificate is to say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EkCertRequest {
    /// The endorsement key (read from the vTPM: TPM2_ReadPublic of the EK).
    pub ek: EkPublicKey,
    /// Manufacturer, model and firmware version of the vTPM.
    pub tpm: TpmIdentity,
    /// The TPM specification it implements.
    pub spec: TpmSpecification,
    /// Start of validity.
    pub not_before: UnixTime,
    /// End of validity; `None` for 9999-12-31T23:59:59Z, which the profile
    /// allows for EK certificates (the EK lives as long as the TPM).
    pub not_after: Option<UnixTime>,
    /// Certificate policy OIDs to include (non-critical); empty for none.
    pub policies: Vec<ObjectIdentifier>,
}

/// The vTPM CA: its key and its self-signed certificate.
#[derive(Clone, Debug)]
pub struct VtpmCa {
    key: CaSigningKey,
    cert: CaCertificate,
    name: Name,
    key_id: Vec<u8>,
}

impl VtpmCa {
    /// Creates the CA: a self-signed root for `key`, serial from `rng`.
    pub fn create(
        key: CaSigningKey,
        config: &CaConfig,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, CaError> {
        let name = ca_name(config)?;
        let der = ca_certificate(&key, &name, None, &key, name.clone(), config, rng)?;
        Self::assemble(key, name, &der)
    }

    /// Issues a subordinate CA for `key` (for example one issuing CA per
    /// host under an offline root). This CA's `path_len_constraint` must
    /// allow it.
    pub fn issue_sub_ca(
        &self,
        key: CaSigningKey,
        config: &CaConfig,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, CaError> {
        let name = ca_name(config)?;
        let der = ca_certificate(
            &self.key,
            &self.name,
            Some(&self.key_id),
            &key,
            name.clone(),
            config,
            rng,
        )?;
        Self::assemble(key, name, &der)
    }

    fn assemble(key: CaSigningKey, name: Name, der: &[u8]) -> Result<Self, CaError> {
        let cert = CaCertificate::parse(der)?;
        let key_id = cert
            .0
            .ext
            .subject_key_id
            .clone()
            .ok_or_else(|| encoding("CA certificate without subjectKeyIdentifier"))?;
        Ok(VtpmCa {
            key,
            cert,
            name,
            key_id,
        })
    }

    /// Loads a CA stored as PEM: a PKCS#8 key and its certificate. Checks
    /// that they belong together and that the certificate is a CA.
    pub fn from_pem(key_pem: &str, cert_pem: &str) -> Result<Self, CaError> {
        let key = CaSigningKey::from_pkcs8_pem(key_pem)?;
        let cert = CaCertificate::parse(cert_pem.as_bytes())?;
        let parsed = Certificate::from_der(cert.der()).map_err(encoding)?;
        let spki = parsed.tbs_certificate.subject_public_key_info;
        if spki != key.public_key_info()? {
            return Err(CaError::KeyMismatch);
        }
        if !cert.is_ca() {
            return Err(CaError::NotACa);
        }
        let key_id = cert
            .0
            .ext
            .subject_key_id
            .clone()
            .map_or_else(|| key_identifier(&spki), Ok)?;
        let name = parsed.tbs_certificate.subject;
        Ok(VtpmCa {
            key,
            cert,
            name,
            key_id,
        })
    }

    /// The private key as PKCS#8 PEM (zeroed on drop); store it as a secret.
    pub fn key_pkcs8_pem(&self) -> Result<Zeroizing<String>, CaError> {
        self.key.to_pkcs8_pem()
    }

    /// The CA certificate as PEM: what verifiers configure as a root.
    pub fn cert_pem(&self) -> String {
        self.cert.to_pem()
    }

    /// The CA certificate as DER.
    pub fn cert_der(&self) -> &[u8] {
        self.cert.der()
    }

    /// The CA certificate, parsed (for an [`crate::ekcert::EkTrustStore`]).
    pub fn certificate(&self) -> &CaCertificate {
        &self.cert
    }

    /// Issues an EK certificate for `request`, serial from `rng`.
    pub fn issue_ek_cert(
        &self,
        request: &EkCertRequest,
        rng: &mut impl CryptoRngCore,
    ) -> Result<EkCertificate, CaError> {
        let spki = request.ek.to_spki().map_err(|p| CaError::BadEkKey {
            reason: format!("{p:?}"),
        })?;
        let validity = validity(request.not_before, request.not_after)?;
        let usage = match request.ek {
            EkPublicKey::Rsa { .. } => KeyUsages::KeyEncipherment,
            EkPublicKey::Ecc { .. } => KeyUsages::KeyAgreement,
        };
        let subject = Name::default();
        let mut extensions = vec![
            extension(
                &BasicConstraints {
                    ca: false,
                    path_len_constraint: None,
                },
                true,
            )?,
            extension(&KeyUsage(usage.into()), true)?,
            extension(&ExtendedKeyUsage(vec![oid::TCG_KP_EK_CERTIFICATE]), false)?,
            // RFC 5280 §4.2.1.6: empty subject, so the SAN is critical.
            extension(
                &SubjectAltName(vec![GeneralName::DirectoryName(tpm_name(&request.tpm)?)]),
                true,
            )?,
            authority_key_id(&self.key_id)?,
            raw_extension(
                oid::CE_SUBJECT_DIRECTORY_ATTRIBUTES,
                tpm_spec_attributes(&request.spec)?,
                false,
            )?,
        ];
        if !request.policies.is_empty() {
            let policies = request
                .policies
                .iter()
                .map(|&policy_identifier| PolicyInformation {
                    policy_identifier,
                    policy_qualifiers: None,
                })
                .collect();
            extensions.push(extension(&CertificatePolicies(policies), false)?);
        }
        let der = sign_certificate(
            &self.key,
            random_serial(rng)?,
            self.name.clone(),
            subject,
            validity,
            spki,
            extensions,
        )?;
        Ok(EkCertificate::parse(&der)?)
    }
}

/// A CA certificate for `subject_key`, signed by `issuer_key`: basicConstraints
/// cA (critical), keyUsage keyCertSign|cRLSign (critical), subjectKeyIdentifier,
/// and authorityKeyIdentifier unless self-signed.
fn ca_certificate(
    issuer_key: &CaSigningKey,
    issuer: &Name,
    issuer_key_id: Option<&[u8]>,
    subject_key: &CaSigningKey,
    subject: Name,
    config: &CaConfig,
    rng: &mut impl CryptoRngCore,
) -> Result<Vec<u8>, CaError> {
    let validity = validity(config.not_before, config.not_after)?;
    let spki = subject_key.public_key_info()?;
    let key_id = key_identifier(&spki)?;
    let mut extensions = vec![
        extension(
            &BasicConstraints {
                ca: true,
                path_len_constraint: config.path_len_constraint,
            },
            true,
        )?,
        extension(&KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign), true)?,
        extension(
            &SubjectKeyIdentifier(OctetString::new(key_id).map_err(encoding)?),
            false,
        )?,
    ];
    if let Some(issuer_key_id) = issuer_key_id {
        extensions.push(authority_key_id(issuer_key_id)?);
    }
    sign_certificate(
        issuer_key,
        random_serial(rng)?,
        issuer.clone(),
        subject,
        validity,
        spki,
        extensions,
    )
}

fn authority_key_id(key_id: &[u8]) -> Result<Extension, CaError> {
    extension(
        &AuthorityKeyIdentifier {
            key_identifier: Some(OctetString::new(key_id).map_err(encoding)?),
            authority_cert_issuer: None,
            authority_cert_serial_number: None,
        },
        false,
    )
}

/// commonName and optional organizationName, one RDN each.
fn ca_name(config: &CaConfig) -> Result<Name, CaError> {
    let mut rdns = Vec::new();
    if let Some(org) = &config.organization {
        rdns.push(rdn(&[(oid::AT_ORGANIZATION, "organization", org)])?);
    }
    rdns.push(rdn(&[(
        oid::AT_COMMON_NAME,
        "common_name",
        &config.common_name,
    )])?);
    Ok(RdnSequence(rdns))
}

/// The profile's directoryName: tcg-at-tpmManufacturer, tcg-at-tpmModel,
/// tcg-at-tpmVersion as UTF8Strings, one RDN each (as deployed EK
/// certificates and swtpm do).
fn tpm_name(tpm: &TpmIdentity) -> Result<Name, CaError> {
    Ok(RdnSequence(vec![
        rdn(&[(
            oid::TCG_AT_TPM_MANUFACTURER,
            "tpm.manufacturer",
            &tpm.manufacturer,
        )])?,
        rdn(&[(oid::TCG_AT_TPM_MODEL, "tpm.model", &tpm.model)])?,
        rdn(&[(oid::TCG_AT_TPM_VERSION, "tpm.version", &tpm.version)])?,
    ]))
}

/// Longest string accepted for a name attribute (the profile's STRMAX).
const STRMAX: usize = 255;

fn rdn(
    attrs: &[(ObjectIdentifier, &'static str, &str)],
) -> Result<RelativeDistinguishedName, CaError> {
    let mut set = SetOfVec::new();
    for &(oid, field, value) in attrs {
        if value.is_empty() || value.len() > STRMAX {
            return Err(CaError::BadField {
                field,
                reason: format!("length {} not in 1..={STRMAX}", value.len()),
            });
        }
        let value =
            Any::encode_from(&Utf8StringRef::new(value).map_err(encoding)?).map_err(encoding)?;
        set.insert(AttributeTypeAndValue { oid, value })
            .map_err(encoding)?;
    }
    Ok(RelativeDistinguishedName(set))
}

/// subjectDirectoryAttributes holding tcg-at-tpmSpecification.
fn tpm_spec_attributes(spec: &TpmSpecification) -> Result<Vec<u8>, CaError> {
    if spec.family.is_empty() || spec.family.len() > STRMAX {
        return Err(CaError::BadField {
            field: "spec.family",
            reason: "length not in 1..=255".into(),
        });
    }
    let value = crate::ekcert::TpmSpecificationAsn1 {
        family: Utf8StringRef::new(&spec.family).map_err(encoding)?,
        level: spec.level,
        revision: spec.revision,
    };
    let mut values = SetOfVec::new();
    values
        .insert(Any::encode_from(&value).map_err(encoding)?)
        .map_err(encoding)?;
    let attributes = vec![Attribute {
        oid: oid::TCG_AT_TPM_SPECIFICATION,
        values,
    }];
    attributes.to_der().map_err(encoding)
}

fn validity(not_before: UnixTime, not_after: Option<UnixTime>) -> Result<Validity, CaError> {
    let not_after = not_after.unwrap_or(UnixTime::NO_EXPIRY);
    if not_before > not_after {
        return Err(CaError::BadValidity {
            reason: format!("notBefore {not_before} after notAfter {not_after}"),
        });
    }
    let time = |t: UnixTime| {
        t.to_x509().ok_or_else(|| CaError::BadValidity {
            reason: format!("{t} past year 9999"),
        })
    };
    Ok(Validity {
        not_before: time(not_before)?,
        not_after: time(not_after)?,
    })
}

/// RFC 5280 §4.2.1.2 method (1): SHA-1 of the subjectPublicKey bits.
fn key_identifier(spki: &SubjectPublicKeyInfoOwned) -> Result<Vec<u8>, CaError> {
    let bits = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| encoding("key has unused bits"))?;
    Ok(Sha1::digest(bits).to_vec())
}

/// A positive serial of [`SERIAL_LEN`] bytes with its top byte in 0x40..=0x7f,
/// so its DER length is fixed and it is never zero.
fn random_serial(rng: &mut impl CryptoRngCore) -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; SERIAL_LEN];
    rng.fill_bytes(&mut bytes);
    if let Some(first) = bytes.first_mut() {
        *first = (*first & 0x3f) | 0x40;
    }
    SerialNumber::new(&bytes).map_err(encoding)
}

fn extension<E: Encode + const_oid::AssociatedOid>(
    value: &E,
    critical: bool,
) -> Result<Extension, CaError> {
    raw_extension(E::OID, value.to_der().map_err(encoding)?, critical)
}

fn raw_extension(
    oid: ObjectIdentifier,
    value: Vec<u8>,
    critical: bool,
) -> Result<Extension, CaError> {
    Ok(Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(value).map_err(encoding)?,
    })
}

fn sign_certificate(
    key: &CaSigningKey,
    serial_number: SerialNumber,
    issuer: Name,
    subject: Name,
    validity: Validity,
    subject_public_key_info: SubjectPublicKeyInfoOwned,
    extensions: Vec<Extension>,
) -> Result<Vec<u8>, CaError> {
    let signature_algorithm = key.signature_algorithm();
    let tbs_certificate = TbsCertificate {
        version: Version::V3,
        serial_number,
        signature: signature_algorithm.clone(),
        issuer,
        validity,
        subject,
        subject_public_key_info,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions),
    };
    let tbs = tbs_certificate.to_der().map_err(encoding)?;
    let signature = BitString::from_bytes(&key.sign(&tbs)?).map_err(encoding)?;
    Certificate {
        tbs_certificate,
        signature_algorithm,
        signature,
    }
    .to_der()
    .map_err(encoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fills with a fixed byte: the worst cases for the serial's top byte.
    struct Constant(u8);

    impl rand_core::RngCore for Constant {
        fn next_u32(&mut self) -> u32 {
            u32::from_ne_bytes([self.0; 4])
        }
        fn next_u64(&mut self) -> u64 {
            u64::from_ne_bytes([self.0; 8])
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            dest.fill(self.0);
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            dest.fill(self.0);
            Ok(())
        }
    }

    impl rand_core::CryptoRng for Constant {}

    #[test]
    fn serials_are_positive_fixed_length_and_nonzero() {
        for byte in [0x00, 0x7f, 0x80, 0xff] {
            let serial = random_serial(&mut Constant(byte)).unwrap();
            let bytes = serial.as_bytes();
            assert_eq!(bytes.len(), SERIAL_LEN);
            assert!((0x40..=0x7f).contains(&bytes[0]), "{bytes:02x?}");
        }
    }

    #[test]
    fn validity_uses_no_expiry_and_checks_order() {
        let v = validity(UnixTime::from_secs(0), None).unwrap();
        assert_eq!(UnixTime::from_x509(&v.not_after), UnixTime::NO_EXPIRY);
        assert!(validity(UnixTime::from_secs(2), Some(UnixTime::from_secs(1))).is_err());
        let past_9999 = UnixTime::from_secs(UnixTime::NO_EXPIRY.as_secs() + 1);
        assert!(validity(UnixTime::from_secs(0), Some(past_9999)).is_err());
    }
}
