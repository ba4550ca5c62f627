//! Long-running operations on scale sets, run from the store so that a
//! server killed at any step resumes where it was: a rolling upgrade is
//! the fleet crate's planner ([`RollingUpgrade`]) driven over a
//! [`Driver`], its state written to the operation's row *before* each step
//! is carried out (so a restarted server knows what may have half
//! happened) and the planner, fed the driver's view of the instances,
//! re-issues only what is not done: no instance is upgraded twice, none is
//! lost, no surge instance is orphaned.
//!
//! Operations are claimed with a lease ([`trustlaunch_store::Store::claim_operation`]);
//! every write is a compare-and-set on the operation's revision, so a
//! server that lost its lease to another stops at its next write.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use trustlaunch_fleet::image::ImageCatalog;
use trustlaunch_fleet::resources::{
    InstanceHealth, PowerState, ProvisioningState, ScaleSet, ScaleSetVm, SCALE_SET_VM_TYPE,
};
use trustlaunch_fleet::rolling::{
    compare_instance_ids, Health as PlanHealth, InstanceResult, InstanceView, Outcome,
    RollingUpgrade, Step,
};
use trustlaunch_fleet::sizes::SizeCatalog;
use trustlaunch_fleet::FleetError;
use trustlaunch_store::{
    NewOperation, NewResource, OperationRecord, OperationStatus, OperationStep, Precondition,
    Store, StoreError,
};

use crate::driver::{
    DataDiskSpec, Driver, DriverError, Health, InstanceOs, InstanceSecurity, InstanceSpec,
    InstanceStatus,
};

/// The kind of a rolling upgrade operation.
pub const ROLLING_UPGRADE: &str = "Microsoft.Compute/virtualMachineScaleSets/rollingUpgrade";

/// The kind of a manual upgrade (`manualupgrade`, `az vmss
/// update-instances --instance-ids`), and of Automatic mode's update of
/// every instance at once.
pub const MANUAL_UPGRADE: &str = "Microsoft.Compute/virtualMachineScaleSets/manualUpgrade";

/// A manual upgrade's persisted state: which instances, which are done.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManualUpgradeState {
    /// The scale set's id.
    pub scale_set: String,
    /// The model the instances move to.
    pub target: ScaleSet,
    /// The instances to upgrade, in order.
    pub instance_ids: Vec<String>,
    /// Those upgraded (brought to the model and started).
    #[serde(default)]
    pub done: Vec<String>,
    /// Those the driver failed on.
    #[serde(default)]
    pub failed: Vec<String>,
}

/// The kind of the operation that brings a scale set's instances to its
/// capacity (create, scale out, scale in) or deletes the set.
pub const RECONCILE: &str = "Microsoft.Compute/virtualMachineScaleSets/reconcile";

/// A reconcile's persisted state: the instances to create and to delete,
/// chosen when it started, and those done.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileState {
    /// The scale set's id.
    pub scale_set: String,
    /// Its model.
    pub target: ScaleSet,
    /// New instance ids (recorded before they are created).
    pub create: Vec<String>,
    /// Instance ids to delete (scale in: the highest ids, as Azure's
    /// default scale-in policy does on one zone).
    pub delete: Vec<String>,
    /// Delete the scale set itself at the end.
    pub delete_set: bool,
    /// Ids done (created or deleted).
    #[serde(default)]
    pub done: Vec<String>,
    /// Ids the driver failed on.
    #[serde(default)]
    pub failed: Vec<String>,
}

/// What turns a model into instance specs: sizes and images.
#[derive(Clone, Debug, Default)]
pub struct Catalogs {
    /// Sizes (vCPUs, memory).
    pub sizes: SizeCatalog,
    /// Gallery images (version -> the runtime image).
    pub images: ImageCatalog,
}

