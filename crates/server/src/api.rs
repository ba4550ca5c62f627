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

use crate::auth::{Admin, Operator, Reader};
use crate::error::{check_vm_id, ApiError};
use crate::metrics::Gauges;
use crate::model::{unhex, VmRegistration};
use crate::service::{now, Service};

/// The largest body of an evidence-carrying request: the attestation
/// channel's frame bound (a 16 MiB event log in hex, and the rest).
pub const MAX_EVIDENCE_BODY: usize = trustlaunch_protocol::MAX_FRAME;

/// The largest body of every other request (registrations carry a key
/// template and a predicted baseline: tens of KiB).
pub const MAX_BODY: usize = 1 << 20;

pub use crate::state::{AppState, GAUGE_TTL};

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
    components(schemas(VmRegistration, crate::model::Template, crate::model::ManagedBy, ChallengeRequest, crate::challenge::Challenge, crate::challenge::Credential, SubmitEvidence, AppraiseRequest, PinRequest, VersionRequest, NewToken, Rule)),
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
    let api = router
        .fallback(no_route)
        .method_not_allowed_fallback(no_method)
        .layer(middleware::from_fn(arm_errors))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .with_state(state.clone());
    // The portal's pages beside the API, on the same listener; its
    // changes are requests to `api` in-process, as the signed-in caller.
    crate::portal::router(state, api.clone()).merge(api)
}

/// A path the API does not serve: ARM's error envelope, as for every
/// other error, so that a client (Azure's SDKs among them) reads a code
/// and a message rather than an empty body.
async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!(
        "No API at {method} {}: see /openapi.json for what the server serves.",
        uri.path()
    ))
}

/// A path served, but not with this method (405).
async fn no_method(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::method_not_allowed(format!(
        "{} does not take {method}: see /openapi.json for its methods.",
        uri.path()
    ))
}

/// The longest plain-text error body carried into an ARM envelope.
const MAX_REJECTION_TEXT: usize = 4096;

/// Every error answers in ARM's envelope (`{"error": {"code",
/// "message"}}`): the framework's own rejections (a body that is not the
/// JSON a route takes, a bad query, a body over the limit, a timeout)
/// come as plain text, and are wrapped here with a code for their status.
async fn arm_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = match axum::body::to_bytes(body, MAX_REJECTION_TEXT).await {
        Ok(b) if !b.is_empty() => String::from_utf8_lossy(&b).trim().to_owned(),
        _ => status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_owned(),
    };
    let mut out = ApiError::from_status(status, text).into_response();
    // Keep what the framework said besides the body (Allow, Retry-After).
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// The OpenAPI document the server serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().1
}

