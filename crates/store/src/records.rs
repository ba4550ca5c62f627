//! The values the store takes and returns. Times are Unix seconds chosen
//! by the caller; JSON is `serde_json::Value` (the server maps it to the
//! attestation crate's types); bytes are bytes (stored as hex).

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

/// A registered VM.
#[derive(Debug, Clone, PartialEq)]
pub struct VmRecord {
    /// The VM's identifier (primary key).
    pub vm_id: String,
    /// The VM's spec.
    pub spec: Value,
    /// The vTPM's EK public area.
    pub ek_public: Vec<u8>,
    /// When it was registered. Kept when the record is replaced.
    pub created_at: i64,
}

impl VmRecord {
    /// The security type its registration names (`TrustedLaunch` when
    /// the spec's `trustedLaunch` is true, else `Standard`), kept in its
    /// own column for pages of VMs.
    pub fn security_type(&self) -> &'static str {
        if self
            .spec
            .get("trustedLaunch")
            .and_then(serde_json::Value::as_bool)
            == Some(true)
        {
            "TrustedLaunch"
        } else {
            "Standard"
        }
    }
}

/// What a page of registered VMs asks for ([`crate::Store::vm_page`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmQuery {
    /// Ids containing this (case-insensitive).
    pub name_contains: Option<String>,
    /// `healthy`, `unhealthy` or `unknown` (never attested).
    pub health: Option<String>,
    /// `TrustedLaunch` or `Standard`.
    pub security_type: Option<String>,
    /// The order.
    pub sort: VmSort,
    /// Descending.
    pub descending: bool,
    /// Rows skipped.
    pub offset: u64,
    /// Rows returned at most.
    pub limit: u64,
}

/// The orders of a page of VMs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VmSort {
    /// By id.
    #[default]
    Name,
    /// By the newest verdict.
    Health,
    /// By the newest attestation's time.
    LastAttested,
    /// By registration time.
    Registered,
    /// By security type.
    SecurityType,
}

/// A page of registered VMs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmPage {
    /// How many VMs match the query in all.
    pub total: u64,
    /// This page's.
    pub rows: Vec<VmRow>,
}

/// One VM of a page: its id, security type, registration time and newest
/// verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRow {
    /// The VM.
    pub vm_id: String,
    /// `TrustedLaunch` or `Standard`.
    pub security_type: String,
    /// When it was registered.
    pub created_at: i64,
    /// The newest attestation's verdict (`None`: never attested).
    pub healthy: Option<bool>,
    /// The newest attestation's time.
    pub last_attested_at: Option<i64>,
}

/// Whether a VM's record, enrollment or baseline changed ([`crate::Store::vm_stamp`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmStamp {
    /// +1 each time the VM's record is replaced.
    pub revision: i64,
    /// When it enrolled, if it did.
    pub enrolled_at: Option<i64>,
    /// Its baseline's version, if it has one.
    pub baseline_version: Option<i64>,
}

/// A VM's enrollment: the EK certificate and the attestation key.
#[derive(Debug, Clone, PartialEq)]
pub struct Enrollment {
    /// The VM (primary key).
    pub vm_id: String,
    /// The EK certificate (DER).
    pub ek_certificate: Vec<u8>,
    /// The AK public area.
    pub ak_public: Vec<u8>,
    /// When the VM enrolled.
    pub enrolled_at: i64,
}

/// An attestation to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAttestation {
    /// The VM.
    pub vm_id: String,
    /// The boot it attested.
    pub boot_id: String,
    /// The challenge's nonce: (vm_id, nonce) is unique, so a retry after a
    /// crash does not record the attestation twice.
    pub nonce: Vec<u8>,
    /// When it was appraised.
    pub at: i64,
    /// The verdict.
    pub healthy: bool,
    /// The appraisal report.
    pub appraisal: Value,
    /// The token issued, if any.
    pub token: Option<String>,
}

/// A recorded attestation.
#[derive(Debug, Clone, PartialEq)]
pub struct AttestationRecord {
    /// Assigned by the database, increasing.
    pub id: i64,
    /// What was recorded.
    pub attestation: NewAttestation,
}

/// A VM's current baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    /// The VM (primary key).
    pub vm_id: String,
    /// The baseline.
    pub baseline: Value,
    /// 1 for the first baseline, +1 for each change.
    pub version: i64,
    /// When it last changed.
    pub updated_at: i64,
}

/// Why a baseline changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BaselineAction {
    /// Learned from a first healthy boot.
    Learned,
    /// Pinned by an operator.
    Pinned,
    /// Learned again after an accepted change.
    Relearned,
    /// Predicted from an image before it booted.
    Predicted,
    /// A first boot's components, proposed: no baseline yet, they await
    /// an operator's approval.
    Proposed,
    /// An operator approved the proposed components as the baseline.
    Approved,
}

impl BaselineAction {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Learned => "learned",
            Self::Pinned => "pinned",
            Self::Relearned => "relearned",
            Self::Predicted => "predicted",
            Self::Proposed => "proposed",
            Self::Approved => "approved",
        }
    }
}

impl FromStr for BaselineAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "learned" => Self::Learned,
            "pinned" => Self::Pinned,
            "relearned" => Self::Relearned,
            "predicted" => Self::Predicted,
            "proposed" => Self::Proposed,
            "approved" => Self::Approved,
            other => return Err(format!("unknown baseline action {other:?}")),
        })
    }
}

