//! The security center, as a pure model: recommendations and alerts of
//! Azure's Defender for Trusted Launch VMs (names and severities of
//! `../shared/design/azure-model.md`), alert deduplication, states
//! (active, resolved, dismissed) and suppression rules.
//!
//! [`recommendations`] and [`alert_candidates`] read a VM's posture (its
//! security profile, whether the attestation agent runs, its last
//! appraisal); [`AlertBook::reconcile`] turns candidates into alert state
//! changes, raising each condition once (deduplicated by VM, kind and
//! reason), resolving it when it goes away, and honouring suppression
//! rules. The caller stores the book and delivers the [`AlertEvent`]s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Verdict;

/// Severity, as Defender grades them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Severity {
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
}

/// A recommendation's identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecommendationKind {
    /// "Secure Boot should be enabled on supported virtual machines".
    EnableSecureBoot,
    /// "vTPM should be enabled on supported virtual machines".
    EnableVtpm,
    /// "Guest Attestation extension should be installed on supported
    /// virtual machines".
    InstallGuestAttestation,
    /// "Virtual machines guest attestation status should be healthy".
    AttestationHealthy,
    /// The Guest Attestation extension is on, but the image has no guest
    /// attestation agent: its attestation would never answer.
    GuestAgentNotInImage,
    /// "HVCI should be enabled": the last attested Windows boot measured
    /// hypervisor-protected code integrity off.
    EnableHvci,
    /// "Credential Guard should be enabled": the last attested Windows
    /// boot measured no Credential Guard (VBS off, or LSA's isolated
    /// process not configured).
    EnableCredentialGuard,
}

impl RecommendationKind {
    /// Defender's display name.
    pub fn display_name(self) -> &'static str {
        match self {
            Self::EnableSecureBoot => "Secure Boot should be enabled on supported virtual machines",
            Self::EnableVtpm => "vTPM should be enabled on supported virtual machines",
            Self::InstallGuestAttestation => {
                "Guest Attestation extension should be installed on supported virtual machines"
            }
            Self::AttestationHealthy => {
                "Virtual machines guest attestation status should be healthy"
            }
            Self::GuestAgentNotInImage => "Guest attestation agent not installed in the image",
            Self::EnableHvci => "HVCI should be enabled on Windows virtual machines",
            Self::EnableCredentialGuard => {
                "Credential Guard should be enabled on Windows virtual machines"
            }
        }
    }

    /// Defender's severity.
    pub fn severity(self) -> Severity {
        match self {
            Self::AttestationHealthy | Self::GuestAgentNotInImage => Severity::Medium,
            _ => Severity::Low,
        }
    }
}

/// One recommendation for one VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Recommendation {
    /// Which.
    pub kind: RecommendationKind,
    /// Its display name.
    pub name: &'static str,
    /// Its severity.
    pub severity: Severity,
    /// The VM.
    pub vm_id: String,
    /// Why it applies to this VM.
    pub reason: String,
}

/// What the security center knows about a VM.
#[derive(Clone, Debug)]
pub struct Posture<'a> {
    /// The VM.
    pub vm_id: &'a str,
    /// Gen2, an image with `SecurityType` TrustedLaunchSupported and a
    /// supported size: Trusted Launch can be on.
    pub trusted_launch_supported: bool,
    /// `secureBootEnabled`.
    pub secure_boot: bool,
    /// `vTpmEnabled`.
    pub vtpm: bool,
    /// The guest attestation agent (extension) is installed.
    pub attestation_agent: bool,
    /// The last appraisal's verdict, if any.
    pub last_appraisal: Option<&'a Verdict>,
    /// Seconds since the agent last answered (`None`: never).
    pub agent_silent_for: Option<u64>,
    /// How long the agent may be silent before it is unresponsive.
    pub agent_timeout: u64,
    /// Kernel modules that failed signature verification and were not
    /// loaded (as the agent reports them).
    pub untrusted_modules: &'a [String],
}

/// The agent has not answered for longer than it may (or never did).
fn is_silent(p: &Posture<'_>) -> bool {
    p.agent_silent_for.is_none_or(|s| s > p.agent_timeout)
}

