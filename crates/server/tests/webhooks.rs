//! Webhooks worth trusting, against real receivers on loopback: an HTTPS
//! receiver (rustls, a certificate from a test CA made with rcgen, trusted
//! through the webhook CA option) verifies each payload's HMAC-SHA256 with
//! the shared secret; a retried delivery keeps its id; webhooks that are
//! down, failing or not trusted are dead-lettered after the (shortened)
//! retry window — in the alert's delivery state, a metric and a logged
//! warning; and a reader sees webhooks by name only, never a URL or a
//! secret.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use trustlaunch_server::webhook::{RetryPolicy, Webhook};
use trustlaunch_server::Config;

const SECRET: &[u8] = b"whsec-7f3a9c1e5b2d4f6a8c0e";

/// What the server logs, for its warnings.
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        struct W;
        impl std::io::Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                logs().lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let _ = tracing::subscriber::set_global_default(
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_writer(|| W)
                .finish(),
        );
        Mutex::new(Vec::new())
    })
}

fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

/// A request a receiver got.
#[derive(Clone, Debug)]
struct Got {
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Got>>>,
    /// The status it answers with now.
    status: Arc<AtomicU16>,
}

/// An HTTP/1.1 receiver on loopback, over TLS with `tls` (leaf PEM, key
/// PEM): records each request and answers `status`; with `switch` =
/// (n, then), `then` after its n-th answer.
async fn receiver(
    tls: Option<(&str, &str)>,
    status: u16,
    switch: Option<(usize, u16)>,
) -> Receiver {
    use rustls::pki_types::pem::PemObject as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tls.map(|(cert, key)| {
        let chain = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let got = Arc::new(Mutex::new(Vec::new()));
    let answer = Arc::new(AtomicU16::new(status));
    let count = Arc::new(AtomicUsize::new(0));
    let (sink, st) = (got.clone(), answer.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (sink, st, count, acceptor) =
                (sink.clone(), st.clone(), count.clone(), acceptor.clone());
            tokio::spawn(async move {
                match acceptor {
                    Some(a) => {
                        if let Ok(s) = a.accept(tcp).await {
                            serve(s, sink, st, count, switch).await;
                        }
                    }
                    None => serve(tcp, sink, st, count, switch).await,
                }
            });
        }
    });
    let scheme = if tls.is_some() { "https" } else { "http" };
    Receiver {
        url: format!("{scheme}://{addr}/hooks/trustlaunch"),
        got,
        status: answer,
    }
}

