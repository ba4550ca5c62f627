//! Resource groups (`Microsoft.Resources/resourceGroups`), as ARM serves
//! them to `az group` and the SDKs' resource clients: create or update
//! (201/200), show, check existence (HEAD), list, delete.
//!
//! A group is a resource of the store. Writing any resource into a group
//! makes the group too, in the same transaction (the store keeps every
//! resource's group in existence), so scripts that never create their
//! groups keep working; a group made so says `"implicit": true` in its
//! properties. Deleting a group that still holds resources is refused
//! (409, naming them) rather than cascading: a VM's disks and vTPM are not
//! deleted as a side effect. The check and the deletion are one
//! transaction.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use trustlaunch_store::{GroupDeletion, NewResource, ResourceRecord, RESOURCE_GROUP_TYPE};
use utoipa::IntoParams;

use crate::arm::{control, json_body, page, precondition, put_status, respond, PageQuery};
use crate::auth::{Operator, Reader};
use crate::error::ApiError;
use crate::service::now;
use crate::state::AppState;

type St = State<Arc<AppState>>;
type ApiResult = Result<Response, ApiError>;

/// Path of a resource group.
#[derive(Deserialize, IntoParams)]
pub struct GroupPath {
    /// Subscription.
    pub sub: String,
    /// Resource group.
    pub rg: String,
}

/// Path of a subscription.
#[derive(Deserialize, IntoParams)]
pub struct SubscriptionPath {
    /// Subscription.
    pub sub: String,
}

/// The body of a group's PUT.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupBody {
    location: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

/// The most tags a group carries (ARM's limit).
const MAX_TAGS: usize = 50;

fn group_id(sub: &str, rg: &str) -> Result<String, ApiError> {
    trustlaunch_fleet::ids::check_resource_group_name(rg)?;
    if sub.is_empty() || sub.contains(['/', '?', '#']) {
        return Err(ApiError::bad_request(format!(
            "The subscription id '{sub}' is not valid."
        )));
    }
    Ok(format!("/subscriptions/{sub}/resourceGroups/{rg}"))
}

fn not_found(rg: &str) -> ApiError {
    ApiError {
        code: "ResourceGroupNotFound",
        ..ApiError::not_found(format!("Resource group '{rg}' could not be found."))
    }
}

/// A group as ARM shows it.
fn document(r: &ResourceRecord) -> Value {
    let mut properties = json!({"provisioningState": "Succeeded"});
    if r.body["implicit"] == true {
        properties["implicit"] = json!(true);
    }
    json!({
        "id": r.id,
        "name": r.name,
        "type": RESOURCE_GROUP_TYPE,
        "location": r.body["location"],
        "tags": r.body.get("tags").cloned().unwrap_or_else(|| json!({})),
        "properties": properties,
    })
}

/// Creates or updates a resource group (`az group create`): its location
/// and tags. 201 when new, 200 when it existed (made explicitly or by a
/// resource written into it).
#[utoipa::path(put, path = "/subscriptions/{sub}/resourcegroups/{rg}", tag = "fleet", security(("token" = [])), params(GroupPath), request_body = Object, responses((status = 201, description = "created"), (status = 200, description = "updated"), (status = 400, description = "not a valid name or body")))]
async fn put_group(
    State(s): St,
    _caller: Operator,
    Path(p): Path<GroupPath>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let c = control(&s)?;
    let id = group_id(&p.sub, &p.rg)?;
    let b: GroupBody = json_body(&body)?;
    if b.location.trim().is_empty() {
        return Err(ApiError::bad_request("A resource group needs a location.").at("location"));
    }
    if b.tags.len() > MAX_TAGS {
        return Err(ApiError::bad_request(format!(
            "A resource group has at most {MAX_TAGS} tags."
        ))
        .at("tags"));
    }
    let pre = precondition(&headers)?;
    let existing = c.store.get_resource(&id).await?;
    // The name as first written stays (ARM keeps a group's casing).
    let (id, name) = match &existing {
        Some(r) => (r.id.clone(), r.name.clone()),
        None => (id, p.rg.clone()),
    };
    c.store
        .put_resource(
            &NewResource {
                id: id.clone(),
                kind: RESOURCE_GROUP_TYPE.to_owned(),
                resource_group: name.clone(),
                name,
                parent: None,
                body: json!({"location": b.location, "tags": b.tags}),
                usage: None,
            },
            pre,
            i64::try_from(now()).unwrap_or(i64::MAX),
        )
        .await?;
    let r = c
        .store
        .get_resource(&id)
        .await?
        .ok_or_else(|| not_found(&p.rg))?;
    respond(
        put_status(existing.is_none()),
        &document(&r),
        Some(r.etag),
        None,
        &[],
    )
}

async fn load(s: &Arc<AppState>, p: &GroupPath) -> Result<ResourceRecord, ApiError> {
    let c = control(s)?;
    let id = group_id(&p.sub, &p.rg)?;
    c.store
        .get_resource(&id)
        .await?
        .filter(|r| r.kind == RESOURCE_GROUP_TYPE)
        .ok_or_else(|| not_found(&p.rg))
}

