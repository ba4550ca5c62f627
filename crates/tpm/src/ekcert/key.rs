//! The EK public key as the certificate carries it (SubjectPublicKeyInfo,
//! RFC 5280 §4.1.2.7; RSA per RFC 8017 A.1.1, ECC per RFC 5480).

use der::asn1::{BitString, Null, ObjectIdentifier, UintRef};
use der::{Decode, Encode};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use super::oid;

/// Smallest RSA modulus accepted, in bytes (2048 bits).
const RSA_MIN_BYTES: usize = 256;
/// Largest RSA modulus accepted, in bytes (4096 bits).
const RSA_MAX_BYTES: usize = 512;

/// An NIST curve an ECC EK may live on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EccCurve {
    /// NIST P-256 (secp256r1), TPM_ECC_NIST_P256: the profile's default ECC EK.
    NistP256,
    /// NIST P-384 (secp384r1), TPM_ECC_NIST_P384: the "high range" ECC EK
    /// (swtpm creates this one).
    NistP384,
}

impl EccCurve {
    /// Bytes in one coordinate.
    pub const fn coordinate_len(self) -> usize {
        match self {
            EccCurve::NistP256 => 32,
            EccCurve::NistP384 => 48,
        }
    }

    pub(crate) fn from_oid(oid: &ObjectIdentifier) -> Option<Self> {
        match *oid {
            oid::SECP256R1 => Some(EccCurve::NistP256),
            oid::SECP384R1 => Some(EccCurve::NistP384),
            _ => None,
        }
    }

    pub(crate) const fn oid(self) -> ObjectIdentifier {
        match self {
            EccCurve::NistP256 => oid::SECP256R1,
            EccCurve::NistP384 => oid::SECP384R1,
        }
    }
}

/// The public part of an endorsement key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EkPublicKey {
    /// An RSA key.
    Rsa {
        /// The modulus n, big-endian, without leading zero bytes.
        modulus: Vec<u8>,
        /// The public exponent e (65537 for the TCG templates).
        exponent: u32,
    },
    /// An ECC key: an uncompressed point on `curve`.
    Ecc {
        /// The curve.
        curve: EccCurve,
        /// The x coordinate, big-endian, exactly `curve.coordinate_len()` bytes.
        x: Vec<u8>,
        /// The y coordinate, big-endian, exactly `curve.coordinate_len()` bytes.
        y: Vec<u8>,
    },
}

/// Why a SubjectPublicKeyInfo is not an EK key this crate handles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KeyProblem {
    /// Algorithm or curve this crate does not handle (dotted OID).
    Unsupported(String),
    /// Known algorithm, bad content.
    Invalid(&'static str),
}

impl EkPublicKey {
    /// Size of the key in bits: the modulus for RSA, the curve for ECC.
    pub fn bits(&self) -> usize {
        match self {
            EkPublicKey::Rsa { modulus, .. } => {
                let lead = modulus.first().map_or(0, |b| b.leading_zeros() as usize);
                modulus.len().saturating_mul(8).saturating_sub(lead)
            }
            EkPublicKey::Ecc { curve, .. } => curve.coordinate_len().saturating_mul(8),
        }
    }

    /// Reads an EK key from a certificate's SubjectPublicKeyInfo.
    pub(crate) fn from_spki(spki: &SubjectPublicKeyInfoOwned) -> Result<Self, KeyProblem> {
        let bits = spki
            .subject_public_key
            .as_bytes()
            .ok_or(KeyProblem::Invalid("public key BIT STRING has unused bits"))?;
        match spki.algorithm.oid {
            oid::RSA_ENCRYPTION => {
                let key = rsa::pkcs1::RsaPublicKey::from_der(bits)
                    .map_err(|_| KeyProblem::Invalid("RSAPublicKey does not decode"))?;
                let modulus = key.modulus.as_bytes();
                if modulus.len() < RSA_MIN_BYTES || modulus.len() > RSA_MAX_BYTES {
                    return Err(KeyProblem::Invalid("RSA modulus not 2048..=4096 bits"));
                }
                let exponent = u32_from_be(key.public_exponent.as_bytes())
                    .ok_or(KeyProblem::Invalid("RSA exponent larger than 32 bits"))?;
                Ok(EkPublicKey::Rsa {
                    modulus: modulus.to_vec(),
                    exponent,
                })
            }
            oid::EC_PUBLIC_KEY => {
                let curve_oid = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
                    .ok_or(KeyProblem::Invalid("EC key without a namedCurve"))?;
                let curve = EccCurve::from_oid(&curve_oid)
                    .ok_or_else(|| KeyProblem::Unsupported(format!("curve {curve_oid}")))?;
                let (x, y) = ec_point(curve, bits)?;
                Ok(EkPublicKey::Ecc { curve, x, y })
            }
            other => Err(KeyProblem::Unsupported(format!("key algorithm {other}"))),
        }
    }

