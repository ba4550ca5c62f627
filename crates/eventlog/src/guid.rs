//! EFI_GUID (UEFI 2.10 Appendix A): stored mixed-endian, printed in the
//! registry form `8be4df61-93ca-11d2-aa0d-00e098032b8c`.

use core::fmt;

use serde::{Serialize, Serializer};

/// A GUID as stored in UEFI structures.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid([u8; 16]);

impl Guid {
    /// EFI_GLOBAL_VARIABLE: SecureBoot, PK, KEK, Boot####, BootOrder.
    pub const GLOBAL_VARIABLE: Guid = Guid::from_fields(
        0x8be4_df61,
        0x93ca,
        0x11d2,
        [0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c],
    );
    /// EFI_IMAGE_SECURITY_DATABASE_GUID: db, dbx, dbt, dbr.
    pub const IMAGE_SECURITY_DATABASE: Guid = Guid::from_fields(
        0xd719_b2cb,
        0x3d3a,
        0x4596,
        [0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f],
    );
    /// SHIM_LOCK_GUID: MokList, MokListX, MokSBState, SbatLevel.
    pub const SHIM_LOCK: Guid = Guid::from_fields(
        0x605d_ab50,
        0xe046,
        0x4300,
        [0xab, 0xb6, 0x3d, 0xd8, 0x10, 0xdd, 0x8b, 0x23],
    );

    /// A GUID from its registry-form fields.
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Self {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }

    /// A GUID from its 16 stored bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Guid(bytes)
    }

    /// The 16 stored bytes.
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0
    }

    /// Parses the registry form (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        let parts: Vec<&str> = s.split('-').collect();
        let [p1, p2, p3, p4, p5] = parts.as_slice() else {
            return None;
        };
        if p1.len() != 8 || p2.len() != 4 || p3.len() != 4 || p4.len() != 4 || p5.len() != 12 {
            return None;
        }
        let d1 = u32::from_str_radix(p1, 16).ok()?;
        let d2 = u16::from_str_radix(p2, 16).ok()?;
        let d3 = u16::from_str_radix(p3, 16).ok()?;
        let tail = crate::hex::decode(&format!("{p4}{p5}"))?;
        let d4: [u8; 8] = tail.try_into().ok()?;
        Some(Self::from_fields(d1, d2, d3, d4))
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        let d1 = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let d2 = u16::from_le_bytes([b[4], b[5]]);
        let d3 = u16::from_le_bytes([b[6], b[7]]);
        write!(
            f,
            "{d1:08x}-{d2:04x}-{d3:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Guid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_form_round_trips() {
        let s = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
        assert_eq!(Guid::GLOBAL_VARIABLE.to_string(), s);
        assert_eq!(Guid::parse(s), Some(Guid::GLOBAL_VARIABLE));
        assert_eq!(
            Guid::GLOBAL_VARIABLE.to_bytes()[..4],
            [0x61, 0xdf, 0xe4, 0x8b]
        );
        assert!(Guid::parse("not-a-guid").is_none());
    }
}
