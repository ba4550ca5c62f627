//! Serde helpers: bytes as lowercase hex.

use serde::Serializer;

/// Serializes bytes as lowercase hex.
pub fn hex<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::hex::encode(bytes))
}
