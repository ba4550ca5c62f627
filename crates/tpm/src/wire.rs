//! The TPM 2.0 wire format (TPM 2.0 Library Part 1 §18, Part 2 §4–§12):
//! big-endian integers and `TPM2B_*` sized buffers, read with a checked
//! cursor and written with a growable buffer.

/// Why unmarshalling failed: what was read and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The input ended inside a field.
    #[error("{what} at offset {offset}: needs {needed} bytes, {available} left")]
    Truncated {
        /// The field.
        what: &'static str,
        /// Offset of the field.
        offset: usize,
        /// Bytes it needs.
        needed: usize,
        /// Bytes left.
        available: usize,
    },
    /// A value is not allowed here (unknown selector, size over the
    /// structure's bound, ...).
    #[error("{what} at offset {offset}: {reason}")]
    Invalid {
        /// The field.
        what: &'static str,
        /// Offset of the field.
        offset: usize,
        /// Why.
        reason: String,
    },
    /// Bytes are left after a structure that must fill its input.
    #[error("{what}: {extra} unexpected bytes after the structure at offset {offset}")]
    Trailing {
        /// The structure.
        what: &'static str,
        /// Offset of the first extra byte.
        offset: usize,
        /// How many.
        extra: usize,
    },
}

/// A big-endian reader over untrusted bytes.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at offset 0.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// Current offset.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    /// Takes `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        let err = WireError::Truncated {
            what,
            offset: self.pos,
            needed: n,
            available: self.remaining(),
        };
        let end = self.pos.checked_add(n).ok_or_else(|| err.clone())?;
        let out = self.bytes.get(self.pos..end).ok_or(err)?;
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    /// A u8.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(u8::from_be_bytes(self.array(what)?))
    }

    /// A big-endian u16.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    /// A big-endian u32.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    /// A big-endian u64.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// A `TPM2B`: a u16 size then that many bytes, at most `max`.
    pub fn tpm2b(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], WireError> {
        let at = self.pos;
        let n = usize::from(self.u16(what)?);
        if n > max {
            return Err(WireError::Invalid {
                what,
                offset: at,
                reason: format!("size {n} exceeds the maximum {max}"),
            });
        }
        self.take(n, what)
    }

    /// Fails unless everything was read.
    pub fn finish(&self, what: &'static str) -> Result<(), WireError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(WireError::Trailing {
                what,
                offset: self.pos,
                extra,
            }),
        }
    }
}

/// A big-endian writer.
#[derive(Clone, Debug, Default)]
pub struct Writer {
    out: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.out
    }

    /// Appends raw bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.out.extend_from_slice(b);
        self
    }

    /// A u8.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes(&[v])
    }

    /// A u16.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    /// A u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    /// A u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    /// A `TPM2B` (sizes above u16::MAX are clamped; callers bound them).
    pub fn tpm2b(&mut self, b: &[u8]) -> &mut Self {
        let n = u16::try_from(b.len()).unwrap_or(u16::MAX);
        self.u16(n);
        self.bytes(b.get(..usize::from(n)).unwrap_or(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sized_buffers_are_bounded() {
        let mut r = Reader::new(&[0x00, 0x03, 1, 2, 3, 0xff]);
        assert_eq!(r.tpm2b("x", 8).unwrap(), &[1, 2, 3]);
        assert!(matches!(
            r.finish("x"),
            Err(WireError::Trailing { extra: 1, .. })
        ));
        let mut r = Reader::new(&[0x00, 0x09, 1]);
        assert!(matches!(
            r.tpm2b("x", 8),
            Err(WireError::Invalid { offset: 0, .. })
        ));
        let mut r = Reader::new(&[0x00, 0x02, 1]);
        assert!(matches!(
            r.tpm2b("x", 8),
            Err(WireError::Truncated { offset: 2, .. })
        ));
    }
}
