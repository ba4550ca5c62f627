//! The control plane's tables: ARM resources (VMs, scale sets, their
//! instances, images, ...) as JSON documents with an ETag each, and the
//! long-running operations that change them, as persisted state machines
//! that a server claims with a lease and any server resumes after a crash.
//!
//! The meaning of the JSON is the fleet crate's; this module keeps the
//! invariants that need the database: optimistic concurrency (a write with
//! an expected ETag changes nothing if another write came first), at most
//! one running operation per target resource (a unique index), and a
//! resource change committed together with the operation that carries it
//! out (one transaction), so a crash cannot keep one without the other.

use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{Any, Transaction};

use crate::error::{db, StoreError};
use crate::tables::cols;
use crate::Store;

/// What a resource write expects to find (HTTP `If-Match` /
/// `If-None-Match`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Create or replace, whatever is there (no header).
    Any,
    /// Create only: fails if the resource exists (`If-None-Match: *`).
    Absent,
    /// Replace only this version (`If-Match: <etag>`); fails if the
    /// resource changed or does not exist.
    Etag(i64),
}

/// A resource to write.
#[derive(Debug, Clone, PartialEq)]
pub struct NewResource {
    /// Its ARM id, as the client spelled it at creation (the key is the id
    /// in lowercase: ARM ids are case-insensitive).
    pub id: String,
    /// Its type, e.g. `Microsoft.Compute/virtualMachineScaleSets`.
    pub kind: String,
    /// Its resource group.
    pub resource_group: String,
    /// Its name.
    pub name: String,
    /// The resource it belongs to (a scale set, for an instance; kept in
    /// lowercase, like every id the store compares).
    pub parent: Option<String>,
    /// The resource's document.
    pub body: Value,
    /// The vCPUs it uses and their size family (a VM, a scale set), kept
    /// for quota checks; `None` keeps what the stored row has (a write
    /// that does not change its size or capacity).
    pub usage: Option<ResourceUsage>,
}

/// vCPUs in use by one resource, of one size family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceUsage {
    /// The size family (`DSv3`).
    pub family: String,
    /// vCPUs: a VM's size's, a set's size's times its capacity.
    pub vcpus: i64,
}

/// A stored resource.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceRecord {
    /// Its ARM id as first written.
    pub id: String,
    /// Its type.
    pub kind: String,
    /// Its resource group.
    pub resource_group: String,
    /// Its name.
    pub name: String,
    /// The resource it belongs to (lowercase).
    pub parent: Option<String>,
    /// Its document.
    pub body: Value,
    /// Its version: 1 at creation, +1 at every write.
    pub etag: i64,
    /// When it was created.
    pub created_at: i64,
    /// When it was last written.
    pub updated_at: i64,
}

/// The state of a long-running operation (Azure's operation status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationStatus {
    /// Running, or waiting for a server to resume it.
    InProgress,
    /// Done.
    Succeeded,
    /// Stopped on an error (kept in `error`).
    Failed,
    /// Cancelled on request.
    Canceled,
}

impl OperationStatus {
    /// The status as Azure spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "InProgress",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Canceled => "Canceled",
        }
    }
}

impl std::str::FromStr for OperationStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "InProgress" => Ok(Self::InProgress),
            "Succeeded" => Ok(Self::Succeeded),
            "Failed" => Ok(Self::Failed),
            "Canceled" => Ok(Self::Canceled),
            other => Err(format!("unknown operation status {other:?}")),
        }
    }
}

/// An operation to start.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOperation {
    /// Its id (unique; the caller makes it, e.g. a random UUID).
    pub id: String,
    /// What it does, e.g. `vmss.rollingUpgrade`.
    pub kind: String,
    /// The resource it works on (its ARM id).
    pub target: String,
    /// The orchestrator's state machine, as it starts.
    pub state: Value,
    /// Its progress as clients poll it (small: counts), kept beside the
    /// state so a poll never reads the state.
    pub progress: Option<Value>,
    /// When it was started.
    pub created_at: i64,
}

/// A stored operation without its state (see
/// [`Store::operation_summary`]).
#[derive(Debug, Clone, PartialEq)]
pub struct OperationSummary {
    /// Its id.
    pub id: String,
    /// What it does.
    pub kind: String,
    /// The resource it works on (lowercase).
    pub target: String,
    /// Its status.
    pub status: OperationStatus,
    /// The error, when it failed.
    pub error: Option<Value>,
    /// Its progress, when recorded.
    pub progress: Option<Value>,
    /// A cancel was asked for.
    pub cancel_requested: bool,
    /// When it started.
    pub created_at: i64,
    /// When it last changed.
    pub updated_at: i64,
}

