//! NV indices: TPM2_NV_DefineSpace (Part 3 §31.3), TPM2_NV_UndefineSpace
//! (§31.4), TPM2_NV_ReadPublic (§31.6), TPM2_NV_Write (§31.7),
//! TPM2_NV_WriteLock (§31.11) and TPM2_NV_Read (§31.13); reading and
//! provisioning EK certificates at the TCG EK Credential Profile indices.

use std::ops::BitOr;

use crate::client::{invalid, parse_params, Command, Tpm};
use crate::commands::limits;
use crate::error::Error;
use crate::marshal::{MarshalError, Reader, Writer};
use crate::rc::ResponseCode;
use crate::session::Authorization;
use crate::types::{alg, CommandCode, Hierarchy, KeyAlg, NvIndex};

/// `TPMA_NV` (TPM 2.0 Part 2 §13.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NvAttributes(pub u32);

impl NvAttributes {
    /// `TPMA_NV_PPWRITE`: platform authorization may write.
    pub const PPWRITE: Self = Self(1 << 0);
    /// `TPMA_NV_OWNERWRITE`: owner authorization may write.
    pub const OWNERWRITE: Self = Self(1 << 1);
    /// `TPMA_NV_AUTHWRITE`: the index's authValue may write.
    pub const AUTHWRITE: Self = Self(1 << 2);
    /// `TPMA_NV_WRITEDEFINE`: `TPM2_NV_WriteLock` locks until the index is deleted.
    pub const WRITEDEFINE: Self = Self(1 << 13);
    /// `TPMA_NV_PPREAD`: platform authorization may read.
    pub const PPREAD: Self = Self(1 << 16);
    /// `TPMA_NV_OWNERREAD`: owner authorization may read.
    pub const OWNERREAD: Self = Self(1 << 17);
    /// `TPMA_NV_AUTHREAD`: the index's authValue may read.
    pub const AUTHREAD: Self = Self(1 << 18);
    /// `TPMA_NV_NO_DA`: exempt from dictionary-attack protection.
    pub const NO_DA: Self = Self(1 << 25);
    /// `TPMA_NV_WRITELOCKED`: writes are locked (set by the TPM).
    pub const WRITELOCKED: Self = Self(1 << 11);
    /// `TPMA_NV_WRITTEN`: the index has been written (set by the TPM).
    pub const WRITTEN: Self = Self(1 << 29);
    /// `TPMA_NV_PLATFORMCREATE`: defined with platform authorization.
    pub const PLATFORMCREATE: Self = Self(1 << 30);

    /// What `swtpm_setup --create-ek-cert` gives the EK certificate index:
    /// PLATFORMCREATE | AUTHREAD | OWNERREAD | PPREAD | PPWRITE | NO_DA |
    /// WRITEDEFINE. Only the platform can write it; anyone can read it with
    /// the (empty) index authValue or owner authorization.
    pub const EK_CERTIFICATE: Self = Self(
        Self::PLATFORMCREATE.0
            | Self::AUTHREAD.0
            | Self::OWNERREAD.0
            | Self::PPREAD.0
            | Self::PPWRITE.0
            | Self::NO_DA.0
            | Self::WRITEDEFINE.0,
    );

    /// An owner-created index readable and writable with owner or index
    /// authorization: OWNERWRITE | AUTHWRITE | OWNERREAD | AUTHREAD | NO_DA.
    pub const OWNER_READ_WRITE: Self = Self(
        Self::OWNERWRITE.0
            | Self::AUTHWRITE.0
            | Self::OWNERREAD.0
            | Self::AUTHREAD.0
            | Self::NO_DA.0,
    );

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for NvAttributes {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// The public area of an NV index (`TPMS_NV_PUBLIC`) and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvPublic {
    /// The index.
    pub index: NvIndex,
    /// `nameAlg` (`TPM_ALG_ID`).
    pub name_alg: u16,
    /// The attributes.
    pub attributes: NvAttributes,
    /// The authorization policy digest (may be empty).
    pub auth_policy: Vec<u8>,
    /// The data size in bytes.
    pub data_size: u16,
    /// The index's name (`TPM2B_NAME` contents).
    pub name: Vec<u8>,
}

/// Which authorization an NV read or write presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NvAuth {
    /// Owner authorization (needs OWNERREAD / OWNERWRITE).
    Owner,
    /// Platform authorization (needs PPREAD / PPWRITE).
    Platform,
    /// The index's own authValue (needs AUTHREAD / AUTHWRITE).
    Index(Vec<u8>),
}

/// An NV index to define.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvDefinition {
    /// The index handle.
    pub index: NvIndex,
    /// The hierarchy whose authorization defines it (`Owner` or `Platform`;
    /// `Platform` requires [`NvAttributes::PLATFORMCREATE`]).
    pub hierarchy: Hierarchy,
    /// The attributes.
    pub attributes: NvAttributes,
    /// The data size in bytes.
    pub size: u16,
    /// The index's authValue.
    pub auth: Vec<u8>,
}

