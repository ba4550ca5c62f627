//! `trustlaunch server`: the attestation service (see `trustlaunch-server`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use trustlaunch_runtime::platform::Home;
use trustlaunch_server::{HttpLimits, TlsSource};

/// `trustlaunch server ...`
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServerCommand {
    #[command(subcommand)]
    sub: Option<ServerSub>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum ServerSub {
    /// Print the REST API's OpenAPI document.
    Openapi,
}

#[derive(Args)]
struct RunArgs {
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1:8844")]
    listen: SocketAddr,
    /// Serve HTTPS with this certificate chain (PEM, leaf first) instead
    /// of one from the platform's TLS CA; with --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A name clients reach this server by (DNS name or IP address) that
    /// the platform-issued certificate carries besides the listen address
    /// and localhost (repeatable).
    #[arg(long = "tls-name", value_name = "NAME", conflicts_with = "tls_cert")]
    tls_names: Vec<String>,
    /// The platform master key (0600, made on first start), which seals
    /// the token-signing keys in the database and the TLS keys (default:
    /// the home's master.key; with --no-runtime and no --home, master.key
    /// beside the SQLite database). Keep it out of database backups. The
    /// platform's TLS CA lives in tls/ in the home, or beside this file
    /// without one.
    #[arg(long, value_name = "FILE")]
    master_key: Option<PathBuf>,
    /// Serve plain HTTP instead of HTTPS: on a loopback address only.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_names"])]
    no_tls: bool,
    /// Serve plain HTTP on any address, a non-loopback one included (only
    /// behind something that encrypts the path, e.g. a TLS-terminating
    /// proxy); logs a warning.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_names"])]
    insecure_http: bool,
    /// Connections open at once; more wait in the kernel's backlog.
    #[arg(long, default_value_t = HttpLimits::default().max_connections)]
    max_connections: usize,
    /// Seconds a TLS handshake may take.
    #[arg(long, default_value_t = HttpLimits::default().tls_handshake_timeout.as_secs())]
    tls_handshake_timeout: u64,
    /// Seconds a request's head may take to arrive (also the longest a
    /// connection waits for its next request).
    #[arg(long, default_value_t = HttpLimits::default().header_read_timeout.as_secs())]
    header_read_timeout: u64,
    /// Seconds from a request's head to its answer, the body's upload
    /// included (408 after).
    #[arg(long, default_value_t = HttpLimits::default().request_timeout.as_secs())]
    request_timeout: u64,
    /// Seconds an idle connection (no request in progress, no byte moving)
    /// is kept.
    #[arg(long, default_value_t = HttpLimits::default().keep_alive_timeout.as_secs())]
    keep_alive_timeout: u64,
    /// Database: sqlite://PATH (default: trustlaunch.db in the home) or
    /// postgres://USER@HOST/DB (several servers may share one).
    #[arg(long)]
    db: Option<String>,
    /// The platform's state directory (default: $TRUSTLAUNCH_HOME, else
    /// /var/lib/trustlaunch as root); its VMs are monitored and attested.
    #[arg(long)]
    home: Option<PathBuf>,
    /// Serve the API only: run and monitor no VMs (needs --vtpm-ca).
    #[arg(long)]
    no_runtime: bool,
    /// Another vTPM CA certificate EK certificates may chain to (PEM/DER).
    #[arg(long = "vtpm-ca")]
    vtpm_ca: Vec<PathBuf>,
    /// Attest each running VM this often, in seconds.
    #[arg(long, default_value_t = 300)]
    interval: u64,
    /// An agent silent this long (seconds) is reported unresponsive.
    #[arg(long, default_value_t = 600)]
    agent_timeout: u64,
    /// How long the first challenge of a boot waits for the agent, seconds.
    #[arg(long, default_value_t = 180)]
    boot_wait: u64,
    /// How long a later challenge waits, seconds.
    #[arg(long, default_value_t = 30)]
    challenge_limit: u64,
    /// Attestation token lifetime, seconds.
    #[arg(long, default_value_t = 8 * 3600)]
    token_lifetime: u64,
    /// The tokens' issuer (default https://LISTEN, http:// without TLS).
    #[arg(long)]
    issuer: Option<String>,
    /// The tokens' audience, `aud`: who relies on them (default trustlaunch).
    #[arg(long)]
    token_audience: Option<String>,
    /// POST alert changes to a webhook, NAME=URL (repeatable). Alerts name
    /// it, never show its URL. Each needs --webhook-secret-file NAME=FILE.
    #[arg(long = "webhook", value_name = "NAME=URL")]
    webhooks: Vec<String>,
    /// The secret a webhook's payloads are signed with, NAME=FILE (at least
    /// 16 bytes): X-Trustlaunch-Signature-256 is sha256=HMAC-SHA256 of the
    /// body, as GitHub's X-Hub-Signature-256.
    #[arg(long = "webhook-secret-file", value_name = "NAME=FILE")]
    webhook_secrets: Vec<String>,
    /// A CA certificate (PEM) webhooks' HTTPS may chain to, besides the
    /// system's roots (repeatable).
    #[arg(long = "webhook-ca", value_name = "FILE")]
    webhook_ca: Vec<PathBuf>,
    /// Seconds a webhook delivery is retried (backing off 1 s, 2 s, 4 s ...
    /// up to 5 min) before it is given up as dead-lettered.
    #[arg(long, default_value_t = 86_400)]
    webhook_retry_window: u64,
    /// Where the first admin token is written (default: server/admin.token
    /// in the home).
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// What runs the control plane's VMs and scale set instances: the
    /// host runtime (QEMU/OVMF/swtpm; not with --no-runtime), the
    /// simulated driver (in-process, for trying the API and scale tests),
    /// or none.
    #[arg(long, value_enum, default_value_t = DriverArg::Runtime)]
    driver: DriverArg,
    /// The simulated driver's boot time, milliseconds.
    #[arg(long, default_value_t = 0)]
    sim_boot_ms: u64,
    /// A vCPU quota for a size family, FAMILY=VCPUS (repeatable; e.g.
    /// Dsv3=20). Families without one are unlimited.
    #[arg(long = "quota", value_parser = parse_quota)]
    quotas: Vec<(String, u32)>,
    /// Serve /metrics without a token (default: a reader token is needed).
    #[arg(long)]
    metrics_public: bool,
    /// Where the control plane's image versions must be (`properties.source`
    /// is resolved inside it; default: images in the home).
    #[arg(long)]
    images_root: Option<PathBuf>,
    /// How long a challenge may be answered, seconds.
    #[arg(long, default_value_t = 300)]
    challenge_lifetime: u64,
    /// How long a requested baseline relearn waits for a boot, seconds.
    #[arg(long, default_value_t = 24 * 3600)]
    relearn_lifetime: u64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DriverArg {
    Runtime,
    Sim,
    None,
}

fn parse_quota(s: &str) -> Result<(String, u32), String> {
    let (family, n) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: use FAMILY=VCPUS, e.g. Dsv3=20"))?;
    let n = n
        .parse()
        .map_err(|_| format!("{s:?}: {n:?} is not a number of vCPUs"))?;
    Ok((family.to_owned(), n))
}

/// The platform TLS CA's certificate in a home (what clients trust).
pub fn default_ca_file(home: &std::path::Path) -> PathBuf {
    home.join("tls").join(trustlaunch_server::tls::CA_CERT)
}

/// Where the server's certificate comes from: files, or the platform's
/// CA in the home (`<home>/tls`, keys sealed under the home's master
/// key); without a home (`--no-runtime`, no `--home`), beside the master
/// key, by default beside the SQLite database.
fn tls_source(a: &RunArgs, root: &std::path::Path, db: &str) -> Result<Option<TlsSource>> {
    if a.no_tls || a.insecure_http {
        return Ok(None);
    }
    if let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) {
        return Ok(Some(TlsSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        }));
    }
    let master_key = master_key_file(a, root, db)?;
    let dir = if a.home.is_some() || !a.no_runtime {
        Home::open(root.to_owned())
            .with_context(|| format!("opening the home {}", root.display()))?;
        root.join("tls")
    } else {
        master_key
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("tls")
    };
    Ok(Some(TlsSource::Platform {
        dir,
        master_key,
        extra_names: a.tls_names.clone(),
    }))
}

