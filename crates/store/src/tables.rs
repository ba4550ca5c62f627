//! The typed operations of [`Store`], table by table.

use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::error::{db, StoreError};
use crate::hex;
use crate::records::{
    AlertFilter, AlertRecord, ApiTokenRecord, AttestationRecord, Baseline, BaselineAuditEntry,
    BaselineChange, Enrollment, NewAttestation, NewAuditEntry, Role, SigningKeyRecord,
    SuppressionRule, VmPage, VmQuery, VmRecord, VmRow, VmSort, VmStamp,
};
use crate::Store;

/// Reads column `column` of a row of `table`.
pub(crate) struct Cols<'r> {
    row: &'r AnyRow,
    table: &'static str,
    op: &'static str,
}

impl Cols<'_> {
    pub(crate) fn text(&self, column: &'static str) -> Result<String, StoreError> {
        self.row.try_get::<String, _>(column).map_err(db(self.op))
    }
    pub(crate) fn opt_text(&self, column: &'static str) -> Result<Option<String>, StoreError> {
        self.row
            .try_get::<Option<String>, _>(column)
            .map_err(db(self.op))
    }
    pub(crate) fn int(&self, column: &'static str) -> Result<i64, StoreError> {
        self.row.try_get::<i64, _>(column).map_err(db(self.op))
    }
    pub(crate) fn opt_int(&self, column: &'static str) -> Result<Option<i64>, StoreError> {
        self.row
            .try_get::<Option<i64>, _>(column)
            .map_err(db(self.op))
    }
    pub(crate) fn flag(&self, column: &'static str) -> Result<bool, StoreError> {
        match self.int(column)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(self.corrupt(column, format!("boolean {other}"))),
        }
    }
    pub(crate) fn json(&self, column: &'static str) -> Result<Value, StoreError> {
        let s = self.text(column)?;
        self.parse_json(column, &s)
    }
    pub(crate) fn opt_json(&self, column: &'static str) -> Result<Option<Value>, StoreError> {
        self.opt_text(column)?
            .map(|s| self.parse_json(column, &s))
            .transpose()
    }
    pub(crate) fn parse_json(&self, column: &'static str, s: &str) -> Result<Value, StoreError> {
        serde_json::from_str(s).map_err(|e| self.corrupt(column, e.to_string()))
    }
    pub(crate) fn bytes(&self, column: &'static str) -> Result<Vec<u8>, StoreError> {
        let s = self.text(column)?;
        hex::decode(&s).ok_or_else(|| self.corrupt(column, "not hex".into()))
    }
    pub(crate) fn parsed<T: std::str::FromStr<Err = String>>(
        &self,
        column: &'static str,
    ) -> Result<T, StoreError> {
        self.text(column)?
            .parse()
            .map_err(|e| self.corrupt(column, e))
    }
    pub(crate) fn corrupt(&self, column: &'static str, detail: String) -> StoreError {
        StoreError::Corrupt {
            table: self.table,
            column,
            detail,
        }
    }
}

pub(crate) fn cols<'r>(row: &'r AnyRow, table: &'static str, op: &'static str) -> Cols<'r> {
    Cols { row, table, op }
}

fn flag(b: bool) -> i64 {
    i64::from(b)
}

/// Inserts an attestation in `tx` and makes it its VM's newest (the VM's
/// `last_*` columns) unless a newer one is there already — by time, then
/// id, as [`Store::latest`] orders them, so that concurrent attestations
/// leave the newest whichever commits last. `false`, writing nothing, for
/// a retry (same VM and nonce).
pub(crate) async fn insert_attestation(
    tx: &mut Transaction<'static, Any>,
    a: &NewAttestation,
    op: &'static str,
) -> Result<bool, StoreError> {
    let row = sqlx::query(
        "INSERT INTO attestations (vm_id, boot_id, nonce, at, healthy, appraisal, token) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (vm_id, nonce) DO NOTHING RETURNING id",
    )
    .bind(&a.vm_id)
    .bind(&a.boot_id)
    .bind(hex::encode(&a.nonce))
    .bind(a.at)
    .bind(flag(a.healthy))
    .bind(a.appraisal.to_string())
    .bind(a.token.clone())
    .fetch_optional(&mut **tx)
    .await
    .map_err(db(op))?;
    let Some(row) = row else {
        return Ok(false);
    };
    let id: i64 = row.try_get(0).map_err(db(op))?;
    sqlx::query(
        "UPDATE vms SET last_id = $2, last_healthy = $3, last_at = $4 WHERE vm_id = $1 \
         AND (last_at IS NULL OR last_at < $4 OR (last_at = $4 AND last_id < $2))",
    )
    .bind(&a.vm_id)
    .bind(id)
    .bind(flag(a.healthy))
    .bind(a.at)
    .execute(&mut **tx)
    .await
    .map_err(db(op))?;
    Ok(true)
}