/// The recommendations that apply to a VM.
pub fn recommendations(p: &Posture<'_>) -> Vec<Recommendation> {
    let mut out = Vec::new();
    let mut add = |kind: RecommendationKind, reason: String| {
        out.push(Recommendation {
            kind,
            name: kind.display_name(),
            severity: kind.severity(),
            vm_id: p.vm_id.to_owned(),
            reason,
        })
    };
    if !p.trusted_launch_supported {
        return out;
    }
    if !p.secure_boot {
        add(
            RecommendationKind::EnableSecureBoot,
            "the VM supports Trusted Launch but boots with Secure Boot off".into(),
        );
    }
    if !p.vtpm {
        add(
            RecommendationKind::EnableVtpm,
            "the VM supports Trusted Launch but has no vTPM".into(),
        );
    }
    // The extension needs Secure Boot and the vTPM (Azure).
    if p.secure_boot && p.vtpm && !p.attestation_agent {
        add(
            RecommendationKind::InstallGuestAttestation,
            "no guest attestation agent: the boot is never verified".into(),
        );
    }
    if p.attestation_agent && is_silent(p) {
        add(
            RecommendationKind::AttestationHealthy,
            "the attestation agent does not respond".into(),
        );
    } else if p.attestation_agent {
        match p.last_appraisal {
            Some(a) if !a.healthy => {
                let failed: Vec<&str> = a.failed.iter().map(|c| c.name.as_str()).collect();
                add(
                    RecommendationKind::AttestationHealthy,
                    format!("the last attestation failed: {}", failed.join(", ")),
                );
            }
            None => add(
                RecommendationKind::AttestationHealthy,
                "the VM has not been attested yet".into(),
            ),
            Some(_) => {}
        }
    }
    // What the last attested Windows boot measured (only an appraisal
    // whose SIPA events were Windows' boot manager's carries a posture).
    if let Some(w) = p.last_appraisal.and_then(|a| a.windows.as_ref()) {
        let events: Vec<String> = w.events.iter().map(ToString::to_string).collect();
        let events = if events.is_empty() {
            "no VBS event measured".to_owned()
        } else {
            format!("events {}", events.join(", "))
        };
        if !w.hvci {
            add(
                RecommendationKind::EnableHvci,
                format!(
                    "the last attested boot measured HVCI off (VBS {}, HVCI policy 0x{:x}; {events})",
                    if w.vbs { "on" } else { "off" },
                    w.hvci_policy
                ),
            );
        }
        if !w.credential_guard {
            add(
                RecommendationKind::EnableCredentialGuard,
                format!(
                    "the last attested boot measured no Credential Guard ({}; {events})",
                    if w.vbs {
                        "VBS on, LSA's isolated process not configured"
                    } else {
                        "VBS off"
                    }
                ),
            );
        }
    }
    out
}

/// An alert's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertKind {
    /// "Attestation failed your virtual machine" (Medium).
    AttestationFailed,
    /// "Untrusted Linux kernel module" (Low).
    UntrustedKernelModule,
}

impl AlertKind {
    /// Defender's display name.
    pub fn display_name(self) -> &'static str {
        match self {
            Self::AttestationFailed => "Attestation failed your virtual machine",
            Self::UntrustedKernelModule => "Untrusted Linux kernel module",
        }
    }

    /// Defender's severity.
    pub fn severity(self) -> Severity {
        match self {
            Self::AttestationFailed => Severity::Medium,
            Self::UntrustedKernelModule => Severity::Low,
        }
    }
}

/// Why an attestation failed, as Defender words the alert's cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureReason {
    /// The boot log deviates from the trusted baseline (log, Secure Boot
    /// configuration, boot chain).
    BaselineDeviation,
    /// The quote cannot be verified to come from the VM's vTPM (quote,
    /// AK, EK).
    QuoteNotFromVtpm,
    /// The attestation agent does not respond.
    AgentUnresponsive,
    /// Secure Boot is off: attestation always fails (Azure), operators may
    /// suppress it.
    SecureBootOff,
    /// No baseline has been approved for the VM: its first boot's
    /// components await an operator's approval.
    BaselineNotApproved,
}

impl FailureReason {
    /// The reason in words.
    pub fn text(self) -> &'static str {
        match self {
            Self::BaselineDeviation => "the boot log deviates from the trusted baseline",
            Self::QuoteNotFromVtpm => "the quote cannot be verified to come from the VM's vTPM",
            Self::AgentUnresponsive => "the attestation agent does not respond",
            Self::SecureBootOff => "Secure Boot is off",
            Self::BaselineNotApproved => "no baseline has been approved for the VM",
        }
    }
}

/// The cause of an alert.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Cause {
    /// An attestation failure.
    Attestation {
        /// Why.
        reason: FailureReason,
    },
    /// A module that failed signature verification.
    Module {
        /// The module's name.
        name: String,
    },
}

/// A condition that should be an alert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertCandidate {
    /// Kind.
    pub kind: AlertKind,
    /// The VM.
    pub vm_id: String,
    /// Cause.
    pub cause: Cause,
    /// Details: the failed checks and what they say.
    pub detail: String,
}

