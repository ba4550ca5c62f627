//! The seed workflow as a CLI session against a real `trustlaunch server`
//! process running the simulated driver: gallery image and versions, a
//! Standard scale set, the move to Trusted Launch (update + update-instances,
//! then a rolling upgrade), rollback, delete — what README shows.

mod fleet_server;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use fleet_server::{create_standard_set, fails, img, ok, publish, start, tl};

#[test]
fn seed_workflow_as_a_cli_session() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(tmp.path());
    publish(&s, tmp.path());
    let skus = ok(tl(&s, &["vm", "list-skus"]));
    assert!(
        skus.contains("Standard_D2_v3") && skus.contains("not supported"),
        "{skus}"
    );

    // A Standard scale set of 3.
    let out = create_standard_set(&s);
    assert!(out.contains("security type:   Standard"), "{out}");
    assert_eq!(out.matches("latestModelApplied=true").count(), 3, "{out}");
    assert!(out.contains("3/3 done"), "progress shown: {out}");

    // An unsupported size for Trusted Launch: Azure's error, with the way out.
    let err = fails(tl(
        &s,
        &[
            "vmss",
            "update",
            "-g",
            "rg",
            "-n",
            "web",
            "--vm-sku",
            "Standard_D2_v3",
            "--security-type",
            "TrustedLaunch",
        ],
    ));
    assert!(
        err.contains("The selected VM size 'Standard_D2_v3' cannot boot Hypervisor Generation '2'"),
        "{err}"
    );
    assert!(
        err.contains("Standard_D2s_v3"),
        "names the alternative: {err}"
    );
    // Whatever the security type: the Standard set may not move there either.
    let err = fails(tl(
        &s,
        &[
            "vmss",
            "update",
            "-g",
            "rg",
            "-n",
            "web",
            "--vm-sku",
            "Standard_D2_v3",
        ],
    ));
    assert!(
        err.contains("cannot boot Hypervisor Generation '2'"),
        "{err}"
    );

    // The image change needs --yes; then the model moves, instances do not.
    let err = fails(tl(
        &s,
        &[
            "vmss",
            "update",
            "-g",
            "rg",
            "-n",
            "web",
            "--image",
            &img("2.0.0"),
            "--security-type",
            "TrustedLaunch",
            "--enable-secure-boot",
            "true",
            "--enable-vtpm",
            "true",
        ],
    ));
    assert!(err.contains("OS disk"), "{err}");
    let out = ok(tl(
        &s,
        &[
            "vmss",
            "update",
            "-g",
            "rg",
            "-n",
            "web",
            "--image",
            &img("2.0.0"),
            "--security-type",
            "TrustedLaunch",
            "--enable-secure-boot",
            "true",
            "--enable-vtpm",
            "true",
            "--enable-guest-attestation",
            "--yes",
        ],
    ));
    assert!(out.contains("security type:   TrustedLaunch"), "{out}");
    assert_eq!(out.matches("latestModelApplied=false").count(), 3, "{out}");
    let out = ok(tl(
        &s,
        &[
            "vmss",
            "update-instances",
            "-g",
            "rg",
            "-n",
            "web",
            "--instance-ids",
            "0",
        ],
    ));
    assert_eq!(out.matches("latestModelApplied=true").count(), 1, "{out}");

    // Rolling for the rest.
    ok(tl(
        &s,
        &[
            "vmss",
            "update",
            "-g",
            "rg",
            "-n",
            "web",
            "--upgrade-policy-mode",
            "Rolling",
            "--max-batch-instance-percent",
            "50",
        ],
    ));
    let out = ok(tl(
        &s,
        &["vmss", "rolling-upgrade", "start", "-g", "rg", "-n", "web"],
    ));
    assert!(out.contains("\"code\": \"Completed\""), "{out}");
    let out = ok(tl(&s, &["vmss", "show", "-g", "rg", "-n", "web"]));
    assert_eq!(out.matches("latestModelApplied=true").count(), 3, "{out}");

    // Rollback (Rolling mode: the update itself rolls the instances).
    let out = ok(tl(
        &s,
        &[
            "vmss",
            "update",
            "-g",
            "rg",
            "-n",
            "web",
            "--image",
            &img("1.0.0"),
            "--security-type",
            "Standard",
            "--disable-guest-attestation",
            "--yes",
        ],
    ));
    assert!(out.contains("security type:   Standard"), "{out}");
    assert_eq!(out.matches("latestModelApplied=true").count(), 3, "{out}");

    ok(tl(&s, &["vmss", "delete", "-g", "rg", "-n", "web"]));
    let err = fails(tl(&s, &["vmss", "show", "-g", "rg", "-n", "web"]));
    assert!(err.contains("404"), "{err}");

    // Resource groups: rg was made by the first resource written into it,
    // and holds the gallery still.
    ok(tl(
        &s,
        &["group", "create", "-n", "empty", "--tags", "team=a"],
    ));
    let out = ok(tl(&s, &["group", "list"]));
    assert!(out.contains("empty") && out.contains("rg"), "{out}");
    let err = fails(tl(&s, &["group", "delete", "-n", "rg"]));
    assert!(
        err.contains("409 ResourceGroupNotEmpty") && err.contains("galleries/g1"),
        "{err}"
    );
    ok(tl(&s, &["group", "delete", "-n", "empty"]));
    let err = fails(tl(&s, &["group", "show", "-n", "empty"]));
    assert!(err.contains("404 ResourceGroupNotFound"), "{err}");
}

