//! The server's clock: Unix seconds, as the store and the tokens keep
//! them.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Unix seconds now, as the store keeps them.
pub fn now_i64() -> i64 {
    i64::try_from(now()).unwrap_or(i64::MAX)
}