impl AlertCandidate {
    /// The deduplication key: one alert per VM, kind and cause.
    pub fn key(&self) -> String {
        let cause = match &self.cause {
            Cause::Attestation { reason } => format!("{reason:?}"),
            Cause::Module { name } => format!("module:{name}"),
        };
        format!("{}/{:?}/{cause}", self.vm_id, self.kind)
    }
}

/// Which reason a failed check stands for.
fn reason_of(check: &crate::FailedCheck) -> FailureReason {
    let name = check.name.as_str();
    if name.starts_with("quote.") || name.starts_with("ak.") || name.starts_with("ek.") {
        FailureReason::QuoteNotFromVtpm
    } else if name == "baseline" && check.detail.starts_with(crate::NO_APPROVED_BASELINE) {
        FailureReason::BaselineNotApproved
    } else {
        FailureReason::BaselineDeviation
    }
}

/// The alerts a VM's posture calls for.
pub fn alert_candidates(p: &Posture<'_>) -> Vec<AlertCandidate> {
    let mut out = Vec::new();
    if !p.attestation_agent {
        return out;
    }
    let attestation = |reason: FailureReason, detail: String| AlertCandidate {
        kind: AlertKind::AttestationFailed,
        vm_id: p.vm_id.to_owned(),
        cause: Cause::Attestation { reason },
        detail,
    };
    if is_silent(p) {
        out.push(attestation(
            FailureReason::AgentUnresponsive,
            match p.agent_silent_for {
                Some(s) => format!("no answer for {s} s (limit {} s)", p.agent_timeout),
                None => "the agent never answered".into(),
            },
        ));
    }
    if !p.secure_boot {
        out.push(attestation(
            FailureReason::SecureBootOff,
            "Secure Boot is off: the boot chain is not verified by the firmware".into(),
        ));
    }
    if let Some(a) = p.last_appraisal {
        let mut by_reason: BTreeMap<FailureReason, Vec<String>> = BTreeMap::new();
        // An untrusted module has its own alert (below), not a second one.
        for c in a.failed.iter().filter(|c| c.name != "kernel.modules") {
            by_reason
                .entry(reason_of(c))
                .or_default()
                .push(format!("{}: {}", c.name, c.detail));
        }
        for (reason, details) in by_reason {
            out.push(attestation(reason, details.join("; ")));
        }
    }
    if p.secure_boot {
        for m in p.untrusted_modules {
            out.push(AlertCandidate {
                kind: AlertKind::UntrustedKernelModule,
                vm_id: p.vm_id.to_owned(),
                cause: Cause::Module { name: m.clone() },
                detail: format!(
                    "{m} failed signature validation under Secure Boot and was not loaded"
                ),
            });
        }
    }
    out
}

/// An alert's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The condition holds.
    Active,
    /// The condition went away.
    Resolved,
    /// An operator (or a suppression rule) dismissed it.
    Dismissed,
}

impl AlertState {
    /// Its name (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Resolved => "resolved",
            Self::Dismissed => "dismissed",
        }
    }
}

/// A stored alert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Deduplication key (VM, kind, cause).
    pub key: String,
    /// Kind.
    pub kind: AlertKind,
    /// Display name.
    pub name: String,
    /// Severity.
    pub severity: Severity,
    /// The VM.
    pub vm_id: String,
    /// Cause.
    pub cause: Cause,
    /// The latest details.
    pub detail: String,
    /// State.
    pub state: AlertState,
    /// The rule that dismissed it, if a rule did.
    pub suppressed_by: Option<String>,
    /// First seen (Unix seconds).
    pub first_seen: u64,
    /// Last seen.
    pub last_seen: u64,
    /// How many times the condition was seen.
    pub count: u64,
}

/// A suppression rule: alerts matching every given field are dismissed
/// when raised (e.g. VMs with Secure Boot intentionally off).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuppressionRule {
    /// The rule's name.
    pub name: String,
    /// Alert kind, if restricted.
    pub kind: Option<AlertKind>,
    /// Attestation failure reason, if restricted.
    pub reason: Option<FailureReason>,
    /// VMs, if restricted.
    pub vm_ids: Option<Vec<String>>,
    /// Who made it (`token <id> (<name>)`); rules made before authors
    /// were recorded have none.
    #[serde(default)]
    pub author: Option<String>,
    /// When it was made (Unix seconds).
    #[serde(default)]
    pub created_at: Option<u64>,
    /// When it stops applying (Unix seconds), if it expires.
    #[serde(default)]
    pub expires_at: Option<u64>,
}

/// Why a suppression rule cannot be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// No selector: it would silence every future alert.
    #[error("a suppression rule needs at least one selector (kind, reason or vmIds): one without would silence every alert")]
    NoSelector,
    /// An empty VM list selects nothing.
    #[error("vmIds is empty: give at least one VM, or leave it out")]
    EmptyVmList,
    /// It already expired.
    #[error("the rule expires before it is made")]
    AlreadyExpired,
}

