//! The TPM side of the agent: the EK, the persistent AK, the evidence for a
//! challenge and credential activation.

use trustlaunch_protocol::{Bytes, Evidence, PcrBank, VERSION};
use trustlaunch_tpm_client::templates::attr;
use trustlaunch_tpm_client::{
    Error as TpmError, HashAlg, Hierarchy, KeyAlg, LoadedKey, ObjectHandle, PcrSelection,
    PcrValues, PublicInfo, ResponseCode, Tpm,
};

use crate::error::AgentError;
use crate::guest::{read_bounded, read_secure_boot, read_text, GuestPaths, MAX_EVENT_LOG};
use crate::kmsg::read_untrusted_modules;
use crate::log;

/// The AK's persistent handle (owner hierarchy), the one Azure's guest
/// attestation uses: the AK is the same across reboots of the VM because
/// the vTPM's state persists.
pub const AK_HANDLE: ObjectHandle = ObjectHandle(0x8100_0003);

/// The largest nonce (TPM2B_DATA: the size of the largest digest).
pub const MAX_NONCE: usize = 64;

/// The PCRs quoted: SHA-256 bank, PCRs 0-15.
pub fn quoted_pcrs() -> PcrSelection {
    PcrSelection::new(HashAlg::Sha256, 0..16)
}

/// How often quote + read is retried when a PCR changed in between.
const QUOTE_ATTEMPTS: usize = 5;

/// What the session needs from the TPM side; [`TpmAttester`] is the real
/// one, tests substitute their own.
pub trait Attester {
    /// The evidence for a challenge with this nonce.
    fn evidence(&mut self, nonce: &[u8]) -> Result<Evidence, AgentError>;
    /// TPM2_ActivateCredential of a credential made for the AK under the
    /// EK: the recovered secret.
    fn activate(&mut self, credential_blob: &[u8], secret: &[u8]) -> Result<Vec<u8>, AgentError>;
}

/// Where the AK came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AkOrigin {
    /// A restricted signing key was already persistent at [`AK_HANDLE`].
    Persistent,
    /// Created under the EK and made persistent now.
    Created,
    /// Created under the EK, replacing an unsuitable object that was at
    /// [`AK_HANDLE`] (evicted).
    Replaced,
}

/// The keys in use.
#[derive(Debug, Clone)]
pub struct Keys {
    /// The EK (RSA-2048, template L-1), loaded (transient).
    pub ek: LoadedKey,
    /// The AK at [`AK_HANDLE`]: its public area and name.
    pub ak: PublicInfo,
    /// Where the AK came from.
    pub ak_origin: AkOrigin,
}

fn tpm_err(stage: &'static str, what: &'static str) -> impl Fn(TpmError) -> AgentError {
    move |source| AgentError::Tpm {
        stage,
        what,
        source,
    }
}

/// Whether `public` (TPMT_PUBLIC) is a restricted signing key bound to its
/// TPM: `type`, `nameAlg`, then `objectAttributes` with fixedTPM,
/// restricted and sign set and decrypt clear.
pub fn is_restricted_signing_key(public: &[u8]) -> bool {
    let Some(&[a, b, c, d]) = public.get(4..8) else {
        return false;
    };
    let attributes = u32::from_be_bytes([a, b, c, d]);
    let has = |bit: u32| attributes & bit != 0;
    has(attr::FIXED_TPM) && has(attr::RESTRICTED) && has(attr::SIGN) && !has(attr::DECRYPT)
}

