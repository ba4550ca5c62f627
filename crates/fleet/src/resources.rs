//! ARM-shaped resources: resource ids, name rules, resource groups, VMs,
//! scale sets (Uniform and Flexible), their instances and extensions, and
//! the tri-state [`Patch`] of PATCH bodies.
//!
//! JSON is ComputeRP 2024-07-01's: camelCase, Azure's property names,
//! absent optional fields left out. Read-only properties (`id`,
//! `provisioningState`, `vmId`, `uniqueId`) are set by the control plane;
//! ids and times come from the caller (this crate has no randomness).
//!
//! One addition to Azure: a scale set's `properties.modelVersion`, a
//! counter bumped by every change to its model; an instance's
//! `latestModelApplied` is `instance.modelVersion == set.modelVersion`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::image::{ImageReference, OsType};
use crate::policy::UpgradePolicy;
use crate::security::SecurityProfile;

pub use crate::ids::{check_resource_group_name, check_vm_name, IdError, ResourceId};

/// `type` of a VM.
pub const VM_TYPE: &str = "Microsoft.Compute/virtualMachines";
/// `type` of a scale set.
pub const SCALE_SET_TYPE: &str = "Microsoft.Compute/virtualMachineScaleSets";
/// `type` of a scale set's instance.
pub const SCALE_SET_VM_TYPE: &str = "Microsoft.Compute/virtualMachineScaleSets/virtualMachines";
/// Guest Attestation extension publisher on Linux.
pub const GUEST_ATTESTATION_PUBLISHER_LINUX: &str = "Microsoft.Azure.Security.LinuxAttestation";
/// Guest Attestation extension publisher on Windows.
pub const GUEST_ATTESTATION_PUBLISHER_WINDOWS: &str = "Microsoft.Azure.Security.WindowsAttestation";
/// Guest Attestation extension type.
pub const GUEST_ATTESTATION_TYPE: &str = "GuestAttestation";
/// Guest Attestation extension `typeHandlerVersion`.
pub const GUEST_ATTESTATION_VERSION: &str = "1.0";
/// Highest data disk LUN (Azure: 0..=63).
pub const MAX_LUN: u32 = 63;
/// Largest managed disk, GiB (Azure: 32,767).
pub const MAX_DISK_SIZE_GB: u32 = 32_767;

// ---------------------------------------------------------------- Patch

/// A field of a PATCH body: absent (leave unchanged), `null` (clear) or a
/// value (set). Use with `#[serde(default, skip_serializing_if =
/// "Patch::is_absent")]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Patch<T> {
    /// Not in the body: unchanged.
    #[default]
    Absent,
    /// `null`: cleared.
    Null,
    /// A value: set.
    Value(T),
}

impl<T> Patch<T> {
    /// The field was not in the body.
    pub fn is_absent(&self) -> bool {
        matches!(self, Self::Absent)
    }

    /// The field after the patch.
    pub fn apply(self, current: Option<T>) -> Option<T> {
        match self {
            Self::Absent => current,
            Self::Null => None,
            Self::Value(v) => Some(v),
        }
    }
}

impl<T: Serialize> Serialize for Patch<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Absent | Self::Null => s.serialize_none(),
            Self::Value(v) => s.serialize_some(v),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<T>::deserialize(d).map(|o| o.map_or(Self::Null, Self::Value))
    }
}

// ---------------------------------------------------------------- resources

/// `provisioningState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProvisioningState {
    /// Being created.
    Creating,
    /// Being updated.
    Updating,
    /// The last operation succeeded.
    Succeeded,
    /// The last operation failed.
    Failed,
    /// Being deleted.
    Deleting,
    /// The last operation was cancelled.
    Canceled,
}

/// A resource group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceGroup {
    /// Name.
    pub name: String,
    /// Location (region name; one host here, recorded as given).
    pub location: String,
}

/// `hardwareProfile`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HardwareProfile {
    /// The size name (`Standard_D2s_v5`).
    pub vm_size: String,
}

/// `createOption` of a disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DiskCreateOption {
    /// Made from the image.
    #[default]
    FromImage,
    /// An empty disk of `diskSizeGB`.
    Empty,
    /// An existing disk attached.
    Attach,
}

