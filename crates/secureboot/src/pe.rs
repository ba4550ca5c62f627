//! Bounded PE/COFF header parsing (Microsoft PE/COFF specification;
//! UEFI 2.10 §2.1.1), just enough for Authenticode: the DOS header, PE
//! signature, COFF header, optional header (PE32 and PE32+), the checksum
//! field, the certificate-table data directory and the section table.
//!
//! Every offset is checked against the input; nothing here panics.

/// Offset of `e_lfanew` in the DOS header.
const DOS_LFANEW: usize = 0x3c;
/// Size of the COFF file header that follows the `PE\0\0` signature.
const COFF_HEADER_LEN: usize = 20;
/// Size of one section header.
const SECTION_HEADER_LEN: usize = 40;
/// Index of the certificate table (IMAGE_DIRECTORY_ENTRY_SECURITY).
pub const DIRECTORY_ENTRY_SECURITY: u32 = 4;
/// Optional-header magic for PE32.
pub const MAGIC_PE32: u16 = 0x10b;
/// Optional-header magic for PE32+.
pub const MAGIC_PE32_PLUS: u16 = 0x20b;
/// Upper bound on sections (the PE/COFF spec limits it to 96 for images).
const MAX_SECTIONS: u16 = 96;

/// Errors from PE/COFF parsing; each names the offset where parsing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeError {
    /// The image ended before a structure that was expected at `offset`.
    #[error("truncated image: need {len} bytes at offset {offset:#x}")]
    Truncated {
        /// Start of the structure that did not fit.
        offset: usize,
        /// Number of bytes needed there.
        len: usize,
    },
    /// The DOS header does not start with `MZ`.
    #[error("missing MZ signature at offset 0")]
    NoDosSignature,
    /// `e_lfanew` does not point at `PE\0\0`.
    #[error("missing PE signature at offset {0:#x}")]
    NoPeSignature(usize),
    /// The optional-header magic is neither PE32 nor PE32+.
    #[error("unknown optional header magic {magic:#x} at offset {offset:#x}")]
    BadMagic {
        /// The magic found.
        magic: u16,
        /// Offset of the magic.
        offset: usize,
    },
    /// The optional header is too small for the fields it must hold.
    #[error("optional header of {0} bytes is too small")]
    OptionalHeaderTooSmall(u16),
    /// More sections than the PE/COFF limit.
    #[error("too many sections: {0}")]
    TooManySections(u16),
    /// `SizeOfHeaders` is smaller than the headers or beyond the file.
    #[error("SizeOfHeaders {0:#x} is inconsistent with the image")]
    BadSizeOfHeaders(u32),
    /// A section's raw data lies outside the file.
    #[error("section {index} raw data {offset:#x}+{size:#x} lies outside the image")]
    SectionOutOfBounds {
        /// Index in the section table.
        index: usize,
        /// PointerToRawData.
        offset: u32,
        /// SizeOfRawData.
        size: u32,
    },
    /// The certificate table lies outside the file or overlaps the hashed data.
    #[error("certificate table {offset:#x}+{size:#x} is inconsistent with the image")]
    BadCertificateTable {
        /// Its file offset (a file offset, not an RVA).
        offset: u32,
        /// Its size.
        size: u32,
    },
}

/// One section header (only the fields Authenticode needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Section name, NUL padding removed.
    pub name: [u8; 8],
    /// VirtualSize.
    pub virtual_size: u32,
    /// VirtualAddress (RVA).
    pub virtual_address: u32,
    /// SizeOfRawData.
    pub size_of_raw_data: u32,
    /// PointerToRawData (file offset).
    pub pointer_to_raw_data: u32,
}

impl Section {
    /// The name as text, trailing NULs removed (lossy).
    #[must_use]
    pub fn name_str(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(8);
        String::from_utf8_lossy(self.name.get(..end).unwrap_or(&[])).into_owned()
    }
}