/// A stored operation.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationRecord {
    /// Its id.
    pub id: String,
    /// What it does.
    pub kind: String,
    /// The resource it works on.
    pub target: String,
    /// Its status.
    pub status: OperationStatus,
    /// The orchestrator's state machine, as of the last step.
    pub state: Value,
    /// Why it failed.
    pub error: Option<Value>,
    /// Its version: 1 at creation, +1 at every step written.
    pub revision: i64,
    /// The server running it, while it holds the lease.
    pub lease_owner: Option<String>,
    /// Until when the lease holds (Unix seconds).
    pub lease_until: Option<i64>,
    /// Someone asked for it to stop ([`Store::request_cancel`]); the
    /// server running it stops at its next step.
    pub cancel_requested: bool,
    /// When it was started.
    pub created_at: i64,
    /// When it last changed.
    pub updated_at: i64,
}

/// One step of an operation to write: its new state, and whether it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationStep {
    /// The revision the writer read; the write fails if it moved.
    pub expected_revision: i64,
    /// The status after the step.
    pub status: OperationStatus,
    /// The state machine after the step.
    pub state: Value,
    /// The error, when it failed.
    pub error: Option<Value>,
    /// Its progress after the step (see [`NewOperation::progress`]).
    pub progress: Option<Value>,
    /// When.
    pub at: i64,
}

const RESOURCE_COLUMNS: &str =
    "id, kind, resource_group, name, parent, body, etag, created_at, updated_at";
const OPERATION_COLUMNS: &str = "id, kind, target, status, state, error, revision, lease_owner, \
     lease_until, cancel_requested, created_at, updated_at";

fn resource_from(row: &AnyRow, op: &'static str) -> Result<ResourceRecord, StoreError> {
    let c = cols(row, "resources", op);
    Ok(ResourceRecord {
        id: c.text("id")?,
        kind: c.text("kind")?,
        resource_group: c.text("resource_group")?,
        name: c.text("name")?,
        parent: c.opt_text("parent")?,
        body: c.json("body")?,
        etag: c.int("etag")?,
        created_at: c.int("created_at")?,
        updated_at: c.int("updated_at")?,
    })
}

fn operation_from(row: &AnyRow, op: &'static str) -> Result<OperationRecord, StoreError> {
    let c = cols(row, "operations", op);
    Ok(OperationRecord {
        id: c.text("id")?,
        kind: c.text("kind")?,
        target: c.text("target")?,
        status: c.parsed("status")?,
        state: c.json("state")?,
        error: c.opt_json("error")?,
        revision: c.int("revision")?,
        lease_owner: c.opt_text("lease_owner")?,
        lease_until: c.opt_int("lease_until")?,
        cancel_requested: c.flag("cancel_requested")?,
        created_at: c.int("created_at")?,
        updated_at: c.int("updated_at")?,
    })
}

/// The key of an ARM id: ids are case-insensitive.
fn key(id: &str) -> String {
    id.to_ascii_lowercase()
}

/// The type of a resource group.
pub const RESOURCE_GROUP_TYPE: &str = "Microsoft.Resources/resourceGroups";

/// The resource group a resource id lies in: the group's id (as spelled
/// in `id`) and name; `None` for an id that is not under one (a group's
/// own id included).
pub fn resource_group_of(id: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = id.split('/').collect();
    match parts.as_slice() {
        ["", s, sub, g, rg, _, ..]
            if s.eq_ignore_ascii_case("subscriptions")
                && g.eq_ignore_ascii_case("resourceGroups")
                && !sub.is_empty()
                && !rg.is_empty() =>
        {
            Some((format!("/{s}/{sub}/{g}/{rg}"), (*rg).to_owned()))
        }
        _ => None,
    }
}

