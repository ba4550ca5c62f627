//! The model's NIC and OS profile reach the instance: a scale set's
//! instances get a host name from the prefix and the instance id (base 36,
//! as Azure names them) and the keys; a VM its computer name; the
//! runtime's spec gets the NIC (user-mode or the bridge) and the first-boot
//! configuration, whatever the security type.

mod common;

use serde_json::json;
use trustlaunch_control::orchestrator::instance_spec;
use trustlaunch_control::runtime_driver::vm_spec as runtime_spec;
use trustlaunch_control::vm_ops::vm_spec;
use trustlaunch_fleet::resources::{HostNetwork, VirtualMachine};
use trustlaunch_runtime::spec::Network;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFvKq0n7cx0pQmE5dGVzdGtleXRlc3RrZXl0ZXN0 ops";

#[test]
fn a_scale_sets_nic_and_os_profile_reach_every_instance_in_both_security_types() {
    let c = common::catalogs();
    for version in [1, 2] {
        let mut set = common::scale_set(3, version, &json!({}));
        let p = &mut set.properties.virtual_machine_profile;
        p.network_profile = Some(
            serde_json::from_value(json!({"networkInterfaceConfigurations": [{"name": "nic",
                "properties": {"ipConfigurations": [{"name": "ip", "properties": {"subnet": {"id":
                "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/br0/subnets/default"}}}]}}]}))
            .unwrap(),
        );
        p.os_profile = Some(
            serde_json::from_value(json!({"computerNamePrefix": "web",
                "linuxConfiguration": {"ssh": {"publicKeys": [{"keyData": KEY}]}}}))
            .unwrap(),
        );
        let spec = instance_spec(&set, "37", &c).unwrap();
        assert_eq!(spec.security.trusted_launch, version == 2);
        assert_eq!(spec.network, Some(HostNetwork::Bridge("br0".into())));
        let os = spec.os.clone().unwrap();
        assert_eq!(os.computer_name, "web000011");
        assert_eq!(os.ssh_public_keys, [KEY]);
        let rt = runtime_spec(&spec);
        assert_eq!(
            rt.network,
            Network::Bridge {
                bridge: "br0".into()
            }
        );
        let first_boot = rt.os_profile.unwrap();
        assert_eq!(first_boot.computer_name.as_deref(), Some("web000011"));
        assert_eq!(first_boot.ssh_public_keys, [KEY]);
    }
}

#[test]
fn a_vms_nic_defaults_to_the_user_network_and_no_profile_means_no_nic() {
    let c = common::catalogs();
    let image = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/galleries/g1/images/tiny/versions/1.0.0";
    let mut vm: VirtualMachine = serde_json::from_value(json!({
        "name": "app1", "location": "local", "type": "Microsoft.Compute/virtualMachines",
        "properties": {"hardwareProfile": {"vmSize": "Standard_D2s_v3"},
            "storageProfile": {"imageReference": {"id": image}},
            "securityProfile": {"securityType": "TrustedLaunch",
                "uefiSettings": {"secureBootEnabled": true, "vTpmEnabled": true}},
            "modelVersion": 1}}))
    .unwrap();
    let bare = vm_spec(&vm, &c).unwrap();
    assert_eq!(bare.network, None);
    assert_eq!(runtime_spec(&bare).network, Network::None);
    vm.properties.network_profile = Some(
        serde_json::from_value(json!({"networkInterfaceConfigurations": [{"name": "nic"}]}))
            .unwrap(),
    );
    vm.properties.os_profile = Some(
        serde_json::from_value(
            json!({"linuxConfiguration": {"ssh": {"publicKeys": [{"keyData": KEY}]}}}),
        )
        .unwrap(),
    );
    let spec = vm_spec(&vm, &c).unwrap();
    assert_eq!(spec.network, Some(HostNetwork::User));
    assert_eq!(spec.os.as_ref().unwrap().computer_name, "app1");
    assert_eq!(runtime_spec(&spec).network, Network::User);
}
