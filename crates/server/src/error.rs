//! API errors: an HTTP status and `{"error": {"code", "message"}}` (ARM's
//! shape), never a stack trace or a database URL.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use trustlaunch_store::StoreError;

/// An error the API returns.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// A stable code (`NotFound`, `Conflict`, ...).
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// The property it is about (ARM's `target`), when there is one.
    pub target: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            target: None,
        }
    }
    /// 400.
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", m)
    }
    /// 401.
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", m)
    }
    /// 403.
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Forbidden", m)
    }
    /// 404.
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", m)
    }
    /// 409.
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "Conflict", m)
    }
    /// 410.
    pub fn gone(m: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, "Gone", m)
    }
    /// 503.
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", m)
    }
    /// The same error about property `target` (ARM's `target`).
    #[must_use]
    pub fn at(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }
    /// 405.
    pub fn method_not_allowed(m: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", m)
    }
    /// An error of any status, with the code ARM gives that status.
    pub fn from_status(status: StatusCode, m: impl Into<String>) -> Self {
        let code = match status.as_u16() {
            400 => "BadRequest",
            401 => "AuthenticationFailed",
            403 => "AuthorizationFailed",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            408 => "RequestTimeout",
            409 => "Conflict",
            412 => "PreconditionFailed",
            413 => "RequestEntityTooLarge",
            415 => "UnsupportedMediaType",
            422 => "InvalidRequestContent",
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            504 => "GatewayTimeout",
            _ if status.is_client_error() => "BadRequest",
            _ => "InternalError",
        };
        Self::new(status, code, m)
    }
    /// 500.
    pub fn internal(m: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            m.to_string(),
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { .. } => Self::conflict(e.to_string()),
            StoreError::PreconditionFailed { ref id, expected, current } => Self::new(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailed",
                match (expected, current) {
                    (Some(x), Some(c)) => format!(
                        "The resource '{id}' changed: its ETag is \"{c}\", the request's If-Match is \"{x}\". Read it again and retry."
                    ),
                    (None, Some(c)) => format!("The resource '{id}' exists (ETag \"{c}\")."),
                    (_, None) => format!("The resource '{id}' does not exist."),
                },
            ),
            StoreError::OperationInProgress { ref operation, .. } => Self::new(
                StatusCode::CONFLICT,
                "OperationNotAllowed",
                format!(
                    "Operation '{operation}' is in progress on this resource; wait for it or cancel it."
                ),
            ),
            other => Self::unavailable(other.to_string()),
        }
    }
}

impl From<trustlaunch_fleet::FleetError> for ApiError {
    fn from(e: trustlaunch_fleet::FleetError) -> Self {
        Self {
            status: StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
            code: e.code.as_str(),
            message: e.message,
            target: e.target,
        }
    }
}

impl From<trustlaunch_control::orchestrator::ControlError> for ApiError {
    fn from(e: trustlaunch_control::orchestrator::ControlError) -> Self {
        use trustlaunch_control::orchestrator::ControlError;
        match e {
            ControlError::Store(s) => s.into(),
            ControlError::Fleet(f) => f.into(),
            other => Self::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.target {
            Some(t) => json!({"error": {"code": self.code, "message": self.message, "target": t}}),
            None => json!({"error": {"code": self.code, "message": self.message}}),
        };
        (self.status, Json(body)).into_response()
    }
}

/// VM ids: 1-64 bytes of `[A-Za-z0-9._-]`, not starting with `.` or `-`.
pub fn check_vm_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with(['.', '-'])
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid VM id {:?}: 1-64 of [A-Za-z0-9._-], not starting with . or -",
            id.chars().take(80).collect::<String>()
        )))
    }
}