/// The platform master key's file: `--master-key`, else the home's; with
/// `--no-runtime` and no `--home`, beside the SQLite database.
fn master_key_file(a: &RunArgs, root: &std::path::Path, db: &str) -> Result<PathBuf> {
    if let Some(k) = &a.master_key {
        return Ok(k.clone());
    }
    if a.home.is_some() || !a.no_runtime {
        return Ok(root.join("master.key"));
    }
    match db.strip_prefix("sqlite://") {
        Some(path) => {
            let path = path.split('?').next().unwrap_or(path);
            Ok(std::path::Path::new(path)
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join("master.key"))
        }
        None => bail!(
            "a server on PostgreSQL without a home needs a master key: give --master-key FILE \
             (or --home DIR)"
        ),
    }
}

/// The webhooks of `--webhook NAME=URL`, each with its
/// `--webhook-secret-file NAME=FILE`.
fn webhooks(a: &RunArgs) -> Result<Vec<trustlaunch_server::webhook::Webhook>> {
    let mut secrets = std::collections::BTreeMap::new();
    for s in &a.webhook_secrets {
        let (name, file) = s
            .split_once('=')
            .with_context(|| format!("--webhook-secret-file {s:?}: use NAME=FILE"))?;
        secrets.insert(name.to_owned(), PathBuf::from(file));
    }
    let mut hooks = Vec::new();
    for spec in &a.webhooks {
        let Some((name, _)) = spec.split_once('=') else {
            bail!("--webhook: use NAME=URL (alerts name the webhook, never show its URL)");
        };
        let Some(file) = secrets.remove(name) else {
            bail!("webhook {name} has no secret: give --webhook-secret-file {name}=FILE");
        };
        hooks.push(trustlaunch_server::webhook::Webhook::from_spec(
            spec, &file,
        )?);
    }
    if let Some(name) = secrets.keys().next() {
        bail!("--webhook-secret-file {name}=...: no --webhook {name}=URL");
    }
    Ok(hooks)
}

