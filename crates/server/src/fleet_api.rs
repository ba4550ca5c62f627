//! The control plane's REST API, ARM-shaped: gallery images, sizes, scale
//! sets and their instances under
//! `/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/`,
//! and long-running operations at `/operations/{id}`.
//!
//! Handlers turn requests into the fleet crate's typed values, validate
//! them there (Azure's rules, errors and defaults), write the resource
//! with its ETag (`If-Match` → 412 on conflict, `If-None-Match: *` for
//! create-only) and start the operation that carries the change out; the
//! orchestrator (`trustlaunch-control`) runs it in the background. A
//! mutating call that starts an operation answers 202 with the resource,
//! `Azure-AsyncOperation` and `Location` headers naming the operation.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};
use trustlaunch_control::orchestrator::{RollingUpgradeState, ROLLING_UPGRADE};
use trustlaunch_fleet::image::{gallery_id, ImageDefinition, ImageVersion};
use trustlaunch_fleet::resources::{ScaleSet, VirtualMachine};
use trustlaunch_fleet::validate::Confirmations;
use trustlaunch_store::{NewResource, OperationRecord, OperationStatus, Precondition};
use utoipa::IntoParams;

use crate::arm::{
    control, json_body, new_op_id, page, precondition, provisioning_state, put_status, respond,
    PageQuery,
};
use crate::auth::{Operator, Reader};
use crate::error::ApiError;
use crate::service::now;
use crate::state::AppState;
use crate::views::{instance_json, member_json};

use trustlaunch_control::plane::PutScaleSet;
pub use trustlaunch_control::plane::{ControlPlane, IMAGE_TYPE, IMAGE_VERSION_TYPE};

type St = State<Arc<AppState>>;
type ApiResult = Result<Response, ApiError>;

/// What an image's metadata says, for the definition's check: its
/// generation, and whether its boot chain was verified to boot under
/// Secure Boot (the import's reasons when not).
fn image_facts(
    m: &trustlaunch_runtime::image_meta::ImageMetadata,
) -> trustlaunch_fleet::image::ImageFacts {
    use trustlaunch_runtime::image_meta::Generation;
    trustlaunch_fleet::image::ImageFacts {
        generation: match m.generation {
            Generation::V1 => trustlaunch_fleet::image::HyperVGeneration::V1,
            Generation::V2 => trustlaunch_fleet::image::HyperVGeneration::V2,
        },
        trusted_launch_supported: m
            .features
            .contains(&trustlaunch_runtime::image_meta::trusted_launch_feature()),
        reasons: m.trusted_launch_refusals.clone(),
    }
}

/// An image version's source confined to `root`: resolved (symlinks
/// included) and refused unless it stays inside the root. Without a root
/// (the simulated driver, which never opens a file) a source is a name.
pub fn confine_source(root: Option<&std::path::Path>, source: &str) -> Result<String, ApiError> {
    use std::path::{Component, Path};
    if source.is_empty() || source.len() > 1024 || source.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "properties.source is 1-1024 characters without control characters",
        ));
    }
    let path = Path::new(source);
    let Some(root) = root else {
        return Ok(source.to_owned());
    };
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(ApiError::forbidden(format!(
            "properties.source {source:?} climbs out with '..': give a path inside the images root"
        )));
    }
    let root = std::fs::canonicalize(root).map_err(|e| {
        ApiError::unavailable(format!(
            "the images root {} is unusable: {e}",
            root.display()
        ))
    })?;
    let full = std::fs::canonicalize(root.join(path)).map_err(|e| {
        ApiError::bad_request(format!(
            "properties.source {source:?}: no such image under the images root {} ({e})",
            root.display()
        ))
    })?;
    if !full.starts_with(&root) {
        return Err(ApiError::forbidden(format!(
            "properties.source {source:?} resolves to {}, outside the images root {}",
            full.display(),
            root.display()
        )));
    }
    Ok(full.to_string_lossy().into_owned())
}

