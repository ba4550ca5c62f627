//! HTTP load generator for the attestation service, side by side with
//! Keylime's verifier.
//!
//! One command runs the whole comparison:
//!
//! ```sh
//! cargo build --release -p trustlaunch-cli        # the server binary it starts
//! cargo bench -p trustlaunch-server --bench http -- --duration 10
//! ```
//!
//! 1. starts `target/release/trustlaunch server --no-runtime` as a child on a
//!    free loopback port (SQLite in a temporary directory unless `--db`),
//!    reads its RSS, registers and enrolls `--vms` VMs over HTTP (half with
//!    the `shim` boot, half with `tiny-sb` boot 1: each boot replayed into
//!    a real swtpm answered by the agent's code, `trustlaunch_agent::
//!    replayed`; each VM id registered with that guest's EK, the case's key
//!    template and the boot's components as its predicted baseline, then
//!    enrolled through the service's own challenge and credential), appraises
//!    each once, reads the RSS again;
//! 2. per case: closed loop (`--concurrency` connections, `--duration` s) and
//!    open loop (`--rate`/s, latency from each request's *scheduled* send
//!    time, so no coordinated omission) against `POST /v1/appraisals`,
//!    rotating over that case's enrolled VMs (the server's per-VM cache
//!    keeps an entry 5 s, so with thousands of VMs most requests reload
//!    the VM from the store); plus a closed loop over only `--hot` VMs per
//!    case (warm cache). The server's and this generator's CPU time per
//!    request is read from `/proc/PID/stat` around each window;
//! 3. unless `KEYLIME=0`: `bench/keylime/setup.sh` (policy `example` for
//!    `shim`, `accept-all` for `tiny-sb`), the same two measurements against
//!    `POST /v2.6/verify/evidence` over HTTPS (`--keylime-concurrency`,
//!    `--keylime-rate`), `bench/keylime/stop.sh`;
//! 4. prints a table with the ratios.
//!
//! `--tls` serves our side over HTTPS (the platform CA the server makes in
//! its temporary directory; the generator trusts it and keeps connections
//! alive, so the open loop at `--rate` measures appraisal latency with the
//! handshakes of the connections it opens); add `--handshake-each` to open
//! a new connection, and so make a full TLS handshake, for every request.
//! Without `--tls` the server speaks plain HTTP on loopback (`--no-tls`).
//!
//! A single arbitrary target instead: `-- --url URL --body FILE [--header 'K: V']...
//! [--cacert PEM]` runs the closed and open loop against it only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};
use trustlaunch_agent::replayed::ReplayedGuest;
use trustlaunch_attestation::KeyDatabases;
use trustlaunch_secureboot::varstore::VarStore;
use trustlaunch_server::model::{Template, VmRegistration};
use trustlaunch_tpm::ca::{CaConfig, CaKeyAlgorithm, CaSigningKey, VtpmCa};
use trustlaunch_tpm::ekcert::UnixTime;

mod load;

use load::{closed_loop, open_loop, rss, with_cpu, Load, Res, Stats};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn evidence_dir() -> PathBuf {
    repo().join("crates/attestation/tests/data/evidence")
}

