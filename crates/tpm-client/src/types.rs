//! Identifiers and small typed values (TPM 2.0 Part 2 §6 constants,
//! §7 handles, §10.6 PCR selections).

use std::collections::BTreeSet;
use std::fmt;

use crate::marshal::{MarshalError, Reader, Writer};

/// A `TPM_CC` command code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommandCode(pub u32);

macro_rules! command_codes {
    ($($name:ident = $value:expr, $spec:literal;)*) => {
        impl CommandCode {
            $(
                #[doc = concat!("`", $spec, "`.")]
                pub const $name: Self = Self($value);
            )*

            /// The specification's name, e.g. `"TPM2_Quote"`.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $(Self::$name => Some($spec),)*
                    _ => None,
                }
            }
        }
    };
}

command_codes! {
    EVICT_CONTROL = 0x120, "TPM2_EvictControl";
    NV_UNDEFINE_SPACE = 0x122, "TPM2_NV_UndefineSpace";
    NV_DEFINE_SPACE = 0x12A, "TPM2_NV_DefineSpace";
    CREATE_PRIMARY = 0x131, "TPM2_CreatePrimary";
    NV_WRITE = 0x137, "TPM2_NV_Write";
    NV_WRITE_LOCK = 0x138, "TPM2_NV_WriteLock";
    STARTUP = 0x144, "TPM2_Startup";
    ACTIVATE_CREDENTIAL = 0x147, "TPM2_ActivateCredential";
    NV_READ = 0x14E, "TPM2_NV_Read";
    POLICY_SECRET = 0x151, "TPM2_PolicySecret";
    CREATE = 0x153, "TPM2_Create";
    LOAD = 0x157, "TPM2_Load";
    QUOTE = 0x158, "TPM2_Quote";
    FLUSH_CONTEXT = 0x165, "TPM2_FlushContext";
    NV_READ_PUBLIC = 0x169, "TPM2_NV_ReadPublic";
    READ_PUBLIC = 0x173, "TPM2_ReadPublic";
    START_AUTH_SESSION = 0x176, "TPM2_StartAuthSession";
    GET_CAPABILITY = 0x17A, "TPM2_GetCapability";
    GET_RANDOM = 0x17B, "TPM2_GetRandom";
    PCR_READ = 0x17E, "TPM2_PCR_Read";
    PCR_EXTEND = 0x182, "TPM2_PCR_Extend";
}

impl fmt::Display for CommandCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "TPM_CC {:#x}", self.0),
        }
    }
}

/// `TPM_ALG_ID` values used by this crate (TPM 2.0 Part 2 §6.3; TCG
/// Algorithm Registry).
pub(crate) mod alg {
    pub const RSA: u16 = 0x0001;
    pub const SHA1: u16 = 0x0004;
    pub const AES: u16 = 0x0006;
    pub const SHA256: u16 = 0x000B;
    pub const SHA384: u16 = 0x000C;
    pub const SHA512: u16 = 0x000D;
    pub const NULL: u16 = 0x0010;
    pub const SM3_256: u16 = 0x0012;
    pub const RSASSA: u16 = 0x0014;
    pub const RSAPSS: u16 = 0x0016;
    pub const ECDSA: u16 = 0x0018;
    pub const ECC: u16 = 0x0023;
    pub const CFB: u16 = 0x0043;
    pub const ECC_NIST_P256: u16 = 0x0003;
}

/// Permanent handles (TPM 2.0 Part 2 §7.4).
pub(crate) mod rh {
    pub const OWNER: u32 = 0x4000_0001;
    pub const NULL: u32 = 0x4000_0007;
    pub const PW: u32 = 0x4000_0009;
    pub const ENDORSEMENT: u32 = 0x4000_000B;
    pub const PLATFORM: u32 = 0x4000_000C;
}

