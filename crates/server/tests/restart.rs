//! The server killed in the middle of attestations and started again on
//! the same database: every attestation is recorded exactly once (the
//! retries are idempotent per nonce), nothing is lost, no alert is
//! duplicated, and undelivered webhook notifications are delivered after
//! the restart. Against SQLite and (when provided) PostgreSQL.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_attestation_loses_nothing_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for db in databases(dir.path()) {
        restart(&db).await;
    }
}

async fn restart(db: &str) {
    let tiny = case("tiny-sb", "attestation-boot1.json");
    let mut g = guest(&tiny);
    // A webhook that is down during the first server's life.
    let hook_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let hook = format!("http://{hook_addr}/hook");
    let a = start(db, cas(), vec![common::hook("restart", &hook)]).await;
    // The guest's own components stand for its image's prediction.
    let probe = unique("probe");
    a.register(&probe, &guest_registration(&tiny, &g)).await;
    let (_, clean) = a
        .call(
            reqwest::Method::POST,
            "/v1/appraisals",
            Some(json!({"vmId": probe, "nonce": "03".repeat(32), "evidence": g.evidence(&[3; 32]).unwrap()})),
        )
        .await;
    let mut reg = guest_registration(&tiny, &g);
    reg.predicted_baseline = Some(trustlaunch_attestation::Baseline {
        source: trustlaunch_attestation::BaselineSource::Predicted {
            image: "tiny".into(),
        },
        measurements: serde_json::from_value(clean["measurements"].clone()).unwrap(),
    });
    let vms: Vec<String> = (0..12).map(|_| unique("restart")).collect();
    for vm in &vms {
        a.register(vm, &reg).await;
    }
    // Per VM, two answered challenges: the clean boot (healthy) and one
    // whose PCR values were edited (fails quote.pcr_digest: one alert).
    let ak = g.ak_public().unwrap();
    let hex =
        |v: &serde_json::Value| trustlaunch_eventlog::hex::decode(v.as_str().unwrap()).unwrap();
    let mut jobs = Vec::new();
    for vm in &vms {
        for tamper in [false, true] {
            let c = a.challenge(vm, Some(&ak)).await;
            let mut e = g.evidence(&hex(&c["nonce"])).unwrap();
            if tamper {
                e.pcrs[0].values[0].1 .0[0] ^= 1;
            }
            let secret = g
                .activate(
                    &hex(&c["credential"]["credentialBlob"]),
                    &hex(&c["credential"]["encryptedSecret"]),
                )
                .unwrap();
            jobs.push((vm.clone(), c["id"].as_str().unwrap().to_owned(), e, secret));
        }
    }
    // Fire them all, and kill the server while they are in flight.
    let mut handles = Vec::new();
    for (vm, id, e, secret) in jobs.clone() {
        let (url, token) = (a.url.clone(), a.token.clone());
        handles.push(tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{url}/v1/vms/{vm}/attestations"))
                .bearer_auth(token)
                .json(&json!({
                    "challengeId": id,
                    "activatedSecret": trustlaunch_eventlog::hex::encode(&secret),
                    "evidence": e,
                }))
                .timeout(Duration::from_secs(20))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
    a.running.abort();
    // What each host saw: recorded (201), or no answer (the kill may have
    // come after the record was written and before the answer went out).
    let mut first = Vec::new();
    for h in handles {
        first.push(h.await.unwrap().ok());
    }
    let done_before = first.iter().filter(|s| **s == Some(201)).count();
    // A new server on the same database; the hosts retry everything with
    // the same challenges (still open, or answered: then the first result).
    let hook_listener = tokio::net::TcpListener::bind(hook_addr).await.unwrap();
    let received = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::<serde_json::Value>::new()));
    let sink = received.clone();
    tokio::spawn(async move {
        let app = axum_like_hook(sink);
        let _ = app(hook_listener).await;
    });
    let b = start(db, cas(), vec![common::hook("restart", &hook)]).await;
    let mut statuses = BTreeMap::new();
    for ((vm, id, e, secret), before) in jobs.iter().zip(&first) {
        let (st, r) = b.submit(vm, id, e, Some(secret)).await;
        assert!(st == 200 || st == 201, "{st}: {r}");
        if *before == Some(201) {
            assert_eq!(
                st, 200,
                "recorded before the kill: the retry is that record"
            );
        }
        *statuses.entry(st).or_insert(0) += 1;
    }
    assert!(statuses.get(&200).copied().unwrap_or(0) >= done_before);
    for vm in &vms {
        let h = b.get(&format!("/v1/vms/{vm}/attestations?limit=100")).await;
        assert_eq!(
            h["value"].as_array().unwrap().len(),
            2,
            "{vm}: each attestation exactly once"
        );
        let alerts = b.alerts(vm).await;
        let open: Vec<_> = alerts.iter().filter(|x| x["state"] != "resolved").collect();
        assert!(open.len() <= 1, "{vm}: no duplicate alert: {alerts:#?}");
        // The tampered one's alert exists unless the clean boot came last
        // (then it is resolved): either way exactly one alert record.
        assert_eq!(alerts.len(), 1, "{vm}: {alerts:#?}");
    }
    // Notifications that the first server could not deliver arrive now:
    // each alert's latest state (transitions made while the webhook was
    // down are coalesced into the latest).
    let t0 = std::time::Instant::now();
    let mut current = BTreeMap::new();
    for vm in &vms {
        let a = &b.alerts(vm).await[0];
        current.insert(
            a["key"].as_str().unwrap().to_owned(),
            a["state"].as_str().unwrap().to_owned(),
        );
    }
    loop {
        let got = received.lock().await.clone();
        let missing: Vec<_> = current
            .iter()
            .filter(|(k, state)| {
                let event = if state.as_str() == "active" {
                    "raised"
                } else {
                    "resolved"
                };
                !got.iter()
                    .any(|d| d["alert"]["key"] == k.as_str() && d["event"] == event)
            })
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "not delivered: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.running.abort();
}

/// A minimal HTTP/1.1 receiver for webhook POSTs (JSON bodies), answering
/// 200.
fn axum_like_hook(
    sink: std::sync::Arc<tokio::sync::Mutex<Vec<serde_json::Value>>>,
) -> impl FnOnce(
    tokio::net::TcpListener,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    move |listener| {
        Box::pin(async move {
            use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let sink = sink.clone();
                tokio::spawn(async move {
                    let (r, mut w) = sock.into_split();
                    let mut r = BufReader::new(r);
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let mut len = 0usize;
                        loop {
                            line.clear();
                            if r.read_line(&mut line).await.unwrap_or(0) == 0 || line == "\r\n" {
                                break;
                            }
                            if let Some(v) =
                                line.to_ascii_lowercase().strip_prefix("content-length:")
                            {
                                len = v.trim().parse().unwrap_or(0);
                            }
                        }
                        let mut body = vec![0; len];
                        if r.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        if let Ok(v) = serde_json::from_slice(&body) {
                            sink.lock().await.push(v);
                        }
                        if w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        })
    }
}
