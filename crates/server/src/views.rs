//! Resources as ARM shows them, with what the driver and the attestation
//! service say of them: a VM's instance view, a scale set's instances.

use serde_json::{json, Value};
use trustlaunch_control::orchestrator::set_instance_name;
use trustlaunch_control::plane::ControlPlane;
use trustlaunch_control::{Driver, PowerState as DriverPower};
use trustlaunch_fleet::resources::{
    InstanceHealth, PowerState, ScaleSet, ScaleSetVm, VirtualMachine, VM_TYPE,
};
use trustlaunch_fleet::rolling::Health as PlanHealth;

use crate::error::ApiError;

/// An instance as ARM shows it: its stored record with the driver's
/// view of its model version, power state and health.
pub(crate) async fn instance_json(
    c: &ControlPlane,
    set: &ScaleSet,
    r: trustlaunch_store::ResourceRecord,
) -> Result<Value, ApiError> {
    let mut vm: ScaleSetVm = serde_json::from_value(r.body).map_err(ApiError::internal)?;
    let status = c
        .orchestrator
        .driver()
        .status(&set_instance_name(set, &vm.instance_id))
        .await
        .map_err(ApiError::internal)?;
    // The security profile the instance runs (its spec), which differs
    // from the set's model until the instance is upgraded.
    let running_security = status.as_ref().map(|st| {
        let sec = &st.spec.security;
        if sec.trusted_launch {
            json!({"securityType": "TrustedLaunch", "uefiSettings": {"secureBootEnabled": sec.secure_boot, "vTpmEnabled": sec.vtpm}})
        } else {
            json!({"securityType": "Standard"})
        }
    });
    if let Some(st) = status {
        vm.model_version = st.spec.model_version;
        vm.power_state = match st.power {
            trustlaunch_control::PowerState::Running => PowerState::Running,
            trustlaunch_control::PowerState::Starting => PowerState::Starting,
            trustlaunch_control::PowerState::Stopped
            | trustlaunch_control::PowerState::Failed(_) => PowerState::Stopped,
            trustlaunch_control::PowerState::Deallocated => PowerState::Deallocated,
        };
        // As upgrades count it: with guest attestation, the verdict.
        vm.health = match c.orchestrator.judge(&st).await?.health {
            PlanHealth::Healthy => InstanceHealth::Healthy,
            PlanHealth::Unhealthy | PlanHealth::Failed => InstanceHealth::Unhealthy,
            PlanHealth::Unknown => InstanceHealth::Unknown,
        };
    }
    vm.refresh(set);
    let mut properties = serde_json::to_value(&vm).map_err(ApiError::internal)?;
    properties["runtimeName"] = json!(set_instance_name(set, &vm.instance_id));
    if let Some(sec) = running_security {
        properties["securityProfile"] = sec;
    }
    Ok(json!({
        "id": r.id,
        "name": vm.name,
        "type": "Microsoft.Compute/virtualMachineScaleSets/virtualMachines",
        "instanceId": vm.instance_id,
        "location": set.location,
        "properties": properties,
    }))
}

/// A VM that joined a Flexible set, as one of its instances.
pub(crate) async fn member_json(c: &ControlPlane, vm: &VirtualMachine) -> Result<Value, ApiError> {
    let view = instance_view(c, &trustlaunch_control::vm_ops::vm_runtime_name(vm)).await?;
    Ok(json!({
        "id": vm.id.as_ref().map(ToString::to_string),
        "name": vm.name,
        "type": VM_TYPE,
        "instanceId": vm.name,
        "properties": {
            "instanceId": vm.name,
            "name": vm.name,
            "latestModelApplied": view["modelVersion"] == json!(vm.properties.model_version),
            "modelVersion": view["modelVersion"],
            "powerState": view["powerState"],
            "health": view["health"],
            "securityProfile": vm.properties.security_profile,
        },
    }))
}

/// The driver's view of an instance, as Azure's instance view: power
/// state, health (attested where the Guest Attestation extension is on)
/// and the model version it runs.
pub(crate) async fn instance_view(c: &ControlPlane, name: &str) -> Result<Value, ApiError> {
    let st = c
        .orchestrator
        .driver()
        .status(name)
        .await
        .map_err(ApiError::internal)?;
    Ok(match st {
        None => json!({"powerState": null, "health": "Unknown", "statuses": []}),
        Some(s) => json!({
            "powerState": power_code(&s.power),
            // ARM's shape of the same, as Azure's SDKs read it.
            "statuses": [{
                "code": power_code(&s.power),
                "level": "Info",
                "displayStatus": match s.power {
                    DriverPower::Running => "VM running",
                    DriverPower::Starting => "VM starting",
                    DriverPower::Stopped | DriverPower::Failed(_) => "VM stopped",
                    DriverPower::Deallocated => "VM deallocated",
                },
            }],
            "failure": match &s.power { DriverPower::Failed(r) => Some(r.clone()), _ => None },
            // As operations count it: with guest attestation, the verdict.
            "health": match c.orchestrator.judge(&s).await?.health {
                PlanHealth::Healthy => "Healthy",
                PlanHealth::Unhealthy | PlanHealth::Failed => "Unhealthy",
                PlanHealth::Unknown => "Unknown",
            },
            "modelVersion": s.spec.model_version,
            "sshEndpoint": s.ssh_endpoint,
        }),
    })
}

fn power_code(p: &DriverPower) -> &'static str {
    match p {
        DriverPower::Running => "PowerState/running",
        DriverPower::Starting => "PowerState/starting",
        DriverPower::Stopped | DriverPower::Failed(_) => "PowerState/stopped",
        DriverPower::Deallocated => "PowerState/deallocated",
    }
}
