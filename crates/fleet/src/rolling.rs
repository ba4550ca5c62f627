//! The rolling-upgrade planner: which instances of a scale set to take
//! next, when to wait, pause, roll back or stop, as a pure, serializable
//! state machine that an IO orchestrator drives (Azure's
//! `upgradePolicy.rollingUpgradePolicy`, `rolling-upgrade start / cancel /
//! get-latest`; `../shared/design/azure-model.md`, "Scale set upgrade
//! policy").
//!
//! It does nothing itself: no clock, no VM operations. The orchestrator
//! passes the time and the current view of the instances in and carries the
//! returned [`Step`] out.
//!
//! # Driving it
//!
//! ```text
//! let mut up = RollingUpgrade::new(policy, now, &view);   persist(up)
//! loop {
//!     let step = up.next(&view(), now());                 persist(up)
//!     match step {
//!         Step::Done(outcome)        => break,
//!         Step::Upgrade { batch }    => results = upgrade_in_place(batch),
//!         Step::Surge { replacing, .. } => results = create_tagged_replacements(replacing),
//!         Step::Delete { ids }       => results = delete(ids),
//!         Step::Rollback { ids }     => results = restore_previous_model(ids),
//!         Step::WaitForHealth { until, .. } => sleep until a health change or `until`,
//!         Step::Pause { until }      => sleep until `until`,
//!     }
//!     up.batch_done(&results);                             persist(up)
//! }
//! ```
//!
//! - Persist the planner after every [`RollingUpgrade::next`] **before**
//!   acting on its step, and after every [`RollingUpgrade::batch_done`].
//! - After a crash, load the last persisted planner and call `next` with a
//!   fresh view. The planner reconciles its record with the view: an
//!   instance of the batch the view already shows up to date is not
//!   upgraded again (only the rest of the batch is re-issued), a surge
//!   replacement already created is adopted, an old instance already
//!   deleted is not deleted again. Steps are therefore safe to re-execute
//!   partially, and reports (`batch_done`) are an optimisation except for
//!   failures, which only a report can tell.
//! - A surge replacement must carry, from its creation, the id of the
//!   instance it replaces ([`InstanceView::replaces`]; Azure keeps such
//!   things as tags). That is how the planner finds replacements created
//!   just before a crash, and deletes any it does not want (a duplicate, or
//!   one whose creation was reported failed): no orphan surge instance.
//! - [`RollingUpgrade::cancel`] may be called at any time;
//!   [`RollingUpgrade::status`] gives `rolling-upgrade get-latest`.
//!
//! # Rules
//!
//! Azure's, and where Azure does not say, ours:
//!
//! - The batch size is `maxBatchInstancePercent` of the instance count at
//!   start (all instances, up to date or not), rounded down, at least 1.
//! - Instances already on the latest model at start are not upgraded and
//!   are not counted in the progress; nor are instances that leave the view
//!   before their batch (they are dropped, [`InstanceState::Removed`]).
//! - Order: by instance id, numeric ids by value and before other ids
//!   ([`compare_instance_ids`]); with `prioritizeUnhealthyInstances`, every
//!   instance not [`Health::Healthy`] (as the view shows it when the batch
//!   is chosen) comes before every healthy one.
//! - Health: only [`Health::Healthy`] is healthy. [`Health::Unknown`] is
//!   unhealthy in the limit checks and in the ordering, and "not yet" in a
//!   health gate. An orchestrator without health probes should report a
//!   running instance as healthy.
//! - Before each batch (the first included), once the pause is over: if
//!   more than `maxUnhealthyInstancePercent` of the instances are unhealthy
//!   (upgraded or not, a replaced instance through its replacement), the
//!   upgrade stops as Faulted.
//! - After each batch: if more than `maxUnhealthyUpgradedInstancePercent` of
//!   the **instance count** (our choice of denominator: the limit is a
//!   budget of instances the upgrade may break, and does not depend on how
//!   far along the upgrade is) are upgraded instances that failed (the
//!   upgrade or surge creation was reported failed, or the instance was not
//!   healthy when its health gate closed — a failure is final) or that
//!   succeeded and show unhealthy now, the upgrade stops as Faulted. This
//!   check is repeated on every call between batches (during a pause too).
//! - Limits are "above": `unhealthy * 100 > percent * total`, in integers.
//! - A health gate opens once the whole batch is upgraded (or replaced) and
//!   lasts the health timeout ([`DEFAULT_HEALTH_TIMEOUT_SECONDS`], see
//!   [`RollingUpgrade::with_health_timeout`]); an instance healthy at a call
//!   made at or before the deadline passes, any other fails.
//! - `pauseTimeBetweenBatches` runs from the end of one batch (the call
//!   that closed it) to the start of the next; there is no pause before the
//!   first batch nor after the last.
//! - `maxSurge`: a batch is first `Surge` (create the replacements), then a
//!   health gate on the replacements, then one `Delete` of the old
//!   instances whose replacement is healthy together with the replacements
//!   that are not (the old instance stays, counted failed). An old instance
//!   is never deleted before its replacement is healthy.
//! - `rollbackFailedInstancesOnPolicyBreach`: on a breach of either limit,
//!   the failed instances that the view shows on the latest model are
//!   rolled back (`Rollback`) before the upgrade ends as Faulted. With
//!   `maxSurge` there is nothing to roll back: a failed replacement is
//!   deleted and the old instance kept.
//! - Cancel takes effect between batches: a batch in flight (including its
//!   surge replacements' health gate and deletes) is finished first, so no
//!   surge instance is left behind. A breach found when that batch ends
//!   still wins (Faulted), and if nothing was left to upgrade the upgrade
//!   is Completed.
//! - An upgrade that ends with failures within the limits is Completed;
//!   its `failedInstanceCount` says how many.
//! - `enableCrossZoneUpgrade` is recorded and changes nothing (one host).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, FleetError};
use crate::policy::RollingPolicy;

