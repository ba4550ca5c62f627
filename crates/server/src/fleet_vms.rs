//! Single VMs and power actions, ARM-shaped like the scale sets of
//! [`crate::fleet_api`]: `PUT/GET/DELETE .../virtualMachines/{vm}` (`az vm
//! create|update|show|delete`), the list of a resource group's VMs, and
//! `POST .../{action}` (start, powerOff, deallocate, restart, reimage) on
//! a VM, on a scale set (optionally `{"instanceIds": [...]}`) and on one
//! scale set instance. A VM may join a Flexible scale set when it is
//! created (`properties.virtualMachineScaleSet.id`); the set then lists
//! it among its instances.
//!
//! Every mutating call answers 202 with the operation that carries it
//! out (`Azure-AsyncOperation`), except a VM update that changes nothing
//! (200).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{json, Value};
use trustlaunch_control::orchestrator::set_instance_name;
use trustlaunch_control::vm_ops::{vm_runtime_name, Action, ActionTarget};
use trustlaunch_fleet::resources::{
    Extension, ProvisioningState, VirtualMachine, SCALE_SET_VM_TYPE,
};
use trustlaunch_fleet::validate::Confirmations;
use trustlaunch_fleet::{ErrorCode, FleetError};
use utoipa::IntoParams;

use crate::arm::{control, json_body, new_op_id, precondition, respond, GroupPath};
use crate::auth::{Operator, Reader};
use crate::error::ApiError;
use crate::fleet_api::{load_set, set_id, PutQuery};
use crate::state::AppState;
use crate::views::instance_view;
use trustlaunch_control::plane::{ControlPlane, PutVm};

type St = State<Arc<AppState>>;
type ApiResult = Result<axum::response::Response, ApiError>;

/// Path of a VM.
#[derive(Deserialize, IntoParams, Clone)]
pub struct VmPath {
    /// Subscription.
    pub sub: String,
    /// Resource group.
    pub rg: String,
    /// VM.
    pub name: String,
}

/// Path of a power action on a VM or a scale set.
#[derive(Deserialize, IntoParams)]
pub struct ActionPath {
    /// Subscription.
    pub sub: String,
    /// Resource group.
    pub rg: String,
    /// VM or scale set.
    pub name: String,
    /// start, powerOff, deallocate, restart or reimage.
    pub action: String,
}

/// Path of a power action on one scale set instance.
#[derive(Deserialize, IntoParams)]
pub struct InstanceActionPath {
    /// Subscription.
    pub sub: String,
    /// Resource group.
    pub rg: String,
    /// Scale set.
    pub name: String,
    /// Instance id.
    pub instance: String,
    /// start, powerOff, deallocate, restart or reimage.
    pub action: String,
}

fn vm_id(sub: &str, rg: &str, name: &str) -> Result<String, ApiError> {
    let id =
        format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}");
    id.parse::<trustlaunch_fleet::ids::ResourceId>()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(id)
}

async fn load_vm(c: &ControlPlane, id: &str) -> Result<(VirtualMachine, i64), ApiError> {
    c.vm(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("The Resource '{id}' was not found.")))
}

fn action_of(name: &str) -> Result<Action, ApiError> {
    Action::parse(name).ok_or_else(|| {
        ApiError::not_found(format!(
            "No action '{name}': use start, powerOff, deallocate, restart or reimage."
        ))
    })
}

