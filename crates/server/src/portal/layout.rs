//! The portal's page frame (head, navigation, the signed-in caller,
//! messages), error pages and the small pieces pages share.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};
use trustlaunch_store::Role;

use super::bridge::ApiFailure;
use super::Viewer;

/// The navigation's sections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nav {
    /// Home.
    Home,
    /// Virtual machines.
    Vms,
    /// Scale sets.
    Sets,
    /// Images.
    Images,
    /// Security.
    Security,
    /// Tokens.
    Tokens,
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            // htmx: no inline indicator styles (the CSP allows none), no eval.
            meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;
            title { (title) " · trustlaunch" }
            link rel="stylesheet" href="/portal/assets/portal.css";
            script src="/portal/assets/htmx-2.0.11.min.js" defer {}
            script src="/portal/assets/portal.js" defer {}
        }
    }
}

fn html_response(m: Markup) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        m.into_string(),
    )
        .into_response()
}

/// A page without navigation (sign-in, errors before sign-in).
pub fn bare_page(title: &str, body: Markup) -> Response {
    html_response(html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body { (body) }
        }
    })
}

/// A page in the portal's frame.
pub fn page(viewer: &Viewer, nav: Nav, title: &str, body: Markup) -> Response {
    let item = |n: Nav, href: &str, label: &str| {
        html! {
            li {
                a href=(href) aria-current=[(n == nav).then_some("page")] { (label) }
            }
        }
    };
    html_response(html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "trustlaunch" }
                    nav aria-label="Sections" {
                        ul {
                            (item(Nav::Home, "/", "Home"))
                            (item(Nav::Vms, "/portal/vms", "Virtual machines"))
                            (item(Nav::Sets, "/portal/scale-sets", "Scale sets"))
                            (item(Nav::Images, "/portal/images", "Images"))
                            (item(Nav::Security, "/portal/security", "Security"))
                            @if viewer.can(Role::Admin) {
                                (item(Nav::Tokens, "/portal/tokens", "Tokens"))
                            }
                        }
                    }
                    div.who {
                        span id="who" { (viewer.caller.name) " · " (viewer.caller.role) }
                        form method="post" action="/portal/signout" {
                            (csrf(viewer))
                            button.link type="submit" id="signout" { "Sign out" }
                        }
                    }
                }
                main id="main" {
                    @if let Some(f) = &viewer.flash {
                        p class=(if f.ok { "flash ok" } else { "flash error" }) role="status" id="flash" { (f.text) }
                    }
                    (body)
                }
            }
        }
    })
}

/// The hidden anti-forgery field every form carries.
pub fn csrf(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="_csrf" value=(viewer.csrf); }
}

/// An error page (before or without the frame).
pub fn error_page(message: &str, status: StatusCode) -> Response {
    let mut resp = bare_page(
        "Error",
        html! {
            main.signin {
                h1 { (status.canonical_reason().unwrap_or("Error")) }
                p.error role="alert" id="error" { (message) }
                p { a href="/" { "Back to the portal" } }
            }
        },
    );
    *resp.status_mut() = status;
    resp
}

/// An API failure as a page in the frame.
pub fn failure_page(viewer: &Viewer, nav: Nav, f: &ApiFailure) -> Response {
    let mut resp = page(
        viewer,
        nav,
        "Error",
        html! {
            h1 { (f.status.canonical_reason().unwrap_or("Error")) }
            p.error role="alert" id="error" { (f.message) " (" code { (f.code) } ")" }
        },
    );
    *resp.status_mut() = f.status;
    resp
}

/// Unix seconds in RFC 3339 (`2026-12-07T09:25:33Z`), if a date.
fn rfc3339(t: i64) -> Option<String> {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&Rfc3339).ok())
}

/// Unix seconds as a date people read (`2026-12-07 09:25:33 UTC`).
pub fn date(t: i64) -> String {
    rfc3339(t).map_or_else(
        || format!("{t} (Unix time)"),
        |s| format!("{} UTC", s.replacen('T', " ", 1).trim_end_matches('Z')),
    )
}

/// A `<time>` element for Unix seconds `t` (machine-readable in its
/// `datetime`).
pub fn when(t: Option<i64>) -> Markup {
    match t {
        Some(t) => html! { time datetime=[rfc3339(t)] { (date(t)) } },
        None => html! { span.muted { "never" } },
    }
}

/// A health badge: healthy, unhealthy, unknown (and other words).
pub fn badge(word: &str) -> Markup {
    let class =
        match word {
            "healthy" | "Succeeded" | "Healthy" | "Completed" | "pass" | "Pass" | "on"
            | "approved" => "badge good",
            "unhealthy" | "Failed" | "Unhealthy" | "Faulted" | "fail" | "Fail" | "High"
            | "high" => "badge bad",
            "Medium" | "medium" | "pending-approval" | "InProgress" | "RollingForward"
            | "Updating" | "Creating" => "badge warn",
            _ => "badge",
        };
    html! { span class=(class) { (word) } }
}

/// An error for one field of a form (`id` ties it to the input).
pub fn field_error(id: &str, failure: Option<&ApiFailure>, target: &str) -> Markup {
    match failure.filter(|f| f.is_about(target)) {
        Some(f) => html! {
            p.field-error id=(format!("{id}-error")) role="alert" { (f.message) }
        },
        None => html! {},
    }
}

/// An API failure not about any field the form shows, above the form.
pub fn form_error(failure: Option<&ApiFailure>, targets: &[&str]) -> Markup {
    match failure.filter(|f| !targets.iter().any(|t| f.is_about(t))) {
        Some(f) => html! {
            p.error role="alert" id="form-error" { (f.message) " (" code { (f.code) } ")" }
        },
        None => html! {},
    }
}

/// Guest-supplied text (a serial console): control characters but
/// newline and tab shown as `·` (escaping is the template's).
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == '\n' || c == '\t' || !c.is_control() {
                c
            } else {
                '·'
            }
        })
        .collect()
}

/// A tab strip (the sections of one resource's page).
pub fn tabs(items: &[(&str, String)], current: &str) -> Markup {
    html! {
        nav.tabs aria-label="Pages of this resource" {
            ul {
                @for (label, href) in items {
                    li { a href=(href) aria-current=[(*label == current).then_some("page")] { (label) } }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_as_dates() {
        assert_eq!(date(1_796_581_548), "2026-12-06 18:25:48 UTC");
        assert_eq!(date(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(date(i64::MAX), format!("{} (Unix time)", i64::MAX));
    }

    #[test]
    fn console_text_keeps_lines_and_drops_controls() {
        assert_eq!(printable("a\x1b[31mb\n\tc\u{7}"), "a·[31mb\n\tc·");
    }
}