/// The admin token file of a home.
pub fn default_token_file(home: &std::path::Path) -> PathBuf {
    home.join("server").join("admin.token")
}

pub fn run(cmd: ServerCommand) -> Result<ExitCode> {
    if let Some(ServerSub::Openapi) = cmd.sub {
        println!("{}", trustlaunch_server::openapi_json());
        return Ok(ExitCode::SUCCESS);
    }
    // The server's log on stderr; RUST_LOG overrides (e.g. debug).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let a = cmd.run;
    let root = a.home.clone().unwrap_or_else(Home::default_root);
    trustlaunch_runtime::platform::private_dir(&root)
        .with_context(|| format!("creating {}", root.display()))?;
    let db =
        a.db.clone()
            .unwrap_or_else(|| format!("sqlite://{}", root.join("trustlaunch.db").display()));
    let token_file = a
        .admin_token_file
        .clone()
        .unwrap_or_else(|| default_token_file(&root));
    let tls = tls_source(&a, &root, &db)?;
    let master_key = master_key_file(&a, &root, &db)?;
    let hooks = webhooks(&a)?;
    let config = trustlaunch_server::Config {
        listen: a.listen,
        tls,
        insecure_http: a.insecure_http,
        http: HttpLimits {
            max_connections: a.max_connections.max(1),
            tls_handshake_timeout: Duration::from_secs(a.tls_handshake_timeout.max(1)),
            header_read_timeout: Duration::from_secs(a.header_read_timeout.max(1)),
            request_timeout: Duration::from_secs(a.request_timeout.max(1)),
            keep_alive_timeout: Duration::from_secs(a.keep_alive_timeout.max(1)),
        },
        db,
        home: (!a.no_runtime).then(|| root.clone()),
        vtpm_ca: a.vtpm_ca,
        admin_token_file: Some(token_file.clone()),
        issuer: a.issuer,
        token_audience: a.token_audience,
        token_lifetime: Duration::from_secs(a.token_lifetime.max(1)),
        interval: Duration::from_secs(a.interval.max(1)),
        agent_timeout: Duration::from_secs(a.agent_timeout),
        boot_wait: Duration::from_secs(a.boot_wait.max(1)),
        challenge_limit: Duration::from_secs(a.challenge_limit.max(1)),
        tick: Duration::from_secs(2),
        webhooks: hooks,
        webhook_ca: a.webhook_ca.clone(),
        webhook_retry: trustlaunch_server::webhook::RetryPolicy {
            window: Duration::from_secs(a.webhook_retry_window),
            ..Default::default()
        },
        driver: match a.driver {
            DriverArg::Runtime => trustlaunch_server::DriverChoice::Runtime,
            DriverArg::Sim => trustlaunch_server::DriverChoice::Sim {
                boot: Duration::from_millis(a.sim_boot_ms),
            },
            DriverArg::None => trustlaunch_server::DriverChoice::None,
        },
        quotas: a.quotas,
        master_key: Some(master_key.clone()),
        metrics_public: a.metrics_public,
        images_root: a.images_root,
        challenge_lifetime: Duration::from_secs(a.challenge_lifetime.max(1)),
        relearn_lifetime: Duration::from_secs(a.relearn_lifetime.max(1)),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let running = trustlaunch_server::start(config)
            .await
            .context("starting the server")?;
        eprintln!("trustlaunch server: listening on {}", running.url());
        match &running.tls {
            Some(t) => match &t.ca_file {
                Some(ca) => eprintln!(
                    "trustlaunch server: TLS certificate for {} {} by the platform CA {} \
                     (clients: --cacert {} or TRUSTLAUNCH_CACERT)",
                    t.names.join(", "),
                    if t.issued { "issued now" } else { "issued" },
                    ca.display(),
                    ca.display()
                ),
                None => eprintln!("trustlaunch server: TLS certificate from --tls-cert"),
            },
            None => eprintln!("trustlaunch server: plain HTTP, no TLS"),
        }
        if running.admin_token.is_some() {
            eprintln!(
                "trustlaunch server: made the first admin token: {}",
                token_file.display()
            );
        }
        tokio::select! {
            _ = running.wait() => {}
            _ = tokio::signal::ctrl_c() => eprintln!("trustlaunch server: interrupted, stopping"),
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
