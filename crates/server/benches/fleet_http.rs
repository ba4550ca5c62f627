//! The control plane's ARM-shaped REST API under load from a second
//! process on loopback, and the memory of a model of `--vms` VMs.
//!
//! ```sh
//! cargo build --release -p trustlaunch-cli        # the server binary it starts
//! cargo bench -p trustlaunch-server --bench fleet_http -- --duration 10
//! # quick try (< 1 min): -- --vms 2000 --duration 2
//! ```
//!
//! 1. starts `target/release/trustlaunch server --no-runtime --driver sim
//!    --sim-boot-ms 0` as a child (SQLite in a temporary directory unless
//!    `--db`; a `Dsv3` quota of 2 vCPUs per VM, so the quota check runs),
//!    publishes a gallery image definition and version, reads its RSS,
//!    then creates scale sets of `--set-size` instances (`Standard_D2s_v3`,
//!    Trusted Launch, Manual upgrade policy) totalling `--vms`
//!    (`--create-parallel` PUTs in flight) and follows every operation
//!    (`GET /operations/{id}`) to `Succeeded`: provisioning time, the
//!    server's CPU, RSS and the SQLite files' size before and after;
//! 2. per row: a warm-up closed loop (`--warmup` s), a closed loop
//!    (`--concurrency` keep-alive connections, `--duration` s) and an open
//!    loop (a fixed rate; latency counted from each request's *scheduled*
//!    send time, so no coordinated omission). Rows: GET a scale set, GET
//!    its instance list's first page (100 instances; the rest by
//!    `nextLink`), GET an operation, PUT of an unchanged scale set model
//!    (200, no operation), PUT of a changed model under the Manual upgrade
//!    policy (request `i` sets an application extension's
//!    `typeHandlerVersion` to `1.i`: 200, the model version is bumped, no
//!    operation), PATCH of the tags (200, no bump). Each row rotates over all the scale sets (the GET
//!    operation row: their creation operations). Only answers with status 200
//!    count as done; the server's and this generator's CPU time per request
//!    is read from `/proc/PID/stat` around each window;
//! 3. prints a table and the memory per VM.
//!
//! `--tls` serves over HTTPS (the platform CA the server makes in its
//! temporary home; the generator trusts it, connections kept alive);
//! without it the server speaks plain HTTP on loopback (`--no-tls`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::Method;
use serde_json::{json, Value};

mod load;

use load::{closed_loop, cpu_secs, loadavg, open_loop, rss, with_cpu, Load, Res, Stats};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[derive(Clone, Debug)]
struct Args {
    duration: f64,
    warmup: f64,
    concurrency: usize,
    /// Open-loop rates per second: GET scale set / operation, GET
    /// instance list, PUT.
    rate: f64,
    list_rate: f64,
    put_rate: f64,
    vms: usize,
    set_size: usize,
    create_parallel: usize,
    bin: PathBuf,
    db: Option<String>,
    tls: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        duration: 10.0,
        warmup: 2.0,
        concurrency: 32,
        rate: 1000.0,
        list_rate: 20.0,
        put_rate: 200.0,
        vms: 100_000,
        set_size: 1000,
        create_parallel: 4,
        bin: repo().join("target/release/trustlaunch"),
        db: None,
        tls: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--bench" => {}
            "--duration" => a.duration = v().parse().expect("--duration"),
            "--warmup" => a.warmup = v().parse().expect("--warmup"),
            "--concurrency" => a.concurrency = v().parse().expect("--concurrency"),
            "--rate" => a.rate = v().parse().expect("--rate"),
            "--list-rate" => a.list_rate = v().parse().expect("--list-rate"),
            "--put-rate" => a.put_rate = v().parse().expect("--put-rate"),
            "--vms" => a.vms = v().parse().expect("--vms"),
            "--set-size" => a.set_size = v().parse().expect("--set-size"),
            "--create-parallel" => a.create_parallel = v().parse().expect("--create-parallel"),
            "--bin" => a.bin = v().into(),
            "--db" => a.db = Some(v()),
            "--tls" => a.tls = true,
            "-h" | "--help" => {
                println!(
                    "options: --duration S (10) --warmup S (2) --concurrency C (32) \
                     --rate R/s (1000: GET set, GET operation) --list-rate R/s (20) \
                     --put-rate R/s (200) --vms N (100000) --set-size N (1000, at most 1000) \
                     --create-parallel N (4) --bin PATH --db URL --tls"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other:?} (try --help)"),
        }
    }
    assert!(
        (1..=1000).contains(&a.set_size),
        "--set-size: 1 to 1000 (a scale set's maximum capacity)"
    );
    a.vms = a.vms.max(1);
    a
}

