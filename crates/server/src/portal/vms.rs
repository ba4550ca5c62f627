//! Virtual machines: the list (filtered, sorted, paged in the store), a
//! new VM with Azure's defaults, and a VM's pages: Overview, Boot
//! integrity, Baseline, Serial console.

use axum::extract::State;
use axum::extract::{Path, Query};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Value};
use trustlaunch_control::vm_ops::vm_runtime_name;
use trustlaunch_fleet::resources::VirtualMachine;
use trustlaunch_store::{Role, VmQuery, VmSort};

use super::layout::{
    badge, csrf, error_page, failure_page, field_error, form_error, printable, tabs, when,
};
use super::session::Flash;
use super::{enc, page, vm_href, ApiFailure, Ctx, Nav, Posted, St, Viewer};
use crate::ApiError;

/// Rows on a page of VMs.
pub const PAGE_ROWS: u64 = 50;

/// The list's query.
#[derive(Deserialize, Default, Debug)]
pub struct ListQuery {
    q: Option<String>,
    health: Option<String>,
    #[serde(rename = "type")]
    security_type: Option<String>,
    sort: Option<String>,
    dir: Option<String>,
    page: Option<u64>,
}

fn nonempty(s: &Option<String>) -> Option<String> {
    s.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.chars().take(128).collect())
}

impl ListQuery {
    fn store_query(&self) -> VmQuery {
        let sort = match self.sort.as_deref() {
            Some("health") => VmSort::Health,
            Some("attested") => VmSort::LastAttested,
            Some("registered") => VmSort::Registered,
            Some("type") => VmSort::SecurityType,
            _ => VmSort::Name,
        };
        let page = self.page.unwrap_or(1).clamp(1, 1_000_000);
        VmQuery {
            name_contains: nonempty(&self.q),
            health: nonempty(&self.health)
                .filter(|h| ["healthy", "unhealthy", "unknown"].contains(&h.as_str())),
            security_type: nonempty(&self.security_type)
                .filter(|t| ["TrustedLaunch", "Standard"].contains(&t.as_str())),
            sort,
            descending: self.dir.as_deref() == Some("desc"),
            offset: (page - 1) * PAGE_ROWS,
            limit: PAGE_ROWS,
        }
    }

    /// This query's URL with `page` (and a sort) changed.
    fn href(&self, page: u64, sort: Option<(&str, bool)>) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("q", &self.q),
            ("health", &self.health),
            ("type", &self.security_type),
        ] {
            if let Some(v) = nonempty(v) {
                parts.push(format!("{k}={}", enc(&v)));
            }
        }
        match sort {
            Some((s, desc)) => {
                parts.push(format!("sort={s}"));
                if desc {
                    parts.push("dir=desc".into());
                }
            }
            None => {
                if let Some(s) = nonempty(&self.sort) {
                    parts.push(format!("sort={}", enc(&s)));
                }
                if self.dir.as_deref() == Some("desc") {
                    parts.push("dir=desc".into());
                }
            }
        }
        if page > 1 {
            parts.push(format!("page={page}"));
        }
        format!("/portal/vms?{}", parts.join("&"))
    }
}

