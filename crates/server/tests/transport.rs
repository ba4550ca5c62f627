//! The transport under slow and idle clients, on real sockets (plain HTTP
//! and rustls): hundreds of connections that trickle a header forever are
//! closed at the header-read timeout while `/healthz` still answers, with
//! file descriptors and memory bounded; stalled TLS handshakes are closed
//! at theirs; the connection cap holds (the next client waits in the
//! backlog and is served when a slot frees); idle keep-alive connections
//! and clients that stop reading their answers are closed; a request whose
//! body never arrives is answered 408.
//!
//! The tests share the process's file descriptor table, so they run one at
//! a time.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use trustlaunch_server::{Config, HttpLimits, TlsSource};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

async fn server(dir: &std::path::Path, http: HttpLimits, tls: bool) -> Srv {
    let db = format!("sqlite://{}", dir.join("server.db").display());
    start_with(
        &db,
        Config {
            vtpm_ca: platform_ca(),
            http,
            tls: tls.then(|| TlsSource::Platform {
                dir: dir.join("tls"),
                master_key: dir.join("master.key"),
                extra_names: Vec::new(),
            }),
            ..Config::default()
        },
    )
    .await
}

/// `name` from the server's metrics (the counters live in the process).
fn metric(s: &Srv, name: &str) -> u64 {
    let text = s
        .running
        .service
        .metrics
        .render(&trustlaunch_server::metrics::Gauges::default());
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0, |v| v.parse().unwrap())
}

/// Waits for `name` to reach `at_least` (a connection is counted once its
/// task ended, just after the client saw it close).
async fn wait_metric(s: &Srv, name: &str, at_least: u64) {
    wait_until(
        &format!("{name} >= {at_least}"),
        Duration::from_secs(5),
        || metric(s, name) >= at_least,
    )
    .await;
}

