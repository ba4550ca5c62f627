//! TPM 2.0 evidence, verifier side: the structures evidence needs (TPM 2.0
//! Library Part 2: TPMS_ATTEST §10.12, TPMT_SIGNATURE §11.3,
//! TPMT_PUBLIC §12.2, TPML_PCR_SELECTION §10.9), the TPM name of a key
//! (Part 1 §16), quote verification (Part 3 §18.4), attestation-key checks,
//! credential activation's verifier side (MakeCredential, Part 1 §24, with
//! KDFa/KDFe of Part 1 §11.4.10), EK certificates (TCG EK Credential Profile
//! 2.x) and the platform's vTPM CA.
//!
//! Pure: no files, sockets, clocks, environment or randomness of its own —
//! callers pass the time and an RNG. No `unsafe`, no C library: the
//! verifier's path is pure Rust (RustCrypto). Every structure from a TPM or
//! a client is untrusted: bounded, checked unmarshalling with typed errors
//! naming the field and offset.
//!
//! It does not talk to a TPM (see `trustlaunch-tpm-client`) and does not
//! judge a boot (that is appraisal's job).

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

pub mod ak;
pub mod alg;
pub mod attest;
pub mod ca;
pub mod credential;
pub mod ek;
pub mod ekcert;
mod hexser;
pub mod pcr;
pub mod public;
pub mod quote;
pub mod rsa_fast;
pub mod signature;
pub mod wire;
