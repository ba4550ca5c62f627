//! Binding an EK certificate to a TPM's EK: the key in the certificate must
//! be the public area the TPM reports (TPM2_ReadPublic / CreatePrimary of the
//! EK template). Enrollment checks this before trusting a credential made
//! for that EK.

use crate::alg::AlgId;
use crate::ekcert::{EccCurve, EkCertificate, EkPublicKey};
use crate::public::{curve, ObjectAttributes, Public, PublicKey, Scheme, SymDef};

fn strip(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    b.get(start..).unwrap_or_default()
}

/// The certificate form of a TPM public area's key; `None` for key types
/// and curves an EK certificate cannot hold.
pub fn ek_public_key(public: &Public) -> Option<EkPublicKey> {
    match &public.key {
        PublicKey::Rsa {
            exponent, modulus, ..
        } => Some(EkPublicKey::Rsa {
            modulus: strip(modulus).to_vec(),
            exponent: if *exponent == 0 { 65537 } else { *exponent },
        }),
        PublicKey::Ecc { curve: c, x, y, .. } => {
            let (curve, size) = match *c {
                curve::NIST_P256 => (EccCurve::NistP256, 32),
                curve::NIST_P384 => (EccCurve::NistP384, 48),
                _ => return None,
            };
            let pad = |v: &[u8]| -> Option<Vec<u8>> {
                let v = strip(v);
                if v.len() > size {
                    return None;
                }
                let mut out = vec![0u8; size.saturating_sub(v.len())];
                out.extend_from_slice(v);
                Some(out)
            };
            Some(EkPublicKey::Ecc {
                curve,
                x: pad(x)?,
                y: pad(y)?,
            })
        }
        _ => None,
    }
}

/// A public key from a PEM `PUBLIC KEY` (SubjectPublicKeyInfo), as
/// `tpm2_createak -f pem` and OpenSSL write it, as a TPM public area with no
/// scheme and the attributes of a restricted signing key — so a quote can be
/// verified with a key the operator has only in PEM. The attributes are
/// assumed, not known: `check_ak` on such a key proves nothing.
pub fn public_from_spki_pem(pem: &str) -> Option<Public> {
    use der::DecodePem as _;
    let spki = spki::SubjectPublicKeyInfoOwned::from_pem(pem.trim()).ok()?;
    let key = EkPublicKey::from_spki(&spki).ok()?;
    let attributes = ObjectAttributes(
        ObjectAttributes::FIXED_TPM
            | ObjectAttributes::FIXED_PARENT
            | ObjectAttributes::SENSITIVE_DATA_ORIGIN
            | ObjectAttributes::USER_WITH_AUTH
            | ObjectAttributes::RESTRICTED
            | ObjectAttributes::SIGN_ENCRYPT,
    );
    let key = match key {
        EkPublicKey::Rsa { modulus, exponent } => PublicKey::Rsa {
            symmetric: SymDef::NULL,
            scheme: Scheme::NULL,
            key_bits: u16::try_from(modulus.len().saturating_mul(8)).ok()?,
            exponent: if exponent == 65537 { 0 } else { exponent },
            modulus,
        },
        EkPublicKey::Ecc { curve: c, x, y } => PublicKey::Ecc {
            symmetric: SymDef::NULL,
            scheme: Scheme::NULL,
            curve: match c {
                EccCurve::NistP256 => curve::NIST_P256,
                EccCurve::NistP384 => curve::NIST_P384,
            },
            kdf: Scheme::NULL,
            x,
            y,
        },
    };
    Some(Public {
        name_alg: AlgId::SHA256,
        attributes,
        auth_policy: Vec::new(),
        key,
    })
}

/// Whether `cert` certifies exactly the key of `public`.
pub fn cert_matches_ek(cert: &EkCertificate, public: &Public) -> bool {
    let Some(key) = ek_public_key(public) else {
        return false;
    };
    match (cert.public_key(), &key) {
        (
            EkPublicKey::Rsa {
                modulus: a,
                exponent: ea,
            },
            EkPublicKey::Rsa {
                modulus: b,
                exponent: eb,
            },
        ) => strip(a) == strip(b) && ea == eb,
        (a, b) => a == b,
    }
}
