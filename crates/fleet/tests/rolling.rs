//! The rolling-upgrade planner driven by a small deterministic simulated
//! scale set: instances with injectable failures (upgrades that leave the
//! instance unhealthy, upgrade or surge operations that fail, instances
//! unhealthy from the start, boots that take simulated time, some longer
//! than the health gate), checked as properties over random sizes,
//! policies and failures, plus unit tests with exact expected steps.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use trustlaunch_fleet::policy::RollingPolicy;
use trustlaunch_fleet::rolling::{
    compare_instance_ids, FailureReason, Health, InstanceResult, InstanceState, InstanceView,
    LastAction, Limit, Outcome, RollingUpgrade, RunningStatusCode, Step, TrackedInstance,
};
use trustlaunch_fleet::ErrorCode;

/// The health gate of every simulated run.
const TIMEOUT: u64 = 300;

/// What is injected into one instance.
#[derive(Clone, Debug, Default)]
struct Spec {
    /// On the latest model at start.
    up_to_date: bool,
    /// Unhealthy at start (an upgrade that does not break it fixes it).
    unhealthy: bool,
    /// The upgrade (or surge creation) operation fails.
    op_fails: bool,
    /// The latest model leaves it (or its replacement) unhealthy.
    breaks: bool,
    /// Seconds from upgrade (or creation) to a health answer.
    boot: u64,
}

impl Spec {
    /// Whether the planner must count it failed once attempted.
    fn fails(&self) -> bool {
        self.op_fails || self.breaks || self.boot > TIMEOUT
    }
}

#[derive(Clone, Debug, PartialEq)]
struct SimInstance {
    latest: bool,
    healthy_when_booted: bool,
    boot_until: u64,
    replaces: Option<String>,
}

/// The simulated scale set and orchestrator.
#[derive(Clone, Debug)]
struct Sim {
    now: u64,
    specs: BTreeMap<String, Spec>,
    instances: BTreeMap<String, SimInstance>,
    next_id: u64,
    /// Upgrades applied (in place) or replacements created, per original id.
    upgrades: BTreeMap<String, u32>,
    violations: Vec<String>,
}

impl Sim {
    fn new(specs: Vec<Spec>) -> Self {
        let mut instances = BTreeMap::new();
        let mut by_id = BTreeMap::new();
        for (i, s) in specs.iter().enumerate() {
            instances.insert(
                i.to_string(),
                SimInstance {
                    latest: s.up_to_date,
                    healthy_when_booted: !s.unhealthy,
                    boot_until: 0,
                    replaces: None,
                },
            );
            by_id.insert(i.to_string(), s.clone());
        }
        Self {
            now: 1_000,
            next_id: specs.len() as u64,
            specs: by_id,
            instances,
            upgrades: BTreeMap::new(),
            violations: Vec::new(),
        }
    }

    fn health(&self, inst: &SimInstance) -> Health {
        if self.now < inst.boot_until {
            Health::Unknown
        } else if inst.healthy_when_booted {
            Health::Healthy
        } else {
            Health::Unhealthy
        }
    }

    fn healthy(&self, id: &str) -> bool {
        self.instances
            .get(id)
            .is_some_and(|i| self.health(i) == Health::Healthy)
    }

    fn view(&self) -> Vec<InstanceView> {
        self.instances
            .iter()
            .map(|(id, i)| InstanceView {
                id: id.clone(),
                up_to_date: i.latest,
                health: self.health(i),
                replaces: i.replaces.clone(),
            })
            .collect()
    }

    fn serving(&self) -> usize {
        self.instances
            .values()
            .filter(|i| self.health(i) == Health::Healthy)
            .count()
    }

