//! The rules and defaults a VM or scale set create or update must pass
//! (`azure-model.md`, "Security profile" and "Scale set upgrade policy").
//!
//! Each function takes the request (for an update: the existing resource
//! and the requested one, PATCH already merged, e.g. with
//! [`crate::security::SecurityProfilePatch`]) and a [`Context`], and
//! returns the resolved resource — defaults applied, read-only properties
//! kept, a scale set's model version bumped when its model changed — with
//! [`Warning`]s, or the first rule broken as an Azure-style [`FleetError`]
//! whose `target` is the property path.
//!
//! Defaults: a new resource without `securityType` is TrustedLaunch with
//! Secure Boot and vTPM on when its image (Gen2, `TrustedLaunchSupported`)
//! and size allow it, Standard otherwise (with a warning saying why). An
//! existing Standard resource moved to TrustedLaunch gets vTPM on and
//! Secure Boot off unless set (a warning says to turn Secure Boot on).

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, FleetError};
use crate::image::{HyperVGeneration, ImageCatalog, ImageDefinition, ImageReference, OsType};
use crate::resources::{
    check_vm_name, virtual_network, DataDisk, Extension, NetworkProfile, OsProfile, ScaleSet,
    StorageProfile, VirtualMachine, MAX_DISK_SIZE_GB, MAX_LUN, SCALE_SET_TYPE, VM_TYPE,
};
use crate::security::{SecurityProfile, SecurityType, UefiSettings};
use crate::sizes::{check_quotas, Quotas, SizeCatalog, Usage, VmSize};

/// Most instances of a scale set (Azure's limit for Uniform and Flexible).
pub const MAX_CAPACITY: u32 = 1000;

/// What a warning is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum WarningCode {
    /// TrustedLaunch with Secure Boot off.
    SecureBootDisabled,
    /// TrustedLaunch with the vTPM off.
    VTpmDisabled,
    /// A new resource without `securityType` defaulted to Standard.
    DefaultedToStandard,
}

/// A warning: the request is accepted, but something deserves attention.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Warning {
    /// What it is about.
    pub code: WarningCode,
    /// What to do.
    pub message: String,
    /// The property, Azure path syntax.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// A resolved resource and the warnings about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validated<T> {
    /// The resource with defaults applied.
    pub resource: T,
    /// Warnings.
    pub warnings: Vec<Warning>,
}

/// What validation reads: images, sizes, quotas and current usage (which
/// includes the existing resource's vCPUs on an update).
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// Gallery images.
    pub images: &'a ImageCatalog,
    /// Sizes.
    pub sizes: &'a SizeCatalog,
    /// vCPU quotas per family.
    pub quotas: &'a Quotas,
    /// vCPUs in use per family.
    pub usage: &'a Usage,
}

/// Explicit consents a request carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Confirmations {
    /// The caller accepts that changing the image reference re-creates OS
    /// disks, losing what was written to them.
    #[serde(default)]
    pub os_disk_data_loss: bool,
}

/// The message Azure gives for an image that cannot be TrustedLaunch.
pub const MSG_IMAGE_NOT_TL: &str = "Use of TrustedLaunch setting is not supported for the provided image. Please select Trusted Launch Supported Gen2 OS Image.";
/// The message Azure gives for `uefiSettings` without `securityType`.
pub const MSG_UEFI_WITHOUT_TYPE: &str =
    "Use of UEFI settings is not supported when security type is not set.";
/// The message Azure gives for Standard on a TrustedLaunch-only image.
pub const MSG_IMAGE_TL_ONLY: &str = "The provided gallery image only supports creation of VMs and VM Scale Sets with 'TrustedLaunch' security type.";

/// Property paths of a VM or of a scale set's model.
struct Paths {
    security: &'static str,
    storage: &'static str,
    size: &'static str,
    network: &'static str,
    os: &'static str,
    what: &'static str,
}

const VM_PATHS: Paths = Paths {
    security: "properties.securityProfile",
    storage: "properties.storageProfile",
    size: "properties.hardwareProfile.vmSize",
    network: "properties.networkProfile",
    os: "properties.osProfile",
    what: "the VM",
};

