//! The monitoring loop over this host's runtime: registers its VMs with
//! the service, challenges each Trusted Launch VM's agent at every boot
//! and every `interval`, and reports agents that stop answering.
//!
//! The runtime is blocking (files, sockets, processes): its calls run on
//! tokio's blocking pool. One challenge per VM is in flight at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use trustlaunch_runtime::vm::{Runtime, Status, VmError};

use crate::caller::Caller;
use crate::challenge::AkChoice;
use crate::error::ApiError;
use crate::model::{hex, ManagedBy, Template, VmRegistration};
use crate::service::{now, AttestationResult, Service};

/// The loop's settings.
#[derive(Clone, Debug)]
pub struct MonitorConfig {
    /// How often the runtime's VMs are looked at.
    pub tick: Duration,
    /// How often a running VM is attested again.
    pub interval: Duration,
    /// How long the first challenge of a boot waits for the agent (the
    /// guest is still booting).
    pub boot_wait: Duration,
    /// How long a later challenge waits.
    pub challenge_limit: Duration,
}

#[derive(Default)]
struct Watch {
    /// (boots, spec) last registered.
    registered: Option<(u64, serde_json::Value)>,
    /// The boot (runtime's start counter) last attested.
    boot_attested: Option<u64>,
    /// When the agent last answered (Unix seconds).
    last_answer: Option<u64>,
    /// When the last challenge started.
    last_try: Option<Instant>,
    in_flight: bool,
}

/// The monitor.
pub struct Monitor {
    runtime: Arc<Runtime>,
    service: Arc<Service>,
    config: MonitorConfig,
    watches: Mutex<HashMap<String, Watch>>,
}

fn blocking_err(e: tokio::task::JoinError) -> ApiError {
    ApiError::internal(format!("runtime task: {e}"))
}

fn vm_err(e: VmError) -> ApiError {
    match e {
        VmError::NotFound(_) => ApiError::not_found(e.to_string()),
        other => ApiError::unavailable(other.to_string()),
    }
}

impl Monitor {
    /// A monitor over `runtime`.
    pub fn new(runtime: Arc<Runtime>, service: Arc<Service>, config: MonitorConfig) -> Self {
        Self {
            runtime,
            service,
            config,
            watches: Mutex::new(HashMap::new()),
        }
    }

    fn watches(&self) -> std::sync::MutexGuard<'_, HashMap<String, Watch>> {
        self.watches.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs forever.
    pub async fn run(self: Arc<Self>) {
        loop {
            if let Err(e) = self.clone().pass().await {
                tracing::warn!("monitor: {e}");
            }
            tokio::time::sleep(self.config.tick).await;
        }
    }

    /// One look at every VM.
    pub async fn pass(self: Arc<Self>) -> Result<(), ApiError> {
        let rt = self.runtime.clone();
        let infos = tokio::task::spawn_blocking(move || rt.list())
            .await
            .map_err(blocking_err)?
            .map_err(vm_err)?;
        for info in infos {
            let name = info.spec.name.clone();
            let seen = serde_json::to_value(&info.spec)
                .ok()
                .map(|v| (info.state.boots, v));
            if let Err(e) = self.register(&name, seen).await {
                tracing::warn!("monitor: registering {name}: {e}");
                continue;
            }
            if info.state.status != Status::Running || !info.spec.security_profile.vtpm() {
                continue;
            }
            let due = {
                let mut w = self.watches();
                let w = w.entry(name.clone()).or_default();
                let new_boot = w.boot_attested != Some(info.state.boots);
                let periodic = w
                    .last_try
                    .is_none_or(|t| t.elapsed() >= self.config.interval);
                if !w.in_flight && (new_boot || periodic) {
                    w.in_flight = true;
                    w.last_try = Some(Instant::now());
                    Some(new_boot)
                } else {
                    None
                }
            };
            if let Some(new_boot) = due {
                let me = self.clone();
                let boots = info.state.boots;
                tokio::spawn(async move {
                    let limit = if new_boot {
                        me.config.boot_wait
                    } else {
                        me.config.challenge_limit
                    };
                    let r = me.challenge(&name, boots, limit).await;
                    if let Err(e) = r {
                        tracing::info!("monitor: {name}: {e}");
                    }
                });
            }
        }
        Ok(())
    }

    /// Registers a runtime VM with the service when it is new or changed
    /// (its spec or its start counter).
    async fn register(
        &self,
        name: &str,
        seen: Option<(u64, serde_json::Value)>,
    ) -> Result<(), ApiError> {
        if seen.is_some()
            && self.watches().get(name).and_then(|w| w.registered.as_ref()) == seen.as_ref()
        {
            return Ok(());
        }
        let rt = self.runtime.clone();
        let n = name.to_owned();
        let facts = tokio::task::spawn_blocking(move || rt.facts(&n))
            .await
            .map_err(blocking_err)?
            .map_err(vm_err)?;
        let spec = serde_json::to_value(&facts.spec).map_err(ApiError::internal)?;
        let key = (facts.boots, spec.clone());
        let reg = VmRegistration {
            trusted_launch: facts.trusted_launch,
            trusted_launch_supported: facts.trusted_launch_supported,
            secure_boot_enabled: facts.secure_boot,
            v_tpm_enabled: facts.vtpm,
            ek_public: facts.ek_public.as_deref().map(hex),
            template: if facts.secure_boot {
                Template::from_dbs(&facts.template)
            } else {
                Template::default()
            },
            predicted_baseline: facts.predicted.clone(),
            spec,
            host: "local".into(),
            managed_by: ManagedBy::Platform,
        };
        self.service
            .register(name, &reg, &Caller::platform())
            .await?;
        tracing::info!("{name}: registered (start #{})", facts.boots);
        let last_answer = self
            .service
            .store
            .latest(name)
            .await?
            .map(|r| u64::try_from(r.attestation.at).unwrap_or(0));
        let mut w = self.watches();
        let w = w.entry(name.to_owned()).or_default();
        w.registered = Some(key);
        if w.last_answer.is_none() {
            w.last_answer = last_answer;
        }
        Ok(())
    }