// ---- vms, enrollments -------------------------------------------------------

fn vm_from(row: &AnyRow, op: &'static str) -> Result<VmRecord, StoreError> {
    let c = cols(row, "vms", op);
    Ok(VmRecord {
        vm_id: c.text("vm_id")?,
        spec: c.json("spec")?,
        ek_public: c.bytes("ek_public")?,
        created_at: c.int("created_at")?,
    })
}

fn enrollment_from(row: &AnyRow, op: &'static str) -> Result<Enrollment, StoreError> {
    let c = cols(row, "enrollments", op);
    Ok(Enrollment {
        vm_id: c.text("vm_id")?,
        ek_certificate: c.bytes("ek_certificate")?,
        ak_public: c.bytes("ak_public")?,
        enrolled_at: c.int("enrolled_at")?,
    })
}

const VM_COLUMNS: &str = "vm_id, spec, ek_public, created_at";

impl Store {
    /// Registers a VM, or replaces its spec and EK (keeping `created_at`),
    /// with its audit entry in the same transaction. A new EK drops the
    /// VM's enrollment.
    pub async fn put_vm(&self, vm: &VmRecord, audit: &NewAuditEntry) -> Result<(), StoreError> {
        self.retry_busy(|| self.put_vm_once(vm, audit)).await
    }

    async fn put_vm_once(&self, vm: &VmRecord, audit: &NewAuditEntry) -> Result<(), StoreError> {
        let op = "put_vm";
        let mut tx = self.pool.begin().await.map_err(db(op))?;
        let old = sqlx::query("SELECT ek_public FROM vms WHERE vm_id = $1")
            .bind(&vm.vm_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db(op))?
            .map(|r| r.try_get::<String, _>(0))
            .transpose()
            .map_err(db(op))?;
        let ek = hex::encode(&vm.ek_public);
        sqlx::query(
            "INSERT INTO vms (vm_id, spec, ek_public, created_at, security_type) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (vm_id) DO UPDATE SET spec = excluded.spec, ek_public = excluded.ek_public, \
             security_type = excluded.security_type, revision = vms.revision + 1",
        )
        .bind(&vm.vm_id)
        .bind(vm.spec.to_string())
        .bind(&ek)
        .bind(vm.created_at)
        .bind(vm.security_type())
        .execute(&mut *tx)
        .await
        .map_err(db(op))?;
        // A VM registered again (after a delete) has its history: its
        // newest attestation is found again.
        sqlx::query(
            "UPDATE vms SET last_id = (SELECT a.id FROM attestations a WHERE a.vm_id = $1 \
             ORDER BY a.at DESC, a.id DESC LIMIT 1) WHERE vm_id = $1 AND last_id IS NULL",
        )
        .bind(&vm.vm_id)
        .execute(&mut *tx)
        .await
        .map_err(db(op))?;
        sqlx::query(
            "UPDATE vms SET last_healthy = (SELECT a.healthy FROM attestations a WHERE a.id = vms.last_id), \
             last_at = (SELECT a.at FROM attestations a WHERE a.id = vms.last_id) \
             WHERE vm_id = $1 AND last_id IS NOT NULL AND last_at IS NULL",
        )
        .bind(&vm.vm_id)
        .execute(&mut *tx)
        .await
        .map_err(db(op))?;
        // An enrollment proved an AK under the EK recorded then: under
        // another EK it proves nothing.
        if old.is_some_and(|o| o != ek) {
            sqlx::query("DELETE FROM enrollments WHERE vm_id = $1")
                .bind(&vm.vm_id)
                .execute(&mut *tx)
                .await
                .map_err(db(op))?;
        }
        crate::access::write_audit(&mut tx, audit, op).await?;
        tx.commit().await.map_err(db(op))?;
        Ok(())
    }

