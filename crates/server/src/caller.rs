//! Who calls: API tokens (`tl_...`, known to the store only by their
//! SHA-256; roles reader < operator < admin; a token may expire and may be
//! revoked, and its last use is noted, to the minute), the platform
//! itself, and the cache of token lookups. No HTTP here: the extractors
//! that read a request's token are in [`crate::auth`].

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use trustlaunch_store::{ApiTokenRecord, Role, Store};

use crate::clock::now_i64;
use crate::error::ApiError;

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
    pub(crate) async fn lookup(&self, store: &Store, token: &str) -> Result<Caller, ApiError> {
        let sha: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.lookup_sha(store, &sha).await
    }

    /// The caller of the token whose SHA-256 is `sha` (a portal session
    /// keeps the digest, never the token), checked as [`Self::lookup`]
    /// checks a token: unknown, revoked and expired tokens fail.
    pub(crate) async fn lookup_sha(
        &self,
        store: &Store,
        sha: &[u8; 32],
    ) -> Result<Caller, ApiError> {
        let sha = *sha;
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
