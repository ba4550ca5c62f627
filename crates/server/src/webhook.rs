//! Delivers alert changes to webhooks — a `POST` of
//! `{"event", "alert", "webhook", "delivery", "sentAt"}` as JSON — and the
//! audited events webhooks are told of (a suppression rule made or
//! deleted: `{"event": "suppression.put", "audit": {id, at, actor, action,
//! target, detail}, ...}`), at least once, signed as GitHub signs its
//! webhooks:
//!
//! ```text
//! X-Trustlaunch-Signature-256: sha256=<hex HMAC-SHA256(secret, exact body)>
//! X-Trustlaunch-Delivery: <id, the same on every attempt>   (= body.delivery)
//! X-Trustlaunch-Timestamp: <Unix seconds of this attempt>   (= body.sentAt)
//! X-Trustlaunch-Event: raised | resolved | dismissed | suppression.put | suppression.delete
//! ```
//!
//! The headers repeat fields of the signed body, so a receiver checks the
//! signature and then trusts the body's delivery id (to deduplicate) and
//! time (to refuse replays). Each webhook has a name, a URL and a secret;
//! alerts and the API name the webhook, never its URL, and neither the
//! URL nor the secret is logged.
//!
//! What is not acknowledged (2xx; redirects are not followed) is kept with
//! the alert in the store, so a restart delivers it. Retries back off
//! exponentially (1 s, 2 s, 4 s ... at most 5 min) for a bounded window
//! (24 h by default); then the delivery is dead-lettered: its state in the
//! alert says so with the last error, `trustlaunch_webhook_dead_letters_total`
//! counts it, and a warning is logged. HTTPS uses rustls with the system's
//! roots plus the operator's (`--webhook-ca`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use zeroize::Zeroizing;

use trustlaunch_store::AuditEntry;

use crate::model::{AlertDoc, Delivery, DeliveryState};
use crate::service::{now, Service};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-trustlaunch-signature-256";
/// The delivery id header.
pub const DELIVERY_HEADER: &str = "x-trustlaunch-delivery";
/// The attempt's time header (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "x-trustlaunch-timestamp";
/// The event header.
pub const EVENT_HEADER: &str = "x-trustlaunch-event";
/// The shortest secret accepted.
pub const MIN_SECRET: usize = 16;
const MAX_SECRET_FILE: u64 = 4096;
/// The longest error text kept with a delivery.
const MAX_ERROR: usize = 300;

/// Why a webhook cannot be configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// A name outside 1-64 of `[A-Za-z0-9._-]`, or used twice.
    #[error("webhook name {0:?}: 1-64 of A-Z a-z 0-9 . _ -, each name once")]
    Name(String),
    /// Not an `http://` or `https://` URL.
    #[error("webhook {name}: not an http(s) URL ({reason})")]
    Url {
        /// The webhook.
        name: String,
        /// Why.
        reason: String,
    },
    /// The secret file.
    #[error("webhook secret {path}: {reason}")]
    Secret {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A CA file for webhooks' HTTPS.
    #[error("webhook CA {path}: {reason}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The HTTP client.
    #[error("webhook client: {0}")]
    Client(String),
}

/// One webhook: where alert changes go and the secret they are signed
/// with. `Debug` shows the name and the URL's origin only.
#[derive(Clone)]
pub struct Webhook {
    name: String,
    url: reqwest::Url,
    secret: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("name", &self.name)
            .field("origin", &self.url.origin().ascii_serialization())
            .finish_non_exhaustive()
    }
}

fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Webhook {
    /// A webhook named `name` at `url` signing with `secret` (at least
    /// [`MIN_SECRET`] bytes).
    pub fn new(name: &str, url: &str, secret: Vec<u8>) -> Result<Self, WebhookError> {
        if !valid_name(name) {
            return Err(WebhookError::Name(name.to_owned()));
        }
        let bad = |reason: String| WebhookError::Url {
            name: name.to_owned(),
            reason,
        };
        let url = reqwest::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(bad(format!("scheme {:?}", url.scheme())));
        }
        if secret.len() < MIN_SECRET {
            return Err(WebhookError::Secret {
                path: PathBuf::from(format!("<{name}>")),
                reason: format!("shorter than {MIN_SECRET} bytes"),
            });
        }
        Ok(Self {
            name: name.to_owned(),
            url,
            secret: Zeroizing::new(secret),
        })
    }

    /// `NAME=URL` and the secret in `secret_file` (trailing whitespace
    /// and newline dropped).
    pub fn from_spec(spec: &str, secret_file: &Path) -> Result<Self, WebhookError> {
        let (name, url) = spec
            .split_once('=')
            .ok_or_else(|| WebhookError::Name(spec.chars().take(64).collect()))?;
        let secret = read_secret_file(secret_file)?;
        Self::new(name, url, secret).map_err(|e| match e {
            WebhookError::Secret { reason, .. } => WebhookError::Secret {
                path: secret_file.to_owned(),
                reason,
            },
            other => other,
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Plain HTTP to a host other than this one: payloads (signed, not
    /// encrypted) cross the network in the clear.
    fn plain_off_host(&self) -> bool {
        if self.url.scheme() != "http" {
            return false;
        }
        match self.url.host_str() {
            Some("localhost") => false,
            Some(h) => !h
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()),
            None => true,
        }
    }
}

/// Reads a webhook secret: at most 4 KiB, trailing whitespace dropped.
pub fn read_secret_file(path: &Path) -> Result<Vec<u8>, WebhookError> {
    use std::io::Read as _;
    let bad = |reason: String| WebhookError::Secret {
        path: path.to_owned(),
        reason,
    };
    let f = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut buf = Zeroizing::new(Vec::new());
    f.take(MAX_SECRET_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| bad(e.to_string()))?;
    if buf.len() as u64 > MAX_SECRET_FILE {
        return Err(bad("larger than 4 KiB".into()));
    }
    let end = buf
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    if end < MIN_SECRET {
        return Err(bad(format!("shorter than {MIN_SECRET} bytes")));
    }
    Ok(buf.get(..end).unwrap_or_default().to_vec())
}

/// How long and how often a delivery is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// From the change to the last attempt (default 24 h); a delivery
    /// still failing then is dead-lettered.
    pub window: Duration,
    /// The wait after the first failed attempt (default 1 s), doubled after
    /// each failure. Deliveries due are looked for once a second.
    pub first_backoff: Duration,
    /// The longest wait between two attempts (default 5 min).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(24 * 3600),
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The wait after `attempts` failed attempts.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let doubled = self
            .first_backoff
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
        doubled.min(self.max_backoff)
    }
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `secret`, as sent in
/// [`SIGNATURE_HEADER`].
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(body);
    format!(
        "sha256={}",
        trustlaunch_eventlog::hex::encode(&mac.finalize().into_bytes())
    )
}

