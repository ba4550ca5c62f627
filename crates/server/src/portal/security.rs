//! Security: recommendations by severity, alerts with their cause and
//! evidence (dismiss), suppression rules; API tokens for admins.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde_json::{json, Value};
use trustlaunch_store::Role;

use super::layout::{badge, csrf, failure_page, when};
use super::session::Flash;
use super::{enc, page, vm_href, ApiFailure, Ctx, Nav, Posted, St, Viewer};

fn severity_rank(s: &str) -> u8 {
    match s {
        "High" | "high" => 0,
        "Medium" | "medium" => 1,
        _ => 2,
    }
}

fn list(v: &Value) -> Vec<Value> {
    v["value"].as_array().cloned().unwrap_or_default()
}

/// `/portal/security`.
pub async fn overview(State(ctx): St, viewer: Viewer) -> Response {
    let c = &viewer.caller;
    let (recs, alerts, rules) = match (
        ctx.get(c, "/v1/security/recommendations").await,
        ctx.get(c, "/v1/security/alerts").await,
        ctx.get(c, "/v1/security/suppressions").await,
    ) {
        (Ok(r), Ok(a), Ok(s)) => (list(&r), list(&a), list(&s)),
        (Err(f), _, _) | (_, Err(f), _) | (_, _, Err(f)) => {
            return failure_page(&viewer, Nav::Security, &f)
        }
    };
    let mut recs = recs;
    recs.sort_by_key(|r| severity_rank(r["severity"].as_str().unwrap_or_default()));
    let mut alerts = alerts;
    alerts.sort_by_key(|a| {
        (
            a["state"].as_str() != Some("active"),
            severity_rank(a["severity"].as_str().unwrap_or_default()),
            std::cmp::Reverse(a["last_seen"].as_i64()),
        )
    });
    let can = viewer.can(Role::Operator);
    page(
        &viewer,
        Nav::Security,
        "Security",
        html! {
            h1 { "Security" }
            section aria-labelledby="recs-h" {
                h2 id="recs-h" { "Recommendations (" (recs.len()) ")" }
                @if recs.is_empty() { p id="no-recommendations" { "None: every VM follows the recommendations." } }
                @else {
                    div.scroll { table id="recommendations" {
                        thead { tr { th { "Severity" } th { "Recommendation" } th { "Resource" } th { "Why" } } }
                        tbody { @for r in &recs {
                            @let vm = r["vm_id"].as_str().unwrap_or_default();
                            tr {
                                td { (badge(r["severity"].as_str().unwrap_or_default())) }
                                td { (r["name"].as_str().unwrap_or_default()) }
                                td { a href=(vm_href(vm)) { (vm) } }
                                td { (r["reason"].as_str().unwrap_or_default()) }
                            }
                        } }
                    } }
                }
            }
            section aria-labelledby="alerts-h" {
                h2 id="alerts-h" { "Alerts (" (alerts.len()) ")" }
                @if alerts.is_empty() { p id="no-alerts" { "No alerts." } }
                @else {
                    div.scroll { table id="alerts" {
                        thead { tr { th { "Severity" } th { "Alert" } th { "VM" } th { "State" } th { "Cause and evidence" } th { "Seen" } th {} } }
                        tbody { @for a in &alerts {
                            @let vm = a["vm_id"].as_str().unwrap_or_default();
                            @let key = a["key"].as_str().unwrap_or_default();
                            tr data-alert=(key) {
                                td { (badge(a["severity"].as_str().unwrap_or_default())) }
                                td { (a["name"].as_str().unwrap_or_default()) }
                                td { a href=(vm_href(vm)) { (vm) } }
                                td { (a["state"].as_str().unwrap_or_default()) }
                                td {
                                    p.alert-detail { (a["detail"].as_str().unwrap_or_default()) }
                                    details { summary { "Cause" } pre.mono { (serde_json::to_string_pretty(&a["cause"]).unwrap_or_default()) } }
                                    a href=(format!("{}/integrity", vm_href(vm))) { "Boot integrity" }
                                }
                                td { (a["count"]) "× · last " (when(a["last_seen"].as_i64())) }
                                td { @if can && a["state"].as_str() == Some("active") {
                                    form.inline method="post" action="/portal/security/alerts/dismiss" {
                                        (csrf(&viewer))
                                        input type="hidden" name="key" value=(key);
                                        button.secondary type="submit" aria-label=(format!("Dismiss the alert on {vm}")) { "Dismiss" }
                                    }
                                } }
                            }
                        } }
                    } }
                }
            }
            section aria-labelledby="rules-h" {
                h2 id="rules-h" { "Suppression rules" }
                @if rules.is_empty() { p id="no-rules" { "None." } }
                @else {
                    table id="rules" {
                        thead { tr { th { "Name" } th { "Alert kind" } th { "Reason" } th { "VMs" } th { "Expires" } th {} } }
                        tbody { @for r in &rules {
                            @let n = r["name"].as_str().unwrap_or_default();
                            tr {
                                td { (n) } td { (r["kind"].as_str().unwrap_or("any")) } td { (r["reason"].as_str().unwrap_or("any")) }
                                td { (r["vm_ids"].as_array().map_or_else(|| "all".to_owned(), |v| v.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))) }
                                td { (when(r["expires_at"].as_i64())) }
                                td { @if can { form.inline method="post" action="/portal/security/rules" {
                                    (csrf(&viewer))
                                    input type="hidden" name="delete" value=(n);
                                    button.secondary type="submit" aria-label=(format!("Delete rule {n}")) { "Delete" }
                                } } }
                            }
                        } }
                    }
                }
                @if can {
                    h3 { "Add a rule" }
                    form.stack method="post" action="/portal/security/rules" {
                        (csrf(&viewer))
                        label for="rule-name" { "Name" } input type="text" id="rule-name" name="name" required;
                        label for="rule-kind" { "Alert kind" }
                        select id="rule-kind" name="kind" { option value="" { "Any" } option value="attestation-failed" { "Attestation failed" } option value="untrusted-kernel-module" { "Untrusted kernel module" } }
                        label for="rule-vms" { "VMs (comma-separated; empty: all, which needs an admin)" } input type="text" id="rule-vms" name="vms";
                        label for="rule-expires" { "Expires in (hours; empty: never)" } input type="number" id="rule-expires" name="hours" min="1";
                        div.actions { button type="submit" id="add-rule" { "Add rule" } }
                    }
                }
            }
        },
    )
}

