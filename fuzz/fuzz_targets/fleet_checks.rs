//! The checks of the `fleet_*` fuzz targets, shared with
//! `crates/fleet/tests/fuzz_corpora.rs` (which includes this file with
//! `#[path]` and replays `fuzz/seeds/fleet_*` and `fuzz/regression/fleet_*`
//! through it in the ordinary test suite). Not a fuzz target itself: each
//! `fleet_*` target calls one function here. Every function takes the raw
//! input and panics (through `assert!`) when a property does not hold.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::sync::OnceLock;

use trustlaunch_fleet::ids::{check_vm_name, IdError, ResourceId};
use trustlaunch_fleet::image::{
    version_name_rule, GalleryImageFeature, GalleryImageIdentifier, GalleryImageVersionId,
    HyperVGeneration, ImageCatalog, ImageDefinition, ImageReference, ImageVersion, OsType,
};
use trustlaunch_fleet::policy::{parse_iso8601_duration, MAX_PAUSE_SECONDS};
use trustlaunch_fleet::resources::{ScaleSet, VirtualMachine};
use trustlaunch_fleet::rolling::{
    Health, InstanceResult, InstanceState, InstanceView, Outcome, RollingUpgrade, Step,
};
use trustlaunch_fleet::sizes::{Quotas, SizeCatalog, Usage};
use trustlaunch_fleet::validate::{
    validate_scale_set_create, validate_scale_set_update, validate_vm_create, validate_vm_update,
    Confirmations, Context, MAX_CAPACITY,
};
use trustlaunch_fleet::{ErrorCode, FleetError, RollingPolicy, RollingUpgradePolicy};

// ------------------------------------------------------------------ ids

/// `fleet_ids`: the input (UTF-8) as a `ResourceId` and as a
/// `GalleryImageVersionId`. What parses formats to the input up to ASCII
/// case (only the keywords' case may differ), re-parses to itself, and goes
/// through serde (`ResourceId`) or `ImageReference` (gallery ids)
/// unchanged; no string is both; every error converts to an
/// `InvalidParameter` `FleetError`.
pub fn ids(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let resource = s.parse::<ResourceId>();
    match &resource {
        Ok(id) => {
            let text = id.to_string();
            assert!(text.eq_ignore_ascii_case(s), "{text:?} formats {s:?}");
            assert_eq!(text.parse::<ResourceId>().as_ref(), Ok(id), "re-parse");
            let json = serde_json::to_string(id).expect("an id serializes");
            assert_eq!(
                serde_json::from_str::<ResourceId>(&json).as_ref().ok(),
                Some(id),
                "serde round trip of {json}"
            );
            assert!(!id.subscription().is_empty() && !id.resource_group().is_empty());
            assert!(text.ends_with(&format!("/{}", id.name())));
            if let ResourceId::VirtualMachine { name, .. } | ResourceId::ScaleSet { name, .. } = id
            {
                assert!(
                    check_vm_name(name, OsType::Linux, "name").is_ok(),
                    "{name:?}"
                );
            }
        }
        Err(e) => id_error(s, e),
    }
    let gallery = s.parse::<GalleryImageVersionId>();
    match &gallery {
        Ok(g) => {
            let text = g.to_string();
            assert!(text.eq_ignore_ascii_case(s), "{text:?} formats {s:?}");
            assert_eq!(
                text.parse::<GalleryImageVersionId>().as_ref(),
                Ok(g),
                "re-parse"
            );
            let r = ImageReference::new(g);
            assert_eq!(r.parse("id").as_ref(), Ok(g), "ImageReference round trip");
            assert!(r.same_as(&ImageReference { id: s.to_owned() }));
            assert!(version_name_rule(&g.version).is_ok());
        }
        Err(e) => id_error(s, e),
    }
    assert!(
        resource.is_err() || gallery.is_err(),
        "{s:?} is both a resource id and a gallery image version id"
    );
}

fn id_error(s: &str, e: &IdError) {
    assert!(!e.to_string().is_empty());
    let f = e.to_fleet_error(s, "id");
    assert_eq!(f.code, ErrorCode::InvalidParameter);
    assert_eq!(f.target.as_deref(), Some("id"));
}