/// A VM's instance view (`az vm get-instance-view`, the SDKs'
/// `virtual_machines.instance_view`): `statuses` with its provisioning
/// and power state as ARM spells them, health, the model version it runs.
#[utoipa::path(get, path = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}/instanceView", tag = "fleet", security(("token" = [])), params(VmPath), responses((status = 200, description = "the instance view"), (status = 404, description = "no such VM")))]
async fn get_instance_view(State(s): St, _caller: Reader, Path(p): Path<VmPath>) -> ApiResult {
    let c = control(&s)?;
    let id = vm_id(&p.sub, &p.rg, &p.name)?;
    let (vm, _) = load_vm(c, &id).await?;
    let mut view = instance_view(c, &vm_runtime_name(&vm)).await?;
    let state = crate::arm::provisioning_state(c, &id).await?;
    let state = serde_json::to_value(state).map_err(ApiError::internal)?;
    let state = state.as_str().unwrap_or("Succeeded");
    if let Some(list) = view["statuses"].as_array_mut() {
        list.insert(
            0,
            json!({
                "code": format!("ProvisioningState/{}", state.to_ascii_lowercase()),
                "level": "Info",
                "displayStatus": format!("Provisioning {}", state.to_ascii_lowercase()),
            }),
        );
    }
    view["latestModelApplied"] = json!(view["modelVersion"] == json!(vm.properties.model_version));
    view["computerName"] = json!(vm
        .properties
        .os_profile
        .as_ref()
        .and_then(|o| o.computer_name.clone()));
    respond(StatusCode::OK, &view, None, None, &[])
}

async fn vm_document(c: &ControlPlane, vm: &VirtualMachine) -> Result<Value, ApiError> {
    let mut vm = vm.clone();
    if let Some(id) = &vm.id {
        vm.properties.provisioning_state =
            Some(crate::arm::provisioning_state(c, &id.to_string()).await?);
    }
    vm_view_document(c, vm).await
}

/// A VM (its `provisioningState` set) with its instance view.
async fn vm_view_document(c: &ControlPlane, vm: VirtualMachine) -> Result<Value, ApiError> {
    let mut v = serde_json::to_value(&vm).map_err(ApiError::internal)?;
    let mut view = instance_view(c, &vm_runtime_name(&vm)).await?;
    view["latestModelApplied"] = json!(view["modelVersion"] == json!(vm.properties.model_version));
    v["properties"]["instanceView"] = view;
    Ok(v)
}

/// Creates or updates a VM (`az vm create` / `update`): validated by
/// Azure's rules (new eligible Gen2 VMs default to TrustedLaunch with
/// Secure Boot and vTPM on); `If-Match` guards against concurrent
/// updates (412); a changed model is applied by an operation (named by
/// `Azure-AsyncOperation`; 201 for a new VM, 200 for an update, as ARM
/// answers) that brings the VM to it, starts it and waits until it is
/// healthy. A new
/// image re-creates the OS disk: refused unless `confirmOsDiskDataLoss`.
#[utoipa::path(put, path = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}", tag = "fleet", security(("token" = [])), params(VmPath, PutQuery), request_body = Object, responses((status = 200, description = "updated (Azure-AsyncOperation names the operation that runs the change, if any)"), (status = 201, description = "created (Azure-AsyncOperation names the operation that makes and starts it)"), (status = 409, description = "name taken, or an operation runs"), (status = 412, description = "If-Match does not match")))]
async fn put_vm(
    State(s): St,
    _caller: Operator,
    Path(p): Path<VmPath>,
    Query(q): Query<PutQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let c = control(&s)?;
    let id = vm_id(&p.sub, &p.rg, &p.name)?;
    let mut vm: VirtualMachine = json_body(&body)?;
    vm.name = p.name.clone();
    vm.id = id.parse().ok();
    let w = c
        .put_vm(PutVm {
            id,
            vm,
            precondition: precondition(&headers)?,
            confirmations: Confirmations {
                os_disk_data_loss: q.confirm_os_disk_data_loss,
            },
            operation_id: new_op_id(),
        })
        .await?;
    respond(
        crate::arm::put_status(w.created),
        &vm_document(c, &w.resource).await?,
        Some(w.etag),
        w.operation.as_deref(),
        &w.warnings,
    )
}

/// Updates a VM with ARM's merge semantics (`az vm update`, the SDKs'
/// `begin_update`): the body merged onto the VM as stored, then carried
/// out as a PUT of the result (200, the operation in
/// `Azure-AsyncOperation`); 404 for a VM that does not exist.
#[utoipa::path(patch, path = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}", tag = "fleet", security(("token" = [])), params(VmPath, PutQuery), request_body = Object, responses((status = 200, description = "updated (Azure-AsyncOperation names the operation that runs the change, if any)"), (status = 404, description = "no such VM"), (status = 412, description = "If-Match does not match, or the VM changed meanwhile")))]
async fn patch_vm(
    State(s): St,
    caller: Operator,
    Path(p): Path<VmPath>,
    Query(q): Query<PutQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let c = control(&s)?;
    let id = vm_id(&p.sub, &p.rg, &p.name)?;
    crate::arm::patch(c, &id, &headers, &body, |h, merged| {
        put_vm(
            State(s.clone()),
            caller.clone(),
            Path(p.clone()),
            Query(q.clone()),
            h,
            merged,
        )
    })
    .await
}