/// `storageProfile.osDisk`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OsDisk {
    /// Disk name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// How it is made (`FromImage`).
    #[serde(default)]
    pub create_option: DiskCreateOption,
    /// Size, GiB (default: the image's).
    #[serde(
        rename = "diskSizeGB",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub disk_size_gb: Option<u32>,
    /// `Linux` or `Windows` (default: the image's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_type: Option<OsType>,
}

/// `storageProfile.dataDisks[]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataDisk {
    /// Logical unit number, 0..=63, unique per VM.
    pub lun: u32,
    /// Size, GiB, 1..=32767.
    #[serde(rename = "diskSizeGB")]
    pub disk_size_gb: u32,
    /// Disk name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `Empty` (default), `Attach` or `FromImage`.
    #[serde(default = "empty_option")]
    pub create_option: DiskCreateOption,
}

fn empty_option() -> DiskCreateOption {
    DiskCreateOption::Empty
}

/// `storageProfile`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageProfile {
    /// The gallery image version the OS disk is made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_reference: Option<ImageReference>,
    /// The OS disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_disk: Option<OsDisk>,
    /// Data disks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_disks: Vec<DataDisk>,
}

/// `networkProfile`: the instance's NICs, in the shape Azure's scale sets
/// use (`networkInterfaceConfigurations`; VMs take the same). One NIC per
/// instance. A NIC whose IP configuration names no subnet is on the host's
/// user-mode network (the guest reaches only the host; SSH through a
/// forwarded port on 127.0.0.1); a subnet of virtual network `NAME`
/// (`…/Microsoft.Network/virtualNetworks/NAME/subnets/…`) is the host
/// bridge `NAME`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkProfile {
    /// The NICs.
    #[serde(default)]
    pub network_interface_configurations: Vec<NicConfiguration>,
}

/// A NIC of the model.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NicConfiguration {
    /// Its name.
    pub name: String,
    /// Its properties.
    #[serde(default)]
    pub properties: NicProperties,
}

/// `properties` of a NIC.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NicProperties {
    /// The primary NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<bool>,
    /// Its IP configurations.
    #[serde(default)]
    pub ip_configurations: Vec<IpConfiguration>,
}

/// An IP configuration of a NIC.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpConfiguration {
    /// Its name.
    pub name: String,
    /// Its properties.
    #[serde(default)]
    pub properties: IpConfigurationProperties,
}

/// `properties` of an IP configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpConfigurationProperties {
    /// The subnet (absent: the host's user-mode network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<SubResource>,
}

/// Where an instance's NIC is attached on the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "name")]
pub enum HostNetwork {
    /// QEMU's user-mode network with `restrict=on`.
    User,
    /// A host bridge.
    Bridge(String),
}

impl NetworkProfile {
    /// The host network of the (one) NIC, if there is one; the virtual
    /// network's name of its first IP configuration's subnet is the bridge.
    pub fn host_network(&self) -> Option<HostNetwork> {
        let nic = self.network_interface_configurations.first()?;
        let subnet = nic
            .properties
            .ip_configurations
            .first()
            .and_then(|c| c.properties.subnet.as_ref());
        Some(match subnet.and_then(|s| virtual_network(&s.id)) {
            Some(vnet) => HostNetwork::Bridge(vnet.to_owned()),
            None => HostNetwork::User,
        })
    }
}

/// `NAME` of `…/providers/Microsoft.Network/virtualNetworks/NAME/subnets/…`.
pub fn virtual_network(subnet_id: &str) -> Option<&str> {
    let mut parts = subnet_id.split('/');
    while let Some(p) = parts.next() {
        if p.eq_ignore_ascii_case("virtualNetworks") {
            return parts.next().filter(|n| !n.is_empty());
        }
    }
    None
}

/// `osProfile`: the guest's host name and SSH keys, applied at first boot
/// (Linux; password logins are not offered).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OsProfile {
    /// A VM's host name (default: its name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computer_name: Option<String>,
    /// A scale set's host name prefix (the instance id follows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computer_name_prefix: Option<String>,
    /// The administrator's user name (informational: keys go to root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_username: Option<String>,
    /// Refused when present: no password logins. Never stored.
    #[serde(default, skip_serializing)]
    pub admin_password: Option<String>,
    /// Linux settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux_configuration: Option<LinuxConfiguration>,
}