impl SuppressionRule {
    /// Whether the rule covers an alert condition at `now` (an expired
    /// rule covers nothing).
    pub fn matches(&self, c: &AlertCandidate, now: u64) -> bool {
        self.active_at(now)
            && self.kind.is_none_or(|k| k == c.kind)
            && self
                .reason
                .is_none_or(|r| c.cause == Cause::Attestation { reason: r })
            && self.vm_ids.as_ref().is_none_or(|v| v.contains(&c.vm_id))
    }

    /// Whether it has not expired at `now`.
    pub fn active_at(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|e| now < e)
    }

    /// Whether it reaches every VM (no VM list): such a rule is an
    /// administrator's to make.
    pub fn fleet_wide(&self) -> bool {
        self.vm_ids.is_none()
    }

    /// Checks that the rule selects something, at `now`.
    pub fn validate(&self, now: u64) -> Result<(), RuleError> {
        if self.kind.is_none() && self.reason.is_none() && self.vm_ids.is_none() {
            return Err(RuleError::NoSelector);
        }
        if self.vm_ids.as_ref().is_some_and(Vec::is_empty) {
            return Err(RuleError::EmptyVmList);
        }
        if !self.active_at(now) {
            return Err(RuleError::AlreadyExpired);
        }
        Ok(())
    }
}

/// What changed, for notification (webhooks, metrics).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AlertEvent {
    /// A new alert, or one that came back after it was resolved.
    Raised {
        /// The alert.
        alert: Alert,
    },
    /// Its condition went away.
    Resolved {
        /// The alert.
        alert: Alert,
    },
    /// A suppression rule dismissed it as it was raised (not notified).
    Suppressed {
        /// The alert.
        alert: Alert,
    },
}

/// All alerts, by key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertBook {
    /// The alerts.
    pub alerts: BTreeMap<String, Alert>,
}

impl AlertBook {
    /// Applies one evaluation of a VM: each candidate raises its alert
    /// once (deduplicated), an active alert without a candidate is
    /// resolved, a dismissed one stays dismissed while its condition
    /// holds.
    pub fn reconcile(
        &mut self,
        vm_id: &str,
        candidates: &[AlertCandidate],
        rules: &[SuppressionRule],
        now: u64,
    ) -> Vec<AlertEvent> {
        let mut events = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for c in candidates.iter().filter(|c| c.vm_id == vm_id) {
            let key = c.key();
            seen.insert(key.clone());
            let rule = rules.iter().find(|r| r.matches(c, now));
            match self.alerts.get_mut(&key) {
                Some(a) if a.state != AlertState::Resolved => {
                    a.last_seen = now;
                    a.count = a.count.saturating_add(1);
                    a.detail.clone_from(&c.detail);
                }
                existing => {
                    let count = existing.as_ref().map_or(0, |a| a.count).saturating_add(1);
                    let first_seen = existing.as_ref().map_or(now, |a| a.first_seen);
                    let alert = Alert {
                        key: key.clone(),
                        kind: c.kind,
                        name: c.kind.display_name().to_owned(),
                        severity: c.kind.severity(),
                        vm_id: c.vm_id.clone(),
                        cause: c.cause.clone(),
                        detail: c.detail.clone(),
                        state: if rule.is_some() {
                            AlertState::Dismissed
                        } else {
                            AlertState::Active
                        },
                        suppressed_by: rule.map(|r| r.name.clone()),
                        first_seen,
                        last_seen: now,
                        count,
                    };
                    self.alerts.insert(key, alert.clone());
                    events.push(if rule.is_some() {
                        AlertEvent::Suppressed { alert }
                    } else {
                        AlertEvent::Raised { alert }
                    });
                }
            }
        }
        for a in self.alerts.values_mut() {
            if a.vm_id == vm_id && !seen.contains(&a.key) && a.state == AlertState::Active {
                a.state = AlertState::Resolved;
                a.last_seen = now;
                events.push(AlertEvent::Resolved { alert: a.clone() });
            }
        }
        events
    }

    /// An operator dismisses an alert; `false` if there is no such alert.
    pub fn dismiss(&mut self, key: &str) -> bool {
        match self.alerts.get_mut(key) {
            Some(a) => {
                a.state = AlertState::Dismissed;
                true
            }
            None => false,
        }
    }

    /// Alerts in a state.
    pub fn in_state(&self, state: AlertState) -> impl Iterator<Item = &Alert> {
        self.alerts.values().filter(move |a| a.state == state)
    }
}
