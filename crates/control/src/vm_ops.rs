//! Operations on single VMs (create or update to their model, delete) and
//! power actions (start, powerOff, deallocate, restart, reimage) on VMs
//! and on scale set instances, run from the store like the scale set
//! operations in [`crate::orchestrator`]: each instance's completion is
//! written before the next, so a server killed mid-way resumes without
//! repeating what is done (a restart is not restarted twice, a reimage not
//! redone) and every driver call it does repeat is idempotent.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use trustlaunch_fleet::resources::VirtualMachine;
use trustlaunch_fleet::{ErrorCode, FleetError};
use trustlaunch_store::{NewOperation, OperationRecord, OperationStatus, Precondition};

use crate::driver::{
    DataDiskSpec, Driver, DriverError, InstanceSecurity, InstanceSpec, PowerState,
};
use crate::orchestrator::{corrupt, Catalogs, ControlError, Orchestrator};

/// The kind of a VM's create or update (brought to its model, started,
/// waited for until healthy).
pub const VM_APPLY: &str = "Microsoft.Compute/virtualMachines/write";

/// The kind of a VM's deletion (the VM and its disks).
pub const VM_DELETE: &str = "Microsoft.Compute/virtualMachines/delete";

/// The kind of a power action on a VM or on scale set instances.
pub const POWER_ACTION: &str = "Microsoft.Compute/powerAction";

/// A power action, as Azure's action names it in the URL
/// (`.../virtualMachines/{vm}/powerOff`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// Start a stopped or deallocated instance.
    Start,
    /// Stop it, keeping its resources (`az vm stop`).
    PowerOff,
    /// Stop it and release its resources (`az vm deallocate`).
    Deallocate,
    /// Stop and start it again.
    Restart,
    /// Re-create its OS disk from its image (data disks kept), then start
    /// it.
    Reimage,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 5] = [
        Action::Start,
        Action::PowerOff,
        Action::Deallocate,
        Action::Restart,
        Action::Reimage,
    ];

    /// The action a URL segment names (case-insensitive, as ARM is).
    pub fn parse(s: &str) -> Option<Action> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
    }

    /// Its URL name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::PowerOff => "powerOff",
            Action::Deallocate => "deallocate",
            Action::Restart => "restart",
            Action::Reimage => "reimage",
        }
    }

    /// The instance runs afterwards (the operation waits for its health).
    pub fn starts(self) -> bool {
        matches!(self, Action::Start | Action::Restart | Action::Reimage)
    }
}

/// One instance a power action acts on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionTarget {
    /// What the user calls it: a scale set's instance id, or a VM's name.
    pub label: String,
    /// Its driver name.
    pub name: String,
}

/// A power action's persisted state.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionState {
    /// The VM's or scale set's id.
    pub target: String,
    /// The action.
    pub action: Action,
    /// The instances, in order.
    pub instances: Vec<ActionTarget>,
    /// Restart and reimage: labels whose first half (the stop, the new
    /// OS disk) is done; a resumed operation only starts them.
    #[serde(default)]
    pub halfway: Vec<String>,
    /// Reimage: labels whose reimage may have been issued, recorded
    /// (only for instances seen up) before it is: a resumed operation
    /// that finds one down takes its reimage as done (a reimage leaves
    /// the instance stopped) instead of reimaging it again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reimaging: Vec<String>,
    /// Labels done.
    #[serde(default)]
    pub done: Vec<String>,
    /// Labels the driver failed on, or that did not come back healthy.
    #[serde(default)]
    pub failed: Vec<String>,
}

/// A VM create, update or delete's persisted state.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmState {
    /// The VM's id.
    pub vm: String,
    /// The model it moves to (or, deleting, the one it had).
    pub target: VirtualMachine,
}

/// The driver's name of a standalone VM: its name, lowercase, with
/// anything but `a-z 0-9 -` turned into `-` (the runtime's names).
pub fn vm_instance_name(vm: &str) -> String {
    crate::orchestrator::sanitize(vm)
}

/// The runtime name of `vm`: the one it was given when created, or for a
/// VM created before names were given, its name, sanitized.
pub fn vm_runtime_name(vm: &VirtualMachine) -> String {
    vm.properties
        .runtime_name
        .clone()
        .unwrap_or_else(|| vm_instance_name(&vm.name))
}

