//! What the API's handlers share: the attestation service, the token
//! cache, the runtime's monitor and the control plane, when the server
//! runs them.

use std::sync::Arc;

use trustlaunch_control::plane::ControlPlane;

use crate::caller::TokenCache;
use crate::metrics::Gauges;
use crate::monitor::Monitor;
use crate::service::Service;

/// What handlers share.
pub struct AppState {
    /// The service.
    pub service: Arc<Service>,
    /// API token lookups.
    pub tokens: TokenCache,
    /// The local runtime's monitor, if this server runs one.
    pub monitor: Option<Arc<Monitor>>,
    /// The control plane, if this server runs one.
    pub control: Option<Arc<ControlPlane>>,
    /// `/metrics` answers without a token (`--metrics-public`).
    pub metrics_public: bool,
    /// The portal's sessions.
    pub sessions: crate::portal::Sessions,
    /// The server speaks TLS: the portal's cookies are `Secure`.
    pub tls: bool,
    /// The gauges `/metrics` last read, and when: scrapes read the
    /// store at most every [`GAUGE_TTL`].
    pub gauges: tokio::sync::Mutex<Option<(std::time::Instant, Gauges)>>,
}

/// How long `/metrics` reuses the gauges it read from the store.
pub const GAUGE_TTL: std::time::Duration = std::time::Duration::from_secs(10);
