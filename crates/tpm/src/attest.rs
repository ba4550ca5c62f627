//! TPMS_ATTEST (TPM 2.0 Part 2 §10.12.12): what a TPM signs for a quote, a
//! certification or a creation ticket.

use serde::Serialize;

use crate::alg::MAX_DIGEST;
use crate::pcr::PcrSelection;
use crate::wire::{Reader, WireError, Writer};

/// TPM_GENERATED_VALUE: marks data the TPM itself produced.
pub const TPM_GENERATED: u32 = 0xff54_4347;
/// Largest TPM2B_NAME (2-byte algorithm + SHA-512).
pub const MAX_NAME: usize = 2 + MAX_DIGEST;
/// Largest TPM2B_DATA (extraData): a digest plus its algorithm.
pub const MAX_EXTRA_DATA: usize = 2 + MAX_DIGEST;

/// TPMI_ST_ATTEST values.
#[allow(missing_docs)]
pub mod st {
    pub const ATTEST_NV: u16 = 0x8014;
    pub const ATTEST_COMMAND_AUDIT: u16 = 0x8015;
    pub const ATTEST_SESSION_AUDIT: u16 = 0x8016;
    pub const ATTEST_CERTIFY: u16 = 0x8017;
    pub const ATTEST_QUOTE: u16 = 0x8018;
    pub const ATTEST_TIME: u16 = 0x8019;
    pub const ATTEST_CREATION: u16 = 0x801a;
    pub const ATTEST_NV_DIGEST: u16 = 0x801c;
}

/// TPMS_CLOCK_INFO.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ClockInfo {
    /// `clock`: milliseconds the TPM has been powered since it was made.
    pub clock: u64,
    /// `resetCount`: TPM resets (reboots) so far.
    pub reset_count: u32,
    /// `restartCount`: TPM restarts (resume from hibernation) since reset.
    pub restart_count: u32,
    /// `safe`.
    pub safe: bool,
}

/// The type-specific part of an attestation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Attested {
    /// TPMS_QUOTE_INFO.
    Quote {
        /// `pcrSelect`.
        pcr_select: PcrSelection,
        /// `pcrDigest`.
        #[serde(with = "crate::hexser")]
        pcr_digest: Vec<u8>,
    },
    /// TPMS_CERTIFY_INFO.
    Certify {
        /// `name`.
        #[serde(with = "crate::hexser")]
        name: Vec<u8>,
        /// `qualifiedName`.
        #[serde(with = "crate::hexser")]
        qualified_name: Vec<u8>,
    },
    /// TPMS_CREATION_INFO.
    Creation {
        /// `objectName`.
        #[serde(with = "crate::hexser")]
        object_name: Vec<u8>,
        /// `creationHash`.
        #[serde(with = "crate::hexser")]
        creation_hash: Vec<u8>,
    },
    /// Another attestation type, its body kept raw.
    Other {
        /// The TPMI_ST_ATTEST.
        tag: u16,
        /// The bytes after `firmwareVersion`.
        #[serde(with = "crate::hexser")]
        body: Vec<u8>,
    },
}

/// TPMS_ATTEST.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Attest {
    /// `magic` (must be [`TPM_GENERATED`] for TPM-made data).
    pub magic: u32,
    /// `qualifiedSigner`.
    #[serde(with = "crate::hexser")]
    pub qualified_signer: Vec<u8>,
    /// `extraData`: the verifier's nonce.
    #[serde(with = "crate::hexser")]
    pub extra_data: Vec<u8>,
    /// `clockInfo`.
    pub clock_info: ClockInfo,
    /// `firmwareVersion`.
    pub firmware_version: u64,
    /// `attested`.
    pub attested: Attested,
}

