//! Byte strings carried as lower-case hex.

use core::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A byte string, lower-case hex on the wire.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bytes(pub Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes)", self.0.len())
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Self(v)
    }
}

impl From<&[u8]> for Bytes {
    fn from(v: &[u8]) -> Self {
        Self(v.to_vec())
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&to_hex(&self.0))
    }
}

/// Lower-case hex of `b`.
pub(crate) fn to_hex(b: &[u8]) -> String {
    faster_hex::hex_string(b)
}

/// Decodes lower-case hex; `None` on odd length or another character
/// (upper-case digits included: one spelling per value). Event logs of
/// megabytes arrive as hex: faster-hex checks and decodes with SIMD where
/// the CPU has it.
pub(crate) fn from_hex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.len() % 2 != 0 {
        return None;
    }
    let mut out = vec![0u8; b.len() / 2];
    faster_hex::hex_decode_with_case(b, &mut out, faster_hex::CheckCase::Lower).ok()?;
    Some(out)
}

struct HexVisitor;

impl Visitor<'_> for HexVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("lower-case hex")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Bytes, E> {
        from_hex(v)
            .map(Bytes)
            .ok_or_else(|| E::invalid_value(de::Unexpected::Str(truncate(v)), &self))
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(32) {
        Some((i, _)) => s.get(..i).unwrap_or(s),
        None => s,
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(HexVisitor)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects() {
        let b = Bytes(vec![0, 1, 0xab, 0xff]);
        let s = serde_json::to_string(&b).unwrap();
        assert_eq!(s, "\"0001abff\"");
        assert_eq!(serde_json::from_str::<Bytes>(&s).unwrap(), b);
        for bad in ["\"abc\"", "\"AB\"", "\"zz\"", "12"] {
            assert!(serde_json::from_str::<Bytes>(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod hex_tests {
    use super::{from_hex, to_hex};

    #[test]
    fn every_byte_round_trips_and_only_lower_case_hex_decodes() {
        let all: Vec<u8> = (0..=255).collect();
        let h = to_hex(&all);
        assert_eq!(from_hex(&h), Some(all));
        assert_eq!(from_hex(""), Some(vec![]));
        assert_eq!(from_hex("abc"), None, "odd length");
        // The characters next to each digit range, and upper case.
        for bad in ["/0", "0:", "`0", "0g", "AB", "0F", "é0", "0 "] {
            assert_eq!(from_hex(bad), None, "{bad:?}");
        }
    }
}