/// The VM list's body (the figure `bench portal` measures).
pub async fn list_body(ctx: &Ctx, q: &ListQuery) -> Result<Markup, ApiError> {
    let sq = q.store_query();
    let page_no = sq.offset / PAGE_ROWS + 1;
    let vms = ctx.app.service.store.vm_page(&sq).await?;
    let pages = vms.total.div_ceil(PAGE_ROWS).max(1);
    let arm: Vec<VirtualMachine> = match &ctx.app.control {
        Some(c) => c.vms(None).await?,
        None => Vec::new(),
    };
    let sorted_by = nonempty(&q.sort).unwrap_or_else(|| "name".into());
    let desc = q.dir.as_deref() == Some("desc");
    let th = |key: &str, label: &str| {
        let now = sorted_by == key;
        let aria = match (now, desc) {
            (true, true) => Some("descending"),
            (true, false) => Some("ascending"),
            _ => None,
        };
        html! {
            th aria-sort=[aria] {
                a href=(q.href(1, Some((key, now && !desc)))) { (label) @if now { @if desc { " ↓" } @else { " ↑" } } }
            }
        }
    };
    Ok(html! {
        form.filters method="get" action="/portal/vms" role="search" {
            label { "Name contains" input type="text" name="q" value=[q.q.as_deref()] id="filter-q"; }
            label { "Health"
                select name="health" id="filter-health" {
                    option value="" { "Any" }
                    @for h in ["healthy", "unhealthy", "unknown"] {
                        option value=(h) selected[q.health.as_deref() == Some(h)] { (h) }
                    }
                }
            }
            label { "Security type"
                select name="type" id="filter-type" {
                    option value="" { "Any" }
                    @for t in ["TrustedLaunch", "Standard"] {
                        option value=(t) selected[q.security_type.as_deref() == Some(t)] { (t) }
                    }
                }
            }
            button type="submit" id="filter" { "Filter" }
        }
        p.muted id="vm-count" { (vms.total) " VM(s) · page " (page_no) " of " (pages) }
        div.scroll {
            table id="vms" {
                caption.muted { "Every VM this platform attests or has registered" }
                thead { tr {
                    (th("name", "Name")) (th("type", "Security type")) (th("health", "Attested health"))
                    (th("attested", "Last attested")) (th("registered", "Registered"))
                } }
                tbody {
                    @for r in &vms.rows {
                        tr {
                            td { a href=(vm_href(&r.vm_id)) { (r.vm_id) } }
                            td { (r.security_type) }
                            td { (badge(match r.healthy { Some(true) => "healthy", Some(false) => "unhealthy", None => "unknown" })) }
                            td { (when(r.last_attested_at)) }
                            td { (when(Some(r.created_at))) }
                        }
                    }
                }
            }
        }
        nav.pager aria-label="Pages" {
            @if page_no > 1 { a href=(q.href(page_no - 1, None)) rel="prev" { "← Previous" } }
            @if page_no < pages { a href=(q.href(page_no + 1, None)) rel="next" id="next-page" { "Next →" } }
        }
        @if !arm.is_empty() {
            h2 { "Created through the control plane" }
            div.scroll {
                table id="arm-vms" {
                    thead { tr { th { "Name" } th { "Resource group" } th { "Size" } th { "Security type" } th { "Host name" } } }
                    tbody {
                        @for vm in &arm {
                            @let rg = vm.id.as_ref().map(|i| i.resource_group().to_owned()).unwrap_or_default();
                            tr {
                                td { a href=(vm_href(&vm_runtime_name(vm))) { (vm.name) } }
                                td { (rg) }
                                td { (vm.properties.hardware_profile.vm_size) }
                                td { (security_type_of(vm)) }
                                td.mono { (vm_runtime_name(vm)) }
                            }
                        }
                    }
                }
            }
        }
    })
}

fn security_type_of(vm: &VirtualMachine) -> &'static str {
    vm.properties
        .security_profile
        .as_ref()
        .and_then(|p| p.security_type)
        .map_or("Standard", |t| t.as_str())
}

/// `/portal/vms`.
pub async fn list(State(ctx): St, viewer: Viewer, Query(q): Query<ListQuery>) -> Response {
    match list_body(&ctx, &q).await {
        Ok(body) => page(
            &viewer,
            Nav::Vms,
            "Virtual machines",
            html! {
                h1 { "Virtual machines" }
                @if viewer.can(Role::Operator) && ctx.app.control.is_some() {
                    div.actions { a.button href="/portal/vms/new" id="create-vm" { "Create a virtual machine" } }
                }
                (body)
            },
        ),
        Err(e) => error_page(&e.message, e.status),
    }
}

/// What the create form was given.
#[derive(Default)]
struct NewVm {
    name: String,
    group: String,
    size: String,
    image: String,
    security_type: String,
    secure_boot: bool,
    vtpm: bool,
    guest_attestation: bool,
}

async fn create_form(
    ctx: &Ctx,
    viewer: &Viewer,
    v: &NewVm,
    failure: Option<&ApiFailure>,
) -> Response {
    let sizes = ctx
        .get(
            &viewer.caller,
            "/subscriptions/local/providers/Microsoft.Compute/skus",
        )
        .await
        .map(|b| b["value"].as_array().cloned().unwrap_or_default())
        .unwrap_or_default();
    let images = match &ctx.app.control {
        Some(c) => super::images::version_ids(c).await.unwrap_or_default(),
        None => Vec::new(),
    };
    let targets = [
        "name",
        "location",
        "properties.hardwareProfile",
        "properties.storageProfile",
        "properties.securityProfile",
    ];
    let mut resp = page(
        viewer,
        Nav::Vms,
        "Create a virtual machine",
        html! {
            h1 { "Create a virtual machine" }
            (form_error(failure, &targets))
            form.stack method="post" action="/portal/vms/new" novalidate {
                (csrf(viewer))
                label for="vm-name" { "Virtual machine name" }
                input id="vm-name" name="name" type="text" value=(v.name) required;
                (field_error("vm-name", failure, "name"))
                label for="vm-group" { "Resource group" }
                input id="vm-group" name="group" type="text" value=(v.group) required;
                label for="vm-image" { "Image" }
                select id="vm-image" name="image" {
                    @for i in &images { option value=(i) selected[*i == v.image] { (short_image(i)) } }
                }
                (field_error("vm-image", failure, "properties.storageProfile"))
                label for="vm-size" { "Size" }
                select id="vm-size" name="size" {
                    @for s in &sizes {
                        @let n = s["name"].as_str().unwrap_or_default();
                        option value=(n) selected[n == v.size] { (n) " · " (s["family"].as_str().unwrap_or_default()) }
                    }
                }
                (field_error("vm-size", failure, "properties.hardwareProfile"))
                label for="vm-security" { "Security type" }
                select id="vm-security" name="securityType" aria-describedby="vm-security-help" {
                    @for (val, label) in [("TrustedLaunch", "Trusted launch virtual machines"), ("Standard", "Standard")] {
                        option value=(val) selected[v.security_type == val] { (label) }
                    }
                }
                p.help id="vm-security-help" { "Gen2 images default to Trusted launch with Secure Boot and vTPM on, as in Azure." }
                label.check { input type="checkbox" name="secureBoot" id="vm-secure-boot" checked[v.secure_boot]; "Enable secure boot" }
                label.check { input type="checkbox" name="vtpm" id="vm-vtpm" checked[v.vtpm]; "Enable vTPM" }
                label.check { input type="checkbox" name="guestAttestation" id="vm-ga" checked[v.guest_attestation]; "Integrity monitoring (Guest Attestation extension)" }
                (field_error("vm-security", failure, "properties.securityProfile"))
                div.actions { button type="submit" id="vm-create" { "Review + create" } }
            }
        },
    );
    if let Some(f) = failure {
        *resp.status_mut() = f.status;
    }
    resp
}

