//! The control plane as an application service, beneath the HTTP layer:
//! the store's resources as typed values (a repository of scale sets and
//! VMs), the gallery catalog, quotas and usage, the writes that commit a
//! model change with the operation that carries it out, and the loop that
//! runs operations. The server's handlers translate requests to these
//! calls and their results to ARM's answers; the CLI's and the portal's
//! paths are the same calls.

use std::sync::Arc;

use trustlaunch_fleet::image::{ImageCatalog, ImageDefinition, ImageVersion};
use trustlaunch_fleet::operation::SetOperation;
use trustlaunch_fleet::resources::{
    OrchestrationMode, ProvisioningState, ScaleSet, VirtualMachine, SCALE_SET_TYPE, VM_TYPE,
};
use trustlaunch_fleet::sizes::{Quotas, SizeCatalog, Usage};
pub use trustlaunch_fleet::validate::Confirmations;
use trustlaunch_fleet::validate::{
    validate_scale_set_create, validate_scale_set_update, validate_vm_create, validate_vm_update,
    Context,
};
use trustlaunch_fleet::{ErrorCode, FleetError};
use trustlaunch_store::{NewResource, OperationStatus, Precondition, ResourceUsage, Store};

use crate::orchestrator::{
    corrupt, new_runtime_name, set_runtime_name, Catalogs, ControlError, Orchestrator,
};
use crate::vm_ops::vm_runtime_name;
use crate::{AnyDriver, Driver};

/// Resource type of a gallery image definition.
pub const IMAGE_TYPE: &str = "Microsoft.Compute/galleries/images";
/// Resource type of a gallery image version.
pub const IMAGE_VERSION_TYPE: &str = "Microsoft.Compute/galleries/images/versions";

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The control plane a server runs: its store, orchestrator and limits.
pub struct ControlPlane {
    /// The store.
    pub store: Store,
    /// The orchestrator (its driver: the runtime's or the simulated one).
    pub orchestrator: Orchestrator<AnyDriver>,
    /// Sizes (built in, plus operator-defined).
    pub sizes: SizeCatalog,
    /// vCPU quotas per family.
    pub quotas: Quotas,
    /// Wakes the background loop when an operation starts.
    pub wake: tokio::sync::Notify,
    /// Where image versions' sources must be (real VMs only; `None` with
    /// the simulated driver, whose sources are names).
    pub images_root: Option<std::path::PathBuf>,
}

impl ControlPlane {
    /// The gallery images in the store, as a catalog. A stored image that
    /// does not load (changed outside the API) is left out with a warning
    /// rather than failing every request.
    pub async fn images(&self) -> Result<ImageCatalog, ControlError> {
        let mut c = ImageCatalog::new();
        for r in self.store.list_resources(IMAGE_TYPE, None).await? {
            let gallery = r.body["galleryId"].as_str().unwrap_or_default();
            let added = serde_json::from_value::<ImageDefinition>(r.body["definition"].clone())
                .map_err(|e| e.to_string())
                .and_then(|def| c.add_definition(gallery, def).map_err(|e| e.to_string()));
            if let Err(e) = added {
                tracing::warn!("image {} left out: {e}", r.id);
            }
        }
        for r in self.store.list_resources(IMAGE_VERSION_TYPE, None).await? {
            let gallery = r.body["galleryId"].as_str().unwrap_or_default();
            let image = r.body["image"].as_str().unwrap_or_default();
            let added = serde_json::from_value::<ImageVersion>(r.body["version"].clone())
                .map_err(|e| e.to_string())
                .and_then(|v| c.add_version(gallery, image, v).map_err(|e| e.to_string()));
            if let Err(e) = added {
                tracing::warn!("image version {} left out: {e}", r.id);
            }
        }
        Ok(c)
    }

    /// Refreshes the orchestrator's catalogs from the store.
    pub async fn refresh_catalogs(&self) -> Result<(), ControlError> {
        let images = self.images().await?;
        self.orchestrator.set_catalogs(Arc::new(Catalogs {
            sizes: self.sizes.clone(),
            images,
        }));
        Ok(())
    }

