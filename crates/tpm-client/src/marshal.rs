//! Big-endian TPM 2.0 marshalling (TPM 2.0 Part 2 §5, "canonical form"):
//! a checked reader for responses and a writer for commands.
//!
//! The reader never panics: every read is bounds-checked, `TPM2B` lengths
//! are bounded by the remaining input (and by a caller's maximum) before
//! anything is copied, and [`Reader::finish`] rejects trailing bytes.

use thiserror::Error;

/// A marshalling or unmarshalling failure.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MarshalError {
    /// The input ended before a field was complete.
    #[error("truncated: needed {needed} bytes at offset {offset}, {available} available")]
    Truncated {
        /// Offset of the field in the buffer being parsed.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the buffer.
        available: usize,
    },
    /// Bytes were left over after the last field.
    #[error("{count} trailing bytes at offset {offset}")]
    Trailing {
        /// Offset of the first unconsumed byte.
        offset: usize,
        /// Number of unconsumed bytes.
        count: usize,
    },
    /// A sized field exceeds the bound the specification gives it.
    #[error("{what} is {len} bytes, at most {max} allowed")]
    TooLong {
        /// The field.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A field holds a value the specification does not allow here.
    #[error("{what}: unexpected value {value:#x}")]
    Invalid {
        /// The field.
        what: &'static str,
        /// The value found.
        value: u32,
    },
}

/// A checked cursor over untrusted bytes.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, offset: 0 }
    }

    /// Bytes not yet consumed.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Whether every byte has been consumed.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Takes exactly `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], MarshalError> {
        match self.buf.split_at_checked(n) {
            Some((head, tail)) => {
                self.buf = tail;
                self.offset = self.offset.saturating_add(n);
                Ok(head)
            }
            None => Err(MarshalError::Truncated {
                offset: self.offset,
                needed: n,
                available: self.buf.len(),
            }),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], MarshalError> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// A `UINT8` / `BYTE`.
    pub(crate) fn u8(&mut self) -> Result<u8, MarshalError> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    /// A `UINT16`.
    pub(crate) fn u16(&mut self) -> Result<u16, MarshalError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// A `UINT32`.
    pub(crate) fn u32(&mut self) -> Result<u32, MarshalError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// A `TPM2B_*`: a `UINT16` size, then that many bytes, at most `max`.
    pub(crate) fn tpm2b(
        &mut self,
        what: &'static str,
        max: usize,
    ) -> Result<&'a [u8], MarshalError> {
        let len = usize::from(self.u16()?);
        if len > max {
            return Err(MarshalError::TooLong { what, len, max });
        }
        self.take(len)
    }

    /// A byte-counted array: `UINT8` count, then that many bytes, at most `max`.
    pub(crate) fn tpm2b_u8(
        &mut self,
        what: &'static str,
        max: usize,
    ) -> Result<&'a [u8], MarshalError> {
        let len = usize::from(self.u8()?);
        if len > max {
            return Err(MarshalError::TooLong { what, len, max });
        }
        self.take(len)
    }

    /// Runs `parse` and also returns the bytes it consumed, so a structure
    /// can be checked field by field yet handed on exactly as received.
    pub(crate) fn spanned<T>(
        &mut self,
        parse: impl FnOnce(&mut Self) -> Result<T, MarshalError>,
    ) -> Result<(&'a [u8], T), MarshalError> {
        let start = self.buf;
        let value = parse(self)?;
        let used = start.len().saturating_sub(self.buf.len());
        let span = start.get(..used).unwrap_or_default();
        Ok((span, value))
    }

    /// Succeeds only if every byte was consumed.
    pub(crate) fn finish(self) -> Result<(), MarshalError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(MarshalError::Trailing {
                offset: self.offset,
                count: self.buf.len(),
            })
        }
    }
}

/// A command-buffer writer.
#[derive(Debug, Default, Clone)]
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Appends a `UINT8`.
    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    /// Appends a `UINT16`.
    pub(crate) fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends a `UINT32`.
    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends raw bytes.
    pub(crate) fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    /// Appends a `TPM2B_*`: `UINT16` size, then `v`.
    pub(crate) fn tpm2b(
        &mut self,
        what: &'static str,
        v: &[u8],
    ) -> Result<&mut Self, MarshalError> {
        let len = u16::try_from(v.len()).map_err(|_| MarshalError::TooLong {
            what,
            len: v.len(),
            max: usize::from(u16::MAX),
        })?;
        self.u16(len);
        self.bytes(v);
        Ok(self)
    }

    /// The bytes written so far.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_big_endian_and_rejects_truncation() {
        let mut r = Reader::new(&[0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07]);
        assert_eq!(r.u16().unwrap(), 0x0102);
        assert_eq!(r.u32().unwrap(), 0x0304_0506);
        assert_eq!(
            r.u16(),
            Err(MarshalError::Truncated {
                offset: 6,
                needed: 2,
                available: 1
            })
        );
    }

    #[test]
    fn tpm2b_is_bounded_before_copy() {
        let mut r = Reader::new(&[0xff, 0xff, 0x00]);
        assert!(matches!(
            r.tpm2b("x", 64),
            Err(MarshalError::TooLong {
                len: 0xffff,
                max: 64,
                ..
            })
        ));
        let mut r = Reader::new(&[0x00, 0x04, 1, 2]);
        assert!(matches!(
            r.tpm2b("x", 64),
            Err(MarshalError::Truncated { .. })
        ));
    }

    #[test]
    fn finish_rejects_trailing_bytes() {
        let mut r = Reader::new(&[0, 0, 1, 9]);
        assert_eq!(r.tpm2b("x", 8).unwrap(), &[] as &[u8]);
        assert_eq!(r.u8().unwrap(), 1);
        assert!(!r.is_empty());
        assert_eq!(
            r.finish(),
            Err(MarshalError::Trailing {
                offset: 3,
                count: 1
            })
        );
    }

    #[test]
    fn writer_round_trips() {
        let mut w = Writer::new();
        w.u8(7).u16(0x0102).u32(0xdead_beef);
        w.tpm2b("x", &[9, 9]).unwrap();
        let bytes = w.into_bytes();
        assert_eq!(bytes, [7, 1, 2, 0xde, 0xad, 0xbe, 0xef, 0, 2, 9, 9]);
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u16().unwrap(), 0x0102);
        assert_eq!(r.u32().unwrap(), 0xdead_beef);
        assert_eq!(r.tpm2b("x", 2).unwrap(), &[9, 9]);
        assert_eq!(r.remaining(), 0);
        r.finish().unwrap();
    }

    #[test]
    fn writer_rejects_oversized_tpm2b() {
        let big = vec![0u8; 70_000];
        assert!(matches!(
            Writer::new().tpm2b("big", &big),
            Err(MarshalError::TooLong { len: 70_000, .. })
        ));
    }
}
