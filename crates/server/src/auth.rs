//! API tokens: `Authorization: Bearer tl_...`, known to the store only by
//! their SHA-256; roles reader < operator < admin.

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

/// How long a token lookup is remembered (a deleted token stops working
/// within this).
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(5);

/// Who is calling.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The token's name.
    pub name: String,
    /// Its role.
    pub role: Role,
}

impl Caller {
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
type Looked = (Option<Caller>, Instant);

/// Token lookups, cached briefly.
#[derive(Default)]
pub struct TokenCache {
    entries: RwLock<HashMap<[u8; 32], Looked>>,
}

impl TokenCache {
    async fn lookup(&self, store: &Store, token: &str) -> Result<Option<Caller>, ApiError> {
        let sha: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((c, at)) = self.entries.read().ok().and_then(|m| m.get(&sha).cloned()) {
            if at.elapsed() < TOKEN_CACHE_TTL {
                return Ok(c);
            }
        }
        let found = store.lookup_api_token(&sha).await?.map(|r| Caller {
            name: r.name,
            role: r.role,
        });
        if let Ok(mut m) = self.entries.write() {
            if m.len() > 10_000 {
                m.clear();
            }
            m.insert(sha, (found.clone(), Instant::now()));
        }
        Ok(found)
    }
}

/// Makes a new token: returns the secret (shown once) and its record.
pub fn new_token(name: &str, role: Role, now: i64) -> (String, ApiTokenRecord) {
    let mut raw = [0u8; 32];
    OsRng.fill_bytes(&mut raw);
    let secret = format!("tl_{}", URL_SAFE_NO_PAD.encode(raw));
    let rec = ApiTokenRecord {
        sha256: Sha256::digest(secret.as_bytes()).into(),
        name: name.to_owned(),
        role,
        created_at: now,
    };
    (secret, rec)
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
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
        state
            .tokens
            .lookup(&state.service.store, token)
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown API token"))
    }
}