/// A resource group (`az group show`).
#[utoipa::path(get, path = "/subscriptions/{sub}/resourcegroups/{rg}", tag = "fleet", security(("token" = [])), params(GroupPath), responses((status = 200, description = "the group"), (status = 404, description = "no such group")))]
async fn get_group(State(s): St, _caller: Reader, Path(p): Path<GroupPath>) -> ApiResult {
    let r = load(&s, &p).await?;
    respond(StatusCode::OK, &document(&r), Some(r.etag), None, &[])
}

/// Whether a resource group exists (`az group exists`): 204 or 404.
#[utoipa::path(head, path = "/subscriptions/{sub}/resourcegroups/{rg}", tag = "fleet", security(("token" = [])), params(GroupPath), responses((status = 204, description = "it exists"), (status = 404, description = "it does not")))]
async fn group_exists(State(s): St, _caller: Reader, Path(p): Path<GroupPath>) -> ApiResult {
    match load(&s, &p).await {
        Ok(_) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(e) if e.status == StatusCode::NOT_FOUND => Ok(StatusCode::NOT_FOUND.into_response()),
        Err(e) => Err(e),
    }
}

/// A subscription's resource groups (`az group list`), a page at a time.
#[utoipa::path(get, path = "/subscriptions/{sub}/resourcegroups", tag = "fleet", security(("token" = [])), params(SubscriptionPath, PageQuery), responses((status = 200, description = "groups, a page at a time (nextLink)")))]
async fn list_groups(
    State(s): St,
    _caller: Reader,
    Path(p): Path<SubscriptionPath>,
    Query(q): Query<PageQuery>,
    uri: axum::http::Uri,
) -> ApiResult {
    let c = control(&s)?;
    let prefix = format!("/subscriptions/{}/", p.sub).to_ascii_lowercase();
    let keyed: Vec<(String, ResourceRecord)> = c
        .store
        .list_resources(RESOURCE_GROUP_TYPE, None)
        .await?
        .into_iter()
        .filter(|r| r.id.to_ascii_lowercase().starts_with(&prefix))
        .map(|r| (r.name.to_ascii_lowercase(), r))
        .collect();
    let (rows, next) = page(keyed, q.skiptoken.as_deref(), uri.path());
    let mut body = json!({ "value": rows.iter().map(document).collect::<Vec<_>>() });
    if let Some(n) = next {
        body["nextLink"] = json!(n);
    }
    respond(StatusCode::OK, &body, None, None, &[])
}

/// Deletes an empty resource group (`az group delete`). A group that
/// still holds resources is refused (409, naming them): delete its VMs,
/// scale sets and images first. 404 for a group that does not exist.
#[utoipa::path(delete, path = "/subscriptions/{sub}/resourcegroups/{rg}", tag = "fleet", security(("token" = [])), params(GroupPath), responses((status = 200, description = "deleted"), (status = 404, description = "no such group"), (status = 409, description = "it holds resources")))]
async fn delete_group(State(s): St, _caller: Operator, Path(p): Path<GroupPath>) -> ApiResult {
    let c = control(&s)?;
    let id = group_id(&p.sub, &p.rg)?;
    match c.store.delete_resource_group(&id).await? {
        GroupDeletion::Deleted => Ok(StatusCode::OK.into_response()),
        GroupDeletion::Absent => Err(not_found(&p.rg)),
        GroupDeletion::NotEmpty { ids, count } => Err(ApiError {
            code: "ResourceGroupNotEmpty",
            ..ApiError::conflict(format!(
                "The resource group '{}' holds {count} resource{}: {}{}. Delete {} first; a group's deletion does not delete what is in it here.",
                p.rg,
                if count == 1 { "" } else { "s" },
                ids.join(", "),
                if count > 10 { ", …" } else { "" },
                if count == 1 { "it" } else { "them" },
            ))
        }),
    }
}

/// The routes of resource groups: ARM's spelling (`resourcegroups`), and
/// `resourceGroups` as the compute paths spell it (ARM's paths are
/// case-insensitive).
pub fn routes(
    r: utoipa_axum::router::OpenApiRouter<Arc<AppState>>,
) -> utoipa_axum::router::OpenApiRouter<Arc<AppState>> {
    use axum::routing::get;
    use utoipa_axum::routes;
    let camel = axum::Router::new()
        .route(
            "/subscriptions/{sub}/resourceGroups/{rg}",
            get(get_group)
                .put(put_group)
                .delete(delete_group)
                .head(group_exists),
        )
        .route("/subscriptions/{sub}/resourceGroups", get(list_groups));
    r.routes(routes!(put_group, get_group, delete_group, group_exists))
        .routes(routes!(list_groups))
        .merge(utoipa_axum::router::OpenApiRouter::from(camel))
}