    /// What tells whether anything a VM's appraisal reads changed: its
    /// record's revision, its enrollment time and its baseline's version
    /// (`None`: not registered). One indexed read.
    pub async fn vm_stamp(&self, vm_id: &str) -> Result<Option<VmStamp>, StoreError> {
        let op = "vm_stamp";
        let row = sqlx::query(
            "SELECT v.revision AS revision, \
                    (SELECT e.enrolled_at FROM enrollments e WHERE e.vm_id = v.vm_id) AS enrolled_at, \
                    (SELECT b.version FROM baselines b WHERE b.vm_id = v.vm_id) AS baseline_version \
             FROM vms v WHERE v.vm_id = $1",
        )
        .bind(vm_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db(op))?;
        row.map(|r| {
            let c = cols(&r, "vms", op);
            Ok(VmStamp {
                revision: c.int("revision")?,
                enrolled_at: c.opt_int("enrolled_at")?,
                baseline_version: c.opt_int("baseline_version")?,
            })
        })
        .transpose()
    }

    /// The VM `vm_id`, if registered.
    pub async fn get_vm(&self, vm_id: &str) -> Result<Option<VmRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {VM_COLUMNS} FROM vms WHERE vm_id = $1"))
            .bind(vm_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("get_vm"))?;
        row.map(|r| vm_from(&r, "get_vm")).transpose()
    }

    /// Every registered VM, by `vm_id`.
    pub async fn list_vms(&self) -> Result<Vec<VmRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {VM_COLUMNS} FROM vms ORDER BY vm_id"))
            .fetch_all(&self.pool)
            .await
            .map_err(db("list_vms"))?;
        rows.iter().map(|r| vm_from(r, "list_vms")).collect()
    }

    /// Removes a VM and its enrollment (its attestations, baseline and
    /// audit trail stay: they are history). Returns whether it existed.
    pub async fn delete_vm(&self, vm_id: &str) -> Result<bool, StoreError> {
        let op = "delete_vm";
        let mut tx = self.pool.begin().await.map_err(db(op))?;
        sqlx::query("DELETE FROM enrollments WHERE vm_id = $1")
            .bind(vm_id)
            .execute(&mut *tx)
            .await
            .map_err(db(op))?;
        let done = sqlx::query("DELETE FROM vms WHERE vm_id = $1")
            .bind(vm_id)
            .execute(&mut *tx)
            .await
            .map_err(db(op))?;
        tx.commit().await.map_err(db(op))?;
        Ok(done.rows_affected() > 0)
    }

    /// Records a VM's enrollment, replacing an earlier one.
    pub async fn put_enrollment(&self, enrollment: &Enrollment) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO enrollments (vm_id, ek_certificate, ak_public, enrolled_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (vm_id) DO UPDATE SET \
             ek_certificate = excluded.ek_certificate, ak_public = excluded.ak_public, \
             enrolled_at = excluded.enrolled_at",
        )
        .bind(&enrollment.vm_id)
        .bind(hex::encode(&enrollment.ek_certificate))
        .bind(hex::encode(&enrollment.ak_public))
        .bind(enrollment.enrolled_at)
        .execute(&self.pool)
        .await
        .map_err(db("put_enrollment"))?;
        Ok(())
    }

    /// The enrollment of `vm_id`, if any.
    pub async fn get_enrollment(&self, vm_id: &str) -> Result<Option<Enrollment>, StoreError> {
        let row = sqlx::query(
            "SELECT vm_id, ek_certificate, ak_public, enrolled_at FROM enrollments \
             WHERE vm_id = $1",
        )
        .bind(vm_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("get_enrollment"))?;
        row.map(|r| enrollment_from(&r, "get_enrollment"))
            .transpose()
    }
}

// ---- attestations -----------------------------------------------------------

const ATTESTATION_COLUMNS: &str = "id, vm_id, boot_id, nonce, at, healthy, appraisal, token";

fn attestation_from(row: &AnyRow, op: &'static str) -> Result<AttestationRecord, StoreError> {
    let c = cols(row, "attestations", op);
    Ok(AttestationRecord {
        id: c.int("id")?,
        attestation: NewAttestation {
            vm_id: c.text("vm_id")?,
            boot_id: c.text("boot_id")?,
            nonce: c.bytes("nonce")?,
            at: c.int("at")?,
            healthy: c.flag("healthy")?,
            appraisal: c.json("appraisal")?,
            token: c.opt_text("token")?,
        },
    })
}

