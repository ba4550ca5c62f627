//! Commands that talk to a running `trustlaunch server`: `attestation`,
//! `baseline`, `security`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use trustlaunch_runtime::platform::Home;

use crate::human::when;

/// How to reach the server.
#[derive(Args, Clone)]
pub struct Conn {
    /// The server's URL.
    #[arg(
        long,
        env = "TRUSTLAUNCH_SERVER",
        default_value = "https://127.0.0.1:8844",
        global = true
    )]
    server: String,
    /// A CA certificate (PEM) to trust for the server's HTTPS besides the
    /// system's (default: the platform CA of the home, tls/ca.crt).
    #[arg(long, env = "TRUSTLAUNCH_CACERT", value_name = "FILE", global = true)]
    cacert: Option<PathBuf>,
    /// API token (default: $TRUSTLAUNCH_TOKEN, else the admin token file of
    /// the home).
    #[arg(long, env = "TRUSTLAUNCH_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Home whose server/admin.token is used when no token is given.
    #[arg(long, global = true)]
    home: Option<PathBuf>,
    /// Print the server's JSON.
    #[arg(long, global = true)]
    json: bool,
    /// The client, made at the first request and kept (one TLS connection
    /// for a command's requests).
    #[arg(skip)]
    http: std::sync::OnceLock<reqwest::blocking::Client>,
}

impl Conn {
    /// The CA file to trust: `--cacert`, else the home's platform CA if
    /// there is one.
    fn ca_file(&self) -> Option<PathBuf> {
        self.cacert.clone().or_else(|| {
            let root = self.home.clone().unwrap_or_else(Home::default_root);
            Some(crate::server::default_ca_file(&root)).filter(|p| p.exists())
        })
    }

    /// The HTTP client: rustls, trusting the system's roots and the CA
    /// file.
    fn client(&self) -> Result<reqwest::blocking::Client> {
        if let Some(c) = self.http.get() {
            return Ok(c.clone());
        }
        let mut b = reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .timeout(std::time::Duration::from_secs(300));
        if let Some(ca) = self.ca_file() {
            let pem = std::fs::read(&ca).with_context(|| format!("reading {}", ca.display()))?;
            for c in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{}: not PEM certificates", ca.display()))?
            {
                b = b.add_root_certificate(c);
            }
        }
        let c = b.build()?;
        Ok(self.http.get_or_init(|| c).clone())
    }

    /// The context of a failed request: what was trusted, for HTTPS.
    fn reaching(&self) -> String {
        if !self.server.starts_with("https:") {
            return format!("reaching the server at {}", self.server);
        }
        match self.ca_file() {
            Some(ca) => format!(
                "reaching the server at {} (trusting the system's roots and {})",
                self.server,
                ca.display()
            ),
            None => format!(
                "reaching the server at {} (trusting the system's roots only: give --cacert FILE \
                 or TRUSTLAUNCH_CACERT, the server's tls/ca.crt)",
                self.server
            ),
        }
    }

    fn token(&self) -> Result<String> {
        if let Some(t) = &self.token {
            return Ok(t.clone());
        }
        let root = self.home.clone().unwrap_or_else(Home::default_root);
        let f = crate::server::default_token_file(&root);
        let t = std::fs::read_to_string(&f).with_context(|| {
            format!(
                "no API token: give --token or TRUSTLAUNCH_TOKEN, or run where {} is readable",
                f.display()
            )
        })?;
        Ok(t.trim().to_owned())
    }

