//! `trustlaunch server`: the attestation service in one process.
//!
//! - the REST API ([`api`]; OpenAPI at `/openapi.json`), API tokens with
//!   roles reader < operator < admin ([`auth`]);
//! - the service ([`service`]): appraisal (`trustlaunch-attestation`),
//!   enrollment, baselines (predicted, learned, pinned, relearned),
//!   RS256 tokens with their JWKS, boot reports, alerts;
//! - the monitor ([`monitor`]) over this host's runtime: registers its
//!   VMs, attests each Trusted Launch VM at every boot and every
//!   `interval`, reports silent agents;
//! - webhook delivery ([`webhook`]) and Prometheus metrics ([`metrics`]);
//! - the store (`trustlaunch-store`): SQLite by default, PostgreSQL so
//!   several servers can share one database;
//! - the transport ([`transport`]): HTTP/1.1 over TLS ([`tls`]: a
//!   certificate from files or from the platform's own CA), with a
//!   connection cap and timeouts against slow and idle clients.
//!
//! Binds to 127.0.0.1 unless told otherwise; serves plain HTTP only on a
//! loopback address unless the operator insists.

#![forbid(unsafe_code)]

pub mod access;
pub mod api;
pub mod arm;
pub mod auth;
pub mod baselines;
pub mod caller;
pub mod challenge;
pub mod clock;
pub mod error;
pub mod fleet_api;
pub mod fleet_vms;
pub mod groups;
pub mod metrics;
pub mod model;
pub mod monitor;
pub mod portal;
pub mod service;
pub mod state;
pub mod tls;
pub mod transport;
pub mod views;
pub mod webhook;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use trustlaunch_runtime::platform::Home;
use trustlaunch_runtime::vm::Runtime;
use trustlaunch_store::{Role, Store};
use trustlaunch_tpm::ekcert::CaCertificate;

pub use error::ApiError;
use monitor::{Monitor, MonitorConfig};
use service::{Service, ServiceConfig};
pub use tls::{ServerTls, TlsSource};
pub use transport::HttpLimits;

/// The server's settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen (default 127.0.0.1:8844).
    pub listen: SocketAddr,
    /// HTTPS with this certificate; `None` (the default here; the
    /// `trustlaunch server` command defaults to the platform's): plain
    /// HTTP, which a non-loopback `listen` refuses unless `insecure_http`.
    pub tls: Option<TlsSource>,
    /// Serve plain HTTP on a non-loopback address anyway (with a loud
    /// warning): for a TLS-terminating proxy in front.
    pub insecure_http: bool,
    /// The connection cap and timeouts.
    pub http: HttpLimits,
    /// The database URL (`sqlite://PATH` or `postgres://...`).
    pub db: String,
    /// The runtime's home, to run and monitor this host's VMs (`None`:
    /// API only; then `vtpm_ca` must name the CA).
    pub home: Option<PathBuf>,
    /// vTPM CA certificates (PEM or DER files) besides the runtime's.
    pub vtpm_ca: Vec<PathBuf>,
    /// Where the first admin token is written when the store has none.
    pub admin_token_file: Option<PathBuf>,
    /// The tokens' issuer (default `https://<listen>`, `http://` without
    /// TLS).
    pub issuer: Option<String>,
    /// The tokens' audience (default `trustlaunch`).
    pub token_audience: Option<String>,
    /// Token lifetime (default 8 h, as Azure Attestation's).
    pub token_lifetime: Duration,
    /// Attest running VMs this often (default 5 min).
    pub interval: Duration,
    /// An agent silent longer than this is unresponsive (default 10 min).
    pub agent_timeout: Duration,
    /// How long the first challenge of a boot waits (default 180 s).
    pub boot_wait: Duration,
    /// How long a later challenge waits (default 30 s).
    pub challenge_limit: Duration,
    /// How often the runtime's VMs are looked at (default 2 s).
    pub tick: Duration,
    /// Webhooks for alert changes (name, URL, secret).
    pub webhooks: Vec<webhook::Webhook>,
    /// CA certificates (PEM files) webhooks' HTTPS may chain to, besides
    /// the system's roots.
    pub webhook_ca: Vec<PathBuf>,
    /// How long and how often webhook deliveries are retried.
    pub webhook_retry: webhook::RetryPolicy,
    /// What runs the control plane's instances.
    pub driver: DriverChoice,
    /// vCPU quotas per size family (none: unlimited).
    pub quotas: Vec<(String, u32)>,
    /// The platform master key's file, which seals the token-signing keys
    /// in the database (default: the home's `master.key`, else
    /// `master.key` beside a SQLite database; required for PostgreSQL
    /// without a home). Made on first start.
    pub master_key: Option<PathBuf>,
    /// `/metrics` answers without a token.
    pub metrics_public: bool,
    /// Where the control plane's image versions may come from (default:
    /// `images` in the home): a source outside it is refused.
    pub images_root: Option<PathBuf>,
    /// How long a challenge may be answered (default 5 min).
    pub challenge_lifetime: Duration,
    /// How long a requested relearn waits for a boot (default 24 h).
    pub relearn_lifetime: Duration,
}

