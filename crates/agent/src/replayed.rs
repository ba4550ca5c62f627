//! A guest without a VM, for tests and benchmarks (feature
//! `replayed-guest`): a real swtpm whose PCRs hold exactly what a recorded
//! firmware event log measured, with an EK certified by a given vTPM CA
//! and the agent's own persistent AK, answered by the agent's own
//! [`TpmAttester`].
//!
//! Nothing in its evidence is made up: the log is a real boot's, the
//! quotes and credential activations are a real TPM's. What differs from
//! a VM is who extended the PCRs (this harness, replaying the log's
//! SHA-256 and SHA-1 digests in order, instead of the firmware) and that
//! the EK is a new one. It lets the attestation service be driven through
//! its real challenge → evidence → credential → activation exchange, as
//! often as a test or a load generator needs, without booting a VM.
//!
//! It can also do what a compromised guest can: quote any PCR selection
//! and send anything beside the quote ([`ReplayedGuest::quote_with`]).

use std::path::Path;

use rand_core::CryptoRngCore;
use trustlaunch_eventlog::{is_extended, startup_locality, EventLog, HashAlg as LogHash};
use trustlaunch_protocol::{Bytes, Evidence, PcrBank};
use trustlaunch_tpm::ca::{EkCertRequest, VtpmCa};
use trustlaunch_tpm::ek::ek_public_key;
use trustlaunch_tpm::ekcert::{TpmIdentity, TpmSpecification, UnixTime};
use trustlaunch_tpm::public::Public;
use trustlaunch_tpm_client::harness::Swtpm;
use trustlaunch_tpm_client::{HashAlg, KeyAlg, PcrSelection};

use crate::attester::{Attester, TpmAttester, AK_HANDLE};
use crate::guest::GuestPaths;

