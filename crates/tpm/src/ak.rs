//! Attestation-key checks: the public area of a proper AK (TPM 2.0 Part 1
//! §25.2 restricted signing keys; TCG EK Credential Profile §2.2 AK
//! templates): it can only sign TPM-generated data, and its private part can
//! never leave the TPM.

use serde::Serialize;

use crate::public::{ObjectAttributes as A, Public, PublicKey};

/// Why a key is not a proper attestation key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("not a proper attestation key: missing [{}], forbidden [{}]{}", missing.join(", "), forbidden.join(", "), if *not_signing_type { ", not an RSA or ECC key" } else { "" })]
pub struct AkFailure {
    /// Required attributes the key lacks.
    pub missing: Vec<&'static str>,
    /// Attributes the key must not have but has.
    pub forbidden: Vec<&'static str>,
    /// The key is not an asymmetric signing key type.
    pub not_signing_type: bool,
}

/// Checks fixedTPM, fixedParent, sensitiveDataOrigin, restricted, sign set
/// and decrypt clear, on an RSA or ECC key.
pub fn check_ak(key: &Public) -> Result<(), AkFailure> {
    let required = [
        (A::FIXED_TPM, "fixedTPM"),
        (A::FIXED_PARENT, "fixedParent"),
        (A::SENSITIVE_DATA_ORIGIN, "sensitiveDataOrigin"),
        (A::RESTRICTED, "restricted"),
        (A::SIGN_ENCRYPT, "sign"),
    ];
    let missing: Vec<&'static str> = required
        .into_iter()
        .filter(|(bit, _)| !key.attributes.has(*bit))
        .map(|(_, n)| n)
        .collect();
    let forbidden: Vec<&'static str> = if key.attributes.has(A::DECRYPT) {
        vec!["decrypt"]
    } else {
        Vec::new()
    };
    let not_signing_type = !matches!(key.key, PublicKey::Rsa { .. } | PublicKey::Ecc { .. });
    if missing.is_empty() && forbidden.is_empty() && !not_signing_type {
        Ok(())
    } else {
        Err(AkFailure {
            missing,
            forbidden,
            not_signing_type,
        })
    }
}
