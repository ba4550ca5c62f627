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
//! Database entries (UEFI 2.10 §32.4.1, §32.5.3.3), each kept with its
//! index so a verdict names the entry that decided:
//! - EFI_CERT_X509: in db, a signature whose chain meets it (a chain
//!   certificate equal to it or issued by it) allows; in dbx it denies.
//! - EFI_CERT_SHA1/SHA224/SHA256/SHA384/SHA512: the Authenticode image hash
//!   computed with that algorithm; in db allows, in dbx denies.
//! - EFI_CERT_X509_SHA256/SHA384/SHA512 (dbx): the hash of a certificate's
//!   DER TBSCertificate plus a revocation time. As edk2's
//!   `IsForbiddenByDbx`, any certificate a signature carries whose TBS hash
//!   is listed denies; as edk2's `IsAllowedByDb`, a db certificate whose TBS
//!   hash is listed anchors nothing. edk2 lets such an image through only
//!   when a timestamp counter-signature by a `dbt` authority predates the
//!   revocation time (`PassTimestampCheck`; an all-zero time revokes for
//!   all time); this crate reads no timestamps and has no dbt, so it always
//!   denies — what edk2 does for every image without a timestamp, which
//!   includes every shim, grub and kernel Debian and Microsoft ship.
//! - EFI_CERT_RSA2048, EFI_CERT_RSA2048_SHA256/SHA1, edk2's external
//!   management entry and unknown types: kept but not used, as edk2 ignores
//!   them for images; [`Database::ignored`] lists them.
//!
//! Verdict: an image hash in dbx, a signature meeting a dbx certificate or
//! carrying a certificate whose TBS hash is in dbx denies; otherwise a
//! signature that verified and meets a db certificate, or an image hash in
//! db, allows; otherwise denied. Nested signatures are parsed but, like
//! edk2, not used for the decision.
//!
//! Hash algorithms ([`HashPolicy`]): by default every image-hash entry is
//! checked with its own algorithm (the spec's reading). edk2 computes the
//! hash only with the algorithm of each signature's SpcIndirectDataContent
//! (SHA-256 for an unsigned image) and ignores hash entries of other
//! algorithms; [`HashPolicy::Edk2`] reproduces that.

use crate::authenticode::{
    image_hash_parsed, image_hashes_parsed, HashError, ImageDigest, ImageHashAlg,
};
use crate::pe::{PeError, PeImage};
use crate::pkcs7::{
    signatures, AuthenticodeSignature, DigestAlg, EmbeddedCert, Pkcs7Error, Signer,
};
use crate::siglist::{SignatureDb, SignatureType};
use const_oid::ObjectIdentifier;
use der::{Decode, Encode, Reader, SliceReader};
use spki::SubjectPublicKeyInfoOwned;
use trustlaunch_eventlog::Guid;
use x509_cert::Certificate;

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// EFI_CERT_RSA2048_SHA256_GUID (UEFI 2.10 §32.4.1).
pub const EFI_CERT_RSA2048_SHA256_GUID: Guid = Guid::from_fields(
    0xe2b3_6190,
    0x879b,
    0x4a3d,
    [0xad, 0x8d, 0xf2, 0xe7, 0xbb, 0xa3, 0x27, 0x84],
);
/// EFI_CERT_RSA2048_SHA1_GUID (UEFI 2.10 §32.4.1).
pub const EFI_CERT_RSA2048_SHA1_GUID: Guid = Guid::from_fields(
    0x67f8_444f,
    0x8743,
    0x48f1,
    [0xa3, 0x28, 0x1e, 0xaa, 0xb8, 0x73, 0x60, 0x80],
);

/// Size of the EFI_TIME revocation time after a TBS hash.
pub const REVOCATION_TIME_LEN: usize = 16;