/// "Guest attestation agent not installed in the image" for every VM
/// and scale set with the Guest Attestation extension whose image
/// version's image has no agent (as the platform read the image).
pub(crate) async fn image_recommendations(
    c: &ControlPlane,
) -> Result<Vec<trustlaunch_attestation::security::Recommendation>, ApiError> {
    use trustlaunch_attestation::security::{Recommendation, RecommendationKind};
    let vms = c.vms(None).await?;
    let sets = c.scale_sets(None).await?;
    let images = c.images().await?;
    let kind = RecommendationKind::GuestAgentNotInImage;
    Ok(
        trustlaunch_fleet::resources::missing_guest_agents(&vms, &sets, &images)
            .into_iter()
            .map(|m| Recommendation {
                kind,
                name: kind.display_name(),
                severity: kind.severity(),
                vm_id: m.resource,
                reason: format!(
                    "guest attestation agent not installed in image {} (image version {}): the Guest Attestation extension's attestation would never answer; install the trustlaunch-guest-agent package in the image (`trustlaunch image agent-package`, then dpkg -i) and publish a new version",
                    m.source, m.image
                ),
            })
            .collect(),
    )
}

/// The sort key of an instance id: numeric ids in numeric order.
fn instance_key(id: &str) -> String {
    match id.parse::<u64>() {
        Ok(n) => format!("i:{n:020}"),
        Err(_) => format!("i:~{id}"),
    }
}

pub(crate) fn set_id(sub: &str, rg: &str, name: &str) -> Result<String, ApiError> {
    let id = format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}"
    );
    id.parse::<trustlaunch_fleet::ids::ResourceId>()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(id)
}

pub(crate) async fn load_set(c: &ControlPlane, id: &str) -> Result<(ScaleSet, i64), ApiError> {
    c.scale_set(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("The Resource '{id}' was not found.")))
}

// ---------------------------------------------------------------- images

/// Path of a gallery image.
#[derive(Deserialize, IntoParams)]
pub struct ImagePath {
    /// Subscription.
    pub sub: String,
    /// Resource group.
    pub rg: String,
    /// Gallery.
    pub gallery: String,
    /// Image definition.
    pub image: String,
}

/// Creates or replaces a gallery image definition (`az sig image-definition
/// create`): `{"location", "properties": {"osType", "hyperVGeneration",
/// "features", "identifier"}}`.
#[utoipa::path(put, path = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/galleries/{gallery}/images/{image}", tag = "fleet", security(("token" = [])), params(ImagePath), request_body = Object, responses((status = 200, description = "the image definition")))]
async fn put_image(
    State(s): St,
    _caller: Operator,
    Path(p): Path<ImagePath>,
    body: Bytes,
) -> ApiResult {
    let c = control(&s)?;
    let v: Value = json_body(&body)?;
    let mut props = v.get("properties").cloned().unwrap_or(Value::Null);
    if let Some(o) = props.as_object_mut() {
        o.insert("name".into(), Value::String(p.image.clone()));
    }
    let def: ImageDefinition = serde_json::from_value(props)
        .map_err(|e| ApiError::bad_request(format!("properties: {e}")))?;
    def.validate()?;
    let id = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/galleries/{}/images/{}",
        p.sub, p.rg, p.gallery, p.image
    );
    let location = v.get("location").and_then(Value::as_str).unwrap_or("local");
    let tag = c
        .store
        .put_resource(
            &NewResource {
                id: id.clone(),
                kind: IMAGE_TYPE.into(),
                resource_group: p.rg.clone(),
                name: p.image.clone(),
                parent: None,
                body: json!({"galleryId": gallery_id(&p.sub, &p.rg, &p.gallery), "location": location, "definition": def}),
                usage: None,
            },
            precondition(&HeaderMap::new())?,
            i64::try_from(now()).unwrap_or(0),
        )
        .await?;
    c.refresh_catalogs().await?;
    respond(
        StatusCode::OK,
        &json!({"id": id, "name": p.image, "type": IMAGE_TYPE, "location": location, "properties": def}),
        Some(tag),
        None,
        &[],
    )
}

