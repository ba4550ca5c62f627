//! Keys: TPM2_CreatePrimary (Part 3 §24.1), TPM2_Create (§12.1),
//! TPM2_Load (§12.2), TPM2_ReadPublic (§12.4), TPM2_EvictControl (§28.5),
//! and the EK/AK recipes built from them.

use crate::client::{invalid, parse_params, Command, Tpm};
use crate::commands::limits;
use crate::error::Error;
use crate::marshal::{MarshalError, Reader, Writer};
use crate::session::Authorization;
use crate::templates::{ak_template, ek_template};
use crate::types::{CommandCode, Hierarchy, KeyAlg, ObjectHandle};

/// A loaded key and its public identity, as the TPM returned them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedKey {
    /// The transient handle; flush it with [`Tpm::flush_context`].
    pub handle: ObjectHandle,
    /// The `TPMT_PUBLIC` bytes (the contents of the `TPM2B_PUBLIC`).
    pub public: Vec<u8>,
    /// The key's name (`TPM2B_NAME` contents: `nameAlg` then the digest
    /// of `public`), as computed by the TPM.
    pub name: Vec<u8>,
}

impl LoadedKey {
    /// The public area as a `TPM2B_PUBLIC` (2-byte size, then `TPMT_PUBLIC`):
    /// the "tss" file format of tpm2-tools (`tpm2_createek -u`,
    /// `tpm2_checkquote -u`, `tpm2_makecredential -u`).
    pub fn public_tpm2b(&self) -> Vec<u8> {
        to_tpm2b(&self.public)
    }
}

/// An attestation key created under the EK: the loaded key plus the blob
/// to load it again later under the same EK ([`Tpm::load_ak`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationKey {
    /// The loaded AK.
    pub key: LoadedKey,
    /// The `TPM2B_PRIVATE` contents from TPM2_Create (wrapped by the EK).
    pub private: Vec<u8>,
}

/// A child object from TPM2_Create, not yet loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedObject {
    /// The `TPM2B_PRIVATE` contents (sensitive area wrapped by the parent).
    pub private: Vec<u8>,
    /// The `TPMT_PUBLIC` bytes.
    pub public: Vec<u8>,
}

/// A public area and names read back from a loaded or persistent object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicInfo {
    /// The `TPMT_PUBLIC` bytes.
    pub public: Vec<u8>,
    /// The object's name.
    pub name: Vec<u8>,
    /// The object's qualified name.
    pub qualified_name: Vec<u8>,
}

