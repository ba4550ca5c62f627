//! Lowercase hex, the only encoding this crate prints digests in.

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len().saturating_mul(2));
    for b in bytes {
        for nibble in [b >> 4, b & 0x0f] {
            s.push(char::from(
                HEX.get(usize::from(nibble)).copied().unwrap_or(b'0'),
            ));
        }
    }
    s
}

/// Decodes hex (either case); `None` on odd length or a non-hex character.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => char::from(c)
                .to_digit(16)
                .and_then(|d| u8::try_from(d).ok()),
            _ => None,
        }
    }
    let s = s.strip_prefix("0x").unwrap_or(s).as_bytes();
    if s.len() % 2 != 0 {
        return None;
    }
    s.chunks_exact(2)
        .map(|pair| match pair {
            [hi, lo] => Some((nibble(*hi)? << 4) | nibble(*lo)?),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let bytes = [0x00, 0x7f, 0x80, 0xff, 0x12];
        assert_eq!(super::encode(&bytes), "007f80ff12");
        assert_eq!(super::decode("007F80ff12").as_deref(), Some(&bytes[..]));
        assert_eq!(super::decode("0x00").as_deref(), Some(&[0u8][..]));
        assert!(super::decode("abc").is_none());
        assert!(super::decode("zz").is_none());
    }
}