/// The AK at [`AK_HANDLE`]: the persistent one if it is a restricted
/// signing key; otherwise one created under `ek` (RSA-2048), made
/// persistent with TPM2_EvictControl (owner hierarchy, empty auth), its
/// transient copy flushed. An unsuitable object at the handle is evicted
/// first.
pub fn provision_ak(tpm: &mut Tpm, ek: ObjectHandle) -> Result<(PublicInfo, AkOrigin), AgentError> {
    let mut origin = AkOrigin::Created;
    match tpm.read_public(AK_HANDLE) {
        Ok(info) if is_restricted_signing_key(&info.public) => {
            return Ok((info, AkOrigin::Persistent))
        }
        Ok(_) => {
            log(format_args!(
                "the object at {:#010x} is not a restricted signing key: evicting it",
                AK_HANDLE.0
            ));
            tpm.evict_control(Hierarchy::Owner, AK_HANDLE, AK_HANDLE)
                .map_err(tpm_err("ak", "evicting the unsuitable object"))?;
            origin = AkOrigin::Replaced;
        }
        Err(e) if e.response_code().map(|rc| rc.base()) == Some(ResponseCode::HANDLE) => {}
        Err(e) => return Err(tpm_err("ak", "reading the persistent AK")(e)),
    }
    let ak = tpm
        .create_ak(ek, KeyAlg::Rsa2048)
        .map_err(tpm_err("ak", "creating the AK"))?;
    let persisted = tpm.evict_control(Hierarchy::Owner, ak.key.handle, AK_HANDLE);
    // The transient copy is not needed either way.
    let _ = tpm.flush_context(ak.key.handle);
    persisted.map_err(tpm_err("ak", "making the AK persistent"))?;
    let info = tpm
        .read_public(AK_HANDLE)
        .map_err(tpm_err("ak", "reading the persistent AK"))?;
    Ok((info, origin))
}

/// The real attester: a TPM and the guest's files.
#[derive(Debug)]
pub struct TpmAttester {
    tpm: Tpm,
    paths: GuestPaths,
    keys: Option<Keys>,
}

impl TpmAttester {
    /// An attester over `tpm`; keys are set up by [`TpmAttester::prepare`]
    /// or on the first challenge.
    pub fn new(tpm: Tpm, paths: GuestPaths) -> Self {
        Self {
            tpm,
            paths,
            keys: None,
        }
    }

    /// Sets up the keys if not done yet: the EK (`create_ek`, RSA-2048,
    /// deterministic) and the persistent AK ([`provision_ak`]). A failure
    /// is retried at the next call.
    pub fn prepare(&mut self) -> Result<&Keys, AgentError> {
        let keys = match self.keys.take() {
            Some(keys) => keys,
            None => self.make_keys()?,
        };
        Ok(self.keys.insert(keys))
    }

    fn make_keys(&mut self) -> Result<Keys, AgentError> {
        let ek = self
            .tpm
            .create_ek(KeyAlg::Rsa2048)
            .map_err(tpm_err("ek", "creating the EK"))?;
        let (ak, ak_origin) = provision_ak(&mut self.tpm, ek.handle).inspect_err(|_| {
            let _ = self.tpm.flush_context(ek.handle);
        })?;
        log(format_args!(
            "AK {} at {:#010x} ({}), EK {}",
            short_hex(&ak.name),
            AK_HANDLE.0,
            match ak_origin {
                AkOrigin::Persistent => "persistent",
                AkOrigin::Created => "created",
                AkOrigin::Replaced => "created, replacing an unsuitable object",
            },
            short_hex(&ek.name)
        ));
        Ok(Keys { ek, ak, ak_origin })
    }

    /// The TPM, e.g. for tests.
    pub fn tpm(&mut self) -> &mut Tpm {
        &mut self.tpm
    }

    /// Quote, then read the PCRs, bracketed by `pcrUpdateCounter`: the
    /// values belong to the quote only if no PCR changed between the read
    /// before and the read after it.
    fn quote_and_read(
        &mut self,
        nonce: &[u8],
    ) -> Result<(trustlaunch_tpm_client::Quote, PcrValues), AgentError> {
        let selection = quoted_pcrs();
        for _ in 0..QUOTE_ATTEMPTS {
            let before = self
                .tpm
                .pcr_read(&selection)
                .map_err(tpm_err("pcr_read", "reading PCRs"))?;
            let quote = self
                .tpm
                .quote(AK_HANDLE, nonce, &selection)
                .map_err(tpm_err("quote", "quoting"))?;
            let after = self
                .tpm
                .pcr_read(&selection)
                .map_err(tpm_err("pcr_read", "reading PCRs"))?;
            if before == after {
                return Ok((quote, after));
            }
        }
        Err(AgentError::PcrsChanging {
            attempts: QUOTE_ATTEMPTS,
        })
    }
}