async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TLS connection trusting the server's platform CA.
async fn tls_connect(s: &Srv) -> tokio_rustls::client::TlsStream<TcpStream> {
    let ca = s.running.tls.as_ref().unwrap().ca_file.clone().unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::pem::PemObject::pem_file_iter(&ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(s.running.addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

/// Sends a partial request head, then one more header line every 300 ms
/// for as long as the server listens; returns how long the server kept
/// the connection.
async fn slowloris<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, i: usize) -> Duration {
    let t0 = Instant::now();
    let head = format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Client: {i}\r\n");
    if s.write_all(head.as_bytes()).await.is_err() {
        return t0.elapsed();
    }
    let mut buf = [0u8; 512];
    loop {
        tokio::select! {
            r = s.read(&mut buf) => match r {
                Ok(0) | Err(_) => return t0.elapsed(),
                // A 408 or 4xx before closing is fine too; keep reading.
                Ok(_) => {}
            },
            () = tokio::time::sleep(Duration::from_millis(300)) => {
                if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    return t0.elapsed();
                }
            }
        }
    }
}

async fn healthz(s: &Srv) -> u16 {
    s.http
        .get(format!("{}/healthz", s.url))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_at_the_header_timeout_and_healthz_answers() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let header = Duration::from_secs(2);
    let s = server(
        dir.path(),
        HttpLimits {
            header_read_timeout: header,
            ..HttpLimits::default()
        },
        false,
    )
    .await;
    assert_eq!(healthz(&s).await, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (fds0, rss0) = (fds(), rss_kib());
    let n = 300;
    let mut held = Vec::new();
    for i in 0..n {
        let c = TcpStream::connect(s.running.addr).await.unwrap();
        held.push(tokio::spawn(slowloris(c, i)));
    }
    wait_until("300 connections open", Duration::from_secs(10), || {
        s.running.service.metrics.connections_open() >= n as u64
    })
    .await;
    // While they are held: both ends of each are open in this process
    // (give or take the few descriptors the test's other clients and the
    // runtime open or close meanwhile), memory is bounded, and the service
    // answers.
    let during = fds();
    assert!(
        during + 16 >= fds0 + 2 * n && during <= fds0 + 2 * n + 64,
        "fds {fds0} -> {during} with {n} connections held"
    );
    assert_eq!(healthz(&s).await, 200, "healthz while {n} slowloris held");
    let grown = rss_kib().saturating_sub(rss0);
    assert!(grown < 64 << 10, "RSS grew {grown} KiB for {n} connections");
    for h in held {
        let kept = h.await.unwrap();
        assert!(
            kept >= header - Duration::from_millis(100) && kept < Duration::from_secs(10),
            "a trickling client kept its connection {kept:?} (header timeout {header:?})"
        );
    }
    wait_metric(
        &s,
        "trustlaunch_http_connections_closed_total{reason=\"header_timeout\"}",
        n as u64,
    )
    .await;
    wait_until("server ends released", Duration::from_secs(5), || {
        s.running.service.metrics.connections_open() == 0 && fds() <= fds0 + 8
    })
    .await;
    assert_eq!(healthz(&s).await, 200);
    s.running.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_stalled_handshakes_and_slow_headers_are_closed() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let limit = Duration::from_secs(2);
    let s = server(
        dir.path(),
        HttpLimits {
            header_read_timeout: limit,
            tls_handshake_timeout: limit,
            ..HttpLimits::default()
        },
        true,
    )
    .await;
    assert!(s.url.starts_with("https://"), "{}", s.url);
    assert_eq!(healthz(&s).await, 200);
    let fds0 = fds();
    // 100 clients that never say hello, 100 that half say it, and 100
    // that finish the handshake and trickle a header.
    let mut stalled = Vec::new();
    for i in 0..200 {
        let mut c = TcpStream::connect(s.running.addr).await.unwrap();
        stalled.push(tokio::spawn(async move {
            let t0 = Instant::now();
            if i % 2 == 1 {
                // A TLS record header announcing a 512-byte handshake
                // message, and 5 bytes of it.
                let _ = c.write_all(&[22, 3, 1, 2, 0, 1, 0, 1, 252, 3]).await;
            }
            let mut b = [0u8; 64];
            loop {
                match c.read(&mut b).await {
                    Ok(0) | Err(_) => return t0.elapsed(),
                    Ok(_) => {}
                }
            }
        }));
    }
    let mut slow = Vec::new();
    for i in 0..100 {
        let c = tls_connect(&s).await;
        slow.push(tokio::spawn(slowloris(c, i)));
    }
    wait_until("300 connections open", Duration::from_secs(20), || {
        s.running.service.metrics.connections_open() >= 300
    })
    .await;
    assert_eq!(healthz(&s).await, 200, "healthz over TLS while 300 held");
    for h in stalled.into_iter().chain(slow) {
        let kept = h.await.unwrap();
        assert!(
            kept >= limit - Duration::from_millis(100) && kept < Duration::from_secs(15),
            "kept {kept:?} (timeouts {limit:?})"
        );
    }
    wait_metric(
        &s,
        "trustlaunch_http_connections_closed_total{reason=\"tls_handshake_timeout\"}",
        200,
    )
    .await;
    wait_metric(
        &s,
        "trustlaunch_http_connections_closed_total{reason=\"header_timeout\"}",
        100,
    )
    .await;
    wait_until("server ends released", Duration::from_secs(5), || {
        s.running.service.metrics.connections_open() == 0 && fds() <= fds0 + 8
    })
    .await;
    s.running.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_holds_and_a_waiting_client_is_served_when_a_slot_frees() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let cap = 20;
    let s = server(
        dir.path(),
        HttpLimits {
            max_connections: cap,
            header_read_timeout: Duration::from_secs(60),
            keep_alive_timeout: Duration::from_secs(60),
            ..HttpLimits::default()
        },
        false,
    )
    .await;
    let addr: SocketAddr = s.running.addr;
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let (peak, service) = (peak.clone(), s.running.service.clone());
        tokio::spawn(async move {
            loop {
                peak.fetch_max(
                    service.metrics.connections_open(),
                    std::sync::atomic::Ordering::Relaxed,
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut held = Vec::new();
    for _ in 0..cap {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    wait_until("the cap reached", Duration::from_secs(5), || {
        s.running.service.metrics.connections_open() == cap as u64
    })
    .await;
    let fds_full = fds();
    // The next client connects (the kernel's backlog) but is not served.
    let (url, http) = (s.url.clone(), s.http.clone());
    let waiting = tokio::spawn(async move {
        let t0 = Instant::now();
        let r = http
            .get(format!("{url}/healthz"))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map(|r| r.status().as_u16());
        (r, t0.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!waiting.is_finished(), "served beyond the cap");
    assert_eq!(s.running.service.metrics.connections_open(), cap as u64);
    assert!(
        fds() <= fds_full + 1,
        "the server accepted beyond the cap: {fds_full} -> {}",
        fds()
    );
    // A slot frees: the waiting client is accepted and answered.
    held.pop();
    let (r, waited) = waiting.await.unwrap();
    assert_eq!(r.unwrap(), 200);
    assert!(waited >= Duration::from_millis(1500));
    sampler.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    assert!(peak <= cap as u64, "peak {peak} connections, cap {cap}");
    drop(held);
    s.running.abort();
}

/// Reads one whole answer (head and `Content-Length` body) from `c`.
async fn read_answer<S: AsyncRead + Unpin>(c: &mut S) -> String {
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        let n = c.read(&mut b).await.unwrap();
        assert!(
            n > 0,
            "closed before an answer: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&b[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return text;
            }
        }
    }
}

/// Reads until the server closes; how long that took.
async fn until_closed<S: AsyncRead + Unpin>(c: &mut S) -> Duration {
    let t0 = Instant::now();
    let mut b = [0u8; 4096];
    loop {
        match c.read(&mut b).await {
            Ok(0) | Err(_) => return t0.elapsed(),
            Ok(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_and_unread_answers_are_closed() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let idle = Duration::from_secs(1);
    let s = server(
        dir.path(),
        HttpLimits {
            keep_alive_timeout: idle,
            header_read_timeout: Duration::from_secs(60),
            ..HttpLimits::default()
        },
        false,
    )
    .await;
    // Keep-alive: one answer, then nothing: closed after `idle`, long
    // before the header timeout.
    let mut c = TcpStream::connect(s.running.addr).await.unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_answer(&mut c).await.starts_with("HTTP/1.1 200"));
    let kept = until_closed(&mut c).await;
    assert!(
        kept >= idle - Duration::from_millis(100) && kept < Duration::from_secs(10),
        "idle keep-alive kept {kept:?}"
    );
    wait_metric(
        &s,
        "trustlaunch_http_connections_closed_total{reason=\"idle\"}",
        1,
    )
    .await;

    // A client that asks for answers and reads none: once the socket's
    // buffers are full nothing moves, and the connection is closed.
    let before = metric(
        &s,
        "trustlaunch_http_connections_closed_total{reason=\"idle\"}",
    );
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut c = sock.connect(s.running.addr).await.unwrap();
    let ask = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n".repeat(400);
    // Written from a task: the server stops reading when it cannot write.
    let writer = tokio::spawn(async move {
        let _ = c.write_all(&ask).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(c);
    });
    wait_until(
        "a client that reads nothing closed",
        Duration::from_secs(15),
        || {
            metric(
                &s,
                "trustlaunch_http_connections_closed_total{reason=\"idle\"}",
            ) > before
        },
    )
    .await;
    writer.abort();
    s.running.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_body_never_arrives_is_answered_408() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let s = server(
        dir.path(),
        HttpLimits {
            request_timeout: Duration::from_secs(1),
            ..HttpLimits::default()
        },
        false,
    )
    .await;
    let mut c = TcpStream::connect(s.running.addr).await.unwrap();
    let head = format!(
        "POST /v1/appraisals HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"vmId\"",
        s.token
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let t0 = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(10), read_answer(&mut c))
        .await
        .expect("no answer within 10 s for a 1 s request timeout");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("RequestTimeout"), "{answer}");
    assert!(t0.elapsed() >= Duration::from_millis(900));
    until_closed(&mut c).await;
    s.running.abort();
}

#[tokio::test]
async fn plain_http_on_a_non_loopback_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = match trustlaunch_server::start(Config {
        listen: "0.0.0.0:0".parse().unwrap(),
        db: format!("sqlite://{}", dir.path().join("s.db").display()),
        vtpm_ca: platform_ca(),
        ..Config::default()
    })
    .await
    {
        Ok(_) => panic!("plain HTTP on 0.0.0.0 started"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("refusing to serve plain HTTP on 0.0.0.0"), "{e}");
    // Refused before anything was made.
    assert!(!dir.path().join("s.db").exists());
}
