//! TPM_ALG_ID values (TPM 2.0 Part 2 §6.3, TCG Algorithm Registry) and the
//! hash algorithms a verifier computes.

use core::fmt;

/// A TPM_ALG_ID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AlgId(pub u16);

#[allow(missing_docs)]
impl AlgId {
    pub const RSA: AlgId = AlgId(0x0001);
    pub const SHA1: AlgId = AlgId(0x0004);
    pub const HMAC: AlgId = AlgId(0x0005);
    pub const AES: AlgId = AlgId(0x0006);
    pub const KEYEDHASH: AlgId = AlgId(0x0008);
    pub const XOR: AlgId = AlgId(0x000A);
    pub const SHA256: AlgId = AlgId(0x000B);
    pub const SHA384: AlgId = AlgId(0x000C);
    pub const SHA512: AlgId = AlgId(0x000D);
    pub const NULL: AlgId = AlgId(0x0010);
    pub const SM3_256: AlgId = AlgId(0x0012);
    pub const RSASSA: AlgId = AlgId(0x0014);
    pub const RSAES: AlgId = AlgId(0x0015);
    pub const RSAPSS: AlgId = AlgId(0x0016);
    pub const OAEP: AlgId = AlgId(0x0017);
    pub const ECDSA: AlgId = AlgId(0x0018);
    pub const ECDH: AlgId = AlgId(0x0019);
    pub const ECDAA: AlgId = AlgId(0x001A);
    pub const SM2: AlgId = AlgId(0x001B);
    pub const ECSCHNORR: AlgId = AlgId(0x001C);
    pub const KDF1_SP800_56A: AlgId = AlgId(0x0020);
    pub const KDF2: AlgId = AlgId(0x0021);
    pub const KDF1_SP800_108: AlgId = AlgId(0x0022);
    pub const ECC: AlgId = AlgId(0x0023);
    pub const SYMCIPHER: AlgId = AlgId(0x0025);
    pub const CTR: AlgId = AlgId(0x0040);
    pub const OFB: AlgId = AlgId(0x0041);
    pub const CBC: AlgId = AlgId(0x0042);
    pub const CFB: AlgId = AlgId(0x0043);
    pub const ECB: AlgId = AlgId(0x0044);

    /// A short name (`rsa`, `sha256`, ...) or the number.
    pub fn name(self) -> String {
        let n = match self {
            Self::RSA => "rsa",
            Self::SHA1 => "sha1",
            Self::HMAC => "hmac",
            Self::AES => "aes",
            Self::KEYEDHASH => "keyedhash",
            Self::XOR => "xor",
            Self::SHA256 => "sha256",
            Self::SHA384 => "sha384",
            Self::SHA512 => "sha512",
            Self::NULL => "null",
            Self::SM3_256 => "sm3_256",
            Self::RSASSA => "rsassa",
            Self::RSAES => "rsaes",
            Self::RSAPSS => "rsapss",
            Self::OAEP => "oaep",
            Self::ECDSA => "ecdsa",
            Self::ECDH => "ecdh",
            Self::ECDAA => "ecdaa",
            Self::SM2 => "sm2",
            Self::ECSCHNORR => "ecschnorr",
            Self::ECC => "ecc",
            Self::SYMCIPHER => "symcipher",
            Self::CFB => "cfb",
            _ => return format!("0x{:04x}", self.0),
        };
        n.to_string()
    }
}

impl fmt::Debug for AlgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl serde::Serialize for AlgId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl fmt::Display for AlgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A hash algorithm this crate computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashAlg {
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl HashAlg {
    /// The hash for a TPM_ALG_ID, if this crate computes it.
    pub fn from_alg(alg: AlgId) -> Option<Self> {
        match alg {
            AlgId::SHA1 => Some(Self::Sha1),
            AlgId::SHA256 => Some(Self::Sha256),
            AlgId::SHA384 => Some(Self::Sha384),
            AlgId::SHA512 => Some(Self::Sha512),
            _ => None,
        }
    }

    /// The TPM_ALG_ID.
    pub fn alg(self) -> AlgId {
        match self {
            Self::Sha1 => AlgId::SHA1,
            Self::Sha256 => AlgId::SHA256,
            Self::Sha384 => AlgId::SHA384,
            Self::Sha512 => AlgId::SHA512,
        }
    }

    /// Digest size in bytes.
    pub fn size(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// `sha1`, `sha256`, ...
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }

    /// Parses `sha1`, `sha256`, `sha384`, `sha512`.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "sha1" => Some(Self::Sha1),
            "sha256" => Some(Self::Sha256),
            "sha384" => Some(Self::Sha384),
            "sha512" => Some(Self::Sha512),
            _ => None,
        }
    }

    /// Hashes the concatenation of `parts`.
    pub fn hash_parts(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: sha2::Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut h = D::new();
            for p in parts {
                h.update(p);
            }
            h.finalize().to_vec()
        }
        match self {
            Self::Sha1 => run::<sha1::Sha1>(parts),
            Self::Sha256 => run::<sha2::Sha256>(parts),
            Self::Sha384 => run::<sha2::Sha384>(parts),
            Self::Sha512 => run::<sha2::Sha512>(parts),
        }
    }

    /// Hashes `data`.
    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        self.hash_parts(&[data])
    }
}

impl fmt::Display for HashAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Largest digest (SHA-512).
pub const MAX_DIGEST: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_have_their_size() {
        for h in [
            HashAlg::Sha1,
            HashAlg::Sha256,
            HashAlg::Sha384,
            HashAlg::Sha512,
        ] {
            assert_eq!(h.hash(b"x").len(), h.size());
            assert_eq!(HashAlg::from_alg(h.alg()), Some(h));
            assert_eq!(HashAlg::from_name(h.name()), Some(h));
        }
    }
}