/// The spec of VM `vm` at its model version.
pub fn vm_spec(vm: &VirtualMachine, c: &Catalogs) -> Result<InstanceSpec, FleetError> {
    let p = &vm.properties;
    let size = c.sizes.get(&p.hardware_profile.vm_size).ok_or_else(|| {
        FleetError::new(
            ErrorCode::InvalidParameter,
            format!("The VM size '{}' is not known.", p.hardware_profile.vm_size),
        )
        .at("properties.hardwareProfile.vmSize")
    })?;
    let at = "properties.storageProfile.imageReference";
    let image = p.storage_profile.image_reference.as_ref().ok_or_else(|| {
        FleetError::new(ErrorCode::InvalidParameter, "The VM has no imageReference.").at(at)
    })?;
    let (_, version) = c.images.resolve(image, at)?;
    Ok(InstanceSpec {
        name: vm_runtime_name(vm),
        model_version: p.model_version,
        vcpus: size.vcpus,
        memory_mib: size.memory_mib,
        image: version.source.clone(),
        security: InstanceSecurity::of(p.security_profile.as_ref()),
        data_disks: p
            .storage_profile
            .data_disks
            .iter()
            .map(|d| DataDiskSpec {
                lun: d.lun,
                disk_size_gb: d.disk_size_gb,
            })
            .collect(),
        guest_attestation: vm.has_guest_attestation(),
        network: p.network_profile.as_ref().and_then(|n| n.host_network()),
        os: p.os_profile.as_ref().map(|os| crate::driver::InstanceOs {
            computer_name: os
                .computer_name
                .clone()
                .unwrap_or_else(|| vm.name.clone())
                .to_ascii_lowercase(),
            ssh_public_keys: os.ssh_keys(),
        }),
    })
}

fn failure(code: ErrorCode, message: String) -> Option<Value> {
    Some(serde_json::to_value(FleetError::new(code, message)).unwrap_or(Value::Null))
}

impl<D: Driver> Orchestrator<D> {
    /// Bringing VM `vm_id` to model `vm` (create or update), as an
    /// operation to record with the VM's change
    /// ([`trustlaunch_store::Store::put_resource_with_operation`]).
    pub fn plan_vm_apply(
        &self,
        vm_id: &str,
        vm: VirtualMachine,
        op_id: &str,
    ) -> Result<NewOperation, ControlError> {
        let state = VmState {
            vm: vm_id.to_owned(),
            target: vm,
        };
        self.new_operation(VM_APPLY, op_id, vm_id, &state)
    }

    /// Deleting VM `vm_id` (the instance, its disks, then the resource).
    pub fn plan_vm_delete(
        &self,
        vm_id: &str,
        vm: VirtualMachine,
        op_id: &str,
    ) -> Result<NewOperation, ControlError> {
        let state = VmState {
            vm: vm_id.to_owned(),
            target: vm,
        };
        self.new_operation(VM_DELETE, op_id, vm_id, &state)
    }

    /// A power action on `instances` of the VM or scale set `target_id`.
    pub fn plan_action(
        &self,
        target_id: &str,
        action: Action,
        instances: Vec<ActionTarget>,
        op_id: &str,
    ) -> Result<NewOperation, ControlError> {
        let state = ActionState {
            target: target_id.to_owned(),
            action,
            instances,
            halfway: Vec::new(),
            reimaging: Vec::new(),
            done: Vec::new(),
            failed: Vec::new(),
        };
        self.new_operation(POWER_ACTION, op_id, target_id, &state)
    }

    /// Drives a VM create or update: the instance brought to the model
    /// and started (repeated after a crash: the driver makes it a no-op
    /// once done), then waited for until healthy.
    pub(crate) async fn drive_vm_apply(&self, mut op: OperationRecord) -> Result<(), ControlError> {
        let state: VmState =
            serde_json::from_value(op.state.clone()).map_err(corrupt("operation state"))?;
        let spec = vm_spec(&state.target, &self.catalogs())?;
        if !self.upgrade(&spec).await {
            let error = failure(
                ErrorCode::Conflict,
                format!(
                    "The VM '{}' could not be brought to model version {}.",
                    state.target.name, spec.model_version
                ),
            );
            return self
                .write(&mut op, &state, OperationStatus::Failed, error)
                .await;
        }
        self.write(&mut op, &state, OperationStatus::InProgress, None)
            .await?;
        let healthy = self
            .await_health_of(
                &op,
                std::slice::from_ref(&spec.name),
                crate::orchestrator::Gate::Attested,
            )
            .await?;
        if healthy.contains(&spec.name) {
            self.write(&mut op, &state, OperationStatus::Succeeded, None)
                .await
        } else {
            let why = self
                .reasons(
                    std::slice::from_ref(&spec.name),
                    crate::orchestrator::Gate::Attested,
                )
                .await?
                .into_iter()
                .map(|r| format!(" {r}."))
                .collect::<String>();
            let error = failure(
                ErrorCode::Conflict,
                format!(
                    "The VM '{}' runs model version {} but did not become healthy.{why}",
                    state.target.name, spec.model_version
                ),
            );
            self.write(&mut op, &state, OperationStatus::Failed, error)
                .await
        }
    }

    /// Drives a VM's deletion: the instance first (idempotent), then the
    /// resource, so a crash never leaves an instance without its record.
    pub(crate) async fn drive_vm_delete(
        &self,
        mut op: OperationRecord,
    ) -> Result<(), ControlError> {
        let state: VmState =
            serde_json::from_value(op.state.clone()).map_err(corrupt("operation state"))?;
        if let Err(e) = self.driver().delete(&vm_runtime_name(&state.target)).await {
            let error = failure(ErrorCode::Conflict, e.to_string());
            return self
                .write(&mut op, &state, OperationStatus::Failed, error)
                .await;
        }
        self.store()
            .delete_resource(&state.vm, Precondition::Any)
            .await?;
        self.write(&mut op, &state, OperationStatus::Succeeded, None)
            .await
    }

