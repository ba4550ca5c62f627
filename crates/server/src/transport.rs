//! The server's accept loop: TCP, optionally TLS (rustls), HTTP/1.1 (hyper)
//! in front of the API's router, with the limits that keep slow or idle
//! clients from exhausting the server.
//!
//! - at most [`HttpLimits::max_connections`] connections are open: at the
//!   cap the loop stops accepting and new connections wait in the kernel's
//!   backlog (no file descriptor is spent on them) until one closes;
//! - a TLS handshake must finish within `tls_handshake_timeout`;
//! - a request's head must arrive within `header_read_timeout` (hyper's
//!   timer, which also runs while a connection waits for its next request);
//! - a request must be answered within `request_timeout`, reading of its
//!   body included (else `408`, and the connection is closed);
//! - a connection with no request in progress is closed once its socket
//!   has moved no byte for `keep_alive_timeout` (an idle keep-alive
//!   connection, or a client that stopped reading its answer).
//!
//! What it does not do: HTTP/2, per-client limits (one client may take every
//! connection; the cap bounds the server, not the fairness), graceful
//! draining (stopping the server drops its connections).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt as _;

use crate::error::ApiError;
use crate::service::Service;

/// The largest request head (request line and headers) accepted; larger
/// ones are answered 431.
const MAX_HEADER_BYTES: usize = 32 << 10;

/// How the server protects itself from slow and idle clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections open at once (default 512). Keep it well under the
    /// process's file descriptor limit: the database, the VMs' sockets and
    /// files need theirs.
    pub max_connections: usize,
    /// Time for a TLS handshake (default 10 s).
    pub tls_handshake_timeout: Duration,
    /// Time for a request's head from the moment the server waits for it
    /// (default 10 s). A client that trickles a header byte by byte is
    /// closed when it runs out, whatever it sends meanwhile.
    pub header_read_timeout: Duration,
    /// Time from a request's head to its answer, its body's upload included
    /// (default 120 s: longer than a challenge to a VM's agent, 30 s).
    pub request_timeout: Duration,
    /// A connection with no request in progress whose socket moves no byte
    /// this long is closed (default 10 s). A connection waiting for its
    /// next request is also bounded by `header_read_timeout`, so the
    /// shorter of the two applies there.
    pub keep_alive_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            keep_alive_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `router` on `listener` until the task is dropped; dropping it
/// closes every connection it opened.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: axum::Router,
    limits: HttpLimits,
    service: Arc<Service>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        // At the cap: wait for a connection to end before accepting.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) if per_connection_error(&e) => continue,
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                tracing::warn!("accepting connections: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (tls, router, service) = (tls.clone(), router.clone(), service.clone());
        connections.spawn(async move {
            let _slot = slot;
            let _open = service.metrics.connection_opened();
            let reason = connection(stream, peer, tls, router, limits).await;
            service.metrics.connection_closed(reason.as_str());
        });
    }
}

/// Accept errors that concern one connection only (it was reset before it
/// was accepted), not the listener.
fn per_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// Why a connection ended (the `reason` label of
/// `trustlaunch_http_connections_closed_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Closed {
    /// The client closed it, or asked to.
    Client,
    /// The TLS handshake failed.
    TlsError,
    /// The TLS handshake took longer than its timeout.
    TlsHandshakeTimeout,
    /// A request's head took longer than its timeout.
    HeaderTimeout,
    /// No request in progress and no byte moved for the keep-alive timeout.
    Idle,
    /// A protocol or IO error.
    Error,
}

impl Closed {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::TlsError => "tls_error",
            Self::TlsHandshakeTimeout => "tls_handshake_timeout",
            Self::HeaderTimeout => "header_timeout",
            Self::Idle => "idle",
            Self::Error => "error",
        }
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: axum::Router,
    limits: HttpLimits,
) -> Closed {
    let activity = Arc::new(Activity::new());
    let io = Tracked {
        inner: stream,
        activity: activity.clone(),
    };
    match tls {
        None => http(io, router, limits, activity).await,
        Some(acceptor) => {
            match tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(io)).await {
                Ok(Ok(tls)) => http(tls, router, limits, activity).await,
                Ok(Err(e)) => {
                    tracing::debug!("TLS handshake with {peer}: {e}");
                    Closed::TlsError
                }
                Err(_) => Closed::TlsHandshakeTimeout,
            }
        }
    }
}

