//! What the service keeps in the store's JSON columns and returns over the
//! API. The store keeps JSON opaque; these are its shapes.

use serde::{Deserialize, Serialize};
use trustlaunch_attestation::baseline::BootReport;
use trustlaunch_attestation::security::{Alert, AlertCandidate};
use trustlaunch_attestation::{Baseline, KeyDatabases, Verdict};
use utoipa::ToSchema;

/// A VM as the attestation service knows it: what the platform that runs
/// it says (never what the guest says).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VmRegistration {
    /// securityProfile.securityType is TrustedLaunch.
    pub trusted_launch: bool,
    /// The image carries `SecurityType=TrustedLaunchSupported` (and the
    /// VM is Gen2): Trusted Launch can be on.
    pub trusted_launch_supported: bool,
    /// uefiSettings.secureBootEnabled.
    pub secure_boot_enabled: bool,
    /// uefiSettings.vTpmEnabled.
    pub v_tpm_enabled: bool,
    /// The EK the platform created for the VM's vTPM (TPMT_PUBLIC, hex).
    pub ek_public: Option<String>,
    /// The key template's Secure Boot databases (EFI_SIGNATURE_LIST, hex).
    #[serde(default)]
    pub template: Template,
    /// The baseline predicted from the image before the first boot.
    #[schema(value_type = Option<Object>)]
    pub predicted_baseline: Option<Baseline>,
    /// The VM's spec as the runtime has it (informational).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    /// Which host runs it (`local`: this server's runtime).
    #[serde(default)]
    pub host: String,
    /// Who registered it, set by the server (whatever a request says):
    /// the platform that runs it (read-only over the API), or an API
    /// caller.
    #[serde(default)]
    #[schema(read_only)]
    pub managed_by: ManagedBy,
}

/// Who registered a VM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ManagedBy {
    /// The platform that runs it (this server's runtime or control plane).
    Platform,
    /// An API caller (a VM another host runs).
    #[default]
    Api,
}

/// PK, KEK, db, dbx as hex EFI_SIGNATURE_LISTs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Template {
    /// PK.
    pub pk: Option<String>,
    /// KEK.
    pub kek: Option<String>,
    /// db.
    pub db: Option<String>,
    /// dbx.
    pub dbx: Option<String>,
}

impl Template {
    /// From the databases.
    pub fn from_dbs(k: &KeyDatabases) -> Self {
        let h = |v: &Option<Vec<u8>>| v.as_deref().map(hex);
        Self {
            pk: h(&k.pk),
            kek: h(&k.kek),
            db: h(&k.db),
            dbx: h(&k.dbx),
        }
    }

    /// To the databases; `None` if a value is not hex.
    pub fn to_dbs(&self) -> Option<KeyDatabases> {
        let h = |v: &Option<String>| -> Option<Option<Vec<u8>>> {
            match v {
                None => Some(None),
                Some(s) => unhex(s).map(Some),
            }
        };
        Some(KeyDatabases {
            pk: h(&self.pk)?,
            kek: h(&self.kek)?,
            db: h(&self.db)?,
            dbx: h(&self.dbx)?,
        })
    }

    /// Whether any database is set.
    pub fn is_empty(&self) -> bool {
        self.pk.is_none() && self.kek.is_none() && self.db.is_none() && self.dbx.is_none()
    }
}

/// A VM's baseline as stored: the baseline, whether the next healthy
/// boot replaces it, and the components of a first boot awaiting
/// approval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BaselineDoc {
    /// The baseline (`None`: none approved or predicted).
    pub baseline: Option<Baseline>,
    /// Learn from the next boot whose other checks pass.
    pub learn: Option<LearnRequest>,
    /// Without a baseline: the first healthy boot's components, proposed
    /// for an operator to approve.
    #[serde(default)]
    pub pending: Option<PendingBaseline>,
}

impl BaselineDoc {
    /// The state in words (`approved`, `predicted`, `pending-approval`,
    /// `awaiting-first-boot`, `relearn-requested`).
    pub fn state(&self, now: i64) -> &'static str {
        match (&self.baseline, &self.learn, &self.pending) {
            (_, Some(l), _) if l.relearn && l.active_at(now) => "relearn-requested",
            (Some(b), _, _) => match b.source {
                trustlaunch_attestation::BaselineSource::Predicted { .. } => "predicted",
                _ => "approved",
            },
            (None, _, Some(_)) => "pending-approval",
            (None, _, None) => "awaiting-first-boot",
        }
    }
}

/// A pending learn.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LearnRequest {
    /// Who asked (`system` for filling in a predicted baseline).
    pub actor: String,
    /// Relearn (an operator's request after an update: the boot's
    /// components replace the baseline even where they differ) or learn
    /// (fill in a predicted baseline from a boot that matches it).
    pub relearn: bool,
    /// Until when (Unix seconds) a relearn waits for a boot; after it,
    /// the request is void (`None`: no limit, for the system's fill-in).
    #[serde(default)]
    pub until: Option<i64>,
}

impl LearnRequest {
    /// The system's request to fill in a predicted baseline.
    pub fn fill() -> Self {
        Self {
            actor: "system".into(),
            relearn: false,
            until: None,
        }
    }

    /// Whether it still applies at `now`.
    pub fn active_at(&self, now: i64) -> bool {
        self.until.is_none_or(|u| now < u)
    }
}

/// A first boot's components awaiting approval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingBaseline {
    /// The components.
    pub measurements: trustlaunch_attestation::Measurements,
    /// The service's boot counter of that boot.
    pub boot_counter: u64,
    /// When it was proposed (Unix seconds).
    pub since: i64,
}