/// Prefixes `body` with its 2-byte big-endian size (saturating at 65535;
/// every TPM structure is far smaller).
pub fn to_tpm2b(body: &[u8]) -> Vec<u8> {
    let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(body.len().saturating_add(2));
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Marshals the parameters shared by TPM2_Create and TPM2_CreatePrimary:
/// empty `inSensitive` (empty authValue, no data), `inPublic`, empty
/// `outsideInfo`, empty `creationPCR`.
fn create_params(code: CommandCode, template: &[u8]) -> Result<Vec<u8>, Error> {
    let mut w = Writer::new();
    // TPM2B_SENSITIVE_CREATE { size 4, userAuth = {}, data = {} }
    w.u16(4).u16(0).u16(0);
    w.tpm2b("inPublic", template).map_err(invalid(code))?;
    w.tpm2b("outsideInfo", &[]).map_err(invalid(code))?;
    w.u32(0); // TPML_PCR_SELECTION count
    Ok(w.into_bytes())
}

/// Consumes `creationData`, `creationHash`, `creationTicket`.
fn skip_creation_outputs(r: &mut Reader<'_>) -> Result<(), MarshalError> {
    r.tpm2b("creationData", limits::STRUCTURE)?;
    r.tpm2b("creationHash", limits::DIGEST)?;
    r.u16()?; // TPMT_TK_CREATION.tag
    r.u32()?; // .hierarchy
    r.tpm2b("creationTicket.digest", limits::DIGEST)?;
    Ok(())
}

fn object_handle(code: CommandCode, handles: &[u32]) -> Result<ObjectHandle, Error> {
    match handles.first() {
        // Transient objects live at 0x80xxxxxx (TPM_HT_TRANSIENT).
        Some(h) if h >> 24 == 0x80 => Ok(ObjectHandle(*h)),
        _ => Err(Error::Unexpected {
            command: code,
            reason: "object handle is not a transient handle",
        }),
    }
}

impl Tpm {
    /// `TPM2_CreatePrimary` in `hierarchy` with `template` (a `TPMT_PUBLIC`),
    /// empty authValue and no creation PCRs.
    pub fn create_primary(
        &mut self,
        hierarchy: Hierarchy,
        template: &[u8],
    ) -> Result<LoadedKey, Error> {
        let code = CommandCode::CREATE_PRIMARY;
        let params = create_params(code, template)?;
        let auth = self.hierarchy_auth(hierarchy);
        let resp = self.execute(Command {
            code,
            handles: &[hierarchy.handle()],
            auths: &[auth],
            params,
            response_handles: 1,
        })?;
        let handle = object_handle(code, &resp.handles)?;
        let (public, name) = parse_params(code, &resp.params, |r| {
            let public = r.tpm2b("outPublic", limits::STRUCTURE)?.to_vec();
            skip_creation_outputs(r)?;
            let name = r.tpm2b("name", limits::NAME)?.to_vec();
            Ok((public, name))
        })?;
        Ok(LoadedKey {
            handle,
            public,
            name,
        })
    }

    /// Creates the EK from the TCG default template for `key`
    /// (`TPM2_CreatePrimary` in the endorsement hierarchy): the same key
    /// `tpm2_createek -G rsa|ecc` makes.
    pub fn create_ek(&mut self, key: KeyAlg) -> Result<LoadedKey, Error> {
        self.create_primary(Hierarchy::Endorsement, &ek_template(key))
    }

    /// `TPM2_Create`: a child of `parent` from `template` (a `TPMT_PUBLIC`),
    /// empty authValue, no creation PCRs; `parent_auth` authorizes the
    /// parent (USER role). Returns the `TPM2B_PRIVATE` and `TPM2B_PUBLIC`
    /// contents; [`Tpm::load`] loads them.
    pub fn create(
        &mut self,
        parent: ObjectHandle,
        parent_auth: Authorization,
        template: &[u8],
    ) -> Result<CreatedObject, Error> {
        let code = CommandCode::CREATE;
        let params = create_params(code, template)?;
        let resp = self.execute(Command {
            code,
            handles: &[parent.0],
            auths: &[parent_auth],
            params,
            response_handles: 0,
        })?;
        parse_params(code, &resp.params, |r| {
            let private = r.tpm2b("outPrivate", limits::STRUCTURE)?.to_vec();
            let public = r.tpm2b("outPublic", limits::STRUCTURE)?.to_vec();
            skip_creation_outputs(r)?;
            Ok(CreatedObject { private, public })
        })
    }

    /// `TPM2_Load` of a child of `parent`; `private` and `public` are
    /// `TPM2B_PRIVATE` and `TPM2B_PUBLIC` contents.
    pub fn load(
        &mut self,
        parent: ObjectHandle,
        parent_auth: Authorization,
        private: &[u8],
        public: &[u8],
    ) -> Result<LoadedKey, Error> {
        let code = CommandCode::LOAD;
        let mut w = Writer::new();
        w.tpm2b("inPrivate", private).map_err(invalid(code))?;
        w.tpm2b("inPublic", public).map_err(invalid(code))?;
        let resp = self.execute(Command {
            code,
            handles: &[parent.0],
            auths: &[parent_auth],
            params: w.into_bytes(),
            response_handles: 1,
        })?;
        let handle = object_handle(code, &resp.handles)?;
        let name = parse_params(code, &resp.params, |r| {
            Ok(r.tpm2b("name", limits::NAME)?.to_vec())
        })?;
        Ok(LoadedKey {
            handle,
            public: public.to_vec(),
            name,
        })
    }

    /// Creates and loads an AK as a child of `ek`: `TPM2_Create` then
    /// `TPM2_Load`, each with the EK authorized by a fresh policy session
    /// that ran `PolicySecret(TPM_RH_ENDORSEMENT)`. This is what
    /// `tpm2_createak -C ek` does; the AK's name binds it to this TPM for
    /// credential activation.
    pub fn create_ak(&mut self, ek: ObjectHandle, key: KeyAlg) -> Result<AttestationKey, Error> {
        let template = ak_template(key);
        let created = self.with_ek_policy(|tpm, auth| tpm.create(ek, auth, &template))?;
        let key = self.load_ak(ek, &created.private, &created.public)?;
        Ok(AttestationKey {
            key,
            private: created.private,
        })
    }

    /// Loads an AK created by [`Tpm::create_ak`] under the same EK
    /// (`TPM2_Load`, EK authorized by a `PolicySecret(TPM_RH_ENDORSEMENT)`
    /// session). `private` and `public` are `TPM2B_PRIVATE` and
    /// `TPM2B_PUBLIC` contents.
    pub fn load_ak(
        &mut self,
        ek: ObjectHandle,
        private: &[u8],
        public: &[u8],
    ) -> Result<LoadedKey, Error> {
        self.with_ek_policy(|tpm, auth| tpm.load(ek, auth, private, public))
    }

    /// `TPM2_EvictControl`: with a transient `object`, makes a persistent
    /// copy of it at `persistent` (`0x81xxxxxx`; the transient object
    /// stays loaded and is still the caller's to flush); with a persistent
    /// `object` (then `persistent` must be the same handle), removes it.
    /// `auth` is the hierarchy that owns the persistent handle range
    /// (owner for `0x81000000..=0x817FFFFF`, platform for
    /// `0x81800000..=0x81FFFFFF`), authorized by its password (see
    /// [`Tpm::set_hierarchy_auth`]).
    ///
    /// A handle already in use fails with `TPM_RC_NV_DEFINED`.
    pub fn evict_control(
        &mut self,
        auth: Hierarchy,
        object: ObjectHandle,
        persistent: ObjectHandle,
    ) -> Result<(), Error> {
        let code = CommandCode::EVICT_CONTROL;
        let mut w = Writer::new();
        w.u32(persistent.0);
        let authorization = self.hierarchy_auth(auth);
        let resp = self.execute(Command {
            code,
            handles: &[auth.handle(), object.0],
            auths: &[authorization],
            params: w.into_bytes(),
            response_handles: 0,
        })?;
        parse_params(code, &resp.params, |_| Ok(()))
    }

    /// `TPM2_ReadPublic`: the public area and names of a loaded or
    /// persistent object (e.g. a persistent EK at `0x81010001`).
    pub fn read_public(&mut self, handle: ObjectHandle) -> Result<PublicInfo, Error> {
        let code = CommandCode::READ_PUBLIC;
        let resp = self.execute(Command {
            code,
            handles: &[handle.0],
            auths: &[],
            params: Vec::new(),
            response_handles: 0,
        })?;
        parse_params(code, &resp.params, |r| {
            Ok(PublicInfo {
                public: r.tpm2b("outPublic", limits::STRUCTURE)?.to_vec(),
                name: r.tpm2b("name", limits::NAME)?.to_vec(),
                qualified_name: r.tpm2b("qualifiedName", limits::NAME)?.to_vec(),
            })
        })
    }
}
