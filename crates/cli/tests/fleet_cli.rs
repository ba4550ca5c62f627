//! The seed workflow as a CLI session against a real `trustlaunch server`
//! process running the simulated driver: gallery image and versions, a
//! Standard scale set, the move to Trusted Launch (update + update-instances,
//! then a rolling upgrade), rollback, delete — what README shows.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

struct Server {
    child: Child,
    url: String,
    token: String,
    /// The platform TLS CA the server made in its home.
    ca: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path) -> Server {
    let ca = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../attestation/tests/data/evidence/vtpm-ca.crt");
    let token_file = dir.join("admin.token");
    let mut child = Command::new(env!("CARGO_BIN_EXE_trustlaunch"))
        .args([
            "server",
            "--no-runtime",
            "--driver",
            "sim",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--db")
        .arg(format!("sqlite://{}", dir.join("s.db").display()))
        .arg("--vtpm-ca")
        .arg(&ca)
        .arg("--admin-token-file")
        .arg(&token_file)
        .arg("--home")
        .arg(dir.join("home"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let url = loop {
        let line = lines.next().expect("server output").expect("line");
        if let Some(u) = line.strip_prefix("trustlaunch server: listening on ") {
            break u.trim().to_owned();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let token = std::fs::read_to_string(&token_file)
        .expect("admin token")
        .trim()
        .to_owned();
    assert!(url.starts_with("https://"), "{url}");
    let ca = dir.join("home/tls/ca.crt");
    assert!(ca.exists(), "the server made no platform TLS CA");
    Server {
        child,
        url,
        token,
        ca,
    }
}

fn tl(s: &Server, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trustlaunch"))
        .args(args)
        .env("TRUSTLAUNCH_SERVER", &s.url)
        .env("TRUSTLAUNCH_CACERT", &s.ca)
        .env("TRUSTLAUNCH_TOKEN", &s.token)
        .stdin(Stdio::null())
        .output()
        .expect("run trustlaunch")
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn fails(o: Output) -> String {
    assert!(
        !o.status.success(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The gallery image `tiny` (Gen2, TrustedLaunchSupported) with versions
/// 1.0.0 and 2.0.0, made with the CLI.
fn publish(s: &Server, tmp: &Path) {
    ok(tl(
        s,
        &[
            "image",
            "definition",
            "create",
            "-g",
            "rg",
            "--gallery-name",
            "g1",
            "--gallery-image-definition",
            "tiny",
            "--os-type",
            "Linux",
            "--hyper-v-generation",
            "V2",
            "--features",
            "SecurityType=TrustedLaunchSupported",
        ],
    ));
    for v in ["1.0.0", "2.0.0"] {
        let dir = tmp.join(v);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("image.json"), "{}").unwrap();
        ok(tl(
            s,
            &[
                "image",
                "version",
                "create",
                "-g",
                "rg",
                "--gallery-name",
                "g1",
                "--gallery-image-definition",
                "tiny",
                "--gallery-image-version",
                v,
                "--source",
                dir.to_str().unwrap(),
            ],
        ));
    }
}

fn img(v: &str) -> String {
    format!("/subscriptions/local/resourceGroups/rg/providers/Microsoft.Compute/galleries/g1/images/tiny/versions/{v}")
}

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
    let out = ok(tl(
        &s,
        &[
            "vmss",
            "create",
            "-g",
            "rg",
            "-n",
            "web",
            "--image",
            &img("1.0.0"),
            "--vm-sku",
            "Standard_D2s_v3",
            "--instance-count",
            "3",
            "--security-type",
            "Standard",
            "--upgrade-policy-mode",
            "Manual",
        ],
    ));
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
