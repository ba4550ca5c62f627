//! Versioned migrations, run by [`crate::Store::open`]: each version's
//! statements and its row in `schema_version` commit in one transaction,
//! so a version is applied whole or not at all, and once.

use sqlx::{AnyPool, Row};

use crate::error::{db, StoreError};
use crate::Backend;

/// Where an autoincrement / identity primary key goes: the one spelling
/// SQLite and PostgreSQL do not share.
const ID: &str = "{ID}";

/// The migrations, in order; version `i + 1` is `MIGRATIONS[i]`. Append
/// only: a released version is never edited.
const MIGRATIONS: &[&[&str]] = &[
    // 1: the initial schema. Bytes are lowercase hex TEXT, JSON is TEXT,
    // booleans are BIGINT 0/1, times are BIGINT Unix seconds.
    &[
        "CREATE TABLE vms (vm_id TEXT PRIMARY KEY, spec TEXT NOT NULL, \
         ek_public TEXT NOT NULL, created_at BIGINT NOT NULL)",
        "CREATE TABLE enrollments (vm_id TEXT PRIMARY KEY, ek_certificate TEXT NOT NULL, \
         ak_public TEXT NOT NULL, enrolled_at BIGINT NOT NULL)",
        "CREATE TABLE attestations (id {ID}, vm_id TEXT NOT NULL, boot_id TEXT NOT NULL, \
         nonce TEXT NOT NULL, at BIGINT NOT NULL, \
         healthy BIGINT NOT NULL CHECK (healthy IN (0, 1)), appraisal TEXT NOT NULL, \
         token TEXT, UNIQUE (vm_id, nonce))",
        "CREATE INDEX attestations_by_vm ON attestations (vm_id, at, id)",
        "CREATE TABLE baselines (vm_id TEXT PRIMARY KEY, baseline TEXT NOT NULL, \
         version BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
        "CREATE TABLE baseline_audit (id {ID}, vm_id TEXT NOT NULL, \
         action TEXT NOT NULL CHECK (action IN ('learned', 'pinned', 'relearned', 'predicted')), \
         actor TEXT NOT NULL, at BIGINT NOT NULL, old_baseline TEXT, \
         new_baseline TEXT NOT NULL, version BIGINT NOT NULL)",
        "CREATE INDEX baseline_audit_by_vm ON baseline_audit (vm_id, id)",
        "CREATE TABLE alerts (key TEXT PRIMARY KEY, vm_id TEXT NOT NULL, state TEXT NOT NULL, \
         alert TEXT NOT NULL, updated_at BIGINT NOT NULL)",
        "CREATE INDEX alerts_by_vm_state ON alerts (vm_id, state)",
        "CREATE TABLE suppression_rules (name TEXT PRIMARY KEY, rule TEXT NOT NULL)",
        "CREATE TABLE signing_keys (kid TEXT PRIMARY KEY, pkcs8_pem TEXT NOT NULL, \
         created_at BIGINT NOT NULL, retire_at BIGINT, \
         is_current BIGINT NOT NULL CHECK (is_current IN (0, 1)))",
        "CREATE TABLE api_tokens (sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, \
         role TEXT NOT NULL CHECK (role IN ('reader', 'operator', 'admin')), \
         created_at BIGINT NOT NULL)",
    ],
    // 2: a VM's revision, +1 each time its record is replaced, so that a
    // cache can tell whether it changed without reading it.
    &["ALTER TABLE vms ADD COLUMN revision BIGINT NOT NULL DEFAULT 0"],
    // 3: the control plane: ARM resources with an ETag, and long-running
    // operations (persisted state machines, leased to one server at a
    // time, at most one running per target).
    &[
        "CREATE TABLE resources (key TEXT PRIMARY KEY, id TEXT NOT NULL, kind TEXT NOT NULL, \
         resource_group TEXT NOT NULL, name TEXT NOT NULL, parent TEXT, body TEXT NOT NULL, \
         etag BIGINT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
        "CREATE INDEX resources_by_kind ON resources (kind, resource_group)",
        "CREATE INDEX resources_by_parent ON resources (parent)",
        "CREATE TABLE operations (id TEXT PRIMARY KEY, kind TEXT NOT NULL, target TEXT NOT NULL, \
         status TEXT NOT NULL CHECK (status IN ('InProgress', 'Succeeded', 'Failed', 'Canceled')), \
         state TEXT NOT NULL, error TEXT, revision BIGINT NOT NULL, lease_owner TEXT, \
         lease_until BIGINT, cancel_requested BIGINT NOT NULL DEFAULT 0 \
         CHECK (cancel_requested IN (0, 1)), created_at BIGINT NOT NULL, \
         updated_at BIGINT NOT NULL)",
        "CREATE UNIQUE INDEX operations_one_running ON operations (target) \
         WHERE status = 'InProgress'",
        "CREATE INDEX operations_by_target ON operations (target, created_at)",
    ],
    // 4: least authority. API tokens get a public id (the first 12 hex
    // digits of their SHA-256: names are not unique), an expiry, a
    // revocation and a last use; challenges are the server's own
    // single-use nonces (with the credential it made for the AK, known by
    // the SHA-256 of its secret); the audit log records who changed a
    // registration, a suppression rule or a token (and, for the events
    // webhooks hear of, what is owed to them).
    &[
        "ALTER TABLE api_tokens ADD COLUMN token_id TEXT",
        "UPDATE api_tokens SET token_id = substr(sha256, 1, 12)",
        "CREATE UNIQUE INDEX api_tokens_by_id ON api_tokens (token_id)",
        "ALTER TABLE api_tokens ADD COLUMN expires_at BIGINT",
        "ALTER TABLE api_tokens ADD COLUMN revoked_at BIGINT",
        "ALTER TABLE api_tokens ADD COLUMN last_used_at BIGINT",
        "CREATE TABLE challenges (id TEXT PRIMARY KEY, vm_id TEXT NOT NULL, \
         nonce TEXT NOT NULL UNIQUE, ak_public TEXT, secret_sha256 TEXT, \
         issued_to TEXT NOT NULL, created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, \
         used_at BIGINT)",
        "CREATE INDEX challenges_by_expiry ON challenges (expires_at)",
        "CREATE TABLE audit_log (id {ID}, at BIGINT NOT NULL, actor TEXT NOT NULL, \
         action TEXT NOT NULL, target TEXT NOT NULL, detail TEXT NOT NULL, \
         deliveries TEXT, pending BIGINT NOT NULL DEFAULT 0 CHECK (pending IN (0, 1)))",
        "CREATE INDEX audit_log_by_target ON audit_log (target, id)",
        "CREATE INDEX audit_log_pending ON audit_log (pending)",
        // Two more baseline actions: a first boot's components proposed
        // (awaiting an operator) and approved. The CHECK is replaced:
        // PostgreSQL alters it; SQLite cannot, so the table is rebuilt.
        "postgres: ALTER TABLE baseline_audit DROP CONSTRAINT baseline_audit_action_check",
        "postgres: ALTER TABLE baseline_audit ADD CONSTRAINT baseline_audit_action_check \
         CHECK (action IN ('learned', 'pinned', 'relearned', 'predicted', 'proposed', 'approved'))",
        "sqlite: CREATE TABLE baseline_audit_v4 (id INTEGER PRIMARY KEY AUTOINCREMENT, \
         vm_id TEXT NOT NULL, action TEXT NOT NULL CHECK (action IN ('learned', 'pinned', \
         'relearned', 'predicted', 'proposed', 'approved')), actor TEXT NOT NULL, \
         at BIGINT NOT NULL, old_baseline TEXT, new_baseline TEXT NOT NULL, version BIGINT NOT NULL)",
        "sqlite: INSERT INTO baseline_audit_v4 (id, vm_id, action, actor, at, old_baseline, \
         new_baseline, version) SELECT id, vm_id, action, actor, at, old_baseline, new_baseline, \
         version FROM baseline_audit",
        "sqlite: DROP TABLE baseline_audit",
        "sqlite: ALTER TABLE baseline_audit_v4 RENAME TO baseline_audit",
        "sqlite: CREATE INDEX baseline_audit_by_vm ON baseline_audit (vm_id, id)",
    ],
    // 5: what a quota check and an operation's poll read, kept beside the
    // documents so neither parses them: a VM's or scale set's vCPUs in use
    // and their size family (written with the resource, in its
    // transaction), and an operation's progress (written with each step).
    &[
        "ALTER TABLE resources ADD COLUMN usage_family TEXT",
        "ALTER TABLE resources ADD COLUMN usage_vcpus BIGINT",
        "ALTER TABLE operations ADD COLUMN progress TEXT",
    ],
    // 6: what a page of VMs shows, kept on the VM's row so that a page is
    // read from one index, never from every spec and every VM's newest
    // attestation: the security type its registration names (written
    // with it) and its newest attestation's id, verdict and time (written
    // in that attestation's transaction); and the portal's sessions.
    &[
        "ALTER TABLE vms ADD COLUMN security_type TEXT NOT NULL DEFAULT 'Standard'",
        "sqlite: UPDATE vms SET security_type = CASE WHEN json_extract(spec, '$.trustedLaunch') = 1 \
         THEN 'TrustedLaunch' ELSE 'Standard' END",
        "postgres: UPDATE vms SET security_type = CASE WHEN (spec::json ->> 'trustedLaunch') = 'true' \
         THEN 'TrustedLaunch' ELSE 'Standard' END",
        "ALTER TABLE vms ADD COLUMN last_id BIGINT",
        "ALTER TABLE vms ADD COLUMN last_healthy BIGINT",
        "ALTER TABLE vms ADD COLUMN last_at BIGINT",
        "UPDATE vms SET last_id = (SELECT a.id FROM attestations a WHERE a.vm_id = vms.vm_id \
         ORDER BY a.at DESC, a.id DESC LIMIT 1)",
        "UPDATE vms SET last_healthy = (SELECT a.healthy FROM attestations a WHERE a.id = vms.last_id), \
         last_at = (SELECT a.at FROM attestations a WHERE a.id = vms.last_id)",
        "CREATE INDEX vms_page ON vms (vm_id, security_type, created_at, last_healthy, last_at)",
        // The portal's sessions (sessions.rs), by their cookie's SHA-256.
        "CREATE TABLE portal_sessions (id_sha256 TEXT PRIMARY KEY, token_sha256 TEXT NOT NULL, \
         csrf TEXT NOT NULL, created_at BIGINT NOT NULL, seen_at BIGINT NOT NULL, flash TEXT)",
        "CREATE INDEX portal_sessions_by_seen ON portal_sessions (seen_at)",
    ],
];

