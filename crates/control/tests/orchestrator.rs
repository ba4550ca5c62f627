//! The orchestrator's rolling upgrade on the simulated driver, with the
//! store on SQLite: completes, honours the policy's health limits, keeps
//! old instances until their surge replacements are healthy, and resumes
//! after being killed at any point — no instance upgraded twice, none lost,
//! no orphan.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use trustlaunch_control::orchestrator::{instance_name, instance_spec, Orchestrator};
use trustlaunch_control::sim::{BootOutcome, SimDriver};
use trustlaunch_control::{Driver, Health};
use trustlaunch_fleet::resources::{ScaleSet, ScaleSetVm, SCALE_SET_VM_TYPE};
mod common;
use common::{catalogs, put_set, scale_set, SET};
use trustlaunch_store::{NewResource, OperationStatus, Precondition, Store};

/// A store and a driver holding `n` healthy instances on model 1, and the
/// set's model moved to 2.
async fn fleet(
    dir: &tempfile::TempDir,
    n: u32,
    d: &SimDriver,
    rolling: serde_json::Value,
) -> Store {
    let store = Store::open(&format!("sqlite://{}", dir.path().join("s.db").display()))
        .await
        .unwrap();
    let c = catalogs();
    let v1 = scale_set(n, 1, &rolling);
    put_set(&store, &v1).await;
    for i in 0..n {
        let id = i.to_string();
        let spec = instance_spec(&v1, &id, &c).unwrap();
        d.create(&spec).await.unwrap();
        d.start(&spec.name).await.unwrap();
        let vm: ScaleSetVm = serde_json::from_value(json!({
            "instanceId": id, "name": format!("web_{i}"), "latestModelApplied": true,
            "modelVersion": 1, "provisioningState": "Succeeded",
            "powerState": "PowerState/running"
        }))
        .unwrap();
        store
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
    put_set(&store, &scale_set(n, 2, &rolling)).await;
    store
}

fn orchestrator(store: &Store, d: &SimDriver) -> Orchestrator<SimDriver> {
    Orchestrator::new(store.clone(), d.clone(), catalogs(), "server-1")
        .with_poll(Duration::from_millis(1))
}

/// Instances applied per name, with the model version each apply brought.
fn applies(d: &SimDriver) -> std::collections::BTreeMap<String, Vec<u64>> {
    let mut out = std::collections::BTreeMap::<String, Vec<u64>>::new();
    for e in d.events() {
        if e.action == "apply" {
            out.entry(e.name).or_default().push(e.model_version);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_upgrade_moves_every_instance_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = SimDriver::new(Duration::ZERO);
    let store = fleet(&dir, 10, &d, json!({"maxBatchInstancePercent": 20})).await;
    let o = orchestrator(&store, &d);
    o.start_rolling_upgrade(SET, "op-1", Some(scale_set(10, 1, &json!({}))))
        .await
        .unwrap();
    assert_eq!(o.run_pending().await.unwrap(), 1);
    let op = store.get_operation("op-1").await.unwrap().unwrap();
    assert_eq!(op.status, OperationStatus::Succeeded, "{:?}", op.error);
    let a = applies(&d);
    assert_eq!(a.len(), 10);
    assert!(a.values().all(|v| v == &[2]), "{a:?}");
    for s in d.list().await.unwrap() {
        assert_eq!((s.spec.model_version, s.health), (2, Health::Healthy));
        assert!(s.spec.security.trusted_launch && s.spec.security.secure_boot);
        assert_eq!(s.spec.image, "/images/tiny-2");
    }
    // Batches of 2: every apply of a batch precedes the next batch's.
    let order: Vec<String> = d
        .events()
        .into_iter()
        .filter(|e| e.action == "apply")
        .map(|e| e.name)
        .collect();
    let expect: Vec<String> = (0..10)
        .map(|i| instance_name("web", &i.to_string()))
        .collect();
    assert_eq!(order, expect);
    let status = op.state["planner"].clone();
    assert!(!status.is_null());
}

#[tokio::test(flavor = "multi_thread")]
async fn unhealthy_upgraded_instances_fault_the_upgrade_and_name_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let d = SimDriver::with_outcomes(
        Duration::ZERO,
        Arc::new(|s| {
            if s.model_version == 2 {
                BootOutcome::Unhealthy
            } else {
                BootOutcome::Healthy
            }
        }),
    );
    let store = fleet(&dir, 10, &d, json!({"maxBatchInstancePercent": 20})).await;
    let o = orchestrator(&store, &d).with_clock(Arc::new({
        // Time moves 10 minutes per reading: health gates time out.
        let t = std::sync::atomic::AtomicU64::new(1_000);
        move || t.fetch_add(600, std::sync::atomic::Ordering::Relaxed)
    }));
    o.start_rolling_upgrade(SET, "op-1", None).await.unwrap();
    o.run_pending().await.unwrap();
    let op = store.get_operation("op-1").await.unwrap().unwrap();
    assert_eq!(op.status, OperationStatus::Failed);
    let err = op.error.unwrap();
    assert_eq!(err["code"], "RollingUpgradeInstanceUnhealthyError", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("maxUnhealthyUpgradedInstancePercent 20%"),
        "{err}"
    );
    // 2 unhealthy of 10 after the first batch is 20%, not above the
    // limit; 4 after the second is: it stopped there.
    assert_eq!(applies(&d).len(), 4);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .starts_with("4 upgraded instances of 10 are unhealthy (40%)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn max_surge_replaces_instances_and_deletes_the_old_ones_last() {
    let dir = tempfile::tempdir().unwrap();
    let d = SimDriver::new(Duration::ZERO);
    let store = fleet(
        &dir,
        5,
        &d,
        json!({"maxBatchInstancePercent": 40, "maxSurge": true}),
    )
    .await;
    let o = orchestrator(&store, &d);
    o.start_rolling_upgrade(SET, "op-1", None).await.unwrap();
    o.run_pending().await.unwrap();
    let op = store.get_operation("op-1").await.unwrap().unwrap();
    assert_eq!(op.status, OperationStatus::Succeeded, "{:?}", op.error);
    let live = d.list().await.unwrap();
    assert_eq!(live.len(), 5, "one instance per original");
    assert!(live.iter().all(|s| s.spec.model_version == 2));
    assert!(
        applies(&d).is_empty(),
        "surge creates, never upgrades in place"
    );
    // Each old instance was deleted after a replacement was created.
    let events = d.events();
    for i in 0..5 {
        let name = instance_name("web", &i.to_string());
        let deleted = events
            .iter()
            .position(|e| e.name == name && e.action == "delete")
            .expect("old instance deleted");
        let created_after_start = events
            .iter()
            .enumerate()
            .filter(|(_, e)| e.action == "create" && e.model_version == 2)
            .count();
        assert!(created_after_start >= 5);
        assert!(events[..deleted]
            .iter()
            .any(|e| e.action == "start" && e.model_version == 2));
    }
    let instances = store.child_resources(SET).await.unwrap();
    assert_eq!(instances.len(), 5, "the store lists the replacements only");
}

/// Killed at every store await in turn, the upgrade resumes and ends as
/// an uninterrupted one: each instance applied once, all on model 2.
#[tokio::test(flavor = "multi_thread")]
async fn killed_at_any_point_it_resumes_without_upgrading_twice() {
    let mut interrupted = 0;
    for kill_after in 0..12_usize {
        let dir = tempfile::tempdir().unwrap();
        let d = SimDriver::new(Duration::ZERO);
        let store = fleet(&dir, 6, &d, json!({"maxBatchInstancePercent": 34})).await;
        let base = d.events().len();
        orchestrator(&store, &d)
            .start_rolling_upgrade(SET, "op-1", None)
            .await
            .unwrap();
        let task = tokio::spawn({
            let (store, d) = (store.clone(), d.clone());
            async move { orchestrator(&store, &d).run_pending().await }
        });
        // Kill it once the driver did `kill_after` things (or it ended).
        while d.events().len() < base + kill_after && !task.is_finished() {
            tokio::task::yield_now().await;
        }
        task.abort();
        let _ = task.await;
        let after_kill = store.get_operation("op-1").await.unwrap().unwrap();
        if after_kill.status == OperationStatus::InProgress {
            interrupted += 1;
        }
        // A restarted server with the same name resumes at once.
        orchestrator(&store, &d).run_pending().await.unwrap();
        let op = store.get_operation("op-1").await.unwrap().unwrap();
        assert_eq!(
            op.status,
            OperationStatus::Succeeded,
            "killed after {kill_after}: {:?}",
            op.error
        );
        let a = applies(&d);
        assert_eq!(a.len(), 6, "killed after {kill_after}: {a:?}");
        assert!(
            a.values().all(|v| v == &[2]),
            "killed after {kill_after}: an instance upgraded twice: {a:?}"
        );
        assert_eq!(d.list().await.unwrap().len(), 6);
    }
    assert!(
        interrupted >= 6,
        "only {interrupted} of 12 runs were killed mid-way"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn manual_upgrade_touches_only_the_named_instances_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let d = SimDriver::new(Duration::ZERO);
    let store = fleet(&dir, 4, &d, json!({})).await;
    let o = orchestrator(&store, &d);
    let err = o
        .start_manual_upgrade(SET, "op-x", &["0".into(), "9".into()])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "ResourceNotFound: The instance '9' of the scale set 'web' was not found."
    );
    assert!(store.get_operation("op-x").await.unwrap().is_none());
    let base = d.events().len();
    o.start_manual_upgrade(SET, "op-1", &["2".into(), "0".into(), "2".into()])
        .await
        .unwrap();
    // Killed after the first instance's apply, then resumed.
    let task = tokio::spawn({
        let (store, d) = (store.clone(), d.clone());
        async move { orchestrator(&store, &d).run_pending().await }
    });
    while d.events().len() < base + 1 && !task.is_finished() {
        tokio::task::yield_now().await;
    }
    task.abort();
    let _ = task.await;
    o.run_pending().await.unwrap();
    let op = store.get_operation("op-1").await.unwrap().unwrap();
    assert_eq!(op.status, OperationStatus::Succeeded, "{:?}", op.error);
    assert_eq!(op.state["done"], json!(["0", "2"]));
    let a = applies(&d);
    assert_eq!(
        a.keys().cloned().collect::<Vec<_>>(),
        [instance_name("web", "0"), instance_name("web", "2")]
    );
    assert!(a.values().all(|v| v == &[2]));
    for i in ["1", "3"] {
        let s = d.status(&instance_name("web", i)).await.unwrap().unwrap();
        assert_eq!(s.spec.model_version, 1, "instance {i} untouched");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_rolling_upgrade_stops_after_the_batch_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let d = SimDriver::new(Duration::ZERO);
    let store = fleet(
        &dir,
        10,
        &d,
        json!({"maxBatchInstancePercent": 20, "pauseTimeBetweenBatches": "PT1H"}),
    )
    .await;
    let o = orchestrator(&store, &d);
    o.start_rolling_upgrade(SET, "op-1", None).await.unwrap();
    let task = tokio::spawn({
        let (store, d) = (store.clone(), d.clone());
        async move { orchestrator(&store, &d).run_pending().await }
    });
    // The first batch is done and the hour's pause has begun: cancel.
    while applies(&d).len() < 2 {
        tokio::task::yield_now().await;
    }
    assert!(o.cancel("op-1").await.unwrap());
    task.await.unwrap().unwrap();
    let op = store.get_operation("op-1").await.unwrap().unwrap();
    assert_eq!(op.status, OperationStatus::Canceled);
    assert_eq!(applies(&d).len(), 2, "no batch after the cancel");
    assert!(!o.cancel("op-1").await.unwrap(), "nothing left to cancel");
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_creates_scales_in_and_deletes_the_set() {
    let dir = tempfile::tempdir().unwrap();
    let d = SimDriver::new(Duration::ZERO);
    let store = fleet(&dir, 0, &d, json!({})).await;
    put_set(&store, &scale_set(3, 2, &json!({}))).await;
    let o = orchestrator(&store, &d);
    o.start_reconcile(SET, "op-1", false).await.unwrap();
    o.run_pending().await.unwrap();
    let names = |v: Vec<trustlaunch_control::InstanceStatus>| {
        v.into_iter().map(|s| s.spec.name).collect::<Vec<_>>()
    };
    assert_eq!(names(d.list().await.unwrap()), ["web-0", "web-1", "web-2"]);
    assert_eq!(store.child_resources(SET).await.unwrap().len(), 3);
    // The set's capacity changed as the API changes it: the stored set,
    // with its reserved instance ids, edited.
    let resize = |n: u32| {
        let store = store.clone();
        async move {
            let mut set: ScaleSet =
                serde_json::from_value(store.get_resource(SET).await.unwrap().unwrap().body)
                    .unwrap();
            assert_eq!(set.properties.next_instance_id, 3, "ids 0-2 reserved");
            set.sku.capacity = n;
            put_set(&store, &set).await;
        }
    };
    // Scale in to 1: the highest ids go.
    resize(1).await;
    o.start_reconcile(SET, "op-2", false).await.unwrap();
    o.run_pending().await.unwrap();
    assert_eq!(names(d.list().await.unwrap()), ["web-0"]);
    let op = store.get_operation("op-2").await.unwrap().unwrap();
    assert_eq!(op.state["delete"], json!(["2", "1"]));
    // Scale out again: new ids, never one used before (as in Azure).
    resize(3).await;
    o.start_reconcile(SET, "op-3", false).await.unwrap();
    o.run_pending().await.unwrap();
    assert_eq!(names(d.list().await.unwrap()), ["web-0", "web-3", "web-4"]);
    // Delete the set: instances first, then the set.
    o.start_reconcile(SET, "op-4", true).await.unwrap();
    o.run_pending().await.unwrap();
    assert!(d.list().await.unwrap().is_empty());
    assert!(store.get_resource(SET).await.unwrap().is_none());
    assert!(store.child_resources(SET).await.unwrap().is_empty());
}

/// A long health wait renews the lease: a second server polling for work
/// never takes the operation over while the first is alive, and each
/// instance is upgraded once.
#[tokio::test(flavor = "multi_thread")]
async fn a_long_health_wait_keeps_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    // Boots take 400 ms of real time; the clock runs 500x faster, so a
    // boot lasts ~200 "seconds", over three 60 s lease terms.
    let d = SimDriver::new(Duration::from_millis(400));
    let store = fleet(&dir, 2, &d, json!({})).await;
    let t0 = std::time::Instant::now();
    let now = Arc::new(move || {
        1_000_000 + u64::try_from(t0.elapsed().as_millis() / 2).unwrap_or(u64::MAX)
    }) as Arc<dyn Fn() -> u64 + Send + Sync>;
    let first = orchestrator(&store, &d).with_clock(now.clone());
    first
        .start_manual_upgrade(SET, "op-1", &["0".into(), "1".into()])
        .await
        .unwrap();
    let base = d.events().len();
    let running = tokio::spawn(async move { first.run_pending().await });
    let second = Orchestrator::new(store.clone(), d.clone(), catalogs(), "server-2")
        .with_poll(Duration::from_millis(1))
        .with_clock(now.clone());
    // Once the first server holds it, the second polls for work.
    while store
        .get_operation("op-1")
        .await
        .unwrap()
        .unwrap()
        .lease_owner
        .is_none()
        && !running.is_finished()
    {
        tokio::task::yield_now().await;
    }
    let start = now();
    while !running.is_finished() {
        let t = now();
        let claimed = store
            .claim_operation("server-2", i64::try_from(t).unwrap(), 60)
            .await
            .unwrap();
        assert!(
            claimed.is_none(),
            "taken over {} s into the operation",
            t - start
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    running.await.unwrap().unwrap();
    assert!(now() - start > 120, "the wait outlasted two lease terms");
    let op = store.get_operation("op-1").await.unwrap().unwrap();
    assert_eq!(op.status, OperationStatus::Succeeded, "{:?}", op.error);
    assert_eq!(second.run_pending().await.unwrap(), 0);
    let a = applies(&d);
    assert!(a.values().all(|v| v == &[2]), "{a:?}");
    assert!(d.events().len() > base);
}

/// The attestation service as the orchestrator sees it: verdicts in the
/// store, under each instance's name, timed by the platform. This one
/// appraises every boot of an instance with guest attestation once it is
/// up, failing the boots `fails` says, with the failed check's document
/// shaped as the service stores it.
fn attest_boots(
    store: Store,
    d: SimDriver,
    fails: fn(&trustlaunch_control::InstanceSpec) -> bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen = std::collections::HashSet::new();
        let mut nonce = 0_u64;
        loop {
            for s in d.list().await.unwrap() {
                let (Some(boot), true, Health::Healthy) =
                    (s.boot_started_at, s.spec.guest_attestation, s.health)
                else {
                    continue;
                };
                if !seen.insert((s.spec.name.clone(), boot)) {
                    continue;
                }
                nonce += 1;
                let failed = fails(&s.spec);
                let doc = if failed {
                    json!({"verdict": {"healthy": false, "failed": [{"name": "baseline", "detail":
                        "kernel command line (PCR 8) changed from 'console=ttyS0' to 'console=ttyS0 init=/bin/sh'"}]}})
                } else {
                    json!({"verdict": {"healthy": true, "failed": []}})
                };
                let at = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                store
                    .add_attestation(&trustlaunch_store::NewAttestation {
                        vm_id: s.spec.name.clone(),
                        boot_id: "guest-chosen".into(),
                        nonce: nonce.to_be_bytes().to_vec(),
                        at: i64::try_from(at).unwrap(),
                        healthy: !failed,
                        appraisal: doc,
                        token: None,
                    })
                    .await
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

/// Model 2 of the fixture with the Guest Attestation extension.
fn attested_model(n: u32, rolling: &serde_json::Value) -> ScaleSet {
    use trustlaunch_fleet::image::OsType;
    use trustlaunch_fleet::resources::{Extension, ExtensionProfile};
    let mut set = scale_set(n, 2, rolling);
    set.properties.virtual_machine_profile.extension_profile = Some(ExtensionProfile {
        extensions: vec![Extension::guest_attestation(OsType::Linux)],
    });
    set
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_upgrade_whose_boots_fail_attestation_stops_after_the_first_batch() {
    let dir = tempfile::tempdir().unwrap();
    // The instances boot, and the driver calls them healthy: only the
    // attestation verdict tells.
    let d = SimDriver::new(Duration::ZERO).attesting();
    let rolling = json!({"maxBatchInstancePercent": 20, "maxUnhealthyUpgradedInstancePercent": 10});
    let store = fleet(&dir, 10, &d, rolling.clone()).await;
    put_set(&store, &attested_model(10, &rolling)).await;
    // A healthy verdict from long ago, under every instance's name: not of
    // the boot the upgrade made, so it must not count.
    for i in 0..10 {
        store
            .add_attestation(&trustlaunch_store::NewAttestation {
                vm_id: instance_name("web", &i.to_string()),
                boot_id: "old".into(),
                nonce: vec![0xff, i],
                at: 1,
                healthy: true,
                appraisal: json!({"verdict": {"healthy": true, "failed": []}}),
                token: None,
            })
            .await
            .unwrap();
    }
    let service = attest_boots(store.clone(), d.clone(), |s| s.image == "/images/tiny-2");
    let o = orchestrator(&store, &d);
    o.start_rolling_upgrade(SET, "op-1", Some(scale_set(10, 1, &rolling)))
        .await
        .unwrap();
    o.run_pending().await.unwrap();
    service.abort();
    let op = store.get_operation("op-1").await.unwrap().unwrap();
    assert_eq!(op.status, OperationStatus::Failed, "{:?}", op.error);
    let err = op.error.unwrap();
    let msg = err["message"].as_str().unwrap();
    assert_eq!(err["code"], "RollingUpgradeInstanceUnhealthyError", "{err}");
    assert!(msg.contains("stopped after batch 1"), "{msg}");
    // The error names each failed instance, the check and the component.
    for i in ["0", "1"] {
        assert!(
            msg.contains(&format!(
                "instance {i}: {}: attestation of its boot failed: baseline: kernel command line (PCR 8) changed",
                instance_name("web", i)
            )),
            "{msg}"
        );
    }
    // Only the first batch was touched; the rest stay on the old model.
    assert_eq!(applies(&d).len(), 2, "{:?}", applies(&d));
    for s in d.list().await.unwrap() {
        let first =
            s.spec.name == instance_name("web", "0") || s.spec.name == instance_name("web", "1");
        assert_eq!(
            s.spec.model_version,
            if first { 2 } else { 1 },
            "{}",
            s.spec.name
        );
    }
    // get-latest shows the same.
    let state: trustlaunch_control::orchestrator::RollingUpgradeState =
        serde_json::from_value(op.state).unwrap();
    let latest = state.status();
    assert_eq!(latest.progress.failed_instance_count, 2);
    assert!(latest.error.unwrap().message.contains("baseline"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_upgrade_whose_boots_attest_healthy_completes() {
    let dir = tempfile::tempdir().unwrap();
    let d = SimDriver::new(Duration::ZERO).attesting();
    let rolling = json!({"maxBatchInstancePercent": 50});
    let store = fleet(&dir, 4, &d, rolling.clone()).await;
    put_set(&store, &attested_model(4, &rolling)).await;
    let service = attest_boots(store.clone(), d.clone(), |_| false);
    let o = orchestrator(&store, &d);
    o.start_rolling_upgrade(SET, "op-1", None).await.unwrap();
    o.run_pending().await.unwrap();
    service.abort();
    let op = store.get_operation("op-1").await.unwrap().unwrap();
    assert_eq!(op.status, OperationStatus::Succeeded, "{:?}", op.error);
    // Each upgraded instance was healthy only through a verdict of its
    // new boot: one per instance, recorded after the boot started.
    for s in d.list().await.unwrap() {
        assert_eq!(s.spec.model_version, 2);
        let h = store.history(&s.spec.name, 10).await.unwrap();
        assert_eq!(h.len(), 1, "{}", s.spec.name);
        assert!(h[0].attestation.at >= i64::try_from(s.boot_started_at.unwrap()).unwrap());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_verdict_of_an_earlier_boot_does_not_pass_the_gate() {
    let dir = tempfile::tempdir().unwrap();
    let d = SimDriver::new(Duration::ZERO).attesting();
    let rolling = json!({"maxBatchInstancePercent": 50, "maxUnhealthyUpgradedInstancePercent": 0});
    let store = fleet(&dir, 2, &d, rolling.clone()).await;
    put_set(&store, &attested_model(2, &rolling)).await;
    // Healthy verdicts recorded before any boot the upgrade makes; no
    // attestation service answers afterwards (a guest that never lets its
    // agent answer).
    for i in 0..2 {
        store
            .add_attestation(&trustlaunch_store::NewAttestation {
                vm_id: instance_name("web", &i.to_string()),
                boot_id: "the upgraded boot, says the guest".into(),
                nonce: vec![i],
                at: 1,
                healthy: true,
                appraisal: json!({"verdict": {"healthy": true, "failed": []}}),
                token: None,
            })
            .await
            .unwrap();
    }
    let o = orchestrator(&store, &d).with_clock(Arc::new({
        // Time moves 10 minutes per reading: health gates time out.
        let t = std::sync::atomic::AtomicU64::new(1_000);
        move || t.fetch_add(600, std::sync::atomic::Ordering::Relaxed)
    }));
    o.start_rolling_upgrade(SET, "op-1", None).await.unwrap();
    o.run_pending().await.unwrap();
    let op = store.get_operation("op-1").await.unwrap().unwrap();
    assert_eq!(op.status, OperationStatus::Failed, "{:?}", op.error);
    let msg = op.error.unwrap()["message"].as_str().unwrap().to_owned();
    assert!(
        msg.contains("no attestation of its boot before the health timeout"),
        "{msg}"
    );
}
