//! The REST API (JSON over HTTP/1.1), documented by the OpenAPI document
//! it serves at `/openapi.json` (built from these handlers, so a route
//! cannot go undocumented).

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use trustlaunch_attestation::security::SuppressionRule;
use trustlaunch_protocol::Evidence;
use trustlaunch_store::Role;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{new_token, Caller, TokenCache};
use crate::error::{check_vm_id, ApiError};
use crate::metrics::Gauges;
use crate::model::{unhex, VmRegistration};
use crate::monitor::Monitor;
use crate::service::{now, Service};

/// What handlers share.
pub struct AppState {
    /// The service.
    pub service: Arc<Service>,
    /// API token lookups.
    pub tokens: TokenCache,
    /// The local runtime's monitor, if this server runs one.
    pub monitor: Option<Arc<Monitor>>,
    /// The control plane, if this server runs one.
    pub control: Option<Arc<crate::fleet_api::ControlPlane>>,
}

type St = State<Arc<AppState>>;
type ApiResult = Result<Response, ApiError>;

/// A 200 answer with `v` as JSON, serialized straight into the body (an
/// intermediate `serde_json::Value` costs an allocation per key and value;
/// an appraisal has hundreds).
fn ok(v: impl serde::Serialize) -> ApiResult {
    let body = serde_json::to_vec(&v).map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "trustlaunch attestation service",
        description = "Guest attestation for Trusted Launch VMs on QEMU/KVM: enrollment, appraisal with named checks citing their evidence, baselines, signed tokens (JWKS), recommendations and alerts.",
        version = "1"
    ),
    components(schemas(VmRegistration, crate::model::Template, SubmitEvidence, AppraiseRequest, PinRequest, NewToken, Rule)),
    modifiers(&Security),
    tags((name = "attestation"), (name = "baseline"), (name = "security"), (name = "service"))
)]
struct ApiDoc;

struct Security;
impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let c = openapi.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The router and its OpenAPI document.
pub fn router(state: Arc<AppState>) -> axum::Router {
    let (router, _) = routes();
    router
        .layer(axum::extract::DefaultBodyLimit::max(48 << 20))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

/// The OpenAPI document the server serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().1
}

fn routes() -> (axum::Router<Arc<AppState>>, utoipa::openapi::OpenApi) {
    let base = OpenApiRouter::<Arc<AppState>>::with_openapi(ApiDoc::openapi());
    let (router, doc) = crate::fleet_api::routes(base)
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .routes(routes!(jwks))
        .routes(routes!(openid_configuration))
        .routes(routes!(list_vms))
        .routes(routes!(get_vm, put_vm))
        .routes(routes!(submit_attestation, history))
        .routes(routes!(latest))
        .routes(routes!(attest_now))
        .routes(routes!(appraise_stateless))
        .routes(routes!(get_baseline))
        .routes(routes!(pin_baseline))
        .routes(routes!(relearn_baseline))
        .routes(routes!(get_recommendations))
        .routes(routes!(get_alerts))
        .routes(routes!(dismiss_alert))
        .routes(routes!(list_rules))
        .routes(routes!(put_rule, delete_rule))
        .routes(routes!(rotate_keys))
        .routes(routes!(create_token, list_tokens))
        .split_for_parts();
    let served = doc.clone();
    let router = router.route(
        "/openapi.json",
        axum::routing::get(move || {
            let d = served.clone();
            async move { Json(d) }
        }),
    );
    (router, doc)
}

async fn count(State(s): St, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let resp = next.run(req).await;
    s.service.metrics.http(&route, resp.status().as_u16());
    resp
}

/// Liveness and the database.
#[utoipa::path(get, path = "/healthz", tag = "service", responses((status = 200, description = "serving"), (status = 503, description = "database unreachable")))]
async fn healthz(State(s): St) -> ApiResult {
    s.service.store.suppression_rules().await?;
    ok(json!({"status": "ok", "time": now()}))
}

/// Prometheus metrics (text format 0.0.4).
#[utoipa::path(get, path = "/metrics", tag = "service", responses((status = 200, description = "text exposition", content_type = "text/plain")))]
async fn metrics(State(s): St) -> Result<Response, ApiError> {
    let mut g = Gauges::default();
    for a in s.service.alerts(None, None).await? {
        let kind = serde_json::to_value(a.alert.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        *g.alerts
            .entry((kind, a.alert.state.as_str().to_owned()))
            .or_default() += 1;
        if a.pending() {
            g.webhook_pending += 1;
        }
        if a.dead_lettered() {
            g.webhook_dead_lettered += 1;
        }
    }
    for (health, n) in s.service.store.vm_health_counts().await? {
        g.vms.insert(health, n);
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.service.metrics.render(&g),
    )
        .into_response())
}

