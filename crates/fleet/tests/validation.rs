//! One row per validation rule, default and warning of the Azure model
//! (`azure-model.md`), plus JSON round trips of the resources in Azure's
//! shapes.

use proptest::prelude::*;
use trustlaunch_fleet::image::{
    GalleryImageFeature, GalleryImageIdentifier, HyperVGeneration, ImageCatalog, ImageDefinition,
    ImageReference, ImageVersion, OsType,
};
use trustlaunch_fleet::resources::{
    DataDisk, DiskCreateOption, Extension, ExtensionProfile, HardwareProfile, OrchestrationMode,
    ResourceId, ScaleSet, ScaleSetProperties, ScaleSetVm, ScaleSetVmProfile, Sku, StorageProfile,
    VirtualMachine, VirtualMachineProperties,
};
use trustlaunch_fleet::security::{
    apply_profile_patch, SecurityProfile, SecurityProfilePatch, SecurityType,
};
use trustlaunch_fleet::sizes::{Quotas, SizeCatalog, Usage};
use trustlaunch_fleet::validate::{
    validate_scale_set_create, validate_scale_set_update, validate_vm_create, validate_vm_update,
    Confirmations, Context, WarningCode, MSG_IMAGE_NOT_TL, MSG_IMAGE_TL_ONLY,
    MSG_UEFI_WITHOUT_TYPE,
};
use trustlaunch_fleet::{ErrorCode, FleetError, RollingUpgradePolicy, UpgradeMode, UpgradePolicy};

// ------------------------------------------------------------------ fixture

struct Fx {
    images: ImageCatalog,
    sizes: SizeCatalog,
    quotas: Quotas,
    usage: Usage,
}

fn fx() -> Fx {
    let mut images = ImageCatalog::new();
    for (name, os, g, feature) in [
        (
            "ubuntu-tl",
            OsType::Linux,
            HyperVGeneration::V2,
            Some("TrustedLaunchSupported"),
        ),
        (
            "ubuntu-tl2",
            OsType::Linux,
            HyperVGeneration::V2,
            Some("TrustedLaunchSupported"),
        ),
        ("ubuntu-std", OsType::Linux, HyperVGeneration::V2, None),
        ("ubuntu-gen1", OsType::Linux, HyperVGeneration::V1, None),
        (
            "ubuntu-tlonly",
            OsType::Linux,
            HyperVGeneration::V2,
            Some("TrustedLaunch"),
        ),
        (
            "win-tl",
            OsType::Windows,
            HyperVGeneration::V2,
            Some("TrustedLaunchSupported"),
        ),
    ] {
        images
            .add_definition(
                "g1",
                ImageDefinition {
                    name: name.into(),
                    os_type: os,
                    hyper_v_generation: g,
                    features: feature
                        .map(|v| GalleryImageFeature {
                            name: "SecurityType".into(),
                            value: v.into(),
                        })
                        .into_iter()
                        .collect(),
                    identifier: GalleryImageIdentifier {
                        publisher: "trustlaunch".into(),
                        offer: name.into(),
                        sku: "1".into(),
                    },
                },
            )
            .unwrap();
        images
            .add_version(
                "g1",
                name,
                ImageVersion {
                    name: "1.0.0".into(),
                    source: format!("{name}-raw"),
                    guest_agent: None,
                },
            )
            .unwrap();
    }
    let mut quotas = Quotas::new();
    quotas.set("Dsv5", 10);
    let mut usage = Usage::new();
    usage.set("Dsv5", 8);
    Fx {
        images,
        sizes: SizeCatalog::built_in(),
        quotas,
        usage,
    }
}

impl Fx {
    fn ctx(&self) -> Context<'_> {
        Context {
            images: &self.images,
            sizes: &self.sizes,
            quotas: &self.quotas,
            usage: &self.usage,
        }
    }
}

fn img(def: &str) -> ImageReference {
    ImageReference {
        id: format!("/subscriptions/sub1/resourceGroups/rg/providers/Microsoft.Compute/galleries/g1/images/{def}/versions/1.0.0"),
    }
}

fn vm_id(name: &str) -> ResourceId {
    ResourceId::VirtualMachine {
        subscription: "sub1".into(),
        resource_group: "rg".into(),
        name: name.into(),
    }
}

fn vm(size: &str, image: &str, sp: Option<SecurityProfile>) -> VirtualMachine {
    VirtualMachine::new(
        vm_id("vm-1"),
        "westeurope",
        VirtualMachineProperties {
            hardware_profile: HardwareProfile {
                vm_size: size.into(),
            },
            storage_profile: StorageProfile {
                image_reference: Some(img(image)),
                ..Default::default()
            },
            security_profile: sp,
            ..Default::default()
        },
    )
}

fn set(size: &str, capacity: u32, image: &str, sp: Option<SecurityProfile>) -> ScaleSet {
    ScaleSet::new(
        ResourceId::ScaleSet {
            subscription: "sub1".into(),
            resource_group: "rg".into(),
            name: "ss".into(),
        },
        "westeurope",
        Sku {
            name: size.into(),
            capacity,
            tier: None,
        },
        ScaleSetProperties {
            virtual_machine_profile: ScaleSetVmProfile {
                storage_profile: StorageProfile {
                    image_reference: Some(img(image)),
                    ..Default::default()
                },
                security_profile: sp,
                extension_profile: None,
                ..Default::default()
            },
            ..Default::default()
        },
    )
}

fn data_disk(lun: u32, size: u32) -> DataDisk {
    DataDisk {
        lun,
        disk_size_gb: size,
        name: None,
        create_option: DiskCreateOption::Empty,
    }
}

fn tl(sb: bool, vtpm: bool) -> Option<SecurityProfile> {
    Some(SecurityProfile::trusted_launch(sb, vtpm))
}

fn std_() -> Option<SecurityProfile> {
    Some(SecurityProfile::standard())
}

fn typed(t: SecurityType) -> Option<SecurityProfile> {
    Some(SecurityProfile {
        security_type: Some(t),
        ..Default::default()
    })
}

fn rolling(max_surge: bool) -> Option<UpgradePolicy> {
    Some(UpgradePolicy {
        mode: UpgradeMode::Rolling,
        rolling_upgrade_policy: Some(RollingUpgradePolicy {
            max_surge: Some(max_surge),
            ..Default::default()
        }),
    })
}