/// What a database entry is, from its EFI_SIGNATURE_LIST type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EntryKind {
    /// EFI_CERT_X509_GUID: a DER certificate.
    X509,
    /// EFI_CERT_SHA1/SHA224/SHA256/SHA384/SHA512_GUID: an Authenticode
    /// image hash.
    ImageHash(ImageHashAlg),
    /// EFI_CERT_X509_SHA256/SHA384/SHA512_GUID: the hash of a DER
    /// TBSCertificate followed by a 16-byte EFI_TIME revocation time.
    CertTbsHash(ImageHashAlg),
    /// EFI_CERT_RSA2048_GUID: an RSA-2048 modulus (ignored for images).
    Rsa2048,
    /// EFI_CERT_RSA2048_SHA256_GUID (ignored for images).
    Rsa2048Sha256,
    /// EFI_CERT_RSA2048_SHA1_GUID (ignored for images).
    Rsa2048Sha1,
    /// edk2's EFI_CERT_EXTERNAL_MANAGEMENT_GUID (ignored for images).
    ExternalManagement,
    /// A type GUID this crate does not know (ignored, as edk2 does).
    Unknown(Guid),
}

impl EntryKind {
    /// The kind of an EFI_SIGNATURE_LIST type GUID.
    #[must_use]
    pub fn from_type_guid(guid: Guid) -> Self {
        if guid == EFI_CERT_RSA2048_SHA256_GUID {
            return Self::Rsa2048Sha256;
        }
        if guid == EFI_CERT_RSA2048_SHA1_GUID {
            return Self::Rsa2048Sha1;
        }
        match SignatureType::from_guid(guid) {
            Some(SignatureType::X509) => Self::X509,
            Some(SignatureType::Sha1) => Self::ImageHash(ImageHashAlg::Sha1),
            Some(SignatureType::Sha224) => Self::ImageHash(ImageHashAlg::Sha224),
            Some(SignatureType::Sha256) => Self::ImageHash(ImageHashAlg::Sha256),
            Some(SignatureType::Sha384) => Self::ImageHash(ImageHashAlg::Sha384),
            Some(SignatureType::Sha512) => Self::ImageHash(ImageHashAlg::Sha512),
            Some(SignatureType::X509Sha256) => Self::CertTbsHash(ImageHashAlg::Sha256),
            Some(SignatureType::X509Sha384) => Self::CertTbsHash(ImageHashAlg::Sha384),
            Some(SignatureType::X509Sha512) => Self::CertTbsHash(ImageHashAlg::Sha512),
            Some(SignatureType::Rsa2048) => Self::Rsa2048,
            Some(SignatureType::ExternalManagement) => Self::ExternalManagement,
            _ => Self::Unknown(guid),
        }
    }

    /// Whether image verification uses entries of this kind (X.509, image
    /// hashes and, in dbx, certificate TBS hashes).
    #[must_use]
    pub fn used_for_images(self) -> bool {
        matches!(self, Self::X509 | Self::ImageHash(_) | Self::CertTbsHash(_))
    }
}

impl core::fmt::Display for EntryKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::X509 => f.write_str("X.509"),
            Self::ImageHash(a) => write!(f, "{a} image hash"),
            Self::CertTbsHash(a) => write!(f, "X.509 TBS {a} hash"),
            Self::Rsa2048 => f.write_str("RSA-2048 key"),
            Self::Rsa2048Sha256 => f.write_str("RSA-2048/SHA-256 signature"),
            Self::Rsa2048Sha1 => f.write_str("RSA-2048/SHA-1 signature"),
            Self::ExternalManagement => f.write_str("external management"),
            Self::Unknown(g) => write!(f, "unknown type {g}"),
        }
    }
}

/// One entry of a db or dbx, as it was in the variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbRecord {
    /// Position among all entries of the variable, counting through the
    /// signature lists in order (0-based): "entry #index".
    pub index: usize,
    /// Which EFI_SIGNATURE_LIST of the variable holds it (0-based).
    pub list: usize,
    /// The entry's kind.
    pub kind: EntryKind,
    /// SignatureOwner.
    pub owner: Guid,
    /// SignatureData (DER certificate, digest, TBS digest + time, ...).
    pub data: Vec<u8>,
}