#[test]
fn vm_verbs_as_a_cli_session() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(tmp.path());
    publish(&s, tmp.path());
    let vm = |args: &[&str]| {
        let mut a = vec!["vm"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-g", "rg"]);
        tl(&s, &a)
    };

    // Created with the defaults: TrustedLaunch, Secure Boot and vTPM on.
    let out = ok(vm(&["create", "-n", "app1", "--image", &img("1.0.0")]));
    assert!(out.contains("security type:   TrustedLaunch"), "{out}");
    assert!(out.contains("secure boot:     true"), "{out}");
    assert!(out.contains("power state:     PowerState/running"), "{out}");
    assert!(out.contains("health:          Healthy"), "{out}");
    assert!(out.contains("1/1 done"), "progress shown: {out}");

    // Guest attestation added; a new image only with --yes.
    let out = ok(vm(&["update", "-n", "app1", "--enable-guest-attestation"]));
    assert!(out.contains("guest attestation: true"), "{out}");
    assert!(
        out.contains("model version:   2 (latestModelApplied=true)"),
        "{out}"
    );
    let err = fails(vm(&["update", "-n", "app1", "--image", &img("2.0.0")]));
    assert!(err.contains("OS disk"), "{err}");
    ok(vm(&[
        "update",
        "-n",
        "app1",
        "--image",
        &img("2.0.0"),
        "--yes",
    ]));

    for (verb, power) in [
        ("stop", "PowerState/stopped"),
        ("deallocate", "PowerState/deallocated"),
        ("start", "PowerState/running"),
        ("restart", "PowerState/running"),
        ("reimage", "PowerState/running"),
    ] {
        let out = ok(vm(&[verb, "-n", "app1"]));
        assert!(
            out.contains(&format!("power state:     {power}")),
            "{verb}: {out}"
        );
    }
    let out = ok(vm(&["list"]));
    assert!(
        out.contains("app1") && out.contains("TrustedLaunch"),
        "{out}"
    );

    // A Flexible scale set, a VM joining it, a power action on the set.
    ok(tl(
        &s,
        &[
            "vmss",
            "create",
            "-g",
            "rg",
            "-n",
            "flex",
            "--image",
            &img("1.0.0"),
            "--vm-sku",
            "Standard_D2s_v3",
            "--instance-count",
            "1",
            "--orchestration-mode",
            "Flexible",
        ],
    ));
    ok(vm(&[
        "create",
        "-n",
        "app2",
        "--image",
        &img("1.0.0"),
        "--vmss",
        "flex",
    ]));
    let out = ok(tl(
        &s,
        &[
            "vmss",
            "restart",
            "-g",
            "rg",
            "-n",
            "flex",
            "--instance-ids",
            "app2",
        ],
    ));
    assert!(out.contains("1/1 done"), "{out}");
    let out = ok(tl(&s, &["vmss", "stop", "-g", "rg", "-n", "flex"]));
    assert!(out.contains("2/2 done"), "{out}");
    let err = fails(tl(&s, &["vmss", "delete", "-g", "rg", "-n", "flex"]));
    assert!(err.contains("app2"), "{err}");

    for name in ["app1", "app2"] {
        ok(vm(&["delete", "-n", name]));
        let err = fails(vm(&["show", "-n", name]));
        assert!(err.contains("404"), "{err}");
    }
    ok(tl(&s, &["vmss", "delete", "-g", "rg", "-n", "flex"]));
}

