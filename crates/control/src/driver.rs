//! The driver interface: instances by name, each created from an
//! [`InstanceSpec`] that carries the model version it implements.

use std::future::Future;

use serde::{Deserialize, Serialize};

/// The security settings an instance runs with (the fleet's resolved
/// `securityProfile`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSecurity {
    /// `securityType` is TrustedLaunch (UEFI Secure Boot firmware with
    /// SMM, and the settings below).
    pub trusted_launch: bool,
    /// `uefiSettings.secureBootEnabled`.
    pub secure_boot: bool,
    /// `uefiSettings.vTpmEnabled`.
    pub vtpm: bool,
}

/// A data disk: it survives reimage and model updates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataDiskSpec {
    /// Logical unit number, unique per instance.
    pub lun: u32,
    /// Size in GiB.
    pub disk_size_gb: u32,
}

/// What an instance is made from: one model version of its VM or scale
/// set, resolved (size to vCPUs and memory, image reference to an image
/// the runtime built).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSpec {
    /// The instance's name (unique per driver).
    pub name: String,
    /// The model version this spec implements.
    pub model_version: u64,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// The image the OS disk is made from (the runtime's image name).
    pub image: String,
    /// Security settings.
    pub security: InstanceSecurity,
    /// Data disks.
    pub data_disks: Vec<DataDiskSpec>,
    /// The guest attestation extension is installed (the instance's
    /// health includes its attestation verdict).
    pub guest_attestation: bool,
    /// The NIC's host network (`networkProfile`); `None`: no NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<trustlaunch_fleet::resources::HostNetwork>,
    /// Host name and SSH keys for the first boot (`osProfile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<InstanceOs>,
}

/// What the guest's first boot applies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceOs {
    /// Host name.
    pub computer_name: String,
    /// OpenSSH public keys root may log in with.
    pub ssh_public_keys: Vec<String>,
}

/// Whether an instance is up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PowerState {
    /// Created or updated, not started.
    Stopped,
    /// Stopped and its resources released (`deallocate`).
    Deallocated,
    /// Booting.
    Starting,
    /// Running.
    Running,
    /// It failed; the reason.
    Failed(String),
}

/// An instance's application health (Azure's Application Health signal:
/// here the guest agent's heartbeat and, with guest attestation, its
/// attestation verdict).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    /// Up and, where attested, attested healthy.
    Healthy,
    /// Up but not healthy, or down when it should run.
    Unhealthy,
    /// Not known yet (booting, or no signal).
    Unknown,
}

/// What a driver knows of one instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStatus {
    /// The spec it runs (its model version included).
    pub spec: InstanceSpec,
    /// Power state.
    pub power: PowerState,
    /// Health.
    pub health: Health,
    /// Where the guest's SSH is reachable (`127.0.0.1:PORT` of a
    /// user-mode NIC's forward), when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_endpoint: Option<String>,
    /// When its current (or last) boot started, Unix seconds, as the host
    /// recorded it: what tells an attestation of this boot from one of an
    /// earlier boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_started_at: Option<u64>,
}

/// A driver's failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// No instance by that name.
    #[error("instance {0} does not exist")]
    NotFound(String),
    /// The instance exists with another spec than a create asked for.
    #[error("instance {name} exists with another spec (model version {existing})")]
    Exists {
        /// The instance.
        name: String,
        /// Its model version.
        existing: u64,
    },
    /// The spec cannot run here (e.g. more memory than the host has).
    #[error("instance {name}: {reason}")]
    Invalid {
        /// The instance.
        name: String,
        /// Why.
        reason: String,
    },
    /// The operation failed on the host.
    #[error("instance {name}: {operation} failed: {reason}")]
    Failed {
        /// The instance.
        name: String,
        /// What was being done.
        operation: &'static str,
        /// Why.
        reason: String,
    },
}

/// Runs instances. Every call is idempotent (see the crate docs): `create`
/// of an instance that exists with the same spec, `delete` of one that is
/// gone, `apply` of the model version it already runs, `start` of a
/// running one and `stop` of a stopped one all succeed and change nothing.
pub trait Driver: Send + Sync + 'static {
    /// Creates an instance (stopped) from `spec`.
    fn create(&self, spec: &InstanceSpec) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// Starts it and returns once it is booting (health comes later).
    fn start(&self, name: &str) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// Stops it; `deallocate` also releases its resources.
    fn stop(
        &self,
        name: &str,
        deallocate: bool,
    ) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// Brings a (stopped or running) instance to `spec`'s model: size,
    /// image (its OS disk is re-created: what is on it is lost), security
    /// settings; data disks are kept. Leaves it stopped.
    fn apply(&self, spec: &InstanceSpec) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// Re-creates the OS disk from the instance's current image, keeping
    /// its data disks. Leaves it stopped.
    fn reimage(&self, name: &str) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// Deletes it and everything it has, data disks included.
    fn delete(&self, name: &str) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// What the driver knows of it (`None`: no such instance).
    fn status(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<InstanceStatus>, DriverError>> + Send;
    /// Every instance, by name.
    fn list(&self) -> impl Future<Output = Result<Vec<InstanceStatus>, DriverError>> + Send;
    /// Whether the host attests its instances' boots (the attestation
    /// service challenges their vTPMs under the instance's name): then the
    /// health of an instance with guest attestation is the service's
    /// verdict on its current boot.
    fn attests_guests(&self) -> bool {
        false
    }
}