/// A signature database (`db` or `dbx`) with every entry kept, in
/// variable order, and its X.509 entries parsed once.
#[derive(Debug, Clone, Default)]
pub struct Database {
    records: Vec<DbRecord>,
    /// `(index into records, certificate)` for the X.509 entries that parse.
    certs: Vec<(usize, Certificate)>,
}

impl PartialEq for Database {
    fn eq(&self, other: &Self) -> bool {
        self.records == other.records
    }
}

impl Eq for Database {}

/// Which database entry matched: its position, type, owner and, for
/// certificates, subject. Displays as
/// `entry #3 (X.509, owner …, subject …)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbEntry {
    /// [`DbRecord::index`].
    pub index: usize,
    /// [`DbRecord::list`].
    pub list: usize,
    /// The entry's kind.
    pub kind: EntryKind,
    /// SignatureOwner.
    pub owner: Guid,
    /// The certificate's subject, for X.509 entries.
    pub subject: Option<String>,
}

impl core::fmt::Display for DbEntry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "entry #{} ({}, owner {}",
            self.index, self.kind, self.owner
        )?;
        if let Some(s) = &self.subject {
            write!(f, ", subject {s}")?;
        }
        f.write_str(")")
    }
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

/// Which image-hash entries are checked (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum HashPolicy {
    /// Every EFI_CERT_SHA* entry of db and dbx, each with the image hash
    /// computed with its own algorithm.
    #[default]
    EveryAlgorithm,
    /// As edk2 `DxeImageVerificationLib`: only entries of the algorithm of
    /// some signature's SpcIndirectDataContent (SHA-256 for an unsigned
    /// image); entries of other algorithms neither allow nor deny.
    Edk2,
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

/// The certificate whose TBS hash a dbx entry lists.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RevokedCert {
    /// `certificates[index]` of the signature's SignedData.
    Embedded {
        /// Index among the SignedData's certificates.
        index: usize,
        /// Its subject.
        subject: String,
    },
    /// The db certificate that anchors the signature (edk2
    /// `IsAllowedByDb` refuses a db certificate whose hash is in dbx).
    DbAnchor(DbEntry),
}

/// Why an image was denied.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Denial {
    /// The image's Authenticode hash (with the entry's algorithm) is a dbx
    /// entry.
    HashInDbx {
        /// The dbx entry.
        entry: DbEntry,
    },
    /// A chain certificate of `signature` equals or is issued by a dbx
    /// certificate.
    CertInDbx {
        /// The dbx entry.
        entry: DbEntry,
        /// Signature index.
        signature: usize,
        /// Chain position (0 = signer).
        chain_position: usize,
    },
    /// The TBS hash of a certificate of `signature` is a dbx entry. No
    /// timestamp can lift this here (see the module documentation).
    CertHashInDbx {
        /// The dbx entry.
        entry: DbEntry,
        /// Signature index.
        signature: usize,
        /// Which certificate.
        cert: RevokedCert,
        /// The entry's EFI_TIME revocation time, raw (all zero: revoked
        /// for all time).
        revocation_time: [u8; REVOCATION_TIME_LEN],
    },
    /// Neither a signature nor the hash is in db; lists why each signature
    /// failed (`Ok`: it verified but no db certificate anchors it).
    NotInDb {
        /// Per signature: `Err` if it did not verify, `Ok` if it verified
        /// but no db certificate anchors it.
        signatures: Vec<Result<VerifiedSignature, SignatureError>>,
    },
}

impl core::fmt::Display for Denial {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::HashInDbx { entry } => write!(f, "image hash is dbx {entry}"),
            Self::CertInDbx {
                entry,
                signature,
                chain_position,
            } => write!(
                f,
                "signature {signature}: chain position {chain_position} meets dbx {entry}"
            ),
            Self::CertHashInDbx {
                entry,
                signature,
                cert,
                ..
            } => match cert {
                RevokedCert::Embedded { index, subject } => write!(
                    f,
                    "signature {signature}: certificate {index} ({subject}) is revoked by dbx {entry}"
                ),
                RevokedCert::DbAnchor(db) => write!(
                    f,
                    "signature {signature}: its db anchor {db} is revoked by dbx {entry}"
                ),
            },
            Self::NotInDb { signatures } => {
                write!(f, "not in db ({} signature(s)", signatures.len())?;
                for (i, s) in signatures.iter().enumerate() {
                    match s {
                        Ok(_) => write!(f, "; {i}: verified, no db anchor")?,
                        Err(e) => write!(f, "; {i}: {e}")?,
                    }
                }
                f.write_str(")")
            }
        }
    }
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