// ------------------------------------------------------------ load loops

/// One request.
#[derive(Clone)]
struct Req {
    method: Method,
    url: String,
    body: Option<Bytes>,
}

/// Request `i` of a measurement.
type MakeReq = Arc<dyn Fn(usize) -> Req + Send + Sync>;

/// The requests `reqs`, rotated over.
fn rotate(reqs: Vec<Req>) -> MakeReq {
    Arc::new(move |i| reqs[i % reqs.len()].clone())
}

/// Where requests go.
#[derive(Clone)]
struct Target {
    client: reqwest::Client,
    token: Arc<str>,
    make: MakeReq,
    /// Requests sent, answered or not.
    sent: Arc<AtomicUsize>,
}

/// The platform CA the server serves HTTPS under (`--tls`), once known.
static CA: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// A keep-alive client (connections idle less long than the server keeps
/// them), trusting the server's CA.
fn client() -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(120));
    if let Some(ca) = CA.get() {
        let pem = std::fs::read(ca).unwrap_or_else(|e| panic!("{}: {e}", ca.display()));
        b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA PEM"));
    }
    b.build().expect("http client")
}

impl Load for Target {
    async fn send(&self, i: usize) -> Res<(u16, Bytes)> {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let q = (self.make)(i);
        let mut r = self
            .client
            .request(q.method, &q.url)
            .bearer_auth(&*self.token);
        if let Some(b) = q.body {
            r = r.header("content-type", "application/json").body(b);
        }
        let resp = r.send().await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let b = resp.bytes().await.map_err(|e| e.to_string())?;
        Ok((status, b))
    }
}

// ------------------------------------------------------------ the server

/// The server as a child process.
struct Server {
    child: Child,
    url: String,
    token: Arc<str>,
    dir: tempfile::TempDir,
    /// The SQLite database file, when the database is SQLite.
    sqlite: Option<PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    /// Bytes of the SQLite database with its `-wal` and `-shm` files.
    fn db_bytes(&self) -> Option<u64> {
        let db = self.sqlite.as_ref()?;
        let size = |suffix: &str| {
            let mut p = db.clone().into_os_string();
            p.push(suffix);
            std::fs::metadata(p).map_or(0, |m| m.len())
        };
        Some(size("") + size("-wal") + size("-shm"))
    }
}

async fn start_server(a: &Args) -> Res<Server> {
    if !a.bin.exists() {
        return Err(format!(
            "{} missing: run `cargo build --release -p trustlaunch-cli` first (or --bin)",
            a.bin.display()
        ));
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let sqlite = a.db.is_none().then(|| dir.path().join("s.db"));
    let db = a.db.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}",
            sqlite.as_deref().unwrap_or(dir.path()).display()
        )
    });
    let token_file = dir.path().join("admin.token");
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let child = Command::new(&a.bin)
        .args([
            "server",
            "--no-runtime",
            "--driver",
            "sim",
            "--sim-boot-ms",
            "0",
        ])
        .args(["--listen", "127.0.0.1:0", "--db", &db, "--vtpm-ca"])
        .arg(repo().join("crates/attestation/tests/data/evidence/vtpm-ca.crt"))
        .arg("--admin-token-file")
        .arg(&token_file)
        .arg("--home")
        .arg(dir.path().join("home"))
        // Quotas apply: room for exactly --vms Standard_D2s_v3 instances.
        .arg("--quota")
        .arg(format!("Dsv3={}", a.vms.saturating_mul(2)))
        .args((!a.tls).then_some("--no-tls"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("{}: {e}", a.bin.display()))?;
    let mut s = Server {
        child,
        url: String::new(),
        token: Arc::from(""),
        dir,
        sqlite,
    };
    for _ in 0..400 {
        if let Ok(Some(st)) = s.child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!("server exited ({st}): {log}"));
        }
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let url = log.lines().find_map(|l| {
            l.strip_prefix("trustlaunch server: listening on ")
                .map(|u| u.trim().to_owned())
        });
        let token = std::fs::read_to_string(&token_file).unwrap_or_default();
        if let (Some(url), false) = (url, token.trim().is_empty()) {
            if a.tls {
                let _ = CA.set(s.dir.path().join("home/tls/ca.crt"));
            }
            s.url = url;
            s.token = Arc::from(token.trim());
            return Ok(s);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "server did not come up in 20 s (a --db that is not empty has no new admin token); log: {}",
        s.dir.path().join("server.log").display()
    ))
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn call(
    c: &reqwest::Client,
    s: &Server,
    m: Method,
    path: &str,
    body: Option<&Value>,
) -> Res<Reply> {
    let mut r = c
        .request(m, format!("{}{path}", s.url))
        .bearer_auth(&*s.token);
    if let Some(b) = body {
        r = r.json(b);
    }
    let resp = r.send().await.map_err(|e| format!("{path}: {e}"))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let b = resp.bytes().await.map_err(|e| format!("{path}: {e}"))?;
    Ok(Reply {
        status,
        headers,
        body: serde_json::from_slice(&b).unwrap_or(Value::Null),
    })
}

