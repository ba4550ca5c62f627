//! Crash injection: the orchestrator is killed at every step of
//! an operation — after every driver call and at every store await — and a
//! server with the same name restarted; afterwards the state is consistent
//! (the store lists exactly the instances the driver runs, each on the
//! model the store says) and the operation completes.
//!
//! How a kill is placed: the driver is wrapped so that every call that
//! changes an instance yields first, and the orchestrator's future is
//! polled at most `budget` times and then dropped (a dropped future is a
//! killed process: nothing after its last await point runs). `budget`
//! goes 0, 1, 2, ... until a run ends within it, so every await point of
//! an uninterrupted run — each driver call, each store read and write —
//! is a kill point once. Each kill point gets a fresh store and driver.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use serde_json::json;
use trustlaunch_control::orchestrator::{
    instance_name, instance_spec, ControlError, Orchestrator, RollingUpgradeState,
};
use trustlaunch_control::sim::{BootOutcome, OutcomeFn, SimDriver, SimEvent};
use trustlaunch_control::vm_ops::{vm_instance_name, vm_spec, Action, ActionTarget};
use trustlaunch_control::{Driver, DriverError, Health, InstanceSpec, InstanceStatus, PowerState};
use trustlaunch_fleet::resources::{ScaleSetVm, VirtualMachine, SCALE_SET_VM_TYPE, VM_TYPE};
use trustlaunch_fleet::rolling::RunningStatusCode;
mod common;
use common::{catalogs, put_set, scale_set, SET};
use trustlaunch_store::{NewResource, OperationStatus, Precondition, Store};

/// How long a restarted server may take to finish (every scenario takes
/// milliseconds uninterrupted).
const RESUME_LIMIT: Duration = Duration::from_secs(3);

/// The driver the orchestrator gets: the simulated one, with an await
/// point before every call that changes an instance, so that a kill can
/// fall between any two of them (between an apply and its start, a create
/// and its start, ...).
#[derive(Clone, Debug)]
struct Yielding(SimDriver);

impl Driver for Yielding {
    async fn create(&self, spec: &InstanceSpec) -> Result<(), DriverError> {
        tokio::task::yield_now().await;
        self.0.create(spec).await
    }
    async fn start(&self, name: &str) -> Result<(), DriverError> {
        tokio::task::yield_now().await;
        self.0.start(name).await
    }
    async fn stop(&self, name: &str, deallocate: bool) -> Result<(), DriverError> {
        tokio::task::yield_now().await;
        self.0.stop(name, deallocate).await
    }
    async fn apply(&self, spec: &InstanceSpec) -> Result<(), DriverError> {
        tokio::task::yield_now().await;
        self.0.apply(spec).await
    }
    async fn reimage(&self, name: &str) -> Result<(), DriverError> {
        tokio::task::yield_now().await;
        self.0.reimage(name).await
    }
    async fn delete(&self, name: &str) -> Result<(), DriverError> {
        tokio::task::yield_now().await;
        self.0.delete(name).await
    }
    async fn status(&self, name: &str) -> Result<Option<InstanceStatus>, DriverError> {
        self.0.status(name).await
    }
    async fn list(&self) -> Result<Vec<InstanceStatus>, DriverError> {
        self.0.list().await
    }
}

/// A clock (Unix seconds) shared by a server and its restarted self.
type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// A clock that moves 10 minutes per reading: health gates close at once
/// (for instances that never become healthy).
fn fast_clock() -> Clock {
    let t = Arc::new(AtomicU64::new(1_000));
    Arc::new(move || t.fetch_add(600, Ordering::Relaxed))
}

/// One kill point's world: a store, a driver, the operation started.
struct World {
    _dir: tempfile::TempDir,
    store: Store,
    d: SimDriver,
    clock: Option<Clock>,
    /// Driver events before the operation.
    base: usize,
}

