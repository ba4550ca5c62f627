//! Shared by the server tests: a server on loopback over a real store
//! (SQLite in a temporary directory, and PostgreSQL when
//! `TRUSTLAUNCH_TEST_POSTGRES` names a server: a database of this test
//! process's own, reached over verified TLS when
//! `TRUSTLAUNCH_TEST_POSTGRES_TLS` is set), the recorded evidence of real
//! VM boots (`crates/attestation/tests/data/evidence/`), guests that
//! answer the service's challenges with a real swtpm replaying those boots
//! (`trustlaunch_agent::replayed`), and an HTTP client.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};
use trustlaunch_agent::replayed::ReplayedGuest;
use trustlaunch_attestation::KeyDatabases;
use trustlaunch_protocol::Evidence;
use trustlaunch_secureboot::varstore::VarStore;
use trustlaunch_server::model::{Template, VmRegistration};
use trustlaunch_server::webhook::Webhook;
use trustlaunch_server::{Config, Running};
use trustlaunch_store::{Role, Store};
use trustlaunch_tpm::ca::{CaConfig, CaKeyAlgorithm, CaSigningKey, VtpmCa};
use trustlaunch_tpm::ekcert::UnixTime;

pub fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../attestation/tests/data/evidence")
}

pub fn json_file(p: PathBuf) -> Value {
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

/// A recorded boot.
#[derive(Clone)]
pub struct Case {
    pub evidence: Evidence,
    pub ek_public: String,
    pub template: KeyDatabases,
    pub secure_boot: bool,
}

pub fn case(name: &str, file: &str) -> Case {
    let dir = data().join(name);
    let a = json_file(dir.join(file));
    let state = json_file(dir.join("state.json"));
    let spec = json_file(dir.join("spec.json"));
    let vars = VarStore::parse(&std::fs::read(dir.join("vars-created.fd")).unwrap()).unwrap();
    Case {
        evidence: serde_json::from_value(a["evidence"].clone()).unwrap(),
        ek_public: state["ekPublic"].as_str().unwrap().to_owned(),
        template: KeyDatabases::from_store(&vars),
        secure_boot: spec["securityProfile"]["uefiSettings"]["secureBootEnabled"] == true,
    }
}

/// A real Windows boot (the Windows Shielded VM log of
/// `shared/testdata/eventlogs/`, carried into a SHA-256 log) with the
/// Secure Boot databases its firmware measured as the VM's template.
pub fn windows_case() -> Case {
    use base64::Engine as _;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/eventlogs/ga-windows_gcp_shielded_vm.json");
    let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(doc["Log"]["Raw"].as_str().unwrap())
        .unwrap();
    let log = trustlaunch_agent::replayed::carry_to_sha256(&raw).unwrap();
    let ev = trustlaunch_eventlog::BootEvidence::extract(
        &trustlaunch_eventlog::EventLog::parse(&log).unwrap(),
    );
    let var = |name: &str| {
        ev.secure_boot_variables
            .iter()
            .find(|v| v.name == name)
            .map(|v| v.data.clone())
    };
    let mut c = case("tiny-sb", "attestation-boot1.json");
    c.evidence.event_log = trustlaunch_protocol::Bytes(log);
    c.template = KeyDatabases {
        pk: var("PK"),
        kek: var("KEK"),
        db: var("db"),
        dbx: var("dbx"),
    };
    c
}

/// The platform's registration of a recorded VM.
pub fn registration(c: &Case) -> VmRegistration {
    VmRegistration {
        trusted_launch: true,
        trusted_launch_supported: true,
        secure_boot_enabled: c.secure_boot,
        v_tpm_enabled: true,
        ek_public: Some(c.ek_public.clone()),
        template: if c.secure_boot {
            Template::from_dbs(&c.template)
        } else {
            Template::default()
        },
        predicted_baseline: None,
        spec: json!({}),
        host: "recorded".into(),
        managed_by: Default::default(),
    }
}

/// The vTPM CA the replayed guests' EK certificates chain to (one per
/// test process) and its certificate file, for the server's `vtpm_ca`.
pub fn guest_ca() -> &'static (VtpmCa, PathBuf) {
    static CA: OnceLock<(VtpmCa, PathBuf)> = OnceLock::new();
    CA.get_or_init(|| {
        let ca = VtpmCa::create(
            CaSigningKey::generate(CaKeyAlgorithm::P256, &mut rand_core::OsRng),
            &CaConfig {
                common_name: "server test vTPM CA".into(),
                organization: None,
                not_before: UnixTime::from_secs(trustlaunch_server::service::now() - 3600),
                not_after: None,
                path_len_constraint: Some(0),
            },
            &mut rand_core::OsRng,
        )
        .unwrap();
        let dir = std::env::temp_dir().join(format!("tl-guest-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ca.crt");
        std::fs::write(&path, ca.cert_pem()).unwrap();
        (ca, path)
    })
}

/// The CAs a test server trusts: the recorded boots' and the replayed
/// guests'.
pub fn cas() -> Vec<PathBuf> {
    vec![data().join("vtpm-ca.crt"), guest_ca().1.clone()]
}

/// A guest replaying a recorded boot in a fresh swtpm.
pub fn guest(c: &Case) -> ReplayedGuest {
    ReplayedGuest::start(
        &c.evidence.event_log.0,
        c.evidence.secure_boot,
        &guest_ca().0,
        trustlaunch_server::service::now(),
        &mut rand_core::OsRng,
    )
    .unwrap_or_else(|e| panic!("replayed guest: {e} (swtpm is installed by scripts/test.sh)"))
}

/// The registration of a replayed guest: the recorded VM's profile and
/// template, the guest's EK.
pub fn guest_registration(c: &Case, g: &ReplayedGuest) -> VmRegistration {
    VmRegistration {
        ek_public: Some(trustlaunch_eventlog::hex::encode(g.ek_public())),
        ..registration(c)
    }
}

/// The databases to run against: SQLite always, PostgreSQL when the test
/// command provides a server.
pub fn databases(dir: &std::path::Path) -> Vec<String> {
    let mut v = vec![format!("sqlite://{}", dir.join("server.db").display())];
    v.extend(postgres());
    v
}

/// This test process's PostgreSQL database, made at first use (its tests
/// share it, as servers sharing a database do): a database of its own, so
/// that the test command's database may be at another schema version.
/// Over the verified TLS URL when there is one.
fn postgres() -> Option<String> {
    static DB: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    DB.get_or_init(|| {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let admin = var("TRUSTLAUNCH_TEST_POSTGRES_TLS").or(var("TRUSTLAUNCH_TEST_POSTGRES"))?;
        // Called from async tests: a thread with a runtime of its own.
        let made = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(fresh_database(&admin))
        })
        .join()
        .unwrap();
        Some(made)
    })
    .clone()
}

