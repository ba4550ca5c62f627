//! The attestation service's core, behind the HTTP API and the monitor:
//! registering VMs, appraising evidence answering the service's own
//! challenges, enrolling, learning baselines, issuing tokens, and turning
//! verdicts into alerts. Challenges and credentials are in
//! [`crate::challenge`], baselines in [`crate::baselines`], tokens, rules
//! and the audit log in [`crate::access`].
//!
//! One attestation of one VM runs at a time (a per-VM lock), so learning
//! and alert reconciliation see a consistent history; servers sharing a
//! database are kept apart by the store's uniqueness (vm, nonce) and the
//! baseline's optimistic concurrency.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, RwLock};
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore};
use serde_json::json;
use trustlaunch_attestation::baseline::BootReport;
use trustlaunch_attestation::enrollment::Enrollment as Prepared;
use trustlaunch_attestation::security::{
    alert_candidates, recommendations, AlertBook, AlertCandidate, AlertEvent, AlertState, Cause,
    FailureReason, Posture, Recommendation, SuppressionRule,
};
use trustlaunch_attestation::token::{self, KeySet, SigningKey};
use trustlaunch_attestation::{
    appraise, Appraisal, Baseline, BaselineSource, KeyDatabases, Outcome, Reference, Verdict,
};
use trustlaunch_protocol::Evidence;
use trustlaunch_store::{
    AlertFilter, AlertRecord, BaselineAction, BaselineChange, NewAttestation, SigningKeyRecord,
    Store, StoreError, VmRecord, VmStamp,
};
use trustlaunch_tpm::ekcert::{CaCertificate, UnixTime};

use trustlaunch_seal::MasterKey;
use trustlaunch_store::{Answered, AttestationRecord, NewAuditEntry};

use crate::caller::Caller;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::model::{
    hex, report_json, unhex, AlertDoc, AttestationDoc, BaselineDoc, BootRef, Delivery,
    LearnRequest, ManagedBy, PendingBaseline, TpmClock, VmRegistration,
};

/// How long a cached VM entry is trusted before it is read again (other
/// servers sharing the database may have changed it).
const CACHE_TTL: Duration = Duration::from_secs(5);

/// The service's settings.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// The `iss` of tokens.
    pub issuer: String,
    /// The `aud` of tokens: who they are for (default `trustlaunch`).
    pub audience: String,
    /// Token lifetime.
    pub token_lifetime: Duration,
    /// How long an agent may be silent before it is unresponsive.
    pub agent_timeout: Duration,
    /// The names of the webhooks alert changes are delivered to.
    pub webhooks: Vec<String>,
    /// How long a challenge may be answered (default 5 min).
    pub challenge_lifetime: Duration,
    /// How long a requested relearn waits for a boot (default 24 h).
    pub relearn_lifetime: Duration,
}

impl ServiceConfig {
    /// The defaults, with this issuer.
    pub fn with_issuer(issuer: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: DEFAULT_AUDIENCE.into(),
            token_lifetime: Duration::from_secs(8 * 3600),
            agent_timeout: Duration::from_secs(600),
            webhooks: Vec::new(),
            challenge_lifetime: Duration::from_secs(300),
            relearn_lifetime: Duration::from_secs(24 * 3600),
        }
    }
}

/// A VM's cached reference: what its appraisal reads, shared (`Arc`)
/// where many VMs hold the same (key templates).
#[derive(Clone)]
pub struct VmEntry {
    /// The image supports Trusted Launch.
    pub trusted_launch_supported: bool,
    /// `secureBootEnabled`.
    pub secure_boot: bool,
    /// `vTpmEnabled`.
    pub vtpm: bool,
    /// Who registered it: the platform that runs it, or an API caller.
    pub managed_by: ManagedBy,
    pub(crate) ek_public: Vec<u8>,
    template: Option<Arc<KeyDatabases>>,
    pub(crate) enrollment: Option<Arc<Prepared>>,
    pub(crate) baseline: Option<(Arc<BaselineDoc>, i64)>,
    stamp: VmStamp,
    checked: Instant,
}

/// What one attestation produced.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttestationResult {
    /// The record's id.
    pub id: i64,
    /// The VM.
    pub vm_id: String,
    /// Healthy or not.
    pub healthy: bool,
    /// The signed token (healthy attestations only).
    pub token: Option<String>,
    /// The stored document.
    pub attestation: AttestationDoc,
    /// `false` when the same (vm, nonce) was already recorded: this is
    /// that record, nothing was appraised again.
    pub new: bool,
}

/// The service.
pub struct Service {
    /// The store.
    pub store: Store,
    /// Settings.
    pub config: ServiceConfig,
    /// The vTPM CA roots EK certificates must chain to.
    pub ca: Vec<CaCertificate>,
    /// Counters.
    pub metrics: Metrics,
    keys: RwLock<KeySet>,
    cache: RwLock<HashMap<String, Arc<VmEntry>>>,
    templates: RwLock<HashMap<[u8; 32], Arc<KeyDatabases>>>,
    locks: StdMutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Wakes the webhook worker.
    pub webhook_wake: tokio::sync::Notify,
    /// Some alert may owe a webhook delivery (set at start and whenever
    /// one is written; the worker clears it when it finds none).
    pub webhook_pending: std::sync::atomic::AtomicBool,
    /// Seals the token-signing keys in the store.
    pub(crate) master: MasterKey,
}

/// Tokens' default audience.
pub const DEFAULT_AUDIENCE: &str = "trustlaunch";

pub use crate::clock::{now, now_i64};

/// The purpose a token-signing key is sealed for.
fn signing_key_purpose(kid: &str) -> String {
    format!("signing-key/{kid}")
}

