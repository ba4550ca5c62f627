//! The crate's error type.

use std::io;

use thiserror::Error;

use crate::marshal::MarshalError;
use crate::rc::ResponseCode;
use crate::transport::TransportError;
use crate::types::{CommandCode, PcrSelection};

/// Everything that can go wrong talking to a TPM.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The TPM device could not be opened or the simulator reached.
    #[error("cannot open TPM at {target}: {source}")]
    Open {
        /// The device path or socket address.
        target: String,
        /// The underlying IO error.
        source: io::Error,
    },
    /// Sending the command or receiving the response failed.
    #[error("{command}: {source}")]
    Transport {
        /// The command in flight.
        command: CommandCode,
        /// What failed.
        source: TransportError,
    },
    /// The TPM answered with a non-success response code.
    #[error("{command} failed: {rc}")]
    Tpm {
        /// The command that failed.
        command: CommandCode,
        /// The decoded response code.
        rc: ResponseCode,
    },
    /// The response did not unmarshal.
    #[error("{command}: malformed response: {source}")]
    Malformed {
        /// The command whose response is malformed.
        command: CommandCode,
        /// Where unmarshalling stopped.
        source: MarshalError,
    },
    /// The response was well-formed but not what the command promises
    /// (e.g. PCR values for a selection that was not asked for).
    #[error("{command}: unexpected response: {reason}")]
    Unexpected {
        /// The command.
        command: CommandCode,
        /// What was wrong.
        reason: &'static str,
    },
    /// An argument cannot be encoded (too long for its `TPM2B`, empty
    /// selection, ...). Nothing was sent.
    #[error("{command}: invalid argument: {source}")]
    InvalidArgument {
        /// The command that was being built.
        command: CommandCode,
        /// What is wrong with it.
        source: MarshalError,
    },
    /// The TPM returned no values for part of a PCR selection (a bank that
    /// is not allocated, or PCR indices it does not have).
    #[error("TPM2_PCR_Read: the TPM has no values for {remaining}")]
    PcrUnavailable {
        /// The part of the selection that could not be read.
        remaining: PcrSelection,
    },
}

impl Error {
    /// The TPM response code, if the TPM rejected the command.
    pub fn response_code(&self) -> Option<ResponseCode> {
        match self {
            Error::Tpm { rc, .. } => Some(*rc),
            _ => None,
        }
    }
}
