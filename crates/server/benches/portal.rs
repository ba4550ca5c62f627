//! The portal's render time and page weight over a large store.
//!
//! ```sh
//! cargo bench -p trustlaunch-server --bench portal
//! # quick try: -- --vms 1000 --attestations 10000 --requests 50
//! ```
//!
//! 1. real stored documents: a server (in this process, its own SQLite
//!    database) registers two replayed guests (a real swtpm replaying a
//!    recorded boot, answered by the agent's code, `trustlaunch_agent::
//!    replayed`), both with the clean `tiny-sb` boot's components as their
//!    predicted baseline: the clean boot attests healthy, the boot with
//!    the changed kernel command line (`tiny-sb-cmdline`) unhealthy
//!    (`baseline` deviates). Each attestation is read back with `GET
//!    /v1/vms/{vm}/attestations/latest`: its `attestation` (the stored
//!    document) and token, and the healthy VM's stored registration, are
//!    what is seeded below;
//! 2. seeds a fresh SQLite store (`Store::put_vm`, `Store::add_attestation`,
//!    `--writers` concurrent writers) with `--vms` VMs, even ones Trusted
//!    Launch (the real registration, host `local`), odd ones Standard (no
//!    vTPM: never attested), and `--attestations` attestations dealt
//!    round-robin over the Trusted Launch VMs, in time order over 30 days
//!    (the newest an hour ago), about 10 % of them the
//!    unhealthy document (a fixed pseudo-random choice), the rest the
//!    healthy one with its token;
//! 3. starts the server on that database (plain HTTP on loopback, API and
//!    portal, no runtime, no control plane), makes an admin API token in
//!    the store, signs in (`POST /portal/signin`) and, per page, sends
//!    `--warmup` unmeasured requests then `--requests` sequential ones with
//!    the cookie sign-in set (one keep-alive connection): the server's time
//!    from each answer's `Server-Timing: app;dur=` and the time this
//!    client saw (request sent to body read), and the body's size;
//! 4. fetches the static assets once each and prints a markdown table.
//!
//! `--keep` leaves the temporary directory (the seeded `portal.db`) in
//! place and prints its path, to look at the queries' plans.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use trustlaunch_agent::replayed::ReplayedGuest;
use trustlaunch_attestation::KeyDatabases;
use trustlaunch_secureboot::varstore::VarStore;
use trustlaunch_server::model::{Template, VmRegistration};
use trustlaunch_server::{Config, DriverChoice, Running};
use trustlaunch_store::{NewAttestation, NewAuditEntry, Role, Store, VmQuery, VmRecord};
use trustlaunch_tpm::ca::{CaConfig, CaKeyAlgorithm, CaSigningKey, VtpmCa};
use trustlaunch_tpm::ekcert::UnixTime;

type Res<T> = Result<T, String>;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[derive(Clone, Debug)]
struct Args {
    vms: usize,
    attestations: usize,
    requests: usize,
    warmup: usize,
    writers: usize,
    /// Keep the temporary directory (the seeded database) and print it.
    keep: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        vms: 10_000,
        attestations: 100_000,
        requests: 300,
        warmup: 5,
        writers: 4,
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--bench" => {}
            "--vms" => a.vms = v().parse().expect("--vms"),
            "--attestations" => a.attestations = v().parse().expect("--attestations"),
            "--requests" => a.requests = v().parse().expect("--requests"),
            "--warmup" => a.warmup = v().parse().expect("--warmup"),
            "--writers" => a.writers = v().parse().expect("--writers"),
            "--keep" => a.keep = true,
            "-h" | "--help" => {
                println!(
                    "options: --vms N (10000) --attestations M (100000) --requests R (300) \
                     --warmup W (5) --writers K (4: concurrent writers while seeding) \
                     --keep (keep the seeded database)"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other:?} (try --help)"),
        }
    }
    a.vms = a.vms.max(2);
    a.requests = a.requests.max(1);
    a.writers = a.writers.max(1);
    a
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn audit(action: &str) -> NewAuditEntry {
    NewAuditEntry {
        at: now(),
        actor: "bench".into(),
        action: action.into(),
        target: "bench".into(),
        detail: json!({}),
        deliveries: None,
    }
}

/// An admin API token made straight in the store of `db`.
async fn token_in(db: &str) -> Res<String> {
    let store = Store::open(db).await.map_err(|e| e.to_string())?;
    let (token, rec) = trustlaunch_server::auth::new_token("bench-admin", Role::Admin, 0, None);
    store
        .put_api_token(&rec, &audit("token.create"))
        .await
        .map_err(|e| e.to_string())?;
    store.close().await;
    Ok(token)
}

