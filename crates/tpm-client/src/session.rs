//! Authorization areas (TPM 2.0 Part 1 §18.6–18.8, Part 2 §10.13).
//!
//! Only two kinds are used: the password session `TPM_RS_PW` (for keys and
//! hierarchies whose authValue is known, normally empty) and policy
//! sessions without an HMAC (for the EK, whose `adminWithPolicy` policy is
//! `PolicySecret(TPM_RH_ENDORSEMENT)`). Neither needs cryptography on this
//! side: command and response parameters are not HMAC-protected.

use crate::marshal::{MarshalError, Reader, Writer};
use crate::types::{rh, SessionHandle};

/// `TPMA_SESSION.continueSession`.
const CONTINUE_SESSION: u8 = 0x01;

/// Largest nonce or HMAC accepted in a response auth area (SHA-512 size).
const MAX_AUTH_FIELD: usize = 64;

/// How a command authorizes the use of one handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// `TPM_RS_PW` with this password (the entity's authValue).
    Password(Vec<u8>),
    /// A policy session whose policy digest satisfies the entity's policy.
    /// `continueSession` is clear, so the TPM flushes the session once the
    /// command succeeds.
    Policy(SessionHandle),
}

impl Authorization {
    /// The empty password.
    pub fn empty_password() -> Self {
        Authorization::Password(Vec::new())
    }

    /// Marshals one `TPMS_AUTH_COMMAND`.
    fn marshal(&self, w: &mut Writer) -> Result<(), MarshalError> {
        match self {
            Authorization::Password(pw) => {
                w.u32(rh::PW);
                w.tpm2b("nonceCaller", &[])?;
                w.u8(CONTINUE_SESSION);
                w.tpm2b("password", pw)?;
            }
            Authorization::Policy(handle) => {
                w.u32(handle.0);
                w.tpm2b("nonceCaller", &[])?;
                w.u8(0);
                w.tpm2b("hmac", &[])?;
            }
        }
        Ok(())
    }
}

/// Marshals the authorization area: `authorizationSize` then the sessions.
pub(crate) fn marshal_auth_area(
    auths: &[Authorization],
    w: &mut Writer,
) -> Result<(), MarshalError> {
    let mut area = Writer::new();
    for a in auths {
        a.marshal(&mut area)?;
    }
    let bytes = area.into_bytes();
    let size = u32::try_from(bytes.len()).map_err(|_| MarshalError::TooLong {
        what: "authorization area",
        len: bytes.len(),
        max: usize::from(u16::MAX),
    })?;
    w.u32(size).bytes(&bytes);
    Ok(())
}

/// Consumes the response authorization area (`TPMS_AUTH_RESPONSE` per
/// command session). The nonces and HMACs are not checked: no session here
/// computes HMACs.
pub(crate) fn skip_auth_responses(r: &mut Reader<'_>, sessions: usize) -> Result<(), MarshalError> {
    for _ in 0..sessions {
        r.tpm2b("nonceTPM", MAX_AUTH_FIELD)?;
        r.u8()?;
        r.tpm2b("hmac", MAX_AUTH_FIELD)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_and_policy_auth_areas() {
        let mut w = Writer::new();
        marshal_auth_area(
            &[
                Authorization::empty_password(),
                Authorization::Policy(SessionHandle(0x0300_0000)),
            ],
            &mut w,
        )
        .unwrap();
        assert_eq!(
            w.into_bytes(),
            [
                0, 0, 0, 18, // authorizationSize
                0x40, 0, 0, 9, 0, 0, 1, 0, 0, // TPM_RS_PW, empty nonce, continue, empty pw
                3, 0, 0, 0, 0, 0, 0, 0, 0, // policy session, flushed after use
            ]
        );
    }

    #[test]
    fn auth_responses_are_bounded() {
        let ok = [0, 0, 1, 0, 0];
        let mut r = Reader::new(&ok);
        skip_auth_responses(&mut r, 1).unwrap();
        assert!(r.is_empty());
        let bad = [0, 65];
        assert!(skip_auth_responses(&mut Reader::new(&bad), 1).is_err());
    }
}