/// Path of a gallery image version.
#[derive(Deserialize, IntoParams)]
pub struct VersionPath {
    /// Subscription.
    pub sub: String,
    /// Resource group.
    pub rg: String,
    /// Gallery.
    pub gallery: String,
    /// Image definition.
    pub image: String,
    /// Version (`1.0.0`).
    pub version: String,
}

/// Creates or replaces an image version (`az sig image-version create`):
/// `{"location", "properties": {"source": "<an image directory the runtime built>"}}`.
#[utoipa::path(put, path = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/galleries/{gallery}/images/{image}/versions/{version}", tag = "fleet", security(("token" = [])), params(VersionPath), request_body = Object, responses((status = 200, description = "the image version")))]
async fn put_image_version(
    State(s): St,
    _caller: Operator,
    Path(p): Path<VersionPath>,
    body: Bytes,
) -> ApiResult {
    let c = control(&s)?;
    let v: Value = json_body(&body)?;
    let source = v
        .pointer("/properties/source")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::bad_request("properties.source (the runtime image) is required")
        })?;
    let source = &confine_source(c.images_root.as_deref(), source)?;
    // Real images: what the platform read from the image (its build or
    // import) must agree with the definition it is published under.
    let guest_agent = match c.images_root.as_deref() {
        None => None,
        Some(_) => {
            let meta = trustlaunch_runtime::image_meta::ImageMetadata::read(std::path::Path::new(source))
                .map_err(|e| {
                    ApiError::bad_request(format!(
                        "properties.source: {e} (build the image with `trustlaunch image build` or import a disk with `trustlaunch image import`)"
                    ))
                })?;
            let images = c.images().await?;
            if let Some(def) = images.find(&gallery_id(&p.sub, &p.rg, &p.gallery), &p.image) {
                def.definition
                    .accepts(source, &image_facts(&meta))
                    .map_err(ApiError::from)?;
            }
            meta.guest_agent
        }
    };
    let version = ImageVersion {
        name: p.version.clone(),
        source: source.to_owned(),
        guest_agent,
    };
    // Checked against the catalog (the definition exists, the version
    // name is well formed) before it is stored.
    let id = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/galleries/{}/images/{}/versions/{}",
        p.sub, p.rg, p.gallery, p.image, p.version
    );
    let gallery = gallery_id(&p.sub, &p.rg, &p.gallery);
    if let Some(old) = c.store.get_resource(&id).await? {
        // Versions are immutable: the same PUT again is a no-op.
        if old.body["version"]["source"].as_str() != Some(source.as_str()) {
            return Err(ApiError::conflict(format!(
                "The image version '{}' exists with another source; image versions cannot change: publish a new version.",
                p.version
            )));
        }
    } else {
        let mut images = c.images().await?;
        images.add_version(&gallery, &p.image, version.clone())?;
    }
    let tag = c
        .store
        .put_resource(
            &NewResource {
                id: id.clone(),
                kind: IMAGE_VERSION_TYPE.into(),
                resource_group: p.rg.clone(),
                name: p.version.clone(),
                parent: None,
                body: json!({"galleryId": gallery, "image": p.image, "version": version}),
                usage: None,
            },
            Precondition::Any,
            i64::try_from(now()).unwrap_or(0),
        )
        .await?;
    c.refresh_catalogs().await?;
    respond(
        StatusCode::OK,
        &json!({"id": id, "name": p.version, "type": IMAGE_VERSION_TYPE, "properties": {"source": source}}),
        Some(tag),
        None,
        &[],
    )
}

