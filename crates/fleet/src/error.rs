//! Errors in Azure's shape: an HTTP status, a code, a message, and the
//! property the error is about (`{"error": {"code", "message", "target"}}`).

use serde::{Deserialize, Serialize};

/// Azure-style error codes (ComputeRP / ARM).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request is not valid as a whole (HTTP 400), e.g. a Trusted
    /// Launch setting the image or size does not support.
    BadRequest,
    /// One property has a value out of its range or set (HTTP 400).
    InvalidParameter,
    /// The operation is not allowed in the resource's state (HTTP 409), or
    /// would exceed a quota (Azure uses this code for quota errors too).
    OperationNotAllowed,
    /// A resource the request names does not exist (HTTP 404).
    ResourceNotFound,
    /// The resource exists and the request conflicts with it (HTTP 409).
    Conflict,
    /// `If-Match` does not match the resource's ETag (HTTP 412).
    PreconditionFailed,
    /// A rolling upgrade failed: an upgraded instance did not become
    /// healthy (Azure's `RollingUpgradeInstanceUnhealthyError`).
    RollingUpgradeInstanceUnhealthyError,
    /// A rolling upgrade is already running on the scale set (HTTP 409).
    RollingUpgradeInProgress,
}

impl ErrorCode {
    /// The HTTP status Azure answers with.
    pub fn status(self) -> u16 {
        match self {
            Self::BadRequest | Self::InvalidParameter => 400,
            Self::ResourceNotFound => 404,
            Self::OperationNotAllowed
            | Self::Conflict
            | Self::RollingUpgradeInProgress
            | Self::RollingUpgradeInstanceUnhealthyError => 409,
            Self::PreconditionFailed => 412,
        }
    }

    /// The code as Azure spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "BadRequest",
            Self::InvalidParameter => "InvalidParameter",
            Self::OperationNotAllowed => "OperationNotAllowed",
            Self::ResourceNotFound => "ResourceNotFound",
            Self::Conflict => "Conflict",
            Self::PreconditionFailed => "PreconditionFailed",
            Self::RollingUpgradeInstanceUnhealthyError => "RollingUpgradeInstanceUnhealthyError",
            Self::RollingUpgradeInProgress => "RollingUpgradeInProgress",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error the control plane answers a request with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct FleetError {
    /// The code.
    pub code: ErrorCode,
    /// What is wrong and, where there is one, what to do instead.
    pub message: String,
    /// The property the error is about, in Azure's path syntax
    /// (`properties.virtualMachineProfile.securityProfile.uefiSettings`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl FleetError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            target: None,
        }
    }

    /// The same error about `target`.
    #[must_use]
    pub fn at(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// `InvalidParameter` for an out-of-range value, in Azure's words.
    pub fn out_of_range(name: &str, value: impl std::fmt::Display, min: u32, max: u32) -> Self {
        Self::new(
            ErrorCode::InvalidParameter,
            format!(
                "The value {value} of parameter '{name}' is out of range. The value must be between {min} and {max}, inclusive."
            ),
        )
        .at(name)
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.code.status()
    }
}
