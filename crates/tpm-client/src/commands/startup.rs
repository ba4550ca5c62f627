//! TPM2_Startup (Part 3 §9.3), TPM2_GetRandom (§16.1) and
//! TPM2_GetCapability for TPM properties (§30.2).

use crate::client::{parse_params, Command, Tpm};
use crate::error::Error;
use crate::marshal::{MarshalError, Writer};
use crate::rc::ResponseCode;
use crate::types::CommandCode;

/// `TPM_SU_CLEAR`.
const SU_CLEAR: u16 = 0x0000;
/// `TPM_CAP_TPM_PROPERTIES`.
const CAP_TPM_PROPERTIES: u32 = 6;
/// `TPM_PT_NV_BUFFER_MAX` (`PT_FIXED + 44`).
pub const PT_NV_BUFFER_MAX: u32 = 0x100 + 44;

/// NV chunk size used when the TPM does not report `TPM_PT_NV_BUFFER_MAX`,
/// and the largest chunk ever used (PC Client TPMs report 1024 or less).
pub const DEFAULT_NV_CHUNK: u16 = 1024;

/// What `TPM2_Startup(CLEAR)` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupOutcome {
    /// The TPM was started now.
    Started,
    /// The TPM had already been started (`TPM_RC_INITIALIZE`), e.g. by
    /// firmware or by swtpm's `startup-clear` flag.
    AlreadyStarted,
}

impl Tpm {
    /// `TPM2_Startup(TPM_SU_CLEAR)`, tolerating a TPM that is already started.
    pub fn startup_clear(&mut self) -> Result<StartupOutcome, Error> {
        let mut w = Writer::new();
        w.u16(SU_CLEAR);
        let result = self.execute(Command {
            code: CommandCode::STARTUP,
            handles: &[],
            auths: &[],
            params: w.into_bytes(),
            response_handles: 0,
        });
        match result {
            Ok(resp) => {
                parse_params(CommandCode::STARTUP, &resp.params, |_| Ok(()))?;
                Ok(StartupOutcome::Started)
            }
            Err(Error::Tpm { rc, .. }) if rc.base() == ResponseCode::INITIALIZE => {
                Ok(StartupOutcome::AlreadyStarted)
            }
            Err(e) => Err(e),
        }
    }

    /// `len` bytes from the TPM's random number generator (several
    /// `TPM2_GetRandom` calls if the TPM returns fewer per call).
    pub fn get_random(&mut self, len: u16) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(usize::from(len));
        while out.len() < usize::from(len) {
            let want = usize::from(len).saturating_sub(out.len());
            let mut w = Writer::new();
            w.u16(u16::try_from(want).unwrap_or(len));
            let resp = self.execute(Command {
                code: CommandCode::GET_RANDOM,
                handles: &[],
                auths: &[],
                params: w.into_bytes(),
                response_handles: 0,
            })?;
            let bytes = parse_params(CommandCode::GET_RANDOM, &resp.params, |r| {
                Ok(r.tpm2b("randomBytes", want)?.to_vec())
            })?;
            if bytes.is_empty() {
                return Err(Error::Unexpected {
                    command: CommandCode::GET_RANDOM,
                    reason: "no random bytes returned",
                });
            }
            out.extend_from_slice(&bytes);
        }
        Ok(out)
    }

    /// The value of one `TPM_PT` property, or `None` if the TPM does not
    /// report it.
    pub fn tpm_property(&mut self, property: u32) -> Result<Option<u32>, Error> {
        let mut w = Writer::new();
        w.u32(CAP_TPM_PROPERTIES).u32(property).u32(1);
        let code = CommandCode::GET_CAPABILITY;
        let resp = self.execute(Command {
            code,
            handles: &[],
            auths: &[],
            params: w.into_bytes(),
            response_handles: 0,
        })?;
        let props = parse_params(code, &resp.params, |r| {
            let _more_data = r.u8()?;
            let cap = r.u32()?;
            if cap != CAP_TPM_PROPERTIES {
                return Err(MarshalError::Invalid {
                    what: "TPMS_CAPABILITY_DATA.capability",
                    value: cap,
                });
            }
            let count = r.u32()?;
            // Each entry is 8 bytes: bound the count by what is left.
            let count = usize::try_from(count).unwrap_or(usize::MAX);
            if count > r.remaining() / 8 {
                return Err(MarshalError::TooLong {
                    what: "TPML_TAGGED_TPM_PROPERTY",
                    len: count,
                    max: r.remaining() / 8,
                });
            }
            let mut props = Vec::with_capacity(count);
            for _ in 0..count {
                props.push((r.u32()?, r.u32()?));
            }
            Ok(props)
        })?;
        Ok(props
            .into_iter()
            .find(|(p, _)| *p == property)
            .map(|(_, v)| v))
    }

    /// The NV chunk size: `TPM_PT_NV_BUFFER_MAX`, capped at
    /// [`DEFAULT_NV_CHUNK`] (which is also used if the TPM does not say).
    pub fn nv_chunk_size(&mut self) -> Result<u16, Error> {
        let reported = self.tpm_property(PT_NV_BUFFER_MAX)?;
        Ok(match reported.and_then(|v| u16::try_from(v).ok()) {
            Some(v) if v > 0 => v.min(DEFAULT_NV_CHUNK),
            _ => DEFAULT_NV_CHUNK,
        })
    }
}