/// Azure's own Python SDK (azure-mgmt-compute, the version pinned in
/// tests/azure_sdk/requirements.txt) drives the server: the seed workflow
/// on a scale set (create, skus, a refused and an accepted resize by PATCH,
/// image and security type to Trusted Launch by PATCH, instance 0 by hand,
/// a rolling upgrade of the rest, the latest rolling upgrade, rollback,
/// delete), a single VM's create, extension, resize, power actions and
/// delete, resource groups through the resource client (create, exists,
/// list, a non-empty group's deletion refused, an empty one's), and the
/// pager over a 1,000-instance set — every long-running
/// call through the SDK's own poller. The interpreter with the SDK comes
/// from TRUSTLAUNCH_AZURE_SDK_PYTHON (scripts/test.sh installs it); without
/// it the test says so and does nothing.
#[test]
fn the_seed_workflow_through_azures_python_sdk() {
    let Some(python) = std::env::var_os("TRUSTLAUNCH_AZURE_SDK_PYTHON") else {
        eprintln!(
            "skipped: TRUSTLAUNCH_AZURE_SDK_PYTHON is not set (scripts/test.sh installs Azure's Python SDK and sets it)"
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let s = start(tmp.path());
    publish(&s, tmp.path());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/azure_sdk/seed_workflow.py");
    let out = Command::new(python)
        .arg(&script)
        .args(["scale-set", "vm", "groups", "pager"])
        .env("TRUSTLAUNCH_SERVER", &s.url)
        .env("TRUSTLAUNCH_CACERT", &s.ca)
        .env("TRUSTLAUNCH_TOKEN", &s.token)
        .env("TRUSTLAUNCH_SUB", "local")
        .env("TRUSTLAUNCH_RG", "rg")
        .env("TRUSTLAUNCH_IMAGE_V1", img("1.0.0"))
        .env("TRUSTLAUNCH_IMAGE_V2", img("2.0.0"))
        .stdin(Stdio::null())
        .output()
        .expect("run the SDK script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("done"),
        "exit {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // Every step ran (a script cut short cannot pass for a whole one).
    for step in [
        "list skus",
        "rolling upgrade of the rest",
        "roll back to Standard and the last good image (PATCH)",
        "delete the scale set",
        "add the Guest Attestation extension",
        "deallocate",
        "delete the VM",
        "a group holding resources is not deleted",
        "delete the empty group",
        "list its instances through the pager",
    ] {
        assert!(
            stdout.contains(&format!("step: {step}\n")),
            "{step}: {stdout}"
        );
    }
    // What the SDK did is what the server holds: nothing left behind.
    let out = ok(tl(&s, &["vmss", "list", "-g", "rg"]));
    assert!(!out.contains("web") && !out.contains("big"), "{out}");
    let out = ok(tl(&s, &["vm", "list", "-g", "rg"]));
    assert!(!out.contains("vm1"), "{out}");
}
