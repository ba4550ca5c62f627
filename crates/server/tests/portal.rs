//! The portal over HTTP: sign-in and its cookie's flags (plain and TLS),
//! anti-forgery and Origin checks on every change, roles (a reader's
//! change is refused by the API the portal goes through), revoked tokens
//! ending their sessions; the Boot integrity page of real replayed boots
//! (a clean one with its checks and evidence, a tampered one naming the
//! failing check and the component; a Windows boot's checks, features
//! and claims); guest-chosen markup escaped; the VM
//! list's filters, order and paging from the store (SQLite and
//! PostgreSQL).

mod common;

use common::*;
use reqwest::header::{LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use trustlaunch_server::{Config, TlsSource};
use trustlaunch_store::Role;

/// A browser without a browser: cookies by hand, no redirects followed.
struct Page {
    http: reqwest::Client,
    url: String,
    cookie: Option<String>,
}

struct Answer {
    status: u16,
    location: String,
    set_cookie: String,
    body: String,
}

impl Page {
    fn new(url: &str, ca: Option<&std::path::Path>) -> Self {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(Policy::none());
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).unwrap();
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        Self {
            http: b.build().unwrap(),
            url: url.to_owned(),
            cookie: None,
        }
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Answer {
        let rb = match &self.cookie {
            Some(c) => rb.header("cookie", c),
            None => rb,
        };
        let r = rb.send().await.unwrap();
        let h = |n| {
            r.headers()
                .get(n)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        let (location, set_cookie) = (h(LOCATION), h(SET_COOKIE));
        Answer {
            status: r.status().as_u16(),
            location,
            set_cookie,
            body: r.text().await.unwrap(),
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(self.http.get(format!("{}{path}", self.url)))
            .await
    }

    async fn post(&self, path: &str, fields: &[(&str, &str)], origin: Option<&str>) -> Answer {
        let mut rb = self.http.post(format!("{}{path}", self.url)).form(fields);
        if let Some(o) = origin {
            rb = rb.header("origin", o);
        }
        self.send(rb).await
    }

    /// Signs in with `token`; keeps the session cookie.
    async fn sign_in(&mut self, token: &str) -> Answer {
        let a = self
            .post(
                "/portal/signin",
                &[("token", token), ("next", "/")],
                Some(&self.url.clone()),
            )
            .await;
        if a.status == 303 {
            let pair = a.set_cookie.split(';').next().unwrap().to_owned();
            self.cookie = Some(pair);
        }
        a
    }

    /// The anti-forgery token of the page at `path`.
    async fn csrf(&self, path: &str) -> String {
        let body = self.get(path).await.body;
        let at = body.find("name=\"_csrf\" value=\"").expect("a form") + 20;
        body[at..].split('"').next().unwrap().to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_cookies_anti_forgery_and_roles() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("p.db").display());
    let s = start(&db, cas(), vec![]).await;
    let reader = token_in(&db, "portal-reader", Role::Reader).await;
    let mut p = Page::new(&s.url, None);

    // Unsigned: every page sends to sign-in, and back after it.
    let a = p.get("/portal/vms?health=unhealthy").await;
    assert_eq!(a.status, 303);
    assert_eq!(
        a.location,
        "/portal/signin?next=%2Fportal%2Fvms%3Fhealth%3Dunhealthy"
    );
    // A wrong token: refused, no cookie.
    let a = p.sign_in("tl_not-a-token").await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(a.set_cookie.is_empty());
    // Sign-in from another site (login CSRF): refused.
    let a = p
        .post(
            "/portal/signin",
            &[("token", s.token.as_str())],
            Some("https://evil.example"),
        )
        .await;
    assert_eq!(a.status, 403);
    // A redirect elsewhere after sign-in is not followed.
    let a = p
        .post(
            "/portal/signin",
            &[("token", s.token.as_str()), ("next", "//evil.example/")],
            Some(&s.url),
        )
        .await;
    assert_eq!((a.status, a.location.as_str()), (303, "/"));

    let a = p.sign_in(&s.token).await;
    assert_eq!(a.status, 303, "{}", a.body);
    let flags: Vec<&str> = a.set_cookie.split("; ").collect();
    assert!(flags[0].starts_with("tl_session="), "{}", a.set_cookie);
    for f in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(flags.contains(&f), "{f}: {}", a.set_cookie);
    }
    assert!(!flags.contains(&"Secure"), "plain HTTP: {}", a.set_cookie);
    let home = p.get("/").await;
    assert_eq!(home.status, 200);
    let none = p.get("/portal/no-such-page").await;
    assert_eq!(none.status, 404);
    assert!(
        none.body
            .contains("There is no page at /portal/no-such-page"),
        "{}",
        none.body
    );
    assert!(home.body.contains("Attested health"), "{}", home.body);

    // Changes: the anti-forgery token is required and checked, the Origin
    // must be this server's.
    let vm = unique("pvm");
    let tiny = case("tiny-sb", "attestation-boot1.json");
    let mut g = guest(&tiny);
    s.register(&vm, &guest_registration(&tiny, &g)).await;
    let (st, _) = s.attest(&vm, &mut g).await;
    assert_eq!(st, 201);
    let path = format!("/portal/vms/{vm}/baseline");
    let csrf = p.csrf(&path).await;
    for (fields, origin, why) in [
        (vec![("action", "relearn")], None, "no token"),
        (
            vec![("action", "relearn"), ("_csrf", "forged")],
            None,
            "wrong token",
        ),
        (
            vec![("action", "relearn"), ("_csrf", csrf.as_str())],
            Some("https://evil.example"),
            "another site",
        ),
    ] {
        let a = p.post(&path, &fields, origin).await;
        assert_eq!(a.status, 403, "{why}: {}", a.body);
    }
    let b = s.get(&format!("/v1/vms/{vm}/baseline")).await;
    assert!(b["learn"].is_null(), "nothing changed: {b}");
    // With it: the change is made, through the API, as this caller.
    let a = p
        .post(
            &path,
            &[("action", "relearn"), ("_csrf", &csrf)],
            Some(&s.url),
        )
        .await;
    assert_eq!(a.status, 303, "{}", a.body);
    let b = s.get(&format!("/v1/vms/{vm}/baseline")).await;
    assert!(!b["learn"].is_null(), "relearn requested: {b}");
    let page = p.get(&path).await.body;
    assert!(page.contains("Baseline: relearn done."), "{page}");

    // A reader: offered no change, and refused one by the API.
    let mut r = Page::new(&s.url, None);
    assert_eq!(r.sign_in(&reader).await.status, 303);
    let body = r.get(&path).await.body;
    assert!(!body.contains("baseline-relearn"), "no button for a reader");
    assert!(!r.get("/").await.body.contains("/portal/tokens"));
    let csrf = r.csrf(&format!("/portal/vms/{vm}")).await;
    let a = r
        .post(&path, &[("action", "pin"), ("_csrf", &csrf)], Some(&s.url))
        .await;
    assert_eq!(a.status, 303);
    let body = r.get(&path).await.body;
    assert!(
        body.contains("has role reader, this needs operator"),
        "{body}"
    );
    let audit = s.get(&format!("/v1/vms/{vm}/baseline")).await["audit"].clone();
    assert!(
        !audit.to_string().contains("pinned"),
        "the reader pinned nothing: {audit}"
    );
    // Nor may a reader list tokens.
    assert_eq!(r.get("/portal/tokens").await.status, 403);

    // A revoked token ends its sessions at the next page.
    let id = s.get("/v1/tokens").await["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "portal-reader")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (st, _) = s
        .call(reqwest::Method::DELETE, &format!("/v1/tokens/{id}"), None)
        .await;
    assert_eq!(st, 200);
    let a = r.get("/portal/vms").await;
    assert_eq!(a.status, 303);
    assert!(a.location.ends_with("why=token"), "{}", a.location);

    // Sessions live in the store: another server on the same database
    // (or this one restarted) knows the session; sign-out ends it for both.
    let s2 = start(&db, cas(), vec![]).await;
    let p2 = Page {
        http: p.http.clone(),
        url: s2.url.clone(),
        cookie: p.cookie.clone(),
    };
    assert_eq!(
        p2.get("/portal/vms").await.status,
        200,
        "the same session on a second server"
    );

    // Sign-out ends the session.
    let csrf = p.csrf("/").await;
    let a = p
        .post("/portal/signout", &[("_csrf", &csrf)], Some(&s.url))
        .await;
    assert_eq!(a.status, 303);
    assert!(a.set_cookie.contains("Max-Age=0"), "{}", a.set_cookie);
    assert_eq!(p.get("/").await.status, 303, "the old cookie is dead");
    assert_eq!(p2.get("/").await.status, 303, "on the second server too");
    s2.running.abort();

    // Security headers on every page.
    let r = reqwest::get(format!("{}/portal/signin", s.url))
        .await
        .unwrap();
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    s.running.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_session_cookie_is_host_only_and_secure() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let s = start_with(
        &db,
        Config {
            vtpm_ca: platform_ca(),
            tls: Some(TlsSource::Platform {
                dir: dir.path().join("tls"),
                master_key: dir.path().join("master.key"),
                extra_names: Vec::new(),
            }),
            ..Config::default()
        },
    )
    .await;
    assert!(s.url.starts_with("https://"), "{}", s.url);
    let mut p = Page::new(&s.url, Some(&dir.path().join("tls/ca.crt")));
    let a = p.sign_in(&s.token).await;
    assert_eq!(a.status, 303, "{}", a.body);
    let flags: Vec<&str> = a.set_cookie.split("; ").collect();
    assert!(
        flags[0].starts_with("__Host-tl_session="),
        "{}",
        a.set_cookie
    );
    for f in ["HttpOnly", "SameSite=Strict", "Path=/", "Secure"] {
        assert!(flags.contains(&f), "{f}: {}", a.set_cookie);
    }
    assert_eq!(p.get("/").await.status, 200);
    s.running.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_integrity_pages_of_real_boots_and_the_vm_list() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = case("tiny-sb", "attestation-boot1.json");
    let debug = case("tiny-sb-cmdline", "attestation.json");
    let mut guests = vec![guest(&tiny), guest(&debug)];
    for db in databases(dir.path()) {
        integrity(&db, &mut guests).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_integrity_of_a_windows_boot() {
    let dir = tempfile::tempdir().unwrap();
    let win = windows_case();
    let mut g = guest(&win);
    let s = start(
        &format!("sqlite://{}", dir.path().join("server.db").display()),
        cas(),
        vec![],
    )
    .await;
    // The boot's components as its baseline (what an image's prediction
    // or an operator's approval gives a VM).
    let probe = unique("win-probe");
    s.register(&probe, &guest_registration(&win, &g)).await;
    let ev = g.evidence(&[3; 32]).unwrap();
    let (_, clean) = s
        .call(
            reqwest::Method::POST,
            "/v1/appraisals",
            Some(serde_json::json!({"vmId": probe, "nonce": "03".repeat(32), "evidence": ev})),
        )
        .await;
    let vm = unique("win");
    let mut r = guest_registration(&win, &g);
    r.predicted_baseline = Some(trustlaunch_attestation::Baseline {
        source: trustlaunch_attestation::BaselineSource::Predicted {
            image: "windows".into(),
        },
        measurements: serde_json::from_value(clean["measurements"].clone()).unwrap(),
    });
    s.register(&vm, &r).await;
    let (status, body) = s.attest(&vm, &mut g).await;
    assert_eq!(status, 201, "{body}");
    // The token carries Azure's Windows claims, verified against the
    // published keys.
    let claims = s
        .verified_claims(body["token"].as_str().unwrap_or_else(|| panic!("{body}")))
        .await;
    for (k, v) in [
        ("x-ms-azurevm-is-windows", serde_json::json!(true)),
        ("x-ms-azurevm-ostype", "Windows".into()),
        ("x-ms-azurevm-elam-enabled", true.into()),
        ("x-ms-azurevm-hvci-policy", 0.into()),
        ("x-ms-azurevm-testsigning-enabled", false.into()),
        ("x-ms-azurevm-flightsigning-enabled", false.into()),
        ("x-ms-azurevm-signingdisabled", false.into()),
        ("x-ms-azurevm-debuggersdisabled", true.into()),
        ("x-ms-azurevm-bootdebug-enabled", false.into()),
        ("x-ms-azurevm-kerneldebug-enabled", false.into()),
        ("secureboot", true.into()),
    ] {
        assert_eq!(claims[k], v, "{k}: {claims}");
    }
    let mut p = Page::new(&s.url, None);
    assert_eq!(p.sign_in(&s.token).await.status, 303);
    let body = p.get(&format!("/portal/vms/{vm}/integrity")).await.body;
    assert!(body.contains("badge good\">healthy"), "{body}");
    for check in trustlaunch_attestation::windows::WINDOWS_CHECKS {
        assert!(
            body.contains(&format!("data-check=\"{check}\" data-outcome=\"pass\"")),
            "{check} shown passing: {body}"
        );
    }
    assert!(
        body.contains("Microsoft Root Certificate Authority 2010"),
        "{body}"
    );
    // The features as measured, with the events they rest on, and the
    // claims a token carries.
    assert!(body.contains("id=\"windows-features\""), "{body}");
    assert!(body.contains("(events 15, 16)"), "{body}");
    for (feature, state) in [("vbs", "off"), ("hvci", "off"), ("credential-guard", "off")] {
        assert!(
            body.contains(&format!("data-feature=\"{feature}\"><th>"))
                && body.contains(&format!("<span class=\"badge\">{state}</span>")),
            "{feature}: {body}"
        );
    }
    assert!(
        body.contains("data-claim=\"x-ms-azurevm-elam-enabled\""),
        "{body}"
    );
    // Defender's recommendations for what the boot measured off.
    let sec = p.get("/portal/security").await.body;
    for name in [
        "HVCI should be enabled on Windows virtual machines",
        "Credential Guard should be enabled on Windows virtual machines",
    ] {
        assert!(sec.contains(name), "{name}: {sec}");
    }
    s.running.abort();
}

async fn integrity(db: &str, guests: &mut [trustlaunch_agent::replayed::ReplayedGuest]) {
    let s = start(db, cas(), vec![]).await;
    let tiny = case("tiny-sb", "attestation-boot1.json");
    let debug = case("tiny-sb-cmdline", "attestation.json");
    // The clean boot's components, predicted for both VMs.
    let probe = unique("probe");
    s.register(&probe, &guest_registration(&tiny, &guests[0]))
        .await;
    let ev = guests[0].evidence(&[3; 32]).unwrap();
    let (_, clean) = s
        .call(
            reqwest::Method::POST,
            "/v1/appraisals",
            Some(serde_json::json!({"vmId": probe, "nonce": "03".repeat(32), "evidence": ev})),
        )
        .await;
    let predicted = Some(trustlaunch_attestation::Baseline {
        source: trustlaunch_attestation::BaselineSource::Predicted {
            image: "tiny".into(),
        },
        measurements: serde_json::from_value(clean["measurements"].clone()).unwrap(),
    });
    // One tag for this run's VMs (a PostgreSQL database is shared by runs).
    let tag = unique("p");
    let good = format!("{tag}-good");
    let mut r = guest_registration(&tiny, &guests[0]);
    r.predicted_baseline.clone_from(&predicted);
    s.register(&good, &r).await;
    assert_eq!(s.attest(&good, &mut guests[0]).await.0, 201);
    let bad = format!("{tag}-bad");
    let mut r = guest_registration(&debug, &guests[1]);
    r.predicted_baseline.clone_from(&predicted);
    s.register(&bad, &r).await;
    assert_eq!(s.attest(&bad, &mut guests[1]).await.0, 201);
    // Root in a guest names its module as it likes: markup.
    let evil = format!("{tag}-evil");
    let mut r = guest_registration(&tiny, &guests[0]);
    r.predicted_baseline.clone_from(&predicted);
    s.register(&evil, &r).await;
    let (st, _) = s
        .attest_with(
            &evil,
            &mut guests[0],
            |e| e.untrusted_modules = vec!["<script>alert(1)</script>".into()],
            true,
        )
        .await;
    assert_eq!(st, 201);

    let mut p = Page::new(&s.url, None);
    assert_eq!(p.sign_in(&s.token).await.status, 303);

    // Healthy: every check with its outcome and evidence.
    let page = p.get(&format!("/portal/vms/{good}/integrity")).await;
    assert_eq!(page.status, 200);
    let body = page.body;
    assert!(body.contains("badge good\">healthy"), "{body}");
    for check in [
        "quote.signature",
        "ek.certificate",
        "secureboot.enabled",
        "baseline",
    ] {
        assert!(
            body.contains(&format!("data-check=\"{check}\" data-outcome=\"pass\"")),
            "{check} shown passing"
        );
    }
    assert!(
        body.contains(
            "variable event=<span class=\"hash\">4</span> name=<span class=\"hash\">SecureBoot"
        ),
        "evidence cited: {body}"
    );
    assert!(body.contains("id=\"timeline\""));
    assert!(!body.contains("failing-check"));

    // Tampered (another kernel command line): the failing check and the
    // component, with the baseline's value and this boot's.
    let body = p.get(&format!("/portal/vms/{bad}/integrity")).await.body;
    assert!(body.contains("badge bad\">unhealthy"), "{body}");
    assert!(
        body.contains("<strong class=\"failing-check\">baseline</strong>"),
        "{body}"
    );
    assert!(
        body.contains("data-check=\"baseline\" data-outcome=\"fail\""),
        "{body}"
    );
    assert!(body.contains("Differences from the baseline"), "{body}");
    assert!(body.to_lowercase().contains("command line"), "{body}");

    // Guest-chosen markup is text on every page that shows it.
    for path in [
        "/portal/security".to_owned(),
        format!("/portal/vms/{evil}/integrity"),
    ] {
        let body = p.get(&path).await.body;
        assert!(
            body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{path}: {body}"
        );
        assert!(
            !body.contains("<script>alert(1)"),
            "{path} runs guest markup"
        );
    }

    // The list: filtered by health and name, ordered, counted.
    let body = p
        .get(&format!("/portal/vms?health=unhealthy&q={tag}"))
        .await
        .body;
    assert!(body.contains(&bad) && body.contains(&evil), "{body}");
    assert!(!body.contains(&good), "{body}");
    let body = p.get(&format!("/portal/vms?q={tag}-GOOD")).await.body;
    assert!(
        body.contains(&good) && !body.contains(&bad),
        "case-insensitive: {body}"
    );
    let body = p
        .get(&format!(
            "/portal/vms?q={tag}&type=TrustedLaunch&sort=name&dir=desc"
        ))
        .await
        .body;
    let (ib, ig) = (body.find(&bad).unwrap(), body.find(&good).unwrap());
    assert!(ig < ib, "-good sorts after -bad: descending, first");
    assert!(body.contains("3 VM(s)"), "{body}");
    let body = p.get("/portal/vms?q=%25_").await.body;
    assert!(
        body.contains("0 VM(s)"),
        "LIKE's wildcards are literal: {body}"
    );
    let body = p.get(&format!("/portal/vms?q={tag}&page=99")).await.body;
    assert!(
        body.contains("3 VM(s) · page 99 of 1"),
        "past the end, still counted: {body}"
    );
    s.running.abort();
}