/// The sizes (`az vm list-skus`): vCPUs, memory, family and whether the
/// family supports Trusted Launch (`TrustedLaunchDisabled` capability).
#[utoipa::path(get, path = "/subscriptions/{sub}/providers/Microsoft.Compute/skus", tag = "fleet", security(("token" = [])), params(("sub" = String, Path, description = "subscription")), responses((status = 200, description = "sizes")))]
async fn list_skus(State(s): St, _caller: Reader, Path(_sub): Path<String>) -> ApiResult {
    let c = control(&s)?;
    let value: Vec<Value> = c
        .sizes
        .sizes()
        .iter()
        .map(|z| {
            json!({
                "resourceType": "virtualMachines",
                "name": z.name,
                "family": z.family,
                "capabilities": [
                    {"name": "vCPUs", "value": z.vcpus.to_string()},
                    {"name": "MemoryGB", "value": format!("{}", z.memory_mib as f64 / 1024.0)},
                    {"name": "HyperVGenerations", "value": if matches!(z.trusted_launch, trustlaunch_fleet::sizes::TrustedLaunchSupport::NotSupportedNoGen2) { "V1" } else { "V1,V2" }},
                    {"name": "TrustedLaunchDisabled", "value": if z.supports_trusted_launch() { "False" } else { "True" }},
                ],
            })
        })
        .collect();
    respond(StatusCode::OK, &json!({"value": value}), None, None, &[])
}

// ---------------------------------------------------------------- scale sets

/// Path of a scale set.
#[derive(Deserialize, IntoParams, Clone)]
pub struct SetPath {
    /// Subscription.
    pub sub: String,
    /// Resource group.
    pub rg: String,
    /// Scale set.
    pub name: String,
}

/// Query of a scale set write.
#[derive(Deserialize, IntoParams, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub struct PutQuery {
    /// The caller accepts that a new image reference re-creates every
    /// instance's OS disk, losing what was written to it.
    #[serde(default)]
    pub confirm_os_disk_data_loss: bool,
}

/// Creates or updates a scale set (`az vmss create` / `update`): validated
/// by Azure's rules; `If-Match` guards against concurrent updates (412).
/// Starts the operation the change needs: instances to create or delete
/// (capacity), or, in Automatic and Rolling mode, the upgrade of every
/// instance to a changed model. Answers as ARM does: 201 for a new set,
/// 200 for an update, the operation in `Azure-AsyncOperation` and
/// `Location`, `provisioningState` Creating or Updating until it ends.
/// Warnings (e.g. Secure Boot left off) come as `Warning` headers.
#[utoipa::path(put, path = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}", tag = "fleet", security(("token" = [])), params(SetPath, PutQuery), request_body = Object, responses((status = 200, description = "updated (Azure-AsyncOperation names the operation that runs the change, if any)"), (status = 201, description = "created (Azure-AsyncOperation names the operation that creates its instances)"), (status = 412, description = "If-Match does not match")))]
async fn put_scale_set(
    State(s): St,
    _caller: Operator,
    Path(p): Path<SetPath>,
    Query(q): Query<PutQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let c = control(&s)?;
    let id = set_id(&p.sub, &p.rg, &p.name)?;
    let mut set: ScaleSet = json_body(&body)?;
    set.name = p.name.clone();
    set.id = id.parse().ok();
    let w = c
        .put_scale_set(PutScaleSet {
            id,
            set,
            precondition: precondition(&headers)?,
            confirmations: Confirmations {
                os_disk_data_loss: q.confirm_os_disk_data_loss,
            },
            operation_id: new_op_id(),
        })
        .await?;
    respond(
        put_status(w.created),
        &w.resource,
        Some(w.etag),
        w.operation.as_deref(),
        &w.warnings,
    )
}