const SET_PATHS: Paths = Paths {
    security: "properties.virtualMachineProfile.securityProfile",
    storage: "properties.virtualMachineProfile.storageProfile",
    size: "sku.name",
    network: "properties.virtualMachineProfile.networkProfile",
    os: "properties.virtualMachineProfile.osProfile",
    what: "every instance",
};

/// A NIC the host can attach: one per instance, one IP configuration,
/// a subnet (if any) of a virtual network whose name is a host bridge's.
fn check_network(n: &NetworkProfile, paths: &Paths) -> Result<(), FleetError> {
    let at = format!("{}.networkInterfaceConfigurations", paths.network);
    let nics = &n.network_interface_configurations;
    if nics.len() > 1 {
        return Err(bad(
            ErrorCode::BadRequest,
            format!(
                "{} has {} NICs; this platform attaches one NIC per instance.",
                paths.what,
                nics.len()
            ),
            at,
        ));
    }
    for (i, nic) in nics.iter().enumerate() {
        let at = format!("{at}[{i}]");
        if nic.name.is_empty() || nic.name.len() > 80 {
            return Err(bad(
                ErrorCode::InvalidParameter,
                "A NIC's name is 1 to 80 characters.",
                format!("{at}.name"),
            ));
        }
        let ips = &nic.properties.ip_configurations;
        if ips.len() > 1 {
            return Err(bad(
                ErrorCode::BadRequest,
                "A NIC has one IP configuration on this platform.",
                format!("{at}.properties.ipConfigurations"),
            ));
        }
        for (j, ip) in ips.iter().enumerate() {
            let Some(subnet) = &ip.properties.subnet else {
                continue;
            };
            let at = format!("{at}.properties.ipConfigurations[{j}].properties.subnet.id");
            let bridge = virtual_network(&subnet.id).ok_or_else(|| {
                bad(
                    ErrorCode::InvalidParameter,
                    format!(
                        "The subnet id '{}' names no virtual network (…/providers/Microsoft.Network/virtualNetworks/NAME/subnets/SUBNET).",
                        subnet.id
                    ),
                    at.clone(),
                )
            })?;
            let valid = (1..=15).contains(&bridge.len())
                && bridge
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !valid {
                return Err(bad(
                    ErrorCode::InvalidParameter,
                    format!(
                        "The virtual network '{bridge}' cannot be a host bridge: its name is 1 to 15 letters, digits, '-', '_' or '.'."
                    ),
                    at,
                ));
            }
        }
    }
    Ok(())
}

/// A host name as Azure takes it (letters in either case; the guest gets
/// it in lower case) within `max` characters.
fn host_name_ok(name: &str, max: usize) -> bool {
    name.len() <= max && crate::resources::host_name_ok(&name.to_ascii_lowercase())
}

