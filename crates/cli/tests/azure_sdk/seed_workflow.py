"""The seed workflow and a single VM's life, driven through Azure's own
Python SDK (azure-mgmt-compute) against a trustlaunch server: every call is
the SDK's, every long-running one waits through the SDK's own poller.

Environment: TRUSTLAUNCH_SERVER (https://...), TRUSTLAUNCH_TOKEN (an
operator token), TRUSTLAUNCH_CACERT (the server's CA), TRUSTLAUNCH_SUB,
TRUSTLAUNCH_RG, TRUSTLAUNCH_IMAGE_V1 / _V2 (gallery image version ids).
Prints one line per step; exits non-zero with the failing step named.
"""

import os
import sys
import time

from azure.core.credentials import AccessToken
from azure.core.serialization import NULL
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.resource.resources import ResourceManagementClient
from azure.mgmt.compute.models import (
    ImageReference,
    LinuxConfiguration,
    NetworkProfile,
    OSProfile,
    RollingUpgradePolicy,
    SecurityProfile,
    Sku,
    SshConfiguration,
    SshPublicKey,
    UefiSettings,
    UpgradePolicy,
    VirtualMachine,
    VirtualMachineExtension,
    VirtualMachineExtensionProperties,
    VirtualMachineScaleSet,
    VirtualMachineScaleSetExtension,
    VirtualMachineScaleSetExtensionProperties,
    VirtualMachineScaleSetExtensionProfile,
    VirtualMachineScaleSetOSProfile,
    VirtualMachineScaleSetStorageProfile,
    VirtualMachineScaleSetUpdate,
    VirtualMachineScaleSetUpdateStorageProfile,
    VirtualMachineScaleSetUpdateVMProfile,
    VirtualMachineScaleSetVMInstanceRequiredIDs,
    VirtualMachineScaleSetVMProfile,
    VirtualMachineUpdate,
    HardwareProfile,
    StorageProfile,
)


class Token:
    """A TokenCredential handing out the trustlaunch API token."""

    def __init__(self, token):
        self.token = token

    def get_token(self, *scopes, **kwargs):
        return AccessToken(self.token, int(time.time()) + 3600)


SERVER = os.environ["TRUSTLAUNCH_SERVER"]
SUB = os.environ.get("TRUSTLAUNCH_SUB", "local")
RG = os.environ.get("TRUSTLAUNCH_RG", "rg")
V1 = os.environ["TRUSTLAUNCH_IMAGE_V1"]
V2 = os.environ["TRUSTLAUNCH_IMAGE_V2"]
# trustlaunch asks a caller to accept that an image change re-creates the
# OS disks; through the SDK that is a query parameter on the request.
CONSENT = {"params": {"confirmOsDiskDataLoss": "true"}}

client = ComputeManagementClient(
    Token(os.environ["TRUSTLAUNCH_TOKEN"]),
    SUB,
    base_url=SERVER,
    connection_verify=os.environ["TRUSTLAUNCH_CACERT"],
    polling_interval=0.2,
)

resources = ResourceManagementClient(
    Token(os.environ["TRUSTLAUNCH_TOKEN"]),
    SUB,
    base_url=SERVER,
    connection_verify=os.environ["TRUSTLAUNCH_CACERT"],
    polling_interval=0.2,
)

GA = "Microsoft.Azure.Security.LinuxAttestation"


def step(name):
    print(f"step: {name}", flush=True)


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)


def instances(name):
    return sorted(
        client.virtual_machine_scale_set_vms.list(RG, name),
        key=lambda v: int(v.instance_id),
    )