impl Drop for TpmAttester {
    fn drop(&mut self) {
        if let Some(keys) = &self.keys {
            // Best effort: on /dev/tpmrm0 closing the device flushes it too.
            let _ = self.tpm.flush_context(keys.ek.handle);
        }
    }
}

impl Attester for TpmAttester {
    fn evidence(&mut self, nonce: &[u8]) -> Result<Evidence, AgentError> {
        if nonce.is_empty() || nonce.len() > MAX_NONCE {
            return Err(AgentError::Nonce {
                len: nonce.len(),
                max: MAX_NONCE,
            });
        }
        let keys = self.prepare()?.clone();
        let (quote, pcrs) = self.quote_and_read(nonce)?;
        let ek_certificate = self
            .tpm
            .read_ek_certificate(KeyAlg::Rsa2048)
            .map_err(tpm_err("ek_certificate", "reading the EK certificate"))?;
        let event_log = read_bounded(&self.paths.event_log, MAX_EVENT_LOG, "event_log")?;
        let values = pcrs
            .values
            .iter()
            .filter(|v| v.bank == HashAlg::Sha256)
            .map(|v| (v.index, Bytes(v.digest.clone())))
            .collect();
        Ok(Evidence {
            version: VERSION,
            agent: concat!("trustlaunch-agent ", env!("CARGO_PKG_VERSION")).into(),
            boot_id: read_text(&self.paths.boot_id),
            nonce: Bytes(nonce.to_vec()),
            ek_certificate: ek_certificate.map(Bytes),
            ek_public: Bytes(keys.ek.public),
            ak_public: Bytes(keys.ak.public),
            ak_name: Bytes(keys.ak.name),
            quote_attest: Bytes(quote.attest),
            quote_signature: Bytes(quote.signature),
            pcr_selection: Bytes(quoted_pcrs().to_bytes()),
            pcrs: vec![PcrBank {
                alg: HashAlg::Sha256.id(),
                values,
            }],
            event_log: Bytes(event_log),
            secure_boot: read_secure_boot(&self.paths),
            kernel_release: read_text(&self.paths.os_release),
            untrusted_modules: read_untrusted_modules(&self.paths.kmsg),
        })
    }

    fn activate(&mut self, credential_blob: &[u8], secret: &[u8]) -> Result<Vec<u8>, AgentError> {
        let ek = self.prepare()?.ek.handle;
        self.tpm
            .activate_credential(AK_HANDLE, ek, credential_blob, secret)
            .map_err(tpm_err("activate", "activating the credential"))
    }
}

/// The first bytes of `b` in hex, for log lines (`1a2b3c4d..`).
pub fn short_hex(b: &[u8]) -> String {
    let mut s: String = b.iter().take(4).map(|x| format!("{x:02x}")).collect();
    if b.len() > 4 {
        s.push_str("..");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use trustlaunch_tpm_client::templates::{ak_template, ek_template, AK_ATTRIBUTES};

    #[test]
    fn restricted_signing_key_check() {
        let ak = ak_template(KeyAlg::Rsa2048);
        assert!(is_restricted_signing_key(&ak));
        assert!(!is_restricted_signing_key(&ek_template(KeyAlg::Rsa2048)));
        let mut unrestricted = ak.clone();
        let attrs = (AK_ATTRIBUTES & !attr::RESTRICTED).to_be_bytes();
        unrestricted.splice(4..8, attrs);
        assert!(!is_restricted_signing_key(&unrestricted));
        assert!(!is_restricted_signing_key(&ak[..7]));
    }

    #[test]
    fn short_hex_for_logs() {
        assert_eq!(short_hex(&[0x1a, 0x2b]), "1a2b");
        assert_eq!(short_hex(&[0x1a, 0x2b, 0x3c, 0x4d, 0x5e]), "1a2b3c4d..");
    }
}
