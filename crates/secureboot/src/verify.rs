//! Authenticode verification and the UEFI Secure Boot db/dbx decision
//! (UEFI 2.10 §32.5.3.3; modelled on edk2 `DxeImageVerificationHandler`).
//!
//! For each signature in the certificate table: the signed image digest
//! must equal our Authenticode hash, the messageDigest attribute must equal
//! the hash of the SpcIndirectDataContent, the signer's signature over the
//! authenticated attributes must verify with the signer certificate, and a
//! chain is built upwards from the signer through the embedded certificates
//! (each link checked by signature). Like firmware, no validity periods,
//! key usages or EKUs are checked.
//!
//! Decision, as edk2: a signature whose chain meets a dbx certificate, or an
//! image hash in dbx, denies; otherwise a signature whose chain meets a db
//! certificate (equal to a chain certificate, or the verified issuer of
//! one), or the image hash in db, allows; otherwise denied.
//! Nested signatures are parsed but, like edk2, not used for the decision.

use crate::authenticode::{image_hash_parsed, image_sha256_parsed, HashError};
use crate::pe::{PeError, PeImage};
use crate::pkcs7::{signatures, AuthenticodeSignature, DigestAlg, EmbeddedCert, Pkcs7Error};
use const_oid::ObjectIdentifier;
use der::{Decode, Encode, Reader, SliceReader};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::Certificate;

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// A signature database in the plain form this module needs: the X.509
/// certificates (EFI_CERT_X509_GUID entries, DER) and SHA-256 image hashes
/// (EFI_CERT_SHA256_GUID entries) of a `db` or `dbx`, in the order they
/// appear in the variable. Other entry types are not represented.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Database {
    /// DER X.509 certificates.
    pub certs: Vec<Vec<u8>>,
    /// SHA-256 Authenticode image hashes.
    pub sha256_hashes: Vec<[u8; 32]>,
}

/// Which database entry matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DbEntry {
    /// `certs[index]`.
    Cert(usize),
    /// `sha256_hashes[index]`.
    Sha256(usize),
}

/// Why one signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The image digest inside SpcIndirectDataContent differs from ours.
    #[error("image hash mismatch: signed {signed:02x?}, computed {computed:02x?}")]
    ImageHashMismatch {
        /// Digest the signer signed.
        signed: Vec<u8>,
        /// Digest we computed.
        computed: Vec<u8>,
    },
    /// No messageDigest authenticated attribute.
    #[error("no authenticated attributes / messageDigest")]
    NoMessageDigest,
    /// messageDigest differs from the hash of the content.
    #[error("messageDigest attribute does not match the content")]
    MessageDigestMismatch,
    /// No embedded certificate matches the signer's issuer and serial.
    #[error("signer certificate not found in the SignedData")]
    SignerCertNotFound,
    /// The signature over the authenticated attributes does not verify.
    #[error("signer signature does not verify")]
    BadSignerSignature,
    /// The hash computation failed.
    #[error("hash: {0}")]
    Hash(#[from] HashError),
}

/// A signature that verified, with its chain (indexes into
/// `AuthenticodeSignature::certificates`, signer first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSignature {
    /// Chain from the signer upwards; each link checked by signature.
    pub chain: Vec<usize>,
}

/// The Secure Boot decision, naming the reason and the evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// The image may run.
    Allowed {
        /// The db entry that allowed it.
        by: DbEntry,
        /// The signature (index in the certificate table) that chained to
        /// a db certificate; `None` when allowed by hash.
        signature: Option<usize>,
        /// For a certificate match, the chain position (0 = signer) that
        /// equals or was issued by the db certificate.
        chain_position: Option<usize>,
    },
    /// The image must not run.
    Denied(Denial),
}

/// Why an image was denied.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Denial {
    /// The image's SHA-256 Authenticode hash is `dbx.sha256_hashes[index]`.
    HashInDbx {
        /// Index in dbx.
        index: usize,
    },
    /// A chain certificate of `signature` equals or is issued by
    /// `dbx.certs[index]`.
    CertInDbx {
        /// Signature index.
        signature: usize,
        /// dbx entry index.
        index: usize,
        /// Chain position (0 = signer).
        chain_position: usize,
    },
    /// Neither a signature nor the hash is in db; lists why each signature
    /// failed (an empty chain error means it verified but met no db cert).
    NotInDb {
        /// Per signature: `Err` if it did not verify, `Ok` if it verified
        /// but no db certificate anchors it.
        signatures: Vec<Result<VerifiedSignature, SignatureError>>,
    },
}