/// Optional-header flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeKind {
    /// PE32 (magic 0x10b).
    Pe32,
    /// PE32+ (magic 0x20b).
    Pe32Plus,
}

/// The parsed headers of a PE/COFF image; offsets are file offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeImage {
    /// PE32 or PE32+.
    pub kind: PeKind,
    /// COFF Machine.
    pub machine: u16,
    /// Offset of the optional header's CheckSum field (4 bytes).
    pub checksum_offset: usize,
    /// NumberOfRvaAndSizes.
    pub number_of_rva_and_sizes: u32,
    /// Offset of the certificate-table directory entry (8 bytes), if the
    /// directory array has one.
    pub cert_dir_offset: Option<usize>,
    /// Certificate table (file offset, size); `(0, 0)` if absent.
    pub cert_table: (u32, u32),
    /// SizeOfHeaders.
    pub size_of_headers: u32,
    /// Section table in file order.
    pub sections: Vec<Section>,
    /// COFF PointerToSymbolTable (the string table follows the symbols).
    pub pointer_to_symbol_table: u32,
    /// COFF NumberOfSymbols.
    pub number_of_symbols: u32,
}

fn bytes_at(data: &[u8], offset: usize, len: usize) -> Result<&[u8], PeError> {
    offset
        .checked_add(len)
        .and_then(|end| data.get(offset..end))
        .ok_or(PeError::Truncated { offset, len })
}

fn u16_at(data: &[u8], offset: usize) -> Result<u16, PeError> {
    let b = bytes_at(data, offset, 2)?;
    let mut a = [0u8; 2];
    a.copy_from_slice(b);
    Ok(u16::from_le_bytes(a))
}

fn u32_at(data: &[u8], offset: usize) -> Result<u32, PeError> {
    let b = bytes_at(data, offset, 4)?;
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    Ok(u32::from_le_bytes(a))
}

fn add(a: usize, b: usize) -> Result<usize, PeError> {
    a.checked_add(b)
        .ok_or(PeError::Truncated { offset: a, len: b })
}

fn to_usize(v: u32) -> usize {
    // u32 always fits in usize on the 32/64-bit targets we support.
    usize::try_from(v).unwrap_or(usize::MAX)
}

