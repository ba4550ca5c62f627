//! Scale sets, page by page as Azure's documentation walks through them:
//! Overview, Size, Operating system, Configuration, Extensions, Instances,
//! Upgrade policy, and the running operation's live progress. Reads are
//! the API's GETs, changes its PATCHes and POSTs, as the signed-in caller.

use axum::extract::State;
use axum::extract::{Path, Query};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Value};
use trustlaunch_store::Role;

use super::layout::{badge, csrf, error_page, failure_page, field_error, form_error, tabs, when};
use super::session::Flash;
use super::vms::short_image;
use super::{enc, page, set_href, ApiFailure, Ctx, Nav, Posted, St, Viewer};

/// The Guest Attestation extension's publisher (Linux).
const GA_PUBLISHER: &str = "Microsoft.Azure.Security.LinuxAttestation";

fn api_path(rg: &str, name: &str) -> String {
    format!(
        "/subscriptions/local/resourceGroups/{}/providers/Microsoft.Compute/virtualMachineScaleSets/{}",
        enc(rg),
        enc(name)
    )
}

fn set_tabs(rg: &str, name: &str, current: &str) -> Markup {
    tabs(
        &[
            ("Overview", set_href(rg, name, "")),
            ("Size", set_href(rg, name, "/size")),
            ("Operating system", set_href(rg, name, "/os")),
            ("Configuration", set_href(rg, name, "/configuration")),
            ("Extensions", set_href(rg, name, "/extensions")),
            ("Instances", set_href(rg, name, "/instances")),
            ("Upgrade policy", set_href(rg, name, "/upgrade-policy")),
        ],
        current,
    )
}

/// The set as the API shows it, or the page that says why not.
async fn load(ctx: &Ctx, viewer: &Viewer, rg: &str, name: &str) -> Result<Value, Response> {
    if ctx.app.control.is_none() {
        return Err(error_page(
            "This server runs no control plane (start it with a driver).",
            StatusCode::SERVICE_UNAVAILABLE,
        ));
    }
    ctx.get(&viewer.caller, &api_path(rg, name))
        .await
        .map_err(|f| failure_page(viewer, Nav::Sets, &f))
}

fn security_type(set: &Value) -> &str {
    set["properties"]["virtualMachineProfile"]["securityProfile"]["securityType"]
        .as_str()
        .unwrap_or("Standard")
}

fn uefi(set: &Value, key: &str) -> Option<bool> {
    set["properties"]["virtualMachineProfile"]["securityProfile"]["uefiSettings"][key].as_bool()
}

fn image_of(set: &Value) -> &str {
    set["properties"]["virtualMachineProfile"]["storageProfile"]["imageReference"]["id"]
        .as_str()
        .unwrap_or_default()
}

fn frame(viewer: &Viewer, rg: &str, name: &str, tab: &str, body: Markup) -> Response {
    page(
        viewer,
        Nav::Sets,
        &format!("{name} · {tab}"),
        html! {
            p.muted { a href="/portal/scale-sets" { "Scale sets" } " › " (rg) }
            h1 { (name) }
            (set_tabs(rg, name, tab))
            (body)
        },
    )
}

fn with_status(mut r: Response, f: Option<&ApiFailure>) -> Response {
    if let Some(f) = f {
        *r.status_mut() = f.status;
    }
    r
}

/// `/portal/scale-sets`.
pub async fn list(State(ctx): St, viewer: Viewer) -> Response {
    let Some(c) = &ctx.app.control else {
        return error_page(
            "This server runs no control plane (start it with a driver).",
            StatusCode::SERVICE_UNAVAILABLE,
        );
    };
    let sets = match c.scale_sets(None).await {
        Ok(s) => s,
        Err(e) => {
            let e = crate::ApiError::from(e);
            return error_page(&e.message, e.status);
        }
    };
    page(
        &viewer,
        Nav::Sets,
        "Scale sets",
        html! {
            h1 { "Virtual machine scale sets" }
            @if sets.is_empty() { p id="no-sets" { "No scale sets yet: create one with " code { "trustlaunch vmss create" } " or the API." } }
            @else {
                div.scroll { table id="sets" {
                    thead { tr { th { "Name" } th { "Resource group" } th { "Size" } th { "Instances" } th { "Security type" } th { "Upgrade policy" } } }
                    tbody {
                        @for s in &sets {
                            @let rg = s.id.as_ref().map(|i| i.resource_group().to_owned()).unwrap_or_default();
                            tr {
                                td { a href=(set_href(&rg, &s.name, "")) { (s.name) } }
                                td { (rg) }
                                td { (s.sku.name) }
                                td { (s.sku.capacity) }
                                td { (s.properties.virtual_machine_profile.security_profile.as_ref().and_then(|p| p.security_type).map_or("Standard", |t| t.as_str())) }
                                td { (s.upgrade_policy().mode.as_str()) }
                            }
                        }
                    }
                } }
            }
        },
    )
}