fn routes() -> (axum::Router<Arc<AppState>>, utoipa::openapi::OpenApi) {
    use axum::extract::DefaultBodyLimit;
    use tower_http::limit::RequestBodyLimitLayer;
    // Evidence may be as large as the channel's frames; everything else is
    // small. The limit is checked against Content-Length before a body is
    // read, and the role before that (the auth extractors run first).
    let evidence = OpenApiRouter::<Arc<AppState>>::new()
        .routes(routes!(submit_attestation, history))
        .routes(routes!(appraise_stateless))
        .layer(DefaultBodyLimit::max(MAX_EVIDENCE_BODY))
        .layer(RequestBodyLimitLayer::new(MAX_EVIDENCE_BODY));
    let base = OpenApiRouter::<Arc<AppState>>::with_openapi(ApiDoc::openapi());
    let (router, doc) =
        crate::groups::routes(crate::fleet_vms::routes(crate::fleet_api::routes(base)))
            .routes(routes!(healthz))
            .routes(routes!(metrics))
            .routes(routes!(jwks))
            .routes(routes!(openid_configuration))
            .routes(routes!(list_vms))
            .routes(routes!(get_vm, put_vm))
            .routes(routes!(issue_challenge))
            .routes(routes!(latest))
            .routes(routes!(attest_now))
            .routes(routes!(get_baseline))
            .routes(routes!(approve_baseline))
            .routes(routes!(pin_baseline))
            .routes(routes!(relearn_baseline))
            .routes(routes!(get_recommendations))
            .routes(routes!(get_alerts))
            .routes(routes!(dismiss_alert))
            .routes(routes!(list_rules))
            .routes(routes!(put_rule, delete_rule))
            .routes(routes!(rotate_keys))
            .routes(routes!(create_token, list_tokens))
            .routes(routes!(revoke_token))
            .routes(routes!(audit_log))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .layer(RequestBodyLimitLayer::new(MAX_BODY))
            .merge(evidence)
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

/// Prometheus metrics (text format 0.0.4). Needs a reader token unless
/// the server was started with `--metrics-public`; the gauges read from
/// the store are at most 10 s old.
#[utoipa::path(get, path = "/metrics", tag = "service", security(("token" = [])), responses((status = 200, description = "text exposition", content_type = "text/plain")))]
async fn metrics(State(s): St, parts: axum::http::request::Parts) -> Result<Response, ApiError> {
    if !s.metrics_public {
        let mut parts = parts;
        <Reader as axum::extract::FromRequestParts<Arc<AppState>>>::from_request_parts(
            &mut parts, &s,
        )
        .await?;
    }
    let g = {
        let mut cached = s.gauges.lock().await;
        match cached.as_ref() {
            Some((at, g)) if at.elapsed() < GAUGE_TTL => g.clone(),
            _ => {
                let g = read_gauges(&s.service).await?;
                *cached = Some((std::time::Instant::now(), g.clone()));
                g
            }
        }
    };
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.service.metrics.render(&g),
    )
        .into_response())
}

async fn read_gauges(service: &Service) -> Result<Gauges, ApiError> {
    let mut g = Gauges::default();
    for a in service.alerts(None, None).await? {
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
    for (health, n) in service.store.vm_health_counts().await? {
        g.vms.insert(health, n);
    }
    Ok(g)
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
        "audience": s.service.config.audience,
        "claims_supported": ["secureboot", "x-ms-attestation-type", "x-ms-azurevm-attested-pcrs", "x-ms-azurevm-dbvalidated", "x-ms-azurevm-dbxvalidated", "x-ms-azurevm-default-securebootkeysvalidated", "x-ms-azurevm-bootdebug-enabled", "x-ms-azurevm-kerneldebug-enabled", "x-ms-azurevm-testsigning-enabled", "x-ms-azurevm-ostype", "x-ms-azurevm-osdistro", "x-ms-azurevm-vmid"]
    }))
}

/// Registered VMs with their attestation health.
#[utoipa::path(get, path = "/v1/vms", tag = "attestation", security(("token" = [])), responses((status = 200, description = "VMs")))]
async fn list_vms(State(s): St, _caller: Reader) -> ApiResult {
    let mut out = Vec::new();
    for vm in s.service.store.list_vms().await? {
        out.push(s.service.vm_summary(&vm.vm_id).await?);
    }
    ok(json!({ "value": out }))
}

/// One VM: registration, enrollment, attestation health, active alerts.
#[utoipa::path(get, path = "/v1/vms/{vm}", tag = "attestation", security(("token" = [])), params(("vm" = String, Path, description = "VM id")), responses((status = 200, description = "the VM"), (status = 404, description = "not registered")))]
async fn get_vm(State(s): St, _caller: Reader, Path(vm): Path<String>) -> ApiResult {
    ok(s.service.vm_summary(&vm).await?)
}

/// Registers a VM another host runs, as that host knows it (the EK it
/// created, its security profile, the template's Secure Boot databases,
/// the baseline predicted from its image). The VMs this platform runs are
/// registered by the platform itself and are read-only here (403).
/// Audited with the caller.
#[utoipa::path(put, path = "/v1/vms/{vm}", tag = "attestation", security(("token" = [])), params(("vm" = String, Path, description = "VM id")), request_body = VmRegistration, responses((status = 200, description = "registered"), (status = 403, description = "a VM the platform runs")))]
async fn put_vm(
    State(s): St,
    caller: Operator,
    Path(vm): Path<String>,
    Json(reg): Json<VmRegistration>,
) -> ApiResult {
    s.service.register(&vm, &reg, &caller).await?;
    ok(s.service.vm_summary(&vm).await?)
}

