//! Credential activation, verifier side: TPM2_MakeCredential done in
//! software (TPM 2.0 Part 1 §24 "Credential Protection", §B.10.4 RSA-OAEP
//! secret sharing, §C.6.4 ECDH secret sharing, KDFa §11.4.10.2 and KDFe
//! §11.4.10.3). The TPM that holds the EK's private key, and only that TPM,
//! can recover the credential — and only for an object with the given name,
//! which proves the AK lives in that TPM.

use aes::cipher::{AsyncStreamCipher, KeyIvInit};
use hmac::{Hmac, Mac};
use rand_core::CryptoRngCore;
use rsa::{BigUint, Oaep, RsaPublicKey};
use serde::Serialize;

use crate::alg::{AlgId, HashAlg};
use crate::public::{curve, Public, PublicKey};
use crate::wire::Writer;

/// Magic and version of tpm2-tools' `tpm2_makecredential -o` files.
pub const TPM2_TOOLS_CREDENTIAL_MAGIC: u32 = 0xbadc_c0de;

/// Why a credential cannot be made for this EK.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
#[non_exhaustive]
pub enum CredentialError {
    /// The EK is not a storage key this crate can encrypt to.
    #[error("cannot make a credential for this EK: {0}")]
    UnsupportedEk(String),
    /// The credential is empty or longer than the EK's name digest.
    #[error("the credential is {len} bytes; it must be 1..={max}")]
    CredentialSize {
        /// Its length.
        len: usize,
        /// The largest allowed.
        max: usize,
    },
    /// The object name is not `nameAlg || digest`.
    #[error("the object name is {0} bytes, not a TPM name")]
    BadName(usize),
}

/// TPM2_MakeCredential's output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MadeCredential {
    /// TPM2B_ID_OBJECT contents: integrityHMAC (TPM2B) || encIdentity.
    #[serde(with = "crate::hexser")]
    pub credential_blob: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET contents: the OAEP-encrypted seed (RSA) or a
    /// marshalled TPMS_ECC_POINT (ECC).
    #[serde(with = "crate::hexser")]
    pub secret: Vec<u8>,
}

impl MadeCredential {
    /// The file `tpm2_makecredential -o` writes and
    /// `tpm2_activatecredential -i` reads: magic, version 1, TPM2B_ID_OBJECT,
    /// TPM2B_ENCRYPTED_SECRET.
    pub fn to_tpm2_tools_file(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(TPM2_TOOLS_CREDENTIAL_MAGIC)
            .u32(1)
            .tpm2b(&self.credential_blob)
            .tpm2b(&self.secret);
        w.into_bytes()
    }
}

/// KDFa (SP800-108 counter mode with HMAC): `bits` of key material.
pub fn kdfa(
    hash: HashAlg,
    key: &[u8],
    label: &str,
    context_u: &[u8],
    context_v: &[u8],
    bits: u32,
) -> Vec<u8> {
    let bytes = usize::try_from(bits.div_ceil(8)).unwrap_or(0);
    let mut out = Vec::with_capacity(bytes);
    let mut counter: u32 = 1;
    while out.len() < bytes {
        let block = hmac_parts(
            hash,
            key,
            &[
                &counter.to_be_bytes(),
                label.as_bytes(),
                &[0],
                context_u,
                context_v,
                &bits.to_be_bytes(),
            ],
        );
        out.extend(block);
        counter = counter.wrapping_add(1);
    }
    out.truncate(bytes);
    out
}

/// KDFe (SP800-56A concatenation KDF): `bits` of key material from a shared
/// secret `z`.
pub fn kdfe(
    hash: HashAlg,
    z: &[u8],
    label: &str,
    party_u: &[u8],
    party_v: &[u8],
    bits: u32,
) -> Vec<u8> {
    let bytes = usize::try_from(bits.div_ceil(8)).unwrap_or(0);
    let mut out = Vec::with_capacity(bytes);
    let mut counter: u32 = 1;
    while out.len() < bytes {
        out.extend(hash.hash_parts(&[
            &counter.to_be_bytes(),
            z,
            label.as_bytes(),
            &[0],
            party_u,
            party_v,
        ]));
        counter = counter.wrapping_add(1);
    }
    out.truncate(bytes);
    out
}