/// Path of a scale set's page.
#[derive(Deserialize)]
pub struct SetPath {
    rg: String,
    name: String,
}

/// Overview: the Security type link to Configuration, as in Azure.
pub async fn overview(State(ctx): St, viewer: Viewer, Path(p): Path<SetPath>) -> Response {
    let set = match load(&ctx, &viewer, &p.rg, &p.name).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let latest = ctx
        .get(
            &viewer.caller,
            &format!("{}/rollingUpgrades/latest", api_path(&p.rg, &p.name)),
        )
        .await
        .ok();
    let props = &set["properties"];
    frame(
        &viewer,
        &p.rg,
        &p.name,
        "Overview",
        html! {
            dl.props id="overview" {
                dt { "Provisioning state" } dd id="provisioning" { (badge(props["provisioningState"].as_str().unwrap_or("Succeeded"))) }
                dt { "Size" } dd id="size" { (set["sku"]["name"].as_str().unwrap_or_default()) }
                dt { "Instances" } dd id="capacity" { (set["sku"]["capacity"]) }
                dt { "Image" } dd id="image" { (short_image(image_of(&set))) }
                dt { "Security type" } dd { a href=(set_href(&p.rg, &p.name, "/configuration")) id="security-type" { (security_type(&set)) } }
                dt { "Secure Boot" } dd id="secure-boot" { (on_off(uefi(&set, "secureBootEnabled"))) }
                dt { "vTPM" } dd id="vtpm" { (on_off(uefi(&set, "vTpmEnabled"))) }
                dt { "Upgrade policy" } dd id="upgrade-mode" { (props["upgradePolicy"]["mode"].as_str().unwrap_or("Manual")) }
                dt { "Model version" } dd id="model-version" { (props["modelVersion"]) }
                dt { "Orchestration" } dd { (props["orchestrationMode"].as_str().unwrap_or("Uniform")) }
            }
            @if let Some(l) = latest {
                h2 { "Latest rolling upgrade" }
                p id="rolling-latest" {
                    (badge(l["properties"]["runningStatus"]["code"].as_str().unwrap_or_default()))
                    " started " (when(l["properties"]["runningStatus"]["startTime"].as_i64()))
                    @if let Some(m) = l["properties"]["error"]["message"].as_str() { " · " (m) }
                }
            }
        },
    )
}

fn on_off(b: Option<bool>) -> &'static str {
    match b {
        Some(true) => "Enabled",
        _ => "Disabled",
    }
}

/// After a change: to the operation it started (live progress), else
/// back to `back` with a message.
async fn after_change(
    ctx: &Ctx,
    viewer: &Viewer,
    reply: &super::bridge::ApiReply,
    back: &str,
    what: &str,
) -> Response {
    let mut text = what.to_owned();
    for w in &reply.warnings {
        text.push_str(" Warning: ");
        text.push_str(w);
    }
    ctx.app
        .sessions
        .flash(&viewer.session, Flash { ok: true, text })
        .await;
    match &reply.operation {
        Some(op) => Redirect::to(&format!(
            "/portal/operations/{}?back={}",
            enc(op),
            enc(back)
        ))
        .into_response(),
        None => Redirect::to(back).into_response(),
    }
}

async fn patch(
    ctx: &Ctx,
    viewer: &Viewer,
    p: &SetPath,
    body: &Value,
    consent: bool,
) -> Result<super::bridge::ApiReply, ApiFailure> {
    let mut path = api_path(&p.rg, &p.name);
    if consent {
        path.push_str("?confirmOsDiskDataLoss=true");
    }
    ctx.call(&viewer.caller, Method::PATCH, &path, Some(body))
        .await
}

// ---------------------------------------------------------------- size

