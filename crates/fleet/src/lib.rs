//! The control plane's resource model, in Azure's names (pure: no IO, no
//! clock, no randomness — callers pass times and identifiers in).
//!
//! What it holds, following `../shared/design/azure-model.md` (ComputeRP
//! 2024-07-01 names and defaults):
//!
//! - [`security`]: `securityProfile` (`securityType`, `uefiSettings`);
//! - [`image`]: gallery image definitions (`osType`, `hyperVGeneration`,
//!   `features` with `SecurityType`) and versions;
//! - [`sizes`]: VM sizes, their families' Trusted Launch support, vCPU
//!   quotas per family, operator-defined sizes;
//! - [`ids`]: ARM resource ids and Azure's naming rules;
//! - [`resources`]: resource groups, VMs, scale sets (Uniform and
//!   Flexible), instances, data disks, extensions;
//! - [`validate`]: the rules and defaults a create or update must pass,
//!   each refusal an Azure-style [`FleetError`];
//! - [`policy`]: upgrade policies and the rolling upgrade policy's defaults
//!   and ranges;
//! - [`rolling`]: the rolling-upgrade planner — which instances to take
//!   next, when to stop, when the upgrade is Faulted — as a pure state
//!   machine the orchestrator drives.
//!
//! It does not run anything: creating, booting and deleting VMs is the
//! orchestrator's, through a driver (the real runtime or a simulated one).

#![forbid(unsafe_code)]
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]
#![cfg_attr(
    test,
    allow(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::arithmetic_side_effects
    )
)]

pub mod error;
pub mod ids;
pub mod image;
pub mod operation;
pub mod policy;
pub mod resources;
pub mod rolling;
pub mod security;
pub mod sizes;
pub mod validate;

pub use error::{ErrorCode, FleetError};
pub use policy::{RollingPolicy, RollingUpgradePolicy, UpgradeMode, UpgradePolicy};