/// How long a health gate waits for an upgraded instance (or a surge
/// replacement) to become healthy by default: 10 minutes.
pub const DEFAULT_HEALTH_TIMEOUT_SECONDS: u64 = 600;

/// An instance's health, from the load-balancer probe or the Application
/// Health extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Health {
    /// The probe answers.
    Healthy,
    /// The probe fails.
    Unhealthy,
    /// No answer yet (booting, or no probe result).
    Unknown,
    /// Judged and failed for good: the boot it runs was appraised by the
    /// attestation service and failed. Unlike [`Health::Unhealthy`] (a
    /// probe that may yet answer), not waited on: the health gate counts it
    /// failed at once.
    Failed,
}

impl Health {
    /// Whether the instance counts as healthy (only [`Health::Healthy`]).
    pub fn is_healthy(self) -> bool {
        self == Self::Healthy
    }
}

/// One instance of the scale set as the orchestrator sees it now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceView {
    /// The instance id (`"0"`, `"17"`, or a Flexible VM's name).
    pub id: String,
    /// Whether the instance runs the scale set's latest model
    /// (`latestModelApplied`).
    #[serde(rename = "latestModelApplied")]
    pub up_to_date: bool,
    /// Its health.
    pub health: Health,
    /// For an instance created by a [`Step::Surge`]: the id of the instance
    /// it replaces, recorded when it was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

impl InstanceView {
    /// An instance that replaces nothing.
    pub fn new(id: impl Into<String>, up_to_date: bool, health: Health) -> Self {
        Self {
            id: id.into(),
            up_to_date,
            health,
            replaces: None,
        }
    }

    /// The same instance, created by a surge to replace `old`.
    #[must_use]
    pub fn replacing(mut self, old: impl Into<String>) -> Self {
        self.replaces = Some(old.into());
        self
    }
}

/// The outcome of one operation of the last step, reported through
/// [`RollingUpgrade::batch_done`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceResult {
    /// The instance the operation was about: for [`Step::Upgrade`],
    /// [`Step::Delete`] and [`Step::Rollback`] an id of the step; for
    /// [`Step::Surge`] the id of the instance being replaced.
    pub id: String,
    /// Whether the operation succeeded.
    pub ok: bool,
}

impl InstanceResult {
    /// A success.
    pub fn ok(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            ok: true,
        }
    }

    /// A failure.
    pub fn failed(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            ok: false,
        }
    }
}

/// What the orchestrator does next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Step {
    /// Upgrade these instances in place (stop, apply the latest model or
    /// reimage, start) and report each with [`RollingUpgrade::batch_done`].
    Upgrade {
        /// The instances, in order.
        batch: Vec<String>,
    },
    /// Create `count` new instances on the latest model, one for each of
    /// `replacing`, each recording the id it replaces
    /// ([`InstanceView::replaces`]). Report a failed creation with the
    /// replaced id.
    Surge {
        /// How many instances to create (`replacing.len()`).
        count: usize,
        /// The old instances they replace.
        replacing: Vec<String>,
    },
    /// Delete these instances (old instances whose replacement is healthy,
    /// replacements that are not, stray replacements).
    Delete {
        /// The instances.
        ids: Vec<String>,
    },
    /// Wait until one of these instances changes health, or until `until`,
    /// then call `next` again.
    WaitForHealth {
        /// The instances not healthy yet.
        ids: Vec<String>,
        /// When the health gate closes (seconds).
        until: u64,
    },
    /// Wait until `until` (`pauseTimeBetweenBatches`), then call `next`.
    Pause {
        /// When the next batch may start (seconds).
        until: u64,
    },
    /// Roll these failed instances back to their previous model
    /// (`rollbackFailedInstancesOnPolicyBreach`), and report them.
    Rollback {
        /// The instances.
        ids: Vec<String>,
    },
    /// The upgrade is over; every later `next` returns the same.
    Done(Outcome),
}