// ------------------------------------------------------------------ durations

/// `fleet_duration`: `parse_iso8601_duration` agrees with an independent
/// reference parser (below) on every input; an accepted duration is at
/// most 64 bytes and its canonical spelling parses to the same seconds; and
/// `RollingUpgradePolicy::resolve` accepts the text as
/// `pauseTimeBetweenBatches` exactly when it parses to at most one day,
/// with that many `pause_seconds`.
pub fn duration(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let got = parse_iso8601_duration(s);
    assert_eq!(got, reference_duration(s), "{s:?}");
    if let Some(v) = got {
        assert!(s.len() <= 64);
        let canon = canonical_duration(v);
        assert_eq!(parse_iso8601_duration(&canon), Some(v), "{canon}");
    }
    let policy = RollingUpgradePolicy {
        pause_time_between_batches: Some(s.to_owned()),
        ..Default::default()
    };
    match (got, policy.resolve()) {
        (Some(v), Ok(p)) => {
            assert!(v <= MAX_PAUSE_SECONDS);
            assert_eq!(p.pause_seconds, v);
        }
        (Some(v), Err(e)) => {
            assert!(v > MAX_PAUSE_SECONDS, "{v} refused: {e}");
            pause_error(&e);
        }
        (None, Err(e)) => pause_error(&e),
        (None, Ok(p)) => panic!("{s:?} does not parse but resolves to {p:?}"),
    }
}

fn pause_error(e: &FleetError) {
    assert_eq!(e.code, ErrorCode::InvalidParameter);
    assert_eq!(
        e.target.as_deref(),
        Some("rollingUpgradePolicy.pauseTimeBetweenBatches")
    );
}

/// `P[nD][T[nH][nM][nS]]`, at least one component, a `T` only with a time
/// component, at most 64 bytes, digits only (no sign, no fraction), no
/// overflow: written from the grammar, not from the parser.
fn reference_duration(s: &str) -> Option<u64> {
    if s.len() > 64 {
        return None;
    }
    let b = s.as_bytes();
    if b.first() != Some(&b'P') {
        return None;
    }
    // Units in the only order allowed, with the designator that precedes
    // the time ones.
    const UNITS: [(u8, u64, bool); 4] = [
        (b'D', 86_400, false),
        (b'H', 3_600, true),
        (b'M', 60, true),
        (b'S', 1, true),
    ];
    let mut i = 1;
    let mut next_unit = 0;
    let mut in_time = false;
    let mut time_components = 0;
    let mut components = 0;
    let mut total: u64 = 0;
    while i < b.len() {
        if b[i] == b'T' {
            if in_time {
                return None;
            }
            in_time = true;
            i += 1;
            continue;
        }
        let start = i;
        let mut n: u64 = 0;
        while i < b.len() && b[i].is_ascii_digit() {
            n = n.checked_mul(10)?.checked_add(u64::from(b[i] - b'0'))?;
            i += 1;
        }
        if i == start || i == b.len() {
            return None;
        }
        let unit = b[i];
        let k = (next_unit..UNITS.len()).find(|&k| UNITS[k].0 == unit && UNITS[k].2 == in_time)?;
        next_unit = k + 1;
        total = total.checked_add(n.checked_mul(UNITS[k].1)?)?;
        components += 1;
        if in_time {
            time_components += 1;
        }
        i += 1;
    }
    if components == 0 || (in_time && time_components == 0) {
        return None;
    }
    Some(total)
}

fn canonical_duration(v: u64) -> String {
    if v == 0 {
        return "PT0S".to_owned();
    }
    let (d, rest) = (v / 86_400, v % 86_400);
    let (h, m, sec) = (rest / 3_600, rest % 3_600 / 60, rest % 60);
    let mut out = String::from("P");
    if d > 0 {
        out.push_str(&format!("{d}D"));
    }
    if rest > 0 {
        out.push('T');
        for (n, u) in [(h, 'H'), (m, 'M'), (sec, 'S')] {
            if n > 0 {
                out.push_str(&format!("{n}{u}"));
            }
        }
    }
    out
}

