//! The runtime's bookkeeping without booting (fast tier): creation (varstore,
//! overlay, vTPM, file modes), refusals, resize, and `refresh`'s
//! reconciliation of a recorded state with what runs — stale pid files,
//! a dead QEMU with and without a requested stop, a guest that powered
//! off, a Secure Boot refusal on the console — and delete. The VM tier
//! (`crates/cli/tests/vm_e2e.rs`) boots real VMs.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use trustlaunch_runtime::accel::{Accel, AccelDecision};
use trustlaunch_runtime::image_build::{build_image, BuildRequest, Recipe};
use trustlaunch_runtime::platform::Home;
use trustlaunch_runtime::spec::{Generation, KeyTemplate, SecurityProfile, UefiSettings, VmSpec};
use trustlaunch_runtime::vm::{Runtime, Status, VmError, VmState};

const SHIM: &str = "/usr/lib/shim/shimx64.efi.signed";

fn runtime(dir: &Path) -> Runtime {
    Runtime::open_with_accel(
        Home::open(dir.join("home")).unwrap(),
        AccelDecision {
            accel: Accel::Tcg,
            reason: "test".into(),
        },
    )
    .unwrap()
}

/// A Gen2 image whose boot application is Debian's signed shim.
fn image(dir: &Path) -> PathBuf {
    let out = dir.join("img");
    build_image(
        &BuildRequest {
            name: "shim-only".into(),
            recipe: Recipe::Chain {
                efi: SHIM.into(),
                files: Vec::new(),
            },
            db_key: None,
            out_dir: out.clone(),
            created_at: 1_700_000_000,
        },
        &mut |_| {},
    )
    .unwrap();
    out
}

fn spec(name: &str, image: &Path) -> VmSpec {
    VmSpec {
        name: name.into(),
        hyper_v_generation: Generation::V2,
        security_profile: SecurityProfile::trusted_launch(),
        key_template: KeyTemplate::Microsoft,
        vcpus: 1,
        memory_mib: 512,
        image: image.to_owned(),
    }
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn set_state(rt: &Runtime, name: &str, f: impl FnOnce(&mut VmState)) {
    let path = rt.home().vms().join(name).join("state.json");
    let mut s: VmState = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    f(&mut s);
    fs::write(&path, serde_json::to_vec(&s).unwrap()).unwrap();
}

#[test]
fn create_resize_refuse_and_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let img = image(tmp.path());
    let mut steps = Vec::new();
    let info = rt
        .create(&spec("vm-a", &img), &mut |p| steps.push(p.step))
        .unwrap();
    assert_eq!(steps, ["varstore", "overlay", "vtpm", "created"]);
    assert_eq!(info.state.status, Status::Stopped);
    assert!(info.state.ek_public.is_some() && info.state.ek_certificate.is_some());
    let dir = rt.home().vms().join("vm-a");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("vtpm")), 0o700);
    assert_eq!(mode(&dir.join("OVMF_VARS.fd")), 0o600);
    assert_eq!(mode(&rt.home().keys().join("vm-a.vtpm.key")), 0o600);
    // The overlay is backed by the image's disk.
    let o = std::process::Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(dir.join("os.qcow2"))
        .output()
        .unwrap();
    let qi: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(qi["format"], "qcow2");
    assert!(qi["backing-filename"]
        .as_str()
        .unwrap()
        .ends_with("img/disk.raw"));

    // Refusals, each naming what is wrong; none leaves a directory behind.
    assert!(matches!(
        rt.create(&spec("vm-a", &img), &mut |_| {}),
        Err(VmError::Exists(_))
    ));
    assert!(matches!(
        rt.create(&spec("Bad_Name", &img), &mut |_| {}),
        Err(VmError::Spec(_))
    ));
    let mut gen1 = spec("vm-gen1", &img);
    gen1.hyper_v_generation = Generation::V1;
    assert!(matches!(
        rt.create(&gen1, &mut |_| {}),
        Err(VmError::Spec(_))
    ));
    let e = rt
        .create(&spec("vm-noimg", &tmp.path().join("nope")), &mut |_| {})
        .unwrap_err();
    assert!(e.to_string().contains("disk.raw"), "{e}");
    for n in ["vm-gen1", "vm-noimg"] {
        assert!(!rt.home().vms().join(n).exists());
    }
    // An image made for Microsoft's db under the custom template: created,
    // with a warning that the firmware will refuse it.
    let mut custom = spec("vm-custom", &img);
    custom.key_template = KeyTemplate::Custom;
    let mut warnings = Vec::new();
    rt.create(&custom, &mut |p| {
        if p.step == "warning" {
            warnings.push(p.detail)
        }
    })
    .unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    // Standard: no vTPM at all.
    let mut standard = spec("vm-std", &img);
    standard.security_profile = SecurityProfile::standard();
    let info = rt.create(&standard, &mut |_| {}).unwrap();
    assert!(info.state.ek_public.is_none());
    assert!(!rt.home().vms().join("vm-std/vtpm").exists());
    // Secure Boot off, vTPM on.
    let mut sb_off = spec("vm-sboff", &img);
    sb_off.security_profile.uefi_settings = Some(UefiSettings {
        secure_boot_enabled: false,
        v_tpm_enabled: true,
    });
    assert!(rt
        .create(&sb_off, &mut |_| {})
        .unwrap()
        .state
        .ek_public
        .is_some());

    // Resize: validated, stored for the next start.
    let info = rt.resize("vm-a", Some(2), Some(2048)).unwrap();
    assert_eq!((info.spec.vcpus, info.spec.memory_mib), (2, 2048));
    assert!(rt.resize("vm-a", Some(0), None).is_err());
    assert_eq!(rt.show("vm-a").unwrap().spec.vcpus, 2);

    let names: Vec<String> = rt
        .list()
        .unwrap()
        .into_iter()
        .map(|i| i.spec.name)
        .collect();
    assert_eq!(names, ["vm-a", "vm-custom", "vm-sboff", "vm-std"]);

    rt.delete("vm-a").unwrap();
    assert!(!dir.exists());
    assert!(!rt.home().keys().join("vm-a.vtpm.key").exists());
    assert!(matches!(rt.show("vm-a"), Err(VmError::NotFound(_))));
}

