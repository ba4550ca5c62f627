//! TPMT_SIGNATURE (TPM 2.0 Part 2 §11.3.4).

use serde::Serialize;

use crate::alg::AlgId;
use crate::public::{MAX_ECC_KEY_BYTES, MAX_RSA_KEY_BYTES};
use crate::wire::{Reader, WireError, Writer};

/// TPMT_SIGNATURE.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "sig_alg", rename_all = "snake_case")]
pub enum Signature {
    /// TPM_ALG_RSASSA (PKCS#1 v1.5).
    Rsassa {
        /// `hash`.
        hash: AlgId,
        /// `sig`.
        #[serde(with = "crate::hexser")]
        sig: Vec<u8>,
    },
    /// TPM_ALG_RSAPSS.
    Rsapss {
        /// `hash`.
        hash: AlgId,
        /// `sig`.
        #[serde(with = "crate::hexser")]
        sig: Vec<u8>,
    },
    /// TPM_ALG_ECDSA.
    Ecdsa {
        /// `hash`.
        hash: AlgId,
        /// `signatureR`.
        #[serde(with = "crate::hexser")]
        r: Vec<u8>,
        /// `signatureS`.
        #[serde(with = "crate::hexser")]
        s: Vec<u8>,
    },
    /// TPM_ALG_NULL: no signature.
    Null,
}

impl Signature {
    /// Unmarshals a TPMT_SIGNATURE that fills `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        let s = Self::read(&mut r)?;
        r.finish("TPMT_SIGNATURE")?;
        Ok(s)
    }

    /// Reads a TPMT_SIGNATURE.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let at = r.offset();
        let alg = AlgId(r.u16("TPMT_SIGNATURE.sigAlg")?);
        Ok(match alg {
            AlgId::RSASSA | AlgId::RSAPSS => {
                let hash = AlgId(r.u16("TPMS_SIGNATURE_RSA.hash")?);
                let sig = r
                    .tpm2b("TPMS_SIGNATURE_RSA.sig", MAX_RSA_KEY_BYTES)?
                    .to_vec();
                if alg == AlgId::RSASSA {
                    Self::Rsassa { hash, sig }
                } else {
                    Self::Rsapss { hash, sig }
                }
            }
            AlgId::ECDSA => {
                let hash = AlgId(r.u16("TPMS_SIGNATURE_ECC.hash")?);
                let sr = r
                    .tpm2b("TPMS_SIGNATURE_ECC.signatureR", MAX_ECC_KEY_BYTES)?
                    .to_vec();
                let ss = r
                    .tpm2b("TPMS_SIGNATURE_ECC.signatureS", MAX_ECC_KEY_BYTES)?
                    .to_vec();
                Self::Ecdsa { hash, r: sr, s: ss }
            }
            AlgId::NULL => Self::Null,
            other => {
                return Err(WireError::Invalid {
                    what: "TPMT_SIGNATURE.sigAlg",
                    offset: at,
                    reason: format!("unsupported signature algorithm {other}"),
                })
            }
        })
    }

    /// Marshals it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Self::Rsassa { hash, sig } => {
                w.u16(AlgId::RSASSA.0).u16(hash.0).tpm2b(sig);
            }
            Self::Rsapss { hash, sig } => {
                w.u16(AlgId::RSAPSS.0).u16(hash.0).tpm2b(sig);
            }
            Self::Ecdsa { hash, r, s } => {
                w.u16(AlgId::ECDSA.0).u16(hash.0).tpm2b(r).tpm2b(s);
            }
            Self::Null => {
                w.u16(AlgId::NULL.0);
            }
        }
        w.into_bytes()
    }

    /// The signature's algorithm.
    pub fn alg(&self) -> AlgId {
        match self {
            Self::Rsassa { .. } => AlgId::RSASSA,
            Self::Rsapss { .. } => AlgId::RSAPSS,
            Self::Ecdsa { .. } => AlgId::ECDSA,
            Self::Null => AlgId::NULL,
        }
    }

    /// The hash the signature was made over, if any.
    pub fn hash(&self) -> Option<AlgId> {
        match self {
            Self::Rsassa { hash, .. } | Self::Rsapss { hash, .. } | Self::Ecdsa { hash, .. } => {
                Some(*hash)
            }
            Self::Null => None,
        }
    }
}