// ------------------------------------------------------------------ requests

/// Images, sizes, quotas and usage of `crates/fleet/tests/validation.rs`:
/// six definitions in gallery `g1` (Gen2 TrustedLaunchSupported, Gen2
/// standard, Gen1, Gen2 TrustedLaunch-only, Windows), each with version
/// `1.0.0`; the built-in sizes; Dsv5 quota 10 with 8 vCPUs used.
pub struct Fixture {
    images: ImageCatalog,
    sizes: SizeCatalog,
    quotas: Quotas,
    usage: Usage,
    vm: VirtualMachine,
    set: ScaleSet,
}

impl Fixture {
    fn ctx(&self) -> Context<'_> {
        Context {
            images: &self.images,
            sizes: &self.sizes,
            quotas: &self.quotas,
            usage: &self.usage,
        }
    }
}

const IMAGE_PREFIX: &str =
    "/subscriptions/sub1/resourceGroups/rg/providers/Microsoft.Compute/galleries/g1/images/";

/// The fixture, built once.
pub fn fixture() -> &'static Fixture {
    static FX: OnceLock<Fixture> = OnceLock::new();
    FX.get_or_init(|| {
        let mut images = ImageCatalog::new();
        for (name, os, g, feature) in [
            (
                "ubuntu-tl",
                OsType::Linux,
                HyperVGeneration::V2,
                Some("TrustedLaunchSupported"),
            ),
            (
                "ubuntu-tl2",
                OsType::Linux,
                HyperVGeneration::V2,
                Some("TrustedLaunchSupported"),
            ),
            ("ubuntu-std", OsType::Linux, HyperVGeneration::V2, None),
            ("ubuntu-gen1", OsType::Linux, HyperVGeneration::V1, None),
            (
                "ubuntu-tlonly",
                OsType::Linux,
                HyperVGeneration::V2,
                Some("TrustedLaunch"),
            ),
            (
                "win-tl",
                OsType::Windows,
                HyperVGeneration::V2,
                Some("TrustedLaunchSupported"),
            ),
        ] {
            images
                .add_definition(
                    "g1",
                    ImageDefinition {
                        name: name.into(),
                        os_type: os,
                        hyper_v_generation: g,
                        features: feature
                            .map(|v| GalleryImageFeature {
                                name: "SecurityType".into(),
                                value: v.into(),
                            })
                            .into_iter()
                            .collect(),
                        identifier: GalleryImageIdentifier {
                            publisher: "trustlaunch".into(),
                            offer: name.into(),
                            sku: "1".into(),
                        },
                    },
                )
                .expect("definition");
            images
                .add_version(
                    "g1",
                    name,
                    ImageVersion {
                        name: "1.0.0".into(),
                        source: format!("{name}-raw"),
                        guest_agent: None,
                    },
                )
                .expect("version");
        }
        let mut quotas = Quotas::new();
        quotas.set("Dsv5", 10);
        let mut usage = Usage::new();
        usage.set("Dsv5", 8);
        let mut fx = Fixture {
            images,
            sizes: SizeCatalog::built_in(),
            quotas,
            usage,
            vm: placeholder_vm(),
            set: placeholder_set(),
        };
        // The existing resources of the update modes: the validation
        // tests' VM and scale set, validated.
        let vm = validate_vm_create(&fx.ctx(), &placeholder_vm()).expect("existing VM");
        let set = validate_scale_set_create(&fx.ctx(), &placeholder_set()).expect("existing set");
        fx.vm = vm.resource;
        fx.set = set.resource;
        fx
    })
}

fn placeholder_vm() -> VirtualMachine {
    serde_json::from_str(&format!(
        r#"{{"id":"/subscriptions/sub1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-1",
        "name":"vm-1","location":"westeurope","properties":{{"hardwareProfile":{{"vmSize":"Standard_D2s_v5"}},
        "storageProfile":{{"imageReference":{{"id":"{IMAGE_PREFIX}ubuntu-tl/versions/1.0.0"}}}},
        "vmId":"0f8fad5b-d9cb-469f-a165-70867728950e","provisioningState":"Succeeded"}}}}"#
    ))
    .expect("fixture VM")
}

