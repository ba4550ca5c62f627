//! The portal: the web console `trustlaunch server` serves at `/`, on the
//! API's listener (and TLS).
//!
//! Server-rendered pages (maud: every value escaped unless a template
//! says otherwise, and none does), a stylesheet and htmx 2.0.11 (BSD
//! Zero-Clause, vendored under `assets/`) embedded in the binary: nothing
//! is fetched at run time, no script is inline, and the pages' Content
//! Security Policy says so (`script-src 'self'`).
//!
//! Where it sits: beside the REST API's handlers, above the same
//! application services. It reads through the control plane's typed
//! repository, the attestation service and the store's read queries, and
//! changes nothing itself: every change is a request to the REST API's own
//! router, in-process, as the signed-in caller ([`Ctx::call`]), so
//! validation, roles, audit and ARM's errors are the API's, and the
//! portal shows an error's `target` at the field it names.
//!
//! Sign-in takes an API token and keeps only its SHA-256 in a session,
//! stored in the database by the SHA-256 of its cookie (a restart keeps
//! it; servers sharing a database share it); the token is looked up again
//! on every page, so a revoked or expired token ends its sessions. The
//! session cookie is HttpOnly, SameSite=Strict, and `__Host-` + Secure over
//! TLS; every form carries the session's anti-forgery token, checked with
//! the request's Origin before anything else is read.

mod bridge;
mod form;
mod home;
mod images;
mod layout;
mod security;
mod session;
mod sets;
mod vms;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

pub use session::Sessions;

use crate::state::AppState;

pub(crate) use bridge::{ApiFailure, Ctx};
pub(crate) use form::Posted;
pub(crate) use layout::{page, Nav};
pub(crate) use session::Viewer;

/// The portal's routes, over `api` (the REST API's router, which its
/// changes go through).
pub fn router(app: Arc<AppState>, api: Router) -> Router {
    let ctx = Ctx::new(app.clone(), api);
    Router::new()
        .route("/", get(home::show))
        .route(
            "/portal/signin",
            get(session::signin_page).post(session::signin),
        )
        .route("/portal/signout", post(session::signout))
        .route("/portal/assets/{file}", get(asset))
        .route("/portal/vms", get(vms::list))
        .route("/portal/vms/new", get(vms::new_form).post(vms::create))
        .route("/portal/vms/{vm}", get(vms::overview))
        .route("/portal/vms/{vm}/integrity", get(vms::integrity))
        .route(
            "/portal/vms/{vm}/baseline",
            get(vms::baseline).post(vms::baseline_action),
        )
        .route("/portal/vms/{vm}/console", get(vms::console))
        .route("/portal/vms/{vm}/power", post(vms::power))
        .route("/portal/scale-sets", get(sets::list))
        .route("/portal/scale-sets/{rg}/{name}", get(sets::overview))
        .route(
            "/portal/scale-sets/{rg}/{name}/size",
            get(sets::size).post(sets::resize),
        )
        .route(
            "/portal/scale-sets/{rg}/{name}/os",
            get(sets::os).post(sets::change_image),
        )
        .route(
            "/portal/scale-sets/{rg}/{name}/configuration",
            get(sets::configuration).post(sets::configure),
        )
        .route(
            "/portal/scale-sets/{rg}/{name}/extensions",
            get(sets::extensions).post(sets::change_extensions),
        )
        .route(
            "/portal/scale-sets/{rg}/{name}/instances",
            get(sets::instances).post(sets::instance_action),
        )
        .route(
            "/portal/scale-sets/{rg}/{name}/upgrade-policy",
            get(sets::upgrade_policy).post(sets::set_upgrade_policy),
        )
        .route("/portal/operations/{id}", get(sets::operation))
        .route("/portal/images", get(images::list))
        .route("/portal/security", get(security::overview))
        .route("/portal/security/alerts/dismiss", post(security::dismiss))
        .route("/portal/security/rules", post(security::rules))
        .route(
            "/portal/tokens",
            get(security::tokens).post(security::token_action),
        )
        .route("/portal/{*rest}", axum::routing::any(no_page))
        .layer(middleware::from_fn(headers))
        .with_state(ctx)
}

/// What every portal answer carries: its Content Security Policy (scripts
/// and styles from this origin only, no inline script, no framing, forms
/// posting here only), no sniffing, no referrer beyond this origin, and
/// pages never cached.
///
/// `Server-Timing: app;dur=…` says how long the server took to answer
/// (the portal's render-time figures read it).
async fn headers(req: Request, next: Next) -> Response {
    let is_asset = req.uri().path().starts_with("/portal/assets/");
    let t0 = std::time::Instant::now();
    let mut resp = next.run(req).await;
    let took = t0.elapsed().as_secs_f64() * 1000.0;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("app;dur={took:.3}")) {
        h.insert("server-timing", v);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // same-origin, not no-referrer: with no-referrer a browser sends
    // `Origin: null` on its own forms, which the Origin check refuses.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !is_asset {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// A portal path that is no page: an HTML answer, not the API's JSON.
async fn no_page(uri: axum::http::Uri) -> Response {
    layout::error_page(
        &format!("There is no page at {}.", uri.path()),
        StatusCode::NOT_FOUND,
    )
}

/// The embedded assets, by name.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "portal.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/portal.css"),
    ),
    (
        "portal.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/portal.js"),
    ),
    (
        "htmx-2.0.11.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/htmx-2.0.11.min.js"),
    ),
    (
        "htmx-LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("assets/htmx-LICENSE"),
    ),
];

async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, kind, body)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

/// The path of a VM's page.
pub(crate) fn vm_href(vm: &str) -> String {
    format!("/portal/vms/{}", enc(vm))
}

/// The path of a scale set's page (`tail`: "" or "/size", ...).
pub(crate) fn set_href(rg: &str, name: &str, tail: &str) -> String {
    format!("/portal/scale-sets/{}/{}{tail}", enc(rg), enc(name))
}

/// `s` percent-encoded as one path segment or query value.
pub(crate) fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The state handlers share.
pub(crate) type St = State<Ctx>;