/// A challenge request.
#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChallengeRequest {
    /// The AK (TPMT_PUBLIC, hex) to make the credential for; by default
    /// the VM's enrolled AK, if it has one.
    pub ak_public: Option<String>,
}

/// Issues a challenge to a VM: a single-use nonce (valid 5 minutes by
/// default) and, for the AK named (or the enrolled one), a credential
/// made under the EK the platform recorded for the VM. Answer it with
/// `POST /v1/vms/{vm}/attestations`.
#[utoipa::path(post, path = "/v1/vms/{vm}/challenges", tag = "attestation", security(("token" = [])), params(("vm" = String, Path, description = "VM id")), request_body = ChallengeRequest, responses((status = 201, description = "issued", body = crate::challenge::Challenge), (status = 404, description = "not registered")))]
async fn issue_challenge(
    State(s): St,
    caller: Operator,
    Path(vm): Path<String>,
    body: Option<Json<ChallengeRequest>>,
) -> Result<Response, ApiError> {
    let req = body.map(|b| b.0).unwrap_or_default();
    let ak = req
        .ak_public
        .as_deref()
        .map(|h| unhex(h).ok_or_else(|| ApiError::bad_request("akPublic is not hex")))
        .transpose()?;
    let choice = match ak.as_deref() {
        Some(ak) => crate::challenge::AkChoice::Named(ak),
        None => crate::challenge::AkChoice::Enrolled,
    };
    let c = s.service.challenge(&vm, choice, &caller).await?;
    Ok((StatusCode::CREATED, Json(c)).into_response())
}

/// The answer to a challenge: the agent's evidence and the secret its
/// TPM recovered from the challenge's credential.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubmitEvidence {
    /// The challenge answered.
    pub challenge_id: String,
    /// TPM2_ActivateCredential's output for the challenge's credential
    /// (hex); may be left out for a VM's enrolled AK.
    pub activated_secret: Option<String>,
    /// The agent's evidence (`trustlaunch-protocol`'s Evidence), quoting
    /// the challenge's nonce.
    #[schema(value_type = Object)]
    pub evidence: Evidence,
}