    /// Encodes as a SubjectPublicKeyInfo, checking the key first: RSA
    /// 2048..=4096 bits with an odd exponent > 1, ECC points on their curve.
    pub(crate) fn to_spki(&self) -> Result<SubjectPublicKeyInfoOwned, KeyProblem> {
        let (algorithm, key_bits) = match self {
            EkPublicKey::Rsa { modulus, exponent } => {
                let first = modulus.first().copied().unwrap_or(0);
                if first == 0 || modulus.len() < RSA_MIN_BYTES || modulus.len() > RSA_MAX_BYTES {
                    return Err(KeyProblem::Invalid("RSA modulus not 2048..=4096 bits"));
                }
                if *exponent < 3 || exponent % 2 == 0 {
                    return Err(KeyProblem::Invalid("RSA exponent not odd and > 1"));
                }
                let e = exponent.to_be_bytes();
                let key = rsa::pkcs1::RsaPublicKey {
                    modulus: UintRef::new(modulus).map_err(|_| KeyProblem::Invalid("modulus"))?,
                    public_exponent: UintRef::new(&e)
                        .map_err(|_| KeyProblem::Invalid("exponent"))?,
                };
                let der = key
                    .to_der()
                    .map_err(|_| KeyProblem::Invalid("RSAPublicKey"))?;
                let null = der::Any::encode_from(&Null).map_err(|_| KeyProblem::Invalid("NULL"))?;
                let alg = AlgorithmIdentifierOwned {
                    oid: oid::RSA_ENCRYPTION,
                    parameters: Some(null),
                };
                (alg, der)
            }
            EkPublicKey::Ecc { curve, x, y } => {
                let len = curve.coordinate_len();
                if x.len() != len || y.len() != len {
                    return Err(KeyProblem::Invalid("ECC coordinate of the wrong length"));
                }
                let mut point = Vec::with_capacity(len.saturating_mul(2).saturating_add(1));
                point.push(0x04);
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                // Checks the point is on the curve.
                ec_point(*curve, &point)?;
                let curve_oid = der::Any::encode_from(&curve.oid())
                    .map_err(|_| KeyProblem::Invalid("curve OID"))?;
                let alg = AlgorithmIdentifierOwned {
                    oid: oid::EC_PUBLIC_KEY,
                    parameters: Some(curve_oid),
                };
                (alg, point)
            }
        };
        let subject_public_key =
            BitString::from_bytes(&key_bits).map_err(|_| KeyProblem::Invalid("BIT STRING"))?;
        Ok(SubjectPublicKeyInfoOwned {
            algorithm,
            subject_public_key,
        })
    }
}

/// Decodes a SEC1 point (compressed or not), checks it is on `curve`, and
/// returns its affine coordinates.
fn ec_point(curve: EccCurve, sec1: &[u8]) -> Result<(Vec<u8>, Vec<u8>), KeyProblem> {
    const OFF_CURVE: KeyProblem = KeyProblem::Invalid("EC point not on its curve");
    let encoded = match curve {
        EccCurve::NistP256 => {
            use p256::elliptic_curve::sec1::ToEncodedPoint;
            let key = p256::PublicKey::from_sec1_bytes(sec1).map_err(|_| OFF_CURVE)?;
            let point = key.to_encoded_point(false);
            (point.x().map(|x| x.to_vec()), point.y().map(|y| y.to_vec()))
        }
        EccCurve::NistP384 => {
            use p384::elliptic_curve::sec1::ToEncodedPoint;
            let key = p384::PublicKey::from_sec1_bytes(sec1).map_err(|_| OFF_CURVE)?;
            let point = key.to_encoded_point(false);
            (point.x().map(|x| x.to_vec()), point.y().map(|y| y.to_vec()))
        }
    };
    match encoded {
        (Some(x), Some(y)) => Ok((x, y)),
        _ => Err(OFF_CURVE),
    }
}

/// A big-endian unsigned integer of at most four significant bytes.
fn u32_from_be(bytes: &[u8]) -> Option<u32> {
    if bytes.len() > 4 {
        return None;
    }
    let mut buf = [0u8; 4];
    for (dst, src) in buf.iter_mut().rev().zip(bytes.iter().rev()) {
        *dst = *src;
    }
    Some(u32::from_be_bytes(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponent_of_at_most_four_bytes() {
        assert_eq!(u32_from_be(&[1, 0, 1]), Some(65537));
        assert_eq!(u32_from_be(&[]), Some(0));
        assert_eq!(u32_from_be(&[1, 0, 0, 0, 0]), None);
    }

    #[test]
    fn ecc_key_round_trips_through_spki_and_checks_the_curve() {
        use p384::elliptic_curve::sec1::ToEncodedPoint;
        let point = p384::SecretKey::from_slice(&[9u8; 48])
            .unwrap()
            .public_key()
            .to_encoded_point(false);
        let key = EkPublicKey::Ecc {
            curve: EccCurve::NistP384,
            x: point.x().unwrap().to_vec(),
            y: point.y().unwrap().to_vec(),
        };
        assert_eq!(key.bits(), 384);
        let spki = key.to_spki().unwrap();
        assert_eq!(EkPublicKey::from_spki(&spki), Ok(key.clone()));
        let EkPublicKey::Ecc { curve, x, mut y } = key else {
            unreachable!()
        };
        y[0] ^= 0x80;
        assert!(EkPublicKey::Ecc { curve, x, y }.to_spki().is_err());
    }

    #[test]
    fn rsa_key_checks_size_and_exponent() {
        let mut modulus = vec![0xd1; 256];
        modulus[255] |= 1;
        let key = EkPublicKey::Rsa {
            modulus: modulus.clone(),
            exponent: 65537,
        };
        assert_eq!(key.bits(), 2048);
        assert_eq!(EkPublicKey::from_spki(&key.to_spki().unwrap()), Ok(key));
        for (modulus, exponent) in [
            (modulus.clone(), 65536),
            (modulus.clone(), 1),
            (vec![0xd1; 255], 65537),
            (vec![0; 256], 3),
        ] {
            assert!(EkPublicKey::Rsa { modulus, exponent }.to_spki().is_err());
        }
    }
}
