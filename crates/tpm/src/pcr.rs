//! TPML_PCR_SELECTION (Part 2 §10.9.7) and PCR values, and the PCR digest a
//! quote signs (Part 3 §18.4: the hash of the selected PCR values, banks in
//! selection order, PCRs in ascending order).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::alg::{AlgId, HashAlg, MAX_DIGEST};
use crate::wire::{Reader, WireError, Writer};

/// Most banks a selection may name (HASH_COUNT of any real TPM is ≤ 5).
pub const MAX_BANKS: usize = 16;
/// Bytes of a PCR bitmap: 24 PCRs need 3; allow 4 (32 PCRs).
pub const MAX_SELECT_BYTES: usize = 4;

/// One bank of a selection: TPMS_PCR_SELECTION.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BankSelection {
    /// `hash`.
    pub hash: AlgId,
    /// The selected PCR indices, ascending.
    pub pcrs: Vec<u32>,
    /// `sizeofSelect` as marshalled.
    pub size_of_select: u8,
}

/// TPML_PCR_SELECTION.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PcrSelection {
    /// The banks, in order.
    pub banks: Vec<BankSelection>,
}

impl PcrSelection {
    /// A selection of `pcrs` in one bank (3-byte bitmap).
    pub fn single(hash: HashAlg, pcrs: &[u32]) -> Self {
        let mut sorted: Vec<u32> = pcrs.iter().copied().filter(|p| *p < 24).collect();
        sorted.sort_unstable();
        sorted.dedup();
        Self {
            banks: vec![BankSelection {
                hash: hash.alg(),
                pcrs: sorted,
                size_of_select: 3,
            }],
        }
    }

    /// Reads a TPML_PCR_SELECTION.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let at = r.offset();
        let count = r.u32("TPML_PCR_SELECTION.count")?;
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        if count > MAX_BANKS {
            return Err(WireError::Invalid {
                what: "TPML_PCR_SELECTION.count",
                offset: at,
                reason: format!("{count} banks exceeds {MAX_BANKS}"),
            });
        }
        let mut banks = Vec::with_capacity(count);
        for _ in 0..count {
            let hash = AlgId(r.u16("TPMS_PCR_SELECTION.hash")?);
            let size_at = r.offset();
            let size_of_select = r.u8("TPMS_PCR_SELECTION.sizeofSelect")?;
            if usize::from(size_of_select) > MAX_SELECT_BYTES {
                return Err(WireError::Invalid {
                    what: "TPMS_PCR_SELECTION.sizeofSelect",
                    offset: size_at,
                    reason: format!("{size_of_select} bytes exceeds {MAX_SELECT_BYTES}"),
                });
            }
            let bitmap = r.take(usize::from(size_of_select), "TPMS_PCR_SELECTION.pcrSelect")?;
            let pcrs = bitmap_pcrs(bitmap);
            banks.push(BankSelection {
                hash,
                pcrs,
                size_of_select,
            });
        }
        Ok(Self { banks })
    }

    /// Writes the TPML_PCR_SELECTION.
    pub fn write(&self, w: &mut Writer) {
        w.u32(u32::try_from(self.banks.len()).unwrap_or(0));
        for b in &self.banks {
            w.u16(b.hash.0).u8(b.size_of_select);
            let mut bitmap = vec![0u8; usize::from(b.size_of_select)];
            for p in &b.pcrs {
                let (byte, bit) = (*p / 8, *p % 8);
                if let Some(slot) = usize::try_from(byte).ok().and_then(|i| bitmap.get_mut(i)) {
                    *slot |= 1 << bit;
                }
            }
            w.bytes(&bitmap);
        }
    }

    /// Marshals it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.write(&mut w);
        w.into_bytes()
    }
}

/// The PCR indices set in a `pcrSelect` bitmap (bit n of byte k is PCR
/// 8k + n), ascending.
fn bitmap_pcrs(bitmap: &[u8]) -> Vec<u32> {
    let mut pcrs = Vec::new();
    for (byte_index, byte) in (0u32..).zip(bitmap) {
        for bit in 0..8u32 {
            if byte & (1 << bit) != 0 {
                pcrs.push(byte_index.saturating_mul(8).saturating_add(bit));
            }
        }
    }
    pcrs
}

/// PCR values by bank: `bank -> index -> value`.
pub type PcrValues = BTreeMap<HashAlg, BTreeMap<u32, Vec<u8>>>;

/// Why a PCR digest could not be computed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PcrDigestError {
    /// The selection names a bank this crate does not compute.
    #[error("the quote selects bank {0}, which this verifier does not support")]
    UnsupportedBank(AlgId),
    /// A selected PCR has no supplied value.
    #[error("the quote selects {bank} PCR {pcr}, but no value was supplied for it")]
    MissingValue {
        /// Bank.
        bank: HashAlg,
        /// PCR.
        pcr: u32,
    },
    /// A supplied value has the wrong size for its bank.
    #[error("{bank} PCR {pcr}: {len} bytes, expected {}", bank.size())]
    WrongSize {
        /// Bank.
        bank: HashAlg,
        /// PCR.
        pcr: u32,
        /// Its length.
        len: usize,
    },
}