impl PeImage {
    /// Parse the headers of `data`, checking every structure and the
    /// section and certificate-table extents against its length.
    pub fn parse(data: &[u8]) -> Result<Self, PeError> {
        if bytes_at(data, 0, 2)? != b"MZ" {
            return Err(PeError::NoDosSignature);
        }
        let pe_off = to_usize(u32_at(data, DOS_LFANEW)?);
        if bytes_at(data, pe_off, 4)? != b"PE\0\0" {
            return Err(PeError::NoPeSignature(pe_off));
        }
        let coff = add(pe_off, 4)?;
        let machine = u16_at(data, coff)?;
        let nsections = u16_at(data, add(coff, 2)?)?;
        let opt_size = u16_at(data, add(coff, 16)?)?;
        let pointer_to_symbol_table = u32_at(data, add(coff, 8)?)?;
        let number_of_symbols = u32_at(data, add(coff, 12)?)?;
        if nsections > MAX_SECTIONS {
            return Err(PeError::TooManySections(nsections));
        }
        let opt = add(coff, COFF_HEADER_LEN)?;
        let magic = u16_at(data, opt)?;
        let (kind, nrva_rel, dirs_rel) = match magic {
            MAGIC_PE32 => (PeKind::Pe32, 92usize, 96usize),
            MAGIC_PE32_PLUS => (PeKind::Pe32Plus, 108, 112),
            _ => return Err(PeError::BadMagic { magic, offset: opt }),
        };
        if usize::from(opt_size) < dirs_rel {
            return Err(PeError::OptionalHeaderTooSmall(opt_size));
        }
        let opt_end = add(opt, usize::from(opt_size))?;
        bytes_at(data, opt, usize::from(opt_size))?;
        let size_of_headers = u32_at(data, add(opt, 60)?)?;
        let checksum_offset = add(opt, 64)?;
        let number_of_rva_and_sizes = u32_at(data, add(opt, nrva_rel)?)?;
        let dirs = add(opt, dirs_rel)?;
        let (cert_dir_offset, cert_table) = if number_of_rva_and_sizes > DIRECTORY_ENTRY_SECURITY {
            let off = add(dirs, 4 * 8)?;
            if add(off, 8)? > opt_end {
                return Err(PeError::OptionalHeaderTooSmall(opt_size));
            }
            (Some(off), (u32_at(data, off)?, u32_at(data, add(off, 4)?)?))
        } else {
            (None, (0, 0))
        };
        let table_len = usize::from(nsections)
            .checked_mul(SECTION_HEADER_LEN)
            .ok_or(PeError::TooManySections(nsections))?;
        let table = bytes_at(data, opt_end, table_len)?;
        let headers_end = add(opt_end, table_len)?;
        let soh = to_usize(size_of_headers);
        if soh < headers_end || soh > data.len() {
            return Err(PeError::BadSizeOfHeaders(size_of_headers));
        }
        let mut sections = Vec::with_capacity(usize::from(nsections));
        for (index, raw) in table.chunks_exact(SECTION_HEADER_LEN).enumerate() {
            let mut name = [0u8; 8];
            name.copy_from_slice(bytes_at(raw, 0, 8)?);
            let s = Section {
                name,
                virtual_size: u32_at(raw, 8)?,
                virtual_address: u32_at(raw, 12)?,
                size_of_raw_data: u32_at(raw, 16)?,
                pointer_to_raw_data: u32_at(raw, 20)?,
            };
            if s.size_of_raw_data != 0 {
                let end = to_usize(s.pointer_to_raw_data).checked_add(to_usize(s.size_of_raw_data));
                if end.is_none_or(|e| e > data.len()) {
                    return Err(PeError::SectionOutOfBounds {
                        index,
                        offset: s.pointer_to_raw_data,
                        size: s.size_of_raw_data,
                    });
                }
            }
            sections.push(s);
        }
        let (cert_off, cert_size) = cert_table;
        if cert_size != 0 {
            let end = to_usize(cert_off).checked_add(to_usize(cert_size));
            if to_usize(cert_off) < soh || end.is_none_or(|e| e > data.len()) {
                return Err(PeError::BadCertificateTable {
                    offset: cert_off,
                    size: cert_size,
                });
            }
        }
        Ok(Self {
            kind,
            machine,
            checksum_offset,
            number_of_rva_and_sizes,
            cert_dir_offset,
            cert_table,
            size_of_headers,
            sections,
            pointer_to_symbol_table,
            number_of_symbols,
        })
    }

