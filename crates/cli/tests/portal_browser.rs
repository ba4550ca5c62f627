//! The portal in a real browser: headless Chromium driven over WebDriver
//! through the whole seed workflow against a real `trustlaunch server`
//! on the simulated driver, each step's result checked on the page and
//! through the API (the CLI). Takes the screenshots README shows
//! (docs/screenshots/).

mod browser;
mod fleet_server;

use std::time::Duration;

use browser::Browser;
use fleet_server::{create_standard_set, img, ok, publish, start_with, tl, Server};

const WAIT: Duration = Duration::from_secs(30);

fn show(s: &Server) -> String {
    ok(tl(s, &["vmss", "show", "-g", "rg", "-n", "web"]))
}

async fn sign_in(b: &Browser, s: &Server, token: &str) {
    b.goto(&format!("{}/", s.url)).await;
    b.wait_for_text("h1", "Sign in", WAIT).await.unwrap();
    b.fill("#token", token).await;
    b.click("#signin").await;
}

/// After a change that starts an operation: the operation page follows it
/// live until it succeeds.
async fn operation_succeeds(b: &Browser) {
    if let Err(e) = b
        .wait_for_text("#op-status", "Succeeded", Duration::from_secs(90))
        .await
    {
        let main = b.text("main").await;
        panic!("operation: {e}\npage: {}", main.replace('\n', " | "));
    }
}

/// Every control of the page has a label (its own, or aria-label), and
/// nothing is wider than the window (wide tables scroll in their box).
async fn accessible(b: &Browser, what: &str) {
    let unlabelled = b
        .exec(
            "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]\
             .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') \
                 && !(e.tagName === 'BUTTON' && e.textContent.trim()))\
             .map(e => e.outerHTML)",
        )
        .await;
    assert_eq!(
        unlabelled,
        serde_json::json!([]),
        "{what}: controls without a label"
    );
    let overflow = b
        .exec("return document.documentElement.scrollWidth - window.innerWidth")
        .await;
    assert!(
        overflow.as_i64().unwrap_or(0) <= 0,
        "{what}: the page is {overflow} px wider than the window"
    );
}