/// Which boot a boot counter stands for: the AK and the TPM's reset and
/// restart counters of the last verified quote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootRef {
    /// SHA-256 of the AK.
    pub ak_sha256: String,
    /// `resetCount`.
    pub reset_count: u32,
    /// `restartCount`.
    pub restart_count: u32,
}

/// The TPM's clock and counters as the verified quote states them: a
/// new (resetCount, restartCount) is a new boot (TPM 2.0 Part 1 §36).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TpmClock {
    /// `clock` (ms the TPM has been powered).
    pub clock: u64,
    /// `resetCount`.
    pub reset_count: u32,
    /// `restartCount`.
    pub restart_count: u32,
}

/// One recorded attestation, as stored and returned.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttestationDoc {
    /// The verdict.
    pub verdict: Verdict,
    /// The full appraisal: every check, its outcome, detail and evidence.
    pub appraisal: serde_json::Value,
    /// The boot's early/late report against the baseline.
    pub boot_report: Option<serde_json::Value>,
    /// The guest's boot id (guest-reported: shown, never trusted).
    pub boot_id: String,
    /// The service's boot counter for this VM (1 for the first boot
    /// seen), moved by the quote's resetCount/restartCount.
    pub boot_counter: u64,
    /// The verified quote's clock, when the quote verified.
    #[serde(default)]
    pub tpm_clock: Option<TpmClock>,
    /// SHA-256 of the AK that signed the quote (counters are compared
    /// only under the same AK).
    #[serde(default)]
    pub ak_sha256: String,
    /// The boot `boot_counter` counts: the last verified quote's AK and
    /// counters (carried over by an attestation whose quote did not
    /// verify, which proves no new boot).
    #[serde(default)]
    pub boot: Option<BootRef>,
    /// The baseline version compared with (0: none).
    pub baseline_version: i64,
    /// What happened to the baseline on this attestation, if anything.
    pub baseline_event: Option<String>,
    /// The alert conditions this attestation found.
    pub alert_candidates: Vec<AlertCandidate>,
    /// Kernel modules the guest reported as failing signature checks.
    pub untrusted_modules: Vec<String>,
    /// Milliseconds the appraisal took.
    pub appraisal_ms: f64,
}

/// An alert with where its webhook deliveries stand, kept together so
/// that a restart redelivers what was not acknowledged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertDoc {
    /// The alert.
    #[serde(flatten)]
    pub alert: Alert,
    /// The last event (`raised`, `resolved`, `dismissed`).
    pub last_event: String,
    /// The deliveries of `last_event`, one per webhook, by the webhook's
    /// name (never its URL).
    #[serde(default)]
    pub deliveries: Vec<Delivery>,
}

impl AlertDoc {
    /// Some webhook has not acknowledged `last_event` and is still tried.
    pub fn pending(&self) -> bool {
        self.deliveries
            .iter()
            .any(|d| d.state == DeliveryState::Pending)
    }

    /// Some webhook never acknowledged `last_event` within the retry
    /// window.
    pub fn dead_lettered(&self) -> bool {
        self.deliveries
            .iter()
            .any(|d| d.state == DeliveryState::DeadLettered)
    }
}

/// One alert change owed to one webhook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// The webhook's name.
    pub webhook: String,
    /// The delivery's id, the same on every attempt (its
    /// `X-Trustlaunch-Delivery`).
    pub id: String,
    /// Where it stands.
    pub state: DeliveryState,
    /// When the change was queued (Unix seconds): the retry window runs
    /// from here.
    pub queued_at: u64,
    /// Attempts so far.
    pub attempts: u32,
    /// When the last attempt was made.
    #[serde(default)]
    pub last_attempt_at: Option<u64>,
    /// Why the last attempt failed (an HTTP status or a connection or TLS
    /// error; never the URL).
    #[serde(default)]
    pub last_error: Option<String>,
}

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DeliveryState {
    /// Not acknowledged yet; retried with backoff.
    Pending,
    /// Acknowledged (2xx).
    Delivered,
    /// Not acknowledged within the retry window: given up.
    DeadLettered,
}

impl Delivery {
    /// A new delivery, queued at `now`, to each of `webhooks` (names).
    pub fn queue(webhooks: &[String], now: u64) -> Vec<Delivery> {
        use rand_core::{OsRng, RngCore as _};
        webhooks
            .iter()
            .map(|w| {
                let mut b = [0u8; 16];
                OsRng.fill_bytes(&mut b);
                // A random (version 4) UUID.
                b[6] = (b[6] & 0x0f) | 0x40;
                b[8] = (b[8] & 0x3f) | 0x80;
                let h = hex(&b);
                Delivery {
                    webhook: w.clone(),
                    id: format!(
                        "{}-{}-{}-{}-{}",
                        &h[..8],
                        &h[8..12],
                        &h[12..16],
                        &h[16..20],
                        &h[20..]
                    ),
                    state: DeliveryState::Pending,
                    queued_at: now,
                    attempts: 0,
                    last_attempt_at: None,
                    last_error: None,
                }
            })
            .collect()
    }
}

/// The boot report as JSON.
pub fn report_json(r: &BootReport) -> Option<serde_json::Value> {
    serde_json::to_value(r).ok()
}

/// Lowercase hex of the SHA-256 of `b`.
pub fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest as _;
    hex(&sha2::Sha256::digest(b))
}

/// Lowercase hex.
pub fn hex(b: &[u8]) -> String {
    trustlaunch_eventlog::hex::encode(b)
}

/// Hex (either case, no `0x`) to bytes.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.starts_with("0x") {
        return None;
    }
    trustlaunch_eventlog::hex::decode(s)
}
