//! Claims in Azure's guest-attestation names where they mean the same
//! (`secureboot`, `x-ms-attestation-type`, `x-ms-azurevm-*`), so tokens
//! read the way Azure users expect.
//!
//! Azure's `x-ms-azurevm-osbuild` and `-osversion-major/minor` are not
//! issued: no event a quote covers carries the OS version (Windows'
//! boot log measures none), and a claim the guest could choose would
//! read as verified.

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
    /// Test signing was measured on: shim's validation disabled, or
    /// Windows' TESTSIGNING.
    #[serde(rename = "x-ms-azurevm-testsigning-enabled")]
    pub test_signing_enabled: bool,
    /// The boot is Windows' (its boot manager, authorised by Microsoft's
    /// Windows certificates, measured PCRs 12-14 and closed them).
    #[serde(rename = "x-ms-azurevm-is-windows")]
    pub is_windows: bool,
    /// Windows: the hypervisor's debugger was measured on.
    #[serde(
        rename = "x-ms-azurevm-hypervisordebug-enabled",
        skip_serializing_if = "Option::is_none"
    )]
    pub hypervisor_debug_enabled: Option<bool>,
    /// Windows: flight signing (pre-release code) was measured on.
    #[serde(
        rename = "x-ms-azurevm-flightsigning-enabled",
        skip_serializing_if = "Option::is_none"
    )]
    pub flight_signing_enabled: Option<bool>,
    /// Windows: code integrity was measured off (or not measured).
    #[serde(
        rename = "x-ms-azurevm-signingdisabled",
        skip_serializing_if = "Option::is_none"
    )]
    pub signing_disabled: Option<bool>,
    /// Windows: every boot, kernel and hypervisor debugger was measured
    /// off.
    #[serde(
        rename = "x-ms-azurevm-debuggersdisabled",
        skip_serializing_if = "Option::is_none"
    )]
    pub debuggers_disabled: Option<bool>,
    /// Windows: an early-launch anti-malware driver was measured.
    #[serde(
        rename = "x-ms-azurevm-elam-enabled",
        skip_serializing_if = "Option::is_none"
    )]
    pub elam_enabled: Option<bool>,
    /// Windows: the HVCI policy measured (`VBS_HVCI_POLICY`, 0 when none
    /// was).
    #[serde(
        rename = "x-ms-azurevm-hvci-policy",
        skip_serializing_if = "Option::is_none"
    )]
    pub hvci_policy: Option<u64>,
    /// `Linux` or `Windows`.
    #[serde(rename = "x-ms-azurevm-ostype")]
    pub os_type: &'static str,
    /// The distribution, when the measured `.osrel` or boot path says;
    /// `Microsoft` for Windows.
    #[serde(rename = "x-ms-azurevm-osdistro")]
    pub os_distro: String,
    /// The VM's id.
    #[serde(rename = "x-ms-azurevm-vmid")]
    pub vm_id: String,
    /// The quote's nonce (hex).
    #[serde(rename = "x-ms-azurevm-nonce")]
    pub nonce: String,
}