/// Errors that stop verification before a decision (firmware denies these).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Malformed PE.
    #[error("PE: {0}")]
    Pe(#[from] PeError),
    /// Image hash could not be computed.
    #[error("hash: {0}")]
    Hash(#[from] HashError),
    /// Malformed certificate table or SignedData.
    #[error("signature: {0}")]
    Pkcs7(#[from] Pkcs7Error),
}

fn sig_digest_for_cert_alg(oid: ObjectIdentifier) -> Option<DigestAlg> {
    Some(match oid.to_string().as_str() {
        "1.2.840.113549.1.1.5" | "1.2.840.10045.4.1" => DigestAlg::Sha1,
        "1.2.840.113549.1.1.11" | "1.2.840.10045.4.3.2" => DigestAlg::Sha256,
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => DigestAlg::Sha384,
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => DigestAlg::Sha512,
        _ => return None,
    })
}

/// Verify `sig` over `msg` (hashed with `alg`) with `spki`: RSA PKCS#1 v1.5
/// or ECDSA P-256/P-384 (DER signature).
fn verify_raw(spki: &SubjectPublicKeyInfoOwned, alg: DigestAlg, msg: &[u8], sig: &[u8]) -> bool {
    use signature::hazmat::PrehashVerifier;
    let hashed = alg.digest(msg);
    let key_bytes = spki.subject_public_key.raw_bytes();
    if spki.algorithm.oid == OID_RSA {
        use rsa::pkcs1::DecodeRsaPublicKey;
        let Ok(key) = rsa::RsaPublicKey::from_pkcs1_der(key_bytes) else {
            return false;
        };
        let scheme = match alg {
            DigestAlg::Sha1 => rsa::Pkcs1v15Sign::new::<sha1::Sha1>(),
            DigestAlg::Sha256 => rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
            DigestAlg::Sha384 => rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
            DigestAlg::Sha512 => rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
        };
        return key.verify(scheme, &hashed, sig).is_ok();
    }
    if spki.algorithm.oid == OID_EC {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        if curve == Some(OID_P256) {
            let (Ok(k), Ok(s)) = (
                p256::ecdsa::VerifyingKey::from_sec1_bytes(key_bytes),
                p256::ecdsa::Signature::from_der(sig),
            ) else {
                return false;
            };
            return k.verify_prehash(&hashed, &s).is_ok();
        }
        if curve == Some(OID_P384) {
            let (Ok(k), Ok(s)) = (
                p384::ecdsa::VerifyingKey::from_sec1_bytes(key_bytes),
                p384::ecdsa::Signature::from_der(sig),
            ) else {
                return false;
            };
            return k.verify_prehash(&hashed, &s).is_ok();
        }
    }
    false
}

/// The raw TBSCertificate bytes of a DER certificate.
fn tbs_bytes(cert_der: &[u8]) -> Option<&[u8]> {
    let mut r = SliceReader::new(cert_der).ok()?;
    // Skip the outer Certificate SEQUENCE header; the next TLV is the TBS.
    der::Header::decode(&mut r).ok()?;
    r.tlv_bytes().ok()
}

/// Whether `child` (DER) is signed by `issuer`'s key and names it as issuer.
#[must_use]
pub fn issued_by(child_der: &[u8], child: &Certificate, issuer: &Certificate) -> bool {
    if child.tbs_certificate.issuer != issuer.tbs_certificate.subject {
        return false;
    }
    let (Some(tbs), Some(alg)) = (
        tbs_bytes(child_der),
        sig_digest_for_cert_alg(child.signature_algorithm.oid),
    ) else {
        return false;
    };
    let Some(sig) = child.signature.as_bytes() else {
        return false;
    };
    verify_raw(
        &issuer.tbs_certificate.subject_public_key_info,
        alg,
        tbs,
        sig,
    )
}

/// Check one signature against the image (digests and signer signature)
/// and build its chain through the embedded certificates.
pub fn check_signature(
    image: &[u8],
    pe: &PeImage,
    sig: &AuthenticodeSignature,
) -> Result<VerifiedSignature, SignatureError> {
    let computed = image_hash_parsed(image, pe, sig.image_digest_alg)?;
    if computed.as_bytes() != sig.image_digest.as_slice() {
        return Err(SignatureError::ImageHashMismatch {
            signed: sig.image_digest.clone(),
            computed: computed.as_bytes().to_vec(),
        });
    }
    let signer = &sig.signer;
    let md = signer
        .message_digest
        .as_ref()
        .ok_or(SignatureError::NoMessageDigest)?;
    let attrs = signer
        .signed_attrs_der
        .as_ref()
        .ok_or(SignatureError::NoMessageDigest)?;
    if signer.digest_alg.digest(&sig.content) != *md {
        return Err(SignatureError::MessageDigestMismatch);
    }
    let leaf = sig
        .certificates
        .iter()
        .position(|c| {
            c.cert.tbs_certificate.serial_number.as_bytes() == signer.serial.as_slice()
                && c.cert
                    .tbs_certificate
                    .issuer
                    .to_der()
                    .is_ok_and(|d| d == signer.issuer_der)
        })
        .ok_or(SignatureError::SignerCertNotFound)?;
    let leaf_cert = sig
        .certificates
        .get(leaf)
        .ok_or(SignatureError::SignerCertNotFound)?;
    if !verify_raw(
        &leaf_cert.cert.tbs_certificate.subject_public_key_info,
        signer.digest_alg,
        attrs,
        &signer.signature,
    ) {
        return Err(SignatureError::BadSignerSignature);
    }
    let mut chain = vec![leaf];
    while chain.len() <= sig.certificates.len() {
        let Some(cur) = chain.last().and_then(|&i| sig.certificates.get(i)) else {
            break;
        };
        let next = sig
            .certificates
            .iter()
            .enumerate()
            .position(|(i, c)| !chain.contains(&i) && issued_by(&cur.der, &cur.cert, &c.cert));
        match next {
            Some(n) => chain.push(n),
            None => break,
        }
    }
    Ok(VerifiedSignature { chain })
}

/// Find the first certificate of `db` that is, or issued, a chain
/// certificate: `(db index, chain position)`.
fn anchor(db: &Database, certs: &[EmbeddedCert], chain: &[usize]) -> Option<(usize, usize)> {
    for (di, der_bytes) in db.certs.iter().enumerate() {
        let Ok(dbc) = Certificate::from_der(der_bytes) else {
            continue;
        };
        for (pos, c) in chain.iter().filter_map(|&i| certs.get(i)).enumerate() {
            if c.der == *der_bytes || issued_by(&c.der, &c.cert, &dbc) {
                return Some((di, pos));
            }
        }
    }
    None
}

/// The UEFI Secure Boot decision for `image` against `db` and `dbx`.
pub fn verify_image(image: &[u8], db: &Database, dbx: &Database) -> Result<Verdict, VerifyError> {
    let pe = PeImage::parse(image)?;
    let hash = image_sha256_parsed(image, &pe)?;
    if let Some(index) = dbx.sha256_hashes.iter().position(|h| *h == hash) {
        return Ok(Verdict::Denied(Denial::HashInDbx { index }));
    }
    let sigs = match pe.cert_table_bytes(image) {
        Some(t) => signatures(t)?,
        None => Vec::new(),
    };
    let results: Vec<_> = sigs
        .iter()
        .map(|s| check_signature(image, &pe, s))
        .collect();
    for (si, (s, r)) in sigs.iter().zip(&results).enumerate() {
        if let Ok(v) = r {
            if let Some((index, chain_position)) = anchor(dbx, &s.certificates, &v.chain) {
                return Ok(Verdict::Denied(Denial::CertInDbx {
                    signature: si,
                    index,
                    chain_position,
                }));
            }
        }
    }
    for (si, (s, r)) in sigs.iter().zip(&results).enumerate() {
        if let Ok(v) = r {
            if let Some((index, chain_position)) = anchor(db, &s.certificates, &v.chain) {
                return Ok(Verdict::Allowed {
                    by: DbEntry::Cert(index),
                    signature: Some(si),
                    chain_position: Some(chain_position),
                });
            }
        }
    }
    if let Some(index) = db.sha256_hashes.iter().position(|h| *h == hash) {
        return Ok(Verdict::Allowed {
            by: DbEntry::Sha256(index),
            signature: None,
            chain_position: None,
        });
    }
    Ok(Verdict::Denied(Denial::NotInDb {
        signatures: results,
    }))
}

impl Database {
    /// The X.509 and SHA-256 entries of a db/dbx signature database, in
    /// variable order (other entry types — SHA-1/384/512 hashes, hashes of
    /// certificates — are not used by this verifier yet).
    pub fn from_signature_db(db: &crate::siglist::SignatureDb) -> Self {
        use crate::siglist::SignatureType;
        let mut out = Database::default();
        for (kind, entry) in db.entries() {
            if kind == SignatureType::X509.guid() {
                out.certs.push(entry.data.clone());
            } else if kind == SignatureType::Sha256.guid() {
                if let Ok(h) = <[u8; 32]>::try_from(entry.data.as_slice()) {
                    out.sha256_hashes.push(h);
                }
            }
        }
        out
    }
}
