//! PCRs: TPM2_PCR_Read (Part 3 §22.4) and TPM2_PCR_Extend (§22.2).

use crate::client::{invalid, parse_params, Command, Tpm};
use crate::commands::limits;
use crate::error::Error;
use crate::marshal::{MarshalError, Writer};
use crate::session::Authorization;
use crate::types::{CommandCode, HashAlg, PcrSelection};

/// One PCR value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrValue {
    /// The bank.
    pub bank: HashAlg,
    /// The PCR index.
    pub index: u8,
    /// The digest (`bank.digest_size()` bytes).
    pub digest: Vec<u8>,
}

/// PCR values read consistently (one `pcrUpdateCounter` across all reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrValues {
    /// The TPM's `pcrUpdateCounter` when the values were read.
    pub update_counter: u32,
    /// The values, in selection order (banks in order, PCRs ascending).
    pub values: Vec<PcrValue>,
}

impl PcrValues {
    /// The digest of `index` in `bank`, if it was read.
    pub fn get(&self, bank: HashAlg, index: u8) -> Option<&[u8]> {
        self.values
            .iter()
            .find(|v| v.bank == bank && v.index == index)
            .map(|v| v.digest.as_slice())
    }

    /// The digests concatenated in order: the "values" format of
    /// `tpm2_pcrread -o` and `tpm2_checkquote -f` (with `-l`).
    pub fn concatenated(&self) -> Vec<u8> {
        self.values
            .iter()
            .flat_map(|v| v.digest.iter().copied())
            .collect()
    }
}

/// How often a read is restarted because PCRs changed while it ran.
const MAX_RESTARTS: usize = 8;

impl Tpm {
    /// `TPM2_PCR_Read` of any selection. A TPM returns at most eight digests
    /// per call; this repeats the call with what is still missing, and
    /// starts over if `pcrUpdateCounter` changes between calls, so the
    /// result is one consistent snapshot. A bank or PCR the TPM does not
    /// have gives [`Error::PcrUnavailable`].
    pub fn pcr_read(&mut self, selection: &PcrSelection) -> Result<PcrValues, Error> {
        'restart: for _ in 0..MAX_RESTARTS {
            let mut remaining = selection.clone();
            let mut counter = None;
            let mut read: Vec<PcrValue> = Vec::new();
            while !remaining.is_empty() {
                let (update_counter, returned, digests) = self.pcr_read_once(&remaining)?;
                if counter.is_some_and(|c| c != update_counter) {
                    continue 'restart;
                }
                counter = Some(update_counter);
                if returned.is_empty() {
                    return Err(Error::PcrUnavailable { remaining });
                }
                if !returned.minus(&remaining).is_empty() {
                    return Err(Error::Unexpected {
                        command: CommandCode::PCR_READ,
                        reason: "values for PCRs that were not asked for",
                    });
                }
                let pairs: Vec<(HashAlg, u8)> = returned.iter().collect();
                if pairs.len() != digests.len() {
                    return Err(Error::Unexpected {
                        command: CommandCode::PCR_READ,
                        reason: "digest count differs from the returned selection",
                    });
                }
                for ((bank, index), digest) in pairs.into_iter().zip(digests) {
                    if digest.len() != bank.digest_size() {
                        return Err(Error::Unexpected {
                            command: CommandCode::PCR_READ,
                            reason: "digest size differs from its bank",
                        });
                    }
                    read.push(PcrValue {
                        bank,
                        index,
                        digest,
                    });
                }
                remaining = remaining.minus(&returned);
            }
            // Order as selected.
            let values = selection
                .iter()
                .filter_map(|(b, i)| read.iter().find(|v| v.bank == b && v.index == i).cloned())
                .collect();
            return Ok(PcrValues {
                update_counter: counter.unwrap_or(0),
                values,
            });
        }
        Err(Error::Unexpected {
            command: CommandCode::PCR_READ,
            reason: "PCRs kept changing during the read",
        })
    }

    fn pcr_read_once(
        &mut self,
        selection: &PcrSelection,
    ) -> Result<(u32, PcrSelection, Vec<Vec<u8>>), Error> {
        let code = CommandCode::PCR_READ;
        let mut w = Writer::new();
        selection.marshal(&mut w).map_err(invalid(code))?;
        let resp = self.execute(Command {
            code,
            handles: &[],
            auths: &[],
            params: w.into_bytes(),
            response_handles: 0,
        })?;
        parse_params(code, &resp.params, |r| {
            let counter = r.u32()?;
            let returned = PcrSelection::unmarshal(r, limits::PCR_BANKS)?;
            let count = usize::try_from(r.u32()?).unwrap_or(usize::MAX);
            if count > limits::DIGEST_LIST {
                return Err(MarshalError::TooLong {
                    what: "TPML_DIGEST",
                    len: count,
                    max: limits::DIGEST_LIST,
                });
            }
            let mut digests = Vec::with_capacity(count);
            for _ in 0..count {
                digests.push(r.tpm2b("pcrValues", limits::DIGEST)?.to_vec());
            }
            Ok((counter, returned, digests))
        })
    }

    /// `TPM2_PCR_Extend` of `pcr` in one bank (PCR authorized by the empty
    /// password, as PC Client PCRs 0–16 and 23 are at locality 0).
    pub fn pcr_extend(&mut self, pcr: u8, bank: HashAlg, digest: &[u8]) -> Result<(), Error> {
        let code = CommandCode::PCR_EXTEND;
        if digest.len() != bank.digest_size() {
            return Err(Error::InvalidArgument {
                command: code,
                source: MarshalError::Invalid {
                    what: "digest size for bank",
                    value: u32::try_from(digest.len()).unwrap_or(u32::MAX),
                },
            });
        }
        let mut w = Writer::new();
        w.u32(1).u16(bank.id()).bytes(digest);
        let resp = self.execute(Command {
            code,
            handles: &[u32::from(pcr)],
            auths: &[Authorization::empty_password()],
            params: w.into_bytes(),
            response_handles: 0,
        })?;
        parse_params(code, &resp.params, |_| Ok(()))
    }
}
