//! `trustlaunch vmss ...`, `trustlaunch vm ...` and `trustlaunch image
//! definition|version create`: the control plane, talking to a running
//! `trustlaunch server`, with az's verbs and flags where they exist. A
//! command that starts an operation follows it until it ends (a progress
//! bar on a terminal, progress lines elsewhere), unless `--no-wait`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

use crate::client::{enc, print_json, Conn};
use crate::progress::{Counts, Reporter};

/// Where a resource lives (az's `--subscription`, `--resource-group`).
#[derive(Args, Clone)]
pub struct Scope {
    /// Subscription (one per deployment is enough here).
    #[arg(long, default_value = "local", global = true)]
    subscription: String,
    /// Resource group.
    #[arg(long, short = 'g', global = true)]
    resource_group: Option<String>,
}

impl Scope {
    fn provider(&self) -> Result<String> {
        let rg = self
            .resource_group
            .as_deref()
            .context("--resource-group (-g) is required")?;
        Ok(format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute",
            enc(&self.subscription),
            enc(rg)
        ))
    }
}

#[derive(Clone, Copy, ValueEnum)]
#[value(rename_all = "verbatim")]
enum SecurityTypeArg {
    Standard,
    TrustedLaunch,
}

/// `--orchestration-mode`.
#[derive(Clone, Copy, ValueEnum)]
#[value(rename_all = "verbatim")]
pub enum OrchestrationArg {
    /// Instances stamped from the model.
    Uniform,
    /// VMs may also join the set.
    Flexible,
}

#[derive(Clone, Copy, ValueEnum)]
#[value(rename_all = "verbatim")]
enum ModeArg {
    Manual,
    Automatic,
    Rolling,
}

/// The flags that shape an instance's model, for VMs and scale sets:
/// image, security profile, data disks, guest attestation.
#[derive(Args, Clone, Default)]
pub struct ProfileArgs {
    /// The gallery image version id (az's `--image`).
    #[arg(long)]
    image: Option<String>,
    /// Standard or TrustedLaunch (Standard drops uefiSettings).
    #[arg(long, value_enum)]
    security_type: Option<SecurityTypeArg>,
    /// Secure Boot on or off (TrustedLaunch).
    #[arg(long)]
    enable_secure_boot: Option<bool>,
    /// vTPM on or off (TrustedLaunch).
    #[arg(long)]
    enable_vtpm: Option<bool>,
    /// Data disk sizes in GiB, one per disk (LUNs 0, 1, ...).
    #[arg(long, num_args = 1..)]
    data_disk_sizes_gb: Option<Vec<u32>>,
    /// Add the Guest Attestation extension (needs Secure Boot and vTPM).
    #[arg(long, conflicts_with = "disable_guest_attestation")]
    enable_guest_attestation: bool,
    /// Remove the Guest Attestation extension (before a rollback to
    /// Standard).
    #[arg(long)]
    disable_guest_attestation: bool,
    /// The NIC on the host bridge NAME (a virtual network of that name);
    /// without it a new instance's NIC is on the host's user-mode network
    /// (SSH through a port on 127.0.0.1).
    #[arg(long, value_name = "NAME", conflicts_with = "no_nic")]
    vnet_name: Option<String>,
    /// No NIC at all.
    #[arg(long)]
    no_nic: bool,
    /// OpenSSH public key files root may log in with (osProfile).
    #[arg(long, num_args = 1.., value_name = "FILE")]
    ssh_key_values: Option<Vec<std::path::PathBuf>>,
    /// The administrator's name (osProfile.adminUsername).
    #[arg(long)]
    admin_username: Option<String>,
    /// A VM's host name (osProfile.computerName).
    #[arg(long)]
    computer_name: Option<String>,
    /// A scale set's host name prefix (osProfile.computerNamePrefix).
    #[arg(long)]
    computer_name_prefix: Option<String>,
}

impl ProfileArgs {
    /// The NIC a new instance gets: on the user-mode network unless told
    /// otherwise (as az gives every new VM a NIC).
    fn default_nic(&self, profile: &mut Value) {
        if self.vnet_name.is_none() && !self.no_nic && profile["networkProfile"].is_null() {
            profile["networkProfile"] = json!({"networkInterfaceConfigurations": [
                {"name": "nic0", "properties": {"primary": true,
                    "ipConfigurations": [{"name": "ipconfig0"}]}}]});
        }
    }

    /// Applies the NIC and OS flags given to a model (`profile`).
    fn apply_network_and_os(&self, profile: &mut Value) -> Result<()> {
        if let Some(vnet) = &self.vnet_name {
            profile["networkProfile"] = json!({"networkInterfaceConfigurations": [
            {"name": "nic0", "properties": {"primary": true,
                "ipConfigurations": [{"name": "ipconfig0", "properties": {"subnet": {"id": format!(
                    "/subscriptions/local/resourceGroups/host/providers/Microsoft.Network/virtualNetworks/{vnet}/subnets/default"
                )}}}]}}]});
        }
        if self.no_nic {
            if let Some(o) = profile.as_object_mut() {
                o.remove("networkProfile");
            }
        }
        let os = &mut profile["osProfile"];
        if let Some(files) = &self.ssh_key_values {
            let mut keys = Vec::new();
            for f in files {
                let text = String::from_utf8(crate::input::read_bounded(f)?)
                    .with_context(|| format!("{}: not text", f.display()))?;
                keys.push(json!({"path": "/root/.ssh/authorized_keys", "keyData": text.trim()}));
            }
            os["linuxConfiguration"]["disablePasswordAuthentication"] = json!(true);
            os["linuxConfiguration"]["ssh"]["publicKeys"] = json!(keys);
        }
        if let Some(u) = &self.admin_username {
            os["adminUsername"] = json!(u);
        }
        if let Some(n) = &self.computer_name {
            os["computerName"] = json!(n);
        }
        if let Some(n) = &self.computer_name_prefix {
            os["computerNamePrefix"] = json!(n);
        }
        if os.is_null() {
            if let Some(o) = profile.as_object_mut() {
                o.remove("osProfile");
            }
        }
        Ok(())
    }

