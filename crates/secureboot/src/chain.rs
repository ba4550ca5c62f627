//! Would a boot chain start under Secure Boot? The firmware checks the
//! first stage against db/dbx; when that stage is shim, shim checks the
//! stages it loads (grub, and through its protocol the kernel grub loads)
//! against the firmware's db/dbx plus the certificate and revocations it
//! carries in its `.vendor_cert` section (shim's `cert_table`: four
//! little-endian u32 — authorized size, deauthorized size, authorized
//! offset, deauthorized offset — offsets from the section start; the
//! authorized part is one DER certificate or a signature database, the
//! deauthorized part a signature database).
//!
//! Not evaluated here: MokList/MokListX (a fresh VM's NVRAM has none),
//! and shim's SBAT generation checks (`.sbat` against `SbatLevel`); a
//! caller says so next to the verdict.

use crate::pe::PeImage;
use crate::siglist::SignatureDb;
use crate::verify::{verify_image, Database, Denial, EntryKind, Verdict};
use trustlaunch_eventlog::Guid;

/// Largest `.vendor_cert` section read.
pub const MAX_VENDOR_CERT_BYTES: usize = 1 << 20;

/// What a shim carries.
#[derive(Debug, Clone, Default)]
pub struct VendorCerts {
    /// Certificates (and hashes) shim allows besides db.
    pub authorized: Database,
    /// Revocations shim applies besides dbx.
    pub deauthorized: Database,
}

/// Why a `.vendor_cert` section was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShimError {
    /// Larger than [`MAX_VENDOR_CERT_BYTES`].
    #[error(".vendor_cert: {0} bytes, more than {MAX_VENDOR_CERT_BYTES}")]
    TooLarge(usize),
    /// The header or an extent lies outside the section.
    #[error(
        ".vendor_cert: {what} (offset {offset}, size {size}) lies outside the {len}-byte section"
    )]
    OutOfBounds {
        /// `header`, `authorized` or `deauthorized`.
        what: &'static str,
        /// Offset.
        offset: usize,
        /// Size.
        size: usize,
        /// Section length.
        len: usize,
    },
    /// The deauthorized (or a database-form authorized) part is not a
    /// signature database.
    #[error(".vendor_cert: {what} is not a signature database: {message}")]
    BadDatabase {
        /// Which part.
        what: &'static str,
        /// The parser's error.
        message: String,
    },
}

/// The owner GUID given to a vendor certificate (shim's own is
/// SHIM_LOCK_GUID 605dab50-e046-4300-abb6-3dd810dd8b23).
pub const SHIM_LOCK_GUID: Guid = Guid::from_fields(
    0x605d_ab50,
    0xe046,
    0x4300,
    [0xab, 0xb6, 0x3d, 0xd8, 0x10, 0xdd, 0x8b, 0x23],
);

fn u32_at(b: &[u8], at: usize) -> Option<usize> {
    let bytes: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(bytes)).ok()
}

impl VendorCerts {
    /// The vendor certificates of a shim image, `None` when it has no
    /// `.vendor_cert` section (it is not shim).
    pub fn from_image(image: &[u8]) -> Result<Option<Self>, ShimError> {
        let Ok(pe) = PeImage::parse(image) else {
            return Ok(None);
        };
        match pe.section_data(image, ".vendor_cert") {
            None => Ok(None),
            Some(s) => Self::parse(s).map(Some),
        }
    }

