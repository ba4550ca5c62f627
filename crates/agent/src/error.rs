//! The agent's error type.

use std::io;
use std::path::PathBuf;

/// What went wrong in one step; the session turns it into an `error`
/// message naming [`AgentError::stage`] and goes on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// A TPM command failed.
    #[error("{what}: {source}")]
    Tpm {
        /// The step (`ek`, `ak`, `quote`, `pcr_read`, `ek_certificate`,
        /// `activate`).
        stage: &'static str,
        /// What was being done.
        what: &'static str,
        /// The client's error (command and decoded response code).
        source: trustlaunch_tpm_client::Error,
    },
    /// A guest file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The step.
        stage: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A guest file is larger than the agent reads.
    #[error("{path}: larger than {limit} bytes")]
    TooLarge {
        /// The step.
        stage: &'static str,
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: usize,
    },
    /// The challenge's nonce cannot be a quote's qualifyingData.
    #[error("nonce of {len} bytes: must be 1 to {max} bytes")]
    Nonce {
        /// Its length.
        len: usize,
        /// The largest accepted (TPM2B_DATA: the largest digest).
        max: usize,
    },
    /// The PCRs changed between the quote and the read on every attempt.
    #[error("PCRs kept changing around the quote ({attempts} attempts)")]
    PcrsChanging {
        /// Attempts made.
        attempts: usize,
    },
    /// The evidence does not fit in one frame.
    #[error("evidence frame of {len} bytes exceeds the protocol's {limit} (event log {event_log} bytes)")]
    FrameTooLarge {
        /// The encoded frame's length.
        len: usize,
        /// `MAX_FRAME`.
        limit: usize,
        /// The event log's length.
        event_log: usize,
    },
    /// No TPM device could be opened.
    #[error("no TPM device: {tried}")]
    NoTpm {
        /// Each path tried and why it failed.
        tried: String,
    },
    /// The attestation port did not appear in time.
    #[error("no virtio-serial port named {name} under {dir} after {waited_secs} s{last}")]
    NoPort {
        /// The port name looked for.
        name: String,
        /// The sysfs directory scanned.
        dir: PathBuf,
        /// How long the agent waited.
        waited_secs: u64,
        /// The last error opening it, if it was found but not opened.
        last: String,
    },
}

impl AgentError {
    /// The protocol step this error belongs to (the `stage` of the `error`
    /// message sent to the host).
    pub fn stage(&self) -> &'static str {
        match self {
            AgentError::Tpm { stage, .. }
            | AgentError::Io { stage, .. }
            | AgentError::TooLarge { stage, .. } => stage,
            AgentError::Nonce { .. } => "challenge",
            AgentError::PcrsChanging { .. } => "pcr_read",
            AgentError::FrameTooLarge { .. } => "evidence",
            AgentError::NoTpm { .. } => "tpm",
            AgentError::NoPort { .. } => "port",
        }
    }
}