/// The last three segments of an image version id (`tiny/versions/1.0.0`
/// → `tiny 1.0.0`).
pub fn short_image(id: &str) -> String {
    let parts: Vec<&str> = id.rsplit('/').take(3).collect();
    match parts.as_slice() {
        [v, "versions", image] => format!("{image} {v}"),
        _ => id.to_owned(),
    }
}

/// `/portal/vms/new`.
pub async fn new_form(State(ctx): St, viewer: Viewer) -> Response {
    let v = NewVm {
        group: "rg".into(),
        size: "Standard_D2s_v3".into(),
        security_type: "TrustedLaunch".into(),
        secure_boot: true,
        vtpm: true,
        guest_attestation: true,
        ..NewVm::default()
    };
    create_form(&ctx, &viewer, &v, None).await
}

/// Creates a VM through the API (`PUT .../virtualMachines/{name}`), with
/// the Guest Attestation extension if asked for.
pub async fn create(State(ctx): St, posted: Posted) -> Response {
    let f = &posted.fields;
    let v = NewVm {
        name: f.get("name").unwrap_or_default().trim().to_owned(),
        group: f.get("group").unwrap_or_default().trim().to_owned(),
        size: f.get("size").unwrap_or_default().to_owned(),
        image: f.get("image").unwrap_or_default().to_owned(),
        security_type: f.get("securityType").unwrap_or("TrustedLaunch").to_owned(),
        secure_boot: f.checked("secureBoot"),
        vtpm: f.checked("vtpm"),
        guest_attestation: f.checked("guestAttestation"),
    };
    let viewer = &posted.viewer;
    let local = |message: &str, target: &str| ApiFailure {
        status: StatusCode::BAD_REQUEST,
        code: "InvalidParameter".into(),
        message: message.into(),
        target: Some(target.into()),
    };
    if v.name.is_empty() || v.name.len() > 64 || v.name.contains('/') {
        let e = local("Enter a name of 1 to 64 characters, without '/'.", "name");
        return create_form(&ctx, viewer, &v, Some(&e)).await;
    }
    if v.group.is_empty() || v.group.len() > 90 || v.group.contains('/') {
        let e = local("Enter a resource group name without '/'.", "resourceGroup");
        return create_form(&ctx, viewer, &v, Some(&e)).await;
    }
    let security = if v.security_type == "Standard" {
        json!({"securityType": "Standard"})
    } else {
        json!({"securityType": "TrustedLaunch", "uefiSettings": {"secureBootEnabled": v.secure_boot, "vTpmEnabled": v.vtpm}})
    };
    let mut body = json!({
        "location": "local",
        "properties": {
            "hardwareProfile": {"vmSize": v.size},
            "storageProfile": {"imageReference": {"id": v.image}},
            "osProfile": {"computerName": host_name(&v.name), "adminUsername": "azureuser"},
            "securityProfile": security,
        }
    });
    // The extension with the VM, in one create (as an ARM template's
    // `resources`), not a second write racing the first's operation.
    if v.guest_attestation {
        body["resources"] = json!([{"name": "GuestAttestation", "properties": {
            "publisher": "Microsoft.Azure.Security.LinuxAttestation", "type": "GuestAttestation",
            "typeHandlerVersion": "1.0", "autoUpgradeMinorVersion": true}}]);
    }
    let path = format!(
        "/subscriptions/local/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{}",
        enc(&v.group),
        enc(&v.name)
    );
    if let Err(e) = ctx
        .call(&viewer.caller, Method::PUT, &path, Some(&body))
        .await
    {
        return create_form(&ctx, viewer, &v, Some(&e)).await;
    }
    let note = format!("Virtual machine {} is being created.", v.name);
    ctx.app
        .sessions
        .flash(
            &viewer.session,
            Flash {
                ok: true,
                text: note,
            },
        )
        .await;
    Redirect::to(&format!("/portal/vms?q={}", enc(&v.name))).into_response()
}

