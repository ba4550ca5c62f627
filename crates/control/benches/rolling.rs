//! Control-plane cost of a rolling upgrade: a scale set
//! of `--instances` healthy instances on the simulated driver (zero boot
//! time), its model moved from 1 to 2, upgraded by the orchestrator with
//! the store on SQLite (or `--db URL`).
//!
//! ```sh
//! cargo bench -p trustlaunch-control --bench rolling -- --instances 1000 --batch 20
//! cargo bench -p trustlaunch-control --bench rolling -- --instances 1000 --batch 20 --surge
//! ```
//!
//! Per run: a fresh store (a new SQLite file in a temporary directory) and
//! a fresh [`SimDriver`] holding N instances started on model 1 (healthy at
//! once: boot time zero); the set's model moved to 2; then, measured
//! separately, `start_rolling_upgrade` and `run_pending()` to completion.
//! Over each window: wall time and the process's CPU time (utime + stime
//! of every thread, `/proc/self/stat`, 10 ms ticks). The result is checked
//! before anything is printed: the operation Succeeded, the driver holds
//! exactly N instances, all on model 2 and healthy, the store lists N
//! instances, all on model 2, and each was upgraded exactly once (in place:
//! one `apply` each; surge: N creates at model 2 and N deletes of the
//! model-1 instances). A run that fails the check aborts the bench.
//!
//! Options: `--instances N` (1000), `--batch PCT` (maxBatchInstancePercent,
//! 20), `--surge` (maxSurge), `--runs R` (3), `--poll MS` (the
//! orchestrator's health poll, 1), `--db URL` (default: a new SQLite file
//! per run; any other URL, e.g. PostgreSQL, is shared by the runs — each
//! run uses its own scale set id — and must hold no other running
//! operation, since the orchestrator claims whatever is pending).

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use trustlaunch_control::orchestrator::{instance_spec, Catalogs, Orchestrator};
use trustlaunch_control::sim::SimDriver;
use trustlaunch_control::{Driver, Health};
use trustlaunch_fleet::image::{ImageCatalog, ImageDefinition, ImageVersion};
use trustlaunch_fleet::resources::{ScaleSet, ScaleSetVm, SCALE_SET_TYPE, SCALE_SET_VM_TYPE};
use trustlaunch_fleet::sizes::SizeCatalog;
use trustlaunch_store::{NewResource, OperationStatus, Precondition, Store};

#[derive(Clone, Debug)]
struct Args {
    instances: u32,
    batch: u32,
    surge: bool,
    runs: usize,
    poll_ms: u64,
    db: Option<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        instances: 1000,
        batch: 20,
        surge: false,
        runs: 3,
        poll_ms: 1,
        db: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--bench" => {}
            "--instances" => a.instances = v().parse().expect("--instances N"),
            "--batch" => a.batch = v().parse().expect("--batch PCT"),
            "--surge" => a.surge = true,
            "--runs" => a.runs = v().parse().expect("--runs R"),
            "--poll" => a.poll_ms = v().parse().expect("--poll MS"),
            "--db" => a.db = Some(v()),
            "-h" | "--help" => {
                println!(
                    "options: --instances N (1000) --batch PCT (20) --surge --runs R (3) \
                     --poll MS (1) --db URL (default: a new SQLite file per run)"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other:?} (try --help)"),
        }
    }
    assert!(a.instances > 0 && a.runs > 0, "--instances and --runs > 0");
    a
}

/// CPU time (user + system, all threads, not children) of this process,
/// from `/proc/self/stat` fields 14 and 15, in clock ticks.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The command name (field 2) may hold spaces: fields after its ')'.
    let rest = &stat[stat.rfind(')').expect("stat: no ')'") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): utime is field 14, stime field 15.
    let t = |i: usize| -> u64 { f[i].parse().expect("stat: a number") };
    t(11) + t(12)
}

/// USER_HZ: 100 on every Linux architecture we run on.
const TICK_MS: f64 = 10.0;

fn catalogs() -> Arc<Catalogs> {
    let mut images = ImageCatalog::new();
    let def: ImageDefinition = serde_json::from_value(json!({
        "name": "tiny", "osType": "Linux", "hyperVGeneration": "V2",
        "features": [{"name": "SecurityType", "value": "TrustedLaunchSupported"}],
        "identifier": {"publisher": "trustlaunch", "offer": "tiny", "sku": "1"}
    }))
    .expect("image definition");
    images.add_definition("g1", def).expect("definition");
    for (v, source) in [("1.0.0", "/images/tiny-1"), ("2.0.0", "/images/tiny-2")] {
        images
            .add_version(
                "g1",
                "tiny",
                ImageVersion {
                    name: v.into(),
                    source: source.into(),
                    guest_agent: None,
                },
            )
            .expect("version");
    }
    Arc::new(Catalogs {
        sizes: SizeCatalog::built_in(),
        images,
    })
}

fn set_id(name: &str) -> String {
    format!(
        "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/{name}"
    )
}