/// An existing, resolved Standard scale set on D2s_v3 from ubuntu-tl.
fn existing_set(c: &Context<'_>) -> ScaleSet {
    validate_scale_set_create(c, &set("Standard_D2s_v3", 2, "ubuntu-tl", std_()))
        .unwrap()
        .resource
}

fn existing_vm(c: &Context<'_>, size: &str) -> VirtualMachine {
    validate_vm_create(c, &vm(size, "ubuntu-tl", std_()))
        .unwrap()
        .resource
}

// ------------------------------------------------------------------ rows

#[derive(Debug)]
struct Out {
    security: Option<SecurityProfile>,
    warnings: Vec<WarningCode>,
    model_version: Option<u64>,
}

fn vm_out(
    r: Result<trustlaunch_fleet::validate::Validated<VirtualMachine>, FleetError>,
) -> Result<Out, FleetError> {
    r.map(|v| Out {
        security: v.resource.properties.security_profile,
        warnings: v.warnings.iter().map(|w| w.code).collect(),
        model_version: None,
    })
}

fn set_out(
    r: Result<trustlaunch_fleet::validate::Validated<ScaleSet>, FleetError>,
) -> Result<Out, FleetError> {
    r.map(|v| Out {
        security: v
            .resource
            .properties
            .virtual_machine_profile
            .security_profile,
        warnings: v.warnings.iter().map(|w| w.code).collect(),
        model_version: Some(v.resource.properties.model_version),
    })
}