/// What runs the control plane's instances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriverChoice {
    /// The host runtime when the server has one (`home`), else no
    /// control plane.
    Runtime,
    /// The simulated driver: instances boot in `boot` and are healthy.
    Sim {
        /// Simulated boot time.
        boot: Duration,
    },
    /// No control plane.
    None,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8844)),
            tls: None,
            insecure_http: false,
            http: HttpLimits::default(),
            db: "sqlite://trustlaunch.db".into(),
            home: None,
            vtpm_ca: Vec::new(),
            admin_token_file: None,
            issuer: None,
            token_audience: None,
            token_lifetime: Duration::from_secs(8 * 3600),
            interval: Duration::from_secs(300),
            agent_timeout: Duration::from_secs(600),
            boot_wait: Duration::from_secs(180),
            challenge_limit: Duration::from_secs(30),
            tick: Duration::from_secs(2),
            webhooks: Vec::new(),
            webhook_ca: Vec::new(),
            webhook_retry: webhook::RetryPolicy::default(),
            driver: DriverChoice::Runtime,
            quotas: Vec::new(),
            master_key: None,
            metrics_public: false,
            images_root: None,
            challenge_lifetime: Duration::from_secs(300),
            relearn_lifetime: Duration::from_secs(24 * 3600),
        }
    }
}

