//! Images: galleries, definitions with their features, versions, and what
//! the platform read from each version's image (its build or import):
//! why it is or is not Trusted Launch capable.

use axum::extract::State;
use axum::response::Response;
use maud::html;
use trustlaunch_control::plane::{ControlPlane, IMAGE_VERSION_TYPE};
use trustlaunch_runtime::image_meta::ImageMetadata;

use super::layout::{badge, error_page};
use super::{page, Nav, St, Viewer};
use crate::ApiError;

/// Every image version's resource id, in key order.
pub async fn version_ids(c: &ControlPlane) -> Result<Vec<String>, ApiError> {
    Ok(c.store
        .list_resources(IMAGE_VERSION_TYPE, None)
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect())
}

/// `/portal/images`.
pub async fn list(State(ctx): St, viewer: Viewer) -> Response {
    let Some(c) = &ctx.app.control else {
        return error_page(
            "This server runs no control plane (start it with a driver).",
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
        );
    };
    let catalog = match c.images().await {
        Ok(x) => x,
        Err(e) => {
            let e = ApiError::from(e);
            return error_page(&e.message, e.status);
        }
    };
    let real = c.images_root.is_some();
    let mut metas = Vec::new();
    for img in catalog.images() {
        for v in &img.versions {
            let source = std::path::PathBuf::from(&v.source);
            let m = if real {
                tokio::task::spawn_blocking(move || {
                    ImageMetadata::read(&source).map_err(|e| e.to_string())
                })
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
            } else {
                Err("the simulated driver reads no image".into())
            };
            metas.push(((img.definition.name.clone(), v.name.clone()), m));
        }
    }
    let meta_of = |d: &str, v: &str| {
        metas
            .iter()
            .find(|((dn, vn), _)| dn == d && vn == v)
            .map(|(_, m)| m)
    };
    page(
        &viewer,
        Nav::Images,
        "Images",
        html! {
            h1 { "Images" }
            @if catalog.images().is_empty() { p id="no-images" { "No image definitions yet: " code { "trustlaunch image definition create" } "." } }
            @for img in catalog.images() {
                @let d = &img.definition;
                section.card aria-labelledby=(format!("img-{}", d.name)) {
                    h2 id=(format!("img-{}", d.name)) { (d.name) span.muted { " · gallery " (img.gallery) } }
                    dl.props {
                        dt { "OS" } dd { (format!("{:?}", d.os_type)) }
                        dt { "Generation" } dd { (format!("{:?}", d.hyper_v_generation)) }
                        dt { "Features" } dd {
                            @if d.features.is_empty() { "none" }
                            @for f in &d.features { code { (f.name) "=" (f.value) } " " }
                        }
                        dt { "Security type" } dd {
                            @match d.security_feature() {
                                Ok(Some(t)) => { (format!("{t:?}")) }
                                Ok(None) => { "Standard only (no SecurityType feature)" }
                                Err(e) => { (e.to_string()) }
                            }
                        }
                    }
                    div.scroll { table {
                        thead { tr { th { "Version" } th { "Guest attestation agent" } th { "What the platform read from the image" } } }
                        tbody {
                            @for v in &img.versions {
                                tr {
                                    td { (v.name) }
                                    td { @match v.guest_agent { Some(true) => (badge("on")), Some(false) => "not installed", None => "not known" } }
                                    td {
                                        @match meta_of(&d.name, &v.name) {
                                            Some(Ok(m)) => {
                                                p {
                                                    @if m.trusted_launch_refusals.is_empty() { (badge("pass")) " Trusted Launch capable: the boot chain boots under Secure Boot" }
                                                    @else { (badge("fail")) " Not Trusted Launch capable" }
                                                    " · " (m.kind)
                                                    @if let Some(k) = &m.kernel_release { " · kernel " (k) }
                                                }
                                                @if !m.trusted_launch_refusals.is_empty() {
                                                    ul { @for r in &m.trusted_launch_refusals { li { (r) } } }
                                                }
                                                details {
                                                    summary { "Boot chain" }
                                                    ul { @for b in &m.boot_components {
                                                        li { code { (b.esp_path) } " signed by " (if b.signers.is_empty() { "nobody".to_owned() } else { b.signers.join(", ") }) }
                                                    } }
                                                    @for n in &m.notes { p.muted { (n) } }
                                                }
                                            }
                                            Some(Err(e)) => { span.muted { "Import result not available: " (e) } }
                                            None => {}
                                        }
                                    }
                                }
                            }
                        }
                    } }
                }
            }
        },
    )
}