/// A server on an ephemeral loopback port over `db`: API and portal,
/// plain HTTP, no runtime, no control plane.
async fn start(dir: &Path, db: &str, ca: Vec<PathBuf>) -> Res<Running> {
    trustlaunch_server::start(Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        db: db.to_owned(),
        home: None,
        vtpm_ca: ca,
        driver: DriverChoice::None,
        master_key: Some(dir.join("master.key")),
        ..Config::default()
    })
    .await
    .map_err(|e| format!("server start: {e}"))
}

// ------------------------------------------------------------ real documents

/// The vTPM CA of the replayed guests and its certificate file.
fn guest_ca(dir: &Path) -> Res<(VtpmCa, PathBuf)> {
    let ca = VtpmCa::create(
        CaSigningKey::generate(CaKeyAlgorithm::P256, &mut rand_core::OsRng),
        &CaConfig {
            common_name: "portal bench vTPM CA".into(),
            organization: None,
            not_before: UnixTime::from_secs(u64::try_from(now() - 3600).unwrap_or(0)),
            not_after: None,
            path_len_constraint: Some(0),
        },
        &mut rand_core::OsRng,
    )
    .map_err(|e| format!("vTPM CA: {e}"))?;
    let path = dir.join("guest-ca.crt");
    std::fs::write(&path, ca.cert_pem()).map_err(|e| e.to_string())?;
    Ok((ca, path))
}

fn read_json(p: &Path) -> Res<Value> {
    let b = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
    serde_json::from_slice(&b).map_err(|e| format!("{}: {e}", p.display()))
}

/// A guest replaying a recorded boot, and its registration (the recorded
/// VM's profile and key template, the guest's EK).
fn replayed(ca: &VtpmCa, name: &str, file: &str) -> Res<(ReplayedGuest, VmRegistration)> {
    let d = repo()
        .join("crates/attestation/tests/data/evidence")
        .join(name);
    let a = read_json(&d.join(file))?;
    let spec = read_json(&d.join("spec.json"))?;
    let vars =
        VarStore::parse(&std::fs::read(d.join("vars-created.fd")).map_err(|e| e.to_string())?)
            .map_err(|e| format!("{name}: varstore: {e}"))?;
    let sb = spec["securityProfile"]["uefiSettings"]["secureBootEnabled"] == true;
    let recorded: trustlaunch_protocol::Evidence =
        serde_json::from_value(a["evidence"].clone()).map_err(|e| e.to_string())?;
    let guest = ReplayedGuest::start(
        &recorded.event_log.0,
        recorded.secure_boot,
        ca,
        u64::try_from(now()).unwrap_or(0),
        &mut rand_core::OsRng,
    )
    .map_err(|e| format!("replayed guest {name}: {e} (swtpm installed?)"))?;
    let reg = VmRegistration {
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
        host: "local".into(),
        managed_by: Default::default(),
    };
    Ok((guest, reg))
}

struct Api<'a> {
    http: &'a reqwest::Client,
    url: String,
    token: &'a str,
}

impl Api<'_> {
    async fn call(
        &self,
        m: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Res<(u16, Value)> {
        let mut r = self
            .http
            .request(m, format!("{}{path}", self.url))
            .bearer_auth(self.token);
        if let Some(b) = body {
            r = r.json(b);
        }
        let resp = r.send().await.map_err(|e| format!("{path}: {e}"))?;
        let st = resp.status().as_u16();
        let b = resp.bytes().await.map_err(|e| format!("{path}: {e}"))?;
        Ok((st, serde_json::from_slice(&b).unwrap_or(Value::Null)))
    }

    async fn want(
        &self,
        m: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        ok: &[u16],
    ) -> Res<Value> {
        let (st, v) = self.call(m.clone(), path, body).await?;
        if !ok.contains(&st) {
            return Err(format!("{m} {path}: {st}: {v}"));
        }
        Ok(v)
    }

    /// The service's challenge naming the guest's AK, the guest's evidence
    /// for its nonce and activation of its credential, the submission.
    async fn attest(&self, vm: &str, g: &mut ReplayedGuest) -> Res<Value> {
        let hex = trustlaunch_eventlog::hex::encode;
        let unhex = |v: &Value| {
            trustlaunch_eventlog::hex::decode(v.as_str().unwrap_or_default()).unwrap_or_default()
        };
        let ak = g.ak_public().map_err(|e| e.to_string())?;
        let c = self
            .want(
                reqwest::Method::POST,
                &format!("/v1/vms/{vm}/challenges"),
                Some(&json!({"akPublic": hex(&ak)})),
                &[201],
            )
            .await?;
        let e = g.evidence(&unhex(&c["nonce"])).map_err(|e| e.to_string())?;
        let cred = &c["credential"];
        let secret = g
            .activate(
                &unhex(&cred["credentialBlob"]),
                &unhex(&cred["encryptedSecret"]),
            )
            .map_err(|e| e.to_string())?;
        self.want(
            reqwest::Method::POST,
            &format!("/v1/vms/{vm}/attestations"),
            Some(&json!({"challengeId": c["id"], "activatedSecret": hex(&secret), "evidence": e})),
            &[200, 201],
        )
        .await
    }
}