/// `osProfile.linuxConfiguration`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinuxConfiguration {
    /// Must not be false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_password_authentication: Option<bool>,
    /// SSH keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshConfiguration>,
}

/// `linuxConfiguration.ssh`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshConfiguration {
    /// Public keys.
    #[serde(default)]
    pub public_keys: Vec<SshPublicKey>,
}

/// One SSH public key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SshPublicKey {
    /// Where Azure would write it (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The key (`ssh-ed25519 AAAA… comment`).
    pub key_data: String,
}

/// Most SSH keys in an `osProfile`.
pub const MAX_SSH_KEYS: usize = 16;

/// An OpenSSH public key line the guest's first boot accepts: a key type
/// (ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256/384/521), its base64 data,
/// an optional comment; printable ASCII only (it travels as one
/// `key=value` line and becomes one `authorized_keys` line). The control
/// plane and the runtime check keys by this one rule.
pub fn ssh_public_key_ok(k: &str) -> bool {
    let mut parts = k.split(' ');
    let kind = parts.next().unwrap_or_default();
    let data = parts.next().unwrap_or_default();
    matches!(
        kind,
        "ssh-ed25519"
            | "ssh-rsa"
            | "ecdsa-sha2-nistp256"
            | "ecdsa-sha2-nistp384"
            | "ecdsa-sha2-nistp521"
    ) && (16..=16384).contains(&data.len())
        && data
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
        && k.len() <= 16384 + 300
        && k.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// A host name: 1 to 63 lowercase letters, digits and '-', not starting
/// or ending with '-' (what the guest's first boot sets).
pub fn host_name_ok(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 63
        && h.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !h.starts_with('-')
        && !h.ends_with('-')
}

impl OsProfile {
    /// The SSH public keys.
    pub fn ssh_keys(&self) -> Vec<String> {
        self.linux_configuration
            .as_ref()
            .and_then(|l| l.ssh.as_ref())
            .map(|s| s.public_keys.iter().map(|k| k.key_data.clone()).collect())
            .unwrap_or_default()
    }
}

/// `properties` of a VM.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineProperties {
    /// Size.
    pub hardware_profile: HardwareProfile,
    /// Image and disks.
    pub storage_profile: StorageProfile,
    /// Security profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_profile: Option<SecurityProfile>,
    /// NICs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_profile: Option<NetworkProfile>,
    /// Host name and SSH keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_profile: Option<OsProfile>,
    /// Read-only: state of the last operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<ProvisioningState>,
    /// Read-only: the VM's unique id (a UUID the control plane assigns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_id: Option<String>,
    /// The Flexible scale set the VM belongs to (set when it is created;
    /// it cannot change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_machine_scale_set: Option<SubResource>,
    /// Read-only (ours): bumped by every change to the model (size,
    /// storage and security profiles, extensions); absent (0) in a
    /// document that never went through the control plane.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub model_version: u64,
    /// Read-only (ours): the name the host runtime knows the VM by, given
    /// when it is created and unique to its resource id. Absent on a VM
    /// created before names were given so: its name, sanitized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_name: Option<String>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A reference to another resource, `{"id": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubResource {
    /// The resource's id.
    pub id: String,
}

/// A VM (`Microsoft.Compute/virtualMachines`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachine {
    /// Read-only: the resource id (the control plane fills it from the URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<ResourceId>,
    /// Name (read-only in a body: the URL's).
    #[serde(default)]
    pub name: String,
    /// `Microsoft.Compute/virtualMachines`.
    #[serde(rename = "type", default = "vm_type")]
    pub resource_type: String,
    /// Location.
    pub location: String,
    /// Properties.
    pub properties: VirtualMachineProperties,
    /// The VM's extensions (ARM child resources
    /// `virtualMachines/{vm}/extensions/{name}`, which Azure lists here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<Extension>,
    /// Tags (ARM's name/value pairs; kept, not interpreted).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tags: std::collections::BTreeMap<String, String>,
}

fn vm_type() -> String {
    VM_TYPE.to_owned()
}

fn scale_set_type() -> String {
    SCALE_SET_TYPE.to_owned()
}

impl VirtualMachine {
    /// A VM with `id`, its name and type taken from the id.
    pub fn new(id: ResourceId, location: &str, properties: VirtualMachineProperties) -> Self {
        Self {
            name: id.name().to_owned(),
            resource_type: VM_TYPE.to_owned(),
            id: Some(id),
            location: location.to_owned(),
            properties,
            resources: Vec::new(),
            tags: std::collections::BTreeMap::new(),
        }
    }

