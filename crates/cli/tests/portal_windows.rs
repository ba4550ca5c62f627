//! A Windows boot's Boot integrity page in a real browser: the real
//! Windows Shielded VM log (`shared/testdata/eventlogs/`, carried into a
//! SHA-256 log) replayed into a real swtpm, attested through the server's
//! own exchange (challenge, credential activation, evidence), its first
//! boot approved with the CLI, then shown in headless Chromium with its
//! `windows.*` checks, its VBS/HVCI/Credential Guard as measured and its
//! Windows claims. Takes the screenshots README shows
//! (docs/screenshots/vm-boot-integrity-windows*.png).

mod browser;
mod fleet_server;

use std::time::Duration;

use base64::Engine as _;
use browser::Browser;
use fleet_server::{ok, start_with, tl};
use serde_json::{json, Value};
use trustlaunch_agent::replayed::{carry_to_sha256, ReplayedGuest};
use trustlaunch_tpm::ca::{CaConfig, CaKeyAlgorithm, CaSigningKey, VtpmCa};
use trustlaunch_tpm::ekcert::UnixTime;

const WAIT: Duration = Duration::from_secs(30);

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The Windows boot, and the Secure Boot databases its firmware measured
/// (the VM's template).
fn windows_log() -> (Vec<u8>, Value) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/eventlogs/ga-windows_gcp_shielded_vm.json");
    let doc: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(doc["Log"]["Raw"].as_str().unwrap())
        .unwrap();
    let log = carry_to_sha256(&raw).unwrap();
    let ev = trustlaunch_eventlog::BootEvidence::extract(
        &trustlaunch_eventlog::EventLog::parse(&log).unwrap(),
    );
    let var = |name: &str| {
        ev.secure_boot_variables
            .iter()
            .find(|v| v.name == name)
            .map(|v| trustlaunch_eventlog::hex::encode(&v.data))
    };
    let template = json!({"pk": var("PK"), "kek": var("KEK"), "db": var("db"), "dbx": var("dbx")});
    (log, template)
}

struct Api {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// One attestation of `vm` through the exchange a host's runtime
    /// carries: a challenge naming the guest's AK, the credential the
    /// guest's TPM activates, its evidence for the nonce.
    async fn attest(&self, vm: &str, g: &mut ReplayedGuest) -> Value {
        let ak = g.ak_public().unwrap();
        let (st, c) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/vms/{vm}/challenges"),
                json!({"akPublic": trustlaunch_eventlog::hex::encode(&ak)}),
            )
            .await;
        assert_eq!(st, 201, "{c}");
        let hex = |k: &str| {
            trustlaunch_eventlog::hex::decode(c["credential"][k].as_str().unwrap()).unwrap()
        };
        let secret = g
            .activate(&hex("credentialBlob"), &hex("encryptedSecret"))
            .unwrap();
        let nonce = trustlaunch_eventlog::hex::decode(c["nonce"].as_str().unwrap()).unwrap();
        let e = g.evidence(&nonce).unwrap();
        let (st, r) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/vms/{vm}/attestations"),
                json!({
                    "challengeId": c["id"],
                    "activatedSecret": trustlaunch_eventlog::hex::encode(&secret),
                    "evidence": e,
                }),
            )
            .await;
        assert_eq!(st, 201, "{r}");
        r
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_windows_boot_in_the_browser() {
    let Some(b) = Browser::start_or_skip().await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let ca = VtpmCa::create(
        CaSigningKey::generate(CaKeyAlgorithm::P256, &mut rand_core::OsRng),
        &CaConfig {
            common_name: "portal Windows test vTPM CA".into(),
            organization: None,
            not_before: UnixTime::from_secs(now() - 3600),
            not_after: None,
            path_len_constraint: Some(0),
        },
        &mut rand_core::OsRng,
    )
    .unwrap();
    let ca_file = tmp.path().join("guest-ca.crt");
    std::fs::write(&ca_file, ca.certificate().der()).unwrap();
    let (log, template) = windows_log();
    let mut g = ReplayedGuest::start(&log, Some(1), &ca, now(), &mut rand_core::OsRng)
        .unwrap_or_else(|e| panic!("replayed guest: {e} (swtpm is installed by scripts/test.sh)"));
    let s = start_with(tmp.path(), &["--vtpm-ca", ca_file.to_str().unwrap()]);
    let pem = std::fs::read(&s.ca).unwrap();
    let api = Api {
        http: reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .build()
            .unwrap(),
        url: s.url.clone(),
        token: s.token.clone(),
    };
    let (st, r) = api
        .call(
            reqwest::Method::PUT,
            "/v1/vms/win-gcp",
            json!({
                "trustedLaunch": true,
                "trustedLaunchSupported": true,
                "secureBootEnabled": true,
                "vTpmEnabled": true,
                "ekPublic": trustlaunch_eventlog::hex::encode(g.ek_public()),
                "template": template,
            }),
        )
        .await;
    assert!(st == 200 || st == 201, "{st} {r}");
    // The first boot awaits approval; approved with the CLI, the next
    // attestation is healthy.
    let first = api.attest("win-gcp", &mut g).await;
    assert_eq!(first["healthy"], false, "{first}");
    ok(tl(&s, &["baseline", "approve", "win-gcp"]));
    let second = api.attest("win-gcp", &mut g).await;
    assert_eq!(second["healthy"], true, "{second}");

    b.goto(&format!("{}/", s.url)).await;
    b.wait_for_text("h1", "Sign in", WAIT).await.unwrap();
    b.fill("#token", &s.token).await;
    b.click("#signin").await;
    b.wait_for_text("h1", "", WAIT).await.unwrap();
    b.goto(&format!("{}/portal/vms/win-gcp/integrity", s.url))
        .await;
    b.wait_for_text("#verdict", "healthy", WAIT).await.unwrap();
    for check in [
        "windows.boot_manager",
        "windows.sealed",
        "windows.code_integrity",
        "windows.boot_drivers",
    ] {
        let row = b.text(&format!("tr[data-check='{check}']")).await;
        assert!(row.contains("pass"), "{check}: {row}");
    }
    let features = b.text("#windows-features").await;
    for want in [
        "Virtualization-based security (VBS)",
        "Hypervisor-protected code integrity (HVCI)",
        "Credential Guard",
        "policy 0x0",
        "x-ms-azurevm-elam-enabled",
    ] {
        assert!(features.contains(want), "{want}: {features}");
    }
    b.exec("document.querySelector(\"tr[data-check='windows.boot_manager']\").scrollIntoView(); return null")
        .await;
    b.screenshot("vm-boot-integrity-windows").await;
    b.exec("document.querySelector('#windows').scrollIntoView(); return null")
        .await;
    b.screenshot("vm-boot-integrity-windows-features").await;
    // Defender's recommendations for what the boot measured off.
    b.goto(&format!("{}/portal/security", s.url)).await;
    b.wait_for_text("main", "HVCI should be enabled", WAIT)
        .await
        .unwrap();
    let main = b.text("main").await;
    assert!(
        main.contains("Credential Guard should be enabled"),
        "{main}"
    );
}