impl fmt::Display for BaselineAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who changed a baseline, how and when: written to `baseline_audit` in
/// the same transaction as the change.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineChange {
    /// Why.
    pub action: BaselineAction,
    /// Who (a token name, `system`, ...).
    pub actor: String,
    /// When.
    pub at: i64,
}

/// One entry of a baseline's audit trail.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineAuditEntry {
    /// Assigned by the database, increasing.
    pub id: i64,
    /// The VM.
    pub vm_id: String,
    /// The change.
    pub change: BaselineChange,
    /// The baseline before (`None` for the first).
    pub old: Option<Value>,
    /// The baseline after.
    pub new: Value,
    /// The version the change produced.
    pub version: i64,
}

/// An alert, keyed by the caller (e.g. `vm/check`).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRecord {
    /// The alert's key (primary key).
    pub key: String,
    /// The VM it concerns.
    pub vm_id: String,
    /// Its state (`active`, `resolved`, `suppressed`, ...: the server's words).
    pub state: String,
    /// The alert.
    pub alert: Value,
    /// When it last changed.
    pub updated_at: i64,
}

/// Which alerts to list; `Default` lists all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertFilter {
    /// Only this VM's.
    pub vm_id: Option<String>,
    /// Only in this state.
    pub state: Option<String>,
}

/// A named alert suppression rule.
#[derive(Debug, Clone, PartialEq)]
pub struct SuppressionRule {
    /// The rule's name (primary key).
    pub name: String,
    /// The rule.
    pub rule: Value,
}

/// A token-signing key. `Debug` does not print the private key.
#[derive(Clone, PartialEq)]
pub struct SigningKeyRecord {
    /// Key id (primary key).
    pub kid: String,
    /// The private key, PKCS#8 PEM.
    pub pkcs8_pem: String,
    /// When it was created.
    pub created_at: i64,
    /// When it stops being published, if planned.
    pub retire_at: Option<i64>,
    /// Whether it signs new tokens; at most one key is current.
    pub current: bool,
}

impl fmt::Debug for SigningKeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeyRecord")
            .field("kid", &self.kid)
            .field("pkcs8_pem", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("retire_at", &self.retire_at)
            .field("current", &self.current)
            .finish()
    }
}

/// What an API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Role {
    /// Read.
    Reader,
    /// Read and operate (pin baselines, handle alerts).
    Operator,
    /// Everything, including tokens and keys.
    Admin,
}

impl Role {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reader => "reader",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "reader" => Self::Reader,
            "operator" => Self::Operator,
            "admin" => Self::Admin,
            other => return Err(format!("unknown role {other:?}")),
        })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An API token, known only by its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenRecord {
    /// SHA-256 of the token (primary key).
    pub sha256: [u8; 32],
    /// A name for people.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// When it was created.
    pub created_at: i64,
    /// When it stops working, if it expires.
    pub expires_at: Option<i64>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
    /// When it was last used (to the minute), if ever.
    pub last_used_at: Option<i64>,
}

impl ApiTokenRecord {
    /// The token's public id: the first 12 hex digits of its SHA-256
    /// (what audit trails and `token revoke` name; names need not be
    /// unique).
    pub fn id(&self) -> String {
        crate::hex::encode(&self.sha256)
            .get(..12)
            .unwrap_or_default()
            .to_owned()
    }

    /// Whether it may be used at `now`: not revoked, not expired.
    pub fn usable_at(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

/// One entry of the audit log: who changed what, when.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// Assigned by the database, increasing.
    pub id: i64,
    /// The entry.
    pub entry: NewAuditEntry,
}

/// An audit entry to write (in the same transaction as its change).
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEntry {
    /// When.
    pub at: i64,
    /// Who: `token <id> (<name>)`, or `platform` for the server itself.
    pub actor: String,
    /// What was done (`registration.put`, `suppression.put`,
    /// `token.create`, `token.revoke`, ...).
    pub action: String,
    /// What it was done to (`vm/<id>`, `suppression/<name>`,
    /// `token/<id>`).
    pub target: String,
    /// The change's details.
    pub detail: Value,
    /// For an event webhooks are told of: its deliveries (the server's
    /// JSON), kept until none is pending.
    pub deliveries: Option<Value>,
}

/// A challenge the server issued: a single-use nonce for one VM, and
/// once an AK is named, the credential the server made for it under the
/// VM's recorded EK (kept as the SHA-256 of its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeRecord {
    /// The challenge's id (random, public).
    pub id: String,
    /// The VM.
    pub vm_id: String,
    /// The nonce (unique).
    pub nonce: Vec<u8>,
    /// The AK (TPMT_PUBLIC) the credential was made for, once made.
    pub ak_public: Option<Vec<u8>>,
    /// SHA-256 of the credential's secret, once made.
    pub secret_sha256: Option<[u8; 32]>,
    /// Who asked for it (the caller, or `platform`).
    pub issued_to: String,
    /// When it was issued.
    pub created_at: i64,
    /// When it stops being accepted.
    pub expires_at: i64,
    /// When it was answered, if it was.
    pub used_at: Option<i64>,
}