fn placeholder_set() -> ScaleSet {
    serde_json::from_str(&format!(
        r#"{{"id":"/subscriptions/sub1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/ss",
        "name":"ss","location":"westeurope","sku":{{"name":"Standard_D2s_v3","capacity":3}},
        "properties":{{"upgradePolicy":{{"mode":"Rolling"}},"virtualMachineProfile":{{
        "storageProfile":{{"imageReference":{{"id":"{IMAGE_PREFIX}ubuntu-tl/versions/1.0.0"}}}}}},
        "uniqueId":"d2b5e5d1-0000-4000-8000-000000000001","modelVersion":4,"provisioningState":"Succeeded"}}}}"#
    ))
    .expect("fixture scale set")
}

/// `fleet_requests`: the first byte picks (`% 4`) a VM create, a scale set
/// create, an update of the fixture's VM or of its scale set (bit 2: the
/// `osDiskDataLoss` confirmation); the rest is the JSON body. A body that
/// parses survives a serde round trip. Validation never panics; an error is
/// a 4xx with a message; an accepted resource has a security profile and a
/// size of the catalog, keeps what the request or (update) the existing
/// resource fixes, survives a serde round trip, and validating it again as
/// the same request gives it back unchanged (the defaults are a fixed
/// point).
pub fn requests(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let fx = fixture();
    let ctx = fx.ctx();
    let confirm = Confirmations {
        os_disk_data_loss: mode & 4 != 0,
    };
    match mode % 4 {
        0 | 2 => {
            let Ok(vm) = serde_json::from_slice::<VirtualMachine>(body) else {
                return;
            };
            round_trip(&vm);
            let update = mode % 4 == 2;
            let result = if update {
                validate_vm_update(&ctx, &fx.vm, &vm, confirm)
            } else {
                validate_vm_create(&ctx, &vm)
            };
            let out = match result {
                Ok(v) => v.resource,
                Err(e) => return request_error(&e),
            };
            round_trip(&out);
            let sp = out.properties.security_profile.expect("a security profile");
            assert!(sp.security_type.is_some(), "{sp:?}");
            if out.has_guest_attestation() {
                assert!(sp.secure_boot() && sp.vtpm(), "attestation needs SB + vTPM");
            }
            assert!(out.properties.model_version >= 1);
            assert!(ctx
                .sizes
                .get(&out.properties.hardware_profile.vm_size)
                .is_some());
            assert_eq!(out.location, vm.location);
            assert_eq!(
                out.properties.storage_profile,
                vm.properties.storage_profile
            );
            if update {
                assert_eq!(out.id, fx.vm.id);
                assert_eq!(out.name, fx.vm.name);
                assert_eq!(out.properties.vm_id, fx.vm.properties.vm_id);
                let again = validate_vm_update(&ctx, &fx.vm, &out, confirm);
                assert_eq!(again.map(|v| v.resource).as_ref(), Ok(&out), "fixed point");
            } else {
                assert_eq!(out.id, vm.id);
                assert_eq!(out.name, vm.name);
                let again = validate_vm_create(&ctx, &out);
                assert_eq!(again.map(|v| v.resource).as_ref(), Ok(&out), "fixed point");
            }
        }
        _ => {
            let Ok(set) = serde_json::from_slice::<ScaleSet>(body) else {
                return;
            };
            round_trip(&set);
            let update = mode % 4 == 3;
            let result = if update {
                validate_scale_set_update(&ctx, &fx.set, &set, confirm)
            } else {
                validate_scale_set_create(&ctx, &set)
            };
            let out = match result {
                Ok(v) => v.resource,
                Err(e) => return request_error(&e),
            };
            round_trip(&out);
            let model = &out.properties.virtual_machine_profile;
            let sp = model.security_profile.expect("a security profile");
            assert!(sp.security_type.is_some(), "{sp:?}");
            assert!(ctx.sizes.get(&out.sku.name).is_some());
            assert!(out.sku.capacity <= MAX_CAPACITY);
            assert!(out.upgrade_policy().rolling().is_ok());
            assert_eq!(
                model.storage_profile,
                set.properties.virtual_machine_profile.storage_profile
            );
            assert_eq!(
                model.extension_profile,
                set.properties.virtual_machine_profile.extension_profile
            );
            if update {
                assert_eq!(out.id, fx.set.id);
                assert_eq!(out.properties.unique_id, fx.set.properties.unique_id);
                let old = fx.set.properties.model_version;
                let bumped = out.model_differs(&fx.set);
                assert_eq!(out.properties.model_version, old + u64::from(bumped));
                let again = validate_scale_set_update(&ctx, &fx.set, &out, confirm);
                assert_eq!(again.map(|v| v.resource).as_ref(), Ok(&out), "fixed point");
            } else {
                assert_eq!(out.id, set.id);
                assert_eq!(out.properties.model_version, 0);
                let again = validate_scale_set_create(&ctx, &out);
                assert_eq!(again.map(|v| v.resource).as_ref(), Ok(&out), "fixed point");
            }
        }
    }
}

