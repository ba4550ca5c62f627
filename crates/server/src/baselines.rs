//! A VM's baseline, as operators change it: approve the first boot's
//! proposed components, pin one attestation's components, ask for a
//! relearn (which expires). Every change is written behind the baseline's
//! version with the caller in its audit trail.

use trustlaunch_attestation::{Baseline, BaselineSource};
use trustlaunch_store::{BaselineAction, BaselineChange};

use crate::caller::Caller;
use crate::error::ApiError;
use crate::model::{BaselineDoc, LearnRequest};
use crate::service::{now_i64, Service};

impl Service {
    /// The stored baseline of a VM and its version.
    pub async fn baseline(&self, vm_id: &str) -> Result<(BaselineDoc, i64), ApiError> {
        let b = self
            .store
            .get_baseline(vm_id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("VM {vm_id:?} has no baseline")))?;
        let doc = serde_json::from_value(b.baseline)
            .map_err(|e| ApiError::internal(format!("stored baseline of {vm_id}: {e}")))?;
        Ok((doc, b.version))
    }

    fn check_version(vm_id: &str, version: i64, if_version: Option<i64>) -> Result<(), ApiError> {
        if if_version.is_some_and(|v| v != version) {
            return Err(ApiError::conflict(format!(
                "the baseline of {vm_id} is at version {version}"
            )));
        }
        Ok(())
    }

    async fn write(
        &self,
        vm_id: &str,
        doc: &BaselineDoc,
        version: i64,
        action: BaselineAction,
        actor: String,
    ) -> Result<i64, ApiError> {
        let v = self
            .store
            .put_baseline(
                vm_id,
                &serde_json::to_value(doc).map_err(ApiError::internal)?,
                Some(version),
                &BaselineChange {
                    action,
                    actor,
                    at: now_i64(),
                },
            )
            .await?;
        self.invalidate(vm_id);
        Ok(v)
    }

    /// Approves the components the VM's first boot proposed: they become
    /// its baseline (a VM without a predicted baseline is not healthy
    /// until an operator does this).
    pub async fn approve(
        &self,
        vm_id: &str,
        caller: &Caller,
        if_version: Option<i64>,
    ) -> Result<i64, ApiError> {
        let (doc, version) = match self.baseline(vm_id).await {
            Ok(b) => b,
            Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => {
                return Err(ApiError::conflict(format!(
                    "VM {vm_id:?} has no boot awaiting approval (state: awaiting-first-boot)"
                )))
            }
            Err(e) => return Err(e),
        };
        Self::check_version(vm_id, version, if_version)?;
        let state = doc_state(&doc);
        let pending = doc.pending.ok_or_else(|| {
            ApiError::conflict(format!(
                "VM {vm_id:?} has no boot awaiting approval (state: {state})"
            ))
        })?;
        let new = BaselineDoc {
            baseline: Some(Baseline {
                source: BaselineSource::Pinned {
                    by: format!(
                        "{} (approved boot #{})",
                        caller.actor(),
                        pending.boot_counter
                    ),
                },
                measurements: pending.measurements,
            }),
            learn: None,
            pending: None,
        };
        self.write(
            vm_id,
            &new,
            version,
            BaselineAction::Approved,
            caller.actor(),
        )
        .await
    }

    /// Pins the baseline to an attestation's components (the latest by
    /// default): learning stops.
    pub async fn pin(
        &self,
        vm_id: &str,
        attestation_id: Option<i64>,
        caller: &Caller,
        if_version: Option<i64>,
    ) -> Result<i64, ApiError> {
        let (_, version) = self.baseline(vm_id).await?;
        Self::check_version(vm_id, version, if_version)?;
        let history = self.store.history(vm_id, 1000).await?;
        let rec = match attestation_id {
            Some(id) => history.iter().find(|r| r.id == id),
            None => history.first(),
        }
        .ok_or_else(|| ApiError::not_found("no such attestation to pin"))?;
        let doc = crate::service::stored_doc(rec)?;
        let m = doc
            .appraisal
            .get("measurements")
            .cloned()
            .filter(|m| !m.is_null())
            .and_then(|m| serde_json::from_value(m).ok())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "that attestation has no verified measurements (its log did not verify)",
                )
            })?;
        let new = BaselineDoc {
            baseline: Some(Baseline {
                source: BaselineSource::Pinned { by: caller.actor() },
                measurements: m,
            }),
            learn: None,
            pending: None,
        };
        self.write(vm_id, &new, version, BaselineAction::Pinned, caller.actor())
            .await
    }

    /// Asks the next boot whose other checks pass to become the baseline
    /// (after an accepted update), within the relearn lifetime (24 h by
    /// default): unanswered by then, the request is void. Returns the new
    /// version and the deadline.
    pub async fn relearn(&self, vm_id: &str, caller: &Caller) -> Result<(i64, i64), ApiError> {
        let (mut doc, version) = self.baseline(vm_id).await?;
        let until = now_i64().saturating_add(
            i64::try_from(self.config.relearn_lifetime.as_secs()).unwrap_or(i64::MAX),
        );
        doc.learn = Some(LearnRequest {
            actor: caller.actor(),
            relearn: true,
            until: Some(until),
        });
        let v = self
            .write(
                vm_id,
                &doc,
                version,
                BaselineAction::Relearned,
                format!("{} (requested, until {until})", caller.actor()),
            )
            .await?;
        Ok((v, until))
    }
}

/// The state of a baseline document now.
pub fn doc_state(doc: &BaselineDoc) -> &'static str {
    doc.state(now_i64())
}