    /// A request whose answer's headers matter (ETag, the operation URL,
    /// warnings); an error status is an error, with the server's message.
    pub(crate) fn call_full(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, String)],
    ) -> Result<(reqwest::header::HeaderMap, Value)> {
        let client = self.client()?;
        let url = format!("{}{}", self.server.trim_end_matches('/'), path);
        let mut req = client.request(method, &url).bearer_auth(self.token()?);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().with_context(|| self.reaching())?;
        let status = resp.status();
        let h = resp.headers().clone();
        let v: Value = resp.json().unwrap_or(Value::Null);
        if !status.is_success() {
            let msg = v["error"]["message"].as_str().unwrap_or("(no message)");
            let code = v["error"]["code"].as_str().unwrap_or("");
            let target = v["error"]["target"]
                .as_str()
                .map(|t| format!(" (at {t})"))
                .unwrap_or_default();
            bail!("server: {} {code}: {msg}{target}", status.as_u16());
        }
        Ok((h, v))
    }

    /// Whether `--json` was given.
    pub(crate) fn json(&self) -> bool {
        self.json
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let client = self.client()?;
        let url = format!("{}{}", self.server.trim_end_matches('/'), path);
        let mut req = client.request(method, &url).bearer_auth(self.token()?);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().with_context(|| self.reaching())?;
        let status = resp.status();
        let v: Value = resp.json().unwrap_or(Value::Null);
        if !status.is_success() {
            let msg = v["error"]["message"].as_str().unwrap_or("(no message)");
            let code = v["error"]["code"].as_str().unwrap_or("");
            bail!("server: {} {code}: {msg}", status.as_u16());
        }
        Ok(v)
    }

    pub(crate) fn get(&self, path: &str) -> Result<Value> {
        self.call(reqwest::Method::GET, path, None)
    }

    /// Every item of a paged list: its `value`, following `nextLink`
    /// page by page (a path on this server), as `{"value": [...]}`.
    pub(crate) fn get_all(&self, path: &str) -> Result<Value> {
        let mut all = Vec::new();
        let mut next = Some(path.to_owned());
        let mut pages = 0u32;
        while let Some(p) = next.take() {
            pages += 1;
            if pages > 100_000 {
                bail!("{path}: more than 100,000 pages: the server's nextLink does not end");
            }
            let v = self.get(&p)?;
            all.extend(v["value"].as_array().cloned().unwrap_or_default());
            next = v["nextLink"].as_str().map(str::to_owned);
            if next.as_deref().is_some_and(|n| !n.starts_with('/')) {
                bail!("{path}: nextLink {next:?} is not a path on this server");
            }
        }
        Ok(serde_json::json!({ "value": all }))
    }
    fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body))
    }
}