/// How a rolling upgrade ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// Every instance was upgraded, or failed within the limits.
    Completed,
    /// Cancelled before a batch.
    Cancelled,
    /// A limit was breached.
    Faulted(Breach),
}

impl Outcome {
    /// The `runningStatus.code` it shows as.
    pub fn code(&self) -> RunningStatusCode {
        match self {
            Self::Completed => RunningStatusCode::Completed,
            Self::Cancelled => RunningStatusCode::Cancelled,
            Self::Faulted(_) => RunningStatusCode::Faulted,
        }
    }
}

/// The limit a breach is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Limit {
    /// `maxUnhealthyInstancePercent`, checked before each batch.
    MaxUnhealthyInstancePercent,
    /// `maxUnhealthyUpgradedInstancePercent`, checked after each batch.
    MaxUnhealthyUpgradedInstancePercent,
}

impl Limit {
    /// The property's name as Azure spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxUnhealthyInstancePercent => "maxUnhealthyInstancePercent",
            Self::MaxUnhealthyUpgradedInstancePercent => "maxUnhealthyUpgradedInstancePercent",
        }
    }
}

/// A breached limit and the evidence: why an upgrade is Faulted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Breach {
    /// The limit.
    pub limit: Limit,
    /// How many instances counted against it.
    pub unhealthy: u32,
    /// The instance count it is a percentage of.
    pub total: u32,
    /// The limit's value, percent.
    pub limit_percent: u32,
    /// The batch before which ([`Limit::MaxUnhealthyInstancePercent`]) or
    /// after which (the other) the upgrade stopped, from 1.
    pub batch: u32,
}

impl Breach {
    /// `unhealthy` as a percentage of `total`, rounded up (so a breach
    /// never shows as equal to its limit).
    pub fn percent(&self) -> u64 {
        let num = u64::from(self.unhealthy).saturating_mul(100);
        let den = u64::from(self.total);
        num.checked_div(den).map_or(100, |q| {
            if q.saturating_mul(den) == num {
                q
            } else {
                q.saturating_add(1)
            }
        })
    }

    /// The error `rolling-upgrade get-latest` shows:
    /// `RollingUpgradeInstanceUnhealthyError`, the message naming the limit
    /// and the numbers, the target the policy property.
    pub fn error(&self) -> FleetError {
        FleetError::new(
            ErrorCode::RollingUpgradeInstanceUnhealthyError,
            self.to_string(),
        )
        .at(format!("rollingUpgradePolicy.{}", self.limit.as_str()))
    }
}

impl std::fmt::Display for Breach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (what, when) = match self.limit {
            Limit::MaxUnhealthyInstancePercent => ("instances", "before"),
            Limit::MaxUnhealthyUpgradedInstancePercent => ("upgraded instances", "after"),
        };
        write!(
            f,
            "{} {what} of {} are unhealthy ({}%), above {} {}%; the rolling upgrade stopped {when} batch {}",
            self.unhealthy,
            self.total,
            self.percent(),
            self.limit.as_str(),
            self.limit_percent,
            self.batch
        )
    }
}

/// `runningStatus.code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RunningStatusCode {
    /// In progress.
    RollingForward,
    /// Cancelled.
    Cancelled,
    /// Completed.
    Completed,
    /// Stopped on a breached limit.
    Faulted,
}

/// `runningStatus.lastAction`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LastAction {
    /// `rolling-upgrade start`.
    Start,
    /// `rolling-upgrade cancel`.
    Cancel,
}

/// `runningStatus`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunningStatus {
    /// The state.
    pub code: RunningStatusCode,
    /// When the upgrade started (seconds).
    pub start_time: u64,
    /// The last request made of it.
    pub last_action: LastAction,
    /// When that request was made (seconds).
    pub last_action_time: u64,
}

/// `progress`: instance counts. Instances already up to date at start and
/// instances removed from the scale set are not counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Upgraded and healthy.
    pub successful_instance_count: u32,
    /// Failed (upgrade failed, or unhealthy when the health gate closed).
    pub failed_instance_count: u32,
    /// In the batch in flight.
    pub in_progress_instance_count: u32,
    /// Not started yet.
    pub pending_instance_count: u32,
}