    /// Applies the flags given to a model's `storageProfile` and
    /// `securityProfile` (both in `profile`).
    fn apply_profile(&self, profile: &mut Value) {
        if let Some(i) = &self.image {
            profile["storageProfile"]["imageReference"] = json!({"id": i});
        }
        let sp = &mut profile["securityProfile"];
        match self.security_type {
            Some(SecurityTypeArg::Standard) => {
                *sp = json!({"securityType": "Standard", "uefiSettings": null});
            }
            Some(SecurityTypeArg::TrustedLaunch) => sp["securityType"] = json!("TrustedLaunch"),
            None => {}
        }
        if let Some(b) = self.enable_secure_boot {
            sp["uefiSettings"]["secureBootEnabled"] = json!(b);
        }
        if let Some(b) = self.enable_vtpm {
            sp["uefiSettings"]["vTpmEnabled"] = json!(b);
        }
        if sp.is_null() {
            profile.as_object_mut().map(|o| o.remove("securityProfile"));
        }
        if let Some(sizes) = &self.data_disk_sizes_gb {
            let disks: Vec<Value> = sizes
                .iter()
                .enumerate()
                .map(|(lun, gb)| json!({"lun": lun, "diskSizeGB": gb, "createOption": "Empty"}))
                .collect();
            profile["storageProfile"]["dataDisks"] = json!(disks);
        }
    }

    fn touches_extensions(&self) -> bool {
        self.enable_guest_attestation || self.disable_guest_attestation
    }

    /// Adds or removes the Guest Attestation extension in `list` (a
    /// JSON array, or null).
    fn apply_extensions(&self, list: &mut Value) {
        if self.disable_guest_attestation {
            if let Some(a) = list.as_array_mut() {
                a.retain(|e| e["properties"]["type"] != "GuestAttestation");
            }
        }
        if self.enable_guest_attestation {
            let ext = json!({"name": "GuestAttestation", "properties": {
                "publisher": "Microsoft.Azure.Security.LinuxAttestation",
                "type": "GuestAttestation", "typeHandlerVersion": "1.0",
                "autoUpgradeMinorVersion": true}});
            if !list.as_array().is_some_and(|a| {
                a.iter()
                    .any(|e| e["properties"]["type"] == "GuestAttestation")
            }) {
                match list.as_array_mut() {
                    Some(a) => a.push(ext),
                    None => *list = json!([ext]),
                }
            }
        }
    }
}

/// The flags of `vmss create` and `update` that shape the model.
#[derive(Args, Clone, Default)]
pub struct ModelArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// The size (az's `--vm-sku`), e.g. Standard_D2s_v3.
    #[arg(long)]
    vm_sku: Option<String>,
    /// Number of instances.
    #[arg(long)]
    instance_count: Option<u32>,
    /// Manual, Automatic or Rolling.
    #[arg(long, value_enum)]
    upgrade_policy_mode: Option<ModeArg>,
    /// Rolling: most instances per batch, percent.
    #[arg(long)]
    max_batch_instance_percent: Option<u32>,
    /// Rolling: most unhealthy instances before a batch, percent.
    #[arg(long)]
    max_unhealthy_instance_percent: Option<u32>,
    /// Rolling: most unhealthy upgraded instances, percent.
    #[arg(long)]
    max_unhealthy_upgraded_instance_percent: Option<u32>,
    /// Rolling: pause between batches, ISO 8601 (PT30S).
    #[arg(long)]
    pause_time_between_batches: Option<String>,
    /// Rolling: unhealthy instances first.
    #[arg(long)]
    prioritize_unhealthy_instances: Option<bool>,
    /// Rolling: create replacements before deleting old instances.
    #[arg(long)]
    max_surge: Option<bool>,
    /// Rolling: roll back failed instances when the policy is breached.
    #[arg(long)]
    rollback_failed_instances_on_policy_breach: Option<bool>,
}

impl ModelArgs {
    /// Applies the flags given to a scale set document.
    fn apply(&self, set: &mut Value) -> Result<()> {
        if let Some(s) = &self.vm_sku {
            set["sku"]["name"] = json!(s);
        }
        if let Some(n) = self.instance_count {
            set["sku"]["capacity"] = json!(n);
        }
        let props = &mut set["properties"];
        let profile = &mut props["virtualMachineProfile"];
        self.profile.apply_profile(profile);
        self.profile.apply_network_and_os(profile)?;
        if self.profile.touches_extensions() {
            self.profile
                .apply_extensions(&mut profile["extensionProfile"]["extensions"]);
        }
        if let Some(m) = self.upgrade_policy_mode {
            props["upgradePolicy"]["mode"] = json!(match m {
                ModeArg::Manual => "Manual",
                ModeArg::Automatic => "Automatic",
                ModeArg::Rolling => "Rolling",
            });
        }
        let r = &mut props["upgradePolicy"]["rollingUpgradePolicy"];
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                r[k] = v;
            }
        };
        put(
            "maxBatchInstancePercent",
            self.max_batch_instance_percent.map(|v| json!(v)),
        );
        put(
            "maxUnhealthyInstancePercent",
            self.max_unhealthy_instance_percent.map(|v| json!(v)),
        );
        put(
            "maxUnhealthyUpgradedInstancePercent",
            self.max_unhealthy_upgraded_instance_percent
                .map(|v| json!(v)),
        );
        put(
            "pauseTimeBetweenBatches",
            self.pause_time_between_batches.clone().map(|v| json!(v)),
        );
        put(
            "prioritizeUnhealthyInstances",
            self.prioritize_unhealthy_instances.map(|v| json!(v)),
        );
        put("maxSurge", self.max_surge.map(|v| json!(v)));
        put(
            "rollbackFailedInstancesOnPolicyBreach",
            self.rollback_failed_instances_on_policy_breach
                .map(|v| json!(v)),
        );
        if props["upgradePolicy"]["rollingUpgradePolicy"].is_null() {
            props["upgradePolicy"]
                .as_object_mut()
                .map(|o| o.remove("rollingUpgradePolicy"));
        }
        Ok(())
    }
}