/// A hash algorithm the TPM may have a PCR bank or a name digest for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashAlg {
    /// `TPM_ALG_SHA1`.
    Sha1,
    /// `TPM_ALG_SHA256`.
    Sha256,
    /// `TPM_ALG_SHA384`.
    Sha384,
    /// `TPM_ALG_SHA512`.
    Sha512,
    /// `TPM_ALG_SM3_256`.
    Sm3_256,
}

impl HashAlg {
    /// The `TPM_ALG_ID`.
    pub fn id(self) -> u16 {
        match self {
            HashAlg::Sha1 => alg::SHA1,
            HashAlg::Sha256 => alg::SHA256,
            HashAlg::Sha384 => alg::SHA384,
            HashAlg::Sha512 => alg::SHA512,
            HashAlg::Sm3_256 => alg::SM3_256,
        }
    }

    /// The algorithm with this `TPM_ALG_ID`, if it is one of ours.
    pub fn from_id(id: u16) -> Option<Self> {
        Some(match id {
            alg::SHA1 => HashAlg::Sha1,
            alg::SHA256 => HashAlg::Sha256,
            alg::SHA384 => HashAlg::Sha384,
            alg::SHA512 => HashAlg::Sha512,
            alg::SM3_256 => HashAlg::Sm3_256,
            _ => return None,
        })
    }

    /// Digest size in bytes.
    pub fn digest_size(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 | HashAlg::Sm3_256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    /// The name tpm2-tools uses (`sha256`, ...).
    pub fn tool_name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "sha1",
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha384 => "sha384",
            HashAlg::Sha512 => "sha512",
            HashAlg::Sm3_256 => "sm3_256",
        }
    }
}

/// The key algorithms of the TCG EK Credential Profile's low-range
/// templates and of the AKs this crate creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlg {
    /// RSA 2048 (EK template L-1; AK RSASSA-SHA256).
    Rsa2048,
    /// ECC NIST P-256 (EK template L-2; AK ECDSA-SHA256).
    EccP256,
}

impl KeyAlg {
    /// The NV index of the EK certificate for this algorithm (TCG EK
    /// Credential Profile 2.5 §2.2.1.4, low range): `0x01c00002` for RSA
    /// 2048, `0x01c0000a` for ECC P-256.
    pub fn ek_certificate_index(self) -> NvIndex {
        match self {
            KeyAlg::Rsa2048 => NvIndex(0x01c0_0002),
            KeyAlg::EccP256 => NvIndex(0x01c0_000a),
        }
    }
}

/// A hierarchy whose authorization a command uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hierarchy {
    /// `TPM_RH_OWNER` (storage hierarchy).
    Owner,
    /// `TPM_RH_ENDORSEMENT`.
    Endorsement,
    /// `TPM_RH_PLATFORM`.
    Platform,
}

impl Hierarchy {
    /// The permanent handle.
    pub fn handle(self) -> u32 {
        match self {
            Hierarchy::Owner => rh::OWNER,
            Hierarchy::Endorsement => rh::ENDORSEMENT,
            Hierarchy::Platform => rh::PLATFORM,
        }
    }
}

/// A transient or persistent object handle (`TPMI_DH_OBJECT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObjectHandle(pub u32);

/// A loaded session handle (`TPMI_SH_AUTH_SESSION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionHandle(pub u32);

/// An NV index handle (`TPMI_RH_NV_INDEX`, `0x01xxxxxx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NvIndex(pub u32);

impl From<ObjectHandle> for u32 {
    fn from(h: ObjectHandle) -> u32 {
        h.0
    }
}

impl From<SessionHandle> for u32 {
    fn from(h: SessionHandle) -> u32 {
        h.0
    }
}

impl fmt::Display for NvIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

/// Highest PCR index this crate selects (the selection bitmap of a
/// `TPMS_PCR_SELECTION` is at most 255 bits wide on the wire; PC Client
/// TPMs have 24 PCRs).
pub const MAX_PCR_INDEX: u8 = 254;