impl Database {
    /// Every entry of a db/dbx signature database, in variable order, each
    /// with its index and list.
    #[must_use]
    pub fn from_signature_db(db: &SignatureDb) -> Self {
        let mut out = Database::default();
        for (list, l) in db.lists.iter().enumerate() {
            let kind = EntryKind::from_type_guid(l.type_guid);
            for e in &l.entries {
                out.push_record(list, kind, e.owner, e.data.clone());
            }
        }
        out
    }

    /// A database of X.509 certificates (DER), one list each, owner
    /// `owner`.
    #[must_use]
    pub fn from_certs(owner: Guid, certs: impl IntoIterator<Item = Vec<u8>>) -> Self {
        let mut out = Database::default();
        for c in certs {
            out.push(EntryKind::X509, owner, c);
        }
        out
    }

    /// Append an entry as a list of its own; returns its index. Data is
    /// not checked against the kind (an entry of the wrong size never
    /// matches).
    pub fn push(&mut self, kind: EntryKind, owner: Guid, data: Vec<u8>) -> usize {
        let list = self.records.last().map_or(0, |r| r.list.saturating_add(1));
        self.push_record(list, kind, owner, data)
    }

    fn push_record(&mut self, list: usize, kind: EntryKind, owner: Guid, data: Vec<u8>) -> usize {
        let index = self.records.len();
        if kind == EntryKind::X509 {
            if let Ok(c) = Certificate::from_der(&data) {
                self.certs.push((index, c));
            }
        }
        self.records.push(DbRecord {
            index,
            list,
            kind,
            owner,
            data,
        });
        index
    }

    /// Every entry, in variable order.
    #[must_use]
    pub fn records(&self) -> &[DbRecord] {
        &self.records
    }

    /// Entries image verification does not use (RSA-2048 keys and
    /// signatures, external management, unknown types), as edk2 ignores
    /// them; X.509 entries that are not valid DER certificates too.
    pub fn ignored(&self) -> impl Iterator<Item = &DbRecord> + '_ {
        self.records.iter().filter(|r| {
            !r.kind.used_for_images()
                || (r.kind == EntryKind::X509 && !self.certs.iter().any(|(i, _)| *i == r.index))
        })
    }

    /// Whether the database has no entries.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The entry at `index`, described.
    #[must_use]
    pub fn entry(&self, index: usize) -> Option<DbEntry> {
        let r = self.records.get(index)?;
        let subject = self
            .certs
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, c)| c.tbs_certificate.subject.to_string());
        Some(DbEntry {
            index,
            list: r.list,
            kind: r.kind,
            owner: r.owner,
            subject,
        })
    }

    fn describe(&self, index: usize) -> DbEntry {
        self.entry(index).unwrap_or(DbEntry {
            index,
            list: 0,
            kind: EntryKind::Unknown(Guid::from_bytes([0; 16])),
            owner: Guid::from_bytes([0; 16]),
            subject: None,
        })
    }

    /// Image-hash algorithms used by this database's entries.
    fn image_hash_algs(&self) -> impl Iterator<Item = ImageHashAlg> + '_ {
        self.records.iter().filter_map(|r| match r.kind {
            EntryKind::ImageHash(a) => Some(a),
            _ => None,
        })
    }

    /// First image-hash entry equal to one of `digests` (algorithms in
    /// `allowed`).
    fn find_image_hash(&self, digests: &[ImageDigest], allowed: &[ImageHashAlg]) -> Option<usize> {
        self.records.iter().position(|r| match r.kind {
            EntryKind::ImageHash(a) if allowed.contains(&a) => digests
                .iter()
                .any(|d| d.alg() == a && d.as_bytes() == r.data.as_slice()),
            _ => false,
        })
    }

    /// First TBS-hash entry that lists `cert_der`: `(index, revocation time)`.
    fn find_tbs_hash(&self, cert_der: &[u8]) -> Option<(usize, [u8; REVOCATION_TIME_LEN])> {
        let tbs = tbs_bytes(cert_der)?;
        let mut cache: Vec<ImageDigest> = Vec::new();
        for r in &self.records {
            let EntryKind::CertTbsHash(alg) = r.kind else {
                continue;
            };
            let n = alg.digest_len();
            let (Some(want), Some(time)) = (
                r.data.get(..n),
                r.data.get(n..n.saturating_add(REVOCATION_TIME_LEN)),
            ) else {
                continue;
            };
            let d = match cache.iter().find(|d| d.alg() == alg) {
                Some(d) => d.clone(),
                None => {
                    let d = alg.digest(tbs);
                    cache.push(d.clone());
                    d
                }
            };
            if d.as_bytes() == want {
                if let Ok(t) = <[u8; REVOCATION_TIME_LEN]>::try_from(time) {
                    return Some((r.index, t));
                }
            }
        }
        None
    }
}