async fn back_with(
    ctx: &Ctx,
    viewer: &Viewer,
    to: &str,
    r: Result<String, ApiFailure>,
) -> Response {
    let flash = match r {
        Ok(text) => Flash { ok: true, text },
        Err(e) => Flash {
            ok: false,
            text: e.message,
        },
    };
    ctx.app.sessions.flash(&viewer.session, flash).await;
    Redirect::to(to).into_response()
}

/// Dismisses an alert (through the API).
pub async fn dismiss(State(ctx): St, posted: Posted) -> Response {
    let key = posted.fields.get("key").unwrap_or_default();
    let r = ctx
        .call(
            &posted.viewer.caller,
            Method::POST,
            &format!("/v1/security/alerts/{}/dismiss", enc(key)),
            None,
        )
        .await
        .map(|_| "Alert dismissed.".to_owned());
    back_with(&ctx, &posted.viewer, "/portal/security", r).await
}

/// Adds or deletes a suppression rule (through the API).
pub async fn rules(State(ctx): St, posted: Posted) -> Response {
    let f = &posted.fields;
    let caller = &posted.viewer.caller;
    let r = if let Some(name) = f.get("delete") {
        ctx.call(
            caller,
            Method::DELETE,
            &format!("/v1/security/suppressions/{}", enc(name)),
            None,
        )
        .await
        .map(|_| format!("Rule {name} deleted."))
    } else {
        let name = f.get("name").unwrap_or_default().trim();
        let vms: Vec<&str> = f
            .get("vms")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let mut body = json!({});
        if let Some(k) = f.get("kind").filter(|k| !k.is_empty()) {
            body["kind"] = json!(k);
        }
        if !vms.is_empty() {
            body["vmIds"] = json!(vms);
        }
        if let Some(h) = f.get("hours").and_then(|h| h.trim().parse::<u64>().ok()) {
            body["expiresIn"] = json!(h.saturating_mul(3600));
        }
        ctx.call(
            caller,
            Method::PUT,
            &format!("/v1/security/suppressions/{}", enc(name)),
            Some(&body),
        )
        .await
        .map(|_| format!("Rule {name} added."))
    };
    back_with(&ctx, &posted.viewer, "/portal/security", r).await
}

