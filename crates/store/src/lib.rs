//! Persistence for the trustlaunch server: for the attestation service,
//! VMs, enrollments, attestation history, baselines with their audit
//! trail, alerts and suppression rules, token-signing keys and API tokens;
//! for the control plane, ARM resources with ETags and long-running
//! operations (persisted state machines under a lease).
//!
//! One code path serves both databases: a [`Store`] is a
//! [`sqlx::AnyPool`] opened from a URL, `sqlite://PATH` (the embedded
//! default: the file is created if missing and put in WAL mode, so several
//! processes can share it) or `postgres://...` (many servers, one
//! database). The SQL is the subset both understand (`$n` placeholders,
//! `ON CONFLICT`, `RETURNING`); the only spelling that differs, the
//! autoincrement key, is chosen once in the migrations. Bytes are stored
//! as lowercase hex TEXT, JSON as TEXT, booleans as 0/1, times as Unix
//! seconds chosen by the caller.
//!
//! The schema is created and upgraded by the store's own versioned
//! migrations ([`Store::open`] applies what is missing, each version in one
//! transaction, recorded in `schema_version`).
//!
//! PostgreSQL is reached over TLS (rustls) as the URL says, with libpq's
//! words: `sslmode=verify-full&sslrootcert=CA.pem` checks the server's
//! certificate against that CA and the URL's host; without `sslmode`,
//! TLS is tried and not verified (`prefer`). [`Store::tls_in_use`] tells
//! whether the connection is encrypted.
//!
//! Not here: the meaning of the JSON it keeps (the server maps it to the
//! attestation crate's types; this crate does not depend on it), client
//! certificates, and retention (nothing is ever pruned).

#![forbid(unsafe_code)]

mod access;
mod challenges;
mod control;
mod error;
mod hex;
mod records;
mod schema;
mod sessions;
mod tables;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;

pub use access::MAX_AUDIT_READ;
pub use challenges::Answered;
pub use control::{
    resource_group_of, GroupDeletion, NewOperation, NewResource, OperationRecord, OperationStatus,
    OperationStep, OperationSummary, Precondition, ResourceRecord, ResourceUsage,
    RESOURCE_GROUP_TYPE,
};
pub use error::StoreError;
pub use records::{
    AlertFilter, AlertRecord, ApiTokenRecord, AttestationRecord, AuditEntry, Baseline,
    BaselineAction, BaselineAuditEntry, BaselineChange, ChallengeRecord, Enrollment,
    NewAttestation, NewAuditEntry, Role, SigningKeyRecord, SuppressionRule, VmPage, VmQuery,
    VmRecord, VmRow, VmSort, VmStamp,
};
pub use sessions::{SessionRecord, SESSION_TOUCH};

/// The database file of a `sqlite://PATH` URL and its `-wal`/`-shm`
/// companions, readable by the owner only: the file is created 0600 if
/// missing, a wider mode is narrowed, a symlink is refused. (In-memory
/// databases have no file.)
fn sqlite_private(url: &str) -> Result<(), String> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let path = url
        .trim_start_matches("sqlite:")
        .trim_start_matches("//")
        .split('?')
        .next()
        .unwrap_or_default();
    if path.is_empty() || path == ":memory:" || url.contains("mode=memory") {
        return Ok(());
    }
    let db = std::path::PathBuf::from(path);
    if std::fs::symlink_metadata(&db).is_err() {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&db)
            .map_err(|e| format!("creating {}: {e}", db.display()))?;
    }
    for suffix in ["", "-wal", "-shm"] {
        let f = std::path::PathBuf::from(format!("{path}{suffix}"));
        let Ok(meta) = std::fs::symlink_metadata(&f) else {
            continue;
        };
        if !meta.file_type().is_file() {
            return Err(format!(
                "{} is not a regular file (a symlink?): refusing to use it",
                f.display()
            ));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("chmod 0600 {}: {e}", f.display()))?;
        }
    }
    Ok(())
}

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// SQLite, embedded (`sqlite://PATH`).
    Sqlite,
    /// PostgreSQL (`postgres://...`).
    Postgres,
}

/// How to open a [`Store`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Connections in the pool (default 4 for SQLite, 10 for PostgreSQL).
    pub max_connections: Option<u32>,
    /// How long to wait for a connection before failing (default 30 s).
    pub acquire_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: None,
            acquire_timeout: Duration::from_secs(30),
        }
    }
}

/// The attestation service's database. Cheap to clone (a pool handle).
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The URL, password redacted.
    url: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .field("url", &self.url)
            .finish()
    }
}

