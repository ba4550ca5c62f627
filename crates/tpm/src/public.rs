//! TPMT_PUBLIC (TPM 2.0 Part 2 §12.2.4): the public area of a key, its
//! object attributes (§8.3) and its TPM name (Part 1 §16).

use serde::Serialize;

use crate::alg::{AlgId, HashAlg, MAX_DIGEST};
use crate::wire::{Reader, WireError, Writer};

/// Largest RSA modulus (RSA-4096) and ECC coordinate (P-521) accepted.
pub const MAX_RSA_KEY_BYTES: usize = 512;
/// Largest ECC parameter (P-521: 66 bytes).
pub const MAX_ECC_KEY_BYTES: usize = 66;

/// TPMA_OBJECT bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ObjectAttributes(pub u32);

#[allow(missing_docs)]
impl ObjectAttributes {
    pub const FIXED_TPM: u32 = 1 << 1;
    pub const ST_CLEAR: u32 = 1 << 2;
    pub const FIXED_PARENT: u32 = 1 << 4;
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    pub const ADMIN_WITH_POLICY: u32 = 1 << 7;
    pub const NO_DA: u32 = 1 << 10;
    pub const ENCRYPTED_DUPLICATION: u32 = 1 << 11;
    pub const RESTRICTED: u32 = 1 << 16;
    pub const DECRYPT: u32 = 1 << 17;
    pub const SIGN_ENCRYPT: u32 = 1 << 18;

    /// Whether every bit of `mask` is set.
    pub fn has(self, mask: u32) -> bool {
        self.0 & mask == mask
    }

    /// Names of the set bits, for reports.
    pub fn names(self) -> Vec<&'static str> {
        [
            (Self::FIXED_TPM, "fixedTPM"),
            (Self::ST_CLEAR, "stClear"),
            (Self::FIXED_PARENT, "fixedParent"),
            (Self::SENSITIVE_DATA_ORIGIN, "sensitiveDataOrigin"),
            (Self::USER_WITH_AUTH, "userWithAuth"),
            (Self::ADMIN_WITH_POLICY, "adminWithPolicy"),
            (Self::NO_DA, "noDA"),
            (Self::ENCRYPTED_DUPLICATION, "encryptedDuplication"),
            (Self::RESTRICTED, "restricted"),
            (Self::DECRYPT, "decrypt"),
            (Self::SIGN_ENCRYPT, "sign"),
        ]
        .into_iter()
        .filter(|(bit, _)| self.has(*bit))
        .map(|(_, n)| n)
        .collect()
    }
}

/// TPMT_SYM_DEF_OBJECT: the symmetric algorithm of a storage key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SymDef {
    /// `algorithm` (TPM_ALG_NULL when none).
    pub algorithm: AlgId,
    /// `keyBits` (absent for NULL).
    pub key_bits: u16,
    /// `mode` (absent for NULL).
    pub mode: AlgId,
}

impl SymDef {
    /// No symmetric algorithm.
    pub const NULL: SymDef = SymDef {
        algorithm: AlgId::NULL,
        key_bits: 0,
        mode: AlgId::NULL,
    };

    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let algorithm = AlgId(r.u16("TPMT_SYM_DEF_OBJECT.algorithm")?);
        if algorithm == AlgId::NULL {
            return Ok(Self::NULL);
        }
        let key_bits = r.u16("TPMT_SYM_DEF_OBJECT.keyBits")?;
        // XOR has a hash in place of key bits and no mode.
        let mode = if algorithm == AlgId::XOR {
            AlgId::NULL
        } else {
            AlgId(r.u16("TPMT_SYM_DEF_OBJECT.mode")?)
        };
        Ok(Self {
            algorithm,
            key_bits,
            mode,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.u16(self.algorithm.0);
        if self.algorithm != AlgId::NULL {
            w.u16(self.key_bits);
            if self.algorithm != AlgId::XOR {
                w.u16(self.mode.0);
            }
        }
    }
}

/// A signing or encryption scheme: `TPMT_*_SCHEME` with its hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Scheme {
    /// The scheme (TPM_ALG_NULL when the key has none).
    pub scheme: AlgId,
    /// Its hash (TPM_ALG_NULL when it has none).
    pub hash: AlgId,
    /// ECDAA only: `count`.
    pub count: u16,
}

impl Scheme {
    /// No scheme.
    pub const NULL: Scheme = Scheme {
        scheme: AlgId::NULL,
        hash: AlgId::NULL,
        count: 0,
    };

    fn read(r: &mut Reader<'_>, what: &'static str) -> Result<Self, WireError> {
        let scheme = AlgId(r.u16(what)?);
        if scheme == AlgId::NULL || scheme == AlgId::RSAES {
            return Ok(Self {
                scheme,
                ..Self::NULL
            });
        }
        let hash = AlgId(r.u16(what)?);
        let count = if scheme == AlgId::ECDAA {
            r.u16(what)?
        } else {
            0
        };
        Ok(Self {
            scheme,
            hash,
            count,
        })
    }