/// A new database on `admin`'s server, named after this process; those
/// of test processes that have ended are dropped first.
async fn fresh_database(admin: &str) -> String {
    use sqlx::Connection as _;
    sqlx::any::install_default_drivers();
    let mut c = sqlx::AnyConnection::connect(admin)
        .await
        .expect("TRUSTLAUNCH_TEST_POSTGRES is set but PostgreSQL is not reachable");
    let prefix = "trustlaunch_srv_";
    let old: Vec<(String,)> = sqlx::query_as(
        "SELECT datname::TEXT FROM pg_database WHERE datname LIKE 'trustlaunch_srv_%'",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    for (name,) in old {
        let pid = name
            .strip_prefix(prefix)
            .and_then(|r| r.split('_').next())
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut c)
                .await;
        }
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("{prefix}{}_{}", std::process::id(), nanos % 1_000_000_000);
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut c)
        .await
        .expect("create the test database (the role needs CREATEDB)");
    let _ = c.close().await;
    let (base, query) = admin.split_once('?').unwrap_or((admin, ""));
    let (server, _) = base.rsplit_once('/').unwrap();
    if query.is_empty() {
        format!("{server}/{name}")
    } else {
        format!("{server}/{name}?{query}")
    }
}

/// A unique prefix, so runs sharing a PostgreSQL database do not meet.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{:x}-{}",
        t % 0xffff_ffff,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub struct Srv {
    pub running: Running,
    pub url: String,
    pub token: String,
    pub http: reqwest::Client,
}

