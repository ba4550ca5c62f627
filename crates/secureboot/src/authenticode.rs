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

/// Hash algorithms of Authenticode image hashes: those an Authenticode
/// signature may use and those of the image-hash signature types of db/dbx
/// (EFI_CERT_SHA1/SHA224/SHA256/SHA384/SHA512_GUID, UEFI 2.10 §32.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ImageHashAlg {
    /// SHA-1 (legacy signatures).
    Sha1,
    /// SHA-224.
    Sha224,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl ImageHashAlg {
    /// Every algorithm, shortest digest first.
    pub const ALL: [ImageHashAlg; 5] = [
        ImageHashAlg::Sha1,
        ImageHashAlg::Sha224,
        ImageHashAlg::Sha256,
        ImageHashAlg::Sha384,
        ImageHashAlg::Sha512,
    ];

    /// Digest size in bytes.
    #[must_use]
    pub const fn digest_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha224 => 28,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// The usual name ("SHA-256").
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "SHA-1",
            Self::Sha224 => "SHA-224",
            Self::Sha256 => "SHA-256",
            Self::Sha384 => "SHA-384",
            Self::Sha512 => "SHA-512",
        }
    }

    /// Hash one contiguous byte string with this algorithm.
    #[must_use]
    pub fn digest(self, data: &[u8]) -> ImageDigest {
        self.digest_of(core::iter::once(data))
    }

    /// Hash the concatenation of `parts` with this algorithm.
    fn digest_of<'a>(self, parts: impl Iterator<Item = &'a [u8]>) -> ImageDigest {
        match self {
            Self::Sha1 => ImageDigest::Sha1(feed::<sha1::Sha1>(parts).into()),
            Self::Sha224 => ImageDigest::Sha224(feed::<sha2::Sha224>(parts).into()),
            Self::Sha256 => ImageDigest::Sha256(feed::<sha2::Sha256>(parts).into()),
            Self::Sha384 => ImageDigest::Sha384(feed::<sha2::Sha384>(parts).into()),
            Self::Sha512 => ImageDigest::Sha512(feed::<sha2::Sha512>(parts).into()),
        }
    }
}

impl core::fmt::Display for ImageHashAlg {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// An image digest tied to its algorithm.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ImageDigest {
    /// SHA-1 digest.
    Sha1([u8; 20]),
    /// SHA-224 digest.
    Sha224([u8; 28]),
    /// SHA-256 digest.
    Sha256([u8; 32]),
    /// SHA-384 digest.
    Sha384([u8; 48]),
    /// SHA-512 digest.
    Sha512([u8; 64]),
}

impl ImageDigest {
    /// The digest bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Sha1(d) => d,
            Self::Sha224(d) => d,
            Self::Sha256(d) => d,
            Self::Sha384(d) => d,
            Self::Sha512(d) => d,
        }
    }

    /// The algorithm.
    #[must_use]
    pub fn alg(&self) -> ImageHashAlg {
        match self {
            Self::Sha1(_) => ImageHashAlg::Sha1,
            Self::Sha224(_) => ImageHashAlg::Sha224,
            Self::Sha256(_) => ImageHashAlg::Sha256,
            Self::Sha384(_) => ImageHashAlg::Sha384,
            Self::Sha512(_) => ImageHashAlg::Sha512,
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

fn feed<'a, D: Digest>(parts: impl Iterator<Item = &'a [u8]>) -> sha2::digest::Output<D> {
    let mut h = D::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

/// The slices of `data` named by `ranges` (validated by [`hashed_ranges`]).
fn slices<'a>(
    data: &'a [u8],
    ranges: &'a [core::ops::Range<usize>],
) -> impl Iterator<Item = &'a [u8]> + 'a {
    ranges.iter().filter_map(move |r| data.get(r.clone()))
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
    Ok(feed::<sha2::Sha256>(slices(data, &ranges)).into())
}

/// Compute the Authenticode hash of an already parsed image.
pub fn image_hash_parsed(
    data: &[u8],
    pe: &PeImage,
    alg: ImageHashAlg,
) -> Result<ImageDigest, HashError> {
    let ranges = hashed_ranges(pe, data.len())?;
    Ok(alg.digest_of(slices(data, &ranges)))
}

/// The Authenticode hashes of an already parsed image with each of `algs`
/// (the hashed ranges are computed once), in the order given.
pub fn image_hashes_parsed(
    data: &[u8],
    pe: &PeImage,
    algs: &[ImageHashAlg],
) -> Result<Vec<ImageDigest>, HashError> {
    let ranges = hashed_ranges(pe, data.len())?;
    Ok(algs
        .iter()
        .map(|a| a.digest_of(slices(data, &ranges)))
        .collect())
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