/// The public keys attestation tokens are signed with (RS256), current
/// first, then previous ones until the tokens they signed expire.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "attestation", responses((status = 200, description = "JWKS")))]
async fn jwks(State(s): St) -> ApiResult {
    ok(s.service.jwks())
}

/// OpenID-style discovery: the issuer and where its keys are.
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "attestation", responses((status = 200, description = "issuer and jwks_uri")))]
async fn openid_configuration(State(s): St) -> ApiResult {
    let iss = &s.service.config.issuer;
    ok(json!({
        "issuer": iss,
        "jwks_uri": format!("{}/.well-known/jwks.json", iss.trim_end_matches('/')),
        "id_token_signing_alg_values_supported": ["RS256"],
        "claims_supported": ["secureboot", "x-ms-attestation-type", "x-ms-azurevm-attested-pcrs", "x-ms-azurevm-dbvalidated", "x-ms-azurevm-dbxvalidated", "x-ms-azurevm-default-securebootkeysvalidated", "x-ms-azurevm-bootdebug-enabled", "x-ms-azurevm-kerneldebug-enabled", "x-ms-azurevm-testsigning-enabled", "x-ms-azurevm-ostype", "x-ms-azurevm-osdistro", "x-ms-azurevm-vmid"]
    }))
}

/// Registered VMs with their attestation health.
#[utoipa::path(get, path = "/v1/vms", tag = "attestation", security(("token" = [])), responses((status = 200, description = "VMs")))]
async fn list_vms(State(s): St, caller: Caller) -> ApiResult {
    caller.require(Role::Reader)?;
    let mut out = Vec::new();
    for vm in s.service.store.list_vms().await? {
        out.push(s.service.vm_summary(&vm.vm_id).await?);
    }
    ok(json!({ "value": out }))
}

/// One VM: registration, enrollment, attestation health, active alerts.
#[utoipa::path(get, path = "/v1/vms/{vm}", tag = "attestation", security(("token" = [])), params(("vm" = String, Path, description = "VM id")), responses((status = 200, description = "the VM"), (status = 404, description = "not registered")))]
async fn get_vm(State(s): St, caller: Caller, Path(vm): Path<String>) -> ApiResult {
    caller.require(Role::Reader)?;
    ok(s.service.vm_summary(&vm).await?)
}

/// Registers a VM as its platform knows it (the EK it created, its
/// security profile, the template's Secure Boot databases, the baseline
/// predicted from its image). The local runtime's VMs are registered by
/// the server itself.
#[utoipa::path(put, path = "/v1/vms/{vm}", tag = "attestation", security(("token" = [])), params(("vm" = String, Path, description = "VM id")), request_body = VmRegistration, responses((status = 200, description = "registered")))]
async fn put_vm(
    State(s): St,
    caller: Caller,
    Path(vm): Path<String>,
    Json(reg): Json<VmRegistration>,
) -> ApiResult {
    caller.require(Role::Operator)?;
    s.service.register(&vm, &reg).await?;
    ok(s.service.vm_summary(&vm).await?)
}

/// Evidence a host collected from a VM's agent over its attestation
/// channel, with the nonce the host challenged it with.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubmitEvidence {
    /// The challenge's nonce (hex).
    pub nonce: String,
    /// Whether the guest activated the credential made for its AK under
    /// the VM's EK in that session.
    #[serde(default)]
    pub ak_activated: bool,
    /// The agent's evidence (`trustlaunch-protocol`'s Evidence).
    #[schema(value_type = Object)]
    pub evidence: Evidence,
}

/// Records one attestation: appraisal, enrollment, baseline learning,
/// token, boot report, alerts. Idempotent per (VM, nonce): a retry
/// returns the first result.
#[utoipa::path(post, path = "/v1/vms/{vm}/attestations", tag = "attestation", security(("token" = [])), params(("vm" = String, Path, description = "VM id")), request_body = SubmitEvidence, responses((status = 201, description = "recorded"), (status = 200, description = "already recorded (retry)")))]
async fn submit_attestation(
    State(s): St,
    caller: Caller,
    Path(vm): Path<String>,
    Json(req): Json<SubmitEvidence>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator)?;
    let nonce = parse_nonce(&req.nonce)?;
    let r = s
        .service
        .attest(&vm, &req.evidence, &nonce, req.ak_activated)
        .await?;
    let status = if r.new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(r)).into_response())
}