/// The scale set `name` at model `version`: 1 is Standard on image 1.0.0,
/// 2 is Trusted Launch on image 2.0.0.
fn scale_set(name: &str, capacity: u32, version: u64, rolling: &serde_json::Value) -> ScaleSet {
    let (image, security) = if version == 1 {
        ("1.0.0", json!({"securityType": "Standard"}))
    } else {
        (
            "2.0.0",
            json!({"securityType": "TrustedLaunch",
                   "uefiSettings": {"secureBootEnabled": true, "vTpmEnabled": true}}),
        )
    };
    serde_json::from_value(json!({
        "id": set_id(name), "name": name, "type": SCALE_SET_TYPE, "location": "local",
        "sku": {"name": "Standard_D2s_v3", "capacity": capacity},
        "properties": {
            "orchestrationMode": "Uniform",
            "upgradePolicy": {"mode": "Rolling", "rollingUpgradePolicy": rolling},
            "virtualMachineProfile": {
                "storageProfile": {"imageReference": {"id": format!(
                    "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/galleries/g1/images/tiny/versions/{image}")}},
                "securityProfile": security
            },
            "modelVersion": version
        }
    }))
    .expect("scale set")
}

async fn put_set(store: &Store, set: &ScaleSet) {
    store
        .put_resource(
            &NewResource {
                id: set_id(&set.name),
                kind: SCALE_SET_TYPE.into(),
                resource_group: "rg".into(),
                name: set.name.clone(),
                parent: None,
                body: serde_json::to_value(set).expect("set body"),
                usage: None,
            },
            Precondition::Any,
            1,
        )
        .await
        .expect("put scale set");
}

/// `n` healthy instances on model 1, in the driver and the store; the
/// set's model then moved to 2.
async fn fleet(store: &Store, d: &SimDriver, name: &str, n: u32, rolling: &serde_json::Value) {
    let c = catalogs();
    let v1 = scale_set(name, n, 1, rolling);
    put_set(store, &v1).await;
    let set = set_id(name);
    for i in 0..n {
        let id = i.to_string();
        let spec = instance_spec(&v1, &id, &c).expect("spec");
        d.create(&spec).await.expect("create");
        d.start(&spec.name).await.expect("start");
        let vm: ScaleSetVm = serde_json::from_value(json!({
            "instanceId": id, "name": format!("{name}_{i}"), "latestModelApplied": true,
            "modelVersion": 1, "provisioningState": "Succeeded",
            "powerState": "PowerState/running"
        }))
        .expect("vm");
        store
            .put_resource(
                &NewResource {
                    id: format!("{set}/virtualMachines/{i}"),
                    kind: SCALE_SET_VM_TYPE.into(),
                    resource_group: "rg".into(),
                    name: vm.name.clone(),
                    parent: Some(set.clone()),
                    body: serde_json::to_value(&vm).expect("vm body"),
                    usage: None,
                },
                Precondition::Absent,
                1,
            )
            .await
            .expect("put instance");
    }
    put_set(store, &scale_set(name, n, 2, rolling)).await;
}

/// One run's figures.
#[derive(Clone, Debug, Default)]
struct Run {
    setup_s: f64,
    start_ms: f64,
    start_cpu_ms: f64,
    run_ms: f64,
    run_cpu_ms: f64,
    revision: i64,
    driver_events: usize,
}

impl Run {
    fn per_instance_us(&self, n: u32) -> f64 {
        self.run_cpu_ms * 1000.0 / f64::from(n)
    }
    fn total_per_instance_us(&self, n: u32) -> f64 {
        (self.start_cpu_ms + self.run_cpu_ms) * 1000.0 / f64::from(n)
    }
}

