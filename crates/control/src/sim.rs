//! A simulated driver: instances are records in memory, a boot takes a
//! configurable (tokio) time, and what becomes of each boot is decided by
//! an injectable function — for scale tests and benchmarks of the
//! orchestrator, beside the real runtime, never instead of it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::driver::{Driver, DriverError, Health, InstanceSpec, InstanceStatus, PowerState};

/// What a simulated boot of an instance ends as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootOutcome {
    /// Running and healthy.
    Healthy,
    /// Running, but its health signal says unhealthy (e.g. attestation
    /// failed).
    Unhealthy,
    /// The boot fails (the instance ends Failed with this reason).
    Fails(String),
}

/// Decides each boot's outcome from the spec booted (name, model version).
pub type OutcomeFn = Arc<dyn Fn(&InstanceSpec) -> BootOutcome + Send + Sync>;

/// One thing the simulated driver did, in order (for tests' assertions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimEvent {
    /// The instance.
    pub name: String,
    /// `create`, `start`, `stop`, `deallocate`, `apply`, `reimage`, `delete`.
    pub action: &'static str,
    /// The model version the instance had after the action.
    pub model_version: u64,
}

#[derive(Clone, Debug)]
struct SimInstance {
    spec: InstanceSpec,
    power: PowerState,
    booted_at: Option<Instant>,
    /// The same, in Unix seconds (what an attestation's time compares to).
    booted_unix: Option<u64>,
    outcome: Option<BootOutcome>,
}

#[derive(Default)]
struct State {
    instances: BTreeMap<String, SimInstance>,
    events: Vec<SimEvent>,
}

/// The simulated driver. Cheap to clone (shared state).
#[derive(Clone)]
pub struct SimDriver {
    state: Arc<Mutex<State>>,
    boot_time: Duration,
    outcome: OutcomeFn,
    attests: bool,
}

impl std::fmt::Debug for SimDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimDriver")
            .field("boot_time", &self.boot_time)
            .finish_non_exhaustive()
    }
}

impl SimDriver {
    /// A driver whose boots take `boot_time` and are all healthy.
    pub fn new(boot_time: Duration) -> Self {
        Self::with_outcomes(boot_time, Arc::new(|_| BootOutcome::Healthy))
    }

    /// A driver whose boots take `boot_time` and end as `outcome` says.
    pub fn with_outcomes(boot_time: Duration, outcome: OutcomeFn) -> Self {
        Self {
            state: Arc::default(),
            boot_time,
            outcome,
            attests: false,
        }
    }

    /// The same driver on a host that attests its guests: an instance
    /// with guest attestation is healthy only once the store holds a
    /// healthy attestation of its current boot (which a test records).
    #[must_use]
    pub fn attesting(mut self) -> Self {
        self.attests = true;
        self
    }

    /// Everything done so far, in order.
    pub fn events(&self) -> Vec<SimEvent> {
        self.lock().events.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind: keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(state: &mut State, name: &str, action: &'static str) {
        let model_version = state
            .instances
            .get(name)
            .map_or(0, |i| i.spec.model_version);
        state.events.push(SimEvent {
            name: name.to_owned(),
            action,
            model_version,
        });
    }

    fn status_of(&self, i: &SimInstance, now: Instant) -> InstanceStatus {
        let (power, health) = match (&i.power, i.booted_at, &i.outcome) {
            (PowerState::Starting, Some(at), Some(outcome)) if now >= at + self.boot_time => {
                match outcome {
                    BootOutcome::Healthy => (PowerState::Running, Health::Healthy),
                    BootOutcome::Unhealthy => (PowerState::Running, Health::Unhealthy),
                    BootOutcome::Fails(reason) => {
                        (PowerState::Failed(reason.clone()), Health::Unhealthy)
                    }
                }
            }
            (PowerState::Starting, _, _) => (PowerState::Starting, Health::Unknown),
            (p @ (PowerState::Stopped | PowerState::Deallocated), _, _) => {
                (p.clone(), Health::Unknown)
            }
            (p, _, _) => (p.clone(), Health::Unhealthy),
        };
        InstanceStatus {
            spec: i.spec.clone(),
            power,
            health,
            ssh_endpoint: None,
            boot_started_at: i.booted_unix,
        }
    }

    fn with_instance<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut SimInstance) -> T,
    ) -> Result<T, DriverError> {
        let mut s = self.lock();
        let i = s
            .instances
            .get_mut(name)
            .ok_or_else(|| DriverError::NotFound(name.to_owned()))?;
        Ok(f(i))
    }
}

