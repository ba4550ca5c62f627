//! The attestation service's core, behind the HTTP API and the monitor:
//! registering VMs, appraising evidence, enrolling, learning baselines,
//! issuing tokens, and turning verdicts into alerts.
//!
//! One attestation of one VM runs at a time (a per-VM lock), so learning
//! and alert reconciliation see a consistent history; servers sharing a
//! database are kept apart by the store's uniqueness (vm, nonce) and the
//! baseline's optimistic concurrency.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::model::{
    hex, report_json, unhex, AlertDoc, AttestationDoc, BaselineDoc, Delivery, LearnRequest,
    VmRegistration,
};

/// How long a cached VM entry is trusted before it is read again (other
/// servers sharing the database may have changed it).
const CACHE_TTL: Duration = Duration::from_secs(5);

/// The service's settings.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// The `iss` of tokens.
    pub issuer: String,
    /// Token lifetime.
    pub token_lifetime: Duration,
    /// How long an agent may be silent before it is unresponsive.
    pub agent_timeout: Duration,
    /// The names of the webhooks alert changes are delivered to.
    pub webhooks: Vec<String>,
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
    ek_public: Vec<u8>,
    template: Option<Arc<KeyDatabases>>,
    enrollment: Option<Arc<Prepared>>,
    baseline: Option<(Arc<BaselineDoc>, i64)>,
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
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn now_i64() -> i64 {
    i64::try_from(now()).unwrap_or(i64::MAX)
}

