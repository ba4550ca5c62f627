//! EK certificates: read them, and verify their chains.
//!
//! Implements the certificate profile of the TCG EK Credential Profile for
//! TPM Family 2.0 (versions 2.x) on top of RFC 5280: the EK public key (RSA
//! or ECC P-256/P-384), the TPM manufacturer, model and firmware version
//! from the subjectAltName directoryName (tcg-at-tpmManufacturer 2.23.133.2.1, tcg-at-tpmModel
//! 2.23.133.2.2, tcg-at-tpmVersion 2.23.133.2.3), the TPM specification
//! from subjectDirectoryAttributes (tcg-at-tpmSpecification 2.23.133.2.16),
//! and the EK extended key usage (tcg-kp-EKCertificate 2.23.133.8.1).
//! [`EkTrustStore`] checks the chain up to configured roots at a time the
//! caller gives.
//!
//! No IO and no clock: bytes and times in, typed values and verdicts out.
//! Input is bounded ([`MAX_CERT_LEN`]) before it is decoded, decoding is
//! done by the `der` crate's checked reader, and malformed input gives a
//! [`CertError`], never a panic. Revocation is out of scope (it needs IO).
//! Issuing certificates is [`crate::ca`]'s job.

mod chain;
mod key;
pub mod oid;
mod sig;
mod time;
mod x509;

use der::asn1::{AnyRef, Ia5StringRef, PrintableStringRef, Utf8StringRef};
use der::{Decode, Sequence, Tag, Tagged};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::KeyUsages;

pub use chain::{CaCertificate, ChainError, EkTrustStore, VerifiedChain};
pub use key::{EccCurve, EkPublicKey};
pub use time::UnixTime;
pub use x509::{CertError, CertId, CertSerial, MAX_CERT_LEN};

use key::KeyProblem;
use x509::ParsedCert;

/// The TPM an EK certificate names (the profile's subjectAltName
/// directoryName).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TpmIdentity {
    /// tcg-at-tpmManufacturer: `id:` and the TCG vendor ID in hex, e.g.
    /// `id:53544D20` (STMicro), `id:00001014` (IBM, as swtpm says).
    pub manufacturer: String,
    /// tcg-at-tpmModel, e.g. `swtpm`.
    pub model: String,
    /// tcg-at-tpmVersion: the firmware version, e.g. `id:20191023`.
    pub version: String,
}

impl TpmIdentity {
    /// The manufacturer's TCG vendor ID (`id:53544D20` gives `0x53544D20`),
    /// if the manufacturer string has that form.
    pub fn manufacturer_id(&self) -> Option<u32> {
        let hex = self.manufacturer.strip_prefix("id:")?;
        if hex.is_empty() || hex.len() > 8 {
            return None;
        }
        u32::from_str_radix(hex, 16).ok()
    }
}

/// tcg-at-tpmSpecification: the TPM library specification the TPM
/// implements (the profile's subjectDirectoryAttributes).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TpmSpecification {
    /// The family, `"2.0"`.
    pub family: String,
    /// The level (0 for TPM 2.0 libraries so far).
    pub level: u32,
    /// The revision times 100, e.g. 138 for 1.38, 164 for 1.64.
    pub revision: u32,
}

/// TPMSpecification ::= SEQUENCE { family UTF8String, level INTEGER,
/// revision INTEGER }
#[derive(Sequence)]
pub(crate) struct TpmSpecificationAsn1<'a> {
    pub family: Utf8StringRef<'a>,
    pub level: u32,
    pub revision: u32,
}

/// A way an EK certificate differs from the TCG EK Credential Profile or
/// RFC 5280. Informational: verification does not reject on these.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProfileDeviation {
    /// The subject is not empty: the profile identifies the TPM by
    /// subjectAltName, and EK certificates that follow it leave the subject
    /// empty (swtpm writes `CN=unknown` or the VM id).
    SubjectNotEmpty,
    /// The subject is empty but subjectAltName is not critical (RFC 5280
    /// §4.2.1.6 MUST).
    SanNotCritical,
    /// No subjectAltName directoryName with all of manufacturer, model and
    /// version.
    TpmIdentityIncomplete,
    /// No tcg-at-tpmSpecification in subjectDirectoryAttributes.
    TpmSpecificationMissing,
    /// No extendedKeyUsage tcg-kp-EKCertificate.
    EkKeyUsageMissing,
    /// keyUsage missing, or not keyEncipherment (RSA EK) / keyAgreement
    /// (ECC EK).
    KeyUsageUnexpected,
    /// basicConstraints says cA.
    MarkedAsCa,
    /// No authorityKeyIdentifier.
    AuthorityKeyIdMissing,
}