impl Store {
    /// Records an attestation. Returns `false`, writing nothing, if one
    /// with the same (vm_id, nonce) is already recorded: a retry.
    pub async fn add_attestation(&self, a: &NewAttestation) -> Result<bool, StoreError> {
        let op = "add_attestation";
        let mut tx = self.pool.begin().await.map_err(db(op))?;
        let recorded = insert_attestation(&mut tx, a, op).await?;
        tx.commit().await.map_err(db(op))?;
        Ok(recorded)
    }

    /// The newest `limit` attestations of `vm_id`, newest first (by time,
    /// then by insertion).
    pub async fn history(
        &self,
        vm_id: &str,
        limit: u32,
    ) -> Result<Vec<AttestationRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ATTESTATION_COLUMNS} FROM attestations WHERE vm_id = $1 \
             ORDER BY at DESC, id DESC LIMIT $2"
        ))
        .bind(vm_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db("history"))?;
        rows.iter()
            .map(|r| attestation_from(r, "history"))
            .collect()
    }

    /// The attestation of `vm_id` that answered `nonce`, if recorded.
    pub async fn attestation_by_nonce(
        &self,
        vm_id: &str,
        nonce: &[u8],
    ) -> Result<Option<AttestationRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ATTESTATION_COLUMNS} FROM attestations WHERE vm_id = $1 AND nonce = $2"
        ))
        .bind(vm_id)
        .bind(hex::encode(nonce))
        .fetch_optional(&self.pool)
        .await
        .map_err(db("attestation_by_nonce"))?;
        row.map(|r| attestation_from(&r, "attestation_by_nonce"))
            .transpose()
    }

    /// Registered VMs by the verdict of their newest attestation:
    /// `healthy`, `unhealthy`, `unknown` (never attested).
    pub async fn vm_health_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let op = "vm_health_counts";
        let rows = sqlx::query(
            "SELECT CASE WHEN last_healthy IS NULL THEN 'unknown' \
                         WHEN last_healthy = 1 THEN 'healthy' ELSE 'unhealthy' END AS health, \
                    COUNT(*) AS n FROM vms GROUP BY 1",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db(op))?;
        rows.iter()
            .map(|r| {
                let c = cols(r, "vms", op);
                Ok((c.text("health")?, u64::try_from(c.int("n")?).unwrap_or(0)))
            })
            .collect()
    }

    /// Registered VMs by security type (`TrustedLaunch`, `Standard`).
    pub async fn vm_security_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let op = "vm_security_counts";
        let rows = sqlx::query("SELECT security_type, COUNT(*) AS n FROM vms GROUP BY 1")
            .fetch_all(&self.pool)
            .await
            .map_err(db(op))?;
        rows.iter()
            .map(|r| {
                let c = cols(r, "vms", op);
                Ok((
                    c.text("security_type")?,
                    u64::try_from(c.int("n")?).unwrap_or(0),
                ))
            })
            .collect()
    }

    /// A page of registered VMs with the verdict of each one's newest
    /// attestation: filtered, sorted (ties by id) and counted in one query.
    pub async fn vm_page(&self, q: &VmQuery) -> Result<VmPage, StoreError> {
        let op = "vm_page";
        let order = match q.sort {
            VmSort::Name => "vm_id",
            VmSort::Health => "COALESCE(last_healthy, -1)",
            VmSort::LastAttested => "COALESCE(last_at, 0)",
            VmSort::Registered => "created_at",
            VmSort::SecurityType => "security_type",
        };
        let dir = if q.descending { "DESC" } else { "ASC" };
        let pattern = q.name_contains.as_deref().map_or_else(String::new, |n| {
            let escaped: String = n
                .to_lowercase()
                .chars()
                .flat_map(|c| match c {
                    '%' | '_' | '\\' => vec!['\\', c],
                    c => vec![c],
                })
                .collect();
            format!("%{escaped}%")
        });
        let sql = format!(
            "SELECT vm_id, security_type, created_at, last_healthy AS healthy, last_at, \
                    COUNT(*) OVER () AS total \
             FROM vms WHERE ($1 = '' OR LOWER(vm_id) LIKE $1 ESCAPE '\\') \
               AND ($2 = '' OR (CASE WHEN last_healthy IS NULL THEN 'unknown' \
                    WHEN last_healthy = 1 THEN 'healthy' ELSE 'unhealthy' END) = $2) \
               AND ($3 = '' OR security_type = $3) \
             ORDER BY {order} {dir}, vm_id {dir} LIMIT $4 OFFSET $5"
        );
        let rows = sqlx::query(&sql)
            .bind(&pattern)
            .bind(q.health.as_deref().unwrap_or(""))
            .bind(q.security_type.as_deref().unwrap_or(""))
            .bind(i64::try_from(q.limit).unwrap_or(i64::MAX))
            .bind(i64::try_from(q.offset).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(db(op))?;
        let mut page = VmPage::default();
        for r in &rows {
            let c = cols(r, "vms", op);
            page.total = u64::try_from(c.int("total")?).unwrap_or(0);
            page.rows.push(VmRow {
                vm_id: c.text("vm_id")?,
                security_type: c.text("security_type")?,
                created_at: c.int("created_at")?,
                healthy: c.opt_int("healthy")?.map(|h| h == 1),
                last_attested_at: c.opt_int("last_at")?,
            });
        }
        if rows.is_empty() && q.offset > 0 {
            // Past the end: the count still answers.
            let mut first = q.clone();
            first.offset = 0;
            first.limit = 1;
            page.total = Box::pin(self.vm_page(&first)).await?.total;
        }
        Ok(page)
    }

    /// The newest attestation of `vm_id`, if any.
    pub async fn latest(&self, vm_id: &str) -> Result<Option<AttestationRecord>, StoreError> {
        Ok(self.history(vm_id, 1).await?.into_iter().next())
    }
}