impl World {
    async fn new(outcome: Option<OutcomeFn>, clock: Option<Clock>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("s.db").display()))
            .await
            .unwrap();
        let d = match outcome {
            Some(f) => SimDriver::with_outcomes(Duration::ZERO, f),
            None => SimDriver::new(Duration::ZERO),
        };
        Self {
            _dir: dir,
            store,
            d,
            clock,
            base: 0,
        }
    }

    /// A server named `server-1` (a restart keeps the name: it resumes its
    /// own operations at once).
    fn orchestrator(&self) -> Orchestrator<Yielding> {
        let o = Orchestrator::new(
            self.store.clone(),
            Yielding(self.d.clone()),
            catalogs(),
            "server-1",
        )
        .with_poll(Duration::from_millis(1));
        match &self.clock {
            Some(c) => o.with_clock(c.clone()),
            None => o,
        }
    }

    /// `n` healthy instances (ids 0..n) on model `from`, in the driver and
    /// the store, and the set's model at `to` with capacity `n`.
    async fn fleet(&mut self, n: u32, from: u64, to: u64, rolling: &serde_json::Value) {
        let c = catalogs();
        let old = scale_set(n, from, rolling);
        put_set(&self.store, &old).await;
        for i in 0..n {
            let id = i.to_string();
            let spec = instance_spec(&old, &id, &c).unwrap();
            self.d.create(&spec).await.unwrap();
            self.d.start(&spec.name).await.unwrap();
            let vm: ScaleSetVm = serde_json::from_value(json!({
                "instanceId": id, "name": format!("web_{i}"), "latestModelApplied": from == to,
                "modelVersion": from, "provisioningState": "Succeeded",
                "powerState": "PowerState/running"
            }))
            .unwrap();
            self.store
                .put_resource(
                    &NewResource {
                        id: format!("{SET}/virtualMachines/{i}"),
                        kind: SCALE_SET_VM_TYPE.into(),
                        resource_group: "rg".into(),
                        name: vm.name.clone(),
                        parent: Some(SET.into()),
                        body: serde_json::to_value(&vm).unwrap(),
                        usage: None,
                    },
                    Precondition::Absent,
                    1,
                )
                .await
                .unwrap();
        }
        put_set(&self.store, &scale_set(n, to, rolling)).await;
        self.base = self.d.events().len();
    }

    /// The driver's events since the operation started.
    fn events(&self) -> Vec<SimEvent> {
        self.d.events().split_off(self.base)
    }

    /// Instances applied per name, with the model version each apply
    /// brought.
    fn applies(&self) -> BTreeMap<String, Vec<u64>> {
        let mut out = BTreeMap::<String, Vec<u64>>::new();
        for e in self.events() {
            if e.action == "apply" {
                out.entry(e.name).or_default().push(e.model_version);
            }
        }
        out
    }

    /// The operation `op-1`.
    async fn op(&self) -> trustlaunch_store::OperationRecord {
        self.store.get_operation("op-1").await.unwrap().unwrap()
    }

    /// The store's instances of the set, by driver name.
    async fn stored(&self) -> BTreeMap<String, ScaleSetVm> {
        let mut out = BTreeMap::new();
        for r in self.store.child_resources(SET).await.unwrap() {
            let vm: ScaleSetVm = serde_json::from_value(r.body).unwrap();
            out.insert(instance_name("web", &vm.instance_id), vm);
        }
        out
    }

    /// The driver's instances, by name.
    async fn running(&self) -> BTreeMap<String, InstanceStatus> {
        self.d
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.spec.name.clone(), s))
            .collect()
    }

    /// The invariants every ending keeps: the store lists exactly the
    /// instances the driver has (no orphan VM, no record without a VM),
    /// each record shows the model the driver runs and whether it is the
    /// set's (`latest`), and every instance is up (nothing left stopped
    /// half-way through a step).
    async fn consistent(&self, latest: u64) -> Result<(), String> {
        let stored = self.stored().await;
        let running = self.running().await;
        let s: Vec<&String> = stored.keys().collect();
        let r: Vec<&String> = running.keys().collect();
        if s != r {
            return Err(format!("the store lists {s:?}, the driver runs {r:?}"));
        }
        for (name, vm) in &stored {
            let st = &running[name];
            if vm.model_version != st.spec.model_version {
                return Err(format!(
                    "{name}: the store says model {}, the driver runs model {}",
                    vm.model_version, st.spec.model_version
                ));
            }
            if vm.latest_model_applied != (vm.model_version == latest) {
                return Err(format!(
                    "{name}: latestModelApplied {} on model {} (the set's is {latest})",
                    vm.latest_model_applied, vm.model_version
                ));
            }
            if st.power != PowerState::Running {
                return Err(format!("{name} is left {:?}", st.power));
            }
        }
        Ok(())
    }

    /// Every instance healthy, on model `version` with `version`'s spec.
    async fn all_on(&self, version: u64, count: usize) -> Result<(), String> {
        let running = self.running().await;
        if running.len() != count {
            return Err(format!(
                "{} instances, not {count}: {:?}",
                running.len(),
                running.keys().collect::<Vec<_>>()
            ));
        }
        for (name, st) in &running {
            on_model(name, st, version)?;
        }
        Ok(())
    }
}

