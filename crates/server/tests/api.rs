//! The attestation service over HTTP on recorded evidence of real boots,
//! against SQLite and (when the test command provides it) PostgreSQL:
//! enrollment, auto-learned baselines, tokens verified against the JWKS,
//! boot reports, relearn and pin (audited), the tamper suite with the
//! alert each attack raises, roles, and the OpenAPI document.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use trustlaunch_attestation::token::{self, Jwks};
use trustlaunch_protocol::Bytes;
use trustlaunch_tpm::public::Public;

fn fresh_nonce(seed: u8) -> Vec<u8> {
    let mut n = vec![seed; 32];
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        .to_le_bytes();
    n[..16].copy_from_slice(&t);
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_enroll_learn_token_reports_relearn() {
    let dir = tempfile::tempdir().unwrap();
    for db in databases(dir.path()) {
        lifecycle(&db).await;
    }
}

async fn lifecycle(db: &str) {
    let s = start(db, platform_ca(), vec![]).await;
    let boot1 = case("tiny-sb", "attestation-boot1.json");
    let boot2 = case("tiny-sb", "attestation-boot2.json");
    let vm = unique("tiny");
    s.register(&vm, &registration(&boot1)).await;

    // First boot: healthy, enrolled, baseline learned, token issued.
    let (st, r1) = s
        .submit(&vm, &boot1.evidence, &boot1.evidence.nonce.0, true)
        .await;
    assert_eq!(st, 201, "{db}: {r1}");
    assert_eq!(r1["healthy"], true, "{db}: {:?}", failed(&r1));
    assert_eq!(r1["attestation"]["bootCounter"], 1);
    assert!(r1["attestation"]["baselineEvent"]
        .as_str()
        .unwrap()
        .starts_with("learned from boot"));
    let vminfo = s.get(&format!("/v1/vms/{vm}")).await;
    assert!(vminfo["enrolledAt"].is_i64(), "{vminfo}");
    assert_eq!(vminfo["attestationHealth"], "healthy");

    // The token verifies against the published JWKS, with Azure's claims.
    let jwks_json = s
        .http
        .get(format!("{}/.well-known/jwks.json", s.url))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let jwks = Jwks::from_json(&jwks_json).unwrap();
    let now = trustlaunch_server::service::now();
    let claims = token::verify(r1["token"].as_str().unwrap(), &jwks, &s.url, now, 60)
        .unwrap_or_else(|e| panic!("token: {e}"));
    assert_eq!(claims["secureboot"], true);
    assert_eq!(claims["x-ms-attestation-type"], "azurevm");
    assert_eq!(claims["x-ms-azurevm-vmid"], vm);
    assert_eq!(claims["x-ms-azurevm-dbvalidated"], true);

    // A retry of the same (vm, nonce) is the same record.
    let (st, again) = s
        .submit(&vm, &boot1.evidence, &boot1.evidence.nonce.0, true)
        .await;
    assert_eq!(st, 200);
    assert_eq!(again["id"], r1["id"]);

    // Second boot of the same VM: enrolled AK, compared with the learned
    // baseline, new boot report with the next counter.
    let (st, r2) = s
        .submit(&vm, &boot2.evidence, &boot2.evidence.nonce.0, false)
        .await;
    assert_eq!(st, 201);
    assert_eq!(r2["healthy"], true, "{:?}", failed(&r2));
    assert_eq!(r2["attestation"]["bootCounter"], 2);
    let report = &r2["attestation"]["bootReport"];
    assert_eq!(
        report["earlyBootReportEvent"]["policyEvaluationPassed"],
        true
    );
    assert_eq!(
        report["lateBootReportEvent"]["policyEvaluationPassed"],
        true
    );
    let hist = s.get(&format!("/v1/vms/{vm}/attestations")).await;
    assert_eq!(hist["value"].as_array().unwrap().len(), 2);
    assert!(s.alerts(&vm).await.is_empty(), "no alert on clean boots");

    // An "update": the command-line image's boot under this VM's identity
    // is not possible (another vTPM), so the kernel change is shown with
    // the debug image's measurements as the baseline instead: pin boot 1,
    // then a baseline from another image deviates component by component.
    let (st, pinned) = s
        .call(
            Method::POST,
            &format!("/v1/vms/{vm}/baseline/pin"),
            Some(json!({"attestationId": r1["id"]})),
        )
        .await;
    assert_eq!(st, 200, "{pinned}");
    let b = s.get(&format!("/v1/vms/{vm}/baseline")).await;
    assert_eq!(b["baseline"]["source"]["kind"], "pinned");
    let actions: Vec<&str> = b["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["learned", "learned", "pinned"], "{b}");

    // Pin with a stale version: 409.
    let (st, _) = s
        .call(
            Method::POST,
            &format!("/v1/vms/{vm}/baseline/pin"),
            Some(json!({"ifVersion": 1})),
        )
        .await;
    assert_eq!(st, 409);

    // Relearn: pending until the next boot whose other checks pass.
    let (st, _) = s
        .call(
            Method::POST,
            &format!("/v1/vms/{vm}/baseline/relearn"),
            None,
        )
        .await;
    assert_eq!(st, 200);
    let nonce = fresh_nonce(7);
    let mut e = boot2.evidence.clone();
    e.nonce = Bytes(nonce.clone());
    // (The quote answers boot 2's nonce, so this one fails quote.nonce and
    // must not be learned.)
    let (_, bad) = s.submit(&vm, &e, &nonce, false).await;
    assert_eq!(failed(&bad), ["quote.nonce"]);
    assert!(bad["attestation"]["baselineEvent"].is_null());
    let b = s.get(&format!("/v1/vms/{vm}/baseline")).await;
    assert_eq!(b["learn"]["relearn"], true, "still pending: {b}");
    s.running.abort();
}

/// One attack: what to submit, the failed checks and the alert reasons
/// expected.
struct Attack {
    name: &'static str,
    reg: trustlaunch_server::model::VmRegistration,
    evidence: trustlaunch_protocol::Evidence,
    nonce: Vec<u8>,
    activated: bool,
    checks: &'static [&'static str],
    alerts: &'static [(&'static str, &'static str)],
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tamper_suite_each_attack_fails_its_checks_and_raises_its_alert() {
    let dir = tempfile::tempdir().unwrap();
    for db in databases(dir.path()) {
        tamper_suite(&db).await;
    }
}

async fn tamper_suite(db: &str) {
    let s = start(db, platform_ca(), vec![]).await;
    let tiny = case("tiny-sb", "attestation-boot1.json");
    let tiny2 = case("tiny-sb", "attestation-boot2.json");
    let shim = case("shim", "attestation.json");
    let off = case("tiny-sb-off", "attestation.json");
    let debug = case("tiny-sb-cmdline", "attestation.json");
    let reg = registration(&tiny);
    let n = tiny.evidence.nonce.0.clone();
    const QUOTE: (&str, &str) = ("attestation-failed", "quote-not-from-vtpm");
    const BASELINE: (&str, &str) = ("attestation-failed", "baseline-deviation");

    // The clean boot's measurements, for the baseline attacks.
    let (st, clean) = s
        .call(Method::POST, "/v1/appraisals", Some(json!({"vmId": "x"})))
        .await;
    assert_eq!(st, 422, "a body without evidence is refused: {clean}");
    let probe = unique("probe");
    s.register(&probe, &reg).await;
    let (st, clean) = s
        .call(
            Method::POST,
            "/v1/appraisals",
            Some(json!({"vmId": probe, "nonce": trustlaunch_eventlog::hex::encode(&n), "evidence": tiny.evidence})),
        )
        .await;
    assert_eq!(st, 200, "{clean}");
    let measured: trustlaunch_attestation::Measurements =
        serde_json::from_value(clean["measurements"].clone()).unwrap();

    let mut attacks = Vec::new();
    let mut add = |name, reg, evidence, nonce, activated, checks, alerts| {
        attacks.push(Attack {
            name,
            reg,
            evidence,
            nonce,
            activated,
            checks,
            alerts,
        })
    };
    add(
        "clean boot",
        reg.clone(),
        tiny.evidence.clone(),
        n.clone(),
        true,
        &[][..],
        &[][..],
    );
    add(
        "wrong nonce",
        reg.clone(),
        tiny.evidence.clone(),
        vec![0x42; 32],
        true,
        &["quote.nonce"],
        &[QUOTE],
    );
    add(
        "replayed evidence (boot 1 answering boot 2's challenge)",
        reg.clone(),
        tiny.evidence.clone(),
        tiny2.evidence.nonce.0.clone(),
        true,
        &["quote.nonce"],
        &[QUOTE],
    );
    let mut e = tiny.evidence.clone();
    e.ak_public = shim.evidence.ak_public.clone();
    e.ak_name = Bytes(Public::from_bytes(&e.ak_public.0).unwrap().name().unwrap());
    add(
        "quote by a foreign AK",
        reg.clone(),
        e,
        n.clone(),
        true,
        &["quote.signature"],
        &[QUOTE],
    );
    add(
        "AK not in the VM's vTPM",
        reg.clone(),
        tiny.evidence.clone(),
        n.clone(),
        false,
        &["ak.activated"],
        &[QUOTE],
    );
    let mut r = reg.clone();
    r.ek_public = Some(shim.ek_public.clone());
    add(
        "EK from another VM",
        r,
        tiny.evidence.clone(),
        n.clone(),
        true,
        &["ek.vm_identity"],
        &[QUOTE],
    );
    let mut e = tiny.evidence.clone();
    let last = e.event_log.0.len() - 40;
    e.event_log.0.truncate(last);
    add(
        "event log truncated",
        reg.clone(),
        e,
        n.clone(),
        true,
        &["log.parse"],
        &[BASELINE],
    );
    let mut e = tiny.evidence.clone();
    let bank = e.pcrs.iter_mut().find(|b| b.alg == 0x000b).unwrap();
    bank.values.iter_mut().find(|(i, _)| *i == 0).unwrap().1 .0[0] ^= 1;
    add(
        "PCR value changed",
        reg.clone(),
        e,
        n.clone(),
        true,
        &["quote.pcr_digest"],
        &[QUOTE],
    );
    let mut r = registration(&off);
    r.secure_boot_enabled = true;
    r.template = reg.template.clone();
    add(
        "Secure Boot off",
        r,
        off.evidence.clone(),
        off.evidence.nonce.0.clone(),
        true,
        &[
            "secureboot.enabled",
            "secureboot.not_setup_mode",
            "secureboot.default_keys",
            "secureboot.db",
            "secureboot.dbx",
            "boot.authorities",
        ],
        &[BASELINE],
    );
    let mut r = reg.clone();
    r.template = registration(&shim).template;
    add(
        "foreign db certificate (template expects Microsoft's keys)",
        r,
        tiny.evidence.clone(),
        n.clone(),
        true,
        &["secureboot.default_keys", "secureboot.db"],
        &[BASELINE],
    );
    let mut r = registration(&debug);
    r.predicted_baseline = Some(trustlaunch_attestation::Baseline {
        source: trustlaunch_attestation::BaselineSource::Predicted {
            image: "tiny".into(),
        },
        measurements: measured.clone(),
    });
    add(
        "kernel command line changed vs baseline",
        r,
        debug.evidence.clone(),
        debug.evidence.nonce.0.clone(),
        true,
        &["baseline"],
        &[BASELINE],
    );
    let mut e = tiny.evidence.clone();
    e.untrusted_modules = vec!["evil_rootkit".into()];
    add(
        "untrusted kernel module",
        reg.clone(),
        e,
        n.clone(),
        true,
        &["kernel.modules"],
        &[("untrusted-kernel-module", "evil_rootkit")],
    );

    let count = attacks.len();
    for a in attacks {
        let vm = unique("tamper");
        s.register(&vm, &a.reg).await;
        let (st, r) = s.submit(&vm, &a.evidence, &a.nonce, a.activated).await;
        assert_eq!(st, 201, "{}: {r}", a.name);
        let mut got = failed(&r);
        got.sort();
        let mut want: Vec<String> = a.checks.iter().map(|c| (*c).to_owned()).collect();
        want.sort();
        assert_eq!(got, want, "{db}: {}: failed checks", a.name);
        assert_eq!(r["healthy"], a.checks.is_empty(), "{}", a.name);
        assert_eq!(
            r["token"].is_string(),
            a.checks.is_empty(),
            "{}: token only when healthy",
            a.name
        );
        let alerts = alert_summary(&s.alerts(&vm).await);
        let mut want: Vec<(String, String, String)> = a
            .alerts
            .iter()
            .map(|(k, w)| ((*k).to_owned(), (*w).to_owned(), "active".to_owned()))
            .collect();
        want.sort();
        assert_eq!(alerts, want, "{db}: {}: alerts", a.name);
        // Every failed check cites its evidence or says why.
        for c in r["attestation"]["appraisal"]["checks"].as_array().unwrap() {
            if c["outcome"] == "fail" {
                assert!(!c["detail"].as_str().unwrap().is_empty(), "{}: {c}", a.name);
            }
        }
        if a.name.starts_with("kernel command line") {
            let detail = &r["attestation"]["verdict"]["failed"];
            assert!(
                detail.to_string().contains("changed from"),
                "component-level deviation: {detail}"
            );
        }
    }
    assert!(count >= 12, "{count} attacks");

    // EK certificate from an unknown CA: a server that trusts another CA.
    s.running.abort();
    let s = start(db, vec![data().join("platform-db.crt")], vec![]).await;
    let vm = unique("tamper-ca");
    s.register(&vm, &reg).await;
    let (_, r) = s.submit(&vm, &tiny.evidence, &n, true).await;
    assert_eq!(failed(&r), ["ek.certificate"], "{db}: unknown CA");
    assert_eq!(
        alert_summary(&s.alerts(&vm).await),
        [(
            "attestation-failed".into(),
            "quote-not-from-vtpm".into(),
            "active".into()
        )]
    );
    s.running.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_resolve_dismiss_and_suppress() {
    let dir = tempfile::tempdir().unwrap();
    let db = &databases(dir.path())[0];
    let s = start(db, platform_ca(), vec![]).await;
    let tiny = case("tiny-sb", "attestation-boot1.json");
    let tiny2 = case("tiny-sb", "attestation-boot2.json");
    let vm = unique("alerts");
    s.register(&vm, &registration(&tiny)).await;
    // A failure raises once; seen again it is counted, not duplicated.
    for seed in [1u8, 2] {
        let (_, r) = s
            .submit(&vm, &tiny.evidence, &fresh_nonce(seed), true)
            .await;
        assert_eq!(failed(&r), ["quote.nonce"]);
    }
    let alerts = s.alerts(&vm).await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["count"], 2);
    // A clean attestation resolves it.
    let (_, r) = s
        .submit(&vm, &tiny2.evidence, &tiny2.evidence.nonce.0, true)
        .await;
    assert_eq!(r["healthy"], true, "{:?}", failed(&r));
    assert_eq!(alert_summary(&s.alerts(&vm).await)[0].2, "resolved");
    // Raised again, dismissed by an operator.
    let (_, _) = s.submit(&vm, &tiny.evidence, &fresh_nonce(3), true).await;
    let key = s.alerts(&vm).await[0]["key"].as_str().unwrap().to_owned();
    let enc: String = key
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let (st, d) = s
        .call(
            Method::POST,
            &format!("/v1/security/alerts/{enc}/dismiss"),
            None,
        )
        .await;
    assert_eq!(st, 200, "{d}");
    assert_eq!(alert_summary(&s.alerts(&vm).await)[0].2, "dismissed");
    // A suppression rule for Secure Boot intentionally off.
    let off = case("tiny-sb-off", "attestation.json");
    let lab = unique("lab");
    let (st, _) = s
        .call(
            Method::PUT,
            "/v1/security/suppressions/sb-off-lab",
            Some(json!({"reason": "secure-boot-off", "vmIds": [lab]})),
        )
        .await;
    assert_eq!(st, 200);
    s.register(&lab, &registration(&off)).await;
    let (_, r) = s
        .submit(&lab, &off.evidence, &off.evidence.nonce.0, true)
        .await;
    assert_eq!(r["healthy"], true, "{:?}", failed(&r));
    let a = s.alerts(&lab).await;
    assert_eq!(
        alert_summary(&a),
        [(
            "attestation-failed".into(),
            "secure-boot-off".into(),
            "dismissed".into()
        )]
    );
    assert_eq!(a[0]["suppressed_by"], "sb-off-lab");
    // Recommendations: the lab VM should have Secure Boot on.
    let recs = s.get("/v1/security/recommendations").await;
    assert!(
        recs["value"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["vm_id"] == lab.as_str() && r["kind"] == "enable-secure-boot"),
        "{recs}"
    );
    s.running.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let db = &databases(dir.path())[0];
    let s = start(db, platform_ca(), vec![]).await;
    // No token, bad token: 401.
    let r = s
        .http
        .get(format!("{}/v1/vms", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = s
        .http
        .get(format!("{}/v1/vms", s.url))
        .bearer_auth("tl_nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A reader reads but does not operate.
    let (st, t) = s
        .call(
            Method::POST,
            "/v1/tokens",
            Some(json!({"name": "ro", "role": "reader"})),
        )
        .await;
    assert_eq!(st, 201);
    let reader = t["token"].as_str().unwrap();
    let r = s
        .http
        .get(format!("{}/v1/vms", s.url))
        .bearer_auth(reader)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = s
        .http
        .post(format!("{}/v1/vms/x/baseline/relearn", s.url))
        .bearer_auth(reader)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "Forbidden");
    // Public: health, metrics, JWKS, OpenAPI.
    for p in [
        "/healthz",
        "/metrics",
        "/.well-known/jwks.json",
        "/openapi.json",
        "/.well-known/openid-configuration",
    ] {
        let r = s.http.get(format!("{}{p}", s.url)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{p}");
    }
    // Key rotation: the old key stays published.
    let before = s.get("/.well-known/jwks.json").await["keys"]
        .as_array()
        .unwrap()
        .len();
    let (st, _) = s.call(Method::POST, "/v1/keys/rotate", None).await;
    assert_eq!(st, 200);
    let after = s.get("/.well-known/jwks.json").await["keys"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(after, before + 1);
    // Hostile input: bad VM ids, bad nonce, oversized/garbage bodies.
    let (st, _) = s
        .call(Method::GET, "/v1/vms/..%2Fetc/attestations", None)
        .await;
    assert_eq!(st, 400);
    let (st, _) = s
        .call(
            Method::POST,
            "/v1/appraisals",
            Some(json!({"vmId": "a", "nonce": "zz", "evidence": {}})),
        )
        .await;
    assert!(st == 400 || st == 422, "{st}");
    let r = s
        .http
        .post(format!("{}/v1/appraisals", s.url))
        .bearer_auth(&s.token)
        .header("content-type", "application/json")
        .body(vec![b'['; 100_000])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
    s.running.abort();
}

#[test]
fn openapi_document_is_committed_and_covers_every_route() {
    let doc = trustlaunch_server::openapi_json();
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/openapi.json"
    ))
    .unwrap_or_default();
    assert!(
        doc.trim() == committed.trim(),
        "docs/openapi.json is stale: regenerate with `trustlaunch server openapi > docs/openapi.json`"
    );
    let v: Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(v["openapi"].as_str().unwrap().chars().next(), Some('3'));
    let paths = v["paths"].as_object().unwrap();
    for p in [
        "/v1/vms/{vm}/attestations",
        "/v1/appraisals",
        "/v1/vms/{vm}/baseline/relearn",
        "/v1/security/alerts",
        "/.well-known/jwks.json",
        "/metrics",
    ] {
        assert!(paths.contains_key(p), "{p} undocumented");
    }
    // Every operation says what it answers.
    for (p, item) in paths {
        for (m, op) in item.as_object().unwrap() {
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{m} {p}"
            );
        }
    }
}

/// A platform reconfiguration (Standard -> TrustedLaunch, as the control
/// plane does it) replaces the baseline with the one predicted for the new
/// configuration, audited; re-registering the same configuration does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_security_profile_change_repredicts_the_baseline() {
    let dir = tempfile::tempdir().unwrap();
    for db in databases(dir.path()) {
        let s = start(&db, platform_ca(), vec![]).await;
        let boot1 = case("tiny-sb", "attestation-boot1.json");
        let vm = unique("moved");
        let tl = registration(&boot1);
        let mut standard = tl.clone();
        standard.trusted_launch = false;
        standard.secure_boot_enabled = false;
        standard.v_tpm_enabled = false;
        standard.template = Default::default();
        s.register(&vm, &standard).await;
        s.register(&vm, &standard).await;
        let b = s.get(&format!("/v1/vms/{vm}/baseline")).await;
        assert_eq!(b["version"], 1, "{db}: {b}");
        s.register(&vm, &tl).await;
        let b = s.get(&format!("/v1/vms/{vm}/baseline")).await;
        assert_eq!(b["version"], 2, "{db}: {b}");
        let last = b["audit"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["action"], "predicted", "{db}: {b}");
        assert_eq!(
            last["actor"], "platform: security profile changed",
            "{db}: {b}"
        );
        // And the first boot under Trusted Launch is healthy against it.
        let (st, r) = s
            .submit(&vm, &boot1.evidence, &boot1.evidence.nonce.0, true)
            .await;
        assert_eq!(st, 201, "{db}: {r}");
        assert_eq!(r["healthy"], true, "{db}: {:?}", failed(&r));
        s.running.abort();
    }
}