/// A `LIKE` pattern (with `ESCAPE '\'`) for the keys that begin with
/// `prefix`'s key: matched by character, whatever the database's
/// collation (a range of keys would follow a linguistic collation's
/// order, which is not the bytes').
fn prefix_pattern(prefix: &str) -> String {
    let mut p = String::with_capacity(prefix.len() + 1);
    for c in key(prefix).chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// The pattern of the keys of the resources under group `group_id`.
fn group_pattern(group_id: &str) -> String {
    prefix_pattern(&format!("{group_id}/"))
}

/// What [`Store::delete_resource_group`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupDeletion {
    /// The group was deleted (it held nothing).
    Deleted,
    /// There is no such group.
    Absent,
    /// It holds resources: nothing was deleted. The first ids, and how
    /// many there are.
    NotEmpty {
        /// Up to 10 of the ids, in key order.
        ids: Vec<String>,
        /// How many resources it holds.
        count: u64,
    },
}

/// Keeps a resource's group in existence, in the transaction that writes
/// the resource: its row locked first (PostgreSQL: a concurrent deletion
/// of the group waits for this write, or this write for it), then created
/// if absent. So no resource outlives its group.
async fn ensure_group(
    tx: &mut Transaction<'static, Any>,
    r: &NewResource,
    at: i64,
) -> Result<(), StoreError> {
    let op = "put_resource";
    // A child (a set's instance) lies in its parent's group, which the
    // parent's own write keeps.
    if r.kind == RESOURCE_GROUP_TYPE || r.parent.is_some() {
        return Ok(());
    }
    let Some((group_id, rg)) = resource_group_of(&r.id) else {
        return Ok(());
    };
    let k = key(&group_id);
    sqlx::query("UPDATE resources SET etag = etag WHERE key = $1")
        .bind(&k)
        .execute(&mut **tx)
        .await
        .map_err(db(op))?;
    let location = r.body["location"].as_str().unwrap_or("local");
    let body = serde_json::json!({"location": location, "implicit": true}).to_string();
    sqlx::query(
        "INSERT INTO resources (key, id, kind, resource_group, name, parent, body, etag, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, NULL, $6, 1, $7, $7) \
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(&k)
    .bind(&group_id)
    .bind(RESOURCE_GROUP_TYPE)
    .bind(&rg)
    .bind(&rg)
    .bind(&body)
    .bind(at)
    .execute(&mut **tx)
    .await
    .map_err(db(op))?;
    Ok(())
}

async fn write_resource(
    tx: &mut Transaction<'static, Any>,
    r: &NewResource,
    pre: Precondition,
    at: i64,
) -> Result<i64, StoreError> {
    let op = "put_resource";
    ensure_group(tx, r, at).await?;
    let k = key(&r.id);
    let failed = |current: Option<i64>| StoreError::PreconditionFailed {
        id: r.id.clone(),
        expected: match pre {
            Precondition::Etag(e) => Some(e),
            _ => None,
        },
        current,
    };
    // A write first: takes SQLite's write lock / PostgreSQL's row lock
    // before the read, so the compare-and-write below is not raced.
    sqlx::query("UPDATE resources SET etag = etag WHERE key = $1")
        .bind(&k)
        .execute(&mut **tx)
        .await
        .map_err(db(op))?;
    let current: Option<i64> = sqlx::query_scalar("SELECT etag FROM resources WHERE key = $1")
        .bind(&k)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db(op))?;
    match (pre, current) {
        (Precondition::Absent, Some(_)) | (Precondition::Etag(_), None) => {
            return Err(failed(current))
        }
        (Precondition::Etag(e), Some(c)) if e != c => return Err(failed(current)),
        _ => {}
    }
    let body = r.body.to_string();
    let parent = r.parent.as_deref().map(key);
    match current {
        Some(c) => {
            let next = c.checked_add(1).ok_or_else(|| failed(current))?;
            let done = sqlx::query(
                "UPDATE resources SET body = $1, etag = $2, updated_at = $3, kind = $4, \
                 resource_group = $5, name = $6, parent = $7, \
                 usage_family = COALESCE($10, usage_family), \
                 usage_vcpus = COALESCE($11, usage_vcpus) WHERE key = $8 AND etag = $9",
            )
            .bind(&body)
            .bind(next)
            .bind(at)
            .bind(&r.kind)
            .bind(&r.resource_group)
            .bind(&r.name)
            .bind(parent.as_deref())
            .bind(&k)
            .bind(c)
            .bind(r.usage.as_ref().map(|u| u.family.clone()))
            .bind(r.usage.as_ref().map(|u| u.vcpus))
            .execute(&mut **tx)
            .await
            .map_err(db(op))?;
            if done.rows_affected() != 1 {
                return Err(failed(current));
            }
            Ok(next)
        }
        None => {
            let done = sqlx::query(
                "INSERT INTO resources (key, id, kind, resource_group, name, parent, body, etag, \
                 created_at, updated_at, usage_family, usage_vcpus) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $8, $9, $10) \
                 ON CONFLICT (key) DO NOTHING",
            )
            .bind(&k)
            .bind(&r.id)
            .bind(&r.kind)
            .bind(&r.resource_group)
            .bind(&r.name)
            .bind(parent.as_deref())
            .bind(&body)
            .bind(at)
            .bind(r.usage.as_ref().map(|u| u.family.clone()))
            .bind(r.usage.as_ref().map(|u| u.vcpus))
            .execute(&mut **tx)
            .await
            .map_err(db(op))?;
            if done.rows_affected() != 1 {
                // Created concurrently (PostgreSQL: we waited on its key).
                return Err(failed(None));
            }
            Ok(1)
        }
    }
}