    /// Parses a `.vendor_cert` section.
    pub fn parse(section: &[u8]) -> Result<Self, ShimError> {
        if section.len() > MAX_VENDOR_CERT_BYTES {
            return Err(ShimError::TooLarge(section.len()));
        }
        let header = |what| ShimError::OutOfBounds {
            what,
            offset: 0,
            size: 16,
            len: section.len(),
        };
        let auth_size = u32_at(section, 0).ok_or_else(|| header("header"))?;
        let deauth_size = u32_at(section, 4).ok_or_else(|| header("header"))?;
        let auth_off = u32_at(section, 8).ok_or_else(|| header("header"))?;
        let deauth_off = u32_at(section, 12).ok_or_else(|| header("header"))?;
        let extent = |what, offset: usize, size: usize| {
            offset
                .checked_add(size)
                .and_then(|end| section.get(offset..end))
                .ok_or(ShimError::OutOfBounds {
                    what,
                    offset,
                    size,
                    len: section.len(),
                })
        };
        let auth = extent("authorized", auth_off, auth_size)?;
        let deauth = extent("deauthorized", deauth_off, deauth_size)?;
        let mut authorized = Database::default();
        // A DER certificate starts with a SEQUENCE; anything else is a
        // signature database (shim's VENDOR_DB_FILE).
        if auth.first() == Some(&0x30) {
            authorized.push(EntryKind::X509, SHIM_LOCK_GUID, auth.to_vec());
        } else if !auth.is_empty() {
            let db = SignatureDb::parse(auth).map_err(|e| ShimError::BadDatabase {
                what: "authorized",
                message: e.to_string(),
            })?;
            authorized = Database::from_signature_db(&db);
        }
        let deauthorized = if deauth.is_empty() {
            Database::default()
        } else {
            let db = SignatureDb::parse(deauth).map_err(|e| ShimError::BadDatabase {
                what: "deauthorized",
                message: e.to_string(),
            })?;
            Database::from_signature_db(&db)
        };
        Ok(Self {
            authorized,
            deauthorized,
        })
    }
}

/// One stage of a boot chain.
#[derive(Debug, Clone, Copy)]
pub struct Stage<'a> {
    /// Where it is (`EFI/BOOT/BOOTX64.EFI`, `/boot/vmlinuz-6.1.0-28-amd64`).
    pub path: &'a str,
    /// Its bytes.
    pub data: &'a [u8],
}

/// Who checks a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checker {
    /// The firmware (db/dbx).
    Firmware,
    /// shim (db/dbx plus its vendor certificate and revocations).
    Shim,
}

impl core::fmt::Display for Checker {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Checker::Firmware => "the firmware",
            Checker::Shim => "shim",
        })
    }
}

/// Why a stage would be refused, in the words a user acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefusalKind {
    /// It carries no signature and its hash is in no db.
    Unsigned,
    /// It is signed, but by no certificate the checker trusts.
    SignerNotInDb,
    /// Its Authenticode hash is revoked.
    HashInDbx,
    /// A certificate of its signature is revoked.
    CertificateInDbx,
    /// It is not a PE image the checker can read.
    Malformed,
}

impl RefusalKind {
    /// Short words.
    pub fn describe(self) -> &'static str {
        match self {
            RefusalKind::Unsigned => "unsigned",
            RefusalKind::SignerNotInDb => "signer not in db",
            RefusalKind::HashInDbx => "hash in dbx",
            RefusalKind::CertificateInDbx => "certificate in dbx",
            RefusalKind::Malformed => "malformed image",
        }
    }
}

/// The decision for one stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageVerdict {
    /// [`Stage::path`].
    pub path: String,
    /// Who checked it.
    pub checker: Checker,
    /// `Ok(what allowed it)` or `Err((why, detail))`.
    pub outcome: Result<String, (RefusalKind, String)>,
}

/// Names an entry of a merged database: the firmware's part first, then
/// shim's.
fn name_entry(
    e: &crate::verify::DbEntry,
    firmware_len: usize,
    firmware: &str,
    vendor: &str,
) -> String {
    if e.index < firmware_len {
        format!("{firmware} {e}")
    } else {
        let subject = e
            .subject
            .as_deref()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        format!("shim's {vendor}{subject}")
    }
}

fn merged(a: &Database, b: &Database) -> Database {
    let mut out = a.clone();
    for r in b.records() {
        out.push(r.kind, r.owner, r.data.clone());
    }
    out
}