/// Host names, keys only (no passwords), keys that are OpenSSH public keys.
fn check_os_profile(
    os: &OsProfile,
    old: Option<&OsProfile>,
    set: bool,
    paths: &Paths,
) -> Result<(), FleetError> {
    let at = paths.os;
    if os.admin_password.is_some() {
        return Err(bad(
            ErrorCode::InvalidParameter,
            "Password logins are not offered: give SSH public keys in linuxConfiguration.ssh.publicKeys.",
            format!("{at}.adminPassword"),
        ));
    }
    if os
        .linux_configuration
        .as_ref()
        .and_then(|l| l.disable_password_authentication)
        == Some(false)
    {
        return Err(bad(
            ErrorCode::InvalidParameter,
            "Password logins are not offered: disablePasswordAuthentication must be true.",
            format!("{at}.linuxConfiguration.disablePasswordAuthentication"),
        ));
    }
    match (set, &os.computer_name, &os.computer_name_prefix) {
        (true, Some(_), _) => {
            return Err(bad(
                ErrorCode::InvalidParameter,
                "A scale set's instances are named from computerNamePrefix, not computerName.",
                format!("{at}.computerName"),
            ))
        }
        (false, _, Some(_)) => {
            return Err(bad(
                ErrorCode::InvalidParameter,
                "A VM's host name is computerName; computerNamePrefix is for scale sets.",
                format!("{at}.computerNamePrefix"),
            ))
        }
        (false, Some(n), _) if !host_name_ok(n, 63) => {
            return Err(bad(
                ErrorCode::InvalidParameter,
                format!("The computer name '{n}' is invalid: 1 to 63 letters, digits and '-', not starting or ending with '-'."),
                format!("{at}.computerName"),
            ))
        }
        (true, _, Some(p)) if !host_name_ok(p, 57) => {
            return Err(bad(
                ErrorCode::InvalidParameter,
                format!("The computer name prefix '{p}' is invalid: 1 to 57 letters, digits and '-', not starting or ending with '-'."),
                format!("{at}.computerNamePrefix"),
            ))
        }
        _ => {}
    }
    if let Some(old) = old {
        if !set && old.computer_name != os.computer_name {
            return Err(bad(
                ErrorCode::OperationNotAllowed,
                "Changing property 'computerName' is not allowed.",
                format!("{at}.computerName"),
            ));
        }
    }
    let keys = os
        .linux_configuration
        .as_ref()
        .and_then(|l| l.ssh.as_ref())
        .map_or(&[][..], |s| s.public_keys.as_slice());
    if keys.len() > crate::resources::MAX_SSH_KEYS {
        return Err(FleetError::out_of_range(
            "publicKeys",
            u32::try_from(keys.len()).unwrap_or(u32::MAX),
            0,
            u32::try_from(crate::resources::MAX_SSH_KEYS).unwrap_or(u32::MAX),
        )
        .at(format!("{at}.linuxConfiguration.ssh.publicKeys")));
    }
    for (i, k) in keys.iter().enumerate() {
        if !crate::resources::ssh_public_key_ok(&k.key_data) {
            return Err(bad(
                ErrorCode::InvalidParameter,
                "The SSH public key is not in OpenSSH's one-line format ('ssh-ed25519 AAAA… comment'; ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256/384/521).",
                format!("{at}.linuxConfiguration.ssh.publicKeys[{i}].keyData"),
            ));
        }
    }
    Ok(())
}

/// Create, or update from a resource whose type was the given one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Create,
    Update(SecurityType),
}

fn bad(code: ErrorCode, message: impl Into<String>, target: impl Into<String>) -> FleetError {
    FleetError::new(code, message).at(target)
}

fn check_type(given: &str, want: &str) -> Result<(), FleetError> {
    if given.eq_ignore_ascii_case(want) {
        Ok(())
    } else {
        Err(bad(
            ErrorCode::InvalidParameter,
            format!("The resource type '{given}' does not match '{want}'."),
            "type",
        ))
    }
}

fn check_location(location: &str) -> Result<(), FleetError> {
    if location.is_empty() {
        return Err(bad(
            ErrorCode::InvalidParameter,
            "The location property is required for this definition.",
            "location",
        ));
    }
    Ok(())
}

fn unchanged_location(existing: &str, requested: &str) -> Result<(), FleetError> {
    if existing.eq_ignore_ascii_case(requested) {
        Ok(())
    } else {
        Err(bad(
            ErrorCode::OperationNotAllowed,
            format!(
                "Changing property 'location' is not allowed (from '{existing}' to '{requested}')."
            ),
            "location",
        ))
    }
}

fn image<'c>(
    ctx: &Context<'c>,
    storage: &StorageProfile,
    paths: &Paths,
) -> Result<&'c ImageDefinition, FleetError> {
    let target = format!("{}.imageReference", paths.storage);
    let r = storage.image_reference.as_ref().ok_or_else(|| {
        bad(
            ErrorCode::InvalidParameter,
            "Required parameter 'imageReference' is missing (null).",
            target.clone(),
        )
    })?;
    let (def, _) = ctx.images.resolve(r, &format!("{target}.id"))?;
    Ok(def)
}

fn size<'c>(ctx: &Context<'c>, name: &str, paths: &Paths) -> Result<&'c VmSize, FleetError> {
    ctx.sizes.get(name).ok_or_else(|| {
        let names: Vec<&str> = ctx.sizes.sizes().iter().map(|s| s.name.as_str()).collect();
        bad(
            ErrorCode::InvalidParameter,
            format!(
                "The VM size '{name}' is not valid. Valid sizes: {}.",
                names.join(", ")
            ),
            paths.size,
        )
    })
}