/// `rolling-upgrade get-latest`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpgradeStatus {
    /// The policy in force.
    pub policy: RollingPolicy,
    /// Where the upgrade is.
    pub running_status: RunningStatus,
    /// Instance counts.
    pub progress: Progress,
    /// Why it is Faulted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<FleetError>,
}

/// Why an instance counts as failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FailureReason {
    /// The in-place upgrade was reported failed.
    UpgradeFailed,
    /// The surge replacement could not be created.
    SurgeFailed,
    /// Not healthy when the health gate closed (in place: the instance;
    /// with maxSurge: its replacement, which was deleted).
    Unhealthy,
    /// The instance left the view while its batch was in flight.
    Missing,
}

/// Where one instance of the upgrade is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InstanceState {
    /// On the latest model at start (or before its batch): not upgraded.
    UpToDate,
    /// Left the view before its batch: dropped.
    Removed,
    /// Waiting for its batch.
    Pending,
    /// In the batch: being upgraded in place.
    Upgrading,
    /// In the batch: its surge replacement is being created.
    Creating,
    /// In the batch: upgraded (or replaced), in the health gate.
    AwaitingHealth,
    /// In the batch: its replacement is healthy, the old instance is being
    /// deleted.
    DeletingOld,
    /// In the batch: its replacement failed the health gate and is being
    /// deleted.
    DeletingReplacement,
    /// Upgraded and healthy.
    Succeeded,
    /// Failed; with maxSurge, the old instance is kept.
    Failed(FailureReason),
}

impl InstanceState {
    /// Whether the instance is in the batch in flight.
    pub fn in_progress(self) -> bool {
        matches!(
            self,
            Self::Upgrading
                | Self::Creating
                | Self::AwaitingHealth
                | Self::DeletingOld
                | Self::DeletingReplacement
        )
    }

    /// Whether the instance is done with (or out of) the upgrade.
    pub fn is_final(self) -> bool {
        !self.in_progress() && self != Self::Pending
    }
}

/// One instance the upgrade tracks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackedInstance {
    /// The instance's id at start.
    pub id: String,
    /// With maxSurge, the replacement created for it (once the view shows
    /// it); after success, the instance that stands for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
    /// Where it is.
    pub state: InstanceState,
    /// For a failed instance under `rollbackFailedInstancesOnPolicyBreach`:
    /// whether its rollback was reported done (`Some(true)`) or failed
    /// (`Some(false)`); `None` if no rollback was reported (none was needed,
    /// or the view showed it done).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<bool>,
}

impl TrackedInstance {
    /// The id of the instance standing for this one now: the replacement
    /// once it has succeeded, the original otherwise.
    pub fn current_id(&self) -> &str {
        match (&self.replacement, self.state) {
            (Some(r), InstanceState::Succeeded) => r,
            _ => &self.id,
        }
    }
}

/// Orders instance ids: numeric ids by value (leading zeros ignored, then
/// textually) before every other id, other ids textually.
pub fn compare_instance_ids(a: &str, b: &str) -> Ordering {
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    match (numeric(a), numeric(b)) {
        (true, true) => {
            let (ta, tb) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
            ta.len()
                .cmp(&tb.len())
                .then_with(|| ta.cmp(tb))
                .then_with(|| a.cmp(b))
        }
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.cmp(b),
    }
}

/// Whether `count` is above `percent` of `total`.
fn above(count: u32, percent: u32, total: u32) -> bool {
    u64::from(count).saturating_mul(100) > u64::from(percent).saturating_mul(u64::from(total))
}

fn count_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn health_of(view: &BTreeMap<&str, &InstanceView>, id: &str) -> Option<Health> {
    view.get(id).map(|v| v.health)
}

/// Where the upgrade is between calls.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum Phase {
    /// No batch in flight.
    Between,
    /// Batch `number` (from 1) in flight: its instances in the order it
    /// was issued (re-issued steps keep it).
    Batch {
        number: u32,
        batch: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        health_until: Option<u64>,
    },
    /// A limit was breached; rolling back the failed instances.
    RollingBack { breach: Breach },
    /// Over.
    Done(Outcome),
}

/// A rolling upgrade in progress: the planner. Serialize it after every
/// call that changes it; it is the whole state the orchestrator needs to
/// resume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpgrade {
    policy: RollingPolicy,
    health_timeout: u64,
    started_at: u64,
    total: u32,
    batch_size: u32,
    instances: Vec<TrackedInstance>,
    phase: Phase,
    batches: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_batch_end: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cancelled_at: Option<u64>,
}