/// Records the answer to a challenge: appraisal, enrollment, baseline
/// learning or proposal, token, boot report, alerts. Idempotent per
/// challenge: a retry returns the first result.
#[utoipa::path(post, path = "/v1/vms/{vm}/attestations", tag = "attestation", security(("token" = [])), params(("vm" = String, Path, description = "VM id")), request_body = SubmitEvidence, responses((status = 201, description = "recorded"), (status = 200, description = "already recorded (retry)"), (status = 404, description = "no such challenge for this VM"), (status = 409, description = "challenge already answered"), (status = 410, description = "challenge expired")))]
async fn submit_attestation(
    State(s): St,
    _caller: Operator,
    Path(vm): Path<String>,
    Json(req): Json<SubmitEvidence>,
) -> Result<Response, ApiError> {
    let secret = req
        .activated_secret
        .as_deref()
        .map(|h| {
            unhex(h).filter(|b| b.len() <= 64).ok_or_else(|| {
                ApiError::bad_request("activatedSecret is not hex of at most 64 bytes")
            })
        })
        .transpose()?;
    let r = s
        .service
        .attest(&vm, &req.challenge_id, &req.evidence, secret.as_deref())
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
    _caller: Reader,
    Path(vm): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult {
    check_vm_id(&vm)?;
    let limit = q.limit.unwrap_or(20).min(1000);
    let rows = s.service.store.history(&vm, limit).await?;
    let value: Vec<Value> = rows.into_iter().map(record_json).collect();
    ok(json!({ "value": value }))
}

/// A VM's latest attestation with its token and boot report.
#[utoipa::path(get, path = "/v1/vms/{vm}/attestations/latest", tag = "attestation", security(("token" = [])), params(("vm" = String, Path, description = "VM id")), responses((status = 200, description = "latest"), (status = 404, description = "never attested")))]
async fn latest(State(s): St, _caller: Reader, Path(vm): Path<String>) -> ApiResult {
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
    _caller: Operator,
    Path(vm): Path<String>,
) -> Result<Response, ApiError> {
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
    /// its freshness (nothing is recorded, no token is issued).
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
    _caller: Operator,
    Json(req): Json<AppraiseRequest>,
) -> ApiResult {
    check_vm_id(&req.vm_id)?;
    let nonce = parse_nonce(&req.nonce)?;
    let a = s
        .service
        .appraise_only(&req.vm_id, &req.evidence, &nonce)
        .await?;
    ok(a)
}

/// A VM's baseline, its state (`predicted`, `approved`,
/// `pending-approval`, `awaiting-first-boot`, `relearn-requested`), its
/// version, any pending (re)learn or proposal, and its audit trail.
#[utoipa::path(get, path = "/v1/vms/{vm}/baseline", tag = "baseline", security(("token" = [])), params(("vm" = String, Path, description = "VM id")), responses((status = 200, description = "baseline")))]
async fn get_baseline(State(s): St, _caller: Reader, Path(vm): Path<String>) -> ApiResult {
    check_vm_id(&vm)?;
    let (doc, version) = match s.service.baseline(&vm).await {
        Ok(b) => b,
        // Registered, nothing yet: the first boot will propose one.
        Err(e)
            if e.status == StatusCode::NOT_FOUND
                && s.service.store.get_vm(&vm).await?.is_some() =>
        {
            (
                crate::model::BaselineDoc {
                    baseline: None,
                    learn: None,
                    pending: None,
                },
                0,
            )
        }
        Err(e) => return Err(e),
    };
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
    ok(json!({
        "vmId": vm,
        "state": crate::baselines::doc_state(&doc),
        "version": version,
        "baseline": doc.baseline,
        "learn": doc.learn,
        "pending": doc.pending,
        "audit": audit,
    }))
}

/// A version guard.
#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VersionRequest {
    /// Only if the baseline is still at this version (else 409).
    pub if_version: Option<i64>,
}

/// Approves the components the VM's first boot proposed as its baseline
/// (a VM whose image predicted none is unhealthy until this is done).
/// Audited with the caller.
#[utoipa::path(post, path = "/v1/vms/{vm}/baseline/approve", tag = "baseline", security(("token" = [])), params(("vm" = String, Path, description = "VM id")), request_body = VersionRequest, responses((status = 200, description = "approved"), (status = 409, description = "nothing awaits approval, or the baseline changed meanwhile")))]
async fn approve_baseline(
    State(s): St,
    caller: Operator,
    Path(vm): Path<String>,
    body: Option<Json<VersionRequest>>,
) -> ApiResult {
    check_vm_id(&vm)?;
    let req = body.map(|b| b.0).unwrap_or_default();
    let v = s.service.approve(&vm, &caller, req.if_version).await?;
    ok(json!({"vmId": vm, "version": v, "state": "approved"}))
}

/// Pin request.
#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PinRequest {
    /// The attestation whose components become the baseline (default: the
    /// latest).
    pub attestation_id: Option<i64>,
    /// Only if the baseline is still at this version (else 409).
    pub if_version: Option<i64>,
}

/// Pins the baseline to an attestation's components; learning stops.
/// Audited with the caller.
#[utoipa::path(post, path = "/v1/vms/{vm}/baseline/pin", tag = "baseline", security(("token" = [])), params(("vm" = String, Path, description = "VM id")), request_body = PinRequest, responses((status = 200, description = "pinned"), (status = 409, description = "the baseline changed meanwhile")))]
async fn pin_baseline(
    State(s): St,
    caller: Operator,
    Path(vm): Path<String>,
    body: Option<Json<PinRequest>>,
) -> ApiResult {
    check_vm_id(&vm)?;
    let req = body.map(|b| b.0).unwrap_or_default();
    let v = s
        .service
        .pin(&vm, req.attestation_id, &caller, req.if_version)
        .await?;
    ok(json!({"vmId": vm, "version": v}))
}

