//! The Authenticode PE image hash (Microsoft "Windows Authenticode Portable
//! Executable Signature Format"; UEFI 2.10 §32.5.3), computed exactly as
//! edk2's `DxeImageVerificationLib` `HashPeImage` does:
//!
//! 1. headers from 0 up to the CheckSum field; skip its 4 bytes;
//! 2. up to the certificate-table directory entry; skip its 8 bytes
//!    (if NumberOfRvaAndSizes <= 4 there is no entry: hash on to step 3);
//! 3. the rest of the headers up to SizeOfHeaders;
//! 4. each section with SizeOfRawData != 0, sorted by PointerToRawData;
//! 5. if the file is longer than SizeOfHeaders + the sum of the section
//!    sizes (`hashed`), the bytes from offset `hashed` to
//!    `len - certificate table size`. Like edk2, this assumes the
//!    certificate table is the last thing in the file and that sections
//!    follow the headers without gaps; an image where that sum exceeds
//!    `len - cert size` is rejected (edk2 fails the same way).
//!
//! Hashing borrows slices of the input; nothing is copied.

use crate::pe::{PeError, PeImage};
use sha2::Digest;

/// Hash algorithms an Authenticode signature may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ImageHashAlg {
    /// SHA-1 (legacy signatures).
    Sha1,
    /// SHA-256.
    Sha256,
}

/// An image digest tied to its algorithm.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ImageDigest {
    /// SHA-1 digest.
    Sha1([u8; 20]),
    /// SHA-256 digest.
    Sha256([u8; 32]),
}

impl ImageDigest {
    /// The digest bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Sha1(d) => d,
            Self::Sha256(d) => d,
        }
    }

    /// The algorithm.
    #[must_use]
    pub fn alg(&self) -> ImageHashAlg {
        match self {
            Self::Sha1(_) => ImageHashAlg::Sha1,
            Self::Sha256(_) => ImageHashAlg::Sha256,
        }
    }
}

/// Errors computing the image hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HashError {
    /// The PE headers could not be parsed.
    #[error("PE parse: {0}")]
    Pe(#[from] PeError),
    /// SizeOfHeaders plus the section sizes exceed the file minus the
    /// certificate table (edk2 rejects such images).
    #[error(
        "hashed size {hashed:#x} exceeds image size {len:#x} minus certificate table {cert:#x}"
    )]
    Overlap {
        /// Bytes hashed by headers and sections.
        hashed: usize,
        /// File length.
        len: usize,
        /// Certificate table size.
        cert: usize,
    },
}

/// The ranges of `data` that the Authenticode hash covers, in order.
pub fn hashed_ranges(pe: &PeImage, len: usize) -> Result<Vec<core::ops::Range<usize>>, HashError> {
    let mut out = Vec::with_capacity(pe.sections.len().saturating_add(4));
    let soh = usize::try_from(pe.size_of_headers).unwrap_or(usize::MAX);
    let after_ck = pe.checksum_offset.saturating_add(4);
    out.push(0..pe.checksum_offset);
    let mut cert_size = 0usize;
    match pe.cert_dir_offset {
        Some(dir) => {
            out.push(after_ck..dir);
            out.push(dir.saturating_add(8)..soh);
            cert_size = usize::try_from(pe.cert_table.1).unwrap_or(usize::MAX);
        }
        None => out.push(after_ck..soh),
    }
    let mut sections: Vec<_> = pe
        .sections
        .iter()
        .filter(|s| s.size_of_raw_data != 0)
        .collect();
    sections.sort_by_key(|s| s.pointer_to_raw_data);
    let mut hashed = soh;
    for s in sections {
        let start = usize::try_from(s.pointer_to_raw_data).unwrap_or(usize::MAX);
        let size = usize::try_from(s.size_of_raw_data).unwrap_or(usize::MAX);
        out.push(start..start.saturating_add(size));
        hashed = hashed.saturating_add(size);
    }
    if len > hashed {
        let end =
            len.checked_sub(cert_size)
                .filter(|&e| e >= hashed)
                .ok_or(HashError::Overlap {
                    hashed,
                    len,
                    cert: cert_size,
                })?;
        // edk2 hashes only when ImageSize > SumOfBytesHashed + CertSize.
        if end > hashed {
            out.push(hashed..end);
        }
    }
    // Every range must be well-formed and in bounds (PeImage::parse checked
    // the sections; the header ranges are below SizeOfHeaders <= len).
    if out.iter().any(|r| r.start > r.end || r.end > len) {
        return Err(HashError::Pe(PeError::BadSizeOfHeaders(pe.size_of_headers)));
    }
    Ok(out)
}

fn digest_ranges<D: Digest>(data: &[u8], ranges: &[core::ops::Range<usize>]) -> D {
    let mut h = D::new();
    for r in ranges {
        if let Some(s) = data.get(r.clone()) {
            h.update(s);
        }
    }
    h
}

/// Compute the Authenticode hash of a PE image with `alg`.
pub fn image_hash(data: &[u8], alg: ImageHashAlg) -> Result<ImageDigest, HashError> {
    let pe = PeImage::parse(data)?;
    image_hash_parsed(data, &pe, alg)
}

/// The SHA-256 Authenticode hash of an already parsed image (the form
/// db/dbx hash entries take).
pub fn image_sha256_parsed(data: &[u8], pe: &PeImage) -> Result<[u8; 32], HashError> {
    let ranges = hashed_ranges(pe, data.len())?;
    Ok(digest_ranges::<sha2::Sha256>(data, &ranges)
        .finalize()
        .into())
}

/// Compute the Authenticode hash of an already parsed image.
pub fn image_hash_parsed(
    data: &[u8],
    pe: &PeImage,
    alg: ImageHashAlg,
) -> Result<ImageDigest, HashError> {
    let ranges = hashed_ranges(pe, data.len())?;
    Ok(match alg {
        ImageHashAlg::Sha1 => {
            ImageDigest::Sha1(digest_ranges::<sha1::Sha1>(data, &ranges).finalize().into())
        }
        ImageHashAlg::Sha256 => ImageDigest::Sha256(
            digest_ranges::<sha2::Sha256>(data, &ranges)
                .finalize()
                .into(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pe::tests::minimal_pe;

    #[test]
    fn ranges_skip_checksum_and_cert_dir_and_table() {
        let (img, _) = minimal_pe(&[0xAA; 0x200], 0x10);
        let pe = PeImage::parse(&img).unwrap();
        let r = hashed_ranges(&pe, img.len()).unwrap();
        let ck = pe.checksum_offset;
        let dir = pe.cert_dir_offset.unwrap();
        assert_eq!(r[0], 0..ck);
        assert_eq!(r[1], ck + 4..dir);
        assert_eq!(r[2], dir + 8..0x200);
        assert_eq!(r[3], 0x200..0x400);
        // Trailing certificate table excluded: no fifth range.
        assert_eq!(r.len(), 4);
        assert_eq!(
            image_sha256_parsed(&img, &pe).unwrap().to_vec(),
            image_hash(&img, ImageHashAlg::Sha256).unwrap().as_bytes()
        );
    }
}