fn round_trip<T>(v: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_string(v).expect("serializes");
    let back: T = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
    assert_eq!(&back, v, "serde round trip of {json}");
}

fn request_error(e: &FleetError) {
    assert!((400..500).contains(&e.status()), "{e:?}");
    assert!(!e.message.is_empty());
    round_trip(e);
}

// ------------------------------------------------------------------ rolling

/// Reads the input a byte at a time; zeros once it runs out.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn bool(&mut self) -> bool {
        self.u8() & 1 != 0
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Instance ids: numeric ones (with a leading-zero twin), others, and the
/// empty string, so ids collide and sort in every way.
const IDS: [&str; 20] = [
    "0",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
    "7",
    "8",
    "9",
    "10",
    "11",
    "007",
    "12",
    "a",
    "b",
    "x-1",
    "",
    "99999999999999999999999",
    "s0",
];

fn pick_id(r: &mut Reader<'_>) -> String {
    let b = r.u8();
    match IDS.get(usize::from(b) % IDS.len()) {
        Some(s) => (*s).to_owned(),
        None => String::new(),
    }
}

fn health(b: u8) -> Health {
    match b % 3 {
        0 => Health::Healthy,
        1 => Health::Unhealthy,
        _ => Health::Unknown,
    }
}

/// `fleet_rolling`: a policy (percentages 0..=100, pause, flags), a health
/// timeout, a start time and a view of up to 31 instances (colliding ids,
/// surge tags), then up to 200 operations: `next`, carrying out the last
/// step (more or less faithfully: health, failures and reports come from
/// the input), `batch_done` with arbitrary results, edits of the view,
/// `cancel`, time jumps. Nothing panics, and after every call:
///
/// - `Upgrade`/`Surge` name 1..=`batch_size()` distinct tracked instances
///   (`Surge`'s count is their number); `WaitForHealth` 1..=`batch_size()`
///   distinct ids; `Rollback` failed tracked instances; `Pause` ends after
///   now;
/// - `Delete` never names a tracked instance other than an old instance
///   whose replacement is healthy (`DeletingOld`);
/// - `Done` is final: the outcome is recorded, `next` repeats it and
///   `cancel` is refused;
/// - `batch_size()` is at least 1 and at most the instance count (or 1);
///   progress counts add up to at most the total, at most `batch_size()`
///   in progress; batches only increase;
/// - the planner survives a serde round trip (it is persisted between
///   calls).
pub fn rolling(data: &[u8]) {
    let mut r = Reader(data);
    let flags = r.u8();
    let policy = RollingPolicy {
        max_batch_instance_percent: u32::from(r.u8() % 101),
        max_unhealthy_instance_percent: u32::from(r.u8() % 101),
        max_unhealthy_upgraded_instance_percent: u32::from(r.u8() % 101),
        pause_seconds: u64::from(r.u8() % 8) * 30,
        prioritize_unhealthy_instances: flags & 1 != 0,
        enable_cross_zone_upgrade: flags & 2 != 0,
        max_surge: flags & 4 != 0,
        rollback_failed_instances_on_policy_breach: flags & 8 != 0,
    };
    let timeout = u64::from(r.u8() % 4) * 100;
    let mut now: u64 = if flags & 16 != 0 {
        u64::MAX - u64::from(r.u16())
    } else {
        u64::from(r.u16())
    };
    let n = r.u8() % 32;
    let mut view: Vec<InstanceView> = Vec::new();
    for _ in 0..n {
        let id = pick_id(&mut r);
        let b = r.u8();
        let mut v = InstanceView::new(id, b & 1 != 0, health(b >> 1));
        if b & 0x80 != 0 {
            v = v.replacing(pick_id(&mut r));
        }
        view.push(v);
    }
    let mut up = RollingUpgrade::new(policy, now, &view).with_health_timeout(timeout);
    let size = up.batch_size();
    assert!(size >= 1);
    assert!(size <= up.total().max(1), "{size} > {}", up.total());
    assert_eq!(usize::try_from(up.total()).ok(), Some(up.instances().len()));
    invariants(&up);
    let mut last: Option<Step> = None;
    let mut batches = 0;
    let mut created = 0u32;
    for _ in 0..200 {
        if r.is_empty() {
            break;
        }
        match r.u8() % 8 {
            0..=2 => {
                let step = up.next(&view, now);
                check_step(&up, &step, now);
                last = Some(step);
            }
            3 => {
                // Carry out the last step.
                let Some(step) = last.take() else { continue };
                let mut results = Vec::new();
                match &step {
                    Step::Upgrade { batch } => {
                        for id in batch {
                            let b = r.u8();
                            let ok = b & 1 == 0;
                            if ok {
                                for v in view.iter_mut().filter(|v| &v.id == id) {
                                    v.up_to_date = true;
                                    v.health = health(b >> 1);
                                }
                            }
                            results.push(InstanceResult { id: id.clone(), ok });
                        }
                    }
                    Step::Surge { replacing, .. } => {
                        for old in replacing {
                            let b = r.u8();
                            let ok = b & 1 == 0;
                            if ok || b & 2 != 0 {
                                created = created.wrapping_add(1);
                                view.push(
                                    InstanceView::new(format!("s{created}"), true, health(b >> 2))
                                        .replacing(old.clone()),
                                );
                            }
                            results.push(InstanceResult {
                                id: old.clone(),
                                ok,
                            });
                        }
                    }
                    Step::Delete { ids } => {
                        for id in ids {
                            let ok = r.u8() & 1 == 0;
                            if ok {
                                view.retain(|v| &v.id != id);
                            }
                            results.push(InstanceResult { id: id.clone(), ok });
                        }
                    }
                    Step::Rollback { ids } => {
                        for id in ids {
                            let ok = r.u8() & 1 == 0;
                            if ok {
                                for v in view.iter_mut().filter(|v| &v.id == id) {
                                    v.up_to_date = false;
                                }
                            }
                            results.push(InstanceResult { id: id.clone(), ok });
                        }
                    }
                    Step::WaitForHealth { until, .. } | Step::Pause { until } => {
                        now = if r.bool() {
                            *until
                        } else {
                            now.saturating_add(1)
                        };
                    }
                    Step::Done(_) => {}
                }
                if r.bool() {
                    up.batch_done(&results);
                    invariants(&up);
                }
            }
            4 => {
                let k = r.u8();
                let mut results = Vec::new();
                for _ in 0..k % 4 {
                    results.push(InstanceResult {
                        id: pick_id(&mut r),
                        ok: r.bool(),
                    });
                }
                up.batch_done(&results);
                invariants(&up);
            }
            5 => {
                // Edit the view: flip an instance, drop one, add one.
                let b = r.u8();
                let len = view.len();
                let i = usize::from(r.u8()) % len.max(1);
                match (b % 4, view.get_mut(i)) {
                    (0, Some(v)) => v.health = health(b >> 2),
                    (1, Some(v)) => v.up_to_date = !v.up_to_date,
                    (2, Some(_)) => {
                        view.remove(i);
                    }
                    _ => {
                        let id = pick_id(&mut r);
                        let mut v = InstanceView::new(id, b & 4 != 0, health(b >> 3));
                        if b & 0x80 != 0 {
                            v = v.replacing(pick_id(&mut r));
                        }
                        view.push(v);
                    }
                }
            }
            6 => {
                let done = up.outcome().is_some();
                let res = up.cancel(now);
                assert_eq!(
                    res.is_err(),
                    done,
                    "cancel after the end is refused, before accepted"
                );
                invariants(&up);
            }
            _ => {
                now = now.saturating_add(u64::from(r.u16()));
            }
        }
        assert!(up.batches_started() >= batches, "batches only increase");
        batches = up.batches_started();
    }
}

