//! Authenticode signing of PE/COFF images, as `sbsign` does it (Microsoft
//! "Windows Authenticode Portable Executable Signature Format"; UEFI 2.10
//! §32.2.4 WIN_CERTIFICATE), and removing signatures again.
//!
//! Signing: an image without a certificate table is first padded with
//! zeros to a multiple of 8 bytes (sbsign does the same, so the table
//! starts aligned; the padding is part of the hashed tail). The SHA-256
//! Authenticode hash ([`crate::authenticode`]) goes into an
//! `SpcIndirectDataContent` with `SpcPeImageData` exactly as sbsign writes
//! it (empty flags, file link `<<<Obsolete>>>`); the PKCS#7 SignedData
//! ([`crate::cms_build`], version 1) signs the signed attributes
//! contentType (SPC_INDIRECT_DATA), messageDigest (SHA-256 of the
//! `SpcIndirectDataContent` value octets) and an empty SpcSpOpusInfo. The
//! ContentInfo goes into a WIN_CERTIFICATE (revision 0x0200, type
//! PKCS_SIGNED_DATA, dwLength unpadded, entry padded to 8 bytes) appended
//! after any existing entries; the security directory and the optional
//! header CheckSum are updated.
//!
//! Differences from sbsign: sbsign (OpenSSL `PKCS7_sign_add_signer`) also
//! adds signingTime and SMIMECapabilities and no SpcSpOpusInfo; there is
//! no clock here, and firmware reads none of them.

use der::asn1::SetOfVec;
use der::{Any, Decode, Tag};
use x509_cert::attr::Attribute;

use crate::authenticode::{image_sha256_parsed, HashError};
use crate::cms_build::{
    build_signed_data, content_info_der, CmsBuildError, Content, SignedAttrs, Signer,
};
use crate::keys::SigningKey;
use crate::pe::{PeError, PeImage};
use crate::pkcs7::{
    win_certificates, Pkcs7Error, OID_SPC_INDIRECT_DATA, WIN_CERT_REVISION_2_0,
    WIN_CERT_TYPE_PKCS_SIGNED_DATA,
};

/// SPC_SP_OPUS_INFO_OBJID.
pub const OID_SPC_SP_OPUS_INFO: const_oid::ObjectIdentifier =
    const_oid::ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.12");

/// SpcAttributeTypeAndOptionalValue { SPC_PE_IMAGE_DATAOBJ,
/// SpcPeImageData { flags BIT STRING (empty), file [0] SpcLink file [2]
/// SpcString unicode [0] "<<<Obsolete>>>" } }, as sbsign encodes it.
const SPC_PE_IMAGE_DATA: [u8; 53] = [
    0x30, 0x33, 0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x01, 0x0f, 0x30, 0x25,
    0x03, 0x01, 0x00, 0xa0, 0x20, 0xa2, 0x1e, 0x80, 0x1c, 0x00, 0x3c, 0x00, 0x3c, 0x00, 0x3c, 0x00,
    0x4f, 0x00, 0x62, 0x00, 0x73, 0x00, 0x6f, 0x00, 0x6c, 0x00, 0x65, 0x00, 0x74, 0x00, 0x65, 0x00,
    0x3e, 0x00, 0x3e, 0x00, 0x3e,
];
/// DigestInfo header up to the SHA-256 digest: SEQUENCE { AlgorithmIdentifier
/// { sha256, NULL }, OCTET STRING (32) }.
const SHA256_DIGEST_INFO_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
/// WIN_CERTIFICATE header: dwLength, wRevision, wCertificateType.
const WIN_CERT_HEADER_LEN: usize = 8;

