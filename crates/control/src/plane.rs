//! The control plane as an application service, beneath the HTTP layer:
//! the store's resources as typed values (a repository of scale sets and
//! VMs), the gallery catalog, quotas and usage, the writes that commit a
//! model change with the operation that carries it out, and the loop that
//! runs operations. The server's handlers translate requests to these
//! calls and their results to ARM's answers; the CLI's and the portal's
//! paths are the same calls.

use std::sync::Arc;

use trustlaunch_fleet::image::{ImageCatalog, ImageDefinition, ImageVersion};
use trustlaunch_fleet::resources::{ScaleSet, VirtualMachine, SCALE_SET_TYPE, VM_TYPE};
use trustlaunch_fleet::sizes::{Quotas, SizeCatalog, Usage};
use trustlaunch_fleet::{ErrorCode, FleetError};
use trustlaunch_store::{NewResource, Precondition, ResourceUsage, Store};

use crate::orchestrator::{corrupt, Catalogs, ControlError, Orchestrator};
use crate::AnyDriver;

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

    /// Every scale set (of `resource_group`, if given), in key order. A
    /// stored set that does not read back is left out with a warning.
    pub async fn scale_sets(
        &self,
        resource_group: Option<&str>,
    ) -> Result<Vec<ScaleSet>, ControlError> {
        Ok(self
            .store
            .list_resources(SCALE_SET_TYPE, resource_group)
            .await?
            .into_iter()
            .filter_map(|r| match serde_json::from_value(r.body) {
                Ok(set) => Some(set),
                Err(e) => {
                    tracing::warn!("scale set {} left out: {e}", r.id);
                    None
                }
            })
            .collect())
    }

    /// Every VM (of `resource_group`, if given), in key order. A stored VM
    /// that does not read back is left out with a warning.
    pub async fn vms(
        &self,
        resource_group: Option<&str>,
    ) -> Result<Vec<VirtualMachine>, ControlError> {
        Ok(self
            .store
            .list_resources(VM_TYPE, resource_group)
            .await?
            .into_iter()
            .filter_map(|r| match serde_json::from_value(r.body) {
                Ok(vm) => Some(vm),
                Err(e) => {
                    tracing::warn!("VM {} left out: {e}", r.id);
                    None
                }
            })
            .collect())
    }
}
