//! One driver type for a server that chooses its driver at start: the
//! host runtime, or the simulated one (scale tests, benchmarks, trying
//! the API without VMs).

use crate::driver::{Driver, DriverError, InstanceSpec, InstanceStatus};
use crate::runtime_driver::RuntimeDriver;
use crate::sim::SimDriver;

/// The runtime or the simulated driver.
#[derive(Clone, Debug)]
pub enum AnyDriver {
    /// Real VMs.
    Runtime(RuntimeDriver),
    /// Simulated instances.
    Sim(SimDriver),
}

macro_rules! delegate {
    ($self:ident, $d:ident => $call:expr) => {
        match $self {
            AnyDriver::Runtime($d) => $call.await,
            AnyDriver::Sim($d) => $call.await,
        }
    };
}

impl Driver for AnyDriver {
    async fn create(&self, spec: &InstanceSpec) -> Result<(), DriverError> {
        delegate!(self, d => d.create(spec))
    }
    async fn start(&self, name: &str) -> Result<(), DriverError> {
        delegate!(self, d => d.start(name))
    }
    async fn stop(&self, name: &str, deallocate: bool) -> Result<(), DriverError> {
        delegate!(self, d => d.stop(name, deallocate))
    }
    async fn apply(&self, spec: &InstanceSpec) -> Result<(), DriverError> {
        delegate!(self, d => d.apply(spec))
    }
    async fn reimage(&self, name: &str) -> Result<(), DriverError> {
        delegate!(self, d => d.reimage(name))
    }
    async fn delete(&self, name: &str) -> Result<(), DriverError> {
        delegate!(self, d => d.delete(name))
    }
    async fn status(&self, name: &str) -> Result<Option<InstanceStatus>, DriverError> {
        delegate!(self, d => d.status(name))
    }
    async fn list(&self) -> Result<Vec<InstanceStatus>, DriverError> {
        delegate!(self, d => d.list())
    }
    fn attests_guests(&self) -> bool {
        match self {
            AnyDriver::Runtime(d) => d.attests_guests(),
            AnyDriver::Sim(d) => d.attests_guests(),
        }
    }
}
