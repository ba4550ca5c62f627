//! What a VM is: its typed spec, in Azure's names (`hyperVGeneration`,
//! `securityProfile.securityType`, `uefiSettings.secureBootEnabled`,
//! `vTpmEnabled`), checked before anything is created. Pure.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a spec is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The name is not 1-40 characters of `a-z 0-9 -` starting with a
    /// letter or digit.
    #[error(
        "VM name {0:?}: use 1-40 characters a-z, 0-9 and '-', starting with a letter or digit"
    )]
    BadName(String),
    /// Gen1 VMs boot legacy BIOS: no Secure Boot, no Trusted Launch.
    #[error("a V1 (legacy BIOS) VM cannot be TrustedLaunch or have uefiSettings: use hyperVGeneration V2")]
    Gen1Security,
    /// `uefiSettings` is given for a Standard VM.
    #[error(
        "uefiSettings needs securityType TrustedLaunch (a Standard VM has no Secure Boot or vTPM)"
    )]
    UefiSettingsWithoutSecurityType,
    /// vCPUs or memory out of range.
    #[error("{what} {value} is out of range {min}..={max}")]
    Size {
        /// `vcpus` or `memoryMiB`.
        what: &'static str,
        /// Given.
        value: u64,
        /// Minimum.
        min: u64,
        /// Maximum.
        max: u64,
    },
    /// Secure Boot on without keys to enforce it.
    #[error("secureBootEnabled needs a key template with keys (microsoft or custom), not none")]
    SecureBootWithoutKeys,
    /// `osProfile` holds a bad host name or SSH key.
    #[error("osProfile: {0}")]
    OsProfile(String),
    /// `networkProfile` names a bad bridge.
    #[error("networkProfile: {0}")]
    Network(String),
    /// A data disk is out of range or its LUN is taken.
    #[error("data disk at LUN {lun}: {reason}")]
    DataDisk {
        /// Its LUN.
        lun: u32,
        /// What is wrong.
        reason: String,
    },
}

/// `hyperVGeneration`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Generation {
    /// Legacy BIOS, `pc` machine.
    V1,
    /// UEFI, q35 machine.
    V2,
}

/// `securityProfile.securityType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecurityType {
    /// No Secure Boot, no vTPM.
    Standard,
    /// Secure Boot and/or vTPM per `uefiSettings`.
    TrustedLaunch,
}

/// `securityProfile.uefiSettings`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UefiSettings {
    /// Secure Boot on.
    pub secure_boot_enabled: bool,
    /// vTPM on.
    #[serde(rename = "vTpmEnabled")]
    pub v_tpm_enabled: bool,
}

/// `securityProfile`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityProfile {
    /// Standard or TrustedLaunch.
    pub security_type: SecurityType,
    /// Secure Boot and vTPM switches (TrustedLaunch only).
    pub uefi_settings: Option<UefiSettings>,
}

impl SecurityProfile {
    /// Trusted Launch with Secure Boot and vTPM on (Azure's default for an
    /// eligible Gen2 VM).
    pub fn trusted_launch() -> Self {
        Self {
            security_type: SecurityType::TrustedLaunch,
            uefi_settings: Some(UefiSettings {
                secure_boot_enabled: true,
                v_tpm_enabled: true,
            }),
        }
    }

    /// Standard: neither.
    pub fn standard() -> Self {
        Self {
            security_type: SecurityType::Standard,
            uefi_settings: None,
        }
    }

    /// Secure Boot enforced.
    pub fn secure_boot(&self) -> bool {
        self.security_type == SecurityType::TrustedLaunch
            && self.uefi_settings.is_some_and(|u| u.secure_boot_enabled)
    }

    /// The VM has a vTPM.
    pub fn vtpm(&self) -> bool {
        self.security_type == SecurityType::TrustedLaunch
            && self.uefi_settings.is_some_and(|u| u.v_tpm_enabled)
    }
}

/// The Secure Boot key template a VM's variable store is made from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyTemplate {
    /// Microsoft's KEK and db (boots Microsoft-signed shims), platform PK.
    Microsoft,
    /// The platform's own PK, KEK and db (boots platform-signed images).
    Custom,
    /// No keys (setup mode).
    None,
}

impl fmt::Display for KeyTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyTemplate::Microsoft => "microsoft",
            KeyTemplate::Custom => "custom",
            KeyTemplate::None => "none",
        })
    }
}

impl FromStr for KeyTemplate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "microsoft" => Ok(Self::Microsoft),
            "custom" => Ok(Self::Custom),
            "none" => Ok(Self::None),
            _ => Err(format!("key template {s:?}: use microsoft, custom or none")),
        }
    }
}

