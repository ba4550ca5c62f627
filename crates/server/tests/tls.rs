//! HTTPS for the API with real rustls handshakes: the platform's TLS CA
//! made on first start (keys sealed under the master key), trusted by a
//! client given its `ca.crt` and by nobody else, kept across restarts, a
//! new server certificate when the listen address changes; and a
//! certificate from files, with a mismatched key refused.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use trustlaunch_server::{Config, TlsSource};

fn platform(dir: &Path) -> TlsSource {
    TlsSource::Platform {
        dir: dir.join("tls"),
        master_key: dir.join("master.key"),
        extra_names: Vec::new(),
    }
}

async fn start_tls(
    dir: &Path,
    listen: &str,
    tls: TlsSource,
) -> Result<trustlaunch_server::Running, String> {
    trustlaunch_server::start(Config {
        listen: listen.parse().unwrap(),
        db: format!("sqlite://{}", dir.join("server.db").display()),
        vtpm_ca: platform_ca(),
        tls: Some(tls),
        ..Config::default()
    })
    .await
    .map_err(|e| e.to_string())
}

/// Why `start_tls` refused.
async fn refused(dir: &Path, tls: TlsSource) -> String {
    match start_tls(dir, "127.0.0.1:0", tls).await {
        Ok(r) => {
            r.abort();
            panic!("started");
        }
        Err(e) => e,
    }
}

fn client(ca: Option<&Path>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(Duration::from_secs(10));
    if let Some(ca) = ca {
        b = b.add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap(),
        );
    }
    b.build().unwrap()
}

/// The error and its causes, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut c = e.source();
    while let Some(x) = c {
        s.push_str(": ");
        s.push_str(&x.to_string());
        c = x.source();
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_platform_ca_is_made_once_trusted_by_its_clients_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = start_tls(d, "127.0.0.1:0", platform(d)).await.unwrap();
    let tls = a.tls.as_ref().unwrap();
    assert!(tls.issued);
    let ca = d.join("tls/ca.crt");
    assert_eq!(tls.ca_file.as_deref(), Some(ca.as_path()));
    assert_eq!(tls.names, ["127.0.0.1", "localhost"]);
    for key in ["ca.key.sealed", "server.key.sealed"] {
        let text = std::fs::read_to_string(d.join("tls").join(key)).unwrap();
        assert!(
            text.starts_with(trustlaunch_seal::BEGIN),
            "{key}: not sealed"
        );
        assert!(!text.contains("PRIVATE KEY"), "{key}: a key in the clear");
    }
    assert!(a.url().starts_with("https://127.0.0.1:"));

    // Trusted through ca.crt, for the address and for localhost.
    let trusted = client(Some(&ca));
    let r = trusted
        .get(format!("{}/healthz", a.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let by_name = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .resolve("localhost", a.addr)
        .build()
        .unwrap();
    let r = by_name
        .get(format!("https://localhost:{}/healthz", a.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let discovery: serde_json::Value = trusted
        .get(format!("{}/.well-known/openid-configuration", a.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], a.url());

    // Not trusted without it; plain HTTP gets no answer.
    let e = client(None)
        .get(format!("{}/healthz", a.url()))
        .send()
        .await
        .unwrap_err();
    let why = chain(&e);
    assert!(why.contains("UnknownIssuer"), "{why}");
    let plain = client(None)
        .get(format!("http://{}/healthz", a.addr))
        .send()
        .await;
    assert!(
        plain.as_ref().map_or(true, |r| r.status() != 200),
        "plain HTTP answered: {plain:?}"
    );
    let port = a.addr.port();
    a.abort();

    // Restarted on the same address: the same CA and certificate.
    let ca_pem = std::fs::read(&ca).unwrap();
    let cert_pem = std::fs::read(d.join("tls/server.crt")).unwrap();
    let b = start_tls(d, &format!("127.0.0.1:{port}"), platform(d))
        .await
        .unwrap();
    assert!(!b.tls.as_ref().unwrap().issued);
    assert_eq!(std::fs::read(&ca).unwrap(), ca_pem);
    assert_eq!(std::fs::read(d.join("tls/server.crt")).unwrap(), cert_pem);
    b.abort();

    // On another address: a new certificate from the same CA.
    let c = start_tls(d, "127.0.0.2:0", platform(d)).await.unwrap();
    assert!(c.tls.as_ref().unwrap().issued);
    assert_eq!(c.tls.as_ref().unwrap().names, ["127.0.0.2", "localhost"]);
    assert_eq!(std::fs::read(&ca).unwrap(), ca_pem);
    assert_ne!(std::fs::read(d.join("tls/server.crt")).unwrap(), cert_pem);
    let r = trusted
        .get(format!("{}/healthz", c.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    c.abort();

    // Another master key does not open the sealed keys.
    std::fs::remove_file(d.join("master.key")).unwrap();
    std::fs::write(d.join("master.key"), [7u8; 32]).unwrap();
    let e = refused(d, platform(d)).await;
    assert!(
        e.contains("ca.key.sealed") && e.contains("master key"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_files_is_served_and_a_key_that_does_not_fit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ca, leaf, key) = test_pki("test CA");
    std::fs::write(d.join("ca.pem"), &ca).unwrap();
    std::fs::write(d.join("cert.pem"), &leaf).unwrap();
    std::fs::write(d.join("key.pem"), &key).unwrap();
    let files = TlsSource::Files {
        cert: d.join("cert.pem"),
        key: d.join("key.pem"),
    };
    let s = start_tls(d, "127.0.0.1:0", files.clone()).await.unwrap();
    assert_eq!(s.tls.as_ref().unwrap().ca_file, None);
    // No platform CA; the master key beside the database seals only the
    // token-signing keys.
    assert!(!d.join("tls").exists());
    let r = client(Some(&d.join("ca.pem")))
        .get(format!("{}/healthz", s.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    s.abort();

    let (_, _, other_key) = test_pki("test CA");
    std::fs::write(d.join("other.pem"), other_key).unwrap();
    let e = refused(
        d,
        TlsSource::Files {
            cert: d.join("cert.pem"),
            key: d.join("other.pem"),
        },
    )
    .await;
    assert!(e.contains("cert.pem") && e.contains("other.pem"), "{e}");
    assert!(e.to_lowercase().contains("mismatch"), "{e}");

    let e = refused(
        d,
        TlsSource::Files {
            cert: d.join("missing.pem"),
            key: d.join("key.pem"),
        },
    )
    .await;
    assert!(e.contains("missing.pem"), "{e}");
    let e = refused(
        d,
        TlsSource::Files {
            cert: d.join("key.pem"),
            key: d.join("key.pem"),
        },
    )
    .await;
    assert!(e.contains("no CERTIFICATE"), "{e}");
}
