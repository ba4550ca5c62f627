//! `trustlaunch server`: the attestation service (see `trustlaunch-server`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use trustlaunch_runtime::platform::Home;

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
    /// The tokens' issuer (default http://LISTEN).
    #[arg(long)]
    issuer: Option<String>,
    /// The tokens' audience, `aud`: who relies on them (default trustlaunch).
    #[arg(long)]
    token_audience: Option<String>,
    /// POST alert changes to this URL (repeatable).
    #[arg(long = "webhook")]
    webhooks: Vec<String>,
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
    /// The platform master key (0600; made on first start), which seals
    /// the token-signing keys in the database. Default: master.key in the
    /// home. Keep it out of database backups.
    #[arg(long)]
    master_key: Option<PathBuf>,
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
    let config = trustlaunch_server::Config {
        listen: a.listen,
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
        webhooks: a.webhooks,
        driver: match a.driver {
            DriverArg::Runtime => trustlaunch_server::DriverChoice::Runtime,
            DriverArg::Sim => trustlaunch_server::DriverChoice::Sim {
                boot: Duration::from_millis(a.sim_boot_ms),
            },
            DriverArg::None => trustlaunch_server::DriverChoice::None,
        },
        quotas: a.quotas,
        master_key: Some(a.master_key.unwrap_or_else(|| root.join("master.key"))),
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
        eprintln!("trustlaunch server: listening on http://{}", running.addr);
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