/// The secret of the test webhooks made by [`hook`].
pub const HOOK_SECRET: &[u8] = b"test-webhook-secret-0123456789";

/// A webhook named `name` at `url`, signing with [`HOOK_SECRET`].
pub fn hook(name: &str, url: &str) -> Webhook {
    Webhook::new(name, url, HOOK_SECRET.to_vec()).unwrap()
}

/// Starts an API-only server on an ephemeral loopback port, with an
/// operator-and-more token made in the store first.
pub async fn start(db: &str, ca: Vec<PathBuf>, webhooks: Vec<Webhook>) -> Srv {
    start_with(
        db,
        Config {
            vtpm_ca: ca,
            webhooks,
            ..Config::default()
        },
    )
    .await
}

/// [`start`] with more of the configuration: `listen`, `db` and `home`
/// are set here.
pub async fn start_with(db: &str, config: Config) -> Srv {
    let store = Store::open(db).await.unwrap();
    let (token, rec) =
        trustlaunch_server::auth::new_token(&unique("test-admin"), Role::Admin, 0, None);
    store
        .put_api_token(&rec, &test_audit("token.create"))
        .await
        .unwrap();
    store.close().await;
    let running = trustlaunch_server::start(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        db: db.to_owned(),
        home: None,
        agent_timeout: Duration::from_secs(5),
        master_key: config
            .master_key
            .clone()
            .or_else(|| Some(test_master_key())),
        ..config
    })
    .await
    .unwrap();
    Srv {
        url: running.url(),
        http: client_for(&running),
        running,
        token,
    }
}

/// An HTTP client for `running`: trusting its platform CA when it serves
/// TLS with one.
pub fn client_for(running: &Running) -> reqwest::Client {
    let mut b = reqwest::Client::builder().use_rustls_tls();
    if let Some(ca) = running.tls.as_ref().and_then(|t| t.ca_file.as_ref()) {
        let pem = std::fs::read(ca).unwrap();
        b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

/// A CA named `ca_name` and a leaf for 127.0.0.1 it signs, made with
/// rcgen: (CA PEM, leaf PEM, leaf key PEM).
pub fn test_pki(ca_name: &str) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    (ca.pem(), leaf.pem(), key.serialize_pem())
}

pub fn platform_ca() -> Vec<PathBuf> {
    cas()
}

/// The master key file of the test servers: one fixed key, so that
/// servers sharing the test PostgreSQL database across runs open each
/// other's sealed signing keys (a test key, never a platform's).
pub fn test_master_key() -> PathBuf {
    static KEY: OnceLock<PathBuf> = OnceLock::new();
    KEY.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tl-test-master-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("master.key");
        std::fs::write(&path, [0x7e; 32]).unwrap();
        path
    })
    .clone()
}

/// An audit entry for what a test writes to the store directly.
pub fn test_audit(action: &str) -> trustlaunch_store::NewAuditEntry {
    trustlaunch_store::NewAuditEntry {
        at: 0,
        actor: "test".into(),
        action: action.into(),
        target: "test".into(),
        detail: json!({}),
        deliveries: None,
    }
}

/// A token of `role` made straight in the store of `db`.
pub async fn token_in(db: &str, name: &str, role: Role) -> String {
    let store = Store::open(db).await.unwrap();
    let (token, rec) = trustlaunch_server::auth::new_token(name, role, 0, None);
    store
        .put_api_token(&rec, &test_audit("token.create"))
        .await
        .unwrap();
    store.close().await;
    token
}