/// Why an operation could not be run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The store failed, or another server took the operation over.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request or the model is invalid.
    #[error(transparent)]
    Fleet(#[from] FleetError),
    /// A driver call failed in a way the operation cannot absorb.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// A stored document does not read back.
    #[error("stored {what} does not parse: {reason}")]
    Corrupt {
        /// What.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

pub(crate) fn corrupt(what: &'static str) -> impl FnOnce(serde_json::Error) -> ControlError {
    move |e| ControlError::Corrupt {
        what,
        reason: e.to_string(),
    }
}

/// The driver's name of a scale set's instance: the runtime's names are
/// lowercase `a-z 0-9 -`.
pub fn instance_name(set: &str, instance_id: &str) -> String {
    format!("{}-{instance_id}", sanitize(set))
}

/// Checks that the host names a new VM (`scale_set: false`) or a new
/// scale set's instances (ids up to 5 digits) would get pass the host
/// runtime's rule (`trustlaunch_runtime::spec::check_name`: at most 40
/// characters), so a long name is refused when the resource is created,
/// not when its first instance is.
pub fn check_host_name(name: &str, scale_set: bool) -> Result<(), FleetError> {
    let given = new_runtime_name(name, "");
    let host = if scale_set {
        instance_name(&given, "99999")
    } else {
        given
    };
    trustlaunch_runtime::spec::check_name(&host).map_err(|_| {
        FleetError::new(
            trustlaunch_fleet::ErrorCode::InvalidParameter,
            format!(
                "The name '{name}' is too long for this host: {} host name ('{host}') must be at most 40 lowercase letters, digits and hyphens.",
                if scale_set { "an instance's" } else { "the VM's" }
            ),
        )
        .at("name")
    })
}

/// The runtime name a new VM or scale set gets (a set: the prefix of its
/// instances' names): its name, sanitized, then `-` and the first 6 hex
/// digits of the SHA-256 of its resource id in lowercase (ARM compares ids
/// without case). Two resources named alike in two resource groups or
/// subscriptions get two names; the control plane refuses the rare
/// resource whose name is taken anyway, when it is created. The suffix
/// (6 characters) is longer than any instance id (5 digits at most), so a
/// VM's name is never a set instance's.
pub fn new_runtime_name(name: &str, resource_id: &str) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(resource_id.to_ascii_lowercase().as_bytes());
    format!("{}-{:02x}{:02x}{:02x}", sanitize(name), d[0], d[1], d[2])
}

/// The prefix of `set`'s instances' runtime names: the one it was given,
/// or for a set created before names were given, its name, sanitized.
pub fn set_runtime_name(set: &ScaleSet) -> String {
    set.properties
        .runtime_name
        .clone()
        .unwrap_or_else(|| sanitize(&set.name))
}

/// The runtime name of instance `instance_id` of `set`.
pub fn set_instance_name(set: &ScaleSet, instance_id: &str) -> String {
    instance_name(&set_runtime_name(set), instance_id)
}

/// A resource name as a runtime name: lowercase, anything but `a-z 0-9`
/// turned into `-`.
pub(crate) fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

impl InstanceSecurity {
    /// The settings a resolved `securityProfile` asks for (none: Standard).
    pub fn of(profile: Option<&trustlaunch_fleet::security::SecurityProfile>) -> Self {
        profile.map_or(Self::default(), |p| Self {
            trusted_launch: p.effective_type()
                == trustlaunch_fleet::security::SecurityType::TrustedLaunch,
            secure_boot: p.secure_boot(),
            vtpm: p.vtpm(),
        })
    }
}

/// The spec of instance `instance_id` of `set` at the set's model version.
pub fn instance_spec(
    set: &ScaleSet,
    instance_id: &str,
    c: &Catalogs,
) -> Result<InstanceSpec, FleetError> {
    let size = c.sizes.get(&set.sku.name).ok_or_else(|| {
        FleetError::new(
            trustlaunch_fleet::ErrorCode::InvalidParameter,
            format!("The VM size '{}' is not known.", set.sku.name),
        )
        .at("sku.name")
    })?;
    let profile = &set.properties.virtual_machine_profile;
    let image = profile
        .storage_profile
        .image_reference
        .as_ref()
        .ok_or_else(|| {
            FleetError::new(
                trustlaunch_fleet::ErrorCode::InvalidParameter,
                "The scale set model has no imageReference.",
            )
            .at("properties.virtualMachineProfile.storageProfile.imageReference")
        })?;
    let (_, version) = c.images.resolve(
        image,
        "properties.virtualMachineProfile.storageProfile.imageReference",
    )?;
    let security = InstanceSecurity::of(profile.security_profile.as_ref());
    Ok(InstanceSpec {
        name: set_instance_name(set, instance_id),
        model_version: set.properties.model_version,
        vcpus: size.vcpus,
        memory_mib: size.memory_mib,
        image: version.source.clone(),
        security,
        data_disks: profile
            .storage_profile
            .data_disks
            .iter()
            .map(|d| DataDiskSpec {
                lun: d.lun,
                disk_size_gb: d.disk_size_gb,
            })
            .collect(),
        guest_attestation: profile.extension_profile.as_ref().is_some_and(|e| {
            e.extensions
                .iter()
                .any(|x| x.guest_attestation_os().is_some())
        }),
        network: profile
            .network_profile
            .as_ref()
            .and_then(|n| n.host_network()),
        os: profile.os_profile.as_ref().map(|os| InstanceOs {
            computer_name: format!(
                "{}{}",
                os.computer_name_prefix.as_deref().unwrap_or(&set.name),
                base36_suffix(instance_id)
            )
            .to_ascii_lowercase(),
            ssh_public_keys: os.ssh_keys(),
        }),
    })
}

/// Azure's instance suffix of a scale set's computer names: the instance
/// id in base 36, six digits.
fn base36_suffix(instance_id: &str) -> String {
    let Ok(mut n) = instance_id.parse::<u64>() else {
        return instance_id.to_owned();
    };
    let mut digits = Vec::new();
    while n > 0 || digits.len() < 6 {
        let d = u8::try_from(n % 36).unwrap_or(0);
        digits.push(if d < 10 { b'0' + d } else { b'a' + d - 10 });
        n /= 36;
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

/// One past the highest numeric instance id in use (0 for none).
fn id_floor(instances: &[ScaleSetVm]) -> u64 {
    instances
        .iter()
        .filter_map(|i| i.instance_id.parse::<u64>().ok())
        .max()
        .map_or(0, |m| m.saturating_add(1))
}

/// A rolling upgrade's persisted state.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpgradeState {
    /// The scale set's id.
    pub scale_set: String,
    /// The model the instances move to.
    pub target: ScaleSet,
    /// The model they came from (for rollback of failed instances).
    pub previous: Option<ScaleSet>,
    /// Surge instances and the instance each replaces, recorded before
    /// they are created.
    #[serde(default)]
    pub replacements: BTreeMap<String, String>,
    /// The next instance id to hand out.
    pub next_instance_id: u64,
    /// The instances the step in flight brings to a model (apply or
    /// create, then start), recorded before it is carried out: a restarted
    /// server starts those the driver has stopped and brings their records
    /// to the model the driver runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_flight: Vec<String>,
    /// The planner.
    pub planner: RollingUpgrade,
    /// Why each failed instance failed (by id), recorded when the
    /// planner counted it failed, while the boot it was judged on still
    /// ran: an attestation's failed checks, a failed boot.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failures: BTreeMap<String, String>,
}

impl RollingUpgradeState {
    /// `rolling-upgrade get-latest`: the planner's status, its error
    /// naming each failed instance and why it failed.
    pub fn status(&self) -> trustlaunch_fleet::rolling::RollingUpgradeStatus {
        let mut st = self.planner.status();
        if let Some(e) = st.error.as_mut() {
            if !self.failures.is_empty() {
                let why: Vec<String> = self
                    .failures
                    .iter()
                    .map(|(id, r)| format!("instance {id}: {r}"))
                    .collect();
                e.message = format!("{}. {}", e.message, why.join(". "));
            }
        }
        st
    }
}

/// Runs operations: claims them from the store and drives them to the end.
pub struct Orchestrator<D: Driver> {
    store: Store,
    driver: D,
    catalogs: std::sync::RwLock<Arc<Catalogs>>,
    owner: String,
    lease_seconds: i64,
    poll: Duration,
    health_timeout: u64,
    clock: Arc<dyn Fn() -> u64 + Send + Sync>,
}

impl<D: Driver> std::fmt::Debug for Orchestrator<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

/// Which health an operation waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Provisioning and upgrades: with guest attestation, the attestation
    /// service's verdict on the new boot ([`Orchestrator::judge`]).
    Attested,
    /// Power actions (start, restart, reimage): the boot came up. A boot
    /// that then fails attestation is the security center's finding (an
    /// alert), not a failed restart.
    Boot,
}

/// An instance's health as the orchestrator counts it, and why when it is
/// not healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    /// The health.
    pub health: PlanHealth,
    /// Why it is not healthy, when known (the failed checks of an
    /// attestation, a failed boot).
    pub reason: Option<String>,
}