/// The size error: Azure's sentence, then the family, its status and the
/// supported alternatives.
fn size_not_supported(ctx: &Context<'_>, size: &VmSize, paths: &Paths) -> FleetError {
    let alts: Vec<&str> = ctx
        .sizes
        .supported_alternatives(size)
        .into_iter()
        .map(|s| s.name.as_str())
        .collect();
    let alts = if alts.is_empty() {
        "none in the size catalog".to_owned()
    } else {
        alts.join(", ")
    };
    bad(
        ErrorCode::BadRequest,
        format!(
            "The VM size '{}' is not supported for creation of VMs and Virtual Machine Scale Set with 'TrustedLaunch' security type. Its family {} {}; supported alternatives: {alts}. Resize first: a resize needs vCPU quota in the new family and re-creates {}.",
            size.name,
            size.family,
            size.trusted_launch.describe(),
            paths.what
        ),
        paths.size,
    )
}

/// A Gen2 image on a size whose family runs Generation 1 only (the
/// table's "not supported (no Gen2)" column): refused whatever the
/// security type, with Azure's message and the sizes that do run Gen2.
fn check_generation(
    ctx: &Context<'_>,
    img: &ImageDefinition,
    size: &VmSize,
    paths: &Paths,
) -> Result<(), FleetError> {
    if img.hyper_v_generation != HyperVGeneration::V2
        || size.trusted_launch != crate::sizes::TrustedLaunchSupport::NotSupportedNoGen2
    {
        return Ok(());
    }
    let alts: Vec<&str> = ctx
        .sizes
        .supported_alternatives(size)
        .into_iter()
        .map(|s| s.name.as_str())
        .collect();
    let alts = if alts.is_empty() {
        "none in the size catalog".to_owned()
    } else {
        alts.join(", ")
    };
    Err(bad(
        ErrorCode::BadRequest,
        format!(
            "{} Its family {} runs Generation 1 only; sizes that run Generation 2: {alts}.",
            msg_no_gen2(&size.name),
            size.family
        ),
        paths.size,
    ))
}

/// Azure's message for a size that cannot boot a Generation 2 image.
pub fn msg_no_gen2(size: &str) -> String {
    format!(
        "The selected VM size '{size}' cannot boot Hypervisor Generation '2'. If this was a Create operation please check that the Hypervisor Generation of the Image matches the Hypervisor Generation of the selected VM Size. If this was an Update operation please select a Hypervisor Generation '2' VM Size."
    )
}