/// Why an image could not be signed or a signature removed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The PE headers are malformed.
    #[error("PE: {0}")]
    Pe(#[from] PeError),
    /// The Authenticode hash could not be computed.
    #[error("hash: {0}")]
    Hash(#[from] HashError),
    /// The optional header has no certificate-table directory entry
    /// (NumberOfRvaAndSizes <= 4).
    #[error("image has no certificate table directory entry")]
    NoCertificateDirectory,
    /// The certificate table is not at the end of the file (data follows
    /// it), so appending would move or hash it.
    #[error("certificate table {offset:#x}+{size:#x} does not end the {len:#x}-byte file")]
    TableNotAtEnd {
        /// Table file offset.
        offset: u32,
        /// Table size.
        size: u32,
        /// File length.
        len: usize,
    },
    /// The signed image would exceed 4 GiB (directory fields are u32).
    #[error("image too large for a u32 certificate table offset/size")]
    TooLarge,
    /// The existing certificate table is malformed.
    #[error("certificate table: {0}")]
    Table(#[from] Pkcs7Error),
    /// No signature at that index.
    #[error("no signature {index}: the table has {count}")]
    NoSuchSignature {
        /// Requested index.
        index: usize,
        /// Entries in the table.
        count: usize,
    },
    /// Building the SignedData failed.
    #[error("PKCS#7: {0}")]
    Cms(#[from] CmsBuildError),
}

/// The `SpcIndirectDataContent` SEQUENCE for a SHA-256 image digest.
#[must_use]
pub fn spc_indirect_data(image_sha256: &[u8; 32]) -> Vec<u8> {
    let mut v = Vec::with_capacity(106);
    v.extend_from_slice(&[0x30, 0x68]);
    v.extend_from_slice(&SPC_PE_IMAGE_DATA);
    v.extend_from_slice(&SHA256_DIGEST_INFO_PREFIX);
    v.extend_from_slice(image_sha256);
    v
}

/// The image as it will be hashed and signed: unchanged if it has a
/// certificate table (which must end the file), else zero-padded to a
/// multiple of 8 bytes.
fn prepared(image: &[u8]) -> Result<(Vec<u8>, PeImage), SignError> {
    let pe = PeImage::parse(image)?;
    if pe.cert_dir_offset.is_none() {
        return Err(SignError::NoCertificateDirectory);
    }
    let (offset, size) = pe.cert_table;
    if size != 0 {
        let end = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(usize::try_from(size).ok()?));
        if end != Some(image.len()) {
            return Err(SignError::TableNotAtEnd {
                offset,
                size,
                len: image.len(),
            });
        }
        return Ok((image.to_vec(), pe));
    }
    let mut out = image.to_vec();
    out.resize(align8(image.len()).ok_or(SignError::TooLarge)?, 0);
    let pe = PeImage::parse(&out)?;
    Ok((out, pe))
}

fn align8(n: usize) -> Option<usize> {
    n.checked_add(7).map(|v| v & !7)
}

/// The Authenticode signature (DER ContentInfo) `sign_image` would append
/// to `image`, for detached use (`sbsign --detached`). The image must be
/// 8-byte aligned or already carry a certificate table for the signature
/// to match it once attached.
pub fn authenticode_signature(
    image: &[u8],
    key: &SigningKey,
    cert_der: &[u8],
    extra_certs: &[Vec<u8>],
) -> Result<Vec<u8>, SignError> {
    let (padded, pe) = prepared(image)?;
    let hash = image_sha256_parsed(&padded, &pe)?;
    let idc = spc_indirect_data(&hash);
    let embedded = Any::from_der(&idc).map_err(CmsBuildError::from)?;
    let opus = Attribute {
        oid: OID_SPC_SP_OPUS_INFO,
        values: SetOfVec::try_from(vec![
            Any::new(Tag::Sequence, Vec::<u8>::new()).map_err(CmsBuildError::from)?
        ])
        .map_err(CmsBuildError::from)?,
    };
    let sd = build_signed_data(
        &Signer {
            key,
            cert_der,
            extra_certs,
        },
        &Content {
            content_type: OID_SPC_INDIRECT_DATA,
            embedded: Some(embedded),
            // messageDigest covers the SEQUENCE's value octets.
            digested: idc.get(2..).unwrap_or(&[]),
        },
        &SignedAttrs::Standard(vec![opus]),
    )?;
    Ok(content_info_der(&sd)?)
}

/// Signs `image` with `key` and its certificate `cert_der` (plus
/// `extra_certs`, e.g. the issuing CA, carried in the SignedData), keeping
/// any existing signatures: the new WIN_CERTIFICATE is appended.
pub fn sign_image(
    image: &[u8],
    key: &SigningKey,
    cert_der: &[u8],
    extra_certs: &[Vec<u8>],
) -> Result<Vec<u8>, SignError> {
    let sig = authenticode_signature(image, key, cert_der, extra_certs)?;
    append_signature(image, &sig)
}

/// Appends a DER PKCS#7 ContentInfo as a new WIN_CERTIFICATE entry (what
/// `sbattach --attach` does); an image without a table is padded to 8
/// bytes first.
pub fn append_signature(image: &[u8], pkcs7_der: &[u8]) -> Result<Vec<u8>, SignError> {
    let (mut out, pe) = prepared(image)?;
    let offset = if pe.cert_table.1 == 0 {
        u32::try_from(out.len()).map_err(|_| SignError::TooLarge)?
    } else {
        pe.cert_table.0
    };
    // An existing table whose size is not a multiple of 8 is padded first.
    let start = align8(out.len()).ok_or(SignError::TooLarge)?;
    out.resize(start, 0);
    let len = pkcs7_der
        .len()
        .checked_add(WIN_CERT_HEADER_LEN)
        .ok_or(SignError::TooLarge)?;
    out.extend_from_slice(
        &u32::try_from(len)
            .map_err(|_| SignError::TooLarge)?
            .to_le_bytes(),
    );
    out.extend_from_slice(&WIN_CERT_REVISION_2_0.to_le_bytes());
    out.extend_from_slice(&WIN_CERT_TYPE_PKCS_SIGNED_DATA.to_le_bytes());
    out.extend_from_slice(pkcs7_der);
    out.resize(align8(out.len()).ok_or(SignError::TooLarge)?, 0);
    let table_size = out
        .len()
        .checked_sub(usize::try_from(offset).map_err(|_| SignError::TooLarge)?)
        .ok_or(SignError::TooLarge)?;
    finish(out, &pe, offset, table_size)
}

/// Writes the security directory entry and the checksum.
fn finish(
    mut out: Vec<u8>,
    pe: &PeImage,
    offset: u32,
    table_size: usize,
) -> Result<Vec<u8>, SignError> {
    let dir = pe
        .cert_dir_offset
        .ok_or(SignError::NoCertificateDirectory)?;
    let size = u32::try_from(table_size).map_err(|_| SignError::TooLarge)?;
    let (offset, size) = if size == 0 { (0, 0) } else { (offset, size) };
    put_u32(&mut out, dir, offset)?;
    put_u32(&mut out, dir.saturating_add(4), size)?;
    let checksum = pe_checksum(&out, pe.checksum_offset);
    put_u32(&mut out, pe.checksum_offset, checksum)?;
    Ok(out)
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) -> Result<(), SignError> {
    at.checked_add(4)
        .and_then(|end| buf.get_mut(at..end))
        .ok_or(SignError::Pe(PeError::Truncated { offset: at, len: 4 }))?
        .copy_from_slice(&v.to_le_bytes());
    Ok(())
}

/// The PE optional-header CheckSum (`imagehlp!CheckSumMappedFile`, as
/// sbsign computes it): the one's-complement-style 16-bit sum of the file
/// as little-endian words with the CheckSum field taken as zero, carries
/// folded, plus the file length.
#[must_use]
pub fn pe_checksum(image: &[u8], checksum_offset: usize) -> u32 {
    let mut sum: u32 = 0;
    for (i, pair) in image.chunks(2).enumerate() {
        let at = i.saturating_mul(2);
        if at >= checksum_offset && at < checksum_offset.saturating_add(4) {
            continue;
        }
        let word = match *pair {
            [lo, hi] => u16::from_le_bytes([lo, hi]),
            [lo] => u16::from(lo),
            _ => 0,
        };
        sum = sum.wrapping_add(u32::from(word));
        sum = (sum & 0xffff).wrapping_add(sum >> 16);
    }
    sum = (sum & 0xffff).wrapping_add(sum >> 16);
    // A PE file is below 4 GiB (its offsets are u32).
    sum.wrapping_add(u32::try_from(image.len()).unwrap_or(u32::MAX))
}

/// Removes the signature at `index` (certificate-table order) and keeps
/// the others; removing the last one drops the table and zeroes the
/// directory entry (padding added when signing stays).
pub fn remove_signature(image: &[u8], index: usize) -> Result<Vec<u8>, SignError> {
    rewrite_table(image, |count| {
        (index < count)
            .then_some(index)
            .ok_or(SignError::NoSuchSignature { index, count })
    })
}

/// Removes every signature: the table is cut off and the directory entry
/// zeroed, leaving the image as it was hashed.
pub fn remove_all_signatures(image: &[u8]) -> Result<Vec<u8>, SignError> {
    let pe = PeImage::parse(image)?;
    if pe.cert_table.1 == 0 {
        return Ok(image.to_vec());
    }
    prepared(image)?;
    let offset = usize::try_from(pe.cert_table.0).map_err(|_| SignError::TooLarge)?;
    finish(image.get(..offset).unwrap_or(image).to_vec(), &pe, 0, 0)
}

fn rewrite_table(
    image: &[u8],
    pick: impl FnOnce(usize) -> Result<usize, SignError>,
) -> Result<Vec<u8>, SignError> {
    let (_, pe) = prepared(image)?;
    let table = pe.cert_table_bytes(image).unwrap_or(&[]);
    let entries = win_certificates(table)?;
    let drop = pick(entries.len())?;
    let offset = usize::try_from(pe.cert_table.0).map_err(|_| SignError::TooLarge)?;
    let mut out = image.get(..offset).unwrap_or(image).to_vec();
    for (i, e) in entries.iter().enumerate() {
        if i == drop {
            continue;
        }
        let len = e
            .data
            .len()
            .checked_add(WIN_CERT_HEADER_LEN)
            .and_then(|l| u32::try_from(l).ok())
            .ok_or(SignError::TooLarge)?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&e.revision.to_le_bytes());
        out.extend_from_slice(&e.cert_type.to_le_bytes());
        out.extend_from_slice(e.data);
        out.resize(align8(out.len()).ok_or(SignError::TooLarge)?, 0);
    }
    let table_size = out.len().saturating_sub(offset);
    finish(out, &pe, pe.cert_table.0, table_size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authenticode::{image_hash, ImageDigest, ImageHashAlg};
    use crate::keys::tests::p256_pair;
    use crate::keys::{CertRole, KeyPair};
    use crate::pe::tests::minimal_pe;
    use crate::verify::{verify_image, Database, Verdict};

    fn pair() -> KeyPair {
        p256_pair("sign test", CertRole::CodeSigning)
    }

    fn unsigned_pe(tail: usize) -> Vec<u8> {
        let (mut img, _) = minimal_pe(b"code", 0);
        img.extend(std::iter::repeat_n(0x5a, tail));
        img
    }

    fn sha256(img: &[u8]) -> Vec<u8> {
        match image_hash(img, ImageHashAlg::Sha256).unwrap() {
            ImageDigest::Sha256(d) => d.to_vec(),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn signs_twice_verifies_and_removes() {
        let (a, b) = (pair(), pair());
        let img = unsigned_pe(3); // unaligned: padded to 8 before the table
        let once = sign_image(&img, &a.key, &a.cert_der, &[]).unwrap();
        assert_eq!(once.len() % 8, 0);
        let twice = sign_image(&once, &b.key, &b.cert_der, &[]).unwrap();
        assert_eq!(sha256(&once), sha256(&twice));
        let db = Database::from_certs(
            trustlaunch_eventlog::Guid::GLOBAL_VARIABLE,
            [b.cert_der.clone(), a.cert_der.clone()],
        );
        let by = |img: &[u8]| match verify_image(img, &db, &Database::default()).unwrap() {
            Verdict::Allowed { by, signature, .. } => (by.index, signature),
            v => panic!("{v:?}"),
        };
        assert_eq!(by(&twice), (1, Some(0)));
        let only_b = remove_signature(&twice, 0).unwrap();
        assert_eq!(by(&only_b), (0, Some(0)));
        let bare = remove_all_signatures(&twice).unwrap();
        let mut padded = img.clone();
        padded.resize(img.len().div_ceil(8) * 8, 0);
        assert_eq!(sha256(&bare), sha256(&padded));
        assert_eq!(remove_signature(&only_b, 0).unwrap(), bare);
        assert_eq!(
            remove_signature(&only_b, 1).unwrap_err(),
            SignError::NoSuchSignature { index: 1, count: 1 }
        );
        let pe = PeImage::parse(&twice).unwrap();
        assert_eq!(
            pe_checksum(&twice, pe.checksum_offset).to_le_bytes(),
            twice[pe.checksum_offset..pe.checksum_offset + 4]
        );
    }

    #[test]
    fn malformed_images_are_typed_errors() {
        let p = pair();
        let mut img = unsigned_pe(0);
        assert!(matches!(
            sign_image(&img[..100], &p.key, &p.cert_der, &[]),
            Err(SignError::Pe(_))
        ));
        // A table that does not end the file.
        let signed = sign_image(&img, &p.key, &p.cert_der, &[]).unwrap();
        let mut trailing = signed.clone();
        trailing.extend_from_slice(&[1; 8]);
        assert!(matches!(
            sign_image(&trailing, &p.key, &p.cert_der, &[]),
            Err(SignError::TableNotAtEnd { .. })
        ));
        assert!(matches!(
            remove_signature(&trailing, 0),
            Err(SignError::TableNotAtEnd { .. })
        ));
        // A corrupt WIN_CERTIFICATE length.
        let pe = PeImage::parse(&signed).unwrap();
        let mut bad = signed.clone();
        let at = pe.cert_table.0 as usize;
        bad[at..at + 4].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        assert!(matches!(
            remove_signature(&bad, 0),
            Err(SignError::Table(Pkcs7Error::BadEntry { .. }))
        ));
        // No certificate directory entry.
        let opt = 0x98;
        img[opt + 108..opt + 112].copy_from_slice(&4u32.to_le_bytes());
        assert_eq!(
            sign_image(&img, &p.key, &p.cert_der, &[]).unwrap_err(),
            SignError::NoCertificateDirectory
        );
    }

    #[test]
    fn checksum_of_odd_lengths_and_empty() {
        assert_eq!(pe_checksum(&[], 0), 0);
        assert_eq!(pe_checksum(&[1, 0, 2], 100), 1 + 2 + 3);
        assert_eq!(pe_checksum(&[0xff, 0xff, 0xff, 0xff, 1, 0], 100), 7);
    }
}
