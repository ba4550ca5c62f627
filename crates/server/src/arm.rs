//! ARM's conventions over HTTP, shared by the control plane's handlers:
//! request bodies as typed values (unknown members refused), ETags and
//! preconditions, answers with `Azure-AsyncOperation`, `provisioningState`
//! from operations, paging with `nextLink`, merge patches. No resource
//! logic: that is the control plane's ([`trustlaunch_control::plane`]).

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use trustlaunch_control::plane::ControlPlane;
use trustlaunch_fleet::resources::ProvisioningState;
use trustlaunch_store::Precondition;
use utoipa::IntoParams;

use crate::error::ApiError;
use crate::state::AppState;

type ApiResult = Result<Response, ApiError>;

/// The server's control plane, or 503 when it runs none.
pub(crate) fn control(s: &AppState) -> Result<&Arc<ControlPlane>, ApiError> {
    s.control.as_ref().ok_or_else(|| {
        ApiError::unavailable(
            "this server runs no control plane (start it with a runtime home, or --driver sim)",
        )
    })
}

/// Properties ARM computes that a client may send back with a resource it
/// read (a script's GET-modify-PUT): taken without a word, as ARM does.
const READ_ONLY: &[&str] = &[
    "id",
    "name",
    "type",
    "etag",
    "provisioningState",
    "uniqueId",
    "timeCreated",
    "instanceView",
    "vmId",
    "systemData",
    "latestModelApplied",
    "statuses",
];

/// A path as `serde_ignored` spells it (`a.?.b.0.c`: `?` for an
/// optional value, numbers for list items) as ARM's `target` does
/// (`a.b[0].c`).
fn arm_path(p: &str) -> String {
    let mut out = String::new();
    for seg in p.split('.').filter(|s| *s != "?") {
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// A request body as the typed value `T`. A property `T` does not know is
/// refused (400 `InvalidRequestContent`, naming it at `target`), as
/// Azure's compute API refuses a member it cannot find: a setting the
/// caller asked for is honoured or refused, never dropped. Read-only
/// properties sent back ([`READ_ONLY`]) are taken.
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let mut ignored = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_ignored::deserialize(&mut de, |path| ignored.push(path.to_string()))
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| ApiError::bad_request(format!("The request body is not valid: {e}")))?;
    let unknown: Vec<String> = ignored
        .iter()
        .map(|p| arm_path(p))
        .filter(|p| {
            let last = p.rsplit('.').next().unwrap_or(p);
            !READ_ONLY.contains(&last)
        })
        .collect();
    if let Some(first) = unknown.first() {
        let also = match unknown.len() {
            1 => String::new(),
            n => format!(" (and {} more: {})", n - 1, unknown[1..].join(", ")),
        };
        return Err(ApiError {
            code: "InvalidRequestContent",
            ..ApiError::bad_request(format!(
                "Could not find member '{first}' on this request's object: this control plane does not take it{also}. Send the request without it."
            ))
        }
        .at(first.clone()));
    }
    Ok(value)
}

/// `ETag` values are quoted version numbers.
pub(crate) fn etag(v: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{v}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// The precondition the request's `If-Match` / `If-None-Match` ask for.
pub(crate) fn precondition(h: &HeaderMap) -> Result<Precondition, ApiError> {
    if let Some(v) = h.get(header::IF_MATCH) {
        let text = v.to_str().unwrap_or_default().trim();
        if text == "*" {
            return Ok(Precondition::Any);
        }
        let n = text
            .trim_start_matches("W/")
            .trim_matches('"')
            .parse::<i64>()
            .map_err(|_| {
                ApiError::bad_request(format!("If-Match {text:?} is not an ETag of this API"))
            })?;
        return Ok(Precondition::Etag(n));
    }
    if h.get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.to_str().unwrap_or_default().trim() == "*")
    {
        return Ok(Precondition::Absent);
    }
    Ok(Precondition::Any)
}