async fn size_page(
    ctx: &Ctx,
    viewer: &Viewer,
    p: &SetPath,
    failure: Option<&ApiFailure>,
) -> Response {
    let set = match load(ctx, viewer, &p.rg, &p.name).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Some(c) = &ctx.app.control else {
        return error_page("no control plane", StatusCode::SERVICE_UNAVAILABLE);
    };
    let usage = c.usage(&api_path(&p.rg, &p.name)).await.unwrap_or_default();
    let current = set["sku"]["name"].as_str().unwrap_or_default().to_owned();
    let can = viewer.can(Role::Operator);
    with_status(
        frame(
            viewer,
            &p.rg,
            &p.name,
            "Size",
            html! {
                (form_error(failure, &["sku", "sku.name"]))
                form method="post" action=(set_href(&p.rg, &p.name, "/size")) {
                    (csrf(viewer))
                    fieldset {
                        legend { "Sizes (current: " strong id="current-size" { (current) } ")" }
                        (field_error("size", failure, "sku"))
                        div.scroll { table id="sizes" {
                            thead { tr { th { "Size" } th { "vCPUs" } th { "Memory" } th { "Family" } th { "Trusted launch" } th { "Family quota left (vCPUs)" } } }
                            tbody {
                                @for z in c.sizes.sizes() {
                                    tr {
                                        td { label.check { input type="radio" name="size" value=(z.name) id=(format!("size-{}", z.name)) checked[z.name == current] disabled[!can]; (z.name) } }
                                        td { (z.vcpus) }
                                        td { (z.memory_mib / 1024) " GiB" }
                                        td { (z.family) }
                                        td { @if z.supports_trusted_launch() { "Supported" } @else { "Not supported" } }
                                        td { @match c.quotas.limit(&z.family) {
                                            Some(limit) => { (limit.saturating_sub(usage.used(&z.family))) " of " (limit) }
                                            None => { "no limit" }
                                        } }
                                    }
                                }
                            }
                        } }
                    }
                    @if can { div.actions { button type="submit" id="resize" { "Resize" } } }
                }
            },
        ),
        failure,
    )
}

/// Size.
pub async fn size(State(ctx): St, viewer: Viewer, Path(p): Path<SetPath>) -> Response {
    size_page(&ctx, &viewer, &p, None).await
}

/// Resize: `PATCH {"sku": {"name"}}`.
pub async fn resize(State(ctx): St, Path(p): Path<SetPath>, posted: Posted) -> Response {
    let viewer = &posted.viewer;
    let size = posted.fields.get("size").unwrap_or_default().to_owned();
    match patch(&ctx, viewer, &p, &json!({"sku": {"name": size}}), false).await {
        Ok(r) => {
            after_change(
                &ctx,
                viewer,
                &r,
                &set_href(&p.rg, &p.name, "/size"),
                &format!("Resized to {size}."),
            )
            .await
        }
        Err(f) => size_page(&ctx, viewer, &p, Some(&f)).await,
    }
}

// ---------------------------------------------------------------- OS

async fn os_page(
    ctx: &Ctx,
    viewer: &Viewer,
    p: &SetPath,
    failure: Option<&ApiFailure>,
) -> Response {
    let set = match load(ctx, viewer, &p.rg, &p.name).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let versions = match &ctx.app.control {
        Some(c) => super::images::version_ids(c).await.unwrap_or_default(),
        None => Vec::new(),
    };
    let current = image_of(&set).to_owned();
    let can = viewer.can(Role::Operator);
    let target = "properties.virtualMachineProfile.storageProfile";
    with_status(
        frame(
            viewer,
            &p.rg,
            &p.name,
            "Operating system",
            html! {
                dl.props { dt { "Image" } dd id="current-image" { (short_image(&current)) } dt { "Image reference" } dd.mono { (current) } }
                h2 { "Change image reference" }
                (form_error(failure, &[target]))
                form.stack method="post" action=(set_href(&p.rg, &p.name, "/os")) {
                    (csrf(viewer))
                    label for="image" { "Image version" }
                    select id="image" name="image" disabled[!can] {
                        @for v in &versions { option value=(v) selected[*v == current] { (short_image(v)) } }
                    }
                    (field_error("image", failure, target))
                    p.warning role="note" id="data-loss-warning" {
                        "Changing the image reference re-creates each instance's OS disk when it is upgraded: what was written to it is lost."
                    }
                    label.check { input type="checkbox" name="confirm" id="confirm-data-loss" disabled[!can]; "I understand that the OS disk's data will be lost" }
                    @if can { div.actions { button type="submit" id="change-image" { "Save" } } }
                }
            },
        ),
        failure,
    )
}

/// Operating system.
pub async fn os(State(ctx): St, viewer: Viewer, Path(p): Path<SetPath>) -> Response {
    os_page(&ctx, &viewer, &p, None).await
}

