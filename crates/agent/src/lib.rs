//! The guest agent of trustlaunch: runs inside a Trusted Launch VM (from a
//! busybox initramfs or a full system) and answers the host's attestation
//! challenges over the virtio-serial port
//! [`trustlaunch_protocol::PORT_NAME`], speaking the protocol of
//! `trustlaunch-protocol` (one JSON line per frame).
//!
//! What it reads: the guest TPM (`/dev/tpmrm0`, else `/dev/tpm0`) through
//! `trustlaunch-tpm-client` — the EK (RSA-2048, TCG template L-1, re-derived
//! at each start), the AK (restricted signing key under the EK, persistent
//! at [`AK_HANDLE`] `0x81000003` so it is the same across reboots), the EK
//! certificate in NV `0x01c00002`, TPM2_Quote of SHA-256 PCRs 0-15 and
//! TPM2_PCR_Read of the same PCRs; the firmware's TCG event log
//! (securityfs), the `SecureBoot` efivar, the boot id, the kernel
//! release and the kernel log (`/dev/kmsg`, non-blocking and bounded, for
//! modules that failed signature verification: [`untrusted_modules`]).
//! All paths are in [`GuestPaths`].
//!
//! What it does: finds the port in sysfs (no udev in an initramfs) and
//! waits for it ([`wait_for_port`]); answers `challenge` with `evidence`
//! and `activate` with `activated` (TPM2_ActivateCredential), a failed step
//! with `error {stage, message}`; survives the host being absent (a port
//! read returns EOF until the host connects) and any malformed frame
//! ([`run_session`]).
//!
//! What it does not do: judge its evidence (that is the verifier's, in
//! `trustlaunch-tpm` and the attestation service), keep secrets beyond
//! handing the activated credential back to the host, talk to anything
//! but the port and the TPM, or use `unsafe`, threads or an async runtime.

#![forbid(unsafe_code)]

mod attester;
mod error;
mod guest;
mod kmsg;
#[cfg(feature = "replayed-guest")]
pub mod replayed;
mod session;

pub use attester::{
    is_restricted_signing_key, provision_ak, quoted_pcrs, short_hex, AkOrigin, Attester, Keys,
    TpmAttester, AK_HANDLE, MAX_NONCE,
};
pub use error::AgentError;
pub use guest::{
    find_port, open_tpm, parse_secure_boot, read_bounded, read_secure_boot, read_text,
    wait_for_port, GuestPaths, DEFAULT_PORT_WAIT, MAX_EVENT_LOG, PORT_POLL,
};
pub use kmsg::{
    read_kernel_log, read_untrusted_modules, untrusted_modules, MAX_KMSG_BYTES, MAX_KMSG_RECORDS,
    MAX_UNTRUSTED_MODULES, UNKNOWN_LOCKDOWN,
};
pub use session::{run_session, Output, Session, SessionEnd, SessionOptions};

/// Logs one line to stderr (the VM console), prefixed `trustlaunch-agent:`.
pub fn log(msg: impl std::fmt::Display) {
    eprintln!("trustlaunch-agent: {msg}");
}