/// The longest reason an operation's error quotes from one appraisal.
const MAX_REASON: usize = 600;

/// "attestation of its boot failed: CHECK: DETAIL; ..." from a stored
/// attestation (the service's document: `verdict.failed[]` with each
/// failed check's name and what it found, which names the component).
fn failed_attestation(doc: &Value) -> String {
    let failed: Vec<String> = doc["verdict"]["failed"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            format!(
                "{}: {}",
                c["name"].as_str().unwrap_or("?"),
                c["detail"].as_str().unwrap_or("")
            )
        })
        .collect();
    let mut out = if failed.is_empty() {
        "attestation of its boot failed".to_owned()
    } else {
        format!("attestation of its boot failed: {}", failed.join("; "))
    };
    if out.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// An operation's state machine: serialised with each step, and able to
/// say its progress as clients poll it (`properties.progress` of `GET
/// /operations/{id}`): counts of the instances it moves, done and failed.
/// Written beside the state with each step, so a poll never reads the
/// state.
pub trait OperationState: Serialize {
    /// The progress, given the operation's status after the step.
    fn progress(&self, status: OperationStatus) -> Value;
}

impl OperationState for RollingUpgradeState {
    fn progress(&self, _: OperationStatus) -> Value {
        serde_json::json!(self.planner.status().progress)
    }
}

impl OperationState for ManualUpgradeState {
    fn progress(&self, _: OperationStatus) -> Value {
        serde_json::json!({"total": self.instance_ids.len(), "succeeded": self.done.len(), "failed": self.failed.len()})
    }
}

impl OperationState for ReconcileState {
    fn progress(&self, _: OperationStatus) -> Value {
        serde_json::json!({
            "total": self.create.len() + self.delete.len(),
            "succeeded": self.done.len(),
            "failed": self.failed.len(),
        })
    }
}