    /// Drives a power action: instance by instance, each completion (and
    /// a restart's or reimage's first half) written before the next step;
    /// then, for actions that start instances, waits for their health.
    pub(crate) async fn drive_action(&self, mut op: OperationRecord) -> Result<(), ControlError> {
        let mut state: ActionState =
            serde_json::from_value(op.state.clone()).map_err(corrupt("operation state"))?;
        let d = self.driver();
        let mut started = Vec::new();
        let mut reasons = Vec::new();
        for t in state.instances.clone() {
            if state.done.contains(&t.label) || state.failed.contains(&t.label) {
                continue;
            }
            if self.cancel_requested(&op).await? {
                return self
                    .write(&mut op, &state, OperationStatus::Canceled, None)
                    .await;
            }
            let first_half = !state.halfway.contains(&t.label);
            let result = match state.action {
                Action::Start => d.start(&t.name).await,
                Action::PowerOff => d.stop(&t.name, false).await,
                Action::Deallocate => d.stop(&t.name, true).await,
                Action::Restart | Action::Reimage => {
                    let half = if !first_half {
                        Ok(())
                    } else if state.action == Action::Restart {
                        d.stop(&t.name, false).await
                    } else {
                        self.reimage_once(&mut op, &mut state, &t).await?
                    };
                    if half.is_ok() && first_half {
                        state.halfway.push(t.label.clone());
                        self.write(&mut op, &state, OperationStatus::InProgress, None)
                            .await?;
                    }
                    match half {
                        Ok(()) => d.start(&t.name).await,
                        Err(e) => Err(e),
                    }
                }
            };
            match result {
                Ok(()) if state.action.starts() => started.push(t),
                Ok(()) => state.done.push(t.label),
                Err(e) => {
                    reasons.push(e.to_string());
                    state.failed.push(t.label);
                }
            }
            if !state.action.starts() {
                self.write(&mut op, &state, OperationStatus::InProgress, None)
                    .await?;
            }
        }
        if !started.is_empty() {
            // Those started before a crash are waited for again: health
            // is read, not repeated.
            let names: Vec<String> = started.iter().map(|t| t.name.clone()).collect();
            let healthy = self
                .await_health_of(&op, &names, crate::orchestrator::Gate::Boot)
                .await?;
            let unhealthy: Vec<String> = names
                .iter()
                .filter(|n| !healthy.contains(*n))
                .cloned()
                .collect();
            reasons.extend(
                self.reasons(&unhealthy, crate::orchestrator::Gate::Boot)
                    .await?,
            );
            for t in started {
                if healthy.contains(&t.name) {
                    state.done.push(t.label);
                } else {
                    state.failed.push(t.label);
                }
            }
        }
        if state.failed.is_empty() {
            return self
                .write(&mut op, &state, OperationStatus::Succeeded, None)
                .await;
        }
        let error = failure(
            ErrorCode::Conflict,
            format!(
                "{} of {} instances failed to {}{}: {}.{}",
                state.failed.len(),
                state.instances.len(),
                state.action.as_str(),
                if state.action.starts() {
                    " or did not become healthy"
                } else {
                    ""
                },
                state.failed.join(", "),
                reasons.iter().map(|r| format!(" {r}.")).collect::<String>()
            ),
        );
        self.write(&mut op, &state, OperationStatus::Failed, error)
            .await
    }

    /// Reimages `t` once across crashes: an instance seen up has its
    /// intent recorded first, and one found down with its intent recorded
    /// was reimaged (a reimage leaves it stopped) by a server killed
    /// before it could record so. An instance down before the action
    /// cannot be told apart: a resumed operation reimages it again (to
    /// the same fresh OS disk).
    async fn reimage_once(
        &self,
        op: &mut OperationRecord,
        state: &mut ActionState,
        t: &ActionTarget,
    ) -> Result<Result<(), DriverError>, ControlError> {
        let d = self.driver();
        let up = match d.status(&t.name).await {
            Ok(Some(s)) => matches!(s.power, PowerState::Starting | PowerState::Running),
            // Gone: the reimage reports it.
            Ok(None) => return Ok(d.reimage(&t.name).await),
            Err(e) => return Ok(Err(e)),
        };
        if state.reimaging.contains(&t.label) {
            if !up {
                return Ok(Ok(()));
            }
        } else if up {
            state.reimaging.push(t.label.clone());
            self.write(op, state, OperationStatus::InProgress, None)
                .await?;
        }
        Ok(d.reimage(&t.name).await)
    }
}

impl crate::orchestrator::OperationState for ActionState {
    fn progress(&self, _: OperationStatus) -> Value {
        serde_json::json!({"total": self.instances.len(), "succeeded": self.done.len(), "failed": self.failed.len(), "action": self.action.as_str()})
    }
}

impl crate::orchestrator::OperationState for VmState {
    fn progress(&self, status: OperationStatus) -> Value {
        serde_json::json!({
            "total": 1,
            "succeeded": u8::from(status == OperationStatus::Succeeded),
            "failed": u8::from(status == OperationStatus::Failed),
        })
    }
}