/// A host name from a VM name (lowercase letters, digits and '-').
fn host_name(name: &str) -> String {
    let h: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    let h = h.trim_matches('-').to_owned();
    if h.is_empty() {
        "vm".into()
    } else {
        h
    }
}

/// A VM as the portal knows it: its registration (the attestation
/// service's), its control-plane resource, or both.
struct Found {
    name: String,
    registration: Option<Value>,
    registered_at: Option<i64>,
    arm: Option<VirtualMachine>,
}

impl Found {
    fn arm_path(&self) -> Option<String> {
        let vm = self.arm.as_ref()?;
        let id = vm.id.as_ref()?;
        Some(id.to_string())
    }
}

/// The VM `name`. Its control-plane resource is found by a scan of the
/// control plane's VMs (their runtime names are derived, not indexed), so
/// it is looked for only when `with_arm`, or when the VM is not
/// registered (to tell whether it exists at all).
async fn find(ctx: &Ctx, name: &str, with_arm: bool) -> Result<Option<Found>, ApiError> {
    if name.is_empty() || name.len() > 128 {
        return Ok(None);
    }
    let rec = ctx.app.service.store.get_vm(name).await?;
    let arm = match &ctx.app.control {
        Some(c) if with_arm || rec.is_none() => c
            .vms(None)
            .await?
            .into_iter()
            .find(|vm| vm_runtime_name(vm) == name),
        _ => None,
    };
    if rec.is_none() && arm.is_none() {
        return Ok(None);
    }
    Ok(Some(Found {
        name: name.to_owned(),
        registered_at: rec.as_ref().map(|r| r.created_at),
        registration: rec.map(|r| r.spec),
        arm,
    }))
}

fn vm_tabs(name: &str, current: &str) -> Markup {
    let base = vm_href(name);
    tabs(
        &[
            ("Overview", base.clone()),
            ("Boot integrity", format!("{base}/integrity")),
            ("Baseline", format!("{base}/baseline")),
            ("Serial console", format!("{base}/console")),
        ],
        current,
    )
}

async fn found_or_404(
    ctx: &Ctx,
    viewer: &Viewer,
    name: &str,
    with_arm: bool,
) -> Result<Found, Response> {
    match find(ctx, name, with_arm).await {
        Ok(Some(f)) => Ok(f),
        Ok(None) => Err(failure_page(
            viewer,
            Nav::Vms,
            &ApiFailure {
                status: StatusCode::NOT_FOUND,
                code: "NotFound".into(),
                message: format!(
                    "No virtual machine {name:?} is registered or in the control plane."
                ),
                target: None,
            },
        )),
        Err(e) => Err(error_page(&e.message, e.status)),
    }
}

fn yes(b: Option<bool>) -> &'static str {
    match b {
        Some(true) => "Enabled",
        Some(false) => "Disabled",
        None => "—",
    }
}

