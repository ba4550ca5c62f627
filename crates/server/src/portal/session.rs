//! Portal sessions: sign-in with an API token, the session cookie, who is
//! looking at a page ([`Viewer`]), sign-out.

use axum::extract::State;
use std::time::Duration;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use maud::html;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use trustlaunch_store::{Role, SessionRecord, Store};

use super::form::{same_origin, Fields};
use super::layout::bare_page;
use super::{Ctx, St};
use crate::caller::Caller;
use crate::clock::now_i64;
use crate::error::ApiError;

/// A session ends after this long without a page.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after sign-in, used or not.
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// The most live sessions at once (expired ones are dropped first).
const MAX_SESSIONS: u64 = 10_000;

/// A message shown once, on the next page.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Flash {
    /// It reports a success (else a failure).
    pub ok: bool,
    /// What to say.
    pub text: String,
}

/// The portal's sessions, kept in the store (`trustlaunch_store`'s
/// `portal_sessions`: a restart keeps them, servers sharing a database
/// share them), by the SHA-256 of their cookie's value.
pub struct Sessions {
    store: Store,
}

fn random_b64() -> String {
    let mut raw = [0u8; 32];
    OsRng.fill_bytes(&mut raw);
    URL_SAFE_NO_PAD.encode(raw)
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// A live session as a page reads it: its token's digest, its
/// anti-forgery token and the message left for this page.
type Live = ([u8; 32], String, Option<Flash>);

impl Sessions {
    /// The sessions of `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Starts a session for the token whose digest is `token_sha`:
    /// returns the cookie's value, or `None` when there are
    /// [`MAX_SESSIONS`] live ones.
    async fn start(&self, token_sha: [u8; 32]) -> Result<Option<String>, ApiError> {
        let now = now_i64();
        if self
            .store
            .purge_sessions(now, secs(IDLE), secs(LIFETIME))
            .await?
            >= MAX_SESSIONS
        {
            return Ok(None);
        }
        let id = random_b64();
        self.store
            .put_session(
                &key(&id),
                &SessionRecord {
                    token_sha256: token_sha,
                    csrf: random_b64(),
                    created_at: now,
                    seen_at: now,
                    flash: None,
                },
            )
            .await?;
        Ok(Some(id))
    }

    /// The live session of cookie value `id`, touched, its message taken.
    async fn touch(&self, id: &str) -> Result<Option<Live>, ApiError> {
        let s = self
            .store
            .session(&key(id), now_i64(), secs(IDLE), secs(LIFETIME))
            .await?;
        Ok(s.map(|s| {
            let flash = s.flash.and_then(|f| serde_json::from_str(&f).ok());
            (s.token_sha256, s.csrf, flash)
        }))
    }

    /// Leaves a message for the session's next page.
    pub async fn flash(&self, id: &str, flash: Flash) {
        let Ok(text) = serde_json::to_string(&flash) else {
            return;
        };
        if let Err(e) = self.store.set_session_flash(&key(id), &text).await {
            tracing::warn!("portal: a message for the next page was lost: {e}");
        }
    }

    /// Ends a session.
    async fn end(&self, id: &str) -> Result<(), ApiError> {
        self.store.end_session(&key(id)).await?;
        Ok(())
    }
}

/// The session cookie's name: with TLS, `__Host-` (the browser then keeps
/// it only if it is Secure, for this host and path `/`).
pub fn cookie_name(tls: bool) -> &'static str {
    if tls {
        "__Host-tl_session"
    } else {
        "tl_session"
    }
}

fn set_cookie(tls: bool, value: &str, max_age: u64) -> String {
    format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        cookie_name(tls),
        if tls { "; Secure" } else { "" }
    )
}

/// The session cookie's value in a request's head.
pub fn cookie(headers: &HeaderMap, tls: bool) -> Option<String> {
    let name = cookie_name(tls);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 64)
}

/// Who is looking at a page: the session's caller (its token looked up
/// again), the session's anti-forgery token, and a message left for it.
#[derive(Clone, Debug)]
pub struct Viewer {
    /// The caller, as the API knows it.
    pub caller: Caller,
    /// The anti-forgery token forms carry.
    pub csrf: String,
    /// The session cookie's value (to leave a message for the next page).
    pub session: String,
    /// The message left for this page.
    pub flash: Option<Flash>,
}

impl Viewer {
    /// The caller has at least `role` (what pages offer; the API decides).
    pub fn can(&self, role: Role) -> bool {
        self.caller.role >= role
    }
}