/// What is seeded: real stored documents.
struct Docs {
    healthy: Value,
    healthy_token: Option<String>,
    healthy_boot: String,
    unhealthy: Value,
    unhealthy_token: Option<String>,
    unhealthy_failed: Vec<String>,
    /// The Trusted Launch VM's stored registration, and its EK.
    spec: Value,
    ek: Vec<u8>,
}

async fn real_documents(dir: &Path) -> Res<Docs> {
    let (ca, ca_file) = guest_ca(dir)?;
    let db = format!("sqlite://{}", dir.join("source.db").display());
    let token = token_in(&db).await?;
    let running = start(dir, &db, vec![ca_file]).await?;
    let http = reqwest::Client::new();
    let api = Api {
        http: &http,
        url: running.url(),
        token: &token,
    };
    let (mut clean, clean_reg) = replayed(&ca, "tiny-sb", "attestation-boot1.json")?;
    let (mut changed, changed_reg) = replayed(&ca, "tiny-sb-cmdline", "attestation.json")?;
    // The clean boot's components (a stateless appraisal of a probe VM,
    // which records nothing) as both VMs' predicted baseline.
    let reg_json = |r: &VmRegistration| serde_json::to_value(r).map_err(|e| e.to_string());
    api.want(
        reqwest::Method::PUT,
        "/v1/vms/probe",
        Some(&reg_json(&clean_reg)?),
        &[200, 201],
    )
    .await?;
    let ev = clean.evidence(&[3; 32]).map_err(|e| e.to_string())?;
    let probe = api
        .want(
            reqwest::Method::POST,
            "/v1/appraisals",
            Some(&json!({"vmId": "probe", "nonce": "03".repeat(32), "evidence": ev})),
            &[200],
        )
        .await?;
    let predicted = json!({"source": {"kind": "predicted", "image": "tiny"},
        "measurements": probe["measurements"]});
    let mut latest = Vec::new();
    for (vm, g, reg) in [
        ("clean", &mut clean, &clean_reg),
        ("changed", &mut changed, &changed_reg),
    ] {
        let mut r = reg_json(reg)?;
        r["predictedBaseline"] = predicted.clone();
        api.want(
            reqwest::Method::PUT,
            &format!("/v1/vms/{vm}"),
            Some(&r),
            &[200, 201],
        )
        .await?;
        api.attest(vm, g).await?;
        latest.push(
            api.want(
                reqwest::Method::GET,
                &format!("/v1/vms/{vm}/attestations/latest"),
                None,
                &[200],
            )
            .await?,
        );
    }
    running.abort();
    let (h, u) = (&latest[0], &latest[1]);
    if h["healthy"] != true || u["healthy"] != false {
        return Err(format!(
            "the clean boot should attest healthy and the changed one not: {} / {}",
            h["healthy"], u["healthy"]
        ));
    }
    let store = Store::open(&db).await.map_err(|e| e.to_string())?;
    let rec = store
        .get_vm("clean")
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the clean VM is not registered")?;
    store.close().await;
    let failed = u["attestation"]["verdict"]["failed"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["name"].as_str().map(str::to_owned))
        .collect();
    Ok(Docs {
        healthy: h["attestation"].clone(),
        healthy_token: h["token"].as_str().map(str::to_owned),
        healthy_boot: h["bootId"].as_str().unwrap_or("boot").to_owned(),
        unhealthy: u["attestation"].clone(),
        unhealthy_token: u["token"].as_str().map(str::to_owned),
        unhealthy_failed: failed,
        spec: rec.spec,
        ek: rec.ek_public,
    })
}