/// A recorded attestation as the API returns it.
fn record_json(r: trustlaunch_store::AttestationRecord) -> Value {
    json!({
        "id": r.id,
        "at": r.attestation.at,
        "bootId": r.attestation.boot_id,
        "healthy": r.attestation.healthy,
        "token": r.attestation.token,
        "attestation": r.attestation.appraisal,
    })
}

fn parse_nonce(h: &str) -> Result<Vec<u8>, ApiError> {
    let n = unhex(h).ok_or_else(|| ApiError::bad_request("nonce is not hex"))?;
    if !(8..=64).contains(&n.len()) {
        return Err(ApiError::bad_request("nonce must be 8-64 bytes"));
    }
    Ok(n)
}

/// History query.
#[derive(Deserialize, IntoParams)]
pub struct HistoryQuery {
    /// At most this many (default 20, at most 1000).
    limit: Option<u32>,
}

/// A VM's attestations, newest first.
#[utoipa::path(get, path = "/v1/vms/{vm}/attestations", tag = "attestation", security(("token" = [])), params(("vm" = String, Path, description = "VM id"), HistoryQuery), responses((status = 200, description = "history")))]
async fn history(
    State(s): St,
    caller: Caller,
    Path(vm): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult {
    caller.require(Role::Reader)?;
    check_vm_id(&vm)?;
    let limit = q.limit.unwrap_or(20).min(1000);
    let rows = s.service.store.history(&vm, limit).await?;
    let value: Vec<Value> = rows.into_iter().map(record_json).collect();
    ok(json!({ "value": value }))
}

/// A VM's latest attestation with its token and boot report.
#[utoipa::path(get, path = "/v1/vms/{vm}/attestations/latest", tag = "attestation", security(("token" = [])), params(("vm" = String, Path, description = "VM id")), responses((status = 200, description = "latest"), (status = 404, description = "never attested")))]
async fn latest(State(s): St, caller: Caller, Path(vm): Path<String>) -> ApiResult {
    caller.require(Role::Reader)?;
    check_vm_id(&vm)?;
    let r = s
        .service
        .store
        .latest(&vm)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("VM {vm:?} has not been attested")))?;
    ok(record_json(r))
}

/// Challenges a VM of this server's runtime now and records the result.
#[utoipa::path(post, path = "/v1/vms/{vm}/attest", tag = "attestation", security(("token" = [])), params(("vm" = String, Path, description = "VM id")), responses((status = 201, description = "attested"), (status = 503, description = "no runtime here, or the agent did not answer")))]
async fn attest_now(
    State(s): St,
    caller: Caller,
    Path(vm): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator)?;
    check_vm_id(&vm)?;
    let m = s.monitor.clone().ok_or_else(|| {
        ApiError::unavailable("this server runs no VMs (started with --no-runtime)")
    })?;
    let r = m.attest_now(&vm).await?;
    Ok((StatusCode::CREATED, Json(r)).into_response())
}

/// A stateless appraisal.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppraiseRequest {
    /// The enrolled VM whose reference (EK, enrollment, template,
    /// baseline) the evidence is appraised against.
    pub vm_id: String,
    /// The nonce the caller challenged with (hex): the caller vouches for
    /// its freshness.
    pub nonce: String,
    /// The evidence.
    #[schema(value_type = Object)]
    pub evidence: Evidence,
}

/// Appraises evidence against a registered VM's reference and returns
/// every check, recording nothing (like Keylime's stateless evidence
/// verification).
#[utoipa::path(post, path = "/v1/appraisals", tag = "attestation", security(("token" = [])), request_body = AppraiseRequest, responses((status = 200, description = "the appraisal")))]
async fn appraise_stateless(
    State(s): St,
    caller: Caller,
    Json(req): Json<AppraiseRequest>,
) -> ApiResult {
    caller.require(Role::Operator)?;
    check_vm_id(&req.vm_id)?;
    let nonce = parse_nonce(&req.nonce)?;
    let a = s
        .service
        .appraise_only(&req.vm_id, &req.evidence, &nonce)
        .await?;
    ok(a)
}

