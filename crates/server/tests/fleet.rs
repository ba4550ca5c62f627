//! The control plane over HTTP with the simulated driver, against SQLite
//! and PostgreSQL: the seed workflow (a Standard scale set moved to
//! Trusted Launch by manual and rolling upgrades, then rolled back),
//! ETags (If-Match -> 412; of two concurrent updates exactly one wins),
//! validation errors in Azure's shape, operations, delete.

mod common;

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use trustlaunch_server::{Config, DriverChoice};

/// The resource group's provider path: a subscription of its own per run
/// (runs share the PostgreSQL database).
fn rg() -> &'static str {
    static RG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    RG.get_or_init(|| {
        format!(
            "/subscriptions/{}/resourceGroups/rg1/providers/Microsoft.Compute",
            common::unique("s")
        )
    })
}

fn set_url() -> String {
    let rg = rg();
    format!("{rg}/virtualMachineScaleSets/web")
}

fn image_ref(v: &str) -> Value {
    let rg = rg();
    json!({"id": format!("{rg}/galleries/g1/images/tiny/versions/{v}")})
}

fn set_body(capacity: u32, image: &str, security: Value, policy: Value) -> Value {
    json!({
        "location": "local",
        "sku": {"name": "Standard_D2s_v3", "capacity": capacity},
        "properties": {
            "orchestrationMode": "Uniform",
            "upgradePolicy": policy,
            "virtualMachineProfile": {
                "storageProfile": {"imageReference": image_ref(image)},
                "securityProfile": security
            }
        }
    })
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn send(
    s: &common::Srv,
    method: Method,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, String)],
) -> Reply {
    let mut r = s
        .http
        .request(method, format!("{}{path}", s.url))
        .bearer_auth(&s.token);
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    Reply {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

/// Follows the reply's operation to its end; returns the operation.
async fn wait_op(s: &common::Srv, r: &Reply) -> Value {
    // A PUT answers 201 or 200 (ARM), a POST or DELETE 202; either way
    // the operation is in the headers.
    assert!(matches!(r.status, 200..=202), "{}", r.body);
    let url = r.headers["azure-asyncoperation"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(r.headers["location"].to_str().unwrap(), url);
    let t0 = Instant::now();
    loop {
        let op = s.get(&url).await;
        if op["status"] != "InProgress" {
            return op;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{op}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn etag(r: &Reply) -> String {
    r.headers["etag"].to_str().unwrap().to_owned()
}

async fn instances(s: &common::Srv) -> Vec<Value> {
    let v = s.get(&format!("{}/virtualMachines", set_url())).await;
    v["value"].as_array().unwrap().clone()
}

/// Images under provider path `p`: a Trusted Launch capable Gen2
/// definition `tiny` with versions 1.0.0 and 2.0.0.
async fn publish_images(s: &common::Srv, p: &str) {
    let r = send(
        s,
        Method::PUT,
        &format!("{p}/galleries/g1/images/tiny"),
        Some(json!({"location": "local", "properties": {
            "osType": "Linux", "hyperVGeneration": "V2",
            "features": [{"name": "SecurityType", "value": "TrustedLaunchSupported"}],
            "identifier": {"publisher": "trustlaunch", "offer": "tiny", "sku": "1"}}})),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    for v in ["1.0.0", "2.0.0"] {
        let r = send(
            s,
            Method::PUT,
            &format!("{p}/galleries/g1/images/tiny/versions/{v}"),
            Some(json!({"properties": {"source": format!("images/tiny-{v}")}})),
            &[],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

async fn suite(s: &common::Srv) {
    let rg = rg();
    publish_images(s, rg).await;
    let skus = s
        .get("/subscriptions/s1/providers/Microsoft.Compute/skus")
        .await;
    let d2v3 = skus["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "Standard_D2_v3")
        .unwrap()
        .clone();
    assert!(d2v3["capabilities"]
        .as_array()
        .unwrap()
        .contains(&json!({"name": "TrustedLaunchDisabled", "value": "True"})));

    // A validation error in Azure's shape.
    let mut bad = set_body(
        2,
        "1.0.0",
        json!({"securityType": "TrustedLaunch", "uefiSettings": {"secureBootEnabled": true, "vTpmEnabled": true}}),
        json!({"mode": "Manual"}),
    );
    bad["sku"]["name"] = json!("Standard_D2ps_v5");
    let r = send(s, Method::PUT, &set_url(), Some(bad.clone()), &[]).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "BadRequest");
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("The VM size 'Standard_D2ps_v5' is not supported for creation of VMs and Virtual Machine Scale Set with 'TrustedLaunch' security type."));
    assert_eq!(r.body["error"]["target"], "sku.name");
    // A family without Gen2 cannot boot the Gen2 image at all, whatever the
    // security type.
    bad["sku"]["name"] = json!("Standard_D2_v3");
    bad["properties"]["virtualMachineProfile"]["securityProfile"] =
        json!({"securityType": "Standard"});
    let r = send(s, Method::PUT, &set_url(), Some(bad), &[]).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().starts_with(
        "The selected VM size 'Standard_D2_v3' cannot boot Hypervisor Generation '2'."
    ));
    assert_eq!(r.body["error"]["target"], "sku.name");
    let r = send(s, Method::GET, &set_url(), None, &[]).await;
    assert_eq!(r.status, 404, "nothing was created");

    // 1. A Standard scale set of 3 (Gen2, Secure Boot off, no vTPM).
    let standard = json!({"securityType": "Standard"});
    let r = send(
        s,
        Method::PUT,
        &set_url(),
        Some(set_body(
            3,
            "1.0.0",
            standard.clone(),
            json!({"mode": "Manual"}),
        )),
        &[("if-none-match", "*".into())],
    )
    .await;
    // ARM's create: 201 with the operation, provisioningState Creating;
    // Succeeded once the operation is.
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["properties"]["provisioningState"], "Creating");
    let op = wait_op(s, &r).await;
    assert_eq!(op["status"], "Succeeded", "{op}");
    assert_eq!(op["properties"]["progress"]["succeeded"], 3);
    assert_eq!(
        s.get(&set_url()).await["properties"]["provisioningState"],
        "Succeeded"
    );
    let inst = instances(s).await;
    assert_eq!(inst.len(), 3);
    for i in &inst {
        assert_eq!(i["properties"]["latestModelApplied"], true, "{i}");
        assert_eq!(i["properties"]["health"], "Healthy", "{i}");
    }
    let r = send(s, Method::GET, &set_url(), None, &[]).await;
    let tag = etag(&r);

    // 2. Image change + TrustedLaunch in Manual mode: the model changes,
    //    the instances do not until updated. Without the data-loss
    //    confirmation the image change is refused; with a stale ETag 412.
    let tl = json!({"securityType": "TrustedLaunch", "uefiSettings": {"secureBootEnabled": true, "vTpmEnabled": true}});
    let body = set_body(3, "2.0.0", tl.clone(), json!({"mode": "Manual"}));
    let r = send(
        s,
        Method::PUT,
        &set_url(),
        Some(body.clone()),
        &[("if-match", tag.clone())],
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "OperationNotAllowed");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("OS disk"),
        "{}",
        r.body
    );
    let url = format!("{}?confirmOsDiskDataLoss=true", set_url());
    let r = send(
        s,
        Method::PUT,
        &url,
        Some(body.clone()),
        &[("if-match", "\"999\"".into())],
    )
    .await;
    assert_eq!(r.status, 412, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "PreconditionFailed");
    let r = send(
        s,
        Method::PUT,
        &url,
        Some(body),
        &[("if-match", tag.clone())],
    )
    .await;
    assert_eq!(r.status, 200, "Manual mode: nothing runs: {}", r.body);
    assert_ne!(etag(&r), tag);
    assert!(instances(s)
        .await
        .iter()
        .all(|i| i["properties"]["latestModelApplied"] == false));

    // 3. update-instances 0.
    let r = send(
        s,
        Method::POST,
        &format!("{}/manualupgrade", set_url()),
        Some(json!({"instanceIds": ["0"]})),
        &[],
    )
    .await;
    assert_eq!(wait_op(s, &r).await["status"], "Succeeded");
    let latest: Vec<bool> = instances(s)
        .await
        .iter()
        .map(|i| i["properties"]["latestModelApplied"] == true)
        .collect();
    assert_eq!(latest, [true, false, false]);

    // 4. Rolling: the rest, in batches; get-latest reports it.
    let r = send(s, Method::GET, &set_url(), None, &[]).await;
    let mut cur = r.body.clone();
    cur["properties"]["upgradePolicy"] =
        json!({"mode": "Rolling", "rollingUpgradePolicy": {"maxBatchInstancePercent": 34}});
    let r = send(
        s,
        Method::PUT,
        &set_url(),
        Some(cur),
        &[("if-match", etag(&r))],
    )
    .await;
    assert_eq!(
        r.status, 200,
        "a policy change is not a model change: {}",
        r.body
    );
    let r = send(
        s,
        Method::POST,
        &format!("{}/osRollingUpgrade", set_url()),
        None,
        &[],
    )
    .await;
    assert_eq!(wait_op(s, &r).await["status"], "Succeeded");
    let latest = s
        .get(&format!("{}/rollingUpgrades/latest", set_url()))
        .await;
    assert_eq!(
        latest["properties"]["runningStatus"]["code"], "Completed",
        "{latest}"
    );
    assert_eq!(
        latest["properties"]["progress"]["successfulInstanceCount"], 2,
        "{latest}"
    );
    assert!(instances(s)
        .await
        .iter()
        .all(|i| i["properties"]["latestModelApplied"] == true));

    // 5. Rollback: Standard, uefiSettings null, image back: in Rolling
    //    mode the model change starts the rolling upgrade itself.
    let r = send(s, Method::GET, &set_url(), None, &[]).await;
    let mut back = r.body.clone();
    back["properties"]["virtualMachineProfile"]["securityProfile"] =
        json!({"securityType": "Standard", "uefiSettings": null});
    back["properties"]["virtualMachineProfile"]["storageProfile"]["imageReference"] =
        image_ref("1.0.0");
    let r = send(s, Method::PUT, &url, Some(back), &[("if-match", etag(&r))]).await;
    assert_eq!(wait_op(s, &r).await["status"], "Succeeded");
    let set = s.get(&set_url()).await;
    assert_eq!(
        set["properties"]["virtualMachineProfile"]["securityProfile"]["securityType"],
        "Standard"
    );
    assert!(instances(s)
        .await
        .iter()
        .all(|i| i["properties"]["latestModelApplied"] == true));

    // 6. Two concurrent updates with the same If-Match: one wins.
    let r = send(s, Method::GET, &set_url(), None, &[]).await;
    let tag = etag(&r);
    let mut a = r.body.clone();
    a["tags"] = json!({"x": "a"});
    let mut b = r.body.clone();
    b["properties"]["upgradePolicy"] = json!({"mode": "Manual"});
    let (path, h) = (set_url(), [("if-match", tag.clone())]);
    let (ra, rb) = tokio::join!(
        send(s, Method::PUT, &path, Some(a), &h),
        send(s, Method::PUT, &path, Some(b), &h),
    );
    let mut codes = [ra.status, rb.status];
    codes.sort_unstable();
    assert_eq!(codes, [200, 412], "{} / {}", ra.body, rb.body);

    // 7. While a rolling upgrade runs (an hour's pause between batches),
    //    a change that needs another operation is refused (409) and not
    //    written: the model change and its operation commit together.
    let r = send(s, Method::GET, &set_url(), None, &[]).await;
    let mut slow = r.body.clone();
    slow["properties"]["upgradePolicy"] = json!({"mode": "Rolling", "rollingUpgradePolicy":
        {"maxBatchInstancePercent": 34, "pauseTimeBetweenBatches": "PT1H"}});
    slow["properties"]["virtualMachineProfile"]["storageProfile"]["imageReference"] =
        image_ref("2.0.0");
    let r = send(s, Method::PUT, &url, Some(slow), &[("if-match", etag(&r))]).await;
    // ARM's update: 200 with the operation, provisioningState Updating.
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["properties"]["provisioningState"], "Updating");
    let running = r.headers["azure-asyncoperation"]
        .to_str()
        .unwrap()
        .to_owned();
    let tag = etag(&r);
    let mut bigger = r.body.clone();
    bigger["sku"]["capacity"] = json!(4);
    let r = send(
        s,
        Method::PUT,
        &set_url(),
        Some(bigger),
        &[("if-match", tag.clone())],
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "OperationNotAllowed");
    let r = send(s, Method::GET, &set_url(), None, &[]).await;
    assert_eq!(
        (etag(&r), r.body["sku"]["capacity"].as_u64()),
        (tag, Some(3)),
        "nothing written"
    );
    let r = send(
        s,
        Method::POST,
        &format!("{}/rollingUpgrades/cancel", set_url()),
        None,
        &[],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let t0 = Instant::now();
    let op = loop {
        let op = s.get(&running).await;
        if op["status"] != "InProgress" {
            break op;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{op}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(op["status"], "Canceled", "{op}");

    // 8. Delete: instances, then the set.
    let r = send(s, Method::DELETE, &set_url(), None, &[]).await;
    assert_eq!(wait_op(s, &r).await["status"], "Succeeded");
    let r = send(s, Method::GET, &set_url(), None, &[]).await;
    assert_eq!(r.status, 404);
    let r = send(s, Method::GET, "/operations/nope", None, &[]).await;
    assert_eq!(r.status, 404);
}

/// One server per database runs both suites (in subscriptions of their
/// own): two servers on one PostgreSQL database would each claim the
/// other's operations and drive them on their own simulated driver.
#[tokio::test(flavor = "multi_thread")]
async fn seed_workflow_single_vms_power_actions_and_flexible_sets_on_the_simulated_driver() {
    let dir = tempfile::tempdir().unwrap();
    for db in common::databases(dir.path()) {
        let s = common::start_with(
            &db,
            Config {
                vtpm_ca: common::platform_ca(),
                driver: DriverChoice::Sim {
                    boot: Duration::ZERO,
                },
                quotas: vec![("Dsv5".into(), 10)],
                ..Config::default()
            },
        )
        .await;
        suite(&s).await;
        vm_suite(&s).await;
        s.running.abort();
    }
}

/// Follows operation `r` and asserts it succeeded.
async fn succeeds(s: &common::Srv, r: &Reply) {
    let op = wait_op(s, r).await;
    assert_eq!(op["status"], "Succeeded", "{op}");
}

/// Single VMs (create with the Trusted Launch defaults, idempotent PUT,
/// image change only with the data-loss confirmation, every power action,
/// delete), a quota-checked resize of a scale set that rolls to its
/// instances, power actions on a scale set and one instance, and a
/// Flexible set that VMs join.
async fn vm_suite(s: &common::Srv) {
    let p = format!(
        "/subscriptions/{}/resourceGroups/rg2/providers/Microsoft.Compute",
        common::unique("v")
    );
    publish_images(s, &p).await;
    let image = |v: &str| json!({"id": format!("{p}/galleries/g1/images/tiny/versions/{v}")});
    let vm_url = format!("{p}/virtualMachines/app1");
    let vm_body = |v: &str| {
        json!({"location": "local", "properties": {
            "hardwareProfile": {"vmSize": "Standard_D2s_v5"},
            "storageProfile": {"imageReference": image(v)}}})
    };

    // Create: an eligible Gen2 VM defaults to TrustedLaunch, SB + vTPM.
    let r = send(s, Method::PUT, &vm_url, Some(vm_body("1.0.0")), &[]).await;
    assert_eq!(
        r.body["properties"]["securityProfile"],
        json!({"securityType": "TrustedLaunch", "uefiSettings": {"secureBootEnabled": true, "vTpmEnabled": true}})
    );
    succeeds(s, &r).await;
    let vm = s.get(&vm_url).await;
    let view = &vm["properties"]["instanceView"];
    assert_eq!(view["powerState"], "PowerState/running", "{vm}");
    assert_eq!(view["health"], "Healthy", "{vm}");
    assert_eq!(view["latestModelApplied"], true, "{vm}");
    assert_eq!(vm["properties"]["modelVersion"], 1);

    // The same model again: 200, nothing to run. A stale ETag: 412.
    let r = send(s, Method::GET, &vm_url, None, &[]).await;
    let tag = etag(&r);
    let mut same = r.body.clone();
    same["properties"]
        .as_object_mut()
        .unwrap()
        .remove("instanceView");
    let r = send(
        s,
        Method::PUT,
        &vm_url,
        Some(same.clone()),
        &[("if-match", tag.clone())],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.headers.get("azure-asyncoperation").is_none());
    let r = send(s, Method::PUT, &vm_url, Some(same), &[("if-match", tag)]).await;
    assert_eq!(r.status, 412, "{}", r.body);

    // A new image re-creates the OS disk: refused without the consent.
    let r = send(s, Method::PUT, &vm_url, Some(vm_body("2.0.0")), &[]).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "OperationNotAllowed");
    assert_eq!(
        r.body["error"]["target"],
        "properties.storageProfile.imageReference.id"
    );
    let r = send(
        s,
        Method::PUT,
        &format!("{vm_url}?confirmOsDiskDataLoss=true"),
        Some(vm_body("2.0.0")),
        &[],
    )
    .await;
    succeeds(s, &r).await;
    assert_eq!(
        s.get(&vm_url).await["properties"]["instanceView"]["modelVersion"],
        2
    );

    // Power actions, each an operation; the instance view follows.
    for (action, power) in [
        ("powerOff", "PowerState/stopped"),
        ("deallocate", "PowerState/deallocated"),
        ("start", "PowerState/running"),
        ("restart", "PowerState/running"),
        ("reimage", "PowerState/running"),
    ] {
        let r = send(s, Method::POST, &format!("{vm_url}/{action}"), None, &[]).await;
        succeeds(s, &r).await;
        let view = &s.get(&vm_url).await["properties"]["instanceView"];
        assert_eq!(view["powerState"], power, "after {action}: {view}");
    }
    let r = send(s, Method::POST, &format!("{vm_url}/explode"), None, &[]).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let list = s.get(&format!("{p}/virtualMachines")).await;
    assert_eq!(list["value"].as_array().unwrap().len(), 1, "{list}");

    // A scale set resized within the quota (Dsv5: 10 vCPUs, 2 used by
    // app1): 3 x D4s_v5 needs 12 and is refused with used/limit; 3 x
    // D2s_v5 fits and rolls to every instance.
    let set_url = format!("{p}/virtualMachineScaleSets/web");
    let mut set = json!({"location": "local", "sku": {"name": "Standard_D2s_v3", "capacity": 3},
        "properties": {"orchestrationMode": "Uniform",
            "upgradePolicy": {"mode": "Rolling", "rollingUpgradePolicy": {"maxBatchInstancePercent": 34}},
            "virtualMachineProfile": {"storageProfile": {"imageReference": image("1.0.0")}}}});
    let r = send(s, Method::PUT, &set_url, Some(set.clone()), &[]).await;
    succeeds(s, &r).await;
    set["sku"]["name"] = json!("Standard_D4s_v5");
    let r = send(s, Method::PUT, &set_url, Some(set.clone()), &[]).await;
    assert_eq!(r.status, 409, "{}", r.body);
    let msg = r.body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("Current Limit: 10"), "{msg}");
    assert!(msg.contains("Current Usage: 2"), "{msg}");
    assert!(msg.contains("Additional Required: 12"), "{msg}");
    assert_eq!(r.body["error"]["target"], "sku.name");
    set["sku"]["name"] = json!("Standard_D2s_v5");
    let r = send(s, Method::PUT, &set_url, Some(set.clone()), &[]).await;
    succeeds(s, &r).await;
    // Within the family only the growth counts, on top of what the set
    // itself already uses: 8 used, 6 more needed.
    let mut bigger = set.clone();
    bigger["sku"]["name"] = json!("Standard_D4s_v5");
    let r = send(s, Method::PUT, &set_url, Some(bigger), &[]).await;
    assert_eq!(r.status, 409, "{}", r.body);
    let msg = r.body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("Current Usage: 8, Additional Required: 6"),
        "{msg}"
    );
    let inst = s.get(&format!("{set_url}/virtualMachines")).await;
    let inst = inst["value"].as_array().unwrap();
    assert_eq!(inst.len(), 3);
    for i in inst {
        assert_eq!(i["properties"]["latestModelApplied"], true, "{i}");
        assert_eq!(i["properties"]["modelVersion"], 2, "{i}");
    }

    // Power actions on the set, on chosen instances, on one instance.
    let r = send(s, Method::POST, &format!("{set_url}/powerOff"), None, &[]).await;
    succeeds(s, &r).await;
    let r = send(
        s,
        Method::POST,
        &format!("{set_url}/start"),
        Some(json!({"instanceIds": ["0", "2"]})),
        &[],
    )
    .await;
    succeeds(s, &r).await;
    let r = send(
        s,
        Method::POST,
        &format!("{set_url}/virtualMachines/1/restart"),
        None,
        &[],
    )
    .await;
    succeeds(s, &r).await;
    let inst = s.get(&format!("{set_url}/virtualMachines")).await;
    let powers: Vec<&str> = inst["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["properties"]["powerState"].as_str().unwrap())
        .collect();
    assert_eq!(powers, ["PowerState/running"; 3], "{inst}");
    let r = send(
        s,
        Method::POST,
        &format!("{set_url}/restart"),
        Some(json!({"instanceIds": ["7"]})),
        &[],
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.body["error"]["target"], "instanceIds");

    // Scale in, then out: the new instance gets an id never used before.
    for (capacity, ids) in [(1, vec!["0"]), (2, vec!["0", "3"])] {
        let mut resized = set.clone();
        resized["sku"]["capacity"] = json!(capacity);
        let r = send(s, Method::PUT, &set_url, Some(resized), &[]).await;
        succeeds(s, &r).await;
        let inst = s.get(&format!("{set_url}/virtualMachines")).await;
        let got: Vec<&str> = inst["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["instanceId"].as_str().unwrap())
            .collect();
        assert_eq!(got, ids, "{inst}");
    }

    // VMs join a Flexible set, never a Uniform one; the set lists them
    // and cannot be deleted while they are in it.
    let flex_url = format!("{p}/virtualMachineScaleSets/flex");
    let mut flex = set.clone();
    flex["sku"]["capacity"] = json!(0);
    flex["properties"]["orchestrationMode"] = json!("Flexible");
    let r = send(s, Method::PUT, &flex_url, Some(flex), &[]).await;
    succeeds(s, &r).await;
    let mut member = vm_body("1.0.0");
    member["properties"]["virtualMachineScaleSet"] = json!({"id": set_url});
    let r = send(
        s,
        Method::PUT,
        &format!("{p}/virtualMachines/app2"),
        Some(member.clone()),
        &[],
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "OperationNotAllowed");
    member["properties"]["virtualMachineScaleSet"] = json!({"id": flex_url});
    let r = send(
        s,
        Method::PUT,
        &format!("{p}/virtualMachines/app2"),
        Some(member),
        &[],
    )
    .await;
    succeeds(s, &r).await;
    let inst = s.get(&format!("{flex_url}/virtualMachines")).await;
    assert_eq!(inst["value"][0]["name"], "app2", "{inst}");
    assert_eq!(
        inst["value"][0]["properties"]["health"], "Healthy",
        "{inst}"
    );
    let r = send(s, Method::DELETE, &flex_url, None, &[]).await;
    assert_eq!(r.status, 409, "{}", r.body);
    let r = send(s, Method::POST, &format!("{flex_url}/restart"), None, &[]).await;
    succeeds(s, &r).await;

    // Names the host cannot run (Azure allows 64 characters; the runtime
    // 40, and a set's instances add "-<id>"): refused when created.
    let long_vm = "a".repeat(41);
    let r = send(
        s,
        Method::PUT,
        &format!("{p}/virtualMachines/{long_vm}"),
        Some(vm_body("1.0.0")),
        &[],
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "InvalidParameter");
    assert_eq!(r.body["error"]["target"], "name");
    let long_set = "s".repeat(35);
    let r = send(
        s,
        Method::PUT,
        &format!("{p}/virtualMachineScaleSets/{long_set}"),
        Some(set.clone()),
        &[],
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["error"]["target"], "name");

    // A VM named as a scale set instance is named on the host ("web-0"):
    // runtime names are given per resource id, with a suffix no instance
    // id has, so the two never meet.
    let r = send(
        s,
        Method::PUT,
        &format!("{p}/virtualMachines/web-0"),
        Some(vm_body("1.0.0")),
        &[],
    )
    .await;
    succeeds(s, &r).await;
    let vm_runtime = r.body["properties"]["runtimeName"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(vm_runtime.starts_with("web-0-"), "{vm_runtime}");
    let set_runtime = s.get(&set_url).await["properties"]["runtimeName"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(format!("{set_runtime}-0"), vm_runtime);
    let web0 = format!("{p}/virtualMachines/web-0");
    succeeds(s, &send(s, Method::DELETE, &web0, None, &[]).await).await;
    // A runtime name in a request is the caller's wish, not honoured.
    let r = send(
        s,
        Method::PUT,
        &format!("{p}/virtualMachines/thief"),
        Some({
            let mut b = vm_body("1.0.0");
            b["properties"]["runtimeName"] = json!(format!("{set_runtime}-0"));
            b
        }),
        &[],
    )
    .await;
    succeeds(s, &r).await;
    assert!(
        r.body["properties"]["runtimeName"]
            .as_str()
            .unwrap()
            .starts_with("thief-"),
        "{}",
        r.body
    );
    let thief = format!("{p}/virtualMachines/thief");
    succeeds(s, &send(s, Method::DELETE, &thief, None, &[]).await).await;

    // Delete: the VMs, then the emptied sets.
    for url in [
        vm_url.clone(),
        format!("{p}/virtualMachines/app2"),
        flex_url,
        set_url,
    ] {
        let r = send(s, Method::DELETE, &url, None, &[]).await;
        succeeds(s, &r).await;
        assert_eq!(send(s, Method::GET, &url, None, &[]).await.status, 404);
    }
}

/// A server on the simulated driver and the first test database.
async fn sim_server(dir: &std::path::Path) -> common::Srv {
    let db = common::databases(dir).remove(0);
    common::start_with(
        &db,
        Config {
            vtpm_ca: common::platform_ca(),
            driver: DriverChoice::Sim {
                boot: Duration::ZERO,
            },
            ..Config::default()
        },
    )
    .await
}

/// Lists page as ARM's do: a 250-instance set's instances in pages of at
/// most 100, each page's `nextLink` the next page's address, every
/// instance once, in instance-id order; the last page has none.
#[tokio::test(flavor = "multi_thread")]
async fn list_instances_pages_with_next_link() {
    let dir = tempfile::tempdir().unwrap();
    let s = sim_server(dir.path()).await;
    let p = format!(
        "/subscriptions/{}/resourceGroups/rg3/providers/Microsoft.Compute",
        common::unique("p")
    );
    publish_images(&s, &p).await;
    let url = format!("{p}/virtualMachineScaleSets/big");
    let body = json!({
        "location": "local",
        "sku": {"name": "Standard_B1s", "capacity": 250},
        "properties": {
            "upgradePolicy": {"mode": "Manual"},
            "virtualMachineProfile": {
                "storageProfile": {"imageReference": {"id": format!("{p}/galleries/g1/images/tiny/versions/1.0.0")}},
                "securityProfile": {"securityType": "Standard"}
            }
        }
    });
    let r = send(&s, Method::PUT, &url, Some(body), &[]).await;
    assert_eq!(wait_op(&s, &r).await["status"], "Succeeded");
    let mut seen: Vec<u64> = Vec::new();
    let mut sizes = Vec::new();
    let mut next = Some(format!("{url}/virtualMachines"));
    while let Some(n) = next.take() {
        let v = s.get(&n).await;
        let items = v["value"].as_array().unwrap();
        sizes.push(items.len());
        seen.extend(
            items
                .iter()
                .map(|i| i["instanceId"].as_str().unwrap().parse::<u64>().unwrap()),
        );
        next = v["nextLink"].as_str().map(str::to_owned);
        if let Some(n) = &next {
            assert!(
                n.starts_with(&format!("{url}/virtualMachines?$skiptoken=")),
                "{n}"
            );
        }
    }
    assert_eq!(sizes, [100, 100, 50]);
    assert_eq!(seen, (0..250).collect::<Vec<u64>>());
    // A token past the end is an empty last page, not an error.
    let v = s
        .get(&format!(
            "{url}/virtualMachines?$skiptoken=i%3A99999999999999999999"
        ))
        .await;
    assert_eq!(v["value"], json!([]));
    assert!(v.get("nextLink").is_none());
    s.running.abort();
}

/// PATCH as ARM's: a merge patch onto the stored resource (`null`
/// removes), carried out as the PUT of the result (200, the operation in
/// the headers); a stale If-Match is refused; a PATCH needs the resource
/// to exist and a JSON object.
#[tokio::test(flavor = "multi_thread")]
async fn patch_merges_onto_the_stored_resource() {
    let dir = tempfile::tempdir().unwrap();
    let s = sim_server(dir.path()).await;
    let p = format!(
        "/subscriptions/{}/resourceGroups/rg4/providers/Microsoft.Compute",
        common::unique("q")
    );
    publish_images(&s, &p).await;
    let image = |v: &str| json!({"id": format!("{p}/galleries/g1/images/tiny/versions/{v}")});
    let url = format!("{p}/virtualMachineScaleSets/patched");
    let r = send(
        &s,
        Method::PUT,
        &url,
        Some(json!({
            "location": "local",
            "sku": {"name": "Standard_B1s", "capacity": 2},
            "properties": {
                "upgradePolicy": {"mode": "Automatic"},
                "virtualMachineProfile": {
                    "storageProfile": {"imageReference": image("1.0.0")},
                    "securityProfile": {"securityType": "Standard"}
                }
            }
        })),
        &[],
    )
    .await;
    assert_eq!(wait_op(&s, &r).await["status"], "Succeeded");
    // Capacity alone: the rest of the model stays.
    let r = send(
        &s,
        Method::PATCH,
        &url,
        Some(json!({"sku": {"capacity": 3}})),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["sku"]["name"], "Standard_B1s");
    assert_eq!(
        r.body["properties"]["virtualMachineProfile"]["securityProfile"]["securityType"],
        "Standard"
    );
    assert_eq!(wait_op(&s, &r).await["status"], "Succeeded");
    let v = s.get(&format!("{url}/virtualMachines")).await;
    assert_eq!(v["value"].as_array().unwrap().len(), 3);
    // The move to Trusted Launch by PATCH: a new model, upgraded at once
    // (Automatic).
    let r = send(
        &s,
        Method::PATCH,
        &url,
        Some(json!({"properties": {"virtualMachineProfile": {
            "storageProfile": {"imageReference": image("2.0.0")},
            "securityProfile": {"securityType": "TrustedLaunch",
                "uefiSettings": {"secureBootEnabled": true, "vTpmEnabled": true}}}}})),
        &[],
    )
    .await;
    // The image change needs the OS-disk consent, as with PUT.
    assert_eq!(r.status, 409, "{}", r.body);
    let r = send(
        &s,
        Method::PATCH,
        &format!("{url}?confirmOsDiskDataLoss=true"),
        Some(json!({"properties": {"virtualMachineProfile": {
            "storageProfile": {"imageReference": image("2.0.0")},
            "securityProfile": {"securityType": "TrustedLaunch",
                "uefiSettings": {"secureBootEnabled": true, "vTpmEnabled": true}}}}})),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["properties"]["provisioningState"], "Updating");
    assert_eq!(wait_op(&s, &r).await["status"], "Succeeded");
    let set = s.get(&url).await;
    assert_eq!(
        set["properties"]["virtualMachineProfile"]["securityProfile"]["securityType"],
        "TrustedLaunch"
    );
    assert_eq!(set["sku"]["capacity"], 3, "kept");
    // null removes: back to Standard without uefiSettings.
    let r = send(
        &s,
        Method::PATCH,
        &url,
        Some(json!({"properties": {"virtualMachineProfile": {
            "securityProfile": {"securityType": "Standard", "uefiSettings": null}}}})),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body["properties"]["virtualMachineProfile"]["securityProfile"]
            .get("uefiSettings")
            .is_none_or(Value::is_null)
    );
    wait_op(&s, &r).await;
    // A stale If-Match, a missing resource, a body that is not an object.
    let r = send(
        &s,
        Method::PATCH,
        &url,
        Some(json!({"sku": {"capacity": 2}})),
        &[("if-match", "\"1\"".into())],
    )
    .await;
    assert_eq!(r.status, 412, "{}", r.body);
    let r = send(
        &s,
        Method::PATCH,
        &format!("{p}/virtualMachineScaleSets/nope"),
        Some(json!({})),
        &[],
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = send(&s, Method::PATCH, &url, Some(json!([1])), &[]).await;
    assert_eq!(r.status, 400, "{}", r.body);
    // A VM likewise: a resize by PATCH keeps its image and security.
    let vm_url = format!("{p}/virtualMachines/pvm");
    let r = send(
        &s,
        Method::PUT,
        &vm_url,
        Some(json!({"location": "local", "properties": {
            "hardwareProfile": {"vmSize": "Standard_B1s"},
            "storageProfile": {"imageReference": image("1.0.0")}}})),
        &[],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["properties"]["provisioningState"], "Creating");
    wait_op(&s, &r).await;
    let r = send(
        &s,
        Method::PATCH,
        &vm_url,
        Some(json!({"properties": {"hardwareProfile": {"vmSize": "Standard_B2s"}}})),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(wait_op(&s, &r).await["status"], "Succeeded");
    let vm = s.get(&vm_url).await;
    assert_eq!(
        vm["properties"]["hardwareProfile"]["vmSize"],
        "Standard_B2s"
    );
    assert_eq!(
        vm["properties"]["securityProfile"]["securityType"],
        "TrustedLaunch"
    );
    assert_eq!(vm["properties"]["provisioningState"], "Succeeded");
    s.running.abort();
}

/// Every error is in ARM's envelope, the framework's own rejections
/// included: a path the API does not serve, a method a path does not
/// take, a body that is not JSON, JSON of the wrong shape, a query that
/// does not parse, a body over the limit, no token.
#[tokio::test]
async fn every_error_is_in_arms_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let s = sim_server(dir.path()).await;
    let p = format!(
        "/subscriptions/{}/resourceGroups/rg5/providers/Microsoft.Compute",
        common::unique("e")
    );
    let set = format!("{p}/virtualMachineScaleSets/web");
    type Body = Option<(&'static str, Vec<u8>)>;
    let raw = |method: Method, url: String, body: Body| {
        let s = &s;
        async move {
            let mut r = s
                .http
                .request(method, format!("{}{url}", s.url))
                .bearer_auth(&s.token);
            if let Some((ct, b)) = body {
                r = r.header("content-type", ct).body(b);
            }
            let resp = r.send().await.unwrap();
            let status = resp.status().as_u16();
            let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
            let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap_or_default();
            (status, ct, body)
        }
    };
    let cases: Vec<(Method, String, Body, u16, &str)> = vec![
        (
            Method::GET,
            format!("{p}/noSuchThing/x"),
            None,
            404,
            "NotFound",
        ),
        (
            Method::DELETE,
            format!("{p}/virtualMachineScaleSets/web/virtualMachines"),
            None,
            405,
            "MethodNotAllowed",
        ),
        (
            Method::PUT,
            set.clone(),
            Some(("application/json", b"{not json".to_vec())),
            400,
            "BadRequest",
        ),
        (
            Method::PUT,
            set.clone(),
            Some(("application/json", b"{\"location\": 5}".to_vec())),
            400,
            "BadRequest",
        ),
        (
            Method::PUT,
            format!("{set}?confirmOsDiskDataLoss=maybe"),
            Some(("application/json", b"{}".to_vec())),
            400,
            "BadRequest",
        ),
        (
            Method::PUT,
            set.clone(),
            Some(("application/json", vec![b' '; 2 << 20])),
            413,
            "RequestEntityTooLarge",
        ),
    ];
    for (method, url, body, status, code) in cases {
        let what = format!("{method} {url}");
        let (st, ct, b) = raw(method, url, body).await;
        assert_eq!(st, status, "{what}: {b}");
        assert!(ct.starts_with("application/json"), "{what}: {ct}");
        assert_eq!(b["error"]["code"], code, "{what}: {b}");
        assert!(
            b["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: {b}"
        );
    }
    // A setting the control plane does not take is refused, named, not
    // dropped; a read-only one sent back is taken; tags are kept.
    publish_images(&s, &p).await;
    let body = |extra: Value| {
        let mut b = json!({
            "location": "local",
            "tags": {"team": "a"},
            "sku": {"name": "Standard_B1s", "capacity": 1, "tier": "Standard"},
            "properties": {
                "provisioningState": "Succeeded",
                "virtualMachineProfile": {
                    "storageProfile": {"imageReference": {"id": format!("{p}/galleries/g1/images/tiny/versions/1.0.0")}},
                    "securityProfile": {"securityType": "Standard"}
                }
            }
        });
        json_patch::merge(&mut b, &extra);
        b
    };
    for (extra, target) in [
        (json!({"zones": ["1"]}), "zones"),
        (
            json!({"properties": {"virtualMachineProfile": {"diagnosticsProfile": {"bootDiagnostics": {"enabled": true}}}}}),
            "properties.virtualMachineProfile.diagnosticsProfile",
        ),
        (
            json!({"properties": {"virtualMachineProfile": {"securityProfile": {"proxyAgentSettings": {}}}}}),
            "properties.virtualMachineProfile.securityProfile.proxyAgentSettings",
        ),
    ] {
        let r = send(&s, Method::PUT, &set, Some(body(extra)), &[]).await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(
            r.body["error"]["code"], "InvalidRequestContent",
            "{}",
            r.body
        );
        assert_eq!(r.body["error"]["target"], target, "{}", r.body);
    }
    let r = send(
        &s,
        Method::PUT,
        &set,
        Some(body(json!({"sku": {"tier": "Basic"}}))),
        &[],
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"]["target"].as_str()),
        (400, Some("sku.tier")),
        "{}",
        r.body
    );
    let r = send(&s, Method::PUT, &set, Some(body(json!({}))), &[]).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["tags"]["team"], "a", "{}", r.body);

    let resp = s.http.get(format!("{}{set}", s.url)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let b: Value = resp.json().await.unwrap();
    assert!(b["error"]["code"].is_string(), "{b}");
}

/// Resource groups as ARM serves them: created (201, then 200), shown,
/// checked (HEAD), listed per subscription; made by the first resource
/// written into them; deleted only when empty, the refusal naming what is
/// in it; a reader may look, not change.
#[tokio::test(flavor = "multi_thread")]
async fn resource_groups_are_resources() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::databases(dir.path()).remove(0);
    let s = common::start_with(
        &db,
        Config {
            vtpm_ca: common::platform_ca(),
            driver: DriverChoice::Sim {
                boot: Duration::ZERO,
            },
            ..Config::default()
        },
    )
    .await;
    let sub = common::unique("g");
    let g = |rg: &str| format!("/subscriptions/{sub}/resourcegroups/{rg}");
    let r = send(
        &s,
        Method::PUT,
        &g("Blue"),
        Some(json!({"location": "local", "tags": {"team": "a"}})),
        &[],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        r.body["id"],
        format!("/subscriptions/{sub}/resourceGroups/Blue")
    );
    assert_eq!(r.body["type"], "Microsoft.Resources/resourceGroups");
    assert_eq!(r.body["properties"]["provisioningState"], "Succeeded");
    let r = send(
        &s,
        Method::PUT,
        &g("blue"),
        Some(json!({"location": "local"})),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "an update, whatever the case: {}", r.body);
    assert_eq!(r.body["name"], "Blue", "the name as first written");
    // The compute paths' spelling reaches the same group.
    let camel = format!("/subscriptions/{sub}/resourceGroups/BLUE");
    assert_eq!(
        send(&s, Method::GET, &camel, None, &[]).await.body["name"],
        "Blue"
    );
    assert_eq!(
        send(&s, Method::HEAD, &g("blue"), None, &[]).await.status,
        204
    );
    assert_eq!(
        send(&s, Method::HEAD, &g("nope"), None, &[]).await.status,
        404
    );
    let r = send(&s, Method::GET, &g("nope"), None, &[]).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (404, Some("ResourceGroupNotFound"))
    );
    for (body, target) in [
        (json!({}), None),
        (json!({"location": ""}), Some("location")),
    ] {
        let r = send(&s, Method::PUT, &g("bad"), Some(body), &[]).await;
        assert_eq!(r.status, 400, "{}", r.body);
        if let Some(t) = target {
            assert_eq!(r.body["error"]["target"], t);
        }
    }
    let r = send(
        &s,
        Method::PUT,
        &g("bad.name."),
        Some(json!({"location": "local"})),
        &[],
    )
    .await;
    assert_eq!(r.status, 400, "a name ending in a period: {}", r.body);

    // A resource written into a group that was never created makes it.
    let p = format!("/subscriptions/{sub}/resourceGroups/Green/providers/Microsoft.Compute");
    publish_images(&s, &p).await;
    let r = send(&s, Method::GET, &g("green"), None, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["properties"]["implicit"], true);
    let listed = send(
        &s,
        Method::GET,
        &format!("/subscriptions/{sub}/resourcegroups"),
        None,
        &[],
    )
    .await;
    let names: Vec<&str> = listed.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Blue", "Green"]);

    // Not empty: refused, naming what it holds; nothing deleted.
    let r = send(&s, Method::DELETE, &g("green"), None, &[]).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "ResourceGroupNotEmpty");
    let msg = r.body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("galleries/g1/images/tiny"), "{msg}");
    assert_eq!(
        send(&s, Method::GET, &g("green"), None, &[]).await.status,
        200
    );

    // A reader looks; it does not change.
    let reader = common::token_in(&db, "reader", trustlaunch_store::Role::Reader).await;
    let resp = s
        .http
        .delete(format!("{}{}", s.url, g("blue")))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let resp = s
        .http
        .get(format!("{}{}", s.url, g("blue")))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    // Empty: deleted; then gone.
    let r = send(&s, Method::DELETE, &g("blue"), None, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        send(&s, Method::GET, &g("blue"), None, &[]).await.status,
        404
    );
    assert_eq!(
        send(&s, Method::DELETE, &g("blue"), None, &[]).await.status,
        404
    );
}