/// `/portal/vms/{vm}`: security type, Secure Boot, vTPM, integrity
/// monitoring, power state, host; power actions.
pub async fn overview(State(ctx): St, viewer: Viewer, Path(name): Path<String>) -> Response {
    let f = match found_or_404(&ctx, &viewer, &name, true).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let reg = f.registration.as_ref();
    let (sec_type, sb, vtpm) = match (&f.arm, reg) {
        (Some(vm), _) => {
            let u = vm
                .properties
                .security_profile
                .as_ref()
                .and_then(|p| p.uefi_settings);
            (
                security_type_of(vm).to_owned(),
                u.as_ref().and_then(|u| u.secure_boot_enabled),
                u.as_ref().and_then(|u| u.v_tpm_enabled),
            )
        }
        (None, Some(r)) => (
            if r["trustedLaunch"] == json!(true) {
                "TrustedLaunch".into()
            } else {
                "Standard".into()
            },
            r["secureBootEnabled"].as_bool(),
            r["vTpmEnabled"].as_bool(),
        ),
        (None, None) => ("Standard".into(), None, None),
    };
    // A VM's extensions are child resources: the API's list has them.
    let guest_attestation = match f.arm_path() {
        Some(path) => ctx
            .get(&viewer.caller, &format!("{path}/extensions"))
            .await
            .ok()
            .map(|v| {
                v["value"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|e| e["properties"]["type"] == "GuestAttestation")
            }),
        None => None,
    };
    let monitoring = match guest_attestation {
        Some(true) => "Enabled (Guest Attestation extension)",
        Some(false) => "Disabled (no Guest Attestation extension)",
        None if reg.is_some() => "Attested by this platform",
        None => "—",
    };
    let mut power = None;
    let mut host = reg
        .and_then(|r| r["host"].as_str())
        .filter(|h| !h.is_empty())
        .map(str::to_owned);
    if let Some(path) = f.arm_path() {
        if let Ok(view) = ctx
            .get(&viewer.caller, &format!("{path}/instanceView"))
            .await
        {
            power = view["statuses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["code"].as_str())
                .find_map(|c| c.strip_prefix("PowerState/"))
                .map(str::to_owned);
        }
        host.get_or_insert_with(|| "this server's control plane".into());
    } else if let Some(m) = &ctx.app.monitor {
        if let Ok(Some(info)) = m.show(&f.name).await {
            power = Some(format!("{:?}", info.state.status).to_lowercase());
            host.get_or_insert_with(|| "local".into());
        }
    }
    let latest = ctx.app.service.store.latest(&f.name).await.ok().flatten();
    let can = viewer.can(Role::Operator);
    page(
        &viewer,
        Nav::Vms,
        &f.name,
        html! {
            h1 { (f.name) }
            (vm_tabs(&f.name, "Overview"))
            dl.props id="overview" {
                dt { "Security type" } dd id="security-type" { (sec_type) }
                dt { "Secure Boot" } dd id="secure-boot" { (yes(sb)) }
                dt { "vTPM" } dd id="vtpm" { (yes(vtpm)) }
                dt { "Integrity monitoring" } dd id="integrity-monitoring" { (monitoring) }
                dt { "Attested health" } dd id="health" {
                    @match &latest {
                        Some(a) => { (badge(if a.attestation.healthy { "healthy" } else { "unhealthy" })) " at " (when(Some(a.attestation.at))) }
                        None => { (badge("unknown")) " never attested" }
                    }
                }
                dt { "Power state" } dd id="power" { (power.as_deref().unwrap_or("—")) }
                dt { "Host" } dd id="host" { (host.as_deref().unwrap_or("—")) }
                @if let Some(vm) = &f.arm {
                    dt { "Size" } dd id="size" { (vm.properties.hardware_profile.vm_size) }
                    dt { "Resource id" } dd.mono { (f.arm_path().unwrap_or_default()) }
                    dt { "Name in Azure's model" } dd { (vm.name) }
                }
                @if let Some(at) = f.registered_at { dt { "Registered" } dd { (when(Some(at))) } }
            }
            @if can {
                div.actions {
                    @if f.arm.is_some() {
                        @for (action, label) in [("start", "Start"), ("restart", "Restart"), ("powerOff", "Stop"), ("deallocate", "Deallocate")] {
                            form.inline method="post" action=(format!("{}/power", vm_href(&f.name))) {
                                (csrf(&viewer))
                                input type="hidden" name="action" value=(action);
                                button.secondary type="submit" id=(format!("power-{action}")) { (label) }
                            }
                        }
                    }
                    @if ctx.app.monitor.is_some() && f.registration.is_some() {
                        form.inline method="post" action=(format!("{}/power", vm_href(&f.name))) {
                            (csrf(&viewer))
                            input type="hidden" name="action" value="attest";
                            button.secondary type="submit" id="attest-now" { "Attest now" }
                        }
                    }
                }
            }
        },
    )
}

/// Power actions (through the API's `POST .../{action}`) and "attest now".
pub async fn power(State(ctx): St, Path(name): Path<String>, posted: Posted) -> Response {
    let viewer = &posted.viewer;
    let f = match found_or_404(&ctx, viewer, &name, true).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let action = posted.fields.get("action").unwrap_or_default();
    let result = match (action, f.arm_path()) {
        ("attest", _) => ctx
            .call(
                &viewer.caller,
                Method::POST,
                &format!("/v1/vms/{}/attest", enc(&f.name)),
                None,
            )
            .await
            .map(|_| "Attested: see Boot integrity.".to_owned()),
        ("start" | "restart" | "powerOff" | "deallocate", Some(path)) => ctx
            .call(
                &viewer.caller,
                Method::POST,
                &format!("{path}/{action}"),
                None,
            )
            .await
            .map(|_| format!("{action} requested.")),
        _ => Err(ApiFailure {
            status: StatusCode::BAD_REQUEST,
            code: "InvalidParameter".into(),
            message: format!("{action:?} is not an action this VM takes."),
            target: Some("action".into()),
        }),
    };
    let flash = match result {
        Ok(text) => Flash { ok: true, text },
        Err(e) => Flash {
            ok: false,
            text: e.message,
        },
    };
    ctx.app.sessions.flash(&viewer.session, flash).await;
    Redirect::to(&vm_href(&f.name)).into_response()
}

fn cite(c: &Value) -> Markup {
    let kind = c["kind"].as_str().unwrap_or("evidence");
    html! {
        li.mono {
            (kind)
            @if let Some(o) = c.as_object() {
                @for (k, v) in o.iter().filter(|(k, _)| *k != "kind") {
                    " " (k) "=" span.hash { (v.as_str().map_or_else(|| v.to_string(), str::to_owned)) }
                }
            }
        }
    }
}

fn components(list: &Value) -> Markup {
    html! {
        table {
            thead { tr { th { "Component" } th { "SHA-256" } } }
            tbody {
                @for c in list.as_array().into_iter().flatten() {
                    tr { td { (c["name"].as_str().unwrap_or_default()) } td.mono.hash { (c["sha256"].as_str().unwrap_or_default()) } }
                }
            }
        }
    }
}

/// A Windows boot's isolation features and Azure's Windows claims, as
/// the attested boot measured them (the `windows.*` checks above say
/// what they rest on).
fn windows_features(w: &serde_json::Map<String, Value>, claims: &Value) -> Markup {
    let on = |k: &str| {
        if w.get(k) == Some(&json!(true)) {
            "on"
        } else {
            "off"
        }
    };
    let events: Vec<String> = w
        .get("events")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(ToString::to_string)
        .collect();
    let claim = |k: &str| claims[k].as_bool().map(|b| if b { "yes" } else { "no" });
    html! {
        section aria-labelledby="windows-h" id="windows" {
            h2 id="windows-h" { "Windows security features" }
            p.muted { "As the attested boot measured them"
                @if !events.is_empty() { " (events " (events.join(", ")) ")" } "." }
            table id="windows-features" {
                tbody {
                    tr data-feature="vbs" { th { "Virtualization-based security (VBS)" } td { (badge(on("vbs"))) } }
                    tr data-feature="hvci" {
                        th { "Hypervisor-protected code integrity (HVCI)" }
                        td { (badge(on("hvci"))) " policy 0x" (format!("{:x}", w.get("hvci_policy").and_then(Value::as_u64).unwrap_or(0))) }
                    }
                    tr data-feature="credential-guard" { th { "Credential Guard" } td { (badge(on("credential_guard"))) } }
                    @for (k, label) in [
                        ("x-ms-azurevm-signingdisabled", "Code integrity disabled"),
                        ("x-ms-azurevm-testsigning-enabled", "Test signing"),
                        ("x-ms-azurevm-flightsigning-enabled", "Flight signing"),
                        ("x-ms-azurevm-debuggersdisabled", "Debuggers disabled"),
                        ("x-ms-azurevm-elam-enabled", "Early-launch anti-malware"),
                    ] {
                        @if let Some(v) = claim(k) {
                            tr data-claim=(k) { th { (label) " " span.mono.muted { (k) } } td { (v) } }
                        }
                    }
                }
            }
        }
    }
}

/// How many attestations the timeline shows.
pub const TIMELINE: u32 = 50;

/// The Boot integrity page's body (the figure `bench portal` measures).
pub async fn integrity_body(ctx: &Ctx, name: &str) -> Result<Markup, ApiError> {
    let history = ctx.app.service.store.history(name, TIMELINE).await?;
    let Some(latest) = history.first() else {
        return Ok(html! {
            p id="no-attestation" { "This VM has not been attested yet: its first boot with the agent running will be." }
        });
    };
    let doc = &latest.attestation.appraisal;
    let checks = doc["appraisal"]["checks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let failed: Vec<&Value> = checks.iter().filter(|c| c["outcome"] == "fail").collect();
    let report = &doc["bootReport"];
    let deviations: Vec<(&str, &Value)> = [
        ("early boot", "earlyBootReportEvent"),
        ("late boot", "lateBootReportEvent"),
    ]
    .iter()
    .flat_map(|(phase, key)| {
        report[*key]["deviations"]
            .as_array()
            .into_iter()
            .flatten()
            .map(move |d| (*phase, d))
    })
    .collect();
    let phase = |key: &str, title: &str, id: &str| {
        let p = &report[key];
        html! {
            section aria-labelledby=(format!("{id}-h")) id=(id) {
                h3 id=(format!("{id}-h")) { (title) " "
                    @if p.is_null() { (badge("unknown")) }
                    @else if p["policyEvaluationPassed"] == json!(true) { (badge("pass")) }
                    @else { (badge("fail")) }
                }
                @if let Some(devs) = p["deviations"].as_array().filter(|d| !d.is_empty()) {
                    table.deviations {
                        caption { "Differences from the baseline" }
                        thead { tr { th { "Component" } th { "Baseline" } th { "This boot" } } }
                        tbody {
                            @for d in devs {
                                tr {
                                    td { (d["component"].as_str().unwrap_or_default()) }
                                    td.mono.hash { (d["expected"].as_str().unwrap_or("absent")) }
                                    td.mono.hash { (d["actual"].as_str().unwrap_or("absent")) }
                                }
                            }
                        }
                    }
                }
                details {
                    summary { "Components measured" }
                    (components(&p["actualMeasurements"]))
                }
            }
        }
    };
    Ok(html! {
        section aria-labelledby="latest-h" {
            h2 id="latest-h" { "Latest appraisal" }
            p id="verdict" {
                (badge(if latest.attestation.healthy { "healthy" } else { "unhealthy" }))
                " boot #" (doc["bootCounter"]) " · attested " (when(Some(latest.attestation.at)))
                @if !failed.is_empty() {
                    " · failing: "
                    @for (i, c) in failed.iter().enumerate() {
                        @if i > 0 { ", " }
                        strong.failing-check { (c["name"].as_str().unwrap_or_default()) }
                    }
                }
            }
            @if let Some(e) = doc["baselineEvent"].as_str() { p.muted { "Baseline: " (e) } }
            @if !failed.is_empty() {
                section.failures aria-labelledby="failed-h" id="failures" {
                    h3 id="failed-h" { "What failed" }
                    ul {
                        @for c in &failed {
                            li { strong.mono { (c["name"].as_str().unwrap_or_default()) } ": " (c["detail"].as_str().unwrap_or_default()) }
                        }
                    }
                    @if !deviations.is_empty() {
                        div.scroll {
                            table.deviations id="deviations" {
                                caption { "Differences from the baseline" }
                                thead { tr { th { "Component" } th { "Phase" } th { "Baseline" } th { "This boot" } } }
                                tbody {
                                    @for (phase, d) in &deviations {
                                        tr {
                                            td { (d["component"].as_str().unwrap_or_default()) }
                                            td { (phase) }
                                            td.mono.hash { (d["expected"].as_str().unwrap_or("absent")) }
                                            td.mono.hash { (d["actual"].as_str().unwrap_or("absent")) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            div.scroll {
                table id="checks" {
                    thead { tr { th { "Check" } th { "Outcome" } th { "What was found" } th.evidence { "Evidence" } } }
                    tbody {
                        @for c in &checks {
                            @let outcome = c["outcome"].as_str().unwrap_or("skipped");
                            tr data-check=(c["name"].as_str().unwrap_or_default()) data-outcome=(outcome) {
                                td.mono { (c["name"].as_str().unwrap_or_default()) }
                                td { (badge(outcome)) }
                                td { (c["detail"].as_str().unwrap_or_default()) }
                                td.evidence { ul { @for e in c["evidence"].as_array().into_iter().flatten() { (cite(e)) } } }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(w) = doc["appraisal"]["windows"].as_object() {
            (windows_features(w, &doc["appraisal"]["claims"]))
        }
        section aria-labelledby="report-h" {
            h2 id="report-h" { "Boot reports" }
            (phase("earlyBootReportEvent", "Early boot (PCR 0–7)", "early-boot"))
            (phase("lateBootReportEvent", "Late boot (PCR 8–15)", "late-boot"))
        }
        section aria-labelledby="history-h" {
            h2 id="history-h" { "Attestation history" }
            ol.timeline id="timeline" {
                @for a in &history {
                    @let d = &a.attestation.appraisal;
                    li class=(if a.attestation.healthy { "good" } else { "bad" }) {
                        (when(Some(a.attestation.at))) " · boot #" (d["bootCounter"]) " · "
                        (badge(if a.attestation.healthy { "healthy" } else { "unhealthy" }))
                        @for c in d["verdict"]["failed"].as_array().into_iter().flatten() {
                            " " span.mono { (c["name"].as_str().unwrap_or_default()) }
                        }
                    }
                }
            }
        }
    })
}

/// `/portal/vms/{vm}/integrity`.
pub async fn integrity(State(ctx): St, viewer: Viewer, Path(name): Path<String>) -> Response {
    let f = match found_or_404(&ctx, &viewer, &name, false).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    match integrity_body(&ctx, &f.name).await {
        Ok(body) => page(
            &viewer,
            Nav::Vms,
            &format!("{} · Boot integrity", f.name),
            html! { h1 { (f.name) } (vm_tabs(&f.name, "Boot integrity")) (body) },
        ),
        Err(e) => error_page(&e.message, e.status),
    }
}

/// `/portal/vms/{vm}/baseline`: the baseline, its state and audit trail;
/// approve, relearn, pin.
pub async fn baseline(State(ctx): St, viewer: Viewer, Path(name): Path<String>) -> Response {
    let f = match found_or_404(&ctx, &viewer, &name, false).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let b = ctx
        .get(
            &viewer.caller,
            &format!("/v1/vms/{}/baseline", enc(&f.name)),
        )
        .await;
    let can = viewer.can(Role::Operator);
    let body = match b {
        Err(e) => html! { p.error role="alert" { (e.message) } },
        Ok(b) => html! {
            dl.props {
                dt { "State" } dd id="baseline-state" { (badge(b["state"].as_str().unwrap_or_default())) }
                dt { "Version" } dd id="baseline-version" { (b["version"]) }
            }
            @if can {
                div.actions {
                    @for (action, label) in [("approve", "Approve the proposed baseline"), ("relearn", "Relearn at the next boot"), ("pin", "Pin to the latest attestation")] {
                        form.inline method="post" action=(format!("{}/baseline", vm_href(&f.name))) {
                            (csrf(&viewer))
                            input type="hidden" name="action" value=(action);
                            input type="hidden" name="ifVersion" value=(b["version"]);
                            button.secondary type="submit" id=(format!("baseline-{action}")) { (label) }
                        }
                    }
                }
            }
            @for (key, title) in [("baseline", "Baseline"), ("pending", "Proposed (awaiting approval)")] {
                @if let Some(m) = b[key].as_object() {
                    h2 { (title) }
                    @let m = if key == "pending" { b[key]["measurements"].clone() } else { Value::Object(m.clone()) };
                    (measurements(&m))
                }
            }
            h2 { "Audit trail" }
            ol.timeline {
                @for a in b["audit"].as_array().into_iter().flatten() {
                    li { (when(a["at"].as_i64())) " · " (a["action"].as_str().unwrap_or_default()) " by " (a["actor"].as_str().unwrap_or_default()) " (version " (a["version"]) ")" }
                }
            }
        },
    };
    page(
        &viewer,
        Nav::Vms,
        &format!("{} · Baseline", f.name),
        html! { h1 { (f.name) } (vm_tabs(&f.name, "Baseline")) (body) },
    )
}

fn measurements(m: &Value) -> Markup {
    html! {
        dl.props {
            @if let Some(fw) = m["firmware"].as_str() { dt { "Firmware (PCR 0)" } dd.mono.hash { (fw) } }
        }
        @for (key, title) in [("boot_applications", "Boot applications"), ("uki_sections", "UKI sections"), ("command_lines", "Command lines"), ("secure_boot", "Secure Boot variables")] {
            @if let Some(list) = m[key].as_array() {
                h3 { (title) }
                (components(&Value::Array(list.clone())))
            }
        }
    }
}

/// Approve / relearn / pin (through the API).
pub async fn baseline_action(State(ctx): St, Path(name): Path<String>, posted: Posted) -> Response {
    let viewer = &posted.viewer;
    let action = posted.fields.get("action").unwrap_or_default();
    if !["approve", "relearn", "pin"].contains(&action) {
        return error_page("Unknown baseline action.", StatusCode::BAD_REQUEST);
    }
    let body = match (
        action,
        posted
            .fields
            .get("ifVersion")
            .and_then(|v| v.parse::<i64>().ok()),
    ) {
        ("relearn", _) | (_, None) => None,
        (_, Some(v)) => Some(json!({"ifVersion": v})),
    };
    let r = ctx
        .call(
            &viewer.caller,
            Method::POST,
            &format!("/v1/vms/{}/baseline/{action}", enc(&name)),
            body.as_ref(),
        )
        .await;
    let flash = match r {
        Ok(_) => Flash {
            ok: true,
            text: format!("Baseline: {action} done."),
        },
        Err(e) => Flash {
            ok: false,
            text: e.message,
        },
    };
    ctx.app.sessions.flash(&viewer.session, flash).await;
    Redirect::to(&format!("{}/baseline", vm_href(&name))).into_response()
}

/// How much of the serial console the page shows.
pub const CONSOLE_TAIL: u64 = 16 * 1024;

/// `/portal/vms/{vm}/console`: the serial console's tail (guest output:
/// control characters shown as `·`, everything escaped).
pub async fn console(State(ctx): St, viewer: Viewer, Path(name): Path<String>) -> Response {
    let f = match found_or_404(&ctx, &viewer, &name, false).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let tail = match &ctx.app.monitor {
        Some(m) => m.console_tail(&f.name, CONSOLE_TAIL).await.ok().flatten(),
        None => None,
    };
    page(
        &viewer,
        Nav::Vms,
        &format!("{} · Serial console", f.name),
        html! {
            h1 { (f.name) }
            (vm_tabs(&f.name, "Serial console"))
            @match tail {
                Some(t) => {
                    p.muted { "The last " (CONSOLE_TAIL / 1024) " KiB of this boot's serial console (what the guest printed: not evidence)." }
                    pre.console id="console" tabindex="0" { (printable(&t)) }
                }
                None => p id="console-none" { "No serial console here: the VM does not run on this server's host." }
            }
        },
    )
}