/// Evaluates `stages` in load order: the first by the firmware, the rest
/// by shim when the first is shim, else by the firmware. Stops at the
/// first refusal (nothing after it would load).
pub fn evaluate(stages: &[Stage<'_>], db: &Database, dbx: &Database) -> Vec<StageVerdict> {
    let mut out = Vec::new();
    let mut shim: Option<(Database, Database)> = None;
    for (i, stage) in stages.iter().enumerate() {
        let (checker, sdb, sdbx) = match &shim {
            Some((d, x)) => (Checker::Shim, d, x),
            None => (Checker::Firmware, db, dbx),
        };
        let outcome = match verify_image(stage.data, sdb, sdbx) {
            Err(e) => Err((RefusalKind::Malformed, e.to_string())),
            Ok(Verdict::Allowed { by, .. }) => Ok(name_entry(
                &by,
                db.records().len(),
                "db",
                "vendor certificate",
            )),
            Ok(Verdict::Denied(d)) => Err(refusal(&d, dbx.records().len())),
        };
        let refused = outcome.is_err();
        out.push(StageVerdict {
            path: stage.path.to_owned(),
            checker,
            outcome,
        });
        if refused {
            break;
        }
        if i == 0 {
            match VendorCerts::from_image(stage.data) {
                Ok(Some(v)) => {
                    shim = Some((merged(db, &v.authorized), merged(dbx, &v.deauthorized)));
                }
                Ok(None) => {}
                Err(e) => {
                    // A shim whose certificate table cannot be read: shim
                    // would trust nothing of its own; say so on the next
                    // stage by checking it against the firmware's alone.
                    if let Some(last) = out.last_mut() {
                        last.outcome = last.outcome.clone().map(|by| format!("{by}; its {e}"));
                    }
                }
            }
        }
    }
    out
}

fn refusal(d: &Denial, dbx_len: usize) -> (RefusalKind, String) {
    let dbx_name = |e: &crate::verify::DbEntry| name_entry(e, dbx_len, "dbx", "revocation list");
    match d {
        Denial::HashInDbx { entry } => (
            RefusalKind::HashInDbx,
            format!("its Authenticode hash is revoked by {}", dbx_name(entry)),
        ),
        Denial::CertInDbx { entry, .. } => (
            RefusalKind::CertificateInDbx,
            format!(
                "a certificate of its signature is revoked by {}",
                dbx_name(entry)
            ),
        ),
        Denial::CertHashInDbx { entry, cert, .. } => (
            RefusalKind::CertificateInDbx,
            match cert {
                crate::verify::RevokedCert::Embedded { subject, .. } => {
                    format!("certificate {subject} is revoked by {}", dbx_name(entry))
                }
                crate::verify::RevokedCert::DbAnchor(db) => {
                    format!("its anchor {db} is revoked by {}", dbx_name(entry))
                }
            },
        ),
        Denial::NotInDb { signatures } if signatures.is_empty() => (
            RefusalKind::Unsigned,
            "it has no signature and its hash is in no db".into(),
        ),
        Denial::NotInDb { .. } => (RefusalKind::SignerNotInDb, d.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn table(auth: &[u8], deauth: &[u8]) -> Vec<u8> {
        let mut s = Vec::new();
        let a_off = 16u32;
        let d_off = a_off + auth.len() as u32;
        for v in [auth.len() as u32, deauth.len() as u32, a_off, d_off] {
            s.extend_from_slice(&v.to_le_bytes());
        }
        s.extend_from_slice(auth);
        s.extend_from_slice(deauth);
        s
    }

    #[test]
    fn vendor_cert_extents_are_checked() {
        // A certificate-shaped authorized part and no revocations.
        let v = VendorCerts::parse(&table(&[0x30, 0x03, 1, 2, 3], &[])).unwrap();
        assert_eq!(v.authorized.records().len(), 1);
        assert!(v.deauthorized.is_empty());
        // An extent past the end is named.
        let mut bad = table(&[0x30, 0x03, 1, 2, 3], &[]);
        bad[0] = 200;
        assert!(matches!(
            VendorCerts::parse(&bad),
            Err(ShimError::OutOfBounds {
                what: "authorized",
                ..
            })
        ));
        // Offsets that overflow are refused, not wrapped.
        let mut wrap = table(&[], &[]);
        wrap[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        wrap[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(VendorCerts::parse(&wrap).is_err());
        // A revocation part that is not a signature list.
        assert!(matches!(
            VendorCerts::parse(&table(&[], &[1, 2, 3])),
            Err(ShimError::BadDatabase {
                what: "deauthorized",
                ..
            })
        ));
        assert!(matches!(
            VendorCerts::parse(&[1, 2]),
            Err(ShimError::OutOfBounds { what: "header", .. })
        ));
    }

    #[test]
    fn an_unsigned_non_pe_first_stage_is_refused_as_malformed() {
        let v = evaluate(
            &[Stage {
                path: "EFI/BOOT/BOOTX64.EFI",
                data: b"not a PE",
            }],
            &Database::default(),
            &Database::default(),
        );
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].checker, Checker::Firmware);
        assert!(matches!(v[0].outcome, Err((RefusalKind::Malformed, _))));
    }

    proptest! {
        #[test]
        fn vendor_cert_parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = VendorCerts::parse(&bytes);
        }
    }
}