impl RollingUpgrade {
    /// Starts an upgrade of `instances` (the scale set's view at
    /// `started_at`, seconds) under `policy`. Instances already on the
    /// latest model are left alone; a repeated id counts once.
    pub fn new(policy: RollingPolicy, started_at: u64, instances: &[InstanceView]) -> Self {
        let mut tracked: Vec<TrackedInstance> = Vec::with_capacity(instances.len());
        let mut sorted: Vec<&InstanceView> = instances.iter().collect();
        sorted.sort_by(|a, b| compare_instance_ids(&a.id, &b.id));
        for v in sorted {
            if tracked.last().is_some_and(|t| t.id == v.id) {
                continue;
            }
            tracked.push(TrackedInstance {
                id: v.id.clone(),
                replacement: None,
                state: if v.up_to_date {
                    InstanceState::UpToDate
                } else {
                    InstanceState::Pending
                },
                rolled_back: None,
            });
        }
        let total = count_u32(tracked.len());
        let batch_size = u64::from(total)
            .saturating_mul(u64::from(policy.max_batch_instance_percent))
            .checked_div(100)
            .unwrap_or(0)
            .max(1);
        Self {
            policy,
            health_timeout: DEFAULT_HEALTH_TIMEOUT_SECONDS,
            started_at,
            total,
            batch_size: u32::try_from(batch_size).unwrap_or(u32::MAX),
            instances: tracked,
            phase: Phase::Between,
            batches: 0,
            last_batch_end: None,
            cancelled_at: None,
        }
    }

    /// The same upgrade with health gates of `seconds`.
    #[must_use]
    pub fn with_health_timeout(mut self, seconds: u64) -> Self {
        self.health_timeout = seconds;
        self
    }

    /// The policy in force.
    pub fn policy(&self) -> &RollingPolicy {
        &self.policy
    }

    /// The most instances in one batch.
    pub fn batch_size(&self) -> u32 {
        self.batch_size
    }

    /// The instance count the percentages are of.
    pub fn total(&self) -> u32 {
        self.total
    }

    /// How many batches have started.
    pub fn batches_started(&self) -> u32 {
        self.batches
    }

    /// The instances, in upgrade order by id, with where each is.
    pub fn instances(&self) -> &[TrackedInstance] {
        &self.instances
    }

    /// How it ended, once it has.
    pub fn outcome(&self) -> Option<&Outcome> {
        match &self.phase {
            Phase::Done(o) => Some(o),
            _ => None,
        }
    }

    /// Requests a cancel (`rolling-upgrade cancel`) at `now`; it takes
    /// effect before the next batch. Cancelling twice keeps the first time.
    /// `OperationNotAllowed` once the upgrade is over.
    pub fn cancel(&mut self, now: u64) -> Result<(), FleetError> {
        if self.outcome().is_some() {
            return Err(FleetError::new(
                ErrorCode::OperationNotAllowed,
                "There is no ongoing rolling upgrade to cancel.",
            ));
        }
        self.cancelled_at.get_or_insert(now);
        Ok(())
    }

    /// `rolling-upgrade get-latest`.
    pub fn status(&self) -> RollingUpgradeStatus {
        let mut progress = Progress::default();
        for t in &self.instances {
            let counter = match t.state {
                InstanceState::UpToDate | InstanceState::Removed => continue,
                InstanceState::Pending => &mut progress.pending_instance_count,
                InstanceState::Succeeded => &mut progress.successful_instance_count,
                InstanceState::Failed(_) => &mut progress.failed_instance_count,
                _ => &mut progress.in_progress_instance_count,
            };
            *counter = counter.saturating_add(1);
        }
        let (last_action, last_action_time) = match self.cancelled_at {
            Some(t) => (LastAction::Cancel, t),
            None => (LastAction::Start, self.started_at),
        };
        let (code, error) = match &self.phase {
            Phase::Done(o) => (
                o.code(),
                match o {
                    Outcome::Faulted(b) => Some(b.error()),
                    _ => None,
                },
            ),
            _ => (RunningStatusCode::RollingForward, None),
        };
        RollingUpgradeStatus {
            policy: self.policy,
            running_status: RunningStatus {
                code,
                start_time: self.started_at,
                last_action,
                last_action_time,
            },
            progress,
            error,
        }
    }

