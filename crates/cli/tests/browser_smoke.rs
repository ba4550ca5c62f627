//! The real-browser harness of the web portal's tests (tests/browser) on
//! pages served here over plain HTTP on 127.0.0.1: headless Chromium
//! renders a page, fills and chooses its form fields, runs its script on a
//! click and takes a screenshot; and under `Content-Security-Policy:
//! script-src 'self'` a page's inline script does not run while its own
//! scripts do, the property the portal's tests use to show that markup
//! injected into a page cannot run.

mod browser;

use std::path::Path;
use std::time::Duration;

use browser::Browser;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the test server answers for one path.
struct Page {
    path: &'static str,
    content_type: &'static str,
    /// More header lines, each ending in CRLF.
    headers: &'static str,
    body: &'static str,
}

/// Serves `pages` on a free port of 127.0.0.1 until the test ends; the
/// base URL.
async fn serve(pages: Vec<Page>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("the listener's address");
    let pages: &'static [Page] = Vec::leak(pages);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer(stream, pages));
        }
    });
    format!("http://{addr}")
}

/// Reads one request's head and answers it (404 for an unknown path).
async fn answer(mut stream: TcpStream, pages: &'static [Page]) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("");
    let response = match pages.iter().find(|p| p.path == path) {
        Some(page) => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: close\r\n{}\r\n{}",
            page.content_type,
            page.body.len(),
            page.headers,
            page.body
        ),
        None => {
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
        }
    };
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

const HTML: &str = "text/html; charset=utf-8";

/// The width in the header (IHDR) of the PNG `png`.
fn png_width(png: &[u8]) -> u32 {
    u32::from_be_bytes(png[16..20].try_into().expect("an IHDR chunk"))
}

#[tokio::test]
async fn a_headless_chromium_renders_and_runs_a_page_served_here() {
    let Some(browser) = Browser::start_or_skip().await else {
        return;
    };
    let base = serve(vec![Page {
        path: "/",
        content_type: HTML,
        headers: "",
        body: r#"<!doctype html>
<html><head><title>smoke</title></head><body>
<input id="name" value="typed before">
<select id="size"><option value="small">Small</option><option value="large">Large</option></select>
<button id="go" onclick="document.getElementById('out').textContent =
    'clicked: ' + document.getElementById('name').value + ' (' + document.getElementById('size').value + ')'">Go</button>
<p id="out">not yet</p>
</body></html>"#,
    }])
    .await;

    browser.goto(&format!("{base}/")).await;
    assert_eq!(browser.text("#out").await, "not yet");
    assert_eq!(browser.exec("return document.title").await, json!("smoke"));

    // fill replaces what the field held; the text is set as text, not markup.
    browser.fill("#name", "<b>ada</b> & co").await;
    browser.select("#size", "large").await;
    browser.click("#go").await;
    let out = browser
        .wait_for_text("#out", "clicked", Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out, "clicked: <b>ada</b> & co (large)");
    assert_eq!(
        browser
            .exec("return document.querySelectorAll('#out b').length")
            .await,
        json!(0)
    );

    // A wait that times out says what it saw last, where.
    let err = browser
        .wait_for_text("#out", "never there", Duration::from_millis(600))
        .await
        .expect_err("the text never appears");
    assert!(
        err.contains("\"#out\"") && err.contains(&base) && err.contains("clicked: <b>ada</b>"),
        "{err}"
    );
    let err = browser
        .wait_for_text("#absent", "x", Duration::from_millis(300))
        .await
        .expect_err("no such element");
    assert!(err.contains("no element \"#absent\""), "{err}");

    // A narrow window, and its screenshot: a PNG no wider than the window.
    browser.set_width(420, 800).await;
    let inner = browser.exec("return window.innerWidth").await;
    assert!(
        inner.as_u64().is_some_and(|w| w > 0 && w <= 420),
        "innerWidth {inner}"
    );
    let dir = tempfile::tempdir().expect("a temporary directory");
    let shot = dir.path().join("shots/smoke.png");
    browser.screenshot_to(&shot).await;
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG: {shot:?}");
    let width = png_width(&png);
    assert!(
        width > 0 && width <= 420,
        "a {width} pixels wide screenshot"
    );
    assert!(!Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/screenshots/smoke.png")
        .exists());

    browser.close().await;
}

/// The page of the CSP test: its own script (/self.js) reports on
/// `#marker` that it ran and which directive blocked anything; the inline
/// script after it would retitle the page.
const CSP_PAGE: &str = r#"<!doctype html>
<html><head><title>untouched</title></head><body>
<p id="marker">no script ran</p>
<script src="/self.js"></script>
<script>document.title = 'inline script ran';</script>
</body></html>"#;

const SELF_JS: &str = r#"var marker = document.getElementById('marker');
marker.textContent = 'self script ran';
document.addEventListener('securitypolicyviolation', function (e) {
    marker.textContent = 'self script ran; blocked by ' + e.effectiveDirective;
});
"#;

#[tokio::test]
async fn an_inline_script_does_not_run_under_script_src_self() {
    let Some(browser) = Browser::start_or_skip().await else {
        return;
    };
    let base = serve(vec![
        Page {
            path: "/open",
            content_type: HTML,
            headers: "",
            body: CSP_PAGE,
        },
        Page {
            path: "/csp",
            content_type: HTML,
            headers: "Content-Security-Policy: script-src 'self'\r\n",
            body: CSP_PAGE,
        },
        Page {
            path: "/self.js",
            content_type: "text/javascript; charset=utf-8",
            headers: "",
            body: SELF_JS,
        },
    ])
    .await;
    let title = |b: &Browser| {
        let client = b.client.clone();
        async move { client.title().await.expect("the page's title") }
    };

    // Without the policy the inline script runs: the check below can fail.
    browser.goto(&format!("{base}/open")).await;
    assert_eq!(title(&browser).await, "inline script ran");
    assert_eq!(browser.text("#marker").await, "self script ran");

    // With it the page's own script runs, the inline one is blocked.
    browser.goto(&format!("{base}/csp")).await;
    let marker = browser
        .wait_for_text("#marker", "blocked by", Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(marker, "self script ran; blocked by script-src-elem");
    assert_eq!(title(&browser).await, "untouched");

    browser.close().await;
}