/// Resolves a security profile: the rules of "Security profile" and the
/// defaults.
fn resolve_security(
    ctx: &Context<'_>,
    paths: &Paths,
    requested: Option<SecurityProfile>,
    img: &ImageDefinition,
    size: &VmSize,
    mode: Mode,
    warnings: &mut Vec<Warning>,
) -> Result<SecurityProfile, FleetError> {
    let p = requested.unwrap_or_default();
    let sec = paths.security;
    if p.encryption_at_host == Some(true) {
        return Err(bad(
            ErrorCode::InvalidParameter,
            "The property 'securityProfile.encryptionAtHost' is not valid because this platform does not encrypt disks at the host. Leave it unset or false.",
            format!("{sec}.encryptionAtHost"),
        ));
    }
    let ty = match (p.security_type, mode) {
        (Some(t), _) => t,
        (None, _) if p.uefi_settings.is_some() => {
            return Err(bad(
                ErrorCode::BadRequest,
                MSG_UEFI_WITHOUT_TYPE,
                format!("{sec}.uefiSettings"),
            ))
        }
        (None, Mode::Update(_)) => SecurityType::Standard,
        (None, Mode::Create) => {
            if img.trusted_launch_eligible()
                && (size.supports_trusted_launch() || img.trusted_launch_only())
            {
                SecurityType::TrustedLaunch
            } else {
                let why = if img.hyper_v_generation == HyperVGeneration::V1 {
                    format!("the image '{}' is Generation 1 (V1)", img.name)
                } else if !img.trusted_launch_eligible() {
                    format!(
                        "the image '{}' does not have the SecurityType feature TrustedLaunchSupported",
                        img.name
                    )
                } else {
                    format!(
                        "the VM size '{}' of family {} {}",
                        size.name,
                        size.family,
                        size.trusted_launch.describe()
                    )
                };
                warnings.push(Warning {
                    code: WarningCode::DefaultedToStandard,
                    message: format!("securityType defaulted to 'Standard' because {why}: no Secure Boot, no vTPM, no attestation."),
                    target: Some(format!("{sec}.securityType")),
                });
                SecurityType::Standard
            }
        }
    };
    match ty {
        SecurityType::ConfidentialVm => Err(bad(
            ErrorCode::BadRequest,
            "The security type 'ConfidentialVM' is not supported: it needs AMD SEV-SNP or Intel TDX memory encryption, which this platform does not provide. Use 'TrustedLaunch'.",
            format!("{sec}.securityType"),
        )),
        SecurityType::Standard => {
            if img.trusted_launch_only() {
                return Err(bad(
                    ErrorCode::BadRequest,
                    MSG_IMAGE_TL_ONLY,
                    format!("{sec}.securityType"),
                ));
            }
            if p.uefi_settings.is_some() {
                return Err(bad(
                    ErrorCode::BadRequest,
                    "Use of UEFI settings is not supported when security type is 'Standard'. To roll back to Standard, send \"uefiSettings\": null.",
                    format!("{sec}.uefiSettings"),
                ));
            }
            Ok(SecurityProfile {
                security_type: Some(SecurityType::Standard),
                uefi_settings: None,
                encryption_at_host: p.encryption_at_host,
            })
        }
        SecurityType::TrustedLaunch => {
            if !img.trusted_launch_eligible() {
                return Err(bad(
                    ErrorCode::BadRequest,
                    MSG_IMAGE_NOT_TL,
                    format!("{}.imageReference", paths.storage),
                ));
            }
            if !size.supports_trusted_launch() {
                return Err(size_not_supported(ctx, size, paths));
            }
            let u = p.uefi_settings.unwrap_or_default();
            let upgrade = matches!(mode, Mode::Update(was) if was != SecurityType::TrustedLaunch);
            let secure_boot = u.secure_boot_enabled.unwrap_or(!upgrade);
            let vtpm = u.v_tpm_enabled.unwrap_or(true);
            if !secure_boot {
                warnings.push(Warning {
                    code: WarningCode::SecureBootDisabled,
                    message: "Secure Boot is disabled: enable it (uefiSettings.secureBootEnabled: true) unless custom unsigned kernels or drivers are used. Attestation fails while Secure Boot is off.".to_owned(),
                    target: Some(format!("{sec}.uefiSettings.secureBootEnabled")),
                });
            }
            if !vtpm {
                warnings.push(Warning {
                    code: WarningCode::VTpmDisabled,
                    message: "vTPM is disabled: enable it (uefiSettings.vTpmEnabled: true); without it the boot is not measured and cannot be attested.".to_owned(),
                    target: Some(format!("{sec}.uefiSettings.vTpmEnabled")),
                });
            }
            Ok(SecurityProfile {
                security_type: Some(SecurityType::TrustedLaunch),
                uefi_settings: Some(UefiSettings::new(secure_boot, vtpm)),
                encryption_at_host: p.encryption_at_host,
            })
        }
    }
}

fn check_data_disks(disks: &[DataDisk], paths: &Paths) -> Result<(), FleetError> {
    let mut seen: Vec<u32> = Vec::new();
    for (i, d) in disks.iter().enumerate() {
        let at = format!("{}.dataDisks[{i}]", paths.storage);
        if d.lun > MAX_LUN {
            return Err(FleetError::out_of_range("lun", d.lun, 0, MAX_LUN).at(format!("{at}.lun")));
        }
        if seen.contains(&d.lun) {
            return Err(bad(
                ErrorCode::InvalidParameter,
                format!("The LUN {} is used by more than one data disk.", d.lun),
                format!("{at}.lun"),
            ));
        }
        seen.push(d.lun);
        if !(1..=MAX_DISK_SIZE_GB).contains(&d.disk_size_gb) {
            return Err(FleetError::out_of_range(
                "diskSizeGB",
                d.disk_size_gb,
                1,
                MAX_DISK_SIZE_GB,
            )
            .at(format!("{at}.diskSizeGB")));
        }
    }
    Ok(())
}

