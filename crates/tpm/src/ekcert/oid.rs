//! Object identifiers: TCG (EK Credential Profile for TPM Family 2.0)
//! and the PKIX ones this module reads or writes.

use const_oid::ObjectIdentifier as Oid;

/// tcg-at-tpmManufacturer (2.23.133.2.1).
pub const TCG_AT_TPM_MANUFACTURER: Oid = Oid::new_unwrap("2.23.133.2.1");
/// tcg-at-tpmModel (2.23.133.2.2).
pub const TCG_AT_TPM_MODEL: Oid = Oid::new_unwrap("2.23.133.2.2");
/// tcg-at-tpmVersion (2.23.133.2.3): the TPM firmware version.
pub const TCG_AT_TPM_VERSION: Oid = Oid::new_unwrap("2.23.133.2.3");
/// tcg-at-tpmSpecification (2.23.133.2.16).
pub const TCG_AT_TPM_SPECIFICATION: Oid = Oid::new_unwrap("2.23.133.2.16");
/// tcg-kp-EKCertificate (2.23.133.8.1): the EK certificate's extended key usage.
pub const TCG_KP_EK_CERTIFICATE: Oid = Oid::new_unwrap("2.23.133.8.1");

pub(crate) const CE_SUBJECT_DIRECTORY_ATTRIBUTES: Oid = Oid::new_unwrap("2.5.29.9");
pub(crate) const CE_SUBJECT_KEY_IDENTIFIER: Oid = Oid::new_unwrap("2.5.29.14");
pub(crate) const CE_KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.15");
pub(crate) const CE_SUBJECT_ALT_NAME: Oid = Oid::new_unwrap("2.5.29.17");
pub(crate) const CE_BASIC_CONSTRAINTS: Oid = Oid::new_unwrap("2.5.29.19");
pub(crate) const CE_CERTIFICATE_POLICIES: Oid = Oid::new_unwrap("2.5.29.32");
pub(crate) const CE_AUTHORITY_KEY_IDENTIFIER: Oid = Oid::new_unwrap("2.5.29.35");
pub(crate) const CE_EXT_KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.37");

pub(crate) const AT_COMMON_NAME: Oid = Oid::new_unwrap("2.5.4.3");
pub(crate) const AT_ORGANIZATION: Oid = Oid::new_unwrap("2.5.4.10");

pub(crate) const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
pub(crate) const RSASSA_PSS: Oid = Oid::new_unwrap("1.2.840.113549.1.1.10");
pub(crate) const SHA256_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
pub(crate) const SHA384_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.12");
pub(crate) const SHA512_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.13");
pub(crate) const MGF1: Oid = Oid::new_unwrap("1.2.840.113549.1.1.8");

pub(crate) const EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
pub(crate) const ECDSA_WITH_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
pub(crate) const ECDSA_WITH_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");
pub(crate) const ECDSA_WITH_SHA512: Oid = Oid::new_unwrap("1.2.840.10045.4.3.4");
pub(crate) const SECP256R1: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
pub(crate) const SECP384R1: Oid = Oid::new_unwrap("1.3.132.0.34");

pub(crate) const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
pub(crate) const SHA384: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.2");
pub(crate) const SHA512: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.3");