impl Service {
    /// Opens the service over `store`: loads the signing keys, sealed
    /// under `master` (making the first one if the store has none, and
    /// sealing any an older version kept in plain text).
    pub async fn new(
        store: Store,
        config: ServiceConfig,
        ca: Vec<CaCertificate>,
        master: MasterKey,
    ) -> Result<Self, ApiError> {
        let keys = load_keys(&store, &master).await?;
        Ok(Self {
            master,
            store,
            config,
            ca,
            metrics: Metrics::default(),
            keys: RwLock::new(keys),
            cache: RwLock::new(HashMap::new()),
            templates: RwLock::new(HashMap::new()),
            locks: StdMutex::new(HashMap::new()),
            webhook_wake: tokio::sync::Notify::new(),
            webhook_pending: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// Re-reads the signing keys (another server may have rotated them).
    pub async fn reload_keys(&self) -> Result<(), ApiError> {
        let keys = load_keys(&self.store, &self.master).await?;
        if let Ok(mut k) = self.keys.write() {
            *k = keys;
        }
        Ok(())
    }

    /// The JWKS to publish now.
    pub fn jwks(&self) -> token::Jwks {
        self.keys
            .read()
            .map(|k| k.jwks(now()))
            .unwrap_or(token::Jwks { keys: Vec::new() })
    }

    /// Makes a new current signing key; the old one stays published until
    /// the tokens it signed have expired.
    pub async fn rotate_keys(&self) -> Result<String, ApiError> {
        let key = tokio::task::spawn_blocking(|| SigningKey::generate(&mut OsRng))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?;
        let retire = now_i64().saturating_add(
            i64::try_from(self.config.token_lifetime.as_secs()).unwrap_or(i64::MAX) + 300,
        );
        for mut old in self.store.signing_keys().await? {
            if old.current {
                old.current = false;
                old.retire_at = Some(retire);
                self.store.put_signing_key(&old).await?;
            }
        }
        let kid = key.kid().to_owned();
        self.store
            .put_signing_key(&SigningKeyRecord {
                kid: kid.clone(),
                pkcs8_pem: seal_key(&self.master, &key)?,
                created_at: now_i64(),
                retire_at: None,
                current: true,
            })
            .await?;
        self.reload_keys().await?;
        Ok(kid)
    }

    /// The lock one VM's attestations and alert writes hold.
    pub fn vm_lock(&self, vm_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(vm_id.to_owned()).or_default().clone()
    }

    /// Registers (or updates) a VM as `caller` knows it. The platform
    /// registers the VMs it runs (read-only for every API caller from
    /// then on); an API caller registers VMs other hosts run. A first
    /// registration with a predicted baseline stores it (action
    /// `predicted`); without one, the VM's first boot awaits an
    /// operator's approval. Audited.
    pub async fn register(
        &self,
        vm_id: &str,
        reg: &VmRegistration,
        caller: &Caller,
    ) -> Result<(), ApiError> {
        crate::error::check_vm_id(vm_id)?;
        let ek = match &reg.ek_public {
            Some(h) => unhex(h).ok_or_else(|| ApiError::bad_request("ekPublic is not hex"))?,
            None => Vec::new(),
        };
        if reg.template.to_dbs().is_none() {
            return Err(ApiError::bad_request("template: a database is not hex"));
        }
        let existing = self.store.get_vm(vm_id).await?;
        let old: Option<VmRegistration> = existing
            .as_ref()
            .and_then(|e| serde_json::from_value(e.spec.clone()).ok());
        if !caller.is_platform()
            && old
                .as_ref()
                .is_some_and(|o| o.managed_by == ManagedBy::Platform)
        {
            return Err(ApiError::forbidden(format!(
                "VM {vm_id:?} is run and registered by the platform: its registration is read-only over the API"
            )));
        }
        let mut reg = reg.clone();
        reg.managed_by = if caller.is_platform() {
            ManagedBy::Platform
        } else {
            ManagedBy::Api
        };
        let doc = serde_json::to_value(&reg).map_err(ApiError::internal)?;
        if existing
            .as_ref()
            .is_some_and(|e| e.spec == doc && e.ek_public == ek)
        {
            return Ok(());
        }
        // The platform changed the VM's security configuration (e.g. the
        // control plane moved it from Standard to TrustedLaunch, or back):
        // the Secure Boot state and keys it measures are new, set by the
        // platform itself, so the baseline predicted for the new
        // configuration replaces the old one (audited).
        let reconfigured = caller.is_platform()
            && old.as_ref().is_some_and(|old| {
                (
                    old.trusted_launch,
                    old.secure_boot_enabled,
                    old.v_tpm_enabled,
                    &old.template,
                ) != (
                    reg.trusted_launch,
                    reg.secure_boot_enabled,
                    reg.v_tpm_enabled,
                    &reg.template,
                )
            });
        // The platform deployed another image (the control plane's image
        // change, which the caller consented to): the baseline predicted
        // from the new image's metadata replaces the old one (audited), so
        // the new boot is appraised against what that image boots — and a
        // disk that is not what its metadata describes still fails. The
        // same image changing under a VM (its files replaced at the same
        // path) is not this: that is what a baseline guards (relearn).
        let reimaged = caller.is_platform()
            && reg.predicted_baseline.is_some()
            && old
                .as_ref()
                .is_some_and(|old| old.spec["image"] != reg.spec["image"]);
        self.store
            .put_vm(
                &VmRecord {
                    vm_id: vm_id.to_owned(),
                    spec: doc,
                    ek_public: ek.clone(),
                    created_at: now_i64(),
                },
                &NewAuditEntry {
                    at: now_i64(),
                    actor: caller.actor(),
                    action: if existing.is_some() {
                        "registration.update".into()
                    } else {
                        "registration.create".into()
                    },
                    target: format!("vm/{vm_id}"),
                    detail: json!({
                        "managedBy": reg.managed_by,
                        "ekPublicSha256": crate::model::sha256_hex(&ek),
                        "trustedLaunch": reg.trusted_launch,
                        "secureBootEnabled": reg.secure_boot_enabled,
                        "vTpmEnabled": reg.v_tpm_enabled,
                        "predictedBaseline": reg.predicted_baseline.is_some(),
                        "ekChanged": existing.as_ref().is_some_and(|e| e.ek_public != ek),
                    }),
                    deliveries: None,
                },
            )
            .await?;
        if reconfigured || reimaged {
            if let Some(current) = self.store.get_baseline(vm_id).await? {
                let doc = BaselineDoc {
                    baseline: reg.predicted_baseline.clone(),
                    learn: reg
                        .predicted_baseline
                        .as_ref()
                        .map(|_| LearnRequest::fill()),
                    pending: None,
                };
                let value = serde_json::to_value(&doc).map_err(ApiError::internal)?;
                match self
                    .store
                    .put_baseline(
                        vm_id,
                        &value,
                        Some(current.version),
                        &BaselineChange {
                            action: BaselineAction::Predicted,
                            actor: if reconfigured {
                                "platform: security profile changed".into()
                            } else {
                                "platform: image changed".into()
                            },
                            at: now_i64(),
                        },
                    )
                    .await
                {
                    // Changed concurrently: the other writer's baseline stands.
                    Ok(_) | Err(StoreError::Conflict { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        // Predicted: the first healthy boot that matches the prediction
        // fills in what the image cannot tell (firmware, boot loader). Not
        // predicted: no baseline until an operator approves the first
        // boot's components.
        if let Some(b) = &reg.predicted_baseline {
            if self.store.get_baseline(vm_id).await?.is_none() {
                let doc = BaselineDoc {
                    baseline: Some(b.clone()),
                    learn: Some(LearnRequest::fill()),
                    pending: None,
                };
                let value = serde_json::to_value(&doc).map_err(ApiError::internal)?;
                match self
                    .store
                    .put_baseline(
                        vm_id,
                        &value,
                        None,
                        &BaselineChange {
                            action: BaselineAction::Predicted,
                            actor: caller.actor(),
                            at: now_i64(),
                        },
                    )
                    .await
                {
                    Ok(_) | Err(StoreError::Conflict { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        self.invalidate(vm_id);
        Ok(())
    }

    /// Forgets the cached entry of a VM.
    pub fn invalidate(&self, vm_id: &str) {
        if let Ok(mut c) = self.cache.write() {
            c.remove(vm_id);
        }
    }

    /// The VM's reference: from the cache while it was checked less than
    /// [`CACHE_TTL`] ago, else checked against the store's stamp (one
    /// read) and reloaded only if something changed.
    pub async fn entry(&self, vm_id: &str) -> Result<Arc<VmEntry>, ApiError> {
        let cached = self.cache.read().ok().and_then(|c| c.get(vm_id).cloned());
        if let Some(e) = &cached {
            if e.checked.elapsed() < CACHE_TTL {
                return Ok(e.clone());
            }
        }
        self.entry_checked(vm_id, cached).await
    }

    /// The VM's reference, checked against the store now.
    async fn entry_checked(
        &self,
        vm_id: &str,
        cached: Option<Arc<VmEntry>>,
    ) -> Result<Arc<VmEntry>, ApiError> {
        let stamp = self
            .store
            .vm_stamp(vm_id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("VM {vm_id:?} is not registered")))?;
        let entry = match cached {
            Some(e) if e.stamp == stamp => Arc::new(VmEntry {
                checked: Instant::now(),
                ..(*e).clone()
            }),
            _ => Arc::new(self.load_entry(vm_id, stamp).await?),
        };
        if let Ok(mut c) = self.cache.write() {
            c.insert(vm_id.to_owned(), entry.clone());
        }
        Ok(entry)
    }

    async fn load_entry(&self, vm_id: &str, stamp: VmStamp) -> Result<VmEntry, ApiError> {
        let rec = self
            .store
            .get_vm(vm_id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("VM {vm_id:?} is not registered")))?;
        let reg: VmRegistration = serde_json::from_value(rec.spec)
            .map_err(|e| ApiError::internal(format!("stored VM {vm_id}: {e}")))?;
        // The enrollment's prepared AK is kept if the enrollment did not
        // change (preparing an RSA key is the costly part).
        let previous = self.cache.read().ok().and_then(|c| c.get(vm_id).cloned());
        let enrollment = match previous
            .as_ref()
            .filter(|p| p.stamp.enrolled_at == stamp.enrolled_at && p.enrollment.is_some())
        {
            Some(p) => p.enrollment.clone(),
            None => match self.store.get_enrollment(vm_id).await? {
                Some(en) => Prepared::new(&en.ek_certificate, &en.ak_public)
                    .ok()
                    .map(Arc::new),
                None => None,
            },
        };
        let baseline =
            match self.store.get_baseline(vm_id).await? {
                Some(b) => Some((
                    Arc::new(serde_json::from_value(b.baseline).map_err(|e| {
                        ApiError::internal(format!("stored baseline of {vm_id}: {e}"))
                    })?),
                    b.version,
                )),
                None => None,
            };
        let template = if reg.template.is_empty() {
            None
        } else {
            self.intern_template(&reg.template)
        };
        Ok(VmEntry {
            managed_by: reg.managed_by,
            trusted_launch_supported: reg.trusted_launch_supported,
            secure_boot: reg.secure_boot_enabled,
            vtpm: reg.v_tpm_enabled,
            ek_public: rec.ek_public,
            template,
            enrollment,
            baseline,
            stamp,
            checked: Instant::now(),
        })
    }

    /// One shared copy per distinct key template.
    fn intern_template(&self, t: &crate::model::Template) -> Option<Arc<KeyDatabases>> {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        for part in [&t.pk, &t.kek, &t.db, &t.dbx] {
            h.update(part.as_deref().unwrap_or("-").as_bytes());
            h.update(b"/");
        }
        let key: [u8; 32] = h.finalize().into();
        if let Some(k) = self
            .templates
            .read()
            .ok()
            .and_then(|m| m.get(&key).cloned())
        {
            return Some(k);
        }
        let dbs = Arc::new(t.to_dbs()?);
        if let Ok(mut m) = self.templates.write() {
            m.insert(key, dbs.clone());
        }
        Some(dbs)
    }

    #[allow(clippy::too_many_arguments)]
    fn appraise_with(
        &self,
        vm_id: &str,
        e: &VmEntry,
        evidence: &Evidence,
        nonce: &[u8],
        activated: bool,
        baseline: Option<&Baseline>,
        baseline_required: bool,
    ) -> Appraisal {
        // An AK proven at enrollment (by credential activation under the
        // EK recorded then, which is still the VM's: a new EK drops the
        // enrollment) stays proven for the same AK bytes.
        let activated = activated
            || e.enrollment
                .as_ref()
                .is_some_and(|en| en.ak_public() == evidence.ak_public.0.as_slice());
        let reference = Reference {
            vm_id,
            ek_public: &e.ek_public,
            vtpm_ca: &self.ca,
            nonce,
            ak_activated: activated,
            secure_boot_expected: e.secure_boot,
            template: e.template.as_deref(),
            baseline,
            baseline_required,
            now: UnixTime::from_secs(now()),
            enrollment: e.enrollment.as_deref(),
        };
        appraise(evidence, &reference)
    }

    /// Appraises evidence of a registered VM against what the service
    /// knows of it, recording nothing and issuing no token (the stateless
    /// endpoint, like Keylime's evidence verification): the caller chose
    /// the nonce and vouches for its freshness; an AK counts as the VM's
    /// only if it is the enrolled one.
    pub async fn appraise_only(
        &self,
        vm_id: &str,
        evidence: &Evidence,
        nonce: &[u8],
    ) -> Result<Appraisal, ApiError> {
        let e = self.entry(vm_id).await?;
        let t0 = Instant::now();
        let baseline = e.baseline.as_ref().and_then(|(d, _)| d.baseline.as_ref());
        let a = self.appraise_with(vm_id, &e, evidence, nonce, false, baseline, false);
        self.metrics.appraised(&a, t0.elapsed());
        Ok(a)
    }

    /// Appraises and records the answer to challenge `challenge_id` of a
    /// VM: the quote must carry the challenge's nonce, and the AK counts
    /// as this VM's only if `activated_secret` is the secret of the
    /// credential the service made for it under the VM's recorded EK (or
    /// it is the AK proven at enrollment). Enrolls the VM on its first
    /// good attestation, learns or proposes its baseline, issues a token
    /// when healthy, records the boot report, and updates the alerts.
    /// Idempotent per challenge: a retry returns the first result.
    pub async fn attest(
        &self,
        vm_id: &str,
        challenge_id: &str,
        evidence: &Evidence,
        activated_secret: Option<&[u8]>,
    ) -> Result<AttestationResult, ApiError> {
        let lock = self.vm_lock(vm_id);
        let _guard = lock.lock().await;
        let challenge = self
            .store
            .get_challenge(challenge_id)
            .await?
            .filter(|c| c.vm_id == vm_id)
            .ok_or_else(|| {
                ApiError::not_found(format!("no challenge {challenge_id:?} for VM {vm_id:?}"))
            })?;
        let nonce = challenge.nonce.clone();
        if let Some(old) = self.find_by_nonce(vm_id, &nonce).await? {
            // A retry. If the first try died between recording the
            // attestation and writing its alerts, write them now.
            let latest = self.store.latest(vm_id).await?;
            if latest.as_ref().is_some_and(|l| l.id == old.id) {
                self.repair_alerts(vm_id, &old.attestation.alert_candidates)
                    .await?;
            } else if let Some(latest) = latest {
                // A later boot was recorded since. If this answer's alerts
                // were never written (no record of them at all), write
                // them now and let the later boot's conditions settle
                // them: the record exists, resolved if that boot is clean.
                let known: std::collections::BTreeSet<String> = self
                    .alerts(Some(vm_id.to_owned()), None)
                    .await?
                    .into_iter()
                    .map(|d| d.alert.key)
                    .collect();
                if old
                    .attestation
                    .alert_candidates
                    .iter()
                    .any(|c| !known.contains(&c.key()))
                {
                    self.reconcile(vm_id, &old.attestation.alert_candidates)
                        .await?;
                    self.reconcile(vm_id, &stored_doc(&latest)?.alert_candidates)
                        .await?;
                }
            }
            return Ok(old);
        }
        if challenge.used_at.is_some() {
            return Err(ApiError::conflict(format!(
                "challenge {challenge_id} was already answered"
            )));
        }
        if challenge.expires_at <= now_i64() {
            return Err(ApiError::gone(format!(
                "challenge {challenge_id} expired; ask for a new one"
            )));
        }
        let activated = match (
            &challenge.ak_public,
            &challenge.secret_sha256,
            activated_secret,
        ) {
            (Some(ak), Some(want), Some(got)) => {
                use sha2::Digest as _;
                let got: [u8; 32] = sha2::Sha256::digest(got).into();
                *ak == evidence.ak_public.0 && got == *want
            }
            _ => false,
        };
        let cached = self.cache.read().ok().and_then(|c| c.get(vm_id).cloned());
        let e = self.entry_checked(vm_id, cached).await?;
        let t0 = Instant::now();
        let at = now_i64();
        let (bdoc, bversion) = e
            .baseline
            .clone()
            .map_or((None, None), |(d, v)| (Some((*d).clone()), Some(v)));
        let learn = bdoc
            .as_ref()
            .and_then(|d| d.learn.clone())
            .filter(|l| l.active_at(at));
        let current = bdoc.as_ref().and_then(|d| d.baseline.clone());
        let relearn = learn.as_ref().is_some_and(|l| l.relearn);
        // Without a baseline and no relearn asked for, the VM has nothing
        // approved to compare with: that fails, it is not skipped.
        let required = current.is_none() && !relearn;
        // A relearn compares with nothing first: every other check must
        // pass for the boot to become the baseline.
        let mut a = self.appraise_with(
            vm_id,
            &e,
            evidence,
            &nonce,
            activated,
            if relearn { None } else { current.as_ref() },
            required,
        );
        // Boots are told apart by the quote's TPM counters, under the
        // same AK; the guest's boot id is only shown.
        let clock = a.quote.as_ref().map(|q| TpmClock {
            clock: q.clock_info.clock,
            reset_count: q.clock_info.reset_count,
            restart_count: q.clock_info.restart_count,
        });
        let ak_sha256 = crate::model::sha256_hex(&evidence.ak_public.0);
        let previous = self.store.latest(vm_id).await?;
        let prev_doc: Option<AttestationDoc> = previous
            .as_ref()
            .and_then(|p| serde_json::from_value(p.attestation.appraisal.clone()).ok());
        let this_boot = clock.map(|c| BootRef {
            ak_sha256: ak_sha256.clone(),
            reset_count: c.reset_count,
            restart_count: c.restart_count,
        });
        let (boot_counter, boot) = match (&prev_doc, this_boot) {
            (None, b) => (1, b),
            (Some(d), Some(b)) if d.boot.as_ref() == Some(&b) => (d.boot_counter, Some(b)),
            (Some(d), Some(b)) => (d.boot_counter.saturating_add(1), Some(b)),
            // An unverified quote proves no new boot.
            (Some(d), None) => (d.boot_counter, d.boot.clone()),
        };
        let mut baseline_event = None;
        let mut compared_version = bversion.unwrap_or(0);
        let mut compared = if relearn { None } else { current.clone() };
        // Everything but the baseline held: the boot may become (or be
        // proposed as) the baseline.
        let eligible = a.failures().all(|c| c.name == "baseline") && a.measurements.is_some();
        if let (true, Some(m)) = (eligible, a.measurements.clone()) {
            if let Some(l) = learn.as_ref().filter(|_| a.healthy) {
                let learned = Baseline {
                    source: BaselineSource::Learned {
                        boot: format!("boot #{boot_counter}"),
                    },
                    measurements: m,
                };
                let doc = BaselineDoc {
                    baseline: Some(learned.clone()),
                    learn: None,
                    pending: None,
                };
                let action = if l.relearn {
                    BaselineAction::Relearned
                } else {
                    BaselineAction::Learned
                };
                match self
                    .store
                    .put_baseline(
                        vm_id,
                        &serde_json::to_value(&doc).map_err(ApiError::internal)?,
                        bversion,
                        &BaselineChange {
                            action,
                            actor: l.actor.clone(),
                            at,
                        },
                    )
                    .await
                {
                    Ok(v) => {
                        baseline_event = Some(format!(
                            "{action} from boot #{boot_counter} (version {v}, by {})",
                            l.actor
                        ));
                        compared_version = v;
                        if relearn {
                            a = self.appraise_with(
                                vm_id,
                                &e,
                                evidence,
                                &nonce,
                                activated,
                                Some(&learned),
                                false,
                            );
                        }
                        compared = Some(learned);
                    }
                    // Someone else changed it: keep this appraisal as is.
                    Err(StoreError::Conflict { .. }) => {}
                    Err(err) => return Err(err.into()),
                }
            } else if required && bdoc.as_ref().is_none_or(|d| d.pending.is_none()) {
                let doc = BaselineDoc {
                    baseline: None,
                    learn: None,
                    pending: Some(PendingBaseline {
                        measurements: m,
                        boot_counter,
                        since: at,
                    }),
                };
                match self
                    .store
                    .put_baseline(
                        vm_id,
                        &serde_json::to_value(&doc).map_err(ApiError::internal)?,
                        bversion,
                        &BaselineChange {
                            action: BaselineAction::Proposed,
                            actor: format!("boot #{boot_counter}: awaiting an operator's approval"),
                            at,
                        },
                    )
                    .await
                {
                    Ok(v) => {
                        baseline_event = Some(format!(
                            "proposed from boot #{boot_counter} (version {v}): awaiting approval"
                        ));
                    }
                    Err(StoreError::Conflict { .. }) => {}
                    Err(err) => return Err(err.into()),
                }
            }
        }
        let elapsed = t0.elapsed();
        self.metrics.appraised(&a, elapsed);
        // Enrollment: the first attestation whose identity checks hold
        // with this challenge's own credential activation.
        if e.enrollment.is_none() && activated && identity_proven(&a) {
            if let Some(cert) = &evidence.ek_certificate {
                self.store
                    .put_enrollment(&trustlaunch_store::Enrollment {
                        vm_id: vm_id.to_owned(),
                        ek_certificate: cert.0.clone(),
                        ak_public: evidence.ak_public.0.clone(),
                        enrolled_at: at,
                    })
                    .await?;
            }
        }
        let report = a
            .measurements
            .as_ref()
            .map(|m| BootReport::new(boot_counter, m, compared.as_ref()));
        let verdict = a.verdict();
        let posture = Posture {
            vm_id,
            trusted_launch_supported: e.trusted_launch_supported,
            secure_boot: e.secure_boot,
            vtpm: e.vtpm,
            attestation_agent: true,
            last_appraisal: Some(&verdict),
            agent_silent_for: Some(0),
            agent_timeout: self.config.agent_timeout.as_secs(),
            untrusted_modules: &evidence.untrusted_modules,
        };
        let candidates = alert_candidates(&posture);
        let token = if a.healthy {
            Some(self.issue_token(&a)?)
        } else {
            None
        };
        let doc = AttestationDoc {
            verdict,
            appraisal: serde_json::to_value(&a).map_err(ApiError::internal)?,
            boot_report: report.as_ref().and_then(report_json),
            boot_id: evidence.boot_id.clone(),
            boot_counter,
            tpm_clock: clock,
            ak_sha256,
            boot,
            baseline_version: compared_version,
            baseline_event,
            alert_candidates: candidates.clone(),
            untrusted_modules: evidence.untrusted_modules.clone(),
            appraisal_ms: elapsed.as_secs_f64() * 1000.0,
        };
        let answered = self
            .store
            .answer_challenge(
                challenge_id,
                &NewAttestation {
                    vm_id: vm_id.to_owned(),
                    boot_id: evidence.boot_id.clone(),
                    nonce: nonce.clone(),
                    at,
                    healthy: a.healthy,
                    appraisal: serde_json::to_value(&doc).map_err(ApiError::internal)?,
                    token: token.clone(),
                },
            )
            .await?;
        self.invalidate(vm_id);
        match answered {
            Answered::Recorded => {}
            Answered::AlreadyRecorded => {
                if let Some(old) = self.find_by_nonce(vm_id, &nonce).await? {
                    return Ok(old);
                }
            }
            _ => {
                return Err(ApiError::conflict(format!(
                    "challenge {challenge_id} was answered or expired meanwhile"
                )))
            }
        }
        self.metrics.attested(a.healthy);
        self.reconcile(vm_id, &candidates).await?;
        let id = self.store.latest(vm_id).await?.map_or(0, |r| r.id);
        Ok(AttestationResult {
            id,
            vm_id: vm_id.to_owned(),
            healthy: a.healthy,
            token,
            attestation: doc,
            new: true,
        })
    }

    async fn find_by_nonce(
        &self,
        vm_id: &str,
        nonce: &[u8],
    ) -> Result<Option<AttestationResult>, ApiError> {
        let Some(r) = self.store.attestation_by_nonce(vm_id, nonce).await? else {
            return Ok(None);
        };
        let doc = stored_doc(&r)?;
        Ok(Some(AttestationResult {
            id: r.id,
            vm_id: vm_id.to_owned(),
            healthy: r.attestation.healthy,
            token: r.attestation.token.clone(),
            attestation: doc,
            new: false,
        }))
    }

    fn issue_token(&self, a: &Appraisal) -> Result<String, ApiError> {
        let mut jti = [0u8; 16];
        OsRng.fill_bytes(&mut jti);
        let keys = self
            .keys
            .read()
            .map_err(|_| ApiError::internal("signing keys poisoned"))?;
        token::issue(
            &keys,
            &a.claims,
            &self.config.issuer,
            &self.config.audience,
            now(),
            self.config.token_lifetime.as_secs().max(1),
            &hex(&jti),
            &mut OsRng,
        )
        .map_err(ApiError::internal)
    }

    /// The agent of a VM did not answer a challenge. Raises "agent
    /// unresponsive" once it has been silent longer than the limit (and
    /// keeps the conditions its last attestation found).
    pub async fn agent_silent(
        &self,
        vm_id: &str,
        silent_for: Option<u64>,
        reason: &str,
    ) -> Result<(), ApiError> {
        let lock = self.vm_lock(vm_id);
        let _guard = lock.lock().await;
        let e = self.entry(vm_id).await?;
        let last = self.store.latest(vm_id).await?;
        let last_doc: Option<AttestationDoc> = last
            .as_ref()
            .and_then(|r| serde_json::from_value(r.attestation.appraisal.clone()).ok());
        let verdict = last_doc.as_ref().map(|d| d.verdict.clone());
        let modules = last_doc
            .as_ref()
            .map(|d| d.untrusted_modules.clone())
            .unwrap_or_default();
        let posture = Posture {
            vm_id,
            trusted_launch_supported: e.trusted_launch_supported,
            secure_boot: e.secure_boot,
            vtpm: e.vtpm,
            // An agent that never answered is missing (a recommendation),
            // not unresponsive.
            attestation_agent: last.is_some(),
            last_appraisal: verdict.as_ref(),
            agent_silent_for: silent_for,
            agent_timeout: self.config.agent_timeout.as_secs(),
            untrusted_modules: &modules,
        };
        let mut candidates = alert_candidates(&posture);
        for c in &mut candidates {
            if matches!(
                c.cause,
                Cause::Attestation {
                    reason: FailureReason::AgentUnresponsive
                }
            ) {
                c.detail = format!("{}; last error: {reason}", c.detail);
            }
        }
        self.reconcile(vm_id, &candidates).await
    }

    /// Reconciles only if some condition of the latest attestation has no
    /// open alert, or an open alert has no condition (a crash between the
    /// two writes); otherwise a retry would count the conditions twice.
    async fn repair_alerts(
        &self,
        vm_id: &str,
        candidates: &[AlertCandidate],
    ) -> Result<(), ApiError> {
        let open: std::collections::BTreeSet<String> = self
            .alerts(Some(vm_id.to_owned()), None)
            .await?
            .into_iter()
            .filter(|d| d.alert.state != AlertState::Resolved)
            .map(|d| d.alert.key)
            .collect();
        let wanted: std::collections::BTreeSet<String> =
            candidates.iter().map(|c| c.key()).collect();
        let active: std::collections::BTreeSet<String> = self
            .alerts(Some(vm_id.to_owned()), Some("active".into()))
            .await?
            .into_iter()
            .map(|d| d.alert.key)
            .collect();
        if !wanted.is_subset(&open) || !active.is_subset(&wanted) {
            self.reconcile(vm_id, candidates).await?;
        }
        Ok(())
    }

    /// Applies a VM's alert conditions to its stored alerts: raised once,
    /// resolved when gone, suppressed by rule; each change queued for the
    /// webhooks in the same write.
    async fn reconcile(&self, vm_id: &str, candidates: &[AlertCandidate]) -> Result<(), ApiError> {
        let stored = self
            .store
            .alerts(&AlertFilter {
                vm_id: Some(vm_id.to_owned()),
                state: None,
            })
            .await?;
        let mut book = AlertBook::default();
        for r in &stored {
            if let Ok(d) = serde_json::from_value::<AlertDoc>(r.alert.clone()) {
                book.alerts.insert(r.key.clone(), d.alert);
            }
        }
        let before = book.clone();
        let rules = self.rules().await?;
        let events = book.reconcile(vm_id, candidates, &rules, now());
        let mut notified: HashMap<String, &'static str> = HashMap::new();
        for ev in &events {
            let (key, what) = match ev {
                AlertEvent::Raised { alert } => (&alert.key, "raised"),
                AlertEvent::Resolved { alert } => (&alert.key, "resolved"),
                AlertEvent::Suppressed { alert } => (&alert.key, "suppressed"),
            };
            notified.insert(key.clone(), what);
            self.metrics.alert_event(what);
        }
        let mut any_pending = false;
        for (key, alert) in &book.alerts {
            if before.alerts.get(key) == Some(alert) {
                continue;
            }
            let old: Option<AlertDoc> = stored
                .iter()
                .find(|r| &r.key == key)
                .and_then(|r| serde_json::from_value(r.alert.clone()).ok());
            let doc = match notified.get(key) {
                Some(&what) => AlertDoc {
                    alert: alert.clone(),
                    last_event: what.to_owned(),
                    deliveries: if what == "suppressed" {
                        Vec::new()
                    } else {
                        Delivery::queue(&self.config.webhooks, now())
                    },
                },
                // Seen again: count and time only, delivery unchanged.
                None => AlertDoc {
                    alert: alert.clone(),
                    ..old.unwrap_or(AlertDoc {
                        alert: alert.clone(),
                        last_event: "raised".into(),
                        deliveries: Vec::new(),
                    })
                },
            };
            any_pending |= doc.pending();
            self.put_alert_doc(&doc).await?;
        }
        if any_pending {
            self.webhook_pending
                .store(true, std::sync::atomic::Ordering::SeqCst);
            self.webhook_wake.notify_one();
        }
        Ok(())
    }

    /// Writes an alert.
    pub async fn put_alert_doc(&self, doc: &AlertDoc) -> Result<(), ApiError> {
        self.store
            .put_alert(&AlertRecord {
                key: doc.alert.key.clone(),
                vm_id: doc.alert.vm_id.clone(),
                state: doc.alert.state.as_str().into(),
                alert: serde_json::to_value(doc).map_err(ApiError::internal)?,
                updated_at: now_i64(),
            })
            .await?;
        Ok(())
    }

    /// Alerts, optionally of one VM and in one state.
    pub async fn alerts(
        &self,
        vm_id: Option<String>,
        state: Option<String>,
    ) -> Result<Vec<AlertDoc>, ApiError> {
        let rows = self.store.alerts(&AlertFilter { vm_id, state }).await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| serde_json::from_value(r.alert).ok())
            .collect())
    }

    /// An operator dismisses an alert (audited with the caller).
    pub async fn dismiss(&self, key: &str, caller: &Caller) -> Result<AlertDoc, ApiError> {
        let mut doc = self
            .alerts(None, None)
            .await?
            .into_iter()
            .find(|d| d.alert.key == key)
            .ok_or_else(|| ApiError::not_found(format!("no alert {key:?}")))?;
        doc.alert.state = AlertState::Dismissed;
        doc.last_event = "dismissed".into();
        doc.deliveries = Delivery::queue(&self.config.webhooks, now());
        self.put_alert_doc(&doc).await?;
        self.store
            .add_audit(&NewAuditEntry {
                at: now_i64(),
                actor: caller.actor(),
                action: "alert.dismiss".into(),
                target: format!("alert/{key}"),
                detail: json!({"vmId": doc.alert.vm_id, "kind": doc.alert.kind}),
                deliveries: None,
            })
            .await?;
        self.metrics.alert_event("dismissed");
        self.webhook_pending
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.webhook_wake.notify_one();
        Ok(doc)
    }

    /// The suppression rules.
    pub async fn rules(&self) -> Result<Vec<SuppressionRule>, ApiError> {
        Ok(self
            .store
            .suppression_rules()
            .await?
            .into_iter()
            .filter_map(|r| serde_json::from_value(r.rule).ok())
            .collect())
    }

    /// Recommendations for every registered VM.
    pub async fn recommendations(&self) -> Result<Vec<Recommendation>, ApiError> {
        let mut out = Vec::new();
        for vm in self.store.list_vms().await? {
            let Ok(reg) = serde_json::from_value::<VmRegistration>(vm.spec.clone()) else {
                continue;
            };
            let last = self.store.latest(&vm.vm_id).await?;
            let verdict: Option<Verdict> = last.as_ref().and_then(|r| {
                serde_json::from_value::<AttestationDoc>(r.attestation.appraisal.clone())
                    .ok()
                    .map(|d| d.verdict)
            });
            let silent = self.silent_alert_active(&vm.vm_id).await?;
            let posture = Posture {
                vm_id: &vm.vm_id,
                trusted_launch_supported: reg.trusted_launch_supported,
                secure_boot: reg.secure_boot_enabled,
                vtpm: reg.v_tpm_enabled,
                attestation_agent: last.is_some(),
                last_appraisal: verdict.as_ref(),
                agent_silent_for: if silent { None } else { Some(0) },
                agent_timeout: self.config.agent_timeout.as_secs(),
                untrusted_modules: &[],
            };
            out.extend(recommendations(&posture));
        }
        Ok(out)
    }

    async fn silent_alert_active(&self, vm_id: &str) -> Result<bool, ApiError> {
        Ok(self
            .alerts(Some(vm_id.to_owned()), Some("active".into()))
            .await?
            .iter()
            .any(|d| {
                matches!(
                    d.alert.cause,
                    Cause::Attestation {
                        reason: FailureReason::AgentUnresponsive
                    }
                )
            }))
    }

    /// A JSON summary of a VM: registration, enrollment, latest verdict.
    pub async fn vm_summary(&self, vm_id: &str) -> Result<serde_json::Value, ApiError> {
        let rec = self
            .store
            .get_vm(vm_id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("VM {vm_id:?} is not registered")))?;
        let last = self.store.latest(vm_id).await?;
        let enrolled = self.store.get_enrollment(vm_id).await?;
        let active = self
            .alerts(Some(vm_id.to_owned()), Some("active".into()))
            .await?
            .len();
        let (health, at) = match &last {
            Some(r) if r.attestation.healthy => ("healthy", Some(r.attestation.at)),
            Some(r) => ("unhealthy", Some(r.attestation.at)),
            None => ("unknown", None),
        };
        Ok(json!({
            "vmId": vm_id,
            "registration": rec.spec,
            "enrolledAt": enrolled.map(|x| x.enrolled_at),
            "attestationHealth": health,
            "lastAttestedAt": at,
            "activeAlerts": active,
        }))
    }
}

fn identity_proven(a: &Appraisal) -> bool {
    [
        "ek.certificate",
        "ek.vm_identity",
        "ak.attributes",
        "ak.name",
        "ak.activated",
        "quote.signature",
    ]
    .iter()
    .all(|n| a.check(n).is_some_and(|c| c.outcome == Outcome::Pass))
}

/// A signing key as the store keeps it: sealed under the master key,
/// for its kid.
fn seal_key(master: &MasterKey, key: &SigningKey) -> Result<String, ApiError> {
    let pem = key.to_pkcs8_pem().map_err(ApiError::internal)?;
    master
        .seal(&signing_key_purpose(key.kid()), pem.as_bytes(), &mut OsRng)
        .map_err(ApiError::internal)
}

async fn load_keys(store: &Store, master: &MasterKey) -> Result<KeySet, ApiError> {
    let mut records = store.signing_keys().await?;
    // Keys an older version kept in plain text are sealed in place.
    for r in records
        .iter()
        .filter(|r| !trustlaunch_seal::is_sealed(&r.pkcs8_pem))
    {
        let key = SigningKey::from_pkcs8_pem(&r.pkcs8_pem)
            .map_err(|e| ApiError::internal(format!("signing key {}: {e}", r.kid)))?;
        store
            .put_signing_key(&SigningKeyRecord {
                pkcs8_pem: seal_key(master, &key)?,
                ..r.clone()
            })
            .await?;
    }
    if records
        .iter()
        .any(|r| !trustlaunch_seal::is_sealed(&r.pkcs8_pem))
    {
        records = store.signing_keys().await?;
    }
    if !records.iter().any(|r| r.current) {
        let key = tokio::task::spawn_blocking(|| SigningKey::generate(&mut OsRng))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?;
        let rec = SigningKeyRecord {
            kid: key.kid().to_owned(),
            pkcs8_pem: seal_key(master, &key)?,
            created_at: now_i64(),
            retire_at: None,
            current: true,
        };
        store.put_signing_key(&rec).await?;
        // Another server may have made one at the same time: read again,
        // the store keeps exactly one current.
        records = store.signing_keys().await?;
    }
    let t = now_i64();
    let parse = |r: &SigningKeyRecord| {
        let pem = master
            .open(&signing_key_purpose(&r.kid), &r.pkcs8_pem)
            .map_err(|e| {
                ApiError::internal(format!(
                    "signing key {}: {e} (is this the server's master key?)",
                    r.kid
                ))
            })?;
        let pem = std::str::from_utf8(&pem)
            .map_err(|_| ApiError::internal(format!("signing key {}: not PEM", r.kid)))?;
        SigningKey::from_pkcs8_pem(pem)
            .map_err(|e| ApiError::internal(format!("signing key {}: {e}", r.kid)))
    };
    let current = records
        .iter()
        .rev()
        .find(|r| r.current)
        .ok_or_else(|| ApiError::internal("no current signing key"))?;
    let mut previous: Vec<&SigningKeyRecord> = records
        .iter()
        .filter(|r| !r.current && r.retire_at.is_some_and(|x| x > t))
        .collect();
    previous.sort_by_key(|r| r.created_at);
    let mut set = match previous.first() {
        Some(first) => KeySet::new(parse(first)?),
        None => KeySet::new(parse(current)?),
    };
    if !previous.is_empty() {
        for pair in previous.windows(2) {
            if let [old, next] = pair {
                set.rotate(
                    parse(next)?,
                    u64::try_from(old.retire_at.unwrap_or(t)).unwrap_or(0),
                );
            }
        }
        let last = previous.last().map_or(t, |r| r.retire_at.unwrap_or(t));
        set.rotate(parse(current)?, u64::try_from(last).unwrap_or(0));
    }
    Ok(set)
}

/// The attestation document a stored attestation holds.
pub(crate) fn stored_doc(r: &AttestationRecord) -> Result<AttestationDoc, ApiError> {
    serde_json::from_value(r.attestation.appraisal.clone())
        .map_err(|e| ApiError::internal(format!("stored attestation {}: {e}", r.id)))
}