fn hmac_parts(hash: HashAlg, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        // HMAC accepts keys of any length.
        let Ok(mut m) = <M as hmac::digest::KeyInit>::new_from_slice(key) else {
            return Vec::new();
        };
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().to_vec()
    }
    match hash {
        HashAlg::Sha1 => run::<Hmac<sha1::Sha1>>(key, parts),
        HashAlg::Sha256 => run::<Hmac<sha2::Sha256>>(key, parts),
        HashAlg::Sha384 => run::<Hmac<sha2::Sha384>>(key, parts),
        HashAlg::Sha512 => run::<Hmac<sha2::Sha512>>(key, parts),
    }
}

fn oaep(hash: HashAlg) -> Oaep {
    // The label includes its terminating NUL (Part 1 §24.4).
    match hash {
        HashAlg::Sha1 => Oaep::new_with_label::<sha1::Sha1, _>("IDENTITY\0"),
        HashAlg::Sha256 => Oaep::new_with_label::<sha2::Sha256, _>("IDENTITY\0"),
        HashAlg::Sha384 => Oaep::new_with_label::<sha2::Sha384, _>("IDENTITY\0"),
        HashAlg::Sha512 => Oaep::new_with_label::<sha2::Sha512, _>("IDENTITY\0"),
    }
}

fn pad(c: &[u8], size: usize) -> Vec<u8> {
    let mut v = vec![0u8; size.saturating_sub(c.len())];
    v.extend_from_slice(c);
    v
}

/// Makes a credential for the object `name` (the AK's TPM name) that only
/// the TPM holding `ek`'s private key can activate.
pub fn make_credential(
    ek: &Public,
    name: &[u8],
    credential: &[u8],
    rng: &mut impl CryptoRngCore,
) -> Result<MadeCredential, CredentialError> {
    let unsupported = |s: &str| CredentialError::UnsupportedEk(s.to_string());
    let hash = HashAlg::from_alg(ek.name_alg)
        .ok_or_else(|| unsupported(&format!("name algorithm {}", ek.name_alg)))?;
    if credential.is_empty() || credential.len() > hash.size() {
        return Err(CredentialError::CredentialSize {
            len: credential.len(),
            max: hash.size(),
        });
    }
    if name.len() < 2 {
        return Err(CredentialError::BadName(name.len()));
    }
    let symmetric = match &ek.key {
        PublicKey::Rsa { symmetric, .. } | PublicKey::Ecc { symmetric, .. } => *symmetric,
        _ => return Err(unsupported("not an RSA or ECC key")),
    };
    if symmetric.algorithm != AlgId::AES || symmetric.mode != AlgId::CFB {
        return Err(unsupported("the EK's symmetric algorithm is not AES-CFB"));
    }
    let (seed, secret) = match &ek.key {
        PublicKey::Rsa {
            exponent, modulus, ..
        } => {
            let e = if *exponent == 0 { 65537 } else { *exponent };
            let key = RsaPublicKey::new(BigUint::from_bytes_be(modulus), BigUint::from(e))
                .map_err(|e| unsupported(&format!("RSA key: {e}")))?;
            let mut seed = vec![0u8; hash.size()];
            rng.fill_bytes(&mut seed);
            let secret = key
                .encrypt(rng, oaep(hash), &seed)
                .map_err(|e| unsupported(&format!("RSA-OAEP: {e}")))?;
            (seed, secret)
        }
        PublicKey::Ecc { curve: c, x, y, .. } => {
            let Ecdh {
                x: ephemeral_x,
                y: ephemeral_y,
                z,
            } = match *c {
                curve::NIST_P256 => ecdh::<p256::NistP256>(x, y, 32, rng)?,
                curve::NIST_P384 => ecdh::<p384::NistP384>(x, y, 48, rng)?,
                other => return Err(unsupported(&format!("ECC curve 0x{other:04x}"))),
            };
            let bits = u32::try_from(hash.size().saturating_mul(8)).unwrap_or(0);
            let seed = kdfe(hash, &z, "IDENTITY", &ephemeral_x, x, bits);
            let mut w = Writer::new();
            w.tpm2b(&ephemeral_x).tpm2b(&ephemeral_y);
            (seed, w.into_bytes())
        }
        _ => return Err(unsupported("not an RSA or ECC key")),
    };
    let key_bytes = usize::from(symmetric.key_bits / 8);
    let sym_key = kdfa(
        hash,
        &seed,
        "STORAGE",
        name,
        &[],
        u32::from(symmetric.key_bits),
    );
    let mut plain = Writer::new();
    plain.tpm2b(credential);
    let mut enc_identity = plain.into_bytes();
    let iv = [0u8; 16];
    match key_bytes {
        16 => cfb_mode::Encryptor::<aes::Aes128>::new_from_slices(&sym_key, &iv)
            .map_err(|_| unsupported("AES-128 key"))?
            .encrypt(&mut enc_identity),
        32 => cfb_mode::Encryptor::<aes::Aes256>::new_from_slices(&sym_key, &iv)
            .map_err(|_| unsupported("AES-256 key"))?
            .encrypt(&mut enc_identity),
        _ => return Err(unsupported("AES key size")),
    }
    let bits = u32::try_from(hash.size().saturating_mul(8)).unwrap_or(0);
    let hmac_key = kdfa(hash, &seed, "INTEGRITY", &[], &[], bits);
    let integrity = hmac_parts(hash, &hmac_key, &[&enc_identity, name]);
    let mut blob = Writer::new();
    blob.tpm2b(&integrity).bytes(&enc_identity);
    Ok(MadeCredential {
        credential_blob: blob.into_bytes(),
        secret,
    })
}

