//! Home: the fleet at a glance.

use axum::extract::State;
use std::collections::BTreeMap;

use axum::response::Response;
use maud::html;
use trustlaunch_fleet::resources::ScaleSet;
use trustlaunch_store::OperationStatus;

use super::layout::{badge, error_page};
use super::{page, Nav, St, Viewer};

/// `/`: VMs by security type and attested health, active alerts by
/// severity, operations running.
pub async fn home_body(ctx: &super::Ctx, viewer: &Viewer) -> Result<Response, crate::ApiError> {
    let store = &ctx.app.service.store;
    let mut by_type: BTreeMap<String, u64> = [("TrustedLaunch", 0), ("Standard", 0)]
        .into_iter()
        .map(|(t, n)| (t.to_owned(), n))
        .collect();
    by_type.extend(store.vm_security_counts().await?);
    let health: BTreeMap<String, u64> = store.vm_health_counts().await?.into_iter().collect();
    let mut severities: BTreeMap<String, u64> = BTreeMap::new();
    for a in ctx.app.service.alerts(None, Some("active".into())).await? {
        *severities
            .entry(format!("{:?}", a.alert.severity))
            .or_default() += 1;
    }
    let mut running = Vec::new();
    let mut sets_by_type: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut arm_vms = 0usize;
    if let Some(c) = &ctx.app.control {
        let sets: Vec<ScaleSet> = c.scale_sets(None).await.map_err(crate::ApiError::from)?;
        for s in &sets {
            let t = s
                .properties
                .virtual_machine_profile
                .security_profile
                .as_ref()
                .and_then(|p| p.security_type)
                .map_or("Standard", |t| t.as_str());
            *sets_by_type.entry(t).or_default() += 1;
        }
        let vms = c.vms(None).await.map_err(crate::ApiError::from)?;
        arm_vms = vms.len();
        let targets = sets
            .iter()
            .filter_map(|s| s.id.as_ref().map(|i| (i.to_string(), s.name.clone(), true)))
            .chain(vms.iter().filter_map(|v| {
                v.id.as_ref()
                    .map(|i| (i.to_string(), v.name.clone(), false))
            }));
        for (id, name, is_set) in targets {
            for o in c.store.operations_on(&id).await? {
                if o.status == OperationStatus::InProgress {
                    running.push((o.id, o.kind, name.clone(), id.clone(), is_set));
                }
            }
        }
    }
    let total: u64 = health.values().sum();
    Ok(page(
        viewer,
        Nav::Home,
        "Home",
        html! {
            h1 { "Home" }
            div.cards {
                section.card aria-labelledby="h-types" {
                    h2 id="h-types" { "VMs by security type" }
                    p.big id="vms-total" { (total) }
                    ul {
                        @for (t, n) in &by_type {
                            li { (t) ": " strong id=(format!("vms-{t}")) { (n) } }
                        }
                    }
                    @if arm_vms > 0 || !sets_by_type.is_empty() {
                        p.muted {
                            (arm_vms) " VM(s) and "
                            (sets_by_type.values().sum::<u64>()) " scale set(s) in the control plane"
                            @for (t, n) in &sets_by_type { " · " (t) ": " (n) }
                        }
                    }
                }
                section.card aria-labelledby="h-health" {
                    h2 id="h-health" { "Attested health" }
                    ul {
                        @for w in ["healthy", "unhealthy", "unknown"] {
                            li { (badge(w)) " " strong id=(format!("health-{w}")) { (health.get(w).copied().unwrap_or(0)) } }
                        }
                    }
                    a href="/portal/vms?health=unhealthy" { "Unhealthy VMs" }
                }
                section.card aria-labelledby="h-alerts" {
                    h2 id="h-alerts" { "Active alerts" }
                    @if severities.is_empty() {
                        p id="alerts-none" { "None." }
                    } @else {
                        ul {
                            @for (sev, n) in &severities {
                                li { (badge(sev)) " " strong { (n) } }
                            }
                        }
                    }
                    a href="/portal/security" { "Security" }
                }
                section.card aria-labelledby="h-ops" {
                    h2 id="h-ops" { "Operations running" }
                    @if running.is_empty() {
                        p id="ops-none" { "None." }
                    } @else {
                        ul id="ops" {
                            @for (op, kind, name, _, _) in &running {
                                li { a href=(format!("/portal/operations/{}", super::enc(op))) { (kind) } " on " (name) }
                            }
                        }
                    }
                }
            }
        },
    ))
}

/// The home page's handler.
pub async fn show(State(ctx): St, viewer: Viewer) -> Response {
    match home_body(&ctx, &viewer).await {
        Ok(r) => r,
        Err(e) => error_page(&e.message, e.status),
    }
}