/// A VM as the operator asked for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmSpec {
    /// Name (also the directory name).
    pub name: String,
    /// `hyperVGeneration`.
    pub hyper_v_generation: Generation,
    /// `securityProfile`.
    pub security_profile: SecurityProfile,
    /// Secure Boot key template.
    pub key_template: KeyTemplate,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory, MiB.
    #[serde(rename = "memoryMiB")]
    pub memory_mib: u64,
    /// The image directory (`disk.raw` + `image.json`) the OS disk is an
    /// overlay of.
    pub image: PathBuf,
    /// Data disks (`storageProfile.dataDisks`): empty qcow2 disks that
    /// survive reimage and model updates, deleted with the VM.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_disks: Vec<DataDisk>,
    /// The VM's NIC (`networkProfile`). A spec written before VMs had
    /// NICs reads as [`Network::None`].
    #[serde(default)]
    pub network: Network,
    /// What the guest is told at its first boot (`osProfile`): host name
    /// and SSH keys, handed in by fw_cfg.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_profile: Option<OsProfile>,
}

/// The VM's NIC (`networkProfile.networkInterfaces[0]`): a virtio-net
/// device on one host network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "camelCase", deny_unknown_fields)]
pub enum Network {
    /// No NIC.
    #[default]
    None,
    /// QEMU's user-mode network with `restrict=on`: the guest gets an
    /// address by DHCP and reaches nothing (not the host, not beyond);
    /// the host reaches the guest's SSH through a port forward on
    /// 127.0.0.1.
    User,
    /// A tap device on an existing host bridge (real deployments): the
    /// guest is on the bridge's network.
    Bridge {
        /// The bridge's interface name.
        bridge: String,
    },
}

impl Network {
    /// `none`, `user` or `bridge=NAME`.
    pub fn describe(&self) -> String {
        match self {
            Network::None => "none".into(),
            Network::User => "user".into(),
            Network::Bridge { bridge } => format!("bridge={bridge}"),
        }
    }
}

impl FromStr for Network {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Network::None),
            "user" => Ok(Network::User),
            _ => match s.strip_prefix("bridge=") {
                Some(b) if check_ifname(b) => Ok(Network::Bridge { bridge: b.into() }),
                _ => Err(format!(
                    "network {s:?}: use user, none or bridge=NAME (an interface name)"
                )),
            },
        }
    }
}

/// A Linux interface name: 1-15 characters, no `/`, whitespace or `:`.
pub fn check_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// `osProfile`: what the guest is told at first boot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OsProfile {
    /// `computerName`: the guest's host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computer_name: Option<String>,
    /// `linuxConfiguration.ssh.publicKeys[].keyData`: OpenSSH public keys
    /// root may log in with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_public_keys: Vec<String>,
}

pub use trustlaunch_fleet::resources::MAX_SSH_KEYS;
use trustlaunch_fleet::resources::{host_name_ok, ssh_public_key_ok};

impl OsProfile {
    /// Checks the host name and keys (they reach the guest as `key=value`
    /// lines: no line breaks, nothing but what their formats allow).
    pub fn validate(&self) -> Result<(), SpecError> {
        if let Some(h) = &self.computer_name {
            if !host_name_ok(h) {
                return Err(SpecError::OsProfile(format!(
                    "computerName {h:?}: 1-63 characters a-z, 0-9 and '-', not starting or ending with '-'"
                )));
            }
        }
        if self.ssh_public_keys.len() > MAX_SSH_KEYS {
            return Err(SpecError::OsProfile(format!(
                "at most {MAX_SSH_KEYS} SSH public keys"
            )));
        }
        for k in &self.ssh_public_keys {
            if !ssh_public_key_ok(k) {
                return Err(SpecError::OsProfile(format!(
                    "SSH public key {:?}: an OpenSSH public key line (ssh-ed25519, ssh-rsa or ecdsa-sha2-*, base64, optional comment)",
                    k.chars().take(40).collect::<String>()
                )));
            }
        }
        Ok(())
    }

    /// The first-boot configuration the guest reads (`key=value` lines).
    pub fn first_boot_config(&self) -> String {
        let mut out = String::new();
        if let Some(h) = &self.computer_name {
            out.push_str(&format!("hostname={h}\n"));
        }
        for k in &self.ssh_public_keys {
            out.push_str(&format!("ssh-authorized-key={k}\n"));
        }
        out
    }
}

/// A data disk (`storageProfile.dataDisks[]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataDisk {
    /// Logical unit number (0..=63), unique per VM; the guest sees the disk
    /// with serial `lun<N>` (`/dev/disk/by-id/virtio-lun<N>`).
    pub lun: u32,
    /// Size, GiB (1..=4096; allocated as written).
    #[serde(rename = "diskSizeGB")]
    pub disk_size_gb: u32,
}

