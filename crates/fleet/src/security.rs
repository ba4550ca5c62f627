//! `securityProfile` of a VM and of a scale set's `virtualMachineProfile`,
//! in ComputeRP's names: `securityType`, `uefiSettings`
//! (`secureBootEnabled`, `vTpmEnabled`), `encryptionAtHost`.
//!
//! Every field is optional on the wire, as in Azure: the defaults (and the
//! rules about which combinations are allowed) live in [`crate::validate`].
//! [`SecurityProfilePatch`] is the PATCH form, where `null` clears a field.

use serde::{Deserialize, Serialize};

use crate::resources::Patch;

/// `securityProfile.securityType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SecurityType {
    /// No Secure Boot, no vTPM (what an absent `securityType` means on an
    /// existing resource).
    Standard,
    /// UEFI Secure Boot and a vTPM, per `uefiSettings`.
    TrustedLaunch,
    /// A confidential VM (AMD SEV-SNP / Intel TDX). Part of the model so
    /// requests parse; validation refuses it (no such host support here).
    #[serde(rename = "ConfidentialVM")]
    ConfidentialVm,
}

impl SecurityType {
    /// The type as Azure spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "Standard",
            Self::TrustedLaunch => "TrustedLaunch",
            Self::ConfidentialVm => "ConfidentialVM",
        }
    }
}

impl std::fmt::Display for SecurityType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `securityProfile.uefiSettings`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UefiSettings {
    /// Secure Boot on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_boot_enabled: Option<bool>,
    /// vTPM on.
    #[serde(
        rename = "vTpmEnabled",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub v_tpm_enabled: Option<bool>,
}

impl UefiSettings {
    /// Both switches set.
    pub fn new(secure_boot: bool, vtpm: bool) -> Self {
        Self {
            secure_boot_enabled: Some(secure_boot),
            v_tpm_enabled: Some(vtpm),
        }
    }

    /// `self`'s switches, each missing one taken from `base` (PATCH merge).
    #[must_use]
    pub fn merged_over(self, base: Option<UefiSettings>) -> Self {
        let base = base.unwrap_or_default();
        Self {
            secure_boot_enabled: self.secure_boot_enabled.or(base.secure_boot_enabled),
            v_tpm_enabled: self.v_tpm_enabled.or(base.v_tpm_enabled),
        }
    }
}

/// `securityProfile`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityProfile {
    /// Standard, TrustedLaunch or ConfidentialVM; absent on a new resource
    /// means "the default for the image and size".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_type: Option<SecurityType>,
    /// Secure Boot and vTPM switches (only with a `securityType`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uefi_settings: Option<UefiSettings>,
    /// Encryption of temporary disks and caches at the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_at_host: Option<bool>,
}

impl SecurityProfile {
    /// TrustedLaunch with the given switches.
    pub fn trusted_launch(secure_boot: bool, vtpm: bool) -> Self {
        Self {
            security_type: Some(SecurityType::TrustedLaunch),
            uefi_settings: Some(UefiSettings::new(secure_boot, vtpm)),
            encryption_at_host: None,
        }
    }

    /// Standard (the rollback target): no `uefiSettings`.
    pub fn standard() -> Self {
        Self {
            security_type: Some(SecurityType::Standard),
            uefi_settings: None,
            encryption_at_host: None,
        }
    }

    /// The security type, an absent one read as Standard (what it means
    /// for a resource that exists).
    pub fn effective_type(&self) -> SecurityType {
        self.security_type.unwrap_or(SecurityType::Standard)
    }

    /// Trusted Launch with Secure Boot enforced.
    pub fn secure_boot(&self) -> bool {
        self.effective_type() == SecurityType::TrustedLaunch
            && self
                .uefi_settings
                .and_then(|u| u.secure_boot_enabled)
                .unwrap_or(false)
    }

    /// Trusted Launch with a vTPM.
    pub fn vtpm(&self) -> bool {
        self.effective_type() == SecurityType::TrustedLaunch
            && self
                .uefi_settings
                .and_then(|u| u.v_tpm_enabled)
                .unwrap_or(false)
    }
}

/// The effective type of an optional profile (absent = Standard).
pub fn effective_type(profile: Option<&SecurityProfile>) -> SecurityType {
    profile.map_or(SecurityType::Standard, SecurityProfile::effective_type)
}

/// `securityProfile` in a PATCH body: each field absent (unchanged), `null`
/// (cleared) or a value. Rollback is
/// `{"securityType": "Standard", "uefiSettings": null}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityProfilePatch {
    /// `securityType`.
    #[serde(default, skip_serializing_if = "Patch::is_absent")]
    pub security_type: Patch<SecurityType>,
    /// `uefiSettings`: a value is merged switch by switch over the current
    /// one; `null` clears both.
    #[serde(default, skip_serializing_if = "Patch::is_absent")]
    pub uefi_settings: Patch<UefiSettings>,
    /// `encryptionAtHost`.
    #[serde(default, skip_serializing_if = "Patch::is_absent")]
    pub encryption_at_host: Patch<bool>,
}

impl SecurityProfilePatch {
    /// The profile after this patch is applied to `current`; `None` if
    /// every field ends up cleared.
    pub fn apply(&self, current: Option<SecurityProfile>) -> Option<SecurityProfile> {
        let cur = current.unwrap_or_default();
        let uefi_settings = match self.uefi_settings {
            Patch::Absent => cur.uefi_settings,
            Patch::Null => None,
            Patch::Value(u) => Some(u.merged_over(cur.uefi_settings)),
        };
        let out = SecurityProfile {
            security_type: self.security_type.apply(cur.security_type),
            uefi_settings,
            encryption_at_host: self.encryption_at_host.apply(cur.encryption_at_host),
        };
        (out != SecurityProfile::default()).then_some(out)
    }
}

/// Applies an optional `securityProfile` patch (`null` clears the whole
/// profile) to the current profile.
pub fn apply_profile_patch(
    patch: &Patch<SecurityProfilePatch>,
    current: Option<SecurityProfile>,
) -> Option<SecurityProfile> {
    match patch {
        Patch::Absent => current,
        Patch::Null => None,
        Patch::Value(p) => p.apply(current),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollback_patch_clears_uefi_settings() {
        let tl = SecurityProfile::trusted_launch(true, true);
        let p: SecurityProfilePatch =
            serde_json::from_str(r#"{"securityType":"Standard","uefiSettings":null}"#).unwrap();
        assert_eq!(p.apply(Some(tl)), Some(SecurityProfile::standard()));
        let p: SecurityProfilePatch =
            serde_json::from_str(r#"{"securityType":"Standard"}"#).unwrap();
        let out = p.apply(Some(tl)).unwrap();
        assert_eq!(out.uefi_settings, tl.uefi_settings);
        let p: SecurityProfilePatch =
            serde_json::from_str(r#"{"uefiSettings":{"secureBootEnabled":false}}"#).unwrap();
        assert_eq!(
            p.apply(Some(tl)),
            Some(SecurityProfile::trusted_launch(false, true))
        );
    }

    #[test]
    fn accessors() {
        assert!(SecurityProfile::trusted_launch(true, false).secure_boot());
        assert!(!SecurityProfile::trusted_launch(true, false).vtpm());
        let mut s = SecurityProfile::trusted_launch(true, true);
        s.security_type = Some(SecurityType::Standard);
        assert!(!s.secure_boot());
        assert_eq!(effective_type(None), SecurityType::Standard);
    }
}
