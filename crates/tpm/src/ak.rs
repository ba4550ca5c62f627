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

/// The weakest attestation keys accepted: RSA of 2048 bits, or ECC on
/// NIST P-256 (NIST SP 800-57 Part 1: 112 bits of security; TCG's AK
/// templates use these sizes).
pub const MIN_RSA_BITS: usize = 2048;

/// Why a key is too weak to attest, if it is: an RSA modulus under
/// [`MIN_RSA_BITS`] bits, or an ECC curve other than NIST P-256, P-384
/// or P-521. The modulus is measured, not `keyBits` (which a forged public
/// area could state freely).
pub fn weak_key(key: &Public) -> Option<String> {
    use crate::public::curve;
    match &key.key {
        PublicKey::Rsa { modulus, .. } => {
            let Some(first) = modulus.iter().position(|b| *b != 0) else {
                return Some("an RSA key with an empty modulus".into());
            };
            let top = modulus.get(first).copied().unwrap_or(0);
            let bits = modulus
                .len()
                .saturating_sub(first)
                .saturating_mul(8)
                .saturating_sub(top.leading_zeros() as usize);
            (bits < MIN_RSA_BITS).then(|| {
                format!("an RSA key of {bits} bits (at least {MIN_RSA_BITS} are required)")
            })
        }
        PublicKey::Ecc { curve: c, .. } => {
            (![curve::NIST_P256, curve::NIST_P384, curve::NIST_P521].contains(c))
                .then(|| format!("ECC curve 0x{c:04x} (NIST P-256, P-384 or P-521 required)"))
        }
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod strength_tests {
    use super::*;
    use crate::public::{curve, Scheme, SymDef};

    fn rsa(modulus: Vec<u8>) -> PublicKey {
        PublicKey::Rsa {
            symmetric: SymDef::NULL,
            scheme: Scheme::NULL,
            key_bits: 2048,
            exponent: 0,
            modulus,
        }
    }

    fn with(key: PublicKey) -> Public {
        Public {
            name_alg: crate::alg::AlgId::SHA256,
            attributes: crate::public::ObjectAttributes(0),
            auth_policy: Vec::new(),
            key,
        }
    }

    #[test]
    fn rsa_below_2048_bits_and_odd_curves_are_weak() {
        let mut m = vec![0u8; 256];
        m[0] = 0x80;
        assert_eq!(weak_key(&with(rsa(m.clone()))), None);
        // keyBits says 2048, the modulus has 2047 bits.
        m[0] = 0x40;
        assert!(weak_key(&with(rsa(m))).unwrap().contains("2047 bits"));
        assert!(weak_key(&with(rsa(vec![0xff; 128])))
            .unwrap()
            .contains("1024 bits"));
        assert!(weak_key(&with(rsa(vec![0; 256]))).is_some());
        let ecc = |c| PublicKey::Ecc {
            symmetric: SymDef::NULL,
            scheme: Scheme::NULL,
            curve: c,
            kdf: Scheme::NULL,
            x: vec![1; 32],
            y: vec![1; 32],
        };
        assert_eq!(weak_key(&with(ecc(curve::NIST_P256))), None);
        assert!(weak_key(&with(ecc(0x0010))).is_some());
    }
}