#[derive(Clone, Debug)]
struct Args {
    duration: f64,
    warmup: f64,
    concurrency: usize,
    rate: f64,
    keylime_concurrency: usize,
    keylime_rate: f64,
    vms: usize,
    hot: usize,
    bin: PathBuf,
    db: Option<String>,
    keylime: bool,
    url: Option<String>,
    body: Option<PathBuf>,
    headers: Vec<(String, String)>,
    cacert: Option<PathBuf>,
    tls: bool,
    handshake_each: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        duration: 10.0,
        warmup: 2.0,
        concurrency: 32,
        rate: 1000.0,
        keylime_concurrency: 4,
        keylime_rate: 20.0,
        vms: 10_000,
        hot: 100,
        bin: repo().join("target/release/trustlaunch"),
        db: None,
        keylime: std::env::var("KEYLIME").map_or(true, |v| v != "0"),
        url: None,
        body: None,
        headers: Vec::new(),
        cacert: None,
        tls: false,
        handshake_each: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || {
            it.next()
                .unwrap_or_else(|| panic!("{k} needs a value"))
                .clone()
        };
        match k.as_str() {
            "--bench" => {}
            "--duration" => a.duration = v().parse().expect("--duration"),
            "--warmup" => a.warmup = v().parse().expect("--warmup"),
            "--concurrency" => a.concurrency = v().parse().expect("--concurrency"),
            "--rate" => a.rate = v().parse().expect("--rate"),
            "--keylime-concurrency" => {
                a.keylime_concurrency = v().parse().expect("--keylime-concurrency")
            }
            "--keylime-rate" => a.keylime_rate = v().parse().expect("--keylime-rate"),
            "--vms" => a.vms = v().parse().expect("--vms"),
            "--hot" => a.hot = v().parse().expect("--hot"),
            "--bin" => a.bin = v().into(),
            "--db" => a.db = Some(v()),
            "--no-keylime" => a.keylime = false,
            "--url" => a.url = Some(v()),
            "--body" => a.body = Some(v().into()),
            "--cacert" => a.cacert = Some(v().into()),
            "--tls" => a.tls = true,
            "--handshake-each" => a.handshake_each = true,
            "--header" => {
                let h = v();
                let (n, val) = h.split_once(':').expect("--header 'Name: value'");
                a.headers.push((n.trim().into(), val.trim().into()));
            }
            "-h" | "--help" => {
                println!(
                    "options: --duration S --warmup S --concurrency C --rate R/s \
                     --keylime-concurrency C --keylime-rate R/s --vms N (0: no memory figure, \
                     2 VMs) --hot N (also a closed loop over only N VMs per case; 0: not) --bin PATH --db URL --no-keylime (or KEYLIME=0) \
                     --tls [--handshake-each] \
                     | --url URL --body FILE [--header 'K: V']... [--cacert PEM] [--handshake-each]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other:?} (try --help)"),
        }
    }
    a
}

/// Where requests go.
#[derive(Clone)]
struct Target {
    client: reqwest::Client,
    url: String,
    headers: Vec<(String, String)>,
    /// Rotated over, one per request.
    bodies: Arc<Vec<Bytes>>,
}

/// A client trusting `cacert` besides the built-in roots; keep-alive
/// (connections idle less long than the server keeps them), or a new
/// connection per request with `handshake_each`.
fn client(cacert: Option<&Path>, handshake_each: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(if handshake_each { 0 } else { usize::MAX })
        .pool_idle_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60));
    if let Some(p) = cacert {
        let pem = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA PEM"));
    }
    b.build().expect("http client")
}

impl Load for Target {
    async fn send(&self, i: usize) -> Res<(u16, Bytes)> {
        let mut r = self
            .client
            .post(&self.url)
            .header("content-type", "application/json");
        for (k, v) in &self.headers {
            r = r.header(k, v);
        }
        let body = self.bodies[i % self.bodies.len()].clone();
        let resp = r.body(body).send().await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let b = resp.bytes().await.map_err(|e| e.to_string())?;
        Ok((status, b))
    }
}

/// A recorded boot, and a guest replaying it.
#[derive(Clone)]
struct Case {
    name: &'static str,
    attestation: PathBuf,
    /// The guest's evidence for [`BENCH_NONCE`] (the stateless load).
    evidence: Value,
    nonce: String,
    registration: VmRegistration,
    guest: Arc<Mutex<ReplayedGuest>>,
}

/// The nonce of the stateless load's evidence (the caller's choice there).
const BENCH_NONCE: [u8; 32] = [0x5b; 32];

