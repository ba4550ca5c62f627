//! Certificate signature verification: RSASSA-PKCS1-v1_5 and RSASSA-PSS
//! with SHA-256/384/512 (RFC 8017, RFC 4055), ECDSA on P-256/P-384 with
//! SHA-256/384/512 (RFC 5758). SHA-1 signatures are refused.

use ::signature::hazmat::PrehashVerifier;
use const_oid::ObjectIdentifier;
use der::{Decode, Encode};
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::RsaPublicKey;
use sha2::{Digest, Sha256, Sha384, Sha512};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use super::oid;

/// Smallest RSA issuer key accepted, in bits.
const RSA_MIN_BITS: usize = 2048;
/// Largest RSA issuer key accepted, in bits (the `rsa` crate's bound).
const RSA_MAX_BITS: usize = 4096;

/// Why a signature was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SigFailure {
    /// The signature algorithm is not one this module checks (dotted OID or
    /// a description).
    UnsupportedAlgorithm(String),
    /// The issuer's key cannot be used for this algorithm.
    UnsupportedKey(String),
    /// The signature does not verify.
    Invalid,
}

#[derive(Clone, Copy)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn from_oid(oid: &ObjectIdentifier) -> Option<Self> {
        match *oid {
            oid::SHA256 => Some(Hash::Sha256),
            oid::SHA384 => Some(Hash::Sha384),
            oid::SHA512 => Some(Hash::Sha512),
            _ => None,
        }
    }

    fn digest(self, msg: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => Sha256::digest(msg).to_vec(),
            Hash::Sha384 => Sha384::digest(msg).to_vec(),
            Hash::Sha512 => Sha512::digest(msg).to_vec(),
        }
    }
}

/// Checks `sig` over `msg` by the key in `issuer_key`, with `alg` the
/// certificate's signatureAlgorithm.
pub(crate) fn verify(
    issuer_key: &SubjectPublicKeyInfoOwned,
    alg: &AlgorithmIdentifierOwned,
    msg: &[u8],
    sig: &[u8],
) -> Result<(), SigFailure> {
    match alg.oid {
        oid::SHA256_WITH_RSA => verify_pkcs1(issuer_key, Hash::Sha256, msg, sig),
        oid::SHA384_WITH_RSA => verify_pkcs1(issuer_key, Hash::Sha384, msg, sig),
        oid::SHA512_WITH_RSA => verify_pkcs1(issuer_key, Hash::Sha512, msg, sig),
        oid::RSASSA_PSS => verify_pss(issuer_key, alg, msg, sig),
        oid::ECDSA_WITH_SHA256 => verify_ecdsa(issuer_key, Hash::Sha256, msg, sig),
        oid::ECDSA_WITH_SHA384 => verify_ecdsa(issuer_key, Hash::Sha384, msg, sig),
        oid::ECDSA_WITH_SHA512 => verify_ecdsa(issuer_key, Hash::Sha512, msg, sig),
        other => Err(SigFailure::UnsupportedAlgorithm(other.to_string())),
    }
}

fn rsa_key(spki: &SubjectPublicKeyInfoOwned) -> Result<RsaPublicKey, SigFailure> {
    if spki.algorithm.oid != oid::RSA_ENCRYPTION && spki.algorithm.oid != oid::RSASSA_PSS {
        return Err(SigFailure::UnsupportedKey(format!(
            "RSA signature but a {} key",
            spki.algorithm.oid
        )));
    }
    let bits = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| SigFailure::UnsupportedKey("key BIT STRING has unused bits".into()))?;
    let key = RsaPublicKey::from_pkcs1_der(bits)
        .map_err(|e| SigFailure::UnsupportedKey(format!("RSA key: {e}")))?;
    let size = rsa::traits::PublicKeyParts::size(&key).saturating_mul(8);
    if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&size) {
        return Err(SigFailure::UnsupportedKey(format!(
            "RSA key of {size} bits"
        )));
    }
    Ok(key)
}

fn verify_pkcs1(
    spki: &SubjectPublicKeyInfoOwned,
    hash: Hash,
    msg: &[u8],
    sig: &[u8],
) -> Result<(), SigFailure> {
    let key = rsa_key(spki)?;
    let scheme = match hash {
        Hash::Sha256 => rsa::Pkcs1v15Sign::new::<Sha256>(),
        Hash::Sha384 => rsa::Pkcs1v15Sign::new::<Sha384>(),
        Hash::Sha512 => rsa::Pkcs1v15Sign::new::<Sha512>(),
    };
    key.verify(scheme, &hash.digest(msg), sig)
        .map_err(|_| SigFailure::Invalid)
}