pub(crate) fn respond(
    status: StatusCode,
    body: &impl serde::Serialize,
    tag: Option<i64>,
    op: Option<&str>,
    warnings: &[String],
) -> ApiResult {
    let bytes = serde_json::to_vec(body).map_err(ApiError::internal)?;
    let mut r = (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response();
    let h = r.headers_mut();
    if let Some(t) = tag {
        h.insert(header::ETAG, etag(t));
    }
    if let Some(op) = op {
        if let Ok(v) = HeaderValue::from_str(&format!("/operations/{op}")) {
            h.insert("azure-asyncoperation", v.clone());
            h.insert(header::LOCATION, v);
        }
    }
    for w in warnings {
        // RFC 7234 warn-code 299: a persistent warning.
        if let Ok(v) = HeaderValue::from_str(&format!("299 - {:?}", w.replace('"', "'"))) {
            h.append(header::WARNING, v);
        }
    }
    Ok(r)
}

/// A resource's `provisioningState` as ARM reports it, from its newest
/// operation: `Creating` while its first runs, `Updating` while a later
/// one runs (`Deleting` for a VM's delete), else that operation's outcome;
/// `Succeeded` when it never had one.
pub(crate) async fn provisioning_state(
    c: &ControlPlane,
    id: &str,
) -> Result<ProvisioningState, ApiError> {
    Ok(trustlaunch_control::plane::provisioning_state_of(
        c.store.latest_operation_summary(id).await?,
    ))
}

/// ARM's answer to a PUT: 201 for a resource it created, 200 for one it
/// updated; an operation that carries the change out is named by the
/// `Azure-AsyncOperation` and `Location` headers either way.
pub(crate) fn put_status(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

/// Items per page of a list; ARM pages longer lists with `nextLink`.
pub const PAGE_SIZE: usize = 100;

/// A list's paging query: `$skiptoken`, the key of the last item of the
/// page before (from that page's `nextLink`).
#[derive(Deserialize, Default, utoipa::IntoParams)]
pub struct PageQuery {
    /// Continue after this item.
    #[serde(rename = "$skiptoken")]
    pub skiptoken: Option<String>,
}

/// One page of `keyed` (sorted by key here): the items after the token's
/// key, at most [`PAGE_SIZE`], and the `nextLink` (`path` with the last
/// key as `$skiptoken`) when more follow. Keys are stable (instance ids,
/// names), so a page boundary does not move when items before it go.
pub(crate) fn page<T>(
    mut keyed: Vec<(String, T)>,
    token: Option<&str>,
    path: &str,
) -> (Vec<T>, Option<String>) {
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let start = token.map_or(0, |t| keyed.partition_point(|(k, _)| k.as_str() <= t));
    let rest = keyed.len().saturating_sub(start);
    let mut items: Vec<(String, T)> = keyed.into_iter().skip(start).take(PAGE_SIZE).collect();
    let next = (rest > PAGE_SIZE)
        .then(|| {
            items
                .last()
                .map(|(k, _)| format!("{path}?$skiptoken={}", enc_token(k)))
        })
        .flatten();
    (items.drain(..).map(|(_, v)| v).collect(), next)
}

fn enc_token(k: &str) -> String {
    percent_encoding::utf8_percent_encode(k, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub(crate) fn new_op_id() -> String {
    let mut b = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// ARM's PATCH: `patch` (an RFC 7386 merge patch: `null` removes) merged
/// onto the resource as stored, to be written as a PUT of the result,
/// under the caller's `If-Match` or, without one, the stored version's
/// (a change between the read and the write is refused, not lost).
pub(crate) async fn merged_for_patch(
    c: &ControlPlane,
    id: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(HeaderMap, Bytes), ApiError> {
    let existing = c
        .store
        .get_resource(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("The Resource '{id}' was not found.")))?;
    let patch: Value = json_body(body)?;
    if !patch.is_object() {
        return Err(ApiError::bad_request(
            "The request body of a PATCH is a JSON object (a merge patch of the resource).",
        ));
    }
    let mut doc = existing.body;
    json_patch::merge(&mut doc, &patch);
    let mut headers = headers.clone();
    headers.remove(header::IF_NONE_MATCH);
    if !headers.contains_key(header::IF_MATCH) {
        headers.insert(header::IF_MATCH, etag(existing.etag));
    }
    let bytes = serde_json::to_vec(&doc).map_err(ApiError::internal)?;
    Ok((headers, Bytes::from(bytes)))
}

#[cfg(test)]
mod arm_path_tests {
    #[test]
    fn paths_read_as_arm_targets() {
        assert_eq!(super::arm_path("a.?.b.0.c"), "a.b[0].c");
        assert_eq!(super::arm_path("?.zones"), "zones");
        assert_eq!(super::arm_path("x"), "x");
    }
}

/// Path of a resource group's VMs.
#[derive(Deserialize, IntoParams)]
pub struct GroupPath {
    /// Subscription.
    pub sub: String,
    /// Resource group.
    pub rg: String,
}

/// How many times a PATCH without `If-Match` is merged again onto the
/// resource after losing a race with another write to it.
const PATCH_RETRIES: u32 = 8;

/// A PATCH (ARM's merge semantics): the body merged onto resource `id` as
/// stored ([`merged_for_patch`]) and carried out by `put` as the PUT of
/// the result. When the caller gave no `If-Match` and the write lost a
/// race with another (412), the patch is merged again onto the newer
/// resource, at most [`PATCH_RETRIES`] times: a merge patch applies to the
/// resource as it is, as ARM applies it.
pub(crate) async fn patch<F, Fut>(
    c: &ControlPlane,
    id: &str,
    headers: &HeaderMap,
    body: &Bytes,
    mut put: F,
) -> ApiResult
where
    F: FnMut(HeaderMap, Bytes) -> Fut,
    Fut: std::future::Future<Output = ApiResult>,
{
    let callers_etag = headers.contains_key(header::IF_MATCH);
    let mut attempt = 0;
    loop {
        let (h, merged) = merged_for_patch(c, id, headers, body).await?;
        match put(h, merged).await {
            Err(e)
                if !callers_etag
                    && e.status == StatusCode::PRECONDITION_FAILED
                    && attempt < PATCH_RETRIES =>
            {
                attempt += 1;
            }
            r => return r,
        }
    }
}