/// A VM's baseline, its version, any pending (re)learn, and its audit
/// trail.
#[utoipa::path(get, path = "/v1/vms/{vm}/baseline", tag = "baseline", security(("token" = [])), params(("vm" = String, Path, description = "VM id")), responses((status = 200, description = "baseline")))]
async fn get_baseline(State(s): St, caller: Caller, Path(vm): Path<String>) -> ApiResult {
    caller.require(Role::Reader)?;
    check_vm_id(&vm)?;
    let (doc, version) = s.service.baseline(&vm).await?;
    let audit: Vec<Value> = s
        .service
        .store
        .baseline_audit(&vm)
        .await?
        .into_iter()
        .map(|a| {
            json!({
                "version": a.version,
                "action": a.change.action.as_str(),
                "actor": a.change.actor,
                "at": a.change.at,
            })
        })
        .collect();
    ok(
        json!({"vmId": vm, "version": version, "baseline": doc.baseline, "learn": doc.learn, "audit": audit}),
    )
}

/// Pin request.
#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct PinRequest {
    /// The attestation whose components become the baseline (default: the
    /// latest).
    pub attestation_id: Option<i64>,
    /// Only if the baseline is still at this version (else 409).
    pub if_version: Option<i64>,
}

/// Pins the baseline to an attestation's components; auto-learn stops.
#[utoipa::path(post, path = "/v1/vms/{vm}/baseline/pin", tag = "baseline", security(("token" = [])), params(("vm" = String, Path, description = "VM id")), request_body = PinRequest, responses((status = 200, description = "pinned"), (status = 409, description = "the baseline changed meanwhile")))]
async fn pin_baseline(
    State(s): St,
    caller: Caller,
    Path(vm): Path<String>,
    body: Option<Json<PinRequest>>,
) -> ApiResult {
    caller.require(Role::Operator)?;
    check_vm_id(&vm)?;
    let req = body.map(|b| b.0).unwrap_or_default();
    let v = s
        .service
        .pin(&vm, req.attestation_id, &caller.name, req.if_version)
        .await?;
    ok(json!({"vmId": vm, "version": v}))
}

/// Asks the VM's next boot whose other checks pass to become its
/// baseline (after an accepted update). Audited.
#[utoipa::path(post, path = "/v1/vms/{vm}/baseline/relearn", tag = "baseline", security(("token" = [])), params(("vm" = String, Path, description = "VM id")), responses((status = 200, description = "relearn pending")))]
async fn relearn_baseline(State(s): St, caller: Caller, Path(vm): Path<String>) -> ApiResult {
    caller.require(Role::Operator)?;
    check_vm_id(&vm)?;
    let v = s.service.relearn(&vm, &caller.name).await?;
    ok(
        json!({"vmId": vm, "version": v, "learn": "pending: the next boot whose other checks pass becomes the baseline"}),
    )
}

/// Defender's recommendations for every registered VM.
#[utoipa::path(get, path = "/v1/security/recommendations", tag = "security", security(("token" = [])), responses((status = 200, description = "recommendations")))]
async fn get_recommendations(State(s): St, caller: Caller) -> ApiResult {
    caller.require(Role::Reader)?;
    ok(json!({ "value": s.service.recommendations().await? }))
}

/// Alert query.
#[derive(Deserialize, IntoParams)]
pub struct AlertQuery {
    /// Only this VM's.
    vm: Option<String>,
    /// Only in this state (active, resolved, dismissed).
    state: Option<String>,
}

/// Alerts.
#[utoipa::path(get, path = "/v1/security/alerts", tag = "security", security(("token" = [])), params(AlertQuery), responses((status = 200, description = "alerts")))]
async fn get_alerts(State(s): St, caller: Caller, Query(q): Query<AlertQuery>) -> ApiResult {
    caller.require(Role::Reader)?;
    if let Some(st) = &q.state {
        if !matches!(st.as_str(), "active" | "resolved" | "dismissed") {
            return Err(ApiError::bad_request(
                "state is one of active, resolved, dismissed",
            ));
        }
    }
    ok(json!({ "value": s.service.alerts(q.vm, q.state).await? }))
}

/// Dismisses an alert (its key, percent-encoded).
#[utoipa::path(post, path = "/v1/security/alerts/{key}/dismiss", tag = "security", security(("token" = [])), params(("key" = String, Path, description = "the alert's key")), responses((status = 200, description = "dismissed"), (status = 404, description = "no such alert")))]
async fn dismiss_alert(State(s): St, caller: Caller, Path(key): Path<String>) -> ApiResult {
    caller.require(Role::Operator)?;
    ok(s.service.dismiss(&key).await?)
}