async fn set_page(b: &Browser, s: &Server, tail: &str) {
    b.goto(&format!("{}/portal/scale-sets/rg/web{tail}", s.url))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_workflow_clicked_through_in_a_browser() {
    let Some(b) = Browser::start_or_skip().await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // D2s_v3 x 3 = 6 vCPUs; D4s_v3 x 3 = 12; D8s_v3 x 3 = 24 > 16.
    let s = start_with(tmp.path(), &["--quota", "Dsv3=16", "--sim-boot-ms", "300"]);
    publish(&s, tmp.path());
    create_standard_set(&s);

    // Sign-in.
    b.goto(&format!("{}/portal/signin", s.url)).await;
    b.screenshot("signin").await;
    sign_in(&b, &s, &s.token).await;
    b.wait_for_text("h1", "Home", WAIT).await.unwrap();
    b.screenshot("home").await;

    // Scale sets → web → Overview.
    b.click("a[href='/portal/scale-sets']").await;
    b.wait_for_text("#sets", "web", WAIT).await.unwrap();
    b.click("#sets a").await;
    b.wait_for_text("#security-type", "Standard", WAIT)
        .await
        .unwrap();
    b.screenshot("scale-set-overview").await;

    // Size: a resize over the family's quota is refused, at the field.
    set_page(&b, &s, "/size").await;
    b.click("#size-Standard_D8s_v3").await;
    b.click("#resize").await;
    let err = b
        .wait_for_text("#size-error", "quota", WAIT)
        .await
        .unwrap_or_else(|e| panic!("quota refusal shown at the size: {e}"));
    assert!(err.contains("Current Limit: 16"), "{err}");
    b.screenshot("scale-set-size-quota").await;
    assert!(show(&s).contains("x Standard_D2s_v3"), "{}", show(&s));
    // ... then one within it is accepted.
    b.click("#size-Standard_D4s_v3").await;
    b.click("#resize").await;
    b.wait_for_text("#current-size", "Standard_D4s_v3", WAIT)
        .await
        .unwrap();
    assert!(show(&s).contains("x Standard_D4s_v3"), "{}", show(&s));

    // Operating system → Change image reference: refused without the
    // OS-disk consent, accepted with it.
    set_page(&b, &s, "/os").await;
    b.wait_for_text("#data-loss-warning", "OS disk", WAIT)
        .await
        .unwrap();
    b.select("#image", &img("2.0.0")).await;
    b.click("#change-image").await;
    b.wait_for_text("#form-error, #image-error", "OS disk", WAIT)
        .await
        .unwrap();
    b.select("#image", &img("2.0.0")).await;
    b.click("#confirm-data-loss").await;
    b.screenshot("scale-set-os").await;
    b.click("#change-image").await;
    b.wait_for_text("#current-image", "tiny 2.0.0", WAIT)
        .await
        .unwrap();
    assert!(show(&s).contains("versions/2.0.0"), "{}", show(&s));

    // Configuration: Standard → Trusted launch, Secure Boot and vTPM, Yes.
    set_page(&b, &s, "").await;
    b.click("#security-type").await;
    b.wait_for_text("nav.tabs a[aria-current]", "Configuration", WAIT)
        .await
        .unwrap();
    b.select("select#security-type", "TrustedLaunch").await;
    b.click("#enable-secure-boot").await;
    b.click("#enable-vtpm").await;
    b.click("#save-configuration").await;
    b.wait_for_text("#confirm", "Update security type", WAIT)
        .await
        .unwrap();
    b.screenshot("scale-set-configuration").await;
    b.click("#confirm-yes").await;
    b.wait_for_text("#flash", "TrustedLaunch", WAIT)
        .await
        .unwrap();
    let out = show(&s);
    assert!(out.contains("security type:   TrustedLaunch"), "{out}");
    assert!(
        out.contains("secure boot:     true") && out.contains("vTPM:            true"),
        "{out}"
    );

    // Extensions: Guest Attestation.
    set_page(&b, &s, "/extensions").await;
    b.click("#add-guest-attestation").await;
    b.wait_for_text("#extensions", "GuestAttestation", WAIT)
        .await
        .unwrap();
    b.screenshot("scale-set-extensions").await;
    let ext = ok(tl(&s, &["vmss", "show", "-g", "rg", "-n", "web", "--json"]));
    assert!(
        ext.contains("Microsoft.Azure.Security.LinuxAttestation"),
        "{ext}"
    );

    // Instances: instance 0 upgraded by hand (Manual policy).
    set_page(&b, &s, "/instances").await;
    b.wait_for_text("#instances", "web_0", WAIT).await.unwrap();
    b.click("#instance-0").await;
    b.click("#upgrade").await;
    operation_succeeds(&b).await;
    b.screenshot("operation").await;
    set_page(&b, &s, "/instances").await;
    b.wait_for_text("tr[data-instance='0'] td.model", "Yes", WAIT)
        .await
        .unwrap();
    assert_eq!(
        b.text("tr[data-instance='1'] td.model").await.trim(),
        "No",
        "instance 1 still on the old model"
    );
    b.screenshot("scale-set-instances").await;
    let out = show(&s);
    assert_eq!(out.matches("latestModelApplied=true").count(), 1, "{out}");

    // Upgrade policy: Rolling; then the rest rolled.
    set_page(&b, &s, "/upgrade-policy").await;
    b.select("#mode", "Rolling").await;
    b.fill("#batch", "50").await;
    b.screenshot("scale-set-upgrade-policy").await;
    b.click("#save-policy").await;
    b.wait_for_text("#flash", "Rolling", WAIT).await.unwrap();
    set_page(&b, &s, "/instances").await;
    b.click("#rolling-start").await;
    operation_succeeds(&b).await;
    let out = show(&s);
    assert_eq!(out.matches("latestModelApplied=true").count(), 3, "{out}");
    assert!(out.contains("upgrade policy:  Rolling"), "{out}");

    // Roll back: Standard is refused while Guest Attestation needs
    // Trusted Launch (the API's reason, on the page); without it, Standard,
    // then the last good image (each a model change the Rolling policy
    // rolls out).
    set_page(&b, &s, "/configuration").await;
    b.select("select#security-type", "Standard").await;
    b.click("#save-configuration").await;
    b.wait_for_text("#confirm", "Standard", WAIT).await.unwrap();
    b.click("#confirm-yes").await;
    b.wait_for_text("#form-error", "Guest Attestation", WAIT)
        .await
        .unwrap();
    set_page(&b, &s, "/extensions").await;
    b.click("button[aria-label='Remove GuestAttestation']")
        .await;
    operation_succeeds(&b).await;
    set_page(&b, &s, "/configuration").await;
    b.select("select#security-type", "Standard").await;
    b.click("#save-configuration").await;
    b.wait_for_text("#confirm", "Standard", WAIT).await.unwrap();
    b.click("#confirm-yes").await;
    operation_succeeds(&b).await;
    set_page(&b, &s, "/os").await;
    b.select("#image", &img("1.0.0")).await;
    b.click("#confirm-data-loss").await;
    b.click("#change-image").await;
    operation_succeeds(&b).await;
    let out = show(&s);
    assert!(out.contains("security type:   Standard"), "{out}");
    assert!(out.contains("versions/1.0.0"), "{out}");
    assert_eq!(out.matches("latestModelApplied=true").count(), 3, "{out}");
    set_page(&b, &s, "").await;
    b.wait_for_text("#image", "tiny 1.0.0", WAIT).await.unwrap();
    b.wait_for_text("#security-type", "Standard", WAIT)
        .await
        .unwrap();

    // A VM with Azure's defaults: Gen2 → Trusted launch, Secure Boot and
    // vTPM on.
    b.goto(&format!("{}/portal/vms/new", s.url)).await;
    b.fill("#vm-name", "vm1").await;
    b.select("#vm-image", &img("2.0.0")).await;
    assert_eq!(
        b.exec("return [document.querySelector('#vm-security').value, document.querySelector('#vm-secure-boot').checked, document.querySelector('#vm-vtpm').checked]").await,
        serde_json::json!(["TrustedLaunch", true, true]),
        "Azure's defaults"
    );
    b.screenshot("vm-create").await;
    b.click("#vm-create").await;
    b.wait_for_text("#flash", "vm1", WAIT).await.unwrap();
    b.wait_for_text("#arm-vms", "vm1", WAIT).await.unwrap();
    b.screenshot("vms").await;
    let vm = ok(tl(&s, &["vm", "show", "-g", "rg", "-n", "vm1", "--json"]));
    assert!(
        vm.contains("\"TrustedLaunch\"") && vm.contains("\"secureBootEnabled\": true"),
        "{vm}"
    );
    b.click("#arm-vms a").await;
    b.wait_for_text("#security-type", "TrustedLaunch", WAIT)
        .await
        .unwrap();
    assert_eq!(b.text("#secure-boot").await, "Enabled");
    assert_eq!(b.text("#vtpm").await, "Enabled");
    b.wait_for_text("#integrity-monitoring", "Enabled", WAIT)
        .await
        .unwrap();
    assert_ne!(b.text("#power").await, "—", "the power state is shown");
    b.screenshot("vm-overview").await;

    // The other sections, and the pages at a narrow width.
    for (path, name) in [
        ("/portal/images", "images"),
        ("/portal/security", "security"),
        ("/portal/tokens", "tokens"),
    ] {
        b.goto(&format!("{}{path}", s.url)).await;
        b.wait_for_text("h1", "", WAIT).await.unwrap();
        b.screenshot(name).await;
    }
    // Labelled controls, and no page wider than the window, at 1280 px
    // and on a phone's 390 px.
    for (w, h) in [(1280, 900), (390, 844)] {
        b.set_width(w, h).await;
        for tail in [
            "",
            "/size",
            "/os",
            "/configuration",
            "/extensions",
            "/instances",
            "/upgrade-policy",
        ] {
            set_page(&b, &s, tail).await;
            b.wait_for_text("h1", "web", WAIT).await.unwrap();
            accessible(&b, &format!("{w} px: scale set{tail}")).await;
        }
        for path in [
            "/",
            "/portal/vms",
            "/portal/vms/new",
            "/portal/images",
            "/portal/security",
            "/portal/tokens",
        ] {
            b.goto(&format!("{}{path}", s.url)).await;
            b.wait_for_text("h1", "", WAIT).await.unwrap();
            accessible(&b, &format!("{w} px: {path}")).await;
        }
    }
    set_page(&b, &s, "/instances").await;
    b.wait_for_text("#instances", "web_0", WAIT).await.unwrap();
    b.screenshot("narrow-instances").await;
    b.set_width(1280, 900).await;

    // What a page shows is never run: a token named with markup appears
    // as text, and no script of it runs.
    ok(tl(
        &s,
        &[
            "token",
            "create",
            "<img src=x onerror=\"document.title='pwned'\">",
            "--role",
            "reader",
        ],
    ));
    b.goto(&format!("{}/portal/tokens", s.url)).await;
    b.wait_for_text("#tokens", "<img src=x", WAIT)
        .await
        .unwrap();
    let title = b.exec("return document.title").await;
    assert_eq!(title, serde_json::json!("API tokens · trustlaunch"));
    assert_eq!(
        b.exec("return document.querySelectorAll('#tokens img').length")
            .await,
        serde_json::json!(0)
    );

    // Sign-out ends the session: the pages ask for a token again.
    b.click("#signout").await;
    b.wait_for_text("#signin-error", "Signed out", WAIT)
        .await
        .unwrap();
    b.goto(&format!("{}/portal/scale-sets", s.url)).await;
    b.wait_for_text("h1", "Sign in", WAIT).await.unwrap();
    b.close().await;
}
