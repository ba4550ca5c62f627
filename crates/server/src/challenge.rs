//! Challenges: the service's own nonces, single-use and short-lived, and
//! the credentials it makes for an AK under the EK it recorded for the VM
//! (TPM2_MakeCredential). No caller vouches for a nonce's freshness and
//! no caller says whether an AK is the VM's: the service chose the nonce
//! and holds the credential's secret (as its SHA-256); only the TPM that
//! holds the recorded EK, with an object of the AK's name loaded, can give
//! the secret back.
//!
//! The platform's own monitor and any host or agent elsewhere use the
//! same exchange: issue (optionally naming the AK, or for an enrolled VM
//! its enrolled AK), answer with evidence and the activated secret. The
//! local channel names the AK only once the guest has sent its evidence,
//! so a credential can also be added to an open challenge once.

use rand_core::{OsRng, RngCore};
use serde::Serialize;
use sha2::Digest as _;
use trustlaunch_store::ChallengeRecord;
use trustlaunch_tpm::credential::make_credential;
use trustlaunch_tpm::public::Public;
use utoipa::ToSchema;

use crate::caller::Caller;
use crate::error::ApiError;
use crate::model::hex;
use crate::service::{now_i64, Service};

/// Nonce length (bytes): the channel's, TPM2B_DATA holds up to 64.
pub const NONCE_LEN: usize = trustlaunch_protocol::NONCE_LEN;

/// A credential made for an AK under the VM's recorded EK.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Credential {
    /// The AK's name it is bound to (hex).
    pub ak_name: String,
    /// TPM2B_ID_OBJECT contents (hex), for TPM2_ActivateCredential.
    pub credential_blob: String,
    /// TPM2B_ENCRYPTED_SECRET contents (hex).
    pub encrypted_secret: String,
}

/// A challenge as the service hands it out.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Challenge {
    /// Its id (the submission names it).
    pub id: String,
    /// The VM.
    pub vm_id: String,
    /// The nonce to quote with (hex).
    pub nonce: String,
    /// Unix seconds after which it is refused.
    pub expires_at: i64,
    /// The credential, when an AK was named (or the VM is enrolled).
    pub credential: Option<Credential>,
}

impl Challenge {
    /// The nonce's bytes.
    pub fn nonce_bytes(&self) -> Vec<u8> {
        crate::model::unhex(&self.nonce).unwrap_or_default()
    }
}

impl Credential {
    /// As the channel sends it.
    pub fn to_made(&self) -> Option<trustlaunch_tpm::credential::MadeCredential> {
        Some(trustlaunch_tpm::credential::MadeCredential {
            credential_blob: crate::model::unhex(&self.credential_blob)?,
            secret: crate::model::unhex(&self.encrypted_secret)?,
        })
    }
}

/// Which AK a challenge's credential is made for.
#[derive(Clone, Copy, Debug)]
pub enum AkChoice<'a> {
    /// This one (TPMT_PUBLIC).
    Named(&'a [u8]),
    /// The VM's enrolled AK, if it has one (else no credential yet).
    Enrolled,
    /// None yet: the guest names it in its evidence, and
    /// [`Service::credential`] makes it then (the local channel).
    Later,
}

impl Service {
    /// Issues a challenge to VM `vm_id` for `caller`: a fresh nonce valid
    /// for the challenge lifetime and, per `ak`, the credential for an AK
    /// under the VM's recorded EK.
    pub async fn challenge(
        &self,
        vm_id: &str,
        ak: AkChoice<'_>,
        caller: &Caller,
    ) -> Result<Challenge, ApiError> {
        crate::error::check_vm_id(vm_id)?;
        let e = self.entry(vm_id).await?;
        if e.ek_public.is_empty() {
            return Err(ApiError::conflict(format!(
                "VM {vm_id:?} has no vTPM EK on record: it cannot be attested"
            )));
        }
        let mut nonce = vec![0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        let now = now_i64();
        let expires_at = now.saturating_add(
            i64::try_from(self.config.challenge_lifetime.as_secs()).unwrap_or(i64::MAX),
        );
        let ak = match ak {
            AkChoice::Named(ak) => Some(ak.to_vec()),
            AkChoice::Enrolled => e.enrollment.as_ref().map(|en| en.ak_public().to_vec()),
            AkChoice::Later => None,
        };
        let made = match &ak {
            Some(ak) => Some(credential_for(&e.ek_public, ak)?),
            None => None,
        };
        let record = ChallengeRecord {
            id: hex(&id),
            vm_id: vm_id.to_owned(),
            nonce: nonce.clone(),
            ak_public: ak,
            secret_sha256: made.as_ref().map(|(_, s)| sha2::Sha256::digest(s).into()),
            issued_to: caller.actor(),
            created_at: now,
            expires_at,
            used_at: None,
        };
        self.store.put_challenge(&record, now).await?;
        Ok(Challenge {
            id: record.id,
            vm_id: vm_id.to_owned(),
            nonce: hex(&nonce),
            expires_at,
            credential: made.map(|(c, _)| c),
        })
    }

    /// Adds the credential for `ak_public` to an open challenge that has
    /// none (once): what the local channel does after the guest named its
    /// AK in its evidence.
    pub async fn credential(
        &self,
        vm_id: &str,
        challenge_id: &str,
        ak_public: &[u8],
    ) -> Result<Credential, ApiError> {
        let e = self.entry(vm_id).await?;
        let c = self
            .store
            .get_challenge(challenge_id)
            .await?
            .filter(|c| c.vm_id == vm_id)
            .ok_or_else(|| {
                ApiError::not_found(format!("no challenge {challenge_id:?} for VM {vm_id:?}"))
            })?;
        let (made, secret) = credential_for(&e.ek_public, ak_public)?;
        let digest: [u8; 32] = sha2::Sha256::digest(&secret).into();
        if !self
            .store
            .set_challenge_credential(&c.id, ak_public, &digest, now_i64())
            .await?
        {
            return Err(ApiError::conflict(format!(
                "challenge {challenge_id} already has a credential, was answered, or expired"
            )));
        }
        Ok(made)
    }
}

/// MakeCredential for `ak_public`'s name under `ek_public`, with a fresh
/// 32-byte secret.
pub fn credential_for(
    ek_public: &[u8],
    ak_public: &[u8],
) -> Result<(Credential, Vec<u8>), ApiError> {
    let ek = Public::from_bytes(ek_public)
        .map_err(|e| ApiError::internal(format!("the recorded EK: {e}")))?;
    let ak = Public::from_bytes(ak_public)
        .map_err(|e| ApiError::bad_request(format!("akPublic is not a TPMT_PUBLIC: {e}")))?;
    let name = ak
        .name()
        .ok_or_else(|| ApiError::bad_request("akPublic has no name (unknown name algorithm)"))?;
    let mut secret = vec![0u8; 32];
    OsRng.fill_bytes(&mut secret);
    let made = make_credential(&ek, &name, &secret, &mut OsRng)
        .map_err(|e| ApiError::internal(format!("MakeCredential under the recorded EK: {e}")))?;
    Ok((
        Credential {
            ak_name: hex(&name),
            credential_blob: hex(&made.credential_blob),
            encrypted_secret: hex(&made.secret),
        },
        secret,
    ))
}