/// An ephemeral ECDH exchange: the ephemeral public point and Z, the x
/// coordinate of the shared point, each of the field size.
struct Ecdh {
    x: Vec<u8>,
    y: Vec<u8>,
    z: Vec<u8>,
}

/// ECDH with an ephemeral key against the EK's point.
fn ecdh<C>(
    x: &[u8],
    y: &[u8],
    size: usize,
    rng: &mut impl CryptoRngCore,
) -> Result<Ecdh, CredentialError>
where
    C: ecdsa::elliptic_curve::CurveArithmetic,
    ecdsa::elliptic_curve::FieldBytesSize<C>: ecdsa::elliptic_curve::sec1::ModulusSize,
    C::AffinePoint: ecdsa::elliptic_curve::sec1::FromEncodedPoint<C>
        + ecdsa::elliptic_curve::sec1::ToEncodedPoint<C>,
{
    use ecdsa::elliptic_curve::sec1::ToEncodedPoint;
    let bad = || CredentialError::UnsupportedEk("EK point is not on the curve".into());
    if x.len() > size || y.len() > size {
        return Err(bad());
    }
    let mut sec1 = vec![0x04];
    sec1.extend(pad(x, size));
    sec1.extend(pad(y, size));
    let ek = ecdsa::elliptic_curve::PublicKey::<C>::from_sec1_bytes(&sec1).map_err(|_| bad())?;
    let ephemeral = ecdsa::elliptic_curve::ecdh::EphemeralSecret::<C>::random(rng);
    let shared = ephemeral.diffie_hellman(&ek);
    let point = ephemeral.public_key().to_encoded_point(false);
    let ex = point.x().map(|v| v.to_vec()).ok_or_else(bad)?;
    let ey = point.y().map(|v| v.to_vec()).ok_or_else(bad)?;
    Ok(Ecdh {
        x: ex,
        y: ey,
        z: shared.raw_secret_bytes().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// KDFa known answer from the TPM 2.0 reference implementation's
    /// self-test vectors is not public; check the construction instead:
    /// block 1 is HMAC(key, 1 || label || 0 || u || v || bits).
    #[test]
    fn kdfa_is_counter_mode_hmac() {
        let out = kdfa(HashAlg::Sha256, b"key", "STORAGE", b"u", b"v", 384);
        assert_eq!(out.len(), 48);
        let b1 = hmac_parts(
            HashAlg::Sha256,
            b"key",
            &[
                &1u32.to_be_bytes(),
                b"STORAGE",
                &[0],
                b"u",
                b"v",
                &384u32.to_be_bytes(),
            ],
        );
        let b2 = hmac_parts(
            HashAlg::Sha256,
            b"key",
            &[
                &2u32.to_be_bytes(),
                b"STORAGE",
                &[0],
                b"u",
                b"v",
                &384u32.to_be_bytes(),
            ],
        );
        assert_eq!(out[..32], b1[..]);
        assert_eq!(out[32..], b2[..16]);
        assert_eq!(kdfa(HashAlg::Sha256, b"k", "X", &[], &[], 128).len(), 16);
    }
}