/// The flags of `vm create` and `update` that shape the model.
#[derive(Args, Clone, Default)]
pub struct VmArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// The size (az's `--size`), e.g. Standard_D2s_v5.
    #[arg(long)]
    size: Option<String>,
}

impl VmArgs {
    /// Applies the flags given to a VM document.
    fn apply(&self, vm: &mut Value) -> Result<()> {
        if let Some(s) = &self.size {
            vm["properties"]["hardwareProfile"]["vmSize"] = json!(s);
        }
        self.profile.apply_profile(&mut vm["properties"]);
        self.profile.apply_network_and_os(&mut vm["properties"])?;
        if self.profile.touches_extensions() {
            self.profile.apply_extensions(&mut vm["resources"]);
        }
        Ok(())
    }
}

/// `trustlaunch vmss ...`
#[derive(Subcommand)]
pub enum VmssCommand {
    /// Create a scale set (new eligible Gen2 sets default to TrustedLaunch
    /// with Secure Boot and vTPM on; --security-type Standard opts out).
    Create {
        /// Name.
        #[arg(long, short = 'n')]
        name: String,
        #[command(flatten)]
        model: ModelArgs,
        /// Uniform (instances stamped from the model) or Flexible (VMs
        /// may also join it).
        #[arg(long, value_enum, default_value = "Uniform")]
        orchestration_mode: OrchestrationArg,
        /// Return once accepted, without following the operation.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        scope: Scope,
        #[command(flatten)]
        conn: Conn,
    },
    /// Change a scale set's model, size, capacity or upgrade policy (read,
    /// change, write with If-Match: a concurrent change fails with 412).
    Update {
        /// Name.
        #[arg(long, short = 'n')]
        name: String,
        #[command(flatten)]
        model: ModelArgs,
        /// Accept that a new image re-creates every instance's OS disk
        /// (what was written to it is lost; data disks are kept).
        #[arg(long)]
        yes: bool,
        /// Return once accepted.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        scope: Scope,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show a scale set: its security profile, policy and each instance's
    /// model state and health.
    Show {
        /// Name.
        #[arg(long, short = 'n')]
        name: String,
        #[command(flatten)]
        scope: Scope,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete a scale set and its instances.
    Delete {
        /// Name.
        #[arg(long, short = 'n')]
        name: String,
        /// Return once accepted.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        scope: Scope,
        #[command(flatten)]
        conn: Conn,
    },
    /// The resource group's scale sets: size, capacity, security type,
    /// provisioning state.
    List {
        #[command(flatten)]
        scope: Scope,
        #[command(flatten)]
        conn: Conn,
    },
    /// The instances: model version, latestModelApplied, power, health.
    ListInstances {
        /// Name.
        #[arg(long, short = 'n')]
        name: String,
        #[command(flatten)]
        scope: Scope,
        #[command(flatten)]
        conn: Conn,
    },
    /// Upgrade instances to the latest model (Manual mode).
    UpdateInstances {
        /// Name.
        #[arg(long, short = 'n')]
        name: String,
        /// Instance ids, or `*` for all.
        #[arg(long, num_args = 1.., required = true)]
        instance_ids: Vec<String>,
        /// Return once accepted.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        scope: Scope,
        #[command(flatten)]
        conn: Conn,
    },
    /// Rolling upgrades: start, get-latest, cancel.
    #[command(subcommand)]
    RollingUpgrade(RollingCommand),
    /// Start instances (ends when they are healthy).
    Start(SetActionArgs),
    /// Stop instances, keeping their resources (powerOff).
    Stop(SetActionArgs),
    /// Stop instances and release their resources.
    Deallocate(SetActionArgs),
    /// Restart instances.
    Restart(SetActionArgs),
    /// Re-create instances' OS disks from the image (data disks kept).
    Reimage(SetActionArgs),
}

/// `trustlaunch vmss rolling-upgrade ...`
#[derive(Subcommand)]
pub enum RollingCommand {
    /// Start a rolling upgrade to the latest model.
    Start {
        /// Name.
        #[arg(long, short = 'n')]
        name: String,
        /// Return once accepted.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        scope: Scope,
        #[command(flatten)]
        conn: Conn,
    },
    /// The latest rolling upgrade: running status, progress, error.
    GetLatest {
        /// Name.
        #[arg(long, short = 'n')]
        name: String,
        #[command(flatten)]
        scope: Scope,
        #[command(flatten)]
        conn: Conn,
    },
    /// Cancel the running rolling upgrade (the batch in flight finishes).
    Cancel {
        /// Name.
        #[arg(long, short = 'n')]
        name: String,
        #[command(flatten)]
        scope: Scope,
        #[command(flatten)]
        conn: Conn,
    },
}

/// A power action's flags on a scale set.
#[derive(Args)]
pub struct SetActionArgs {
    /// Name.
    #[arg(long, short = 'n')]
    name: String,
    /// Instance ids (default: every instance).
    #[arg(long, num_args = 1..)]
    instance_ids: Vec<String>,
    /// Return once accepted.
    #[arg(long)]
    no_wait: bool,
    #[command(flatten)]
    scope: Scope,
    #[command(flatten)]
    conn: Conn,
}

/// A power action's flags on a VM.
#[derive(Args)]
pub struct VmActionArgs {
    /// Name.
    #[arg(long, short = 'n')]
    name: String,
    /// Return once accepted.
    #[arg(long)]
    no_wait: bool,
    #[command(flatten)]
    scope: Scope,
    #[command(flatten)]
    conn: Conn,
}

/// `trustlaunch vm ...`: single VMs and sizes.
#[derive(Subcommand)]
pub enum VmCommand {
    /// Create a VM (an eligible Gen2 VM defaults to TrustedLaunch with
    /// Secure Boot and vTPM on; --security-type Standard opts out); it
    /// ends when the VM runs healthy.
    Create {
        /// Name.
        #[arg(long, short = 'n')]
        name: String,
        #[command(flatten)]
        model: VmArgs,
        /// The Flexible scale set the VM joins (its name).
        #[arg(long)]
        vmss: Option<String>,
        /// Return once accepted.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        scope: Scope,
        #[command(flatten)]
        conn: Conn,
    },
    /// Change a VM's size, image, security profile or extensions (read,
    /// change, write with If-Match).
    Update {
        /// Name.
        #[arg(long, short = 'n')]
        name: String,
        #[command(flatten)]
        model: VmArgs,
        /// Accept that a new image re-creates the OS disk (what was written
        /// to it is lost; data disks are kept).
        #[arg(long)]
        yes: bool,
        /// Return once accepted.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        scope: Scope,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show a VM with its power state, health and model version.
    Show {
        /// Name.
        #[arg(long, short = 'n')]
        name: String,
        #[command(flatten)]
        scope: Scope,
        #[command(flatten)]
        conn: Conn,
    },
    /// The resource group's VMs.
    List {
        #[command(flatten)]
        scope: Scope,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete a VM, its disks and its vTPM.
    Delete(VmActionArgs),
    /// Start a VM (ends when it is healthy).
    Start(VmActionArgs),
    /// Stop a VM, keeping its resources (powerOff).
    Stop(VmActionArgs),
    /// Stop a VM and release its resources.
    Deallocate(VmActionArgs),
    /// Restart a VM.
    Restart(VmActionArgs),
    /// Re-create a VM's OS disk from its image (data disks are kept).
    Reimage(VmActionArgs),
    /// The sizes: vCPUs, memory, family, Trusted Launch support.
    ListSkus {
        /// Subscription.
        #[arg(long, default_value = "local")]
        subscription: String,
        #[command(flatten)]
        conn: Conn,
    },
}

/// `trustlaunch image definition|version create` (gallery images).
#[derive(Subcommand)]
pub enum GalleryCommand {
    /// Create a gallery image definition (az sig image-definition create).
    Create {
        /// Gallery.
        #[arg(long)]
        gallery_name: String,
        /// Image definition name.
        #[arg(long)]
        gallery_image_definition: String,
        /// Linux or Windows.
        #[arg(long, default_value = "Linux")]
        os_type: String,
        /// V1 or V2.
        #[arg(long, default_value = "V2")]
        hyper_v_generation: String,
        /// Features, e.g. SecurityType=TrustedLaunchSupported.
        #[arg(long, num_args = 0..)]
        features: Vec<String>,
        /// Publisher.
        #[arg(long, default_value = "trustlaunch")]
        publisher: String,
        /// Offer.
        #[arg(long, default_value = "images")]
        offer: String,
        /// SKU.
        #[arg(long, default_value = "1")]
        sku: String,
        #[command(flatten)]
        scope: Scope,
        #[command(flatten)]
        conn: Conn,
    },
}

/// `trustlaunch image version create`.
#[derive(Subcommand)]
pub enum VersionCommand {
    /// Publish an image directory the runtime built as a version.
    Create {
        /// Gallery.
        #[arg(long)]
        gallery_name: String,
        /// Image definition name.
        #[arg(long)]
        gallery_image_definition: String,
        /// Version, e.g. 1.0.0.
        #[arg(long)]
        gallery_image_version: String,
        /// The image directory (`trustlaunch image build`'s output).
        #[arg(long)]
        source: std::path::PathBuf,
        #[command(flatten)]
        scope: Scope,
        #[command(flatten)]
        conn: Conn,
    },
}

fn warn(h: &reqwest::header::HeaderMap) {
    for w in h.get_all("warning") {
        if let Ok(t) = w.to_str() {
            let text = t.strip_prefix("299 - ").unwrap_or(t).trim_matches('"');
            eprintln!("warning: {text}");
        }
    }
}

/// Follows an operation to its end with its progress on stderr (a bar on
/// a terminal, lines elsewhere); returns it (an error if it did not
/// succeed).
fn follow(conn: &Conn, h: &reqwest::header::HeaderMap, no_wait: bool) -> Result<Option<Value>> {
    let Some(url) = h.get("azure-asyncoperation").and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    if no_wait {
        eprintln!("accepted: operation {url}");
        return Ok(None);
    }
    let mut progress = Reporter::stderr();
    loop {
        let op = conn.get(url)?;
        let p = &op["properties"]["progress"];
        let n = |k: &str| p[k].as_u64().unwrap_or(0);
        let counts = if p.get("successfulInstanceCount").is_some() {
            Counts {
                done: n("successfulInstanceCount"),
                failed: n("failedInstanceCount"),
                total: n("successfulInstanceCount")
                    .saturating_add(n("failedInstanceCount"))
                    .saturating_add(n("inProgressInstanceCount"))
                    .saturating_add(n("pendingInstanceCount")),
            }
        } else {
            Counts {
                done: n("succeeded"),
                failed: n("failed"),
                total: n("total"),
            }
        };
        progress.counts(op["status"].as_str().unwrap_or("?"), counts);
        if op["status"] != "InProgress" {
            progress.finish();
            if op["status"] != "Succeeded" {
                let msg = op["error"]["message"].as_str().unwrap_or("(no message)");
                bail!(
                    "operation {} {}: {msg}",
                    op["name"].as_str().unwrap_or("?"),
                    op["status"].as_str().unwrap_or("?")
                );
            }
            return Ok(Some(op));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn show_set(conn: &Conn, path: &str) -> Result<()> {
    let set = conn.get(path)?;
    let inst = conn.get_all(&format!("{path}/virtualMachines"))?;
    if conn.json() {
        print_json(&json!({"scaleSet": set, "instances": inst["value"]}));
        return Ok(());
    }
    let p = &set["properties"];
    let sp = &p["virtualMachineProfile"]["securityProfile"];
    println!("name:            {}", set["name"].as_str().unwrap_or(""));
    println!(
        "size:            {} x {}",
        set["sku"]["capacity"],
        set["sku"]["name"].as_str().unwrap_or("")
    );
    println!(
        "image:           {}",
        p["virtualMachineProfile"]["storageProfile"]["imageReference"]["id"]
            .as_str()
            .unwrap_or("")
    );
    println!(
        "security type:   {}",
        sp["securityType"].as_str().unwrap_or("Standard")
    );
    if let Some(u) = sp.get("uefiSettings").filter(|u| !u.is_null()) {
        println!(
            "secure boot:     {}\nvTPM:            {}",
            u["secureBootEnabled"], u["vTpmEnabled"]
        );
    }
    println!(
        "upgrade policy:  {}",
        p["upgradePolicy"]["mode"].as_str().unwrap_or("Manual")
    );
    println!("model version:   {}", p["modelVersion"]);
    println!("instances:");
    for i in inst["value"].as_array().into_iter().flatten() {
        let q = &i["properties"];
        println!(
            "  {:<4} latestModelApplied={:<5} model={:<3} {:<20} {:<9} {}",
            i["instanceId"].as_str().unwrap_or(""),
            q["latestModelApplied"],
            q["modelVersion"],
            q["powerState"].as_str().unwrap_or(""),
            q["health"].as_str().unwrap_or(""),
            q["runtimeName"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// Runs `trustlaunch vmss ...`.
pub fn vmss(cmd: VmssCommand) -> Result<ExitCode> {
    use reqwest::Method;
    match cmd {
        VmssCommand::Create {
            name,
            model,
            orchestration_mode,
            no_wait,
            scope,
            conn,
        } => {
            let path = format!(
                "{}/virtualMachineScaleSets/{}",
                scope.provider()?,
                enc(&name)
            );
            let mut set = json!({"location": "local", "sku": {"name": "Standard_D2s_v3", "capacity": 2},
                "properties": {"orchestrationMode": "Uniform", "upgradePolicy": {"mode": "Manual"},
                "virtualMachineProfile": {"storageProfile": {}}}});
            if model.profile.image.is_none() {
                bail!("--image (a gallery image version id) is required");
            }
            set["properties"]["orchestrationMode"] = json!(match orchestration_mode {
                OrchestrationArg::Uniform => "Uniform",
                OrchestrationArg::Flexible => "Flexible",
            });
            model
                .profile
                .default_nic(&mut set["properties"]["virtualMachineProfile"]);
            model.apply(&mut set)?;
            let (h, body) = conn.call_full(
                Method::PUT,
                &path,
                Some(set),
                &[("if-none-match", "*".into())],
            )?;
            warn(&h);
            follow(&conn, &h, no_wait)?;
            if conn.json() {
                print_json(&body);
            } else if !no_wait {
                show_set(&conn, &path)?;
            }
        }
        VmssCommand::Update {
            name,
            model,
            yes,
            no_wait,
            scope,
            conn,
        } => {
            let path = format!(
                "{}/virtualMachineScaleSets/{}",
                scope.provider()?,
                enc(&name)
            );
            let (h, mut set) = conn.call_full(Method::GET, &path, None, &[])?;
            let etag = h
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("*")
                .to_owned();
            model.apply(&mut set)?;
            let url = if yes {
                format!("{path}?confirmOsDiskDataLoss=true")
            } else {
                path.clone()
            };
            let (h, body) = conn
                .call_full(Method::PUT, &url, Some(set), &[("if-match", etag)])
                .map_err(|e| {
                    if e.to_string().starts_with("server: 412") {
                        e.context("the scale set changed since this command read it; run it again")
                    } else {
                        e
                    }
                })?;
            warn(&h);
            follow(&conn, &h, no_wait)?;
            if conn.json() {
                print_json(&body);
            } else if !no_wait {
                show_set(&conn, &path)?;
            }
        }
        VmssCommand::Show { name, scope, conn } => {
            show_set(
                &conn,
                &format!(
                    "{}/virtualMachineScaleSets/{}",
                    scope.provider()?,
                    enc(&name)
                ),
            )?;
        }
        VmssCommand::Delete {
            name,
            no_wait,
            scope,
            conn,
        } => {
            let path = format!(
                "{}/virtualMachineScaleSets/{}",
                scope.provider()?,
                enc(&name)
            );
            let (h, _) = conn.call_full(Method::DELETE, &path, None, &[])?;
            follow(&conn, &h, no_wait)?;
        }
        VmssCommand::List { scope, conn } => {
            let v = conn.get_all(&format!("{}/virtualMachineScaleSets", scope.provider()?))?;
            if conn.json() {
                print_json(&v["value"]);
            } else {
                for set in v["value"].as_array().into_iter().flatten() {
                    let p = &set["properties"];
                    println!(
                        "{:<24} {:<18} {:>5} {:<14} {}",
                        set["name"].as_str().unwrap_or(""),
                        set["sku"]["name"].as_str().unwrap_or(""),
                        set["sku"]["capacity"].as_u64().unwrap_or(0),
                        p["virtualMachineProfile"]["securityProfile"]["securityType"]
                            .as_str()
                            .unwrap_or("Standard"),
                        p["provisioningState"].as_str().unwrap_or("-"),
                    );
                }
            }
        }
        VmssCommand::ListInstances { name, scope, conn } => {
            let path = format!(
                "{}/virtualMachineScaleSets/{}/virtualMachines",
                scope.provider()?,
                enc(&name)
            );
            print_json(&conn.get_all(&path)?["value"]);
        }
        VmssCommand::UpdateInstances {
            name,
            instance_ids,
            no_wait,
            scope,
            conn,
        } => {
            let base = format!(
                "{}/virtualMachineScaleSets/{}",
                scope.provider()?,
                enc(&name)
            );
            let ids: Vec<String> = if instance_ids.iter().any(|i| i == "*") {
                conn.get_all(&format!("{base}/virtualMachines"))?["value"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i["instanceId"].as_str().map(str::to_owned))
                    .collect()
            } else {
                instance_ids
            };
            let (h, _) = conn.call_full(
                Method::POST,
                &format!("{base}/manualupgrade"),
                Some(json!({"instanceIds": ids})),
                &[],
            )?;
            follow(&conn, &h, no_wait)?;
            if !no_wait && !conn.json() {
                show_set(&conn, &base)?;
            }
        }
        VmssCommand::Start(a) => set_action(a, "start")?,
        VmssCommand::Stop(a) => set_action(a, "powerOff")?,
        VmssCommand::Deallocate(a) => set_action(a, "deallocate")?,
        VmssCommand::Restart(a) => set_action(a, "restart")?,
        VmssCommand::Reimage(a) => set_action(a, "reimage")?,
        VmssCommand::RollingUpgrade(r) => match r {
            RollingCommand::Start {
                name,
                no_wait,
                scope,
                conn,
            } => {
                let base = format!(
                    "{}/virtualMachineScaleSets/{}",
                    scope.provider()?,
                    enc(&name)
                );
                let (h, _) =
                    conn.call_full(Method::POST, &format!("{base}/osRollingUpgrade"), None, &[])?;
                follow(&conn, &h, no_wait)?;
                if !no_wait {
                    print_json(&conn.get(&format!("{base}/rollingUpgrades/latest"))?["properties"]);
                }
            }
            RollingCommand::GetLatest { name, scope, conn } => {
                let base = format!(
                    "{}/virtualMachineScaleSets/{}",
                    scope.provider()?,
                    enc(&name)
                );
                print_json(&conn.get(&format!("{base}/rollingUpgrades/latest"))?["properties"]);
            }
            RollingCommand::Cancel { name, scope, conn } => {
                let base = format!(
                    "{}/virtualMachineScaleSets/{}",
                    scope.provider()?,
                    enc(&name)
                );
                conn.call_full(
                    Method::POST,
                    &format!("{base}/rollingUpgrades/cancel"),
                    None,
                    &[],
                )?;
                eprintln!("cancel requested: the batch in flight finishes, no other starts");
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

fn set_action(a: SetActionArgs, action: &str) -> Result<()> {
    let base = format!(
        "{}/virtualMachineScaleSets/{}",
        a.scope.provider()?,
        enc(&a.name)
    );
    let (h, _) = a.conn.call_full(
        reqwest::Method::POST,
        &format!("{base}/{action}"),
        Some(json!({"instanceIds": a.instance_ids})),
        &[],
    )?;
    follow(&a.conn, &h, a.no_wait)?;
    if !a.no_wait && !a.conn.json() {
        show_set(&a.conn, &base)?;
    }
    Ok(())
}

fn vm_path(scope: &Scope, name: &str) -> Result<String> {
    Ok(format!(
        "{}/virtualMachines/{}",
        scope.provider()?,
        enc(name)
    ))
}

fn show_vm(conn: &Conn, vm: &Value) {
    if conn.json() {
        print_json(vm);
        return;
    }
    let p = &vm["properties"];
    let sp = &p["securityProfile"];
    let view = &p["instanceView"];
    println!("name:            {}", vm["name"].as_str().unwrap_or(""));
    println!(
        "size:            {}",
        p["hardwareProfile"]["vmSize"].as_str().unwrap_or("")
    );
    println!(
        "image:           {}",
        p["storageProfile"]["imageReference"]["id"]
            .as_str()
            .unwrap_or("")
    );
    println!(
        "security type:   {}",
        sp["securityType"].as_str().unwrap_or("Standard")
    );
    if let Some(u) = sp.get("uefiSettings").filter(|u| !u.is_null()) {
        println!(
            "secure boot:     {}\nvTPM:            {}",
            u["secureBootEnabled"], u["vTpmEnabled"]
        );
    }
    let attested = vm["resources"].as_array().is_some_and(|a| {
        a.iter()
            .any(|e| e["properties"]["type"] == "GuestAttestation")
    });
    println!("guest attestation: {attested}");
    if let Some(rt) = p["runtimeName"].as_str() {
        // What `host vm` and `attestation show|history` call it.
        println!("runtime name:    {rt}");
    }
    if let Some(set) = p["virtualMachineScaleSet"]["id"].as_str() {
        println!("scale set:       {set}");
    }
    println!(
        "model version:   {} (latestModelApplied={})",
        p["modelVersion"], view["latestModelApplied"]
    );
    println!(
        "power state:     {}",
        view["powerState"].as_str().unwrap_or("(none)")
    );
    println!(
        "health:          {}",
        view["health"].as_str().unwrap_or("Unknown")
    );
    match p["networkProfile"]["networkInterfaceConfigurations"][0]["properties"]["ipConfigurations"]
        [0]["properties"]["subnet"]["id"]
        .as_str()
    {
        Some(subnet) => println!("network:         {subnet}"),
        None if p["networkProfile"].is_object() => {
            println!("network:         user-mode (the guest reaches only the host)");
        }
        None => println!("network:         no NIC"),
    }
    if let Some(ep) = view["sshEndpoint"].as_str() {
        if let Some((host, port)) = ep.rsplit_once(':') {
            println!("ssh:             ssh -p {port} root@{host}");
        }
    }
}

fn vm_action(a: VmActionArgs, action: &str) -> Result<()> {
    let path = vm_path(&a.scope, &a.name)?;
    let (h, _) = if action == "delete" {
        a.conn
            .call_full(reqwest::Method::DELETE, &path, None, &[])?
    } else {
        a.conn.call_full(
            reqwest::Method::POST,
            &format!("{path}/{action}"),
            None,
            &[],
        )?
    };
    follow(&a.conn, &h, a.no_wait)?;
    if !a.no_wait && action != "delete" {
        show_vm(&a.conn, &a.conn.get(&path)?);
    }
    Ok(())
}

/// Writes a VM document (create: `If-None-Match: *`; update: `If-Match`)
/// and follows the operation.
fn write_vm(
    conn: &Conn,
    path: &str,
    vm: Value,
    guard: (&str, String),
    yes: bool,
    no_wait: bool,
) -> Result<()> {
    let url = if yes {
        format!("{path}?confirmOsDiskDataLoss=true")
    } else {
        path.to_owned()
    };
    let (h, body) = conn
        .call_full(reqwest::Method::PUT, &url, Some(vm), &[guard])
        .map_err(|e| {
            if e.to_string().starts_with("server: 412") {
                e.context("the VM changed since this command read it; run it again")
            } else {
                e
            }
        })?;
    warn(&h);
    follow(conn, &h, no_wait)?;
    if no_wait {
        if conn.json() {
            print_json(&body);
        }
    } else {
        show_vm(conn, &conn.get(path)?);
    }
    Ok(())
}

/// Runs `trustlaunch vm ...`.
pub fn vm(cmd: VmCommand) -> Result<ExitCode> {
    match cmd {
        VmCommand::Create {
            name,
            model,
            vmss,
            no_wait,
            scope,
            conn,
        } => {
            if model.profile.image.is_none() {
                bail!("--image (a gallery image version id) is required");
            }
            let path = vm_path(&scope, &name)?;
            let mut vm = json!({"location": "local", "properties": {
                "hardwareProfile": {"vmSize": "Standard_D2s_v5"}, "storageProfile": {}}});
            model.profile.default_nic(&mut vm["properties"]);
            model.apply(&mut vm)?;
            if let Some(set) = vmss {
                let rg = scope.resource_group.as_deref().unwrap_or_default();
                vm["properties"]["virtualMachineScaleSet"] = json!({"id": format!(
                    "/subscriptions/{}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/{set}",
                    scope.subscription
                )});
            }
            write_vm(
                &conn,
                &path,
                vm,
                ("if-none-match", "*".into()),
                false,
                no_wait,
            )?;
        }
        VmCommand::Update {
            name,
            model,
            yes,
            no_wait,
            scope,
            conn,
        } => {
            let path = vm_path(&scope, &name)?;
            let (h, mut vm) = conn.call_full(reqwest::Method::GET, &path, None, &[])?;
            let etag = h
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("*")
                .to_owned();
            if let Some(p) = vm["properties"].as_object_mut() {
                p.remove("instanceView");
            }
            model.apply(&mut vm)?;
            write_vm(&conn, &path, vm, ("if-match", etag), yes, no_wait)?;
        }
        VmCommand::Show { name, scope, conn } => {
            show_vm(&conn, &conn.get(&vm_path(&scope, &name)?)?);
        }
        VmCommand::List { scope, conn } => {
            let v = conn.get_all(&format!("{}/virtualMachines", scope.provider()?))?;
            if conn.json() {
                print_json(&v["value"]);
            } else {
                for vm in v["value"].as_array().into_iter().flatten() {
                    let p = &vm["properties"];
                    println!(
                        "{:<24} {:<18} {:<14} {:<22} {}",
                        vm["name"].as_str().unwrap_or(""),
                        p["hardwareProfile"]["vmSize"].as_str().unwrap_or(""),
                        p["securityProfile"]["securityType"]
                            .as_str()
                            .unwrap_or("Standard"),
                        p["instanceView"]["powerState"].as_str().unwrap_or("-"),
                        p["instanceView"]["health"].as_str().unwrap_or("Unknown")
                    );
                }
            }
        }
        VmCommand::Delete(a) => vm_action(a, "delete")?,
        VmCommand::Start(a) => vm_action(a, "start")?,
        VmCommand::Stop(a) => vm_action(a, "powerOff")?,
        VmCommand::Deallocate(a) => vm_action(a, "deallocate")?,
        VmCommand::Restart(a) => vm_action(a, "restart")?,
        VmCommand::Reimage(a) => vm_action(a, "reimage")?,
        VmCommand::ListSkus { subscription, conn } => {
            let v = conn.get(&format!(
                "/subscriptions/{}/providers/Microsoft.Compute/skus",
                enc(&subscription)
            ))?;
            if conn.json() {
                print_json(&v);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<22} {:<10} {:>5} {:>9}  TrustedLaunch",
                "name", "family", "vCPUs", "memoryGB"
            );
            for s in v["value"].as_array().into_iter().flatten() {
                let cap = |n: &str| {
                    s["capabilities"]
                        .as_array()
                        .and_then(|c| c.iter().find(|x| x["name"] == n))
                        .and_then(|x| x["value"].as_str())
                        .unwrap_or("")
                        .to_owned()
                };
                println!(
                    "{:<22} {:<10} {:>5} {:>9}  {}",
                    s["name"].as_str().unwrap_or(""),
                    s["family"].as_str().unwrap_or(""),
                    cap("vCPUs"),
                    cap("MemoryGB"),
                    if cap("TrustedLaunchDisabled") == "False" {
                        "supported"
                    } else {
                        "not supported"
                    }
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `trustlaunch image definition create`.
pub fn definition(cmd: GalleryCommand) -> Result<ExitCode> {
    let GalleryCommand::Create {
        gallery_name,
        gallery_image_definition,
        os_type,
        hyper_v_generation,
        features,
        publisher,
        offer,
        sku,
        scope,
        conn,
    } = cmd;
    let features: Vec<Value> = features
        .iter()
        .map(|f| {
            let (n, v) = f
                .split_once('=')
                .with_context(|| format!("--features {f:?}: use NAME=VALUE"))?;
            Ok(json!({"name": n, "value": v}))
        })
        .collect::<Result<_>>()?;
    let path = format!(
        "{}/galleries/{}/images/{}",
        scope.provider()?,
        enc(&gallery_name),
        enc(&gallery_image_definition)
    );
    let (_, v) = conn.call_full(
        reqwest::Method::PUT,
        &path,
        Some(json!({"location": "local", "properties": {
            "osType": os_type, "hyperVGeneration": hyper_v_generation, "features": features,
            "identifier": {"publisher": publisher, "offer": offer, "sku": sku}}})),
        &[],
    )?;
    print_json(&v);
    Ok(ExitCode::SUCCESS)
}

/// Runs `trustlaunch image version create`.
pub fn version(cmd: VersionCommand) -> Result<ExitCode> {
    let VersionCommand::Create {
        gallery_name,
        gallery_image_definition,
        gallery_image_version,
        source,
        scope,
        conn,
    } = cmd;
    let source = std::fs::canonicalize(&source)
        .with_context(|| format!("image directory {}", source.display()))?;
    if !source.join("image.json").is_file() {
        bail!(
            "{} holds no image.json: build it with `trustlaunch image build`",
            source.display()
        );
    }
    let path = format!(
        "{}/galleries/{}/images/{}/versions/{}",
        scope.provider()?,
        enc(&gallery_name),
        enc(&gallery_image_definition),
        enc(&gallery_image_version)
    );
    let (_, v) = conn.call_full(
        reqwest::Method::PUT,
        &path,
        Some(json!({"location": "local", "properties": {"source": source.display().to_string()}})),
        &[],
    )?;
    print_json(&v);
    Ok(ExitCode::SUCCESS)
}

/// `trustlaunch group ...`: resource groups (`az group`).
#[derive(Subcommand)]
pub enum GroupCommand {
    /// Create a resource group, or update its location and tags.
    Create {
        /// Name.
        #[arg(long, short = 'n')]
        name: String,
        /// Location.
        #[arg(long, short = 'l', default_value = "local")]
        location: String,
        /// Tags, KEY=VALUE (repeatable).
        #[arg(long = "tags", value_name = "KEY=VALUE")]
        tags: Vec<String>,
        /// Subscription.
        #[arg(long, default_value = "local")]
        subscription: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show a resource group.
    Show {
        /// Name.
        #[arg(long, short = 'n')]
        name: String,
        /// Subscription.
        #[arg(long, default_value = "local")]
        subscription: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// The subscription's resource groups.
    List {
        /// Subscription.
        #[arg(long, default_value = "local")]
        subscription: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete an empty resource group (one that holds resources is
    /// refused, naming them).
    Delete {
        /// Name.
        #[arg(long, short = 'n')]
        name: String,
        /// Subscription.
        #[arg(long, default_value = "local")]
        subscription: String,
        #[command(flatten)]
        conn: Conn,
    },
}

/// Runs `trustlaunch group ...`.
pub fn group(cmd: GroupCommand) -> Result<ExitCode> {
    let path =
        |sub: &str, name: &str| format!("/subscriptions/{}/resourcegroups/{}", enc(sub), enc(name));
    let show = |conn: &Conn, v: &Value| {
        if conn.json() {
            print_json(v);
        } else {
            println!(
                "{:<32} {:<12} {}",
                v["name"].as_str().unwrap_or(""),
                v["location"].as_str().unwrap_or(""),
                v["properties"]["provisioningState"].as_str().unwrap_or("")
            );
        }
    };
    match cmd {
        GroupCommand::Create {
            name,
            location,
            tags,
            subscription,
            conn,
        } => {
            let mut t = serde_json::Map::new();
            for kv in tags {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("--tags takes KEY=VALUE, not {kv:?}"))?;
                t.insert(k.to_owned(), Value::String(v.to_owned()));
            }
            let (_, v) = conn.call_full(
                reqwest::Method::PUT,
                &path(&subscription, &name),
                Some(serde_json::json!({"location": location, "tags": t})),
                &[],
            )?;
            show(&conn, &v);
        }
        GroupCommand::Show {
            name,
            subscription,
            conn,
        } => {
            let v = conn.get(&path(&subscription, &name))?;
            show(&conn, &v);
        }
        GroupCommand::List { subscription, conn } => {
            let v = conn.get_all(&format!(
                "/subscriptions/{}/resourcegroups",
                enc(&subscription)
            ))?;
            if conn.json() {
                print_json(&v["value"]);
            } else {
                for g in v["value"].as_array().into_iter().flatten() {
                    show(&conn, g);
                }
            }
        }
        GroupCommand::Delete {
            name,
            subscription,
            conn,
        } => {
            conn.call_full(
                reqwest::Method::DELETE,
                &path(&subscription, &name),
                None,
                &[],
            )?;
            eprintln!("deleted resource group {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
