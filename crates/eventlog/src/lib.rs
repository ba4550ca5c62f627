//! TCG PC Client event logs: parse, decode, replay, and extract the boot
//! evidence that appraisal needs.
//!
//! Implements the TCG PC Client Platform Firmware Profile (PFP) 1.05/1.06:
//! the SHA-1 log format and the crypto-agile format (§10.2, Spec ID event
//! §10.4.5.1, any set of banks including algorithms this crate does not
//! know, sized by the Spec ID event), every event type of §10.4.1 with the
//! EFI event data structures of §10.4 and UEFI 2.10 (variables, load
//! options, signature lists, device paths §10.3/§10.6, GPT, handoff tables,
//! firmware blobs), PCR initial values (§3.3.4, StartupLocality §10.4.5.3,
//! H-CRTM), replay (TPM 2.0 Part 1 §17) and verification against PCR values.
//!
//! This crate does no IO: bytes in, typed values and typed errors out. It
//! reads no files, sockets, clocks or environment, and has no `unsafe`.
//! Every input is untrusted: reads are bounds-checked, lengths are bounded
//! by the input before anything is allocated, loops advance by at least one
//! header per step, and malformed input gives a [`ParseError`] naming the
//! event number and byte offset. It never panics on input.
//!
//! It deliberately does not judge a boot (that is appraisal's job, with a
//! baseline) and does not verify signatures or certificates (the Secure Boot
//! and TPM crates do). It does not parse IMA logs.

#![forbid(unsafe_code)]
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]
#![cfg_attr(
    test,
    allow(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::arithmetic_side_effects
    )
)]

mod alg;
mod cursor;
mod data;
mod device_path;
mod digest_check;
mod efi;
mod error;
mod event_type;
mod evidence;
mod guid;
pub mod hex;
mod log;
mod replay;
mod ser;
pub mod sipa;
mod text;
pub mod windows;

pub use alg::{Digest, HashAlg, MAX_DIGEST_SIZE};
pub use data::{
    ConfigurationTable, DecodeError, EventData, GptData, GptPartition, Locator, TaggedEvent,
    SP800_155_EVENT3_SIGNATURE, SP800_155_SIGNATURE,
};
pub use device_path::{DevicePath, DevicePathError, DevicePathNode};
pub use digest_check::{
    check_digests, check_digests_in, grub_measured_text, DigestMismatch, Hashed, GRUB_PREFIXES,
};
pub use efi::{
    EfiVariable, LoadOption, SignatureData, SignatureList, StructError, VariableContent,
    CERT_SHA256, CERT_X509,
};
pub use error::ParseError;
pub use event_type::EventType;
pub use evidence::{
    Authority, BootEvidence, BootImage, ImageKind, IplString, MeasuredVariable, Milestone,
    MilestoneKind, UkiSection,
};
pub use guid::Guid;
pub use log::{
    AlgorithmSize, Event, EventDigests, EventLog, LogFormat, ParseLimits, SpecIdEvent,
    SPEC_ID_SIGNATURE_AGILE, SPEC_ID_SIGNATURE_LEGACY,
};
pub use replay::{
    initial_value, is_extended, replay, replay_banks, startup_locality, verify, PcrBanks, PcrCheck,
    PcrStatus, Replay, Verification, Workaround, STARTUP_LOCALITY_SIGNATURE,
};
pub use text::TextEncoding;