/// A VM (`az vm show`), with its instance view (power state, health,
/// model version) and ETag.
#[utoipa::path(get, path = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}", tag = "fleet", security(("token" = [])), params(VmPath), responses((status = 200, description = "the VM"), (status = 404, description = "no such VM")))]
async fn get_vm(State(s): St, _caller: Reader, Path(p): Path<VmPath>) -> ApiResult {
    let c = control(&s)?;
    let id = vm_id(&p.sub, &p.rg, &p.name)?;
    let (vm, etag) = c
        .vm_as_shown(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("The Resource '{id}' was not found.")))?;
    respond(
        StatusCode::OK,
        &vm_view_document(c, vm).await?,
        Some(etag),
        None,
        &[],
    )
}

/// Deletes a VM, its disks and its vTPM (202: an operation).
#[utoipa::path(delete, path = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}", tag = "fleet", security(("token" = [])), params(VmPath), responses((status = 202, description = "accepted"), (status = 404, description = "no such VM")))]
async fn delete_vm(State(s): St, _caller: Operator, Path(p): Path<VmPath>) -> ApiResult {
    let c = control(&s)?;
    let id = vm_id(&p.sub, &p.rg, &p.name)?;
    let (vm, tag) = load_vm(c, &id).await?;
    let op_id = new_op_id();
    let op = c.orchestrator.plan_vm_delete(&id, vm.clone(), &op_id)?;
    c.store.start_operation(&op).await?;
    c.wake.notify_one();
    respond(StatusCode::ACCEPTED, &vm, Some(tag), Some(&op_id), &[])
}

/// A resource group's VMs (`az vm list -g`).
#[utoipa::path(get, path = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines", tag = "fleet", security(("token" = [])), params(GroupPath, crate::arm::PageQuery), responses((status = 200, description = "VMs, a page at a time (nextLink)")))]
async fn list_vms(
    State(s): St,
    _caller: Reader,
    Path(p): Path<GroupPath>,
    Query(q): Query<crate::arm::PageQuery>,
    uri: axum::http::Uri,
) -> ApiResult {
    let c = control(&s)?;
    let mut keyed = Vec::new();
    for vm in c.vms(Some(&p.rg)).await? {
        if vm
            .id
            .as_ref()
            .is_some_and(|i| i.subscription().eq_ignore_ascii_case(&p.sub))
        {
            keyed.push((vm.name.to_ascii_lowercase(), vm));
        }
    }
    let (vms, next) = crate::arm::page(keyed, q.skiptoken.as_deref(), uri.path());
    let mut value = Vec::new();
    for vm in &vms {
        value.push(vm_document(c, vm).await?);
    }
    let mut body = json!({ "value": value });
    if let Some(n) = next {
        body["nextLink"] = json!(n);
    }
    respond(StatusCode::OK, &body, None, None, &[])
}

/// Runs a power action on a VM (`az vm start|stop|deallocate|restart|
/// reimage`; 202: an operation; start, restart and reimage end when the
/// VM is healthy again).
#[utoipa::path(post, path = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}/{action}", tag = "fleet", security(("token" = [])), params(ActionPath), responses((status = 202, description = "accepted"), (status = 404, description = "no such VM or action"), (status = 409, description = "an operation runs on the VM")))]
async fn vm_action(State(s): St, _caller: Operator, Path(p): Path<ActionPath>) -> ApiResult {
    let c = control(&s)?;
    let action = action_of(&p.action)?;
    let id = vm_id(&p.sub, &p.rg, &p.name)?;
    let (vm, _) = load_vm(c, &id).await?;
    let target = ActionTarget {
        label: vm.name.clone(),
        name: vm_runtime_name(&vm),
    };
    start_action(c, &id, action, vec![target]).await
}

