//! The portal as a client of the REST API, in-process: a request to the
//! API's own router as the signed-in caller. One source of truth: what
//! the API refuses, the portal refuses, with the same message.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use tower::ServiceExt as _;

use crate::auth::Delegated;
use crate::caller::Caller;
use crate::state::AppState;

/// What the portal's handlers share.
#[derive(Clone)]
pub struct Ctx {
    /// The server's state (service, control plane, sessions).
    pub app: Arc<AppState>,
    api: Router,
}

/// An API answer that is not a success: ARM's error, as the API gave it.
#[derive(Clone, Debug)]
pub struct ApiFailure {
    /// The status.
    pub status: StatusCode,
    /// ARM's code.
    pub code: String,
    /// The message.
    pub message: String,
    /// The property it is about (ARM's `target`), when it names one.
    pub target: Option<String>,
}

/// A successful API answer.
#[derive(Clone, Debug)]
pub struct ApiReply {
    /// The body (`Null` when empty).
    pub body: Value,
    /// The operation it started (`Azure-AsyncOperation`'s last segment).
    pub operation: Option<String>,
    /// `Warning` headers.
    pub warnings: Vec<String>,
}

/// The largest API answer the portal reads.
const MAX_ANSWER: usize = 64 << 20;

impl Ctx {
    pub(crate) fn new(app: Arc<AppState>, api: Router) -> Self {
        Self { app, api }
    }

    /// `method path` on the REST API as `caller`, with `body` as JSON.
    pub async fn call(
        &self,
        caller: &Caller,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<ApiReply, ApiFailure> {
        let fail = |message: String| ApiFailure {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "InternalError".into(),
            message,
            target: None,
        };
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "portal.internal");
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let body = match body {
            Some(v) => Body::from(serde_json::to_vec(v).map_err(|e| fail(e.to_string()))?),
            None => Body::empty(),
        };
        let mut req = req.body(body).map_err(|e| fail(e.to_string()))?;
        req.extensions_mut().insert(Delegated(caller.clone()));
        let resp = self
            .api
            .clone()
            .oneshot(req)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let status = resp.status();
        let operation = resp
            .headers()
            .get("Azure-AsyncOperation")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit('/').next())
            .map(|s| s.split('?').next().unwrap_or(s).to_owned());
        let warnings = resp
            .headers()
            .get_all(header::WARNING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect();
        let bytes = axum::body::to_bytes(resp.into_body(), MAX_ANSWER)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        if status.is_success() {
            return Ok(ApiReply {
                body,
                operation,
                warnings,
            });
        }
        let e = &body["error"];
        Err(ApiFailure {
            status,
            code: e["code"].as_str().unwrap_or("Error").to_owned(),
            message: e["message"]
                .as_str()
                .map_or_else(|| status.to_string(), str::to_owned),
            target: e["target"].as_str().map(str::to_owned),
        })
    }

    /// GET `path` as `caller`.
    pub async fn get(&self, caller: &Caller, path: &str) -> Result<Value, ApiFailure> {
        Ok(self.call(caller, Method::GET, path, None).await?.body)
    }
}

impl ApiFailure {
    /// The error is about `target` or a property inside it.
    pub fn is_about(&self, target: &str) -> bool {
        self.target.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case(target)
                || t.to_ascii_lowercase()
                    .starts_with(&format!("{}.", target.to_ascii_lowercase()))
        })
    }
}