    /// Runs operations: at start (resuming what a previous run left),
    /// when woken, and every second (another server's, or a lease that
    /// expired).
    pub async fn run(self: Arc<Self>) {
        loop {
            if let Err(e) = self.refresh_catalogs().await {
                tracing::warn!("control plane: catalogs: {e}");
            }
            match self.orchestrator.run_pending().await {
                Ok(0) => {}
                Ok(n) => tracing::info!("control plane: {n} operations finished"),
                Err(e) => tracing::warn!("control plane: {e}"),
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
        }
    }

    /// vCPUs in use per family in the subscription of `id` (quotas are
    /// per subscription, as in Azure): every scale set's capacity times
    /// its size's vCPUs and every VM's, `id`'s own included (validation
    /// counts only an update's growth on top of it). Summed by the store
    /// from the usage each resource's write recorded (one aggregate, no
    /// document read); a resource written before usage was recorded is
    /// counted from its document.
    pub async fn usage(&self, id: &str) -> Result<Usage, ControlError> {
        let sub = id.split('/').nth(2).unwrap_or_default();
        let (sums, unrecorded) = self
            .store
            .usage_under(
                &format!("/subscriptions/{sub}/"),
                &[SCALE_SET_TYPE, VM_TYPE],
            )
            .await?;
        let mut u = Usage::new();
        for (family, vcpus) in sums {
            u.add(&family, u32::try_from(vcpus).unwrap_or(u32::MAX));
        }
        for r in unrecorded {
            let recorded = if r.kind == SCALE_SET_TYPE {
                serde_json::from_value::<ScaleSet>(r.body)
                    .ok()
                    .and_then(|set| self.set_usage(&set))
            } else {
                serde_json::from_value::<VirtualMachine>(r.body)
                    .ok()
                    .and_then(|vm| self.vm_usage(&vm))
            };
            if let Some(x) = recorded {
                u.add(&x.family, u32::try_from(x.vcpus).unwrap_or(u32::MAX));
            }
        }
        Ok(u)
    }

    /// What a scale set uses of its family's quota: its size's vCPUs times
    /// its capacity (`None` for a size the catalog does not know).
    pub fn set_usage(&self, set: &ScaleSet) -> Option<ResourceUsage> {
        self.sizes.get(&set.sku.name).map(|size| ResourceUsage {
            family: size.family.clone(),
            vcpus: i64::from(size.vcpus.saturating_mul(set.sku.capacity)),
        })
    }

    /// What a VM uses of its family's quota: its size's vCPUs.
    pub fn vm_usage(&self, vm: &VirtualMachine) -> Option<ResourceUsage> {
        self.sizes
            .get(&vm.properties.hardware_profile.vm_size)
            .map(|size| ResourceUsage {
                family: size.family.clone(),
                vcpus: i64::from(size.vcpus),
            })
    }

    /// Writes resource `id` (of `kind`, `body`) under `pre` together with
    /// the operation that carries its change out, in one transaction (an
    /// operation already running on it refuses both: 409), and wakes the
    /// background loop; returns the new ETag and the operation's id.
    pub async fn write_with_operation(
        &self,
        id: &str,
        kind: &str,
        body: &impl serde::Serialize,
        usage: Option<ResourceUsage>,
        pre: Precondition,
        operation: Option<trustlaunch_store::NewOperation>,
    ) -> Result<(i64, Option<String>), ControlError> {
        let rid = id
            .parse::<trustlaunch_fleet::ids::ResourceId>()
            .map_err(|e| FleetError::new(ErrorCode::InvalidParameter, e.to_string()))?;
        let resource = NewResource {
            id: id.to_owned(),
            kind: kind.to_owned(),
            resource_group: rid.resource_group().to_owned(),
            name: rid.name().to_owned(),
            parent: None,
            body: serde_json::to_value(body).map_err(corrupt("resource"))?,
            usage,
        };
        let tag = self
            .store
            .put_resource_with_operation(
                &resource,
                pre,
                operation.as_ref(),
                i64::try_from(unix_now()).unwrap_or(0),
            )
            .await?;
        Ok((
            tag,
            operation.map(|o| {
                self.wake.notify_one();
                o.id
            }),
        ))
    }

    /// The VMs that joined the Flexible scale set `set_id`.
    pub async fn flexible_members(
        &self,
        set_id: &str,
    ) -> Result<Vec<VirtualMachine>, ControlError> {
        let mut out = Vec::new();
        for r in self.store.list_resources(VM_TYPE, None).await? {
            let Ok(vm) = serde_json::from_value::<VirtualMachine>(r.body) else {
                continue;
            };
            if vm
                .properties
                .virtual_machine_scale_set
                .as_ref()
                .is_some_and(|s| s.id.eq_ignore_ascii_case(set_id))
            {
                out.push(vm);
            }
        }
        Ok(out)
    }

    /// Scale set `id` and its ETag, if it exists.
    pub async fn scale_set(&self, id: &str) -> Result<Option<(ScaleSet, i64)>, ControlError> {
        self.store
            .get_resource(id)
            .await?
            .filter(|r| r.kind == SCALE_SET_TYPE)
            .map(|r| {
                Ok((
                    serde_json::from_value(r.body).map_err(corrupt("scale set"))?,
                    r.etag,
                ))
            })
            .transpose()
    }

    /// VM `id` and its ETag, if it exists.
    pub async fn vm(&self, id: &str) -> Result<Option<(VirtualMachine, i64)>, ControlError> {
        self.store
            .get_resource(id)
            .await?
            .filter(|r| r.kind == VM_TYPE)
            .map(|r| {
                Ok((
                    serde_json::from_value(r.body).map_err(corrupt("VM"))?,
                    r.etag,
                ))
            })
            .transpose()
    }

    /// Scale set `id` with its `provisioningState` (from its newest
    /// operation, read in the same query) and its ETag: what a GET shows.
    pub async fn scale_set_as_shown(
        &self,
        id: &str,
    ) -> Result<Option<(ScaleSet, i64)>, ControlError> {
        Ok(self
            .with_state::<ScaleSet>(id, SCALE_SET_TYPE)
            .await?
            .map(|(mut set, state, etag)| {
                set.properties.provisioning_state = Some(state);
                (set, etag)
            }))
    }

    /// VM `id` with its `provisioningState` and its ETag (see
    /// [`Self::scale_set_as_shown`]).
    pub async fn vm_as_shown(
        &self,
        id: &str,
    ) -> Result<Option<(VirtualMachine, i64)>, ControlError> {
        Ok(self
            .with_state::<VirtualMachine>(id, VM_TYPE)
            .await?
            .map(|(mut vm, state, etag)| {
                vm.properties.provisioning_state = Some(state);
                (vm, etag)
            }))
    }

    async fn with_state<T: serde::de::DeserializeOwned>(
        &self,
        id: &str,
        kind: &'static str,
    ) -> Result<Option<(T, ProvisioningState, i64)>, ControlError> {
        let Some((r, op)) = self
            .store
            .get_resource_with_operation(id)
            .await?
            .filter(|(r, _)| r.kind == kind)
        else {
            return Ok(None);
        };
        let value = serde_json::from_value(r.body).map_err(corrupt(kind))?;
        Ok(Some((value, provisioning_state_of(op), r.etag)))
    }

    /// Every scale set (of `resource_group`, if given), in key order. A
    /// stored set that does not read back is left out with a warning.
    pub async fn scale_sets(
        &self,
        resource_group: Option<&str>,
    ) -> Result<Vec<ScaleSet>, ControlError> {
        self.all(SCALE_SET_TYPE, resource_group).await
    }

    /// Every VM (of `resource_group`, if given), in key order. A stored VM
    /// that does not read back is left out with a warning.
    pub async fn vms(
        &self,
        resource_group: Option<&str>,
    ) -> Result<Vec<VirtualMachine>, ControlError> {
        self.all(VM_TYPE, resource_group).await
    }

    async fn all<T: serde::de::DeserializeOwned>(
        &self,
        kind: &str,
        resource_group: Option<&str>,
    ) -> Result<Vec<T>, ControlError> {
        Ok(self
            .store
            .list_resources(kind, resource_group)
            .await?
            .into_iter()
            .filter_map(|r| match serde_json::from_value(r.body) {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::warn!("{kind} {} left out: {e}", r.id);
                    None
                }
            })
            .collect())
    }
}

