//! Attestation: TPM2_Quote (Part 3 §18.4) and TPM2_ActivateCredential
//! (§12.5). Results are the raw wire structures; checking them is the
//! verifier's job.

use crate::client::{invalid, parse_params, Command, Tpm};
use crate::commands::limits;
use crate::error::Error;
use crate::marshal::{MarshalError, Reader, Writer};
use crate::session::Authorization;
use crate::types::{alg, CommandCode, ObjectHandle, PcrSelection};

/// A quote as the TPM produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// The `TPMS_ATTEST` bytes (contents of `TPM2B_ATTEST`): what was
    /// signed. tpm2-tools calls this the message (`tpm2_quote -m`).
    pub attest: Vec<u8>,
    /// The `TPMT_SIGNATURE` bytes (`tpm2_quote -s`, "tss" format).
    pub signature: Vec<u8>,
}

/// `TPM_ALG_ECDAA`, `TPM_ALG_SM2`, `TPM_ALG_ECSCHNORR`: same shape as ECDSA.
const ECC_SCHEMES: [u16; 4] = [alg::ECDSA, 0x001A, 0x001B, 0x001C];

/// Checks a `TPMT_SIGNATURE` field by field (TPM 2.0 Part 2 §11.3.4).
fn parse_signature(r: &mut Reader<'_>) -> Result<(), MarshalError> {
    let sig_alg = r.u16()?;
    match sig_alg {
        alg::RSASSA | alg::RSAPSS => {
            r.u16()?;
            r.tpm2b("signature.rsa", limits::RSA_KEY)?;
        }
        a if ECC_SCHEMES.contains(&a) => {
            r.u16()?;
            r.tpm2b("signature.r", limits::ECC_PARAMETER)?;
            r.tpm2b("signature.s", limits::ECC_PARAMETER)?;
        }
        alg::NULL => {}
        other => {
            return Err(MarshalError::Invalid {
                what: "TPMT_SIGNATURE.sigAlg",
                value: u32::from(other),
            })
        }
    }
    Ok(())
}

impl Tpm {
    /// `TPM2_Quote` with `ak` (authorized by its empty password), the
    /// key's own signing scheme (`inScheme` = `TPM_ALG_NULL`),
    /// `qualifyingData` = `nonce`, over `pcrs`.
    pub fn quote(
        &mut self,
        ak: ObjectHandle,
        nonce: &[u8],
        pcrs: &PcrSelection,
    ) -> Result<Quote, Error> {
        let code = CommandCode::QUOTE;
        let mut w = Writer::new();
        w.tpm2b("qualifyingData", nonce).map_err(invalid(code))?;
        w.u16(alg::NULL);
        pcrs.marshal(&mut w).map_err(invalid(code))?;
        let resp = self.execute(Command {
            code,
            handles: &[ak.0],
            auths: &[Authorization::empty_password()],
            params: w.into_bytes(),
            response_handles: 0,
        })?;
        parse_params(code, &resp.params, |r| {
            let attest = r.tpm2b("quoted", limits::STRUCTURE)?.to_vec();
            let (signature, ()) = r.spanned(parse_signature)?;
            Ok(Quote {
                attest,
                signature: signature.to_vec(),
            })
        })
    }

    /// `TPM2_ActivateCredential`: recovers the secret a verifier sealed to
    /// (`ek`, name of `ak`) with MakeCredential. `credential_blob` is the
    /// `TPM2B_ID_OBJECT` contents, `encrypted_secret` the
    /// `TPM2B_ENCRYPTED_SECRET` contents. The AK is authorized (ADMIN role)
    /// by its empty password, the EK (USER role) by a policy session with
    /// `PolicySecret(TPM_RH_ENDORSEMENT)`.
    ///
    /// A credential made for another key name fails with
    /// `TPM_RC_INTEGRITY` on parameter 1.
    pub fn activate_credential(
        &mut self,
        ak: ObjectHandle,
        ek: ObjectHandle,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let code = CommandCode::ACTIVATE_CREDENTIAL;
        let mut w = Writer::new();
        w.tpm2b("credentialBlob", credential_blob)
            .map_err(invalid(code))?;
        w.tpm2b("secret", encrypted_secret).map_err(invalid(code))?;
        let params = w.into_bytes();
        self.with_ek_policy(|tpm, ek_auth| {
            let resp = tpm.execute(Command {
                code,
                handles: &[ak.0, ek.0],
                auths: &[Authorization::empty_password(), ek_auth],
                params,
                response_handles: 0,
            })?;
            parse_params(code, &resp.params, |r| {
                Ok(r.tpm2b("certInfo", limits::DIGEST)?.to_vec())
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_shapes() {
        let rsa = [0x00, 0x14, 0x00, 0x0b, 0x00, 0x02, 0xaa, 0xbb, 0xff];
        let mut r = Reader::new(&rsa);
        let (span, ()) = r.spanned(parse_signature).unwrap();
        assert_eq!(span, &rsa[..8]);
        assert_eq!(r.remaining(), 1);

        let ecdsa = [0x00, 0x18, 0x00, 0x0b, 0x00, 0x01, 0x01, 0x00, 0x01, 0x02];
        let mut r = Reader::new(&ecdsa);
        r.spanned(parse_signature).unwrap();
        r.finish().unwrap();

        let hmac = [0x00, 0x05, 0x00, 0x0b];
        assert!(parse_signature(&mut Reader::new(&hmac)).is_err());
    }
}