/// A db certificate that anchors a chain but whose TBS hash dbx lists.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RevokedAnchor {
    db: usize,
    dbx: usize,
    time: [u8; REVOCATION_TIME_LEN],
}

/// Find the first certificate of `db` that is, or issued, a chain
/// certificate and whose TBS hash `dbx` does not list:
/// `Ok((db index, chain position))`; `Err(Some(..))` if the only anchors
/// found are revoked (the first: db index, dbx index, revocation time).
pub(crate) fn anchor(
    db: &Database,
    dbx: &Database,
    certs: &[EmbeddedCert],
    chain: &[usize],
) -> Result<(usize, usize), Option<RevokedAnchor>> {
    let mut revoked = None;
    for (di, dbc) in &db.certs {
        let Some(der_bytes) = db.records.get(*di).map(|r| r.data.as_slice()) else {
            continue;
        };
        for (pos, c) in chain.iter().filter_map(|&i| certs.get(i)).enumerate() {
            if c.der == der_bytes || issued_by(&c.der, &c.cert, dbc) {
                match dbx.find_tbs_hash(der_bytes) {
                    None => return Ok((*di, pos)),
                    Some((xi, t)) => {
                        revoked.get_or_insert(RevokedAnchor {
                            db: *di,
                            dbx: xi,
                            time: t,
                        });
                    }
                }
                break;
            }
        }
    }
    Err(revoked)
}

/// The UEFI Secure Boot decision for `image` against `db` and `dbx`, every
/// image-hash entry checked with its own algorithm
/// ([`HashPolicy::EveryAlgorithm`]).
pub fn verify_image(image: &[u8], db: &Database, dbx: &Database) -> Result<Verdict, VerifyError> {
    verify_image_with(image, db, dbx, HashPolicy::EveryAlgorithm)
}