impl Service {
    /// Opens the service over `store`: loads the signing keys (making the
    /// first one if the store has none).
    pub async fn new(
        store: Store,
        config: ServiceConfig,
        ca: Vec<CaCertificate>,
    ) -> Result<Self, ApiError> {
        let keys = load_keys(&store).await?;
        Ok(Self {
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
        let keys = load_keys(&self.store).await?;
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
                pkcs8_pem: key.to_pkcs8_pem().map_err(ApiError::internal)?.to_string(),
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

    /// Registers (or updates) a VM. A first registration with a predicted
    /// baseline stores it (action `predicted`) and asks the first healthy
    /// boot to learn.
    pub async fn register(&self, vm_id: &str, reg: &VmRegistration) -> Result<(), ApiError> {
        crate::error::check_vm_id(vm_id)?;
        let ek = match &reg.ek_public {
            Some(h) => unhex(h).ok_or_else(|| ApiError::bad_request("ekPublic is not hex"))?,
            None => Vec::new(),
        };
        if reg.template.to_dbs().is_none() {
            return Err(ApiError::bad_request("template: a database is not hex"));
        }
        let existing = self.store.get_vm(vm_id).await?;
        let doc = serde_json::to_value(reg).map_err(ApiError::internal)?;
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
        // configuration replaces the old one (audited). An image change
        // alone does not: that is what a baseline guards (relearn).
        let reconfigured = existing
            .as_ref()
            .and_then(|e| serde_json::from_value::<VmRegistration>(e.spec.clone()).ok())
            .is_some_and(|old| {
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
        self.store
            .put_vm(&VmRecord {
                vm_id: vm_id.to_owned(),
                spec: doc,
                ek_public: ek,
                created_at: now_i64(),
            })
            .await?;
        if reconfigured {
            if let Some(current) = self.store.get_baseline(vm_id).await? {
                let doc = BaselineDoc {
                    baseline: reg.predicted_baseline.clone(),
                    learn: Some(LearnRequest {
                        actor: "system".into(),
                        relearn: false,
                    }),
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
                            actor: "platform: security profile changed".into(),
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
        if self.store.get_baseline(vm_id).await?.is_none() {
            let (doc, action) = match &reg.predicted_baseline {
                Some(b) => (
                    BaselineDoc {
                        baseline: Some(b.clone()),
                        learn: Some(LearnRequest {
                            actor: "system".into(),
                            relearn: false,
                        }),
                    },
                    BaselineAction::Predicted,
                ),
                None => (
                    BaselineDoc {
                        baseline: None,
                        learn: Some(LearnRequest {
                            actor: "system".into(),
                            relearn: false,
                        }),
                    },
                    BaselineAction::Learned,
                ),
            };
            let value = serde_json::to_value(&doc).map_err(ApiError::internal)?;
            match self
                .store
                .put_baseline(
                    vm_id,
                    &value,
                    None,
                    &BaselineChange {
                        action,
                        actor: "system".into(),
                        at: now_i64(),
                    },
                )
                .await
            {
                Ok(_) | Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
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

    fn appraise_with(
        &self,
        vm_id: &str,
        e: &VmEntry,
        evidence: &Evidence,
        nonce: &[u8],
        ak_activated: bool,
        baseline: Option<&Baseline>,
    ) -> Appraisal {
        // An AK proven at enrollment stays proven for the same AK bytes.
        let activated = ak_activated
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
            now: UnixTime::from_secs(now()),
            enrollment: e.enrollment.as_deref(),
        };
        appraise(evidence, &reference)
    }

    /// Appraises evidence of an enrolled VM against what the service knows
    /// of it, recording nothing (the stateless endpoint; the caller vouches
    /// for the nonce's freshness).
    pub async fn appraise_only(
        &self,
        vm_id: &str,
        evidence: &Evidence,
        nonce: &[u8],
    ) -> Result<Appraisal, ApiError> {
        let e = self.entry(vm_id).await?;
        let t0 = Instant::now();
        let baseline = e.baseline.as_ref().and_then(|(d, _)| d.baseline.as_ref());
        let a = self.appraise_with(vm_id, &e, evidence, nonce, false, baseline);
        self.metrics.appraised(&a, t0.elapsed());
        Ok(a)
    }

    /// Appraises and records one attestation of a VM: enrolls it on its
    /// first good one, learns its baseline when asked to, issues a token
    /// when healthy, records the boot report, and updates the alerts.
    /// Idempotent per (vm, nonce).
    pub async fn attest(
        &self,
        vm_id: &str,
        evidence: &Evidence,
        nonce: &[u8],
        ak_activated: bool,
    ) -> Result<AttestationResult, ApiError> {
        let lock = self.vm_lock(vm_id);
        let _guard = lock.lock().await;
        let cached = self.cache.read().ok().and_then(|c| c.get(vm_id).cloned());
        let e = self.entry_checked(vm_id, cached).await?;
        if let Some(old) = self.find_by_nonce(vm_id, nonce).await? {
            // A retry. If the first try died between recording the
            // attestation and writing its alerts, write them now.
            if self
                .store
                .latest(vm_id)
                .await?
                .is_some_and(|l| l.id == old.id)
            {
                self.repair_alerts(vm_id, &old.attestation.alert_candidates)
                    .await?;
            }
            return Ok(old);
        }
        let t0 = Instant::now();
        let (bdoc, bversion) = e
            .baseline
            .clone()
            .map_or((None, None), |(d, v)| (Some((*d).clone()), Some(v)));
        let learn = bdoc.as_ref().and_then(|d| d.learn.clone());
        let current = bdoc.as_ref().and_then(|d| d.baseline.clone());
        let relearn = learn.as_ref().is_some_and(|l| l.relearn);
        // A relearn compares with nothing first: every other check must
        // pass for the boot to become the baseline.
        let mut a = self.appraise_with(
            vm_id,
            &e,
            evidence,
            nonce,
            ak_activated,
            if relearn { None } else { current.as_ref() },
        );
        let mut baseline_event = None;
        let mut compared_version = bversion.unwrap_or(0);
        let mut compared = if relearn { None } else { current.clone() };
        if let (Some(l), Some(m)) = (&learn, a.measurements.clone()) {
            let eligible = a.healthy;
            if eligible {
                let learned = Baseline {
                    source: BaselineSource::Learned {
                        boot: evidence.boot_id.clone(),
                    },
                    measurements: m,
                };
                let doc = BaselineDoc {
                    baseline: Some(learned.clone()),
                    learn: None,
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
                            at: now_i64(),
                        },
                    )
                    .await
                {
                    Ok(v) => {
                        baseline_event = Some(format!(
                            "{} from boot {} (version {v}, by {})",
                            action, evidence.boot_id, l.actor
                        ));
                        compared_version = v;
                        if relearn {
                            a = self.appraise_with(
                                vm_id,
                                &e,
                                evidence,
                                nonce,
                                ak_activated,
                                Some(&learned),
                            );
                        }
                        compared = Some(learned);
                    }
                    // Someone else changed it: keep this appraisal as is.
                    Err(StoreError::Conflict { .. }) => {}
                    Err(err) => return Err(err.into()),
                }
            }
        }
        let elapsed = t0.elapsed();
        self.metrics.appraised(&a, elapsed);
        // Enrollment: the first attestation whose identity checks hold.
        if e.enrollment.is_none() && identity_proven(&a) {
            if let Some(cert) = &evidence.ek_certificate {
                self.store
                    .put_enrollment(&trustlaunch_store::Enrollment {
                        vm_id: vm_id.to_owned(),
                        ek_certificate: cert.0.clone(),
                        ak_public: evidence.ak_public.0.clone(),
                        enrolled_at: now_i64(),
                    })
                    .await?;
            }
        }
        let previous = self.store.latest(vm_id).await?;
        let prev_doc: Option<AttestationDoc> = previous
            .as_ref()
            .and_then(|p| serde_json::from_value(p.attestation.appraisal.clone()).ok());
        let boot_counter = match (&previous, &prev_doc) {
            (Some(p), Some(d)) if p.attestation.boot_id == evidence.boot_id => d.boot_counter,
            (_, Some(d)) => d.boot_counter.saturating_add(1),
            _ => 1,
        };
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
            baseline_version: compared_version,
            baseline_event,
            alert_candidates: candidates.clone(),
            untrusted_modules: evidence.untrusted_modules.clone(),
            appraisal_ms: elapsed.as_secs_f64() * 1000.0,
        };
        let new = self
            .store
            .add_attestation(&NewAttestation {
                vm_id: vm_id.to_owned(),
                boot_id: evidence.boot_id.clone(),
                nonce: nonce.to_vec(),
                at: now_i64(),
                healthy: a.healthy,
                appraisal: serde_json::to_value(&doc).map_err(ApiError::internal)?,
                token: token.clone(),
            })
            .await?;
        self.invalidate(vm_id);
        if !new {
            if let Some(old) = self.find_by_nonce(vm_id, nonce).await? {
                return Ok(old);
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
            new,
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
        let doc: AttestationDoc = serde_json::from_value(r.attestation.appraisal.clone())
            .map_err(|e| ApiError::internal(format!("stored attestation {}: {e}", r.id)))?;
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

    /// An operator dismisses an alert.
    pub async fn dismiss(&self, key: &str) -> Result<AlertDoc, ApiError> {
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

    /// Adds or replaces a suppression rule; active alerts it matches are
    /// dismissed by it now.
    pub async fn put_rule(&self, rule: &SuppressionRule) -> Result<(), ApiError> {
        if rule.name.is_empty() || rule.name.len() > 128 {
            return Err(ApiError::bad_request("a rule needs a name of 1-128 bytes"));
        }
        self.store
            .put_suppression_rule(&trustlaunch_store::SuppressionRule {
                name: rule.name.clone(),
                rule: serde_json::to_value(rule).map_err(ApiError::internal)?,
            })
            .await?;
        for mut d in self.alerts(None, Some("active".into())).await? {
            let c = AlertCandidate {
                kind: d.alert.kind,
                vm_id: d.alert.vm_id.clone(),
                cause: d.alert.cause.clone(),
                detail: d.alert.detail.clone(),
            };
            if rule.matches(&c) {
                d.alert.state = AlertState::Dismissed;
                d.alert.suppressed_by = Some(rule.name.clone());
                d.last_event = "suppressed".into();
                d.deliveries.clear();
                self.put_alert_doc(&d).await?;
            }
        }
        Ok(())
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

    /// The stored baseline of a VM and its version.
    pub async fn baseline(&self, vm_id: &str) -> Result<(BaselineDoc, i64), ApiError> {
        let b = self
            .store
            .get_baseline(vm_id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("VM {vm_id:?} has no baseline")))?;
        let doc = serde_json::from_value(b.baseline)
            .map_err(|e| ApiError::internal(format!("stored baseline of {vm_id}: {e}")))?;
        Ok((doc, b.version))
    }

    /// Pins the baseline to the components of an attestation (the latest
    /// by default): auto-learn stops.
    pub async fn pin(
        &self,
        vm_id: &str,
        attestation_id: Option<i64>,
        actor: &str,
        if_version: Option<i64>,
    ) -> Result<i64, ApiError> {
        let (_, version) = self.baseline(vm_id).await?;
        if if_version.is_some_and(|v| v != version) {
            return Err(ApiError::conflict(format!(
                "the baseline of {vm_id} is at version {version}"
            )));
        }
        let history = self.store.history(vm_id, 1000).await?;
        let rec = match attestation_id {
            Some(id) => history.iter().find(|r| r.id == id),
            None => history.first(),
        }
        .ok_or_else(|| ApiError::not_found("no such attestation to pin"))?;
        let doc: AttestationDoc = serde_json::from_value(rec.attestation.appraisal.clone())
            .map_err(ApiError::internal)?;
        let m = doc
            .appraisal
            .get("measurements")
            .cloned()
            .and_then(|m| serde_json::from_value(m).ok())
            .ok_or_else(|| ApiError::bad_request("that attestation has no measurements"))?;
        let new = BaselineDoc {
            baseline: Some(Baseline {
                source: BaselineSource::Pinned {
                    by: actor.to_owned(),
                },
                measurements: m,
            }),
            learn: None,
        };
        let v = self
            .store
            .put_baseline(
                vm_id,
                &serde_json::to_value(&new).map_err(ApiError::internal)?,
                Some(version),
                &BaselineChange {
                    action: BaselineAction::Pinned,
                    actor: actor.to_owned(),
                    at: now_i64(),
                },
            )
            .await?;
        self.invalidate(vm_id);
        Ok(v)
    }

    /// Asks the next boot whose other checks pass to become the baseline
    /// (after an accepted update). Audited when it happens.
    pub async fn relearn(&self, vm_id: &str, actor: &str) -> Result<i64, ApiError> {
        let (mut doc, version) = self.baseline(vm_id).await?;
        doc.learn = Some(LearnRequest {
            actor: actor.to_owned(),
            relearn: true,
        });
        let v = self
            .store
            .put_baseline(
                vm_id,
                &serde_json::to_value(&doc).map_err(ApiError::internal)?,
                Some(version),
                &BaselineChange {
                    action: BaselineAction::Relearned,
                    actor: format!("{actor} (requested)"),
                    at: now_i64(),
                },
            )
            .await?;
        self.invalidate(vm_id);
        Ok(v)
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

async fn load_keys(store: &Store) -> Result<KeySet, ApiError> {
    let mut records = store.signing_keys().await?;
    if !records.iter().any(|r| r.current) {
        let key = tokio::task::spawn_blocking(|| SigningKey::generate(&mut OsRng))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?;
        let rec = SigningKeyRecord {
            kid: key.kid().to_owned(),
            pkcs8_pem: key.to_pkcs8_pem().map_err(ApiError::internal)?.to_string(),
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
        SigningKey::from_pkcs8_pem(&r.pkcs8_pem)
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