/// Asks the VM's next boot whose other checks pass to become its
/// baseline (after an accepted update), within 24 h by default. Audited
/// with the caller.
#[utoipa::path(post, path = "/v1/vms/{vm}/baseline/relearn", tag = "baseline", security(("token" = [])), params(("vm" = String, Path, description = "VM id")), responses((status = 200, description = "relearn pending")))]
async fn relearn_baseline(State(s): St, caller: Operator, Path(vm): Path<String>) -> ApiResult {
    check_vm_id(&vm)?;
    let (v, until) = s.service.relearn(&vm, &caller).await?;
    ok(json!({
        "vmId": vm,
        "version": v,
        "until": until,
        "learn": "pending: the next boot whose other checks pass becomes the baseline",
    }))
}

/// Defender's recommendations for every registered VM, and for the
/// control plane's VMs and scale sets whose Guest Attestation extension
/// waits on an agent their image lacks.
#[utoipa::path(get, path = "/v1/security/recommendations", tag = "security", security(("token" = [])), responses((status = 200, description = "recommendations")))]
async fn get_recommendations(State(s): St, _caller: Reader) -> ApiResult {
    let mut value = s.service.recommendations().await?;
    if let Ok(c) = crate::arm::control(&s) {
        value.extend(crate::fleet_api::image_recommendations(c).await?);
    }
    ok(json!({ "value": value }))
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
async fn get_alerts(State(s): St, _caller: Reader, Query(q): Query<AlertQuery>) -> ApiResult {
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
async fn dismiss_alert(State(s): St, caller: Operator, Path(key): Path<String>) -> ApiResult {
    ok(s.service.dismiss(&key, &caller).await?)
}

/// A suppression rule: alerts matching every given field are dismissed as
/// they are raised. At least one field is required; a rule without
/// `vmIds` reaches every VM and needs an admin.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Alert kind (`attestation-failed`, `untrusted-kernel-module`).
    pub kind: Option<String>,
    /// Failure reason (`baseline-deviation`, `quote-not-from-vtpm`,
    /// `agent-unresponsive`, `secure-boot-off`, `baseline-not-approved`).
    pub reason: Option<String>,
    /// VM ids.
    pub vm_ids: Option<Vec<String>>,
    /// The rule stops applying this many seconds from now.
    pub expires_in: Option<u64>,
}

/// Suppression rules, with their authors.
#[utoipa::path(get, path = "/v1/security/suppressions", tag = "security", security(("token" = [])), responses((status = 200, description = "rules")))]
async fn list_rules(State(s): St, _caller: Reader) -> ApiResult {
    ok(json!({ "value": s.service.rules().await? }))
}

/// Adds or replaces a suppression rule; matching active alerts are
/// dismissed by it. Audited with the caller.
#[utoipa::path(put, path = "/v1/security/suppressions/{name}", tag = "security", security(("token" = [])), params(("name" = String, Path, description = "rule name")), request_body = Rule, responses((status = 200, description = "stored"), (status = 400, description = "no selector"), (status = 403, description = "a fleet-wide rule by a non-admin")))]
async fn put_rule(
    State(s): St,
    caller: Operator,
    Path(name): Path<String>,
    Json(r): Json<Rule>,
) -> ApiResult {
    let expires_at = r.expires_in.map(|e| now().saturating_add(e));
    let rule: SuppressionRule = serde_json::from_value(json!({
        "name": name,
        "kind": r.kind,
        "reason": r.reason,
        "vm_ids": r.vm_ids,
        "expires_at": expires_at,
    }))
    .map_err(|e| ApiError::bad_request(format!("rule: {e}")))?;
    s.service.put_rule(&rule, &caller).await?;
    let stored = s
        .service
        .rules()
        .await?
        .into_iter()
        .find(|x| x.name == rule.name);
    ok(stored.unwrap_or(rule))
}

/// Deletes a suppression rule. Audited with the caller.
#[utoipa::path(delete, path = "/v1/security/suppressions/{name}", tag = "security", security(("token" = [])), params(("name" = String, Path, description = "rule name")), responses((status = 200, description = "deleted"), (status = 404, description = "no such rule")))]
async fn delete_rule(State(s): St, caller: Operator, Path(name): Path<String>) -> ApiResult {
    s.service.delete_rule(&name, &caller).await?;
    ok(json!({"deleted": name}))
}

/// Makes a new token-signing key current; the previous key stays in the
/// JWKS until the tokens it signed have expired.
#[utoipa::path(post, path = "/v1/keys/rotate", tag = "service", security(("token" = [])), responses((status = 200, description = "rotated")))]
async fn rotate_keys(State(s): St, _caller: Admin) -> ApiResult {
    let kid = s.service.rotate_keys().await?;
    ok(json!({"kid": kid}))
}

/// A new API token.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewToken {
    /// A name for people (and audit trails).
    pub name: String,
    /// reader, operator or admin.
    pub role: String,
    /// It stops working this many seconds from now (default: never).
    pub expires_in: Option<u64>,
}