impl Driver for SimDriver {
    async fn create(&self, spec: &InstanceSpec) -> Result<(), DriverError> {
        let mut s = self.lock();
        if let Some(existing) = s.instances.get(&spec.name) {
            if existing.spec == *spec {
                return Ok(());
            }
            return Err(DriverError::Exists {
                name: spec.name.clone(),
                existing: existing.spec.model_version,
            });
        }
        s.instances.insert(
            spec.name.clone(),
            SimInstance {
                spec: spec.clone(),
                power: PowerState::Stopped,
                booted_at: None,
                booted_unix: None,
                outcome: None,
            },
        );
        Self::record(&mut s, &spec.name, "create");
        Ok(())
    }

    async fn start(&self, name: &str) -> Result<(), DriverError> {
        let now = Instant::now();
        let outcome = self.outcome.clone();
        let started = self.with_instance(name, |i| {
            if matches!(i.power, PowerState::Starting | PowerState::Running) {
                return false;
            }
            i.power = PowerState::Starting;
            i.booted_at = Some(now);
            i.booted_unix = Some(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            );
            i.outcome = Some(outcome(&i.spec));
            true
        })?;
        if started {
            Self::record(&mut self.lock(), name, "start");
        }
        Ok(())
    }

    async fn stop(&self, name: &str, deallocate: bool) -> Result<(), DriverError> {
        let target = if deallocate {
            PowerState::Deallocated
        } else {
            PowerState::Stopped
        };
        let changed = self.with_instance(name, |i| {
            if i.power == target {
                return false;
            }
            i.power = target;
            i.booted_at = None;
            i.outcome = None;
            true
        })?;
        if changed {
            let action = if deallocate { "deallocate" } else { "stop" };
            Self::record(&mut self.lock(), name, action);
        }
        Ok(())
    }

    async fn apply(&self, spec: &InstanceSpec) -> Result<(), DriverError> {
        let changed = self.with_instance(&spec.name, |i| {
            if i.spec == *spec {
                return false;
            }
            i.spec = spec.clone();
            i.power = PowerState::Stopped;
            i.booted_at = None;
            i.outcome = None;
            true
        })?;
        if changed {
            Self::record(&mut self.lock(), &spec.name, "apply");
        }
        Ok(())
    }

    async fn reimage(&self, name: &str) -> Result<(), DriverError> {
        self.with_instance(name, |i| {
            i.power = PowerState::Stopped;
            i.booted_at = None;
            i.outcome = None;
        })?;
        Self::record(&mut self.lock(), name, "reimage");
        Ok(())
    }

    async fn delete(&self, name: &str) -> Result<(), DriverError> {
        let mut s = self.lock();
        if s.instances.contains_key(name) {
            Self::record(&mut s, name, "delete");
            s.instances.remove(name);
        }
        Ok(())
    }

    async fn status(&self, name: &str) -> Result<Option<InstanceStatus>, DriverError> {
        let now = Instant::now();
        let s = self.lock();
        Ok(s.instances.get(name).map(|i| self.status_of(i, now)))
    }

    async fn list(&self) -> Result<Vec<InstanceStatus>, DriverError> {
        let now = Instant::now();
        let s = self.lock();
        Ok(s.instances
            .values()
            .map(|i| self.status_of(i, now))
            .collect())
    }
    fn attests_guests(&self) -> bool {
        self.attests
    }
}
