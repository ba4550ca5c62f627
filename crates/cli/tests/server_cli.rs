//! `trustlaunch server` and its clients over TLS, as processes: HTTPS by
//! default with the platform CA made in the home, trusted by the CLI from
//! the home or `--cacert` and by nothing else; without a home, the CA and
//! master key beside the SQLite database; plain HTTP refused on a
//! non-loopback address.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

struct Server {
    child: Child,
    url: String,
    log: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn vtpm_ca() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../attestation/tests/data/evidence/vtpm-ca.crt")
}

fn server(dir: &Path, args: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_trustlaunch"))
        .args([
            "server",
            "--no-runtime",
            "--driver",
            "none",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--vtpm-ca")
        .arg(vtpm_ca())
        .args(args)
        .env("TRUSTLAUNCH_HOME", dir.join("default-home"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    let url = loop {
        let line = lines.next().expect("server output").expect("line");
        log.push(line.clone());
        if let Some(u) = line.strip_prefix("trustlaunch server: listening on ") {
            break u.trim().to_owned();
        }
    };
    log.push(lines.next().expect("the TLS line").expect("line"));
    std::thread::spawn(move || for _ in lines {});
    Server { child, url, log }
}

fn tl(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trustlaunch"))
        .args(args)
        .env("TRUSTLAUNCH_HOME", dir.join("default-home"))
        .env_remove("TRUSTLAUNCH_CACERT")
        .env_remove("TRUSTLAUNCH_SERVER")
        .env_remove("TRUSTLAUNCH_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("run trustlaunch")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn https_by_default_with_the_platform_ca_of_the_home() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let home = d.join("home");
    let s = server(d, &["--home", home.to_str().unwrap()]);
    assert!(s.url.starts_with("https://127.0.0.1:"), "{}", s.url);
    let ca = home.join("tls/ca.crt");
    assert!(
        s.log.last().unwrap().contains("127.0.0.1, localhost")
            && s.log
                .last()
                .unwrap()
                .contains(&format!("--cacert {}", ca.display())),
        "{:?}",
        s.log
    );
    // The CLI trusts the CA of the home it is given.
    let o = tl(
        d,
        &[
            "security",
            "alerts",
            "--server",
            &s.url,
            "--home",
            home.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("no alerts"));
    // Elsewhere, only with --cacert; without it, it says what to give.
    let token = std::fs::read_to_string(home.join("server/admin.token")).unwrap();
    let o = tl(
        d,
        &[
            "security",
            "alerts",
            "--server",
            &s.url,
            "--token",
            token.trim(),
        ],
    );
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--cacert") && err.contains("UnknownIssuer"),
        "{err}"
    );
    let o = tl(
        d,
        &[
            "security",
            "alerts",
            "--server",
            &s.url,
            "--token",
            token.trim(),
            "--cacert",
            ca.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn without_a_home_the_ca_and_master_key_live_beside_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let db = format!("sqlite://{}", data.join("s.db").display());
    let token = d.join("admin.token");
    let s = server(
        d,
        &["--db", &db, "--admin-token-file", token.to_str().unwrap()],
    );
    assert!(s.url.starts_with("https://"), "{}", s.url);
    assert!(data.join("master.key").exists() && data.join("tls/ca.crt").exists());
    assert!(!d.join("default-home/tls").exists() && !d.join("default-home/master.key").exists());
    let o = tl(
        d,
        &[
            "security",
            "recommendations",
            "--server",
            &s.url,
            "--cacert",
            data.join("tls/ca.crt").to_str().unwrap(),
            "--token",
            std::fs::read_to_string(&token).unwrap().trim(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn plain_http_is_refused_off_loopback_and_served_on_it_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = format!("sqlite://{}", d.join("s.db").display());
    let o = tl(
        d,
        &[
            "server",
            "--no-runtime",
            "--listen",
            "0.0.0.0:0",
            "--no-tls",
            "--db",
            &db,
            "--vtpm-ca",
            vtpm_ca().to_str().unwrap(),
        ],
    );
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("refusing to serve plain HTTP on 0.0.0.0:0")
            && err.contains("--insecure-http"),
        "{err}"
    );
    let token = d.join("admin.token");
    let s = server(
        d,
        &[
            "--no-tls",
            "--db",
            &db,
            "--admin-token-file",
            token.to_str().unwrap(),
        ],
    );
    assert!(s.url.starts_with("http://127.0.0.1:"), "{}", s.url);
    assert!(s.log.last().unwrap().contains("plain HTTP"), "{:?}", s.log);
    let o = tl(
        d,
        &[
            "security",
            "alerts",
            "--server",
            &s.url,
            "--token",
            std::fs::read_to_string(&token).unwrap().trim(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn a_webhook_needs_its_secret_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = format!("sqlite://{}", d.join("s.db").display());
    let run = |extra: &[&str]| {
        let mut a = vec![
            "server",
            "--no-runtime",
            "--no-tls",
            "--listen",
            "127.0.0.1:0",
            "--db",
            &db,
        ];
        a.extend_from_slice(extra);
        let o = tl(d, &a);
        assert!(!o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let err = run(&["--webhook", "siem=https://siem.example/in"]);
    assert!(
        err.contains("webhook siem has no secret: give --webhook-secret-file siem=FILE"),
        "{err}"
    );
    let err = run(&["--webhook", "https://siem.example/in"]);
    assert!(err.contains("NAME=URL"), "{err}");
    std::fs::write(d.join("short"), "short\n").unwrap();
    let short = format!("siem={}", d.join("short").display());
    let err = run(&[
        "--webhook",
        "siem=https://siem.example/in",
        "--webhook-secret-file",
        &short,
    ]);
    assert!(err.contains("shorter than 16 bytes"), "{err}");
    assert!(
        !d.join("s.db").exists(),
        "refused before the database was made"
    );
}
