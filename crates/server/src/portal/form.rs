//! The portal's forms: a bounded `application/x-www-form-urlencoded` body
//! (repeated keys kept, as a list of instances sends them), and
//! [`Posted`], a change from a signed-in browser whose anti-forgery token
//! and Origin were checked before anything else.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use sha2::{Digest, Sha256};

use super::layout::error_page;
use super::{Ctx, Viewer};

/// The largest form body read.
pub const MAX_FORM: usize = 64 * 1024;
/// The most fields a form may carry.
const MAX_FIELDS: usize = 1100;

/// A form's fields, in order.
#[derive(Debug, Default)]
pub struct Fields(pub Vec<(String, String)>);

impl Fields {
    /// Parses a body (bounded by the caller), refusing one with too many
    /// fields.
    pub fn parse(body: &[u8]) -> Result<Fields, String> {
        let mut out = Vec::new();
        for (k, v) in form_urlencoded::parse(body) {
            if out.len() >= MAX_FIELDS {
                return Err(format!("more than {MAX_FIELDS} fields"));
            }
            out.push((k.into_owned(), v.into_owned()));
        }
        Ok(Fields(out))
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A checkbox: present and "on"/"true".
    pub fn checked(&self, name: &str) -> bool {
        matches!(self.get(name), Some("on" | "true" | "1"))
    }
}

/// The request comes from a page of this server: its Origin (which
/// browsers send with every POST) names the Host it was sent to. A request
/// without Origin (not a browser's form) is let through to the
/// anti-forgery check.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let origin = origin.to_str().unwrap_or_default();
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    authority == Some(host)
}

/// A change posted by a signed-in browser: its viewer and its fields, the
/// anti-forgery token checked.
pub struct Posted {
    /// Who posts.
    pub viewer: Viewer,
    /// The form.
    pub fields: Fields,
}

impl FromRequest<Ctx> for Posted {
    type Rejection = Response;

    async fn from_request(req: Request, ctx: &Ctx) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        if !same_origin(&parts.headers) {
            return Err(error_page(
                "This change was sent from another site and is refused.",
                StatusCode::FORBIDDEN,
            ));
        }
        let viewer = Viewer::from_request_parts(&mut parts, ctx).await?;
        let bytes = axum::body::to_bytes(body, MAX_FORM).await.map_err(|_| {
            error_page(
                &format!("The form is larger than {} KiB.", MAX_FORM / 1024),
                StatusCode::PAYLOAD_TOO_LARGE,
            )
        })?;
        let fields = Fields::parse(&bytes).map_err(|e| {
            error_page(
                &format!("The form could not be read: {e}."),
                StatusCode::BAD_REQUEST,
            )
        })?;
        // Compared as digests: the time taken says nothing of the token.
        let sent = Sha256::digest(fields.get("_csrf").unwrap_or_default().as_bytes());
        let want = Sha256::digest(viewer.csrf.as_bytes());
        if sent != want {
            tracing::warn!(
                "portal: a change by {} without the session's anti-forgery token was refused",
                viewer.caller.actor()
            );
            return Err(error_page(
                "This form's anti-forgery token is missing or stale: reload the page and try again.",
                StatusCode::FORBIDDEN,
            ));
        }
        Ok(Posted { viewer, fields })
    }
}