/// HTTP/1.1 on one connection, watched for idleness.
async fn http<I>(io: I, router: axum::Router, limits: HttpLimits, activity: Arc<Activity>) -> Closed
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let watched = activity.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (router, activity) = (router.clone(), watched.clone());
        async move {
            activity.busy.fetch_add(1, Ordering::SeqCst);
            let answer = tokio::time::timeout(limits.request_timeout, router.oneshot(req)).await;
            activity.touch();
            activity.busy.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, Infallible>(match answer {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => request_timed_out(limits.request_timeout),
            })
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    loop {
        let check = activity.idle_deadline(limits.keep_alive_timeout);
        tokio::select! {
            ended = conn.as_mut() => {
                return match ended {
                    Ok(()) => Closed::Client,
                    Err(e) if e.is_timeout() => Closed::HeaderTimeout,
                    Err(e) if e.is_incomplete_message() => Closed::Client,
                    Err(e) => {
                        tracing::debug!("HTTP connection: {e}");
                        Closed::Error
                    }
                };
            }
            () = tokio::time::sleep_until(check) => {
                if activity.idle_for(limits.keep_alive_timeout) {
                    // Dropping the connection closes the socket; nothing
                    // is in progress on it.
                    return Closed::Idle;
                }
            }
        }
    }
}

/// The 408 answer to a request that outlived `request_timeout`; the
/// connection is closed after it (the request's body may be half read).
fn request_timed_out(limit: Duration) -> Response {
    let mut r = ApiError {
        status: StatusCode::REQUEST_TIMEOUT,
        code: "RequestTimeout",
        message: format!(
            "the request was not completed within {} s",
            limit.as_secs_f64()
        ),
        target: None,
    }
    .into_response();
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// What the idle watch reads: when a byte last moved, and how many
/// requests are in progress.
struct Activity {
    start: Instant,
    /// Milliseconds from `start` to the last byte read or written.
    last: AtomicU64,
    busy: AtomicU32,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
            busy: AtomicU32::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }

    /// When to look again.
    fn idle_deadline(&self, limit: Duration) -> Instant {
        if self.busy.load(Ordering::SeqCst) > 0 {
            Instant::now() + limit
        } else {
            self.last() + limit
        }
    }

    /// No request in progress and no byte moved for `limit`.
    fn idle_for(&self, limit: Duration) -> bool {
        self.busy.load(Ordering::SeqCst) == 0 && self.last().elapsed() >= limit
    }
}

/// A socket that records in [`Activity`] each time a byte moves.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Whether plain HTTP may be served on `listen`: on a loopback address,
/// yes; elsewhere only when the operator insisted (`insecure`), with a
/// warning to log. `Err` is the refusal, for people.
pub fn plain_http_allowed(listen: SocketAddr, insecure: bool) -> Result<Option<String>, String> {
    if listen.ip().is_loopback() {
        return Ok(None);
    }
    if insecure {
        return Ok(Some(format!(
            "SERVING PLAIN HTTP ON {listen}, A NON-LOOPBACK ADDRESS: API tokens, evidence and \
             attestation tokens cross the network unencrypted and unauthenticated. Use this only \
             behind something that encrypts the path (a TLS-terminating proxy on this host)."
        )));
    }
    Err(format!(
        "refusing to serve plain HTTP on {listen}: it is not a loopback address, and API tokens \
         and evidence would cross the network in the clear. Serve HTTPS (the platform's \
         certificate, or --tls-cert/--tls-key), or pass --insecure-http if something else \
         encrypts the path"
    ))
}

/// A warning if `max_connections` leaves too few of the process's file
/// descriptors for everything else.
pub(crate) fn check_fd_limit(max_connections: usize) -> Option<String> {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current?;
    let reserve = 128u64;
    let wanted = u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_add(reserve);
    (soft < wanted).then(|| {
        format!(
            "the connection cap ({max_connections}) plus {reserve} descriptors for the database, \
             VMs and files exceeds this process's open-file limit ({soft}): raise the limit \
             (ulimit -n, LimitNOFILE=) or lower the cap"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_on_loopback_only_unless_insisted() {
        let lo: SocketAddr = "127.0.0.1:8844".parse().unwrap();
        let lo6: SocketAddr = "[::1]:8844".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8844".parse().unwrap();
        let lan: SocketAddr = "192.0.2.7:8844".parse().unwrap();
        assert_eq!(plain_http_allowed(lo, false), Ok(None));
        assert_eq!(plain_http_allowed(lo6, false), Ok(None));
        for a in [any, lan] {
            let refused = plain_http_allowed(a, false).unwrap_err();
            assert!(
                refused.contains("refusing to serve plain HTTP"),
                "{refused}"
            );
            assert!(refused.contains("--insecure-http"), "{refused}");
            let warned = plain_http_allowed(a, true).unwrap().unwrap();
            assert!(warned.contains("PLAIN HTTP"), "{warned}");
        }
    }

    #[test]
    fn idle_means_no_request_and_no_byte() {
        let a = Activity::new();
        assert!(a.idle_for(Duration::ZERO));
        a.busy.fetch_add(1, Ordering::SeqCst);
        assert!(!a.idle_for(Duration::ZERO), "a request in progress");
        a.busy.fetch_sub(1, Ordering::SeqCst);
        a.touch();
        assert!(!a.idle_for(Duration::from_secs(60)), "a byte just moved");
    }
}
