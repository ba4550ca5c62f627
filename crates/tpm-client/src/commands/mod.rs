//! The TPM commands, grouped by concept. Each submodule adds methods to
//! [`crate::Tpm`] and defines the typed results they return.

pub mod attest;
pub mod nv;
pub mod object;
pub mod pcr;
pub mod policy;
pub mod startup;

/// Bounds on response fields (TPM 2.0 Part 2 §10–12, with this crate's
/// algorithms: SHA-512 digests at most, RSA 4096 at most); every `TPM2B`
/// in a response is checked against one of these before it is copied.
pub(crate) mod limits {
    /// `TPM2B_DIGEST`, `TPM2B_NONCE`: `sizeof(TPMU_HA)`.
    pub const DIGEST: usize = 64;
    /// `TPM2B_NAME`: hash algorithm plus digest.
    pub const NAME: usize = 2 + DIGEST;
    /// `TPM2B_PUBLIC`, `TPM2B_PRIVATE`, `TPM2B_CREATION_DATA`, `TPM2B_ATTEST`:
    /// any structure fits in a 4096-byte response.
    pub const STRUCTURE: usize = 4096;
    /// An RSA signature or modulus (4096 bits).
    pub const RSA_KEY: usize = 512;
    /// An ECC coordinate or signature half (P-521).
    pub const ECC_PARAMETER: usize = 66;
    /// Entries of a `TPML_PCR_SELECTION` (`HASH_COUNT` on any real TPM is small).
    pub const PCR_BANKS: usize = 16;
    /// Entries of a `TPML_DIGEST` (`TPM2_PCR_Read` returns at most 8).
    pub const DIGEST_LIST: usize = 8;
}
