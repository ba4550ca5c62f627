//! Strings in event data: UCS-2/UTF-16LE (CHAR16) and ASCII/UTF-8.

/// Decodes UTF-16LE code units; `None` on odd length or invalid UTF-16.
/// Trailing NULs are dropped.
pub fn utf16le(bytes: &[u8]) -> Option<String> {
    if bytes.len() % 2 != 0 {
        return None;
    }
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|p| match p {
            [lo, hi] => u16::from_le_bytes([*lo, *hi]),
            _ => 0,
        })
        .collect();
    let end = units
        .iter()
        .rposition(|u| *u != 0)
        .map_or(0, |i| i.saturating_add(1));
    String::from_utf16(units.get(..end)?).ok()
}

/// Reads a NUL-terminated CHAR16 string from the start of `bytes`; returns
/// the string and the number of bytes it took (terminator included).
pub fn utf16le_nul(bytes: &[u8]) -> Option<(String, usize)> {
    let mut units = Vec::new();
    for pair in bytes.chunks_exact(2) {
        let u = match pair {
            [lo, hi] => u16::from_le_bytes([*lo, *hi]),
            _ => return None,
        };
        if u == 0 {
            let used = units.len().checked_add(1)?.checked_mul(2)?;
            return Some((String::from_utf16(&units).ok()?, used));
        }
        units.push(u);
    }
    None
}

/// Decodes text that firmware and boot loaders log: UTF-8 (trailing NULs
/// dropped) when it is printable, else UTF-16LE when that is printable.
pub fn printable(bytes: &[u8]) -> Option<(String, TextEncoding)> {
    let trimmed = trim_nuls(bytes);
    if let Ok(s) = core::str::from_utf8(trimmed) {
        if is_printable(s) && !(s.len() > 1 && looks_utf16(bytes)) {
            return Some((s.to_string(), TextEncoding::Utf8));
        }
    }
    if let Some(s) = utf16le(bytes) {
        if is_printable(&s) {
            return Some((s, TextEncoding::Utf16le));
        }
    }
    None
}

/// How a decoded string was encoded in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TextEncoding {
    /// ASCII or UTF-8.
    Utf8,
    /// UCS-2 / UTF-16LE (CHAR16).
    Utf16le,
}

fn trim_nuls(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| *b != 0)
        .map_or(0, |i| i.saturating_add(1));
    bytes.get(..end).unwrap_or_default()
}

fn looks_utf16(bytes: &[u8]) -> bool {
    // "a\0b\0": every odd byte zero.
    bytes.len() >= 4 && bytes.iter().skip(1).step_by(2).all(|b| *b == 0)
}

fn is_printable(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| !c.is_control() || c == '\n' || c == '\t' || c == '\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_both_encodings() {
        assert_eq!(
            printable(b"Exit Boot Services Invocation"),
            Some(("Exit Boot Services Invocation".into(), TextEncoding::Utf8))
        );
        assert_eq!(
            printable(b"grub_cmd: ls\0"),
            Some(("grub_cmd: ls".into(), TextEncoding::Utf8))
        );
        let wide: Vec<u8> = ".linux\0"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        assert_eq!(
            printable(&wide),
            Some((".linux".into(), TextEncoding::Utf16le))
        );
        assert_eq!(printable(&[0x01, 0x02, 0x03]), None);
        assert_eq!(utf16le_nul(&[b'a', 0, 0, 0, 9, 9]), Some(("a".into(), 4)));
        assert_eq!(utf16le_nul(&[b'a', 0]), None);
    }
}
