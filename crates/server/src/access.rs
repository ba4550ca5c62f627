//! Who may do what, and what they did: API tokens (create with an
//! optional expiry, list, revoke), suppression rules (a selector required,
//! fleet-wide ones for admins only, each with its author and an optional
//! expiry) and the audit log every such change writes.

use std::time::Duration;

use serde_json::json;
use trustlaunch_attestation::security::{AlertCandidate, AlertState, SuppressionRule};
use trustlaunch_store::{ApiTokenRecord, AuditEntry, NewAuditEntry, Role};

use crate::caller::{new_token, Caller};
use crate::error::ApiError;
use crate::model::Delivery;
use crate::service::{now, now_i64, Service};

/// The longest a token may be made to last (10 years): beyond that, say
/// "never".
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);

/// A token just made: its secret (shown once) and its record.
pub struct NewToken {
    /// The secret, `tl_...`.
    pub secret: String,
    /// Its record.
    pub record: ApiTokenRecord,
}

fn audit(
    caller: &Caller,
    action: &str,
    target: String,
    detail: serde_json::Value,
) -> NewAuditEntry {
    NewAuditEntry {
        at: now_i64(),
        actor: caller.actor(),
        action: action.into(),
        target,
        detail,
        deliveries: None,
    }
}

impl Service {
    /// `entry`, owed to every webhook: a change that silences alerts is
    /// itself an event the security team hears of.
    fn notified(&self, mut entry: NewAuditEntry) -> Result<NewAuditEntry, ApiError> {
        if !self.config.webhooks.is_empty() {
            let queued = Delivery::queue(&self.config.webhooks, now());
            entry.deliveries = Some(serde_json::to_value(queued).map_err(ApiError::internal)?);
        }
        Ok(entry)
    }

    /// Makes an API token, valid for `lifetime` if given. Audited.
    pub async fn create_token(
        &self,
        name: &str,
        role: Role,
        lifetime: Option<Duration>,
        caller: &Caller,
    ) -> Result<NewToken, ApiError> {
        if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "a token needs a name of 1-128 bytes without control characters",
            ));
        }
        if lifetime.is_some_and(|l| l.is_zero() || l > MAX_TOKEN_LIFETIME) {
            return Err(ApiError::bad_request(
                "a token's lifetime is 1 s to 10 years (or none)",
            ));
        }
        let now = now_i64();
        let expires_at =
            lifetime.map(|l| now.saturating_add(i64::try_from(l.as_secs()).unwrap_or(i64::MAX)));
        let (secret, record) = new_token(name, role, now, expires_at);
        self.store
            .put_api_token(
                &record,
                &audit(
                    caller,
                    "token.create",
                    format!("token/{}", record.id()),
                    json!({"name": name, "role": role.as_str(), "expiresAt": expires_at}),
                ),
            )
            .await?;
        Ok(NewToken { secret, record })
    }

    /// Revokes the token with public id `id`. Audited.
    pub async fn revoke_token(&self, id: &str, caller: &Caller) -> Result<(), ApiError> {
        if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::bad_request(
                "a token id is 12 hex digits (trustlaunch token list)",
            ));
        }
        let id = id.to_ascii_lowercase();
        let done = self
            .store
            .revoke_api_token(
                &id,
                now_i64(),
                &audit(caller, "token.revoke", format!("token/{id}"), json!({})),
            )
            .await?;
        if !done {
            return Err(ApiError::not_found(format!(
                "no token {id} that is not revoked already"
            )));
        }
        Ok(())
    }

    /// Adds or replaces a suppression rule made by `caller`: it needs a
    /// selector, a fleet-wide one (no VM list) needs an admin; its author
    /// and time are recorded, and it may expire. Active alerts it matches
    /// are dismissed by it now. Audited.
    pub async fn put_rule(&self, rule: &SuppressionRule, caller: &Caller) -> Result<(), ApiError> {
        if rule.name.is_empty() || rule.name.len() > 128 || rule.name.chars().any(char::is_control)
        {
            return Err(ApiError::bad_request(
                "a rule needs a name of 1-128 bytes without control characters",
            ));
        }
        let now = now();
        rule.validate(now)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        if rule.fleet_wide() {
            caller.require(Role::Admin).map_err(|_| {
                ApiError::forbidden(
                    "a rule without vmIds silences alerts of every VM: only an admin may make one",
                )
            })?;
        }
        let rule = SuppressionRule {
            author: Some(caller.actor()),
            created_at: Some(now),
            ..rule.clone()
        };
        let value = serde_json::to_value(&rule).map_err(ApiError::internal)?;
        self.store
            .put_suppression_rule(
                &trustlaunch_store::SuppressionRule {
                    name: rule.name.clone(),
                    rule: value.clone(),
                },
                &self.notified(audit(
                    caller,
                    "suppression.put",
                    format!("suppression/{}", rule.name),
                    value,
                ))?,
            )
            .await?;
        for mut d in self.alerts(None, Some("active".into())).await? {
            let c = AlertCandidate {
                kind: d.alert.kind,
                vm_id: d.alert.vm_id.clone(),
                cause: d.alert.cause.clone(),
                detail: d.alert.detail.clone(),
            };
            if rule.matches(&c, now) {
                d.alert.state = AlertState::Dismissed;
                d.alert.suppressed_by = Some(rule.name.clone());
                d.last_event = "suppressed".into();
                d.deliveries.clear();
                self.put_alert_doc(&d).await?;
            }
        }
        self.wake_webhooks();
        Ok(())
    }

    /// Deletes a suppression rule. Audited.
    pub async fn delete_rule(&self, name: &str, caller: &Caller) -> Result<(), ApiError> {
        let done = self
            .store
            .delete_suppression_rule(
                name,
                &self.notified(audit(
                    caller,
                    "suppression.delete",
                    format!("suppression/{name}"),
                    json!({}),
                ))?,
            )
            .await?;
        if !done {
            return Err(ApiError::not_found(format!("no rule {name:?}")));
        }
        self.wake_webhooks();
        Ok(())
    }

    fn wake_webhooks(&self) {
        if !self.config.webhooks.is_empty() {
            self.webhook_pending
                .store(true, std::sync::atomic::Ordering::SeqCst);
            self.webhook_wake.notify_one();
        }
    }

    /// The audit log, newest first, optionally about one target.
    pub async fn audit_log(
        &self,
        target: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, ApiError> {
        Ok(self.store.audit_log(target, limit).await?)
    }
}