    /// Records the outcome of the operations of the last step. Results for
    /// ids the step was not about, or already settled, are ignored, so a
    /// report may be repeated.
    ///
    /// - [`Step::Upgrade`]: a success puts the instance in the health gate,
    ///   a failure fails it ([`FailureReason::UpgradeFailed`]).
    /// - [`Step::Surge`] (by the replaced id): a failure fails the instance
    ///   ([`FailureReason::SurgeFailed`]; a replacement that exists anyway
    ///   is deleted later); a success changes nothing, the view shows the
    ///   replacement.
    /// - [`Step::Delete`]: a success settles the deletion, a failure is
    ///   retried.
    /// - [`Step::Rollback`]: records whether the rollback was done.
    pub fn batch_done(&mut self, results: &[InstanceResult]) {
        let rolling_back = matches!(self.phase, Phase::RollingBack { .. });
        for r in results {
            for t in &mut self.instances {
                let is_old = t.id == r.id;
                let is_new = t.replacement.as_deref() == Some(r.id.as_str());
                match t.state {
                    InstanceState::Upgrading if is_old => {
                        t.state = if r.ok {
                            InstanceState::AwaitingHealth
                        } else {
                            InstanceState::Failed(FailureReason::UpgradeFailed)
                        };
                    }
                    InstanceState::Creating if is_old && !r.ok => {
                        t.state = InstanceState::Failed(FailureReason::SurgeFailed);
                    }
                    InstanceState::DeletingOld if is_old && r.ok => {
                        t.state = InstanceState::Succeeded;
                    }
                    InstanceState::DeletingReplacement if is_new && r.ok => {
                        t.replacement = None;
                        t.state = InstanceState::Failed(FailureReason::Unhealthy);
                    }
                    InstanceState::Failed(_)
                        if rolling_back && is_old && t.rolled_back.is_none() =>
                    {
                        t.rolled_back = Some(r.ok);
                    }
                    _ => {}
                }
            }
        }
    }

    /// What to do next, given the instances as they are now and the time
    /// (seconds). Call it again after carrying out the step (and reporting
    /// it); calling it again without doing so re-issues whatever the view
    /// shows undone.
    pub fn next(&mut self, view: &[InstanceView], now: u64) -> Step {
        if let Phase::Done(o) = &self.phase {
            return Step::Done(o.clone());
        }
        let view: BTreeMap<&str, &InstanceView> = view.iter().map(|v| (v.id.as_str(), v)).collect();
        let strays = self.adopt_replacements(&view);
        if !strays.is_empty() {
            return Step::Delete { ids: strays };
        }
        match self.phase.clone() {
            Phase::Done(o) => return Step::Done(o),
            Phase::RollingBack { breach } => return self.roll_back(&view, breach),
            Phase::Batch {
                number,
                batch,
                health_until,
            } => {
                if let Some(step) = self.continue_batch(&view, now, number, batch, health_until) {
                    return step;
                }
                self.phase = Phase::Between;
                self.last_batch_end = Some(now);
            }
            Phase::Between => {}
        }
        self.between_batches(&view, now)
    }

    /// Adopts, for each instance whose replacement is being created, the
    /// first instance of the view that replaces it; returns the stray
    /// replacements (replacing a tracked instance that does not want, or no
    /// longer wants, them), to delete.
    fn adopt_replacements(&mut self, view: &BTreeMap<&str, &InstanceView>) -> Vec<String> {
        let mut strays = Vec::new();
        // The view is ordered by id (a BTreeMap); adopt in numeric order.
        let mut tagged: Vec<&InstanceView> = view
            .values()
            .copied()
            .filter(|v| v.replaces.is_some())
            .collect();
        tagged.sort_by(|a, b| compare_instance_ids(&a.id, &b.id));
        for v in tagged {
            let Some(old) = v.replaces.as_deref() else {
                continue;
            };
            if self.instances.iter().any(|t| t.id == v.id) {
                // Tracked itself (a replacement from an earlier upgrade).
                continue;
            }
            let Some(t) = self.instances.iter_mut().find(|t| t.id == old) else {
                continue;
            };
            if t.replacement.as_deref() == Some(v.id.as_str()) {
                continue;
            }
            if t.state == InstanceState::Creating && t.replacement.is_none() {
                t.replacement = Some(v.id.clone());
                t.state = InstanceState::AwaitingHealth;
            } else {
                strays.push(v.id.clone());
            }
        }
        strays
    }