/// The UEFI Secure Boot decision for `image` against `db` and `dbx` under
/// `policy`, naming the entry that decided.
pub fn verify_image_with(
    image: &[u8],
    db: &Database,
    dbx: &Database,
    policy: HashPolicy,
) -> Result<Verdict, VerifyError> {
    let pe = PeImage::parse(image)?;
    let sigs = match pe.cert_table_bytes(image) {
        Some(t) => signatures(t)?,
        None => Vec::new(),
    };
    // Which image-hash entries count, and which hashes to compute (each
    // once: the signatures' algorithms plus the counted entries').
    let mut counted: Vec<ImageHashAlg> = match policy {
        HashPolicy::EveryAlgorithm => ImageHashAlg::ALL.to_vec(),
        HashPolicy::Edk2 if sigs.is_empty() => vec![ImageHashAlg::Sha256],
        HashPolicy::Edk2 => sigs.iter().map(|s| s.image_digest_alg).collect(),
    };
    counted.dedup();
    let mut algs: Vec<ImageHashAlg> = sigs.iter().map(|s| s.image_digest_alg).collect();
    algs.extend(
        db.image_hash_algs()
            .chain(dbx.image_hash_algs())
            .filter(|a| counted.contains(a)),
    );
    // SHA-256 always: an image whose hash cannot be computed is rejected
    // even when nothing would use the hash (edk2 hashes every image).
    algs.push(ImageHashAlg::Sha256);
    let mut unique: Vec<ImageHashAlg> = Vec::with_capacity(algs.len());
    for a in algs {
        if !unique.contains(&a) {
            unique.push(a);
        }
    }
    let digests = image_hashes_parsed(image, &pe, &unique)?;

    if let Some(i) = dbx.find_image_hash(&digests, &counted) {
        return Ok(Verdict::Denied(Denial::HashInDbx {
            entry: dbx.describe(i),
        }));
    }
    let results: Vec<_> = sigs
        .iter()
        .map(
            |s| match digests.iter().find(|d| d.alg() == s.image_digest_alg) {
                Some(d) => check_signature_with_digest(s, d),
                None => check_signature(image, &pe, s),
            },
        )
        .collect();
    for (si, (s, r)) in sigs.iter().zip(&results).enumerate() {
        if let Ok(v) = r {
            if let Ok((i, chain_position)) =
                anchor(dbx, &Database::default(), &s.certificates, &v.chain)
            {
                return Ok(Verdict::Denied(Denial::CertInDbx {
                    entry: dbx.describe(i),
                    signature: si,
                    chain_position,
                }));
            }
        }
        // edk2 IsForbiddenByDbx: the TBS hash of every certificate the
        // SignedData carries, whether or not the signature verified.
        for (ci, c) in s.certificates.iter().enumerate() {
            if let Some((i, revocation_time)) = dbx.find_tbs_hash(&c.der) {
                return Ok(Verdict::Denied(Denial::CertHashInDbx {
                    entry: dbx.describe(i),
                    signature: si,
                    cert: RevokedCert::Embedded {
                        index: ci,
                        subject: c.cert.tbs_certificate.subject.to_string(),
                    },
                    revocation_time,
                }));
            }
        }
    }
    let mut revoked_anchor = None;
    for (si, (s, r)) in sigs.iter().zip(&results).enumerate() {
        if let Ok(v) = r {
            match anchor(db, dbx, &s.certificates, &v.chain) {
                Ok((i, chain_position)) => {
                    return Ok(Verdict::Allowed {
                        by: db.describe(i),
                        signature: Some(si),
                        chain_position: Some(chain_position),
                    });
                }
                Err(Some(found)) => {
                    revoked_anchor.get_or_insert((si, found));
                }
                Err(None) => {}
            }
        }
    }
    if let Some(i) = db.find_image_hash(&digests, &counted) {
        return Ok(Verdict::Allowed {
            by: db.describe(i),
            signature: None,
            chain_position: None,
        });
    }
    if let Some((signature, r)) = revoked_anchor {
        return Ok(Verdict::Denied(Denial::CertHashInDbx {
            entry: dbx.describe(r.dbx),
            signature,
            cert: RevokedCert::DbAnchor(db.describe(r.db)),
            revocation_time: r.time,
        }));
    }
    Ok(Verdict::Denied(Denial::NotInDb {
        signatures: results,
    }))
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
pub(crate) fn verify_raw(
    spki: &SubjectPublicKeyInfoOwned,
    alg: DigestAlg,
    msg: &[u8],
    sig: &[u8],
) -> bool {
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
    check_signature_with_digest(sig, &computed)
}

/// [`check_signature`] with the image hash already computed (with the
/// signature's algorithm, `sig.image_digest_alg`).
pub fn check_signature_with_digest(
    sig: &AuthenticodeSignature,
    computed: &ImageDigest,
) -> Result<VerifiedSignature, SignatureError> {
    if computed.alg() != sig.image_digest_alg || computed.as_bytes() != sig.image_digest.as_slice()
    {
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
    let leaf =
        signer_cert_index(&sig.certificates, signer).ok_or(SignatureError::SignerCertNotFound)?;
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
    Ok(VerifiedSignature {
        chain: chain_from(&sig.certificates, leaf),
    })
}

/// The certificate a SignerInfo names (issuer and serial number).
pub(crate) fn signer_cert_index(certs: &[EmbeddedCert], signer: &Signer) -> Option<usize> {
    certs.iter().position(|c| {
        c.cert.tbs_certificate.serial_number.as_bytes() == signer.serial.as_slice()
            && c.cert
                .tbs_certificate
                .issuer
                .to_der()
                .is_ok_and(|d| d == signer.issuer_der)
    })
}

/// The chain from `leaf` through the embedded certificates, each issued by
/// the next (indexes, signer first; each certificate used once).
pub(crate) fn chain_from(certs: &[EmbeddedCert], leaf: usize) -> Vec<usize> {
    let mut chain = vec![leaf];
    while chain.len() < certs.len() {
        let Some(cur) = chain.last().and_then(|&i| certs.get(i)) else {
            break;
        };
        let next = certs
            .iter()
            .enumerate()
            .position(|(i, c)| !chain.contains(&i) && issued_by(&cur.der, &cur.cert, &c.cert));
        match next {
            Some(n) => chain.push(n),
            None => break,
        }
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_kinds_from_every_signature_type() {
        for t in [
            SignatureType::Sha1,
            SignatureType::Sha224,
            SignatureType::Sha256,
            SignatureType::Sha384,
            SignatureType::Sha512,
            SignatureType::X509,
            SignatureType::X509Sha256,
            SignatureType::X509Sha384,
            SignatureType::X509Sha512,
        ] {
            assert!(
                EntryKind::from_type_guid(t.guid()).used_for_images(),
                "{t:?}"
            );
        }
        for g in [
            SignatureType::Rsa2048.guid(),
            SignatureType::ExternalManagement.guid(),
            EFI_CERT_RSA2048_SHA256_GUID,
            EFI_CERT_RSA2048_SHA1_GUID,
            Guid::GLOBAL_VARIABLE,
        ] {
            assert!(!EntryKind::from_type_guid(g).used_for_images(), "{g}");
        }
        assert_eq!(
            EntryKind::from_type_guid(SignatureType::X509Sha384.guid()),
            EntryKind::CertTbsHash(ImageHashAlg::Sha384)
        );
        assert_eq!(
            EntryKind::from_type_guid(EFI_CERT_RSA2048_SHA256_GUID),
            EntryKind::Rsa2048Sha256
        );
    }

    #[test]
    fn records_keep_list_and_index_and_entry_displays() {
        let mut lists = SignatureDb::default();
        lists
            .add_hash(SignatureType::Sha256, Guid::GLOBAL_VARIABLE, vec![1; 32])
            .unwrap();
        lists
            .add_hash(SignatureType::Sha256, Guid::SHIM_LOCK, vec![2; 32])
            .unwrap();
        lists
            .add_hash(SignatureType::Rsa2048, Guid::GLOBAL_VARIABLE, vec![3; 256])
            .unwrap();
        let db = Database::from_signature_db(&lists);
        let got: Vec<_> = db.records().iter().map(|r| (r.index, r.list)).collect();
        assert_eq!(got, [(0, 0), (1, 0), (2, 1)]);
        assert_eq!(db.ignored().map(|r| r.index).collect::<Vec<_>>(), [2]);
        let e = db.entry(1).unwrap();
        assert_eq!(e.owner, Guid::SHIM_LOCK);
        assert_eq!(
            e.to_string(),
            format!("entry #1 (SHA-256 image hash, owner {})", Guid::SHIM_LOCK)
        );
        assert!(db.entry(3).is_none());
    }

    #[test]
    fn short_tbs_hash_entries_never_match() {
        let mut dbx = Database::default();
        dbx.push(
            EntryKind::CertTbsHash(ImageHashAlg::Sha256),
            Guid::GLOBAL_VARIABLE,
            vec![0; 10],
        );
        // Any DER SEQUENCE with a TBS-like first element.
        let cert = [0x30, 0x05, 0x30, 0x03, 0x02, 0x01, 0x01];
        assert!(dbx.find_tbs_hash(&cert).is_none());
    }
}