// ---- baselines --------------------------------------------------------------

fn baseline_from(row: &AnyRow, op: &'static str) -> Result<Baseline, StoreError> {
    let c = cols(row, "baselines", op);
    Ok(Baseline {
        vm_id: c.text("vm_id")?,
        baseline: c.json("baseline")?,
        version: c.int("version")?,
        updated_at: c.int("updated_at")?,
    })
}

fn audit_from(row: &AnyRow, op: &'static str) -> Result<BaselineAuditEntry, StoreError> {
    let c = cols(row, "baseline_audit", op);
    Ok(BaselineAuditEntry {
        id: c.int("id")?,
        vm_id: c.text("vm_id")?,
        change: BaselineChange {
            action: c.parsed("action")?,
            actor: c.text("actor")?,
            at: c.int("at")?,
        },
        old: c.opt_json("old_baseline")?,
        new: c.json("new_baseline")?,
        version: c.int("version")?,
    })
}

async fn stored_version(
    tx: &mut Transaction<'static, Any>,
    vm_id: &str,
    op: &'static str,
) -> Result<Option<(String, i64)>, StoreError> {
    let row = sqlx::query("SELECT baseline, version FROM baselines WHERE vm_id = $1")
        .bind(vm_id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db(op))?;
    row.map(|r| {
        let c = cols(&r, "baselines", op);
        Ok((c.text("baseline")?, c.int("version")?))
    })
    .transpose()
}

impl Store {
    /// The current baseline of `vm_id`, if any.
    pub async fn get_baseline(&self, vm_id: &str) -> Result<Option<Baseline>, StoreError> {
        let row = sqlx::query(
            "SELECT vm_id, baseline, version, updated_at FROM baselines WHERE vm_id = $1",
        )
        .bind(vm_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("get_baseline"))?;
        row.map(|r| baseline_from(&r, "get_baseline")).transpose()
    }

