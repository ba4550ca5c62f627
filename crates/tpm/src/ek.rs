//! Binding an EK certificate to a TPM's EK: the key in the certificate must
//! be the public area the TPM reports (TPM2_ReadPublic / CreatePrimary of the
//! EK template). Enrollment checks this before trusting a credential made
//! for that EK.

use crate::ekcert::{EccCurve, EkCertificate, EkPublicKey};
use crate::public::{curve, Public, PublicKey};

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