/// `st` runs model `version` as its spec says (security and image), and
/// is healthy.
fn on_model(name: &str, st: &InstanceStatus, version: u64) -> Result<(), String> {
    let tl = version == 2;
    let image = if tl {
        "/images/tiny-2"
    } else {
        "/images/tiny-1"
    };
    let sec = st.spec.security;
    if st.spec.model_version != version
        || sec.trusted_launch != tl
        || sec.secure_boot != tl
        || sec.vtpm != tl
        || st.spec.image != image
    {
        return Err(format!("{name} is not on model {version}: {:?}", st.spec));
    }
    if st.health != Health::Healthy {
        return Err(format!("{name} is {:?} on model {version}", st.health));
    }
    Ok(())
}

/// Polls `fut` until the driver did `k` things, then `j` more times, and
/// drops it (the kill); `true` if it finished first. The driver yields
/// before each call that changes an instance, so one poll does at most
/// one: `(k, 0)` is the kill right after the `k`-th, `(k, 1..)` each
/// await point (store reads and writes) after it in turn.
async fn run_killed(
    fut: impl Future<Output = Result<usize, ControlError>>,
    w: &World,
    k: usize,
    j: usize,
) -> bool {
    let mut fut = std::pin::pin!(fut);
    let mut extra = 0_usize;
    std::future::poll_fn(|cx| {
        if w.events().len() >= k {
            if extra == j {
                return Poll::Ready(false);
            }
            extra += 1;
        }
        match fut.as_mut().poll(cx) {
            Poll::Ready(r) => {
                r.expect("the server failed before the kill");
                Poll::Ready(true)
            }
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// What a crash run saw.
#[derive(Debug, Default)]
struct Coverage {
    /// Kill points tried; the last one ran to the end.
    points: usize,
    /// Of them, those where the operation was still in progress.
    interrupted: usize,
    /// Driver events of the uninterrupted run.
    total_events: usize,
}

/// Most wrong endings listed (each hang costs [`RESUME_LIMIT`]).
const MAX_FAILURES: usize = 6;

/// Kills the server at every kill point of the operation `setup` starts
/// (after each driver event `k`, and at each await point `j` before the
/// next: see [`run_killed`]), restarts it, and checks each ending with
/// `check`; fails listing the kill points whose ending is wrong.
async fn crash_everywhere<S, SF, C, CF>(what: &str, setup: S, check: C) -> Coverage
where
    S: Fn() -> SF,
    SF: Future<Output = World>,
    C: Fn(Arc<World>) -> CF,
    CF: Future<Output = Result<(), String>>,
{
    let mut failures = Vec::new();
    let mut cov = Coverage::default();
    'events: for k in 0.. {
        for j in 0.. {
            let w = Arc::new(setup().await);
            let finished = run_killed(w.orchestrator().run_pending(), &w, k, j).await;
            let done = w.events();
            let status = w.op().await.status;
            let at = format!(
                "{what}: killed at await {j} after driver event {k}, {} done{} (status {status:?})",
                done.len(),
                done.last()
                    .map(|e| format!(", the last {} {} v{}", e.action, e.name, e.model_version))
                    .unwrap_or_default()
            );
            cov.points += 1;
            if status == OperationStatus::InProgress {
                cov.interrupted += 1;
            }
            // The restarted server, same name.
            match tokio::time::timeout(RESUME_LIMIT, w.orchestrator().run_pending()).await {
                Err(_) => failures.push(format!(
                    "{at}: the restarted server is still at it after {RESUME_LIMIT:?}"
                )),
                Ok(Err(e)) => failures.push(format!("{at}: the restarted server failed: {e}")),
                Ok(Ok(_)) => {
                    if let Err(e) = check(w.clone()).await {
                        failures.push(format!("{at}: {e}"));
                    }
                }
            }
            if failures.len() >= MAX_FAILURES {
                break 'events;
            }
            if finished {
                cov.total_events = done.len();
                break 'events;
            }
            if done.len() > k {
                // Past the next driver event: the next k.
                break;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{what}: kill points that end wrong (the first {MAX_FAILURES} at most, of {} tried):\n{}",
        cov.points,
        failures.join("\n")
    );
    assert!(cov.interrupted * 2 > cov.points, "{what}: {cov:?}");
    cov
}

fn all_ids(n: u32) -> Vec<String> {
    (0..n).map(|i| i.to_string()).collect()
}

fn names(ids: impl IntoIterator<Item = u32>) -> Vec<String> {
    ids.into_iter()
        .map(|i| instance_name("web", &i.to_string()))
        .collect()
}

/// The rollback of the set to Standard (model 3: no uefiSettings, the
/// previous image): every instance applied to it exactly once.
async fn rolled_back_to_standard(w: Arc<World>, n: u32) -> Result<(), String> {
    let op = w.op().await;
    if op.status != OperationStatus::Succeeded {
        return Err(format!("the operation is {:?}: {:?}", op.status, op.error));
    }
    let a = w.applies();
    let expect: BTreeMap<String, Vec<u64>> =
        names(0..n).into_iter().map(|n| (n, vec![3])).collect();
    if a != expect {
        return Err(format!("applies {a:?}"));
    }
    w.consistent(3).await?;
    w.all_on(3, n as usize).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manual_rollback_to_standard_killed_anywhere_completes_once() {
    const N: u32 = 5;
    let cov = crash_everywhere(
        "manual rollback to Standard",
        || async {
            let mut w = World::new(None, None).await;
            w.fleet(N, 2, 3, &json!({})).await;
            w.orchestrator()
                .start_manual_upgrade(SET, "op-1", &all_ids(N))
                .await
                .unwrap();
            w
        },
        |w| rolled_back_to_standard(w, N),
    )
    .await;
    assert_eq!(cov.total_events, 2 * N as usize, "{cov:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_rollback_to_standard_killed_anywhere_completes_once() {
    const N: u32 = 5;
    let policy = json!({"maxBatchInstancePercent": 40});
    let cov = crash_everywhere(
        "rolling rollback to Standard",
        || async {
            let mut w = World::new(None, None).await;
            w.fleet(N, 2, 3, &policy).await;
            w.orchestrator()
                .start_rolling_upgrade(SET, "op-1", Some(scale_set(N, 2, &policy)))
                .await
                .unwrap();
            w
        },
        |w| rolled_back_to_standard(w, N),
    )
    .await;
    assert_eq!(cov.total_events, 2 * N as usize, "{cov:?}");
}

/// Instances 1 and 3 boot unhealthy on Trusted Launch (model 2).
fn tl_breaks_1_and_3() -> OutcomeFn {
    Arc::new(|s: &InstanceSpec| {
        if s.model_version == 2 && (s.name == "web-1" || s.name == "web-3") {
            BootOutcome::Unhealthy
        } else {
            BootOutcome::Healthy
        }
    })
}

/// A Standard -> Trusted Launch upgrade of 5 in batches of 2 where
/// instances 1 and 3 come up unhealthy: after batch 2, 2 of 5 (40%) are
/// above maxUnhealthyUpgradedInstancePercent 20%; the policy rolls 1 and
/// 3 back to Standard and the upgrade ends Faulted.
async fn breach_rolled_back(w: Arc<World>) -> Result<(), String> {
    let op = w.op().await;
    if op.status != OperationStatus::Failed {
        return Err(format!("the operation is {:?}: {:?}", op.status, op.error));
    }
    let err = op.error.clone().unwrap_or_default();
    let msg = err["message"].as_str().unwrap_or_default();
    if err["code"] != "RollingUpgradeInstanceUnhealthyError"
        || !msg.starts_with(
            "2 upgraded instances of 5 are unhealthy (40%), above maxUnhealthyUpgradedInstancePercent 20%; the rolling upgrade stopped after batch 2",
        )
    {
        return Err(format!("error {err}"));
    }
    let state: RollingUpgradeState = serde_json::from_value(op.state).unwrap();
    let code = state.planner.status().running_status.code;
    if code != RunningStatusCode::Faulted {
        return Err(format!("runningStatus {code:?}"));
    }
    // Upgraded once, rolled back once (1 and 3), never upgraded again.
    let a = w.applies();
    let expect: BTreeMap<String, Vec<u64>> = [
        ("web-0", vec![2]),
        ("web-1", vec![2, 1]),
        ("web-2", vec![2]),
        ("web-3", vec![2, 1]),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_owned(), v))
    .collect();
    if a != expect {
        return Err(format!("applies {a:?}"));
    }
    w.consistent(2).await?;
    let running = w.running().await;
    for (i, version) in [2, 1, 2, 1, 1].into_iter().enumerate() {
        let name = instance_name("web", &i.to_string());
        on_model(&name, &running[&name], version)?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_breach_rollback_killed_anywhere_rolls_back_once_and_faults() {
    let policy = json!({
        "maxBatchInstancePercent": 40,
        "maxUnhealthyUpgradedInstancePercent": 20,
        "rollbackFailedInstancesOnPolicyBreach": true
    });
    let cov = crash_everywhere(
        "policy-breach rollback",
        || async {
            let mut w = World::new(Some(tl_breaks_1_and_3()), Some(fast_clock())).await;
            w.fleet(5, 1, 2, &policy).await;
            w.orchestrator()
                .start_rolling_upgrade(SET, "op-1", Some(scale_set(5, 1, &policy)))
                .await
                .unwrap();
            w
        },
        breach_rolled_back,
    )
    .await;
    // 4 upgrades and 2 rollbacks, each an apply and a start.
    assert_eq!(cov.total_events, 12, "{cov:?}");
}

/// Without the previous model there is nothing to roll back to: the
/// upgrade still ends (Faulted), it does not spin on the rollback.
#[tokio::test(flavor = "multi_thread")]
async fn a_policy_breach_without_the_previous_model_still_ends() {
    let policy = json!({
        "maxBatchInstancePercent": 40,
        "maxUnhealthyUpgradedInstancePercent": 20,
        "rollbackFailedInstancesOnPolicyBreach": true
    });
    let mut w = World::new(Some(tl_breaks_1_and_3()), Some(fast_clock())).await;
    w.fleet(5, 1, 2, &policy).await;
    let o = w.orchestrator();
    o.start_rolling_upgrade(SET, "op-1", None).await.unwrap();
    tokio::time::timeout(RESUME_LIMIT, o.run_pending())
        .await
        .expect("the upgrade spins on a rollback it cannot do")
        .unwrap();
    let op = w.op().await;
    assert_eq!(op.status, OperationStatus::Failed, "{:?}", op.error);
}

/// A maxSurge upgrade to model `to`: every old instance replaced by one
/// new instance, deleted only after its replacement started healthy;
/// nothing applied in place, no surge instance left over.
async fn surged(w: Arc<World>, n: u32, to: u64) -> Result<(), String> {
    let op = w.op().await;
    if op.status != OperationStatus::Succeeded {
        return Err(format!("the operation is {:?}: {:?}", op.status, op.error));
    }
    if !w.applies().is_empty() {
        return Err(format!("applied in place: {:?}", w.applies()));
    }
    w.consistent(to).await?;
    w.all_on(to, n as usize).await?;
    let state: RollingUpgradeState = serde_json::from_value(op.state).unwrap();
    let events = w.events();
    for t in state.planner.instances() {
        let old = instance_name("web", &t.id);
        let Some(new) = t.replacement.as_deref().map(|r| instance_name("web", r)) else {
            return Err(format!("{old} has no replacement: {t:?}"));
        };
        let deletes: Vec<usize> = (0..events.len())
            .filter(|&i| events[i].name == old && events[i].action == "delete")
            .collect();
        let started = events
            .iter()
            .position(|e| e.name == new && e.action == "start");
        match (deletes.as_slice(), started) {
            ([d], Some(s)) if s < *d => {}
            _ => {
                return Err(format!(
                    "{old} deleted at {deletes:?}, its replacement {new} started at {started:?}"
                ))
            }
        }
    }
    // No replacement created twice (a re-issued surge adopts or re-ids).
    for e in events.iter().filter(|e| e.action == "create") {
        if events
            .iter()
            .filter(|x| x.name == e.name && x.action == "create")
            .count()
            != 1
        {
            return Err(format!("{} created twice", e.name));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_max_surge_upgrade_and_its_rollback_killed_anywhere_leave_no_orphan() {
    const N: u32 = 4;
    let policy = json!({"maxBatchInstancePercent": 50, "maxSurge": true});
    for (from, to, what) in [
        (1, 2, "maxSurge upgrade to Trusted Launch"),
        (2, 3, "maxSurge rollback to Standard"),
    ] {
        let cov = crash_everywhere(
            what,
            || async {
                let mut w = World::new(None, None).await;
                w.fleet(N, from, to, &policy).await;
                w.orchestrator()
                    .start_rolling_upgrade(SET, "op-1", Some(scale_set(N, from, &policy)))
                    .await
                    .unwrap();
                w
            },
            |w| surged(w, N, to),
        )
        .await;
        // Per instance: create and start its replacement, delete it.
        assert_eq!(cov.total_events, 3 * N as usize, "{cov:?}");
    }
}

/// maxSurge with every Trusted Launch replacement unhealthy and
/// `rollbackFailedInstancesOnPolicyBreach`: the failed replacements are
/// deleted, the old instances kept, and the upgrade ends Faulted.
#[tokio::test(flavor = "multi_thread")]
async fn a_max_surge_breach_killed_anywhere_deletes_its_failed_replacements() {
    const N: u32 = 4;
    let policy = json!({
        "maxBatchInstancePercent": 50, "maxSurge": true,
        "rollbackFailedInstancesOnPolicyBreach": true
    });
    crash_everywhere(
        "maxSurge breach",
        || async {
            let tl_fails: OutcomeFn = Arc::new(|s: &InstanceSpec| {
                if s.model_version == 2 {
                    BootOutcome::Fails("Secure Boot violation".into())
                } else {
                    BootOutcome::Healthy
                }
            });
            let mut w = World::new(Some(tl_fails), Some(fast_clock())).await;
            w.fleet(N, 1, 2, &policy).await;
            w.orchestrator()
                .start_rolling_upgrade(SET, "op-1", Some(scale_set(N, 1, &policy)))
                .await
                .unwrap();
            w
        },
        |w| async move {
            let op = w.op().await;
            let err = op.error.clone().unwrap_or_default();
            if op.status != OperationStatus::Failed
                || !err["message"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("2 upgraded instances of 4 are unhealthy (50%), above maxUnhealthyUpgradedInstancePercent 20%")
            {
                return Err(format!("the operation is {:?}: {err}", op.status));
            }
            if !w.applies().is_empty() {
                return Err(format!("applied in place: {:?}", w.applies()));
            }
            w.consistent(2).await?;
            let running = w.running().await;
            if running.keys().cloned().collect::<Vec<_>>() != names(0..N) {
                return Err(format!("running {:?}", running.keys()));
            }
            for (name, st) in &running {
                on_model(name, st, 1)?;
            }
            // Each replacement created once and deleted once.
            let events = w.events();
            let mut per: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for e in &events {
                per.entry(e.name.as_str()).or_default().push(e.action);
            }
            for (name, actions) in &per {
                if actions != &["create", "start", "delete"] {
                    return Err(format!("{name}: {actions:?}"));
                }
            }
            Ok(())
        },
    )
    .await;
}

/// A reconcile's ending: succeeded, the driver running exactly the
/// store's instances, `ids` of them, each created at most once.
async fn reconciled(w: Arc<World>, ids: Vec<u32>) -> Result<(), String> {
    let op = w.op().await;
    if op.status != OperationStatus::Succeeded {
        return Err(format!("the operation is {:?}: {:?}", op.status, op.error));
    }
    w.consistent(2).await?;
    w.all_on(2, ids.len()).await?;
    let running: Vec<String> = w.running().await.into_keys().collect();
    if running != names(ids) {
        return Err(format!("running {running:?}"));
    }
    let events = w.events();
    for e in &events {
        let n = events
            .iter()
            .filter(|x| x.name == e.name && x.action == e.action)
            .count();
        if n != 1 {
            return Err(format!("{} {} {n} times", e.action, e.name));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reconcile_killed_anywhere_leaves_no_orphan() {
    // Scale out 2 -> 5.
    crash_everywhere(
        "scale out",
        || async {
            let mut w = World::new(None, None).await;
            w.fleet(2, 2, 2, &json!({})).await;
            put_set(&w.store, &scale_set(5, 2, &json!({}))).await;
            w.orchestrator()
                .start_reconcile(SET, "op-1", false)
                .await
                .unwrap();
            w
        },
        |w| reconciled(w, (0..5).collect()),
    )
    .await;
    // Scale in 5 -> 2: the highest ids go.
    crash_everywhere(
        "scale in",
        || async {
            let mut w = World::new(None, None).await;
            w.fleet(5, 2, 2, &json!({})).await;
            put_set(&w.store, &scale_set(2, 2, &json!({}))).await;
            w.orchestrator()
                .start_reconcile(SET, "op-1", false)
                .await
                .unwrap();
            w
        },
        |w| reconciled(w, vec![0, 1]),
    )
    .await;
    // Delete the set: its instances, then the set.
    crash_everywhere(
        "delete set",
        || async {
            let mut w = World::new(None, None).await;
            w.fleet(3, 2, 2, &json!({})).await;
            w.orchestrator()
                .start_reconcile(SET, "op-1", true)
                .await
                .unwrap();
            w
        },
        |w| async move {
            let op = w.op().await;
            if op.status != OperationStatus::Succeeded {
                return Err(format!("the operation is {:?}: {:?}", op.status, op.error));
            }
            w.consistent(2).await?;
            if !w.running().await.is_empty() {
                return Err(format!("left running: {:?}", w.running().await.keys()));
            }
            if w.store.get_resource(SET).await.unwrap().is_some() {
                return Err("the set is still in the store".into());
            }
            let deletes = w.events().iter().filter(|e| e.action == "delete").count();
            if deletes != 3 {
                return Err(format!("{deletes} deletes"));
            }
            Ok(())
        },
    )
    .await;
}

const VM: &str =
    "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/app1";

/// VM `app1` at model `version`: 1 is Trusted Launch on image 1.0.0, 2
/// is Standard on image 2.0.0.
fn vm(version: u64) -> VirtualMachine {
    let (image, security) = if version == 1 {
        (
            "1.0.0",
            json!({"securityType": "TrustedLaunch",
                   "uefiSettings": {"secureBootEnabled": true, "vTpmEnabled": true}}),
        )
    } else {
        ("2.0.0", json!({"securityType": "Standard"}))
    };
    serde_json::from_value(json!({
        "id": VM, "name": "app1", "location": "local",
        "properties": {
            "hardwareProfile": {"vmSize": "Standard_D2s_v3"},
            "storageProfile": {"imageReference": {"id": format!(
                "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/galleries/g1/images/tiny/versions/{image}")}},
            "securityProfile": security,
            "modelVersion": version
        }
    }))
    .unwrap()
}

fn vm_resource(vm: &VirtualMachine) -> NewResource {
    NewResource {
        id: VM.into(),
        kind: VM_TYPE.into(),
        resource_group: "rg".into(),
        name: vm.name.clone(),
        parent: None,
        body: serde_json::to_value(vm).unwrap(),
        usage: None,
    }
}

/// A world with VM `app1`, already running model `from` if there is one,
/// and the operation `op-1` bringing it to model `to` recorded with the
/// VM's change, as the server does.
async fn vm_world(from: Option<u64>, to: u64) -> World {
    let mut w = World::new(None, None).await;
    if let Some(from) = from {
        let old = vm(from);
        w.store
            .put_resource(&vm_resource(&old), Precondition::Absent, 1)
            .await
            .unwrap();
        let spec = vm_spec(&old, &catalogs()).unwrap();
        w.d.create(&spec).await.unwrap();
        w.d.start(&spec.name).await.unwrap();
    }
    let new = vm(to);
    let op = w
        .orchestrator()
        .plan_vm_apply(VM, new.clone(), "op-1")
        .unwrap();
    w.store
        .put_resource_with_operation(&vm_resource(&new), Precondition::Any, Some(&op), 2)
        .await
        .unwrap();
    w.base = w.d.events().len();
    w
}

/// Each instance's driver events since the operation started, in order.
fn actions_per_name(w: &World) -> BTreeMap<String, Vec<&'static str>> {
    let mut per = BTreeMap::<String, Vec<&'static str>>::new();
    for e in w.events() {
        per.entry(e.name).or_default().push(e.action);
    }
    per
}

async fn succeeded(w: &World) -> Result<(), String> {
    let op = w.op().await;
    if op.status != OperationStatus::Succeeded {
        return Err(format!("the operation is {:?}: {:?}", op.status, op.error));
    }
    Ok(())
}

/// VM `app1` brought to model `to`: the driver has exactly one instance,
/// the VM's spec at `to`, running and healthy; the VM's record still on
/// `to`; the instance got exactly `expect` (a create or an apply, then a
/// start).
async fn vm_applied(w: Arc<World>, to: u64, expect: &[&str]) -> Result<(), String> {
    succeeded(&w).await?;
    let running = w.running().await;
    let name = vm_instance_name("app1");
    if running.keys().collect::<Vec<_>>() != [&name] {
        return Err(format!("the driver runs {:?}", running.keys()));
    }
    let st = &running[&name];
    let spec = vm_spec(&vm(to), &catalogs()).unwrap();
    if st.spec != spec {
        return Err(format!("{name} runs {:?}, not model {to}", st.spec));
    }
    if st.power != PowerState::Running || st.health != Health::Healthy {
        return Err(format!("{name} is {:?}, {:?}", st.power, st.health));
    }
    let per = actions_per_name(&w);
    if per.get(&name).map(Vec::as_slice) != Some(expect) || per.len() != 1 {
        return Err(format!("driver events {per:?}"));
    }
    if let Some(a) = w.events().iter().find(|e| e.action == "apply") {
        if a.model_version != to {
            return Err(format!("applied model {}", a.model_version));
        }
    }
    let r = w.store.get_resource(VM).await.unwrap();
    let stored: Option<VirtualMachine> = r.map(|r| serde_json::from_value(r.body).unwrap());
    if stored.as_ref().map(|v| v.properties.model_version) != Some(to) {
        return Err(format!("the store has {stored:?}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vm_create_and_update_killed_anywhere_apply_once() {
    let cov = crash_everywhere(
        "VM create",
        || vm_world(None, 1),
        |w| async move { vm_applied(w, 1, &["create", "start"]).await },
    )
    .await;
    assert_eq!(cov.total_events, 2, "{cov:?}");
    // Trusted Launch on 1.0.0 -> Standard on 2.0.0.
    let cov = crash_everywhere(
        "VM update",
        || vm_world(Some(1), 2),
        |w| async move { vm_applied(w, 2, &["apply", "start"]).await },
    )
    .await;
    assert_eq!(cov.total_events, 2, "{cov:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vm_delete_killed_anywhere_leaves_neither_instance_nor_record() {
    let cov = crash_everywhere(
        "VM delete",
        || async {
            let mut w = World::new(None, None).await;
            let v = vm(1);
            w.store
                .put_resource(&vm_resource(&v), Precondition::Absent, 1)
                .await
                .unwrap();
            let spec = vm_spec(&v, &catalogs()).unwrap();
            w.d.create(&spec).await.unwrap();
            w.d.start(&spec.name).await.unwrap();
            w.base = w.d.events().len();
            let op = w.orchestrator().plan_vm_delete(VM, v, "op-1").unwrap();
            w.store.start_operation(&op).await.unwrap();
            w
        },
        |w| async move {
            succeeded(&w).await?;
            if !w.running().await.is_empty() {
                return Err(format!(
                    "left in the driver: {:?}",
                    w.running().await.keys()
                ));
            }
            if w.store.get_resource(VM).await.unwrap().is_some() {
                return Err("the VM is still in the store".into());
            }
            let per = actions_per_name(&w);
            if per.get(&vm_instance_name("app1")).map(Vec::as_slice) != Some(&["delete"][..]) {
                return Err(format!("driver events {per:?}"));
            }
            Ok(())
        },
    )
    .await;
    assert_eq!(cov.total_events, 1, "{cov:?}");
}

/// A 4-instance set on model 1 (running, healthy; `deallocated`: then
/// deallocated) and the power action `action` on all of it as `op-1`.
async fn action_world(action: Action, deallocated: bool) -> World {
    const N: u32 = 4;
    let mut w = World::new(None, None).await;
    w.fleet(N, 1, 1, &json!({})).await;
    if deallocated {
        for name in names(0..N) {
            w.d.stop(&name, true).await.unwrap();
        }
        w.base = w.d.events().len();
    }
    let targets = (0..N)
        .map(|i| ActionTarget {
            label: i.to_string(),
            name: instance_name("web", &i.to_string()),
        })
        .collect();
    let op = w
        .orchestrator()
        .plan_action(SET, action, targets, "op-1")
        .unwrap();
    w.store.start_operation(&op).await.unwrap();
    w
}

/// The action ended Succeeded, each of the 4 instances got exactly
/// `expect` from the driver (no stop, start or reimage repeated), and
/// each is `power` (healthy if running; the store's records unchanged).
async fn acted(w: Arc<World>, expect: &[&str], power: PowerState) -> Result<(), String> {
    succeeded(&w).await?;
    let per = actions_per_name(&w);
    let want: BTreeMap<String, Vec<&str>> = names(0..4)
        .into_iter()
        .map(|n| (n, expect.to_vec()))
        .collect();
    if per != want {
        return Err(format!("driver events {per:?}"));
    }
    if power == PowerState::Running {
        w.consistent(1).await?;
        return w.all_on(1, 4).await;
    }
    let running = w.running().await;
    if running.keys().cloned().collect::<Vec<_>>() != names(0..4) {
        return Err(format!("instances {:?}", running.keys()));
    }
    for (name, st) in &running {
        if st.power != power {
            return Err(format!("{name} is {:?}", st.power));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn power_actions_killed_anywhere_act_once_per_instance() {
    let running = PowerState::Running;
    for (action, deallocated, expect, power, events) in [
        (
            Action::Restart,
            false,
            &["stop", "start"][..],
            running.clone(),
            8,
        ),
        (
            Action::Reimage,
            false,
            &["reimage", "start"][..],
            running.clone(),
            8,
        ),
        (
            Action::Deallocate,
            false,
            &["deallocate"][..],
            PowerState::Deallocated,
            4,
        ),
        (Action::Start, true, &["start"][..], running.clone(), 4),
    ] {
        let cov = crash_everywhere(
            action.as_str(),
            || action_world(action, deallocated),
            |w| acted(w, expect, power.clone()),
        )
        .await;
        assert_eq!(cov.total_events, events, "{}: {cov:?}", action.as_str());
    }
}