fn check_extensions(
    extensions: &[Extension],
    at: &str,
    security: &SecurityProfile,
    os: OsType,
) -> Result<(), FleetError> {
    for (i, e) in extensions.iter().enumerate() {
        let at = format!("{at}[{i}]");
        if extensions
            .iter()
            .filter(|o| o.name.eq_ignore_ascii_case(&e.name))
            .count()
            > 1
        {
            return Err(bad(
                ErrorCode::InvalidParameter,
                format!("The extension name '{}' is used more than once.", e.name),
                format!("{at}.name"),
            ));
        }
        let Some(for_os) = e.guest_attestation_os() else {
            continue;
        };
        if !(security.secure_boot() && security.vtpm()) {
            return Err(bad(
                ErrorCode::BadRequest,
                "The Guest Attestation extension needs securityType 'TrustedLaunch' with Secure Boot and vTPM enabled (uefiSettings.secureBootEnabled and uefiSettings.vTpmEnabled true).",
                at,
            ));
        }
        if for_os != os {
            return Err(bad(
                ErrorCode::InvalidParameter,
                format!(
                    "The Guest Attestation extension of publisher '{}' is for {for_os}, but the image is {os}.",
                    e.properties.publisher
                ),
                format!("{at}.properties.publisher"),
            ));
        }
    }
    Ok(())
}

fn check_image_change(
    existing: Option<&ImageReference>,
    requested: Option<&ImageReference>,
    confirm: Confirmations,
    paths: &Paths,
) -> Result<(), FleetError> {
    let (Some(old), Some(new)) = (existing, requested) else {
        return Ok(());
    };
    if old.same_as(new) || confirm.os_disk_data_loss {
        return Ok(());
    }
    Err(bad(
        ErrorCode::OperationNotAllowed,
        format!(
            "Changing the image reference from '{}' to '{}' re-creates the OS disk of {} from the new image: everything written to the OS disk since it was created is lost (data disks are kept). Repeat the request with the OS disk data-loss confirmation to proceed.",
            old.id, new.id, paths.what
        ),
        format!("{}.imageReference.id", paths.storage),
    ))
}

/// vCPUs a change needs in the new size's family: all of the new demand
/// in another family, the growth within the same family.
fn additional_vcpus(old: Option<(&VmSize, u32)>, new: (&VmSize, u32)) -> u32 {
    let demand = new.0.vcpus.saturating_mul(new.1);
    match old {
        Some((s, n)) if s.family.eq_ignore_ascii_case(&new.0.family) => {
            demand.saturating_sub(s.vcpus.saturating_mul(n))
        }
        _ => demand,
    }
}

fn check_quota(
    ctx: &Context<'_>,
    family: &str,
    additional: u32,
    paths: &Paths,
) -> Result<(), FleetError> {
    if additional == 0 {
        return Ok(());
    }
    check_quotas(ctx.quotas, ctx.usage, family, additional).map_err(|e| e.at(paths.size))
}

/// Validates a new VM and applies the defaults.
pub fn validate_vm_create(
    ctx: &Context<'_>,
    vm: &VirtualMachine,
) -> Result<Validated<VirtualMachine>, FleetError> {
    vm_common(ctx, None, vm, Confirmations::default())
}

/// Validates the update of `existing` to `requested` (PATCH merged).
pub fn validate_vm_update(
    ctx: &Context<'_>,
    existing: &VirtualMachine,
    requested: &VirtualMachine,
    confirm: Confirmations,
) -> Result<Validated<VirtualMachine>, FleetError> {
    vm_common(ctx, Some(existing), requested, confirm)
}