impl NvDefinition {
    /// An EK certificate index as swtpm_setup defines it: platform
    /// hierarchy, [`NvAttributes::EK_CERTIFICATE`], SHA-256 name, empty
    /// authValue and policy.
    pub fn ek_certificate(index: NvIndex, size: u16) -> Self {
        Self {
            index,
            hierarchy: Hierarchy::Platform,
            attributes: NvAttributes::EK_CERTIFICATE,
            size,
            auth: Vec::new(),
        }
    }

    /// An owner index with [`NvAttributes::OWNER_READ_WRITE`] and empty authValue.
    pub fn owner_read_write(index: NvIndex, size: u16) -> Self {
        Self {
            index,
            hierarchy: Hierarchy::Owner,
            attributes: NvAttributes::OWNER_READ_WRITE,
            size,
            auth: Vec::new(),
        }
    }
}

fn parse_nv_public(r: &mut Reader<'_>) -> Result<NvPublic, MarshalError> {
    let body = r.tpm2b("nvPublic", limits::STRUCTURE)?;
    let mut p = Reader::new(body);
    let index = NvIndex(p.u32()?);
    let name_alg = p.u16()?;
    let attributes = NvAttributes(p.u32()?);
    let auth_policy = p.tpm2b("authPolicy", limits::DIGEST)?.to_vec();
    let data_size = p.u16()?;
    p.finish()?;
    let name = r.tpm2b("nvName", limits::NAME)?.to_vec();
    Ok(NvPublic {
        index,
        name_alg,
        attributes,
        auth_policy,
        data_size,
        name,
    })
}

impl Tpm {
    fn nv_auth(&self, index: NvIndex, auth: &NvAuth) -> (u32, Authorization) {
        match auth {
            NvAuth::Owner => (
                Hierarchy::Owner.handle(),
                self.hierarchy_auth(Hierarchy::Owner),
            ),
            NvAuth::Platform => (
                Hierarchy::Platform.handle(),
                self.hierarchy_auth(Hierarchy::Platform),
            ),
            NvAuth::Index(pw) => (index.0, Authorization::Password(pw.clone())),
        }
    }

    /// `TPM2_NV_ReadPublic`.
    pub fn nv_read_public(&mut self, index: NvIndex) -> Result<NvPublic, Error> {
        let code = CommandCode::NV_READ_PUBLIC;
        let resp = self.execute(Command {
            code,
            handles: &[index.0],
            auths: &[],
            params: Vec::new(),
            response_handles: 0,
        })?;
        let public = parse_params(code, &resp.params, parse_nv_public)?;
        if public.index != index {
            return Err(Error::Unexpected {
                command: code,
                reason: "public area names another index",
            });
        }
        Ok(public)
    }

    /// `TPM2_NV_DefineSpace` (SHA-256 name, no policy).
    pub fn nv_define_space(&mut self, def: &NvDefinition) -> Result<(), Error> {
        let code = CommandCode::NV_DEFINE_SPACE;
        let mut public = Writer::new();
        public
            .u32(def.index.0)
            .u16(alg::SHA256)
            .u32(def.attributes.0);
        public.tpm2b("authPolicy", &[]).map_err(invalid(code))?;
        public.u16(def.size);
        let mut w = Writer::new();
        w.tpm2b("auth", &def.auth).map_err(invalid(code))?;
        w.tpm2b("publicInfo", &public.into_bytes())
            .map_err(invalid(code))?;
        let auth = self.hierarchy_auth(def.hierarchy);
        let resp = self.execute(Command {
            code,
            handles: &[def.hierarchy.handle()],
            auths: &[auth],
            params: w.into_bytes(),
            response_handles: 0,
        })?;
        parse_params(code, &resp.params, |_| Ok(()))
    }

    /// `TPM2_NV_UndefineSpace` with `hierarchy`'s authorization.
    pub fn nv_undefine_space(&mut self, hierarchy: Hierarchy, index: NvIndex) -> Result<(), Error> {
        let code = CommandCode::NV_UNDEFINE_SPACE;
        let auth = self.hierarchy_auth(hierarchy);
        let resp = self.execute(Command {
            code,
            handles: &[hierarchy.handle(), index.0],
            auths: &[auth],
            params: Vec::new(),
            response_handles: 0,
        })?;
        parse_params(code, &resp.params, |_| Ok(()))
    }

    /// Writes `data` at offset 0 in chunks of [`Tpm::nv_chunk_size`]
    /// (`TPM2_NV_Write` per chunk).
    pub fn nv_write(&mut self, index: NvIndex, auth: &NvAuth, data: &[u8]) -> Result<(), Error> {
        let code = CommandCode::NV_WRITE;
        let chunk = usize::from(self.nv_chunk_size()?);
        let (auth_handle, session) = self.nv_auth(index, auth);
        let mut offset = 0usize;
        for piece in data.chunks(chunk.max(1)) {
            let off = u16::try_from(offset).map_err(|_| Error::InvalidArgument {
                command: code,
                source: MarshalError::TooLong {
                    what: "NV data",
                    len: data.len(),
                    max: usize::from(u16::MAX),
                },
            })?;
            let mut w = Writer::new();
            w.tpm2b("data", piece).map_err(invalid(code))?;
            w.u16(off);
            let resp = self.execute(Command {
                code,
                handles: &[auth_handle, index.0],
                auths: std::slice::from_ref(&session),
                params: w.into_bytes(),
                response_handles: 0,
            })?;
            parse_params(code, &resp.params, |_| Ok(()))?;
            offset = offset.saturating_add(piece.len());
        }
        Ok(())
    }