/// Change image reference: `PATCH` the image, with the OS-disk consent
/// only if the box was ticked (the API refuses otherwise, and says why).
pub async fn change_image(State(ctx): St, Path(p): Path<SetPath>, posted: Posted) -> Response {
    let viewer = &posted.viewer;
    let image = posted.fields.get("image").unwrap_or_default().to_owned();
    let body = json!({"properties": {"virtualMachineProfile": {"storageProfile": {"imageReference": {"id": image}}}}});
    match patch(&ctx, viewer, &p, &body, posted.fields.checked("confirm")).await {
        Ok(r) => {
            after_change(
                &ctx,
                viewer,
                &r,
                &set_href(&p.rg, &p.name, "/os"),
                &format!("Image reference changed to {}.", short_image(&image)),
            )
            .await
        }
        Err(f) => os_page(&ctx, viewer, &p, Some(&f)).await,
    }
}

// ---------------------------------------------------------------- configuration

struct Security {
    kind: String,
    secure_boot: bool,
    vtpm: bool,
}

async fn configuration_page(
    ctx: &Ctx,
    viewer: &Viewer,
    p: &SetPath,
    wanted: Option<&Security>,
    confirm: bool,
    failure: Option<&ApiFailure>,
) -> Response {
    let set = match load(ctx, viewer, &p.rg, &p.name).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let current = Security {
        kind: security_type(&set).to_owned(),
        secure_boot: uefi(&set, "secureBootEnabled") == Some(true),
        vtpm: uefi(&set, "vTpmEnabled") == Some(true),
    };
    let s = wanted.unwrap_or(&current);
    let can = viewer.can(Role::Operator);
    let target = "properties.virtualMachineProfile.securityProfile";
    let action = set_href(&p.rg, &p.name, "/configuration");
    with_status(
        frame(
            viewer,
            &p.rg,
            &p.name,
            "Configuration",
            html! {
                (form_error(failure, &[target]))
                @if confirm {
                    section.warning role="alertdialog" aria-labelledby="confirm-h" id="confirm" {
                        h2 id="confirm-h" { "Update security type?" }
                        p { "The scale set's model changes from " strong { (current.kind) } " to " strong { (s.kind) } ". Instances take it when they are upgraded (by hand, or by the upgrade policy); each upgraded instance restarts." }
                        form method="post" action=(action) {
                            (csrf(viewer))
                            input type="hidden" name="securityType" value=(s.kind);
                            @if s.secure_boot { input type="hidden" name="secureBoot" value="on"; }
                            @if s.vtpm { input type="hidden" name="vtpm" value="on"; }
                            input type="hidden" name="confirmed" value="yes";
                            div.actions {
                                button type="submit" id="confirm-yes" { "Yes" }
                                a.button href=(action) id="confirm-no" { "No" }
                            }
                        }
                    }
                }
                form.stack method="post" action=(action) {
                    (csrf(viewer))
                    label for="security-type" { "Security type" }
                    select id="security-type" name="securityType" disabled[!can] {
                        @for (v, label) in [("Standard", "Standard"), ("TrustedLaunch", "Trusted launch virtual machines")] {
                            option value=(v) selected[s.kind == v] { (label) }
                        }
                    }
                    label.check { input type="checkbox" name="secureBoot" id="enable-secure-boot" checked[s.secure_boot] disabled[!can]; "Enable secure boot" }
                    label.check { input type="checkbox" name="vtpm" id="enable-vtpm" checked[s.vtpm] disabled[!can]; "Enable vTPM" }
                    p.help { "Secure Boot and vTPM apply to Trusted launch only. Trusted launch needs a Gen2 image that supports it and a size whose family does." }
                    (field_error("security-type", failure, target))
                    @if can { div.actions { button type="submit" id="save-configuration" { "Save" } } }
                }
            },
        ),
        failure,
    )
}

/// Configuration: the Security type dropdown, Enable secure boot, Enable
/// vTPM.
pub async fn configuration(State(ctx): St, viewer: Viewer, Path(p): Path<SetPath>) -> Response {
    configuration_page(&ctx, &viewer, &p, None, false, None).await
}

