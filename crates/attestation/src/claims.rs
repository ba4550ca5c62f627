//! Claims in Azure's guest-attestation names where they mean the same
//! (`secureboot`, `x-ms-attestation-type`, `x-ms-azurevm-*`), so tokens
//! read the way Azure users expect.

use serde::Serialize;

/// The claims of one appraisal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Claims {
    /// Secure Boot was on (measured SecureBoot = 1, and the log verified).
    pub secureboot: bool,
    /// Always `azurevm`.
    #[serde(rename = "x-ms-attestation-type")]
    pub attestation_type: &'static str,
    /// The PCRs the quote covered.
    #[serde(rename = "x-ms-azurevm-attested-pcrs")]
    pub attested_pcrs: Vec<u32>,
    /// db equals the template's.
    #[serde(rename = "x-ms-azurevm-dbvalidated")]
    pub db_validated: bool,
    /// dbx equals the template's.
    #[serde(rename = "x-ms-azurevm-dbxvalidated")]
    pub dbx_validated: bool,
    /// PK and KEK equal the template's.
    #[serde(rename = "x-ms-azurevm-default-securebootkeysvalidated")]
    pub default_secure_boot_keys_validated: bool,
    /// A boot loader debug flag was measured.
    #[serde(rename = "x-ms-azurevm-bootdebug-enabled")]
    pub boot_debug_enabled: bool,
    /// A kernel debug flag was measured.
    #[serde(rename = "x-ms-azurevm-kerneldebug-enabled")]
    pub kernel_debug_enabled: bool,
    /// Test signing (shim validation disabled) was measured.
    #[serde(rename = "x-ms-azurevm-testsigning-enabled")]
    pub test_signing_enabled: bool,
    /// `Linux`.
    #[serde(rename = "x-ms-azurevm-ostype")]
    pub os_type: &'static str,
    /// The distribution, when the measured `.osrel` or boot path says.
    #[serde(rename = "x-ms-azurevm-osdistro")]
    pub os_distro: String,
    /// The VM's id.
    #[serde(rename = "x-ms-azurevm-vmid")]
    pub vm_id: String,
    /// The quote's nonce (hex).
    #[serde(rename = "x-ms-azurevm-nonce")]
    pub nonce: String,
}