async fn one_run(a: &Args, run: usize) -> Run {
    let n = a.instances;
    let tmp = tempfile::tempdir().expect("tempdir");
    let url =
        a.db.clone()
            .unwrap_or_else(|| format!("sqlite://{}", tmp.path().join("bench.db").display()));
    let store = Store::open(&url).await.expect("open the store");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let name = format!("bench{run}x{:x}", nanos % 0xffff_ffff);
    let set = set_id(&name);
    let rolling = json!({"maxBatchInstancePercent": a.batch, "maxSurge": a.surge});
    let d = SimDriver::new(Duration::ZERO);

    let t0 = Instant::now();
    fleet(&store, &d, &name, n, &rolling).await;
    let setup_s = t0.elapsed().as_secs_f64();
    let events_before = d.events().len();

    let o = Orchestrator::new(store.clone(), d.clone(), catalogs(), "bench-server")
        .with_poll(Duration::from_millis(a.poll_ms));
    let op_id = format!("{name}-op");
    let previous = scale_set(&name, n, 1, &rolling);

    let (c0, t0) = (cpu_ticks(), Instant::now());
    o.start_rolling_upgrade(&set, &op_id, Some(previous))
        .await
        .expect("start_rolling_upgrade");
    let (start_ms, c1) = (t0.elapsed().as_secs_f64() * 1000.0, cpu_ticks());

    let t1 = Instant::now();
    let done = o.run_pending().await.expect("run_pending");
    let (run_ms, c2) = (t1.elapsed().as_secs_f64() * 1000.0, cpu_ticks());

    // Is the result right?
    assert_eq!(done, 1, "run_pending finished {done} operations, not 1");
    let op = store
        .get_operation(&op_id)
        .await
        .expect("get_operation")
        .expect("the operation");
    assert_eq!(
        op.status,
        OperationStatus::Succeeded,
        "operation ended {:?}: {:?}",
        op.status,
        op.error
    );
    let live = d.list().await.expect("list");
    assert_eq!(live.len(), n as usize, "driver instances");
    for s in &live {
        assert_eq!(
            (s.spec.model_version, s.health),
            (2, Health::Healthy),
            "{}",
            s.spec.name
        );
        assert!(s.spec.security.trusted_launch && s.spec.image == "/images/tiny-2");
    }
    let stored = store.child_resources(&set).await.expect("child_resources");
    assert_eq!(stored.len(), n as usize, "store instances");
    for r in stored {
        let vm: ScaleSetVm = serde_json::from_value(r.body).expect("stored instance");
        assert_eq!(vm.model_version, 2, "stored instance {}", vm.instance_id);
    }
    let events = d.events();
    let new = &events[events_before..];
    let count = |action: &str, version: u64| {
        new.iter()
            .filter(|e| e.action == action && e.model_version == version)
            .count()
    };
    if a.surge {
        assert_eq!(count("apply", 2), 0, "surge upgraded in place");
        assert_eq!(count("create", 2), n as usize, "surge creates");
        assert_eq!(count("delete", 1), n as usize, "old instances deleted");
    } else {
        let mut applied: Vec<&str> = new
            .iter()
            .filter(|e| e.action == "apply")
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(applied.len(), n as usize, "applies");
        applied.sort_unstable();
        applied.dedup();
        assert_eq!(applied.len(), n as usize, "an instance applied twice");
        assert_eq!(count("apply", 2), n as usize, "applies to model 2");
    }
    store.close().await;

    Run {
        setup_s,
        start_ms,
        start_cpu_ms: c1.saturating_sub(c0) as f64 * TICK_MS,
        run_ms,
        run_cpu_ms: c2.saturating_sub(c1) as f64 * TICK_MS,
        revision: op.revision,
        driver_events: new.len(),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn main() {
    let a = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let n = a.instances;
    let db =
        a.db.as_deref()
            .map_or("SQLite (new temp file per run)", |u| {
                if u.starts_with("sqlite:") {
                    "SQLite (--db)"
                } else {
                    "PostgreSQL (--db)"
                }
            });
    println!(
        "rolling upgrade: {n} instances, maxBatchInstancePercent {}, maxSurge {}, {db}, \
         SimDriver boot 0 s, {} runs, poll {} ms",
        a.batch, a.surge, a.runs, a.poll_ms
    );
    println!(
        "load average before: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let mut runs = Vec::new();
    for r in 0..a.runs {
        let run = rt.block_on(one_run(&a, r));
        eprintln!(
            "run {}: setup {:.1} s, run_pending {:.0} ms (checked: Succeeded, {n} on model 2)",
            r + 1,
            run.setup_s,
            run.run_ms
        );
        runs.push(run);
    }
    println!();
    println!(
        "| run | run_pending wall, ms | run_pending CPU, ms | CPU per instance, µs | \
         start wall / CPU, ms | start+run CPU per instance, µs | op revision | driver actions |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let row = |label: String, r: &Run| {
        println!(
            "| {label} | {:.0} | {:.0} | {:.0} | {:.0} / {:.0} | {:.0} | {} | {} |",
            r.run_ms,
            r.run_cpu_ms,
            r.per_instance_us(n),
            r.start_ms,
            r.start_cpu_ms,
            r.total_per_instance_us(n),
            r.revision,
            r.driver_events
        );
    };
    for (i, r) in runs.iter().enumerate() {
        row((i + 1).to_string(), r);
    }
    let med = |f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
    let m = Run {
        setup_s: med(|r| r.setup_s),
        start_ms: med(|r| r.start_ms),
        start_cpu_ms: med(|r| r.start_cpu_ms),
        run_ms: med(|r| r.run_ms),
        run_cpu_ms: med(|r| r.run_cpu_ms),
        revision: runs[0].revision,
        driver_events: runs[0].driver_events,
    };
    row("**median**".into(), &m);
    let per = m.per_instance_us(n);
    println!();
    println!(
        "goal < 1 ms CPU per instance upgraded (run_pending): median {per:.0} µs — {}",
        if per < 1000.0 {
            format!("met, {:.1}x under", 1000.0 / per.max(f64::MIN_POSITIVE))
        } else {
            format!("NOT met, {:.1}x over", per / 1000.0)
        }
    );
}