def scale_set_workflow():
    name = "web"
    step("list skus")
    skus = {s.name: s for s in client.resource_skus.list()}
    check("Standard_D2s_v3" in skus, f"Standard_D2s_v3 among {sorted(skus)[:5]}...")
    caps = {c.name: c.value for c in skus["Standard_D2s_v3"].capabilities or []}
    check(caps.get("TrustedLaunchDisabled") == "False", f"D2s_v3 capabilities {caps}")

    step("create a Standard scale set of 3")
    poller = client.virtual_machine_scale_sets.begin_create_or_update(
        RG,
        name,
        VirtualMachineScaleSet(
            location="local",
            sku=Sku(name="Standard_D2s_v3", tier="Standard", capacity=3),
            upgrade_policy=UpgradePolicy(mode="Manual"),
            virtual_machine_profile=VirtualMachineScaleSetVMProfile(
                storage_profile=VirtualMachineScaleSetStorageProfile(
                    image_reference=ImageReference(id=V1)
                ),
                os_profile=VirtualMachineScaleSetOSProfile(
                    computer_name_prefix="web",
                    admin_username="azureuser",
                    linux_configuration=LinuxConfiguration(
                        disable_password_authentication=True,
                        ssh=SshConfiguration(
                            public_keys=[
                                SshPublicKey(
                                    path="/home/azureuser/.ssh/authorized_keys",
                                    key_data="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG2b2Fz6n4n0yX2l2Yb0yW7sQ0k3Jk0lq9m1t7d8x5aQ sdk",
                                )
                            ]
                        ),
                    ),
                ),
                security_profile=SecurityProfile(security_type="Standard"),
            ),
        ),
    )
    vmss = poller.result()
    check(vmss.provisioning_state == "Succeeded", f"created: {vmss.provisioning_state}")
    check(vmss.sku.capacity == 3, f"capacity {vmss.sku.capacity}")
    got = instances(name)
    check(len(got) == 3, f"3 instances, got {len(got)}")
    check(all(v.latest_model_applied for v in got), "every instance on the model")
    listed = [v.name for v in client.virtual_machine_scale_sets.list(RG)]
    check(listed == [name], f"listed {listed}")

    step("resize refused: Standard_D2_v3 cannot boot the Gen2 image")
    try:
        client.virtual_machine_scale_sets.begin_update(
            RG, name, VirtualMachineScaleSetUpdate(sku=Sku(name="Standard_D2_v3"))
        ).result()
        check(False, "a Gen2 image on Standard_D2_v3 was accepted")
    except HttpResponseError as e:
        check(e.status_code == 400, f"status {e.status_code}")
        check(
            "cannot boot Hypervisor Generation '2'" in str(e.message),
            f"Azure's message: {e.message}",
        )
        check(e.error is not None and e.error.code, f"ARM error code: {e.error}")

    step("resize (PATCH) to Standard_D4s_v3")
    vmss = client.virtual_machine_scale_sets.begin_update(
        RG, name, VirtualMachineScaleSetUpdate(sku=Sku(name="Standard_D4s_v3"))
    ).result()
    check(vmss.sku.name == "Standard_D4s_v3", f"size {vmss.sku.name}")
    check(vmss.sku.capacity == 3, f"capacity kept: {vmss.sku.capacity}")
    check(
        vmss.virtual_machine_profile.security_profile.security_type == "Standard",
        "security type kept",
    )

    tl = VirtualMachineScaleSetUpdate(
        virtual_machine_profile=VirtualMachineScaleSetUpdateVMProfile(
            storage_profile=VirtualMachineScaleSetUpdateStorageProfile(
                image_reference=ImageReference(id=V2)
            ),
            security_profile=SecurityProfile(
                security_type="TrustedLaunch",
                uefi_settings=UefiSettings(secure_boot_enabled=True, v_tpm_enabled=True),
            ),
            extension_profile=VirtualMachineScaleSetExtensionProfile(
                extensions=[
                    VirtualMachineScaleSetExtension(
                        name="GuestAttestation",
                        properties=VirtualMachineScaleSetExtensionProperties(
                            publisher=GA,
                            type="GuestAttestation",
                            type_handler_version="1.0",
                            auto_upgrade_minor_version=True,
                        ),
                    )
                ]
            ),
        )
    )
    step("image change without consent refused with the reason")
    try:
        client.virtual_machine_scale_sets.begin_update(RG, name, tl).result()
        check(False, "an image change without consent was accepted")
    except HttpResponseError as e:
        check("OS disk" in str(e.message), f"names the OS disk: {e.message}")

    step("change image and security type to Trusted Launch (PATCH)")
    vmss = client.virtual_machine_scale_sets.begin_update(RG, name, tl, **CONSENT).result()
    sp = vmss.virtual_machine_profile.security_profile
    check(sp.security_type == "TrustedLaunch", f"security type {sp.security_type}")
    check(sp.uefi_settings.secure_boot_enabled and sp.uefi_settings.v_tpm_enabled, "SB and vTPM on")
    check(
        vmss.virtual_machine_profile.storage_profile.image_reference.id.endswith("/2.0.0"),
        "image 2.0.0",
    )
    exts = vmss.virtual_machine_profile.extension_profile.extensions
    check([e.publisher for e in exts] == [GA], f"Guest Attestation: {exts}")
    got = instances(name)
    check(not any(v.latest_model_applied for v in got), "Manual: no instance moved yet")

    step("update instance 0")
    client.virtual_machine_scale_sets.begin_update_instances(
        RG, name, VirtualMachineScaleSetVMInstanceRequiredIDs(instance_ids=["0"])
    ).result()
    got = instances(name)
    check([v.latest_model_applied for v in got] == [True, False, False], "only instance 0 moved")
    vm0 = client.virtual_machine_scale_set_vms.get(RG, name, "0")
    check(vm0.security_profile.security_type == "TrustedLaunch", "instance 0 is Trusted Launch")

    step("rolling upgrade of the rest")
    client.virtual_machine_scale_sets.begin_update(
        RG,
        name,
        VirtualMachineScaleSetUpdate(
            upgrade_policy=UpgradePolicy(
                mode="Rolling",
                rolling_upgrade_policy=RollingUpgradePolicy(max_batch_instance_percent=50),
            )
        ),
    ).result()
    client.virtual_machine_scale_set_rolling_upgrades.begin_start_os_upgrade(RG, name).result()
    got = instances(name)
    check(all(v.latest_model_applied for v in got), "every instance on the new model")

    step("latest rolling upgrade")
    latest = client.virtual_machine_scale_set_rolling_upgrades.get_latest(RG, name)
    check(latest.running_status.code == "Completed", f"status {latest.running_status.code}")
    check(latest.progress.successful_instance_count == 2, f"progress {latest.progress}")
    check(latest.progress.failed_instance_count == 0, "no failure")

    step("roll back to Standard and the last good image (PATCH)")
    try:
        client.virtual_machine_scale_sets.begin_update(
            RG,
            name,
            VirtualMachineScaleSetUpdate(
                virtual_machine_profile=VirtualMachineScaleSetUpdateVMProfile(
                    security_profile=SecurityProfile(security_type="Standard")
                )
            ),
        ).result()
        check(False, "Standard with the UEFI switches still on was accepted")
    except HttpResponseError as e:
        check(e.error.target.endswith("uefiSettings"), f"target names uefiSettings: {e.error.target}")
    back = VirtualMachineScaleSetUpdate(
        virtual_machine_profile=VirtualMachineScaleSetUpdateVMProfile(
            storage_profile=VirtualMachineScaleSetUpdateStorageProfile(
                image_reference=ImageReference(id=V1)
            ),
            # A merge patch keeps what it does not name: the UEFI switches
            # are cleared with an explicit null (azure-core's NULL), as
            # the server's refusal of a bare "Standard" says.
            security_profile=SecurityProfile(security_type="Standard", uefi_settings=NULL),
            extension_profile=VirtualMachineScaleSetExtensionProfile(extensions=[]),
        )
    )
    vmss = client.virtual_machine_scale_sets.begin_update(RG, name, back, **CONSENT).result()
    check(
        vmss.virtual_machine_profile.security_profile.security_type == "Standard",
        "back to Standard",
    )
    got = instances(name)
    check(all(v.latest_model_applied for v in got), "Rolling: the update rolled every instance")
    check(
        all(v.security_profile is None or v.security_profile.security_type != "TrustedLaunch" for v in got),
        "no instance left on Trusted Launch",
    )

    step("delete the scale set")
    client.virtual_machine_scale_sets.begin_delete(RG, name).result()
    try:
        client.virtual_machine_scale_sets.get(RG, name)
        check(False, "the deleted set is still there")
    except ResourceNotFoundError:
        pass


