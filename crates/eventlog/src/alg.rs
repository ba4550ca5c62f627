//! Hash algorithms (TPM_ALG_ID, TPM 2.0 Library Part 2 §6.3) and digests
//! tied to their algorithm.

use core::fmt;

use serde::{Serialize, Serializer};
use sha1::Sha1;
use sha2::{Sha256, Sha384, Sha512};
use sm3::Sm3;

/// Largest digest this crate accepts for an algorithm the Spec ID event
/// declares: SHA-512 and SHA3-512 are 64 bytes, the largest any TPM has.
pub const MAX_DIGEST_SIZE: u16 = 64;

/// A hash algorithm of a PCR bank.
///
/// Known algorithms can be computed; an [`HashAlg::Other`] algorithm is one
/// that a Spec ID event declared together with its digest size: its digests
/// can be parsed and compared, and its PCRs can be replayed only if the
/// caller knows how to hash (they cannot here, so replay skips that bank and
/// says so).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashAlg {
    /// TPM_ALG_SHA1 (0x0004), 20 bytes.
    Sha1,
    /// TPM_ALG_SHA256 (0x000B), 32 bytes.
    Sha256,
    /// TPM_ALG_SHA384 (0x000C), 48 bytes.
    Sha384,
    /// TPM_ALG_SHA512 (0x000D), 64 bytes.
    Sha512,
    /// TPM_ALG_SM3_256 (0x0012), 32 bytes.
    Sm3_256,
    /// An algorithm this crate cannot compute, with the digest size that the
    /// Spec ID event declared for it.
    Other {
        /// The TPM_ALG_ID.
        id: u16,
        /// Digest size in bytes, as declared by the log.
        size: u16,
    },
}

impl HashAlg {
    /// The algorithm for a TPM_ALG_ID whose size this crate knows.
    pub fn from_known_id(id: u16) -> Option<Self> {
        match id {
            0x0004 => Some(Self::Sha1),
            0x000B => Some(Self::Sha256),
            0x000C => Some(Self::Sha384),
            0x000D => Some(Self::Sha512),
            0x0012 => Some(Self::Sm3_256),
            _ => None,
        }
    }

    /// The TPM_ALG_ID.
    pub fn id(self) -> u16 {
        match self {
            Self::Sha1 => 0x0004,
            Self::Sha256 => 0x000B,
            Self::Sha384 => 0x000C,
            Self::Sha512 => 0x000D,
            Self::Sm3_256 => 0x0012,
            Self::Other { id, .. } => id,
        }
    }

    /// Digest size in bytes.
    pub fn size(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 | Self::Sm3_256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
            Self::Other { size, .. } => usize::from(size),
        }
    }

    /// Name used in JSON and on the command line: `sha1`, `sha256`,
    /// `sha384`, `sha512`, `sm3_256`, or `alg_0xNNNN` for others.
    pub fn name(self) -> String {
        match self {
            Self::Sha1 => "sha1".into(),
            Self::Sha256 => "sha256".into(),
            Self::Sha384 => "sha384".into(),
            Self::Sha512 => "sha512".into(),
            Self::Sm3_256 => "sm3_256".into(),
            Self::Other { id, .. } => format!("alg_0x{id:04x}"),
        }
    }

    /// Parses a name as printed by [`HashAlg::name`] (known algorithms only,
    /// or `alg_0xNNNN` with the size unknown to the caller: `None` then).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha1" => Some(Self::Sha1),
            "sha256" => Some(Self::Sha256),
            "sha384" => Some(Self::Sha384),
            "sha512" => Some(Self::Sha512),
            "sm3_256" | "sm3" => Some(Self::Sm3_256),
            _ => None,
        }
    }

    /// Whether this crate can compute the hash.
    pub fn is_computable(self) -> bool {
        !matches!(self, Self::Other { .. })
    }

    /// Hashes the concatenation of `parts`; `None` for an algorithm this
    /// crate cannot compute.
    pub fn hash_parts(self, parts: &[&[u8]]) -> Option<Digest> {
        fn run<D: sha2::Digest>(alg: HashAlg, parts: &[&[u8]]) -> Option<Digest> {
            let mut h = D::new();
            for p in parts {
                h.update(p);
            }
            Digest::new(alg, &h.finalize())
        }
        match self {
            Self::Sha1 => run::<Sha1>(self, parts),
            Self::Sha256 => run::<Sha256>(self, parts),
            Self::Sha384 => run::<Sha384>(self, parts),
            Self::Sha512 => run::<Sha512>(self, parts),
            Self::Sm3_256 => run::<Sm3>(self, parts),
            Self::Other { .. } => None,
        }
    }

    /// Hashes `data`; `None` for an algorithm this crate cannot compute.
    pub fn hash(self, data: &[u8]) -> Option<Digest> {
        self.hash_parts(&[data])
    }
}