fn vm_common(
    ctx: &Context<'_>,
    existing: Option<&VirtualMachine>,
    vm: &VirtualMachine,
    confirm: Confirmations,
) -> Result<Validated<VirtualMachine>, FleetError> {
    let paths = &VM_PATHS;
    check_type(&vm.resource_type, VM_TYPE)?;
    check_location(&vm.location)?;
    if let Some(old) = existing {
        unchanged_location(&old.location, &vm.location)?;
    }
    let props = &vm.properties;
    let img = image(ctx, &props.storage_profile, paths)?;
    if !vm.name.is_empty() {
        check_vm_name(&vm.name, img.os_type, "name")?;
    }
    let size = size(ctx, &props.hardware_profile.vm_size, paths)?;
    check_generation(ctx, img, size, paths)?;
    if let Some(old) = existing {
        check_image_change(
            old.properties.storage_profile.image_reference.as_ref(),
            props.storage_profile.image_reference.as_ref(),
            confirm,
            paths,
        )?;
    }
    let mode = existing.map_or(Mode::Create, |o| {
        Mode::Update(crate::security::effective_type(
            o.properties.security_profile.as_ref(),
        ))
    });
    let mut warnings = Vec::new();
    let security = resolve_security(
        ctx,
        paths,
        props.security_profile,
        img,
        size,
        mode,
        &mut warnings,
    )?;
    check_data_disks(&props.storage_profile.data_disks, paths)?;
    if let Some(n) = &props.network_profile {
        check_network(n, paths)?;
    }
    if let Some(os) = &props.os_profile {
        check_os_profile(
            os,
            existing.and_then(|o| o.properties.os_profile.as_ref()),
            false,
            paths,
        )?;
    }
    check_extensions(&vm.resources, "resources", &security, img.os_type)?;
    if let Some(old) = existing {
        let (a, b) = (
            old.properties.virtual_machine_scale_set.as_ref(),
            props.virtual_machine_scale_set.as_ref(),
        );
        if !a
            .map(|r| r.id.to_ascii_lowercase())
            .eq(&b.map(|r| r.id.to_ascii_lowercase()))
        {
            return Err(bad(
                ErrorCode::OperationNotAllowed,
                "Changing property 'virtualMachineScaleSet' is not allowed: a VM joins a scale set when it is created.",
                "properties.virtualMachineScaleSet.id",
            ));
        }
    }
    let old_size = existing.and_then(|o| ctx.sizes.get(&o.properties.hardware_profile.vm_size));
    check_quota(
        ctx,
        &size.family,
        additional_vcpus(old_size.map(|s| (s, 1)), (size, 1)),
        paths,
    )?;
    let mut out = vm.clone();
    out.properties.security_profile = Some(security);
    out.properties.hardware_profile.vm_size = size.name.clone();
    if let Some(old) = existing {
        out.id = old.id.clone();
        out.name = old.name.clone();
        out.resource_type = old.resource_type.clone();
        out.properties.provisioning_state = old.properties.provisioning_state;
        out.properties.vm_id = old.properties.vm_id.clone();
        out.properties.runtime_name = old.properties.runtime_name.clone();
        out.properties.model_version = old.properties.model_version;
        if out.model_differs(old) {
            out.properties.model_version = out.properties.model_version.saturating_add(1);
        }
    } else {
        out.properties.model_version = 1;
        // The control plane gives it: never the caller.
        out.properties.runtime_name = None;
    }
    Ok(Validated {
        resource: out,
        warnings,
    })
}

/// Validates a new scale set and applies the defaults.
pub fn validate_scale_set_create(
    ctx: &Context<'_>,
    set: &ScaleSet,
) -> Result<Validated<ScaleSet>, FleetError> {
    set_common(ctx, None, set, Confirmations::default())
}

/// Validates the update of `existing` to `requested` (PATCH merged); the
/// result's model version is bumped if its model changed.
pub fn validate_scale_set_update(
    ctx: &Context<'_>,
    existing: &ScaleSet,
    requested: &ScaleSet,
    confirm: Confirmations,
) -> Result<Validated<ScaleSet>, FleetError> {
    set_common(ctx, Some(existing), requested, confirm)
}