    /// The model differs from `other`'s: size, storage or security
    /// profile, or extensions.
    pub fn model_differs(&self, other: &VirtualMachine) -> bool {
        let (a, b) = (&self.properties, &other.properties);
        !a.hardware_profile
            .vm_size
            .eq_ignore_ascii_case(&b.hardware_profile.vm_size)
            || a.storage_profile != b.storage_profile
            || a.security_profile != b.security_profile
            || a.network_profile != b.network_profile
            || a.os_profile != b.os_profile
            || self.resources != other.resources
    }

    /// The Guest Attestation extension is installed.
    pub fn has_guest_attestation(&self) -> bool {
        self.resources
            .iter()
            .any(|e| e.guest_attestation_os().is_some())
    }
}

/// `sku` of a scale set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sku {
    /// The size of every instance (`Standard_D2s_v5`).
    pub name: String,
    /// Number of instances.
    #[serde(default)]
    pub capacity: u32,
    /// The tier: `Standard` (the only one; Azure's `Basic` tier is not
    /// offered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
}

/// `orchestrationMode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OrchestrationMode {
    /// Identical instances from one model (the default here and in the
    /// seed workflow).
    #[default]
    Uniform,
    /// Instances are VMs of their own.
    Flexible,
}

/// An extension's `properties`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionProperties {
    /// Publisher.
    pub publisher: String,
    /// Type.
    #[serde(rename = "type")]
    pub extension_type: String,
    /// Version (`1.0`).
    pub type_handler_version: String,
    /// Take new minor versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_upgrade_minor_version: Option<bool>,
}

/// An extension of a scale set's model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Extension {
    /// Name.
    pub name: String,
    /// Properties.
    pub properties: ExtensionProperties,
}

impl Extension {
    /// The Guest Attestation extension for `os`.
    pub fn guest_attestation(os: OsType) -> Self {
        let publisher = match os {
            OsType::Linux => GUEST_ATTESTATION_PUBLISHER_LINUX,
            OsType::Windows => GUEST_ATTESTATION_PUBLISHER_WINDOWS,
        };
        Self {
            name: GUEST_ATTESTATION_TYPE.to_owned(),
            properties: ExtensionProperties {
                publisher: publisher.to_owned(),
                extension_type: GUEST_ATTESTATION_TYPE.to_owned(),
                type_handler_version: GUEST_ATTESTATION_VERSION.to_owned(),
                auto_upgrade_minor_version: Some(true),
            },
        }
    }

    /// The OS this is the Guest Attestation extension of, if it is one.
    pub fn guest_attestation_os(&self) -> Option<OsType> {
        let p = &self.properties;
        if !p
            .extension_type
            .eq_ignore_ascii_case(GUEST_ATTESTATION_TYPE)
        {
            return None;
        }
        if p.publisher
            .eq_ignore_ascii_case(GUEST_ATTESTATION_PUBLISHER_LINUX)
        {
            Some(OsType::Linux)
        } else if p
            .publisher
            .eq_ignore_ascii_case(GUEST_ATTESTATION_PUBLISHER_WINDOWS)
        {
            Some(OsType::Windows)
        } else {
            None
        }
    }
}

/// `extensionProfile`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionProfile {
    /// Extensions.
    #[serde(default)]
    pub extensions: Vec<Extension>,
}

/// `virtualMachineProfile`: the model every instance is made from (the
/// size is `sku.name`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleSetVmProfile {
    /// Image and disks.
    pub storage_profile: StorageProfile,
    /// Security profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_profile: Option<SecurityProfile>,
    /// Extensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_profile: Option<ExtensionProfile>,
    /// NICs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_profile: Option<NetworkProfile>,
    /// Host name prefix and SSH keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_profile: Option<OsProfile>,
}

