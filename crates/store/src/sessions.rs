//! The portal's sessions, kept in the store: they outlive a restart and
//! are shared by every server on one database (several servers behind
//! one name need no sticky sessions). A session is known by the SHA-256
//! of its cookie (never the cookie) and keeps the SHA-256 of the API
//! token it signed in with (never the token), so a copy of the database
//! opens no session.

use sqlx::any::AnyRow;

use crate::error::{db, StoreError};
use crate::hex;
use crate::tables::cols;
use crate::Store;

/// A portal session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The SHA-256 of the API token it signed in with.
    pub token_sha256: [u8; 32],
    /// The anti-forgery token its forms carry.
    pub csrf: String,
    /// When it signed in (Unix seconds).
    pub created_at: i64,
    /// When it was last seen, to [`SESSION_TOUCH`] seconds.
    pub seen_at: i64,
    /// A message for its next page, if one is left.
    pub flash: Option<String>,
}

/// How often a session's last sight is written (a page within this of
/// the last write writes nothing).
pub const SESSION_TOUCH: i64 = 60;

fn session_from(row: &AnyRow, op: &'static str) -> Result<SessionRecord, StoreError> {
    let c = cols(row, "portal_sessions", op);
    let sha = c.bytes("token_sha256")?;
    Ok(SessionRecord {
        token_sha256: sha
            .try_into()
            .map_err(|_| c.corrupt("token_sha256", "not 32 bytes".into()))?,
        csrf: c.text("csrf")?,
        created_at: c.int("created_at")?,
        seen_at: c.int("seen_at")?,
        flash: c.opt_text("flash")?,
    })
}

impl Store {
    /// Records a new session whose cookie's SHA-256 is `id_sha256`.
    pub async fn put_session(
        &self,
        id_sha256: &[u8; 32],
        s: &SessionRecord,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO portal_sessions (id_sha256, token_sha256, csrf, created_at, seen_at, flash) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(hex::encode(id_sha256))
        .bind(hex::encode(&s.token_sha256))
        .bind(&s.csrf)
        .bind(s.created_at)
        .bind(s.seen_at)
        .bind(s.flash.clone())
        .execute(&self.pool)
        .await
        .map_err(db("put_session"))?;
        Ok(())
    }

    /// The session `id_sha256` if it is live at `now`: seen less than
    /// `idle` seconds ago and made less than `lifetime` ago. Its last
    /// sight is written when older than [`SESSION_TOUCH`]; a message left
    /// for it is taken (returned once). A session no longer live is
    /// deleted.
    pub async fn session(
        &self,
        id_sha256: &[u8; 32],
        now: i64,
        idle: i64,
        lifetime: i64,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let op = "session";
        let id = hex::encode(id_sha256);
        let row = sqlx::query(
            "SELECT token_sha256, csrf, created_at, seen_at, flash FROM portal_sessions \
             WHERE id_sha256 = $1",
        )
        .bind(&id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db(op))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let s = session_from(&row, op)?;
        if now.saturating_sub(s.seen_at) >= idle || now.saturating_sub(s.created_at) >= lifetime {
            self.end_session(id_sha256).await?;
            return Ok(None);
        }
        if s.flash.is_some() || now.saturating_sub(s.seen_at) >= SESSION_TOUCH {
            // The message is taken only as it was read: one left meanwhile
            // stays for the next page.
            sqlx::query(
                "UPDATE portal_sessions SET seen_at = $2, \
                 flash = CASE WHEN flash = $3 THEN NULL ELSE flash END WHERE id_sha256 = $1",
            )
            .bind(&id)
            .bind(now)
            .bind(s.flash.clone().unwrap_or_default())
            .execute(&self.pool)
            .await
            .map_err(db(op))?;
        }
        Ok(Some(s))
    }

    /// Leaves a message for the session's next page.
    pub async fn set_session_flash(
        &self,
        id_sha256: &[u8; 32],
        flash: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE portal_sessions SET flash = $2 WHERE id_sha256 = $1")
            .bind(hex::encode(id_sha256))
            .bind(flash)
            .execute(&self.pool)
            .await
            .map_err(db("set_session_flash"))?;
        Ok(())
    }

    /// Ends a session. Returns whether there was one.
    pub async fn end_session(&self, id_sha256: &[u8; 32]) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM portal_sessions WHERE id_sha256 = $1")
            .bind(hex::encode(id_sha256))
            .execute(&self.pool)
            .await
            .map_err(db("end_session"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes the sessions no longer live at `now`; returns how many
    /// live ones are left.
    pub async fn purge_sessions(
        &self,
        now: i64,
        idle: i64,
        lifetime: i64,
    ) -> Result<u64, StoreError> {
        let op = "purge_sessions";
        sqlx::query("DELETE FROM portal_sessions WHERE seen_at <= $1 OR created_at <= $2")
            .bind(now.saturating_sub(idle))
            .bind(now.saturating_sub(lifetime))
            .execute(&self.pool)
            .await
            .map_err(db(op))?;
        let row = sqlx::query("SELECT COUNT(*) AS n FROM portal_sessions")
            .fetch_one(&self.pool)
            .await
            .map_err(db(op))?;
        Ok(u64::try_from(cols(&row, "portal_sessions", op).int("n")?).unwrap_or(0))
    }
}
