//! Quote verification (TPM 2.0 Part 3 §18.4): the AK's signature over a
//! TPMS_ATTEST, the verifier's nonce in `extraData`, and the PCR digest over
//! the supplied PCR values. Every failure names the check that failed.

use rsa::{BigUint, Pss, RsaPublicKey};
use serde::Serialize;
use signature::hazmat::PrehashVerifier;

use crate::alg::{AlgId, HashAlg};
use crate::attest::{Attest, Attested, ClockInfo, TPM_GENERATED};
use crate::pcr::{pcr_digest, PcrDigestError, PcrSelection, PcrValues};
use crate::public::{curve, Public, PublicKey};
use crate::rsa_fast::RsaVerifyingKey;
use crate::signature::Signature;
use crate::wire::WireError;

/// Why a quote is not valid. Each variant is one named check.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "check", rename_all = "snake_case")]
#[non_exhaustive]
pub enum QuoteFailure {
    /// The AK's public area cannot verify signatures (type, curve, size).
    #[error("the attestation key cannot verify quotes: {reason}")]
    UnusableKey {
        /// Why.
        reason: String,
    },
    /// The quote (TPMS_ATTEST) is malformed.
    #[error("the quote is malformed: {reason}")]
    Malformed {
        /// The unmarshalling error.
        reason: String,
    },
    /// `magic` is not TPM_GENERATED_VALUE: the TPM did not make this.
    #[error("the quote's magic is 0x{magic:08x}, not TPM_GENERATED (0xff544347)")]
    NotTpmGenerated {
        /// The magic found.
        magic: u32,
    },
    /// The attestation is not a quote.
    #[error("the attestation is not a quote (type 0x{tag:04x})")]
    NotAQuote {
        /// TPMI_ST_ATTEST found.
        tag: u16,
    },
    /// The signature's scheme does not fit the key (algorithm or hash).
    #[error("signature scheme {sig_alg}/{hash} does not match the key's {key_scheme}/{key_hash}")]
    SchemeMismatch {
        /// The signature's algorithm.
        sig_alg: String,
        /// The signature's hash.
        hash: String,
        /// The key's scheme.
        key_scheme: String,
        /// The key's scheme hash.
        key_hash: String,
    },
    /// The signature does not verify with the AK.
    #[error("the quote's signature does not verify with the attestation key")]
    BadSignature,
    /// `extraData` is not the verifier's nonce: stale or replayed quote.
    #[error("the quote's nonce {found} is not the expected {expected} (stale or replayed quote)")]
    NonceMismatch {
        /// Hex of the expected nonce.
        expected: String,
        /// Hex of `extraData`.
        found: String,
    },
    /// The supplied PCR values cannot be digested for this selection.
    #[error("the PCR values do not cover the quote: {reason}")]
    PcrValues {
        /// Why.
        reason: String,
    },
    /// `pcrDigest` is not the digest of the supplied PCR values.
    #[error("the quote's PCR digest {quoted} does not match the supplied PCR values ({computed})")]
    PcrDigestMismatch {
        /// Hex of the quoted digest.
        quoted: String,
        /// Hex of the digest of the supplied values.
        computed: String,
    },
}

/// A verified quote: what the TPM attested.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifiedQuote {
    /// The PCR selection quoted.
    pub selection: PcrSelection,
    /// The TPM clock, reset and restart counts.
    pub clock_info: ClockInfo,
    /// `firmwareVersion`.
    pub firmware_version: u64,
    /// `qualifiedSigner`.
    #[serde(with = "crate::hexser")]
    pub qualified_signer: Vec<u8>,
    /// `extraData`: the nonce the TPM signed (the verifier's, once
    /// verified).
    #[serde(with = "crate::hexser")]
    pub nonce: Vec<u8>,
    /// The hash the quote was signed over (and its PCR digest made with).
    pub hash: HashAlg,
}