pub(crate) fn enc(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            o.push(char::from(b));
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

pub(crate) fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// `trustlaunch attestation ...`
#[derive(Subcommand)]
pub enum AttestationCommand {
    /// A VM's latest attestation: verdict, every failed check with its
    /// evidence, boot report, token.
    Show {
        /// The VM.
        vm: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// A VM's attestations, newest first.
    History {
        /// The VM.
        vm: String,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        conn: Conn,
    },
    /// Challenge a VM of the server's host now.
    Now {
        /// The VM.
        vm: String,
        #[command(flatten)]
        conn: Conn,
    },
}

/// `trustlaunch baseline ...`
#[derive(Subcommand)]
pub enum BaselineCommand {
    /// A VM's baseline: its state (predicted, approved, pending-approval,
    /// awaiting-first-boot, relearn-requested), version, pending learn or
    /// proposal, and audit trail.
    Show {
        /// The VM.
        vm: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Approve the components the VM's first boot proposed as its
    /// baseline (a VM whose image predicted none is unhealthy until then).
    Approve {
        /// The VM.
        vm: String,
        /// Only if the baseline is still at this version.
        #[arg(long)]
        if_version: Option<i64>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Pin the baseline to an attestation's components (default: latest).
    Pin {
        /// The VM.
        vm: String,
        /// The attestation id (see `attestation history`).
        #[arg(long)]
        attestation: Option<i64>,
        /// Only if the baseline is still at this version.
        #[arg(long)]
        if_version: Option<i64>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Learn the baseline again from the next boot (after an update);
    /// the request lapses after the server's relearn lifetime (24 h).
    Relearn {
        /// The VM.
        vm: String,
        #[command(flatten)]
        conn: Conn,
    },
}

/// `trustlaunch security ...`
#[derive(Subcommand)]
pub enum SecurityCommand {
    /// Recommendations for every VM.
    Recommendations {
        #[command(flatten)]
        conn: Conn,
    },
    /// Alerts.
    Alerts {
        /// Only this VM's.
        #[arg(long)]
        vm: Option<String>,
        /// Only in this state: active, resolved, dismissed.
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Dismiss an alert by key.
    Dismiss {
        /// The alert's key.
        key: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Add a suppression rule (alerts matching every given field are
    /// dismissed as raised), or delete one with --delete.
    Suppress {
        /// The rule's name.
        name: String,
        /// attestation-failed | untrusted-kernel-module
        #[arg(long)]
        kind: Option<String>,
        /// baseline-deviation | quote-not-from-vtpm | agent-unresponsive |
        /// secure-boot-off | baseline-not-approved
        #[arg(long)]
        reason: Option<String>,
        /// VM ids (repeatable). Without any, the rule reaches every VM and
        /// needs an admin token.
        #[arg(long = "vm")]
        vms: Vec<String>,
        /// The rule stops applying after this long (e.g. 12h, 7d).
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<std::time::Duration>,
        /// Delete the rule instead.
        #[arg(long)]
        delete: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

fn failed_lines(att: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for c in att["appraisal"]["checks"].as_array().into_iter().flatten() {
        if c["outcome"] == "fail" {
            out.push(format!(
                "  FAIL {}: {}",
                c["name"].as_str().unwrap_or("?"),
                c["detail"].as_str().unwrap_or("")
            ));
            for e in c["evidence"].as_array().into_iter().flatten() {
                out.push(format!("       evidence: {e}"));
            }
        }
    }
    out
}

fn show_attestation(vm: &str, r: &Value) {
    let att = &r["attestation"];
    let verdict = if r["healthy"] == true {
        "healthy"
    } else {
        "UNHEALTHY"
    };
    println!(
        "{vm}: {verdict} (attestation {}, boot {} #{}, at {})",
        r["id"],
        r["bootId"].as_str().unwrap_or("?"),
        att["bootCounter"],
        when(&r["at"], "?")
    );
    let checks = att["appraisal"]["checks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let count = |o: &str| checks.iter().filter(|c| c["outcome"] == o).count();
    println!(
        "  checks: {} passed, {} failed, {} skipped",
        count("pass"),
        count("fail"),
        count("skipped")
    );
    for l in failed_lines(att) {
        println!("{l}");
    }
    if let Some(ev) = att["baselineEvent"].as_str() {
        println!("  baseline: {ev}");
    }
    for phase in ["earlyBootReportEvent", "lateBootReportEvent"] {
        let p = &att["bootReport"][phase];
        if !p.is_null() {
            println!(
                "  {phase}: policyEvaluationPassed={} ({} deviations)",
                p["policyEvaluationPassed"],
                p["deviations"].as_array().map_or(0, Vec::len)
            );
        }
    }
    if r["token"].is_string() {
        println!("  token: issued (RS256; verify against /.well-known/jwks.json)");
    }
}

pub fn attestation(cmd: AttestationCommand) -> Result<ExitCode> {
    match cmd {
        AttestationCommand::Show { vm, conn } => {
            let r = conn.get(&format!("/v1/vms/{}/attestations/latest", enc(&vm)))?;
            if conn.json {
                print_json(&r);
            } else {
                show_attestation(&vm, &r);
            }
            Ok(if r["healthy"] == true {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        AttestationCommand::History { vm, limit, conn } => {
            let r = conn.get(&format!("/v1/vms/{}/attestations?limit={limit}", enc(&vm)))?;
            if conn.json {
                print_json(&r);
            } else {
                for a in r["value"].as_array().into_iter().flatten() {
                    let failed: Vec<&str> = a["attestation"]["verdict"]["failed"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|f| f["name"].as_str())
                        .collect();
                    println!(
                        "{:>6}  at {}  boot #{} {}  {}{}",
                        a["id"],
                        when(&a["at"], "?"),
                        a["attestation"]["bootCounter"],
                        a["bootId"].as_str().unwrap_or("?"),
                        if a["healthy"] == true {
                            "healthy"
                        } else {
                            "UNHEALTHY"
                        },
                        if failed.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", failed.join(", "))
                        }
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AttestationCommand::Now { vm, conn } => {
            let r = conn.post(&format!("/v1/vms/{}/attest", enc(&vm)), json!({}))?;
            if conn.json {
                print_json(&r);
            } else {
                println!(
                    "{vm}: {}",
                    if r["healthy"] == true {
                        "healthy"
                    } else {
                        "UNHEALTHY"
                    }
                );
                for l in failed_lines(&r["attestation"]) {
                    println!("{l}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn show_baseline(r: &Value) {
    println!(
        "{}: baseline {} (version {})",
        r["vmId"].as_str().unwrap_or("?"),
        r["state"].as_str().unwrap_or("?"),
        r["version"]
    );
    if let Some(p) = r["pending"].as_object() {
        println!(
            "  proposed by boot #{} at {}: approve with `trustlaunch baseline approve {}`",
            p.get("bootCounter").unwrap_or(&Value::Null),
            when(p.get("since").unwrap_or(&Value::Null), "?"),
            r["vmId"].as_str().unwrap_or("VM")
        );
    }
    if let Some(l) = r["learn"].as_object() {
        if l.get("relearn") == Some(&Value::Bool(true)) {
            println!(
                "  relearn requested by {} until {}",
                l.get("actor").and_then(Value::as_str).unwrap_or("?"),
                when(l.get("until").unwrap_or(&Value::Null), "?")
            );
        }
    }
    if let Some(b) = r["baseline"].as_object() {
        let source = &b["source"];
        println!(
            "  source: {} {}",
            source["kind"].as_str().unwrap_or("?"),
            source
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| *k != "kind")
                .map(|(_, v)| v.as_str().unwrap_or("").to_owned())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    for a in r["audit"].as_array().into_iter().flatten() {
        println!(
            "  v{:<3} {}  {:<9} by {}",
            a["version"],
            when(&a["at"], "?"),
            a["action"].as_str().unwrap_or("?"),
            a["actor"].as_str().unwrap_or("?")
        );
    }
}

pub fn baseline(cmd: BaselineCommand) -> Result<ExitCode> {
    let (conn, r) = match cmd {
        BaselineCommand::Show { vm, conn } => {
            let r = conn.get(&format!("/v1/vms/{}/baseline", enc(&vm)))?;
            if !conn.json {
                show_baseline(&r);
                return Ok(ExitCode::SUCCESS);
            }
            (conn, r)
        }
        BaselineCommand::Approve {
            vm,
            if_version,
            conn,
        } => {
            let r = conn.post(
                &format!("/v1/vms/{}/baseline/approve", enc(&vm)),
                json!({"ifVersion": if_version}),
            )?;
            (conn, r)
        }
        BaselineCommand::Pin {
            vm,
            attestation,
            if_version,
            conn,
        } => {
            let r = conn.post(
                &format!("/v1/vms/{}/baseline/pin", enc(&vm)),
                json!({"attestationId": attestation, "ifVersion": if_version}),
            )?;
            (conn, r)
        }
        BaselineCommand::Relearn { vm, conn } => {
            let r = conn.post(&format!("/v1/vms/{}/baseline/relearn", enc(&vm)), json!({}))?;
            (conn, r)
        }
    };
    let _ = conn.json;
    print_json(&r);
    Ok(ExitCode::SUCCESS)
}

/// `trustlaunch token ...`
#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make an API token; its secret is printed once.
    Create {
        /// A name for people and audit trails.
        name: String,
        /// reader | operator | admin
        #[arg(long, default_value = "reader")]
        role: String,
        /// It stops working after this long (e.g. 90d, 12h; default never).
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<std::time::Duration>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Every token: id, name, role, expiry, revocation, last use.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Revoke a token by its id (see `token list`).
    Revoke {
        /// The token's id (12 hex digits).
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

pub fn token(cmd: TokenCommand) -> Result<ExitCode> {
    match cmd {
        TokenCommand::Create {
            name,
            role,
            expires_in,
            conn,
        } => {
            let r = conn.post(
                "/v1/tokens",
                json!({"name": name, "role": role, "expiresIn": expires_in.map(|d| d.as_secs())}),
            )?;
            if conn.json {
                print_json(&r);
            } else {
                println!("{}", r["token"].as_str().unwrap_or(""));
                eprintln!(
                    "token {} ({}, {}), expires {}: shown once, keep it secret",
                    r["id"].as_str().unwrap_or("?"),
                    r["name"].as_str().unwrap_or("?"),
                    r["role"].as_str().unwrap_or("?"),
                    when(&r["expiresAt"], "never")
                );
            }
        }
        TokenCommand::List { conn } => {
            let r = conn.get("/v1/tokens")?;
            if conn.json {
                print_json(&r);
            } else {
                println!(
                    "{:<12}  {:<20}  {:<8}  {:<23}  {:<23}  LAST USED",
                    "ID", "NAME", "ROLE", "EXPIRES", "REVOKED"
                );
                for t in r["value"].as_array().into_iter().flatten() {
                    println!(
                        "{:<12}  {:<20}  {:<8}  {:<23}  {:<23}  {}",
                        t["id"].as_str().unwrap_or("?"),
                        t["name"].as_str().unwrap_or("?"),
                        t["role"].as_str().unwrap_or("?"),
                        when(&t["expiresAt"], "never"),
                        when(&t["revokedAt"], "-"),
                        when(&t["lastUsedAt"], "never")
                    );
                }
            }
        }
        TokenCommand::Revoke { id, conn } => {
            let r = conn.call(
                reqwest::Method::DELETE,
                &format!("/v1/tokens/{}", enc(&id)),
                None,
            )?;
            if conn.json {
                print_json(&r);
            } else {
                println!("revoked token {}", r["revoked"].as_str().unwrap_or(&id));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn security(cmd: SecurityCommand) -> Result<ExitCode> {
    match cmd {
        SecurityCommand::Recommendations { conn } => {
            let r = conn.get("/v1/security/recommendations")?;
            if conn.json {
                print_json(&r);
            } else if r["value"].as_array().is_none_or(Vec::is_empty) {
                println!("no recommendations");
            } else {
                for x in r["value"].as_array().into_iter().flatten() {
                    println!(
                        "{:<8} {:<20} {}\n         {}",
                        x["severity"].as_str().unwrap_or(""),
                        x["vm_id"].as_str().unwrap_or(""),
                        x["name"].as_str().unwrap_or(""),
                        x["reason"].as_str().unwrap_or("")
                    );
                }
            }
        }
        SecurityCommand::Alerts { vm, state, conn } => {
            let mut q = Vec::new();
            if let Some(v) = vm {
                q.push(format!("vm={}", enc(&v)));
            }
            if let Some(s) = state {
                q.push(format!("state={}", enc(&s)));
            }
            let r = conn.get(&format!("/v1/security/alerts?{}", q.join("&")))?;
            if conn.json {
                print_json(&r);
            } else if r["value"].as_array().is_none_or(Vec::is_empty) {
                println!("no alerts");
            } else {
                for a in r["value"].as_array().into_iter().flatten() {
                    println!(
                        "{:<9} {:<6} {}  [{}]\n          {}\n          key: {}",
                        a["state"].as_str().unwrap_or(""),
                        a["severity"].as_str().unwrap_or(""),
                        a["name"].as_str().unwrap_or(""),
                        a["vm_id"].as_str().unwrap_or(""),
                        a["detail"].as_str().unwrap_or(""),
                        a["key"].as_str().unwrap_or("")
                    );
                    let hooks: Vec<String> = a["deliveries"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|d| {
                            let state = d["state"].as_str().unwrap_or("?");
                            match d["lastError"].as_str() {
                                Some(e) if state != "delivered" => {
                                    format!(
                                        "{} {state} ({e})",
                                        d["webhook"].as_str().unwrap_or("?")
                                    )
                                }
                                _ => format!("{} {state}", d["webhook"].as_str().unwrap_or("?")),
                            }
                        })
                        .collect();
                    if !hooks.is_empty() {
                        println!("          webhooks: {}", hooks.join(", "));
                    }
                }
            }
        }
        SecurityCommand::Dismiss { key, conn } => {
            let r = conn.post(
                &format!("/v1/security/alerts/{}/dismiss", enc(&key)),
                json!({}),
            )?;
            print_json(&r);
        }
        SecurityCommand::Suppress {
            name,
            kind,
            reason,
            vms,
            expires_in,
            delete,
            conn,
        } => {
            let path = format!("/v1/security/suppressions/{}", enc(&name));
            let r = if delete {
                conn.call(reqwest::Method::DELETE, &path, None)?
            } else {
                conn.call(
                    reqwest::Method::PUT,
                    &path,
                    Some(json!({
                        "kind": kind,
                        "reason": reason,
                        "vmIds": (!vms.is_empty()).then_some(vms),
                        "expiresIn": expires_in.map(|d| d.as_secs()),
                    })),
                )?
            };
            print_json(&r);
        }
    }
    Ok(ExitCode::SUCCESS)
}