/// `properties` of a scale set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleSetProperties {
    /// Uniform or Flexible.
    #[serde(default)]
    pub orchestration_mode: OrchestrationMode,
    /// Upgrade policy (default Manual).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_policy: Option<UpgradePolicy>,
    /// The instances' model.
    pub virtual_machine_profile: ScaleSetVmProfile,
    /// Read-only: state of the last operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_state: Option<ProvisioningState>,
    /// Read-only: the scale set's unique id (a UUID the control plane
    /// assigns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_id: Option<String>,
    /// Read-only (ours): bumped by every change to the model (`sku.name`,
    /// `virtualMachineProfile`).
    #[serde(default)]
    pub model_version: u64,
    /// Read-only (ours): the lowest instance id never handed out. Ids are
    /// reserved before instances are created and never reused, as in
    /// Azure (a scale-in then scale-out gets new ids).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub next_instance_id: u64,
    /// Read-only (ours): the prefix of the names the host runtime knows
    /// this set's instances by (`{runtimeName}-{instanceId}`), given when
    /// the set is created and unique to its resource id (two sets named
    /// alike in two resource groups never share a host name). Absent on a
    /// set created before names were given so: its name, sanitized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_name: Option<String>,
}

/// A scale set (`Microsoft.Compute/virtualMachineScaleSets`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleSet {
    /// Read-only: the resource id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<ResourceId>,
    /// Name (read-only in a body: the URL's).
    #[serde(default)]
    pub name: String,
    /// `Microsoft.Compute/virtualMachineScaleSets`.
    #[serde(rename = "type", default = "scale_set_type")]
    pub resource_type: String,
    /// Location.
    pub location: String,
    /// Size and capacity.
    pub sku: Sku,
    /// Properties.
    pub properties: ScaleSetProperties,
    /// Tags (ARM's name/value pairs; kept, not interpreted).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tags: std::collections::BTreeMap<String, String>,
}

impl ScaleSet {
    /// A scale set with `id`, its name and type taken from the id.
    pub fn new(id: ResourceId, location: &str, sku: Sku, properties: ScaleSetProperties) -> Self {
        Self {
            name: id.name().to_owned(),
            resource_type: SCALE_SET_TYPE.to_owned(),
            id: Some(id),
            location: location.to_owned(),
            sku,
            properties,
            tags: std::collections::BTreeMap::new(),
        }
    }

    /// The model differs from `other`'s (size or `virtualMachineProfile`;
    /// capacity and the upgrade policy are not part of the model).
    pub fn model_differs(&self, other: &ScaleSet) -> bool {
        !self.sku.name.eq_ignore_ascii_case(&other.sku.name)
            || self.properties.virtual_machine_profile != other.properties.virtual_machine_profile
    }

    /// Bumps the model version (saturating: 2^64 changes do not happen).
    pub fn bump_model_version(&mut self) {
        self.properties.model_version = self.properties.model_version.saturating_add(1);
    }

    /// The upgrade policy in force (Manual by default).
    pub fn upgrade_policy(&self) -> UpgradePolicy {
        self.properties.upgrade_policy.clone().unwrap_or_default()
    }

    /// Reserves `n` new instance ids, none below `floor` (one past the
    /// highest id in use) nor handed out before; returns the first.
    pub fn reserve_instance_ids(&mut self, floor: u64, n: u64) -> u64 {
        let first = self.properties.next_instance_id.max(floor);
        self.properties.next_instance_id = first.saturating_add(n);
        first
    }
}

/// An instance's power state (Azure's `PowerState/...` codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PowerState {
    /// `PowerState/starting`.
    #[serde(rename = "PowerState/starting")]
    Starting,
    /// `PowerState/running`.
    #[serde(rename = "PowerState/running")]
    Running,
    /// `PowerState/stopping`.
    #[serde(rename = "PowerState/stopping")]
    Stopping,
    /// `PowerState/stopped`.
    #[serde(rename = "PowerState/stopped")]
    Stopped,
    /// `PowerState/deallocating`.
    #[serde(rename = "PowerState/deallocating")]
    Deallocating,
    /// `PowerState/deallocated`.
    #[serde(rename = "PowerState/deallocated")]
    Deallocated,
}

/// An instance's health (Application Health extension / probe states).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InstanceHealth {
    /// Healthy.
    Healthy,
    /// Unhealthy.
    Unhealthy,
    /// Not known (yet).
    #[default]
    Unknown,
}