impl Srv {
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
    pub async fn get(&self, path: &str) -> Value {
        let (s, v) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }
    pub async fn register(&self, vm: &str, reg: &VmRegistration) {
        let (s, v) = self
            .call(
                reqwest::Method::PUT,
                &format!("/v1/vms/{vm}"),
                Some(serde_json::to_value(reg).unwrap()),
            )
            .await;
        assert_eq!(s, 200, "register {vm}: {v}");
    }
    /// Asks for a challenge to `vm`, naming `ak` (TPMT_PUBLIC) or not.
    pub async fn challenge(&self, vm: &str, ak: Option<&[u8]>) -> Value {
        let (st, c) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/vms/{vm}/challenges"),
                Some(json!({"akPublic": ak.map(trustlaunch_eventlog::hex::encode)})),
            )
            .await;
        assert_eq!(st, 201, "challenge {vm}: {c}");
        c
    }

    /// Submits the answer to a challenge; returns (status, result).
    pub async fn submit(
        &self,
        vm: &str,
        challenge: &str,
        e: &Evidence,
        secret: Option<&[u8]>,
    ) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/vms/{vm}/attestations"),
            Some(json!({
                "challengeId": challenge,
                "activatedSecret": secret.map(trustlaunch_eventlog::hex::encode),
                "evidence": e,
            })),
        )
        .await
    }

    /// The whole exchange with a replayed guest: a challenge naming its
    /// AK, its evidence for the challenge's nonce (then `edit`, a guest
    /// with root), its TPM's activation of the credential (unless
    /// `activate` is false), the submission.
    pub async fn attest_with(
        &self,
        vm: &str,
        g: &mut ReplayedGuest,
        edit: impl FnOnce(&mut Evidence),
        activate: bool,
    ) -> (u16, Value) {
        let ak = g.ak_public().unwrap();
        let c = self.challenge(vm, Some(&ak)).await;
        let nonce = trustlaunch_eventlog::hex::decode(c["nonce"].as_str().unwrap()).unwrap();
        let mut e = g.evidence(&nonce).unwrap();
        edit(&mut e);
        let secret = if activate {
            let cred = &c["credential"];
            let blob = trustlaunch_eventlog::hex::decode(cred["credentialBlob"].as_str().unwrap())
                .unwrap();
            let sec = trustlaunch_eventlog::hex::decode(cred["encryptedSecret"].as_str().unwrap())
                .unwrap();
            // A TPM without the EK the credential was made under cannot
            // activate it: nothing to send.
            g.activate(&blob, &sec).ok()
        } else {
            None
        };
        self.submit(vm, c["id"].as_str().unwrap(), &e, secret.as_deref())
            .await
    }

    /// The claims of an attestation token, verified against the keys the
    /// server publishes (`/.well-known/jwks.json`), its issuer and the
    /// default audience.
    pub async fn verified_claims(&self, token: &str) -> Value {
        let jwks = self
            .http
            .get(format!("{}/.well-known/jwks.json", self.url))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        trustlaunch_attestation::token::verify(
            token,
            &trustlaunch_attestation::token::Jwks::from_json(&jwks).unwrap(),
            &self.url,
            "trustlaunch",
            trustlaunch_server::service::now(),
            60,
        )
        .unwrap_or_else(|e| panic!("token: {e}"))
    }

    /// [`Srv::attest_with`] without edits.
    pub async fn attest(&self, vm: &str, g: &mut ReplayedGuest) -> (u16, Value) {
        self.attest_with(vm, g, |_| {}, true).await
    }
    pub async fn alerts(&self, vm: &str) -> Vec<Value> {
        self.get(&format!("/v1/security/alerts?vm={vm}")).await["value"]
            .as_array()
            .unwrap()
            .clone()
    }
}

/// The failed checks of a result.
pub fn failed(result: &Value) -> Vec<String> {
    result["attestation"]["verdict"]["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect()
}

/// (kind, reason-or-module, state) of alerts.
pub fn alert_summary(alerts: &[Value]) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = alerts
        .iter()
        .map(|a| {
            let cause = &a["cause"];
            let what = cause["reason"]
                .as_str()
                .or(cause["name"].as_str())
                .unwrap_or("")
                .to_owned();
            (
                a["kind"].as_str().unwrap().to_owned(),
                what,
                a["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}
