//! Least authority, tried the way a caller with a lower role would: an
//! operator re-registering or weakening a VM the platform runs, silencing
//! every alert, minting tokens; revoked and expired tokens; `/metrics`
//! without a token; oversized bodies from a reader, refused before they
//! are read; the caller named in every audit entry.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use trustlaunch_server::auth::Caller;
use trustlaunch_store::Role;

struct As<'a> {
    s: &'a Srv,
    token: String,
}

impl As<'_> {
    async fn call(&self, m: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self
            .s
            .http
            .request(m, format!("{}{path}", self.s.url))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let st = resp.status().as_u16();
        (st, resp.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_cannot_change_what_the_platform_runs_or_silence_the_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let db = &databases(dir.path())[0];
    let s = start(db, cas(), vec![]).await;
    let op = As {
        s: &s,
        token: token_in(db, "ops-team", Role::Operator).await,
    };
    let tiny = case("tiny-sb", "attestation-boot1.json");

    // A VM the platform runs, registered by the platform itself.
    let vm = unique("platform-vm");
    s.running
        .service
        .register(&vm, &registration(&tiny), &Caller::platform())
        .await
        .unwrap();
    let before = s.get(&format!("/v1/vms/{vm}")).await;
    assert_eq!(before["registration"]["managedBy"], "platform");
    // Re-registering it with another EK, or with Secure Boot off: refused,
    // for an operator and for an admin alike, whatever the body claims.
    let mut other_ek = registration(&tiny);
    other_ek.ek_public = Some("00".repeat(40));
    other_ek.managed_by = trustlaunch_server::model::ManagedBy::Platform;
    let (st, r) = op
        .call(
            Method::PUT,
            &format!("/v1/vms/{vm}"),
            Some(serde_json::to_value(&other_ek).unwrap()),
        )
        .await;
    assert_eq!(st, 403, "{r}");
    let mut weaker = registration(&tiny);
    weaker.secure_boot_enabled = false;
    weaker.template = Default::default();
    let (st, _) = s
        .call(
            Method::PUT,
            &format!("/v1/vms/{vm}"),
            Some(serde_json::to_value(&weaker).unwrap()),
        )
        .await;
    assert_eq!(st, 403, "read-only for admins too");
    assert_eq!(s.get(&format!("/v1/vms/{vm}")).await, before, "unchanged");

    // A VM another host runs: the operator registers it, audited with the
    // token's id and name.
    let remote = unique("remote-vm");
    let (st, r) = op
        .call(
            Method::PUT,
            &format!("/v1/vms/{remote}"),
            Some(serde_json::to_value(registration(&tiny)).unwrap()),
        )
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["registration"]["managedBy"], "api");

    // Suppression rules: none without a selector; none fleet-wide but by
    // an admin; each with its author.
    for body in [json!({}), json!({"vmIds": []})] {
        let (st, r) = op
            .call(Method::PUT, "/v1/security/suppressions/all", Some(body))
            .await;
        assert_eq!(st, 400, "{r}");
    }
    let (st, r) = op
        .call(
            Method::PUT,
            "/v1/security/suppressions/quiet",
            Some(json!({"reason": "baseline-deviation"})),
        )
        .await;
    assert_eq!(st, 403, "fleet-wide by an operator: {r}");
    let (st, r) = op
        .call(
            Method::PUT,
            "/v1/security/suppressions/lab",
            Some(json!({"reason": "secure-boot-off", "vmIds": [remote], "expiresIn": 3600})),
        )
        .await;
    assert_eq!(st, 200, "{r}");
    assert!(r["author"].as_str().unwrap().ends_with("(ops-team)"), "{r}");
    assert!(r["expires_at"].as_u64().unwrap() > trustlaunch_server::service::now());
    let (st, r) = s
        .call(
            Method::PUT,
            "/v1/security/suppressions/fleet-sb",
            Some(json!({"reason": "secure-boot-off"})),
        )
        .await;
    assert_eq!(st, 200, "an admin may: {r}");

    // Tokens are an admin's.
    let (st, _) = op
        .call(
            Method::POST,
            "/v1/tokens",
            Some(json!({"name": "mine", "role": "admin"})),
        )
        .await;
    assert_eq!(st, 403);

    // The audit log names the caller of every change.
    let audit = s.get("/v1/audit?limit=100").await;
    let entries = audit["value"].as_array().unwrap();
    let by = |action: &str, target: &str| -> Vec<String> {
        entries
            .iter()
            .filter(|e| e["action"] == action && e["target"] == target)
            .map(|e| e["actor"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(by("registration.create", &format!("vm/{vm}")), ["platform"]);
    let remote_actor = by("registration.create", &format!("vm/{remote}"));
    assert_eq!(remote_actor.len(), 1);
    assert!(
        remote_actor[0].starts_with("token ") && remote_actor[0].ends_with("(ops-team)"),
        "{remote_actor:?}"
    );
    assert!(by("suppression.put", "suppression/lab")[0].ends_with("(ops-team)"));
    assert!(by("suppression.put", "suppression/fleet-sb")[0].contains("(test-admin"));
    // Nothing was written for the refused changes.
    assert!(by("suppression.put", "suppression/quiet").is_empty());
    assert_eq!(by("registration.update", &format!("vm/{vm}")).len(), 0);
    // Readers may not read the audit log.
    let reader = As {
        s: &s,
        token: token_in(db, "ro", Role::Reader).await,
    };
    assert_eq!(reader.call(Method::GET, "/v1/audit", None).await.0, 403);
    s.running.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expire_and_revoke_and_record_their_use() {
    let dir = tempfile::tempdir().unwrap();
    for db in databases(dir.path()) {
        let s = start(&db, cas(), vec![]).await;
        let (st, t) = s
            .call(
                Method::POST,
                "/v1/tokens",
                Some(json!({"name": "ci", "role": "reader", "expiresIn": 2})),
            )
            .await;
        assert_eq!(st, 201, "{t}");
        let short = As {
            s: &s,
            token: t["token"].as_str().unwrap().to_owned(),
        };
        assert_eq!(short.call(Method::GET, "/v1/vms", None).await.0, 200);
        let (st, t2) = s
            .call(
                Method::POST,
                "/v1/tokens",
                Some(json!({"name": "laptop", "role": "operator"})),
            )
            .await;
        assert_eq!(st, 201);
        let long = As {
            s: &s,
            token: t2["token"].as_str().unwrap().to_owned(),
        };
        assert_eq!(long.call(Method::GET, "/v1/vms", None).await.0, 200);
        // Listed with id, expiry and last use; never the secret.
        let list = s.get("/v1/tokens").await;
        let text = list.to_string();
        assert!(!text.contains(t2["token"].as_str().unwrap()));
        let laptop = list["value"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == t2["id"])
            .unwrap()
            .clone();
        assert!(laptop["lastUsedAt"].is_i64(), "{laptop}");
        assert!(laptop["expiresAt"].is_null());
        // Revoked: refused at once on this server, saying why.
        let (st, r) = s
            .call(
                Method::DELETE,
                &format!("/v1/tokens/{}", t2["id"].as_str().unwrap()),
                None,
            )
            .await;
        assert_eq!(st, 200, "{r}");
        let (st, r) = long.call(Method::GET, "/v1/vms", None).await;
        assert_eq!(st, 401);
        assert!(
            r["error"]["message"].as_str().unwrap().contains("revoked"),
            "{r}"
        );
        let (st, _) = s
            .call(
                Method::DELETE,
                &format!("/v1/tokens/{}", t2["id"].as_str().unwrap()),
                None,
            )
            .await;
        assert_eq!(st, 404, "revoked already");
        // Expired: refused.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let (st, r) = short.call(Method::GET, "/v1/vms", None).await;
        assert_eq!(st, 401);
        assert!(
            r["error"]["message"].as_str().unwrap().contains("expired"),
            "{r}"
        );
        // Both audited with the admin as the actor.
        let audit = s.get("/v1/audit?limit=50").await;
        let revoke = audit["value"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == "token.revoke")
            .unwrap()
            .clone();
        assert_eq!(
            revoke["target"],
            format!("token/{}", t2["id"].as_str().unwrap())
        );
        assert!(revoke["actor"].as_str().unwrap().contains("(test-admin"));
        s.running.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_reader_unless_public() {
    let dir = tempfile::tempdir().unwrap();
    let db = &databases(dir.path())[0];
    let s = start(db, cas(), vec![]).await;
    let r = s
        .http
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let reader = token_in(db, "prometheus", Role::Reader).await;
    let r = s
        .http
        .get(format!("{}/metrics", s.url))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("trustlaunch_up 1"));
    // Public: health, JWKS, discovery, the OpenAPI document.
    for p in [
        "/healthz",
        "/.well-known/jwks.json",
        "/openapi.json",
        "/.well-known/openid-configuration",
    ] {
        let r = s.http.get(format!("{}{p}", s.url)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{p}");
    }
    s.running.abort();
    let s = start_with(
        db,
        trustlaunch_server::Config {
            vtpm_ca: cas(),
            metrics_public: true,
            ..Default::default()
        },
    )
    .await;
    let r = s
        .http
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "--metrics-public");
    s.running.abort();
}

/// Sends a request head announcing `length` bytes of body, sends none of
/// it, and reads what the server answers within `within`.
fn head_only(addr: &str, head: &str, within: Duration) -> String {
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(within)).unwrap();
    c.write_all(head.as_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = c.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// A reader's evidence upload is refused from its head (no role), any
/// body over the evidence bound or a small route's over 1 MiB by its
/// length: nothing is read or held, and the server keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused_before_they_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let db = &databases(dir.path())[0];
    let s = start(db, cas(), vec![]).await;
    let reader = token_in(db, "ro", Role::Reader).await;
    let operator = token_in(db, "op", Role::Operator).await;
    let addr = s.url.trim_start_matches("http://").to_owned();
    let head = |method: &str, path: &str, token: &str, length: usize| {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        )
    };
    let rss0 = rss_kib();
    let t0 = Instant::now();
    for _ in 0..20 {
        let r = head_only(
            &addr,
            &head("POST", "/v1/vms/x/attestations", &reader, 30 << 20),
            Duration::from_secs(5),
        );
        assert!(r.starts_with("HTTP/1.1 403"), "reader: {r}");
        let r = head_only(
            &addr,
            &head("POST", "/v1/vms/x/attestations", &reader, 47 << 20),
            Duration::from_secs(5),
        );
        assert!(r.starts_with("HTTP/1.1 413"), "reader, 47 MiB: {r}");
    }
    let r = head_only(
        &addr,
        &head("POST", "/v1/vms/x/attestations", &operator, 40 << 20),
        Duration::from_secs(5),
    );
    assert!(
        r.starts_with("HTTP/1.1 413"),
        "operator over the evidence bound: {r}"
    );
    let r = head_only(
        &addr,
        &head("PUT", "/v1/vms/x", &operator, 2 << 20),
        Duration::from_secs(5),
    );
    assert!(
        r.starts_with("HTTP/1.1 413"),
        "a registration over 1 MiB: {r}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "answered without waiting for the bodies"
    );
    let grown = rss_kib().saturating_sub(rss0);
    assert!(grown < 16 << 10, "RSS grew {grown} KiB");
    let r = s
        .http
        .get(format!("{}/healthz", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    s.running.abort();
}