/// The schema version this build migrates to.
pub(crate) fn latest_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// The statement as `backend` runs it: `{ID}` spelled, and `None` for a
/// statement marked for the other database (`sqlite: ...`,
/// `postgres: ...`).
fn spell(backend: Backend, statement: &str) -> Option<String> {
    let (only, text) = if let Some(t) = statement.strip_prefix("sqlite: ") {
        (Some(Backend::Sqlite), t)
    } else if let Some(t) = statement.strip_prefix("postgres: ") {
        (Some(Backend::Postgres), t)
    } else {
        (None, statement)
    };
    if only.is_some_and(|b| b != backend) {
        return None;
    }
    let id = match backend {
        Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
        Backend::Postgres => "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    };
    Some(text.replace(ID, id))
}

async fn current_version(pool: &AnyPool) -> Result<i64, StoreError> {
    let row = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        .fetch_one(pool)
        .await
        .map_err(db("schema_version"))?;
    row.try_get::<i64, _>(0).map_err(db("schema_version"))
}

/// The versions recorded in `schema_version`, ascending.
pub(crate) async fn applied(pool: &AnyPool) -> Result<Vec<i64>, StoreError> {
    let rows = sqlx::query("SELECT version FROM schema_version ORDER BY version")
        .fetch_all(pool)
        .await
        .map_err(db("schema_version"))?;
    rows.iter()
        .map(|r| r.try_get::<i64, _>(0).map_err(db("schema_version")))
        .collect()
}

/// Brings the schema to [`latest_version`]. Another process migrating at
/// the same moment makes one transaction fail; if the version it wanted is
/// there afterwards, that is success.
pub(crate) async fn migrate(pool: &AnyPool, backend: Backend, now: i64) -> Result<(), StoreError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_version \
         (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(pool)
    .await
    .map_err(db("create schema_version"))?;
    let known = latest_version();
    let found = current_version(pool).await?;
    if found > known {
        return Err(StoreError::SchemaTooNew { found, known });
    }
    for (version, statements) in (1..).zip(MIGRATIONS.iter()) {
        if version <= found {
            continue;
        }
        let attempt = async {
            let mut tx = pool.begin().await?;
            for statement in statements.iter() {
                if let Some(sql) = spell(backend, statement) {
                    sqlx::query(&sql).execute(&mut *tx).await?;
                }
            }
            sqlx::query("INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)")
                .bind(version)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        };
        if let Err(source) = attempt.await {
            if current_version(pool).await? >= version {
                continue;
            }
            return Err(StoreError::Migration { version, source });
        }
    }
    Ok(())
}