enum Msg {
    Exact(&'static str),
    Prefix(&'static str),
}

enum Expect {
    Err(ErrorCode, Msg, &'static str),
    Ok(Option<SecurityProfile>, &'static [WarningCode], Option<u64>),
}

type Run = fn(&Context<'_>) -> Result<Out, FleetError>;

const QUOTA_D4S_V5: &str = "Operation could not be completed as it results in exceeding approved Dsv5 Family Cores quota. Additional details - Current Limit: 10, Current Usage: 8, Additional Required: 4, (Minimum) New Limit Required: 12.";

fn rows() -> Vec<(&'static str, Run, Expect)> {
    use ErrorCode::*;
    use Expect::{Err as E, Ok as O};
    use Msg::*;
    use WarningCode::*;
    vec![
        // --- security profile errors
        ("uefiSettings without securityType", |c| {
            let sp = SecurityProfile { uefi_settings: Some(trustlaunch_fleet::security::UefiSettings::new(true, true)), ..Default::default() };
            vm_out(validate_vm_create(c, &vm("Standard_D2s_v5", "ubuntu-tl", Some(sp))))
        }, E(BadRequest, Exact(MSG_UEFI_WITHOUT_TYPE), "properties.securityProfile.uefiSettings")),
        ("TrustedLaunch on a V1 image", |c| vm_out(validate_vm_create(c, &vm("Standard_D2s_v3", "ubuntu-gen1", tl(true, true)))),
            E(BadRequest, Exact(MSG_IMAGE_NOT_TL), "properties.storageProfile.imageReference")),
        ("TrustedLaunch on an image without TrustedLaunchSupported", |c| vm_out(validate_vm_create(c, &vm("Standard_D2s_v3", "ubuntu-std", tl(true, true)))),
            E(BadRequest, Exact(MSG_IMAGE_NOT_TL), "properties.storageProfile.imageReference")),
        ("TrustedLaunch on a no-Gen2 family size", |c| vm_out(validate_vm_create(c, &vm("Standard_D2_v3", "ubuntu-tl", tl(true, true)))),
            E(BadRequest, Prefix("The selected VM size 'Standard_D2_v3' cannot boot Hypervisor Generation '2'. If this was a Create operation please check that the Hypervisor Generation of the Image matches the Hypervisor Generation of the selected VM Size. If this was an Update operation please select a Hypervisor Generation '2' VM Size. Its family Dv3 runs Generation 1 only; sizes that run Generation 2: Standard_D2s_v3, Standard_D2_v5, "), "properties.hardwareProfile.vmSize")),
        ("Standard on a no-Gen2 family size with a Gen2 image", |c| set_out(validate_scale_set_create(c, &set("Standard_D2_v3", 2, "ubuntu-tl", std_()))),
            E(BadRequest, Prefix("The selected VM size 'Standard_D2_v3' cannot boot Hypervisor Generation '2'."), "sku.name")),
        ("a Standard Gen2 set resized onto a no-Gen2 family", |c| {
            let old = existing_set(c);
            let mut new = old.clone();
            new.sku.name = "Standard_D2_v3".into();
            set_out(validate_scale_set_update(c, &old, &new, Confirmations::default()))
        }, E(BadRequest, Prefix("The selected VM size 'Standard_D2_v3' cannot boot Hypervisor Generation '2'."), "sku.name")),
        ("TrustedLaunch on a currently-not-supported family size", |c| vm_out(validate_vm_create(c, &vm("Standard_D2ps_v5", "ubuntu-tl", tl(true, true)))),
            E(BadRequest, Prefix("The VM size 'Standard_D2ps_v5' is not supported for creation of VMs and Virtual Machine Scale Set with 'TrustedLaunch' security type. Its family Dpsv5 does not support Trusted Launch currently"), "properties.hardwareProfile.vmSize")),
        ("TrustedLaunch scale set on an unsupported size", |c| set_out(validate_scale_set_create(c, &set("Standard_D2ps_v5", 1, "ubuntu-tl", tl(true, true)))),
            E(BadRequest, Prefix("The VM size 'Standard_D2ps_v5' is not supported for creation of VMs and Virtual Machine Scale Set with 'TrustedLaunch' security type. Its family Dpsv5"), "sku.name")),
        ("Standard on a TrustedLaunch-only image", |c| vm_out(validate_vm_create(c, &vm("Standard_D2s_v3", "ubuntu-tlonly", std_()))),
            E(BadRequest, Exact(MSG_IMAGE_TL_ONLY), "properties.securityProfile.securityType")),
        ("Standard with uefiSettings", |c| {
            let mut sp = SecurityProfile::trusted_launch(true, true);
            sp.security_type = Some(SecurityType::Standard);
            vm_out(validate_vm_create(c, &vm("Standard_D2s_v3", "ubuntu-tl", Some(sp))))
        }, E(BadRequest, Prefix("Use of UEFI settings is not supported when security type is 'Standard'."), "properties.securityProfile.uefiSettings")),
        ("ConfidentialVM refused", |c| vm_out(validate_vm_create(c, &vm("Standard_D2s_v3", "ubuntu-tl", typed(SecurityType::ConfidentialVm)))),
            E(BadRequest, Prefix("The security type 'ConfidentialVM' is not supported: it needs AMD SEV-SNP or Intel TDX"), "properties.securityProfile.securityType")),
        ("encryptionAtHost refused", |c| {
            let sp = SecurityProfile { encryption_at_host: Some(true), ..SecurityProfile::trusted_launch(true, true) };
            vm_out(validate_vm_create(c, &vm("Standard_D2s_v3", "ubuntu-tl", Some(sp))))
        }, E(InvalidParameter, Prefix("The property 'securityProfile.encryptionAtHost' is not valid"), "properties.securityProfile.encryptionAtHost")),
        // --- sizes, images, names, quota
        ("VM quota exceeded", |c| vm_out(validate_vm_create(c, &vm("Standard_D4s_v5", "ubuntu-tl", None))),
            E(OperationNotAllowed, Prefix(QUOTA_D4S_V5), "properties.hardwareProfile.vmSize")),
        ("scale set quota exceeded (capacity x vCPUs)", |c| set_out(validate_scale_set_create(c, &set("Standard_D2s_v5", 2, "ubuntu-tl", None))),
            E(OperationNotAllowed, Prefix(QUOTA_D4S_V5), "sku.name")),
        ("unknown size", |c| vm_out(validate_vm_create(c, &vm("Standard_Nope", "ubuntu-tl", None))),
            E(InvalidParameter, Prefix("The VM size 'Standard_Nope' is not valid."), "properties.hardwareProfile.vmSize")),
        ("missing imageReference", |c| {
            let mut v = vm("Standard_D2s_v3", "ubuntu-tl", None);
            v.properties.storage_profile.image_reference = None;
            vm_out(validate_vm_create(c, &v))
        }, E(InvalidParameter, Exact("Required parameter 'imageReference' is missing (null)."), "properties.storageProfile.imageReference")),
        ("image not found", |c| vm_out(validate_vm_create(c, &vm("Standard_D2s_v3", "nope", None))),
            E(ResourceNotFound, Prefix("The gallery image '/subscriptions/sub1/"), "properties.storageProfile.imageReference.id")),
        ("malformed image id", |c| {
            let mut v = vm("Standard_D2s_v3", "ubuntu-tl", None);
            v.properties.storage_profile.image_reference = Some(ImageReference { id: "/subscriptions/s/images/x".into() });
            vm_out(validate_vm_create(c, &v))
        }, E(InvalidParameter, Prefix("The resource id '/subscriptions/s/images/x' is invalid: segment 2: expected 'resourceGroups'"), "properties.storageProfile.imageReference.id")),
        ("bad VM name", |c| {
            let mut v = vm("Standard_D2s_v3", "ubuntu-tl", None);
            v.name = "vm_1".into();
            vm_out(validate_vm_create(c, &v))
        }, E(InvalidParameter, Exact("The resource name 'vm_1' is invalid: a Linux virtual machine or scale set name is 1 to 64 letters, digits and hyphens, not ending with a hyphen."), "name")),
        ("Windows name over 15 characters", |c| {
            let mut v = vm("Standard_D2s_v3", "win-tl", None);
            v.name = "a-windows-vm-name".into();
            vm_out(validate_vm_create(c, &v))
        }, E(InvalidParameter, Prefix("The resource name 'a-windows-vm-name' is invalid: a Windows"), "name")),
        ("empty location", |c| {
            let mut v = vm("Standard_D2s_v3", "ubuntu-tl", None);
            v.location.clear();
            vm_out(validate_vm_create(c, &v))
        }, E(InvalidParameter, Exact("The location property is required for this definition."), "location")),
        ("wrong resource type", |c| {
            let mut v = vm("Standard_D2s_v3", "ubuntu-tl", None);
            v.resource_type = "Microsoft.Compute/disks".into();
            vm_out(validate_vm_create(c, &v))
        }, E(InvalidParameter, Exact("The resource type 'Microsoft.Compute/disks' does not match 'Microsoft.Compute/virtualMachines'."), "type")),
        // --- data disks
        ("data disk LUN out of range", |c| {
            let mut v = vm("Standard_D2s_v3", "ubuntu-tl", None);
            v.properties.storage_profile.data_disks = vec![data_disk(64, 10)];
            vm_out(validate_vm_create(c, &v))
        }, E(InvalidParameter, Exact("The value 64 of parameter 'lun' is out of range. The value must be between 0 and 63, inclusive."), "properties.storageProfile.dataDisks[0].lun")),
        ("duplicate data disk LUN", |c| {
            let mut v = vm("Standard_D2s_v3", "ubuntu-tl", None);
            v.properties.storage_profile.data_disks = vec![data_disk(0, 10), data_disk(0, 10)];
            vm_out(validate_vm_create(c, &v))
        }, E(InvalidParameter, Exact("The LUN 0 is used by more than one data disk."), "properties.storageProfile.dataDisks[1].lun")),
        ("data disk size 0", |c| {
            let mut v = vm("Standard_D2s_v3", "ubuntu-tl", None);
            v.properties.storage_profile.data_disks = vec![data_disk(0, 0)];
            vm_out(validate_vm_create(c, &v))
        }, E(InvalidParameter, Exact("The value 0 of parameter 'diskSizeGB' is out of range. The value must be between 1 and 32767, inclusive."), "properties.storageProfile.dataDisks[0].diskSizeGB")),
        // --- scale set: capacity, policy, extensions
        ("capacity above 1000", |c| set_out(validate_scale_set_create(c, &set("Standard_D2s_v3", 1001, "ubuntu-tl", None))),
            E(InvalidParameter, Exact("The value 1001 of parameter 'capacity' is out of range. The value must be between 0 and 1000, inclusive."), "sku.capacity")),
        ("maxBatchInstancePercent below 5", |c| {
            let mut s = set("Standard_D2s_v3", 2, "ubuntu-tl", None);
            s.properties.upgrade_policy = Some(UpgradePolicy { mode: UpgradeMode::Rolling, rolling_upgrade_policy: Some(RollingUpgradePolicy { max_batch_instance_percent: Some(4), ..Default::default() }) });
            set_out(validate_scale_set_create(c, &s))
        }, E(InvalidParameter, Exact("The value 4 of parameter 'maxBatchInstancePercent' is out of range. The value must be between 5 and 100, inclusive."), "properties.upgradePolicy.rollingUpgradePolicy.maxBatchInstancePercent")),
        ("guest attestation with Secure Boot off", |c| {
            let mut s = set("Standard_D2s_v3", 2, "ubuntu-tl", tl(false, true));
            s.properties.virtual_machine_profile.extension_profile = Some(ExtensionProfile { extensions: vec![Extension::guest_attestation(OsType::Linux)] });
            set_out(validate_scale_set_create(c, &s))
        }, E(BadRequest, Prefix("The Guest Attestation extension needs securityType 'TrustedLaunch' with Secure Boot and vTPM enabled"), "properties.virtualMachineProfile.extensionProfile.extensions[0]")),
        ("guest attestation on Standard", |c| {
            let mut s = set("Standard_D2s_v3", 2, "ubuntu-tl", std_());
            s.properties.virtual_machine_profile.extension_profile = Some(ExtensionProfile { extensions: vec![Extension::guest_attestation(OsType::Linux)] });
            set_out(validate_scale_set_create(c, &s))
        }, E(BadRequest, Prefix("The Guest Attestation extension needs"), "properties.virtualMachineProfile.extensionProfile.extensions[0]")),
        ("guest attestation for the wrong OS", |c| {
            let mut s = set("Standard_D2s_v3", 2, "ubuntu-tl", None);
            s.properties.virtual_machine_profile.extension_profile = Some(ExtensionProfile { extensions: vec![Extension::guest_attestation(OsType::Windows)] });
            set_out(validate_scale_set_create(c, &s))
        }, E(InvalidParameter, Exact("The Guest Attestation extension of publisher 'Microsoft.Azure.Security.WindowsAttestation' is for Windows, but the image is Linux."), "properties.virtualMachineProfile.extensionProfile.extensions[0].properties.publisher")),
        ("VM guest attestation with the vTPM off", |c| {
            let mut v = vm("Standard_D2s_v3", "ubuntu-tl", tl(true, false));
            v.resources = vec![Extension::guest_attestation(OsType::Linux)];
            vm_out(validate_vm_create(c, &v))
        }, E(BadRequest, Prefix("The Guest Attestation extension needs securityType 'TrustedLaunch' with Secure Boot and vTPM enabled"), "resources[0]")),
        ("VM moved to another scale set", |c| {
            let old = existing_vm(c, "Standard_D2s_v3");
            let mut new = old.clone();
            new.properties.virtual_machine_scale_set = Some(trustlaunch_fleet::resources::SubResource { id: "/subscriptions/sub1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/flex".into() });
            vm_out(validate_vm_update(c, &old, &new, Confirmations::default()))
        }, E(OperationNotAllowed, Prefix("Changing property 'virtualMachineScaleSet' is not allowed"), "properties.virtualMachineScaleSet.id")),
        // --- updates
        ("data disks to TrustedLaunch in Manual mode", |c| {
            let mut old = existing_set(c);
            old.properties.virtual_machine_profile.storage_profile.data_disks = vec![data_disk(0, 10)];
            let mut new = old.clone();
            new.properties.virtual_machine_profile.security_profile = tl(true, true);
            set_out(validate_scale_set_update(c, &old, &new, Confirmations::default()))
        }, E(BadRequest, Exact("A Virtual Machine Scale Set with data disks can move to 'TrustedLaunch' security type only with upgradePolicy mode 'Rolling' and rollingUpgradePolicy maxSurge true."), "properties.upgradePolicy")),
        ("data disks to TrustedLaunch, Rolling without maxSurge", |c| {
            let mut old = existing_set(c);
            old.properties.virtual_machine_profile.storage_profile.data_disks = vec![data_disk(0, 10)];
            let mut new = old.clone();
            new.properties.upgrade_policy = rolling(false);
            new.properties.virtual_machine_profile.security_profile = tl(true, true);
            set_out(validate_scale_set_update(c, &old, &new, Confirmations::default()))
        }, E(BadRequest, Prefix("A Virtual Machine Scale Set with data disks"), "properties.upgradePolicy")),
        ("scale set image change without confirmation", |c| {
            let old = existing_set(c);
            let mut new = old.clone();
            new.properties.virtual_machine_profile.storage_profile.image_reference = Some(img("ubuntu-tl2"));
            set_out(validate_scale_set_update(c, &old, &new, Confirmations::default()))
        }, E(OperationNotAllowed, Prefix("Changing the image reference from '/subscriptions/sub1/resourceGroups/rg/providers/Microsoft.Compute/galleries/g1/images/ubuntu-tl/versions/1.0.0' to '/subscriptions/sub1/resourceGroups/rg/providers/Microsoft.Compute/galleries/g1/images/ubuntu-tl2/versions/1.0.0' re-creates the OS disk of every instance from the new image: everything written to the OS disk since it was created is lost"), "properties.virtualMachineProfile.storageProfile.imageReference.id")),
        ("VM image change without confirmation", |c| {
            let old = existing_vm(c, "Standard_D2s_v3");
            let mut new = old.clone();
            new.properties.storage_profile.image_reference = Some(img("ubuntu-tl2"));
            vm_out(validate_vm_update(c, &old, &new, Confirmations::default()))
        }, E(OperationNotAllowed, Prefix("Changing the image reference from"), "properties.storageProfile.imageReference.id")),
        ("orchestrationMode change", |c| {
            let old = existing_set(c);
            let mut new = old.clone();
            new.properties.orchestration_mode = OrchestrationMode::Flexible;
            set_out(validate_scale_set_update(c, &old, &new, Confirmations::default()))
        }, E(OperationNotAllowed, Exact("Changing property 'orchestrationMode' is not allowed."), "properties.orchestrationMode")),
        ("location change", |c| {
            let old = existing_vm(c, "Standard_D2s_v3");
            let mut new = old.clone();
            new.location = "eastus".into();
            vm_out(validate_vm_update(c, &old, &new, Confirmations::default()))
        }, E(OperationNotAllowed, Prefix("Changing property 'location' is not allowed"), "location")),
        ("upgrade to TrustedLaunch on an unsupported size", |c| {
            let old = existing_vm(c, "Standard_D2ps_v5");
            let mut new = old.clone();
            new.properties.security_profile = typed(SecurityType::TrustedLaunch);
            vm_out(validate_vm_update(c, &old, &new, Confirmations::default()))
        }, E(BadRequest, Prefix("The VM size 'Standard_D2ps_v5' is not supported"), "properties.hardwareProfile.vmSize")),
        ("resize into a full quota", |c| {
            let old = existing_set(c);
            let mut new = old.clone();
            new.sku.name = "Standard_D2s_v5".into();
            set_out(validate_scale_set_update(c, &old, &new, Confirmations::default()))
        }, E(OperationNotAllowed, Prefix(QUOTA_D4S_V5), "sku.name")),
        // --- defaults and warnings
        ("new eligible VM defaults to TrustedLaunch, SB and vTPM on", |c| vm_out(validate_vm_create(c, &vm("Standard_D2s_v3", "ubuntu-tl", None))),
            O(tl(true, true), &[], None)),
        ("new scale set defaults to TrustedLaunch", |c| set_out(validate_scale_set_create(c, &set("Standard_D2s_v3", 3, "ubuntu-tl", None))),
            O(tl(true, true), &[], Some(0))),
        ("TrustedLaunch without uefiSettings on create: both on", |c| vm_out(validate_vm_create(c, &vm("Standard_D2s_v3", "ubuntu-tl", typed(SecurityType::TrustedLaunch)))),
            O(tl(true, true), &[], None)),
        ("TrustedLaunch-only image defaults to TrustedLaunch", |c| vm_out(validate_vm_create(c, &vm("Standard_B2s", "ubuntu-tlonly", None))),
            O(tl(true, true), &[], None)),
        ("new VM on an image without the feature defaults to Standard", |c| vm_out(validate_vm_create(c, &vm("Standard_D2s_v3", "ubuntu-std", None))),
            O(std_(), &[DefaultedToStandard], None)),
        ("new VM on a V1 image defaults to Standard", |c| vm_out(validate_vm_create(c, &vm("Standard_D2s_v3", "ubuntu-gen1", None))),
            O(std_(), &[DefaultedToStandard], None)),
        ("new VM on an unsupported size defaults to Standard", |c| vm_out(validate_vm_create(c, &vm("Standard_D2ps_v5", "ubuntu-tl", None))),
            O(std_(), &[DefaultedToStandard], None)),
        ("explicit Standard opts out", |c| vm_out(validate_vm_create(c, &vm("Standard_D2s_v3", "ubuntu-tl", std_()))),
            O(std_(), &[], None)),
        ("TrustedLaunch with vTPM off warns", |c| vm_out(validate_vm_create(c, &vm("Standard_D2s_v3", "ubuntu-tl", tl(true, false)))),
            O(tl(true, false), &[VTpmDisabled], None)),
        ("TrustedLaunch with Secure Boot off warns", |c| vm_out(validate_vm_create(c, &vm("Standard_D2s_v3", "ubuntu-tl", tl(false, true)))),
            O(tl(false, true), &[SecureBootDisabled], None)),
        ("upgrade Standard VM to TrustedLaunch: vTPM on, Secure Boot off, warning", |c| {
            let old = existing_vm(c, "Standard_D2s_v3");
            let mut new = old.clone();
            new.properties.security_profile = typed(SecurityType::TrustedLaunch);
            vm_out(validate_vm_update(c, &old, &new, Confirmations::default()))
        }, O(tl(false, true), &[SecureBootDisabled], None)),
        ("upgrade Standard scale set to TrustedLaunch with Secure Boot on", |c| {
            let old = existing_set(c);
            let mut new = old.clone();
            new.properties.virtual_machine_profile.security_profile = tl(true, true);
            set_out(validate_scale_set_update(c, &old, &new, Confirmations::default()))
        }, O(tl(true, true), &[], Some(1))),
        ("data disks to TrustedLaunch with Rolling + maxSurge", |c| {
            let mut old = existing_set(c);
            old.properties.virtual_machine_profile.storage_profile.data_disks = vec![data_disk(0, 10)];
            let mut new = old.clone();
            new.properties.upgrade_policy = rolling(true);
            new.properties.virtual_machine_profile.security_profile = tl(true, true);
            set_out(validate_scale_set_update(c, &old, &new, Confirmations::default()))
        }, O(tl(true, true), &[], Some(1))),
        ("rollback {securityType: Standard, uefiSettings: null}", |c| {
            let mut old = existing_set(c);
            old.properties.virtual_machine_profile.security_profile = tl(true, true);
            let patch: SecurityProfilePatch = serde_json::from_str(r#"{"securityType":"Standard","uefiSettings":null}"#).unwrap();
            let mut new = old.clone();
            new.properties.virtual_machine_profile.security_profile = apply_profile_patch(&trustlaunch_fleet::resources::Patch::Value(patch), old.properties.virtual_machine_profile.security_profile);
            set_out(validate_scale_set_update(c, &old, &new, Confirmations::default()))
        }, O(std_(), &[], Some(1))),
        ("image change with confirmation bumps the model", |c| {
            let old = existing_set(c);
            let mut new = old.clone();
            new.properties.virtual_machine_profile.storage_profile.image_reference = Some(img("ubuntu-tl2"));
            set_out(validate_scale_set_update(c, &old, &new, Confirmations { os_disk_data_loss: true }))
        }, O(std_(), &[], Some(1))),
        ("capacity change is not a model change", |c| {
            let old = existing_set(c);
            let mut new = old.clone();
            new.sku.capacity = 5;
            set_out(validate_scale_set_update(c, &old, &new, Confirmations::default()))
        }, O(std_(), &[], Some(0))),
        ("resize Dv3 to Dsv3 on a Gen1 image (no quota set for Dsv3)", |c| {
            let old = validate_vm_create(c, &vm("Standard_D2_v3", "ubuntu-gen1", None)).unwrap().resource;
            let mut new = old.clone();
            new.properties.hardware_profile.vm_size = "standard_d2s_v3".into();
            vm_out(validate_vm_update(c, &old, &new, Confirmations::default()))
        }, O(std_(), &[], None)),
    ]
}

#[test]
fn validation_table() {
    let f = fx();
    let c = f.ctx();
    let mut failures = Vec::new();
    for (name, run, expect) in rows() {
        let got = run(&c);
        let ok = match (&expect, &got) {
            (Expect::Err(code, msg, target), Err(e)) => {
                let msg_ok = match msg {
                    Msg::Exact(m) => e.message == *m,
                    Msg::Prefix(m) => e.message.starts_with(m),
                };
                e.code == *code && msg_ok && e.target.as_deref() == Some(*target)
            }
            (Expect::Ok(sec, warnings, version), Ok(out)) => {
                out.security == *sec
                    && out.warnings == *warnings
                    && (version.is_none() || out.model_version == *version)
            }
            _ => false,
        };
        if !ok {
            failures.push(format!("{name}: got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn secure_boot_warning_text() {
    let f = fx();
    let c = f.ctx();
    let old = existing_vm(&c, "Standard_D2s_v3");
    let mut new = old.clone();
    new.properties.security_profile = typed(SecurityType::TrustedLaunch);
    let v = validate_vm_update(&c, &old, &new, Confirmations::default()).unwrap();
    assert!(v.warnings[0]
        .message
        .contains("unless custom unsigned kernels or drivers are used"));
    // Read-only properties survive an update.
    assert_eq!(v.resource.id, old.id);
}

// ------------------------------------------------------------------ JSON

#[test]
fn security_profile_json_from_the_model() {
    let j = r#"{
      "securityType": "TrustedLaunch",
      "uefiSettings": { "secureBootEnabled": true, "vTpmEnabled": true },
      "encryptionAtHost": false
    }"#;
    let p: SecurityProfile = serde_json::from_str(j).unwrap();
    assert!(p.secure_boot() && p.vtpm());
    assert_eq!(p.encryption_at_host, Some(false));
    let back: serde_json::Value = serde_json::to_value(p).unwrap();
    assert_eq!(back, serde_json::from_str::<serde_json::Value>(j).unwrap());
    let c: SecurityProfile = serde_json::from_str(r#"{"securityType":"ConfidentialVM"}"#).unwrap();
    assert_eq!(c.security_type, Some(SecurityType::ConfidentialVm));
    assert_eq!(
        serde_json::to_string(&SecurityProfile::standard()).unwrap(),
        r#"{"securityType":"Standard"}"#
    );
}

#[test]
fn vm_json_in_azure_shape() {
    let j = r#"{
      "id": "/subscriptions/sub1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-1",
      "name": "vm-1",
      "type": "Microsoft.Compute/virtualMachines",
      "location": "westeurope",
      "properties": {
        "hardwareProfile": { "vmSize": "Standard_D2s_v5" },
        "storageProfile": {
          "imageReference": { "id": "/subscriptions/sub1/resourceGroups/rg/providers/Microsoft.Compute/galleries/g1/images/ubuntu-tl/versions/1.0.0" },
          "osDisk": { "createOption": "FromImage", "diskSizeGB": 30, "osType": "Linux" },
          "dataDisks": [ { "lun": 0, "diskSizeGB": 64, "name": "data0", "createOption": "Empty" } ]
        },
        "securityProfile": { "securityType": "TrustedLaunch", "uefiSettings": { "secureBootEnabled": true, "vTpmEnabled": true } },
        "provisioningState": "Succeeded",
        "vmId": "0f8fad5b-d9cb-469f-a165-70867728950e"
      }
    }"#;
    let v: VirtualMachine = serde_json::from_str(j).unwrap();
    assert_eq!(v.id, Some(vm_id("vm-1")));
    assert_eq!(v.properties.storage_profile.data_disks[0].disk_size_gb, 64);
    let back = serde_json::to_value(&v).unwrap();
    assert_eq!(back, serde_json::from_str::<serde_json::Value>(j).unwrap());
}

#[test]
fn scale_set_and_instance_json_in_azure_shape() {
    let j = r#"{
      "id": "/subscriptions/sub1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/ss",
      "name": "ss",
      "type": "Microsoft.Compute/virtualMachineScaleSets",
      "location": "westeurope",
      "sku": { "name": "Standard_D2s_v3", "capacity": 3 },
      "properties": {
        "orchestrationMode": "Uniform",
        "upgradePolicy": { "mode": "Rolling", "rollingUpgradePolicy": { "maxBatchInstancePercent": 20, "maxSurge": true } },
        "virtualMachineProfile": {
          "storageProfile": { "imageReference": { "id": "/subscriptions/sub1/resourceGroups/rg/providers/Microsoft.Compute/galleries/g1/images/ubuntu-tl/versions/1.0.0" } },
          "securityProfile": { "securityType": "TrustedLaunch", "uefiSettings": { "secureBootEnabled": true, "vTpmEnabled": true } },
          "extensionProfile": { "extensions": [ { "name": "GuestAttestation", "properties": {
            "publisher": "Microsoft.Azure.Security.LinuxAttestation", "type": "GuestAttestation",
            "typeHandlerVersion": "1.0", "autoUpgradeMinorVersion": true } } ] }
        },
        "provisioningState": "Succeeded",
        "uniqueId": "d2b5e5d1-0000-4000-8000-000000000001",
        "modelVersion": 4
      }
    }"#;
    let s: ScaleSet = serde_json::from_str(j).unwrap();
    assert_eq!(
        s.properties
            .virtual_machine_profile
            .extension_profile
            .as_ref()
            .unwrap()
            .extensions[0],
        Extension::guest_attestation(OsType::Linux)
    );
    assert!(s.upgrade_policy().rolling().unwrap().max_surge);
    let back = serde_json::to_value(&s).unwrap();
    assert_eq!(back, serde_json::from_str::<serde_json::Value>(j).unwrap());

    let i = r#"{"instanceId":"0","name":"ss_0","latestModelApplied":false,"modelVersion":3,
      "provisioningState":"Succeeded","powerState":"PowerState/running","health":"Healthy"}"#;
    let mut vm: ScaleSetVm = serde_json::from_str(i).unwrap();
    assert_eq!(
        serde_json::to_value(&vm).unwrap(),
        serde_json::from_str::<serde_json::Value>(i).unwrap()
    );
    vm.refresh(&s);
    assert!(!vm.latest_model_applied);
    vm.model_version = 4;
    vm.refresh(&s);
    assert!(vm.latest_model_applied);
    assert_eq!(ScaleSetVm::uniform_name("ss", "0"), vm.name);
}

#[test]
fn bad_ids_are_refused_when_parsing_resources() {
    let j = r#"{"id":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm_1",
      "location":"x","properties":{"hardwareProfile":{"vmSize":"a"},"storageProfile":{}}}"#;
    assert!(serde_json::from_str::<VirtualMachine>(j).is_err());
}

proptest! {
    #[test]
    fn resource_ids_round_trip(
        sub in "[a-z0-9-]{1,36}",
        rg in "[A-Za-z0-9_()-]{1,20}",
        name in "[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?",
        instance in 0u32..1000,
        kind in 0u8..3,
    ) {
        let id = match kind {
            0 => ResourceId::VirtualMachine { subscription: sub, resource_group: rg, name },
            1 => ResourceId::ScaleSet { subscription: sub, resource_group: rg, name },
            _ => ResourceId::ScaleSetVm { subscription: sub, resource_group: rg, scale_set: name, instance_id: instance.to_string() },
        };
        let text = id.to_string();
        prop_assert_eq!(text.parse::<ResourceId>(), Ok(id));
    }
}

// ------------------------------------------------------- network and OS

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFvKq0n7cx0pQmE5dGVzdGtleXRlc3RrZXl0ZXN0 ops@host";

fn with_nic_and_os(mut v: VirtualMachine, subnet: Option<&str>) -> VirtualMachine {
    let ip = match subnet {
        Some(id) => serde_json::json!({"name": "ip", "properties": {"subnet": {"id": id}}}),
        None => serde_json::json!({"name": "ip"}),
    };
    v.properties.network_profile = Some(
        serde_json::from_value(serde_json::json!({"networkInterfaceConfigurations": [
            {"name": "nic0", "properties": {"primary": true, "ipConfigurations": [ip]}}]}))
        .unwrap(),
    );
    v.properties.os_profile = Some(
        serde_json::from_value(serde_json::json!({"computerName": "web-1", "adminUsername": "ops",
            "linuxConfiguration": {"disablePasswordAuthentication": true,
                "ssh": {"publicKeys": [{"path": "/home/ops/.ssh/authorized_keys", "keyData": KEY}]}}}))
        .unwrap(),
    );
    v
}

#[test]
fn the_nic_and_os_profile_survive_the_move_to_trusted_launch_and_back() {
    use trustlaunch_fleet::resources::HostNetwork;
    let f = fx();
    let c = f.ctx();
    let created = validate_vm_create(
        &c,
        &with_nic_and_os(vm("Standard_D2s_v3", "ubuntu-tl", std_()), None),
    )
    .unwrap()
    .resource;
    let nic = created.properties.network_profile.clone().unwrap();
    assert_eq!(nic.host_network(), Some(HostNetwork::User));
    let mut to_tl = created.clone();
    to_tl.properties.security_profile = tl(true, true);
    let moved = validate_vm_update(&c, &created, &to_tl, Confirmations::default())
        .unwrap()
        .resource;
    assert_eq!(
        moved.properties.security_profile.unwrap().effective_type(),
        SecurityType::TrustedLaunch
    );
    assert_eq!(moved.properties.network_profile.as_ref(), Some(&nic));
    assert_eq!(moved.properties.os_profile, created.properties.os_profile);
    assert_eq!(
        moved.properties.os_profile.as_ref().unwrap().ssh_keys(),
        [KEY]
    );
    let mut back = moved.clone();
    back.properties.security_profile = std_();
    let back = validate_vm_update(&c, &moved, &back, Confirmations::default())
        .unwrap()
        .resource;
    assert_eq!(back.properties.network_profile.as_ref(), Some(&nic));
    // A model change: the NIC alone bumps the model version.
    let mut bridged = back.clone();
    bridged = with_nic_and_os(
        bridged,
        Some("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/br0/subnets/default"),
    );
    let b = validate_vm_update(&c, &back, &bridged, Confirmations::default())
        .unwrap()
        .resource;
    assert_eq!(
        b.properties.network_profile.unwrap().host_network(),
        Some(HostNetwork::Bridge("br0".into()))
    );
    assert_eq!(
        b.properties.model_version,
        back.properties.model_version + 1
    );
    // The JSON keeps Azure's names and never a password.
    let json = serde_json::to_value(&back).unwrap();
    assert_eq!(
        json["properties"]["networkProfile"]["networkInterfaceConfigurations"][0]["name"],
        "nic0"
    );
    assert_eq!(json["properties"]["osProfile"]["computerName"], "web-1");
}

#[test]
fn network_and_os_profiles_are_refused_with_their_target() {
    let f = fx();
    let c = f.ctx();
    let base = || with_nic_and_os(vm("Standard_D2s_v3", "ubuntu-tl", std_()), None);
    let refused = |v: VirtualMachine| validate_vm_create(&c, &v).unwrap_err();
    // Two NICs.
    let mut two = base();
    let nic = two
        .properties
        .network_profile
        .as_ref()
        .unwrap()
        .network_interface_configurations[0]
        .clone();
    two.properties
        .network_profile
        .as_mut()
        .unwrap()
        .network_interface_configurations
        .push(nic);
    let e = refused(two);
    assert_eq!(
        e.target.as_deref(),
        Some("properties.networkProfile.networkInterfaceConfigurations")
    );
    // A virtual network that cannot be a bridge name, and a subnet id
    // naming none.
    for (id, needle) in [
        ("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/a-very-long-bridge-name/subnets/x", "cannot be a host bridge"),
        ("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/subnets/x", "names no virtual network"),
        ("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/br;rm/subnets/x", "cannot be a host bridge"),
    ] {
        let e = refused(with_nic_and_os(vm("Standard_D2s_v3", "ubuntu-tl", std_()), Some(id)));
        assert!(e.message.contains(needle), "{}", e.message);
        assert!(e.target.as_deref().unwrap().ends_with("ipConfigurations[0].properties.subnet.id"));
    }
    // Passwords: refused, and never serialised.
    let mut pw = base();
    pw.properties.os_profile.as_mut().unwrap().admin_password = Some("hunter2".into());
    let json = serde_json::to_string(&pw).unwrap();
    assert!(!json.contains("hunter2"));
    let e = refused(pw);
    assert_eq!(
        e.target.as_deref(),
        Some("properties.osProfile.adminPassword")
    );
    let mut pa = base();
    pa.properties
        .os_profile
        .as_mut()
        .unwrap()
        .linux_configuration
        .as_mut()
        .unwrap()
        .disable_password_authentication = Some(false);
    assert!(refused(pa)
        .message
        .contains("disablePasswordAuthentication"));
    // Keys that are not one-line OpenSSH public keys (a newline would add
    // a second authorized_keys line).
    for bad in [
        "ssh-ed25519",
        "ssh-dss AAAAB3",
        &format!("{KEY}\ncommand=\"x\" {KEY}"),
        "ssh-ed25519 AAAA$$$",
    ] {
        let mut k = base();
        k.properties
            .os_profile
            .as_mut()
            .unwrap()
            .linux_configuration
            .as_mut()
            .unwrap()
            .ssh
            .as_mut()
            .unwrap()
            .public_keys[0]
            .key_data = bad.to_owned();
        let e = refused(k);
        assert_eq!(
            e.target.as_deref(),
            Some("properties.osProfile.linuxConfiguration.ssh.publicKeys[0].keyData"),
            "{bad:?}"
        );
    }
    // Host names, and a VM's cannot change.
    let mut hn = base();
    hn.properties.os_profile.as_mut().unwrap().computer_name = Some("-bad".into());
    assert_eq!(
        refused(hn).target.as_deref(),
        Some("properties.osProfile.computerName")
    );
    let created = validate_vm_create(&c, &base()).unwrap().resource;
    let mut renamed = created.clone();
    renamed
        .properties
        .os_profile
        .as_mut()
        .unwrap()
        .computer_name = Some("web-2".into());
    let e = validate_vm_update(&c, &created, &renamed, Confirmations::default()).unwrap_err();
    assert_eq!(e.code, ErrorCode::OperationNotAllowed);
    // A scale set names instances from a prefix, not a computer name.
    let mut s = set("Standard_D2s_v3", 1, "ubuntu-tl", std_());
    s.properties.virtual_machine_profile.os_profile = base().properties.os_profile;
    let e = validate_scale_set_create(&c, &s).unwrap_err();
    assert_eq!(
        e.target.as_deref(),
        Some("properties.virtualMachineProfile.osProfile.computerName")
    );
}

// ------------------------------------------------------- the size table

/// Every family of the size table × image generation × requested security
/// type, against the rules of `azure-model.md` written out here: a Gen2
/// image never runs on a family without Gen2 (whatever the type); Trusted
/// Launch needs a Gen2 TrustedLaunchSupported image and a supported
/// family; a new resource without a type takes Trusted Launch where it
/// can, else Standard.
#[test]
fn every_family_generation_and_security_type() {
    use trustlaunch_fleet::sizes::TrustedLaunchSupport as T;
    let f = fx();
    let quotas = Quotas::new();
    let usage = Usage::new();
    // One size per row of the table: the catalog's, or one defined for
    // the family (as an operator would, claiming nothing the table does
    // not say).
    let mut sizes = f.sizes.clone();
    let mut names = Vec::new();
    for fam in trustlaunch_fleet::sizes::FAMILIES {
        let existing = sizes
            .sizes()
            .iter()
            .find(|s| s.family.eq_ignore_ascii_case(fam.name))
            .map(|s| s.name.clone());
        let name = match existing {
            Some(n) => n,
            None => {
                let name: String = format!("Test_{}", fam.name)
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                sizes
                    .define(trustlaunch_fleet::sizes::SizeDefinition {
                        name: name.clone(),
                        family: fam.name.into(),
                        vcpus: 2,
                        memory_mib: 4096,
                        trusted_launch_supported: fam.support == T::Supported,
                        size_type: None,
                    })
                    .unwrap();
                name
            }
        };
        let size = sizes.get(&name).unwrap();
        assert_eq!(size.trusted_launch, fam.support, "{}", fam.name);
        names.push(name);
    }
    let c = Context {
        images: &f.images,
        sizes: &sizes,
        quotas: &quotas,
        usage: &usage,
    };
    let families: Vec<&trustlaunch_fleet::sizes::VmSize> =
        names.iter().map(|n| sizes.get(n).unwrap()).collect();
    assert_eq!(families.len(), trustlaunch_fleet::sizes::FAMILIES.len());
    let mut checked = 0;
    for size in &families {
        for (image, gen2) in [("ubuntu-tl", true), ("ubuntu-gen1", false)] {
            for requested in [None, std_(), tl(true, true)] {
                let want_tl = requested.as_ref().and_then(|p| p.security_type)
                    == Some(SecurityType::TrustedLaunch);
                let got = validate_vm_create(&c, &vm(&size.name, image, requested));
                let what = format!(
                    "{} ({:?}) {image} {requested:?}",
                    size.name, size.trusted_launch
                );
                match (gen2, size.trusted_launch, want_tl, requested.is_some()) {
                    (true, T::NotSupportedNoGen2, _, _) => {
                        let e = got.expect_err(&what);
                        assert!(
                            e.message.starts_with("The selected VM size"),
                            "{what}: {}",
                            e.message
                        );
                    }
                    (false, _, true, _) => {
                        assert_eq!(got.expect_err(&what).message, MSG_IMAGE_NOT_TL, "{what}");
                    }
                    (true, T::Supported, true, _) | (true, T::Supported, false, false) => {
                        let r = got.expect(&what).resource;
                        assert_eq!(
                            r.properties.security_profile.unwrap().effective_type(),
                            SecurityType::TrustedLaunch,
                            "{what}"
                        );
                    }
                    (true, _, true, _) => {
                        let e = got.expect_err(&what);
                        assert!(
                            e.message.contains("is not supported for creation of VMs"),
                            "{what}: {}",
                            e.message
                        );
                    }
                    _ => {
                        let r = got.expect(&what).resource;
                        assert_eq!(
                            r.properties.security_profile.unwrap().effective_type(),
                            SecurityType::Standard,
                            "{what}"
                        );
                    }
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, families.len() * 6);
}