/// The progress of an operation stored before progress was recorded,
/// from its stored state (parsed: what a poll avoids otherwise).
pub fn progress_of(kind: &str, state: &Value, status: OperationStatus) -> Value {
    fn of<T: OperationState + serde::de::DeserializeOwned>(
        state: &Value,
        status: OperationStatus,
    ) -> Value {
        serde_json::from_value::<T>(state.clone()).map_or(Value::Null, |st| st.progress(status))
    }
    match kind {
        ROLLING_UPGRADE => of::<RollingUpgradeState>(state, status),
        MANUAL_UPGRADE => of::<ManualUpgradeState>(state, status),
        RECONCILE => of::<ReconcileState>(state, status),
        crate::vm_ops::POWER_ACTION => of::<crate::vm_ops::ActionState>(state, status),
        crate::vm_ops::VM_APPLY | crate::vm_ops::VM_DELETE => {
            of::<crate::vm_ops::VmState>(state, status)
        }
        _ => Value::Null,
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl<D: Driver> Orchestrator<D> {
    /// An orchestrator named `owner` (leases are taken in its name: a
    /// restarted server with the same name resumes its operations at
    /// once; another waits for the lease to expire).
    pub fn new(store: Store, driver: D, catalogs: Arc<Catalogs>, owner: impl Into<String>) -> Self {
        Self {
            store,
            driver,
            catalogs: std::sync::RwLock::new(catalogs),
            owner: owner.into(),
            lease_seconds: 60,
            poll: Duration::from_millis(200),
            health_timeout: trustlaunch_fleet::rolling::DEFAULT_HEALTH_TIMEOUT_SECONDS,
            clock: Arc::new(unix_now),
        }
    }

    /// How often health is polled while waiting.
    #[must_use]
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// The clock (Unix seconds).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Fn() -> u64 + Send + Sync>) -> Self {
        self.clock = clock;
        self
    }

    /// The driver.
    pub fn driver(&self) -> &D {
        &self.driver
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Replaces the catalogs (images or sizes changed); operations read
    /// them at each step.
    pub fn set_catalogs(&self, catalogs: Arc<Catalogs>) {
        *self.catalogs.write().unwrap_or_else(|p| p.into_inner()) = catalogs;
    }

    pub(crate) fn catalogs(&self) -> Arc<Catalogs> {
        self.catalogs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn now(&self) -> u64 {
        (self.clock)()
    }

    async fn scale_set(&self, id: &str) -> Result<(ScaleSet, i64), ControlError> {
        let r = self.store.get_resource(id).await?.ok_or_else(|| {
            FleetError::new(
                trustlaunch_fleet::ErrorCode::ResourceNotFound,
                format!("The scale set '{id}' was not found."),
            )
        })?;
        let set = serde_json::from_value(r.body).map_err(corrupt("scale set"))?;
        Ok((set, r.etag))
    }

    async fn instances(&self, set_id: &str) -> Result<Vec<ScaleSetVm>, ControlError> {
        let mut out = Vec::new();
        for r in self.store.child_resources(set_id).await? {
            out.push(serde_json::from_value(r.body).map_err(corrupt("instance"))?);
        }
        out.sort_by(|a: &ScaleSetVm, b| compare_instance_ids(&a.instance_id, &b.instance_id));
        Ok(out)
    }

    /// A new operation of `kind` on `set_id` with its first state.
    pub(crate) fn new_operation(
        &self,
        kind: &str,
        op_id: &str,
        set_id: &str,
        state: &impl OperationState,
    ) -> Result<NewOperation, ControlError> {
        Ok(NewOperation {
            id: op_id.to_owned(),
            kind: kind.to_owned(),
            target: set_id.to_owned(),
            progress: Some(state.progress(OperationStatus::InProgress)),
            state: serde_json::to_value(state).map_err(corrupt("operation state"))?,
            created_at: to_i64(self.now()),
        })
    }

    /// Starts a rolling upgrade of the scale set `set_id` to its current
    /// model (one operation in the store, `op_id`); `previous` is the
    /// model the instances run, for rollback.
    pub async fn start_rolling_upgrade(
        &self,
        set_id: &str,
        op_id: &str,
        previous: Option<ScaleSet>,
    ) -> Result<(), ControlError> {
        let (mut set, etag) = self.scale_set(set_id).await?;
        let read = set.properties.next_instance_id;
        let op = self
            .plan_rolling_upgrade(set_id, &mut set, op_id, previous)
            .await?;
        self.start_with_set(set_id, &set, etag, read, &op).await
    }

    /// Starts upgrading instances `instance_ids` of `set_id` to the set's
    /// current model (`update-instances`; Automatic mode passes every
    /// instance). Unknown instance ids are refused before anything starts.
    pub async fn start_manual_upgrade(
        &self,
        set_id: &str,
        op_id: &str,
        instance_ids: &[String],
    ) -> Result<(), ControlError> {
        let (mut set, etag) = self.scale_set(set_id).await?;
        let read = set.properties.next_instance_id;
        let op = self
            .plan_manual_upgrade(set_id, &mut set, op_id, instance_ids)
            .await?;
        self.start_with_set(set_id, &set, etag, read, &op).await
    }

    /// Starts bringing the scale set's instances to its capacity (or, with
    /// `delete_set`, deleting them and then the set). Nothing to do still
    /// starts (and at once ends) an operation, so every call has one.
    pub async fn start_reconcile(
        &self,
        set_id: &str,
        op_id: &str,
        delete_set: bool,
    ) -> Result<(), ControlError> {
        let (mut set, etag) = self.scale_set(set_id).await?;
        let read = set.properties.next_instance_id;
        let op = self
            .plan_reconcile(set_id, &mut set, op_id, delete_set)
            .await?;
        self.start_with_set(set_id, &set, etag, read, &op).await
    }

    /// Records `op` with the set as planned (its reserved instance ids),
    /// if the set did not change since it was read (`etag`, when its
    /// `nextInstanceId` was `read`); the set is rewritten only if planning
    /// reserved ids.
    async fn start_with_set(
        &self,
        set_id: &str,
        set: &ScaleSet,
        etag: i64,
        read: u64,
        op: &NewOperation,
    ) -> Result<(), ControlError> {
        if set.properties.next_instance_id == read {
            return Ok(self.store.start_operation(op).await?);
        }
        let resource = NewResource {
            id: set_id.to_owned(),
            kind: trustlaunch_fleet::resources::SCALE_SET_TYPE.to_owned(),
            resource_group: set
                .id
                .as_ref()
                .map(|i| i.resource_group().to_owned())
                .unwrap_or_default(),
            name: set.name.clone(),
            parent: None,
            body: serde_json::to_value(set).map_err(corrupt("scale set"))?,
            usage: None,
        };
        self.store
            .put_resource_with_operation(
                &resource,
                Precondition::Etag(etag),
                Some(op),
                to_i64(self.now()),
            )
            .await?;
        Ok(())
    }

    /// The rolling upgrade of scale set `set_id` to model `set` (its
    /// instances as they are in the store and the driver), as an
    /// operation to record — on its own, or with the model change that
    /// causes it ([`trustlaunch_store::Store::put_resource_with_operation`]).
    ///
    /// With maxSurge, ids for a replacement of every instance are reserved
    /// in `set` (which the caller writes with the operation).
    pub async fn plan_rolling_upgrade(
        &self,
        set_id: &str,
        set: &mut ScaleSet,
        op_id: &str,
        previous: Option<ScaleSet>,
    ) -> Result<NewOperation, ControlError> {
        let policy = set
            .properties
            .upgrade_policy
            .clone()
            .unwrap_or_default()
            .rolling()?;
        let instances = self.instances(set_id).await?;
        let mut view = Vec::new();
        for i in &instances {
            view.push(self.view_of(set, &i.instance_id, None).await?);
        }
        let surge = if policy.max_surge {
            u64::try_from(instances.len()).unwrap_or(u64::MAX)
        } else {
            0
        };
        let next_instance_id = set.reserve_instance_ids(id_floor(&instances), surge);
        let state = RollingUpgradeState {
            scale_set: set_id.to_owned(),
            planner: RollingUpgrade::new(policy, self.now(), &view),
            target: set.clone(),
            previous,
            replacements: BTreeMap::new(),
            next_instance_id,
            in_flight: Vec::new(),
            failures: BTreeMap::new(),
        };
        self.new_operation(ROLLING_UPGRADE, op_id, set_id, &state)
    }

    async fn view_of(
        &self,
        set: &ScaleSet,
        instance_id: &str,
        replaces: Option<&String>,
    ) -> Result<InstanceView, ControlError> {
        let name = set_instance_name(set, instance_id);
        let status = self.driver.status(&name).await?;
        let (up_to_date, health) = match status {
            None => (false, PlanHealth::Unknown),
            Some(s) => (
                s.spec.model_version == set.properties.model_version,
                self.judge(&s).await?.health,
            ),
        };
        let mut v = InstanceView::new(instance_id, up_to_date, health);
        if let Some(old) = replaces {
            v = v.replacing(old.clone());
        }
        Ok(v)
    }

    /// The upgrade of instances `instance_ids` of `set_id` to model
    /// `set`, as an operation to record (see [`Self::plan_rolling_upgrade`]).
    pub async fn plan_manual_upgrade(
        &self,
        set_id: &str,
        set: &mut ScaleSet,
        op_id: &str,
        instance_ids: &[String],
    ) -> Result<NewOperation, ControlError> {
        let known: Vec<String> = self
            .instances(set_id)
            .await?
            .into_iter()
            .map(|i| i.instance_id)
            .collect();
        if let Some(unknown) = instance_ids.iter().find(|i| !known.contains(i)) {
            return Err(FleetError::new(
                trustlaunch_fleet::ErrorCode::ResourceNotFound,
                format!(
                    "The instance '{unknown}' of the scale set '{}' was not found.",
                    set.name
                ),
            )
            .at("instanceIds")
            .into());
        }
        let mut ids = instance_ids.to_vec();
        ids.sort_by(|a, b| compare_instance_ids(a, b));
        ids.dedup();
        let state = ManualUpgradeState {
            scale_set: set_id.to_owned(),
            target: set.clone(),
            instance_ids: ids,
            done: Vec::new(),
            failed: Vec::new(),
        };
        self.new_operation(MANUAL_UPGRADE, op_id, set_id, &state)
    }

    /// Bringing scale set `set_id`'s instances to model `set`'s capacity
    /// (or deleting them and the set), as an operation to record (see
    /// [`Self::plan_rolling_upgrade`]).
    ///
    /// New instances get ids reserved in `set` (which the caller writes
    /// with the operation): never one used before.
    pub async fn plan_reconcile(
        &self,
        set_id: &str,
        set: &mut ScaleSet,
        op_id: &str,
        delete_set: bool,
    ) -> Result<NewOperation, ControlError> {
        let instances = self.instances(set_id).await?;
        let capacity = if delete_set {
            0
        } else {
            usize::try_from(set.sku.capacity).unwrap_or(usize::MAX)
        };
        let mut create = Vec::new();
        let mut delete = Vec::new();
        if instances.len() < capacity {
            let n = capacity - instances.len();
            let first =
                set.reserve_instance_ids(id_floor(&instances), u64::try_from(n).unwrap_or(0));
            create = (0..n as u64)
                .map(|i| first.saturating_add(i).to_string())
                .collect();
        } else {
            delete = instances
                .iter()
                .rev()
                .take(instances.len().saturating_sub(capacity))
                .map(|i| i.instance_id.clone())
                .collect();
        }
        let state = ReconcileState {
            scale_set: set_id.to_owned(),
            target: set.clone(),
            create,
            delete,
            delete_set,
            done: Vec::new(),
            failed: Vec::new(),
        };
        self.new_operation(RECONCILE, op_id, set_id, &state)
    }

    /// Drives a reconcile: each new instance is recorded in the store
    /// before the driver creates it (a crash leaves a record to finish,
    /// never an orphan VM), each deleted one is removed from the driver
    /// before the store; every completion is written before the next.
    async fn drive_reconcile(&self, mut op: OperationRecord) -> Result<(), ControlError> {
        let mut state: ReconcileState =
            serde_json::from_value(op.state.clone()).map_err(corrupt("operation state"))?;
        let set_id = state.scale_set.clone();
        let pending =
            |s: &ReconcileState, id: &String| !s.done.contains(id) && !s.failed.contains(id);
        // Why the driver failed, for the operation's error.
        let mut reasons = Vec::new();
        // New instances: each recorded, created and started, then all
        // waited for until healthy (they boot side by side).
        let mut started = Vec::new();
        for id in state.create.clone() {
            if !pending(&state, &id) {
                continue;
            }
            self.put_instance(&state.target, &set_id, &id).await?;
            let spec = instance_spec(&state.target, &id, &self.catalogs())?;
            if self.upgrade(&spec).await {
                started.push(id);
            } else {
                state.failed.push(id);
                self.write(&mut op, &state, OperationStatus::InProgress, None)
                    .await?;
            }
        }
        let healthy = self.await_health(&op, &state.target, &started).await?;
        let unhealthy: Vec<String> = started
            .iter()
            .filter(|id| !healthy.contains(*id))
            .map(|id| set_instance_name(&state.target, id))
            .collect();
        reasons.extend(self.reasons(&unhealthy, Gate::Attested).await?);
        for id in started {
            if healthy.contains(&id) {
                state.done.push(id);
            } else {
                state.failed.push(id);
            }
        }
        self.write(&mut op, &state, OperationStatus::InProgress, None)
            .await?;
        for id in state.delete.clone() {
            if !pending(&state, &id) {
                continue;
            }
            let name = set_instance_name(&state.target, &id);
            match self.driver.delete(&name).await {
                Ok(()) => {
                    self.store
                        .delete_resource(
                            &format!("{set_id}/virtualMachines/{id}"),
                            Precondition::Any,
                        )
                        .await?;
                    state.done.push(id);
                }
                Err(e) => {
                    reasons.push(e.to_string());
                    state.failed.push(id);
                }
            }
            self.write(&mut op, &state, OperationStatus::InProgress, None)
                .await?;
        }
        if !state.failed.is_empty() {
            let error = FleetError::new(
                trustlaunch_fleet::ErrorCode::Conflict,
                format!(
                    "{} instances could not be provisioned or deleted: {}.{}",
                    state.failed.len(),
                    state.failed.join(", "),
                    reasons.iter().map(|r| format!(" {r}.")).collect::<String>()
                ),
            );
            let error = serde_json::to_value(error).unwrap_or(Value::Null);
            return self
                .write(&mut op, &state, OperationStatus::Failed, Some(error))
                .await;
        }
        if state.delete_set {
            self.store
                .delete_resource(&set_id, Precondition::Any)
                .await?;
        }
        self.write(&mut op, &state, OperationStatus::Succeeded, None)
            .await
    }

    /// Whether a cancel was requested for `op` since it was read.
    pub(crate) async fn cancel_requested(
        &self,
        op: &OperationRecord,
    ) -> Result<bool, ControlError> {
        if op.cancel_requested {
            return Ok(true);
        }
        Ok(self
            .store
            .get_operation(&op.id)
            .await?
            .is_some_and(|o| o.cancel_requested))
    }

    /// Asks operation `op_id` to stop (`rolling-upgrade cancel`): a
    /// rolling upgrade finishes the batch in flight and ends Cancelled; a
    /// manual upgrade stops before its next instance. `false` if it is not
    /// running.
    pub async fn cancel(&self, op_id: &str) -> Result<bool, ControlError> {
        Ok(self.store.request_cancel(op_id).await?)
    }

    /// Drives a manual upgrade: each instance in turn, its completion
    /// written before the next (a restart skips what is done; the driver
    /// makes a repeated step a no-op).
    async fn drive_manual(&self, mut op: OperationRecord) -> Result<(), ControlError> {
        let mut state: ManualUpgradeState =
            serde_json::from_value(op.state.clone()).map_err(corrupt("operation state"))?;
        let set_id = state.scale_set.clone();
        let pending: Vec<String> = state
            .instance_ids
            .iter()
            .filter(|i| !state.done.contains(i) && !state.failed.contains(i))
            .cloned()
            .collect();
        // Every pending instance brought to the model and started, then
        // each waited for until healthy (Azure's update-instances ends
        // when the instances run again). A restart repeats both: the
        // driver makes a repeated apply or start a no-op.
        if self.cancel_requested(&op).await? {
            return self
                .write(&mut op, &state, OperationStatus::Canceled, None)
                .await;
        }
        let mut started = Vec::new();
        for id in pending {
            let spec = instance_spec(&state.target, &id, &self.catalogs())?;
            if self.upgrade(&spec).await {
                started.push(id);
            } else {
                state.failed.push(id);
            }
        }
        self.write(&mut op, &state, OperationStatus::InProgress, None)
            .await?;
        let healthy = self.await_health(&op, &state.target, &started).await?;
        let unhealthy: Vec<String> = started
            .iter()
            .filter(|id| !healthy.contains(*id))
            .map(|id| set_instance_name(&state.target, id))
            .collect();
        let reasons = self.reasons(&unhealthy, Gate::Attested).await?;
        for id in started {
            if healthy.contains(&id) {
                self.put_instance(&state.target, &set_id, &id).await?;
                state.done.push(id);
            } else {
                state.failed.push(id);
            }
        }
        self.write(&mut op, &state, OperationStatus::InProgress, None)
            .await?;
        if state.failed.is_empty() {
            self.write(&mut op, &state, OperationStatus::Succeeded, None)
                .await
        } else {
            let error = FleetError::new(
                trustlaunch_fleet::ErrorCode::Conflict,
                format!(
                    "{} of {} instances could not be upgraded: {}.{}",
                    state.failed.len(),
                    state.instance_ids.len(),
                    state.failed.join(", "),
                    reasons.iter().map(|r| format!(" {r}.")).collect::<String>()
                ),
            );
            let error = serde_json::to_value(error).unwrap_or(Value::Null);
            self.write(&mut op, &state, OperationStatus::Failed, Some(error))
                .await
        }
    }

    /// Claims and runs operations until none is left to run; returns how
    /// many it finished.
    pub async fn run_pending(&self) -> Result<usize, ControlError> {
        let mut done = 0_usize;
        while let Some(op) = self
            .store
            .claim_operation(&self.owner, to_i64(self.now()), self.lease_seconds)
            .await?
        {
            match op.kind.as_str() {
                ROLLING_UPGRADE => self.drive(op).await?,
                MANUAL_UPGRADE => self.drive_manual(op).await?,
                RECONCILE => self.drive_reconcile(op).await?,
                crate::vm_ops::VM_APPLY => self.drive_vm_apply(op).await?,
                crate::vm_ops::VM_DELETE => self.drive_vm_delete(op).await?,
                crate::vm_ops::POWER_ACTION => self.drive_action(op).await?,
                other => {
                    return Err(ControlError::Corrupt {
                        what: "operation kind",
                        reason: format!("{other:?} is not an operation this server runs"),
                    })
                }
            }
            done = done.saturating_add(1);
        }
        Ok(done)
    }

    pub(crate) async fn write(
        &self,
        op: &mut OperationRecord,
        state: &impl OperationState,
        status: OperationStatus,
        error: Option<Value>,
    ) -> Result<(), ControlError> {
        let value = serde_json::to_value(state).map_err(corrupt("operation state"))?;
        let step = OperationStep {
            expected_revision: op.revision,
            status,
            progress: Some(state.progress(status)),
            state: value.clone(),
            error: error.clone(),
            at: to_i64(self.now()),
        };
        op.revision = self.store.step_operation(&op.id, &step, None).await?;
        op.state = value;
        op.status = status;
        op.error = error;
        Ok(())
    }

    async fn put_instance(
        &self,
        set: &ScaleSet,
        set_id: &str,
        instance_id: &str,
    ) -> Result<(), ControlError> {
        self.put_instance_on(set, set_id, instance_id, set.properties.model_version)
            .await
    }

    /// Records instance `instance_id` of `set` as running model
    /// `model_version` (the set's, or an older one after a rollback).
    async fn put_instance_on(
        &self,
        set: &ScaleSet,
        set_id: &str,
        instance_id: &str,
        model_version: u64,
    ) -> Result<(), ControlError> {
        let vm = ScaleSetVm {
            instance_id: instance_id.to_owned(),
            name: ScaleSetVm::uniform_name(&set.name, instance_id),
            latest_model_applied: model_version == set.properties.model_version,
            model_version,
            provisioning_state: ProvisioningState::Succeeded,
            power_state: PowerState::Running,
            health: InstanceHealth::Unknown,
        };
        self.store
            .put_resource(
                &NewResource {
                    id: format!("{set_id}/virtualMachines/{instance_id}"),
                    kind: SCALE_SET_VM_TYPE.to_owned(),
                    resource_group: set
                        .id
                        .as_ref()
                        .map(|i| i.resource_group().to_owned())
                        .unwrap_or_default(),
                    name: vm.name.clone(),
                    parent: Some(set_id.to_owned()),
                    body: serde_json::to_value(&vm).map_err(corrupt("instance"))?,
                    usage: None,
                },
                Precondition::Any,
                to_i64(self.now()),
            )
            .await?;
        Ok(())
    }

    /// After a restart, finishes what the step in flight did to each
    /// instance it was bringing to a model: started if the driver has it
    /// stopped (killed between apply or create and start), and recorded on
    /// the model the driver runs (killed before the record was written).
    async fn finish_in_flight(
        &self,
        state: &RollingUpgradeState,
        set_id: &str,
    ) -> Result<(), ControlError> {
        for id in &state.in_flight {
            let name = set_instance_name(&state.target, id);
            let Some(s) = self.driver.status(&name).await? else {
                continue;
            };
            if matches!(
                s.power,
                crate::driver::PowerState::Stopped | crate::driver::PowerState::Deallocated
            ) {
                // A failed start leaves it unhealthy: the planner sees it.
                let _ = self.driver.start(&name).await;
            }
            self.put_instance_on(&state.target, set_id, id, s.spec.model_version)
                .await?;
        }
        Ok(())
    }

    /// Drives one claimed operation to its end.
    async fn drive(&self, mut op: OperationRecord) -> Result<(), ControlError> {
        let mut state: RollingUpgradeState =
            serde_json::from_value(op.state.clone()).map_err(corrupt("operation state"))?;
        let set_id = state.scale_set.clone();
        self.finish_in_flight(&state, &set_id).await?;
        let mut renewed = self.now();
        loop {
            // The view: every instance of the set, and every surge
            // instance recorded (created or not).
            let mut ids: Vec<String> = self
                .instances(&set_id)
                .await?
                .into_iter()
                .map(|i| i.instance_id)
                .collect();
            let known: std::collections::HashSet<String> = ids.iter().cloned().collect();
            for new in state.replacements.keys() {
                if !known.contains(new) {
                    ids.push(new.clone());
                }
            }
            let mut view = Vec::new();
            for id in &ids {
                let replaces = state.replacements.get(id);
                let exists = self
                    .driver
                    .status(&set_instance_name(&state.target, id))
                    .await?
                    .is_some();
                if replaces.is_some() && !exists {
                    // Recorded but never created (not in the view yet), or
                    // deleted before its record was: no record either.
                    if known.contains(id) {
                        self.store
                            .delete_resource(
                                &format!("{set_id}/virtualMachines/{id}"),
                                Precondition::Any,
                            )
                            .await?;
                    }
                    continue;
                }
                view.push(self.view_of(&state.target, id, replaces).await?);
            }
            let now = self.now();
            if self.cancel_requested(&op).await? && state.planner.outcome().is_none() {
                // Refused only once the upgrade is over: nothing to stop.
                let _ = state.planner.cancel(now);
            }
            let step = state.planner.next(&view, now);
            self.note_failures(&mut state).await?;
            state.in_flight = match &step {
                Step::Upgrade { batch } => batch.clone(),
                Step::Rollback { ids } => ids.clone(),
                _ => Vec::new(),
            };
            // Written before it is carried out.
            self.write(&mut op, &state, OperationStatus::InProgress, None)
                .await?;
            match step {
                Step::Upgrade { batch } => {
                    let mut results = Vec::new();
                    for id in &batch {
                        let spec = instance_spec(&state.target, id, &self.catalogs())?;
                        let ok = self.upgrade(&spec).await;
                        if ok {
                            self.put_instance(&state.target, &set_id, id).await?;
                        }
                        results.push(if ok {
                            InstanceResult::ok(id.clone())
                        } else {
                            InstanceResult::failed(id.clone())
                        });
                    }
                    state.planner.batch_done(&results);
                    state.in_flight.clear();
                    self.write(&mut op, &state, OperationStatus::InProgress, None)
                        .await?;
                }
                Step::Surge { count, replacing } => {
                    // Ids first, recorded; then the instances.
                    let mut new_ids = Vec::new();
                    for old in replacing.iter().take(count) {
                        let id = state.next_instance_id.to_string();
                        state.next_instance_id = state.next_instance_id.saturating_add(1);
                        state.replacements.insert(id.clone(), old.clone());
                        new_ids.push(id);
                    }
                    state.in_flight.clone_from(&new_ids);
                    self.write(&mut op, &state, OperationStatus::InProgress, None)
                        .await?;
                    let mut results = Vec::new();
                    for id in &new_ids {
                        let spec = instance_spec(&state.target, id, &self.catalogs())?;
                        let ok = self.driver.create(&spec).await.is_ok()
                            && self.driver.start(&spec.name).await.is_ok();
                        if ok {
                            self.put_instance(&state.target, &set_id, id).await?;
                        }
                        results.push(if ok {
                            InstanceResult::ok(id.clone())
                        } else {
                            InstanceResult::failed(id.clone())
                        });
                    }
                    state.planner.batch_done(&results);
                    state.in_flight.clear();
                    self.write(&mut op, &state, OperationStatus::InProgress, None)
                        .await?;
                }
                Step::Delete { ids } => {
                    let mut results = Vec::new();
                    for id in &ids {
                        let name = set_instance_name(&state.target, id);
                        let ok = self.driver.delete(&name).await.is_ok();
                        if ok {
                            self.store
                                .delete_resource(
                                    &format!("{set_id}/virtualMachines/{id}"),
                                    Precondition::Any,
                                )
                                .await?;
                            state.replacements.remove(id);
                        } else {
                            results.push(InstanceResult::failed(id.clone()));
                        }
                    }
                    state.planner.batch_done(&results);
                    state.in_flight.clear();
                    self.write(&mut op, &state, OperationStatus::InProgress, None)
                        .await?;
                }
                Step::Rollback { ids } => {
                    let mut results = Vec::new();
                    for id in &ids {
                        // Without the previous model there is nothing to
                        // roll back to: reported failed, not re-issued.
                        let ok = match &state.previous {
                            Some(previous) => {
                                let spec = instance_spec(previous, id, &self.catalogs())?;
                                let ok = self.upgrade(&spec).await;
                                if ok {
                                    self.put_instance_on(
                                        &state.target,
                                        &set_id,
                                        id,
                                        previous.properties.model_version,
                                    )
                                    .await?;
                                }
                                ok
                            }
                            None => false,
                        };
                        results.push(if ok {
                            InstanceResult::ok(id.clone())
                        } else {
                            InstanceResult::failed(id.clone())
                        });
                    }
                    state.planner.batch_done(&results);
                    state.in_flight.clear();
                    self.write(&mut op, &state, OperationStatus::InProgress, None)
                        .await?;
                }
                Step::WaitForHealth { until, .. } | Step::Pause { until } => {
                    self.keep_lease(&op, &mut renewed).await?;
                    let wait = Duration::from_secs(until.saturating_sub(now));
                    tokio::time::sleep(wait.min(self.poll)).await;
                }
                Step::Done(outcome) => {
                    let (status, error) = match &outcome {
                        Outcome::Completed => (OperationStatus::Succeeded, None),
                        Outcome::Cancelled => (OperationStatus::Canceled, None),
                        Outcome::Faulted(_) => (
                            OperationStatus::Failed,
                            state
                                .status()
                                .error
                                .map(|e| serde_json::to_value(e).unwrap_or(Value::Null)),
                        ),
                    };
                    self.write(&mut op, &state, status, error).await?;
                    return Ok(());
                }
            }
        }
    }

    /// An instance's health as provisioning, manual and rolling upgrades
    /// count it. The driver's (the boot came up: the guest reported in,
    /// and with a vTPM its evidence passed the runtime's own checks), and
    /// for an instance with guest attestation on a host that attests its
    /// guests, the attestation service's verdict on its current boot: the
    /// newest attestation of the instance recorded at or after the boot
    /// started (both times the platform's own, never the guest's). No
    /// verdict yet: unknown (the gate waits, then times out as unhealthy);
    /// a failed verdict: failed for good, with the checks that failed.
    pub async fn judge(&self, s: &InstanceStatus) -> Result<Judgement, ControlError> {
        let plain = |health| Judgement {
            health,
            reason: None,
        };
        match s.health {
            Health::Healthy => {}
            Health::Unhealthy => {
                return Ok(Judgement {
                    health: PlanHealth::Unhealthy,
                    reason: match &s.power {
                        crate::driver::PowerState::Failed(r) => {
                            Some(format!("its boot failed: {r}"))
                        }
                        _ => Some("the guest reported unhealthy".to_owned()),
                    },
                })
            }
            Health::Unknown => return Ok(plain(PlanHealth::Unknown)),
        }
        if !(s.spec.guest_attestation && self.driver.attests_guests()) {
            return Ok(plain(PlanHealth::Healthy));
        }
        let Some(boot) = s.boot_started_at else {
            return Ok(plain(PlanHealth::Unknown));
        };
        let boot = to_i64(boot);
        let recent = self.store.history(&s.spec.name, 16).await?;
        let Some(a) = recent.iter().find(|a| a.attestation.at >= boot) else {
            return Ok(plain(PlanHealth::Unknown));
        };
        if a.attestation.healthy {
            return Ok(plain(PlanHealth::Healthy));
        }
        Ok(Judgement {
            health: PlanHealth::Failed,
            reason: Some(failed_attestation(&a.attestation.appraisal)),
        })
    }

    /// Why each of `names` that is not healthy is not, for an operation's
    /// error: "NAME: reason" for those with a reason.
    pub(crate) async fn reasons(
        &self,
        names: &[String],
        gate: Gate,
    ) -> Result<Vec<String>, ControlError> {
        let mut out = Vec::new();
        for name in names {
            if let Some(why) = self.why_not(name, gate).await? {
                out.push(format!("{name}: {why}"));
            }
        }
        Ok(out)
    }

    /// Why instance `name` is not healthy as `gate` counts it (`None`: it
    /// is): gone, not up, its attestation's failed checks, its failed
    /// boot, or no verdict before the health timeout.
    async fn why_not(&self, name: &str, gate: Gate) -> Result<Option<String>, ControlError> {
        let Some(s) = self.driver.status(name).await? else {
            return Ok(Some("gone".to_owned()));
        };
        if gate == Gate::Boot && s.health == Health::Unknown {
            return Ok(Some("not up before the health timeout".to_owned()));
        }
        let j = self.judge(&s).await?;
        Ok(match (j.health, j.reason) {
            (PlanHealth::Healthy, _) => None,
            (_, Some(r)) => Some(r),
            (_, None) => Some(self.no_verdict(&s)),
        })
    }

    /// Records why each instance the planner now counts failed failed, the
    /// first time it is seen so: judged on the boot it runs (for a surge
    /// replacement about to be deleted, the replacement's).
    async fn note_failures(&self, state: &mut RollingUpgradeState) -> Result<(), ControlError> {
        use trustlaunch_fleet::rolling::InstanceState;
        let mut judged = Vec::new();
        for t in state.planner.instances() {
            if state.failures.contains_key(&t.id) {
                continue;
            }
            let watched = match t.state {
                InstanceState::DeletingReplacement => t.replacement.clone(),
                InstanceState::Failed(_) => Some(t.id.clone()),
                _ => None,
            };
            if let Some(w) = watched {
                judged.push((t.id.clone(), set_instance_name(&state.target, &w)));
            }
        }
        for (id, name) in judged {
            let reason = self
                .why_not(&name, Gate::Attested)
                .await?
                .unwrap_or_else(|| "its upgrade failed".to_owned());
            state.failures.insert(id, format!("{name}: {reason}"));
        }
        Ok(())
    }

    fn no_verdict(&self, s: &InstanceStatus) -> String {
        if s.spec.guest_attestation && self.driver.attests_guests() {
            "no attestation of its boot before the health timeout".to_owned()
        } else {
            "not healthy before the health timeout".to_owned()
        }
    }

    /// Waits until each of `ids` (instances of set `set`) is healthy, has
    /// failed, or the health timeout passed; returns the healthy ones.
    async fn await_health(
        &self,
        op: &OperationRecord,
        set: &ScaleSet,
        ids: &[String],
    ) -> Result<std::collections::HashSet<String>, ControlError> {
        let names: Vec<String> = ids.iter().map(|id| set_instance_name(set, id)).collect();
        let healthy = self.await_health_of(op, &names, Gate::Attested).await?;
        Ok(ids
            .iter()
            .zip(&names)
            .filter(|(_, n)| healthy.contains(*n))
            .map(|(id, _)| id.clone())
            .collect())
    }

    /// Waits until each instance of `names` is healthy, has failed, or
    /// the health timeout passed; returns the healthy ones' names.
    pub(crate) async fn await_health_of(
        &self,
        op: &OperationRecord,
        names: &[String],
        gate: Gate,
    ) -> Result<std::collections::HashSet<String>, ControlError> {
        let deadline = self.now().saturating_add(self.health_timeout);
        let mut renewed = self.now();
        let mut healthy = std::collections::HashSet::new();
        let mut open: Vec<&String> = names.iter().collect();
        while !open.is_empty() {
            let mut still = Vec::new();
            for id in open {
                let Some(s) = self.driver.status(id).await? else {
                    continue;
                };
                if matches!(s.power, crate::driver::PowerState::Failed(_)) {
                    continue;
                }
                let health = match gate {
                    Gate::Attested => self.judge(&s).await?.health,
                    Gate::Boot => match s.health {
                        Health::Healthy => PlanHealth::Healthy,
                        Health::Unhealthy => PlanHealth::Unhealthy,
                        Health::Unknown => PlanHealth::Unknown,
                    },
                };
                match health {
                    PlanHealth::Healthy => {
                        healthy.insert(id.clone());
                    }
                    PlanHealth::Unhealthy | PlanHealth::Failed => {}
                    PlanHealth::Unknown => still.push(id),
                }
            }
            open = still;
            if open.is_empty() || self.now() >= deadline {
                break;
            }
            self.keep_lease(op, &mut renewed).await?;
            tokio::time::sleep(self.poll).await;
        }
        Ok(healthy)
    }

    /// Renews the lease on `op` once a third of its term has passed since
    /// `renewed` (a long wait keeps the operation); an error if another
    /// server took it over: this one stops.
    pub(crate) async fn keep_lease(
        &self,
        op: &OperationRecord,
        renewed: &mut u64,
    ) -> Result<(), ControlError> {
        let now = self.now();
        let third = u64::try_from(self.lease_seconds / 3).unwrap_or(1).max(1);
        if now < renewed.saturating_add(third) {
            return Ok(());
        }
        if !self
            .store
            .renew_lease(&op.id, &self.owner, to_i64(now), self.lease_seconds)
            .await?
        {
            return Err(StoreError::OperationChanged {
                id: op.id.clone(),
                expected: op.revision,
            }
            .into());
        }
        *renewed = now;
        Ok(())
    }

    /// Brings an instance to `spec` and starts it; `false` if the driver
    /// failed (the planner counts the instance as failed).
    pub(crate) async fn upgrade(&self, spec: &InstanceSpec) -> bool {
        let done = match self.driver.status(&spec.name).await {
            Ok(Some(_)) => self.driver.apply(spec).await,
            Ok(None) => self.driver.create(spec).await,
            Err(e) => Err(e),
        };
        done.is_ok() && self.driver.start(&spec.name).await.is_ok()
    }
}
