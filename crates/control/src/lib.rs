//! The control plane's IO: what runs the instances a scale set or VM
//! resource describes.
//!
//! [`Driver`] is the one interface the orchestrator uses; two
//! implementations sit behind it: the host runtime (QEMU + OVMF + swtpm,
//! `trustlaunch-runtime`) and [`sim::SimDriver`], in-process, whose boot
//! time and failures are injectable (scale tests and benchmarks of the
//! orchestrator: the same orchestrator code drives both).
//!
//! Every driver call is idempotent and keyed by the instance's name and
//! the model version it is asked to apply: after a crash the orchestrator
//! repeats the step it was in, and a step already done is a no-op — that
//! is how an interrupted upgrade resumes without upgrading an instance
//! twice or leaving an orphan behind.

#![forbid(unsafe_code)]

pub mod any;
pub mod driver;
pub mod orchestrator;
pub mod plane;
pub mod runtime_driver;
pub mod sim;
pub mod vm_ops;

pub use any::AnyDriver;
pub use driver::{
    DataDiskSpec, Driver, DriverError, Health, InstanceSecurity, InstanceSpec, InstanceStatus,
    PowerState,
};
pub use runtime_driver::RuntimeDriver;