fn token_json(t: &trustlaunch_store::ApiTokenRecord) -> Value {
    json!({
        "id": t.id(),
        "name": t.name,
        "role": t.role.as_str(),
        "createdAt": t.created_at,
        "expiresAt": t.expires_at,
        "revokedAt": t.revoked_at,
        "lastUsedAt": t.last_used_at,
    })
}

/// Creates an API token; the secret is shown once. Audited with the
/// caller.
#[utoipa::path(post, path = "/v1/tokens", tag = "service", security(("token" = [])), request_body = NewToken, responses((status = 201, description = "created")))]
async fn create_token(
    State(s): St,
    caller: Admin,
    Json(t): Json<NewToken>,
) -> Result<Response, ApiError> {
    let role: Role = t.role.parse().map_err(ApiError::bad_request)?;
    let made = s
        .service
        .create_token(
            &t.name,
            role,
            t.expires_in.map(std::time::Duration::from_secs),
            &caller,
        )
        .await?;
    let mut body = token_json(&made.record);
    body["token"] = Value::String(made.secret);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// API tokens: ids, names, roles, expiry, revocation, last use (never
/// the secrets).
#[utoipa::path(get, path = "/v1/tokens", tag = "service", security(("token" = [])), responses((status = 200, description = "tokens")))]
async fn list_tokens(State(s): St, _caller: Admin) -> ApiResult {
    let v: Vec<Value> = s
        .service
        .store
        .api_tokens()
        .await?
        .iter()
        .map(token_json)
        .collect();
    ok(json!({ "value": v }))
}

/// Revokes an API token by its id; it stops working at once on this
/// server and within 5 s on others sharing the database. Audited with the
/// caller.
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "service", security(("token" = [])), params(("id" = String, Path, description = "the token's id (12 hex digits)")), responses((status = 200, description = "revoked"), (status = 404, description = "no such token, or revoked already")))]
async fn revoke_token(State(s): St, caller: Admin, Path(id): Path<String>) -> ApiResult {
    s.service.revoke_token(&id, &caller).await?;
    s.tokens.clear();
    ok(json!({"revoked": id.to_ascii_lowercase()}))
}

/// Audit log query.
#[derive(Deserialize, IntoParams)]
pub struct AuditQuery {
    /// Only entries about this target (`vm/<id>`, `suppression/<name>`,
    /// `token/<id>`).
    target: Option<String>,
    /// At most this many (default 100, at most 10,000).
    limit: Option<u32>,
}

/// Who changed a registration, a suppression rule or a token, and when,
/// newest first.
#[utoipa::path(get, path = "/v1/audit", tag = "service", security(("token" = [])), params(AuditQuery), responses((status = 200, description = "entries")))]
async fn audit_log(State(s): St, _caller: Admin, Query(q): Query<AuditQuery>) -> ApiResult {
    let v: Vec<Value> = s
        .service
        .audit_log(q.target.as_deref(), q.limit.unwrap_or(100))
        .await?
        .into_iter()
        .map(|e| {
            json!({
                "id": e.id,
                "at": e.entry.at,
                "actor": e.entry.actor,
                "action": e.entry.action,
                "target": e.entry.target,
                "detail": e.entry.detail,
                "deliveries": e.entry.deliveries,
            })
        })
        .collect();
    ok(json!({ "value": v }))
}