def vm_workflow():
    name = "vm1"
    step("create a VM (Trusted Launch, Guest Attestation)")
    vm = client.virtual_machines.begin_create_or_update(
        RG,
        name,
        VirtualMachine(
            location="local",
            hardware_profile=HardwareProfile(vm_size="Standard_D2s_v3"),
            storage_profile=StorageProfile(image_reference=ImageReference(id=V2)),
            os_profile=OSProfile(computer_name="vm1", admin_username="azureuser"),
            security_profile=SecurityProfile(
                security_type="TrustedLaunch",
                uefi_settings=UefiSettings(secure_boot_enabled=True, v_tpm_enabled=True),
            ),
        ),
    ).result()
    check(vm.provisioning_state == "Succeeded", f"created: {vm.provisioning_state}")
    check(vm.security_profile.security_type == "TrustedLaunch", "Trusted Launch")

    step("add the Guest Attestation extension")
    ext = client.virtual_machine_extensions.begin_create_or_update(
        RG,
        name,
        "GuestAttestation",
        VirtualMachineExtension(
            location="local",
            properties=VirtualMachineExtensionProperties(
                publisher=GA,
                type="GuestAttestation",
                type_handler_version="1.0",
                auto_upgrade_minor_version=True,
            ),
        ),
    ).result()
    check(ext.publisher == GA, f"extension {ext.publisher}")

    step("resize the VM (PATCH)")
    vm = client.virtual_machines.begin_update(
        RG, name, VirtualMachineUpdate(hardware_profile=HardwareProfile(vm_size="Standard_D4s_v3"))
    ).result()
    check(vm.hardware_profile.vm_size == "Standard_D4s_v3", f"size {vm.hardware_profile.vm_size}")
    check(vm.security_profile.security_type == "TrustedLaunch", "security type kept")

    def power():
        view = client.virtual_machines.instance_view(RG, name)
        codes = [s.code for s in view.statuses or [] if s.code.startswith("PowerState/")]
        return codes[0] if codes else None

    step("power off")
    client.virtual_machines.begin_power_off(RG, name).result()
    check(power() == "PowerState/stopped", f"stopped: {power()}")
    step("start")
    client.virtual_machines.begin_start(RG, name).result()
    check(power() == "PowerState/running", f"running: {power()}")
    step("restart")
    client.virtual_machines.begin_restart(RG, name).result()
    check(power() == "PowerState/running", f"running: {power()}")
    step("deallocate")
    client.virtual_machines.begin_deallocate(RG, name).result()
    check(power() == "PowerState/deallocated", f"deallocated: {power()}")

    step("list VMs")
    names = [v.name for v in client.virtual_machines.list(RG)]
    check(names == [name], f"listed {names}")

    step("delete the VM")
    client.virtual_machines.begin_delete(RG, name).result()
    try:
        client.virtual_machines.get(RG, name)
        check(False, "the deleted VM is still there")
    except ResourceNotFoundError:
        pass