impl FromRequestParts<Ctx> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, ctx: &Ctx) -> Result<Self, Self::Rejection> {
        let to_signin = |why: Option<&str>| {
            let next = parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            let mut url = format!("/portal/signin?next={}", super::enc(&next));
            if let Some(why) = why {
                url.push_str("&why=");
                url.push_str(why);
            }
            Redirect::to(&url).into_response()
        };
        let tls = ctx.app.tls;
        let Some(id) = cookie(&parts.headers, tls) else {
            return Err(to_signin(None));
        };
        let (sha, csrf, flash) = match ctx.app.sessions.touch(&id).await {
            Ok(Some(live)) => live,
            Ok(None) => return Err(to_signin(Some("expired"))),
            Err(e) => return Err(super::layout::error_page(&e.message, e.status)),
        };
        match ctx
            .app
            .tokens
            .lookup_sha(&ctx.app.service.store, &sha)
            .await
        {
            Ok(caller) => Ok(Viewer {
                caller,
                csrf,
                session: id,
                flash,
            }),
            Err(e) if e.status == StatusCode::UNAUTHORIZED => {
                if let Err(e) = ctx.app.sessions.end(&id).await {
                    tracing::warn!("portal: a session of a revoked token was not ended: {e}");
                }
                Err(to_signin(Some("token")))
            }
            Err(e) => Err(super::layout::error_page(&e.message, e.status)),
        }
    }
}

/// The sign-in page's query.
#[derive(Deserialize, Default)]
pub struct SigninQuery {
    next: Option<String>,
    why: Option<String>,
}

/// Only a path of this server is a place to go back to.
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.contains('\\')
                && p.len() <= 2048 =>
        {
            p.to_owned()
        }
        _ => "/".to_owned(),
    }
}

fn signin_form(next: &str, message: Option<&str>, status: StatusCode) -> Response {
    let body = html! {
        main.signin {
            h1 { "Sign in to trustlaunch" }
            @if let Some(m) = message {
                p.error role="alert" id="signin-error" { (m) }
            }
            form method="post" action="/portal/signin" {
                input type="hidden" name="next" value=(next);
                label for="token" { "API token" }
                input id="token" name="token" type="password" autocomplete="off" required
                    aria-describedby="token-help";
                p.help id="token-help" {
                    "An API token (" code { "tl_…" } ") from " code { "trustlaunch token create" }
                    " or the admin token file. Its role decides what you may change."
                }
                button type="submit" id="signin" { "Sign in" }
            }
        }
    };
    let mut resp = bare_page("Sign in", body);
    *resp.status_mut() = status;
    resp
}

/// The sign-in page.
pub async fn signin_page(Query(q): Query<SigninQuery>) -> Response {
    let message = match q.why.as_deref() {
        Some("expired") => Some("Your session has ended: sign in again."),
        Some("token") => Some("Your API token is no longer valid (revoked or expired)."),
        Some("out") => Some("Signed out."),
        _ => None,
    };
    signin_form(&local_path(q.next.as_deref()), message, StatusCode::OK)
}

/// Signs in: the token is checked as the API checks it, then a session
/// starts. A cross-site form cannot sign a browser in (Origin).
pub async fn signin(State(ctx): St, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if !same_origin(&headers) {
        return super::layout::error_page(
            "Sign-in from another site is refused.",
            StatusCode::FORBIDDEN,
        );
    }
    let Ok(fields) = Fields::parse(&body) else {
        return signin_form(
            "/",
            Some("The form could not be read."),
            StatusCode::BAD_REQUEST,
        );
    };
    let next = local_path(fields.get("next"));
    let token = fields.get("token").unwrap_or_default().trim();
    if token.is_empty() || token.len() > 256 {
        return signin_form(&next, Some("Enter an API token."), StatusCode::BAD_REQUEST);
    }
    let sha: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let caller = match ctx
        .app
        .tokens
        .lookup_sha(&ctx.app.service.store, &sha)
        .await
    {
        Ok(c) => c,
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            tracing::info!("portal: sign-in refused: {}", e.message);
            return signin_form(
                &next,
                Some("That token is not valid (unknown, revoked or expired)."),
                StatusCode::UNAUTHORIZED,
            );
        }
        Err(e) => return super::layout::error_page(&e.message, e.status),
    };
    let id = match ctx.app.sessions.start(sha).await {
        Ok(Some(id)) => id,
        Ok(None) => {
            return super::layout::error_page(
                "Too many sessions: try again in a few minutes.",
                StatusCode::SERVICE_UNAVAILABLE,
            )
        }
        Err(e) => return super::layout::error_page(&e.message, e.status),
    };
    tracing::info!("portal: {} signed in", caller.actor());
    let mut resp = Redirect::to(&next).into_response();
    if let Ok(v) = set_cookie(ctx.app.tls, &id, LIFETIME.as_secs()).parse() {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// Signs out (a form with the anti-forgery token: no other site can sign
/// a browser out).
pub async fn signout(State(ctx): St, posted: super::Posted) -> Response {
    if let Err(e) = ctx.app.sessions.end(&posted.viewer.session).await {
        return super::layout::error_page(&e.message, e.status);
    }
    let mut resp = Redirect::to("/portal/signin?why=out").into_response();
    if let Ok(v) = set_cookie(ctx.app.tls, "", 0).parse() {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}
