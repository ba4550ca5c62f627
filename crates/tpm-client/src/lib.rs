//! A TPM 2.0 client in pure Rust over the raw command stream, for the
//! guest agent (on `/dev/tpmrm0`) and for tests and host-side tooling (on
//! swtpm's TCP command port).
//!
//! Implements, from TPM 2.0 Library Part 3 (Commands) with the structures
//! of Part 2: Startup (§9.3), GetRandom (§16.1), GetCapability for TPM
//! properties (§30.2), CreatePrimary (§24.1), Create (§12.1), Load (§12.2),
//! ReadPublic (§12.4), ActivateCredential (§12.5), Quote (§18.4), PCR_Read
//! (§22.4), PCR_Extend (§22.2), StartAuthSession (§11.1), PolicySecret
//! (§23.4), FlushContext (§28.4), EvictControl (§28.5), NV_DefineSpace,
//! NV_UndefineSpace, NV_ReadPublic, NV_Write, NV_WriteLock and NV_Read
//! (§31). Command framing and authorization areas follow Part 1 §18;
//! response codes are decoded per Part 2 §6.6 ([`ResponseCode`]). EK
//! templates and certificate NV indices follow the TCG EK Credential
//! Profile 2.5 (templates L-1/L-2, indices `0x01c00002`/`0x01c0000a`).
//!
//! # Transports
//!
//! [`Tpm::open_device`] talks to `/dev/tpmrm0` (write a command, read its
//! response); [`Tpm::over_unix`] to swtpm over a connected unix stream
//! (the end of a socket pair swtpm was started with, or its unix command
//! socket), the way the platform provisions vTPMs: no other process can
//! reach the TPM; [`Tpm::connect_swtpm`] to swtpm's TCP command port, one
//! connection per command, for tests with tpm2-tools (which reach swtpm
//! only over TCP): a loopback port is open to every local user. Reads and
//! writes are bounded by timeouts. [`SwtpmControl`] speaks swtpm's control
//! channel (capabilities, shutdown). Any other carrier implements
//! [`Transport`]. Responses larger than
//! [`MAX_RESPONSE_SIZE`] or whose header size field disagrees with the
//! bytes received are refused. `TPM_RC_RETRY`, `TPM_RC_YIELDED` and
//! `TPM_RC_TESTING` make the client resend the command a bounded number of
//! times (swtpm answers `TPM_RC_RETRY` to the first quote or activation
//! after it deferred an algorithm self-test).
//!
//! # Keys
//!
//! The EK is the default-template primary key in the endorsement hierarchy
//! ([`Tpm::create_ek`]), identical to `tpm2_createek`'s. The AK is created
//! *under the EK* with TPM2_Create and loaded with TPM2_Load
//! ([`Tpm::create_ak`]), as `tpm2_createak` does: the EK has
//! `adminWithPolicy` set and `userWithAuth` clear, so each use of it as a
//! parent is authorized by a fresh policy session that ran
//! `TPM2_PolicySecret(TPM_RH_ENDORSEMENT)`, whose digest is the profile's
//! policy A. The AK's `TPM2B_PRIVATE` is returned so it can be reloaded
//! under the same EK later ([`Tpm::load_ak`]).
//!
//! # NV
//!
//! [`Tpm::provision_ek_certificate`] writes an EK certificate the way
//! `swtpm_setup --create-ek-cert` does: the index is defined with platform
//! authorization and PLATFORMCREATE | AUTHREAD | OWNERREAD | PPREAD |
//! PPWRITE | NO_DA | WRITEDEFINE, written with platform authorization, and
//! optionally write-locked for good. A guest can then read it with the
//! index's empty authValue ([`Tpm::read_ek_certificate`]). Owner-defined
//! indices readable and writable with owner or index authorization are
//! available too ([`NvDefinition::owner_read_write`]).
//!
//! # Wire formats out
//!
//! Everything a verifier checks is returned as the TPM's own bytes: public
//! areas as `TPMT_PUBLIC` (see [`LoadedKey::public_tpm2b`] for the
//! `TPM2B_PUBLIC` "tss" file tpm2-tools reads), key names as the TPM
//! computed them, quotes as `TPMS_ATTEST` and `TPMT_SIGNATURE`, PCR values as
//! digests.
//!
//! # What it does not do
//!
//! No cryptography: no HMAC or salted sessions, no parameter encryption, no
//! signature or certificate verification, no MakeCredential (all of that is
//! the verifier's, in `trustlaunch-tpm`). No TSS, no C, no `unsafe`.
//! Responses are untrusted: frames are bounded ([`MAX_RESPONSE_SIZE`]),
//! every field is bounds-checked, trailing bytes are rejected, and nothing
//! panics on a hostile response.

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

mod client;
pub mod commands;
mod error;
#[cfg(feature = "swtpm-harness")]
pub mod harness;
mod marshal;
mod rc;
mod session;
mod swtpm_ctrl;
pub mod templates;
mod transport;
mod types;

pub use client::Tpm;
pub use commands::attest::Quote;
pub use commands::nv::{NvAttributes, NvAuth, NvDefinition, NvPublic};
pub use commands::object::{to_tpm2b, AttestationKey, CreatedObject, LoadedKey, PublicInfo};
pub use commands::pcr::{PcrValue, PcrValues};
pub use commands::startup::StartupOutcome;
pub use error::Error;
pub use marshal::MarshalError;
pub use rc::{RcFormat, RcLocation, ResponseCode};
pub use session::Authorization;
pub use swtpm_ctrl::{ControlError, SwtpmControl};
pub use transport::{
    DeviceTransport, TcpTransport, Transport, TransportError, UnixTransport, HEADER_SIZE,
    MAX_RESPONSE_SIZE,
};
pub use types::{
    CommandCode, HashAlg, Hierarchy, KeyAlg, NvIndex, ObjectHandle, PcrSelection, SessionHandle,
    MAX_PCR_INDEX,
};