async fn start_action(
    c: &ControlPlane,
    target_id: &str,
    action: Action,
    targets: Vec<ActionTarget>,
) -> ApiResult {
    let op_id = new_op_id();
    let op = c
        .orchestrator
        .plan_action(target_id, action, targets, &op_id)?;
    c.store.start_operation(&op).await?;
    c.wake.notify_one();
    respond(
        StatusCode::ACCEPTED,
        &json!({"operationId": op_id, "action": action.as_str()}),
        None,
        Some(&op_id),
        &[],
    )
}

/// Body of a scale set power action: the instances (none: all).
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OptionalInstanceIds {
    /// The instances; absent or empty: every instance.
    #[serde(default)]
    pub instance_ids: Vec<String>,
}

/// Runs a power action on a scale set's instances (`az vmss
/// start|stop|deallocate|restart|reimage [--instance-ids]`; 202).
#[utoipa::path(post, path = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}/{action}", tag = "fleet", security(("token" = [])), params(ActionPath), request_body = OptionalInstanceIds, responses((status = 202, description = "accepted"), (status = 404, description = "no such scale set, instance or action"), (status = 409, description = "an operation runs on the set")))]
async fn set_action(
    State(s): St,
    _caller: Operator,
    Path(p): Path<ActionPath>,
    body: Bytes,
) -> ApiResult {
    let c = control(&s)?;
    let action = action_of(&p.action)?;
    let req: OptionalInstanceIds = if body.is_empty() {
        OptionalInstanceIds::default()
    } else {
        json_body(&body)?
    };
    if req.instance_ids.len() > 1000 {
        return Err(ApiError::bad_request(
            "instanceIds: at most 1000 instance ids",
        ));
    }
    let id = set_id(&p.sub, &p.rg, &p.name)?;
    let targets = set_targets(c, &id, &req.instance_ids).await?;
    start_action(c, &id, action, targets).await
}

/// Runs a power action on one scale set instance (`az vmss start
/// --instance-ids N`, the instance's own URL; 202).
#[utoipa::path(post, path = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}/virtualMachines/{instance}/{action}", tag = "fleet", security(("token" = [])), params(InstanceActionPath), responses((status = 202, description = "accepted"), (status = 404, description = "no such instance or action")))]
async fn instance_action(
    State(s): St,
    _caller: Operator,
    Path(p): Path<InstanceActionPath>,
) -> ApiResult {
    let c = control(&s)?;
    let action = action_of(&p.action)?;
    let id = set_id(&p.sub, &p.rg, &p.name)?;
    let targets = set_targets(c, &id, std::slice::from_ref(&p.instance)).await?;
    start_action(c, &id, action, targets).await
}

/// The driver names of a scale set's instances `ids` (all if empty);
/// an unknown id is refused (404) before anything starts.
async fn set_targets(
    c: &ControlPlane,
    set_id: &str,
    ids: &[String],
) -> Result<Vec<ActionTarget>, ApiError> {
    let (set, _) = load_set(c, set_id).await?;
    let mut all: Vec<ActionTarget> = c
        .store
        .child_resources(set_id)
        .await?
        .into_iter()
        .filter(|r| r.kind == SCALE_SET_VM_TYPE)
        .filter_map(|r| r.body["instanceId"].as_str().map(str::to_owned))
        .map(|i| ActionTarget {
            name: set_instance_name(&set, &i),
            label: i,
        })
        .collect();
    // A Flexible set's joined VMs are its instances too (by VM name).
    for vm in c.flexible_members(set_id).await? {
        all.push(ActionTarget {
            name: vm_runtime_name(&vm),
            label: vm.name,
        });
    }
    if ids.is_empty() {
        return Ok(all);
    }
    let mut out = Vec::new();
    for i in ids {
        let t = all
            .iter()
            .find(|t| t.label.eq_ignore_ascii_case(i))
            .ok_or_else(|| {
                ApiError::from(
                    FleetError::new(
                        ErrorCode::ResourceNotFound,
                        format!(
                            "The instance '{i}' of the scale set '{}' was not found.",
                            set.name
                        ),
                    )
                    .at("instanceIds"),
                )
            })?;
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    Ok(out)
}

/// The routes of single VMs and power actions.
pub fn routes(
    r: utoipa_axum::router::OpenApiRouter<Arc<AppState>>,
) -> utoipa_axum::router::OpenApiRouter<Arc<AppState>> {
    use utoipa_axum::routes;
    r.routes(routes!(put_vm, patch_vm, get_vm, delete_vm))
        .routes(routes!(list_vms))
        .routes(routes!(vm_action))
        .routes(routes!(set_action))
        .routes(routes!(instance_action))
        .routes(routes!(put_extension, get_extension, delete_extension))
        .routes(routes!(list_extensions))
        .routes(routes!(get_instance_view))
}

/// Path of a VM's extension.
#[derive(Deserialize, IntoParams)]
pub struct ExtensionPath {
    /// Subscription.
    pub sub: String,
    /// Resource group.
    pub rg: String,
    /// VM.
    pub name: String,
    /// Extension name.
    pub ext: String,
}

/// The body of an extension's PUT: ARM's extension resource (its
/// `location`, if given, is the VM's).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExtensionBody {
    #[serde(default)]
    location: Option<String>,
    properties: trustlaunch_fleet::resources::ExtensionProperties,
}