fn tracked(up: &RollingUpgrade, id: &str) -> Option<InstanceState> {
    up.instances().iter().find(|t| t.id == id).map(|t| t.state)
}

fn distinct(ids: &[String]) -> bool {
    ids.iter().collect::<BTreeSet<_>>().len() == ids.len()
}

fn check_step(up: &RollingUpgrade, step: &Step, now: u64) {
    let size = usize::try_from(up.batch_size()).unwrap_or(usize::MAX);
    match step {
        Step::Upgrade { batch } => {
            assert!(
                !batch.is_empty() && batch.len() <= size,
                "{step:?} (batch size {size})"
            );
            assert!(distinct(batch), "{step:?}");
            for id in batch {
                assert_eq!(tracked(up, id), Some(InstanceState::Upgrading), "{step:?}");
            }
        }
        Step::Surge { count, replacing } => {
            assert_eq!(*count, replacing.len());
            assert!(
                !replacing.is_empty() && replacing.len() <= size,
                "{step:?} (batch size {size})"
            );
            assert!(distinct(replacing), "{step:?}");
            for id in replacing {
                assert_eq!(tracked(up, id), Some(InstanceState::Creating), "{step:?}");
            }
        }
        Step::WaitForHealth { ids, until } => {
            assert!(
                !ids.is_empty() && ids.len() <= size,
                "{step:?} (batch size {size})"
            );
            assert!(distinct(ids), "{step:?}");
            assert!(*until > now, "{step:?} at {now}");
        }
        Step::Delete { ids } => {
            assert!(!ids.is_empty() && distinct(ids), "{step:?}");
            for id in ids {
                if let Some(state) = tracked(up, id) {
                    assert_eq!(
                        state,
                        InstanceState::DeletingOld,
                        "{step:?} deletes tracked instance {id:?} ({state:?})"
                    );
                }
            }
        }
        Step::Rollback { ids } => {
            assert!(!ids.is_empty() && distinct(ids), "{step:?}");
            for id in ids {
                assert!(
                    matches!(tracked(up, id), Some(InstanceState::Failed(_))),
                    "{step:?}"
                );
            }
        }
        Step::Pause { until } => assert!(*until > now, "{step:?} at {now}"),
        Step::Done(o) => {
            assert_eq!(up.outcome(), Some(o));
            let mut again = up.clone();
            assert_eq!(again.next(&[], now), Step::Done(o.clone()), "Done is final");
            assert!(again.cancel(now).is_err());
            if let Outcome::Faulted(b) = o {
                assert_eq!(b.total, up.total(), "{b:?}");
            }
        }
    }
    invariants(up);
}

fn invariants(up: &RollingUpgrade) {
    let p = up.status().progress;
    let sum = u64::from(p.successful_instance_count)
        + u64::from(p.failed_instance_count)
        + u64::from(p.in_progress_instance_count)
        + u64::from(p.pending_instance_count);
    assert!(sum <= u64::from(up.total()), "{p:?} of {}", up.total());
    assert!(p.in_progress_instance_count <= up.batch_size(), "{p:?}");
    let json = serde_json::to_string(up).expect("the planner serializes");
    let back: RollingUpgrade =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
    assert_eq!(&back, up, "planner serde round trip");
}