    fn continue_batch(
        &mut self,
        view: &BTreeMap<&str, &InstanceView>,
        now: u64,
        number: u32,
        batch: Vec<String>,
        health_until: Option<u64>,
    ) -> Option<Step> {
        let surge = self.policy.max_surge;
        let order: Vec<usize> = batch
            .iter()
            .filter_map(|id| self.instances.iter().position(|t| &t.id == id))
            .collect();
        // Reconcile the action stage with the view.
        let mut upgrading = Vec::new();
        let mut creating = Vec::new();
        for &i in &order {
            let Some(t) = self.instances.get_mut(i) else {
                continue;
            };
            match t.state {
                InstanceState::Upgrading => match view.get(t.id.as_str()) {
                    None => t.state = InstanceState::Failed(FailureReason::Missing),
                    Some(v) if v.up_to_date => t.state = InstanceState::AwaitingHealth,
                    Some(_) => upgrading.push(t.id.clone()),
                },
                InstanceState::Creating => {
                    if view.contains_key(t.id.as_str()) {
                        creating.push(t.id.clone());
                    } else {
                        t.state = InstanceState::Failed(FailureReason::Missing);
                    }
                }
                _ => {}
            }
        }
        if !upgrading.is_empty() {
            return Some(Step::Upgrade { batch: upgrading });
        }
        if !creating.is_empty() {
            return Some(Step::Surge {
                count: creating.len(),
                replacing: creating,
            });
        }
        // The health gate.
        if self
            .instances
            .iter()
            .any(|t| t.state == InstanceState::AwaitingHealth)
        {
            let until = health_until.unwrap_or_else(|| now.saturating_add(self.health_timeout));
            self.phase = Phase::Batch {
                number,
                batch,
                health_until: Some(until),
            };
            let mut waiting = Vec::new();
            for &i in &order {
                let Some(t) = self.instances.get_mut(i) else {
                    continue;
                };
                if t.state != InstanceState::AwaitingHealth {
                    continue;
                }
                let watched = if surge {
                    t.replacement.as_deref()
                } else {
                    Some(t.id.as_str())
                };
                let health = watched.and_then(|id| health_of(view, id));
                match (health, surge) {
                    (None, false) => t.state = InstanceState::Failed(FailureReason::Missing),
                    (None, true) => {
                        // The replacement vanished: the old instance stays.
                        t.replacement = None;
                        t.state = InstanceState::Failed(FailureReason::Unhealthy);
                    }
                    (Some(h), _) if h.is_healthy() => {
                        t.state = if surge {
                            InstanceState::DeletingOld
                        } else {
                            InstanceState::Succeeded
                        };
                    }
                    (Some(h), _) if now >= until || h == Health::Failed => {
                        t.state = if surge {
                            InstanceState::DeletingReplacement
                        } else {
                            InstanceState::Failed(FailureReason::Unhealthy)
                        };
                    }
                    (Some(_), _) => {
                        if let Some(id) = watched {
                            waiting.push(id.to_owned());
                        }
                    }
                }
            }
            if !waiting.is_empty() {
                return Some(Step::WaitForHealth {
                    ids: waiting,
                    until,
                });
            }
        }
        // Deletes (maxSurge).
        let mut deletes = Vec::new();
        for &i in &order {
            let Some(t) = self.instances.get_mut(i) else {
                continue;
            };
            match t.state {
                InstanceState::DeletingOld => {
                    if view.contains_key(t.id.as_str()) {
                        deletes.push(t.id.clone());
                    } else {
                        t.state = InstanceState::Succeeded;
                    }
                }
                InstanceState::DeletingReplacement => match t.replacement.as_deref() {
                    Some(r) if view.contains_key(r) => deletes.push(r.to_owned()),
                    _ => {
                        t.replacement = None;
                        t.state = InstanceState::Failed(FailureReason::Unhealthy);
                    }
                },
                _ => {}
            }
        }
        if !deletes.is_empty() {
            return Some(Step::Delete { ids: deletes });
        }
        None
    }