/// The vTPM CA of the replayed guests, and its certificate file.
fn guest_ca() -> &'static (VtpmCa, tempfile::TempDir) {
    static CA: std::sync::OnceLock<(VtpmCa, tempfile::TempDir)> = std::sync::OnceLock::new();
    CA.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let ca = VtpmCa::create(
            CaSigningKey::generate(CaKeyAlgorithm::P256, &mut rand_core::OsRng),
            &CaConfig {
                common_name: "bench vTPM CA".into(),
                organization: None,
                not_before: UnixTime::from_secs(now - 3600),
                not_after: None,
                path_len_constraint: Some(0),
            },
            &mut rand_core::OsRng,
        )
        .expect("vTPM CA");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.crt"), ca.cert_pem()).expect("ca.crt");
        (ca, dir)
    })
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn case(name: &'static str, dir: &str, file: &str) -> Case {
    let d = evidence_dir().join(dir);
    let a = read_json(&d.join(file));
    let spec = read_json(&d.join("spec.json"));
    let vars = VarStore::parse(&std::fs::read(d.join("vars-created.fd")).expect("vars"))
        .expect("varstore");
    let sb = spec["securityProfile"]["uefiSettings"]["secureBootEnabled"] == true;
    let recorded: trustlaunch_protocol::Evidence =
        serde_json::from_value(a["evidence"].clone()).expect("recorded evidence");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut guest = ReplayedGuest::start(
        &recorded.event_log.0,
        recorded.secure_boot,
        &guest_ca().0,
        now,
        &mut rand_core::OsRng,
    )
    .expect("replayed guest (swtpm installed?)");
    let evidence = serde_json::to_value(guest.evidence(&BENCH_NONCE).expect("evidence"))
        .expect("evidence JSON");
    Case {
        name,
        attestation: d.join(file),
        nonce: trustlaunch_eventlog::hex::encode(&BENCH_NONCE),
        evidence,
        registration: VmRegistration {
            trusted_launch: true,
            trusted_launch_supported: true,
            secure_boot_enabled: sb,
            v_tpm_enabled: true,
            ek_public: Some(trustlaunch_eventlog::hex::encode(guest.ek_public())),
            template: if sb {
                Template::from_dbs(&KeyDatabases::from_store(&vars))
            } else {
                Template::default()
            },
            predicted_baseline: None,
            spec: json!({}),
            host: "bench".into(),
            managed_by: Default::default(),
        },
        guest: Arc::new(Mutex::new(guest)),
    }
}