    /// Writes the baseline of `vm_id` if its stored version is still
    /// `expected_version` (`None`: no baseline yet), and appends `change`
    /// to its audit trail in the same transaction. Returns the new version
    /// (1 for the first baseline); [`StoreError::Conflict`] with the
    /// current version, writing nothing, if someone else changed it first.
    pub async fn put_baseline(
        &self,
        vm_id: &str,
        baseline: &Value,
        expected_version: Option<i64>,
        change: &BaselineChange,
    ) -> Result<i64, StoreError> {
        let op = "put_baseline";
        let conflict = |current| StoreError::Conflict {
            vm_id: vm_id.to_string(),
            expected: expected_version,
            current,
        };
        let new_text = baseline.to_string();
        let mut tx = self.pool.begin().await.map_err(db(op))?;
        // A write first: takes SQLite's write lock / PostgreSQL's row lock
        // before the read, so the read-compare-write below is not raced.
        sqlx::query("UPDATE baselines SET version = version WHERE vm_id = $1")
            .bind(vm_id)
            .execute(&mut *tx)
            .await
            .map_err(db(op))?;
        let stored = stored_version(&mut tx, vm_id, op).await?;
        let current = stored.as_ref().map(|(_, v)| *v);
        if current != expected_version {
            return Err(conflict(current));
        }
        let (old_text, new_version) = match (stored, expected_version) {
            (Some((old, _)), Some(expected)) => {
                let new_version = expected.checked_add(1).ok_or_else(|| conflict(current))?;
                let done = sqlx::query(
                    "UPDATE baselines SET baseline = $1, version = $2, updated_at = $3 \
                     WHERE vm_id = $4 AND version = $5",
                )
                .bind(&new_text)
                .bind(new_version)
                .bind(change.at)
                .bind(vm_id)
                .bind(expected)
                .execute(&mut *tx)
                .await
                .map_err(db(op))?;
                if done.rows_affected() != 1 {
                    return Err(conflict(current));
                }
                (Some(old), new_version)
            }
            _ => {
                let done = sqlx::query(
                    "INSERT INTO baselines (vm_id, baseline, version, updated_at) \
                     VALUES ($1, $2, 1, $3) ON CONFLICT (vm_id) DO NOTHING",
                )
                .bind(vm_id)
                .bind(&new_text)
                .bind(change.at)
                .execute(&mut *tx)
                .await
                .map_err(db(op))?;
                if done.rows_affected() != 1 {
                    // Inserted concurrently (PostgreSQL: we waited on its key).
                    let now = stored_version(&mut tx, vm_id, op).await?;
                    return Err(conflict(now.map(|(_, v)| v)));
                }
                (None, 1)
            }
        };
        sqlx::query(
            "INSERT INTO baseline_audit \
             (vm_id, action, actor, at, old_baseline, new_baseline, version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(vm_id)
        .bind(change.action.as_str())
        .bind(&change.actor)
        .bind(change.at)
        .bind(old_text)
        .bind(&new_text)
        .bind(new_version)
        .execute(&mut *tx)
        .await
        .map_err(db(op))?;
        tx.commit().await.map_err(db(op))?;
        Ok(new_version)
    }

    /// The audit trail of `vm_id`'s baseline, oldest first.
    pub async fn baseline_audit(&self, vm_id: &str) -> Result<Vec<BaselineAuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, vm_id, action, actor, at, old_baseline, new_baseline, version \
             FROM baseline_audit WHERE vm_id = $1 ORDER BY id",
        )
        .bind(vm_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db("baseline_audit"))?;
        rows.iter()
            .map(|r| audit_from(r, "baseline_audit"))
            .collect()
    }
}

// ---- alerts, suppression rules ----------------------------------------------

fn alert_from(row: &AnyRow, op: &'static str) -> Result<AlertRecord, StoreError> {
    let c = cols(row, "alerts", op);
    Ok(AlertRecord {
        key: c.text("key")?,
        vm_id: c.text("vm_id")?,
        state: c.text("state")?,
        alert: c.json("alert")?,
        updated_at: c.int("updated_at")?,
    })
}

impl Store {
    /// Creates or replaces the alert `alert.key`.
    pub async fn put_alert(&self, alert: &AlertRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO alerts (key, vm_id, state, alert, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (key) DO UPDATE SET vm_id = excluded.vm_id, state = excluded.state, \
             alert = excluded.alert, updated_at = excluded.updated_at",
        )
        .bind(&alert.key)
        .bind(&alert.vm_id)
        .bind(&alert.state)
        .bind(alert.alert.to_string())
        .bind(alert.updated_at)
        .execute(&self.pool)
        .await
        .map_err(db("put_alert"))?;
        Ok(())
    }