    fn write(&self, w: &mut Writer) {
        w.u16(self.scheme.0);
        if self.scheme != AlgId::NULL && self.scheme != AlgId::RSAES {
            w.u16(self.hash.0);
            if self.scheme == AlgId::ECDAA {
                w.u16(self.count);
            }
        }
    }
}

/// The type-specific parameters and unique field of a public area.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PublicKey {
    /// TPM_ALG_RSA.
    Rsa {
        /// `symmetric`.
        symmetric: SymDef,
        /// `scheme`.
        scheme: Scheme,
        /// `keyBits`.
        key_bits: u16,
        /// `exponent` as stored (0 means 65537).
        exponent: u32,
        /// `unique.rsa`: the modulus, big-endian.
        #[serde(with = "crate::hexser")]
        modulus: Vec<u8>,
    },
    /// TPM_ALG_ECC.
    Ecc {
        /// `symmetric`.
        symmetric: SymDef,
        /// `scheme`.
        scheme: Scheme,
        /// `curveID` (TPM_ECC_NIST_P256 = 3, P384 = 4, P521 = 5).
        curve: u16,
        /// `kdf`.
        kdf: Scheme,
        /// `unique.ecc.x`.
        #[serde(with = "crate::hexser")]
        x: Vec<u8>,
        /// `unique.ecc.y`.
        #[serde(with = "crate::hexser")]
        y: Vec<u8>,
    },
    /// TPM_ALG_KEYEDHASH.
    KeyedHash {
        /// `scheme` (HMAC: hash; XOR: hash and kdf in `kdf`).
        scheme: Scheme,
        /// XOR only: its KDF.
        kdf: AlgId,
        /// `unique.keyedHash`.
        #[serde(with = "crate::hexser")]
        unique: Vec<u8>,
    },
    /// TPM_ALG_SYMCIPHER.
    SymCipher {
        /// `sym`.
        symmetric: SymDef,
        /// `unique.sym`.
        #[serde(with = "crate::hexser")]
        unique: Vec<u8>,
    },
}

/// ECC curve IDs (TPM_ECC_CURVE).
#[allow(missing_docs)]
pub mod curve {
    pub const NIST_P256: u16 = 0x0003;
    pub const NIST_P384: u16 = 0x0004;
    pub const NIST_P521: u16 = 0x0005;
}

/// TPMT_PUBLIC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Public {
    /// `nameAlg`.
    pub name_alg: AlgId,
    /// `objectAttributes`.
    pub attributes: ObjectAttributes,
    /// `authPolicy`.
    #[serde(with = "crate::hexser")]
    pub auth_policy: Vec<u8>,
    /// `parameters` and `unique`.
    pub key: PublicKey,
}

