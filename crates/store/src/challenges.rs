//! Challenges: the server's own single-use nonces. A challenge is issued
//! for one VM, may gain the credential the server made for an AK under the
//! VM's recorded EK (kept only as the SHA-256 of its secret), and is
//! consumed by the attestation that answers it — in the transaction that
//! records that attestation, so a retry after a crash still finds either
//! the unused challenge or the recorded result, and a second answer finds
//! neither.

use sqlx::any::AnyRow;

use crate::error::{db, StoreError};
use crate::hex;
use crate::records::{ChallengeRecord, NewAttestation};
use crate::tables::cols;
use crate::Store;

const COLUMNS: &str =
    "id, vm_id, nonce, ak_public, secret_sha256, issued_to, created_at, expires_at, used_at";

fn challenge_from(row: &AnyRow, op: &'static str) -> Result<ChallengeRecord, StoreError> {
    let c = cols(row, "challenges", op);
    let secret = c
        .opt_text("secret_sha256")?
        .map(|s| {
            hex::decode(&s)
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| c.corrupt("secret_sha256", "not 32 hex bytes".into()))
        })
        .transpose()?;
    let ak = c
        .opt_text("ak_public")?
        .map(|s| hex::decode(&s).ok_or_else(|| c.corrupt("ak_public", "not hex".into())))
        .transpose()?;
    Ok(ChallengeRecord {
        id: c.text("id")?,
        vm_id: c.text("vm_id")?,
        nonce: c.bytes("nonce")?,
        ak_public: ak,
        secret_sha256: secret,
        issued_to: c.text("issued_to")?,
        created_at: c.int("created_at")?,
        expires_at: c.int("expires_at")?,
        used_at: c.opt_int("used_at")?,
    })
}

/// What recording an attestation against a challenge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Answered {
    /// The challenge was consumed and the attestation recorded.
    Recorded,
    /// An attestation with this (VM, nonce) was already recorded: a
    /// retry; nothing written.
    AlreadyRecorded,
    /// The challenge is unknown, used, expired, or another VM's: nothing
    /// written.
    ChallengeGone,
}

impl Store {
    /// Issues a challenge (and drops those that expired before `now`).
    pub async fn put_challenge(&self, c: &ChallengeRecord, now: i64) -> Result<(), StoreError> {
        let op = "put_challenge";
        sqlx::query("DELETE FROM challenges WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(db(op))?;
        sqlx::query(&format!(
            "INSERT INTO challenges ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(&c.id)
        .bind(&c.vm_id)
        .bind(hex::encode(&c.nonce))
        .bind(c.ak_public.as_deref().map(hex::encode))
        .bind(c.secret_sha256.as_ref().map(|s| hex::encode(s)))
        .bind(&c.issued_to)
        .bind(c.created_at)
        .bind(c.expires_at)
        .bind(c.used_at)
        .execute(&self.pool)
        .await
        .map_err(db(op))?;
        Ok(())
    }

    /// The challenge `id`, if it exists.
    pub async fn get_challenge(&self, id: &str) -> Result<Option<ChallengeRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM challenges WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("get_challenge"))?;
        row.map(|r| challenge_from(&r, "get_challenge")).transpose()
    }

    /// Records the credential made for `ak_public` on a challenge that has
    /// none yet and is still open at `now`. Returns whether it did (a
    /// challenge's credential is made once).
    pub async fn set_challenge_credential(
        &self,
        id: &str,
        ak_public: &[u8],
        secret_sha256: &[u8; 32],
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE challenges SET ak_public = $2, secret_sha256 = $3 \
             WHERE id = $1 AND ak_public IS NULL AND used_at IS NULL AND expires_at > $4",
        )
        .bind(id)
        .bind(hex::encode(ak_public))
        .bind(hex::encode(secret_sha256))
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db("set_challenge_credential"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Consumes challenge `id` (of `a.vm_id`, unused, open at `a.at`) and
    /// records `a` in one transaction.
    pub async fn answer_challenge(
        &self,
        id: &str,
        a: &NewAttestation,
    ) -> Result<Answered, StoreError> {
        self.retry_busy(|| self.answer_challenge_once(id, a)).await
    }

    async fn answer_challenge_once(
        &self,
        id: &str,
        a: &NewAttestation,
    ) -> Result<Answered, StoreError> {
        let op = "answer_challenge";
        let mut tx = self.pool.begin().await.map_err(db(op))?;
        let recorded = sqlx::query("SELECT 1 FROM attestations WHERE vm_id = $1 AND nonce = $2")
            .bind(&a.vm_id)
            .bind(hex::encode(&a.nonce))
            .fetch_optional(&mut *tx)
            .await
            .map_err(db(op))?;
        if recorded.is_some() {
            return Ok(Answered::AlreadyRecorded);
        }
        let taken = sqlx::query(
            "UPDATE challenges SET used_at = $3 WHERE id = $1 AND vm_id = $2 \
             AND used_at IS NULL AND expires_at > $3 AND nonce = $4",
        )
        .bind(id)
        .bind(&a.vm_id)
        .bind(a.at)
        .bind(hex::encode(&a.nonce))
        .execute(&mut *tx)
        .await
        .map_err(db(op))?;
        if taken.rows_affected() == 0 {
            return Ok(Answered::ChallengeGone);
        }
        let inserted = crate::tables::insert_attestation(&mut tx, a, op).await?;
        if !inserted {
            return Ok(Answered::AlreadyRecorded);
        }
        tx.commit().await.map_err(db(op))?;
        Ok(Answered::Recorded)
    }
}