    /// The alerts matching `filter`, by key.
    pub async fn alerts(&self, filter: &AlertFilter) -> Result<Vec<AlertRecord>, StoreError> {
        let mut sql = String::from("SELECT key, vm_id, state, alert, updated_at FROM alerts");
        let mut binds: Vec<&str> = Vec::new();
        for (column, value) in [("vm_id", &filter.vm_id), ("state", &filter.state)] {
            if let Some(value) = value {
                sql.push_str(if binds.is_empty() { " WHERE " } else { " AND " });
                binds.push(value);
                sql.push_str(&format!("{column} = ${}", binds.len()));
            }
        }
        sql.push_str(" ORDER BY key");
        let mut query = sqlx::query(&sql);
        for value in binds {
            query = query.bind(value);
        }
        let rows = query.fetch_all(&self.pool).await.map_err(db("alerts"))?;
        rows.iter().map(|r| alert_from(r, "alerts")).collect()
    }

    /// Creates or replaces the suppression rule `rule.name`.
    pub async fn put_suppression_rule(
        &self,
        rule: &SuppressionRule,
        audit: &NewAuditEntry,
    ) -> Result<(), StoreError> {
        let op = "put_suppression_rule";
        let mut tx = self.pool.begin().await.map_err(db(op))?;
        sqlx::query(
            "INSERT INTO suppression_rules (name, rule) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET rule = excluded.rule",
        )
        .bind(&rule.name)
        .bind(rule.rule.to_string())
        .execute(&mut *tx)
        .await
        .map_err(db(op))?;
        crate::access::write_audit(&mut tx, audit, op).await?;
        tx.commit().await.map_err(db(op))?;
        Ok(())
    }