/// A suppression rule: alerts matching every given field are dismissed as
/// they are raised.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// Alert kind (`attestation-failed`, `untrusted-kernel-module`).
    pub kind: Option<String>,
    /// Failure reason (`baseline-deviation`, `quote-not-from-vtpm`,
    /// `agent-unresponsive`, `secure-boot-off`).
    pub reason: Option<String>,
    /// VM ids.
    pub vm_ids: Option<Vec<String>>,
}

/// Suppression rules.
#[utoipa::path(get, path = "/v1/security/suppressions", tag = "security", security(("token" = [])), responses((status = 200, description = "rules")))]
async fn list_rules(State(s): St, caller: Caller) -> ApiResult {
    caller.require(Role::Reader)?;
    ok(json!({ "value": s.service.rules().await? }))
}

/// Adds or replaces a suppression rule; matching active alerts are
/// dismissed by it.
#[utoipa::path(put, path = "/v1/security/suppressions/{name}", tag = "security", security(("token" = [])), params(("name" = String, Path, description = "rule name")), request_body = Rule, responses((status = 200, description = "stored")))]
async fn put_rule(
    State(s): St,
    caller: Caller,
    Path(name): Path<String>,
    Json(r): Json<Rule>,
) -> ApiResult {
    caller.require(Role::Operator)?;
    let rule: SuppressionRule = serde_json::from_value(json!({
        "name": name,
        "kind": r.kind,
        "reason": r.reason,
        "vm_ids": r.vm_ids,
    }))
    .map_err(|e| ApiError::bad_request(format!("rule: {e}")))?;
    s.service.put_rule(&rule).await?;
    ok(rule)
}

/// Deletes a suppression rule.
#[utoipa::path(delete, path = "/v1/security/suppressions/{name}", tag = "security", security(("token" = [])), params(("name" = String, Path, description = "rule name")), responses((status = 200, description = "deleted"), (status = 404, description = "no such rule")))]
async fn delete_rule(State(s): St, caller: Caller, Path(name): Path<String>) -> ApiResult {
    caller.require(Role::Operator)?;
    if !s.service.store.delete_suppression_rule(&name).await? {
        return Err(ApiError::not_found(format!("no rule {name:?}")));
    }
    ok(json!({"deleted": name}))
}

/// Makes a new token-signing key current; the previous key stays in the
/// JWKS until the tokens it signed have expired.
#[utoipa::path(post, path = "/v1/keys/rotate", tag = "service", security(("token" = [])), responses((status = 200, description = "rotated")))]
async fn rotate_keys(State(s): St, caller: Caller) -> ApiResult {
    caller.require(Role::Admin)?;
    let kid = s.service.rotate_keys().await?;
    ok(json!({"kid": kid}))
}

/// A new API token.
#[derive(Deserialize, ToSchema)]
pub struct NewToken {
    /// A name for people (and audit trails).
    pub name: String,
    /// reader, operator or admin.
    pub role: String,
}

/// Creates an API token; the secret is shown once.
#[utoipa::path(post, path = "/v1/tokens", tag = "service", security(("token" = [])), request_body = NewToken, responses((status = 201, description = "created")))]
async fn create_token(
    State(s): St,
    caller: Caller,
    Json(t): Json<NewToken>,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let role: Role = t.role.parse().map_err(ApiError::bad_request)?;
    if t.name.is_empty() || t.name.len() > 128 {
        return Err(ApiError::bad_request("a token needs a name of 1-128 bytes"));
    }
    let (secret, rec) = new_token(&t.name, role, i64::try_from(now()).unwrap_or(0));
    s.service.store.put_api_token(&rec).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": t.name, "role": role.as_str(), "token": secret})),
    )
        .into_response())
}

/// API tokens (names and roles; never the secrets).
#[utoipa::path(get, path = "/v1/tokens", tag = "service", security(("token" = [])), responses((status = 200, description = "tokens")))]
async fn list_tokens(State(s): St, caller: Caller) -> ApiResult {
    caller.require(Role::Admin)?;
    let v: Vec<Value> = s
        .service
        .store
        .api_tokens()
        .await?
        .into_iter()
        .map(|t| json!({"name": t.name, "role": t.role.as_str(), "createdAt": t.created_at}))
        .collect();
    ok(json!({ "value": v }))
}
