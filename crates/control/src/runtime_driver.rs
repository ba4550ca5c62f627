//! The real driver: each instance is a VM of the host runtime (QEMU +
//! OVMF + swtpm, `trustlaunch-runtime`). The runtime is blocking: every
//! call runs on tokio's blocking pool.
//!
//! The runtime's spec has no model version, so the driver keeps, beside
//! the runtime's VM directory, a record of the [`InstanceSpec`] it last
//! applied (`<home>/control/<name>.json`), written only after the runtime
//! call succeeded. After a crash between the two, the record is older than
//! the VM: [`Driver::status`] then reports the record's (older) version,
//! the orchestrator applies the newer spec again, and the runtime, finding
//! the VM already there, changes nothing — the step completes once.
//!
//! Health is the guest agent's heartbeat: a boot is followed in a
//! background thread ([`Runtime::wait_boot`]) that records its phase; a
//! VM with a vTPM is healthy once its agent's evidence passed the
//! runtime's checks, one without once its init reported in. (The
//! attestation verdict is the attestation service's, which the
//! orchestrator adds for instances with guest attestation: see
//! `Orchestrator::health`.)

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use trustlaunch_fleet::resources::HostNetwork;
use trustlaunch_runtime::spec::{
    DataDisk, Generation, Network, OsProfile, SecurityProfile, SecurityType, UefiSettings, VmSpec,
};
use trustlaunch_runtime::vm::{BootPhase, Runtime, Status, VmError, VmInfo};

use crate::driver::{Driver, DriverError, Health, InstanceSpec, InstanceStatus, PowerState};

/// How long a graceful stop waits before QEMU is told to quit.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// The driver over the host runtime.
#[derive(Clone)]
pub struct RuntimeDriver {
    runtime: Arc<Runtime>,
    records: PathBuf,
    boot_limit: Duration,
    /// The VMs whose boot a thread of this process follows.
    following: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl std::fmt::Debug for RuntimeDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeDriver")
            .field("records", &self.records)
            .field("boot_limit", &self.boot_limit)
            .finish_non_exhaustive()
    }
}

fn failed<'a>(name: &'a str, operation: &'static str) -> impl FnOnce(VmError) -> DriverError + 'a {
    move |e| match e {
        VmError::NotFound(n) => DriverError::NotFound(n),
        other => DriverError::Failed {
            name: name.to_owned(),
            operation,
            reason: other.to_string(),
        },
    }
}

/// The runtime spec an instance spec asks for. The key template is the
/// image's (its `image.json`), custom when it names none.
pub fn vm_spec(spec: &InstanceSpec) -> VmSpec {
    let image = PathBuf::from(&spec.image);
    let s = spec.security;
    let security_profile = if s.trusted_launch {
        SecurityProfile {
            security_type: SecurityType::TrustedLaunch,
            uefi_settings: Some(UefiSettings {
                secure_boot_enabled: s.secure_boot,
                v_tpm_enabled: s.vtpm,
            }),
        }
    } else {
        SecurityProfile::standard()
    };
    VmSpec {
        name: spec.name.clone(),
        hyper_v_generation: Generation::V2,
        security_profile,
        key_template: trustlaunch_runtime::image_meta::vm_key_template(&image),
        vcpus: spec.vcpus,
        memory_mib: spec.memory_mib,
        image,
        data_disks: spec
            .data_disks
            .iter()
            .map(|d| DataDisk {
                lun: d.lun,
                disk_size_gb: d.disk_size_gb,
            })
            .collect(),
        network: match &spec.network {
            None => Network::None,
            Some(HostNetwork::User) => Network::User,
            Some(HostNetwork::Bridge(bridge)) => Network::Bridge {
                bridge: bridge.clone(),
            },
        },
        os_profile: spec.os.as_ref().map(|os| OsProfile {
            computer_name: Some(os.computer_name.clone()),
            ssh_public_keys: os.ssh_public_keys.clone(),
        }),
    }
}

impl RuntimeDriver {
    /// A driver over `runtime`, following each boot for up to
    /// `boot_limit`.
    pub fn new(runtime: Arc<Runtime>, boot_limit: Duration) -> Result<Self, DriverError> {
        let records = runtime.home().root().join("control");
        std::fs::create_dir_all(&records).map_err(|e| DriverError::Failed {
            name: String::new(),
            operation: "open",
            reason: format!("{}: {e}", records.display()),
        })?;
        Ok(Self {
            runtime,
            records,
            boot_limit,
            following: Arc::default(),
        })
    }