    /// Carries out the first `limit` operations of `step` (all of a wait or
    /// pause when `limit` is `usize::MAX`, none otherwise).
    fn execute(&mut self, step: &Step, limit: usize) -> Vec<InstanceResult> {
        let mut results = Vec::new();
        match step {
            Step::Upgrade { batch } => {
                for id in batch.iter().take(limit) {
                    let spec = self.specs.get(id).cloned().unwrap_or_default();
                    let now = self.now;
                    let Some(inst) = self.instances.get_mut(id) else {
                        self.violations.push(format!("upgrade of unknown {id}"));
                        continue;
                    };
                    if inst.latest {
                        self.violations.push(format!("{id} upgraded twice"));
                    }
                    if spec.op_fails {
                        results.push(InstanceResult::failed(id.clone()));
                        continue;
                    }
                    inst.latest = true;
                    inst.healthy_when_booted = !spec.breaks;
                    inst.boot_until = now + spec.boot;
                    *self.upgrades.entry(id.clone()).or_default() += 1;
                    results.push(InstanceResult::ok(id.clone()));
                }
            }
            Step::Surge { count, replacing } => {
                if *count != replacing.len() {
                    self.violations.push(format!("surge count {count}"));
                }
                for old in replacing.iter().take(limit) {
                    if self
                        .instances
                        .values()
                        .any(|i| i.replaces.as_ref() == Some(old))
                    {
                        self.violations.push(format!("second replacement of {old}"));
                    }
                    let spec = self.specs.get(old).cloned().unwrap_or_default();
                    if spec.op_fails {
                        results.push(InstanceResult::failed(old.clone()));
                        continue;
                    }
                    let id = self.next_id.to_string();
                    self.next_id += 1;
                    self.instances.insert(
                        id,
                        SimInstance {
                            latest: true,
                            healthy_when_booted: !spec.breaks,
                            boot_until: self.now + spec.boot,
                            replaces: Some(old.clone()),
                        },
                    );
                    *self.upgrades.entry(old.clone()).or_default() += 1;
                    results.push(InstanceResult::ok(old.clone()));
                }
            }
            Step::Delete { ids } => {
                for id in ids.iter().take(limit) {
                    let Some(inst) = self.instances.get(id).cloned() else {
                        self.violations.push(format!("delete of absent {id}"));
                        continue;
                    };
                    match &inst.replaces {
                        None => {
                            let replaced = self.instances.iter().any(|(rid, r)| {
                                r.replaces.as_ref() == Some(id) && self.healthy(rid)
                            });
                            if !replaced {
                                self.violations
                                    .push(format!("{id} deleted before a healthy replacement"));
                            }
                        }
                        Some(_) => {
                            if self.health(&inst) == Health::Healthy {
                                self.violations
                                    .push(format!("healthy replacement {id} deleted"));
                            }
                        }
                    }
                    self.instances.remove(id);
                    results.push(InstanceResult::ok(id.clone()));
                }
            }
            Step::Rollback { ids } => {
                for id in ids.iter().take(limit) {
                    let spec = self.specs.get(id).cloned().unwrap_or_default();
                    let now = self.now;
                    if let Some(inst) = self.instances.get_mut(id) {
                        inst.latest = false;
                        inst.healthy_when_booted = !spec.unhealthy;
                        inst.boot_until = now + spec.boot;
                    }
                    results.push(InstanceResult::ok(id.clone()));
                }
            }
            Step::WaitForHealth { ids, until } => {
                if *until <= self.now {
                    self.violations.push("wait for the past".into());
                }
                if ids.iter().any(|id| self.healthy(id)) {
                    self.violations
                        .push("waiting for a healthy instance".into());
                }
                if limit == usize::MAX {
                    let next_boot = self
                        .instances
                        .values()
                        .map(|i| i.boot_until)
                        .filter(|&b| b > self.now)
                        .min();
                    self.now = next_boot.map_or(*until, |b| b.min(*until));
                }
            }
            Step::Pause { until } => {
                if *until <= self.now {
                    self.violations.push("pause into the past".into());
                }
                if limit == usize::MAX {
                    self.now = *until;
                }
            }
            Step::Done(_) => {}
        }
        results
    }
}