/// The configured webhooks and the client that reaches them.
pub struct Webhooks {
    hooks: Vec<Webhook>,
    client: reqwest::Client,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("hooks", &self.hooks)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl Webhooks {
    /// The webhooks, their HTTPS trusting the system's roots and the CA
    /// certificates (PEM) in `extra_roots`.
    pub fn new(
        hooks: Vec<Webhook>,
        extra_roots: &[PathBuf],
        retry: RetryPolicy,
    ) -> Result<Self, WebhookError> {
        for (i, h) in hooks.iter().enumerate() {
            if hooks.iter().take(i).any(|o| o.name == h.name) {
                return Err(WebhookError::Name(h.name.clone()));
            }
            if h.plain_off_host() {
                tracing::warn!(
                    "webhook {}: plain HTTP to another host: its payloads are signed but cross \
                     the network unencrypted",
                    h.name
                );
            }
        }
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(true)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("trustlaunch-webhook/", env!("CARGO_PKG_VERSION")));
        for path in extra_roots {
            let bad = |reason: String| WebhookError::Ca {
                path: path.clone(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("no CERTIFICATE in PEM".into()));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let client = b.build().map_err(|e| WebhookError::Client(e.to_string()))?;
        Ok(Self {
            hooks,
            client,
            retry,
        })
    }

    /// The webhooks' names (what alerts queue deliveries for).
    pub fn names(&self) -> Vec<String> {
        self.hooks.iter().map(|h| h.name.clone()).collect()
    }

    fn get(&self, name: &str) -> Option<&Webhook> {
        self.hooks.iter().find(|h| h.name == name)
    }

    /// One attempt: `Ok` when acknowledged (2xx), else what went wrong
    /// (never the URL).
    async fn attempt(&self, hook: &Webhook, item: &Item, d: &Delivery) -> Result<(), String> {
        let sent_at = now();
        let mut body = item.payload();
        body["webhook"] = json!(hook.name);
        body["delivery"] = json!(d.id);
        body["sentAt"] = json!(sent_at);
        let event = item.event().to_owned();
        let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        let r = self
            .client
            .post(hook.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, sign(&hook.secret, &body))
            .header(DELIVERY_HEADER, &d.id)
            .header(TIMESTAMP_HEADER, sent_at.to_string())
            .header(EVENT_HEADER, &event)
            .body(body)
            .send()
            .await
            .map_err(|e| error_text(&e.without_url()))?;
        let status = r.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {status}"))
        }
    }
}

/// An error and its causes on one line, bounded.
fn error_text(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cause = c.source();
    }
    if s.len() > MAX_ERROR {
        let mut end = MAX_ERROR;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Runs forever.
pub async fn run(service: Arc<Service>, hooks: Arc<Webhooks>) {
    let mut next_try: HashMap<String, Instant> = HashMap::new();
    loop {
        let _ = tokio::time::timeout(Duration::from_secs(1), service.webhook_wake.notified()).await;
        if let Err(e) = pass(&service, &hooks, &mut next_try).await {
            tracing::warn!("webhooks: {e}");
        }
    }
}

/// What an attempt (or the lack of a webhook) decided for a delivery.
enum Outcome {
    Delivered,
    Failed(String),
    /// Given up: the window is over (`attempted`: after a failed attempt).
    Dead {
        error: String,
        attempted: bool,
    },
}

/// Something owed to the webhooks: an alert's latest change, or an
/// audited event they are told of (a suppression rule made or deleted).
enum Item {
    Alert(AlertDoc),
    Audit {
        entry: AuditEntry,
        deliveries: Vec<Delivery>,
    },
}

impl Item {
    fn deliveries(&self) -> &[Delivery] {
        match self {
            Item::Alert(doc) => &doc.deliveries,
            Item::Audit { deliveries, .. } => deliveries,
        }
    }

    /// `X-Trustlaunch-Event`: the alert's change, or the audited action.
    fn event(&self) -> &str {
        match self {
            Item::Alert(doc) => &doc.last_event,
            Item::Audit { entry, .. } => &entry.entry.action,
        }
    }

    /// The signed body, without the delivery's own fields.
    fn payload(&self) -> serde_json::Value {
        match self {
            Item::Alert(doc) => json!({"event": doc.last_event, "alert": doc.alert}),
            Item::Audit { entry, .. } => json!({
                "event": entry.entry.action,
                "audit": {
                    "id": entry.id,
                    "at": entry.entry.at,
                    "actor": entry.entry.actor,
                    "action": entry.entry.action,
                    "target": entry.entry.target,
                    "detail": entry.entry.detail,
                },
            }),
        }
    }

    /// What it is, for log lines.
    fn describe(&self) -> String {
        match self {
            Item::Alert(doc) => format!("alert {} ({})", doc.alert.key, doc.last_event),
            Item::Audit { entry, .. } => format!(
                "event {} {} (audit {})",
                entry.entry.action, entry.entry.target, entry.id
            ),
        }
    }
}

async fn pass(
    service: &Service,
    hooks: &Webhooks,
    next_try: &mut HashMap<String, Instant>,
) -> Result<(), crate::error::ApiError> {
    use std::sync::atomic::Ordering;
    // Nothing written since the last scan found nothing: no scan.
    if !service.webhook_pending.swap(false, Ordering::SeqCst) && next_try.is_empty() {
        return Ok(());
    }
    let mut pending: Vec<Item> = service
        .alerts(None, None)
        .await?
        .into_iter()
        .filter(AlertDoc::pending)
        .map(Item::Alert)
        .collect();
    for entry in service.store.audit_pending().await? {
        let deliveries: Vec<Delivery> = entry
            .entry
            .deliveries
            .clone()
            .and_then(|d| serde_json::from_value(d).ok())
            .unwrap_or_default();
        pending.push(Item::Audit { entry, deliveries });
    }
    next_try.retain(|id, _| {
        pending
            .iter()
            .any(|i| i.deliveries().iter().any(|x| &x.id == id))
    });
    let mut waiting = false;
    for item in pending {
        let outcomes = attempt_due(hooks, &item, next_try, &mut waiting).await;
        if outcomes.is_empty() {
            continue;
        }
        let what = item.describe();
        match item {
            Item::Alert(doc) => {
                // Written under the VM's lock, to the deliveries still
                // pending: a newer change of the alert replaced them with
                // new ones.
                let lock = service.vm_lock(&doc.alert.vm_id);
                let _guard = lock.lock().await;
                let fresh = service
                    .alerts(Some(doc.alert.vm_id.clone()), None)
                    .await?
                    .into_iter()
                    .find(|d| d.alert.key == doc.alert.key);
                let Some(mut fresh) = fresh else { continue };
                apply(
                    service,
                    hooks,
                    &what,
                    &mut fresh.deliveries,
                    outcomes,
                    next_try,
                    &mut waiting,
                );
                service.put_alert_doc(&fresh).await?;
            }
            Item::Audit {
                entry,
                mut deliveries,
            } => {
                apply(
                    service,
                    hooks,
                    &what,
                    &mut deliveries,
                    outcomes,
                    next_try,
                    &mut waiting,
                );
                let still = deliveries.iter().any(|d| d.state == DeliveryState::Pending);
                let value =
                    serde_json::to_value(&deliveries).map_err(crate::error::ApiError::internal)?;
                service
                    .store
                    .set_audit_deliveries(entry.id, &value, still)
                    .await?;
            }
        }
    }
    if waiting {
        service.webhook_pending.store(true, Ordering::SeqCst);
    }
    Ok(())
}

/// Tries each of `item`'s pending deliveries that is due.
async fn attempt_due(
    hooks: &Webhooks,
    item: &Item,
    next_try: &mut HashMap<String, Instant>,
    waiting: &mut bool,
) -> Vec<(String, Outcome)> {
    let window = hooks.retry.window.as_secs();
    let mut outcomes = Vec::new();
    for d in item
        .deliveries()
        .iter()
        .filter(|d| d.state == DeliveryState::Pending)
    {
        if next_try.get(&d.id).is_some_and(|t| Instant::now() < *t) {
            *waiting = true;
            continue;
        }
        let expired = now().saturating_sub(d.queued_at) >= window;
        let outcome = match hooks.get(&d.webhook) {
            None if expired => Outcome::Dead {
                error: "no webhook of this name is configured".into(),
                attempted: false,
            },
            // Another server sharing the database may have it; if none
            // delivers it, it is given up when the window ends.
            None => {
                let left = d.queued_at.saturating_add(window).saturating_sub(now());
                next_try.insert(d.id.clone(), Instant::now() + Duration::from_secs(left));
                continue;
            }
            Some(h) => match hooks.attempt(h, item, d).await {
                Ok(()) => Outcome::Delivered,
                Err(error) if expired => Outcome::Dead {
                    error,
                    attempted: true,
                },
                Err(e) => Outcome::Failed(e),
            },
        };
        outcomes.push((d.id.clone(), outcome));
    }
    outcomes
}

/// Records attempts' outcomes in the deliveries still pending.
fn apply(
    service: &Service,
    hooks: &Webhooks,
    what: &str,
    deliveries: &mut [Delivery],
    outcomes: Vec<(String, Outcome)>,
    next_try: &mut HashMap<String, Instant>,
    waiting: &mut bool,
) {
    let at = now();
    for (id, outcome) in outcomes {
        let Some(d) = deliveries
            .iter_mut()
            .find(|d| d.id == id && d.state == DeliveryState::Pending)
        else {
            continue;
        };
        if !matches!(
            outcome,
            Outcome::Dead {
                attempted: false,
                ..
            }
        ) {
            d.attempts = d.attempts.saturating_add(1);
            d.last_attempt_at = Some(at);
        }
        match outcome {
            Outcome::Delivered => {
                service.metrics.webhook("ok");
                d.state = DeliveryState::Delivered;
                d.last_error = None;
                next_try.remove(&id);
            }
            Outcome::Failed(e) => {
                service.metrics.webhook("failed");
                tracing::debug!("webhook {}: delivery {id} failed: {e}", d.webhook);
                d.last_error = Some(e);
                next_try.insert(id, Instant::now() + hooks.retry.backoff(d.attempts));
                *waiting = true;
            }
            Outcome::Dead {
                error: e,
                attempted,
            } => {
                if attempted {
                    service.metrics.webhook("failed");
                }
                service.metrics.webhook_dead_lettered();
                tracing::warn!(
                    "webhook {}: delivery {id} of {what} dead-lettered after {} attempts over {} s: {e}",
                    d.webhook,
                    d.attempts,
                    at.saturating_sub(d.queued_at)
                );
                d.state = DeliveryState::DeadLettered;
                d.last_error = Some(e);
                next_try.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_github_style_hmac_sha256() {
        // RFC 4231 test case 2: key "Jefe".
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_to_its_cap() {
        let r = RetryPolicy::default();
        let s = |n| r.backoff(n).as_secs();
        assert_eq!(
            [s(1), s(2), s(3), s(9), s(10), s(40)],
            [1, 2, 4, 256, 300, 300]
        );
    }

    #[test]
    fn names_urls_and_secrets_are_checked_and_never_shown() {
        let secret = b"0123456789abcdef-secret".to_vec();
        let h = Webhook::new("siem", "https://hooks.example/x?token=q5", secret.clone()).unwrap();
        let shown = format!("{h:?}");
        assert!(shown.contains("siem") && shown.contains("https://hooks.example"));
        assert!(
            !shown.contains("token") && !shown.contains("secret"),
            "{shown}"
        );
        assert!(Webhook::new("a b", "https://x", secret.clone()).is_err());
        assert!(Webhook::new("a", "ftp://x", secret.clone()).is_err());
        assert!(Webhook::new("a", "https://x", b"short".to_vec()).is_err());
        assert!(!h.plain_off_host());
        let lan = Webhook::new("lan", "http://192.0.2.1/x", secret.clone()).unwrap();
        let lo = Webhook::new("lo", "http://127.0.0.1:9/x", secret).unwrap();
        assert!(lan.plain_off_host() && !lo.plain_off_host());
    }
}