async fn expect(
    c: &reqwest::Client,
    s: &Server,
    m: Method,
    path: &str,
    body: Option<&Value>,
    want: u16,
) -> Res<Reply> {
    let r = call(c, s, m.clone(), path, body).await?;
    if r.status != want {
        return Err(format!(
            "{m} {path}: {} (wanted {want}): {}",
            r.status, r.body
        ));
    }
    Ok(r)
}

// ------------------------------------------------------------ the model

/// The provider path of this run's resource group (a subscription of its
/// own, so that runs can share a PostgreSQL database).
fn provider(sub: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.Compute")
}

fn set_path(sub: &str, k: usize) -> String {
    format!("{}/virtualMachineScaleSets/vmss-{k:05}", provider(sub))
}

/// A scale set's body; `ext`: an application extension of that
/// `typeHandlerVersion` in the model.
fn set_body(sub: &str, capacity: usize, ext: Option<&str>) -> Value {
    let mut v = json!({
        "location": "local",
        "sku": {"name": "Standard_D2s_v3", "capacity": capacity},
        "properties": {
            "orchestrationMode": "Uniform",
            "upgradePolicy": {"mode": "Manual"},
            "virtualMachineProfile": {
                "storageProfile": {"imageReference": {"id": format!(
                    "{}/galleries/g1/images/tiny/versions/1.0.0", provider(sub))}},
                "securityProfile": {"securityType": "TrustedLaunch",
                    "uefiSettings": {"secureBootEnabled": true, "vTpmEnabled": true}}
            }
        }
    });
    if let Some(version) = ext {
        v["properties"]["virtualMachineProfile"]["extensionProfile"] = json!({"extensions": [
            {"name": "app", "properties": {"publisher": "Contoso.Bench", "type": "App",
                "typeHandlerVersion": version}}]});
    }
    v
}

async fn publish_image(c: &reqwest::Client, s: &Server, sub: &str) -> Res<()> {
    let img = format!("{}/galleries/g1/images/tiny", provider(sub));
    let def = json!({"location": "local", "properties": {
        "osType": "Linux", "hyperVGeneration": "V2",
        "features": [{"name": "SecurityType", "value": "TrustedLaunchSupported"}],
        "identifier": {"publisher": "trustlaunch", "offer": "tiny", "sku": "1"}}});
    expect(c, s, Method::PUT, &img, Some(&def), 200).await?;
    let body = json!({"properties": {"source": "/images/tiny-1.0.0"}});
    let version = format!("{img}/versions/1.0.0");
    expect(c, s, Method::PUT, &version, Some(&body), 200).await?;
    Ok(())
}

/// The scale sets' capacities: `--set-size` each, the last one the rest.
fn capacities(a: &Args) -> Vec<usize> {
    (0..a.vms.div_ceil(a.set_size))
        .map(|k| a.set_size.min(a.vms - k * a.set_size))
        .collect()
}