async fn insert_operation(
    tx: &mut Transaction<'static, Any>,
    o: &NewOperation,
) -> Result<(), StoreError> {
    let op = "start_operation";
    let running: Option<String> =
        sqlx::query_scalar("SELECT id FROM operations WHERE target = $1 AND status = 'InProgress'")
            .bind(key(&o.target))
            .fetch_optional(&mut **tx)
            .await
            .map_err(db(op))?;
    if let Some(operation) = running {
        return Err(StoreError::OperationInProgress {
            target: o.target.clone(),
            operation,
        });
    }
    let done = sqlx::query(
        "INSERT INTO operations (id, kind, target, status, state, revision, created_at, \
         updated_at, progress) VALUES ($1, $2, $3, 'InProgress', $4, 1, $5, $5, $6) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&o.id)
    .bind(&o.kind)
    .bind(key(&o.target))
    .bind(o.state.to_string())
    .bind(o.created_at)
    .bind(o.progress.as_ref().map(Value::to_string))
    .execute(&mut **tx)
    .await
    .map_err(db(op))?;
    if done.rows_affected() != 1 {
        // The id exists, or another operation on the target started
        // concurrently (the unique index on running operations).
        let running: Option<String> = sqlx::query_scalar(
            "SELECT id FROM operations WHERE target = $1 AND status = 'InProgress'",
        )
        .bind(key(&o.target))
        .fetch_optional(&mut **tx)
        .await
        .map_err(db(op))?;
        return Err(match running {
            Some(operation) => StoreError::OperationInProgress {
                target: o.target.clone(),
                operation,
            },
            None => StoreError::DuplicateOperation { id: o.id.clone() },
        });
    }
    Ok(())
}

impl Store {
    /// Writes a resource if `pre` holds; returns its new ETag.
    pub async fn put_resource(
        &self,
        r: &NewResource,
        pre: Precondition,
        at: i64,
    ) -> Result<i64, StoreError> {
        self.put_resource_with_operation(r, pre, None, at).await
    }

    /// Writes a resource if `pre` holds and, in the same transaction,
    /// starts the operation that carries the change out (if any): both or
    /// neither. Fails with [`StoreError::OperationInProgress`] if the
    /// operation's target already has one running.
    pub async fn put_resource_with_operation(
        &self,
        r: &NewResource,
        pre: Precondition,
        operation: Option<&NewOperation>,
        at: i64,
    ) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db("put_resource"))?;
        let etag = write_resource(&mut tx, r, pre, at).await?;
        if let Some(o) = operation {
            insert_operation(&mut tx, o).await?;
        }
        tx.commit().await.map_err(db("put_resource"))?;
        Ok(etag)
    }

    /// A resource by id (case-insensitive).
    pub async fn get_resource(&self, id: &str) -> Result<Option<ResourceRecord>, StoreError> {
        let op = "get_resource";
        let row = sqlx::query(&format!(
            "SELECT {RESOURCE_COLUMNS} FROM resources WHERE key = $1"
        ))
        .bind(key(id))
        .fetch_optional(&self.pool)
        .await
        .map_err(db(op))?;
        row.as_ref().map(|r| resource_from(r, op)).transpose()
    }

    /// The resources of a type, in one resource group or all, by id.
    pub async fn list_resources(
        &self,
        kind: &str,
        resource_group: Option<&str>,
    ) -> Result<Vec<ResourceRecord>, StoreError> {
        let op = "list_resources";
        let rows = match resource_group {
            Some(rg) => {
                sqlx::query(&format!(
                    "SELECT {RESOURCE_COLUMNS} FROM resources WHERE kind = $1 \
                 AND lower(resource_group) = lower($2) ORDER BY key"
                ))
                .bind(kind)
                .bind(rg)
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {RESOURCE_COLUMNS} FROM resources WHERE kind = $1 ORDER BY key"
                ))
                .bind(kind)
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(db(op))?;
        rows.iter().map(|r| resource_from(r, op)).collect()
    }

    /// Resource `id` and, in the same query, the summary of the operation
    /// that speaks for its state (as [`Self::latest_operation_summary`]):
    /// what a GET of a resource with its `provisioningState` reads, in one
    /// round trip.
    pub async fn get_resource_with_operation(
        &self,
        id: &str,
    ) -> Result<Option<(ResourceRecord, Option<(String, OperationStatus, i64)>)>, StoreError> {
        let op = "get_resource_with_operation";
        let columns: Vec<String> = RESOURCE_COLUMNS
            .split(", ")
            .map(|c| format!("r.{c} AS {c}"))
            .collect();
        let row = sqlx::query(&format!(
            "SELECT {}, o.kind AS op_kind, o.status AS op_status, \
             (SELECT COUNT(*) FROM operations WHERE target = $1) AS op_count \
             FROM resources r LEFT JOIN operations o ON o.id = (\
               SELECT id FROM operations WHERE target = $1 \
               ORDER BY CASE WHEN status = 'InProgress' THEN 0 ELSE 1 END, updated_at DESC, \
               created_at DESC, id DESC LIMIT 1) \
             WHERE r.key = $1",
            columns.join(", ")
        ))
        .bind(key(id))
        .fetch_optional(&self.pool)
        .await
        .map_err(db(op))?;
        row.as_ref()
            .map(|r| {
                let resource = resource_from(r, op)?;
                let c = cols(r, "resources", op);
                let summary = match c.opt_text("op_kind")? {
                    Some(kind) => Some((kind, c.parsed("op_status")?, c.int("op_count")?)),
                    None => None,
                };
                Ok((resource, summary))
            })
            .transpose()
    }

    /// The ids of the resources that belong to `parent`, by id: a page of
    /// them is then read with [`Self::get_resources`], without reading
    /// (and parsing) every child's document.
    pub async fn child_ids(&self, parent: &str) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar("SELECT id FROM resources WHERE parent = $1 ORDER BY key")
            .bind(key(parent))
            .fetch_all(&self.pool)
            .await
            .map_err(db("child_ids"))
    }

    /// The resources of `ids` that exist, in key order (at most 500 ids).
    pub async fn get_resources(&self, ids: &[String]) -> Result<Vec<ResourceRecord>, StoreError> {
        let op = "get_resources";
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = &ids[..ids.len().min(500)];
        let marks: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT {RESOURCE_COLUMNS} FROM resources WHERE key IN ({}) ORDER BY key",
            marks.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for id in ids {
            q = q.bind(key(id));
        }
        let rows = q.fetch_all(&self.pool).await.map_err(db(op))?;
        rows.iter().map(|r| resource_from(r, op)).collect()
    }

    /// The resources that belong to `parent` (a scale set's instances), by id.
    pub async fn child_resources(&self, parent: &str) -> Result<Vec<ResourceRecord>, StoreError> {
        let op = "child_resources";
        let rows = sqlx::query(&format!(
            "SELECT {RESOURCE_COLUMNS} FROM resources WHERE parent = $1 ORDER BY key"
        ))
        .bind(key(parent))
        .fetch_all(&self.pool)
        .await
        .map_err(db(op))?;
        rows.iter().map(|r| resource_from(r, op)).collect()
    }

    /// Every resource under resource group `group_id` (not the group
    /// itself), by id.
    pub async fn resources_in_group(
        &self,
        group_id: &str,
    ) -> Result<Vec<ResourceRecord>, StoreError> {
        let op = "resources_in_group";
        let rows = sqlx::query(&format!(
            "SELECT {RESOURCE_COLUMNS} FROM resources WHERE key LIKE $1 ESCAPE '\\' ORDER BY key"
        ))
        .bind(group_pattern(group_id))
        .fetch_all(&self.pool)
        .await
        .map_err(db(op))?;
        rows.iter().map(|r| resource_from(r, op)).collect()
    }

    /// Deletes resource group `group_id` if it holds no resource, in one
    /// transaction with the check (its row locked first, as every write
    /// of a resource in it locks it: see `ensure_group`).
    pub async fn delete_resource_group(&self, group_id: &str) -> Result<GroupDeletion, StoreError> {
        let op = "delete_resource_group";
        let k = key(group_id);
        let pattern = group_pattern(group_id);
        let mut tx = self.pool.begin().await.map_err(db(op))?;
        let locked = sqlx::query("UPDATE resources SET etag = etag WHERE key = $1 AND kind = $2")
            .bind(&k)
            .bind(RESOURCE_GROUP_TYPE)
            .execute(&mut *tx)
            .await
            .map_err(db(op))?;
        if locked.rows_affected() == 0 {
            tx.rollback().await.map_err(db(op))?;
            return Ok(GroupDeletion::Absent);
        }
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM resources WHERE key LIKE $1 ESCAPE '\\'")
                .bind(&pattern)
                .fetch_one(&mut *tx)
                .await
                .map_err(db(op))?;
        if count > 0 {
            let ids: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM resources WHERE key LIKE $1 ESCAPE '\\' ORDER BY key LIMIT 10",
            )
            .bind(&pattern)
            .fetch_all(&mut *tx)
            .await
            .map_err(db(op))?;
            tx.rollback().await.map_err(db(op))?;
            return Ok(GroupDeletion::NotEmpty {
                ids,
                count: u64::try_from(count).unwrap_or(0),
            });
        }
        sqlx::query("DELETE FROM resources WHERE key = $1")
            .bind(&k)
            .execute(&mut *tx)
            .await
            .map_err(db(op))?;
        tx.commit().await.map_err(db(op))?;
        Ok(GroupDeletion::Deleted)
    }

    /// Deletes a resource if `pre` holds (`Absent` is refused as
    /// meaningless); `false` if there was none and `pre` is `Any`.
    pub async fn delete_resource(&self, id: &str, pre: Precondition) -> Result<bool, StoreError> {
        let op = "delete_resource";
        let done = match pre {
            Precondition::Any => {
                sqlx::query("DELETE FROM resources WHERE key = $1")
                    .bind(key(id))
                    .execute(&self.pool)
                    .await
            }
            Precondition::Etag(e) => {
                sqlx::query("DELETE FROM resources WHERE key = $1 AND etag = $2")
                    .bind(key(id))
                    .bind(e)
                    .execute(&self.pool)
                    .await
            }
            Precondition::Absent => {
                return Err(StoreError::PreconditionFailed {
                    id: id.to_string(),
                    expected: None,
                    current: None,
                })
            }
        }
        .map_err(db(op))?;
        if done.rows_affected() == 1 {
            return Ok(true);
        }
        if let Precondition::Etag(e) = pre {
            let current = self.get_resource(id).await?.map(|r| r.etag);
            return Err(StoreError::PreconditionFailed {
                id: id.to_string(),
                expected: Some(e),
                current,
            });
        }
        Ok(false)
    }

    /// Starts an operation on its own (no resource change).
    pub async fn start_operation(&self, o: &NewOperation) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db("start_operation"))?;
        insert_operation(&mut tx, o).await?;
        tx.commit().await.map_err(db("start_operation"))
    }

    /// An operation as clients poll it, without its state: what it is,
    /// its status, error and progress (`None` for an operation whose
    /// progress was never recorded: one started before progress was kept).
    pub async fn operation_summary(
        &self,
        id: &str,
    ) -> Result<Option<OperationSummary>, StoreError> {
        let op = "operation_summary";
        let row = sqlx::query(
            "SELECT id, kind, target, status, error, progress, cancel_requested, created_at, \
             updated_at FROM operations WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db(op))?;
        row.as_ref()
            .map(|r| {
                let c = cols(r, "operations", op);
                Ok(OperationSummary {
                    id: c.text("id")?,
                    kind: c.text("kind")?,
                    target: c.text("target")?,
                    status: c.parsed("status")?,
                    error: c.opt_json("error")?,
                    progress: c.opt_json("progress")?,
                    cancel_requested: c.int("cancel_requested")? != 0,
                    created_at: c.int("created_at")?,
                    updated_at: c.int("updated_at")?,
                })
            })
            .transpose()
    }

    /// vCPUs in use per size family by the resources of `kinds` under
    /// `prefix` (a subscription's `/subscriptions/S/`), summed from the
    /// usage kept with each resource, and the resources of those kinds
    /// whose usage was never recorded (written before it was kept), for
    /// the caller to count from their documents.
    pub async fn usage_under(
        &self,
        prefix: &str,
        kinds: &[&str],
    ) -> Result<(Vec<(String, i64)>, Vec<ResourceRecord>), StoreError> {
        let op = "usage_under";
        let pattern = prefix_pattern(prefix);
        // By kind first: the kind index narrows the rows to the VMs and
        // sets (not their instances), and only those are matched by id.
        let mut totals = std::collections::BTreeMap::<String, i64>::new();
        for kind in kinds {
            let rows = sqlx::query(
                "SELECT usage_family, CAST(SUM(usage_vcpus) AS BIGINT) AS vcpus FROM resources \
                 WHERE kind = $1 AND key LIKE $2 ESCAPE '\\' AND usage_family IS NOT NULL \
                 GROUP BY usage_family",
            )
            .bind(*kind)
            .bind(&pattern)
            .fetch_all(&self.pool)
            .await
            .map_err(db(op))?;
            for r in &rows {
                let c = cols(r, "resources", op);
                let t = totals.entry(c.text("usage_family")?).or_default();
                *t = t.saturating_add(c.int("vcpus")?);
            }
        }
        let sums: Vec<(String, i64)> = totals.into_iter().collect();
        let mut unrecorded = Vec::new();
        for kind in kinds {
            let rows = sqlx::query(&format!(
                "SELECT {RESOURCE_COLUMNS} FROM resources WHERE kind = $1 \
                 AND key LIKE $2 ESCAPE '\\' AND usage_family IS NULL ORDER BY key"
            ))
            .bind(*kind)
            .bind(&pattern)
            .fetch_all(&self.pool)
            .await
            .map_err(db(op))?;
            for r in &rows {
                unrecorded.push(resource_from(r, op)?);
            }
        }
        Ok((sums, unrecorded))
    }

    /// An operation by id.
    pub async fn get_operation(&self, id: &str) -> Result<Option<OperationRecord>, StoreError> {
        let op = "get_operation";
        let row = sqlx::query(&format!(
            "SELECT {OPERATION_COLUMNS} FROM operations WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db(op))?;
        row.as_ref().map(|r| operation_from(r, op)).transpose()
    }

    /// The operations on a resource, newest first.
    pub async fn operations_on(&self, target: &str) -> Result<Vec<OperationRecord>, StoreError> {
        let op = "operations_on";
        let rows = sqlx::query(&format!(
            "SELECT {OPERATION_COLUMNS} FROM operations WHERE target = $1 \
             ORDER BY created_at DESC, id DESC"
        ))
        .bind(key(target))
        .fetch_all(&self.pool)
        .await
        .map_err(db(op))?;
        rows.iter().map(|r| operation_from(r, op)).collect()
    }

    /// The operation that speaks for a resource's state, lightly — the one
    /// running, else the one that ended last: its kind, its status
    /// and how many operations the resource has had (1: this is its
    /// first) — what a resource's `provisioningState` is made of, without
    /// reading any operation's state.
    pub async fn latest_operation_summary(
        &self,
        target: &str,
    ) -> Result<Option<(String, OperationStatus, i64)>, StoreError> {
        let op = "latest_operation_summary";
        let row = sqlx::query(
            // The running one if any (at most one runs per resource), else
            // the one that ended last.
            "SELECT kind, status, (SELECT COUNT(*) FROM operations WHERE target = $1) AS n \
             FROM operations WHERE target = $1 \
             ORDER BY CASE WHEN status = 'InProgress' THEN 0 ELSE 1 END, updated_at DESC, \
             created_at DESC, id DESC LIMIT 1",
        )
        .bind(key(target))
        .fetch_optional(&self.pool)
        .await
        .map_err(db(op))?;
        row.as_ref()
            .map(|r| {
                let c = cols(r, "operations", op);
                Ok((c.text("kind")?, c.parsed("status")?, c.int("n")?))
            })
            .transpose()
    }

    /// Writes one step of an operation if nobody wrote one since the
    /// writer read it (`expected_revision`), optionally together with a
    /// resource change (one transaction); returns the new revision. A
    /// server that lost its lease to another fails here and stops.
    pub async fn step_operation(
        &self,
        id: &str,
        step: &OperationStep,
        resource: Option<(&NewResource, Precondition)>,
    ) -> Result<i64, StoreError> {
        let op = "step_operation";
        let next = step
            .expected_revision
            .checked_add(1)
            .ok_or(StoreError::OperationChanged {
                id: id.to_string(),
                expected: step.expected_revision,
            })?;
        let mut tx = self.pool.begin().await.map_err(db(op))?;
        let ended = step.status != OperationStatus::InProgress;
        let done = sqlx::query(
            "UPDATE operations SET status = $1, state = $2, error = $3, revision = $4, \
             updated_at = $5, lease_owner = CASE WHEN $6 = 1 THEN NULL ELSE lease_owner END, \
             lease_until = CASE WHEN $6 = 1 THEN NULL ELSE lease_until END, \
             progress = COALESCE($9, progress) WHERE id = $7 AND revision = $8",
        )
        .bind(step.status.as_str())
        .bind(step.state.to_string())
        .bind(step.error.as_ref().map(Value::to_string))
        .bind(next)
        .bind(step.at)
        .bind(i64::from(ended))
        .bind(id)
        .bind(step.expected_revision)
        .bind(step.progress.as_ref().map(Value::to_string))
        .execute(&mut *tx)
        .await
        .map_err(db(op))?;
        if done.rows_affected() != 1 {
            return Err(StoreError::OperationChanged {
                id: id.to_string(),
                expected: step.expected_revision,
            });
        }
        if let Some((r, pre)) = resource {
            write_resource(&mut tx, r, pre, step.at).await?;
        }
        tx.commit().await.map_err(db(op))?;
        Ok(next)
    }

    /// Asks a running operation to stop: it is flagged (its revision does
    /// not move, so the server running it is not disturbed mid-step) and
    /// that server stops it at its next step. `false` if it is not
    /// running.
    pub async fn request_cancel(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE operations SET cancel_requested = 1 WHERE id = $1 AND status = 'InProgress'",
        )
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db("request_cancel"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Extends `owner`'s lease on running operation `id` to `now +
    /// lease_seconds` (a long step, such as a health wait, keeps it). The
    /// revision does not move. `false` if `owner` no longer holds it
    /// (another server took it over, or it ended): the caller stops.
    pub async fn renew_lease(
        &self,
        id: &str,
        owner: &str,
        now: i64,
        lease_seconds: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE operations SET lease_until = $1 \
             WHERE id = $2 AND lease_owner = $3 AND status = 'InProgress'",
        )
        .bind(now.saturating_add(lease_seconds))
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(db("renew_lease"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Claims a running operation for `owner` until `now + lease_seconds`:
    /// one whose lease expired (its server died) or was never taken, or
    /// one `owner` already holds (renewal). Oldest first; `None` if there
    /// is nothing to run.
    pub async fn claim_operation(
        &self,
        owner: &str,
        now: i64,
        lease_seconds: i64,
    ) -> Result<Option<OperationRecord>, StoreError> {
        let op = "claim_operation";
        let until = now.saturating_add(lease_seconds);
        let candidates: Vec<(String, i64)> = sqlx::query_as(
            "SELECT id, revision FROM operations WHERE status = 'InProgress' \
             AND (lease_until IS NULL OR lease_until < $1 OR lease_owner = $2) \
             ORDER BY created_at, id LIMIT 16",
        )
        .bind(now)
        .bind(owner)
        .fetch_all(&self.pool)
        .await
        .map_err(db(op))?;
        for (id, revision) in candidates {
            // Compare-and-set on the revision: of two servers claiming at
            // once, one wins.
            let next = revision.saturating_add(1);
            let done = sqlx::query(
                "UPDATE operations SET lease_owner = $1, lease_until = $2, revision = $3 \
                 WHERE id = $4 AND revision = $5 AND status = 'InProgress'",
            )
            .bind(owner)
            .bind(until)
            .bind(next)
            .bind(&id)
            .bind(revision)
            .execute(&self.pool)
            .await
            .map_err(db(op))?;
            if done.rows_affected() == 1 {
                return self.get_operation(&id).await;
            }
        }
        Ok(None)
    }
}
