//! API tokens: `Authorization: Bearer tl_...`, known to the store only by
//! their SHA-256; roles reader < operator < admin; a token may expire and
//! may be revoked, and its last use is noted (to the minute).
//!
//! Handlers take the caller as [`Reader`], [`Operator`] or [`Admin`]:
//! those extractors authenticate and check the role from the request's
//! head, and axum runs them before the one that reads the body, so a
//! caller without the role is refused before a byte of its body is read.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use trustlaunch_store::{ApiTokenRecord, Role, Store};

use crate::api::AppState;
use crate::error::ApiError;
use crate::service::now_i64;

/// How long a token lookup is remembered (a token revoked by another
/// server stops working here within this; one revoked here, at once).
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(5);

/// How often a token's last use is written.
const LAST_USED_GRANULARITY: i64 = 60;

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The token's public id (12 hex digits), or `platform`.
    pub id: String,
    /// The token's name.
    pub name: String,
    /// Its role.
    pub role: Role,
}

impl Caller {
    /// The platform itself (the monitor, the control plane): what it
    /// changes is recorded as the platform's.
    pub fn platform() -> Self {
        Self {
            id: "platform".into(),
            name: "platform".into(),
            role: Role::Admin,
        }
    }

    /// Whether this is the platform rather than an API token.
    pub fn is_platform(&self) -> bool {
        self.id == "platform"
    }

    /// How audit trails name the caller: `token <id> (<name>)` or
    /// `platform`.
    pub fn actor(&self) -> String {
        if self.is_platform() {
            "platform".into()
        } else {
            format!("token {} ({})", self.id, self.name)
        }
    }

    /// Fails with 403 unless the caller has at least `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "token {:?} has role {}, this needs {}",
                self.name, self.role, role
            )))
        }
    }
}

/// A lookup's result and when it was made.
type Looked = (Option<ApiTokenRecord>, Instant);

/// Token lookups, cached briefly.
#[derive(Default)]
pub struct TokenCache {
    entries: RwLock<HashMap<[u8; 32], Looked>>,
}

impl TokenCache {
    async fn lookup(&self, store: &Store, token: &str) -> Result<Caller, ApiError> {
        let sha: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let cached = self
            .entries
            .read()
            .ok()
            .and_then(|m| m.get(&sha).cloned())
            .filter(|(_, at)| at.elapsed() < TOKEN_CACHE_TTL);
        let record = match cached {
            Some((r, _)) => r,
            None => {
                let found = store.lookup_api_token(&sha).await?;
                if let Ok(mut m) = self.entries.write() {
                    if m.len() > 10_000 {
                        m.clear();
                    }
                    m.insert(sha, (found.clone(), Instant::now()));
                }
                found
            }
        };
        let record = record.ok_or_else(|| ApiError::unauthorized("unknown API token"))?;
        let now = now_i64();
        if record.revoked_at.is_some() {
            return Err(ApiError::unauthorized(format!(
                "API token {} ({}) was revoked",
                record.id(),
                record.name
            )));
        }
        if record.expires_at.is_some_and(|e| now >= e) {
            return Err(ApiError::unauthorized(format!(
                "API token {} ({}) has expired",
                record.id(),
                record.name
            )));
        }
        if record
            .last_used_at
            .is_none_or(|t| now.saturating_sub(t) >= LAST_USED_GRANULARITY)
        {
            store.touch_api_token(&sha, now).await?;
            if let Ok(mut m) = self.entries.write() {
                if let Some((Some(r), _)) = m.get_mut(&sha) {
                    r.last_used_at = Some(now);
                }
            }
        }
        Ok(Caller {
            id: record.id(),
            name: record.name,
            role: record.role,
        })
    }

    /// Forgets every cached lookup (after a revocation here).
    pub fn clear(&self) {
        if let Ok(mut m) = self.entries.write() {
            m.clear();
        }
    }
}

/// Makes a new token: returns the secret (shown once) and its record.
pub fn new_token(
    name: &str,
    role: Role,
    now: i64,
    expires_at: Option<i64>,
) -> (String, ApiTokenRecord) {
    let mut raw = [0u8; 32];
    OsRng.fill_bytes(&mut raw);
    let secret = format!("tl_{}", URL_SAFE_NO_PAD.encode(raw));
    let rec = ApiTokenRecord {
        sha256: Sha256::digest(secret.as_bytes()).into(),
        name: name.to_owned(),
        role,
        created_at: now,
        expires_at,
        revoked_at: None,
        last_used_at: None,
    };
    (secret, rec)
}

/// The bearer token of a request's head, authenticated.
async fn authenticate(parts: &Parts, state: &Arc<AppState>) -> Result<Caller, ApiError> {
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