/// Where the master key is: the configured file, the home's, or beside a
/// SQLite database.
fn master_key_path(config: &Config) -> Result<PathBuf, StartError> {
    if let Some(p) = &config.master_key {
        return Ok(p.clone());
    }
    if let Some(h) = &config.home {
        return Ok(h.join("master.key"));
    }
    if let Some(rest) = config.db.strip_prefix("sqlite:") {
        let path = PathBuf::from(
            rest.trim_start_matches("//")
                .split('?')
                .next()
                .unwrap_or(""),
        );
        if !path.as_os_str().is_empty() && path.as_os_str() != ":memory:" {
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), PathBuf::from);
            return Ok(dir.join("master.key"));
        }
    }
    Err(StartError::Other(
        "no master key: give --master-key FILE (it seals the token-signing keys in the database)"
            .into(),
    ))
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The database.
    #[error("database: {0}")]
    Store(#[from] trustlaunch_store::StoreError),
    /// The runtime's home or keys.
    #[error("runtime: {0}")]
    Runtime(String),
    /// A CA file.
    #[error("vTPM CA {path}: {reason}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// TLS: a certificate or key file, the platform CA, the master key.
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    /// A webhook or its CA.
    #[error("{0}")]
    Webhook(#[from] webhook::WebhookError),
    /// Plain HTTP on a non-loopback address, not insisted on.
    #[error("{0}")]
    PlainHttp(String),
    /// Binding the address.
    #[error("listening on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// A started server.
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The service.
    pub service: Arc<Service>,
    /// The admin token made at this start, if the store had no token.
    pub admin_token: Option<String>,
    /// The TLS it serves (`None`: plain HTTP).
    pub tls: Option<ServerTls>,
    serve: tokio::task::JoinHandle<()>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// The base URL: `https://ADDR`, or `http://ADDR` without TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Serves until the task ends (it does not, unless the listener fails).
    pub async fn wait(self) {
        let _ = self.serve.await;
    }

    /// Stops serving and the loops (in-flight requests are dropped).
    pub fn abort(self) {
        self.serve.abort();
        for b in self.background {
            b.abort();
        }
    }
}

fn read_ca(path: &PathBuf) -> Result<CaCertificate, StartError> {
    let bytes = std::fs::read(path).map_err(|e| StartError::Ca {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    CaCertificate::parse(&bytes).map_err(|e| StartError::Ca {
        path: path.clone(),
        reason: e.to_string(),
    })
}

/// Opens the store, the runtime (if any) and the service, binds, and
/// starts serving and the loops.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let master_path = master_key_path(&config)?;
    let master = tokio::task::spawn_blocking(move || {
        trustlaunch_runtime::platform::load_or_create_master_key(
            &master_path,
            &mut rand_core::OsRng,
        )
        .map_err(|e| StartError::Other(format!("master key: {e}")))
    })
    .await
    .map_err(|e| StartError::Other(e.to_string()))??;
    let tls = match &config.tls {
        Some(source) => {
            let (source, listen) = (source.clone(), config.listen);
            Some(
                tokio::task::spawn_blocking(move || tls::load(&source, listen))
                    .await
                    .map_err(|e| StartError::Other(e.to_string()))??,
            )
        }
        None => {
            match transport::plain_http_allowed(config.listen, config.insecure_http) {
                Ok(Some(warning)) => tracing::warn!("{warning}"),
                Ok(None) => {}
                Err(refusal) => return Err(StartError::PlainHttp(refusal)),
            }
            None
        }
    };
    let hooks = Arc::new(webhook::Webhooks::new(
        config.webhooks.clone(),
        &config.webhook_ca,
        config.webhook_retry,
    )?);
    if let Some(w) = transport::check_fd_limit(config.http.max_connections) {
        tracing::warn!("{w}");
    }
    let store = Store::open(&config.db).await?;
    if store.backend() == trustlaunch_store::Backend::Postgres {
        match store.tls_in_use().await {
            Ok(true) => tracing::info!("database: PostgreSQL over TLS"),
            Ok(false) => tracing::warn!(
                "database: PostgreSQL without TLS; unless it is reached over a local socket, add \
                 sslmode=verify-full&sslrootcert=CA.pem to the database URL"
            ),
            Err(e) => tracing::warn!("database: {e}"),
        }
    }
    let mut ca = Vec::new();
    let runtime = match &config.home {
        Some(h) => {
            let home = Home::open(h.clone()).map_err(|e| StartError::Runtime(e.to_string()))?;
            let rt = tokio::task::spawn_blocking(move || Runtime::open(home))
                .await
                .map_err(|e| StartError::Runtime(e.to_string()))?
                .map_err(|e| StartError::Runtime(e.to_string()))?;
            ca.push(rt.keys().vtpm_ca.certificate().clone());
            Some(Arc::new(rt))
        }
        None => None,
    };
    for p in &config.vtpm_ca {
        ca.push(read_ca(p)?);
    }
    if ca.is_empty() {
        return Err(StartError::Other(
            "no vTPM CA: give --home (the runtime's) or --vtpm-ca FILE".into(),
        ));
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Other(e.to_string()))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let issuer = config
        .issuer
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{addr}"));
    let service = Arc::new(
        Service::new(
            store.clone(),
            ServiceConfig {
                issuer,
                audience: config
                    .token_audience
                    .clone()
                    .unwrap_or_else(|| service::DEFAULT_AUDIENCE.into()),
                token_lifetime: config.token_lifetime,
                agent_timeout: config.agent_timeout,
                webhooks: hooks.names(),
                challenge_lifetime: config.challenge_lifetime,
                relearn_lifetime: config.relearn_lifetime,
            },
            ca,
            master,
        )
        .await
        .map_err(|e| StartError::Other(e.to_string()))?,
    );
    let admin_token = bootstrap_admin(&store, config.admin_token_file.as_ref()).await?;
    // Real VMs boot images from disk: their sources stay in one root.
    let runtime_images = match (&config.driver, &runtime) {
        (DriverChoice::Runtime, Some(_)) => {
            let root = config
                .images_root
                .clone()
                .or_else(|| config.home.as_ref().map(|h| h.join("images")))
                .ok_or_else(|| StartError::Other("no images root".into()))?;
            trustlaunch_runtime::platform::private_dir(&root)
                .map_err(|e| StartError::Runtime(e.to_string()))?;
            Some(root)
        }
        _ => None,
    };
    let driver = match (&config.driver, &runtime) {
        (DriverChoice::Sim { boot }, _) => Some(trustlaunch_control::AnyDriver::Sim(
            trustlaunch_control::sim::SimDriver::new(*boot),
        )),
        (DriverChoice::Runtime, Some(rt)) => Some(trustlaunch_control::AnyDriver::Runtime(
            trustlaunch_control::RuntimeDriver::new(rt.clone(), config.boot_wait)
                .map_err(|e| StartError::Runtime(e.to_string()))?,
        )),
        _ => None,
    };
    let control = driver.map(|d| {
        let mut quotas = trustlaunch_fleet::sizes::Quotas::new();
        for (family, limit) in &config.quotas {
            quotas.set(family, *limit);
        }
        Arc::new(fleet_api::ControlPlane {
            orchestrator: trustlaunch_control::orchestrator::Orchestrator::new(
                store.clone(),
                d,
                Arc::default(),
                owner_name(&config, addr),
            ),
            store: store.clone(),
            sizes: trustlaunch_fleet::sizes::SizeCatalog::built_in(),
            quotas,
            wake: tokio::sync::Notify::new(),
            images_root: runtime_images.clone(),
        })
    });
    let monitor = runtime.map(|rt| {
        Arc::new(Monitor::new(
            rt,
            service.clone(),
            MonitorConfig {
                tick: config.tick,
                interval: config.interval,
                boot_wait: config.boot_wait,
                challenge_limit: config.challenge_limit,
            },
        ))
    });
    let state = Arc::new(api::AppState {
        service: service.clone(),
        tokens: auth::TokenCache::default(),
        monitor: monitor.clone(),
        control: control.clone(),
        metrics_public: config.metrics_public,
        sessions: portal::Sessions::new(service.store.clone()),
        tls: tls.is_some(),
        gauges: tokio::sync::Mutex::new(None),
    });
    let router = api::router(state);
    let serve = tokio::spawn(transport::serve(
        listener,
        tls.as_ref().map(|t| t.acceptor.clone()),
        router,
        config.http,
        service.clone(),
    ));
    let mut background = vec![tokio::spawn(webhook::run(service.clone(), hooks))];
    if let Some(m) = monitor {
        background.push(tokio::spawn(m.run()));
    }
    if let Some(c) = control {
        background.push(tokio::spawn(c.run()));
    }
    let keys = service.clone();
    background.push(tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(30)).await;
            if let Err(e) = keys.reload_keys().await {
                tracing::warn!("reloading signing keys: {e}");
            }
        }
    }));
    Ok(Running {
        addr,
        service,
        admin_token,
        tls,
        serve,
        background,
    })
}