/// Save asks for a confirmation first (as Azure's portal does); the
/// confirmed form `PATCH`es the security profile.
pub async fn configure(State(ctx): St, Path(p): Path<SetPath>, posted: Posted) -> Response {
    let viewer = &posted.viewer;
    let f = &posted.fields;
    let wanted = Security {
        kind: if f.get("securityType") == Some("TrustedLaunch") {
            "TrustedLaunch".into()
        } else {
            "Standard".into()
        },
        secure_boot: f.checked("secureBoot"),
        vtpm: f.checked("vtpm"),
    };
    if f.get("confirmed") != Some("yes") {
        return configuration_page(&ctx, viewer, &p, Some(&wanted), true, None).await;
    }
    let profile = if wanted.kind == "TrustedLaunch" {
        json!({"securityType": "TrustedLaunch", "uefiSettings": {"secureBootEnabled": wanted.secure_boot, "vTpmEnabled": wanted.vtpm}})
    } else {
        json!({"securityType": "Standard", "uefiSettings": null})
    };
    let body = json!({"properties": {"virtualMachineProfile": {"securityProfile": profile}}});
    match patch(&ctx, viewer, &p, &body, false).await {
        Ok(r) => {
            after_change(
                &ctx,
                viewer,
                &r,
                &set_href(&p.rg, &p.name, "/configuration"),
                &format!("Security type set to {}.", wanted.kind),
            )
            .await
        }
        Err(e) => configuration_page(&ctx, viewer, &p, Some(&wanted), false, Some(&e)).await,
    }
}

// ---------------------------------------------------------------- extensions