    /// Every suppression rule, by name.
    pub async fn suppression_rules(&self) -> Result<Vec<SuppressionRule>, StoreError> {
        let op = "suppression_rules";
        let rows = sqlx::query("SELECT name, rule FROM suppression_rules ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(db(op))?;
        rows.iter()
            .map(|r| {
                let c = cols(r, "suppression_rules", op);
                Ok(SuppressionRule {
                    name: c.text("name")?,
                    rule: c.json("rule")?,
                })
            })
            .collect()
    }

    /// Removes the suppression rule `name`. Returns whether it existed.
    pub async fn delete_suppression_rule(
        &self,
        name: &str,
        audit: &NewAuditEntry,
    ) -> Result<bool, StoreError> {
        let op = "delete_suppression_rule";
        let mut tx = self.pool.begin().await.map_err(db(op))?;
        let done = sqlx::query("DELETE FROM suppression_rules WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db(op))?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        crate::access::write_audit(&mut tx, audit, op).await?;
        tx.commit().await.map_err(db(op))?;
        Ok(true)
    }
}

// ---- signing keys, API tokens -----------------------------------------------

fn signing_key_from(row: &AnyRow, op: &'static str) -> Result<SigningKeyRecord, StoreError> {
    let c = cols(row, "signing_keys", op);
    Ok(SigningKeyRecord {
        kid: c.text("kid")?,
        pkcs8_pem: c.text("pkcs8_pem")?,
        created_at: c.int("created_at")?,
        retire_at: c.opt_int("retire_at")?,
        current: c.flag("is_current")?,
    })
}

fn token_from(row: &AnyRow, op: &'static str) -> Result<ApiTokenRecord, StoreError> {
    let c = cols(row, "api_tokens", op);
    let sha256 = c.bytes("sha256")?;
    Ok(ApiTokenRecord {
        sha256: sha256
            .try_into()
            .map_err(|_| c.corrupt("sha256", "not 32 bytes".into()))?,
        name: c.text("name")?,
        role: c.parsed::<Role>("role")?,
        created_at: c.int("created_at")?,
        expires_at: c.opt_int("expires_at")?,
        revoked_at: c.opt_int("revoked_at")?,
        last_used_at: c.opt_int("last_used_at")?,
    })
}

const TOKEN_COLUMNS: &str = "sha256, name, role, created_at, expires_at, revoked_at, last_used_at";

const KEY_COLUMNS: &str = "kid, pkcs8_pem, created_at, retire_at, is_current";

impl Store {
    /// Creates or replaces the signing key `key.kid`. A key put as current
    /// makes every other key not current, in the same transaction.
    pub async fn put_signing_key(&self, key: &SigningKeyRecord) -> Result<(), StoreError> {
        let op = "put_signing_key";
        let mut tx = self.pool.begin().await.map_err(db(op))?;
        if key.current {
            sqlx::query("UPDATE signing_keys SET is_current = 0 WHERE kid <> $1")
                .bind(&key.kid)
                .execute(&mut *tx)
                .await
                .map_err(db(op))?;
        }
        sqlx::query(
            "INSERT INTO signing_keys (kid, pkcs8_pem, created_at, retire_at, is_current) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (kid) DO UPDATE SET \
             pkcs8_pem = excluded.pkcs8_pem, created_at = excluded.created_at, \
             retire_at = excluded.retire_at, is_current = excluded.is_current",
        )
        .bind(&key.kid)
        .bind(&key.pkcs8_pem)
        .bind(key.created_at)
        .bind(key.retire_at)
        .bind(flag(key.current))
        .execute(&mut *tx)
        .await
        .map_err(db(op))?;
        tx.commit().await.map_err(db(op))?;
        Ok(())
    }

    /// Every signing key, oldest first.
    pub async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM signing_keys ORDER BY created_at, kid"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db("signing_keys"))?;
        rows.iter()
            .map(|r| signing_key_from(r, "signing_keys"))
            .collect()
    }

    /// The key that signs new tokens, if one is current.
    pub async fn current_signing_key(&self) -> Result<Option<SigningKeyRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM signing_keys WHERE is_current = 1"
        ))
        .fetch_optional(&self.pool)
        .await
        .map_err(db("current_signing_key"))?;
        row.map(|r| signing_key_from(&r, "current_signing_key"))
            .transpose()
    }

    /// Creates the API token (or replaces the one with this hash),
    /// with its audit entry in the same transaction.
    pub async fn put_api_token(
        &self,
        token: &ApiTokenRecord,
        audit: &NewAuditEntry,
    ) -> Result<(), StoreError> {
        let op = "put_api_token";
        let mut tx = self.pool.begin().await.map_err(db(op))?;
        sqlx::query(
            "INSERT INTO api_tokens (sha256, token_id, name, role, created_at, expires_at, \
             revoked_at, last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (sha256) DO UPDATE SET name = excluded.name, role = excluded.role, \
             created_at = excluded.created_at, expires_at = excluded.expires_at, \
             revoked_at = excluded.revoked_at, last_used_at = excluded.last_used_at",
        )
        .bind(hex::encode(&token.sha256))
        .bind(token.id())
        .bind(&token.name)
        .bind(token.role.as_str())
        .bind(token.created_at)
        .bind(token.expires_at)
        .bind(token.revoked_at)
        .bind(token.last_used_at)
        .execute(&mut *tx)
        .await
        .map_err(db(op))?;
        crate::access::write_audit(&mut tx, audit, op).await?;
        tx.commit().await.map_err(db(op))?;
        Ok(())
    }

    /// The API token whose SHA-256 is `sha256`, if any (revoked and
    /// expired ones too: the caller says why it is refused).
    pub async fn lookup_api_token(
        &self,
        sha256: &[u8; 32],
    ) -> Result<Option<ApiTokenRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE sha256 = $1"
        ))
        .bind(hex::encode(sha256))
        .fetch_optional(&self.pool)
        .await
        .map_err(db("lookup_api_token"))?;
        row.map(|r| token_from(&r, "lookup_api_token")).transpose()
    }

    /// Every API token, by name then hash.
    pub async fn api_tokens(&self) -> Result<Vec<ApiTokenRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY name, sha256"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db("api_tokens"))?;
        rows.iter().map(|r| token_from(r, "api_tokens")).collect()
    }

    /// Revokes the API token with public id `token_id` at `at`, audited in
    /// the same transaction. Returns whether a token that was not revoked
    /// yet was found.
    pub async fn revoke_api_token(
        &self,
        token_id: &str,
        at: i64,
        audit: &NewAuditEntry,
    ) -> Result<bool, StoreError> {
        let op = "revoke_api_token";
        let mut tx = self.pool.begin().await.map_err(db(op))?;
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $2 WHERE token_id = $1 AND revoked_at IS NULL",
        )
        .bind(token_id)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(db(op))?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        crate::access::write_audit(&mut tx, audit, op).await?;
        tx.commit().await.map_err(db(op))?;
        Ok(true)
    }

    /// Notes that the token with this hash was used at `at`.
    pub async fn touch_api_token(&self, sha256: &[u8; 32], at: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_tokens SET last_used_at = $2 WHERE sha256 = $1")
            .bind(hex::encode(sha256))
            .bind(at)
            .execute(&self.pool)
            .await
            .map_err(db("touch_api_token"))?;
        Ok(())
    }
}