/// Injected failure rates, per mille, and the seed of the per-instance
/// draws.
#[derive(Clone, Debug)]
struct Faults {
    seed: u64,
    up_to_date: u64,
    unhealthy: u64,
    op_fails: u64,
    breaks: u64,
    slow: u64,
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn specs(n: usize, f: &Faults) -> Vec<Spec> {
    let mut s = f.seed;
    let roll = |s: &mut u64, rate: u64| splitmix(s) % 1000 < rate;
    (0..n)
        .map(|_| {
            let up_to_date = roll(&mut s, f.up_to_date);
            let unhealthy = roll(&mut s, f.unhealthy);
            let op_fails = roll(&mut s, f.op_fails);
            let breaks = roll(&mut s, f.breaks);
            let slow = roll(&mut s, f.slow);
            let boot = if slow {
                TIMEOUT + 1 + splitmix(&mut s) % 300
            } else {
                splitmix(&mut s) % 120
            };
            Spec {
                up_to_date,
                unhealthy,
                op_fails,
                breaks,
                boot,
            }
        })
        .collect()
}

/// When to crash and cancel.
#[derive(Clone, Debug, Default)]
struct Plan {
    /// Calls after which the orchestrator crashes: `(call, ops)` executes
    /// the first `ops` operations of the step, then reloads the planner
    /// persisted after `next` (the report is lost); `ops == 0` on an even
    /// call reloads the planner persisted before `next` instead.
    crashes: BTreeMap<usize, usize>,
    /// The call after which `cancel` is requested.
    cancel_at: Option<usize>,
}

#[derive(Debug)]
struct Run {
    outcome: Outcome,
    instances: Vec<TrackedInstance>,
    planner: RollingUpgrade,
    sim: Sim,
    /// Each new batch: when it started and its instances.
    batches: Vec<(u64, Vec<String>)>,
    cancelled: bool,
}

fn save(p: &RollingUpgrade) -> String {
    serde_json::to_string(p).unwrap()
}

fn load(s: &str) -> RollingUpgrade {
    serde_json::from_str(s).unwrap()
}

fn above(count: usize, pct: u32, total: usize) -> bool {
    count * 100 > pct as usize * total
}

/// Drives one upgrade to its end, checking every step.
fn drive(policy: RollingPolicy, specs: Vec<Spec>, plan: &Plan) -> Run {
    let n = specs.len();
    let mut sim = Sim::new(specs);
    let mut planner =
        RollingUpgrade::new(policy, sim.now, &sim.view()).with_health_timeout(TIMEOUT);
    let batch_size = planner.batch_size() as usize;
    assert_eq!(
        batch_size,
        (n * policy.max_batch_instance_percent as usize / 100).max(1)
    );
    let initially_serving = sim.serving();
    let mut saved = save(&planner);
    let mut times: Vec<u64> = Vec::new();
    let mut last_batch_step: Option<usize> = None;
    let mut batches: Vec<(u64, Vec<String>)> = Vec::new();
    let mut cancelled = false;
    let mut attempted: BTreeSet<String> = BTreeSet::new();
    for call in 0.. {
        assert!(call < 20_000, "no end in sight");
        let view = sim.view();
        let before: Vec<TrackedInstance> = planner.instances().to_vec();
        let state_of = |id: &str| before.iter().find(|t| t.id == id).map(|t| t.state);
        let pre_saved = saved.clone();
        let (batches_before, last_batch_step_before) = (batches.len(), last_batch_step);
        let attempted_before = attempted.clone();
        let step = planner.next(&view, sim.now);
        times.push(sim.now);
        saved = save(&planner);
        if !plan.crashes.is_empty() || call % 8 == 0 {
            assert_eq!(load(&saved), planner, "state survives JSON");
        }
        let healthy_in_view = |id: &str| {
            view.iter()
                .any(|v| v.id == id && v.health == Health::Healthy)
        };

        match &step {
            Step::Upgrade { batch: ids } | Step::Surge { replacing: ids, .. } => {
                assert_eq!(
                    matches!(step, Step::Surge { .. }),
                    policy.max_surge,
                    "{step:?}"
                );
                assert!(!ids.is_empty() && ids.len() <= batch_size, "{step:?}");
                let previous_batch_step = last_batch_step.replace(call);
                let new = ids
                    .iter()
                    .all(|id| state_of(id) == Some(InstanceState::Pending));
                let resumed = ids.iter().all(|id| {
                    matches!(
                        state_of(id),
                        Some(InstanceState::Upgrading | InstanceState::Creating)
                    )
                });
                assert!(new || resumed, "{step:?} mixes batches: {before:?}");
                if new {
                    assert!(!cancelled, "a batch started after cancel");
                    // The pause since the previous batch's end.
                    // (The previous batch ended at the call after its last
                    // step.)
                    if let Some(last) = previous_batch_step {
                        let ended = times[last + 1];
                        assert!(
                            sim.now >= ended + policy.pause_seconds,
                            "batch at {} before {ended} + {}",
                            sim.now,
                            policy.pause_seconds
                        );
                    }
                    // Nothing else in flight.
                    assert!(planner
                        .instances()
                        .iter()
                        .all(|t| !t.state.in_progress() || ids.contains(&t.id)));
                    // maxUnhealthyInstancePercent, before the batch.
                    let unhealthy = view.iter().filter(|v| v.health != Health::Healthy).count();
                    assert!(!above(unhealthy, policy.max_unhealthy_instance_percent, n));
                    // maxUnhealthyUpgradedInstancePercent, after the last.
                    let failed = attempted
                        .iter()
                        .filter(|id| sim.specs[id.as_str()].fails())
                        .count();
                    assert!(!above(
                        failed,
                        policy.max_unhealthy_upgraded_instance_percent,
                        n
                    ));
                    // The order: id order, unhealthy first if prioritized.
                    let mut candidates: Vec<&TrackedInstance> = before
                        .iter()
                        .filter(|t| t.state == InstanceState::Pending)
                        .collect();
                    candidates.sort_by(|a, b| {
                        let ka = policy.prioritize_unhealthy_instances && healthy_in_view(&a.id);
                        let kb = policy.prioritize_unhealthy_instances && healthy_in_view(&b.id);
                        ka.cmp(&kb).then(compare_instance_ids(&a.id, &b.id))
                    });
                    let expected: Vec<String> = candidates
                        .iter()
                        .take(batch_size)
                        .map(|t| t.id.clone())
                        .collect();
                    assert_eq!(ids, &expected);
                    if policy.prioritize_unhealthy_instances
                        && ids.iter().any(|id| healthy_in_view(id))
                    {
                        assert!(candidates
                            .iter()
                            .filter(|t| !healthy_in_view(&t.id))
                            .all(|t| ids.contains(&t.id)));
                    }
                    attempted.extend(ids.iter().cloned());
                    batches.push((sim.now, ids.clone()));
                }
            }
            Step::WaitForHealth { .. } | Step::Delete { .. } => last_batch_step = Some(call),
            Step::Rollback { ids } => {
                assert!(policy.rollback_failed_instances_on_policy_breach);
                assert!(!policy.max_surge);
                for id in ids {
                    let t = planner.instances().iter().find(|t| &t.id == id);
                    assert!(
                        t.is_some_and(|t| matches!(t.state, InstanceState::Failed(_))),
                        "{id}"
                    );
                }
            }
            Step::Pause { until } => assert!(*until > sim.now),
            Step::Done(outcome) => {
                check_done(
                    outcome, &planner, &sim, &view, policy, &attempted, cancelled,
                );
                return Run {
                    outcome: outcome.clone(),
                    instances: planner.instances().to_vec(),
                    planner,
                    sim,
                    batches,
                    cancelled,
                };
            }
        }

        if let Some(&ops) = plan.crashes.get(&call) {
            if ops == 0 && call % 2 == 0 {
                // Crashed before persisting: this call never happened, nor
                // did its batch's attempts.
                saved = pre_saved;
                batches.truncate(batches_before);
                last_batch_step = last_batch_step_before;
                attempted = attempted_before;
            } else {
                sim.execute(&step, ops);
            }
            planner = load(&saved);
        } else {
            let results = sim.execute(&step, usize::MAX);
            planner.batch_done(&results);
            saved = save(&planner);
        }
        if plan.cancel_at == Some(call) {
            planner.cancel(sim.now).unwrap();
            saved = save(&planner);
            cancelled = true;
        }

        // Availability.
        if policy.max_surge {
            assert!(
                sim.serving() >= initially_serving,
                "serving {} < {initially_serving}",
                sim.serving()
            );
        } else {
            let disrupted = sim
                .instances
                .iter()
                .filter(|(id, i)| {
                    i.latest
                        && sim.upgrades.contains_key(*id)
                        && !sim.specs[id.as_str()].fails()
                        && !sim.healthy(id)
                })
                .count();
            assert!(disrupted <= batch_size, "{disrupted} unavailable");
        }
        assert!(sim.violations.is_empty(), "{:?}", sim.violations);
    }
    unreachable!()
}

fn check_done(
    outcome: &Outcome,
    planner: &RollingUpgrade,
    sim: &Sim,
    view: &[InstanceView],
    policy: RollingPolicy,
    attempted: &BTreeSet<String>,
    cancelled: bool,
) {
    let n = sim.specs.len();
    let status = planner.status();
    assert_eq!(status.running_status.code, outcome.code());
    assert_eq!(
        status.running_status.last_action,
        if cancelled {
            LastAction::Cancel
        } else {
            LastAction::Start
        }
    );
    let p = status.progress;
    let to_upgrade = sim.specs.values().filter(|s| !s.up_to_date).count() as u32;
    assert_eq!(p.in_progress_instance_count, 0);
    assert_eq!(
        p.successful_instance_count + p.failed_instance_count + p.pending_instance_count,
        to_upgrade
    );
    let failed: Vec<&String> = attempted
        .iter()
        .filter(|id| sim.specs[id.as_str()].fails())
        .collect();
    assert_eq!(p.failed_instance_count as usize, failed.len());
    assert_eq!(
        p.pending_instance_count,
        to_upgrade - attempted.len() as u32
    );

    // Every instance upgraded (or replaced) at most once; exactly once if
    // attempted and the operation did not fail.
    for (id, spec) in &sim.specs {
        let count = sim.upgrades.get(id).copied().unwrap_or(0);
        let expected = u32::from(attempted.contains(id) && !spec.op_fails);
        assert_eq!(count, expected, "{id} upgraded {count} times");
    }
    // The planner's record matches the injected failures.
    for t in planner.instances() {
        let spec = &sim.specs[&t.id];
        match t.state {
            InstanceState::UpToDate => assert!(spec.up_to_date),
            InstanceState::Pending => assert!(!attempted.contains(&t.id)),
            InstanceState::Succeeded => assert!(!spec.fails(), "{t:?} {spec:?}"),
            InstanceState::Failed(_) => assert!(spec.fails(), "{t:?} {spec:?}"),
            other => panic!("{} still {other:?}", t.id),
        }
    }
    // No orphan: one instance per original, a replacement only for a
    // replaced instance, which is gone.
    assert_eq!(sim.instances.len(), n);
    for (id, i) in &sim.instances {
        if let Some(old) = &i.replaces {
            let t = planner.instances().iter().find(|t| &t.id == old).unwrap();
            assert_eq!(t.state, InstanceState::Succeeded);
            assert_eq!(t.replacement.as_ref(), Some(id));
            assert!(!sim.instances.contains_key(old));
        }
    }
    match outcome {
        Outcome::Completed => {
            assert_eq!(p.pending_instance_count, 0);
            assert!(status.error.is_none());
            for t in planner.instances() {
                let inst = &sim.instances[t.current_id()];
                if !matches!(t.state, InstanceState::Failed(_)) {
                    assert!(inst.latest, "{t:?} not up to date");
                }
            }
            if failed.is_empty() {
                assert!(sim.instances.values().all(|i| i.latest));
            }
            assert!(!above(
                failed.len(),
                policy.max_unhealthy_upgraded_instance_percent,
                n
            ));
        }
        Outcome::Cancelled => {
            assert!(cancelled);
            assert!(p.pending_instance_count > 0);
            assert!(status.error.is_none());
        }
        Outcome::Faulted(b) => {
            let e = status.error.clone().unwrap();
            assert_eq!(e, b.error());
            assert_eq!(e.code, ErrorCode::RollingUpgradeInstanceUnhealthyError);
            assert_eq!(b.total as usize, n);
            match b.limit {
                Limit::MaxUnhealthyInstancePercent => {
                    let unhealthy = view.iter().filter(|v| v.health != Health::Healthy).count();
                    // After a rollback the view has changed; the breach
                    // was found on the view before it.
                    if !policy.rollback_failed_instances_on_policy_breach {
                        assert_eq!(b.unhealthy as usize, unhealthy);
                    }
                    assert!(above(
                        b.unhealthy as usize,
                        policy.max_unhealthy_instance_percent,
                        n
                    ));
                    assert_eq!(b.limit_percent, policy.max_unhealthy_instance_percent);
                    assert!(
                        e.message.starts_with(&format!(
                            "{} instances of {n} are unhealthy",
                            b.unhealthy
                        )),
                        "{}",
                        e.message
                    );
                    assert!(e.message.contains(&format!(
                        "above maxUnhealthyInstancePercent {}%",
                        policy.max_unhealthy_instance_percent
                    )));
                }
                Limit::MaxUnhealthyUpgradedInstancePercent => {
                    assert_eq!(b.unhealthy as usize, failed.len());
                    assert!(above(
                        failed.len(),
                        policy.max_unhealthy_upgraded_instance_percent,
                        n
                    ));
                    assert!(
                        e.message.starts_with(&format!(
                            "{} upgraded instances of {n} are unhealthy",
                            failed.len()
                        )),
                        "{}",
                        e.message
                    );
                    assert!(e.message.contains(&format!(
                        "above maxUnhealthyUpgradedInstancePercent {}%",
                        policy.max_unhealthy_upgraded_instance_percent
                    )));
                }
            }
            if policy.rollback_failed_instances_on_policy_breach {
                for t in planner.instances() {
                    if matches!(t.state, InstanceState::Failed(_)) {
                        assert!(!sim.instances[&t.id].latest, "{} not rolled back", t.id);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Properties.

fn policies() -> impl Strategy<Value = RollingPolicy> {
    (
        5u32..=100,
        prop_oneof![5u32..=100, Just(100u32)],
        prop_oneof![0u32..=100, Just(0u32), Just(100u32)],
        prop_oneof![Just(0u64), Just(30), Just(120)],
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(batch, unhealthy, upgraded, pause, prioritize, zones, surge, rollback)| {
                RollingPolicy {
                    max_batch_instance_percent: batch,
                    max_unhealthy_instance_percent: unhealthy,
                    max_unhealthy_upgraded_instance_percent: upgraded,
                    pause_seconds: pause,
                    prioritize_unhealthy_instances: prioritize,
                    enable_cross_zone_upgrade: zones,
                    max_surge: surge,
                    rollback_failed_instances_on_policy_breach: rollback,
                }
            },
        )
}

fn rate(max: u64) -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), 0..max]
}

fn faults() -> impl Strategy<Value = Faults> {
    (
        any::<u64>(),
        rate(300),
        rate(250),
        rate(80),
        rate(250),
        rate(150),
    )
        .prop_map(
            |(seed, up_to_date, unhealthy, op_fails, breaks, slow)| Faults {
                seed,
                up_to_date,
                unhealthy,
                op_fails,
                breaks,
                slow,
            },
        )
}

/// What must match between a run and the same run with crashes.
fn end_state(run: &Run) -> impl PartialEq + std::fmt::Debug {
    (
        run.outcome.clone(),
        run.instances
            .iter()
            .map(|t| (t.id.clone(), t.state, t.replacement.clone()))
            .collect::<Vec<_>>(),
        run.sim.instances.clone(),
        run.planner.status().progress,
        run.batches.clone(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// Every step of every run is checked in `drive` (batch size, order,
    /// limits before and after batches, pause, availability, surge deletes,
    /// at most one upgrade per instance, the end state and counts); here,
    /// what follows from the start.
    #[test]
    fn upgrades_follow_the_policy(
        n in 1usize..=200,
        policy in policies(),
        faults in faults(),
    ) {
        let specs = specs(n, &faults);
        let to_upgrade = specs.iter().filter(|s| !s.up_to_date).count();
        let unhealthy_at_start = specs.iter().filter(|s| s.unhealthy).count();
        let run = drive(policy, specs.clone(), &Plan::default());
        if to_upgrade == 0 {
            prop_assert_eq!(&run.outcome, &Outcome::Completed);
            prop_assert!(run.batches.is_empty());
        } else if above(unhealthy_at_start, policy.max_unhealthy_instance_percent, n) {
            // Stopped before the first batch.
            prop_assert!(run.batches.is_empty());
            prop_assert!(matches!(
                &run.outcome,
                Outcome::Faulted(b) if b.limit == Limit::MaxUnhealthyInstancePercent && b.batch == 1
            ), "{:?}", run.outcome);
        }
        // Too many failures always fault.
        let failed = run
            .batches
            .iter()
            .flat_map(|(_, ids)| ids)
            .filter(|id| specs[id.parse::<usize>().unwrap()].fails())
            .count();
        if above(failed, policy.max_unhealthy_upgraded_instance_percent, n) {
            prop_assert!(matches!(&run.outcome, Outcome::Faulted(_)), "{:?}", run.outcome);
        }
        if let Outcome::Faulted(b) = &run.outcome {
            if b.limit == Limit::MaxUnhealthyUpgradedInstancePercent {
                prop_assert_eq!(b.batch as usize, run.batches.len());
            }
        }
        // Batches never overlap in time order, and cover each instance once.
        let mut seen = BTreeSet::new();
        for (_, ids) in &run.batches {
            for id in ids {
                prop_assert!(seen.insert(id.clone()), "{} in two batches", id);
            }
        }
    }

    /// Crashing at random steps (after executing part of the step, without
    /// reporting it, or before persisting the planner) and resuming from
    /// the persisted JSON ends exactly as the run without crashes.
    #[test]
    fn resumes_after_crashes(
        n in 1usize..=120,
        policy in policies(),
        faults in faults(),
        crashes in prop::collection::btree_map(0usize..120, 0usize..4, 1..8),
    ) {
        let specs = specs(n, &faults);
        let clean = drive(policy, specs.clone(), &Plan::default());
        let crashed = drive(policy, specs, &Plan { crashes, cancel_at: None });
        prop_assert_eq!(end_state(&clean), end_state(&crashed));
    }

    /// A cancel stops the upgrade before the next batch (`drive` checks no
    /// batch starts after it), as Cancelled with the counts of what was
    /// done, unless the batch in flight breached a limit or nothing was
    /// left.
    #[test]
    fn cancel_stops_before_the_next_batch(
        n in 1usize..=200,
        policy in policies(),
        faults in faults(),
        at in 0usize..60,
    ) {
        let specs = specs(n, &faults);
        let clean = drive(policy, specs.clone(), &Plan::default());
        let run = drive(policy, specs, &Plan { cancel_at: Some(at), ..Plan::default() });
        let p = run.planner.status().progress;
        match &run.outcome {
            Outcome::Cancelled => {
                prop_assert!(run.cancelled);
                prop_assert!(run.batches.len() <= clean.batches.len());
                prop_assert_eq!(&run.batches[..], &clean.batches[..run.batches.len()]);
                let done: usize = run.batches.iter().map(|(_, ids)| ids.len()).sum();
                prop_assert_eq!(
                    (p.successful_instance_count + p.failed_instance_count) as usize,
                    done
                );
            }
            Outcome::Completed => prop_assert_eq!(p.pending_instance_count, 0),
            Outcome::Faulted(_) => {}
        }
        if !run.cancelled {
            prop_assert_eq!(end_state(&run), end_state(&clean));
        }
    }
}

// ---------------------------------------------------------------------------
// Exact steps on small sets.

fn healthy(n: usize) -> Vec<Spec> {
    vec![Spec::default(); n]
}

fn batch_ids(run: &Run) -> Vec<Vec<&str>> {
    run.batches
        .iter()
        .map(|(_, ids)| ids.iter().map(String::as_str).collect())
        .collect()
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn view(list: &[(&str, bool, Health)]) -> Vec<InstanceView> {
    list.iter()
        .map(|(id, latest, h)| InstanceView::new(*id, *latest, *h))
        .collect()
}

#[test]
fn ten_instances_at_twenty_percent_go_two_by_two() {
    let run = drive(RollingPolicy::default(), healthy(10), &Plan::default());
    assert_eq!(run.outcome, Outcome::Completed);
    assert_eq!(
        batch_ids(&run),
        [["0", "1"], ["2", "3"], ["4", "5"], ["6", "7"], ["8", "9"]]
    );
    let p = run.planner.status().progress;
    assert_eq!(p.successful_instance_count, 10);
    assert_eq!(
        run.planner.status().running_status.code,
        RunningStatusCode::Completed
    );
}

#[test]
fn batch_size_rounds_down_to_at_least_one() {
    for (n, pct, size) in [
        (7, 20, 1),
        (3, 5, 1),
        (10, 25, 2),
        (200, 5, 10),
        (9, 100, 9),
    ] {
        let up = RollingUpgrade::new(
            RollingPolicy {
                max_batch_instance_percent: pct,
                ..RollingPolicy::default()
            },
            0,
            &Sim::new(healthy(n)).view(),
        );
        assert_eq!(up.batch_size(), size, "{n} at {pct}%");
    }
}

#[test]
fn ids_go_in_numeric_order_and_up_to_date_ones_are_skipped() {
    let v = view(&[
        ("10", false, Health::Healthy),
        ("9", false, Health::Healthy),
        ("2", true, Health::Healthy),
        ("1", false, Health::Healthy),
        ("vm-a", false, Health::Healthy),
    ]);
    let policy = RollingPolicy {
        max_batch_instance_percent: 40,
        ..RollingPolicy::default()
    };
    let mut up = RollingUpgrade::new(policy, 0, &v);
    assert_eq!(
        up.next(&v, 0),
        Step::Upgrade {
            batch: ids(&["1", "9"])
        }
    );
    up.batch_done(&[InstanceResult::ok("1"), InstanceResult::ok("9")]);
    let v2 = view(&[
        ("10", false, Health::Healthy),
        ("9", true, Health::Healthy),
        ("2", true, Health::Healthy),
        ("1", true, Health::Healthy),
        ("vm-a", false, Health::Healthy),
    ]);
    assert_eq!(
        up.next(&v2, 5),
        Step::Upgrade {
            batch: ids(&["10", "vm-a"])
        }
    );
    let p = up.status().progress;
    assert_eq!(
        (
            p.successful_instance_count,
            p.in_progress_instance_count,
            p.pending_instance_count
        ),
        (2, 2, 0)
    );
}

#[test]
fn unhealthy_instances_go_first_when_prioritized() {
    let mut specs = healthy(10);
    specs[7].unhealthy = true;
    specs[3].unhealthy = true;
    let policy = RollingPolicy {
        prioritize_unhealthy_instances: true,
        ..RollingPolicy::default()
    };
    let run = drive(policy, specs.clone(), &Plan::default());
    assert_eq!(run.outcome, Outcome::Completed);
    assert_eq!(
        batch_ids(&run),
        [["3", "7"], ["0", "1"], ["2", "4"], ["5", "6"], ["8", "9"]]
    );
    let run = drive(RollingPolicy::default(), specs, &Plan::default());
    assert_eq!(batch_ids(&run)[0], ["0", "1"]);
}

#[test]
fn too_many_unhealthy_instances_stop_before_the_first_batch() {
    let mut specs = healthy(10);
    for s in &mut specs[..3] {
        s.unhealthy = true;
    }
    let run = drive(RollingPolicy::default(), specs, &Plan::default());
    assert!(run.batches.is_empty());
    let status = run.planner.status();
    assert_eq!(status.running_status.code, RunningStatusCode::Faulted);
    let e = status.error.unwrap();
    assert_eq!(e.code, ErrorCode::RollingUpgradeInstanceUnhealthyError);
    assert_eq!(
        e.message,
        "3 instances of 10 are unhealthy (30%), above maxUnhealthyInstancePercent 20%; the rolling upgrade stopped before batch 1"
    );
    assert_eq!(
        e.target.as_deref(),
        Some("rollingUpgradePolicy.maxUnhealthyInstancePercent")
    );
    assert_eq!(status.progress.pending_instance_count, 10);
}

#[test]
fn too_many_unhealthy_upgraded_instances_fault_and_roll_back() {
    let mut specs = healthy(10);
    for s in &mut specs[..3] {
        s.breaks = true;
    }
    for rollback in [false, true] {
        let policy = RollingPolicy {
            // Not to stop before batch 2 on the two broken by batch 1.
            max_unhealthy_instance_percent: 50,
            rollback_failed_instances_on_policy_breach: rollback,
            ..RollingPolicy::default()
        };
        let run = drive(policy, specs.clone(), &Plan::default());
        assert_eq!(batch_ids(&run), [["0", "1"], ["2", "3"]]);
        let Outcome::Faulted(b) = &run.outcome else {
            panic!("{:?}", run.outcome)
        };
        assert_eq!(
            b.to_string(),
            "3 upgraded instances of 10 are unhealthy (30%), above maxUnhealthyUpgradedInstancePercent 20%; the rolling upgrade stopped after batch 2"
        );
        let p = run.planner.status().progress;
        assert_eq!(
            (
                p.successful_instance_count,
                p.failed_instance_count,
                p.pending_instance_count
            ),
            (1, 3, 6)
        );
        for id in ["0", "1", "2"] {
            assert_eq!(run.sim.instances[id].latest, !rollback, "{id}");
        }
        assert!(run.sim.instances["3"].latest);
    }
}

#[test]
fn zero_percent_faults_on_the_first_failure_and_hundred_never() {
    let mut specs = healthy(10);
    specs[4].boot = TIMEOUT + 1;
    let strict = RollingPolicy {
        max_unhealthy_upgraded_instance_percent: 0,
        ..RollingPolicy::default()
    };
    let run = drive(strict, specs.clone(), &Plan::default());
    assert_eq!(batch_ids(&run).len(), 3);
    assert!(matches!(&run.outcome, Outcome::Faulted(b) if b.unhealthy == 1 && b.batch == 3));
    let lax = RollingPolicy {
        max_unhealthy_upgraded_instance_percent: 100,
        ..RollingPolicy::default()
    };
    let run = drive(lax, specs, &Plan::default());
    assert_eq!(run.outcome, Outcome::Completed);
    assert_eq!(run.planner.status().progress.failed_instance_count, 1);
    assert_eq!(
        run.instances[4].state,
        InstanceState::Failed(FailureReason::Unhealthy)
    );
}

#[test]
fn health_gate_and_pause() {
    let policy = RollingPolicy {
        max_batch_instance_percent: 50,
        pause_seconds: 60,
        ..RollingPolicy::default()
    };
    let v = view(&[("0", false, Health::Healthy), ("1", false, Health::Healthy)]);
    let mut up = RollingUpgrade::new(policy, 100, &v).with_health_timeout(30);
    assert_eq!(up.next(&v, 100), Step::Upgrade { batch: ids(&["0"]) });
    up.batch_done(&[InstanceResult::ok("0")]);
    let booting = view(&[("0", true, Health::Unknown), ("1", false, Health::Healthy)]);
    assert_eq!(
        up.next(&booting, 101),
        Step::WaitForHealth {
            ids: ids(&["0"]),
            until: 131
        }
    );
    // Still waiting: the same deadline.
    assert_eq!(
        up.next(&booting, 120),
        Step::WaitForHealth {
            ids: ids(&["0"]),
            until: 131
        }
    );
    let up_ok = view(&[("0", true, Health::Healthy), ("1", false, Health::Healthy)]);
    assert_eq!(up.next(&up_ok, 125), Step::Pause { until: 185 });
    assert_eq!(up.next(&up_ok, 184), Step::Pause { until: 185 });
    assert_eq!(up.next(&up_ok, 185), Step::Upgrade { batch: ids(&["1"]) });
    up.batch_done(&[InstanceResult::ok("1")]);
    let all = view(&[("0", true, Health::Healthy), ("1", true, Health::Unhealthy)]);
    assert!(matches!(
        up.next(&all, 186),
        Step::WaitForHealth { until: 216, .. }
    ));
    // Past the deadline: failed; 1 of 2 is above 20%.
    let Step::Done(Outcome::Faulted(b)) = up.next(&all, 216) else {
        panic!()
    };
    assert_eq!(b.limit, Limit::MaxUnhealthyUpgradedInstancePercent);
    assert_eq!((b.unhealthy, b.total, b.percent()), (1, 2, 50));
    // Done is sticky, and cancel refused.
    assert!(matches!(
        up.next(&all, 300),
        Step::Done(Outcome::Faulted(_))
    ));
    assert_eq!(
        up.cancel(300).unwrap_err().code,
        ErrorCode::OperationNotAllowed
    );
}

#[test]
fn max_surge_replaces_before_deleting() {
    let policy = RollingPolicy {
        max_batch_instance_percent: 100,
        max_unhealthy_upgraded_instance_percent: 50,
        max_surge: true,
        ..RollingPolicy::default()
    };
    let v = view(&[("0", false, Health::Healthy), ("1", false, Health::Healthy)]);
    let mut up = RollingUpgrade::new(policy, 0, &v).with_health_timeout(30);
    assert_eq!(
        up.next(&v, 0),
        Step::Surge {
            count: 2,
            replacing: ids(&["0", "1"])
        }
    );
    // Only one replacement created before a crash (no report): the other
    // is asked for again.
    let mut v1 = v.clone();
    v1.push(InstanceView::new("2", true, Health::Unknown).replacing("0"));
    assert_eq!(
        up.next(&v1, 1),
        Step::Surge {
            count: 1,
            replacing: ids(&["1"])
        }
    );
    let mut v2 = v1.clone();
    v2.push(InstanceView::new("3", true, Health::Unknown).replacing("1"));
    // A duplicate replacement (say, created twice) is deleted.
    v2.push(InstanceView::new("4", true, Health::Healthy).replacing("1"));
    assert_eq!(up.next(&v2, 2), Step::Delete { ids: ids(&["4"]) });
    v2.pop();
    assert_eq!(
        up.next(&v2, 2),
        Step::WaitForHealth {
            ids: ids(&["2", "3"]),
            until: 32
        }
    );
    // "2" healthy, "3" never: the old "0" goes, the replacement "3" goes.
    v2[2].health = Health::Healthy;
    v2[3].health = Health::Unhealthy;
    assert_eq!(
        up.next(&v2, 10),
        Step::WaitForHealth {
            ids: ids(&["3"]),
            until: 32
        }
    );
    assert_eq!(
        up.next(&v2, 32),
        Step::Delete {
            ids: ids(&["0", "3"])
        }
    );
    up.batch_done(&[InstanceResult::ok("0")]);
    // "3" not reported: deleted again if still there, settled once gone.
    let v3 = vec![v2[1].clone(), v2[2].clone(), v2[3].clone()];
    assert_eq!(up.next(&v3, 33), Step::Delete { ids: ids(&["3"]) });
    let v4 = vec![v2[1].clone(), v2[2].clone()];
    assert_eq!(up.next(&v4, 34), Step::Done(Outcome::Completed));
    assert_eq!(up.instances()[0].current_id(), "2");
    assert_eq!(up.instances()[1].current_id(), "1");
    assert_eq!(
        up.instances()[1].state,
        InstanceState::Failed(FailureReason::Unhealthy)
    );
    let p = up.status().progress;
    assert_eq!(
        (p.successful_instance_count, p.failed_instance_count),
        (1, 1)
    );
}

#[test]
fn a_crash_mid_batch_upgrades_only_the_rest() {
    let v = Sim::new(healthy(10)).view();
    let mut up = RollingUpgrade::new(RollingPolicy::default(), 0, &v);
    assert_eq!(
        up.next(&v, 0),
        Step::Upgrade {
            batch: ids(&["0", "1"])
        }
    );
    let persisted = save(&up);
    // "0" was upgraded, then the orchestrator crashed before reporting.
    let mut v1 = v.clone();
    v1[0].up_to_date = true;
    v1[0].health = Health::Unknown;
    let mut up = load(&persisted);
    assert_eq!(up.next(&v1, 1), Step::Upgrade { batch: ids(&["1"]) });
    // A failure report settles an instance for good.
    up.batch_done(&[InstanceResult::failed("1")]);
    assert_eq!(
        up.next(&v1, 2),
        Step::WaitForHealth {
            ids: ids(&["0"]),
            until: 2 + trustlaunch_fleet::rolling::DEFAULT_HEALTH_TIMEOUT_SECONDS
        }
    );
    assert_eq!(
        up.instances()[1].state,
        InstanceState::Failed(FailureReason::UpgradeFailed)
    );
}

#[test]
fn cancel_finishes_the_batch_then_stops() {
    let v = Sim::new(healthy(10)).view();
    let mut up = RollingUpgrade::new(RollingPolicy::default(), 0, &v);
    assert_eq!(
        up.next(&v, 0),
        Step::Upgrade {
            batch: ids(&["0", "1"])
        }
    );
    up.cancel(5).unwrap();
    up.batch_done(&[InstanceResult::ok("0"), InstanceResult::ok("1")]);
    let mut v1 = v.clone();
    v1[0].up_to_date = true;
    v1[1].up_to_date = true;
    assert_eq!(up.next(&v1, 6), Step::Done(Outcome::Cancelled));
    let s = up.status();
    assert_eq!(s.running_status.code, RunningStatusCode::Cancelled);
    assert_eq!(s.running_status.last_action, LastAction::Cancel);
    assert_eq!(s.running_status.last_action_time, 5);
    assert_eq!(
        (
            s.progress.successful_instance_count,
            s.progress.failed_instance_count,
            s.progress.in_progress_instance_count,
            s.progress.pending_instance_count
        ),
        (2, 0, 0, 8)
    );
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["runningStatus"]["code"], "Cancelled");
    assert_eq!(json["progress"]["pendingInstanceCount"], 8);
}

#[test]
fn an_empty_or_up_to_date_scale_set_completes_at_once() {
    let mut up = RollingUpgrade::new(RollingPolicy::default(), 0, &[]);
    assert_eq!(up.next(&[], 0), Step::Done(Outcome::Completed));
    let v = view(&[("0", true, Health::Unhealthy)]);
    let mut up = RollingUpgrade::new(RollingPolicy::default(), 0, &v);
    assert_eq!(up.next(&v, 0), Step::Done(Outcome::Completed));
    assert_eq!(up.status().progress, Default::default());
}

#[test]
fn a_failed_verdict_is_not_waited_on() {
    let policy = RollingPolicy {
        max_batch_instance_percent: 50,
        max_unhealthy_upgraded_instance_percent: 0,
        ..RollingPolicy::default()
    };
    let v = view(&[("0", false, Health::Healthy), ("1", false, Health::Healthy)]);
    let mut up = RollingUpgrade::new(policy, 0, &v).with_health_timeout(600);
    assert_eq!(up.next(&v, 0), Step::Upgrade { batch: ids(&["0"]) });
    up.batch_done(&[InstanceResult::ok("0")]);
    // Unhealthy is a probe that may yet answer: waited on until the gate
    // closes. Failed (an attestation verdict on the boot) is final.
    let probing = view(&[
        ("0", true, Health::Unhealthy),
        ("1", false, Health::Healthy),
    ]);
    let step = up.clone().next(&probing, 1);
    assert!(
        matches!(step, Step::WaitForHealth { until: 601, .. }),
        "{step:?}"
    );
    let judged = view(&[("0", true, Health::Failed), ("1", false, Health::Healthy)]);
    let Step::Done(Outcome::Faulted(b)) = up.next(&judged, 1) else {
        panic!("a failed verdict ends the gate at once")
    };
    assert_eq!(
        (b.limit, b.batch),
        (Limit::MaxUnhealthyUpgradedInstancePercent, 1)
    );
    assert_eq!(up.status().progress.failed_instance_count, 1);
}