/// The name this server takes operation leases in. A server restarted
/// with the same fixed address and home is the same server: it resumes its
/// operations at once instead of waiting for its old leases to expire.
/// With an ephemeral port the name is unique per process, so servers
/// sharing a database never take each other's leases for their own.
fn owner_name(config: &Config, addr: SocketAddr) -> String {
    let home = config
        .home
        .as_ref()
        .map_or_else(|| "api-only".to_owned(), |h| h.display().to_string());
    if config.listen.port() != 0 {
        format!("server-{addr}-{home}")
    } else {
        format!(
            "server-{addr}-{home}-{}-{}",
            std::process::id(),
            service::now()
        )
    }
}

/// With no API token in the store, makes an admin token and writes it to
/// `file` (0600) if given.
async fn bootstrap_admin(
    store: &Store,
    file: Option<&PathBuf>,
) -> Result<Option<String>, StartError> {
    if !store.api_tokens().await?.is_empty() {
        return Ok(None);
    }
    let now = service::now_i64();
    let (secret, rec) = auth::new_token("admin", Role::Admin, now, None);
    store
        .put_api_token(
            &rec,
            &trustlaunch_store::NewAuditEntry {
                at: now,
                actor: "platform".into(),
                action: "token.create".into(),
                target: format!("token/{}", rec.id()),
                detail: serde_json::json!({"name": "admin", "role": "admin", "bootstrap": true}),
                deliveries: None,
            },
        )
        .await?;
    if let Some(f) = file {
        if let Some(d) = f.parent() {
            trustlaunch_runtime::platform::private_dir(d)
                .map_err(|e| StartError::Other(e.to_string()))?;
        }
        trustlaunch_runtime::platform::write_secret(f, format!("{secret}\n").as_bytes())
            .map_err(|e| StartError::Other(e.to_string()))?;
    }
    Ok(Some(secret))
}

/// The OpenAPI document (for `docs/openapi.json` and its check).
pub fn openapi_json() -> String {
    api::openapi().to_pretty_json().unwrap_or_default()
}