#[test]
fn refresh_reconciles_the_record_with_what_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let img = image(tmp.path());
    rt.create(&spec("vm-r", &img), &mut |_| {}).unwrap();
    let dir = rt.home().vms().join("vm-r");
    let run = dir.join("run");

    // Recorded as running, but no QEMU: failed, with the reason; stale pid
    // files and sockets removed. A pid file naming a live process that is
    // not this VM's (this test) is not adopted.
    set_state(&rt, "vm-r", |s| s.status = Status::Running);
    fs::write(run.join("qemu.pid"), std::process::id().to_string()).unwrap();
    fs::write(run.join("qmp.sock"), b"").unwrap();
    let s = rt.refresh("vm-r").unwrap();
    assert_eq!(s.status, Status::Failed);
    assert!(s.reason.unwrap().contains("QEMU exited unexpectedly"));
    assert_eq!(fs::read_dir(&run).unwrap().count(), 0);

    // A stop was requested: stopped, not failed.
    set_state(&rt, "vm-r", |s| {
        s.status = Status::Running;
        s.stop_requested = true;
    });
    assert_eq!(rt.refresh("vm-r").unwrap().status, Status::Stopped);

    // The guest powered itself off.
    set_state(&rt, "vm-r", |s| {
        s.status = Status::Running;
        s.stop_requested = false;
    });
    fs::write(dir.join("console.log"), "[  9.1] reboot: Power down\n").unwrap();
    let s = rt.refresh("vm-r").unwrap();
    assert_eq!(s.status, Status::Stopped);
    assert_eq!(s.reason.as_deref(), Some("the guest powered off"));

    // The firmware refused the boot image: failed, and the reason names the
    // file and its signer from the image's metadata.
    set_state(&rt, "vm-r", |s| s.status = Status::Running);
    fs::write(
        dir.join("console.log"),
        "BdsDxe: failed to load Boot0001 \"UEFI Misc Device\" from PciRoot(0x0)/Pci(0x1,0x0): Access Denied\r\n",
    )
    .unwrap();
    let s = rt.refresh("vm-r").unwrap();
    assert_eq!(s.status, Status::Failed);
    let reason = s.reason.unwrap();
    assert!(
        reason.starts_with("Secure Boot validation failed: EFI/BOOT/BOOTX64.EFI (signed by "),
        "{reason}"
    );
    assert!(reason.contains("not allowed by db"), "{reason}");

    // Interrupted creation.
    set_state(&rt, "vm-r", |s| s.status = Status::Creating);
    let s = rt.refresh("vm-r").unwrap();
    assert_eq!(s.status, Status::Failed);
    assert!(s.reason.unwrap().contains("creation was interrupted"));

    // Stopping or attesting a VM that does not run says so.
    assert!(matches!(
        rt.attest("vm-r", std::time::Duration::from_secs(1)),
        Err(VmError::WrongStatus { .. })
    ));
    rt.delete("vm-r").unwrap();
}