/// An extension as ARM shows the child resource.
fn extension_document(
    vm_id: &str,
    location: &str,
    e: &Extension,
    state: ProvisioningState,
) -> Value {
    let mut properties = serde_json::to_value(&e.properties).unwrap_or_else(|_| json!({}));
    properties["provisioningState"] = json!(state);
    json!({
        "id": format!("{vm_id}/extensions/{}", e.name),
        "name": e.name,
        "type": "Microsoft.Compute/virtualMachines/extensions",
        "location": location,
        "properties": properties,
    })
}

/// Writes a VM whose extensions changed as a PUT of the whole VM (the same
/// validation, the same operation), under the ETag it was read with.
async fn put_vm_extensions(
    s: &Arc<AppState>,
    caller: Operator,
    p: &ExtensionPath,
    mut vm: VirtualMachine,
    tag: i64,
) -> ApiResult {
    vm.id = None;
    let body = Bytes::from(serde_json::to_vec(&vm).map_err(ApiError::internal)?);
    let mut headers = HeaderMap::new();
    headers.insert(axum::http::header::IF_MATCH, crate::arm::etag(tag));
    put_vm(
        State(s.clone()),
        caller,
        Path(VmPath {
            sub: p.sub.clone(),
            rg: p.rg.clone(),
            name: p.name.clone(),
        }),
        Query(PutQuery::default()),
        headers,
        body,
    )
    .await
}

/// Adds or replaces a VM's extension (`az vm extension set`, the SDKs'
/// `virtual_machine_extensions.begin_create_or_update`): the VM's model
/// changes as by a PUT of the VM (validated the same way: the Guest
/// Attestation extension needs Trusted Launch with its vTPM) and the
/// operation that applies it is in `Azure-AsyncOperation`. 201 for a new
/// extension, 200 for a changed one.
#[utoipa::path(put, path = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}/extensions/{ext}", tag = "fleet", security(("token" = [])), params(ExtensionPath), request_body = Object, responses((status = 200, description = "updated"), (status = 201, description = "added"), (status = 404, description = "no such VM")))]
async fn put_extension(
    State(s): St,
    caller: Operator,
    Path(p): Path<ExtensionPath>,
    body: Bytes,
) -> ApiResult {
    let c = control(&s)?;
    let id = vm_id(&p.sub, &p.rg, &p.name)?;
    let (mut vm, tag) = load_vm(c, &id).await?;
    let b: ExtensionBody = json_body(&body)?;
    if let Some(l) = &b.location {
        if !l.eq_ignore_ascii_case(&vm.location) {
            return Err(FleetError::new(
                ErrorCode::InvalidParameter,
                format!(
                    "The extension's location '{l}' is not its VM's ('{}').",
                    vm.location
                ),
            )
            .at("location")
            .into());
        }
    }
    let ext = Extension {
        name: p.ext.clone(),
        properties: b.properties,
    };
    let created = match vm
        .resources
        .iter_mut()
        .find(|e| e.name.eq_ignore_ascii_case(&p.ext))
    {
        Some(e) => {
            *e = ext.clone();
            false
        }
        None => {
            vm.resources.push(ext.clone());
            true
        }
    };
    let location = vm.location.clone();
    let resp = put_vm_extensions(&s, caller, &p, vm, tag).await?;
    let (mut parts, _) = resp.into_parts();
    let state = if parts.headers.contains_key("azure-asyncoperation") {
        if created {
            ProvisioningState::Creating
        } else {
            ProvisioningState::Updating
        }
    } else {
        ProvisioningState::Succeeded
    };
    parts.status = crate::arm::put_status(created);
    parts.headers.remove(axum::http::header::ETAG);
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let doc = extension_document(&id, &location, &ext, state);
    let bytes = serde_json::to_vec(&doc).map_err(ApiError::internal)?;
    Ok(axum::response::Response::from_parts(parts, bytes.into()))
}