impl Public {
    /// Unmarshals a TPMT_PUBLIC that fills `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        let p = Self::read(&mut r)?;
        r.finish("TPMT_PUBLIC")?;
        Ok(p)
    }

    /// Unmarshals a TPM2B_PUBLIC (u16 size, then TPMT_PUBLIC), as
    /// tpm2-tools writes `-u key.pub` files.
    pub fn from_tpm2b(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        let inner = r.tpm2b("TPM2B_PUBLIC", bytes.len())?;
        r.finish("TPM2B_PUBLIC")?;
        Self::from_bytes(inner)
    }

    /// Reads a TPMT_PUBLIC from a reader.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let type_at = r.offset();
        let ty = AlgId(r.u16("TPMT_PUBLIC.type")?);
        let name_alg = AlgId(r.u16("TPMT_PUBLIC.nameAlg")?);
        let attributes = ObjectAttributes(r.u32("TPMT_PUBLIC.objectAttributes")?);
        let auth_policy = r.tpm2b("TPMT_PUBLIC.authPolicy", MAX_DIGEST)?.to_vec();
        let key = match ty {
            AlgId::RSA => {
                let symmetric = SymDef::read(r)?;
                let scheme = Scheme::read(r, "TPMT_RSA_SCHEME")?;
                let key_bits = r.u16("TPMS_RSA_PARMS.keyBits")?;
                let exponent = r.u32("TPMS_RSA_PARMS.exponent")?;
                let modulus = r.tpm2b("TPM2B_PUBLIC_KEY_RSA", MAX_RSA_KEY_BYTES)?.to_vec();
                PublicKey::Rsa {
                    symmetric,
                    scheme,
                    key_bits,
                    exponent,
                    modulus,
                }
            }
            AlgId::ECC => {
                let symmetric = SymDef::read(r)?;
                let scheme = Scheme::read(r, "TPMT_ECC_SCHEME")?;
                let curve = r.u16("TPMS_ECC_PARMS.curveID")?;
                let kdf = Scheme::read(r, "TPMT_KDF_SCHEME")?;
                let x = r.tpm2b("TPMS_ECC_POINT.x", MAX_ECC_KEY_BYTES)?.to_vec();
                let y = r.tpm2b("TPMS_ECC_POINT.y", MAX_ECC_KEY_BYTES)?.to_vec();
                PublicKey::Ecc {
                    symmetric,
                    scheme,
                    curve,
                    kdf,
                    x,
                    y,
                }
            }
            AlgId::KEYEDHASH => {
                let scheme_alg = AlgId(r.u16("TPMT_KEYEDHASH_SCHEME")?);
                let (scheme, kdf) = match scheme_alg {
                    AlgId::NULL => (Scheme::NULL, AlgId::NULL),
                    AlgId::XOR => {
                        let hash = AlgId(r.u16("TPMS_SCHEME_XOR.hashAlg")?);
                        let kdf = AlgId(r.u16("TPMS_SCHEME_XOR.kdf")?);
                        (
                            Scheme {
                                scheme: scheme_alg,
                                hash,
                                count: 0,
                            },
                            kdf,
                        )
                    }
                    _ => {
                        let hash = AlgId(r.u16("TPMS_SCHEME_HMAC.hashAlg")?);
                        (
                            Scheme {
                                scheme: scheme_alg,
                                hash,
                                count: 0,
                            },
                            AlgId::NULL,
                        )
                    }
                };
                let unique = r.tpm2b("TPM2B_DIGEST", MAX_DIGEST)?.to_vec();
                PublicKey::KeyedHash {
                    scheme,
                    kdf,
                    unique,
                }
            }
            AlgId::SYMCIPHER => {
                let symmetric = SymDef::read(r)?;
                let unique = r.tpm2b("TPM2B_DIGEST", MAX_DIGEST)?.to_vec();
                PublicKey::SymCipher { symmetric, unique }
            }
            other => {
                return Err(WireError::Invalid {
                    what: "TPMT_PUBLIC.type",
                    offset: type_at,
                    reason: format!("unknown key type {other}"),
                })
            }
        };
        Ok(Self {
            name_alg,
            attributes,
            auth_policy,
            key,
        })
    }

    /// Marshals the TPMT_PUBLIC.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        let ty = match self.key {
            PublicKey::Rsa { .. } => AlgId::RSA,
            PublicKey::Ecc { .. } => AlgId::ECC,
            PublicKey::KeyedHash { .. } => AlgId::KEYEDHASH,
            PublicKey::SymCipher { .. } => AlgId::SYMCIPHER,
        };
        w.u16(ty.0)
            .u16(self.name_alg.0)
            .u32(self.attributes.0)
            .tpm2b(&self.auth_policy);
        match &self.key {
            PublicKey::Rsa {
                symmetric,
                scheme,
                key_bits,
                exponent,
                modulus,
            } => {
                symmetric.write(&mut w);
                scheme.write(&mut w);
                w.u16(*key_bits).u32(*exponent).tpm2b(modulus);
            }
            PublicKey::Ecc {
                symmetric,
                scheme,
                curve,
                kdf,
                x,
                y,
            } => {
                symmetric.write(&mut w);
                scheme.write(&mut w);
                w.u16(*curve);
                kdf.write(&mut w);
                w.tpm2b(x).tpm2b(y);
            }
            PublicKey::KeyedHash {
                scheme,
                kdf,
                unique,
            } => {
                w.u16(scheme.scheme.0);
                if scheme.scheme != AlgId::NULL {
                    w.u16(scheme.hash.0);
                    if scheme.scheme == AlgId::XOR {
                        w.u16(kdf.0);
                    }
                }
                w.tpm2b(unique);
            }
            PublicKey::SymCipher { symmetric, unique } => {
                symmetric.write(&mut w);
                w.tpm2b(unique);
            }
        }
        w.into_bytes()
    }

    /// Marshals as a TPM2B_PUBLIC (what `tpm2_readpublic -o` writes).
    pub fn to_tpm2b(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.tpm2b(&self.to_bytes());
        w.into_bytes()
    }

    /// The TPM name: `nameAlg || H_nameAlg(TPMT_PUBLIC)` (Part 1 §16).
    /// `None` when the name algorithm is not one this crate computes.
    pub fn name(&self) -> Option<Vec<u8>> {
        let h = HashAlg::from_alg(self.name_alg)?;
        let mut name = self.name_alg.0.to_be_bytes().to_vec();
        name.extend(h.hash(&self.to_bytes()));
        Some(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_types_and_oversized_keys_are_refused() {
        let mut w = Writer::new();
        w.u16(0x0099).u16(0x000b).u32(0).tpm2b(&[]);
        let e = Public::from_bytes(&w.into_bytes()).unwrap_err();
        assert!(matches!(e, WireError::Invalid { offset: 0, .. }), "{e}");
        let mut w = Writer::new();
        w.u16(0x0001).u16(0x000b).u32(0).tpm2b(&[]);
        w.u16(0x0010).u16(0x0010).u16(2048).u32(0).tpm2b(&[0; 600]);
        assert!(Public::from_bytes(&w.into_bytes()).is_err());
    }
}
