//! The attestation service over HTTP, against SQLite and (when the test
//! command provides it) PostgreSQL, driven the way hosts and agents drive
//! it: the service's own challenge, evidence from a guest (a real swtpm
//! replaying a recorded boot, answered by the agent's code), the
//! credential the service made activated by that guest's TPM. Covered:
//! the first boot awaiting approval, enrollment, tokens verified against
//! the JWKS with the quote's own claims, boot counting by the TPM's
//! counters, pin and relearn (audited with the caller), the tamper suite
//! with the alert each attack raises, roles, and the OpenAPI document.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use trustlaunch_protocol::Bytes;
use trustlaunch_tpm::public::Public;

fn hexs(v: &Value) -> Vec<u8> {
    trustlaunch_eventlog::hex::decode(v.as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_approve_enroll_token_boots_pin_relearn() {
    let dir = tempfile::tempdir().unwrap();
    let boot = case("tiny-sb", "attestation-boot1.json");
    let mut g = guest(&boot);
    for db in databases(dir.path()) {
        lifecycle(&db, &boot, &mut g).await;
    }
}

async fn lifecycle(db: &str, boot: &Case, g: &mut trustlaunch_agent::replayed::ReplayedGuest) {
    let s = start(db, cas(), vec![]).await;
    let vm = unique("tiny");
    s.register(&vm, &guest_registration(boot, g)).await;
    let b = s.get(&format!("/v1/vms/{vm}/baseline")).await;
    assert_eq!(b["state"], "awaiting-first-boot", "{db}: {b}");

    // First boot: nothing approved to compare with, so not healthy and no
    // token; its components are proposed; the VM is enrolled (its AK
    // proven by the service's own credential under the recorded EK).
    let (st, r1) = s.attest(&vm, g).await;
    assert_eq!(st, 201, "{db}: {r1}");
    assert_eq!(failed(&r1), ["baseline"], "{db}: {r1}");
    assert!(r1["token"].is_null());
    assert!(r1["attestation"]["baselineEvent"]
        .as_str()
        .unwrap()
        .starts_with("proposed from boot #1"));
    assert_eq!(
        alert_summary(&s.alerts(&vm).await),
        [(
            "attestation-failed".into(),
            "baseline-not-approved".into(),
            "active".into()
        )]
    );
    let b = s.get(&format!("/v1/vms/{vm}/baseline")).await;
    assert_eq!(b["state"], "pending-approval", "{db}: {b}");
    assert_eq!(b["pending"]["bootCounter"], 1);
    let vminfo = s.get(&format!("/v1/vms/{vm}")).await;
    assert!(vminfo["enrolledAt"].is_i64(), "{vminfo}");

    // An operator approves: audited with the token's id and name.
    let (st, a) = s
        .call(
            Method::POST,
            &format!("/v1/vms/{vm}/baseline/approve"),
            None,
        )
        .await;
    assert_eq!(st, 200, "{a}");
    let b = s.get(&format!("/v1/vms/{vm}/baseline")).await;
    assert_eq!(b["state"], "approved");
    let last = b["audit"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["action"], "approved");
    assert!(
        last["actor"].as_str().unwrap().starts_with("token ")
            && last["actor"].as_str().unwrap().contains("(test-admin"),
        "{last}"
    );
    let (st, _) = s
        .call(
            Method::POST,
            &format!("/v1/vms/{vm}/baseline/approve"),
            None,
        )
        .await;
    assert_eq!(st, 409, "nothing awaits approval any more");

    // The same boot, attested again: healthy, a token; the boot counter
    // stays (the TPM was not reset), whatever the guest's boot id says.
    let c = s.challenge(&vm, Some(&g.ak_public().unwrap())).await;
    let nonce = hexs(&c["nonce"]);
    let mut e = g.evidence(&nonce).unwrap();
    e.boot_id = "a boot id the guest chose".into();
    let secret = g
        .activate(
            &hexs(&c["credential"]["credentialBlob"]),
            &hexs(&c["credential"]["encryptedSecret"]),
        )
        .unwrap();
    let id = c["id"].as_str().unwrap();
    let (st, r2) = s.submit(&vm, id, &e, Some(&secret)).await;
    assert_eq!(st, 201, "{db}: {r2}");
    assert_eq!(r2["healthy"], true, "{db}: {:?}", failed(&r2));
    assert_eq!(r2["attestation"]["bootCounter"], 1);
    assert_eq!(alert_summary(&s.alerts(&vm).await)[0].2, "resolved");

    // The token verifies against the published JWKS, with Azure's claims
    // taken from the verified quote.
    let now = trustlaunch_server::service::now();
    let claims = s.verified_claims(r2["token"].as_str().unwrap()).await;
    assert_eq!(claims["secureboot"], true);
    assert_eq!(claims["x-ms-attestation-type"], "azurevm");
    assert_eq!(claims["x-ms-azurevm-vmid"], vm);
    assert_eq!(claims["x-ms-azurevm-dbvalidated"], true);
    assert_eq!(claims["x-ms-azurevm-nonce"], c["nonce"]);
    assert_eq!(
        claims["x-ms-azurevm-attested-pcrs"],
        json!((0..16).collect::<Vec<u32>>())
    );

    // A retry of the same challenge is the same record, even with other
    // evidence; the challenge cannot be answered twice.
    let (st, again) = s.submit(&vm, id, &e, Some(&secret)).await;
    assert_eq!(st, 200);
    assert_eq!(again["id"], r2["id"]);
    let other = g.evidence(&[9; 32]).unwrap();
    let (st, again) = s.submit(&vm, id, &other, None).await;
    assert_eq!(st, 200);
    assert_eq!(again["id"], r2["id"]);

    // A reboot (the TPM reset, the log replayed): the next boot number,
    // compared with the approved baseline.
    g.reboot().unwrap();
    let (st, r3) = s.attest(&vm, g).await;
    assert_eq!(st, 201);
    assert_eq!(r3["healthy"], true, "{:?}", failed(&r3));
    assert_eq!(r3["attestation"]["bootCounter"], 2);
    let report = &r3["attestation"]["bootReport"];
    assert_eq!(
        report["earlyBootReportEvent"]["policyEvaluationPassed"],
        true
    );
    assert_eq!(
        report["lateBootReportEvent"]["policyEvaluationPassed"],
        true
    );
    let hist = s.get(&format!("/v1/vms/{vm}/attestations")).await;
    assert_eq!(hist["value"].as_array().unwrap().len(), 3);

    // Pin the second attestation; the audit trail names every change.
    let (st, pinned) = s
        .call(
            Method::POST,
            &format!("/v1/vms/{vm}/baseline/pin"),
            Some(json!({"attestationId": r2["id"]})),
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
    assert_eq!(actions, ["proposed", "approved", "pinned"], "{b}");
    // Pin with a stale version: 409.
    let (st, _) = s
        .call(
            Method::POST,
            &format!("/v1/vms/{vm}/baseline/pin"),
            Some(json!({"ifVersion": 1})),
        )
        .await;
    assert_eq!(st, 409);

    // Relearn: pending, with a deadline, until a boot whose other checks
    // pass. One whose quote answers another nonce is not learned.
    let (st, rl) = s
        .call(
            Method::POST,
            &format!("/v1/vms/{vm}/baseline/relearn"),
            None,
        )
        .await;
    assert_eq!(st, 200);
    assert!(rl["until"].as_i64().unwrap() > now as i64 + 23 * 3600);
    let stale = g.evidence(&[7; 32]).unwrap();
    let (_, bad) = s.attest_with(&vm, g, |e| *e = stale.clone(), true).await;
    assert_eq!(failed(&bad), ["quote.nonce"]);
    assert!(bad["attestation"]["baselineEvent"].is_null());
    let b = s.get(&format!("/v1/vms/{vm}/baseline")).await;
    assert_eq!(b["state"], "relearn-requested", "{b}");
    let (_, good) = s.attest(&vm, g).await;
    assert_eq!(good["healthy"], true, "{:?}", failed(&good));
    assert!(
        good["attestation"]["baselineEvent"]
            .as_str()
            .unwrap_or("")
            .starts_with("relearned from boot #2"),
        "{}",
        good["attestation"]
    );
    s.running.abort();
}

/// What an operator's token cannot do with the attestation API: choose
/// the nonce, vouch for an AK, answer a challenge twice or late, or have
/// recorded evidence count as a fresh boot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_cannot_mint_an_attestation() {
    let dir = tempfile::tempdir().unwrap();
    let db = &databases(dir.path())[0];
    let s = start_with(
        db,
        trustlaunch_server::Config {
            vtpm_ca: cas(),
            challenge_lifetime: std::time::Duration::from_secs(2),
            ..Default::default()
        },
    )
    .await;
    let boot = case("tiny-sb", "attestation-boot1.json");
    let op = token_in(db, "ops", trustlaunch_store::Role::Operator).await;
    let as_op = |m: Method, p: String, b: Value| {
        let s = &s;
        let op = op.clone();
        async move {
            let r = s
                .http
                .request(m, format!("{}{p}", s.url))
                .bearer_auth(op)
                .json(&b)
                .send()
                .await
                .unwrap();
            let st = r.status().as_u16();
            (st, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // The recorded VM, registered with its recorded EK (by an operator:
    // a VM another host runs).
    let vm = unique("mint");
    let (st, r) = as_op(
        Method::PUT,
        format!("/v1/vms/{vm}"),
        serde_json::to_value(registration(&boot)).unwrap(),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    // The old API's fields are refused: the caller no longer says whether
    // the AK was activated, nor which nonce it used.
    let (st, r) = as_op(
        Method::POST,
        format!("/v1/vms/{vm}/attestations"),
        json!({"nonce": "00".repeat(32), "akActivated": true, "evidence": boot.evidence}),
    )
    .await;
    assert_eq!(st, 422, "{r}");
    // A real quote of a real boot (recorded), submitted for a fresh
    // challenge: stale, and no credential activated.
    let (st, c) = as_op(Method::POST, format!("/v1/vms/{vm}/challenges"), json!({})).await;
    assert_eq!(st, 201, "{c}");
    assert!(c["credential"].is_null(), "no AK named, none enrolled: {c}");
    let (st, r) = as_op(
        Method::POST,
        format!("/v1/vms/{vm}/attestations"),
        json!({"challengeId": c["id"], "evidence": boot.evidence}),
    )
    .await;
    assert_eq!(st, 201, "{r}");
    let f = failed(&r);
    assert!(
        f.contains(&"quote.nonce".to_string()) && f.contains(&"ak.activated".to_string()),
        "{f:?}"
    );
    assert!(r["token"].is_null());
    assert!(s.get(&format!("/v1/vms/{vm}")).await["enrolledAt"].is_null());
    // A secret of the caller's own does not activate anything.
    let (_, c) = as_op(
        Method::POST,
        format!("/v1/vms/{vm}/challenges"),
        json!({"akPublic": trustlaunch_eventlog::hex::encode(&boot.evidence.ak_public.0)}),
    )
    .await;
    assert!(c["credential"]["credentialBlob"].is_string(), "{c}");
    let (_, r) = as_op(
        Method::POST,
        format!("/v1/vms/{vm}/attestations"),
        json!({"challengeId": c["id"], "activatedSecret": "11".repeat(32), "evidence": boot.evidence}),
    )
    .await;
    assert!(failed(&r).contains(&"ak.activated".to_string()), "{r}");
    // Answered: a second answer is the first result.
    let (st, r2) = as_op(
        Method::POST,
        format!("/v1/vms/{vm}/attestations"),
        json!({"challengeId": c["id"], "evidence": boot.evidence}),
    )
    .await;
    assert_eq!((st, &r2["id"]), (200, &r["id"]));
    // Unknown, another VM's, expired: refused.
    let (st, _) = as_op(
        Method::POST,
        format!("/v1/vms/{vm}/attestations"),
        json!({"challengeId": "00112233445566778899aabbccddeeff", "evidence": boot.evidence}),
    )
    .await;
    assert_eq!(st, 404);
    let other = unique("mint-other");
    s.register(&other, &registration(&boot)).await;
    let (_, c) = as_op(
        Method::POST,
        format!("/v1/vms/{other}/challenges"),
        json!({}),
    )
    .await;
    let (st, _) = as_op(
        Method::POST,
        format!("/v1/vms/{vm}/attestations"),
        json!({"challengeId": c["id"], "evidence": boot.evidence}),
    )
    .await;
    assert_eq!(st, 404, "another VM's challenge");
    let (_, c) = as_op(Method::POST, format!("/v1/vms/{vm}/challenges"), json!({})).await;
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    let (st, r) = as_op(
        Method::POST,
        format!("/v1/vms/{vm}/attestations"),
        json!({"challengeId": c["id"], "evidence": boot.evidence}),
    )
    .await;
    assert_eq!(st, 410, "expired: {r}");
    s.running.abort();
}

/// One attack: how the VM is registered, what the guest with root does
/// to its evidence, whether its TPM activates the credential; the failed
/// checks and the alert reasons expected.
struct Attack {
    name: &'static str,
    guest: usize,
    reg: trustlaunch_server::model::VmRegistration,
    edit: Box<dyn FnOnce(&mut trustlaunch_protocol::Evidence) + Send>,
    activate: bool,
    checks: &'static [&'static str],
    alerts: &'static [(&'static str, &'static str)],
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tamper_suite_each_attack_fails_its_checks_and_raises_its_alert() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = case("tiny-sb", "attestation-boot1.json");
    let off = case("tiny-sb-off", "attestation.json");
    let debug = case("tiny-sb-cmdline", "attestation.json");
    let mut guests = vec![guest(&tiny), guest(&off), guest(&debug)];
    for db in databases(dir.path()) {
        tamper_suite(&db, &mut guests).await;
    }
}

async fn tamper_suite(db: &str, guests: &mut [trustlaunch_agent::replayed::ReplayedGuest]) {
    let s = start(db, cas(), vec![]).await;
    let tiny = case("tiny-sb", "attestation-boot1.json");
    let shim = case("shim", "attestation.json");
    let off = case("tiny-sb-off", "attestation.json");
    let debug = case("tiny-sb-cmdline", "attestation.json");
    const QUOTE: (&str, &str) = ("attestation-failed", "quote-not-from-vtpm");
    const BASELINE: (&str, &str) = ("attestation-failed", "baseline-deviation");

    // The clean boot's measurements (a stateless appraisal), as the
    // predicted baseline of every attacked VM.
    let probe = unique("probe");
    s.register(&probe, &guest_registration(&tiny, &guests[0]))
        .await;
    let clean_ev = guests[0].evidence(&[3; 32]).unwrap();
    let (st, clean) = s
        .call(
            Method::POST,
            "/v1/appraisals",
            Some(json!({"vmId": probe, "nonce": "03".repeat(32), "evidence": clean_ev})),
        )
        .await;
    assert_eq!(st, 200, "{clean}");
    let measured: trustlaunch_attestation::Measurements =
        serde_json::from_value(clean["measurements"].clone()).unwrap();
    let predicted = Some(trustlaunch_attestation::Baseline {
        source: trustlaunch_attestation::BaselineSource::Predicted {
            image: "tiny".into(),
        },
        measurements: measured,
    });
    let reg = |c: &Case, g: &trustlaunch_agent::replayed::ReplayedGuest| {
        let mut r = guest_registration(c, g);
        r.predicted_baseline.clone_from(&predicted);
        r
    };
    let tiny_reg = reg(&tiny, &guests[0]);

    let mut attacks: Vec<Attack> = Vec::new();
    let mut add =
        |name, guest, reg, edit: Box<dyn FnOnce(&mut _) + Send>, activate, checks, alerts| {
            attacks.push(Attack {
                name,
                guest,
                reg,
                edit,
                activate,
                checks,
                alerts,
            })
        };
    add(
        "clean boot",
        0,
        tiny_reg.clone(),
        Box::new(|_| {}),
        true,
        &[][..],
        &[][..],
    );
    let recorded = tiny.evidence.clone();
    add(
        "replayed evidence (a recorded boot answering this challenge)",
        0,
        tiny_reg.clone(),
        Box::new(move |e| *e = recorded),
        true,
        // The recorded quote answers its own nonce, under another AK than
        // the one whose credential was activated.
        &["quote.nonce", "ak.activated", "ek.vm_identity"],
        &[QUOTE],
    );
    let foreign_ak = shim.evidence.ak_public.clone();
    add(
        "quote by a foreign AK",
        0,
        tiny_reg.clone(),
        Box::new(move |e| {
            e.ak_public = foreign_ak;
            e.ak_name = Bytes(Public::from_bytes(&e.ak_public.0).unwrap().name().unwrap());
        }),
        true,
        &["quote.signature", "ak.activated"],
        &[QUOTE],
    );
    add(
        "AK not activated (no secret returned)",
        0,
        tiny_reg.clone(),
        Box::new(|_| {}),
        false,
        &["ak.activated"],
        &[QUOTE],
    );
    let mut r = tiny_reg.clone();
    r.ek_public = Some(shim.ek_public.clone());
    add(
        "EK from another VM",
        0,
        r,
        Box::new(|_| {}),
        true,
        // The credential is made under the EK on record, which this TPM
        // does not hold: it cannot activate it either.
        &["ek.vm_identity", "ak.activated"],
        &[QUOTE],
    );
    add(
        "event log truncated",
        0,
        tiny_reg.clone(),
        Box::new(|e| {
            let last = e.event_log.0.len() - 40;
            e.event_log.0.truncate(last);
        }),
        true,
        &["log.parse"],
        &[BASELINE],
    );
    add(
        "PCR value changed",
        0,
        tiny_reg.clone(),
        Box::new(|e| {
            let bank = e.pcrs.iter_mut().find(|b| b.alg == 0x000b).unwrap();
            bank.values.iter_mut().find(|(i, _)| *i == 0).unwrap().1 .0[0] ^= 1;
        }),
        true,
        &["quote.pcr_digest"],
        &[QUOTE],
    );
    let mut r = reg(&off, &guests[1]);
    r.secure_boot_enabled = true;
    r.template = tiny_reg.template.clone();
    add(
        "Secure Boot off",
        1,
        r,
        Box::new(|_| {}),
        true,
        &[
            "secureboot.enabled",
            "secureboot.not_setup_mode",
            "secureboot.default_keys",
            "secureboot.db",
            "secureboot.dbx",
            "boot.authorities",
            "baseline",
        ],
        &[BASELINE],
    );
    let mut r = tiny_reg.clone();
    r.template = registration(&shim).template;
    add(
        "foreign db certificate (template expects Microsoft's keys)",
        0,
        r,
        Box::new(|_| {}),
        true,
        &["secureboot.default_keys", "secureboot.db"],
        &[BASELINE],
    );
    add(
        "kernel command line changed vs baseline",
        2,
        reg(&debug, &guests[2]),
        Box::new(|_| {}),
        true,
        &["baseline"],
        &[BASELINE],
    );
    add(
        "untrusted kernel module",
        0,
        tiny_reg.clone(),
        Box::new(|e| e.untrusted_modules = vec!["evil_rootkit".into()]),
        true,
        &["kernel.modules"],
        &[("untrusted-kernel-module", "evil_rootkit")],
    );

    let count = attacks.len();
    for a in attacks {
        let vm = unique("tamper");
        s.register(&vm, &a.reg).await;
        let (st, r) = s
            .attest_with(&vm, &mut guests[a.guest], a.edit, a.activate)
            .await;
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
        // Every failed check says what it found.
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
    assert!(count >= 11, "{count} attacks");

    // EK certificate from an unknown CA: a server that trusts another CA.
    s.running.abort();
    let s = start(db, vec![data().join("platform-db.crt")], vec![]).await;
    let vm = unique("tamper-ca");
    s.register(&vm, &tiny_reg).await;
    let (_, r) = s.attest(&vm, &mut guests[0]).await;
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

/// The forgery as found, over the API: a guest with root sends a genuine
/// quote of SHA-256 PCR 0 only, with the PCR values and log of a Secure
/// Boot boot its TPM never saw. No token, no Secure Boot claim, nothing
/// learned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_narrow_quote_with_a_made_up_log_earns_nothing() {
    use trustlaunch_tpm_client::{HashAlg, PcrSelection};
    let dir = tempfile::tempdir().unwrap();
    let db = &databases(dir.path())[0];
    let s = start(db, cas(), vec![]).await;
    let tiny = case("tiny-sb", "attestation-boot1.json");
    let log = trustlaunch_eventlog::EventLog::parse(&tiny.evidence.event_log.0).unwrap();
    let pcr0_only = log.restricted_to(|p| p == 0).to_bytes();
    let mut g = trustlaunch_agent::replayed::ReplayedGuest::start(
        &pcr0_only,
        Some(1),
        &guest_ca().0,
        trustlaunch_server::service::now(),
        &mut rand_core::OsRng,
    )
    .unwrap();
    let vm = unique("forged");
    s.register(&vm, &guest_registration(&tiny, &g)).await;
    let c = s.challenge(&vm, Some(&g.ak_public().unwrap())).await;
    let nonce = hexs(&c["nonce"]);
    let fake_log = tiny.evidence.event_log.clone();
    let fake_values = tiny.evidence.pcrs.clone();
    let e = g
        .quote_with(&nonce, &PcrSelection::new(HashAlg::Sha256, [0]), |e| {
            e.event_log = fake_log;
            e.pcrs = fake_values;
        })
        .unwrap();
    let secret = g
        .activate(
            &hexs(&c["credential"]["credentialBlob"]),
            &hexs(&c["credential"]["encryptedSecret"]),
        )
        .unwrap();
    let (st, r) = s
        .submit(&vm, c["id"].as_str().unwrap(), &e, Some(&secret))
        .await;
    assert_eq!(st, 201, "{r}");
    assert_eq!(r["healthy"], false);
    assert!(r["token"].is_null());
    let f = failed(&r);
    assert!(f.contains(&"quote.pcr_coverage".to_string()), "{f:?}");
    let checks = r["attestation"]["appraisal"]["checks"].as_array().unwrap();
    let cov = checks
        .iter()
        .find(|c| c["name"] == "quote.pcr_coverage")
        .unwrap();
    assert!(
        cov["detail"]
            .as_str()
            .unwrap()
            .contains("does not cover SHA-256 PCR 1, 2, 3, 4, 5, 6, 7"),
        "{cov}"
    );
    assert_eq!(r["attestation"]["appraisal"]["claims"]["secureboot"], false);
    assert_eq!(
        r["attestation"]["appraisal"]["claims"]["x-ms-azurevm-attested-pcrs"],
        json!([0])
    );
    // Nothing proposed or learned from it.
    let b = s.get(&format!("/v1/vms/{vm}/baseline")).await;
    assert_eq!(b["state"], "awaiting-first-boot", "{b}");
    assert!(r["attestation"]["baselineEvent"].is_null());
    s.running.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_resolve_dismiss_and_suppress() {
    let dir = tempfile::tempdir().unwrap();
    let db = &databases(dir.path())[0];
    let s = start(db, cas(), vec![]).await;
    let tiny = case("tiny-sb", "attestation-boot1.json");
    let mut g = guest(&tiny);
    let vm = unique("alerts");
    s.register(&vm, &guest_registration(&tiny, &g)).await;
    // A failure raises once; seen again it is counted, not duplicated.
    for _ in 0..2 {
        let (_, r) = s.attest_with(&vm, &mut g, |_| {}, false).await;
        assert!(failed(&r).contains(&"ak.activated".to_string()), "{r}");
    }
    let alerts = s.alerts(&vm).await;
    let quote: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["cause"]["reason"] == "quote-not-from-vtpm")
        .collect();
    assert_eq!(quote.len(), 1, "{alerts:?}");
    assert_eq!(quote[0]["count"], 2);
    // A clean, approved boot resolves it.
    let (_, _) = s.attest(&vm, &mut g).await;
    let (st, _) = s
        .call(
            Method::POST,
            &format!("/v1/vms/{vm}/baseline/approve"),
            None,
        )
        .await;
    assert_eq!(st, 200);
    let (_, r) = s.attest(&vm, &mut g).await;
    assert_eq!(r["healthy"], true, "{:?}", failed(&r));
    assert!(alert_summary(&s.alerts(&vm).await)
        .iter()
        .all(|a| a.2 == "resolved"));
    // Raised again (a PCR value edited), dismissed by an operator
    // (audited).
    let (_, r) = s
        .attest_with(&vm, &mut g, |e| e.pcrs[0].values[0].1 .0[0] ^= 1, true)
        .await;
    assert_eq!(failed(&r), ["quote.pcr_digest"]);
    let key = s
        .alerts(&vm)
        .await
        .iter()
        .find(|a| a["state"] == "active")
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
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
    assert!(s
        .alerts(&vm)
        .await
        .iter()
        .any(|a| a["key"] == key.as_str() && a["state"] == "dismissed"));
    let audit = s.get("/v1/audit?limit=5").await;
    assert!(
        audit["value"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "alert.dismiss"),
        "{audit}"
    );
    // A suppression rule for Secure Boot intentionally off.
    let off = case("tiny-sb-off", "attestation.json");
    let mut og = guest(&off);
    let lab = unique("lab");
    let (st, rule) = s
        .call(
            Method::PUT,
            "/v1/security/suppressions/sb-off-lab",
            Some(json!({"reason": "secure-boot-off", "vmIds": [lab]})),
        )
        .await;
    assert_eq!(st, 200, "{rule}");
    assert!(rule["author"].as_str().unwrap().starts_with("token "));
    s.register(&lab, &guest_registration(&off, &og)).await;
    let (_, _) = s.attest(&lab, &mut og).await;
    let (st, _) = s
        .call(
            Method::POST,
            &format!("/v1/vms/{lab}/baseline/approve"),
            None,
        )
        .await;
    assert_eq!(st, 200);
    let (_, r) = s.attest(&lab, &mut og).await;
    assert_eq!(r["healthy"], true, "{:?}", failed(&r));
    let a = s.alerts(&lab).await;
    assert!(
        alert_summary(&a).contains(&(
            "attestation-failed".into(),
            "secure-boot-off".into(),
            "dismissed".into()
        )),
        "{a:?}"
    );
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
        "/v1/vms/{vm}/challenges",
        "/v1/vms/{vm}/attestations",
        "/v1/appraisals",
        "/v1/vms/{vm}/baseline/approve",
        "/v1/vms/{vm}/baseline/relearn",
        "/v1/security/alerts",
        "/v1/tokens/{id}",
        "/v1/audit",
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
    use trustlaunch_server::auth::Caller;
    let dir = tempfile::tempdir().unwrap();
    let boot = case("tiny-sb", "attestation-boot1.json");
    let mut g = guest(&boot);
    for db in databases(dir.path()) {
        let s = start(&db, cas(), vec![]).await;
        let vm = unique("moved");
        // The boot's own components stand for the image's prediction.
        let probe = unique("probe");
        s.register(&probe, &guest_registration(&boot, &g)).await;
        let (_, clean) = s
            .call(
                Method::POST,
                "/v1/appraisals",
                Some(json!({"vmId": probe, "nonce": "03".repeat(32), "evidence": g.evidence(&[3; 32]).unwrap()})),
            )
            .await;
        let mut tl = guest_registration(&boot, &g);
        tl.predicted_baseline = Some(trustlaunch_attestation::Baseline {
            source: trustlaunch_attestation::BaselineSource::Predicted {
                image: "tiny".into(),
            },
            measurements: serde_json::from_value(clean["measurements"].clone()).unwrap(),
        });
        let mut standard = tl.clone();
        standard.trusted_launch = false;
        standard.secure_boot_enabled = false;
        standard.v_tpm_enabled = false;
        standard.template = Default::default();
        let svc = &s.running.service;
        let platform = Caller::platform();
        svc.register(&vm, &standard, &platform).await.unwrap();
        svc.register(&vm, &standard, &platform).await.unwrap();
        let b = s.get(&format!("/v1/vms/{vm}/baseline")).await;
        assert_eq!(b["version"], 1, "{db}: {b}");
        svc.register(&vm, &tl, &platform).await.unwrap();
        let b = s.get(&format!("/v1/vms/{vm}/baseline")).await;
        assert_eq!(b["version"], 2, "{db}: {b}");
        let last = b["audit"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["action"], "predicted", "{db}: {b}");
        assert_eq!(
            last["actor"], "platform: security profile changed",
            "{db}: {b}"
        );
        // And the first boot under Trusted Launch is healthy against it.
        let (st, r) = s.attest(&vm, &mut g).await;
        assert_eq!(st, 201, "{db}: {r}");
        assert_eq!(r["healthy"], true, "{db}: {:?}", failed(&r));
        // The platform deploying another image (its path in the spec):
        // the new image's prediction replaces the baseline. The same path
        // with other contents (files replaced under the VM) does not.
        let mut same_path = tl.clone();
        same_path.spec["extra"] = json!("the image's files changed in place");
        if let Some(b) = same_path.predicted_baseline.as_mut() {
            b.source = trustlaunch_attestation::BaselineSource::Predicted {
                image: "tiny-elsewhere".into(),
            };
        }
        let first = s.get(&format!("/v1/vms/{vm}/baseline")).await["version"].clone();
        svc.register(&vm, &same_path, &platform).await.unwrap();
        let before = s.get(&format!("/v1/vms/{vm}/baseline")).await["version"].clone();
        assert_eq!(
            before, first,
            "{db}: files changed in place keep the baseline"
        );
        let mut moved = same_path.clone();
        moved.spec["image"] = json!("/images/tiny-2");
        svc.register(&vm, &moved, &platform).await.unwrap();
        let b = s.get(&format!("/v1/vms/{vm}/baseline")).await;
        assert_eq!(b["version"], before.as_i64().unwrap() + 1, "{db}: {b}");
        let last = b["audit"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(
            (last["action"].as_str(), last["actor"].as_str()),
            (Some("predicted"), Some("platform: image changed")),
            "{db}: {b}"
        );
        s.running.abort();
    }
}
