//! Errors of parsing a log. Every variant names the event number (0-based,
//! in log order) and the absolute byte offset where parsing stopped.

use crate::cursor::Short;

/// Why a log could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The input holds no event at all.
    #[error("the event log is empty")]
    Empty,
    /// A field runs past the end of the input.
    #[error("event {event} at offset {event_offset}: {field} needs {needed} bytes at offset {offset}, only {available} left")]
    Truncated {
        /// Event number.
        event: usize,
        /// Offset of the event's header.
        event_offset: usize,
        /// Which field was being read.
        field: &'static str,
        /// Offset of the read.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },
    /// The Spec ID event (the first event of a crypto-agile log) is invalid.
    #[error("event 0 at offset {offset}: invalid Spec ID event: {reason}")]
    SpecId {
        /// Offset of the field at fault.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// An event carries a digest of an algorithm the Spec ID event did not
    /// declare, so its size (and the rest of the log) cannot be known.
    #[error("event {event} at offset {event_offset}: digest algorithm 0x{alg:04x} at offset {offset} is not declared by the Spec ID event")]
    UndeclaredAlgorithm {
        /// Event number.
        event: usize,
        /// Offset of the event's header.
        event_offset: usize,
        /// Offset of the algorithm ID.
        offset: usize,
        /// The TPM_ALG_ID found.
        alg: u16,
    },
    /// An event's digest list is not one digest per declared bank.
    #[error("event {event} at offset {event_offset}: {reason}")]
    Digests {
        /// Event number.
        event: usize,
        /// Offset of the event's header.
        event_offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// The log holds more events than the caller allowed.
    #[error("the log has more than {limit} events (at offset {offset})")]
    TooManyEvents {
        /// The limit in force.
        limit: usize,
        /// Offset where the next event would start.
        offset: usize,
    },
}

impl ParseError {
    pub(crate) fn truncated(
        event: usize,
        event_offset: usize,
        field: &'static str,
        s: Short,
    ) -> Self {
        ParseError::Truncated {
            event,
            event_offset,
            field,
            offset: s.offset,
            needed: s.needed,
            available: s.available,
        }
    }
}
