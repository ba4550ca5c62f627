//! The service's health as Prometheus metrics (text exposition format
//! 0.0.4): counters kept here, gauges read from the store at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use trustlaunch_attestation::{Appraisal, Outcome};

/// Counters.
#[derive(Default)]
pub struct Metrics {
    appraisals: AtomicU64,
    appraisal_micros: AtomicU64,
    healthy: AtomicU64,
    unhealthy: AtomicU64,
    failed_checks: Mutex<BTreeMap<&'static str, u64>>,
    alert_events: Mutex<BTreeMap<&'static str, u64>>,
    webhook: Mutex<BTreeMap<&'static str, u64>>,
    challenges: Mutex<BTreeMap<&'static str, u64>>,
    http: Mutex<BTreeMap<(String, u16), u64>>,
    connections_open: AtomicU64,
    connections_closed: Mutex<BTreeMap<&'static str, u64>>,
    webhook_dead_letters: AtomicU64,
}

/// Counts an open connection until dropped.
pub struct OpenConnection<'a>(&'a AtomicU64);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn bump<K: Ord>(m: &Mutex<BTreeMap<K, u64>>, k: K) {
    let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
    *g.entry(k).or_default() += 1;
}

impl Metrics {
    /// An appraisal was made.
    pub fn appraised(&self, a: &Appraisal, took: Duration) {
        self.appraisals.fetch_add(1, Ordering::Relaxed);
        self.appraisal_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        for c in a.checks.iter().filter(|c| c.outcome == Outcome::Fail) {
            bump(&self.failed_checks, c.name);
        }
    }
    /// An attestation was recorded.
    pub fn attested(&self, healthy: bool) {
        if healthy {
            self.healthy.fetch_add(1, Ordering::Relaxed);
        } else {
            self.unhealthy.fetch_add(1, Ordering::Relaxed);
        }
    }
    /// An alert changed.
    pub fn alert_event(&self, what: &'static str) {
        bump(&self.alert_events, what);
    }
    /// A webhook delivery attempt ended.
    pub fn webhook(&self, result: &'static str) {
        bump(&self.webhook, result);
    }
    /// A challenge to an agent ended (`answered`, `silent`, `error`).
    pub fn challenge(&self, result: &'static str) {
        bump(&self.challenges, result);
    }
    /// A connection was accepted; it counts as open until the guard drops.
    pub fn connection_opened(&self) -> OpenConnection<'_> {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(&self.connections_open)
    }
    /// A connection ended, and why (`client`, `idle`, `header_timeout`,
    /// `tls_handshake_timeout`, `tls_error`, `error`).
    pub fn connection_closed(&self, reason: &'static str) {
        bump(&self.connections_closed, reason);
    }
    /// HTTP connections open now.
    pub fn connections_open(&self) -> u64 {
        self.connections_open.load(Ordering::Relaxed)
    }
    /// A webhook delivery was given up (dead-lettered).
    pub fn webhook_dead_lettered(&self) {
        self.webhook_dead_letters.fetch_add(1, Ordering::Relaxed);
    }
    /// An HTTP request was answered.
    pub fn http(&self, route: &str, status: u16) {
        bump(&self.http, (route.to_owned(), status));
    }

    /// The exposition, with the gauges the caller read.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut o = String::new();
        let c = |o: &mut String, name: &str, help: &str, kind: &str| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        c(&mut o, "trustlaunch_up", "The service is serving.", "gauge");
        let _ = writeln!(o, "trustlaunch_up 1");
        c(
            &mut o,
            "trustlaunch_appraisals_total",
            "Appraisals made (recorded or not).",
            "counter",
        );
        let _ = writeln!(
            o,
            "trustlaunch_appraisals_total {}",
            self.appraisals.load(Ordering::Relaxed)
        );
        c(
            &mut o,
            "trustlaunch_appraisal_seconds_total",
            "Time spent appraising.",
            "counter",
        );
        let _ = writeln!(
            o,
            "trustlaunch_appraisal_seconds_total {:.6}",
            self.appraisal_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        c(
            &mut o,
            "trustlaunch_attestations_total",
            "Attestations recorded, by verdict.",
            "counter",
        );
        let _ = writeln!(
            o,
            "trustlaunch_attestations_total{{result=\"healthy\"}} {}",
            self.healthy.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            o,
            "trustlaunch_attestations_total{{result=\"unhealthy\"}} {}",
            self.unhealthy.load(Ordering::Relaxed)
        );
        let map =
            |o: &mut String, name: &str, label: &str, m: &Mutex<BTreeMap<&'static str, u64>>| {
                for (k, v) in m.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                    let _ = writeln!(o, "{name}{{{label}=\"{k}\"}} {v}");
                }
            };
        c(
            &mut o,
            "trustlaunch_check_failures_total",
            "Failed checks, by check.",
            "counter",
        );
        map(
            &mut o,
            "trustlaunch_check_failures_total",
            "check",
            &self.failed_checks,
        );
        c(
            &mut o,
            "trustlaunch_alert_events_total",
            "Alert changes, by event.",
            "counter",
        );
        map(
            &mut o,
            "trustlaunch_alert_events_total",
            "event",
            &self.alert_events,
        );
        c(
            &mut o,
            "trustlaunch_webhook_deliveries_total",
            "Webhook delivery attempts, by result.",
            "counter",
        );
        map(
            &mut o,
            "trustlaunch_webhook_deliveries_total",
            "result",
            &self.webhook,
        );
        c(
            &mut o,
            "trustlaunch_challenges_total",
            "Challenges to guest agents, by result.",
            "counter",
        );
        map(
            &mut o,
            "trustlaunch_challenges_total",
            "result",
            &self.challenges,
        );
        c(
            &mut o,
            "trustlaunch_http_requests_total",
            "HTTP requests, by route and status.",
            "counter",
        );
        for ((route, status), v) in self.http.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                o,
                "trustlaunch_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {v}"
            );
        }
        c(
            &mut o,
            "trustlaunch_http_connections",
            "HTTP connections open.",
            "gauge",
        );
        let _ = writeln!(
            o,
            "trustlaunch_http_connections {}",
            self.connections_open()
        );
        c(
            &mut o,
            "trustlaunch_http_connections_closed_total",
            "HTTP connections ended, by reason.",
            "counter",
        );
        map(
            &mut o,
            "trustlaunch_http_connections_closed_total",
            "reason",
            &self.connections_closed,
        );
        c(
            &mut o,
            "trustlaunch_webhook_dead_letters_total",
            "Webhook deliveries given up after the retry window.",
            "counter",
        );
        let _ = writeln!(
            o,
            "trustlaunch_webhook_dead_letters_total {}",
            self.webhook_dead_letters.load(Ordering::Relaxed)
        );
        c(
            &mut o,
            "trustlaunch_alerts",
            "Alerts, by kind and state.",
            "gauge",
        );
        for ((kind, state), v) in &gauges.alerts {
            let _ = writeln!(
                o,
                "trustlaunch_alerts{{kind=\"{kind}\",state=\"{state}\"}} {v}"
            );
        }
        c(
            &mut o,
            "trustlaunch_vms",
            "Registered VMs, by attestation health.",
            "gauge",
        );
        for (health, v) in &gauges.vms {
            let _ = writeln!(o, "trustlaunch_vms{{health=\"{health}\"}} {v}");
        }
        c(
            &mut o,
            "trustlaunch_webhook_pending",
            "Alert changes not yet acknowledged by every webhook.",
            "gauge",
        );
        let _ = writeln!(o, "trustlaunch_webhook_pending {}", gauges.webhook_pending);
        c(
            &mut o,
            "trustlaunch_webhook_dead_lettered",
            "Alerts whose latest change a webhook never acknowledged within the retry window.",
            "gauge",
        );
        let _ = writeln!(
            o,
            "trustlaunch_webhook_dead_lettered {}",
            gauges.webhook_dead_lettered
        );
        o
    }
}

/// Values read at scrape time.
#[derive(Clone, Default)]
pub struct Gauges {
    /// (kind, state) -> count.
    pub alerts: BTreeMap<(String, String), u64>,
    /// health -> count.
    pub vms: BTreeMap<String, u64>,
    /// Alerts with pending deliveries.
    pub webhook_pending: u64,
    /// Alerts with a dead-lettered delivery.
    pub webhook_dead_lettered: u64,
}
