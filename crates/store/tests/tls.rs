//! The store reaches PostgreSQL over TLS, verified (`sslmode=verify-full`
//! with `sslrootcert=`), when `TRUSTLAUNCH_TEST_POSTGRES_TLS` names such a
//! URL (the test command sets it up): the connection is encrypted as the
//! server itself reports (`pg_stat_ssl`), and a CA the server's
//! certificate does not chain to is refused with a clear error.

use sqlx::Connection as _;
use trustlaunch_store::{Store, StoreError};

fn tls_url() -> Option<String> {
    match std::env::var("TRUSTLAUNCH_TEST_POSTGRES_TLS") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            eprintln!("TRUSTLAUNCH_TEST_POSTGRES_TLS not set: PostgreSQL TLS tests skipped");
            None
        }
    }
}

/// `url` with `sslrootcert=` replaced by `ca`.
fn with_root(url: &str, ca: &std::path::Path) -> String {
    let (base, query) = url
        .split_once('?')
        .expect("a URL with sslmode and sslrootcert");
    let mut params: Vec<String> = query
        .split('&')
        .filter(|p| !p.starts_with("sslrootcert="))
        .map(str::to_owned)
        .collect();
    params.push(format!("sslrootcert={}", ca.display()));
    format!("{base}?{}", params.join("&"))
}

/// `url` naming database `name` instead, its parameters kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let (server, _) = base.rsplit_once('/').unwrap();
    format!("{server}/{name}?{query}")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_store_speaks_verified_tls_to_postgres() {
    let Some(admin_url) = tls_url() else { return };
    assert!(
        admin_url.contains("sslmode=verify-full") && admin_url.contains("sslrootcert="),
        "TRUSTLAUNCH_TEST_POSTGRES_TLS should verify: {admin_url}"
    );
    // A fresh database for this run (over the verified connection too),
    // dropped afterwards.
    sqlx::any::install_default_drivers();
    let name = format!(
        "trustlaunch_tls{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000
    );
    let mut admin = sqlx::AnyConnection::connect(&admin_url)
        .await
        .expect("TRUSTLAUNCH_TEST_POSTGRES_TLS is set but PostgreSQL is not reachable over TLS");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create the test database (the role needs CREATEDB)");
    let url = with_database(&admin_url, &name);
    let outcome = tokio::spawn(async move { verified_connection(&url).await }).await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn verified_connection(url: &str) {
    let url = url.to_owned();
    let store = Store::open(&url)
        .await
        .unwrap_or_else(|e| panic!("verify-full against the test CA: {e}"));
    assert!(store.tls_in_use().await.unwrap(), "pg_stat_ssl: not TLS");
    // Its statements work over it.
    assert!(store.suppression_rules().await.is_ok());
    store.close().await;

    // The server's own view of a verified connection, through sqlx directly.
    let mut c = sqlx::AnyConnection::connect(&url).await.unwrap();
    let (ssl, version): (i64, String) = sqlx::query_as(
        "SELECT CASE WHEN ssl THEN 1 ELSE 0 END::BIGINT, version::TEXT FROM pg_stat_ssl \
         WHERE pid = pg_backend_pid()",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(ssl, 1);
    assert!(version.starts_with("TLSv1."), "{version}");
    c.close().await.unwrap();

    // Without TLS the same check says so (it can be false).
    let plain = format!("{}?sslmode=disable", url.split('?').next().unwrap());
    let store = Store::open(&plain).await.unwrap();
    assert!(!store.tls_in_use().await.unwrap());
    store.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_full_against_another_ca_is_refused_clearly() {
    let Some(url) = tls_url() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "not the database's CA");
    let other = params.self_signed(&key).unwrap();
    let ca = dir.path().join("other-ca.pem");
    std::fs::write(&ca, other.pem()).unwrap();
    let err = match Store::open(&with_root(&url, &ca)).await {
        Ok(_) => panic!("connected with a CA the server's certificate does not chain to"),
        Err(e) => e,
    };
    assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("UnknownIssuer"), "{msg}");
    assert!(msg.contains("sslrootcert"), "{msg}");
    assert!(
        !msg.contains("trustlaunch-test-only"),
        "the password leaked: {msg}"
    );
}