/// Creates the scale sets (`--create-parallel` PUTs in flight), then
/// follows every operation to its end; returns the operation URLs.
async fn provision(a: &Args, s: &Arc<Server>, sub: &str, caps: &[usize]) -> Res<Vec<String>> {
    let next = Arc::new(AtomicUsize::new(0));
    let caps = Arc::new(caps.to_vec());
    let ops: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let mut tasks: Vec<tokio::task::JoinHandle<Res<()>>> = Vec::new();
    for _ in 0..a.create_parallel.max(1) {
        let (next, caps, ops, s, sub) = (
            next.clone(),
            caps.clone(),
            ops.clone(),
            s.clone(),
            sub.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            let c = client();
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&cap) = caps.get(k) else {
                    return Ok(());
                };
                let body = set_body(&sub, cap, None);
                let r = expect(&c, &s, Method::PUT, &set_path(&sub, k), Some(&body), 201).await?;
                let op = r
                    .headers
                    .get("azure-asyncoperation")
                    .and_then(|v| v.to_str().ok())
                    .ok_or("201 without Azure-AsyncOperation")?
                    .to_owned();
                ops.lock().expect("ops").push((k, op));
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let mut ops = std::mem::take(&mut *ops.lock().expect("ops"));
    ops.sort();
    let urls: Vec<String> = ops.iter().map(|(_, u)| u.clone()).collect();
    eprintln!(
        "setup: {} scale sets PUT (201), following their operations",
        urls.len()
    );
    // Poll the oldest unfinished operation (they run one after another).
    let c = client();
    let mut last_report = Instant::now();
    for (i, u) in urls.iter().enumerate() {
        loop {
            let r = expect(&c, s, Method::GET, u, None, 200).await?;
            match r.body["status"].as_str() {
                Some("InProgress") => {}
                Some("Succeeded") => break,
                _ => return Err(format!("operation {u} did not succeed: {}", r.body)),
            }
            if last_report.elapsed() > Duration::from_secs(10) {
                eprintln!("setup: {i} of {} operations succeeded", urls.len());
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(urls)
}

/// The sum of the scale sets' model versions.
async fn model_versions(s: &Server, sub: &str, n: usize) -> Res<u64> {
    let c = client();
    let mut sum = 0;
    for k in 0..n {
        let r = expect(&c, s, Method::GET, &set_path(sub, k), None, 200).await?;
        sum += r.body["properties"]["modelVersion"].as_u64().unwrap_or(0);
    }
    Ok(sum)
}

// ------------------------------------------------------------ the run

struct Row {
    what: String,
    closed: Stats,
    open: Stats,
    rate: f64,
    /// Requests sent, warm-up included (some finish after a closed
    /// loop's window and are not counted in its figures).
    sent: usize,
    note: String,
}

async fn measure(a: &Args, s: &Server, what: &str, make: MakeReq, rate: f64) -> Row {
    let t = Target {
        client: client(),
        token: s.token.clone(),
        make,
        sent: Arc::default(),
    };
    let pid = s.pid();
    closed_loop(&t, a.concurrency, a.warmup).await;
    let closed = with_cpu(pid, false, closed_loop(&t, a.concurrency, a.duration)).await;
    eprintln!("{what}: closed c={}: {}", a.concurrency, closed.summary());
    let open = with_cpu(pid, false, open_loop(&t, rate, a.duration)).await;
    eprintln!("{what}: open {rate}/s: {}", open.summary());
    Row {
        what: what.to_owned(),
        closed,
        open,
        rate,
        sent: t.sent.load(Ordering::Relaxed),
        note: String::new(),
    }
}

async fn run(a: Args) -> Res<()> {
    eprintln!("args: {a:?}");
    let load_before = loadavg();
    let s = Arc::new(start_server(&a).await?);
    let pid = s.pid();
    let sub = format!("bench-{}", std::process::id());
    let c = client();
    publish_image(&c, &s, &sub).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss0, _) = rss(pid);
    let db0 = s.db_bytes();
    eprintln!(
        "setup: server pid {pid} at {}, image published, RSS {rss0} kB",
        s.url
    );

    // 1. The model.
    let caps = capacities(&a);
    let (cpu0, t0) = (cpu_secs(pid, false), Instant::now());
    let ops = provision(&a, &s, &sub, &caps).await?;
    let (prov_secs, prov_cpu) = (t0.elapsed().as_secs_f64(), cpu_secs(pid, false) - cpu0);
    let first = expect(
        &c,
        &s,
        Method::GET,
        &format!("{}/virtualMachines", set_path(&sub, 0)),
        None,
        200,
    )
    .await?;
    // Every page, following nextLink.
    let mut listed = first.body["value"].as_array().map_or(0, Vec::len);
    let mut next = first.body["nextLink"].as_str().map(str::to_owned);
    while let Some(link) = next {
        let path = link.strip_prefix(&s.url).unwrap_or(&link).to_owned();
        let page = expect(&c, &s, Method::GET, &path, None, 200).await?;
        listed += page.body["value"].as_array().map_or(0, Vec::len);
        next = page.body["nextLink"].as_str().map(str::to_owned);
    }
    if listed != caps[0] {
        return Err(format!(
            "scale set 0 lists {listed} instances, not {}",
            caps[0]
        ));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss1, hwm1) = rss(pid);
    let db1 = s.db_bytes();
    let idle0 = cpu_secs(pid, false);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = (cpu_secs(pid, false) - idle0) / 3.0;
    eprintln!(
        "setup: {} VMs in {} scale sets provisioned in {prov_secs:.1} s (server CPU {prov_cpu:.1} s); \
         RSS {rss1} kB (HWM {hwm1} kB); idle server CPU {:.1} ms/s",
        a.vms,
        caps.len(),
        idle * 1e3
    );

    // 2. GET load.
    let n = caps.len();
    let get = |path: String| Req {
        method: Method::GET,
        url: format!("{}{path}", s.url),
        body: None,
    };
    let mut rows = Vec::new();
    let reqs = (0..n).map(|k| get(set_path(&sub, k))).collect();
    rows.push(measure(&a, &s, "GET scale set", rotate(reqs), a.rate).await);
    let reqs = (0..n)
        .map(|k| get(format!("{}/virtualMachines", set_path(&sub, k))))
        .collect();
    let what = format!(
        "GET list-instances (first page: {} of {} instances)",
        caps[0].min(100),
        caps[0]
    );
    rows.push(measure(&a, &s, &what, rotate(reqs), a.list_rate).await);
    let reqs = ops.iter().map(|u| get(u.clone())).collect();
    rows.push(measure(&a, &s, "GET operation", rotate(reqs), a.rate).await);

    // 3. PUT load.
    let put = {
        let (base, sub) = (s.url.clone(), sub.clone());
        move |k: usize, body: Vec<u8>| Req {
            method: Method::PUT,
            url: format!("{base}{}", set_path(&sub, k)),
            body: Some(Bytes::from(body)),
        }
    };
    let reqs = (0..n)
        .map(|k| put(k, set_body(&sub, caps[k], None).to_string().into_bytes()))
        .collect();
    let mv0 = model_versions(&s, &sub, n).await?;
    let what = "PUT scale set, unchanged model";
    let mut row = measure(&a, &s, what, rotate(reqs), a.put_rate).await;
    let mv1 = model_versions(&s, &sub, n).await?;
    row.note = format!(
        "model versions bumped: {} by {} PUTs sent, warm-up included",
        mv1 - mv0,
        row.sent
    );
    rows.push(row);
    // Request i sets an extension's typeHandlerVersion to 1.i: every PUT
    // changes the model, which the Manual policy leaves to the instances'
    // owners (200, the model version bumped, no operation).
    let templates: Vec<String> = (0..n)
        .map(|k| set_body(&sub, caps[k], Some("@V@")).to_string())
        .collect();
    let make: MakeReq = Arc::new(move |i| {
        let k = i % n;
        put(
            k,
            templates[k].replace("@V@", &format!("1.{i}")).into_bytes(),
        )
    });
    let what = "PUT scale set, model changed (Manual policy)";
    let mut row = measure(&a, &s, what, make, a.put_rate).await;
    let mv2 = model_versions(&s, &sub, n).await?;
    row.note = format!(
        "model versions bumped: {} by {} PUTs sent, warm-up included \
         (fewer bumps than PUTs only when two PUTs of one set overlap: both bump \
         from the same version, the last write wins; no If-Match)",
        mv2 - mv1,
        row.sent
    );
    rows.push(row);
    // PATCH: a merge patch of the tags (not part of the model: 200, no
    // bump, no operation), merged onto the stored set and validated and
    // written as a PUT of the result would be.
    let make: MakeReq = Arc::new({
        let (base, sub) = (s.url.clone(), sub.clone());
        move |i| {
            let k = i % n;
            Req {
                method: Method::PATCH,
                url: format!("{base}{}", set_path(&sub, k)),
                body: Some(Bytes::from(
                    json!({"tags": {"patched": i.to_string()}}).to_string(),
                )),
            }
        }
    });
    let mv3 = model_versions(&s, &sub, n).await?;
    let what = "PATCH scale set, tags";
    let mut row = measure(&a, &s, what, make, a.put_rate).await;
    let mv4 = model_versions(&s, &sub, n).await?;
    row.note = format!(
        "model versions bumped: {} by {} PATCHes sent (tags are not the model)",
        mv4 - mv3,
        row.sent
    );
    rows.push(row);
    let (rss2, hwm2) = rss(pid);
    let load_after = loadavg();

    // 4. The table.
    println!();
    println!(
        "{} VMs in {} scale sets; {} s per measurement, closed loop c={}; \
         load average before {load_before}, after {load_after}",
        a.vms, n, a.duration, a.concurrency
    );
    println!();
    println!("| request | loop | done/s | p50 / p99 / max, ms | server CPU µs/req | load generator CPU µs/req | answer, B | errors |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in &rows {
        for (lp, st) in [
            (format!("closed, c={}", a.concurrency), &r.closed),
            (format!("open, {}/s", r.rate), &r.open),
        ] {
            let (cs, cg) = st.cpu_us();
            println!(
                "| {} | {lp} | {:.0} | {:.2} / {:.2} / {:.2} | {cs:.0} | {cg:.0} | {:.0} | {} |",
                r.what,
                st.per_sec(),
                st.pct(50.0) * 1e3,
                st.pct(99.0) * 1e3,
                st.max() * 1e3,
                st.bytes as f64 / st.ok.max(1) as f64,
                st.errors
            );
        }
    }
    for r in rows.iter().filter(|r| !r.note.is_empty()) {
        println!("\n{}: {}", r.what, r.note);
    }
    for r in &rows {
        for st in [&r.closed, &r.open] {
            if let Some(e) = &st.first_error {
                println!("\n{}: first error: {e}", r.what);
            }
        }
    }
    let per_vm = (rss1 as f64 - rss0 as f64) / a.vms as f64;
    println!();
    println!(
        "provisioning: {} VMs in {n} scale sets ({} PUTs in flight, operations run one after another) \
         in {prov_secs:.1} s = {:.0} VMs/s; server CPU {prov_cpu:.1} s = {:.0} µs per VM; idle server CPU {:.1} ms/s (10 ms ticks over 3 s)",
        a.vms,
        a.create_parallel,
        a.vms as f64 / prov_secs,
        prov_cpu / a.vms as f64 * 1e6,
        idle * 1e3
    );
    println!(
        "memory: server RSS {rss0} kB with the image published -> {rss1} kB (HWM {hwm1} kB) with {} VMs \
         = {per_vm:.2} kB per VM ({:.0} MB per 100,000 VMs); after the load RSS {rss2} kB (HWM {hwm2} kB)",
        a.vms,
        per_vm * 100_000.0 / 1024.0
    );
    if let (Some(d0), Some(d1)) = (db0, db1) {
        println!(
            "SQLite (s.db + -wal + -shm): {d0} B -> {d1} B = {:.2} kB per VM",
            (d1 as f64 - d0 as f64) / a.vms as f64 / 1024.0
        );
    }
    Ok(())
}

fn main() {
    let a = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Err(e) = rt.block_on(run(a)) {
        eprintln!("fleet_http: FAILED: {e}");
        std::process::exit(1);
    }
}