/// An EK certificate, read and decoded. Its chain is not yet verified: see
/// [`EkTrustStore::verify`].
#[derive(Clone, Debug)]
pub struct EkCertificate {
    inner: ParsedCert,
    public_key: EkPublicKey,
    tpm: Option<TpmIdentity>,
    tpm_spec: Option<TpmSpecification>,
    has_ek_eku: bool,
}

impl EkCertificate {
    /// Reads an EK certificate from DER or PEM.
    pub fn parse(input: &[u8]) -> Result<Self, CertError> {
        let inner = ParsedCert::parse(input)?;
        let public_key = EkPublicKey::from_spki(
            &inner.cert.tbs_certificate.subject_public_key_info,
        )
        .map_err(|p| match p {
            KeyProblem::Unsupported(algorithm) => CertError::UnsupportedKey { algorithm },
            KeyProblem::Invalid(reason) => CertError::InvalidKey {
                reason: reason.to_string(),
            },
        })?;
        let tpm = inner
            .ext
            .subject_alt_name
            .as_ref()
            .and_then(|(_, san)| tpm_identity(&san.0));
        let tpm_spec = tpm_specification(&inner.ext)?;
        let has_ek_eku = inner
            .ext
            .ext_key_usage
            .as_ref()
            .is_some_and(|eku| eku.0.contains(&oid::TCG_KP_EK_CERTIFICATE));
        Ok(EkCertificate {
            inner,
            public_key,
            tpm,
            tpm_spec,
            has_ek_eku,
        })
    }

    /// The DER encoding, as read.
    pub fn der(&self) -> &[u8] {
        &self.inner.der
    }

    /// The PEM encoding.
    pub fn to_pem(&self) -> String {
        self.inner.to_pem()
    }

    /// Subject, issuer and serial.
    pub fn id(&self) -> &CertId {
        &self.inner.id
    }

    /// The serial number.
    pub fn serial(&self) -> &CertSerial {
        self.inner.id.serial()
    }

    /// Start of the validity period.
    pub fn not_before(&self) -> UnixTime {
        self.inner.not_before
    }

    /// End of the validity period (inclusive); [`UnixTime::NO_EXPIRY`] for
    /// a certificate that does not expire.
    pub fn not_after(&self) -> UnixTime {
        self.inner.not_after
    }

    /// The endorsement key.
    pub fn public_key(&self) -> &EkPublicKey {
        &self.public_key
    }

    /// The TPM named in subjectAltName, if manufacturer, model and version
    /// are all there.
    pub fn tpm_identity(&self) -> Option<&TpmIdentity> {
        self.tpm.as_ref()
    }

    /// The TPM specification from subjectDirectoryAttributes, if present.
    pub fn tpm_specification(&self) -> Option<&TpmSpecification> {
        self.tpm_spec.as_ref()
    }

    /// Whether extendedKeyUsage holds tcg-kp-EKCertificate (2.23.133.8.1).
    pub fn has_ek_key_usage(&self) -> bool {
        self.has_ek_eku
    }

    /// Whether subjectAltName is present and critical.
    pub fn san_is_critical(&self) -> bool {
        self.inner
            .ext
            .subject_alt_name
            .as_ref()
            .is_some_and(|(critical, _)| *critical)
    }

    /// The authorityKeyIdentifier's keyIdentifier, if present.
    pub fn authority_key_id(&self) -> Option<&[u8]> {
        self.inner.ext.authority_key_id.as_deref()
    }