/// A `TPML_PCR_SELECTION`: PCR indices per bank.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PcrSelection {
    banks: Vec<(HashAlg, BTreeSet<u8>)>,
}

impl PcrSelection {
    /// An empty selection.
    pub fn empty() -> Self {
        Self::default()
    }

    /// A selection of `pcrs` in `bank`.
    pub fn new(bank: HashAlg, pcrs: impl IntoIterator<Item = u8>) -> Self {
        Self::empty().with(bank, pcrs)
    }

    /// Adds `pcrs` of `bank` (merging with PCRs already selected there).
    /// Indices above [`MAX_PCR_INDEX`] are ignored; a bank with no PCRs is
    /// not added.
    pub fn with(mut self, bank: HashAlg, pcrs: impl IntoIterator<Item = u8>) -> Self {
        let pcrs: BTreeSet<u8> = pcrs.into_iter().filter(|p| *p <= MAX_PCR_INDEX).collect();
        if pcrs.is_empty() {
            return self;
        }
        match self.banks.iter_mut().find(|(b, _)| *b == bank) {
            Some((_, set)) => set.extend(pcrs),
            None => self.banks.push((bank, pcrs)),
        }
        self
    }

    /// The banks in selection order, with their PCRs in ascending order.
    pub fn banks(&self) -> impl Iterator<Item = (HashAlg, &BTreeSet<u8>)> {
        self.banks.iter().map(|(b, s)| (*b, s))
    }

    /// Whether no PCR is selected.
    pub fn is_empty(&self) -> bool {
        self.banks.iter().all(|(_, s)| s.is_empty())
    }

    /// Whether `pcr` of `bank` is selected.
    pub fn contains(&self, bank: HashAlg, pcr: u8) -> bool {
        self.banks
            .iter()
            .any(|(b, s)| *b == bank && s.contains(&pcr))
    }

    /// This selection without the PCRs in `other`; empty banks dropped.
    pub fn minus(&self, other: &PcrSelection) -> PcrSelection {
        let banks = self
            .banks
            .iter()
            .map(|(b, s)| {
                (
                    *b,
                    s.iter()
                        .copied()
                        .filter(|p| !other.contains(*b, *p))
                        .collect(),
                )
            })
            .filter(|(_, s): &(HashAlg, BTreeSet<u8>)| !s.is_empty())
            .collect();
        PcrSelection { banks }
    }

    /// Every selected (bank, PCR) in wire order: banks in order, PCRs ascending.
    pub fn iter(&self) -> impl Iterator<Item = (HashAlg, u8)> + '_ {
        self.banks
            .iter()
            .flat_map(|(b, s)| s.iter().map(move |p| (*b, *p)))
    }

    /// The marshalled `TPML_PCR_SELECTION`, as TPM2_Quote and
    /// TPM2_PCR_Read send it (bitmaps of at least 3 bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        // Cannot fail: a selection holds at most one entry per `HashAlg`.
        let _ = self.marshal(&mut w);
        w.into_bytes()
    }

    /// Marshals as `TPML_PCR_SELECTION`; each bitmap is at least 3 bytes
    /// (PC Client).
    pub(crate) fn marshal(&self, w: &mut Writer) -> Result<(), MarshalError> {
        let count = u32::try_from(self.banks.len()).map_err(|_| MarshalError::TooLong {
            what: "TPML_PCR_SELECTION",
            len: self.banks.len(),
            max: 16,
        })?;
        w.u32(count);
        for (bank, pcrs) in &self.banks {
            let highest = pcrs.iter().next_back().copied().unwrap_or(0);
            let size = (usize::from(highest) / 8).saturating_add(1).max(3);
            let mut bitmap = vec![0u8; size];
            for p in pcrs {
                if let Some(byte) = bitmap.get_mut(usize::from(*p / 8)) {
                    *byte |= 1 << (p % 8);
                }
            }
            w.u16(bank.id());
            // `size` is at most 32: `highest` is a u8.
            w.u8(u8::try_from(size).unwrap_or(u8::MAX));
            w.bytes(&bitmap);
        }
        Ok(())
    }

    /// Unmarshals a `TPML_PCR_SELECTION` (at most `max_banks` entries).
    pub(crate) fn unmarshal(r: &mut Reader<'_>, max_banks: usize) -> Result<Self, MarshalError> {
        let count = r.u32()?;
        let count_usize = usize::try_from(count).unwrap_or(usize::MAX);
        if count_usize > max_banks {
            return Err(MarshalError::TooLong {
                what: "TPML_PCR_SELECTION",
                len: count_usize,
                max: max_banks,
            });
        }
        let mut sel = PcrSelection::empty();
        for _ in 0..count_usize {
            let id = r.u16()?;
            let bank = HashAlg::from_id(id).ok_or(MarshalError::Invalid {
                what: "TPMS_PCR_SELECTION.hash",
                value: u32::from(id),
            })?;
            let bitmap = r.tpm2b_u8("TPMS_PCR_SELECTION.sizeofSelect", 32)?;
            let mut pcrs = Vec::new();
            for (i, byte) in bitmap.iter().enumerate() {
                for bit in 0..8u8 {
                    if byte & (1 << bit) != 0 {
                        let index = i
                            .checked_mul(8)
                            .and_then(|v| v.checked_add(usize::from(bit)));
                        if let Some(p) = index.and_then(|v| u8::try_from(v).ok()) {
                            pcrs.push(p);
                        }
                    }
                }
            }
            sel = sel.with(bank, pcrs);
        }
        Ok(sel)
    }
}