// ------------------------------------------------------------ seeding

fn vm_name(i: usize) -> String {
    format!("vm-{i:06}")
}

/// A fixed pseudo-random choice: about 10 % of attestations unhealthy.
fn unhealthy(k: usize) -> bool {
    let mut x = (k as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    x % 10 == 0
}

/// Runs `work(i)` for `i` in `0..n` over `writers` concurrent tasks,
/// printing progress lines.
async fn concurrently<F, Fut>(what: &str, n: usize, writers: usize, work: F) -> Res<f64>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Res<()>> + Send,
{
    let t0 = Instant::now();
    let work = std::sync::Arc::new(work);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let step = (n / 10).max(1);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let (work, done, what) = (work.clone(), done.clone(), what.to_owned());
        tasks.spawn(async move {
            let mut i = w;
            while i < n {
                work(i).await?;
                let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if d % step == 0 || d == n {
                    eprintln!("seed: {what} {d}/{n} ({:.1} s)", t0.elapsed().as_secs_f64());
                }
                i += writers;
            }
            Ok::<(), String>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    Ok(t0.elapsed().as_secs_f64())
}

struct Seeded {
    vm_secs: f64,
    att_secs: f64,
    trusted: usize,
    unhealthy: usize,
    doc_bytes: (usize, usize),
}

async fn seed(a: &Args, db: &str, docs: Docs) -> Res<Seeded> {
    let store = std::sync::Arc::new(Store::open(db).await.map_err(|e| e.to_string())?);
    let t_now = now();
    let trusted = a.vms.div_ceil(2);
    // Registered 40 days ago, one a minute.
    let created0 = t_now - 40 * 86_400;
    let mut tl_spec = docs.spec.clone();
    tl_spec["host"] = json!("local");
    let standard = serde_json::to_value(VmRegistration {
        trusted_launch: false,
        trusted_launch_supported: true,
        secure_boot_enabled: false,
        v_tpm_enabled: false,
        ek_public: None,
        template: Template::default(),
        predicted_baseline: None,
        spec: json!({}),
        host: "local".into(),
        managed_by: Default::default(),
    })
    .map_err(|e| e.to_string())?;
    let (tl_spec, standard, ek) = (
        std::sync::Arc::new(tl_spec),
        std::sync::Arc::new(standard),
        std::sync::Arc::new(docs.ek.clone()),
    );
    let s = store.clone();
    let vm_secs = concurrently("VMs", a.vms, a.writers, move |i| {
        let (s, tl_spec, standard, ek) = (s.clone(), tl_spec.clone(), standard.clone(), ek.clone());
        async move {
            let tl = i % 2 == 0;
            let rec = VmRecord {
                vm_id: vm_name(i),
                spec: if tl {
                    (*tl_spec).clone()
                } else {
                    (*standard).clone()
                },
                ek_public: if tl { (*ek).clone() } else { Vec::new() },
                created_at: created0 + i64::try_from(i).unwrap_or(0) * 60,
            };
            s.put_vm(&rec, &audit("registration.create"))
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await?;
    // Attestation k: Trusted Launch VM k mod T, at increasing times (the
    // newest an hour ago), so that ids follow time as they do in service.
    let m = a.attestations;
    let spacing = (30 * 86_400 / i64::try_from(m.max(1)).unwrap_or(1)).max(1);
    let first = t_now - 3600 - i64::try_from(m).unwrap_or(0) * spacing;
    let doc_bytes = (
        docs.healthy.to_string().len(),
        docs.unhealthy.to_string().len(),
    );
    let docs = std::sync::Arc::new(docs);
    let s = store.clone();
    let att_secs = concurrently("attestations", m, a.writers, move |k| {
        let (s, docs) = (s.clone(), docs.clone());
        async move {
            let vm = (k % trusted) * 2;
            let bad = unhealthy(k);
            let mut nonce = [0u8; 16];
            nonce[..8].copy_from_slice(&(k as u64).to_be_bytes());
            let rec = NewAttestation {
                vm_id: vm_name(vm),
                boot_id: format!("{}-{}", docs.healthy_boot, k / trusted / 5),
                nonce: nonce.to_vec(),
                at: first + i64::try_from(k).unwrap_or(0) * spacing,
                healthy: !bad,
                appraisal: if bad {
                    docs.unhealthy.clone()
                } else {
                    docs.healthy.clone()
                },
                token: if bad {
                    docs.unhealthy_token.clone()
                } else {
                    docs.healthy_token.clone()
                },
            };
            s.add_attestation(&rec)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await?;
    store.close().await;
    Ok(Seeded {
        vm_secs,
        att_secs,
        trusted,
        unhealthy: (0..m).filter(|&k| unhealthy(k)).count(),
        doc_bytes,
    })
}

// ------------------------------------------------------------ measuring

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Row {
    page: String,
    path: String,
    server: Vec<f64>,
    client: Vec<f64>,
    bytes: usize,
}

struct Browser {
    http: reqwest::Client,
    url: String,
    cookie: String,
}

impl Browser {
    /// One GET: (status, server ms from `Server-Timing`, client ms, body bytes).
    async fn get(&self, path: &str) -> Res<(u16, Option<f64>, f64, usize)> {
        let t0 = Instant::now();
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .header(reqwest::header::COOKIE, &self.cookie)
            .send()
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        let st = resp.status().as_u16();
        let server = resp
            .headers()
            .get("server-timing")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').find_map(|p| p.trim().strip_prefix("dur=")))
            .and_then(|d| d.parse::<f64>().ok());
        let body = resp.bytes().await.map_err(|e| format!("{path}: {e}"))?;
        Ok((st, server, t0.elapsed().as_secs_f64() * 1e3, body.len()))
    }

    async fn measure(&self, a: &Args, page: &str, path: &str) -> Res<Row> {
        for _ in 0..a.warmup {
            self.get(path).await?;
        }
        let mut row = Row {
            page: page.to_owned(),
            path: path.to_owned(),
            server: Vec::with_capacity(a.requests),
            client: Vec::with_capacity(a.requests),
            bytes: 0,
        };
        for _ in 0..a.requests {
            let (st, server, client, bytes) = self.get(path).await?;
            if st != 200 {
                return Err(format!("GET {path}: {st}"));
            }
            row.server
                .push(server.ok_or_else(|| format!("GET {path}: no Server-Timing"))?);
            row.client.push(client);
            row.bytes = row.bytes.max(bytes);
        }
        row.server.sort_by(f64::total_cmp);
        row.client.sort_by(f64::total_cmp);
        eprintln!(
            "measured {page}: server p50 {:.2} ms, p99 {:.2} ms",
            pct(&row.server, 50.0),
            pct(&row.server, 99.0)
        );
        Ok(row)
    }
}

/// Signs in with `token`: the cookie it sets (`name=value`).
async fn sign_in(url: &str, token: &str) -> Res<(reqwest::Client, String)> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .build()
        .map_err(|e| e.to_string())?;
    let body = format!(
        "token={}&next=%2F",
        percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC)
    );
    let resp = http
        .post(format!("{url}/portal/signin"))
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(body)
        .send()
        .await
        .map_err(|e| format!("sign-in: {e}"))?;
    if resp.status().as_u16() != 303 {
        return Err(format!("sign-in: {} (wanted 303)", resp.status()));
    }
    let cookie = resp
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .filter(|c| c.contains('='))
        .ok_or("sign-in: no cookie set")?
        .to_owned();
    Ok((http, cookie))
}

/// A VM whose newest attestation has the verdict `health`.
async fn vm_with(db: &str, health: &str) -> Res<String> {
    let store = Store::open(db).await.map_err(|e| e.to_string())?;
    let page = store
        .vm_page(&VmQuery {
            health: Some(health.into()),
            limit: 1,
            ..VmQuery::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    store.close().await;
    page.rows
        .first()
        .map(|r| r.vm_id.clone())
        .ok_or_else(|| format!("no {health} VM"))
}

fn file_bytes(p: &Path) -> u64 {
    let size = |suffix: &str| {
        let mut q = p.as_os_str().to_owned();
        q.push(suffix);
        std::fs::metadata(q).map_or(0, |m| m.len())
    };
    size("") + size("-wal") + size("-shm")
}

async fn run(a: Args) -> Res<()> {
    let load_before = loadavg();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    eprintln!("setup: real attestations of two replayed guests");
    let docs = real_documents(dir.path()).await?;
    let failed = docs.unhealthy_failed.join(", ");
    let db_path = dir.path().join("portal.db");
    let db = format!("sqlite://{}", db_path.display());
    let seeded = seed(&a, &db, docs).await?;
    let db_size = file_bytes(&db_path);
    eprintln!(
        "seed: done, {} VMs in {:.1} s, {} attestations in {:.1} s; database {:.0} MiB",
        a.vms,
        seeded.vm_secs,
        a.attestations,
        seeded.att_secs,
        db_size as f64 / 1_048_576.0
    );
    let token = token_in(&db).await?;
    // The server needs a vTPM CA: the replayed guests'.
    let running = start(dir.path(), &db, vec![dir.path().join("guest-ca.crt")]).await?;
    let url = running.url();
    let (http, cookie) = sign_in(&url, &token).await?;
    let b = Browser { http, url, cookie };
    let good = vm_with(&db, "healthy").await?;
    let bad = vm_with(&db, "unhealthy").await?;
    let load_start = loadavg();
    let pages = [
        (
            "VM list, page 1 by name",
            "/portal/vms?sort=name".to_owned(),
        ),
        (
            "VM list, unhealthy, by last attested (newest first)",
            "/portal/vms?health=unhealthy&sort=attested&dir=desc".to_owned(),
        ),
        (
            "VM list, page 100 by name",
            "/portal/vms?page=100".to_owned(),
        ),
        (
            "Boot integrity, latest healthy",
            format!("/portal/vms/{good}/integrity"),
        ),
        (
            "Boot integrity, latest unhealthy",
            format!("/portal/vms/{bad}/integrity"),
        ),
        ("VM overview", format!("/portal/vms/{good}")),
        ("Home", "/".to_owned()),
    ];
    let mut rows = Vec::new();
    for (page, path) in &pages {
        rows.push(b.measure(&a, page, path).await?);
    }
    let mut assets = Vec::new();
    for f in ["portal.css", "portal.js", "htmx-2.0.11.min.js"] {
        let path = format!("/portal/assets/{f}");
        let (st, server, client, bytes) = b.get(&path).await?;
        if st != 200 {
            return Err(format!("GET {path}: {st}"));
        }
        assets.push((path, bytes, server, client));
    }
    let load_after = loadavg();
    running.abort();
    if a.keep {
        eprintln!("kept: {}", dir.keep().display());
    }

    println!();
    println!(
        "{} VMs ({} Trusted Launch, attested; the rest Standard, never attested), \
         {} attestations ({} unhealthy; stored documents {} B healthy, {} B unhealthy \
         failing {failed}); SQLite {:.0} MiB; {} sequential requests per page after {} \
         unmeasured, one keep-alive connection, plain HTTP on loopback; load average \
         before setup {load_before}, before measuring {load_start}, after {load_after}",
        a.vms,
        seeded.trusted,
        a.attestations,
        seeded.unhealthy,
        seeded.doc_bytes.0,
        seeded.doc_bytes.1,
        db_size as f64 / 1_048_576.0,
        a.requests,
        a.warmup,
    );
    println!();
    println!("| page | path | server p50 / p99 / max, ms | client p50 / p99, ms | body, KB |");
    println!("| --- | --- | ---: | ---: | ---: |");
    for r in &rows {
        println!(
            "| {} | `{}` | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} | {:.1} |",
            r.page,
            r.path,
            pct(&r.server, 50.0),
            pct(&r.server, 99.0),
            r.server.last().copied().unwrap_or(f64::NAN),
            pct(&r.client, 50.0),
            pct(&r.client, 99.0),
            r.bytes as f64 / 1024.0,
        );
    }
    println!();
    println!("| asset | bytes | KB |");
    println!("| --- | ---: | ---: |");
    let mut total = 0;
    for (path, bytes, _, _) in &assets {
        total += bytes;
        println!("| `{path}` | {bytes} | {:.1} |", *bytes as f64 / 1024.0);
    }
    println!("| all three | {total} | {:.1} |", total as f64 / 1024.0);
    println!();
    println!(
        "seeding: {} VMs in {:.1} s ({:.0}/s), {} attestations in {:.1} s ({:.0}/s), {} writers",
        a.vms,
        seeded.vm_secs,
        a.vms as f64 / seeded.vm_secs,
        a.attestations,
        seeded.att_secs,
        a.attestations as f64 / seeded.att_secs,
        a.writers
    );
    Ok(())
}

fn main() {
    let a = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Err(e) = rt.block_on(run(a)) {
        eprintln!("portal: FAILED: {e}");
        std::process::exit(1);
    }
    // The runtime may hold the aborted servers' pools: do not wait on them.
    rt.shutdown_timeout(Duration::from_secs(1));
}