fn extensions_of(set: &Value) -> Vec<Value> {
    set["properties"]["virtualMachineProfile"]["extensionProfile"]["extensions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn extensions_page(
    ctx: &Ctx,
    viewer: &Viewer,
    p: &SetPath,
    failure: Option<&ApiFailure>,
) -> Response {
    let set = match load(ctx, viewer, &p.rg, &p.name).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let exts = extensions_of(&set);
    let has_ga = exts
        .iter()
        .any(|e| e["properties"]["type"] == "GuestAttestation");
    let can = viewer.can(Role::Operator);
    let action = set_href(&p.rg, &p.name, "/extensions");
    with_status(
        frame(
            viewer,
            &p.rg,
            &p.name,
            "Extensions",
            html! {
                (form_error(failure, &[]))
                @if exts.is_empty() { p id="no-extensions" { "No extensions." } }
                @else {
                    table id="extensions" {
                        thead { tr { th { "Name" } th { "Publisher" } th { "Type" } th { "Version" } th {} } }
                        tbody {
                            @for e in &exts {
                                @let n = e["name"].as_str().unwrap_or_default();
                                tr {
                                    td { (n) }
                                    td { (e["properties"]["publisher"].as_str().unwrap_or_default()) }
                                    td { (e["properties"]["type"].as_str().unwrap_or_default()) }
                                    td { (e["properties"]["typeHandlerVersion"].as_str().unwrap_or_default()) }
                                    td { @if can { form.inline method="post" action=(action) {
                                        (csrf(viewer))
                                        input type="hidden" name="remove" value=(n);
                                        button.secondary type="submit" aria-label=(format!("Remove {n}")) { "Remove" }
                                    } } }
                                }
                            }
                        }
                    }
                }
                @if can && !has_ga {
                    form method="post" action=(action) {
                        (csrf(viewer))
                        input type="hidden" name="add" value="GuestAttestation";
                        p.help { "Guest Attestation proves at every boot that the instances booted as they should (integrity monitoring)." }
                        button type="submit" id="add-guest-attestation" { "Add Guest Attestation" }
                    }
                }
            },
        ),
        failure,
    )
}

/// Extensions.
pub async fn extensions(State(ctx): St, viewer: Viewer, Path(p): Path<SetPath>) -> Response {
    extensions_page(&ctx, &viewer, &p, None).await
}

/// Adds Guest Attestation or removes an extension: `PATCH` of the whole
/// list (a merge patch replaces an array).
pub async fn change_extensions(State(ctx): St, Path(p): Path<SetPath>, posted: Posted) -> Response {
    let viewer = &posted.viewer;
    let set = match load(&ctx, viewer, &p.rg, &p.name).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut exts = extensions_of(&set);
    let what = if posted.fields.get("add") == Some("GuestAttestation") {
        exts.push(json!({"name": "GuestAttestation", "properties": {"publisher": GA_PUBLISHER, "type": "GuestAttestation", "typeHandlerVersion": "1.0", "autoUpgradeMinorVersion": true}}));
        "Guest Attestation added.".to_owned()
    } else if let Some(n) = posted.fields.get("remove") {
        exts.retain(|e| e["name"].as_str() != Some(n));
        format!("{n} removed.")
    } else {
        return error_page("Nothing to change.", StatusCode::BAD_REQUEST);
    };
    let body = json!({"properties": {"virtualMachineProfile": {"extensionProfile": {"extensions": exts}}}});
    match patch(&ctx, viewer, &p, &body, false).await {
        Ok(r) => {
            after_change(
                &ctx,
                viewer,
                &r,
                &set_href(&p.rg, &p.name, "/extensions"),
                &what,
            )
            .await
        }
        Err(f) => extensions_page(&ctx, viewer, &p, Some(&f)).await,
    }
}

// ---------------------------------------------------------------- instances

async fn instances_page(
    ctx: &Ctx,
    viewer: &Viewer,
    p: &SetPath,
    failure: Option<&ApiFailure>,
) -> Response {
    let set = match load(ctx, viewer, &p.rg, &p.name).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut list = Vec::new();
    let mut next = Some(format!("{}/virtualMachines", api_path(&p.rg, &p.name)));
    while let Some(url) = next.take() {
        match ctx.get(&viewer.caller, &url).await {
            Ok(b) => {
                list.extend(b["value"].as_array().cloned().unwrap_or_default());
                next = b["nextLink"]
                    .as_str()
                    .and_then(|l| l.find("/subscriptions/").map(|i| l[i..].to_owned()));
            }
            Err(f) => return failure_page(viewer, Nav::Sets, &f),
        }
        if list.len() > 10_000 {
            break;
        }
    }
    let manual = set["properties"]["upgradePolicy"]["mode"]
        .as_str()
        .unwrap_or("Manual")
        == "Manual";
    let can = viewer.can(Role::Operator);
    with_status(
        frame(
            viewer,
            &p.rg,
            &p.name,
            "Instances",
            html! {
                (form_error(failure, &["instanceIds"]))
                form method="post" action=(set_href(&p.rg, &p.name, "/instances")) {
                    (csrf(viewer))
                    (field_error("instances", failure, "instanceIds"))
                    div.scroll { table id="instances" {
                        thead { tr {
                            th { @if can { label { input type="checkbox" data-select-all="instance" aria-label="Select every instance"; } } }
                            th { "Instance" } th { "Latest model" } th { "Security type" } th { "Power state" } th { "Health" } th { "Host name" }
                        } }
                        tbody {
                            @for i in &list {
                                @let id = i["instanceId"].as_str().unwrap_or_default();
                                @let props = &i["properties"];
                                tr data-instance=(id) {
                                    td { @if can { input type="checkbox" name="instance" value=(id) id=(format!("instance-{id}")) aria-label=(format!("Select instance {id}")); } }
                                    td { (i["name"].as_str().unwrap_or(id)) }
                                    td.model { @if props["latestModelApplied"] == json!(true) { "Yes" } @else { strong { "No" } } }
                                    td.security { (props["securityProfile"]["securityType"].as_str().unwrap_or("Standard")) }
                                    td.power { (props["powerState"].as_str().or_else(|| i["powerState"].as_str()).unwrap_or("—")) }
                                    td.health { (badge(props["health"].as_str().unwrap_or("Unknown"))) }
                                    td.mono { @if let Some(r) = props["runtimeName"].as_str() { a href=(super::vm_href(r)) { (r) } } }
                                }
                            }
                        }
                    } }
                    @if can {
                        div.actions {
                            button type="submit" name="action" value="upgrade" id="upgrade" { "Upgrade" }
                            button.secondary type="submit" name="action" value="restart" id="restart" { "Restart" }
                            button.secondary type="submit" name="action" value="reimage" id="reimage" { "Reimage" }
                            @if !manual { button.secondary type="submit" name="action" value="rolling" id="rolling-start" { "Start rolling upgrade (all)" } }
                        }
                        @if !manual { p.help { "The upgrade policy is " (set["properties"]["upgradePolicy"]["mode"].as_str().unwrap_or_default()) ": instances are upgraded by it; Upgrade still takes the selected ones now." } }
                    }
                }
            },
        ),
        failure,
    )
}

/// Instances.
pub async fn instances(State(ctx): St, viewer: Viewer, Path(p): Path<SetPath>) -> Response {
    instances_page(&ctx, &viewer, &p, None).await
}

/// Upgrade / Restart / Reimage the selected instances, or start a rolling
/// upgrade of all.
pub async fn instance_action(State(ctx): St, Path(p): Path<SetPath>, posted: Posted) -> Response {
    let viewer = &posted.viewer;
    let ids = posted.fields.all("instance");
    let action = posted.fields.get("action").unwrap_or_default();
    let base = api_path(&p.rg, &p.name);
    let back = set_href(&p.rg, &p.name, "/instances");
    let result = match action {
        "rolling" => {
            ctx.call(
                &viewer.caller,
                Method::POST,
                &format!("{base}/osRollingUpgrade"),
                None,
            )
            .await
        }
        "upgrade" | "restart" | "reimage" if ids.is_empty() => Err(ApiFailure {
            status: StatusCode::BAD_REQUEST,
            code: "InvalidParameter".into(),
            message: "Select at least one instance.".into(),
            target: Some("instanceIds".into()),
        }),
        "upgrade" => {
            ctx.call(
                &viewer.caller,
                Method::POST,
                &format!("{base}/manualupgrade"),
                Some(&json!({"instanceIds": ids})),
            )
            .await
        }
        "restart" | "reimage" => {
            ctx.call(
                &viewer.caller,
                Method::POST,
                &format!("{base}/{action}"),
                Some(&json!({"instanceIds": ids})),
            )
            .await
        }
        _ => return error_page("Unknown action.", StatusCode::BAD_REQUEST),
    };
    match result {
        Ok(r) => {
            after_change(
                &ctx,
                viewer,
                &r,
                &back,
                &format!(
                    "{action}: {} instance(s).",
                    if ids.is_empty() {
                        "all".to_owned()
                    } else {
                        ids.join(", ")
                    }
                ),
            )
            .await
        }
        Err(f) => instances_page(&ctx, viewer, &p, Some(&f)).await,
    }
}

// ---------------------------------------------------------------- upgrade policy

async fn policy_page(
    ctx: &Ctx,
    viewer: &Viewer,
    p: &SetPath,
    failure: Option<&ApiFailure>,
) -> Response {
    let set = match load(ctx, viewer, &p.rg, &p.name).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let pol = &set["properties"]["upgradePolicy"];
    let mode = pol["mode"].as_str().unwrap_or("Manual");
    let r = &pol["rollingUpgradePolicy"];
    let can = viewer.can(Role::Operator);
    let num = |key: &str, default: u64| r[key].as_u64().unwrap_or(default);
    with_status(
        frame(
            viewer,
            &p.rg,
            &p.name,
            "Upgrade policy",
            html! {
                (form_error(failure, &["properties.upgradePolicy", "upgradePolicy", "rollingUpgradePolicy"]))
                form.stack method="post" action=(set_href(&p.rg, &p.name, "/upgrade-policy")) {
                    (csrf(viewer))
                    label for="mode" { "Upgrade mode" }
                    select id="mode" name="mode" disabled[!can] {
                        @for (m, label) in [("Manual", "Manual: upgrade instances by hand"), ("Automatic", "Automatic: every instance at once"), ("Rolling", "Rolling: in batches, with pauses and health checks")] {
                            option value=(m) selected[m == mode] { (label) }
                        }
                    }
                    fieldset {
                        legend { "Rolling upgrade policy" }
                        label for="batch" { "Maximum batch size (% of instances)" }
                        input type="number" id="batch" name="maxBatchInstancePercent" min="5" max="100" value=(num("maxBatchInstancePercent", 20)) disabled[!can];
                        label for="unhealthy" { "Maximum unhealthy instances (%)" }
                        input type="number" id="unhealthy" name="maxUnhealthyInstancePercent" min="5" max="100" value=(num("maxUnhealthyInstancePercent", 20)) disabled[!can];
                        label for="unhealthy-upgraded" { "Maximum unhealthy upgraded instances (%)" }
                        input type="number" id="unhealthy-upgraded" name="maxUnhealthyUpgradedInstancePercent" min="0" max="100" value=(num("maxUnhealthyUpgradedInstancePercent", 20)) disabled[!can];
                        label for="pause" { "Pause between batches (ISO 8601, e.g. PT0S)" }
                        input type="text" id="pause" name="pauseTimeBetweenBatches" value=(r["pauseTimeBetweenBatches"].as_str().unwrap_or("PT0S")) disabled[!can];
                        (field_error("pause", failure, "rollingUpgradePolicy.pauseTimeBetweenBatches"))
                    }
                    @if can { div.actions { button type="submit" id="save-policy" { "Save" } } }
                }
            },
        ),
        failure,
    )
}

/// Upgrade policy.
pub async fn upgrade_policy(State(ctx): St, viewer: Viewer, Path(p): Path<SetPath>) -> Response {
    policy_page(&ctx, &viewer, &p, None).await
}

/// Sets the upgrade policy: `PATCH {"properties": {"upgradePolicy"}}`.
pub async fn set_upgrade_policy(
    State(ctx): St,
    Path(p): Path<SetPath>,
    posted: Posted,
) -> Response {
    let viewer = &posted.viewer;
    let f = &posted.fields;
    let mode = f.get("mode").unwrap_or("Manual");
    let n = |k: &str| f.get(k).and_then(|v| v.trim().parse::<u64>().ok());
    let mut rolling = serde_json::Map::new();
    for k in [
        "maxBatchInstancePercent",
        "maxUnhealthyInstancePercent",
        "maxUnhealthyUpgradedInstancePercent",
    ] {
        if let Some(v) = n(k) {
            rolling.insert(k.into(), json!(v));
        }
    }
    if let Some(pause) = f.get("pauseTimeBetweenBatches").filter(|s| !s.is_empty()) {
        rolling.insert("pauseTimeBetweenBatches".into(), json!(pause));
    }
    let mut policy = json!({"mode": mode});
    if mode == "Rolling" {
        policy["rollingUpgradePolicy"] = Value::Object(rolling);
    }
    let body = json!({"properties": {"upgradePolicy": policy}});
    match patch(&ctx, viewer, &p, &body, false).await {
        Ok(r) => {
            after_change(
                &ctx,
                viewer,
                &r,
                &set_href(&p.rg, &p.name, "/upgrade-policy"),
                &format!("Upgrade policy set to {mode}."),
            )
            .await
        }
        Err(e) => policy_page(&ctx, viewer, &p, Some(&e)).await,
    }
}

// ---------------------------------------------------------------- operations

/// The operation page's query.
#[derive(Deserialize, Default)]
pub struct OpQuery {
    back: Option<String>,
    fragment: Option<u8>,
}

fn progress_numbers(p: &Value) -> (u64, u64, u64) {
    let g = |k: &str| p[k].as_u64().unwrap_or(0);
    let ok = g("succeeded") + g("successfulInstanceCount");
    let failed = g("failed") + g("failedInstanceCount");
    let total = match p["total"].as_u64() {
        Some(t) => t,
        None => ok + failed + g("inProgressInstanceCount") + g("pendingInstanceCount"),
    };
    (ok, failed, total)
}

fn operation_fragment(op: &Value, id: &str, back: &str) -> Markup {
    let status = op["status"].as_str().unwrap_or("InProgress");
    let running = status == "InProgress";
    let progress = &op["properties"]["progress"];
    let (ok, failed, total) = progress_numbers(progress);
    let poll = format!(
        "/portal/operations/{}?fragment=1&back={}",
        enc(id),
        enc(back)
    );
    html! {
        section id="operation" aria-live="polite"
            hx-get=[running.then_some(poll.as_str())] hx-trigger=[running.then_some("every 1s")] hx-swap="outerHTML" {
            dl.props {
                dt { "Operation" } dd.mono { (id) }
                dt { "What" } dd { (op["properties"]["kind"].as_str().unwrap_or_default()) }
                dt { "Status" } dd id="op-status" { (badge(status)) }
                dt { "Started" } dd { (when(op["startTime"].as_i64())) }
                @if let Some(t) = op["endTime"].as_i64() { dt { "Ended" } dd { (when(Some(t))) } }
                @if total > 0 {
                    dt { "Progress" }
                    dd {
                        progress id="op-progress" max=(total) value=(ok + failed) aria-label="Instances done" { (ok + failed) " of " (total) }
                        " " span id="op-counts" { (ok) " succeeded, " (failed) " failed, of " (total) }
                    }
                }
            }
            @if let Some(m) = op["error"]["message"].as_str() { p.error role="alert" id="op-error" { (m) } }
            @else if let Some(m) = op["error"].as_str() { p.error role="alert" id="op-error" { (m) } }
            @if running { p.muted { "This page follows the operation as it runs." } }
        }
    }
}

/// An operation with live progress (htmx polls the fragment every second
/// while it runs; without script, reload the page).
pub async fn operation(
    State(ctx): St,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(q): Query<OpQuery>,
) -> Response {
    let back = q
        .back
        .filter(|b| b.starts_with("/portal/") && !b.starts_with("//"))
        .unwrap_or_else(|| "/portal/scale-sets".into());
    let op = match ctx
        .get(&viewer.caller, &format!("/operations/{}", enc(&id)))
        .await
    {
        Ok(op) => op,
        Err(f) => return failure_page(&viewer, Nav::Sets, &f),
    };
    let frag = operation_fragment(&op, &id, &back);
    if q.fragment == Some(1) {
        return (
            [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
            frag.into_string(),
        )
            .into_response();
    }
    page(
        &viewer,
        Nav::Sets,
        "Operation",
        html! {
            h1 { "Operation" }
            (frag)
            p { a href=(back) id="back" { "Back" } }
        },
    )
}
