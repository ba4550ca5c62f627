//! Delivers alert changes to webhooks: `POST` of `{"event", "alert"}` as
//! JSON, at least once. What is not acknowledged (2xx) yet is kept with
//! the alert in the store, so a restart delivers it; retries back off
//! exponentially (1 s, 2 s, 4 s ... at most 5 min).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::model::AlertDoc;
use crate::service::Service;

/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Runs forever.
pub async fn run(service: Arc<Service>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    let mut next_try: HashMap<String, Instant> = HashMap::new();
    loop {
        let _ = tokio::time::timeout(Duration::from_secs(1), service.webhook_wake.notified()).await;
        if let Err(e) = pass(&service, &client, &mut next_try).await {
            tracing::warn!("webhooks: {e}");
        }
    }
}

/// The backoff after `attempts` failed attempts.
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(9)).min(MAX_BACKOFF)
}

async fn pass(
    service: &Service,
    client: &reqwest::Client,
    next_try: &mut HashMap<String, Instant>,
) -> Result<(), crate::error::ApiError> {
    use std::sync::atomic::Ordering;
    if service.config.webhooks.is_empty() {
        return Ok(());
    }
    // Nothing written since the last scan found nothing: no scan.
    if !service.webhook_pending.swap(false, Ordering::SeqCst) && next_try.is_empty() {
        return Ok(());
    }
    let pending: Vec<AlertDoc> = service
        .alerts(None, None)
        .await?
        .into_iter()
        .filter(|d| !d.pending_webhooks.is_empty())
        .collect();
    next_try.retain(|k, _| pending.iter().any(|d| &d.alert.key == k));
    if pending.iter().any(|d| !next_try.contains_key(&d.alert.key)) {
        // Deliveries owed but not yet tried: scan again next time too.
        service.webhook_pending.store(true, Ordering::SeqCst);
    }
    for doc in pending {
        let key = doc.alert.key.clone();
        if next_try.get(&key).is_some_and(|t| Instant::now() < *t) {
            continue;
        }
        let body = json!({"event": doc.last_event, "alert": doc.alert});
        let mut acknowledged = Vec::new();
        for url in &doc.pending_webhooks {
            let ok = client
                .post(url)
                .json(&body)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            service.metrics.webhook(if ok { "ok" } else { "failed" });
            if ok {
                acknowledged.push(url.clone());
            }
        }
        // Write back only if the alert did not change meanwhile.
        let lock = service.vm_lock(&doc.alert.vm_id);
        let _guard = lock.lock().await;
        let fresh = service
            .alerts(Some(doc.alert.vm_id.clone()), None)
            .await?
            .into_iter()
            .find(|d| d.alert.key == key);
        let Some(mut fresh) = fresh else { continue };
        if fresh.last_event != doc.last_event || fresh.alert.last_seen != doc.alert.last_seen {
            continue;
        }
        fresh.pending_webhooks.retain(|u| !acknowledged.contains(u));
        if fresh.pending_webhooks.is_empty() {
            next_try.remove(&key);
        } else {
            fresh.attempts = fresh.attempts.saturating_add(1);
            next_try.insert(key.clone(), Instant::now() + backoff(fresh.attempts));
        }
        service.put_alert_doc(&fresh).await?;
    }
    Ok(())
}