    /// How this certificate differs from the TCG profile, in the order of
    /// [`ProfileDeviation`]'s variants.
    pub fn profile_deviations(&self) -> Vec<ProfileDeviation> {
        let ext = &self.inner.ext;
        let subject_empty = self.inner.cert.tbs_certificate.subject.0.is_empty();
        let expected_usage = match self.public_key {
            EkPublicKey::Rsa { .. } => KeyUsages::KeyEncipherment,
            EkPublicKey::Ecc { .. } => KeyUsages::KeyAgreement,
        };
        let checks = [
            (!subject_empty, ProfileDeviation::SubjectNotEmpty),
            (
                subject_empty && !self.san_is_critical(),
                ProfileDeviation::SanNotCritical,
            ),
            (self.tpm.is_none(), ProfileDeviation::TpmIdentityIncomplete),
            (
                self.tpm_spec.is_none(),
                ProfileDeviation::TpmSpecificationMissing,
            ),
            (!self.has_ek_eku, ProfileDeviation::EkKeyUsageMissing),
            (
                !ext.key_usage
                    .is_some_and(|ku| ku.0.contains(expected_usage)),
                ProfileDeviation::KeyUsageUnexpected,
            ),
            (
                ext.basic_constraints.as_ref().is_some_and(|bc| bc.ca),
                ProfileDeviation::MarkedAsCa,
            ),
            (
                ext.authority_key_id.is_none(),
                ProfileDeviation::AuthorityKeyIdMissing,
            ),
        ];
        checks
            .into_iter()
            .filter(|(deviates, _)| *deviates)
            .map(|(_, d)| d)
            .collect()
    }
}

/// Manufacturer, model and version from the directoryNames of a SAN. The
/// attributes may come as one multi-valued RDN or as one RDN each (swtpm).
fn tpm_identity(names: &[GeneralName]) -> Option<TpmIdentity> {
    let (mut manufacturer, mut model, mut version) = (None, None, None);
    let attributes = names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DirectoryName(name) => Some(name),
            _ => None,
        })
        .flat_map(|name| name.0.iter())
        .flat_map(|rdn| rdn.0.iter());
    for atv in attributes {
        let slot = match atv.oid {
            oid::TCG_AT_TPM_MANUFACTURER => &mut manufacturer,
            oid::TCG_AT_TPM_MODEL => &mut model,
            oid::TCG_AT_TPM_VERSION => &mut version,
            _ => continue,
        };
        if slot.is_none() {
            *slot = directory_string(AnyRef::from(&atv.value));
        }
    }
    Some(TpmIdentity {
        manufacturer: manufacturer?,
        model: model?,
        version: version?,
    })
}

/// A UTF8String (the profile's choice), PrintableString or IA5String.
fn directory_string(value: AnyRef<'_>) -> Option<String> {
    match value.tag() {
        Tag::Utf8String => value
            .decode_as::<Utf8StringRef<'_>>()
            .ok()
            .map(|s| s.to_string()),
        Tag::PrintableString => value
            .decode_as::<PrintableStringRef<'_>>()
            .ok()
            .map(|s| s.to_string()),
        Tag::Ia5String => value
            .decode_as::<Ia5StringRef<'_>>()
            .ok()
            .map(|s| s.to_string()),
        _ => None,
    }
}

/// tcg-at-tpmSpecification from subjectDirectoryAttributes; an attribute
/// that is there but does not decode is an error.
fn tpm_specification(ext: &x509::Extensions) -> Result<Option<TpmSpecification>, CertError> {
    let Some(attributes) = &ext.subject_directory_attributes else {
        return Ok(None);
    };
    let Some(attr) = attributes
        .iter()
        .find(|a| a.oid == oid::TCG_AT_TPM_SPECIFICATION)
    else {
        return Ok(None);
    };
    let bad = |reason: String| CertError::BadExtension {
        oid: oid::TCG_AT_TPM_SPECIFICATION.to_string(),
        offset: None,
        reason,
    };
    let value = attr
        .values
        .iter()
        .next()
        .ok_or_else(|| bad("no value".into()))?;
    let der = der::Encode::to_der(value).map_err(|e| bad(e.to_string()))?;
    let spec = TpmSpecificationAsn1::from_der(&der).map_err(|e| bad(e.to_string()))?;
    Ok(Some(TpmSpecification {
        family: spec.family.to_string(),
        level: spec.level,
        revision: spec.revision,
    }))
}