/// Why a replayed guest could not be made or could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// swtpm could not be started.
    #[error("swtpm: {0}")]
    Swtpm(#[from] trustlaunch_tpm_client::harness::HarnessError),
    /// A TPM command failed.
    #[error("TPM: {0}")]
    Tpm(#[from] trustlaunch_tpm_client::Error),
    /// The agent failed.
    #[error("agent: {0}")]
    Agent(#[from] crate::AgentError),
    /// The log cannot be replayed into a TPM that starts at locality 0.
    #[error("event log: {0}")]
    Log(String),
    /// The guest's files could not be written.
    #[error("guest files: {0}")]
    Io(#[from] std::io::Error),
    /// The EK could not be certified.
    #[error("EK certificate: {0}")]
    Certificate(String),
}

/// A recorded boot replayed into a real swtpm, answered by the agent.
pub struct ReplayedGuest {
    attester: TpmAttester,
    ek_public: Vec<u8>,
    ek_certificate: Vec<u8>,
    log: Vec<u8>,
    paths: GuestPaths,
    // Dropped after the attester: the swtpm and the guest's files.
    swtpm: Swtpm,
    _files: tempfile::TempDir,
}

impl std::fmt::Debug for ReplayedGuest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayedGuest").finish_non_exhaustive()
    }
}

fn tpm_bank(alg: LogHash) -> Option<HashAlg> {
    match alg {
        LogHash::Sha1 => Some(HashAlg::Sha1),
        LogHash::Sha256 => Some(HashAlg::Sha256),
        _ => None,
    }
}

impl ReplayedGuest {
    /// Starts a fresh swtpm, extends into its PCRs every SHA-256 and SHA-1
    /// digest `event_log` extended (in log order), creates the EK
    /// (RSA-2048, template L-1) and has `ca` certify it into NV, and lets
    /// the agent make its persistent AK. `secure_boot` is the `SecureBoot`
    /// efivar value the guest will read (reported, never trusted).
    pub fn start(
        event_log: &[u8],
        secure_boot: Option<u8>,
        ca: &VtpmCa,
        now: u64,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, ReplayError> {
        let log = EventLog::parse(event_log).map_err(|e| ReplayError::Log(e.to_string()))?;
        if startup_locality(&log) != 0 {
            return Err(ReplayError::Log(
                "the log starts PCR 0 at a locality other than 0, which a replay cannot reproduce"
                    .into(),
            ));
        }
        let swtpm = Swtpm::start()?;
        let mut tpm = swtpm.client()?;
        replay_into(&mut tpm, event_log)?;
        let ek = tpm.create_ek(KeyAlg::Rsa2048)?;
        let ek_pub =
            Public::from_bytes(&ek.public).map_err(|e| ReplayError::Certificate(e.to_string()))?;
        let request = EkCertRequest {
            ek: ek_public_key(&ek_pub)
                .ok_or_else(|| ReplayError::Certificate("the EK is not RSA or ECC".into()))?,
            tpm: TpmIdentity {
                manufacturer: "id:00001014".into(),
                model: "swtpm".into(),
                version: "id:20191023".into(),
            },
            spec: TpmSpecification {
                family: "2.0".into(),
                level: 0,
                revision: 164,
            },
            not_before: UnixTime::from_secs(now.saturating_sub(60)),
            not_after: None,
            policies: Vec::new(),
        };
        let cert = ca
            .issue_ek_cert(&request, rng)
            .map_err(|e| ReplayError::Certificate(e.to_string()))?;
        tpm.provision_ek_certificate(KeyAlg::Rsa2048, cert.der(), true)?;
        let _ = tpm.flush_context(ek.handle);
        let files = tempfile::Builder::new()
            .prefix("replayed-guest-")
            .tempdir()?;
        let paths = guest_files(files.path(), event_log, secure_boot)?;
        let mut attester = TpmAttester::new(tpm, paths.clone());
        attester.prepare()?;
        Ok(Self {
            attester,
            ek_public: ek.public,
            ek_certificate: cert.der().to_vec(),
            log: event_log.to_vec(),
            paths,
            swtpm,
            _files: files,
        })
    }

    /// The EK's TPMT_PUBLIC (what the platform records for the VM).
    pub fn ek_public(&self) -> &[u8] {
        &self.ek_public
    }

    /// The EK certificate (DER) in NV.
    pub fn ek_certificate(&self) -> &[u8] {
        &self.ek_certificate
    }

    /// The agent's AK (TPMT_PUBLIC).
    pub fn ak_public(&mut self) -> Result<Vec<u8>, ReplayError> {
        Ok(self.attester.prepare()?.ak.public.clone())
    }

    /// Reboots the guest: power-cycles the swtpm (its state kept, so the
    /// EK, the AK and NV stay; PCRs are reset and `resetCount` grows) and
    /// replays the boot's log again, as the firmware would.
    pub fn reboot(&mut self) -> Result<(), ReplayError> {
        self.swtpm.restart()?;
        let mut tpm = self.swtpm.client()?;
        replay_into(&mut tpm, &self.log)?;
        let paths = self.paths.clone();
        self.attester = TpmAttester::new(tpm, paths);
        self.attester.prepare()?;
        Ok(())
    }

    /// The agent's answer to a challenge (SHA-256 PCRs 0-15, as in a VM).
    pub fn evidence(&mut self, nonce: &[u8]) -> Result<Evidence, ReplayError> {
        Ok(self.attester.evidence(nonce)?)
    }

    /// The agent's credential activation.
    pub fn activate(
        &mut self,
        credential_blob: &[u8],
        secret: &[u8],
    ) -> Result<Vec<u8>, ReplayError> {
        Ok(self.attester.activate(credential_blob, secret)?)
    }

    /// What a guest with root can send: a genuine quote of `selection`
    /// with `nonce`, in evidence that is otherwise the agent's, then
    /// `edit` applied (PCR values of its choosing, another log, ...).
    pub fn quote_with(
        &mut self,
        nonce: &[u8],
        selection: &PcrSelection,
        edit: impl FnOnce(&mut Evidence),
    ) -> Result<Evidence, ReplayError> {
        let mut e = self.attester.evidence(nonce)?;
        let tpm = self.attester.tpm();
        let quote = tpm.quote(AK_HANDLE, nonce, selection)?;
        let values = tpm.pcr_read(selection)?;
        e.quote_attest = Bytes(quote.attest);
        e.quote_signature = Bytes(quote.signature);
        e.pcr_selection = Bytes(selection.to_bytes());
        let mut banks: Vec<PcrBank> = Vec::new();
        for v in &values.values {
            let alg = v.bank.id();
            let bank = match banks.iter_mut().position(|b| b.alg == alg) {
                Some(i) => banks.get_mut(i),
                None => {
                    banks.push(PcrBank {
                        alg,
                        values: Vec::new(),
                    });
                    banks.last_mut()
                }
            };
            if let Some(bank) = bank {
                bank.values.push((v.index, Bytes(v.digest.clone())));
            }
        }
        e.pcrs = banks;
        edit(&mut e);
        Ok(e)
    }
}

/// Extends every SHA-256 and SHA-1 digest `event_log` extended, in order.
fn replay_into(tpm: &mut trustlaunch_tpm_client::Tpm, event_log: &[u8]) -> Result<(), ReplayError> {
    let log = EventLog::parse(event_log).map_err(|e| ReplayError::Log(e.to_string()))?;
    for event in log.events().iter().filter(|e| is_extended(e)) {
        let Ok(pcr) = u8::try_from(event.pcr) else {
            continue;
        };
        for digest in event.digests.iter() {
            if let Some(bank) = tpm_bank(digest.alg()) {
                tpm.pcr_extend(pcr, bank, digest.as_bytes())?;
            }
        }
    }
    Ok(())
}

/// The guest's files the agent reads: the event log, the SecureBoot efivar
/// (4 attribute bytes, then the value), a boot id, a kernel release.
fn guest_files(
    dir: &Path,
    event_log: &[u8],
    secure_boot: Option<u8>,
) -> std::io::Result<GuestPaths> {
    let paths = GuestPaths {
        sysfs: dir.join("sys"),
        dev: dir.join("dev"),
        tpm_devices: Vec::new(),
        event_log: dir.join("binary_bios_measurements"),
        secure_boot: dir.join("SecureBoot"),
        boot_id: dir.join("boot_id"),
        os_release: dir.join("osrelease"),
        kmsg: dir.join("kmsg"),
    };
    std::fs::write(&paths.event_log, event_log)?;
    if let Some(v) = secure_boot {
        std::fs::write(&paths.secure_boot, [6, 0, 0, 0, v])?;
    }
    std::fs::write(&paths.boot_id, "replayed\n")?;
    std::fs::write(&paths.os_release, "replayed\n")?;
    std::fs::write(&paths.kmsg, "")?;
    Ok(paths)
}

/// A recorded boot of SHA-1-only firmware (a legacy-format log) carried
/// into a crypto-agile SHA-256 log, so that a SHA-256 vTPM can replay it
/// and a verifier that reads only SHA-256 quotes can judge it.
///
/// Every event keeps its PCR, type and data byte for byte. Where its
/// SHA-1 digest is the hash of its data (variables, separators, the GPT,
/// Windows' SIPA events, …) the SHA-256 digest is the SHA-256 of that
/// data, so the data stays exactly what was measured. Where the digest is
/// of something the log does not hold (an image's Authenticode hash, a
/// firmware blob) it is the SHA-256 of the SHA-1 digest: a stand-in that
/// replays consistently and that no check can read as the original.
/// Event numbers are the original's plus one (the Spec ID event is first).
pub fn carry_to_sha256(sha1_log: &[u8]) -> Result<Vec<u8>, ReplayError> {
    use trustlaunch_eventlog::{AlgorithmSize, Digest, Event, EventType, LogFormat, SpecIdEvent};
    let bad = |why: &str| ReplayError::Log(why.to_owned());
    let log = EventLog::parse(sha1_log).map_err(|e| ReplayError::Log(e.to_string()))?;
    if log.format() != LogFormat::Sha1Legacy {
        return Err(bad("the log is not in the SHA-1 legacy format"));
    }
    let spec = SpecIdEvent {
        platform_class: 0,
        spec_version_minor: 0,
        spec_version_major: 2,
        spec_errata: 0,
        uintn_size: 2,
        algorithms: vec![AlgorithmSize {
            alg_id: LogHash::Sha256.id(),
            digest_size: 32,
        }],
        vendor_info: Vec::new(),
    };
    let mut out = vec![Event {
        index: 0,
        offset: 0,
        pcr: 0,
        event_type: EventType::EV_NO_ACTION,
        digests: vec![Digest::zero(LogHash::Sha1)].into(),
        data: spec.to_bytes().into(),
        data_offset: 32,
    }];
    for (i, e) in log.events().iter().enumerate() {
        let sha1 = e
            .digest(LogHash::Sha1)
            .ok_or_else(|| bad("an event without a SHA-1 digest"))?;
        let of_data = LogHash::Sha1.hash(&e.data).as_ref() == Some(sha1);
        let covered: &[u8] = if of_data { &e.data } else { sha1.as_bytes() };
        let digest = LogHash::Sha256
            .hash(covered)
            .ok_or_else(|| bad("SHA-256 unavailable"))?;
        out.push(Event {
            index: i.saturating_add(1),
            offset: 0,
            pcr: e.pcr,
            event_type: e.event_type,
            digests: vec![digest].into(),
            data: e.data.clone(),
            data_offset: 0,
        });
    }
    Ok(EventLog::from_parts(LogFormat::CryptoAgile, Some(spec), out).to_bytes())
}