    /// `TPM2_NV_WriteLock`: no more writes (until the index is deleted, if
    /// it has WRITEDEFINE; else until the next TPM reset).
    pub fn nv_write_lock(&mut self, index: NvIndex, auth: &NvAuth) -> Result<(), Error> {
        let code = CommandCode::NV_WRITE_LOCK;
        let (auth_handle, session) = self.nv_auth(index, auth);
        let resp = self.execute(Command {
            code,
            handles: &[auth_handle, index.0],
            auths: &[session],
            params: Vec::new(),
            response_handles: 0,
        })?;
        parse_params(code, &resp.params, |_| Ok(()))
    }

    /// Reads the whole index (its `dataSize` per `TPM2_NV_ReadPublic`) in
    /// chunks of [`Tpm::nv_chunk_size`] (`TPM2_NV_Read` per chunk).
    pub fn nv_read(&mut self, index: NvIndex, auth: &NvAuth) -> Result<Vec<u8>, Error> {
        let public = self.nv_read_public(index)?;
        self.nv_read_range(index, auth, 0, public.data_size)
    }

    /// Reads `len` bytes at `offset`, in chunks.
    pub fn nv_read_range(
        &mut self,
        index: NvIndex,
        auth: &NvAuth,
        offset: u16,
        len: u16,
    ) -> Result<Vec<u8>, Error> {
        let code = CommandCode::NV_READ;
        let chunk = self.nv_chunk_size()?.max(1);
        let (auth_handle, session) = self.nv_auth(index, auth);
        let mut out = Vec::with_capacity(usize::from(len));
        let mut done: u16 = 0;
        while done < len {
            let size = chunk.min(len.saturating_sub(done));
            let at = offset.checked_add(done).ok_or(Error::InvalidArgument {
                command: code,
                source: MarshalError::TooLong {
                    what: "NV offset",
                    len: usize::from(offset).saturating_add(usize::from(len)),
                    max: usize::from(u16::MAX),
                },
            })?;
            let mut w = Writer::new();
            w.u16(size).u16(at);
            let resp = self.execute(Command {
                code,
                handles: &[auth_handle, index.0],
                auths: std::slice::from_ref(&session),
                params: w.into_bytes(),
                response_handles: 0,
            })?;
            let data = parse_params(code, &resp.params, |r| {
                Ok(r.tpm2b("data", usize::from(size))?.to_vec())
            })?;
            if data.len() != usize::from(size) {
                return Err(Error::Unexpected {
                    command: code,
                    reason: "short NV read",
                });
            }
            out.extend_from_slice(&data);
            done = done.saturating_add(size);
        }
        Ok(out)
    }

    /// Reads the EK certificate for `key` from its TCG index, or `None` if
    /// the index is not defined. Uses the index's own (empty) authValue if
    /// it allows AUTHREAD, else owner, else platform authorization.
    pub fn read_ek_certificate(&mut self, key: KeyAlg) -> Result<Option<Vec<u8>>, Error> {
        let index = key.ek_certificate_index();
        let public = match self.nv_read_public(index) {
            Ok(p) => p,
            Err(Error::Tpm { rc, .. }) if rc.base() == ResponseCode::HANDLE => return Ok(None),
            Err(e) => return Err(e),
        };
        let auth = if public.attributes.contains(NvAttributes::AUTHREAD) {
            NvAuth::Index(Vec::new())
        } else if public.attributes.contains(NvAttributes::OWNERREAD) {
            NvAuth::Owner
        } else {
            NvAuth::Platform
        };
        self.nv_read_range(index, &auth, 0, public.data_size)
            .map(Some)
    }

    /// Provisions an EK certificate the way swtpm_setup does: defines the
    /// TCG index for `key` with [`NvDefinition::ek_certificate`] (platform
    /// authorization), writes `certificate` (DER), and if `lock` write-locks
    /// it for good (WRITEDEFINE).
    pub fn provision_ek_certificate(
        &mut self,
        key: KeyAlg,
        certificate: &[u8],
        lock: bool,
    ) -> Result<(), Error> {
        let code = CommandCode::NV_DEFINE_SPACE;
        let size = u16::try_from(certificate.len()).map_err(|_| Error::InvalidArgument {
            command: code,
            source: MarshalError::TooLong {
                what: "EK certificate",
                len: certificate.len(),
                max: usize::from(u16::MAX),
            },
        })?;
        let index = key.ek_certificate_index();
        self.nv_define_space(&NvDefinition::ek_certificate(index, size))?;
        self.nv_write(index, &NvAuth::Platform, certificate)?;
        if lock {
            self.nv_write_lock(index, &NvAuth::Platform)?;
        }
        Ok(())
    }
}
