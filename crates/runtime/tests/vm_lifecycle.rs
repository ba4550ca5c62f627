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
use trustlaunch_runtime::spec::{
    Generation, KeyTemplate, Network, SecurityProfile, UefiSettings, VmSpec,
};
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
        data_disks: Vec::new(),
        network: Network::None,
        os_profile: None,
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

/// Whether the VM's variable store has Secure Boot on and a PK enrolled.
fn secure_boot_in_vars(rt: &Runtime, name: &str) -> (bool, bool) {
    use trustlaunch_eventlog::Guid;
    use trustlaunch_secureboot::varstore::{VarStore, SECURE_BOOT_ENABLE_DISABLE};
    let bytes = fs::read(rt.home().vms().join(name).join("OVMF_VARS.fd")).unwrap();
    let store = VarStore::parse(&bytes).unwrap();
    let on = store
        .get("SecureBootEnable", SECURE_BOOT_ENABLE_DISABLE)
        .is_some_and(|v| v.data == [1]);
    let pk = store.get("PK", Guid::GLOBAL_VARIABLE).is_some();
    (on, pk)
}

/// `qemu-io` on a data disk: writes or checks a pattern at offset 0.
fn qemu_io(disk: &Path, cmd: &str) -> bool {
    std::process::Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", cmd])
        .arg(disk)
        .output()
        .map(|o| o.status.success() && !String::from_utf8_lossy(&o.stdout).contains("fail"))
        .unwrap()
}

fn virtual_size(disk: &Path) -> u64 {
    let o = std::process::Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(disk)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["virtual-size"].as_u64().unwrap()
}

/// The seed workflow's per-instance step without booting: a Standard VM
/// with a data disk moves to Trusted Launch (new variable store with
/// Secure Boot, a vTPM made), its data disk keeps its data through the
/// update, an image change and a reimage, and it rolls back to Standard
/// keeping its vTPM's identity for a later return.
#[test]
fn update_moves_a_vm_to_trusted_launch_and_back_keeping_its_data_disks() {
    use trustlaunch_runtime::spec::DataDisk;
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime(tmp.path());
    let img = image(tmp.path());
    let mut standard = spec("vm-u", &img);
    standard.security_profile = SecurityProfile::standard();
    standard.data_disks = vec![DataDisk {
        lun: 0,
        disk_size_gb: 1,
    }];
    let mut steps = Vec::new();
    let info = rt.create(&standard, &mut |p| steps.push(p.step)).unwrap();
    assert_eq!(steps, ["varstore", "overlay", "data disk", "created"]);
    assert!(info.state.ek_public.is_none());
    let dir = rt.home().vms().join("vm-u");
    let data = dir.join("data-0.qcow2");
    assert_eq!(virtual_size(&data), 1 << 30);
    assert!(!dir.join("vtpm").exists());
    assert!(!secure_boot_in_vars(&rt, "vm-u").0);
    assert!(qemu_io(&data, "write -P 0xab 0 4k"));

    // Standard -> TrustedLaunch with Secure Boot and vTPM.
    let mut tl = standard.clone();
    tl.security_profile = SecurityProfile {
        security_type: trustlaunch_runtime::spec::SecurityType::TrustedLaunch,
        uefi_settings: Some(UefiSettings {
            secure_boot_enabled: true,
            v_tpm_enabled: true,
        }),
    };
    let mut steps = Vec::new();
    let info = rt
        .update(&tl, std::time::Duration::from_secs(1), &mut |p| {
            steps.push(p.step)
        })
        .unwrap();
    assert_eq!(steps, ["varstore", "vtpm"]);
    assert_eq!(
        info.state.reason.as_deref(),
        Some("updated: security profile, vTPM")
    );
    let ek = info.state.ek_public.clone().expect("a vTPM was made");
    assert_eq!(secure_boot_in_vars(&rt, "vm-u"), (true, true));
    assert!(
        qemu_io(&data, "read -P 0xab 0 4k"),
        "the data disk kept its data"
    );
    // The same spec again changes nothing.
    let vars_before = fs::read(dir.join("OVMF_VARS.fd")).unwrap();
    rt.update(&tl, std::time::Duration::from_secs(1), &mut |_| {})
        .unwrap();
    assert_eq!(fs::read(dir.join("OVMF_VARS.fd")).unwrap(), vars_before);

    // Grow the data disk and add one; shrinking is refused.
    let mut grown = tl.clone();
    grown.data_disks = vec![
        DataDisk {
            lun: 0,
            disk_size_gb: 2,
        },
        DataDisk {
            lun: 5,
            disk_size_gb: 1,
        },
    ];
    rt.update(&grown, std::time::Duration::from_secs(1), &mut |_| {})
        .unwrap();
    assert_eq!(virtual_size(&data), 2 << 30);
    assert!(dir.join("data-5.qcow2").exists());
    assert!(qemu_io(&data, "read -P 0xab 0 4k"));
    let mut shrunk = grown.clone();
    shrunk.data_disks[0].disk_size_gb = 1;
    let err = rt
        .update(&shrunk, std::time::Duration::from_secs(1), &mut |_| {})
        .unwrap_err();
    assert!(
        err.to_string().contains("shrinking from 2 to 1 GiB"),
        "{err}"
    );
    assert_eq!(virtual_size(&data), 2 << 30, "nothing changed");

    // Reimage and an image change re-create the OS disk only.
    rt.reimage("vm-u", std::time::Duration::from_secs(1), &mut |_| {})
        .unwrap();
    let img2 = tmp.path().join("img2");
    fs::create_dir(&img2).unwrap();
    for f in ["disk.raw", "image.json"] {
        fs::copy(img.join(f), img2.join(f)).unwrap();
    }
    let mut moved = grown.clone();
    moved.image = img2.clone();
    moved.data_disks.pop();
    let info = rt
        .update(&moved, std::time::Duration::from_secs(1), &mut |_| {})
        .unwrap();
    assert_eq!(
        info.state.reason.as_deref(),
        Some("updated: image, data disks")
    );
    assert!(
        !dir.join("data-5.qcow2").exists(),
        "the dropped disk is deleted"
    );
    assert!(qemu_io(&data, "read -P 0xab 0 4k"));
    let o = std::process::Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(dir.join("os.qcow2"))
        .output()
        .unwrap();
    let qi: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(qi["backing-filename"]
        .as_str()
        .unwrap()
        .starts_with(img2.to_str().unwrap()));

    // Rollback: Standard, no uefiSettings. Secure Boot off in the store;
    // the vTPM's state stays, so going back keeps the VM's EK.
    let mut back = moved.clone();
    back.security_profile = SecurityProfile::standard();
    rt.update(&back, std::time::Duration::from_secs(1), &mut |_| {})
        .unwrap();
    assert!(!secure_boot_in_vars(&rt, "vm-u").0);
    let info = rt
        .update(&moved, std::time::Duration::from_secs(1), &mut |_| {})
        .unwrap();
    assert_eq!(info.state.ek_public.as_deref(), Some(ek.as_str()));
    assert_eq!(secure_boot_in_vars(&rt, "vm-u"), (true, true));

    rt.delete("vm-u").unwrap();
    assert!(!dir.exists());
}
