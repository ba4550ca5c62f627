//! Sessions and policy: TPM2_StartAuthSession (Part 3 §11.1),
//! TPM2_PolicySecret (§23.4) and TPM2_FlushContext (§28.4).

use crate::client::{invalid, parse_params, Command, Tpm};
use crate::commands::limits;
use crate::error::Error;
use crate::marshal::Writer;
use crate::session::Authorization;
use crate::types::{alg, rh, CommandCode, Hierarchy, SessionHandle};

/// `TPM_SE_POLICY`.
const SE_POLICY: u8 = 0x01;
/// Size of `nonceCaller` (SHA-256; the TPM requires at least 16 bytes).
const NONCE_SIZE: u16 = 32;

impl Tpm {
    /// `TPM2_StartAuthSession`: an unsalted, unbound policy session with
    /// SHA-256 and no symmetric parameter encryption. `nonceCaller` comes
    /// from the TPM's own RNG (`TPM2_GetRandom`).
    pub fn start_policy_session(&mut self) -> Result<SessionHandle, Error> {
        let code = CommandCode::START_AUTH_SESSION;
        let nonce = self.get_random(NONCE_SIZE)?;
        let mut w = Writer::new();
        w.tpm2b("nonceCaller", &nonce).map_err(invalid(code))?;
        w.tpm2b("encryptedSalt", &[]).map_err(invalid(code))?;
        w.u8(SE_POLICY);
        w.u16(alg::NULL); // TPMT_SYM_DEF: TPM_ALG_NULL
        w.u16(alg::SHA256);
        let resp = self.execute(Command {
            code,
            handles: &[rh::NULL, rh::NULL],
            auths: &[],
            params: w.into_bytes(),
            response_handles: 1,
        })?;
        let handle = session_handle(code, &resp.handles)?;
        parse_params(code, &resp.params, |r| {
            r.tpm2b("nonceTPM", limits::DIGEST)?;
            Ok(())
        })?;
        Ok(handle)
    }

    /// `TPM2_PolicySecret(authHandle = hierarchy)` on `session`, with empty
    /// nonceTPM, cpHashA and policyRef and no expiration: extends the
    /// session's policy digest by the EK Credential Profile's policy A when
    /// `hierarchy` is the endorsement hierarchy. The hierarchy is
    /// authorized by its password (see [`Tpm::set_hierarchy_auth`]).
    pub fn policy_secret(
        &mut self,
        hierarchy: Hierarchy,
        session: SessionHandle,
    ) -> Result<(), Error> {
        let code = CommandCode::POLICY_SECRET;
        let mut w = Writer::new();
        w.tpm2b("nonceTPM", &[]).map_err(invalid(code))?;
        w.tpm2b("cpHashA", &[]).map_err(invalid(code))?;
        w.tpm2b("policyRef", &[]).map_err(invalid(code))?;
        w.u32(0); // expiration (INT32 0: none)
        let auth = self.hierarchy_auth(hierarchy);
        let resp = self.execute(Command {
            code,
            handles: &[hierarchy.handle(), session.0],
            auths: &[auth],
            params: w.into_bytes(),
            response_handles: 0,
        })?;
        parse_params(code, &resp.params, |r| {
            r.tpm2b("timeout", limits::DIGEST)?;
            // TPMT_TK_AUTH: tag, hierarchy, digest.
            r.u16()?;
            r.u32()?;
            r.tpm2b("policyTicket.digest", limits::DIGEST)?;
            Ok(())
        })
    }

    /// `TPM2_FlushContext`: unloads a transient object or a session.
    pub fn flush_context(&mut self, handle: impl Into<u32>) -> Result<(), Error> {
        let code = CommandCode::FLUSH_CONTEXT;
        let mut w = Writer::new();
        w.u32(handle.into());
        let resp = self.execute(Command {
            code,
            handles: &[],
            auths: &[],
            params: w.into_bytes(),
            response_handles: 0,
        })?;
        parse_params(code, &resp.params, |_| Ok(()))
    }

    /// Runs `command` with a fresh policy session satisfying the EK's
    /// policy A (`PolicySecret(TPM_RH_ENDORSEMENT)`). The command must use
    /// the session via [`Authorization::Policy`], which does not continue it: on
    /// success the TPM flushes it; on any failure it is flushed here.
    pub(crate) fn with_ek_policy<T>(
        &mut self,
        command: impl FnOnce(&mut Self, Authorization) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let session = self.start_policy_session()?;
        let result = self
            .policy_secret(Hierarchy::Endorsement, session)
            .and_then(|()| command(self, Authorization::Policy(session)));
        if result.is_err() {
            // Best effort: the original error is the one worth reporting.
            let _ = self.flush_context(session);
        }
        result
    }
}

fn session_handle(code: CommandCode, handles: &[u32]) -> Result<SessionHandle, Error> {
    match handles.first() {
        // Policy sessions live at 0x03xxxxxx (TPM_HT_POLICY_SESSION).
        Some(h) if h >> 24 == 0x03 => Ok(SessionHandle(*h)),
        _ => Err(Error::Unexpected {
            command: code,
            reason: "session handle is not a policy session handle",
        }),
    }
}