/// One of a VM's extensions.
#[utoipa::path(get, path = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}/extensions/{ext}", tag = "fleet", security(("token" = [])), params(ExtensionPath), responses((status = 200, description = "the extension"), (status = 404, description = "no such VM or extension")))]
async fn get_extension(State(s): St, _caller: Reader, Path(p): Path<ExtensionPath>) -> ApiResult {
    let c = control(&s)?;
    let id = vm_id(&p.sub, &p.rg, &p.name)?;
    let (vm, _) = load_vm(c, &id).await?;
    let Some(e) = vm
        .resources
        .iter()
        .find(|e| e.name.eq_ignore_ascii_case(&p.ext))
    else {
        return Err(ApiError::not_found(format!(
            "The VM '{}' has no extension '{}'.",
            p.name, p.ext
        )));
    };
    let state = crate::arm::provisioning_state(c, &id).await?;
    respond(
        StatusCode::OK,
        &extension_document(&id, &vm.location, e, state),
        None,
        None,
        &[],
    )
}

/// A VM's extensions.
#[utoipa::path(get, path = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}/extensions", tag = "fleet", security(("token" = [])), params(VmPath), responses((status = 200, description = "the extensions"), (status = 404, description = "no such VM")))]
async fn list_extensions(State(s): St, _caller: Reader, Path(p): Path<VmPath>) -> ApiResult {
    let c = control(&s)?;
    let id = vm_id(&p.sub, &p.rg, &p.name)?;
    let (vm, _) = load_vm(c, &id).await?;
    let state = crate::arm::provisioning_state(c, &id).await?;
    let value: Vec<Value> = vm
        .resources
        .iter()
        .map(|e| extension_document(&id, &vm.location, e, state))
        .collect();
    respond(StatusCode::OK, &json!({ "value": value }), None, None, &[])
}

/// Removes a VM's extension (`az vm extension delete`): the VM's model
/// changes as by a PUT of the VM (202 with the operation); 204 when the VM
/// has no such extension.
#[utoipa::path(delete, path = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}/extensions/{ext}", tag = "fleet", security(("token" = [])), params(ExtensionPath), responses((status = 202, description = "accepted"), (status = 204, description = "no such extension"), (status = 404, description = "no such VM")))]
async fn delete_extension(
    State(s): St,
    caller: Operator,
    Path(p): Path<ExtensionPath>,
) -> ApiResult {
    let c = control(&s)?;
    let id = vm_id(&p.sub, &p.rg, &p.name)?;
    let (mut vm, tag) = load_vm(c, &id).await?;
    let before = vm.resources.len();
    vm.resources
        .retain(|e| !e.name.eq_ignore_ascii_case(&p.ext));
    if vm.resources.len() == before {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let resp = put_vm_extensions(&s, caller, &p, vm, tag).await?;
    let (mut parts, _) = resp.into_parts();
    parts.status = if parts.headers.contains_key("azure-asyncoperation") {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    parts.headers.remove(axum::http::header::ETAG);
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Ok(axum::response::Response::from_parts(
        parts,
        axum::body::Body::empty(),
    ))
}