/// Our server as a child process.
struct Server {
    child: Child,
    url: String,
    token: String,
    /// The platform CA it serves HTTPS under (`--tls`).
    ca: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let db =
        a.db.clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let token_file = dir.path().join("admin.token");
    let log = std::fs::File::create(dir.path().join("server.log")).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(&a.bin);
    cmd.args(["server", "--no-runtime", "--listen"])
        .arg(format!("127.0.0.1:{port}"));
    // The master key (it seals the signing keys, and with TLS the
    // platform CA's) and TLS in the temporary directory.
    cmd.arg("--master-key").arg(dir.path().join("master.key"));
    if !a.tls {
        cmd.arg("--no-tls");
    }
    let child = cmd
        .arg("--db")
        .arg(&db)
        .arg("--vtpm-ca")
        .arg(evidence_dir().join("vtpm-ca.crt"))
        .arg("--vtpm-ca")
        .arg(guest_ca().1.path().join("ca.crt"))
        .arg("--admin-token-file")
        .arg(&token_file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("{}: {e}", a.bin.display()))?;
    let ca = dir.path().join("tls/ca.crt");
    let mut s = Server {
        child,
        url: format!(
            "{}://127.0.0.1:{port}",
            if a.tls { "https" } else { "http" }
        ),
        token: String::new(),
        ca: a.tls.then(|| ca.clone()),
        _dir: dir,
    };
    let mut c = None;
    for _ in 0..200 {
        if let Ok(Some(st)) = s.child.try_wait() {
            let log = std::fs::read_to_string(s._dir.path().join("server.log")).unwrap_or_default();
            return Err(format!("server exited ({st}): {log}"));
        }
        // With TLS, the CA exists once the server made it.
        if c.is_none() && (!a.tls || ca.exists()) {
            c = Some(client(s.ca.as_deref(), false));
        }
        let up = match &c {
            Some(c) => c
                .get(format!("{}/healthz", s.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success()),
            None => false,
        };
        if up {
            if let Ok(t) = std::fs::read_to_string(&token_file) {
                if !t.trim().is_empty() {
                    s.token = t.trim().to_owned();
                    return Ok(s);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("server did not come up in 10 s (a --db that is not empty has no new admin token)".into())
}

async fn call(
    c: &reqwest::Client,
    s: &Server,
    m: reqwest::Method,
    path: &str,
    body: &Value,
) -> Res<(u16, Value)> {
    let r = c
        .request(m, format!("{}{path}", s.url))
        .bearer_auth(&s.token)
        .json(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let st = r.status().as_u16();
    let b = r.bytes().await.map_err(|e| e.to_string())?;
    Ok((st, serde_json::from_slice(&b).unwrap_or(Value::Null)))
}

/// The guest's boot components, as the VMs' predicted baseline (read
/// with a stateless appraisal of a probe VM, which records nothing).
async fn predicted(cl: &reqwest::Client, s: &Server, c: &Case) -> Res<Value> {
    let probe = format!("probe-{}", c.name);
    let reg = serde_json::to_value(&c.registration).map_err(|e| e.to_string())?;
    let (st, b) = call(
        cl,
        s,
        reqwest::Method::PUT,
        &format!("/v1/vms/{probe}"),
        &reg,
    )
    .await?;
    if st != 200 {
        return Err(format!("PUT {probe}: {st} {b}"));
    }
    let body = json!({"vmId": probe, "nonce": c.nonce, "evidence": c.evidence});
    let (st, b) = call(cl, s, reqwest::Method::POST, "/v1/appraisals", &body).await?;
    if st != 200 {
        return Err(format!("probe appraisal: {st} {b}"));
    }
    Ok(json!({"source": {"kind": "predicted", "image": c.name}, "measurements": b["measurements"]}))
}

/// Registers and enrolls `vm` through the service's challenge (the
/// guest's evidence for its nonce, the credential activated by the
/// guest's TPM), then appraises it once statelessly (warming its cache
/// entry); the appraisal must be healthy.
async fn enroll(cl: &reqwest::Client, s: &Server, c: &Case, reg: &Value, vm: &str) -> Res<()> {
    let (st, b) = call(cl, s, reqwest::Method::PUT, &format!("/v1/vms/{vm}"), reg).await?;
    if st != 200 && st != 201 {
        return Err(format!("PUT {vm}: {st} {b}"));
    }
    let g = c.guest.clone();
    let ak = tokio::task::spawn_blocking(move || g.lock().expect("guest").ak_public())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let (st, ch) = call(
        cl,
        s,
        reqwest::Method::POST,
        &format!("/v1/vms/{vm}/challenges"),
        &json!({"akPublic": trustlaunch_eventlog::hex::encode(&ak)}),
    )
    .await?;
    if st != 201 {
        return Err(format!("challenge {vm}: {st} {ch}"));
    }
    let hex =
        |v: &Value| trustlaunch_eventlog::hex::decode(v.as_str().unwrap_or("")).unwrap_or_default();
    let (nonce, blob, sec) = (
        hex(&ch["nonce"]),
        hex(&ch["credential"]["credentialBlob"]),
        hex(&ch["credential"]["encryptedSecret"]),
    );
    let g = c.guest.clone();
    let (evidence, secret) = tokio::task::spawn_blocking(move || {
        let mut g = g.lock().expect("guest");
        Ok::<_, String>((
            g.evidence(&nonce).map_err(|e| e.to_string())?,
            g.activate(&blob, &sec).map_err(|e| e.to_string())?,
        ))
    })
    .await
    .map_err(|e| e.to_string())??;
    let body = json!({
        "challengeId": ch["id"],
        "activatedSecret": trustlaunch_eventlog::hex::encode(&secret),
        "evidence": evidence,
    });
    let (st, b) = call(
        cl,
        s,
        reqwest::Method::POST,
        &format!("/v1/vms/{vm}/attestations"),
        &body,
    )
    .await?;
    if !(st == 200 || st == 201) || b["healthy"] != true {
        return Err(format!("attest {vm}: {st} {b}"));
    }
    let body = json!({"vmId": vm, "nonce": c.nonce, "evidence": c.evidence});
    let (st, b) = call(cl, s, reqwest::Method::POST, "/v1/appraisals", &body).await?;
    if st != 200 || b["healthy"] != true {
        return Err(format!("appraise {vm}: {st} {b}"));
    }
    Ok(())
}

struct Row {
    what: String,
    ours: Option<Stats>,
    keylime: Option<Stats>,
}

struct Ours {
    rows: HashMap<&'static str, (Stats, Option<Stats>, Stats)>,
    memory: Option<(u64, u64, u64, u64, usize, f64)>,
}

async fn run_ours(a: &Args, cases: &[Case]) -> Res<Ours> {
    let s = start_server(a).await?;
    let pid = s.child.id();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (rss0, hwm0) = rss(pid);
    eprintln!(
        "ours: server pid {pid} at {}, RSS {rss0} kB (HWM {hwm0} kB) with an empty DB",
        s.url
    );
    let n = a.vms.max(cases.len());
    let setup = client(s.ca.as_deref(), false);
    let mut regs = Vec::new();
    for c in cases {
        let mut reg = serde_json::to_value(&c.registration).map_err(|e| e.to_string())?;
        reg["predictedBaseline"] = predicted(&setup, &s, c).await?;
        regs.push(reg);
    }
    let regs = Arc::new(regs);
    let t0 = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let failed: Arc<Mutex<Option<String>>> = Arc::default();
    let cases_arc: Arc<Vec<Case>> = Arc::new(cases.to_vec());
    let s = Arc::new(s);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (next, failed, cs, s, cl, regs) = (
            next.clone(),
            failed.clone(),
            cases_arc.clone(),
            s.clone(),
            setup.clone(),
            regs.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || failed.lock().expect("f").is_some() {
                    break;
                }
                let c = &cs[i % cs.len()];
                let reg = &regs[i % cs.len()];
                if let Err(e) = enroll(&cl, &s, c, reg, &format!("bench-{}-{i:05}", c.name)).await {
                    *failed.lock().expect("f") = Some(e);
                    break;
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    if let Some(e) = failed.lock().expect("f").take() {
        return Err(e);
    }
    let setup_secs = t0.elapsed().as_secs_f64();
    let (rss1, hwm1) = rss(pid);
    eprintln!(
        "ours: {n} VMs registered + enrolled + appraised once in {setup_secs:.1} s; RSS {rss1} kB (HWM {hwm1} kB)"
    );
    let memory = (a.vms > 0).then_some((rss0, hwm0, rss1, hwm1, n, setup_secs));

    let auth = vec![("authorization".to_owned(), format!("Bearer {}", s.token))];
    let mut rows = HashMap::new();
    for (ci, c) in cases.iter().enumerate() {
        let bodies: Vec<Bytes> = (0..n)
            .filter(|i| i % cases.len() == ci)
            .map(|i| {
                Bytes::from(
                    serde_json::to_vec(&json!({
                        "vmId": format!("bench-{}-{i:05}", c.name),
                        "nonce": c.nonce,
                        "evidence": c.evidence,
                    }))
                    .expect("json"),
                )
            })
            .collect();
        let t = Target {
            client: client(s.ca.as_deref(), a.handshake_each),
            url: format!("{}/v1/appraisals", s.url),
            headers: auth.clone(),
            bodies: Arc::new(bodies),
        };
        let (st, b) = t.send(0).await?;
        let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
        if st != 200 || v["healthy"] != true {
            return Err(format!(
                "ours {}: sanity appraisal not healthy: {st} {v}",
                c.name
            ));
        }
        eprintln!(
            "ours {}: sanity OK (healthy, {} checks, {} VMs rotated, body {} B)",
            c.name,
            v["checks"].as_array().map_or(0, |a| a.len()),
            t.bodies.len(),
            t.bodies[0].len()
        );
        closed_loop(&t, a.concurrency, a.warmup).await;
        let cl = with_cpu(pid, false, closed_loop(&t, a.concurrency, a.duration)).await;
        eprintln!(
            "ours {} closed c={}: {}",
            c.name,
            a.concurrency,
            cl.summary()
        );
        let hot = if a.hot > 0 && a.hot < t.bodies.len() {
            let h = Target {
                bodies: Arc::new(t.bodies[..a.hot].to_vec()),
                ..t.clone()
            };
            closed_loop(&h, a.concurrency, a.warmup).await;
            let hs = with_cpu(pid, false, closed_loop(&h, a.concurrency, a.duration)).await;
            eprintln!(
                "ours {} closed c={} over {} VMs only: {}",
                c.name,
                a.concurrency,
                a.hot,
                hs.summary()
            );
            Some(hs)
        } else {
            None
        };
        let ol = with_cpu(pid, false, open_loop(&t, a.rate, a.duration)).await;
        eprintln!("ours {} open {}/s: {}", c.name, a.rate, ol.summary());
        rows.insert(c.name, (cl, hot, ol));
    }
    let (rss2, hwm2) = rss(pid);
    eprintln!("ours: after the load RSS {rss2} kB (HWM {hwm2} kB)");
    Ok(Ours { rows, memory })
}

fn sh(cmd: &str, env: &[(&str, &str)]) -> Res<String> {
    let mut c = Command::new("bash");
    c.arg("-c").arg(cmd).current_dir(repo());
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!(
            "`{cmd}` failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

async fn run_keylime_case(a: &Args, c: &Case, policy: &str) -> Res<(Stats, Stats)> {
    let out = sh(
        "bash bench/keylime/setup.sh",
        &[("KEYLIME_MB_POLICY", policy)],
    )?;
    let url = out.lines().last().unwrap_or("").trim().to_owned();
    eprintln!("keylime ({policy}): {}", out.lines().next().unwrap_or(""));
    let kl = repo().join("target/keylime");
    let body = kl.join(format!("bodies/{}.json", c.name));
    if !body.exists() {
        sh(
            &format!(
                "mkdir -p target/keylime/bodies && . target/keylime/env.sh && python3 bench/keylime/make_request.py {} {}",
                c.attestation.display(),
                body.display()
            ),
            &[],
        )?;
    }
    let t = Target {
        client: client(Some(&kl.join("cv_ca/cacert.crt")), a.handshake_each),
        url: format!("{url}/v2.6/verify/evidence"),
        headers: Vec::new(),
        bodies: Arc::new(vec![Bytes::from(
            std::fs::read(&body).map_err(|e| e.to_string())?,
        )]),
    };
    let (st, b) = t.send(0).await?;
    let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
    if st != 200 || v["results"]["valid"] != true {
        let _ = sh("bash bench/keylime/stop.sh", &[]);
        return Err(format!(
            "keylime {}: sanity verification not valid: {st} {}",
            c.name, v["results"]["failures"]
        ));
    }
    eprintln!(
        "keylime {}: sanity OK (valid, no failures, body {} B)",
        c.name,
        t.bodies[0].len()
    );
    closed_loop(&t, a.keylime_concurrency, a.warmup).await;
    let kpid: u32 = std::fs::read_to_string(kl.join("verifier.pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(0);
    let cl = with_cpu(
        kpid,
        true,
        closed_loop(&t, a.keylime_concurrency, a.duration),
    )
    .await;
    eprintln!(
        "keylime {} closed c={}: {}",
        c.name,
        a.keylime_concurrency,
        cl.summary()
    );
    let ol = with_cpu(kpid, true, open_loop(&t, a.keylime_rate, a.duration)).await;
    eprintln!(
        "keylime {} open {}/s: {}",
        c.name,
        a.keylime_rate,
        ol.summary()
    );
    let _ = sh("bash bench/keylime/stop.sh", &[]);
    Ok((cl, ol))
}

/// CPU µs per answer, "server / generator".
fn cpu_text(s: &Stats) -> String {
    match s.cpu_us() {
        (srv, _) if srv.is_nan() => "-".into(),
        (srv, gen) => format!("{srv:.0} / {gen:.0}"),
    }
}

fn ms(s: &Stats) -> String {
    format!(
        "{:.2} / {:.2} / {:.2} / {:.2}",
        s.pct(50.0) * 1e3,
        s.pct(90.0) * 1e3,
        s.pct(99.0) * 1e3,
        s.lat.last().copied().unwrap_or(f64::NAN) * 1e3
    )
}

async fn single(a: &Args) {
    let body = a.body.as_ref().expect("--url needs --body");
    let t = Target {
        client: client(a.cacert.as_deref(), a.handshake_each),
        url: a.url.clone().expect("url"),
        headers: a.headers.clone(),
        bodies: Arc::new(vec![Bytes::from(std::fs::read(body).expect("body"))]),
    };
    closed_loop(&t, a.concurrency, a.warmup).await;
    println!(
        "closed c={}: {}",
        a.concurrency,
        closed_loop(&t, a.concurrency, a.duration).await.summary()
    );
    println!(
        "open {}/s: {}",
        a.rate,
        open_loop(&t, a.rate, a.duration).await.summary()
    );
}

async fn run(a: Args) {
    if a.url.is_some() {
        return single(&a).await;
    }
    let cases = vec![
        case("shim", "shim", "attestation.json"),
        case("tiny-sb", "tiny-sb", "attestation-boot1.json"),
    ];
    eprintln!("args: {a:?}");
    let ours = match run_ours(&a, &cases).await {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ours: FAILED: {e}");
            std::process::exit(1);
        }
    };
    let mut kl: HashMap<&str, (Stats, Stats)> = HashMap::new();
    if a.keylime {
        for (c, policy) in cases.iter().zip(["example", "accept-all"]) {
            match run_keylime_case(&a, c, policy).await {
                Ok(r) => {
                    kl.insert(c.name, r);
                }
                Err(e) => eprintln!("keylime {}: skipped: {e}", c.name),
            }
        }
    } else {
        eprintln!("keylime: skipped (KEYLIME=0 or --no-keylime)");
    }

    let mut rows = Vec::new();
    for c in &cases {
        let o = ours.rows.get(c.name);
        let k = kl.get(c.name);
        rows.push(Row {
            what: format!(
                "{} closed loop (ours c={}, Keylime c={}), appraisals/s",
                c.name, a.concurrency, a.keylime_concurrency
            ),
            ours: o.map(|x| x.0.clone()),
            keylime: k.map(|x| x.0.clone()),
        });
        if let Some(h) = o.and_then(|x| x.1.clone()) {
            rows.push(Row {
                what: format!(
                    "{} closed loop over {} VMs only (warm cache), c={}, appraisals/s",
                    c.name, a.hot, a.concurrency
                ),
                ours: Some(h),
                keylime: k.map(|x| x.0.clone()),
            });
        }
        rows.push(Row {
            what: format!(
                "{} open loop (ours {}/s, Keylime {}/s), done/s",
                c.name, a.rate, a.keylime_rate
            ),
            ours: o.map(|x| x.2.clone()),
            keylime: k.map(|x| x.1.clone()),
        });
    }
    println!();
    println!(
        "| {} s per measurement | trustlaunch | Keylime 7.14.3 | ours/Keylime |",
        a.duration
    );
    println!("| --- | ---: | ---: | ---: |");
    for r in &rows {
        let f = |s: &Option<Stats>| {
            s.as_ref().map_or("-".into(), |s| {
                format!("{:.0} (err {})", s.per_sec(), s.errors)
            })
        };
        let ratio = match (&r.ours, &r.keylime) {
            (Some(o), Some(k)) if r.what.contains("closed") => {
                format!("{:.1}x", o.per_sec() / k.per_sec())
            }
            _ => "-".into(),
        };
        println!(
            "| {} | {} | {} | {} |",
            r.what,
            f(&r.ours),
            f(&r.keylime),
            ratio
        );
        let lat = |s: &Option<Stats>| s.as_ref().map_or("-".into(), ms);
        println!(
            "| &nbsp;&nbsp;latency p50 / p90 / p99 / max, ms | {} | {} | |",
            lat(&r.ours),
            lat(&r.keylime)
        );
        let cpu = |s: &Option<Stats>| s.as_ref().map_or("-".into(), cpu_text);
        println!(
            "| &nbsp;&nbsp;CPU per request, server / load generator, µs | {} | {} | |",
            cpu(&r.ours),
            cpu(&r.keylime)
        );
    }
    if let Some((r0, h0, r1, h1, n, secs)) = ours.memory {
        println!();
        println!(
            "memory: RSS {r0} kB (HWM {h0}) empty -> {r1} kB (HWM {h1}) with {n} VMs enrolled + appraised once \
             ({secs:.1} s over HTTP): {:.1} kB per VM, {:.1} MB per 10,000 VMs",
            (r1 as f64 - r0 as f64) / n as f64,
            (r1 as f64 - r0 as f64) / n as f64 * 10_000.0 / 1024.0
        );
    }
}

fn main() {
    let a = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(a));
}