fn verify_pss(
    spki: &SubjectPublicKeyInfoOwned,
    alg: &AlgorithmIdentifierOwned,
    msg: &[u8],
    sig: &[u8],
) -> Result<(), SigFailure> {
    let unsupported = |what: &str| SigFailure::UnsupportedAlgorithm(format!("RSASSA-PSS {what}"));
    // The defaults (SHA-1, MGF1-SHA-1) are refused, so parameters must be present.
    let params_der = alg
        .parameters
        .as_ref()
        .and_then(|p| p.to_der().ok())
        .ok_or_else(|| unsupported("without parameters (SHA-1)"))?;
    let params = rsa::pkcs1::RsaPssParams::from_der(&params_der)
        .map_err(|_| unsupported("with malformed parameters"))?;
    let hash = Hash::from_oid(&params.hash.oid).ok_or_else(|| unsupported("hash"))?;
    let mgf_hash = params
        .mask_gen
        .parameters
        .as_ref()
        .map(|p| p.oid)
        .ok_or_else(|| unsupported("MGF without a hash"))?;
    if params.mask_gen.oid != oid::MGF1 || mgf_hash != params.hash.oid {
        return Err(unsupported(
            "mask generation other than MGF1 with the same hash",
        ));
    }
    if params.trailer_field != rsa::pkcs1::TrailerField::BC {
        return Err(unsupported("trailer field"));
    }
    let salt = usize::from(params.salt_len);
    let key = rsa_key(spki)?;
    let scheme = match hash {
        Hash::Sha256 => rsa::Pss::new_with_salt::<Sha256>(salt),
        Hash::Sha384 => rsa::Pss::new_with_salt::<Sha384>(salt),
        Hash::Sha512 => rsa::Pss::new_with_salt::<Sha512>(salt),
    };
    key.verify(scheme, &hash.digest(msg), sig)
        .map_err(|_| SigFailure::Invalid)
}

fn verify_ecdsa(
    spki: &SubjectPublicKeyInfoOwned,
    hash: Hash,
    msg: &[u8],
    sig: &[u8],
) -> Result<(), SigFailure> {
    if spki.algorithm.oid != oid::EC_PUBLIC_KEY {
        return Err(SigFailure::UnsupportedKey(format!(
            "ECDSA signature but a {} key",
            spki.algorithm.oid
        )));
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
        .ok_or_else(|| SigFailure::UnsupportedKey("EC key without a namedCurve".into()))?;
    let point = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| SigFailure::UnsupportedKey("key BIT STRING has unused bits".into()))?;
    let bad_key = |_| SigFailure::UnsupportedKey("EC point not on its curve".into());
    let digest = hash.digest(msg);
    match curve {
        oid::SECP256R1 => {
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(bad_key)?;
            let sig = p256::ecdsa::Signature::from_der(sig).map_err(|_| SigFailure::Invalid)?;
            key.verify_prehash(&digest, &sig)
                .map_err(|_| SigFailure::Invalid)
        }
        oid::SECP384R1 => {
            let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(bad_key)?;
            let sig = p384::ecdsa::Signature::from_der(sig).map_err(|_| SigFailure::Invalid)?;
            key.verify_prehash(&digest, &sig)
                .map_err(|_| SigFailure::Invalid)
        }
        other => Err(SigFailure::UnsupportedKey(format!("curve {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::asn1::BitString;

    fn p256_key() -> SubjectPublicKeyInfoOwned {
        use p256::pkcs8::EncodePublicKey;
        let key = p256::SecretKey::from_slice(&[7u8; 32])
            .unwrap()
            .public_key();
        SubjectPublicKeyInfoOwned::from_der(key.to_public_key_der().unwrap().as_bytes()).unwrap()
    }

    fn alg(oid: &str) -> AlgorithmIdentifierOwned {
        AlgorithmIdentifierOwned {
            oid: oid.parse().unwrap(),
            parameters: None,
        }
    }

    #[test]
    fn sha1_and_unknown_algorithms_are_refused() {
        let key = p256_key();
        for oid in ["1.2.840.113549.1.1.5", "1.2.840.10045.4.1", "1.3.101.112"] {
            assert!(matches!(
                verify(&key, &alg(oid), b"msg", b"sig"),
                Err(SigFailure::UnsupportedAlgorithm(_))
            ));
        }
        // PSS without parameters means SHA-1: refused.
        assert!(matches!(
            verify(&key, &alg("1.2.840.113549.1.1.10"), b"msg", b"sig"),
            Err(SigFailure::UnsupportedAlgorithm(_))
        ));
    }

    #[test]
    fn key_type_must_match_the_algorithm() {
        let key = p256_key();
        assert!(matches!(
            verify(&key, &alg("1.2.840.113549.1.1.11"), b"msg", b"sig"),
            Err(SigFailure::UnsupportedKey(_))
        ));
        let mut rsa_shaped = key.clone();
        rsa_shaped.algorithm = alg("1.2.840.113549.1.1.1");
        rsa_shaped.subject_public_key = BitString::from_bytes(&[0x30, 0x00]).unwrap();
        assert!(matches!(
            verify(&rsa_shaped, &alg("1.2.840.10045.4.3.2"), b"msg", b"sig"),
            Err(SigFailure::UnsupportedKey(_))
        ));
    }

    #[test]
    fn ecdsa_signature_checks_message_and_encoding() {
        use ::signature::Signer;
        let signer = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let sig: p256::ecdsa::DerSignature = signer.sign(b"msg");
        let key = p256_key();
        let sha256 = alg("1.2.840.10045.4.3.2");
        assert_eq!(verify(&key, &sha256, b"msg", sig.as_bytes()), Ok(()));
        assert_eq!(
            verify(&key, &sha256, b"msh", sig.as_bytes()),
            Err(SigFailure::Invalid)
        );
        assert_eq!(
            verify(&key, &sha256, b"msg", b"\x30\x00"),
            Err(SigFailure::Invalid)
        );
        // Same signature under the SHA-384 OID is a different check.
        let sha384 = alg("1.2.840.10045.4.3.3");
        assert_eq!(
            verify(&key, &sha384, b"msg", sig.as_bytes()),
            Err(SigFailure::Invalid)
        );
    }
}
