//! The API's authentication: `Authorization: Bearer tl_...` read from a
//! request's head and looked up ([`crate::caller`]).
//!
//! Handlers take the caller as [`Reader`], [`Operator`] or [`Admin`]:
//! those extractors authenticate and check the role from the request's
//! head, and axum runs them before the one that reads the body, so a
//! caller without the role is refused before a byte of its body is read.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use trustlaunch_store::Role;

pub use crate::caller::{new_token, Caller, TokenCache};
use crate::error::ApiError;
use crate::state::AppState;

/// A caller the portal has already authenticated (its session's token,
/// looked up again on every page), carried into the API's handlers on the
/// portal's in-process requests. Only code in this process can set a
/// request's extensions: a request from the network never carries one.
#[derive(Clone, Debug)]
pub struct Delegated(pub Caller);

/// The bearer token of a request's head, authenticated.
async fn authenticate(parts: &Parts, state: &Arc<AppState>) -> Result<Caller, ApiError> {
    if let Some(Delegated(caller)) = parts.extensions.get::<Delegated>() {
        return Ok(caller.clone());
    }
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::unauthorized("an API token is required (Authorization: Bearer ...)")
        })?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 256)
        .ok_or_else(|| {
            ApiError::unauthorized("malformed Authorization header: Bearer <token> expected")
        })?;
    state.tokens.lookup(&state.service.store, token).await
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        authenticate(parts, state).await
    }
}

macro_rules! role_extractor {
    ($name:ident, $role:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, Debug)]
        pub struct $name(pub Caller);

        impl FromRequestParts<Arc<AppState>> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &Arc<AppState>,
            ) -> Result<Self, Self::Rejection> {
                let caller = authenticate(parts, state).await?;
                caller.require($role)?;
                Ok(Self(caller))
            }
        }

        impl std::ops::Deref for $name {
            type Target = Caller;
            fn deref(&self) -> &Caller {
                &self.0
            }
        }
    };
}

role_extractor!(
    Reader,
    Role::Reader,
    "A caller with at least the reader role (checked before the body is read)."
);
role_extractor!(
    Operator,
    Role::Operator,
    "A caller with at least the operator role (checked before the body is read)."
);
role_extractor!(
    Admin,
    Role::Admin,
    "A caller with the admin role (checked before the body is read)."
);
