//! The store's one error type.

/// What went wrong in the store. Messages never carry the database
/// password: URLs are redacted and connection failures are scrubbed of it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The URL names no supported database: only `sqlite:` and
    /// `postgres:`/`postgresql:` URLs are accepted.
    #[error("unsupported database URL {url}: expected sqlite://PATH or postgres://...")]
    UnsupportedUrl {
        /// The URL, password redacted.
        url: String,
    },
    /// The database could not be opened or reached.
    #[error("cannot open database {url}: {reason}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// The driver's message, password removed.
        reason: String,
    },
    /// A schema migration failed; the transaction it ran in was rolled back.
    #[error("schema migration to version {version} failed: {source}")]
    Migration {
        /// The version that was being applied.
        version: i64,
        /// The database's error.
        source: sqlx::Error,
    },
    /// The database was migrated by a newer trustlaunch than this one.
    #[error("database schema version {found} is newer than this build knows ({known})")]
    SchemaTooNew {
        /// The highest version recorded in `schema_version`.
        found: i64,
        /// The highest version this build can apply.
        known: i64,
    },
    /// A statement failed.
    #[error("{op}: {source}")]
    Database {
        /// The store operation, e.g. `put_vm`.
        op: &'static str,
        /// The database's error.
        source: sqlx::Error,
    },
    /// Optimistic concurrency: the baseline's version is not the one the
    /// caller expected; nothing was written.
    #[error("baseline of {vm_id} changed concurrently: expected version {expected:?}, current {current:?}")]
    Conflict {
        /// The VM whose baseline was being written.
        vm_id: String,
        /// The version the caller expected (`None`: no baseline yet).
        expected: Option<i64>,
        /// The version stored now (`None`: no baseline).
        current: Option<i64>,
    },
    /// Optimistic concurrency on a resource: its ETag is not the one the
    /// request expected (`If-Match`), it exists where it must not
    /// (`If-None-Match: *`), or it does not exist where it must.
    #[error("resource {id} changed: expected ETag {expected:?}, current {current:?}")]
    PreconditionFailed {
        /// The resource.
        id: String,
        /// The ETag expected (`None`: that it does not exist).
        expected: Option<i64>,
        /// The ETag now (`None`: it does not exist).
        current: Option<i64>,
    },
    /// An operation is already running on the target resource.
    #[error("operation {operation} is already running on {target}")]
    OperationInProgress {
        /// The resource.
        target: String,
        /// The running operation's id.
        operation: String,
    },
    /// An operation with this id exists.
    #[error("operation {id} exists")]
    DuplicateOperation {
        /// The id.
        id: String,
    },
    /// An operation step was written by someone else since it was read
    /// (another server took it over): nothing was written.
    #[error("operation {id} moved past revision {expected}")]
    OperationChanged {
        /// The operation.
        id: String,
        /// The revision the writer expected.
        expected: i64,
    },
    /// A stored value cannot be read back (bad JSON, hex or enum text):
    /// the database was changed outside the store.
    #[error("corrupt value in {table}.{column}: {detail}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// The column.
        column: &'static str,
        /// What is wrong with it.
        detail: String,
    },
}

/// `map_err` helper: a failed statement of operation `op`.
impl StoreError {
    /// SQLite's "database is locked" (`SQLITE_BUSY`, any extended code:
    /// `SQLITE_BUSY_SNAPSHOT` is 517).
    pub(crate) fn is_busy(&self) -> bool {
        match self {
            StoreError::Database {
                source: sqlx::Error::Database(e),
                ..
            } => e
                .code()
                .and_then(|c| c.parse::<i64>().ok())
                .is_some_and(|c| c & 0xff == 5),
            _ => false,
        }
    }
}

pub(crate) fn db(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Database { op, source }
}

/// The URL with its password (userinfo or `password=` query parameter)
/// replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(password) = url_password(url) {
        if !password.is_empty() {
            out = out.replace(password, "***");
        }
    }
    out
}

/// The password of a URL, from its userinfo or a `password=` parameter.
pub(crate) fn url_password(url: &str) -> Option<&str> {
    if let Some((_, rest)) = url.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            if let Some((_, password)) = userinfo.split_once(':') {
                return Some(password);
            }
        }
    }
    let (_, query) = url.split_once('?')?;
    query.split('&').find_map(|kv| kv.strip_prefix("password="))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_userinfo_and_query_passwords() {
        assert_eq!(
            redact_url("postgres://u:s3cret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=s3cret"),
            "postgres://h/db?user=u&password=***"
        );
        assert_eq!(redact_url("sqlite:///tmp/a.db"), "sqlite:///tmp/a.db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}