impl Attest {
    /// Unmarshals a TPMS_ATTEST that fills `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        let magic = r.u32("TPMS_ATTEST.magic")?;
        let tag = r.u16("TPMS_ATTEST.type")?;
        let qualified_signer = r.tpm2b("TPMS_ATTEST.qualifiedSigner", MAX_NAME)?.to_vec();
        let extra_data = r.tpm2b("TPMS_ATTEST.extraData", MAX_EXTRA_DATA)?.to_vec();
        let clock = r.u64("TPMS_CLOCK_INFO.clock")?;
        let reset_count = r.u32("TPMS_CLOCK_INFO.resetCount")?;
        let restart_count = r.u32("TPMS_CLOCK_INFO.restartCount")?;
        let safe_at = r.offset();
        // TPMI_YES_NO: only NO (0) and YES (1) are values (Part 2 §9.2);
        // anything else is not a TPM's output (found by fuzzing).
        let safe = match r.u8("TPMS_CLOCK_INFO.safe")? {
            0 => false,
            1 => true,
            other => {
                return Err(WireError::Invalid {
                    what: "TPMS_CLOCK_INFO.safe",
                    offset: safe_at,
                    reason: format!("TPMI_YES_NO value {other}"),
                })
            }
        };
        let clock_info = ClockInfo {
            clock,
            reset_count,
            restart_count,
            safe,
        };
        let firmware_version = r.u64("TPMS_ATTEST.firmwareVersion")?;
        let attested = match tag {
            st::ATTEST_QUOTE => Attested::Quote {
                pcr_select: PcrSelection::read(&mut r)?,
                pcr_digest: r.tpm2b("TPMS_QUOTE_INFO.pcrDigest", MAX_DIGEST)?.to_vec(),
            },
            st::ATTEST_CERTIFY => Attested::Certify {
                name: r.tpm2b("TPMS_CERTIFY_INFO.name", MAX_NAME)?.to_vec(),
                qualified_name: r
                    .tpm2b("TPMS_CERTIFY_INFO.qualifiedName", MAX_NAME)?
                    .to_vec(),
            },
            st::ATTEST_CREATION => Attested::Creation {
                object_name: r.tpm2b("TPMS_CREATION_INFO.objectName", MAX_NAME)?.to_vec(),
                creation_hash: r
                    .tpm2b("TPMS_CREATION_INFO.creationHash", MAX_DIGEST)?
                    .to_vec(),
            },
            _ => {
                let n = r.remaining();
                Attested::Other {
                    tag,
                    body: r.take(n, "TPMS_ATTEST.attested")?.to_vec(),
                }
            }
        };
        r.finish("TPMS_ATTEST")?;
        Ok(Self {
            magic,
            qualified_signer,
            extra_data,
            clock_info,
            firmware_version,
            attested,
        })
    }

    /// Marshals the TPMS_ATTEST.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        let tag = match &self.attested {
            Attested::Quote { .. } => st::ATTEST_QUOTE,
            Attested::Certify { .. } => st::ATTEST_CERTIFY,
            Attested::Creation { .. } => st::ATTEST_CREATION,
            Attested::Other { tag, .. } => *tag,
        };
        w.u32(self.magic)
            .u16(tag)
            .tpm2b(&self.qualified_signer)
            .tpm2b(&self.extra_data)
            .u64(self.clock_info.clock)
            .u32(self.clock_info.reset_count)
            .u32(self.clock_info.restart_count)
            .u8(u8::from(self.clock_info.safe))
            .u64(self.firmware_version);
        match &self.attested {
            Attested::Quote {
                pcr_select,
                pcr_digest,
            } => {
                pcr_select.write(&mut w);
                w.tpm2b(pcr_digest);
            }
            Attested::Certify {
                name,
                qualified_name,
            } => {
                w.tpm2b(name).tpm2b(qualified_name);
            }
            Attested::Creation {
                object_name,
                creation_hash,
            } => {
                w.tpm2b(object_name).tpm2b(creation_hash);
            }
            Attested::Other { body, .. } => {
                w.bytes(body);
            }
        }
        w.into_bytes()
    }
}