/// `/portal/tokens` (admins): tokens, create, revoke.
pub async fn tokens(State(ctx): St, viewer: Viewer) -> Response {
    tokens_page(&ctx, &viewer, None).await
}

async fn tokens_page(ctx: &Ctx, viewer: &Viewer, created: Option<&Value>) -> Response {
    let list = match ctx.get(&viewer.caller, "/v1/tokens").await {
        Ok(v) => super::security::list(&v),
        Err(f) => return failure_page(viewer, Nav::Tokens, &f),
    };
    page(
        viewer,
        Nav::Tokens,
        "API tokens",
        html! {
            h1 { "API tokens" }
            @if let Some(t) = created {
                section.warning role="status" id="new-token" {
                    p { "Token " strong { (t["name"].as_str().unwrap_or_default()) } " created. Copy it now: it is not shown again." }
                    p { code id="new-token-secret" { (t["token"].as_str().unwrap_or_default()) } }
                }
            }
            div.scroll { table id="tokens" {
                thead { tr { th { "Id" } th { "Name" } th { "Role" } th { "Created" } th { "Expires" } th { "Last used" } th { "Revoked" } th {} } }
                tbody { @for t in &list {
                    @let id = t["id"].as_str().unwrap_or_default();
                    tr {
                        td.mono { (id) } td { (t["name"].as_str().unwrap_or_default()) } td { (t["role"].as_str().unwrap_or_default()) }
                        td { (when(t["createdAt"].as_i64())) } td { (when(t["expiresAt"].as_i64())) }
                        td { (when(t["lastUsedAt"].as_i64())) } td { (when(t["revokedAt"].as_i64())) }
                        td { @if t["revokedAt"].is_null() {
                            form.inline method="post" action="/portal/tokens" {
                                (csrf(viewer))
                                input type="hidden" name="revoke" value=(id);
                                button.danger type="submit" aria-label=(format!("Revoke token {id}")) { "Revoke" }
                            }
                        } }
                    }
                } }
            } }
            h2 { "Create a token" }
            form.stack method="post" action="/portal/tokens" {
                (csrf(viewer))
                label for="token-name" { "Name" } input type="text" id="token-name" name="name" required;
                label for="token-role" { "Role" }
                select id="token-role" name="role" { option value="reader" { "reader" } option value="operator" { "operator" } option value="admin" { "admin" } }
                label for="token-days" { "Expires in (days; empty: never)" } input type="number" id="token-days" name="days" min="1";
                div.actions { button type="submit" id="create-token" { "Create" } }
            }
        },
    )
}

/// Creates or revokes a token (through the API: admins only).
pub async fn token_action(State(ctx): St, posted: Posted) -> Response {
    let f = &posted.fields;
    let viewer = &posted.viewer;
    if let Some(id) = f.get("revoke") {
        let r = ctx
            .call(
                &viewer.caller,
                Method::DELETE,
                &format!("/v1/tokens/{}", enc(id)),
                None,
            )
            .await
            .map(|_| format!("Token {id} revoked."));
        return back_with(&ctx, viewer, "/portal/tokens", r).await;
    }
    let mut body = json!({"name": f.get("name").unwrap_or_default().trim(), "role": f.get("role").unwrap_or("reader")});
    if let Some(d) = f.get("days").and_then(|d| d.trim().parse::<u64>().ok()) {
        body["expiresIn"] = json!(d.saturating_mul(86_400));
    }
    match ctx
        .call(&viewer.caller, Method::POST, "/v1/tokens", Some(&body))
        .await
    {
        Ok(r) => tokens_page(&ctx, viewer, Some(&r.body)).await,
        Err(e) if e.status == StatusCode::FORBIDDEN => failure_page(viewer, Nav::Tokens, &e),
        Err(e) => back_with(&ctx, viewer, "/portal/tokens", Err(e)).await,
    }
}