/// `provisioningState` from the summary of a resource's newest operation
/// (`Store::latest_operation_summary`): `Creating` while its first runs,
/// `Updating` while a later one runs (`Deleting` for a VM's delete), else
/// that operation's outcome; `Succeeded` when it never had one.
pub fn provisioning_state_of(summary: Option<(String, OperationStatus, i64)>) -> ProvisioningState {
    match summary {
        None => ProvisioningState::Succeeded,
        Some((kind, OperationStatus::InProgress, _)) if kind == crate::vm_ops::VM_DELETE => {
            ProvisioningState::Deleting
        }
        Some((_, OperationStatus::InProgress, 1)) => ProvisioningState::Creating,
        Some((_, OperationStatus::InProgress, _)) => ProvisioningState::Updating,
        Some((_, OperationStatus::Succeeded, _)) => ProvisioningState::Succeeded,
        Some((_, OperationStatus::Failed, _)) => ProvisioningState::Failed,
        Some((_, OperationStatus::Canceled, _)) => ProvisioningState::Canceled,
    }
}

/// A scale set's PUT (`az vmss create|update`, the SDKs'
/// `begin_create_or_update`), typed: the HTTP layer has parsed the body,
/// named the resource and read the headers.
#[derive(Debug, Clone)]
pub struct PutScaleSet {
    /// Its resource id.
    pub id: String,
    /// The requested resource (its name and id the URL's).
    pub set: ScaleSet,
    /// `If-Match` / `If-None-Match`.
    pub precondition: Precondition,
    /// What the caller accepted (a new image's OS disks).
    pub confirmations: Confirmations,
    /// The id the operation gets, if the change needs one.
    pub operation_id: String,
}