    fn between_batches(&mut self, view: &BTreeMap<&str, &InstanceView>, now: u64) -> Step {
        let next_batch = self.batches.saturating_add(1);
        // After a batch: maxUnhealthyUpgradedInstancePercent.
        if self.batches > 0 {
            let unhealthy = count_u32(
                self.instances
                    .iter()
                    .filter(|t| match t.state {
                        InstanceState::Failed(_) => true,
                        InstanceState::Succeeded => {
                            !health_of(view, t.current_id()).is_some_and(Health::is_healthy)
                        }
                        _ => false,
                    })
                    .count(),
            );
            let limit = self.policy.max_unhealthy_upgraded_instance_percent;
            if above(unhealthy, limit, self.total) {
                return self.breach(
                    view,
                    Breach {
                        limit: Limit::MaxUnhealthyUpgradedInstancePercent,
                        unhealthy,
                        total: self.total,
                        limit_percent: limit,
                        batch: self.batches,
                    },
                );
            }
        }
        // What is left to upgrade.
        for t in &mut self.instances {
            if t.state == InstanceState::Pending {
                match view.get(t.id.as_str()) {
                    None => t.state = InstanceState::Removed,
                    Some(v) if v.up_to_date => t.state = InstanceState::UpToDate,
                    Some(_) => {}
                }
            }
        }
        if !self
            .instances
            .iter()
            .any(|t| t.state == InstanceState::Pending)
        {
            return self.finish(Outcome::Completed);
        }
        if self.cancelled_at.is_some() {
            return self.finish(Outcome::Cancelled);
        }
        if let Some(end) = self.last_batch_end {
            let until = end.saturating_add(self.policy.pause_seconds);
            if now < until {
                return Step::Pause { until };
            }
        }
        // Before a batch: maxUnhealthyInstancePercent.
        let unhealthy = count_u32(
            self.instances
                .iter()
                .filter(|t| t.state != InstanceState::Removed)
                .filter(|t| !health_of(view, t.current_id()).is_some_and(Health::is_healthy))
                .count(),
        );
        let limit = self.policy.max_unhealthy_instance_percent;
        if above(unhealthy, limit, self.total) {
            return self.breach(
                view,
                Breach {
                    limit: Limit::MaxUnhealthyInstancePercent,
                    unhealthy,
                    total: self.total,
                    limit_percent: limit,
                    batch: next_batch,
                },
            );
        }
        // Choose the batch.
        let prioritize = self.policy.prioritize_unhealthy_instances;
        let mut candidates: Vec<(bool, usize)> = self
            .instances
            .iter()
            .enumerate()
            .filter(|(_, t)| t.state == InstanceState::Pending)
            .map(|(i, t)| {
                let healthy = health_of(view, &t.id).is_some_and(Health::is_healthy);
                (prioritize && healthy, i)
            })
            .collect();
        // Stable: within each group, the instances keep their id order.
        candidates.sort_by_key(|(later, _)| *later);
        let size = usize::try_from(self.batch_size).unwrap_or(usize::MAX);
        let state = if self.policy.max_surge {
            InstanceState::Creating
        } else {
            InstanceState::Upgrading
        };
        let mut batch = Vec::new();
        for (_, i) in candidates.into_iter().take(size) {
            if let Some(t) = self.instances.get_mut(i) {
                t.state = state;
                batch.push(t.id.clone());
            }
        }
        self.batches = next_batch;
        self.phase = Phase::Batch {
            number: next_batch,
            batch: batch.clone(),
            health_until: None,
        };
        if self.policy.max_surge {
            Step::Surge {
                count: batch.len(),
                replacing: batch,
            }
        } else {
            Step::Upgrade { batch }
        }
    }

    /// The failed instances still to roll back: those the view shows on the
    /// latest model and whose rollback was not reported.
    fn rollback_targets(&self, view: &BTreeMap<&str, &InstanceView>) -> Vec<String> {
        self.instances
            .iter()
            .filter(|t| matches!(t.state, InstanceState::Failed(_)) && t.rolled_back.is_none())
            .filter(|t| view.get(t.id.as_str()).is_some_and(|v| v.up_to_date))
            .map(|t| t.id.clone())
            .collect()
    }

    fn breach(&mut self, view: &BTreeMap<&str, &InstanceView>, breach: Breach) -> Step {
        if self.policy.rollback_failed_instances_on_policy_breach {
            self.phase = Phase::RollingBack {
                breach: breach.clone(),
            };
            self.roll_back(view, breach)
        } else {
            self.finish(Outcome::Faulted(breach))
        }
    }

    fn roll_back(&mut self, view: &BTreeMap<&str, &InstanceView>, breach: Breach) -> Step {
        let ids = self.rollback_targets(view);
        if ids.is_empty() {
            self.finish(Outcome::Faulted(breach))
        } else {
            Step::Rollback { ids }
        }
    }

    fn finish(&mut self, outcome: Outcome) -> Step {
        self.phase = Phase::Done(outcome.clone());
        Step::Done(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_order() {
        let mut ids = vec!["b", "10", "9", "a", "007", "7", "0"];
        ids.sort_by(|a, b| compare_instance_ids(a, b));
        assert_eq!(ids, ["0", "007", "7", "9", "10", "a", "b"]);
    }

    #[test]
    fn breach_percent_rounds_up() {
        let b = Breach {
            limit: Limit::MaxUnhealthyUpgradedInstancePercent,
            unhealthy: 41,
            total: 200,
            limit_percent: 20,
            batch: 3,
        };
        assert!(above(41, 20, 200));
        assert_eq!(b.percent(), 21);
        assert_eq!(
            b.to_string(),
            "41 upgraded instances of 200 are unhealthy (21%), above maxUnhealthyUpgradedInstancePercent 20%; the rolling upgrade stopped after batch 3"
        );
        assert!(!above(40, 20, 200));
    }
}
