//! UEFI Secure Boot toolkit (UEFI 2.10 §32; Microsoft Authenticode PE
//! specification): signature databases (EFI_SIGNATURE_LIST), authenticated
//! variables (EFI_VARIABLE_AUTHENTICATION_2), PE/COFF Authenticode hashing,
//! signature reading and verification against db/dbx, signing, and edk2
//! OVMF variable stores.
//!
//! Pure: bytes in, typed values and typed errors out; no files, clocks or
//! randomness of its own. Every image, signature list and variable store is
//! untrusted: bounded, checked parsing; never a panic.

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

pub mod authenticode;
pub mod authvar;
pub mod chain;
pub mod cms_build;
pub mod keys;
pub mod pcr7;
pub mod pe;
pub mod pkcs7;
pub mod siglist;
pub mod sign;
pub mod varstore;
pub mod verify;