/// A VM's PUT (`az vm create|update`), typed.
#[derive(Debug, Clone)]
pub struct PutVm {
    /// Its resource id.
    pub id: String,
    /// The requested resource (its name and id the URL's).
    pub vm: VirtualMachine,
    /// `If-Match` / `If-None-Match`.
    pub precondition: Precondition,
    /// What the caller accepted.
    pub confirmations: Confirmations,
    /// The id the operation gets, if the change needs one.
    pub operation_id: String,
}

/// What a PUT wrote.
#[derive(Debug, Clone)]
pub struct Written<T> {
    /// The resource as stored (its `provisioningState` set).
    pub resource: T,
    /// Its new ETag.
    pub etag: i64,
    /// It was created (201), not updated (200).
    pub created: bool,
    /// The operation that carries the change out, if it needs one.
    pub operation: Option<String>,
    /// Azure's warnings (e.g. Secure Boot left off).
    pub warnings: Vec<String>,
}

impl ControlPlane {
    /// Creates or updates a scale set: validated by Azure's rules (the
    /// fleet crate), a new one given its runtime name, the operation its
    /// change needs chosen by the fleet's rule and planned, and both
    /// written in one transaction (an operation already running on the
    /// set refuses both).
    pub async fn put_scale_set(&self, cmd: PutScaleSet) -> Result<Written<ScaleSet>, ControlError> {
        let PutScaleSet {
            id,
            set: requested,
            precondition,
            confirmations,
            operation_id,
        } = cmd;
        let old = self.scale_set(&id).await?.map(|(s, _)| s);
        let images = self.images().await?;
        let usage = self.usage(&id).await?;
        let ctx = Context {
            images: &images,
            sizes: &self.sizes,
            quotas: &self.quotas,
            usage: &usage,
        };
        let v = match &old {
            None => {
                crate::orchestrator::check_host_name(&requested.name, true)?;
                validate_scale_set_create(&ctx, &requested)?
            }
            Some(o) => validate_scale_set_update(&ctx, o, &requested, confirmations)?,
        };
        let mut set = v.resource;
        if old.is_none() {
            if set.properties.model_version == 0 {
                set.properties.model_version = 1;
            }
            set.properties.runtime_name = Some(self.free_set_runtime_name(&set.name, &id).await?);
        }
        let warnings: Vec<String> = v.warnings.iter().map(|w| w.message.clone()).collect();
        // What the change needs run (the fleet's rule). Planning reserves
        // new instance ids in the set, so it comes before the write.
        let operation = match trustlaunch_fleet::operation::for_set_change(old.as_ref(), &set) {
            None => None,
            Some(SetOperation::Reconcile) => Some(
                self.orchestrator
                    .plan_reconcile(&id, &mut set, &operation_id, false)
                    .await?,
            ),
            Some(SetOperation::RollingUpgrade) => Some(
                self.orchestrator
                    .plan_rolling_upgrade(&id, &mut set, &operation_id, old.clone())
                    .await?,
            ),
            Some(SetOperation::UpgradeAll) => {
                let all: Vec<String> = self
                    .store
                    .child_ids(&id)
                    .await?
                    .iter()
                    .filter_map(|rid| rid.rsplit('/').next().map(str::to_owned))
                    .collect();
                Some(
                    self.orchestrator
                        .plan_manual_upgrade(&id, &mut set, &operation_id, &all)
                        .await?,
                )
            }
        };
        let usage = self.set_usage(&set);
        let (etag, op) = self
            .write_with_operation(&id, SCALE_SET_TYPE, &set, usage, precondition, operation)
            .await?;
        set.properties.provisioning_state = Some(match (&op, &old) {
            (Some(_), None) => ProvisioningState::Creating,
            (Some(_), Some(_)) => ProvisioningState::Updating,
            (None, _) => provisioning_state_of(self.store.latest_operation_summary(&id).await?),
        });
        Ok(Written {
            resource: set,
            etag,
            created: old.is_none(),
            operation: op,
            warnings,
        })
    }

