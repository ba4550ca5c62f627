//! A checked reader over untrusted bytes: every read is bounds-checked and
//! reports the absolute offset where it failed.

/// Why a read failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Short {
    /// Absolute offset of the read that failed.
    pub offset: usize,
    /// Bytes the read needed.
    pub needed: usize,
    /// Bytes that were left.
    pub available: usize,
}

/// A little-endian reader over a byte slice, tracking its absolute offset.
#[derive(Clone, Debug)]
pub struct Cursor<'a> {
    bytes: &'a [u8],
    /// Absolute offset of `bytes[0]` within the original input.
    base: usize,
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// A reader over `bytes`, whose first byte sits at absolute offset `base`.
    pub fn new(bytes: &'a [u8], base: usize) -> Self {
        Self {
            bytes,
            base,
            pos: 0,
        }
    }

    /// Absolute offset of the next byte.
    pub fn offset(&self) -> usize {
        self.base.saturating_add(self.pos)
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The unread bytes, without consuming them.
    pub fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.pos..).unwrap_or_default()
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Short> {
        let short = Short {
            offset: self.offset(),
            needed: n,
            available: self.remaining(),
        };
        let end = self.pos.checked_add(n).ok_or(short)?;
        let out = self.bytes.get(self.pos..end).ok_or(short)?;
        self.pos = end;
        Ok(out)
    }

    /// Takes `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Short> {
        let s = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    /// Reads a u8.
    pub fn u8(&mut self) -> Result<u8, Short> {
        Ok(u8::from_le_bytes(self.array()?))
    }

    /// Reads a little-endian u16.
    pub fn u16(&mut self) -> Result<u16, Short> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// Reads a little-endian u32.
    pub fn u32(&mut self) -> Result<u32, Short> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// Reads a little-endian u64.
    pub fn u64(&mut self) -> Result<u64, Short> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Reads a little-endian u32 length and checks it against what is left,
    /// so callers never allocate for bytes that are not there.
    pub fn len_u32(&mut self) -> Result<usize, Short> {
        let at = self.offset();
        let n = usize::try_from(self.u32()?).unwrap_or(usize::MAX);
        if n > self.remaining() {
            return Err(Short {
                offset: at,
                needed: n,
                available: self.remaining(),
            });
        }
        Ok(n)
    }

    /// Reads an EFI_GUID (mixed-endian, 16 bytes).
    pub fn guid(&mut self) -> Result<crate::Guid, Short> {
        Ok(crate::Guid::from_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_reads_name_their_offset() {
        let mut c = Cursor::new(&[1, 2, 3], 100);
        assert_eq!(c.u16(), Ok(0x0201));
        assert_eq!(
            c.u16(),
            Err(Short {
                offset: 102,
                needed: 2,
                available: 1
            })
        );
        assert_eq!(c.u8(), Ok(3));
        assert!(c.is_empty());
    }

    #[test]
    fn lengths_are_bounded_by_input() {
        let mut c = Cursor::new(&[0xff, 0xff, 0xff, 0xff, 0], 0);
        assert!(c.len_u32().is_err());
        let mut c = Cursor::new(&[0xff; 8], 0);
        assert!(c.take(usize::MAX).is_err());
    }
}