/// A scale set's instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleSetVm {
    /// Instance id (`"0"`, `"1"`, ...).
    pub instance_id: String,
    /// Name (`{scaleSet}_{instanceId}` in Uniform mode).
    pub name: String,
    /// The instance runs the scale set's latest model.
    pub latest_model_applied: bool,
    /// The model version the instance runs (ours).
    pub model_version: u64,
    /// State of the last operation.
    pub provisioning_state: ProvisioningState,
    /// Power state.
    pub power_state: PowerState,
    /// Health.
    #[serde(default)]
    pub health: InstanceHealth,
}

impl ScaleSetVm {
    /// Azure's Uniform instance name, `{scaleSet}_{instanceId}`.
    pub fn uniform_name(scale_set: &str, instance_id: &str) -> String {
        format!("{scale_set}_{instance_id}")
    }

    /// Recomputes `latestModelApplied` against the set.
    pub fn refresh(&mut self, set: &ScaleSet) {
        self.latest_model_applied = self.model_version == set.properties.model_version;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for s in [
            "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-1",
            "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/ss",
            "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/ss/virtualMachines/3",
        ] {
            let id: ResourceId = s.parse().unwrap();
            assert_eq!(id.to_string(), s);
        }
        let id: ResourceId =
            "/SUBSCRIPTIONS/s1/resourcegroups/rg/providers/microsoft.compute/VIRTUALMACHINES/vm"
                .parse()
                .unwrap();
        assert_eq!(id.name(), "vm");
        for bad in [
            "",
            "subscriptions/s",
            "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Network/virtualMachines/vm",
            "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm/x",
            "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/",
            "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/disks/d",
            "/subscriptions/s1/resourceGroups/rg./providers/Microsoft.Compute/virtualMachines/vm",
            "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/ss/virtualMachines",
        ] {
            assert!(bad.parse::<ResourceId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn patch_serde() {
        #[derive(Serialize, Deserialize, Default)]
        struct B {
            #[serde(default, skip_serializing_if = "Patch::is_absent")]
            x: Patch<u32>,
        }
        let b: B = serde_json::from_str("{}").unwrap();
        assert_eq!(b.x, Patch::Absent);
        let b: B = serde_json::from_str(r#"{"x":null}"#).unwrap();
        assert_eq!(b.x, Patch::Null);
        assert_eq!(serde_json::to_string(&b).unwrap(), r#"{"x":null}"#);
        let b: B = serde_json::from_str(r#"{"x":3}"#).unwrap();
        assert_eq!(b.x, Patch::Value(3));
        assert_eq!(serde_json::to_string(&B::default()).unwrap(), "{}");
    }
}

/// A VM or scale set whose Guest Attestation extension waits on an agent
/// its image lacks: its attestation would never answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MissingGuestAgent {
    /// The VM or scale set (its ARM id, else its name).
    pub resource: String,
    /// The image version its model names.
    pub image: String,
    /// The runtime image the version was made from.
    pub source: String,
}

/// The VMs and scale sets with the Guest Attestation extension whose
/// image version's image, as the platform read it, has no guest
/// attestation agent (versions whose agent is not known are not named).
pub fn missing_guest_agents(
    vms: &[VirtualMachine],
    sets: &[ScaleSet],
    catalog: &crate::image::ImageCatalog,
) -> Vec<MissingGuestAgent> {
    let mut out = Vec::new();
    let mut check = |resource: String, reference: Option<&ImageReference>| {
        let Some(r) = reference else { return };
        if let Ok((_, v)) = catalog.resolve(r, "imageReference") {
            if v.guest_agent == Some(false) {
                out.push(MissingGuestAgent {
                    resource,
                    image: r.id.clone(),
                    source: v.source.clone(),
                });
            }
        }
    };
    let name = |id: &Option<crate::ids::ResourceId>, name: &str| {
        id.as_ref()
            .map_or_else(|| name.to_owned(), ToString::to_string)
    };
    for vm in vms.iter().filter(|v| v.has_guest_attestation()) {
        check(
            name(&vm.id, &vm.name),
            vm.properties.storage_profile.image_reference.as_ref(),
        );
    }
    for set in sets {
        let p = &set.properties.virtual_machine_profile;
        let attests = p.extension_profile.as_ref().is_some_and(|e| {
            e.extensions
                .iter()
                .any(|x| x.guest_attestation_os().is_some())
        });
        if attests {
            check(
                name(&set.id, &set.name),
                p.storage_profile.image_reference.as_ref(),
            );
        }
    }
    out
}