impl fmt::Display for PcrSelection {
    /// tpm2-tools syntax: `sha256:0,1,2+sha1:7`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first_bank = true;
        for (bank, pcrs) in &self.banks {
            if !first_bank {
                f.write_str("+")?;
            }
            first_bank = false;
            write!(f, "{}:", bank.tool_name())?;
            let mut first = true;
            for p in pcrs {
                if !first {
                    f.write_str(",")?;
                }
                first = false;
                write!(f, "{p}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_round_trips_and_prints() {
        let sel = PcrSelection::new(HashAlg::Sha256, 0..=7).with(HashAlg::Sha1, [23, 0]);
        let mut w = Writer::new();
        sel.marshal(&mut w).unwrap();
        let bytes = w.into_bytes();
        assert_eq!(
            bytes,
            [0, 0, 0, 2, 0, 0x0b, 3, 0xff, 0, 0, 0, 0x04, 3, 0x01, 0, 0x80]
        );
        let back = PcrSelection::unmarshal(&mut Reader::new(&bytes), 16).unwrap();
        assert_eq!(back, sel);
        assert_eq!(sel.to_string(), "sha256:0,1,2,3,4,5,6,7+sha1:0,23");
        assert_eq!(sel.to_bytes(), bytes);
    }

    #[test]
    fn minus_removes_and_drops_empty_banks() {
        let a = PcrSelection::new(HashAlg::Sha256, 0..24).with(HashAlg::Sha1, [1]);
        let b = PcrSelection::new(HashAlg::Sha256, 0..8).with(HashAlg::Sha1, [1]);
        let rest = a.minus(&b);
        assert_eq!(rest, PcrSelection::new(HashAlg::Sha256, 8..24));
        assert!(rest.minus(&a).is_empty());
    }

    #[test]
    fn unknown_bank_is_rejected() {
        let bytes = [0, 0, 0, 1, 0x12, 0x34, 3, 1, 0, 0];
        assert!(matches!(
            PcrSelection::unmarshal(&mut Reader::new(&bytes), 16),
            Err(MarshalError::Invalid { value: 0x1234, .. })
        ));
    }

    #[test]
    fn command_code_names() {
        assert_eq!(CommandCode::QUOTE.to_string(), "TPM2_Quote");
        assert_eq!(CommandCode(0x999).to_string(), "TPM_CC 0x999");
    }
}