/// The digest a quote's `pcrDigest` must equal: `hash` over the selected
/// values concatenated in selection order.
pub fn pcr_digest(
    selection: &PcrSelection,
    values: &PcrValues,
    hash: HashAlg,
) -> Result<Vec<u8>, PcrDigestError> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for bank in &selection.banks {
        let alg = HashAlg::from_alg(bank.hash).ok_or(PcrDigestError::UnsupportedBank(bank.hash))?;
        for pcr in &bank.pcrs {
            let v =
                values
                    .get(&alg)
                    .and_then(|b| b.get(pcr))
                    .ok_or(PcrDigestError::MissingValue {
                        bank: alg,
                        pcr: *pcr,
                    })?;
            if v.len() != alg.size() {
                return Err(PcrDigestError::WrongSize {
                    bank: alg,
                    pcr: *pcr,
                    len: v.len(),
                });
            }
            parts.push(v);
        }
    }
    Ok(hash.hash_parts(&parts))
}

/// Parses the PCR file that `tpm2_quote -o` and `tpm2_pcrread -o` write: a
/// memory image of the ESAPI structures on a little-endian host — a
/// TPML_PCR_SELECTION (u32 count, 16 × {u16 hash, u8 sizeofSelect,
/// 4-byte bitmap, 1 pad byte}), a u32 number of TPML_DIGESTs, then each
/// TPML_DIGEST (u32 count, 8 × {u16 size, 64-byte buffer}). Values are in
/// selection order: banks as selected, PCRs ascending.
pub fn parse_tpm2_tools_pcrs(bytes: &[u8]) -> Result<(PcrSelection, PcrValues), WireError> {
    const WHAT: &str = "tpm2-tools PCR file";
    let invalid = |offset: usize, reason: String| WireError::Invalid {
        what: WHAT,
        offset,
        reason,
    };
    let mut r = Reader::new(bytes);
    let le32 = |r: &mut Reader<'_>| -> Result<u32, WireError> {
        let b = r.take(4, WHAT)?;
        Ok(u32::from_le_bytes([
            b.first().copied().unwrap_or(0),
            b.get(1).copied().unwrap_or(0),
            b.get(2).copied().unwrap_or(0),
            b.get(3).copied().unwrap_or(0),
        ]))
    };
    let count_at = r.offset();
    let count = usize::try_from(le32(&mut r)?).unwrap_or(usize::MAX);
    if count > MAX_BANKS {
        return Err(invalid(count_at, format!("{count} banks")));
    }
    let mut banks = Vec::new();
    for i in 0..MAX_BANKS {
        let entry = r.take(8, WHAT)?;
        if i >= count {
            continue;
        }
        let (hash, size, bitmap) = match entry {
            [h0, h1, size, b0, b1, b2, b3, _pad] => (
                AlgId(u16::from_le_bytes([*h0, *h1])),
                *size,
                [*b0, *b1, *b2, *b3],
            ),
            _ => return Err(invalid(r.offset(), "short selection".into())),
        };
        if usize::from(size) > MAX_SELECT_BYTES {
            return Err(invalid(r.offset(), format!("sizeofSelect {size}")));
        }
        let pcrs = bitmap_pcrs(bitmap.get(..usize::from(size)).unwrap_or_default());
        banks.push(BankSelection {
            hash,
            pcrs,
            size_of_select: size,
        });
    }
    let selection = PcrSelection { banks };
    let lists_at = r.offset();
    let lists = usize::try_from(le32(&mut r)?).unwrap_or(usize::MAX);
    // 24 PCRs per bank at most, 8 digests per list.
    if lists > MAX_BANKS.saturating_mul(3) {
        return Err(invalid(lists_at, format!("{lists} digest lists")));
    }
    let mut digests: Vec<Vec<u8>> = Vec::new();
    for _ in 0..lists {
        let n_at = r.offset();
        let n = usize::try_from(le32(&mut r)?).unwrap_or(usize::MAX);
        if n > 8 {
            return Err(invalid(n_at, format!("{n} digests in a TPML_DIGEST")));
        }
        for j in 0..8 {
            let size_bytes = r.take(2, WHAT)?;
            let size = usize::from(u16::from_le_bytes([
                size_bytes.first().copied().unwrap_or(0),
                size_bytes.get(1).copied().unwrap_or(0),
            ]));
            let buffer = r.take(MAX_DIGEST, WHAT)?;
            if j < n {
                let d = buffer
                    .get(..size)
                    .ok_or_else(|| invalid(r.offset(), format!("digest size {size}")))?;
                digests.push(d.to_vec());
            }
        }
    }
    r.finish(WHAT)?;
    let mut values = PcrValues::new();
    let mut it = digests.into_iter();
    for bank in &selection.banks {
        let alg = HashAlg::from_alg(bank.hash)
            .ok_or_else(|| invalid(0, format!("unsupported bank {}", bank.hash)))?;
        for pcr in &bank.pcrs {
            let d = it
                .next()
                .ok_or_else(|| invalid(lists_at, "fewer digests than selected PCRs".into()))?;
            values.entry(alg).or_default().insert(*pcr, d);
        }
    }
    Ok((selection, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmaps_round_trip() {
        let s = PcrSelection::single(HashAlg::Sha256, &[7, 0, 23, 7]);
        let bytes = s.to_bytes();
        assert_eq!(bytes, [0, 0, 0, 1, 0, 0x0b, 3, 0x01 | 0x80, 0, 0x80]);
        let mut r = Reader::new(&bytes);
        assert_eq!(PcrSelection::read(&mut r).unwrap(), s);
    }

    #[test]
    fn oversized_selections_are_refused() {
        assert!(PcrSelection::read(&mut Reader::new(&[0, 0, 1, 0])).is_err());
        assert!(PcrSelection::read(&mut Reader::new(&[0, 0, 0, 1, 0, 0x0b, 9])).is_err());
    }
}
