//! The audit log: who changed a registration, a suppression rule or a
//! token, and when. Entries are written by the method that makes the
//! change, in its transaction, so a change is never without its entry.

use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{Any, Transaction};

use crate::error::{db, StoreError};
use crate::records::{AuditEntry, NewAuditEntry};
use crate::tables::cols;
use crate::Store;

/// The most entries one read returns.
pub const MAX_AUDIT_READ: u32 = 10_000;

pub(crate) async fn write_audit(
    tx: &mut Transaction<'static, Any>,
    e: &NewAuditEntry,
    op: &'static str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_log (at, actor, action, target, detail, deliveries, pending) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(e.at)
    .bind(&e.actor)
    .bind(&e.action)
    .bind(&e.target)
    .bind(e.detail.to_string())
    .bind(e.deliveries.as_ref().map(ToString::to_string))
    .bind(i64::from(e.deliveries.is_some()))
    .execute(&mut **tx)
    .await
    .map_err(db(op))?;
    Ok(())
}

fn audit_from(row: &AnyRow, op: &'static str) -> Result<AuditEntry, StoreError> {
    let c = cols(row, "audit_log", op);
    Ok(AuditEntry {
        id: c.int("id")?,
        entry: NewAuditEntry {
            at: c.int("at")?,
            actor: c.text("actor")?,
            action: c.text("action")?,
            target: c.text("target")?,
            detail: c.json("detail")?,
            deliveries: c.opt_json("deliveries")?,
        },
    })
}

impl Store {
    /// Writes one audit entry on its own (for events that change nothing
    /// else in the store).
    pub async fn add_audit(&self, e: &NewAuditEntry) -> Result<(), StoreError> {
        let op = "add_audit";
        let mut tx = self.pool.begin().await.map_err(db(op))?;
        write_audit(&mut tx, e, op).await?;
        tx.commit().await.map_err(db(op))
    }

    /// The newest `limit` entries (at most [`MAX_AUDIT_READ`]), newest
    /// first, optionally only those about `target`.
    pub async fn audit_log(
        &self,
        target: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let op = "audit_log";
        let limit = i64::from(limit.min(MAX_AUDIT_READ));
        let rows = match target {
            Some(t) => {
                sqlx::query(
                    "SELECT id, at, actor, action, target, detail, deliveries FROM audit_log \
                     WHERE target = $1 ORDER BY id DESC LIMIT $2",
                )
                .bind(t)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query(
                    "SELECT id, at, actor, action, target, detail, deliveries FROM audit_log \
                     ORDER BY id DESC LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(db(op))?;
        rows.iter().map(|r| audit_from(r, op)).collect()
    }

    /// The audited events that still owe webhook deliveries, oldest first.
    pub async fn audit_pending(&self) -> Result<Vec<AuditEntry>, StoreError> {
        let op = "audit_pending";
        let rows = sqlx::query(
            "SELECT id, at, actor, action, target, detail, deliveries FROM audit_log \
             WHERE pending = 1 ORDER BY id LIMIT 1000",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db(op))?;
        rows.iter().map(|r| audit_from(r, op)).collect()
    }

    /// Records an audited event's deliveries as they stand now; `pending`
    /// says whether any is still owed.
    pub async fn set_audit_deliveries(
        &self,
        id: i64,
        deliveries: &Value,
        pending: bool,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE audit_log SET deliveries = $2, pending = $3 WHERE id = $1")
            .bind(id)
            .bind(deliveries.to_string())
            .bind(i64::from(pending))
            .execute(&self.pool)
            .await
            .map_err(db("set_audit_deliveries"))?;
        Ok(())
    }
}
