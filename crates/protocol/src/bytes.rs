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

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lower-case hex of `b`.
pub(crate) fn to_hex(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len().saturating_mul(2));
    for &x in b {
        out.push(char::from(
            DIGITS.get(usize::from(x >> 4)).copied().unwrap_or(b'0'),
        ));
        out.push(char::from(
            DIGITS.get(usize::from(x & 0x0f)).copied().unwrap_or(b'0'),
        ));
    }
    out
}

/// Each byte's value as a lower-case hex digit, 0xff for anything else.
// Evaluated at compile time: an index out of bounds would fail the build,
// it cannot panic at run time.
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
const NIBBLE: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Decodes lower-case hex; `None` on odd length or another character.
/// (A table lookup per digit: event logs of megabytes arrive as hex.)
pub(crate) fn from_hex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.len() % 2 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(b.len() / 2);
    let mut bad = 0u8;
    for p in b.chunks_exact(2) {
        let (h, l) = match p {
            [h, l] => (*h, *l),
            _ => return None,
        };
        let hi = NIBBLE.get(usize::from(h)).copied().unwrap_or(0xff);
        let lo = NIBBLE.get(usize::from(l)).copied().unwrap_or(0xff);
        bad |= hi | lo;
        out.push((hi << 4) | (lo & 0x0f));
    }
    // Valid digits are < 16: any 0xff leaves the high bits set.
    (bad & 0xf0 == 0).then_some(out)
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