enum KeyKind {
    Rsa(RsaPublicKey, RsaVerifyingKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
}

/// An AK prepared for verifying many quotes (parsing the key once).
pub struct QuoteVerifier {
    key: KeyKind,
    scheme: AlgId,
    scheme_hash: AlgId,
}

fn hex(b: &[u8]) -> String {
    use core::fmt::Write as _;
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

fn sec1_point(x: &[u8], y: &[u8], size: usize) -> Option<Vec<u8>> {
    if x.len() > size || y.len() > size {
        return None;
    }
    let mut out = vec![0x04];
    for c in [x, y] {
        out.extend(core::iter::repeat_n(0u8, size.saturating_sub(c.len())));
        out.extend_from_slice(c);
    }
    Some(out)
}

impl QuoteVerifier {
    /// Prepares an AK (RSA, ECC P-256 or P-384) for verification.
    pub fn new(ak: &Public) -> Result<Self, QuoteFailure> {
        let unusable = |reason: &str| QuoteFailure::UnusableKey {
            reason: reason.to_string(),
        };
        let (key, scheme) = match &ak.key {
            PublicKey::Rsa {
                scheme,
                exponent,
                modulus,
                ..
            } => {
                let e = if *exponent == 0 { 65537 } else { *exponent };
                let n = BigUint::from_bytes_be(modulus);
                let key = RsaPublicKey::new(n, BigUint::from(e))
                    .map_err(|e| unusable(&format!("RSA key: {e}")))?;
                let fast = RsaVerifyingKey::new(modulus, e)
                    .ok_or_else(|| unusable("RSA modulus must be odd and 1024-4096 bits"))?;
                (KeyKind::Rsa(key, fast), *scheme)
            }
            PublicKey::Ecc {
                scheme,
                curve: c,
                x,
                y,
                ..
            } => {
                let key = match *c {
                    curve::NIST_P256 => {
                        let p = sec1_point(x, y, 32).ok_or_else(|| unusable("P-256 point"))?;
                        KeyKind::P256(
                            p256::ecdsa::VerifyingKey::from_sec1_bytes(&p)
                                .map_err(|_| unusable("P-256 point is not on the curve"))?,
                        )
                    }
                    curve::NIST_P384 => {
                        let p = sec1_point(x, y, 48).ok_or_else(|| unusable("P-384 point"))?;
                        KeyKind::P384(
                            p384::ecdsa::VerifyingKey::from_sec1_bytes(&p)
                                .map_err(|_| unusable("P-384 point is not on the curve"))?,
                        )
                    }
                    other => return Err(unusable(&format!("ECC curve 0x{other:04x}"))),
                };
                (key, *scheme)
            }
            _ => return Err(unusable("not an RSA or ECC key")),
        };
        Ok(Self {
            key,
            scheme: scheme.scheme,
            scheme_hash: scheme.hash,
        })
    }

    /// Verifies `signature` over `message` (a marshalled TPMS_ATTEST).
    pub fn verify_signature(&self, message: &[u8], sig: &Signature) -> Result<(), QuoteFailure> {
        let hash_alg = sig.hash().unwrap_or(AlgId::NULL);
        let mismatch = || QuoteFailure::SchemeMismatch {
            sig_alg: sig.alg().name(),
            hash: hash_alg.name(),
            key_scheme: self.scheme.name(),
            key_hash: self.scheme_hash.name(),
        };
        // A key with a scheme may sign only with that scheme (Part 3 §18.4).
        if self.scheme != AlgId::NULL && (sig.alg() != self.scheme || hash_alg != self.scheme_hash)
        {
            return Err(mismatch());
        }
        let hash = HashAlg::from_alg(hash_alg).ok_or_else(mismatch)?;
        let digest = hash.hash(message);
        let ok = match (&self.key, sig) {
            (KeyKind::Rsa(_, fast), Signature::Rsassa { sig, .. }) => {
                fast.verify_pkcs1v15(hash, &digest, sig)
            }
            (KeyKind::Rsa(k, _), Signature::Rsapss { sig, .. }) => {
                let scheme = match hash {
                    HashAlg::Sha1 => Pss::new::<sha1::Sha1>(),
                    HashAlg::Sha256 => Pss::new::<sha2::Sha256>(),
                    HashAlg::Sha384 => Pss::new::<sha2::Sha384>(),
                    HashAlg::Sha512 => Pss::new::<sha2::Sha512>(),
                };
                k.verify(scheme, &digest, sig).is_ok()
            }
            (KeyKind::P256(k), Signature::Ecdsa { r, s, .. }) => ecdsa_sig::<p256::NistP256>(r, s)
                .is_some_and(|sig| k.verify_prehash(&digest, &sig).is_ok()),
            (KeyKind::P384(k), Signature::Ecdsa { r, s, .. }) => ecdsa_sig::<p384::NistP384>(r, s)
                .is_some_and(|sig| k.verify_prehash(&digest, &sig).is_ok()),
            _ => return Err(mismatch()),
        };
        if ok {
            Ok(())
        } else {
            Err(QuoteFailure::BadSignature)
        }
    }

    /// Verifies a quote: the signature, that it is a TPM-made quote, the
    /// nonce, and the PCR digest over `pcrs`.
    pub fn verify(
        &self,
        attest: &[u8],
        sig: &Signature,
        nonce: &[u8],
        pcrs: &PcrValues,
    ) -> Result<VerifiedQuote, QuoteFailure> {
        // Signature first: nothing in an unsigned message is worth parsing
        // beyond its bounds.
        self.verify_signature(attest, sig)?;
        let a = Attest::from_bytes(attest).map_err(|e: WireError| QuoteFailure::Malformed {
            reason: e.to_string(),
        })?;
        if a.magic != TPM_GENERATED {
            return Err(QuoteFailure::NotTpmGenerated { magic: a.magic });
        }
        let Attested::Quote {
            pcr_select,
            pcr_digest: quoted,
        } = a.attested
        else {
            let tag = match a.attested {
                Attested::Certify { .. } => crate::attest::st::ATTEST_CERTIFY,
                Attested::Creation { .. } => crate::attest::st::ATTEST_CREATION,
                Attested::Other { tag, .. } => tag,
                Attested::Quote { .. } => crate::attest::st::ATTEST_QUOTE,
            };
            return Err(QuoteFailure::NotAQuote { tag });
        };
        if a.extra_data != nonce {
            return Err(QuoteFailure::NonceMismatch {
                expected: hex(nonce),
                found: hex(&a.extra_data),
            });
        }
        // The PCR digest uses the signing scheme's hash (Part 3 §18.4.1).
        let hash = sig
            .hash()
            .and_then(HashAlg::from_alg)
            .ok_or(QuoteFailure::BadSignature)?;
        let computed = pcr_digest(&pcr_select, pcrs, hash).map_err(|e: PcrDigestError| {
            QuoteFailure::PcrValues {
                reason: e.to_string(),
            }
        })?;
        if computed != quoted {
            return Err(QuoteFailure::PcrDigestMismatch {
                quoted: hex(&quoted),
                computed: hex(&computed),
            });
        }
        Ok(VerifiedQuote {
            selection: pcr_select,
            clock_info: a.clock_info,
            firmware_version: a.firmware_version,
            qualified_signer: a.qualified_signer,
            nonce: a.extra_data,
            hash,
        })
    }
}

fn ecdsa_sig<C>(r: &[u8], s: &[u8]) -> Option<ecdsa::Signature<C>>
where
    C: ecdsa::PrimeCurve + elliptic_curve_bounds::Curve,
    ecdsa::SignatureSize<C>: ecdsa::elliptic_curve::generic_array::ArrayLength<u8>,
{
    let size = <C as ecdsa::elliptic_curve::Curve>::FieldBytesSize::USIZE;
    let mut fixed = Vec::with_capacity(size.saturating_mul(2));
    for c in [r, s] {
        // TPMs strip leading zeros; some pad. Normalise to the field size.
        let c = strip_zeros(c);
        if c.len() > size {
            return None;
        }
        fixed.extend(core::iter::repeat_n(0u8, size.saturating_sub(c.len())));
        fixed.extend_from_slice(c);
    }
    ecdsa::Signature::<C>::from_slice(&fixed).ok()
}

mod elliptic_curve_bounds {
    pub use ecdsa::elliptic_curve::Curve;
}

use ecdsa::elliptic_curve::generic_array::typenum::Unsigned as _;

fn strip_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    b.get(start..).unwrap_or_default()
}

/// Verifies a quote with a one-off key (see [`QuoteVerifier`] to verify
/// many quotes by one AK).
pub fn verify_quote(
    ak: &Public,
    attest: &[u8],
    sig: &Signature,
    nonce: &[u8],
    pcrs: &PcrValues,
) -> Result<VerifiedQuote, QuoteFailure> {
    QuoteVerifier::new(ak)?.verify(attest, sig, nonce, pcrs)
}

/// What changed between two quotes of the same TPM, by their clock info.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockChange {
    /// Same boot, clock moved forward.
    SameBoot,
    /// `resetCount` grew: the TPM was reset (the machine rebooted).
    Rebooted,
    /// `restartCount` grew: resumed from hibernation.
    Resumed,
    /// The clock or counters went backwards: not the same TPM, or a
    /// replayed older quote.
    WentBackwards,
}

/// Compares the clock info of an earlier and a later quote.
pub fn clock_change(earlier: &ClockInfo, later: &ClockInfo) -> ClockChange {
    use core::cmp::Ordering::{Equal, Greater, Less};
    match later.reset_count.cmp(&earlier.reset_count) {
        Greater => ClockChange::Rebooted,
        Less => ClockChange::WentBackwards,
        Equal => match later.restart_count.cmp(&earlier.restart_count) {
            Greater => ClockChange::Resumed,
            Less => ClockChange::WentBackwards,
            Equal if later.clock < earlier.clock => ClockChange::WentBackwards,
            Equal => ClockChange::SameBoot,
        },
    }
}