    /// Follows `name`'s boot in a background thread (once per VM at a
    /// time): `wait_boot` records the phase (guest up, attested) or the
    /// failure in the VM's state, which `status` reads. Called at start,
    /// and for a running VM whose boot nobody follows — one started by a
    /// previous server process that was killed while it booted.
    fn follow(&self, name: &str) {
        {
            let mut f = self.following.lock().unwrap_or_else(|p| p.into_inner());
            if !f.insert(name.to_owned()) {
                return;
            }
        }
        let rt = self.runtime.clone();
        let following = self.following.clone();
        let (n, limit) = (name.to_owned(), self.boot_limit);
        tokio::task::spawn_blocking(move || {
            let _ = rt.wait_boot(&n, limit, &mut |_| {});
            following
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&n);
        });
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.records.join(format!("{name}.json"))
    }

    fn read_record(&self, name: &str) -> Option<InstanceSpec> {
        let bytes = std::fs::read(self.record_path(name)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn write_record(&self, spec: &InstanceSpec) -> Result<(), DriverError> {
        let path = self.record_path(&spec.name);
        let tmp = path.with_extension("json.new");
        let bytes = serde_json::to_vec_pretty(spec).unwrap_or_default();
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| DriverError::Failed {
                name: spec.name.clone(),
                operation: "record",
                reason: format!("{}: {e}", path.display()),
            })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Runtime) -> T + Send + 'static,
    ) -> T {
        let rt = self.runtime.clone();
        match tokio::task::spawn_blocking(move || f(&rt)).await {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    fn status_of(&self, info: &VmInfo) -> InstanceStatus {
        let vtpm = info.spec.security_profile.vtpm();
        let (power, health) = match info.state.status {
            Status::Running => {
                let up = match info.state.phase {
                    Some(BootPhase::Attested) => true,
                    Some(BootPhase::GuestUp) => !vtpm,
                    _ => false,
                };
                if up {
                    (PowerState::Running, Health::Healthy)
                } else {
                    (PowerState::Starting, Health::Unknown)
                }
            }
            Status::Creating => (PowerState::Stopped, Health::Unknown),
            Status::Stopped => (PowerState::Stopped, Health::Unknown),
            Status::Failed => (
                PowerState::Failed(info.state.reason.clone().unwrap_or_default()),
                Health::Unhealthy,
            ),
        };
        // The record tells the model version; a record that does not match
        // what the runtime runs (a crash between the two) reports version
        // 0, so the orchestrator applies its spec again.
        let spec = match self.read_record(&info.spec.name) {
            Some(r) if vm_spec(&r) == info.spec => r,
            Some(r) => InstanceSpec {
                model_version: 0,
                ..r
            },
            None => InstanceSpec {
                name: info.spec.name.clone(),
                model_version: 0,
                vcpus: info.spec.vcpus,
                memory_mib: info.spec.memory_mib,
                image: info.spec.image.display().to_string(),
                security: crate::driver::InstanceSecurity {
                    trusted_launch: info.spec.security_profile.security_type
                        == SecurityType::TrustedLaunch,
                    secure_boot: info.spec.security_profile.secure_boot(),
                    vtpm,
                },
                data_disks: info
                    .spec
                    .data_disks
                    .iter()
                    .map(|d| crate::driver::DataDiskSpec {
                        lun: d.lun,
                        disk_size_gb: d.disk_size_gb,
                    })
                    .collect(),
                guest_attestation: false,
                network: match &info.spec.network {
                    Network::None => None,
                    Network::User => Some(HostNetwork::User),
                    Network::Bridge { bridge } => Some(HostNetwork::Bridge(bridge.clone())),
                },
                os: info
                    .spec
                    .os_profile
                    .as_ref()
                    .map(|os| crate::driver::InstanceOs {
                        computer_name: os.computer_name.clone().unwrap_or_default(),
                        ssh_public_keys: os.ssh_public_keys.clone(),
                    }),
            },
        };
        InstanceStatus {
            spec,
            power,
            health,
            ssh_endpoint: info
                .state
                .ssh_port
                .filter(|_| info.spec.network == Network::User)
                .map(|p| format!("127.0.0.1:{p}")),
            boot_started_at: info.state.started_at,
        }
    }
}

impl Driver for RuntimeDriver {
    async fn create(&self, spec: &InstanceSpec) -> Result<(), DriverError> {
        let want = vm_spec(spec);
        let name = spec.name.clone();
        let existing = self
            .blocking(move |rt| rt.show(&name).ok().map(|i| i.spec))
            .await;
        match existing {
            Some(s) if s == want => {}
            Some(_) => {
                return Err(DriverError::Exists {
                    name: spec.name.clone(),
                    existing: self.read_record(&spec.name).map_or(0, |r| r.model_version),
                })
            }
            None => {
                let name = spec.name.clone();
                self.blocking(move |rt| rt.create(&want, &mut |_| {}).map(drop))
                    .await
                    .map_err(failed(&name, "create"))?;
            }
        }
        self.write_record(spec)
    }

    async fn start(&self, name: &str) -> Result<(), DriverError> {
        let n = name.to_owned();
        let running = self
            .blocking(move |rt| rt.refresh(&n).map(|s| s.status == Status::Running))
            .await
            .map_err(failed(name, "start"))?;
        if running {
            return Ok(());
        }
        let n = name.to_owned();
        self.blocking(move |rt| rt.start(&n, &mut |_| {}).map(drop))
            .await
            .map_err(failed(name, "start"))?;
        self.follow(name);
        Ok(())
    }

    async fn stop(&self, name: &str, _deallocate: bool) -> Result<(), DriverError> {
        // One host: a stopped VM holds no CPU or memory, so deallocate and
        // stop are the same here (the disks and the vTPM stay).
        let n = name.to_owned();
        self.blocking(move |rt| rt.stop(&n, STOP_GRACE).map(drop))
            .await
            .map_err(failed(name, "stop"))
    }

    async fn apply(&self, spec: &InstanceSpec) -> Result<(), DriverError> {
        let want = vm_spec(spec);
        let name = spec.name.clone();
        // Already on this spec (a step repeated after a crash): nothing
        // to do, and above all no stop — a running instance keeps running.
        self.blocking(move |rt| {
            if rt.show(&name)?.spec == want {
                return Ok(());
            }
            rt.stop(&name, STOP_GRACE)?;
            rt.update(&want, STOP_GRACE, &mut |_| {}).map(drop)
        })
        .await
        .map_err(failed(&spec.name, "apply"))?;
        self.write_record(spec)
    }

    async fn reimage(&self, name: &str) -> Result<(), DriverError> {
        let n = name.to_owned();
        self.blocking(move |rt| {
            rt.stop(&n, STOP_GRACE)?;
            rt.reimage(&n, STOP_GRACE, &mut |_| {}).map(drop)
        })
        .await
        .map_err(failed(name, "reimage"))
    }

    async fn delete(&self, name: &str) -> Result<(), DriverError> {
        let n = name.to_owned();
        match self.blocking(move |rt| rt.delete(&n)).await {
            Ok(()) | Err(VmError::NotFound(_)) => {}
            Err(e) => return Err(failed(name, "delete")(e)),
        }
        match std::fs::remove_file(self.record_path(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(DriverError::Failed {
                name: name.to_owned(),
                operation: "delete",
                reason: e.to_string(),
            }),
            _ => Ok(()),
        }
    }

    async fn status(&self, name: &str) -> Result<Option<InstanceStatus>, DriverError> {
        let n = name.to_owned();
        let info = self
            .blocking(move |rt| {
                rt.refresh(&n)?;
                rt.show(&n)
            })
            .await;
        match info {
            Ok(info) => {
                let st = self.status_of(&info);
                if st.power == PowerState::Starting {
                    self.follow(name);
                }
                Ok(Some(st))
            }
            Err(VmError::NotFound(_)) => Ok(None),
            Err(e) => Err(failed(name, "status")(e)),
        }
    }

    async fn list(&self) -> Result<Vec<InstanceStatus>, DriverError> {
        let infos = self
            .blocking(|rt| rt.list())
            .await
            .map_err(failed("", "list"))?;
        Ok(infos.iter().map(|i| self.status_of(i)).collect())
    }
    /// The server's monitor attests every running VM with a vTPM under
    /// its runtime name, which is the instance's name.
    fn attests_guests(&self) -> bool {
        true
    }
}