def group_workflow():
    """Resource groups through the resource client (`az group`)."""
    step("create a resource group")
    g = resources.resource_groups.create_or_update("scratch", {"location": "local", "tags": {"team": "sdk"}})
    check(g.name == "scratch" and g.properties.provisioning_state == "Succeeded", f"group {g}")
    check(resources.resource_groups.check_existence("scratch"), "it exists")
    names = [x.name for x in resources.resource_groups.list()]
    check("scratch" in names and RG in names, f"listed {names}")
    step("a group holding resources is not deleted")
    try:
        resources.resource_groups.begin_delete(RG).result()
        check(False, f"{RG}, which holds the gallery, was deleted")
    except HttpResponseError as e:
        check(e.status_code == 409 and "galleries" in str(e.message), f"refused naming them: {e.message}")
    check(resources.resource_groups.check_existence(RG), f"{RG} still exists")
    step("delete the empty group")
    resources.resource_groups.begin_delete("scratch").result()
    check(not resources.resource_groups.check_existence("scratch"), "it is gone")


def pager_workflow():
    """A 1,000-instance set listed through the SDK's pager, which follows
    the server's nextLink page by page."""
    name = "big"
    step("create a scale set of 1000")
    client.virtual_machine_scale_sets.begin_create_or_update(
        RG,
        name,
        VirtualMachineScaleSet(
            location="local",
            sku=Sku(name="Standard_D2s_v3", tier="Standard", capacity=1000),
            upgrade_policy=UpgradePolicy(mode="Manual"),
            virtual_machine_profile=VirtualMachineScaleSetVMProfile(
                storage_profile=VirtualMachineScaleSetStorageProfile(
                    image_reference=ImageReference(id=V1)
                ),
                security_profile=SecurityProfile(security_type="Standard"),
            ),
        ),
    ).result()
    step("list its instances through the pager")
    pages = [list(p) for p in client.virtual_machine_scale_set_vms.list(RG, name).by_page()]
    ids = [v.instance_id for page in pages for v in page]
    check(len(ids) == 1000, f"1000 instances listed, got {len(ids)}")
    check(len(set(ids)) == 1000, "no instance listed twice")
    check(len(pages) == 10, f"10 pages of 100, got {len(pages)}")
    step("delete it")
    client.virtual_machine_scale_sets.begin_delete(RG, name).result()


if __name__ == "__main__":
    which = sys.argv[1:] or ["scale-set", "vm", "groups"]
    try:
        if "scale-set" in which:
            scale_set_workflow()
        if "vm" in which:
            vm_workflow()
        if "groups" in which:
            group_workflow()
        if "pager" in which:
            pager_workflow()
    except HttpResponseError as e:
        print(f"FAILED: HTTP {e.status_code}: {e.message}", flush=True)
        raise
    print("done", flush=True)