/// Most data disks per VM.
pub const MAX_DATA_DISKS: usize = 16;
/// Highest LUN.
pub const MAX_LUN: u32 = 63;
/// Largest data disk, GiB.
pub const MAX_DATA_DISK_GB: u32 = 4096;

/// Limits of the runtime (a small host).
pub const MAX_VCPUS: u32 = 64;
/// Smallest memory a UEFI guest boots with, MiB.
pub const MIN_MEMORY_MIB: u64 = 256;
/// Largest memory, MiB.
pub const MAX_MEMORY_MIB: u64 = 1 << 20;

/// Checks a VM name.
pub fn check_name(name: &str) -> Result<(), SpecError> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(SpecError::BadName(name.to_owned()))
    }
}

impl VmSpec {
    /// Checks the spec's consistency.
    pub fn validate(&self) -> Result<(), SpecError> {
        check_name(&self.name)?;
        let p = &self.security_profile;
        if p.security_type == SecurityType::Standard && p.uefi_settings.is_some() {
            return Err(SpecError::UefiSettingsWithoutSecurityType);
        }
        if self.hyper_v_generation == Generation::V1
            && (p.security_type == SecurityType::TrustedLaunch || p.uefi_settings.is_some())
        {
            return Err(SpecError::Gen1Security);
        }
        if p.secure_boot() && self.key_template == KeyTemplate::None {
            return Err(SpecError::SecureBootWithoutKeys);
        }
        if !(1..=MAX_VCPUS).contains(&self.vcpus) {
            return Err(SpecError::Size {
                what: "vcpus",
                value: u64::from(self.vcpus),
                min: 1,
                max: u64::from(MAX_VCPUS),
            });
        }
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return Err(SpecError::Size {
                what: "memoryMiB",
                value: self.memory_mib,
                min: MIN_MEMORY_MIB,
                max: MAX_MEMORY_MIB,
            });
        }
        if let Some(o) = &self.os_profile {
            o.validate()?;
        }
        if let Network::Bridge { bridge } = &self.network {
            if !check_ifname(bridge) {
                return Err(SpecError::Network(format!(
                    "bridge {bridge:?}: an interface name (1-15 characters a-z, 0-9, - _ .)"
                )));
            }
        }
        for (i, d) in self.data_disks.iter().enumerate() {
            let bad = |reason: String| SpecError::DataDisk { lun: d.lun, reason };
            if i >= MAX_DATA_DISKS {
                return Err(bad(format!("at most {MAX_DATA_DISKS} data disks")));
            }
            if d.lun > MAX_LUN {
                return Err(bad(format!("LUNs are 0..={MAX_LUN}")));
            }
            if !(1..=MAX_DATA_DISK_GB).contains(&d.disk_size_gb) {
                return Err(bad(format!(
                    "diskSizeGB {} is out of range 1..={MAX_DATA_DISK_GB}",
                    d.disk_size_gb
                )));
            }
            if self.data_disks.iter().take(i).any(|o| o.lun == d.lun) {
                return Err(bad("the LUN is used twice".into()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            name: "vm-1".into(),
            hyper_v_generation: Generation::V2,
            security_profile: SecurityProfile::trusted_launch(),
            key_template: KeyTemplate::Custom,
            vcpus: 1,
            memory_mib: 1024,
            image: "/img".into(),
            data_disks: Vec::new(),
            network: Network::None,
            os_profile: None,
        }
    }

    #[test]
    fn validates() {
        spec().validate().unwrap();
        let mut s = spec();
        s.hyper_v_generation = Generation::V1;
        assert_eq!(s.validate(), Err(SpecError::Gen1Security));
        s.security_profile = SecurityProfile::standard();
        s.validate().unwrap();
        let mut s = spec();
        s.security_profile.security_type = SecurityType::Standard;
        assert_eq!(
            s.validate(),
            Err(SpecError::UefiSettingsWithoutSecurityType)
        );
        let mut s = spec();
        s.key_template = KeyTemplate::None;
        assert_eq!(s.validate(), Err(SpecError::SecureBootWithoutKeys));
        s.security_profile.uefi_settings = Some(UefiSettings {
            secure_boot_enabled: false,
            v_tpm_enabled: true,
        });
        s.validate().unwrap();
        for bad in ["", "A", "-a", "a_b", &"a".repeat(41), "a/b", ".."] {
            let mut s = spec();
            s.name = bad.into();
            assert!(matches!(s.validate(), Err(SpecError::BadName(_))), "{bad}");
        }
        let mut s = spec();
        s.vcpus = 0;
        assert!(matches!(
            s.validate(),
            Err(SpecError::Size { what: "vcpus", .. })
        ));
        s.vcpus = 1;
        s.memory_mib = 16;
        assert!(matches!(
            s.validate(),
            Err(SpecError::Size {
                what: "memoryMiB",
                ..
            })
        ));
    }

    #[test]
    fn os_profiles_carry_only_host_names_and_public_keys() {
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq5XzbHd7J0Jc8b5Xq0u6bI9n1aV3Jp7pL2m0f4xYz1 me@host";
        let good = OsProfile {
            computer_name: Some("web-1".into()),
            ssh_public_keys: vec![key.into()],
        };
        let mut s = spec();
        s.os_profile = Some(good.clone());
        s.validate().unwrap();
        assert_eq!(
            good.first_boot_config(),
            format!("hostname=web-1\nssh-authorized-key={key}\n")
        );
        for bad in [
            OsProfile {
                computer_name: Some("web-1\nssh-authorized-key=ssh-rsa AAAA".into()),
                ..good.clone()
            },
            OsProfile {
                computer_name: Some("-x".into()),
                ..good.clone()
            },
            OsProfile {
                computer_name: Some("Web".into()),
                ..good.clone()
            },
            OsProfile {
                ssh_public_keys: vec![format!("{key}\nhostname=evil")],
                ..good.clone()
            },
            OsProfile {
                ssh_public_keys: vec!["ssh-dss AAAAB3NzaC1kc3MAAACBAP".into()],
                ..good.clone()
            },
            OsProfile {
                ssh_public_keys: vec!["ssh-ed25519 not*base64!".into()],
                ..good.clone()
            },
            OsProfile {
                ssh_public_keys: vec![key.to_owned(); MAX_SSH_KEYS + 1],
                ..good.clone()
            },
        ] {
            let mut s = spec();
            s.os_profile = Some(bad.clone());
            assert!(
                matches!(s.validate(), Err(SpecError::OsProfile(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn networks_parse_and_bridges_are_interface_names() {
        assert_eq!("user".parse::<Network>().unwrap(), Network::User);
        assert_eq!("none".parse::<Network>().unwrap(), Network::None);
        assert_eq!(
            "bridge=br0".parse::<Network>().unwrap(),
            Network::Bridge {
                bridge: "br0".into()
            }
        );
        for bad in [
            "bridge=",
            "bridge=a/b",
            "bridge=waytoolonginterface",
            "tap",
            "bridge=br0 x",
        ] {
            assert!(bad.parse::<Network>().is_err(), "{bad}");
        }
        let mut s = spec();
        s.network = Network::Bridge {
            bridge: "../../x".into(),
        };
        assert!(matches!(s.validate(), Err(SpecError::Network(_))));
        // A spec written before NICs existed reads as none.
        let old = serde_json::to_value(spec()).unwrap();
        let mut old = old.as_object().unwrap().clone();
        old.remove("network");
        let back: VmSpec = serde_json::from_value(serde_json::Value::Object(old)).unwrap();
        assert_eq!(back.network, Network::None);
    }

    #[test]
    fn data_disks_are_bounded() {
        let disk = |lun, disk_size_gb| DataDisk { lun, disk_size_gb };
        let mut s = spec();
        s.data_disks = vec![disk(0, 1), disk(63, MAX_DATA_DISK_GB)];
        s.validate().unwrap();
        for (disks, lun, why) in [
            (vec![disk(64, 1)], 64, "LUNs are 0..=63"),
            (vec![disk(1, 0)], 1, "diskSizeGB 0 is out of range 1..=4096"),
            (
                vec![disk(1, 4097)],
                1,
                "diskSizeGB 4097 is out of range 1..=4096",
            ),
            (vec![disk(2, 1), disk(2, 5)], 2, "the LUN is used twice"),
            (
                (0..17).map(|l| disk(l, 1)).collect(),
                16,
                "at most 16 data disks",
            ),
        ] {
            s.data_disks = disks;
            assert_eq!(
                s.validate(),
                Err(SpecError::DataDisk {
                    lun,
                    reason: why.into()
                })
            );
        }
        // Absent in JSON: no data disks (specs written before them load).
        let j = serde_json::to_value(spec()).unwrap();
        assert!(j.get("dataDisks").is_none());
        s.data_disks = vec![disk(3, 8)];
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(
            j["dataDisks"],
            serde_json::json!([{"lun": 3, "diskSizeGB": 8}])
        );
    }

    #[test]
    fn json_uses_azure_names() {
        let j = serde_json::to_value(spec()).unwrap();
        assert_eq!(j["hyperVGeneration"], "V2");
        assert_eq!(j["securityProfile"]["securityType"], "TrustedLaunch");
        assert_eq!(
            j["securityProfile"]["uefiSettings"]["secureBootEnabled"],
            true
        );
        assert_eq!(j["securityProfile"]["uefiSettings"]["vTpmEnabled"], true);
        assert_eq!(j["memoryMiB"], 1024);
        let back: VmSpec = serde_json::from_value(j).unwrap();
        assert_eq!(back, spec());
    }
}
