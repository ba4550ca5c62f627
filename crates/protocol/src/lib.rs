//! The attestation channel's wire protocol: what the guest agent
//! (`trustlaunch-agent`) and the host (the runtime, later the attestation
//! service) say to each other over the VM's virtio-serial port
//! [`PORT_NAME`].
//!
//! Frames are single-line JSON objects ended by `\n`, at most
//! [`MAX_FRAME`] bytes; byte strings are lower-case hex. A session is:
//!
//! ```text
//! host  -> guest challenge  {nonce}
//! guest -> host  evidence   {agent, boot id, nonce, EK cert + public,
//!                            AK public + name, quote, PCR values, event
//!                            log, SecureBoot, untrusted kernel modules}
//! host  -> guest activate   {credential_blob, secret}   (MakeCredential for
//!                            the AK's name under the EK)
//! guest -> host  activated  {secret}                    (ActivateCredential)
//! host  -> guest done       {}
//! ```
//!
//! The host speaks first: until the guest opens its end of the port, QEMU
//! leaves the host's bytes in the socket, so a challenge sent at start
//! waits for the agent (the guest cannot know when the host connects; the
//! host always knows when the VM starts). Either side may send `error`
//! instead of the next step. The host may send another `challenge` at any
//! time after `done` (the attestation issue adds periodic attestation on
//! top of this).
//!
//! Nothing here judges evidence: it only carries it. Everything a guest
//! sends is untrusted; [`FrameReader`] bounds frames before allocating
//! them and [`decode`] rejects unknown message types, missing fields and
//! malformed hex with an error naming the frame.
//!
//! Pure: no IO, no clocks.

#![forbid(unsafe_code)]
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

mod bytes;
mod frame;

pub use bytes::Bytes;
pub use frame::{decode, encode, FrameError, FrameReader};

use serde::{Deserialize, Serialize};

/// The virtio-serial port's name (`/sys/class/virtio-ports/*/name`).
pub const PORT_NAME: &str = "org.trustlaunch.attest.0";

/// The protocol version this crate speaks.
pub const VERSION: u32 = 1;

/// The largest frame either side accepts, newline included (event logs of
/// real machines are 20-200 KiB; the agent reads at most 16 MiB and hex
/// doubles it).
pub const MAX_FRAME: usize = 36 << 20;

/// Nonce length the host sends (bytes). TPM2_Quote's qualifyingData is a
/// TPM2B_DATA, at most the size of the largest digest (64 bytes).
pub const NONCE_LEN: usize = 32;

/// A message from the guest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum GuestMessage {
    /// The answer to a challenge.
    Evidence(Box<Evidence>),
    /// The answer to `activate`: the decrypted credential.
    Activated {
        /// The credential as TPM2_ActivateCredential returned it.
        secret: Bytes,
    },
    /// The agent could not do a step.
    Error {
        /// The step (`evidence`, `activate`, ...).
        stage: String,
        /// Why.
        message: String,
    },
}

/// A message from the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum HostMessage {
    /// Quote the PCRs with this nonce.
    Challenge {
        /// The nonce ([`NONCE_LEN`] bytes), becomes the quote's
        /// qualifyingData.
        nonce: Bytes,
    },
    /// Activate this credential (made for the AK's name under the EK).
    Activate {
        /// TPM2B_ID_OBJECT contents.
        credential_blob: Bytes,
        /// TPM2B_ENCRYPTED_SECRET contents.
        secret: Bytes,
    },
    /// The session's exchange is complete.
    Done {},
    /// The host refuses the session (the reason is for the guest's log).
    Error {
        /// Why.
        message: String,
    },
}

/// One PCR bank's values as the guest's TPM returned them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcrBank {
    /// TPM_ALG_ID of the bank's hash (0x000b = SHA-256).
    pub alg: u16,
    /// (PCR index, value) in ascending index order.
    pub values: Vec<(u8, Bytes)>,
}

/// What the agent sends in answer to a challenge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// Protocol version ([`VERSION`]).
    pub version: u32,
    /// Agent name and version, e.g. `trustlaunch-agent 0.1.0`.
    pub agent: String,
    /// The guest kernel's boot id (`/proc/sys/kernel/random/boot_id`),
    /// empty if unknown.
    pub boot_id: String,
    /// The challenge's nonce, echoed.
    pub nonce: Bytes,
    /// The EK certificate (DER) from NV index 0x01c00002, if present.
    pub ek_certificate: Option<Bytes>,
    /// The EK's TPMT_PUBLIC (RSA-2048 template L-1).
    pub ek_public: Bytes,
    /// The AK's TPMT_PUBLIC.
    pub ak_public: Bytes,
    /// The AK's name as the TPM computed it.
    pub ak_name: Bytes,
    /// TPMS_ATTEST of the quote.
    pub quote_attest: Bytes,
    /// TPMT_SIGNATURE of the quote.
    pub quote_signature: Bytes,
    /// TPML_PCR_SELECTION quoted, as marshalled.
    pub pcr_selection: Bytes,
    /// The PCR values quoted (read right after the quote).
    pub pcrs: Vec<PcrBank>,
    /// The firmware's TCG event log
    /// (`/sys/kernel/security/tpm0/binary_bios_measurements`).
    pub event_log: Bytes,
    /// The `SecureBoot` variable's value as the guest reads it from
    /// efivarfs (`None`: not readable, e.g. no UEFI).
    pub secure_boot: Option<u8>,
    /// `uname -r` of the guest kernel.
    pub kernel_release: String,
    /// Kernel modules the guest kernel refused, or loaded but flagged, for
    /// a failed or missing signature since boot, by name as the kernel
    /// logged them; an attempt whose module the kernel did not name (a
    /// refusal under lockdown or `module.sig_enforce`) is reported as
    /// `unknown module (<the kernel's reason>)`. Guest-reported: the quote
    /// does not cover it. Absent (agents before it): empty.
    #[serde(default)]
    pub untrusted_modules: Vec<String>,
}