async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: S,
    sink: Arc<Mutex<Vec<Got>>>,
    status: Arc<AtomicU16>,
    count: Arc<AtomicUsize>,
    switch: Option<(usize, u16)>,
) {
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut headers = HashMap::new();
        loop {
            line.clear();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let len = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if r.read_exact(&mut body).await.is_err() {
            return;
        }
        sink.lock().unwrap().push(Got { headers, body });
        let code = status.load(Ordering::SeqCst);
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some((after, then)) = switch {
            if n >= after {
                status.store(then, Ordering::SeqCst);
            }
        }
        let answer = format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\n\r\n");
        if r.get_mut().write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Whether `got` carries a valid signature of its exact body under
/// `secret` (checked here with the hmac crate, not the server's code).
fn signed_with(got: &Got, secret: &[u8]) -> bool {
    let Some(hex) = got
        .headers
        .get("x-trustlaunch-signature-256")
        .and_then(|v| v.strip_prefix("sha256="))
    else {
        return false;
    };
    let Some(sig) = trustlaunch_eventlog::hex::decode(hex) else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap();
    mac.update(&got.body);
    mac.verify_slice(&sig).is_ok()
}

/// Raises an alert: a registered VM's recorded boot, replayed to answer a
/// new challenge, fails `quote.nonce`.
async fn raise_alert(s: &Srv) -> String {
    let tiny = case("tiny-sb", "attestation-boot1.json");
    let vm = unique("hook");
    s.register(&vm, &registration(&tiny)).await;
    let c = s.challenge(&vm, None).await;
    let (st, r) = s
        .submit(&vm, c["id"].as_str().unwrap(), &tiny.evidence, None)
        .await;
    assert_eq!(st, 201, "{r}");
    assert_eq!(r["healthy"], false);
    vm
}

/// The alert's deliveries once none is pending.
async fn settled(s: &Srv, vm: &str, limit: Duration) -> Vec<Value> {
    let t0 = Instant::now();
    loop {
        let alerts = s.alerts(vm).await;
        assert_eq!(alerts.len(), 1, "{alerts:#?}");
        let d = alerts[0]["deliveries"].as_array().unwrap().clone();
        if !d.is_empty() && d.iter().all(|x| x["state"] != "pending") {
            return d;
        }
        assert!(
            t0.elapsed() < limit,
            "still pending after {limit:?}: {d:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn by_name<'a>(d: &'a [Value], name: &str) -> &'a Value {
    d.iter()
        .find(|x| x["webhook"] == name)
        .unwrap_or_else(|| panic!("no delivery to {name}: {d:#?}"))
}

fn now() -> u64 {
    trustlaunch_server::service::now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_webhook_gets_signed_payloads_and_readers_see_no_url() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (ca, leaf, key) = test_pki("webhook test CA");
    std::fs::write(dir.path().join("hooks-ca.pem"), &ca).unwrap();
    let rx = receiver(Some((&leaf, &key)), 200, None).await;
    // A URL with a credential in its query, as some receivers want.
    let url = format!("{}?key=q-cred-48151623", rx.url);
    let db = format!("sqlite://{}", dir.path().join("s.db").display());
    let s = start_with(
        &db,
        Config {
            vtpm_ca: platform_ca(),
            webhooks: vec![Webhook::new("siem", &url, SECRET.to_vec()).unwrap()],
            webhook_ca: vec![dir.path().join("hooks-ca.pem")],
            ..Config::default()
        },
    )
    .await;
    let vm = raise_alert(&s).await;
    let d = settled(&s, &vm, Duration::from_secs(30)).await;
    let siem = by_name(&d, "siem");
    assert_eq!(siem["state"], "delivered", "{siem}");
    assert_eq!(siem["attempts"], 1);

    // What the receiver got: the body signed with the shared secret, and
    // with no other; id, time and event in the headers and the body.
    let got = rx.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    let g = &got[0];
    assert!(signed_with(g, SECRET), "the HMAC does not verify: {g:?}");
    assert!(!signed_with(g, b"another-secret-0123456789"));
    let mut tampered = g.clone();
    tampered.body.push(b' ');
    assert!(!signed_with(&tampered, SECRET));
    let body: Value = serde_json::from_slice(&g.body).unwrap();
    assert_eq!(body["event"], "raised");
    assert_eq!(body["webhook"], "siem");
    assert_eq!(body["alert"]["vm_id"], vm.as_str());
    assert_eq!(body["delivery"], siem["id"]);
    assert_eq!(
        g.headers["x-trustlaunch-delivery"],
        siem["id"].as_str().unwrap()
    );
    assert_eq!(g.headers["x-trustlaunch-event"], "raised");
    let ts: u64 = g.headers["x-trustlaunch-timestamp"].parse().unwrap();
    assert_eq!(body["sentAt"], ts);
    assert!(now().abs_diff(ts) < 120, "timestamp {ts}");
    assert_eq!(g.headers["content-type"], "application/json");

    // A reader sees the webhook by name; no URL, query or secret, in the
    // alerts or the metrics.
    let (st, t) = s
        .call(
            Method::POST,
            "/v1/tokens",
            Some(json!({"name": unique("reader"), "role": "reader"})),
        )
        .await;
    assert_eq!(st, 201, "{t}");
    let reader = t["token"].as_str().unwrap();
    for path in [
        "/v1/security/alerts",
        &format!("/v1/security/alerts?vm={vm}"),
        "/metrics",
    ] {
        let r = s
            .http
            .get(format!("{}{path}", s.url))
            .bearer_auth(reader)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let text = r.text().await.unwrap();
        let origin = rx
            .url
            .trim_start_matches("https://")
            .split('/')
            .next()
            .unwrap();
        for secret in [
            "https://",
            "/hooks/trustlaunch",
            "q-cred-48151623",
            origin,
            std::str::from_utf8(SECRET).unwrap(),
        ] {
            assert!(!text.contains(secret), "{path} shows {secret:?}: {text}");
        }
        if path.contains("alerts") {
            assert!(text.contains(r#""webhook":"siem""#), "{text}");
        }
    }
    let log = log_text();
    assert!(
        !log.contains("q-cred-48151623") && !log.contains("whsec-"),
        "{log}"
    );
    s.running.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_webhooks_are_retried_then_dead_lettered_and_say_so() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let (ca, leaf, key) = test_pki("webhook test CA");
    let (_, other_leaf, other_key) = test_pki("a CA the server was not given");
    std::fs::write(dir.path().join("hooks-ca.pem"), &ca).unwrap();
    let ok = receiver(Some((&leaf, &key)), 200, None).await;
    let flaky = receiver(Some((&leaf, &key)), 503, Some((1, 200))).await;
    let failing = receiver(Some((&leaf, &key)), 500, None).await;
    // Its certificate is from a CA nobody told the server about.
    let untrusted = receiver(Some((&other_leaf, &other_key)), 200, None).await;
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", l.local_addr().unwrap())
    };
    let window = Duration::from_secs(2);
    let db = format!("sqlite://{}", dir.path().join("s.db").display());
    let s = start_with(
        &db,
        Config {
            vtpm_ca: platform_ca(),
            webhooks: vec![
                Webhook::new("ok", &ok.url, SECRET.to_vec()).unwrap(),
                Webhook::new("flaky", &flaky.url, SECRET.to_vec()).unwrap(),
                Webhook::new("failing", &failing.url, SECRET.to_vec()).unwrap(),
                Webhook::new("untrusted", &untrusted.url, SECRET.to_vec()).unwrap(),
                Webhook::new("down", &down, SECRET.to_vec()).unwrap(),
            ],
            webhook_ca: vec![dir.path().join("hooks-ca.pem")],
            webhook_retry: RetryPolicy {
                window,
                first_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(400),
            },
            ..Config::default()
        },
    )
    .await;
    let vm = raise_alert(&s).await;
    let d = settled(&s, &vm, Duration::from_secs(30)).await;
    assert_eq!(by_name(&d, "ok")["state"], "delivered");
    assert_eq!(by_name(&d, "ok")["attempts"], 1);
    // Retried: the second attempt, same delivery id, was acknowledged.
    let f = by_name(&d, "flaky");
    assert_eq!(f["state"], "delivered", "{f}");
    assert_eq!(f["attempts"], 2);
    let flaky_got = flaky.got.lock().unwrap().clone();
    assert_eq!(flaky_got.len(), 2);
    assert!(flaky_got.iter().all(|g| signed_with(g, SECRET)
        && g.headers["x-trustlaunch-delivery"] == f["id"].as_str().unwrap()));
    assert_eq!(flaky.status.load(Ordering::SeqCst), 200);

    // Given up after the window, each with why.
    for (name, why) in [
        ("failing", "HTTP 500"),
        ("untrusted", "UnknownIssuer"),
        ("down", "onnection refused"),
    ] {
        let x = by_name(&d, name);
        assert_eq!(x["state"], "deadLettered", "{x}");
        assert!(x["attempts"].as_u64().unwrap() >= 2, "{x}");
        assert!(
            x["lastError"].as_str().unwrap().contains(why),
            "{name}: {x}"
        );
        let span = x["lastAttemptAt"].as_u64().unwrap() - x["queuedAt"].as_u64().unwrap();
        assert!(
            span >= window.as_secs(),
            "{name} given up before the window: {x}"
        );
    }
    let failing_got = failing.got.lock().unwrap().clone();
    assert!(failing_got.len() >= 2);
    assert!(failing_got.iter().all(|g| signed_with(g, SECRET)));
    assert!(
        untrusted.got.lock().unwrap().is_empty(),
        "sent to an untrusted server"
    );

    // The metric and the log say so.
    let metrics = s
        .http
        .get(format!("{}/metrics", s.url))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "trustlaunch_webhook_dead_letters_total 3",
        "trustlaunch_webhook_dead_lettered 1",
        "trustlaunch_webhook_pending 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
    let log = log_text();
    for name in ["failing", "untrusted", "down"] {
        let id = by_name(&d, name)["id"].as_str().unwrap().to_owned();
        assert!(
            log.lines().any(|l| l.contains("WARN")
                && l.contains(&format!("webhook {name}: delivery {id}"))
                && l.contains("dead-lettered")),
            "no warning for {name}: {log}"
        );
    }
    assert!(!log.contains(&down) && !log.contains(&failing.url), "{log}");
    s.running.abort();
}

#[tokio::test]
async fn webhooks_need_a_name_a_url_and_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "0123456789abcdef0123\n").unwrap();
    let h = Webhook::from_spec("pager=https://pager.example/in?x=1", &secret).unwrap();
    assert_eq!(h.name(), "pager");
    std::fs::write(&secret, "short\n").unwrap();
    let e = Webhook::from_spec("pager=https://pager.example/in", &secret).unwrap_err();
    assert!(
        e.to_string().contains("secret") && e.to_string().contains("16"),
        "{e}"
    );
    let e = Webhook::from_spec("https://pager.example/in", &secret).unwrap_err();
    assert!(e.to_string().contains("name"), "{e}");
    // Two webhooks of one name, or a CA file that holds none, stop the
    // server before it starts.
    let db = format!("sqlite://{}", dir.path().join("s.db").display());
    let twice = vec![
        hook("a", "https://x.example/1"),
        hook("a", "https://x.example/2"),
    ];
    std::fs::write(dir.path().join("empty.pem"), "").unwrap();
    for (webhooks, ca, why) in [
        (twice, vec![], "webhook name \"a\""),
        (
            vec![hook("a", "https://x.example/1")],
            vec![dir.path().join("empty.pem")],
            "no CERTIFICATE",
        ),
    ] {
        let r = trustlaunch_server::start(Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            db: db.clone(),
            vtpm_ca: platform_ca(),
            webhooks,
            webhook_ca: ca,
            ..Config::default()
        })
        .await;
        match r {
            Ok(r) => {
                r.abort();
                panic!("started");
            }
            Err(e) => assert!(e.to_string().contains(why), "{e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_owed_to_a_webhook_no_longer_configured_is_given_up_at_the_window() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("s.db").display());
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", l.local_addr().unwrap())
    };
    // A server whose webhook is down owes it a delivery...
    let a = start_with(
        &db,
        Config {
            vtpm_ca: platform_ca(),
            webhooks: vec![hook("retired", &down)],
            ..Config::default()
        },
    )
    .await;
    let vm = raise_alert(&a).await;
    let t0 = Instant::now();
    while a.alerts(&vm).await[0]["deliveries"][0]["attempts"] == 0 {
        assert!(t0.elapsed() < Duration::from_secs(20), "never attempted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.running.abort();
    // ... and the next one on the database has no such webhook.
    let b = start_with(
        &db,
        Config {
            vtpm_ca: platform_ca(),
            webhook_retry: RetryPolicy {
                window: Duration::from_secs(3),
                ..RetryPolicy::default()
            },
            ..Config::default()
        },
    )
    .await;
    let pending = &b.alerts(&vm).await[0]["deliveries"][0];
    assert_eq!(pending["state"], "pending", "{pending}");
    let d = settled(&b, &vm, Duration::from_secs(30)).await;
    let x = by_name(&d, "retired");
    assert_eq!(x["state"], "deadLettered", "{x}");
    assert_eq!(x["lastError"], "no webhook of this name is configured");
    b.running.abort();
}

/// Making or deleting a suppression rule silences alerts: the security
/// team hears of it as a signed event naming who did it, delivered like an
/// alert change (and shown with its deliveries in the audit log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suppression_rule_is_an_audited_event_the_webhooks_hear_of() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let rx = receiver(None, 200, None).await;
    let db = format!("sqlite://{}", dir.path().join("s.db").display());
    let s = start_with(
        &db,
        Config {
            vtpm_ca: platform_ca(),
            webhooks: vec![Webhook::new("siem", &rx.url, SECRET.to_vec()).unwrap()],
            ..Config::default()
        },
    )
    .await;
    let (st, r) = s
        .call(
            Method::PUT,
            "/v1/security/suppressions/quiet-lab",
            Some(json!({"reason": "secure-boot-off", "vmIds": ["lab1"]})),
        )
        .await;
    assert_eq!(st, 200, "{r}");
    let (st, _) = s
        .call(Method::DELETE, "/v1/security/suppressions/quiet-lab", None)
        .await;
    assert_eq!(st, 200);
    let t0 = std::time::Instant::now();
    let got = loop {
        let got = rx.got.lock().unwrap().clone();
        if got.len() >= 2 {
            break got;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "got {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let events: Vec<(String, Value)> = got
        .iter()
        .map(|g| {
            assert!(signed_with(g, SECRET), "{g:?}");
            let b: Value = serde_json::from_slice(&g.body).unwrap();
            (g.headers["x-trustlaunch-event"].clone(), b)
        })
        .collect();
    let put = events
        .iter()
        .find(|(e, _)| e == "suppression.put")
        .expect("suppression.put delivered");
    assert_eq!(put.1["audit"]["target"], "suppression/quiet-lab");
    assert!(put.1["audit"]["actor"]
        .as_str()
        .unwrap()
        .starts_with("token "));
    assert_eq!(put.1["audit"]["detail"]["vm_ids"], json!(["lab1"]));
    assert!(events.iter().any(|(e, _)| e == "suppression.delete"));
    // The audit log shows each delivered, by webhook name.
    let t0 = std::time::Instant::now();
    loop {
        let audit = s.get("/v1/audit?target=suppression/quiet-lab").await;
        let entries = audit["value"].as_array().unwrap().clone();
        assert_eq!(entries.len(), 2, "{audit}");
        if entries
            .iter()
            .all(|e| e["deliveries"][0]["state"] == "delivered")
        {
            assert!(!audit.to_string().contains(&rx.url));
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{audit}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.running.abort();
}