    /// Creates or updates a VM: a new one checked (its runtime name free,
    /// the Flexible set it joins), validated by Azure's rules (new
    /// eligible Gen2 VMs default to Trusted Launch), and a changed model
    /// written with the operation that applies it.
    pub async fn put_vm(&self, cmd: PutVm) -> Result<Written<VirtualMachine>, ControlError> {
        let PutVm {
            id,
            vm: requested,
            precondition,
            confirmations,
            operation_id,
        } = cmd;
        let old = self.vm(&id).await?.map(|(v, _)| v);
        let runtime_name = match &old {
            None => Some(self.check_new_vm(&requested, &id).await?),
            Some(_) => None,
        };
        let images = self.images().await?;
        let usage = self.usage(&id).await?;
        let ctx = Context {
            images: &images,
            sizes: &self.sizes,
            quotas: &self.quotas,
            usage: &usage,
        };
        let v = match &old {
            None => validate_vm_create(&ctx, &requested)?,
            Some(o) => validate_vm_update(&ctx, o, &requested, confirmations)?,
        };
        let mut vm = v.resource;
        if runtime_name.is_some() {
            vm.properties.runtime_name = runtime_name;
        }
        let warnings: Vec<String> = v.warnings.iter().map(|w| w.message.clone()).collect();
        let changed = old
            .as_ref()
            .is_none_or(|o| o.properties.model_version != vm.properties.model_version);
        let operation = if changed {
            Some(
                self.orchestrator
                    .plan_vm_apply(&id, vm.clone(), &operation_id)?,
            )
        } else {
            None
        };
        let usage = self.vm_usage(&vm);
        let (etag, op) = self
            .write_with_operation(&id, VM_TYPE, &vm, usage, precondition, operation)
            .await?;
        Ok(Written {
            resource: vm,
            etag,
            created: old.is_none(),
            operation: op,
            warnings,
        })
    }

    /// The runtime name a new scale set gets ([`new_runtime_name`]),
    /// refused (409) in the rare case that another set has it or the host
    /// runs VMs under it: instance names are never shared.
    async fn free_set_runtime_name(&self, name: &str, id: &str) -> Result<String, ControlError> {
        let given = new_runtime_name(name, id);
        let taken_by_set = self
            .scale_sets(None)
            .await?
            .iter()
            .any(|other| set_runtime_name(other) == given);
        let prefix = format!("{given}-");
        let taken_on_host = self
            .orchestrator
            .driver()
            .list()
            .await?
            .iter()
            .any(|st| st.spec.name.starts_with(&prefix));
        if taken_by_set || taken_on_host {
            return Err(FleetError::new(
                ErrorCode::Conflict,
                format!(
                    "The scale set's instances would be named '{given}-N' on this host, which another scale set's instances use. Choose another name."
                ),
            )
            .at("name")
            .into());
        }
        Ok(given)
    }

    /// What only a new VM is checked for: the runtime name it gets
    /// ([`new_runtime_name`]) is free on the host and among the VMs, and
    /// the scale set it joins exists and is Flexible. Returns the runtime
    /// name.
    async fn check_new_vm(&self, vm: &VirtualMachine, id: &str) -> Result<String, ControlError> {
        crate::orchestrator::check_host_name(&vm.name, false)?;
        let name = new_runtime_name(&vm.name, id);
        let taken_by_vm = self
            .vms(None)
            .await?
            .iter()
            .any(|other| vm_runtime_name(other) == name);
        if taken_by_vm || self.orchestrator.driver().status(&name).await?.is_some() {
            return Err(FleetError::new(
                ErrorCode::Conflict,
                format!(
                    "The VM name '{}' maps to the host name '{name}', which another VM or scale set instance uses.",
                    vm.name
                ),
            )
            .at("name")
            .into());
        }
        let Some(set_ref) = &vm.properties.virtual_machine_scale_set else {
            return Ok(name);
        };
        let at = "properties.virtualMachineScaleSet.id";
        let set_id: trustlaunch_fleet::ids::ResourceId = set_ref
            .id
            .parse()
            .map_err(|e| FleetError::new(ErrorCode::InvalidParameter, format!("{e}")).at(at))?;
        let Some((set, _)) = self.scale_set(&set_id.to_string()).await? else {
            return Err(FleetError::new(
                ErrorCode::ResourceNotFound,
                format!("The scale set '{}' was not found.", set_ref.id),
            )
            .at(at)
            .into());
        };
        if set.properties.orchestration_mode != OrchestrationMode::Flexible {
            return Err(FleetError::new(
                ErrorCode::OperationNotAllowed,
                format!(
                    "The VM cannot join the scale set '{}': only a scale set in Flexible orchestration mode takes VMs; '{}' is Uniform.",
                    set.name, set.name
                ),
            )
            .at(at)
            .into());
        }
        Ok(name)
    }
}