/// Updates a scale set with ARM's merge semantics (`az vmss update`, the
/// SDKs' `begin_update`): the body merged onto the set as stored, then
/// validated and carried out as a PUT of the result would be (200, the
/// operation in `Azure-AsyncOperation`); 404 for a set that does not
/// exist.
#[utoipa::path(patch, path = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}", tag = "fleet", security(("token" = [])), params(SetPath, PutQuery), request_body = Object, responses((status = 200, description = "updated (Azure-AsyncOperation names the operation that runs the change, if any)"), (status = 404, description = "no such scale set"), (status = 412, description = "If-Match does not match, or the set changed meanwhile")))]
async fn patch_scale_set(
    State(s): St,
    caller: Operator,
    Path(p): Path<SetPath>,
    Query(q): Query<PutQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let c = control(&s)?;
    let id = set_id(&p.sub, &p.rg, &p.name)?;
    crate::arm::patch(c, &id, &headers, &body, |h, merged| {
        put_scale_set(
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

/// A scale set (`az vmss show`), with its ETag.
#[utoipa::path(get, path = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}", tag = "fleet", security(("token" = [])), params(SetPath), responses((status = 200, description = "the scale set"), (status = 404, description = "no such scale set")))]
async fn get_scale_set(State(s): St, _caller: Reader, Path(p): Path<SetPath>) -> ApiResult {
    let c = control(&s)?;
    let id = set_id(&p.sub, &p.rg, &p.name)?;
    let (set, etag) = c
        .scale_set_as_shown(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("The Resource '{id}' was not found.")))?;
    respond(StatusCode::OK, &set, Some(etag), None, &[])
}

/// A resource group's scale sets (`az vmss list -g`), each with its
/// `provisioningState`, a page at a time.
#[utoipa::path(get, path = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets", tag = "fleet", security(("token" = [])), params(crate::arm::GroupPath, PageQuery), responses((status = 200, description = "scale sets, a page at a time (nextLink)")))]
async fn list_scale_sets(
    State(s): St,
    _caller: Reader,
    Path(p): Path<crate::arm::GroupPath>,
    Query(q): Query<PageQuery>,
    uri: axum::http::Uri,
) -> ApiResult {
    let c = control(&s)?;
    let mut keyed = Vec::new();
    for set in c.scale_sets(Some(&p.rg)).await? {
        if set
            .id
            .as_ref()
            .is_some_and(|i| i.subscription().eq_ignore_ascii_case(&p.sub))
        {
            keyed.push((set.name.to_ascii_lowercase(), set));
        }
    }
    let (sets, next) = page(keyed, q.skiptoken.as_deref(), uri.path());
    let mut value = Vec::new();
    for mut set in sets {
        if let Some(id) = &set.id {
            set.properties.provisioning_state = Some(provisioning_state(c, &id.to_string()).await?);
        }
        value.push(set);
    }
    let mut body = json!({ "value": value });
    if let Some(n) = next {
        body["nextLink"] = json!(n);
    }
    respond(StatusCode::OK, &body, None, None, &[])
}

/// Deletes a scale set and its instances (202: an operation).
#[utoipa::path(delete, path = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}", tag = "fleet", security(("token" = [])), params(SetPath), responses((status = 202, description = "accepted"), (status = 404, description = "no such scale set")))]
async fn delete_scale_set(State(s): St, _caller: Operator, Path(p): Path<SetPath>) -> ApiResult {
    let c = control(&s)?;
    let id = set_id(&p.sub, &p.rg, &p.name)?;
    let (set, tag) = load_set(c, &id).await?;
    let members = c.flexible_members(&id).await?;
    if !members.is_empty() {
        return Err(trustlaunch_fleet::FleetError::new(
            trustlaunch_fleet::ErrorCode::OperationNotAllowed,
            format!(
                "The scale set '{}' has {} VMs that joined it ({}): delete them first.",
                set.name,
                members.len(),
                members
                    .iter()
                    .map(|v| v.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .into());
    }
    let op = new_op_id();
    c.orchestrator.start_reconcile(&id, &op, true).await?;
    c.wake.notify_one();
    respond(StatusCode::ACCEPTED, &set, Some(tag), Some(&op), &[])
}

/// A scale set's instances (`az vmss list-instances`): each one's model
/// version and `latestModelApplied`, power state and health as its
/// driver reports them.
#[utoipa::path(get, path = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}/virtualMachines", tag = "fleet", security(("token" = [])), params(SetPath, PageQuery), responses((status = 200, description = "instances, a page at a time (nextLink)")))]
async fn list_instances(
    State(s): St,
    _caller: Reader,
    Path(p): Path<SetPath>,
    Query(q): Query<PageQuery>,
    uri: axum::http::Uri,
) -> ApiResult {
    let c = control(&s)?;
    let id = set_id(&p.sub, &p.rg, &p.name)?;
    let (set, _) = load_set(c, &id).await?;
    // The page first (ids only), then each of its instances' status.
    enum Row {
        Instance(String),
        Member(Box<VirtualMachine>),
    }
    // Instances by id (the last segment of theirs), not by document; only
    // the page's are then read.
    let mut keyed = Vec::new();
    for rid in c.store.child_ids(&id).await? {
        let instance = rid.rsplit('/').next().unwrap_or_default().to_owned();
        keyed.push((instance_key(&instance), Row::Instance(rid)));
    }
    if set.properties.orchestration_mode
        == trustlaunch_fleet::resources::OrchestrationMode::Flexible
    {
        for vm in c.flexible_members(&id).await? {
            keyed.push((
                format!("m:{}", vm.name.to_ascii_lowercase()),
                Row::Member(Box::new(vm)),
            ));
        }
    }
    let (rows, next) = page(keyed, q.skiptoken.as_deref(), uri.path());
    let ids: Vec<String> = rows
        .iter()
        .filter_map(|r| match r {
            Row::Instance(rid) => Some(rid.clone()),
            Row::Member(_) => None,
        })
        .collect();
    let mut records: std::collections::HashMap<String, trustlaunch_store::ResourceRecord> = c
        .store
        .get_resources(&ids)
        .await?
        .into_iter()
        .map(|r| (r.id.to_ascii_lowercase(), r))
        .collect();
    let mut value = Vec::new();
    for row in rows {
        match row {
            Row::Instance(rid) => {
                if let Some(r) = records.remove(&rid.to_ascii_lowercase()) {
                    value.push(instance_json(c, &set, r).await?);
                }
            }
            Row::Member(vm) => value.push(member_json(c, &vm).await?),
        }
    }
    let mut body = json!({ "value": value });
    if let Some(n) = next {
        body["nextLink"] = json!(n);
    }
    respond(StatusCode::OK, &body, None, None, &[])
}

/// Path of one instance.
#[derive(Deserialize, IntoParams)]
pub struct InstancePath {
    /// Subscription.
    pub sub: String,
    /// Resource group.
    pub rg: String,
    /// Scale set name.
    pub name: String,
    /// Instance id (or, in a Flexible set, the member VM's name).
    pub instance: String,
}

/// One instance of a scale set (`az vmss get-instance-view`'s resource):
/// its model version, `latestModelApplied`, power state and health.
#[utoipa::path(get, path = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}/virtualMachines/{instance}", tag = "fleet", security(("token" = [])), params(InstancePath), responses((status = 200, description = "the instance"), (status = 404, description = "no such instance")))]
async fn get_instance(State(s): St, _caller: Reader, Path(p): Path<InstancePath>) -> ApiResult {
    let c = control(&s)?;
    let id = set_id(&p.sub, &p.rg, &p.name)?;
    let (set, _) = load_set(c, &id).await?;
    if let Some(r) = c
        .store
        .get_resource(&format!("{id}/virtualMachines/{}", p.instance))
        .await?
        .filter(|r| r.parent.is_some())
    {
        let body = instance_json(c, &set, r).await?;
        return respond(StatusCode::OK, &body, None, None, &[]);
    }
    for vm in c.flexible_members(&id).await? {
        if vm.name.eq_ignore_ascii_case(&p.instance) {
            let body = member_json(c, &vm).await?;
            return respond(StatusCode::OK, &body, None, None, &[]);
        }
    }
    Err(ApiError::not_found(format!(
        "scale set {} has no instance {}",
        p.name, p.instance
    )))
}

/// Body of `manualupgrade`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceIds {
    /// The instances to upgrade.
    pub instance_ids: Vec<String>,
}

/// Upgrades the named instances to the latest model (`az vmss
/// update-instances --instance-ids`; 202: an operation).
#[utoipa::path(post, path = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}/manualupgrade", tag = "fleet", security(("token" = [])), params(SetPath), request_body = InstanceIds, responses((status = 202, description = "accepted")))]
async fn manual_upgrade(
    State(s): St,
    _caller: Operator,
    Path(p): Path<SetPath>,
    body: Bytes,
) -> ApiResult {
    let c = control(&s)?;
    let id = set_id(&p.sub, &p.rg, &p.name)?;
    let req: InstanceIds = json_body(&body)?;
    if req.instance_ids.is_empty() || req.instance_ids.len() > 1000 {
        return Err(ApiError::bad_request("instanceIds: 1 to 1000 instance ids"));
    }
    load_set(c, &id).await?;
    let op = new_op_id();
    c.orchestrator
        .start_manual_upgrade(&id, &op, &req.instance_ids)
        .await?;
    c.wake.notify_one();
    respond(
        StatusCode::ACCEPTED,
        &json!({"operationId": op}),
        None,
        Some(&op),
        &[],
    )
}

/// Starts a rolling upgrade to the latest model (`az vmss rolling-upgrade
/// start`; 202: an operation).
#[utoipa::path(post, path = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}/osRollingUpgrade", tag = "fleet", security(("token" = [])), params(SetPath), responses((status = 202, description = "accepted")))]
async fn rolling_start(State(s): St, _caller: Operator, Path(p): Path<SetPath>) -> ApiResult {
    let c = control(&s)?;
    let id = set_id(&p.sub, &p.rg, &p.name)?;
    load_set(c, &id).await?;
    let op = new_op_id();
    c.orchestrator.start_rolling_upgrade(&id, &op, None).await?;
    c.wake.notify_one();
    respond(
        StatusCode::ACCEPTED,
        &json!({"operationId": op}),
        None,
        Some(&op),
        &[],
    )
}

async fn latest_rolling(c: &ControlPlane, id: &str) -> Result<OperationRecord, ApiError> {
    // The running one if there is one (at most one runs per set), else
    // the newest (operations started in the same second are ordered by
    // their last change).
    let mut ops: Vec<OperationRecord> = c
        .store
        .operations_on(id)
        .await?
        .into_iter()
        .filter(|o| o.kind == ROLLING_UPGRADE)
        .collect();
    ops.sort_by_key(|o| {
        (
            o.status == OperationStatus::InProgress,
            o.created_at,
            o.updated_at,
        )
    });
    ops.pop()
        .ok_or_else(|| ApiError::not_found("The scale set has had no rolling upgrade."))
}

/// The latest rolling upgrade (`az vmss rolling-upgrade get-latest`):
/// `runningStatus` (RollingForward / Cancelled / Completed / Faulted),
/// `progress` counts, the policy and the error.
#[utoipa::path(get, path = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}/rollingUpgrades/latest", tag = "fleet", security(("token" = [])), params(SetPath), responses((status = 200, description = "status"), (status = 404, description = "none yet")))]
async fn rolling_latest(State(s): St, _caller: Reader, Path(p): Path<SetPath>) -> ApiResult {
    let c = control(&s)?;
    let id = set_id(&p.sub, &p.rg, &p.name)?;
    let op = latest_rolling(c, &id).await?;
    let state: RollingUpgradeState =
        serde_json::from_value(op.state).map_err(ApiError::internal)?;
    respond(
        StatusCode::OK,
        &json!({"name": "latest", "type": "Microsoft.Compute/virtualMachineScaleSets/rollingUpgrades", "operationId": op.id, "properties": state.status()}),
        None,
        None,
        &[],
    )
}

/// Cancels the running rolling upgrade (`az vmss rolling-upgrade cancel`):
/// the batch in flight finishes, no other starts.
#[utoipa::path(post, path = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}/rollingUpgrades/cancel", tag = "fleet", security(("token" = [])), params(SetPath), responses((status = 202, description = "accepted"), (status = 409, description = "nothing running")))]
async fn rolling_cancel(State(s): St, _caller: Operator, Path(p): Path<SetPath>) -> ApiResult {
    let c = control(&s)?;
    let id = set_id(&p.sub, &p.rg, &p.name)?;
    let op = latest_rolling(c, &id).await?;
    if !c.orchestrator.cancel(&op.id).await? {
        return Err(ApiError::conflict(
            "There is no rolling upgrade in progress to cancel.",
        ));
    }
    respond(
        StatusCode::ACCEPTED,
        &json!({"operationId": op.id}),
        None,
        Some(&op.id),
        &[],
    )
}

/// A long-running operation: `status` (InProgress, Succeeded, Failed,
/// Canceled), times, `error`, and its progress.
#[utoipa::path(get, path = "/operations/{id}", tag = "fleet", security(("token" = [])), params(("id" = String, Path, description = "operation id")), responses((status = 200, description = "the operation"), (status = 404, description = "no such operation")))]
async fn get_operation(State(s): St, _caller: Reader, Path(id): Path<String>) -> ApiResult {
    let c = control(&s)?;
    // The summary (what it is, status, error, progress): never the
    // state, which for a rolling upgrade of many instances is large.
    let op = c
        .store
        .operation_summary(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("The operation '{id}' was not found.")))?;
    let progress = match op.progress {
        Some(p) => p,
        // Stored before progress was recorded: from its state.
        None => c
            .store
            .get_operation(&id)
            .await?
            .map_or(Value::Null, |full| {
                trustlaunch_control::orchestrator::progress_of(&full.kind, &full.state, full.status)
            }),
    };
    let ended = op.status != OperationStatus::InProgress;
    respond(
        StatusCode::OK,
        &json!({
            "id": format!("/operations/{}", op.id),
            "name": op.id,
            "status": op.status.as_str(),
            "startTime": op.created_at,
            "endTime": if ended { Some(op.updated_at) } else { None },
            "error": op.error,
            "properties": {"kind": op.kind, "target": op.target, "progress": progress, "cancelRequested": op.cancel_requested},
        }),
        None,
        None,
        &[],
    )
}

/// The control plane's routes.
pub fn routes(
    r: utoipa_axum::router::OpenApiRouter<Arc<AppState>>,
) -> utoipa_axum::router::OpenApiRouter<Arc<AppState>> {
    use utoipa_axum::routes;
    r.routes(routes!(put_image))
        .routes(routes!(put_image_version))
        .routes(routes!(list_skus))
        .routes(routes!(
            put_scale_set,
            patch_scale_set,
            get_scale_set,
            delete_scale_set
        ))
        .routes(routes!(list_scale_sets))
        .routes(routes!(list_instances))
        .routes(routes!(get_instance))
        .routes(routes!(manual_upgrade))
        .routes(routes!(rolling_start))
        .routes(routes!(rolling_latest))
        .routes(routes!(rolling_cancel))
        .routes(routes!(get_operation))
}

#[cfg(test)]
mod source_tests {
    use super::confine_source;

    /// An operator publishing an image version can name only what is in
    /// the images root: not `..`, not an absolute path elsewhere, not a
    /// symlink that leads out.
    #[test]
    fn sources_stay_in_the_images_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("images");
        std::fs::create_dir_all(root.join("tiny")).unwrap();
        std::fs::create_dir_all(tmp.path().join("secret")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), root.join("link")).unwrap();
        let canon = std::fs::canonicalize(root.join("tiny")).unwrap();
        let ok = |s: &str| confine_source(Some(&root), s).unwrap();
        assert_eq!(ok("tiny"), canon.to_string_lossy());
        assert_eq!(ok(canon.to_str().unwrap()), canon.to_string_lossy());
        let refused = |s: &str| confine_source(Some(&root), s).unwrap_err().status.as_u16();
        assert_eq!(refused("../secret"), 403);
        assert_eq!(refused("tiny/../../secret"), 403);
        assert_eq!(refused(tmp.path().join("secret").to_str().unwrap()), 403);
        assert_eq!(refused("/etc"), 403);
        assert_eq!(refused("link"), 403, "a symlink out of the root");
        assert_eq!(refused("missing"), 400);
        assert_eq!(refused("bad\nname"), 400);
        // The simulated driver's sources are names.
        assert_eq!(confine_source(None, "tiny-1").unwrap(), "tiny-1");
    }
}