impl fmt::Display for HashAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl Serialize for HashAlg {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

/// A digest and the algorithm that made it; its length always equals
/// `alg.size()`. Stored inline (no allocation), since a log has thousands.
#[derive(Clone, Copy)]
pub struct Digest {
    alg: HashAlg,
    bytes: [u8; MAX_DIGEST_SIZE as usize],
}

impl PartialEq for Digest {
    fn eq(&self, other: &Self) -> bool {
        self.alg == other.alg && self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Digest {}

impl core::hash::Hash for Digest {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        core::hash::Hash::hash(&self.alg, state);
        self.as_bytes().hash(state);
    }
}

impl Digest {
    /// A digest from raw bytes; `None` when the length does not fit `alg`.
    pub fn new(alg: HashAlg, bytes: &[u8]) -> Option<Self> {
        if bytes.len() != alg.size() || bytes.len() > usize::from(MAX_DIGEST_SIZE) {
            return None;
        }
        let mut out = [0u8; MAX_DIGEST_SIZE as usize];
        out.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(Self { alg, bytes: out })
    }

    /// All zeros, as a PCR is after reset.
    pub fn zero(alg: HashAlg) -> Self {
        Self::filled(alg, 0)
    }

    /// Every byte `byte`.
    pub fn filled(alg: HashAlg, byte: u8) -> Self {
        let mut bytes = [0u8; MAX_DIGEST_SIZE as usize];
        let n = alg.size().min(bytes.len());
        for b in bytes.iter_mut().take(n) {
            *b = byte;
        }
        Self { alg, bytes }
    }

    /// The algorithm.
    pub fn alg(&self) -> HashAlg {
        self.alg
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8] {
        let n = self.alg.size().min(self.bytes.len());
        self.bytes.get(..n).unwrap_or_default()
    }

    /// Whether every byte is zero.
    pub fn is_zero(&self) -> bool {
        self.as_bytes().iter().all(|b| *b == 0)
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        crate::hex::encode(self.as_bytes())
    }

    /// `PCR_new = H(PCR_old || digest)`, TPM 2.0 Part 1 §17.2. `None` when
    /// the algorithm cannot be computed or the digest is from another bank.
    pub fn extended(&self, digest: &Digest) -> Option<Digest> {
        if digest.alg != self.alg {
            return None;
        }
        self.alg.hash_parts(&[self.as_bytes(), digest.as_bytes()])
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.alg, self.to_hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Digest", 2)?;
        st.serialize_field("alg", &self.alg)?;
        st.serialize_field("digest", &self.to_hex())?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_hash_output() {
        for alg in [
            HashAlg::Sha1,
            HashAlg::Sha256,
            HashAlg::Sha384,
            HashAlg::Sha512,
            HashAlg::Sm3_256,
        ] {
            let d = alg.hash(b"abc").expect("computable");
            assert_eq!(d.as_bytes().len(), alg.size(), "{alg}");
            assert_eq!(HashAlg::from_known_id(alg.id()), Some(alg));
            assert_eq!(HashAlg::from_name(&alg.name()), Some(alg));
        }
    }

    #[test]
    fn sha256_known_answer() {
        let d = HashAlg::Sha256.hash(b"abc").expect("computable");
        assert_eq!(
            d.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn other_algorithms_are_not_computed() {
        let alg = HashAlg::Other { id: 0x99, size: 7 };
        assert!(alg.hash(b"x").is_none());
        assert_eq!(alg.size(), 7);
        assert!(Digest::new(alg, &[0; 6]).is_none());
        assert!(Digest::new(alg, &[0; 7]).is_some());
    }
}