    /// A VM of this host's runtime as it stands (`None`: not one of its
    /// VMs).
    pub async fn show(
        &self,
        name: &str,
    ) -> Result<Option<trustlaunch_runtime::vm::VmInfo>, ApiError> {
        let rt = self.runtime.clone();
        let n = name.to_owned();
        tokio::task::spawn_blocking(move || rt.show(&n).ok())
            .await
            .map_err(blocking_err)
    }

    /// The last `max` bytes of a VM's serial console (`None`: not one of
    /// this host's VMs, or no console yet). Guest output: untrusted text,
    /// decoded lossily, cut at a character boundary.
    pub async fn console_tail(&self, name: &str, max: u64) -> Result<Option<String>, ApiError> {
        use std::io::{Read as _, Seek as _, SeekFrom};
        let rt = self.runtime.clone();
        let n = name.to_owned();
        tokio::task::spawn_blocking(move || {
            let Ok(path) = rt.console_path(&n) else {
                return Ok(None);
            };
            let mut f = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(ApiError::internal(format!("{}: {e}", path.display()))),
            };
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            f.seek(SeekFrom::Start(len.saturating_sub(max)))
                .map_err(ApiError::internal)?;
            let mut buf = Vec::new();
            f.take(max)
                .read_to_end(&mut buf)
                .map_err(ApiError::internal)?;
            Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
        })
        .await
        .map_err(blocking_err)?
    }

    /// Challenges one VM now (the API's "attest now").
    pub async fn attest_now(&self, name: &str) -> Result<AttestationResult, ApiError> {
        self.register(name, None).await?;
        let boots = {
            let rt = self.runtime.clone();
            let n = name.to_owned();
            tokio::task::spawn_blocking(move || rt.show(&n))
                .await
                .map_err(blocking_err)?
                .map_err(vm_err)?
                .state
                .boots
        };
        {
            let mut w = self.watches();
            let w = w.entry(name.to_owned()).or_default();
            if w.in_flight {
                return Err(ApiError::conflict(format!(
                    "an attestation of {name} is already running"
                )));
            }
            w.in_flight = true;
            w.last_try = Some(Instant::now());
        }
        self.challenge(name, boots, self.config.challenge_limit)
            .await
    }

    async fn challenge(
        &self,
        name: &str,
        boots: u64,
        limit: Duration,
    ) -> Result<AttestationResult, ApiError> {
        let r = self.challenge_inner(name, boots, limit).await;
        if let Some(w) = self.watches().get_mut(name) {
            w.in_flight = false;
        }
        r
    }

    async fn challenge_inner(
        &self,
        name: &str,
        boots: u64,
        limit: Duration,
    ) -> Result<AttestationResult, ApiError> {
        // The service's own challenge: its nonce, and the credential it
        // makes under the EK it recorded once the guest names its AK.
        let challenge = self
            .service
            .challenge(name, AkChoice::Later, &Caller::platform())
            .await?;
        let rt = self.runtime.clone();
        let service = self.service.clone();
        let handle = tokio::runtime::Handle::current();
        let (n, id, nonce) = (
            name.to_owned(),
            challenge.id.clone(),
            challenge.nonce_bytes(),
        );
        let got = tokio::task::spawn_blocking(move || {
            rt.challenge(&n, &nonce, limit, |e| {
                let made = handle
                    .block_on(service.credential(&n, &id, &e.ak_public.0))
                    .map_err(|e| e.to_string())?;
                made.to_made()
                    .ok_or_else(|| "the service's credential is not hex".to_owned())
            })
        })
        .await
        .map_err(blocking_err)?;
        match got {
            Ok(c) => {
                self.service.metrics.challenge("answered");
                let r = self
                    .service
                    .attest(
                        name,
                        &challenge.id,
                        &c.evidence,
                        c.activated_secret.as_deref(),
                    )
                    .await?;
                if r.healthy {
                    tracing::info!(
                        "{name}: attested healthy (boot #{})",
                        r.attestation.boot_counter
                    );
                } else {
                    let failed: Vec<&str> = r
                        .attestation
                        .verdict
                        .failed
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect();
                    tracing::warn!(
                        "{name}: attestation failed (boot #{}): {}",
                        r.attestation.boot_counter,
                        failed.join(", ")
                    );
                }
                let mut w = self.watches();
                let w = w.entry(name.to_owned()).or_default();
                w.boot_attested = Some(boots);
                w.last_answer = Some(now());
                Ok(r)
            }
            Err(VmError::WrongStatus { .. }) | Err(VmError::NotFound(_)) => {
                Err(ApiError::conflict(format!("{name} is not running")))
            }
            Err(e) => {
                self.service.metrics.challenge("silent");
                let silent_for = self
                    .watches()
                    .get(name)
                    .and_then(|w| w.last_answer)
                    .map(|t| now().saturating_sub(t));
                // The boot counts as tried: the next try is periodic.
                if let Some(w) = self.watches().get_mut(name) {
                    w.boot_attested = Some(boots);
                }
                self.service
                    .agent_silent(name, silent_for, &e.to_string())
                    .await?;
                Err(ApiError::unavailable(format!(
                    "{name}: the agent did not answer: {e}"
                )))
            }
        }
    }
}