    /// The certificate table's bytes, if the image has one.
    #[must_use]
    pub fn cert_table_bytes<'a>(&self, data: &'a [u8]) -> Option<&'a [u8]> {
        let (off, size) = self.cert_table;
        if size == 0 {
            return None;
        }
        bytes_at(data, to_usize(off), to_usize(size)).ok()
    }

    /// A section's full name: names longer than 8 bytes are stored as
    /// `/N`, an offset into the COFF string table (which follows the
    /// symbol table, 18 bytes per symbol); unresolvable names are returned
    /// as stored.
    #[must_use]
    pub fn section_name(&self, data: &[u8], section: &Section) -> String {
        let short = section.name_str();
        let resolved = short
            .strip_prefix('/')
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| {
                let syms = to_usize(self.number_of_symbols).checked_mul(18)?;
                let start = to_usize(self.pointer_to_symbol_table)
                    .checked_add(syms)?
                    .checked_add(n)?;
                let tail = data.get(start..)?;
                let end = tail.iter().position(|&b| b == 0)?;
                Some(String::from_utf8_lossy(tail.get(..end)?).into_owned())
            });
        resolved.unwrap_or(short)
    }

    /// Raw data of the first section named `name` (long names resolved).
    #[must_use]
    pub fn section_data<'a>(&self, data: &'a [u8], name: &str) -> Option<&'a [u8]> {
        let s = self
            .sections
            .iter()
            .find(|s| self.section_name(data, s) == name)?;
        bytes_at(
            data,
            to_usize(s.pointer_to_raw_data),
            to_usize(s.size_of_raw_data),
        )
        .ok()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal PE32+ image: headers in 0x200 bytes, one section of
    /// `section` at 0x200 (padded to 0x200), then a certificate table of
    /// `cert_len` bytes. Returns the image and the cert table offset.
    pub(crate) fn minimal_pe(section: &[u8], cert_len: u32) -> (Vec<u8>, usize) {
        let mut img = vec![0u8; 0x400];
        img[0..2].copy_from_slice(b"MZ");
        img[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        img[0x80..0x84].copy_from_slice(b"PE\0\0");
        let coff = 0x84;
        img[coff..coff + 2].copy_from_slice(&0x8664u16.to_le_bytes());
        img[coff + 2..coff + 4].copy_from_slice(&1u16.to_le_bytes());
        let opt_size: u16 = 112 + 16 * 8;
        img[coff + 16..coff + 18].copy_from_slice(&opt_size.to_le_bytes());
        let opt = coff + 20;
        img[opt..opt + 2].copy_from_slice(&MAGIC_PE32_PLUS.to_le_bytes());
        img[opt + 60..opt + 64].copy_from_slice(&0x200u32.to_le_bytes());
        img[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes());
        let cert_off = 0x400usize;
        let dir = opt + 112 + 32;
        img[dir..dir + 4].copy_from_slice(&(cert_off as u32).to_le_bytes());
        img[dir + 4..dir + 8].copy_from_slice(&cert_len.to_le_bytes());
        let sec = opt + usize::from(opt_size);
        img[sec..sec + 5].copy_from_slice(b".text");
        img[sec + 16..sec + 20].copy_from_slice(&0x200u32.to_le_bytes());
        img[sec + 20..sec + 24].copy_from_slice(&0x200u32.to_le_bytes());
        img[0x200..0x200 + section.len().min(0x200)]
            .copy_from_slice(&section[..section.len().min(0x200)]);
        img.resize(cert_off + cert_len as usize, 0);
        (img, cert_off)
    }

    #[test]
    fn parses_minimal_pe32_plus() {
        let (img, cert_off) = minimal_pe(b"hello", 0x10);
        let pe = PeImage::parse(&img).unwrap();
        assert_eq!(pe.kind, PeKind::Pe32Plus);
        assert_eq!(pe.checksum_offset, 0x98 + 64);
        assert_eq!(pe.cert_table, (cert_off as u32, 0x10));
        assert_eq!(pe.sections.len(), 1);
        assert_eq!(pe.section_data(&img, ".text").unwrap()[..5], *b"hello");
    }

    #[test]
    fn typed_errors_name_offsets() {
        let (img, _) = minimal_pe(b"", 0x10);
        assert_eq!(
            PeImage::parse(&img[..1]),
            Err(PeError::Truncated { offset: 0, len: 2 })
        );
        let mut bad = img.clone();
        bad[0x80] = b'X';
        assert_eq!(PeImage::parse(&bad), Err(PeError::NoPeSignature(0x80)));
        let mut bad = img.clone();
        bad[0x98] = 0x99;
        assert!(matches!(
            PeImage::parse(&bad),
            Err(PeError::BadMagic { offset: 0x98, .. })
        ));
        // Certificate table running past the end of the file.
        assert!(matches!(
            PeImage::parse(&img[..img.len() - 1]),
            Err(PeError::BadCertificateTable { .. })
        ));
    }
}