impl Store {
    /// Opens the database at `url` with default [`StoreOptions`] and
    /// applies the migrations it lacks.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Self::open_with(url, &StoreOptions::default()).await
    }

    /// Opens the database at `url` and applies the migrations it lacks.
    ///
    /// `sqlite://PATH` creates the file if missing (unless the URL has its
    /// own `mode=`) and switches it to WAL; `postgres://` and
    /// `postgresql://` connect to an existing database.
    pub async fn open_with(url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
        let redacted = error::redact_url(url);
        let (backend, connect_url) = if url.starts_with("sqlite:") {
            let with_mode = if url.contains("mode=") {
                url.to_string()
            } else if url.contains('?') {
                format!("{url}&mode=rwc")
            } else {
                format!("{url}?mode=rwc")
            };
            sqlite_private(url).map_err(|e| StoreError::Connect {
                url: redacted.clone(),
                reason: e,
            })?;
            (Backend::Sqlite, with_mode)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string())
        } else {
            return Err(StoreError::UnsupportedUrl { url: redacted });
        };
        sqlx::any::install_default_drivers();
        let max = options.max_connections.unwrap_or(match backend {
            Backend::Sqlite => 4,
            Backend::Postgres => 10,
        });
        let mut pool_options = AnyPoolOptions::new()
            .max_connections(max.max(1))
            .acquire_timeout(options.acquire_timeout);
        if backend == Backend::Sqlite {
            pool_options = pool_options.after_connect(|conn, _| {
                Box::pin(async move {
                    // Persistent in the file; per connection, NORMAL
                    // syncing is durable enough in WAL mode.
                    sqlx::query("PRAGMA journal_mode = WAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA synchronous = NORMAL")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            });
        }
        let pool = pool_options
            .connect(&connect_url)
            .await
            .map_err(|e| StoreError::Connect {
                url: redacted.clone(),
                reason: connect_reason(&e, url),
            })?;
        schema::migrate(&pool, backend, unix_now()).await?;
        if backend == Backend::Sqlite {
            // SQLite made the WAL and shared-memory files with the
            // database file's mode; narrow any left by an older version.
            sqlite_private(url).map_err(|e| StoreError::Connect {
                url: redacted.clone(),
                reason: e,
            })?;
        }
        Ok(Store {
            pool,
            backend,
            url: redacted,
        })
    }

    /// Runs `attempt` (one transaction) again while SQLite reports the
    /// database busy: a deferred transaction that reads, then writes,
    /// fails at its write with `SQLITE_BUSY` (or `SQLITE_BUSY_SNAPSHOT`)
    /// when another connection wrote since its read began, without
    /// waiting, and the right answer is to run the whole transaction
    /// again on a fresh snapshot. Concurrent registrations and answers hit
    /// this. PostgreSQL errors are returned as they are.
    pub(crate) async fn retry_busy<T, F, Fut>(&self, attempt: F) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let mut tries = 0u32;
        loop {
            match attempt().await {
                Err(e)
                    if self.backend == Backend::Sqlite && e.is_busy() && tries < BUSY_RETRIES =>
                {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(u64::from(tries) * 5)).await;
                }
                other => return other,
            }
        }
    }

    /// Whether the connection to the database is encrypted: what
    /// PostgreSQL reports for this connection (`pg_stat_ssl`); SQLite is a
    /// local file, never.
    pub async fn tls_in_use(&self) -> Result<bool, StoreError> {
        if self.backend == Backend::Sqlite {
            return Ok(false);
        }
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(error::db("tls_in_use"))?;
        Ok(n == 1)
    }

    /// The database this store talks to.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The schema versions applied, ascending (each exactly once).
    pub async fn applied_migrations(&self) -> Result<Vec<i64>, StoreError> {
        schema::applied(&self.pool).await
    }

    /// The schema version this build migrates to.
    pub fn schema_version() -> i64 {
        schema::latest_version()
    }

    /// Closes every connection, waiting for those in use.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Why a connection failed, for people: the driver's message without the
/// password, and what a certificate failure means with `verify-full`.
fn connect_reason(e: &sqlx::Error, url: &str) -> String {
    let mut reason = scrub(&e.to_string(), url);
    if matches!(e, sqlx::Error::Tls(_)) || reason.contains("certificate") {
        reason.push_str(
            " (TLS: the server's certificate must chain to the CA in sslrootcert= and, with \
             sslmode=verify-full, name the URL's host)",
        );
    }
    reason
}

/// `message` without the password of `url`.
fn scrub(message: &str, url: &str) -> String {
    match error::url_password(url) {
        Some(p) if !p.is_empty() => message.replace(p, "***"),
        _ => message.to_string(),
    }
}

/// How often a busy SQLite transaction is run again (waiting 5, 10, ...
/// ms between tries: about 3 s in all).
const BUSY_RETRIES: u32 = 35;

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