fn set_common(
    ctx: &Context<'_>,
    existing: Option<&ScaleSet>,
    set: &ScaleSet,
    confirm: Confirmations,
) -> Result<Validated<ScaleSet>, FleetError> {
    let paths = &SET_PATHS;
    check_type(&set.resource_type, SCALE_SET_TYPE)?;
    check_location(&set.location)?;
    let props = &set.properties;
    let model = &props.virtual_machine_profile;
    if let Some(old) = existing {
        unchanged_location(&old.location, &set.location)?;
        if old.properties.orchestration_mode != props.orchestration_mode {
            return Err(bad(
                ErrorCode::OperationNotAllowed,
                "Changing property 'orchestrationMode' is not allowed.",
                "properties.orchestrationMode",
            ));
        }
    }
    if let Some(tier) = &set.sku.tier {
        if !tier.eq_ignore_ascii_case("Standard") {
            return Err(FleetError::new(
                ErrorCode::InvalidParameter,
                format!("The sku tier '{tier}' is not offered here: the tier is 'Standard'."),
            )
            .at("sku.tier"));
        }
    }
    if set.sku.capacity > MAX_CAPACITY {
        return Err(
            FleetError::out_of_range("capacity", set.sku.capacity, 0, MAX_CAPACITY)
                .at("sku.capacity"),
        );
    }
    let policy = set.upgrade_policy();
    let rolling = policy.rolling().map_err(|mut e| {
        e.target = e.target.map(|t| format!("properties.upgradePolicy.{t}"));
        e
    })?;
    let img = image(ctx, &model.storage_profile, paths)?;
    if !set.name.is_empty() {
        check_vm_name(&set.name, img.os_type, "name")?;
    }
    let size = size(ctx, &set.sku.name, paths)?;
    check_generation(ctx, img, size, paths)?;
    if let Some(old) = existing {
        check_image_change(
            old.properties
                .virtual_machine_profile
                .storage_profile
                .image_reference
                .as_ref(),
            model.storage_profile.image_reference.as_ref(),
            confirm,
            paths,
        )?;
    }
    let was = existing.map(|o| {
        crate::security::effective_type(
            o.properties
                .virtual_machine_profile
                .security_profile
                .as_ref(),
        )
    });
    let mut warnings = Vec::new();
    let security = resolve_security(
        ctx,
        paths,
        model.security_profile,
        img,
        size,
        was.map_or(Mode::Create, Mode::Update),
        &mut warnings,
    )?;
    check_data_disks(&model.storage_profile.data_disks, paths)?;
    if let Some(n) = &model.network_profile {
        check_network(n, paths)?;
    }
    if let Some(os) = &model.os_profile {
        check_os_profile(os, None, true, paths)?;
    }
    let to_tl = matches!(was, Some(w) if w != SecurityType::TrustedLaunch)
        && security.effective_type() == SecurityType::TrustedLaunch;
    if to_tl
        && !model.storage_profile.data_disks.is_empty()
        && !(policy.mode == crate::policy::UpgradeMode::Rolling && rolling.max_surge)
    {
        return Err(bad(
            ErrorCode::BadRequest,
            "A Virtual Machine Scale Set with data disks can move to 'TrustedLaunch' security type only with upgradePolicy mode 'Rolling' and rollingUpgradePolicy maxSurge true.",
            "properties.upgradePolicy",
        ));
    }
    check_extensions(
        model
            .extension_profile
            .as_ref()
            .map_or(&[], |e| e.extensions.as_slice()),
        "properties.virtualMachineProfile.extensionProfile.extensions",
        &security,
        img.os_type,
    )?;
    let old_size = existing.and_then(|o| ctx.sizes.get(&o.sku.name).map(|s| (s, o.sku.capacity)));
    check_quota(
        ctx,
        &size.family,
        additional_vcpus(old_size, (size, set.sku.capacity)),
        paths,
    )?;
    let mut out = set.clone();
    out.sku.name = size.name.clone();
    out.properties.virtual_machine_profile.security_profile = Some(security);
    if let Some(old) = existing {
        out.id = old.id.clone();
        out.name = old.name.clone();
        out.resource_type = old.resource_type.clone();
        out.properties.provisioning_state = old.properties.provisioning_state;
        out.properties.unique_id = old.properties.unique_id.clone();
        out.properties.model_version = old.properties.model_version;
        out.properties.next_instance_id = old.properties.next_instance_id;
        out.properties.runtime_name = old.properties.runtime_name.clone();
        if out.model_differs(old) {
            out.bump_model_version();
        }
    } else {
        out.properties.model_version = 0;
        out.properties.next_instance_id = 0;
        // The control plane gives it: never the caller.
        out.properties.runtime_name = None;
    }
    Ok(Validated {
        resource: out,
        warnings,
    })
}
